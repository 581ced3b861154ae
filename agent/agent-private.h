/* agent-private.h — struct hp_agent and the functions agent.c shares with
 * ipr.c (the in-process-restart flow). Nothing outside agent/ includes it.
 * agent.c and ipr.c call each other on purpose: they are one unit, the
 * supervisor of one struct hp_agent, split by flow (process-level vs
 * in-process restart), not two modules; only this header joins them. */
#ifndef HP_AGENT_PRIVATE_H
#define HP_AGENT_PRIVATE_H

#include <stdbool.h>
#include <sys/types.h>
#include <uv.h>

#include "agent.h"
#include "failure.h"
#include "fsm.h"
#include "logs.h"

struct hp_server;
struct hp_start_req;
struct hp_stop_req;
struct hp_ipc;
struct hp_resconf;
struct hp_logmon;
struct hp_metrics;
struct hp_xnode;

enum stage {
	STAGE_IDLE = 0,
	STAGE_PRE,      /* pre-train script running */
	STAGE_TRAIN,    /* worker group running */
	STAGE_POST,     /* post-train script running */
	STAGE_STOPPING, /* signalled everything; waiting for the last exit */
};

/* What to do once a stop has reaped every child. */
enum after_stop {
	AFTER_FAULT = 0, /* a worker failed: restart (local) or wait (operator) */
	AFTER_STOP_CMD,  /* /stop: back to READY */
	AFTER_SHUTDOWN,  /* /shutdown: leave the loop, exit 0 */
	AFTER_SIGNAL,    /* a terminating signal: exit 128+signo */
	AFTER_RESPAWN,   /* IPR's process-level restart: spawn again, INIT */
};

/* What the IPR barrier wait is for. */
enum ipr_wait {
	IPR_WAIT_NONE = 0,
	IPR_WAIT_INIT, /* fresh workers: INIT -> READY */
	IPR_WAIT_STOP, /* after a fault/stop: STOPPING -> READY */
};

struct worker {
	int local_rank;
	pid_t pid; /* 0 when not running */
	bool failed;
	/* IPR: what the rank reported */
	int data_rank;    /* global rank of the job_data, -1 = none */
	char *data_json;
	char *labels_json;
};

struct hp_agent {
	const struct hp_config *cfg;
	uv_loop_t loop;
	uv_signal_t sigs[7];
	uv_async_t wake;
	uv_timer_t kill_timer;
	uv_check_t publish_check;     /* publish /status once per event: */
	uv_prepare_t publish_prepare; /* see agent_publish() */
	bool publish_pending;
	struct hp_fsm fsm;
	struct hp_server *server;
	struct hp_logs *logs;
	struct hp_resconf *resconf;
	char *run_id;
	char hostname[256];
	const char *entrypoint_name;

	/* rendezvous: from the config (local) or /start (operator) */
	int group_rank;
	int nnodes;
	char *master_addr;
	int master_port;
	int restart_count; /* TORCHELASTIC_RESTART_COUNT of the current attempt */
	int plr_restarts;  /* local mode: group restarts used (--max-restarts) */
	int assigned_rank; /* -1 until /start */
	bool spare;
	char *progress_json;
	char *req_worker_data; /* the operator's worker_data, JSON text */

	enum stage stage;
	enum after_stop after_stop;
	int nproc;
	struct worker *workers;
	int nrunning;
	pid_t aux_pid;        /* pre/post-train script */
	enum stage aux_stage; /* which script aux_pid is */

	/* failures of the current attempt, first observed first */
	struct hp_failure *failures;
	size_t n_failures;

	/* in-process restart */
	struct hp_ipc *ipc;
	uv_timer_t ipr_timer;
	enum ipr_wait ipr_wait;
	bool start_pending;       /* /start came before the barrier was full */
	const char *restart_mode; /* /status restartMode */
	char *failed_ranks;       /* "1,3" for the fault message */
	/* cross-node IPR (xnode.c), nnodes > 1 */
	struct hp_xnode *xnode;   /* NULL until the first barrier */
	char nccl_id[257];        /* global rank 0's NCCL unique id, hex or "" */
	char *xn_worker_data;     /* every node's worker data (JSON array) */

	/* log monitoring (logmon.c) and /metrics (metrics.c) */
	struct hp_logmon *logmon;
	struct hp_metrics *metrics;
	double fault_at;   /* hp_metrics_now() of the failure being answered */
	double barrier_at; /* IPR: when STOPPING began the barrier wait */
	bool spawned_once; /* a later spawn_group is a process restart */

