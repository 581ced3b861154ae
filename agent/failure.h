/* failure.h — what one failed worker left behind (exit status, torch's
 * error.json written by @record) and torchrun's "ChildFailedError" summary
 * built from a list of them. Reads files; never writes any. */
#ifndef HP_FAILURE_H
#define HP_FAILURE_H

#include <stddef.h>
#include <sys/types.h>

#include "base/hp.h"

struct hp_failure {
	int rank;         /* global rank */
	int local_rank;
	pid_t pid;
	int exitcode;     /* as torch: the exit code, or -signo */
	char *error_file; /* NULL = "<N/A>" (not written) */
	char *message;    /* traceback or message; NULL = made up on format */
	long timestamp;   /* seconds since the epoch (error file's, else exit time) */
};

/* Fills f->message/timestamp from error_file when it exists and parses
 * (torch's formats: {"message": "...", "timestamp": N} or {"message":
 * {"message": ..., "extraInfo": {"py_callstack": ..., "timestamp": "N"}}}).
 * Otherwise leaves error_file NULL and the timestamp as given. */
void hp_failure_load(struct hp_failure *f, const char *error_file);

/* Index of the root cause: the earliest timestamp, ties to the first. */
size_t hp_failure_root(const struct hp_failure *fs, size_t n);

/* torchrun's text: a "=" border, "<name> FAILED", Failures, Root Cause,
 * one block per failure. Caller frees. */
char *hp_failure_summary(const char *name, const struct hp_failure *fs,
			 size_t n, const char *hostname);

/* torch's ProcessFailure.message: the error file's message, else "Signal
 * N (SIGX) received by PID P", else the pointer to torch's docs. Returns
 * f->message or buf (len bytes). */
const char *hp_failure_text(const struct hp_failure *f, char *buf, size_t len);

void hp_failure_fini(struct hp_failure *f);

/* Python for `python -c CODE script args...` (--run-path): runs the script
 * with runpy.run_path as torchrun's run_script_path does, under the
 * equivalent of torch's @record: faulthandler on, and an exception is
 * written to $TORCHELASTIC_ERROR_FILE in torch's format (message,
 * py_callstack, timestamp) before it propagates (exit code 1), so the
 * failure summary carries the traceback. */
extern const char hp_failure_run_path_py[];


#endif
