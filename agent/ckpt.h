/* ckpt.h — the checkpoint-discovery tracker (PROTOCOL.md, "Checkpoint
 * discovery"): which step's checkpoint every local rank has reported, and
 * so the latest complete one, as the reference's CheckpointTracker does
 * (10321396173). Pure bookkeeping: no I/O, no logging, no sockets; the IPC
 * messages reach it through agent/ipr.c, /status reads it through agent.c.
 * One prefix is tracked at a time (a ckpt_init with another prefix drops
 * the steps of the old one, as the reference does). */
#ifndef HP_CKPT_H
#define HP_CKPT_H

#include <stdbool.h>
#include <stddef.h>

#include "base/hp.h"

/* Checkpoint types per ckpt_init ("model_checkpoint", "data_checkpoint";
 * any name is kept) and steps remembered for the current prefix. */
#define HP_CKPT_MAX_TYPES 8
#define HP_CKPT_MAX_STEPS 1024

struct hp_ckpt;

/* One entry of ckpt_init's checkpoint_types: how many local ranks write
 * that type (-1: null, "no client registered it": never complete). */
struct hp_ckpt_type {
	const char *name;
	int expected;
};

struct hp_ckpt *hp_ckpt_new(void);
void hp_ckpt_free(struct hp_ckpt *t); /* NULL is a no-op */

/* /start's progress, {prefix: {"progressCount": n, "progressData": path}}
 * as JSON text (NULL or "{}" = none): the checkpoint a ckpt_init of that
 * prefix starts from. Returns 0, or -EINVAL (ignored: kept as none) for a
 * value that is not such an object. */
int hp_ckpt_set_progress(struct hp_ckpt *t, const char *progress_json);

/* ckpt_init: the latest complete checkpoint becomes the progress entry of
 * prefix (or none); the same prefix again merges the non-null counts, and
 * another prefix replaces the types and drops every step. At most
 * HP_CKPT_MAX_TYPES types (the rest are ignored). */
void hp_ckpt_init(struct hp_ckpt *t, const char *prefix,
		  const struct hp_ckpt_type *types, size_t n);

/* ckpt_info_update from local rank 'rank': step's checkpoint of type
 * 'type' is written (path may be NULL: keep the step's path). Returns 1
 * when this report completed the step and made it the latest, 0 when
 * recorded, -ENOENT before any ckpt_init, -EINVAL for a type that
 * ckpt_init did not name, -ENOSPC when HP_CKPT_MAX_STEPS steps are
 * pending already (the report is dropped). */
int hp_ckpt_update(struct hp_ckpt *t, int rank, long long step,
		   const char *path, const char *type);

/* ckpt_info_get: the latest complete checkpoint's path (NULL when none, or
 * when its path is null). Like the reference, a query forgets the steps
 * above the latest complete one, or every pending step when none is
 * complete. The string stays valid until the next call on t. */
const char *hp_ckpt_latest_path(struct hp_ckpt *t);

/* The latest complete checkpoint for /status's progress: true and its
 * prefix, path (NULL for null) and step; false when there is none. */
bool hp_ckpt_progress(const struct hp_ckpt *t, const char **prefix,
		      const char **path, long long *step);

#endif
