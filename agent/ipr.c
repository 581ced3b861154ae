/* ipr.c — the in-process restart flow (PROTOCOL.md §IPR). Workers stay
 * alive across a fault: the agent tells them (job_fault), waits for every
 * local rank at the barrier for at most --inprocess-timeout, then releases
 * them (job_start) with fresh rank information. A miss, a dead worker, a
 * dropped connection during the wait, or an explicit request turns it into
 * a process-level restart. Owns no process: kills and spawns go through
 * agent.c. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "agent-private.h"
#include "base/log.h"
#include "ckpt.h"
#include "rendezvous/ipc.h"
#include "rendezvous/resconf.h"
#include "server/server.h"
#include "base/xalloc.h"

static void cancel_wait(struct hp_agent *a)
{
	a->ipr_wait = IPR_WAIT_NONE;
	uv_timer_stop(&a->ipr_timer);
	xnode_round_cancel(a);
}

static void clear_rank_reports(struct hp_agent *a)
{
	for (int i = 0; i < a->nproc; i++)
		a->workers[i].failed = false;
	free(a->failed_ranks);
	a->failed_ranks = NULL;
}

void ipr_free_worker_data(struct hp_agent *a)
{
	for (int i = 0; i < a->nproc; i++) {
		struct worker *w = &a->workers[i];
		free(w->data_json);
		free(w->labels_json);
		w->data_json = NULL;
		w->labels_json = NULL;
		w->data_rank = -1;
	}
	free(a->failed_ranks);
	a->failed_ranks = NULL;
}

/* {"rank_ips": <the last request's rankIps>, "aggregate_worker_data":
 * <the last request's worker_data>}: the reference passes the operator's
 * aggregate through; what each rank reported goes to the operator in
 * /status's worker_data. Across nodes without an operator's aggregate,
 * every node's worker data gathered at the barrier (xnode.c). */
static char *aggregate_json(const struct hp_agent *a)
{
	char *ips = a->resconf ? hp_resconf_rank_ips_json(a->resconf)
			       : xstrdup("null");
	/* without an operator's aggregate, what the nodes allgathered */
	const char *agg = a->req_worker_data  ? a->req_worker_data
			  : a->xn_worker_data ? a->xn_worker_data
					      : "null";
	char *out = xasprintf("{\"rank_ips\":%s,\"aggregate_worker_data\":%s}",
			      ips, agg);
	free(ips);
	return out;
}

/* job_start (release) or job_rank_info (/update) to every local rank, all
 * or nothing as the reference's _send_rank_info_helper (10690281936): when
 * a local rank has no connected client nothing is sent and -ENOTCONN is
 * returned (the missing ranks in *missing, "0,3"). */
static int push_rank_info(struct hp_agent *a, bool release, char *missing,
			  size_t cap)
{
	int off = 0;
	missing[0] = '\0';
	for (int i = 0; i < a->nproc; i++)
		if (!hp_ipc_rank_connected(a->ipc, i) && off < (int)cap - 12)
			off += snprintf(missing + off, cap - (size_t)off,
					"%s%d", off ? "," : "", i);
	if (off)
		return -ENOTCONN;
	char *agg = aggregate_json(a);
	int rc = 0;
	for (int i = 0; i < a->nproc && rc == 0; i++) {
		char *envs = agent_worker_envs_json(a, i);
		rc = release ? hp_ipc_send_start(a->ipc, i, envs, agg)
			     : hp_ipc_send_rank_info(a->ipc, i, envs, agg);
		free(envs);
		if (rc < 0)
			snprintf(missing, cap, "%d", i);
	}
	free(agg);
	return rc;
}

/* RUNNING with reason RunningStarted, then job_start; once it went out
 * the reason is Running and priority is cleared (10759738055
 * _handle_healthy_state). A spare node is released too, with SPARE=True. */
