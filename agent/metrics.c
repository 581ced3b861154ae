/* metrics.c — counters and histograms behind GET /metrics, rendered in
 * the Prometheus text exposition format 0.0.4. Owns only numbers and
 * label strings under one mutex; never touches the loop, the server or a
 * worker, so any thread may record. Label sets are bounded (fixed tables)
 * so a chatty source cannot grow the text without limit. */
#include "metrics.h"

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "base/hp.h"
#include "base/sbuf.h"
#include "base/xalloc.h"

static const double buckets[] = {HP_METRICS_BUCKETS};
#define NBUCKETS HP_ARRAY_LEN(buckets)

struct histo {
	uint64_t count[NBUCKETS]; /* per bucket, not cumulative */
	uint64_t total;
	double sum;
};

#define MAX_EXIT_KINDS 64
#define MAX_OPS 16
#define MAX_RULES 64

struct exit_kind {
	bool signaled;
	int value; /* exit code or signal number */
	uint64_t n;
};

struct labelled_histo {
	char *label;
	struct histo h;
};

struct trip {
	char *rule;
	const char *state; /* static string */
	uint64_t n;
};

struct hp_metrics {
	pthread_mutex_t mu;
	char *version;
	enum hp_state state;
	uint64_t restarts[HP_METRICS_RESTART_COUNT];
	struct exit_kind exits[MAX_EXIT_KINDS];
	size_t n_exits;
	uint64_t exits_other;
	struct histo restart_latency;
	struct histo barrier;
	struct labelled_histo ops[MAX_OPS];
	size_t n_ops;
	struct trip trips[MAX_RULES];
	size_t n_trips;
};

double hp_metrics_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct hp_metrics *hp_metrics_new(const char *version)
{
	struct hp_metrics *m = xcalloc(1, sizeof(*m));
	pthread_mutex_init(&m->mu, NULL);
	m->version = xstrdup(version ? version : "");
	m->state = HP_STATE_INIT;
	return m;
}

void hp_metrics_free(struct hp_metrics *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n_ops; i++)
		free(m->ops[i].label);
	for (size_t i = 0; i < m->n_trips; i++)
		free(m->trips[i].rule);
	free(m->version);
	pthread_mutex_destroy(&m->mu);
	free(m);
}

void hp_metrics_set_state(struct hp_metrics *m, enum hp_state s)
{
	pthread_mutex_lock(&m->mu);
	m->state = s;
	pthread_mutex_unlock(&m->mu);
}

void hp_metrics_restart(struct hp_metrics *m, enum hp_metrics_restart mode)
{
	if ((unsigned)mode >= HP_METRICS_RESTART_COUNT)
		return;
	pthread_mutex_lock(&m->mu);
	m->restarts[mode]++;
	pthread_mutex_unlock(&m->mu);
}

void hp_metrics_worker_exit(struct hp_metrics *m, int st)
{
	bool sig = WIFSIGNALED(st);
	int v = sig ? WTERMSIG(st) : WEXITSTATUS(st);
	pthread_mutex_lock(&m->mu);
	size_t i = 0;
	while (i < m->n_exits &&
	       !(m->exits[i].signaled == sig && m->exits[i].value == v))
		i++;
	if (i == m->n_exits && i < MAX_EXIT_KINDS)
		m->exits[m->n_exits++] = (struct exit_kind){sig, v, 0};
	if (i < m->n_exits)
		m->exits[i].n++;
	else
		m->exits_other++;
	pthread_mutex_unlock(&m->mu);
}

static void observe(struct histo *h, double s)
{
	if (!(s >= 0))
		s = 0; /* a clock oddity or NaN is not worth a bogus bucket */
	size_t b = 0;
	while (b < NBUCKETS && s > buckets[b])
		b++;
	if (b < NBUCKETS)
		h->count[b]++;
	h->total++;
	h->sum += s;
}

void hp_metrics_observe_restart(struct hp_metrics *m, double s)
{
	pthread_mutex_lock(&m->mu);
	observe(&m->restart_latency, s);
	pthread_mutex_unlock(&m->mu);
}

void hp_metrics_observe_barrier(struct hp_metrics *m, double s)
{
	pthread_mutex_lock(&m->mu);
	observe(&m->barrier, s);
	pthread_mutex_unlock(&m->mu);
}

