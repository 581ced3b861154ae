/* agent.c — the supervisor. One libuv loop owns: signals (SIGCHLD reaping
 * with waitpid(-1), terminating signals forwarded to every worker group),
 * the worker group and the pre/post-train scripts, the stop escalation
 * timer, and the operator commands that the server thread queues. Every
 * change of state goes through the fsm table and republishes /status.
 * Never parses HTTP or JSON text itself (server/ does); the JSON it hands
 * out (workers' rank envs, /status progress) is built with cJSON, never
 * escaped by hand. Never forks except through worker.c. */
#include "agent-private.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ckpt.h"
#include "env.h"
#include "failure.h"
#include "fsm.h"
#include "hp-version.h"
#include "base/log.h"
#include "base/sbuf.h"
#include "logmon.h"
#include "logs.h"
#include "metrics.h"
#include "rendezvous/ipc.h"
#include "rendezvous/resconf.h"
#include "server/server.h"
#include "worker.h"
#include "base/xalloc.h"

extern char **environ;

static const char *const stage_names[] = {"idle", "pre-train", "train",
					  "post-train", "stopping"};

/* ------------------------------------------------------------------ */
/* status                                                              */

/* The reference keeps one labels map per worker group: the last
 * rank_labels message replaces it, whoever sent it (10281984903
 * assign_labels; 9960341539 test_notify_labels_callback). */
static char *group_labels(const struct hp_agent *a)
{
	const char *last = NULL;
	unsigned long best = 0;
	for (int i = 0; i < a->nproc; i++)
		if (a->workers[i].labels_json && a->workers[i].labels_seq > best) {
			best = a->workers[i].labels_seq;
			last = a->workers[i].labels_json;
		}
	return xstrdup(last ? last : "{}");
}

/* cJSON's text in our allocator (callers free() it); out of memory is
 * fatal, as everywhere else (xalloc). */
static char *json_text(cJSON *v)
{
	char *p = v ? cJSON_PrintUnformatted(v) : NULL;
	if (!p)
		hp_bug("cJSON_PrintUnformatted: out of memory");
	char *out = xstrdup(p);
	cJSON_free(p);
	cJSON_Delete(v);
	return out;
}

/* /status progress: the tracker's latest complete checkpoint,
 * {prefix: {"progressData": path, "progressCount": step}}, as the
 * reference's get_agent_progress (10071915287); NULL when none. The
 * prefix and path are the workers' strings: cJSON escapes them. */
static char *progress_json(const struct hp_agent *a)
{
	const char *prefix, *path;
	long long step;
	if (!a->ckpt || !hp_ckpt_progress(a->ckpt, &prefix, &path, &step))
		return NULL;
	cJSON *o = cJSON_CreateObject(), *e = cJSON_CreateObject();
	cJSON_AddItemToObject(o, prefix, e);
	cJSON_AddItemToObject(e, "progressData", path ? cJSON_CreateString(path)
						      : cJSON_CreateNull());
	/* the step as written, every digit: a double would round a step
	 * past 2^53 and print 1e+17 where Python's json wants an int */
	char num[24];
	snprintf(num, sizeof(num), "%lld", step);
	cJSON_AddItemToObject(e, "progressCount", cJSON_CreateRaw(num));
	return json_text(o);
}

/* Builds and hands the server the /status body and the metrics text. */
static void publish_now(struct hp_agent *a)
{
	a->publish_pending = false;
	if (!a->server)
		return;
	struct hp_transition tr[HP_STATE_COUNT];
	size_t n = 0;
	for (int s = 0; s < HP_STATE_COUNT; s++) {
		if (a->fsm.entered[s][0]) {
			tr[n].state = hp_state_name((enum hp_state)s);
			tr[n].ts = a->fsm.entered[s];
			n++;
		}
	}
	struct hp_worker_data wd[HP_MAX_LOCAL_WORKERS];
	size_t nwd = 0;
	char *labels = NULL;
	if (agent_ipr(a)) {
		/* only ranks that sent data, as the reference's
		 * get_worker_data (10281984903) */
		for (int i = 0; i < a->nproc; i++) {
			const struct worker *w = &a->workers[i];
			if (w->data_rank < 0)
				continue;
			wd[nwd++] = (struct hp_worker_data){
				.rank = w->data_rank >= 0
						? w->data_rank
						: agent_global_rank(a, i),
				.group_rank = a->group_rank,
				.local_rank = i,
				.failed = w->failed,
				.data_json = w->data_json,
			};
		}
		labels = group_labels(a);
	}
	char *progress = progress_json(a);
	struct hp_status st = {
		.status = hp_state_lower(a->fsm.state),
		.transitions = tr,
		.n_transitions = n,
		.reason = a->fsm.reason[0] ? a->fsm.reason : NULL,
		.message = a->fsm.message[0] ? a->fsm.message : NULL,
		.restart_mode = a->restart_mode,
		.worker_data = wd,
		.n_worker_data = nwd,
		.rank_labels_json = labels,
		.ipversion = a->resconf ? hp_resconf_ip_version(a->resconf)
					: NULL,
		.progress_json = progress,
		.agent_version = HP_AGENT_VERSION(HP_VERSION),
		.assigned_rank = a->assigned_rank,
		.spare = a->spare,
		.priority = a->priority,
	};
	hp_server_publish(a->server, hp_json_status(&st));
	free(labels);
	free(progress);
	/* the metrics text is rendered by server_metrics when asked for */
}

/* A restart fires several transitions in one callback; building the JSON
 * and the metrics text for each would put milliseconds on the restart
 * path. Publishing is deferred to the end of the loop phase: a prepare
 * handle flushes what timer callbacks changed before the loop blocks, a
 * check handle what I/O and signal callbacks changed. One event publishes
 * once; command replies and start-up publish at once. */
void agent_publish(struct hp_agent *a)
{
	a->publish_pending = true;
}

void agent_publish_now(struct hp_agent *a)
{
	if (a->publish_pending)
		publish_now(a);
}

static void publish_check_cb(uv_check_t *h)
{
	struct hp_agent *a = h->data;
	if (a->publish_pending)
		publish_now(a);
}

static void publish_prepare_cb(uv_prepare_t *h)
{
	struct hp_agent *a = h->data;
	if (a->publish_pending)
		publish_now(a);
}

/* A failure being answered ends when its replacements run. */
static void restart_done(struct hp_agent *a)
{
	if (a->fault_at > 0)
		hp_metrics_observe_restart(a->metrics,
					   hp_metrics_now() - a->fault_at);
	a->fault_at = 0;
}

/* What a state change means for log monitoring and /metrics: rules are
 * armed afresh whenever the group (re)enters RUNNING, as the reference
 * starts its log agent with each start and clears it on each stop. */
static void state_changed(struct hp_agent *a, enum hp_state from,
			  enum hp_event ev)
{
	enum hp_state to = a->fsm.state;
	hp_metrics_set_state(a->metrics, to);
	if (to == HP_STATE_FAULTED && a->fault_at <= 0)
		a->fault_at = hp_metrics_now();
	/* what torch's run() would see at /shutdown: a failed group (operator
	 * mode: FAULTED lasts until the operator acts; in local mode it is a
	 * moment of the agent's own restart cycle) */
	if (to == HP_STATE_FAULTED && a->cfg->mode == HP_MODE_OPERATOR)
		a->failed_run = true;
	else if (to == HP_STATE_RUNNING || to == HP_STATE_READY)
		a->failed_run = false;
	/* IPR's in-process cycle is STOPPING (job_fault sent, waiting at the
	 * barrier) -> READY (every rank back); a process-level restart
	 * leaves STOPPING another way */
	if (agent_ipr(a) && to == HP_STATE_STOPPING)
		a->barrier_at = hp_metrics_now();
	if (agent_ipr(a) && from == HP_STATE_STOPPING &&
	    ev == HP_EV_STOPPED) {
		hp_metrics_restart(a->metrics, HP_METRICS_RESTART_IN_PROCESS);
		hp_metrics_observe_barrier(a->metrics,
					   hp_metrics_now() - a->barrier_at);
	}
	if (to == HP_STATE_RUNNING && agent_ipr(a))
		restart_done(a); /* IPR: the ranks are released */
	if (!a->logmon)
		return;
	/* the reference starts its log agent with each start (spare or not)
	 * and stops it on each stop; IPR also watches INIT, the pre-train
	 * phase, and stops at READY (10759738055) */
	if (to == HP_STATE_RUNNING)
		agent_arm_logmon(a);
	else if (from == HP_STATE_RUNNING || from == HP_STATE_INIT)
		hp_logmon_disarm(a->logmon);
}