static void release(struct hp_agent *a)
{
	char missing[512];
	a->start_pending = false;
	agent_fire(a, HP_EV_START, "RunningStarted", NULL);
	clear_rank_reports(a);
	a->restart_mode = "in_process_restart";
	if (push_rank_info(a, true, missing, sizeof(missing)) < 0) {
		/* a missing client is a fault: the reference's
		 * set_agent_state_fault falls back to WorkerFault */
		hp_error("ipr", "cannot release the barrier: no connected "
			 "client for local rank(s) %s", missing);
		agent_fire(a, HP_EV_FAILED, "WorkerFault",
			   "An unknown fault occurred resulting in the training "
			   "worker processes becoming unhealthy");
		return;
	}
	snprintf(a->fsm.reason, sizeof(a->fsm.reason), "Running");
	a->priority = false;
	hp_info("ipr", "released %d local rank(s) (restart count %d%s)",
		a->nproc, a->restart_count, a->spare ? ", spare" : "");
	agent_publish(a);
}

static void barrier_check(struct hp_agent *a)
{
	if (a->ipr_wait == IPR_WAIT_NONE ||
	    !hp_ipc_all_in_state(a->ipc, HP_IPC_AT_BARRIER))
		return;
	enum ipr_wait was = a->ipr_wait;
	cancel_wait(a);
	hp_info("ipr", "every local rank is at the barrier");
	/* every node's ranks too (nnodes > 1), before READY/STOPPED: the
	 * round runs off the loop and ends in ipr_round_done() */
	if (!xnode_round_start(a, was == IPR_WAIT_INIT))
		ipr_round_done(a, was == IPR_WAIT_INIT, 0, NULL);
}

/* The round after a /start: release, with the job's NCCL id when it
 * worked (the operator asked for RUNNING; a node that could not meet the
 * others fails in training and is restarted then). */
void ipr_start_round_done(struct hp_agent *a, int rc, const char *why)
{
	if (rc < 0)
		hp_warn("ipr", "the first run starts without the job's NCCL "
			"unique id: %s", why);
	if (a->fsm.state == HP_STATE_READY)
		release(a);
}

void ipr_round_done(struct hp_agent *a, bool init, int rc, const char *why)
{
	if (rc < 0) {
		/* the operator (or the log) sees what is needed */
		a->restart_mode = "process_level_restart";
		ipr_process_level_restart(a, why);
		return;
	}
	agent_fire(a, init ? HP_EV_READY : HP_EV_STOPPED, NULL, NULL);
	if (a->start_pending && xnode_start_round(a))
		return; /* fresh processes meet the other nodes first */
	if (a->cfg->mode == HP_MODE_LOCAL || a->start_pending)
		release(a);
}

static void wait_timeout_cb(uv_timer_t *t)
{
	struct hp_agent *a = t->data;
	char missing[512] = "";
	int off = 0;
	for (int i = 0; i < a->nproc && off < (int)sizeof(missing) - 12; i++)
		if (hp_ipc_rank_state(a->ipc, i) != HP_IPC_AT_BARRIER)
			off += snprintf(missing + off,
					sizeof(missing) - (size_t)off, "%s%d",
					off ? "," : "", i);
	char why[700];
	snprintf(why, sizeof(why),
		 "local rank(s) %s not at the barrier within "
		 "--inprocess-timeout=%g s",
		 missing, a->cfg->inprocess_timeout);
	ipr_process_level_restart(a, why);
}

static void start_wait(struct hp_agent *a, enum ipr_wait why)
{
	a->ipr_wait = why;
	if (a->cfg->inprocess_timeout > 0)
		uv_timer_start(&a->ipr_timer, wait_timeout_cb,
			       (uint64_t)(a->cfg->inprocess_timeout * 1000.0),
			       0);
	barrier_check(a);
}

void ipr_group_spawned(struct hp_agent *a)
{
	/* spawn_group named each rank's process group already */
	hp_ipc_reset_states(a->ipc);
	clear_rank_reports(a);
	start_wait(a, IPR_WAIT_INIT);
}

