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

/* Is the key of 'entry' (of length len) among the n entries of 'list',
 * whose key lengths are lens? The lengths are measured once per build, not
 * once per parent entry: the parent environment is walked once per
 * worker. */
static bool key_in(const char *entry, size_t len, char *const list[],
		   const size_t lens[], size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (lens[i] == len && list[i][0] == entry[0] &&
		    strncmp(list[i], entry, len) == 0)
			return true;
	return false;
}

/* "KEY=VALUE" on the heap. Twenty of these per worker per start: built by
 * copying, not by xasprintf's format parsing (a fifth of a launch's
 * instructions went there). */
static char *kv(const char *key, const char *val)
{
	size_t kl = strlen(key), vl = strlen(val);
	char *e = xmalloc(kl + vl + 2);
	memcpy(e, key, kl);
	e[kl] = '=';
	memcpy(e + kl + 1, val, vl + 1);
	return e;
}

static char *kv_ll(const char *key, long long v)
{
	char num[24], *p = num + sizeof(num);
	unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v
				     : (unsigned long long)v;
	*--p = '\0';
	do {
		*--p = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		*--p = '-';
	return kv(key, p);
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
	ours[n_ours++] = kv_ll("LOCAL_RANK", local_rank);
	ours[n_ours++] = kv_ll("RANK", rank);
	ours[n_ours++] = kv_ll("GROUP_RANK", ri->group_rank);
	ours[n_ours++] = kv_ll("ROLE_RANK", rank);
	ours[n_ours++] = kv("ROLE_NAME", ri->role);
	ours[n_ours++] =
		kv_ll("LOCAL_WORLD_SIZE", ri->local_world_size);
	ours[n_ours++] = kv_ll("WORLD_SIZE", world);
	ours[n_ours++] =
		kv_ll("GROUP_WORLD_SIZE", gws);
	ours[n_ours++] = kv_ll("ROLE_WORLD_SIZE", world);
	ours[n_ours++] = kv("MASTER_ADDR", ri->master_addr);
	ours[n_ours++] = kv_ll("MASTER_PORT", ri->master_port);
	ours[n_ours++] =
		kv_ll("TORCHELASTIC_RESTART_COUNT", ri->restart_count);
	ours[n_ours++] =
		kv_ll("TORCHELASTIC_MAX_RESTARTS", ri->max_restarts);
	ours[n_ours++] = kv("TORCHELASTIC_RUN_ID", ri->run_id);
	ours[n_ours++] = kv("TORCHELASTIC_USE_AGENT_STORE",
				   ri->use_agent_store ? "True" : "False");
	if (error_file)
		ours[n_ours++] =
			kv("TORCHELASTIC_ERROR_FILE", error_file);
	ours[n_ours++] = kv_ll("JOB_RESTART_COUNT", ri->restart_count);
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
			kv("SPARE", ri->spare ? "True" : "False");
	ours[n_ours] = NULL;

	size_t n_parent = 0, n_extra = 0;
	while (parent && parent[n_parent])
		n_parent++;
	while (extra && extra[n_extra])
		n_extra++;

	size_t ours_len[24];
	for (size_t i = 0; i < n_ours; i++)
		ours_len[i] = key_len(ours[i]);
	size_t *extra_len = xcalloc(n_extra + 1, sizeof(size_t));
	for (size_t i = 0; i < n_extra; i++)
		extra_len[i] = key_len(extra[i]);

	/* pick the entries (borrowed pointers), then copy them into one
	 * block: the pointer array followed by the strings, one malloc and
	 * one free per worker instead of one per variable */
	const char **pick = xcalloc(n_parent + n_ours + n_extra + 1,
				    sizeof(char *));
	size_t n = 0, bytes = 0;
	for (size_t i = 0; i < n_parent; i++) {
		size_t len = key_len(parent[i]);
		if (!key_in(parent[i], len, ours, ours_len, n_ours) &&
		    !key_in(parent[i], len, extra, extra_len, n_extra))
			pick[n++] = parent[i];
	}
	for (size_t i = 0; i < n_ours; i++)
		if (!key_in(ours[i], ours_len[i], extra, extra_len, n_extra))
			pick[n++] = ours[i];
	/* an extra key set again by a later extra entry: the later wins */
	for (size_t i = 0; i < n_extra; i++)
		if (!key_in(extra[i], extra_len[i], extra + i + 1,
			    extra_len + i + 1, n_extra - i - 1))
			pick[n++] = extra[i];
	free(extra_len);

	size_t *lens = xcalloc(n + 1, sizeof(size_t));
	for (size_t i = 0; i < n; i++)
		bytes += lens[i] = strlen(pick[i]) + 1;
	char **env = xmalloc((n + 1) * sizeof(char *) + bytes);
	char *o = (char *)(env + n + 1);
	for (size_t i = 0; i < n; i++) {
		memcpy(o, pick[i], lens[i]);
		env[i] = o;
		o += lens[i];
	}
	env[n] = NULL;
	free(lens);
	free(pick);
	for (size_t i = 0; i < n_ours; i++)
		free(ours[i]);
	return env;
}

void hp_env_free(char **env)
{
	free(env); /* one block: the strings follow the array */
}
