/* logs.h — where each worker's stdout/stderr go: the console untouched
 * (torchrun's default), a file only (--redirects), or a file plus the
 * console with a "[<role><local_rank>]:" prefix (--tee, relayed by the
 * agent through a pipe), per torchrun's layout
 * <log_dir>/<run_id>_<random>/attempt_<n>/<local_rank>/{stdout.log,
 * stderr.log,error.json}. Owns those files, pipes and uv handles. */
#ifndef HP_LOGS_H
#define HP_LOGS_H

#include <uv.h>

#include "config.h"
#include "worker.h"

struct hp_logs;

/* Called for every complete line a relayed worker stream produces (for log
 * monitoring); stream is 1 or 2; line has no newline. */
typedef void (*hp_logs_line_cb)(void *ud, int local_rank, int stream,
				const char *line, size_t len);

/* Creates the run directory: under cfg->log_dir, or under a fresh
 * $TMPDIR/torchelastic_XXXXXX that hp_logs_free removes (as torchrun, a
 * temporary directory holds error files when no --log-dir is given).
 * Returns NULL and logs when the directory cannot be made. */
struct hp_logs *hp_logs_new(uv_loop_t *loop, const struct hp_config *cfg,
			    const char *run_id, int nproc);

const char *hp_logs_run_dir(const struct hp_logs *l);

/* Relay every stream through the agent (for line callbacks) even when the
 * console is the destination. */
void hp_logs_set_line_cb(struct hp_logs *l, hp_logs_line_cb cb, void *ud);

/* The console prefix of rank i's --tee lines (copied; at most 95 bytes
 * are used); NULL restores torchrun's "[<role><i>]:". */
void hp_logs_set_prefix(struct hp_logs *l, int local_rank,
			const char *prefix);

/* Sets the paths of attempt_<n>/<i>/ for every rank; the directories are
 * made by each rank's child (hp_logs_rank_fs). Returns 0. */
int hp_logs_begin_attempt(struct hp_logs *l, int attempt);

/* The error file path for local rank i in the current attempt. */
const char *hp_logs_error_file(const struct hp_logs *l, int local_rank);

/* Prepares rank i's streams and returns the fds the child must get as
 * stdout and stderr (-1 = inherit the agent's, or the file the child
 * opens itself per hp_logs_rank_fs). Returns 0 or -errno. */
int hp_logs_open_rank(struct hp_logs *l, int local_rank, int *out_fd,
		      int *err_fd);

/* What rank i's child makes before exec (valid after hp_logs_open_rank
 * until the next one): its attempt and rank directories, and its log
 * files; pass it as hp_spawn.fs. */
const struct hp_spawn_fs *hp_logs_rank_fs(const struct hp_logs *l,
					  int local_rank);

/* After the fork: closes the agent's copies of the child ends, starts
 * relaying. */
void hp_logs_started_rank(struct hp_logs *l, int local_rank);

/* Reads whatever the rank's relay pipes hold right now (non-blocking) and
 * writes it out, so nothing is lost when the agent moves on. */
void hp_logs_drain_rank(struct hp_logs *l, int local_rank);

/* Stops relaying rank i (after a drain); closes its files and pipes. */
void hp_logs_close_rank(struct hp_logs *l, int local_rank);

/* Keeps the temporary directory (no --log-dir) on free: a failure
 * summary named error files in it, and torchrun leaves them too. */
void hp_logs_keep(struct hp_logs *l);

/* Closes everything (uv handles are closed; run the loop once more before
 * freeing the loop). NULL is a no-op. */
void hp_logs_free(struct hp_logs *l);

#endif