/* The in-process cycle: fault to every rank, wait at the barrier. */
static void inprocess_restart(struct hp_agent *a)
{
	agent_fire(a, HP_EV_STOP, NULL, NULL);
	/* the reference's _pause_workers sends the current count (the
	 * operator's faultCount) and sets priority; ipversion stays
	 * (10759738055). Local mode plays the operator and counts. */
	if (a->cfg->mode == HP_MODE_LOCAL && a->restart_count < INT_MAX)
		a->restart_count++;
	a->priority = a->cfg->mode == HP_MODE_OPERATOR;
	hp_info("ipr", "in-process restart %d: asking every rank back to "
		"the barrier", a->restart_count);
	hp_ipc_send_fault(a->ipc, HP_IPC_ALL_RANKS, a->restart_count);
	agent_publish(a);
	start_wait(a, IPR_WAIT_STOP);
}

void ipr_process_level_restart(struct hp_agent *a, const char *why)
{
	hp_warn("ipr", "process-level restart: %s", why);
	cancel_wait(a);
	a->start_pending = false;
	a->plr_pending = false;
	a->unhealthy = false;
	a->priority = false; /* the reference's _stop_workers */
	hp_ipc_drop_clients(a->ipc);
	if (a->resconf)
		hp_resconf_reset_ip_version(a->resconf);
	/* no operator: the other nodes restart their processes too, or they
	 * would wait for ours at a barrier we no longer come to */
	xnode_tell_peers(a, true);
	/* local mode counts it against --max-restarts (AFTER_FAULT);
	 * the operator decides for itself */
	agent_start_stop(a,
			 a->cfg->mode == HP_MODE_LOCAL ? AFTER_FAULT
						       : AFTER_RESPAWN,
			 a->cfg->shutdown_signal, a->cfg->shutdown_timeout);
}

void ipr_worker_died(struct hp_agent *a)
{
	if (a->ipr_wait != IPR_WAIT_NONE ||
	    a->fsm.state == HP_STATE_STOPPING) {
		ipr_process_level_restart(a, "a worker process died during "
				      "the barrier wait");
		return;
	}
	cancel_wait(a);
	hp_ipc_drop_clients(a->ipc);
	xnode_tell_peers(a, true);
	agent_group_failed(a);
}

void ipr_spare_update(struct hp_agent *a, bool spare, int fault_count)
{
	if (!spare && fault_count == 0 && a->fsm.state == HP_STATE_INIT)
		a->priority = true;
	if (a->spare == spare)
		return;
	if (!a->spare) {
		hp_info("ipr", "spare %s -> %s: a process-level restart",
			a->spare ? "True" : "False", spare ? "True" : "False");
		a->plr_pending = true;
	}
	a->spare = spare;
}

/* A request asked for new processes (non-spare -> spare): the reference
 * restarts them in its next loop turn (_process_level_start). */
static bool run_pending_plr(struct hp_agent *a)
{
	if (!a->plr_pending)
		return false;
	a->plr_pending = false;
	if (a->nrunning || a->aux_pid)
		ipr_process_level_restart(a, "this node became a spare");
	return true;
}

int ipr_cmd_start(struct hp_agent *a, const struct hp_start_req *r)
{
	agent_apply_rdzv(a, r, true);
	hp_info("ipr", "/start: rank %d of %d, master %s:%d, fault count %d",
		a->group_rank, a->nnodes, a->master_addr, a->master_port,
		a->restart_count);
	if (run_pending_plr(a)) {
		a->start_pending = true; /* released once back at the barrier */
		return 0;
	}
	switch (a->fsm.state) {
	case HP_STATE_READY:
		if (!xnode_start_round(a))
			release(a);
		break;
	case HP_STATE_INIT:
	case HP_STATE_STOPPING:
		hp_info("ipr", "/start before every rank is at the barrier: "
			"releasing when they are");
		a->start_pending = true;
		break;
	default:
		hp_warn("ipr", "/start while %s: rendezvous information "
			"applied", hp_state_name(a->fsm.state));
		break;
	}
	return 0;
}

/* The reference reads restart_mode as a RestartMode member name, any case
 * (RestartMode[x.upper()], 10759738055 set_restart_mode): only
 * process_level_restart asks for new processes. */