void agent_fire(struct hp_agent *a, enum hp_event ev, const char *reason,
		 const char *message)
{
	enum hp_state from = a->fsm.state;
	if (hp_fsm_fire(&a->fsm, ev, reason, message) == 0) {
		state_changed(a, from, ev);
		agent_publish(a);
	}
}

/* ------------------------------------------------------------------ */
/* children                                                            */

static char **worker_argv(const struct hp_agent *a)
{
	const struct hp_config *c = a->cfg;
	size_t n = (size_t)c->script_argc + 5;
	char **argv = xcalloc(n, sizeof(char *));
	size_t k = 0;
	if (!c->no_python) {
		/* torchrun 1.13 reads PYTHON_EXEC; $PYTHON is ours */
		const char *py = getenv("PYTHON_EXEC");
		if (!py || !*py)
			py = getenv("PYTHON");
		argv[k++] = xstrdup(py && *py ? py : "python3");
		argv[k++] = xstrdup("-u");
		if (c->run_path) {
			/* torchrun's run_script_path under @record */
			argv[k++] = xstrdup("-c");
			argv[k++] = xstrdup(hp_failure_run_path_py);
		} else if (c->module) {
			argv[k++] = xstrdup("-m");
		}
	}
	for (int i = 0; i < c->script_argc; i++)
		argv[k++] = xstrdup(c->script_argv[i]);
	argv[k] = NULL;
	return argv;
}