	bool loop_ready;
	bool exiting;
	int exit_code;
	int term_signal;
};

/* agent.c */
void agent_publish(struct hp_agent *a);
void agent_fire(struct hp_agent *a, enum hp_event ev, const char *reason,
		const char *message);
void agent_start_stop(struct hp_agent *a, enum after_stop after, int sig,
		      int timeout_s);
void agent_begin_attempt(struct hp_agent *a);
/* a worker failed: FAULTED, stop the rest, then AFTER_FAULT */
void agent_group_failed(struct hp_agent *a);
void agent_finish(struct hp_agent *a, int code);
void agent_apply_rdzv(struct hp_agent *a, const struct hp_start_req *r,
		      bool is_start);
/* the rank env map pushed to workers, as a JSON object text */
char *agent_worker_envs_json(const struct hp_agent *a, int local_rank);

/* ipr.c */
int ipr_setup(struct hp_agent *a);
void ipr_teardown(struct hp_agent *a);
/* the group was (re)spawned: wait for every rank at the barrier */
void ipr_group_spawned(struct hp_agent *a);
/* the agent (local mode) or /start releases the barrier */
int ipr_cmd_start(struct hp_agent *a, const struct hp_start_req *r);
int ipr_cmd_stop(struct hp_agent *a, const struct hp_stop_req *r);
int ipr_cmd_update(struct hp_agent *a, const struct hp_start_req *r);
/* a worker process died while the group was running */
void ipr_worker_died(struct hp_agent *a);
/* a process-level restart in IPR mode: kill, respawn, back to INIT */
void ipr_process_level_restart(struct hp_agent *a, const char *why);
void ipr_free_worker_data(struct hp_agent *a);

/* xnode.c: the in-process restart across nodes (--inprocess-restart with
 * nnodes > 1). At every barrier, once every local rank is there: sets
 * a->nccl_id from global rank 0's job_data, and with nnodes > 1 starts a
 * round on a thread of its own: the peer table of this epoch, the fabric
 * barrier, the worker-data allgather (a->xn_worker_data) and the
 * broadcast of the NCCL id, all within one --inprocess-timeout (60 s if
 * none); the first round opens the endpoint. init: the barrier of
 * freshly spawned processes (operator mode leaves those to the operator,
 * and meets only after a /start). Returns true when a round started: the
 * loop goes on, and ipr_round_done() (ipr.c) follows from the loop with
 * 0, or -errno and why for a process-level restart. false: nothing to
 * wait for (one node, no fabric here: node-local IPR). */
bool xnode_round_start(struct hp_agent *a, bool init);
/* The agent no longer waits for the round (a process-level restart, a
 * /stop plr): its outcome is dropped, its thread told to stop soon. Also
 * drops the last round's worker data. */
void xnode_round_cancel(struct hp_agent *a);
/* Is a round under way that the agent waits for? */
bool xnode_round_running(const struct hp_agent *a);
/* ipr.c's /stop while a round runs: true when kept (a copy of r) for the
 * round's end, where ipr_cmd_stop() runs it. */
bool xnode_defer_stop(struct hp_agent *a, const struct hp_stop_req *r);
/* ipr.c: the end of the barrier, after the cross-node round if any. */
void ipr_round_done(struct hp_agent *a, bool init, int rc, const char *why);
/* Operator mode, a /start while READY with ranks that never met the other
 * nodes (fresh processes): a round first, so global rank 0's NCCL id
 * reaches every rank of every host before the first run (issue 13 §3).
 * true: started, ipr_start_round_done() follows from the loop. */
bool xnode_start_round(struct hp_agent *a);
void ipr_start_round_done(struct hp_agent *a, int rc, const char *why);
/* Is the fabric set up (peers known)? */
bool xnode_active(const struct hp_agent *a);
/* Local mode (no operator to do it): this node restarts, in process or
 * (plr) with new processes; POST /stop with that restart_mode to every
 * peer's server so every node restarts alike and they meet at the next
 * barrier. Best effort, a short timeout per peer, logged. A peer already
 * restarting ignores it. */
void xnode_tell_peers(struct hp_agent *a, bool plr);
/* Leaves the fabric (peers see a departure) and frees it. */
void xnode_teardown(struct hp_agent *a);

#endif
