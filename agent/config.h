/* config.h — struct hp_config: everything the agent needs to know from the
 * command line and environment, as plain data. launcher/config.c fills it
 * (pure parse + validate, no I/O); the agent only reads it. It lives in
 * agent/ because dependencies point launcher -> agent, never back. */
#ifndef HP_CONFIG_H
#define HP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "base/hp.h"

/* How --nproc-per-node was given; anything but NUMBER is resolved by the
 * launcher (it needs I/O: counting GPUs or cores) into nproc_per_node. */
enum hp_nproc_kind {
	HP_NPROC_NUMBER = 0,
	HP_NPROC_GPU,
	HP_NPROC_CPU,
	HP_NPROC_AUTO,
};

/* Which way the agent is driven. HYPERPODRUN_MODE=operator|local wins;
 * else inside a pod (NNODES or KUBERNETES_SERVICE_HOST set) operator mode
 * whatever the command line says, as the reference forces
 * rdzv_backend=hyperpod; else the command line decides (README, "Who
 * drives the job"). */
enum hp_mode {
	HP_MODE_LOCAL = 0, /* static/c10d/--standalone/--nnodes=1: no operator */
	HP_MODE_OPERATOR,  /* a pod, hyperpod backend or nnodes > 1: /start */
};

/* The largest job /start and NNODES may describe: the reference refuses
 * a rankIps rank over 100000 (10336335176), so 100001 nodes. */
#define HP_MAX_NNODES 100001

/* torchrun's Std: 0 none, 1 stdout, 2 stderr, 3 both. */
enum hp_std {
	HP_STD_NONE = 0,
	HP_STD_OUT = 1,
	HP_STD_ERR = 2,
	HP_STD_ALL = 3,
};

/* -r/-t value: one value for every rank, or a "rank:v,rank:v" map whose
 * missing ranks get HP_STD_NONE (torchrun's to_map). */
struct hp_std_spec {
	enum hp_std all;
	size_t n;       /* entries in the map; 0 = use 'all' for every rank */
	int *ranks;     /* local ranks */
	enum hp_std *values;
};

struct hp_config {
	/* torchrun */
	int nnodes_min, nnodes_max;
	enum hp_nproc_kind nproc_kind;
	int nproc_per_node; /* valid when nproc_kind == NUMBER, else launcher resolves */
	char *rdzv_backend;   /* "static" by default; "hyperpod", "c10d", ... */
	char *rdzv_endpoint;  /* "" by default */
	char *rdzv_id;        /* "none" by default */
	char *rdzv_conf;      /* "" by default */
	bool standalone;
	int max_restarts;
	double monitor_interval;
	char *start_method;
	char *role;           /* "default" */
	bool module;          /* -m */
	bool no_python;
	bool run_path;
	char *log_dir;        /* NULL = none */
	struct hp_std_spec redirects;
	struct hp_std_spec tee;
	int *local_ranks_filter; /* NULL = all ranks shown */
	size_t n_local_ranks_filter;
	int node_rank;
	char *master_addr;    /* "127.0.0.1" unless given */
	bool master_addr_given;
	int master_port;      /* 29500 unless given; 0 with --standalone = pick */
	bool master_port_given;
	char *local_addr;     /* NULL = none */

	/* HyperPod additions */
	int shutdown_signal;  /* SIGKILL (default) or SIGTERM */
	int shutdown_timeout; /* seconds, 15 */
	char *server_host;    /* "0.0.0.0" */
	int server_port;      /* 8080; 0 = pick a free port (tests) */
	char *server_log_level; /* "info" */
	int server_shutdown_timeout; /* 300 */
	char *pre_train_script, *pre_train_args;
	char *post_train_script, *post_train_args;
	bool inprocess_restart;
	double inprocess_timeout; /* seconds; < 0 = none */

	/* torch 2.x flags: parsed and validated as torchrun does */
	char *event_log_handler; /* "null" by default */
	char *numa_binding;      /* NULL, node, socket, exclusive, core-complex */
	unsigned long long signals_to_handle; /* 1ull << signo per name given */
	bool virtual_local_rank;
	/* one line naming the flags above that hyperpodrun accepts but does
	 * not act on, for a start-up warning; NULL = none */
	char *accepted_note;

	/* training_script and its args, untouched; NULL-terminated */
	char **script_argv;
	int script_argc;

	/* derived by validation */
	enum hp_mode mode;
	char *mode_reason; /* one sentence for the start-up log */
	char *mode_warning; /* NULL, or the reference's override warning */
	int env_nnodes;    /* NNODES from the environment; 0 = unset */
};

/* Which std value applies to local rank 'rank'. */
enum hp_std hp_std_for_rank(const struct hp_std_spec *s, int rank);

/* Is local rank 'rank' shown on the console (--local-ranks-filter)? */
bool hp_config_rank_shown(const struct hp_config *c, int rank);

#endif