static void free_strv(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

/* torch 2.x --virtual-local-rank: every worker sees its own GPU as device
 * 0 and LOCAL_RANK=0; the GPU is the local_rank-th of the agent's
 * CUDA_VISIBLE_DEVICES, or local_rank itself when that is unset (a rank
 * past the list keeps the whole list: torch refuses to start there, we
 * warn). Fills two "K=V" strings. */
static void virtual_local_rank_env(int local_rank, char **out)
{
	const char *vis = getenv("CUDA_VISIBLE_DEVICES");
	out[0] = xstrdup("LOCAL_RANK=0");
	if (!vis) {
		out[1] = xasprintf("CUDA_VISIBLE_DEVICES=%d", local_rank);
		return;
	}
	const char *p = vis;
	for (int i = 0; i < local_rank && p; i++) {
		p = strchr(p, ',');
		if (p)
			p++;
	}
	if (!p) {
		hp_warn("agent", "--virtual-local-rank: local rank %d is past "
			"CUDA_VISIBLE_DEVICES=%s", local_rank, vis);
		out[1] = xasprintf("CUDA_VISIBLE_DEVICES=%s", vis);
		return;
	}
	while (*p == ' ')
		p++;
	size_t n = strcspn(p, ", ");
	out[1] = xasprintf("CUDA_VISIBLE_DEVICES=%.*s", (int)n, p);
}

/* aux: the pre/post-train group of one (LOCAL_WORLD_SIZE=1, RANK =
 * group rank x nproc, as the reference's own WorkerSpec for it). */
static char **rank_env(const struct hp_agent *a, int local_rank,
		       const char *error_file, bool aux)
{
	const struct hp_config *c = a->cfg;
	bool op = c->mode == HP_MODE_OPERATOR;
	struct hp_rank_info ri = {
		.group_rank = a->group_rank,
		.group_world_size = a->nnodes,
		.local_world_size = aux ? 1 : a->nproc,
		.node_stride = a->nproc,
		.group_world_is_world = op,
		.restart_count = a->restart_count,
		.max_restarts = c->max_restarts,
		.master_addr = a->master_addr,
		.master_port = a->master_port,
		.run_id = a->run_id,
		.role = c->role,
		.use_agent_store = false,
		.spare = agent_ipr(a) ? (int)a->spare : -1,
	};
	/* the reference sets both for every worker, PLR included
	 * (10071915287 _start_workers); --virtual-local-rank adds two */
	char *extra[5] = {NULL, NULL, NULL, NULL, NULL};
	size_t n = 0;
	if (a->ipc)
		extra[n++] = xasprintf("HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH=%s",
				       hp_ipc_path(a->ipc));
	if (op && !getenv("HYPERPOD_SIGNAL_COORDINATION"))
		extra[n++] = xstrdup("HYPERPOD_SIGNAL_COORDINATION=disabled");
	if (c->virtual_local_rank && !aux) {
		virtual_local_rank_env(local_rank, &extra[n]);
		n += 2;
	}
	char **env = hp_env_build(environ, &ri, local_rank, error_file, extra);
	for (size_t i = 0; i < n; i++)
		free(extra[i]);
	return env;
}

char *agent_worker_envs_json(const struct hp_agent *a, int local_rank)
{
	/* 64-bit arithmetic: /start's numbers are range-checked, but no
	 * int input may overflow here; values are never truncated (a
	 * 253-byte DNS name as MASTER_ADDR arrives whole) */
	long long rank = (long long)a->group_rank * a->nproc + local_rank;
	long long world = (long long)a->nnodes * a->nproc;
	/* GROUP_WORLD_SIZE: the reference's is the world size (10336335176,
	 * 10699799921), in operator mode; local mode keeps torchrun's */
	long long gws = a->cfg->mode == HP_MODE_OPERATOR ? world : a->nnodes;
	char num[8][24];
	snprintf(num[0], 24, "%lld", rank);
	snprintf(num[1], 24, "%d", a->group_rank);
	snprintf(num[2], 24, "%lld", world);
	snprintf(num[3], 24, "%lld", gws);
	snprintf(num[4], 24, "%d", a->master_port);
	snprintf(num[5], 24, "%d", a->restart_count);
	static const char *const keys[11] = {
		"RANK", "GROUP_RANK", "ROLE_RANK", "WORLD_SIZE",
		"GROUP_WORLD_SIZE", "ROLE_WORLD_SIZE", "MASTER_ADDR",
		"MASTER_PORT", "JOB_RESTART_COUNT",
		"TORCHELASTIC_RESTART_COUNT", "SPARE"};
	const char *vals[11] = {num[0], num[1], num[0], num[2], num[3],
				num[2], a->master_addr, num[4], num[5],
				num[5], a->spare ? "True" : "False"};
	/* every value a string, in this order (cJSON keeps insertion
	 * order); MASTER_ADDR is the operator's text: cJSON escapes it */
	cJSON *o = cJSON_CreateObject();
	for (int i = 0; i < 11; i++)
		cJSON_AddItemToObject(o, keys[i], cJSON_CreateString(vals[i]));
	if (a->nccl_id[0])
		/* global rank 0's id for this run (xnode.c), as the NCCL
		 * flow of examples/README.md expects */
		cJSON_AddItemToObject(o, "NCCL_UNIQUE_ID",
				      cJSON_CreateString(a->nccl_id));
	return json_text(o);
}

/* TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE, as Python's
 * string.Template.safe_substitute expands it with the reference's names
 * (10071915287 _start_workers: role_name, rank, local_rank, group_rank,
 * restart_count): "$name" or "${name}", "$$" is "$", anything else stays
 * as written. NULL when the variable is unset. */
static char *line_prefix(const struct hp_agent *a, int local_rank)
{
	const char *t = getenv("TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE");
	if (!t)
		return NULL;
	char vals[5][24];
	snprintf(vals[1], 24, "%d", agent_global_rank(a, local_rank));
	snprintf(vals[2], 24, "%d", local_rank);
	snprintf(vals[3], 24, "%d", a->group_rank);
	snprintf(vals[4], 24, "%d", a->restart_count);
	static const char *const names[5] = {"role_name", "rank", "local_rank",
					     "group_rank", "restart_count"};
	struct hp_sbuf b = {0};
	for (const char *p = t; *p;) {
		if (*p != '$') {
			hp_sbuf_add(&b, p++, 1);
			continue;
		}
		if (p[1] == '$') {
			hp_sbuf_add(&b, "$", 1);
			p += 2;
			continue;
		}
		bool brace = p[1] == '{';
		const char *id = p + 1 + brace;
		size_t n = 0;
		while ((id[n] == '_' || (id[n] >= 'a' && id[n] <= 'z') ||
			(id[n] >= 'A' && id[n] <= 'Z') ||
			(n && id[n] >= '0' && id[n] <= '9')))
			n++;
		int k = -1;
		for (int i = 0; n && i < 5; i++)
			if (strlen(names[i]) == n && strncmp(id, names[i], n) == 0)
				k = i;
		if (k < 0 || (brace && id[n] != '}')) {
			hp_sbuf_add(&b, p++, 1); /* not a known placeholder */
			continue;
		}
		const char *v = k == 0 ? a->cfg->role : vals[k];
		hp_sbuf_add(&b, v, strlen(v));
		p = id + n + brace;
	}
	return hp_sbuf_finish(&b);
}

/* The reference passes --pre/post-train-args "as is": one argv element,
 * the literal "None" when absent (args=tuple([args]), 10071915287). */
static char **aux_argv(const char *script, const char *args)
{
	char **v = xcalloc(3, sizeof(char *));
	v[0] = xstrdup(script);
	v[1] = xstrdup(args ? args : "None");
	return v;
}

static int spawn_aux(struct hp_agent *a, enum stage which)
{
	const struct hp_config *c = a->cfg;
	const char *script =
		which == STAGE_PRE ? c->pre_train_script : c->post_train_script;
	const char *args =
		which == STAGE_PRE ? c->pre_train_args : c->post_train_args;
	struct hp_logs *logs = which == STAGE_PRE ? a->pre_logs : a->post_logs;
	char **argv = aux_argv(script, args);
	int ofd = -1, efd = -1;
	int rc = hp_logs_begin_attempt(logs, a->restart_count);
	if (rc == 0)
		rc = hp_logs_open_rank(logs, 0, &ofd, &efd);
	char **envp = rank_env(a, 0, rc == 0 ? hp_logs_error_file(logs, 0)
					     : NULL, true);
	pid_t pid = 0;
	if (rc == 0) {
		struct hp_spawn sp = {.argv = argv, .envp = envp,
				      .stdout_fd = ofd, .stderr_fd = efd,
				      .keep_pgrp = a->tty_fg,
				      .fs = hp_logs_rank_fs(logs, 0)};
		enum hp_spawn_step step = HP_SPAWN_EXEC;
		rc = hp_worker_spawn(&sp, &pid, &step);
		hp_logs_started_rank(logs, 0);
		const char *path = hp_spawn_step_path(sp.fs, step);
		if (rc < 0 && path)
			hp_error("logs", "cannot create %s: %s", path,
				 strerror(-rc));
	}
	free_strv(argv);
	hp_env_free(envp);
	if (rc < 0) {
		hp_error("agent", "cannot run the %s script %s: %s",
			 stage_names[which], script, strerror(-rc));
		return rc;
	}
	hp_info("agent", "%s script %s started (pid %d)", stage_names[which],
		script, (int)pid);
	a->aux_pid = pid;
	a->aux_stage = which;
	a->stage = which;
	return 0;
}

static void clear_failures(struct hp_agent *a)
{
	for (size_t i = 0; i < a->n_failures; i++)
		hp_failure_fini(&a->failures[i]);
	free(a->failures);
	a->failures = NULL;
	a->n_failures = 0;
}

static void add_failure(struct hp_agent *a, int local_rank, pid_t pid,
			int status, const char *error_file)
{
	a->failures = xrealloc(a->failures,
			       (a->n_failures + 1) * sizeof(*a->failures));
	struct hp_failure *f = &a->failures[a->n_failures++];
	*f = (struct hp_failure){
		.rank = local_rank >= 0
				? agent_global_rank(a, local_rank)
				: -1,
		.local_rank = local_rank,
		.pid = pid,
		.exitcode = WIFSIGNALED(status) ? -WTERMSIG(status)
						: WEXITSTATUS(status),
		.timestamp = (long)time(NULL),
	};
	hp_failure_load(f, error_file);
}


/* path: the directory or log file the child could not create, or NULL
 * when exec (or fork) failed */
static void spawn_failed(struct hp_agent *a, int local_rank,
			 const char *prog, const char *path, int rc)
{
	if (path)
		hp_error("agent", "cannot start worker %d: cannot create %s: %s",
			 local_rank, path, strerror(-rc));
	else
		hp_error("agent", "cannot start worker %d: %s: %s", local_rank,
			 prog, strerror(-rc));
	/* torchrun's convention for "could not exec" */
	add_failure(a, local_rank, 0, 127 << 8, NULL);
	struct hp_failure *f = &a->failures[a->n_failures - 1];
	free(f->message);
	f->message = path ? xasprintf("cannot create %s: %s", path,
				      strerror(-rc))
			  : xasprintf("cannot execute %s: %s", prog,
				      strerror(-rc));
}

/* Forks every worker first and only then waits for their execs, so the N
 * children make their log files and exec in parallel: a restart costs one
 * fork per worker, not one fork+exec round trip per worker. */
static void spawn_group(struct hp_agent *a)
{
	char **argv = worker_argv(a);
	struct hp_spawn_child *kids =
		xcalloc((size_t)a->nproc, sizeof(*kids));
	int failed_rc = 0;
	a->stage = STAGE_TRAIN;
	for (int i = 0; i < a->nproc; i++)
		kids[i].errfd = -1;
	sigset_t reset;
	hp_worker_signals_set(&reset);
	for (int i = 0; i < a->nproc; i++) {
		struct worker *w = &a->workers[i];
		char **envp = rank_env(a, i, hp_logs_error_file(a->logs, i),
				       false);
		int ofd = -1, efd = -1;
		w->pid = 0;
		char *prefix = line_prefix(a, i);
		hp_logs_set_prefix(a->logs, i, prefix);
		free(prefix);
		int rc = hp_logs_open_rank(a->logs, i, &ofd, &efd);
		if (rc == 0) {
			struct hp_spawn sp = {.argv = argv, .envp = envp,
					      .stdout_fd = ofd,
					      .stderr_fd = efd,
					      .keep_pgrp = a->tty_fg,
					      .reset = &reset,
					      .fs = hp_logs_rank_fs(a->logs, i)};
			rc = hp_worker_spawn_begin(&sp, &kids[i]);
			w->pid = kids[i].pid;
			hp_logs_started_rank(a->logs, i);
		}
		hp_env_free(envp);
		if (rc < 0) {
			w->pid = 0;
			spawn_failed(a, i, argv[0], NULL, rc);
			failed_rc = rc;
			break;
		}
		w->failed = false;
		a->nrunning++;
	}
	for (int i = 0; i < a->nproc; i++) {
		struct worker *w = &a->workers[i];
		if (kids[i].errfd < 0)
			continue;
		enum hp_spawn_step step = HP_SPAWN_EXEC;
		int rc = hp_worker_spawn_end(&kids[i], &step);
		if (rc < 0) {
			/* the child is reaped already */
			w->pid = 0;
			a->nrunning--;
			if (!failed_rc)
				spawn_failed(a, i, argv[0],
					     hp_spawn_step_path(
						     hp_logs_rank_fs(a->logs, i),
						     step),
					     rc);
			failed_rc = rc;
		} else {
			hp_debug("agent", "worker %d started (pid %d)", i,
				 (int)w->pid);
		}
	}
	free(kids);
	free_strv(argv);
	a->spawn_starved = failed_rc == -EMFILE || failed_rc == -ENFILE ||
			   failed_rc == -EAGAIN || failed_rc == -ENOMEM;
	if (failed_rc) {
		agent_group_failed(a);
		return;
	}
	a->backoff_ms = 0;
	if (a->spawned_once)
		hp_metrics_restart(a->metrics, HP_METRICS_RESTART_PROCESS);
	a->spawned_once = true;
	restart_done(a);
	hp_info("agent", "started %d workers (attempt %d, group rank %d, "
		"world size %lld)", a->nproc, a->restart_count, a->group_rank,
		(long long)a->nnodes * a->nproc);
	/* only a worker's own process group may speak for its rank, in PLR
	 * too (the socket exists in operator-mode PLR for checkpoints); at a
	 * terminal the workers share the terminal's foreground group (ours),
	 * so that group is the most that can be checked */
	if (a->ipc)
		for (int i = 0; i < a->nproc; i++)
			hp_ipc_set_rank_pgid(a->ipc, i,
					     a->tty_fg ? getpgrp()
						       : a->workers[i].pid);
	if (agent_ipr(a))
		ipr_group_spawned(a);
}

void agent_begin_attempt(struct hp_agent *a)
{
	clear_failures(a);
	if (hp_logs_begin_attempt(a->logs, a->restart_count) < 0) {
		add_failure(a, 0, 0, 1 << 8, NULL);
		agent_group_failed(a);
		return;
	}
	/* a spare node runs its workers too: the reference keeps them at
	 * the barrier (IPR) or runs them (PLR, which never changes spare) */
	if (a->cfg->pre_train_script) {
		if (spawn_aux(a, STAGE_PRE) < 0) {
			add_failure(a, -1, 0, 127 << 8, NULL);
			agent_group_failed(a);
		}
		return;
	}
	spawn_group(a);
}

void agent_finish(struct hp_agent *a, int code)
{
	a->exiting = true;
	a->exit_code = code;
	uv_stop(&a->loop);
}

static void print_summary(struct hp_agent *a)
{
	if (!a->n_failures)
		return;
	char *s = hp_failure_summary(a->entrypoint_name, a->failures,
				     a->n_failures, a->hostname);
	for (size_t i = 0; i < a->n_failures; i++)
		if (a->failures[i].error_file)
			hp_logs_keep(a->logs); /* the summary names it */
	/* torchrun's block, one line per line (log.c defuses forged ones),
	 * in pieces cut at line ends: log.c bounds one write to 4 KiB and
	 * the root cause comes last, after every other rank's traceback */
	const size_t room = 2048;
	for (const char *p = s; HP_LOG_ERROR >= hp_log_level && *p;) {
		size_t n = strlen(p), skip = 0;
		if (n > room) {
			n = room;
			for (size_t k = room; k > 1; k--)
				if (p[k - 1] == '\n') {
					n = k - 1;
					skip = 1;
					break;
				}
		}
		hp_log_write_lines(HP_LOG_ERROR, "agent", "%s%.*s",
				   p == s ? "ChildFailedError: " : "", (int)n,
				   p);
		p += n + skip;
	}
	free(s);
}

static void local_restart_now(struct hp_agent *a);
static void backoff_cb(uv_timer_t *t);

/* Local mode plays the operator: FAULTED -> STOPPING -> READY -> RUNNING. */
static void local_restart_or_fail(struct hp_agent *a)
{
	const struct hp_config *c = a->cfg;
	if (a->plr_restarts < c->max_restarts) {
		if (a->n_failures) {
			const struct hp_failure *f =
				&a->failures[hp_failure_root(a->failures,
							     a->n_failures)];
			hp_warn("agent", "worker group failed: rank %d "
				"(local_rank %d) exitcode %d", f->rank,
				f->local_rank, f->exitcode);
		}
		a->plr_restarts++;
		if (a->restart_count < INT_MAX)
			a->restart_count++;
		hp_warn("agent", "restarting the worker group (%d of %d "
			"restarts)", a->plr_restarts, c->max_restarts);
		if (a->spawn_starved) {
			a->backoff_ms = a->backoff_ms
						? HP_MIN(2 * a->backoff_ms, 30000)
						: 1000;
			hp_warn("agent", "the workers could not be started for "
				"lack of resources: next attempt in %d ms",
				a->backoff_ms);
			uv_timer_start(&a->backoff_timer, backoff_cb,
				       (uint64_t)a->backoff_ms, 0);
			return;
		}
		local_restart_now(a);
		return;
	}
	print_summary(a);
	hp_error("agent", "worker group failed after %d restart(s); giving up",
		 a->plr_restarts);
	agent_finish(a, 1);
}

/* At a terminal the workers lead no process group, so what they started
 * is not signalled with them: once the group is down, whatever was left
 * behind and re-parented to us (subreaper or PID 1) is killed by pid. */
static void kill_strays(struct hp_agent *a)
{
	if (!a->tty_fg)
		return;
	int n = hp_worker_signal_children(SIGKILL);
	if (n > 0)
		hp_info("agent", "killed %d process(es) the workers left "
			"behind", n);
}

/* The restart itself, at once or after the back-off. */
static void local_restart_now(struct hp_agent *a)
{
	if (agent_ipr(a)) {
		/* IPR: fresh processes go back to INIT and the barrier;
		 * READY and the release follow by themselves */
		agent_fire(a, HP_EV_REINIT, NULL, NULL);
	} else {
		agent_fire(a, HP_EV_STOP, NULL, NULL);
		agent_fire(a, HP_EV_STOPPED, NULL, NULL);
		agent_fire(a, HP_EV_START, NULL, NULL);
	}
	if (a->c10d)
		rdzv_restart(a); /* the other nodes restart too */
	else
		agent_begin_attempt(a);
}

static void backoff_cb(uv_timer_t *t)
{
	struct hp_agent *a = t->data;
	/* a signal or /shutdown during the wait decides instead; so does a
	 * c10d round that started the group meanwhile (rdzv.c waits for
	 * this timer, but a stage other than idle must never respawn) */
	if (!a->exiting && a->after_stop == AFTER_FAULT &&
	    a->stage == STAGE_IDLE)
		local_restart_now(a);
}

static void stopped(struct hp_agent *a)
{
	uv_timer_stop(&a->kill_timer);
	kill_strays(a);
	for (int i = 0; i < a->nproc; i++)
		hp_logs_close_rank(a->logs, i);
	a->stage = STAGE_IDLE;
	hp_debug("agent", "every child stopped");
	switch (a->after_stop) {
	case AFTER_FAULT:
		if (a->cfg->mode == HP_MODE_LOCAL)
			local_restart_or_fail(a);
		else
			print_summary(a);
		break;
	case AFTER_STOP_CMD:
		agent_fire(a, HP_EV_STOPPED, NULL, NULL);
		break;
	case AFTER_SHUTDOWN:
		/* torch's run() raises ChildFailedError after a failed run:
		 * the reference exits 1 (10414151774) */
		agent_finish(a, a->failed_run ? 1 : 0);
		break;
	case AFTER_SIGNAL:
		agent_finish(a, 128 + a->term_signal);
		break;
	case AFTER_RDZV:
		rdzv_stopped(a);
		break;
	case AFTER_RESPAWN:
		/* fresh processes wait at the barrier again: INIT. The
		 * operator's faultCount is the count (the reference's
		 * _stop_workers leaves it, 10759738055); local mode counts */
		agent_fire(a, HP_EV_REINIT, NULL, NULL);
		if (a->cfg->mode == HP_MODE_LOCAL && a->restart_count < INT_MAX)
			a->restart_count++;
		agent_begin_attempt(a);
		break;
	}
}

static void check_stopped(struct hp_agent *a)
{
	if (a->stage == STAGE_STOPPING && a->nrunning == 0 && a->aux_pid == 0)
		stopped(a);
}

static void signal_all(struct hp_agent *a, int sig)
{
	for (int i = 0; i < a->nproc; i++)
		if (a->workers[i].pid > 0)
			hp_worker_signal(a->workers[i].pid, sig);
	if (a->aux_pid > 0)
		hp_worker_signal(a->aux_pid, sig);
}

static void kill_timer_cb(uv_timer_t *t)
{
	struct hp_agent *a = t->data;
	if (a->nrunning || a->aux_pid) {
		hp_warn("agent", "workers still running %d s after the stop "
			"signal: sending SIGKILL", a->cfg->shutdown_timeout);
		signal_all(a, SIGKILL);
	}
}

/* Signals every running child with sig; escalates to SIGKILL after
 * timeout_s unless sig already is SIGKILL. 'after' runs once all exited. */
void agent_start_stop(struct hp_agent *a, enum after_stop after, int sig,
		       int timeout_s)
{
	a->after_stop = after;
	a->stage = STAGE_STOPPING;
	if (a->nrunning || a->aux_pid) {
		hp_info("agent", "stopping %d worker(s) with %s", a->nrunning,
			hp_signal_name(sig));
		signal_all(a, sig);
		if (sig != SIGKILL)
			uv_timer_start(&a->kill_timer, kill_timer_cb,
				       (uint64_t)HP_MAX(timeout_s, 0) * 1000,
				       0);
	}
	check_stopped(a);
}

/* The reference PLR agent's words for a crashed worker group: reason
 * WorkerCrash, one "Local Rank N exited with code C due to: …" line per
 * failure (torch's ProcessFailure.message). */
void agent_group_failed(struct hp_agent *a)
{
	char msg[sizeof(a->fsm.message)];
	int off = snprintf(msg, sizeof(msg),
			   "A training worker process has crashed:\n");
	for (size_t i = 0; i < a->n_failures && off < (int)sizeof(msg) - 1;
	     i++) {
		char buf[128];
		const struct hp_failure *f = &a->failures[i];
		off += snprintf(msg + off, sizeof(msg) - (size_t)off,
				"    Local Rank %d exited with code %d due to: "
				"%s\n",
				f->local_rank, f->exitcode,
				hp_failure_text(f, buf, sizeof(buf)));
	}
	agent_fire(a, HP_EV_FAILED, "WorkerCrash", msg);
	agent_start_stop(a, AFTER_FAULT, a->cfg->shutdown_signal,
		   a->cfg->shutdown_timeout);
}

static void job_succeeded(struct hp_agent *a)
{
	hp_info("agent", "training succeeded");
	agent_fire(a, HP_EV_SUCCEEDED, NULL, NULL);
	a->stage = STAGE_IDLE;
	if (a->cfg->mode == HP_MODE_LOCAL) {
		if (a->c10d)
			rdzv_succeeded(a); /* torchrun's exit barrier */
		else
			agent_finish(a, 0);
	}
}

static void aux_exited(struct hp_agent *a, int status)
{
	enum stage which = a->aux_stage;
	struct hp_logs *logs = which == STAGE_PRE ? a->pre_logs : a->post_logs;
	a->aux_pid = 0;
	hp_logs_drain_rank(logs, 0);
	hp_logs_close_rank(logs, 0);
	if (a->stage == STAGE_STOPPING) {
		check_stopped(a);
		return;
	}
	bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	if (!ok) {
		hp_error("agent", "the %s script failed (%s %d)",
			 stage_names[which],
			 WIFSIGNALED(status) ? "signal" : "exit code",
			 WIFSIGNALED(status) ? WTERMSIG(status)
					     : WEXITSTATUS(status));
		add_failure(a, -1, 0, status, NULL);
		free(a->failures[a->n_failures - 1].message);
		a->failures[a->n_failures - 1].message =
			xasprintf("%s script failed", stage_names[which]);
		agent_group_failed(a);
		return;
	}
	if (which == STAGE_PRE)
		spawn_group(a);
	else
		job_succeeded(a);
}

static void worker_exited(struct hp_agent *a, struct worker *w, int status)
{
	bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	pid_t pid = w->pid;
	w->pid = 0;
	a->nrunning--;
	hp_logs_drain_rank(a->logs, w->local_rank);
	hp_metrics_worker_exit(a->metrics, status);
	agent_publish(a);
	if (WIFSIGNALED(status))
		hp_info("agent", "worker %d (pid %d) killed by %s",
			w->local_rank, (int)pid,
			hp_signal_name(WTERMSIG(status)));
	else
		hp_info("agent", "worker %d (pid %d) exited with code %d",
			w->local_rank, (int)pid, WEXITSTATUS(status));

	if (a->stage == STAGE_STOPPING) {
		/* a worker that failed by itself while we were stopping the
		 * group is a failure too; one we killed is not */
		if (a->after_stop == AFTER_FAULT && WIFEXITED(status) &&
		    WEXITSTATUS(status) != 0)
			add_failure(a, w->local_rank, pid, status,
				    hp_logs_error_file(a->logs, w->local_rank));
		check_stopped(a);
		return;
	}
	if (a->stage != STAGE_TRAIN)
		return;
	if (!ok) {
		w->failed = true;
		add_failure(a, w->local_rank, pid, status,
			    hp_logs_error_file(a->logs, w->local_rank));
		if (agent_ipr(a))
			ipr_worker_died(a);
		else
			agent_group_failed(a);
		return;
	}
	if (a->nrunning == 0) {
		for (int i = 0; i < a->nproc; i++)
			hp_logs_close_rank(a->logs, i);
		if (a->cfg->post_train_script) {
			if (spawn_aux(a, STAGE_POST) < 0) {
				add_failure(a, -1, 0, 127 << 8, NULL);
				agent_group_failed(a);
			}
			return;
		}
		job_succeeded(a);
	}
}

static void reap(struct hp_agent *a)
{
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);
		if (pid <= 0)
			break; /* 0: none ready; -1/ECHILD: no children */
		if (pid == a->aux_pid) {
			aux_exited(a, status);
			continue;
		}
		struct worker *w = NULL;
		for (int i = 0; i < a->nproc; i++)
			if (a->workers[i].pid == pid)
				w = &a->workers[i];
		if (w)
			worker_exited(a, w, status);
		else
			hp_debug("agent", "reaped orphan pid %d", (int)pid);
	}
}