static bool wants_plr(const struct hp_agent *a, const char *mode)
{
	static const char *const members[] = {
		"in_process_restart", "job_level_restart", "local_prl",
		"process_level_restart"};
	for (size_t i = 0; i < HP_ARRAY_LEN(members); i++)
		if (strcasecmp(mode, members[i]) == 0)
			return i == 3;
	/* local mode has no operator: "plr" is what our own peers send
	 * there (xnode_tell_peers) */
	if (a->cfg->mode == HP_MODE_LOCAL && strcmp(mode, "plr") == 0)
		return true;
	if (strcmp(mode, "ipr") != 0)
		hp_error("ipr", "/stop: unexpected restart_mode '%s': using an "
			 "in-process restart", mode);
	return false;
}

int ipr_cmd_stop(struct hp_agent *a, const struct hp_stop_req *r)
{
	if (xnode_defer_stop(a, r))
		return 0; /* the cross-node round ends first */
	enum hp_state s = a->fsm.state;
	const char *mode = r->restart_mode ? r->restart_mode : "ipr";
	bool plr = wants_plr(a, mode);
	if (s != HP_STATE_RUNNING && s != HP_STATE_FAULTED &&
	    s != HP_STATE_COMPLETED) {
		/* the reference's process-level request holds in any state:
		 * its next loop turn restarts the processes (10759738055) */
		if (plr && s != HP_STATE_SHUTDOWN && a->stage != STAGE_STOPPING &&
		    (a->nrunning || a->aux_pid)) {
			ipr_process_level_restart(a, "/stop asked for a "
						  "process-level restart");
			return 0;
		}
		hp_info("ipr", "/stop while %s: nothing to stop",
			hp_state_name(s));
		return 0;
	}
	hp_info("ipr", "/stop (restart_mode %s%s)", mode,
		a->unhealthy ? "; the group is unhealthy" : "");
	if (plr || a->unhealthy || a->stage != STAGE_TRAIN ||
	    a->nrunning < a->nproc) {
		/* no live, healthy group to restart in place: a hung rank
		 * may never reach the barrier (10759738055
		 * _handle_failed_state) */
		agent_fire(a, HP_EV_STOP, NULL, NULL);
		a->unhealthy = false;
		a->priority = false;
		if (a->stage == STAGE_STOPPING) {
			a->after_stop = AFTER_RESPAWN;
			return 0;
		}
		cancel_wait(a);
		hp_ipc_drop_clients(a->ipc);
		if (a->resconf)
			hp_resconf_reset_ip_version(a->resconf);
		agent_start_stop(a, AFTER_RESPAWN,
				 r->is_graceful ? SIGUSR1
						: a->cfg->shutdown_signal,
				 r->timeout > 0 ? r->timeout
						: a->cfg->shutdown_timeout);
		return 0;
	}
	inprocess_restart(a);
	return 0;
}

void ipr_cmd_shutdown(struct hp_agent *a)
{
	/* a barrier wait or a cross-node round still under way would decide
	 * on its own later (its timeout, its failure: a process-level
	 * restart that respawns the workers): the shutdown decides now, and
	 * the round's peers hear this node give up at once */
	if (a->ipr_wait != IPR_WAIT_NONE || xnode_round_running(a))
		hp_info("ipr", "/shutdown: the barrier wait ends here");
	cancel_wait(a);
}

int ipr_cmd_update(struct hp_agent *a, const struct hp_start_req *r)
{
	agent_apply_rdzv(a, r, false);
	hp_info("ipr", "/update: rank %d of %d, fault count %d",
		a->group_rank, a->nnodes, a->restart_count);
	if (run_pending_plr(a))
		return 0;
	char missing[512];
	if (a->nrunning < a->nproc ||
	    push_rank_info(a, false, missing, sizeof(missing)) < 0) {
		/* ipversion null makes the operator send /update again
		 * (10759738055 send_rank_info) */
		hp_info("ipr", "/update: local rank(s) %s not connected: "
			"nothing sent, ipversion reset so the operator sends "
			"it again",
			a->nrunning < a->nproc ? "(not started)" : missing);
		if (a->resconf)
			hp_resconf_reset_ip_version(a->resconf);
		return 0;
	}
	a->assigned_rank = r->rank;
	return 0;
}

