/* metrics.h — the agent's Prometheus metrics (GET /metrics, text format
 * 0.0.4): state gauge, restarts by mode, worker exits by code/signal,
 * restart latency, IPR barrier wait and fabric collective latency
 * histograms, log-rule trips. Owns the counters and renders them; it does
 * no I/O (the agent publishes the text through hp_server_publish_metrics;
 * the server appends its own HTTP request counters). Every function is
 * thread-safe (one mutex), so a fabric progress thread may observe too. */
#ifndef HP_METRICS_H
#define HP_METRICS_H

#include <stdint.h>

#include "fsm.h"

struct hp_metrics;

enum hp_metrics_restart {
	HP_METRICS_RESTART_PROCESS = 0, /* the worker group was respawned */
	HP_METRICS_RESTART_IN_PROCESS,  /* IPR: workers went back to the barrier */
	HP_METRICS_RESTART_COUNT,
};

/* The histogram buckets (upper bounds, seconds) every histogram uses. */
#define HP_METRICS_BUCKETS                                                     \
	0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,    \
		60, 120, 300

struct hp_metrics *hp_metrics_new(const char *version);
void hp_metrics_free(struct hp_metrics *m);

/* hyperpodrun_agent_state{state="<lower>"}: 1 for s, 0 for the others. */
void hp_metrics_set_state(struct hp_metrics *m, enum hp_state s);

/* hyperpodrun_restarts_total{mode="process"|"in_process"} += 1. */
void hp_metrics_restart(struct hp_metrics *m, enum hp_metrics_restart mode);

/* hyperpodrun_worker_exits_total{code="N",signal=""} or
 * {code="",signal="SIGKILL"} += 1, from a waitpid status. */
void hp_metrics_worker_exit(struct hp_metrics *m, int wait_status);

/* hyperpodrun_restart_latency_seconds: a failure detected -> every
 * replacement worker started (PLR) or released (IPR). */
void hp_metrics_observe_restart(struct hp_metrics *m, double seconds);

/* hyperpodrun_ipr_barrier_wait_seconds: how long the agent waited for
 * every local rank at the in-process-restart barrier (ipr.c). */
void hp_metrics_observe_barrier(struct hp_metrics *m, double seconds);

/* hyperpodrun_fabric_collective_seconds{op="barrier"|"allgather"|...}:
 * one libfabric collective, start to completion. At most 16 distinct ops
 * are kept; later ones count as op="other". */
void hp_metrics_observe_collective(struct hp_metrics *m, const char *op,
				   double seconds);

/* hyperpodrun_log_rule_trips_total{rule="<name>",state="hanging"|...}
 * += 1. At most 64 distinct rules are kept; later ones count as
 * rule="other". */
void hp_metrics_log_trip(struct hp_metrics *m, const char *rule,
			 const char *state);

/* The whole exposition text (# HELP / # TYPE per family). Caller frees. */
char *hp_metrics_render(struct hp_metrics *m);

/* A monotonic clock in seconds, for callers measuring durations. */
double hp_metrics_now(void);

#endif