/* ------------------------------------------------------------------ */
/* signals                                                             */

/* A terminating signal while the workers are being stopped for one. A
 * second Ctrl-C means "now": torchrun's second SIGINT cuts its grace wait
 * short, so SIGINT kills what is left at once; others are forwarded. */
static void second_signal(struct hp_agent *a, int signum)
{
	if (signum == SIGINT) {
		hp_warn("agent", "received SIGINT again: killing the workers "
			"(SIGKILL)");
		signal_all(a, SIGKILL);
		return;
	}
	hp_warn("agent", "received %s again: forwarding it",
		hp_signal_name(signum));
	signal_all(a, signum);
}

static void signal_cb(uv_signal_t *h, int signum)
{
	struct hp_agent *a = h->data;
	switch (signum) {
	case SIGCHLD:
		reap(a);
		return;
	case SIGUSR1:
	case SIGUSR2:
		/* torch 2.x --signals-to-handle=...,SIGUSR1: it stops the
		 * workers with it, as SIGTERM does; else HyperPod forwards */
		if (a->cfg->signals_to_handle & (1ull << signum))
			break;
		hp_info("agent", "forwarding %s to the workers",
			hp_signal_name(signum));
		signal_all(a, signum);
		return;
	default:
		break;
	}
	if (a->term_signal) {
		second_signal(a, signum);
		return;
	}
	hp_warn("agent", "received %s: stopping the workers",
		hp_signal_name(signum));
	a->term_signal = signum;
	agent_fire(a, HP_EV_SHUTDOWN, NULL, NULL);
	agent_start_stop(a, AFTER_SIGNAL, signum, a->cfg->shutdown_timeout);
}