/* ---- IPC callbacks ------------------------------------------------- */

static void on_init(void *ud, int local_rank)
{
	(void)ud;
	hp_debug("ipr", "local rank %d connected", local_rank);
}

/* The in-process-restart messages mean nothing to the PLR agent, which
 * serves only checkpoint discovery on the socket (10071915287). */
static bool plr_ignores(const struct hp_agent *a, const char *what,
			int local_rank)
{
	if (agent_ipr(a))
		return false;
	hp_debug("ipr", "local rank %d: %s without --inprocess-restart; "
		 "ignored", local_rank, what);
	return true;
}

static void on_barrier(void *ud, int local_rank)
{
	struct hp_agent *a = ud;
	if (plr_ignores(a, "at_rcb_barrier", local_rank))
		return;
	hp_debug("ipr", "local rank %d at the barrier", local_rank);
	barrier_check(a);
}

static void on_past_barrier(void *ud, int local_rank)
{
	struct hp_agent *a = ud;
	if (plr_ignores(a, "past_rcb_barrier", local_rank))
		return;
	struct worker *w = &a->workers[local_rank];
	w->failed = false;
	free(w->data_json);
	w->data_json = NULL;
	w->data_rank = -1;
	agent_publish(a);
}

static void append_failed_rank(struct hp_agent *a, int rank)
{
	char *old = a->failed_ranks;
	a->failed_ranks = old ? xasprintf("%s,%d", old, rank)
			      : xasprintf("%d", rank);
	free(old);
}

static void on_fault(void *ud, int local_rank, int rank, const char *reason,
		     const char *message, const char *restart_mode)
{
	struct hp_agent *a = ud;
	if (plr_ignores(a, "job_fault", local_rank))
		return;
	struct worker *w = &a->workers[local_rank];
	if (rank < 0)
		rank = agent_global_rank(a, local_rank);
	w->failed = true;
	append_failed_rank(a, rank);
	hp_warn("ipr", "rank %d (local %d) reported a fault: %s %s", rank,
		local_rank, reason ? reason : "", message ? message : "");
	if (restart_mode && strcmp(restart_mode, "process_level_restart") == 0)
		a->restart_mode = "process_level_restart";
	else if (restart_mode && strcmp(restart_mode, "job_level_restart") == 0)
		a->restart_mode = "job_level_restart";
	if (restart_mode &&
	    strcmp(restart_mode, "local_process_level_restart") == 0) {
		/* FAULTED with the worker's words first, then new processes
		 * (10027259171 test_handle_healthy_state) */
		agent_fire(a, HP_EV_FAILED,
			   reason && *reason ? reason : "WorkerReportedFault",
			   message);
		ipr_process_level_restart(a, "a worker asked for a local "
				      "process-level restart");
		return;
	}
	if (a->fsm.state == HP_STATE_STOPPING) {
		agent_publish(a);
		return; /* a restart is under way already */
	}
	char *msg = message ? NULL
			    : xasprintf("The processes reported a failure on "
					"ranks %s",
					a->failed_ranks);
	agent_fire(a, HP_EV_FAILED, reason ? reason : "WorkerReportedFault",
		   message ? message : msg);
	free(msg);
	agent_publish(a);
	if (a->cfg->mode == HP_MODE_LOCAL && a->fsm.state == HP_STATE_FAULTED &&
	    a->stage == STAGE_TRAIN) {
		inprocess_restart(a);
		/* no operator: the other nodes restart with us */
		xnode_tell_peers(a, false);
	}
}

static void on_data(void *ud, int local_rank, int rank, const char *data_json)
{
	struct hp_agent *a = ud;
	if (plr_ignores(a, "job_data", local_rank))
		return;
	struct worker *w = &a->workers[local_rank];
	free(w->data_json);
	w->data_json = xstrdup(data_json);
	w->data_rank = rank >= 0 ? rank : agent_global_rank(a, local_rank);
	agent_publish(a);
}

