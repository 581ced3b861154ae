/* agent-private.h — struct hp_agent and the functions agent.c shares with
 * ipr.c (the in-process-restart flow). Nothing outside agent/ includes it.
 * agent.c and ipr.c call each other on purpose: they are one unit, the
 * supervisor of one struct hp_agent, split by flow (process-level vs
 * in-process restart), not two modules; only this header joins them. */
#ifndef HP_AGENT_PRIVATE_H
#define HP_AGENT_PRIVATE_H

#include <limits.h>
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
struct hp_c10d;
struct hp_ckpt;

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
	AFTER_RDZV,      /* c10d: another node ended the round; rejoin */
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
	unsigned long labels_seq; /* order of the rank_labels messages */
};

struct hp_agent {
	const struct hp_config *cfg;
	uv_loop_t loop;
	uv_signal_t sigs[7];
	uv_async_t wake;
	uv_timer_t kill_timer;
	/* local mode: the next attempt after a spawn that failed for lack of
	 * resources (EMFILE, EAGAIN...) waits, doubling up to 30 s, instead
	 * of burning --max-restarts in a second (issue 12 §3) */
	uv_timer_t backoff_timer;
	int backoff_ms;
	bool spawn_starved;
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
	/* "True" at start in operator mode, as the reference; PLR never
	 * changes it, IPR follows the operator (ipr_spare_update) */
	bool spare;
	/* IPR: "True" after an in-process pause and for a fresh non-spare
	 * node (faultCount 0, INIT); cleared on release and process stop */
	bool priority;
	/* IPR: a hang or fault-on-match log rule tripped: the group is
	 * unhealthy, the next /stop is a process-level restart */
	bool unhealthy;
	bool failed_run;   /* the last run failed: /shutdown exits 1 */
	bool plr_pending;  /* IPR: a request asked for a process restart */
	unsigned long labels_seq; /* rank_labels messages so far */
	char *logmon_pending; /* rules from a request while armed */
	struct hp_ckpt *ckpt; /* checkpoint discovery (ckpt.c) */
	char *req_worker_data; /* the operator's worker_data, JSON text */

	enum stage stage;
	enum after_stop after_stop;
	int nproc;
	struct worker *workers;
	int nrunning;
	pid_t aux_pid;        /* pre/post-train script */
	enum stage aux_stage; /* which script aux_pid is */
	/* the pre/post-train groups' own logs, <log_dir>/pre_train_<run_id>_*
	 * and post_train_<run_id>_* as the reference's (10071915287) */
	struct hp_logs *pre_logs, *post_logs;

	/* failures of the current attempt, first observed first */
	struct hp_failure *failures;
	size_t n_failures;

	/* the worker IPC: in-process restart and checkpoint discovery (the
	 * socket exists in PLR mode too; use agent_ipr() for the mode) */
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

	bool tty_fg; /* workers stay in the terminal's foreground group */
	struct hp_c10d *c10d; /* rdzv.c: NULL unless c10d across nodes */
	bool rdzv_error;      /* the rendezvous failed: exit 1 once stopped */
	bool loop_ready;
	bool exiting;
	int exit_code;
	int term_signal;
};

/* The in-process-restart flow (--inprocess-restart)? */
static inline bool agent_ipr(const struct hp_agent *a)
{
	return a->cfg->inprocess_restart;
}

/* Global rank of local rank lr, computed in 64 bits and clamped to an int
 * (the operator's numbers are range-checked; --nnodes/--node-rank of a
 * local run are not bounded that tightly). */
static inline int agent_global_rank(const struct hp_agent *a, int lr)
{
	long long r = (long long)a->group_rank * a->nproc + lr;
	return r > INT_MAX ? INT_MAX : r < INT_MIN ? INT_MIN : (int)r;
}

/* agent.c */
void agent_publish(struct hp_agent *a);
/* Publishes a pending /status now: before a reply that a client may
 * follow with GET /status */
void agent_publish_now(struct hp_agent *a);
void agent_fire(struct hp_agent *a, enum hp_event ev, const char *reason,
		const char *message);
void agent_start_stop(struct hp_agent *a, enum after_stop after, int sig,
		      int timeout_s);
void agent_begin_attempt(struct hp_agent *a);
/* a worker failed: FAULTED, stop the rest, then AFTER_FAULT */
void agent_group_failed(struct hp_agent *a);
void agent_finish(struct hp_agent *a, int code);
/* What /start and /update both apply (the reference's _update_agent_info):
 * rendezvous, faultCount -> restart count, log monitoring rules, resource
 * config; spare via ipr_spare_update in IPR. /start also sets the
 * assigned rank and the checkpoint tracker's progress. */
void agent_apply_rdzv(struct hp_agent *a, const struct hp_start_req *r,
		      bool is_start);
/* IPR: the log monitoring of the current phase (INIT: the pre-train
 * phase, RUNNING) with the rules the operator sent last */
void agent_arm_logmon(struct hp_agent *a);
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
/* /shutdown: any barrier wait or cross-node round ends now. */
void ipr_cmd_shutdown(struct hp_agent *a);
/* the reference's handle_spare_update: priority for a fresh non-spare
 * node, a process-level restart on non-spare -> spare */
void ipr_spare_update(struct hp_agent *a, bool spare, int fault_count);
/* a worker process died while the group was running */
void ipr_worker_died(struct hp_agent *a);
/* a process-level restart in IPR mode: kill, respawn, back to INIT */
void ipr_process_level_restart(struct hp_agent *a, const char *why);
void ipr_free_worker_data(struct hp_agent *a);

/* rdzv.c: --rdzv-backend=c10d with --nnodes > 1 in local mode (the
 * rendezvous of rendezvous/c10d.h). setup creates a->c10d when wanted (0,
 * or -errno logged); begin joins the first round and starts the group
 * when it closes; restart reports this node's failure and joins the next
 * round; stopped is AFTER_RDZV (another node ended the round, or the
 * rendezvous failed: exit 1); succeeded waits at the exit barrier, then
 * finishes with 0. */
struct hp_config;
bool rdzv_wanted(const struct hp_config *c);
int rdzv_setup(struct hp_agent *a);
void rdzv_begin(struct hp_agent *a);
void rdzv_restart(struct hp_agent *a);
void rdzv_stopped(struct hp_agent *a);
void rdzv_succeeded(struct hp_agent *a);
void rdzv_teardown(struct hp_agent *a);

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
