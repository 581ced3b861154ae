/* ckpt.c — the checkpoint-discovery tracker (ckpt.h): per step of the
 * current prefix, which local ranks reported each checkpoint type; a step
 * is complete when every type has exactly the count ckpt_init announced,
 * and the latest complete step is what ckpt_info_get answers and /status
 * reports as progress. Behaviour follows the reference's CheckpointTracker
 * (10321396173), quirks included (a query forgets pending steps). Never
 * does I/O. */
#include "ckpt.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"

#define RANK_BYTES (HP_MAX_LOCAL_WORKERS / 8)

struct ttype {
	char *name;
	int expected; /* -1 = null */
};

struct step {
	long long step;
	char *path;
	size_t ntypes; /* the types known when the step was first reported */
	int count[HP_CKPT_MAX_TYPES];
	unsigned char ranks[HP_CKPT_MAX_TYPES][RANK_BYTES];
};

struct hp_ckpt {
	cJSON *progress;   /* /start's progress object, or NULL */
	char *prefix;      /* NULL before the first ckpt_init */
	struct ttype types[HP_CKPT_MAX_TYPES];
	size_t ntypes;
	struct step *steps;
	size_t nsteps;
	/* the latest complete checkpoint */
	bool have_max;
	char *max_prefix, *max_path;
	long long max_step;
};

struct hp_ckpt *hp_ckpt_new(void)
{
	return xcalloc(1, sizeof(struct hp_ckpt));
}

static void drop_steps(struct hp_ckpt *t)
{
	for (size_t i = 0; i < t->nsteps; i++)
		free(t->steps[i].path);
	free(t->steps);
	t->steps = NULL;
	t->nsteps = 0;
}

static void clear_types(struct hp_ckpt *t)
{
	for (size_t i = 0; i < t->ntypes; i++)
		free(t->types[i].name);
	t->ntypes = 0;
}

static void clear_max(struct hp_ckpt *t)
{
	free(t->max_prefix);
	free(t->max_path);
	t->max_prefix = t->max_path = NULL;
	t->have_max = false;
}

static void set_max(struct hp_ckpt *t, const char *prefix, const char *path,
		    long long step)
{
	clear_max(t);
	t->have_max = true;
	t->max_prefix = xstrdup(prefix);
	t->max_path = xstrdup_or_null(path);
	t->max_step = step;
}

void hp_ckpt_free(struct hp_ckpt *t)
{
	if (!t)
		return;
	cJSON_Delete(t->progress);
	free(t->prefix);
	clear_types(t);
	drop_steps(t);
	clear_max(t);
	free(t);
}

int hp_ckpt_set_progress(struct hp_ckpt *t, const char *progress_json)
{
	cJSON_Delete(t->progress);
	t->progress = NULL;
	if (!progress_json)
		return 0;
	cJSON *p = cJSON_Parse(progress_json);
	if (!cJSON_IsObject(p)) {
		cJSON_Delete(p);
		return -EINVAL;
	}
	t->progress = p->child ? p : NULL;
	if (!t->progress)
		cJSON_Delete(p);
	return 0;
}

/* The reference reads progress[prefix]["progressCount"] with int() and
 * ["progressData"] as is; an entry we cannot read counts as none. */
static bool progress_entry(const struct hp_ckpt *t, const char *prefix,
			   long long *step, const char **path)
{
	if (!t->progress)
		return false;
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(t->progress, prefix);
	if (!cJSON_IsObject(e))
		return false;
	const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "progressCount");
	const cJSON *d = cJSON_GetObjectItemCaseSensitive(e, "progressData");
	double v;
	if (cJSON_IsNumber(c))
		v = c->valuedouble;
	else if (cJSON_IsString(c))
		v = strtod(c->valuestring, NULL);
	else
		return false;
	if (!isfinite(v) || fabs(v) > 9007199254740992.0)
		return false;
	*step = (long long)v;
	*path = cJSON_IsString(d) ? d->valuestring : NULL;
	return true;
}

static int type_index(const struct hp_ckpt *t, const char *name)
{
	for (size_t i = 0; i < t->ntypes; i++)
		if (strcmp(t->types[i].name, name) == 0)
			return (int)i;
	return -1;
}

