/* env.h — the torchrun worker environment contract (TORCHRUN.md) as a pure
 * function: given the rank layout, build one worker's envp. No I/O, no
 * logging; the agent logs the OMP_NUM_THREADS warning itself. */
#ifndef HP_ENV_H
#define HP_ENV_H

#include <stdbool.h>

#include "base/hp.h"

struct hp_rank_info {
	int group_rank;       /* node rank; -1 before the operator's /start */
	int group_world_size; /* nnodes */
	int local_world_size; /* nproc-per-node */
	/* ranks per node for RANK and WORLD_SIZE; 0 = local_world_size (the
	 * pre/post-train group of one keeps the training group's stride) */
	int node_stride;
	/* GROUP_WORLD_SIZE is the world size, as the reference sets it in
	 * operator mode (torch takes it from the rendezvous world size);
	 * false: nnodes, as torchrun */
	bool group_world_is_world;
	int restart_count;    /* TORCHELASTIC_RESTART_COUNT, JOB_RESTART_COUNT */
	int max_restarts;
	const char *master_addr;
	int master_port;
	const char *run_id;   /* TORCHELASTIC_RUN_ID */
	const char *role;     /* ROLE_NAME */
	bool use_agent_store; /* TORCHELASTIC_USE_AGENT_STORE: "True"/"False" */
	int spare;            /* -1: do not set SPARE; 0/1: "False"/"True" (IPR) */
};

/* Builds a NULL-terminated, heap-allocated envp for local rank
 * 'local_rank': the parent environment (entries whose key we set are
 * replaced, not duplicated) plus LOCAL_RANK, RANK, GROUP_RANK, ROLE_RANK,
 * ROLE_NAME, LOCAL_WORLD_SIZE, WORLD_SIZE, GROUP_WORLD_SIZE,
 * ROLE_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, TORCHELASTIC_RESTART_COUNT,
 * TORCHELASTIC_MAX_RESTARTS, TORCHELASTIC_RUN_ID,
 * TORCHELASTIC_USE_AGENT_STORE, TORCHELASTIC_ERROR_FILE (when error_file is
 * not NULL), JOB_RESTART_COUNT, NCCL_ASYNC_ERROR_HANDLING and
 * TORCH_NCCL_ASYNC_ERROR_HANDLING ("1" unless the parent sets them),
 * OMP_NUM_THREADS=1 (only when the parent does not set it and
 * local_world_size > 1), SPARE (when ri->spare >= 0), then every "K=V" of
 * The rank arithmetic is done in 64 bits: no int input can overflow it.
 * 'extra' (NULL-terminated, may be NULL), which wins over all of the above. */
char **hp_env_build(char *const parent[], const struct hp_rank_info *ri,
		    int local_rank, const char *error_file,
		    char *const extra[]);

/* The value of key in a NULL-terminated envp, or NULL. */
const char *hp_env_get(char *const env[], const char *key);

/* Frees what hp_env_build returned (one allocation: its entries are not
 * separately freeable); NULL is a no-op. */
void hp_env_free(char **env);

#endif
