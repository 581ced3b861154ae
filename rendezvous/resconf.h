/* resconf.h — the rank→IP table file pod_resourceconfig.json that the
 * hyperpod rendezvous keeps for the workers (PROTOCOL.md §Rendezvous).
 * The module owns the merged table, the last ipVersion written and the
 * last rankIps the operator sent; it never reads the environment (the
 * caller resolves HYPERPOD_RESOURCE_CONFIG_DIR) and never talks to workers.
 * The merge and the file text are pure functions, tested without a disk. */
#ifndef HP_RESCONF_H
#define HP_RESCONF_H

#include <stdbool.h>
#include <stddef.h>

#include "base/hp.h"

/* Defined in server/server.h: { int rank; char *ip; }. */
struct hp_rank_ip;

struct hp_resconf;

#define HP_RESCONF_DEFAULT_DIR "/opt/ml/input/config"
#define HP_RESCONF_FILE "pod_resourceconfig.json"
/* The reference refuses larger ranks so that a bad request cannot make it
 * allocate a huge list; so do we. */
#define HP_RESCONF_MAX_RANK 100000

/* Creates dir (mkdir -p; NULL means HP_RESCONF_DEFAULT_DIR) and, when
 * <dir>/pod_resourceconfig.json already exists, takes its "ips" list and
 * "ips_timestamp" as the current table and ip version, as the reference
 * does across agent restarts (an unreadable file is logged and ignored).
 * Returns NULL, with the reason logged, when the directory cannot be
 * created. */
struct hp_resconf *hp_resconf_new(const char *dir);

/* The file's full path. */
const char *hp_resconf_path(const struct hp_resconf *rc);

/* Applies the rendezvous part of a /start or /update: rank is this node's
 * group rank, ips/n the request's rankIps (has_ips false when rankIps was
 * absent or null), ip_version its ipVersion (NULL when absent or null).
 * As in the reference, the file is rewritten only when both rankIps and
 * ipVersion are given; otherwise nothing is written and the ip version is
 * kept. A write merges the entries into the current table (see
 * hp_resconf_merge), sets "current_pod_ip" to ips[rank] (null when rank is
 * outside [0, nnodes) or past the list) and "ips_timestamp" to ip_version,
 * writes a fresh <file>.tmp.XXXXXX (O_EXCL: nothing planted there is
 * followed) and renames it over the file.
 * The request's rankIps are remembered for hp_resconf_rank_ips_json in
 * every case. Returns 0; -EINVAL (logged, nothing written) for an entry
 * rank outside [0, HP_RESCONF_MAX_RANK] or nnodes outside
 * [0, HP_RESCONF_MAX_RANK + 1]; or -errno (logged) when the file cannot be
 * written, leaving the previous table and version in place. */
int hp_resconf_apply(struct hp_resconf *rc, int rank, int nnodes,
		     const struct hp_rank_ip *ips, size_t n, bool has_ips,
		     const char *ip_version);

/* The last ipVersion written to the file (or found in it at start-up), or
 * NULL: /status's "ipversion". */
const char *hp_resconf_ip_version(const struct hp_resconf *rc);

/* Forgets the ip version (IPR, when workers are stopped), so /status shows
 * none and the operator re-sends /update. The file is left as it is. */
void hp_resconf_reset_ip_version(struct hp_resconf *rc);

/* The merged table as compact JSON, e.g. ["10.0.0.1",null]. Caller frees. */
char *hp_resconf_ips_json(const struct hp_resconf *rc);

/* The "rank_ips" value the IPR agent pushes to workers inside
 * aggregate_worker_data: the last request's rankIps exactly as received,
 * compact JSON [{"rank":0,"ip":"10.0.0.1"},…], or "null" when the last
 * request carried none (the reference passes the request's list through,
 * not the merged table). Caller frees. */
char *hp_resconf_rank_ips_json(const struct hp_resconf *rc);

/* NULL is a no-op. */
void hp_resconf_free(struct hp_resconf *rc);

/* ---- pure parts, exposed for the unit tests ---- */

/* Merges the entries upd/n_upd into the table old/n_old (NULL entries are
 * null IPs) and returns a new table in *out, of *n_out entries (free it with
 * hp_resconf_ips_free). With no entries the old table is kept as it is, or
 * is nnodes nulls when empty. Otherwise the old table is cut or null-padded
 * to nnodes and each entry with rank < nnodes sets ips[rank] (later entries
 * win; ranks in [nnodes, HP_RESCONF_MAX_RANK] are ignored). Returns 0, or
 * -EINVAL with *out untouched when an entry rank is outside
 * [0, HP_RESCONF_MAX_RANK] or nnodes outside [0, HP_RESCONF_MAX_RANK + 1]. */
int hp_resconf_merge(char *const *old, size_t n_old, int nnodes,
		     const struct hp_rank_ip *upd, size_t n_upd, char ***out,
		     size_t *n_out);

/* The file text, byte for byte what the reference's json.dump writes:
 * {"ips": [...], "current_pod_ip": ..., "ips_timestamp": ...} with ", " and
 * ": " separators, non-ASCII escaped as \uXXXX, no trailing newline.
 * NULL current_ip / ip_version are written as null. Caller frees. */
char *hp_resconf_render(char *const *ips, size_t n, const char *current_ip,
			const char *ip_version);

/* Frees a table from hp_resconf_merge; NULL is a no-op. */
void hp_resconf_ips_free(char **ips, size_t n);

#endif