void hp_ckpt_init(struct hp_ckpt *t, const char *prefix,
		  const struct hp_ckpt_type *types, size_t n)
{
	long long step;
	const char *path;
	if (progress_entry(t, prefix, &step, &path))
		set_max(t, prefix, path, step);
	else
		clear_max(t);
	bool same = t->prefix && strcmp(t->prefix, prefix) == 0;
	if (!same) {
		free(t->prefix);
		t->prefix = xstrdup(prefix);
		clear_types(t);
		drop_steps(t);
		for (size_t i = 0; i < n && t->ntypes < HP_CKPT_MAX_TYPES;
		     i++) {
			if (type_index(t, types[i].name) >= 0)
				continue;
			t->types[t->ntypes].name = xstrdup(types[i].name);
			t->types[t->ntypes++].expected = types[i].expected;
		}
		return;
	}
	/* the same prefix: a non-null count replaces (or adds) that type */
	for (size_t i = 0; i < n; i++) {
		if (types[i].expected < 0)
			continue;
		int k = type_index(t, types[i].name);
		if (k >= 0) {
			t->types[k].expected = types[i].expected;
		} else if (t->ntypes < HP_CKPT_MAX_TYPES) {
			t->types[t->ntypes].name = xstrdup(types[i].name);
			t->types[t->ntypes++].expected = types[i].expected;
		}
	}
}

static bool complete(const struct hp_ckpt *t, const struct step *s)
{
	for (size_t k = 0; k < t->ntypes; k++) {
		int have = k < s->ntypes ? s->count[k] : 0;
		if (t->types[k].expected < 0 || have != t->types[k].expected)
			return false;
	}
	return true;
}

int hp_ckpt_update(struct hp_ckpt *t, int rank, long long step,
		   const char *path, const char *type)
{
	if (!t->prefix)
		return -ENOENT;
	int k = type_index(t, type);
	if (k < 0 || rank < 0 || rank >= HP_MAX_LOCAL_WORKERS)
		return -EINVAL;
	struct step *s = NULL;
	for (size_t i = 0; i < t->nsteps; i++)
		if (t->steps[i].step == step)
			s = &t->steps[i];
	if (!s) {
		if (t->nsteps >= HP_CKPT_MAX_STEPS)
			return -ENOSPC;
		t->steps = xrealloc(t->steps,
				    (t->nsteps + 1) * sizeof(*t->steps));
		s = &t->steps[t->nsteps++];
		memset(s, 0, sizeof(*s));
		s->step = step;
		s->path = xstrdup_or_null(path);
		s->ntypes = t->ntypes;
	}
	if ((size_t)k >= s->ntypes)
		return -EINVAL; /* a type added after this step began */
	if (path) {
		free(s->path);
		s->path = xstrdup(path);
		if (t->have_max && t->max_step == step &&
		    strcmp(t->max_prefix, t->prefix) == 0) {
			free(t->max_path);
			t->max_path = xstrdup(path);
		}
	}
	unsigned char bit = (unsigned char)(1u << (rank % 8));
	if (!(s->ranks[k][rank / 8] & bit)) {
		s->ranks[k][rank / 8] |= bit;
		s->count[k]++;
	}
	if (!complete(t, s))
		return 0;
	if (t->have_max && step <= t->max_step)
		return 0;
	set_max(t, t->prefix, s->path, step);
	return 1;
}

const char *hp_ckpt_latest_path(struct hp_ckpt *t)
{
	if (!t->have_max) {
		drop_steps(t);
		return NULL;
	}
	size_t n = 0;
	for (size_t i = 0; i < t->nsteps; i++) {
		if (t->steps[i].step > t->max_step) {
			free(t->steps[i].path);
			continue;
		}
		t->steps[n++] = t->steps[i];
	}
	t->nsteps = n;
	return t->max_path;
}

bool hp_ckpt_progress(const struct hp_ckpt *t, const char **prefix,
		      const char **path, long long *step)
{
	if (!t->have_max)
		return false;
	*prefix = t->max_prefix;
	*path = t->max_path;
	*step = t->max_step;
	return true;
}