/* ------------------------------------------------------------------ */
/* log monitoring                                                      */

static void on_worker_line(void *ud, int local_rank, int stream,
			   const char *line, size_t len)
{
	struct hp_agent *a = ud;
	/* the reference monitors local rank 0's stdout.log only */
	if (local_rank == 0 && stream == 1)
		hp_logmon_line(a->logmon, line, len);
}

/* A rule tripped (logmon.h): FAULTED with the reference's reason and
 * message. PLR stops the group as for a worker failure (inferred: the
 * reference leaves hung workers running until the operator's /stop; we
 * free the GPUs at once and /stop still answers as usual). IPR keeps the
 * workers for the operator's /stop (an in-process restart); local mode has
 * no operator, so it restarts the processes. */
static void on_log_trip(void *ud, enum hp_logmon_state st, const char *rule,
			const char *reason, const char *message)
{
	struct hp_agent *a = ud;
	hp_metrics_log_trip(a->metrics, rule,
			    st == HP_LOGMON_SLOW	  ? "slow"
			    : st == HP_LOGMON_HANGING ? "hanging"
						      : "faulted");
	/* IPR watches the pre-train phase (INIT) too; a trip there faults
	 * the node as the reference's _handle_failed_state does */
	bool ipr_init = agent_ipr(a) && a->fsm.state == HP_STATE_INIT &&
			a->cfg->mode == HP_MODE_OPERATOR;
	if (a->fsm.state != HP_STATE_RUNNING && !ipr_init) {
		agent_publish(a);
		return;
	}
	hp_error("agent", "log monitoring: rule '%s' is %s: the job is "
		 "faulted (%s)", rule, hp_logmon_state_name(st), reason);
	agent_fire(a, HP_EV_FAILED, reason, message);
	if (agent_ipr(a)) {
		/* a hung or faulted rank may never reach the barrier: the
		 * next /stop restarts the processes (10759738055
		 * _handle_failed_state); a slow rule may recover */
		if (st != HP_LOGMON_SLOW)
			a->unhealthy = true;
		if (a->cfg->mode == HP_MODE_LOCAL)
			ipr_process_level_restart(a, reason);
		return;
	}
	agent_start_stop(a, AFTER_FAULT, a->cfg->shutdown_signal,
			 a->cfg->shutdown_timeout);
}

