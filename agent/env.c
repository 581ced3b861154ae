/* env.c — one worker's environment, built the way torchrun's
 * LocalElasticAgent._start_workers builds it: the parent environment, our
 * rank variables over it, then the caller's extras over everything. Pure:
 * it allocates and returns, and never reads the process environment or
 * logs (the agent warns about OMP_NUM_THREADS itself). */
#include "env.h"

#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"

/* Does "KEY=..." (or a bare "KEY") in 'entry' have the key 'key' of
 * length 'len'? */
static bool has_key(const char *entry, const char *key, size_t len)
{
	return strncmp(entry, key, len) == 0 &&
	       (entry[len] == '=' || entry[len] == '\0');
}

static size_t key_len(const char *entry)
{
	const char *eq = strchr(entry, '=');
	return eq ? (size_t)(eq - entry) : strlen(entry);
}

/* Is the key of 'entry' set by any of the NULL-terminated 'list'? */
static bool key_in(const char *entry, char *const list[])
{
	if (!list)
		return false;
	size_t len = key_len(entry);
	for (size_t i = 0; list[i]; i++)
		if (key_len(list[i]) == len && strncmp(list[i], entry, len) == 0)
			return true;
	return false;
}

/* Is the key of extra[i] set again by a later extra entry (later wins)? */
static bool overridden_later(char *const extra[], size_t i)
{
	return key_in(extra[i], extra + i + 1);
}

const char *hp_env_get(char *const env[], const char *key)
{
	if (!env)
		return NULL;
	size_t len = strlen(key);
	for (size_t i = 0; env[i]; i++)
		if (strncmp(env[i], key, len) == 0 && env[i][len] == '=')
			return env[i] + len + 1;
	return NULL;
}

static bool parent_has(char *const parent[], const char *key)
{
	size_t len = strlen(key);
	if (!parent)
		return false;
	for (size_t i = 0; parent[i]; i++)
		if (has_key(parent[i], key, len))
			return true;
	return false;
}

char **hp_env_build(char *const parent[], const struct hp_rank_info *ri,
		    int local_rank, const char *error_file,
		    char *const extra[])
{
	if (local_rank < 0 || local_rank >= ri->local_world_size)
		hp_bug("local rank %d outside 0..%d", local_rank,
		       ri->local_world_size - 1);
	if (!ri->master_addr || !ri->run_id || !ri->role)
		hp_bug("rank info without master_addr, run_id or role");

	long long stride = ri->node_stride > 0 ? ri->node_stride
					       : ri->local_world_size;
	long long rank = (long long)ri->group_rank * stride + local_rank;
	long long world = (long long)ri->group_world_size * stride;
	long long gws = ri->group_world_is_world ? world
						 : ri->group_world_size;

	/* Ours, in torchrun's order; each "KEY=VALUE" is heap-allocated.
	 * At most 21 entries, plus the NULL. */
	char *ours[24];
	size_t n_ours = 0;
	ours[n_ours++] = xasprintf("LOCAL_RANK=%d", local_rank);
	ours[n_ours++] = xasprintf("RANK=%lld", rank);
	ours[n_ours++] = xasprintf("GROUP_RANK=%d", ri->group_rank);
	ours[n_ours++] = xasprintf("ROLE_RANK=%lld", rank);
	ours[n_ours++] = xasprintf("ROLE_NAME=%s", ri->role);
	ours[n_ours++] =
		xasprintf("LOCAL_WORLD_SIZE=%d", ri->local_world_size);
	ours[n_ours++] = xasprintf("WORLD_SIZE=%lld", world);
	ours[n_ours++] =
		xasprintf("GROUP_WORLD_SIZE=%lld", gws);
	ours[n_ours++] = xasprintf("ROLE_WORLD_SIZE=%lld", world);
	ours[n_ours++] = xasprintf("MASTER_ADDR=%s", ri->master_addr);
	ours[n_ours++] = xasprintf("MASTER_PORT=%d", ri->master_port);
	ours[n_ours++] =
		xasprintf("TORCHELASTIC_RESTART_COUNT=%d", ri->restart_count);
	ours[n_ours++] =
		xasprintf("TORCHELASTIC_MAX_RESTARTS=%d", ri->max_restarts);
	ours[n_ours++] = xasprintf("TORCHELASTIC_RUN_ID=%s", ri->run_id);
	ours[n_ours++] = xasprintf("TORCHELASTIC_USE_AGENT_STORE=%s",
				   ri->use_agent_store ? "True" : "False");
	if (error_file)
		ours[n_ours++] =
			xasprintf("TORCHELASTIC_ERROR_FILE=%s", error_file);
	ours[n_ours++] = xasprintf("JOB_RESTART_COUNT=%d", ri->restart_count);
	/* torchrun: os.getenv("NCCL_ASYNC_ERROR_HANDLING", "1"); the parent's
	 * value is inherited as is, so only the default is added here. */
	if (!parent_has(parent, "NCCL_ASYNC_ERROR_HANDLING"))
		ours[n_ours++] = xstrdup("NCCL_ASYNC_ERROR_HANDLING=1");
	if (!parent_has(parent, "TORCH_NCCL_ASYNC_ERROR_HANDLING"))
		ours[n_ours++] = xstrdup("TORCH_NCCL_ASYNC_ERROR_HANDLING=1");
	if (!parent_has(parent, "OMP_NUM_THREADS") && ri->local_world_size > 1)
		ours[n_ours++] = xstrdup("OMP_NUM_THREADS=1");
	if (ri->spare >= 0)
		ours[n_ours++] =
			xasprintf("SPARE=%s", ri->spare ? "True" : "False");
	ours[n_ours] = NULL;

	size_t n_parent = 0, n_extra = 0;
	while (parent && parent[n_parent])
		n_parent++;
	while (extra && extra[n_extra])
		n_extra++;

	char **env = xcalloc(n_parent + n_ours + n_extra + 1, sizeof(char *));
	size_t n = 0;
	for (size_t i = 0; i < n_parent; i++)
		if (!key_in(parent[i], ours) && !key_in(parent[i], extra))
			env[n++] = xstrdup(parent[i]);
	for (size_t i = 0; i < n_ours; i++) {
		if (key_in(ours[i], extra))
			free(ours[i]);
		else
			env[n++] = ours[i];
	}
	for (size_t i = 0; i < n_extra; i++)
		if (!overridden_later(extra, i))
			env[n++] = xstrdup(extra[i]);
	env[n] = NULL;
	return env;
}

void hp_env_free(char **env)
{
	if (!env)
		return;
	for (size_t i = 0; env[i]; i++)
		free(env[i]);
	free(env);
}