static size_t find_op(const struct hp_metrics *m, const char *op)
{
	size_t i = 0;
	while (i < m->n_ops && strcmp(m->ops[i].label, op) != 0)
		i++;
	return i;
}

void hp_metrics_observe_collective(struct hp_metrics *m, const char *op,
				   double s)
{
	if (!op || !*op)
		op = "other";
	pthread_mutex_lock(&m->mu);
	size_t i = find_op(m, op);
	if (i == m->n_ops && m->n_ops >= MAX_OPS - 1) {
		/* the last slot is kept for "other" */
		op = "other";
		i = find_op(m, op);
	}
	if (i == m->n_ops)
		m->ops[m->n_ops++].label = xstrdup(op);
	observe(&m->ops[i].h, s);
	pthread_mutex_unlock(&m->mu);
}

static size_t find_trip(const struct hp_metrics *m, const char *rule,
			const char *st)
{
	size_t i = 0;
	while (i < m->n_trips && !(strcmp(m->trips[i].rule, rule) == 0 &&
				   m->trips[i].state == st))
		i++;
	return i;
}

void hp_metrics_log_trip(struct hp_metrics *m, const char *rule,
			 const char *state)
{
	static const char *const states[] = {"slow", "hanging", "faulted",
					     "other"};
	const char *st = states[3];
	for (size_t i = 0; i < 3; i++)
		if (state && strcmp(state, states[i]) == 0)
			st = states[i];
	if (!rule || !*rule)
		rule = "other";
	pthread_mutex_lock(&m->mu);
	size_t i = find_trip(m, rule, st);
	if (i == m->n_trips && m->n_trips >= MAX_RULES - HP_ARRAY_LEN(states)) {
		/* the last slots are kept for rule="other", one per state */
		rule = "other";
		i = find_trip(m, rule, st);
	}
	if (i == m->n_trips)
		m->trips[m->n_trips++] = (struct trip){xstrdup(rule), st, 0};
	m->trips[i].n++;
	pthread_mutex_unlock(&m->mu);
}

/* ---- rendering ------------------------------------------------------ */

/* A label value: backslash, double quote and newline escaped. */
static void out_label(struct hp_sbuf *o, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\')
			hp_sbuf_printf(o, "\\\\");
		else if (*v == '"')
			hp_sbuf_printf(o, "\\\"");
		else if (*v == '\n')
			hp_sbuf_printf(o, "\\n");
		else
			hp_sbuf_printf(o, "%c", *v);
	}
}