/* Rules from /start or /update replace the old ones; while a monitor is
 * armed they wait for the next arm (the reference's log agent keeps its
 * rules until it restarts). Worker output is relayed through the agent
 * only while rules exist, except in IPR operator mode, where workers
 * start before any /start (hp_agent_run). */
static void configure_logmon(struct hp_agent *a, const char *json)
{
	if (hp_logmon_armed(a->logmon)) {
		free(a->logmon_pending);
		a->logmon_pending = xstrdup(json ? json : "[]");
		return;
	}
	int n = hp_logmon_configure(a->logmon, json);
	if (!(agent_ipr(a) && a->cfg->mode == HP_MODE_OPERATOR)) {
		/* the pre/post-train stages are monitored like training
		 * (10071915287 start_log_monitoring after each stage) */
		hp_logs_line_cb cb = n > 0 ? on_worker_line : NULL;
		hp_logs_set_line_cb(a->logs, cb, a);
		if (a->pre_logs)
			hp_logs_set_line_cb(a->pre_logs, cb, a);
		if (a->post_logs)
			hp_logs_set_line_cb(a->post_logs, cb, a);
	}
	/* IPR starts monitoring in INIT as soon as the first /update brings
	 * rules (the pre-train phase, 10759738055 _handle_healthy_state) */
	if (n > 0 && agent_ipr(a) && a->cfg->mode == HP_MODE_OPERATOR &&
	    a->fsm.state == HP_STATE_INIT)
		hp_logmon_arm(a->logmon);
}

void agent_arm_logmon(struct hp_agent *a)
{
	if (a->logmon_pending) {
		char *json = a->logmon_pending;
		a->logmon_pending = NULL;
		hp_logmon_disarm(a->logmon);
		configure_logmon(a, json);
		free(json);
	}
	hp_logmon_arm(a->logmon);
}

/* ------------------------------------------------------------------ */
/* operator commands                                                   */

void agent_apply_rdzv(struct hp_agent *a, const struct hp_start_req *r,
		       bool is_start)
{
	a->group_rank = r->rank;
	a->nnodes = r->nnodes;
	free(a->master_addr);
	a->master_addr = xstrdup(r->master_addr);
	a->master_port = r->master_port;
	/* /update too: faultCount is the restart count of the next push and
	 * attempt (10071915287 update_rendezvous_info) */
	a->restart_count = r->fault_count;
	free(a->req_worker_data);
	a->req_worker_data = xstrdup_or_null(r->worker_data_json);
	if (a->resconf)
		hp_resconf_apply(a->resconf, r->rank, r->nnodes, r->rank_ips,
				 r->n_rank_ips, r->has_rank_ips, r->ip_version);
	configure_logmon(a, r->log_monitoring_json);
	if (agent_ipr(a))
		ipr_spare_update(a, r->spare, r->fault_count);
	/* the PLR agent never changes spare (10594914244) */
	if (is_start) {
		a->assigned_rank = r->rank;
		if (hp_ckpt_set_progress(a->ckpt, r->progress_json) < 0)
			hp_warn("agent", "/start: progress is not an object of "
				"objects; ignored");
	}
}

static int cmd_start(struct hp_agent *a, struct hp_cmd *cmd)
{
	if (agent_ipr(a))
		return ipr_cmd_start(a, &cmd->start);
	/* the reference asks for RUNNING first, then applies the request
	 * even when the transition was refused (10449152409 _api_start) */
	bool ready = a->fsm.state == HP_STATE_READY;
	if (!ready)
		hp_warn("agent", "/start while %s: rendezvous information "
			"applied, workers not started",
			hp_state_name(a->fsm.state));
	agent_apply_rdzv(a, &cmd->start, true);
	hp_info("agent", "/start: rank %d of %d, master %s:%d, fault count %d",
		a->group_rank, a->nnodes, a->master_addr, a->master_port,
		a->restart_count);
	if (!ready)
		return 0;
	agent_fire(a, HP_EV_START, "Running", NULL);
	agent_begin_attempt(a);
	return 0;
}

static int cmd_stop(struct hp_agent *a, struct hp_cmd *cmd)
{
	const struct hp_stop_req *r = &cmd->stop;
	enum hp_state s = a->fsm.state;
	if (agent_ipr(a))
		return ipr_cmd_stop(a, r);
	if (s == HP_STATE_STOPPING || s == HP_STATE_SHUTDOWN ||
	    s == HP_STATE_READY || s == HP_STATE_INIT) {
		hp_info("agent", "/stop while %s: nothing to stop",
			hp_state_name(s));
		return 0;
	}
	/* a timeout of 0 or null means --shutdown-timeout (the reference's
	 * pcontext close, 9910830265); graceful = SIGUSR1 first, SIGKILL
	 * after the timeout (10594914244 _stop_workers) */
	int timeout = r->timeout > 0 ? r->timeout : a->cfg->shutdown_timeout;
	int sig = r->is_graceful ? SIGUSR1 : a->cfg->shutdown_signal;
	hp_info("agent", "/stop (restart_mode %s, graceful %s, timeout %d s)",
		r->restart_mode ? r->restart_mode : "ipr",
		r->is_graceful ? "yes" : "no", timeout);
	agent_fire(a, HP_EV_STOP, NULL, NULL);
	agent_start_stop(a, AFTER_STOP_CMD, sig, timeout);
	return 0;
}