static void on_labels(void *ud, int local_rank, const char *labels_json)
{
	struct hp_agent *a = ud;
	if (plr_ignores(a, "rank_labels", local_rank))
		return;
	struct worker *w = &a->workers[local_rank];
	free(w->labels_json);
	w->labels_json = xstrdup(labels_json);
	w->labels_seq = ++a->labels_seq;
	agent_publish(a);
}

/* ---- checkpoint discovery (both modes) --------------------------------- */

static void on_ckpt_init(void *ud, int local_rank, const char *prefix,
			 const char *const *names, const int *counts, size_t n)
{
	struct hp_agent *a = ud;
	struct hp_ckpt_type types[HP_CKPT_MAX_TYPES];
	size_t k = 0;
	for (size_t i = 0; i < n && k < HP_CKPT_MAX_TYPES; i++)
		types[k++] = (struct hp_ckpt_type){names[i], counts[i]};
	hp_ckpt_init(a->ckpt, prefix, types, k);
	hp_debug("ipr", "local rank %d: checkpoint discovery for prefix %s",
		 local_rank, prefix);
	agent_publish(a);
}

static void on_ckpt_update(void *ud, int local_rank, long long step,
			   const char *path, const char *type)
{
	struct hp_agent *a = ud;
	int rc = hp_ckpt_update(a->ckpt, local_rank, step, path, type);
	hp_debug("ipr", "checkpoint step %lld: local rank %d reported %s", step,
		 local_rank, type);
	if (rc == 1)
		hp_info("ipr", "checkpoint step %lld complete (%s)", step,
			path ? path : "no path");
	else if (rc == -ENOENT)
		hp_warn("ipr", "local rank %d: ckpt_info_update before "
			"ckpt_init; ignored", local_rank);
	else if (rc == -EINVAL)
		hp_warn("ipr", "local rank %d: ckpt_info_update of a "
			"checkpoint type ckpt_init did not name; ignored",
			local_rank);
	else if (rc == -ENOSPC)
		hp_warn("ipr", "local rank %d: more than %d checkpoint steps "
			"pending; step %lld ignored", local_rank,
			HP_CKPT_MAX_STEPS, step);
	agent_publish(a);
}

static char *on_ckpt_get(void *ud, int local_rank)
{
	struct hp_agent *a = ud;
	(void)local_rank;
	char *path = xstrdup_or_null(hp_ckpt_latest_path(a->ckpt));
	/* whoever reads the reply and then GET /status sees the progress
	 * of every report before the query */
	agent_publish_now(a);
	return path;
}

static void on_disconnect(void *ud, int local_rank)
{
	struct hp_agent *a = ud;
	if (a->ipr_wait == IPR_WAIT_STOP) {
		char why[128];
		snprintf(why, sizeof(why),
			 "local rank %d dropped its connection during the "
			 "barrier wait", local_rank);
		ipr_process_level_restart(a, why);
		return;
	}
	hp_debug("ipr", "local rank %d disconnected", local_rank);
}

int ipr_setup(struct hp_agent *a)
{
	static const struct hp_ipc_callbacks cbs = {
		.on_init = on_init,
		.on_barrier = on_barrier,
		.on_past_barrier = on_past_barrier,
		.on_fault = on_fault,
		.on_data = on_data,
		.on_labels = on_labels,
		.on_ckpt_init = on_ckpt_init,
		.on_ckpt_update = on_ckpt_update,
		.on_ckpt_get = on_ckpt_get,
		.on_disconnect = on_disconnect,
	};
	const char *tmpdir = getenv("TMPDIR");
	a->ipc = hp_ipc_new(&a->loop, tmpdir && *tmpdir ? tmpdir : "/tmp",
			    getpid(), a->nproc, &cbs, a);
	if (!a->ipc)
		return -EIO;
	uv_timer_init(&a->loop, &a->ipr_timer);
	a->ipr_timer.data = a;
	hp_info("ipr", "worker IPC listening on %s", hp_ipc_path(a->ipc));
	return 0;
}

void ipr_teardown(struct hp_agent *a)
{
	xnode_teardown(a);
	if (!a->ipc)
		return;
	hp_ipc_free(a->ipc);
	a->ipc = NULL;
}