static void family(struct hp_sbuf *o, const char *name, const char *type,
		   const char *help)
{
	hp_sbuf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Shortest text that reads back as the same double ("0.1", "2.5",
 * "10"), as Prometheus clients print bucket bounds. */
static void out_double(struct hp_sbuf *o, double v)
{
	char buf[64];
	if (v == (double)(long long)v && v > -1e15 && v < 1e15) {
		hp_sbuf_printf(o, "%lld", (long long)v);
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, sizeof(buf), "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	hp_sbuf_printf(o, "%s", buf);
}

/* labels: "" or e.g. "op=\"barrier\"" (already escaped). */
static void out_histo(struct hp_sbuf *o, const char *name, const char *labels,
		      const struct histo *h)
{
	const char *sep = *labels ? "," : "";
	uint64_t cum = 0;
	for (size_t b = 0; b < NBUCKETS; b++) {
		cum += h->count[b];
		hp_sbuf_printf(o, "%s_bucket{%s%sle=\"", name, labels, sep);
		out_double(o, buckets[b]);
		hp_sbuf_printf(o, "\"} %llu\n", (unsigned long long)cum);
	}
	hp_sbuf_printf(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
	     (unsigned long long)h->total);
	if (*labels)
		hp_sbuf_printf(o, "%s_sum{%s} ", name, labels);
	else
		hp_sbuf_printf(o, "%s_sum ", name);
	out_double(o, h->sum);
	if (*labels)
		hp_sbuf_printf(o, "\n%s_count{%s} %llu\n", name, labels,
		     (unsigned long long)h->total);
	else
		hp_sbuf_printf(o, "\n%s_count %llu\n", name,
		     (unsigned long long)h->total);
}

char *hp_metrics_render(struct hp_metrics *m)
{
	struct hp_sbuf o = {0};
	pthread_mutex_lock(&m->mu);

	family(&o, "hyperpodrun_build_info", "gauge",
	       "Always 1; the version label names the agent version.");
	hp_sbuf_printf(&o, "hyperpodrun_build_info{version=\"");
	out_label(&o, m->version);
	hp_sbuf_printf(&o, "\"} 1\n");

	family(&o, "hyperpodrun_agent_state", "gauge",
	       "1 for the agent's current state (PROTOCOL.md states), 0 for "
	       "the others.");
	for (int s = 0; s < HP_STATE_COUNT; s++)
		hp_sbuf_printf(&o, "hyperpodrun_agent_state{state=\"%s\"} %d\n",
		     hp_state_lower((enum hp_state)s), (int)m->state == s);

	family(&o, "hyperpodrun_restarts_total", "counter",
	       "Worker group restarts by mode: process (respawned) or "
	       "in_process (back to the barrier, same processes).");
	static const char *const modes[] = {"process", "in_process"};
	for (int i = 0; i < HP_METRICS_RESTART_COUNT; i++)
		hp_sbuf_printf(&o, "hyperpodrun_restarts_total{mode=\"%s\"} %llu\n",
		     modes[i], (unsigned long long)m->restarts[i]);

	family(&o, "hyperpodrun_worker_exits_total", "counter",
	       "Worker process exits by exit code, or by the signal that "
	       "ended them.");
	for (size_t i = 0; i < m->n_exits; i++) {
		const struct exit_kind *e = &m->exits[i];
		if (!e->signaled)
			hp_sbuf_printf(&o, "hyperpodrun_worker_exits_total{code=\"%d\","
				 "signal=\"\"} %llu\n",
			     e->value, (unsigned long long)e->n);
		else
			hp_sbuf_printf(&o, "hyperpodrun_worker_exits_total{code=\"\","
				 "signal=\"%s\"} %llu\n",
			     hp_signal_name(e->value),
			     (unsigned long long)e->n);
	}
	if (m->exits_other)
		hp_sbuf_printf(&o, "hyperpodrun_worker_exits_total{code=\"other\","
			 "signal=\"\"} %llu\n",
		     (unsigned long long)m->exits_other);

	family(&o, "hyperpodrun_restart_latency_seconds", "histogram",
	       "From a detected worker failure to every replacement worker "
	       "started (process restart) or released (in-process restart).");
	out_histo(&o, "hyperpodrun_restart_latency_seconds", "",
		  &m->restart_latency);

	family(&o, "hyperpodrun_ipr_barrier_wait_seconds", "histogram",
	       "Time the agent waited for every local rank at the "
	       "in-process-restart barrier.");
	out_histo(&o, "hyperpodrun_ipr_barrier_wait_seconds", "", &m->barrier);

	family(&o, "hyperpodrun_fabric_collective_seconds", "histogram",
	       "Duration of one libfabric control-plane collective, by "
	       "operation.");
	for (size_t i = 0; i < m->n_ops; i++) {
		struct hp_sbuf l = {0};
		hp_sbuf_printf(&l, "op=\"");
		out_label(&l, m->ops[i].label);
		hp_sbuf_printf(&l, "\"");
		out_histo(&o, "hyperpodrun_fabric_collective_seconds", hp_sbuf_finish(&l),
			  &m->ops[i].h);
		free(l.p);
	}

	family(&o, "hyperpodrun_log_rule_trips_total", "counter",
	       "Log monitoring rules that moved the agent to FAULTED, by "
	       "rule and log state.");
	for (size_t i = 0; i < m->n_trips; i++) {
		hp_sbuf_printf(&o, "hyperpodrun_log_rule_trips_total{rule=\"");
		out_label(&o, m->trips[i].rule);
		hp_sbuf_printf(&o, "\",state=\"%s\"} %llu\n", m->trips[i].state,
		     (unsigned long long)m->trips[i].n);
	}
	pthread_mutex_unlock(&m->mu);
	return hp_sbuf_finish(&o);
}