static int cmd_update(struct hp_agent *a, struct hp_cmd *cmd)
{
	if (agent_ipr(a))
		return ipr_cmd_update(a, &cmd->start);
	agent_apply_rdzv(a, &cmd->start, false);
	hp_info("agent", "/update: rank %d of %d, fault count %d",
		a->group_rank, a->nnodes, a->restart_count);
	return 0;
}

static int cmd_shutdown(struct hp_agent *a)
{
	hp_info("agent", "/shutdown");
	if (agent_ipr(a))
		ipr_cmd_shutdown(a);
	agent_fire(a, HP_EV_SHUTDOWN, NULL, NULL);
	if (a->stage == STAGE_STOPPING) {
		a->after_stop = AFTER_SHUTDOWN;
		return 0;
	}
	/* torch's run() ends with _shutdown(): SIGTERM, then SIGKILL after
	 * --shutdown-timeout, whatever --shutdown-signal says (10071915287) */
	agent_start_stop(a, AFTER_SHUTDOWN, SIGTERM, a->cfg->shutdown_timeout);
	return 0;
}

static void wake_cb(uv_async_t *h)
{
	struct hp_agent *a = h->data;
	struct hp_cmd *cmd;
	while (a->server && (cmd = hp_server_pop(a->server))) {
		int rc = 0;
		switch (cmd->kind) {
		case HP_CMD_START:
			rc = cmd_start(a, cmd);
			break;
		case HP_CMD_STOP:
			rc = cmd_stop(a, cmd);
			break;
		case HP_CMD_UPDATE:
			rc = cmd_update(a, cmd);
			break;
		case HP_CMD_SHUTDOWN:
			rc = cmd_shutdown(a);
			break;
		}
		/* the reply must find the status that reflects it */
		publish_now(a);
		hp_server_cmd_done(a->server, cmd, rc);
	}
}

static void server_wake(void *ud)
{
	struct hp_agent *a = ud;
	uv_async_send(&a->wake);
}

/* Server thread: a->metrics is locked inside and outlives the server
 * (freed after hp_server_free). Rendering per GET /metrics instead of per
 * publish keeps ~0.9 M instructions off every launch and restart. */
static char *server_metrics(void *ud)
{
	const struct hp_agent *a = ud;
	return hp_metrics_render(a->metrics);
}

/* ------------------------------------------------------------------ */
/* set-up                                                              */

static int env_int(const char *name, int dflt)
{
	const char *v = getenv(name);
	return v && *v ? atoi(v) : dflt;
}

static double env_double(const char *name, double dflt)
{
	const char *v = getenv(name);
	return v && *v ? atof(v) : dflt;
}

static int start_server(struct hp_agent *a)
{
	const struct hp_config *c = a->cfg;
	bool local = c->mode == HP_MODE_LOCAL;
	struct hp_server_options o = {
		.host = c->server_host,
		.port = c->server_port,
		.log_level = c->server_log_level,
		/* a laptop run should not wait 25 s for a busy port */
		.max_retry = local ? 1
				   : env_int("HYPERPOD_ELASTICAGENT_SERVER_MAX_RETRY",
					     5),
		.retry_delay = env_double("HYPERPOD_ELASTICAGENT_SERVER_DELAY", 5),
		.cmd_timeout =
			env_double("HYPERPOD_ELASTICAGENT_SERVER_TIMEOUT", 5),
		.keepalive_timeout = 5,
		.wake_cb = server_wake,
		.metrics_cb = server_metrics,
		.ud = a,
	};
	a->server = hp_server_new(&o);
	if (!a->server) {
		if (local) {
			hp_warn("agent", "continuing without the operator API "
				"(local mode)");
			return 0;
		}
		return -EADDRINUSE;
	}
	hp_info("agent", "operator API listening on http://%s:%d",
		c->server_host, hp_server_port(a->server));
	return 0;
}

/* A free loopback port, or torchrun's 29500 when none could be had. */
static int free_port(void)
{
	int port = hp_free_port(false);
	return port > 0 ? port : 29500;
}

struct hp_agent *hp_agent_new(const struct hp_config *cfg)
{
	struct hp_agent *a = xcalloc(1, sizeof(*a));
	a->cfg = cfg;
	a->nproc = cfg->nproc_per_node;
	a->workers = xcalloc((size_t)a->nproc, sizeof(*a->workers));
	for (int i = 0; i < a->nproc; i++) {
		a->workers[i].local_rank = i;
		a->workers[i].data_rank = -1;
	}
	a->assigned_rank = -1;
	if (cfg->mode == HP_MODE_OPERATOR) {
		/* before /start the reference knows only NNODES: group rank
		 * -1, no master (-1), spare (10336335176, 10071915287), so
		 * no worker believes it is rank 0 of an unranked job */
		a->nnodes = cfg->env_nnodes ? cfg->env_nnodes : cfg->nnodes_max;
		a->group_rank = -1;
		a->master_addr = xstrdup("");
		a->master_port = -1;
		a->spare = true;
	} else {
		a->nnodes = cfg->nnodes_max;
		a->group_rank = cfg->node_rank;
		a->master_addr = xstrdup(cfg->master_addr);
		/* torchrun takes --master-port only for the static
		 * backend; with c10d group rank 0 picks a free port */
		bool c10d = strcmp(cfg->rdzv_backend, "c10d") == 0;
		a->master_port = cfg->master_port && !c10d ? cfg->master_port
							   : free_port();
	}
	a->ckpt = hp_ckpt_new();
	if (cfg->standalone && strcmp(cfg->rdzv_id, "none") == 0) {
		unsigned r = (unsigned)getpid() ^ (unsigned)time(NULL);
		a->run_id = xasprintf("%08x", r * 2654435761u);
	} else {
		a->run_id = xstrdup(cfg->rdzv_id);
	}
	if (gethostname(a->hostname, sizeof(a->hostname) - 1) < 0)
		strcpy(a->hostname, "localhost");
	a->entrypoint_name = cfg->script_argc ? cfg->script_argv[0] : "worker";
	if (cfg->run_path)
		a->entrypoint_name = "run_script_path"; /* torchrun's fn name */
	hp_fsm_init(&a->fsm, cfg->inprocess_restart);
	a->metrics = hp_metrics_new(HP_VERSION);
	return a;
}

static const int handled_signals[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP,
				      SIGQUIT, SIGUSR1, SIGUSR2};

static int setup_loop(struct hp_agent *a)
{
	int rc = uv_loop_init(&a->loop);
	if (rc < 0)
		return rc;
	a->loop_ready = true;
	for (size_t i = 0; i < HP_ARRAY_LEN(handled_signals); i++) {
		uv_signal_init(&a->loop, &a->sigs[i]);
		a->sigs[i].data = a;
		uv_signal_start(&a->sigs[i], signal_cb, handled_signals[i]);
	}
	uv_async_init(&a->loop, &a->wake, wake_cb);
	a->wake.data = a;
	uv_timer_init(&a->loop, &a->kill_timer);
	uv_timer_init(&a->loop, &a->backoff_timer);
	a->backoff_timer.data = a;
	uv_check_init(&a->loop, &a->publish_check);
	a->publish_check.data = a;
	uv_check_start(&a->publish_check, publish_check_cb);
	uv_prepare_init(&a->loop, &a->publish_prepare);
	a->publish_prepare.data = a;
	uv_prepare_start(&a->publish_prepare, publish_prepare_cb);
	a->kill_timer.data = a;
	a->logmon = hp_logmon_new(&a->loop, on_log_trip, a);
	return 0;
}

static void become_reaper(void)
{
	/* a worker (or a console pipe) may vanish while we write to it */
	signal(SIGPIPE, SIG_IGN);
	if (getpid() == 1)
		return;
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		hp_warn("agent", "not PID 1 and PR_SET_CHILD_SUBREAPER failed "
			"(%s): orphaned grandchildren will not be reaped",
			strerror(errno));
}

/* torchrun's workers share its process group, so at a terminal they are
 * in the foreground and breakpoint()/input() work; ours do the same when
 * stdin is a terminal whose foreground group is ours. */
static void set_tty_foreground(struct hp_agent *a)
{
	a->tty_fg = hp_worker_tty_foreground();
	if (a->tty_fg)
		hp_info("agent", "stdin is a terminal: the workers stay in its "
			"foreground process group");
}

/* Whatever is still a child of ours once the workers are reaped (left
 * behind by a worker, re-parented to us) dies with the agent. */
static void reap_leftovers(void)
{
	for (;;) {
		/* the common case, no child left, costs one waitpid and not
		 * a scan of /proc (a read of every process's stat) */
		int status;
		pid_t r = waitpid(-1, &status, WNOHANG);
		if (r > 0 || (r < 0 && errno == EINTR))
			continue;
		if (r < 0)
			break; /* ECHILD: nothing is left */
		hp_worker_signal_children(SIGKILL);
		if (waitpid(-1, &status, 0) < 0 && errno != EINTR)
			break;
	}
}

int hp_agent_run(struct hp_agent *a)
{
	const struct hp_config *c = a->cfg;
	become_reaper();
	int rc = setup_loop(a);
	if (rc < 0) {
		hp_error("agent", "cannot set up the event loop: %s",
			 uv_strerror(rc));
		return 1;
	}
	hp_info("agent", "hyperpodrun %s: %s mode (%s); %d worker(s) per node",
		HP_VERSION, c->mode == HP_MODE_LOCAL ? "local" : "operator",
		c->mode_reason ? c->mode_reason : "", a->nproc);
	if (c->mode_warning)
		hp_warn("agent", "%s", c->mode_warning);
	if (a->nproc > 1 && !getenv("OMP_NUM_THREADS"))
		hp_warn("agent",
			"Setting OMP_NUM_THREADS environment variable for each "
			"process to be 1 in default, to avoid your system being "
			"overloaded, please further tune the variable for "
			"optimal performance in your application as needed.");

	a->logs = hp_logs_new(&a->loop, c, a->run_id, a->nproc);
	if (!a->logs) {
		a->exit_code = 1;
		goto out;
	}
	/* each script is a group of one with its own log directory */
	char *aux_id = NULL;
	if (c->pre_train_script) {
		aux_id = xasprintf("pre_train_%s", a->run_id);
		a->pre_logs = hp_logs_new(&a->loop, c, aux_id, 1);
		free(aux_id);
	}
	if (c->post_train_script) {
		aux_id = xasprintf("post_train_%s", a->run_id);
		a->post_logs = hp_logs_new(&a->loop, c, aux_id, 1);
		free(aux_id);
	}
	if ((c->pre_train_script && !a->pre_logs) ||
	    (c->post_train_script && !a->post_logs)) {
		a->exit_code = 1;
		goto out;
	}
	if (c->inprocess_restart && c->mode == HP_MODE_OPERATOR) {
		hp_logs_set_line_cb(a->logs, on_worker_line, a);
		/* the pre/post-train phases are monitored too (10071915287) */
		if (a->pre_logs)
			hp_logs_set_line_cb(a->pre_logs, on_worker_line, a);
		if (a->post_logs)
			hp_logs_set_line_cb(a->post_logs, on_worker_line, a);
	}
	const char *rcdir = getenv("HYPERPOD_RESOURCE_CONFIG_DIR");
	if (c->mode == HP_MODE_OPERATOR || (rcdir && *rcdir)) {
		a->resconf = hp_resconf_new(rcdir && *rcdir ? rcdir : NULL);
		if (!a->resconf && c->mode == HP_MODE_OPERATOR) {
			a->exit_code = 1;
			goto out;
		}
	}
	/* the socket exists in PLR operator mode too, for checkpoint
	 * discovery (10071915287); there a socket that cannot be set up
	 * costs only that. A local PLR run keeps torchrun's environment. */
	if ((c->inprocess_restart || c->mode == HP_MODE_OPERATOR) &&
	    ipr_setup(a) < 0) {
		if (c->inprocess_restart) {
			a->exit_code = 1;
			goto out;
		}
		hp_warn("agent", "no worker IPC socket: checkpoint discovery "
			"is off");
	}
	a->restart_mode = c->inprocess_restart ? "in_process_restart"
					       : "process_level_restart";
	set_tty_foreground(a);
	if (rdzv_setup(a) < 0) {
		a->exit_code = 1;
		goto out;
	}
	if (start_server(a) < 0) {
		a->exit_code = 1;
		goto out;
	}
	publish_now(a);
	if (c->inprocess_restart) {
		/* IPR: workers start at once and wait at the barrier; READY
		 * comes when every local rank is there */
		agent_begin_attempt(a);
	} else if (c->mode == HP_MODE_LOCAL) {
		agent_fire(a, HP_EV_READY, NULL, NULL);
		agent_fire(a, HP_EV_START, NULL, NULL);
		if (a->c10d)
			rdzv_begin(a);
		else
			agent_begin_attempt(a);
	} else {
		agent_fire(a, HP_EV_READY, NULL, NULL);
	}
	if (c->mode == HP_MODE_OPERATOR && a->server)
		hp_info("agent", "waiting for the operator's /start on "
			"http://%s:%d (no operator here? run with "
			"HYPERPODRUN_MODE=local, or outside a pod with "
			"--nnodes=1 or --standalone)",
			c->server_host, hp_server_port(a->server));
	if (!a->exiting)
		uv_run(&a->loop, UV_RUN_DEFAULT);
out:
	/* never leave a worker behind, whatever brought us here */
	signal_all(a, SIGKILL);
	while (a->nrunning > 0 || a->aux_pid > 0) {
		int status;
		pid_t pid = waitpid(-1, &status, 0);
		if (pid < 0)
			break;
		if (pid == a->aux_pid)
			a->aux_pid = 0;
		for (int i = 0; i < a->nproc; i++)
			if (a->workers[i].pid == pid) {
				a->workers[i].pid = 0;
				a->nrunning--;
			}
	}
	reap_leftovers();
	return a->exit_code;
}

static void close_walk(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

void hp_agent_free(struct hp_agent *a)
{
	if (!a)
		return;
	hp_server_free(a->server, a->cfg->server_shutdown_timeout);
	rdzv_teardown(a);
	ipr_teardown(a);
	hp_logs_free(a->logs);
	hp_logs_free(a->pre_logs);
	hp_logs_free(a->post_logs);
	hp_logmon_free(a->logmon);
	hp_resconf_free(a->resconf);
	ipr_free_worker_data(a);
	if (a->loop_ready) {
		uv_walk(&a->loop, close_walk, NULL);
		/* an agent_finish() before the loop ever ran leaves a uv_stop()
		 * pending, and the first uv_run only consumes it */
		while (uv_run(&a->loop, UV_RUN_DEFAULT) != 0)
			;
		uv_loop_close(&a->loop);
	}
	clear_failures(a);
	free(a->workers);
	free(a->master_addr);
	free(a->run_id);
	free(a->logmon_pending);
	hp_ckpt_free(a->ckpt);
	free(a->req_worker_data);
	free(a->xn_worker_data);
	hp_metrics_free(a->metrics);
	free(a);
}
