/* worker.h — start/exec of ONE child process (a worker, or a pre/post-train
 * script): the only process start in the tree (clone(CLONE_VM), else
 * fork(); worker.c says when). The child resets its
 * signal mask and dispositions, becomes its own process group leader, asks
 * for SIGKILL when the agent dies, makes its log directories and files,
 * and reports a failure before exec through a close-on-exec pipe. Reaping
 * is not done here: the agent reaps every worker that exec'd with
 * waitpid(-1) on SIGCHLD. */
#ifndef HP_WORKER_H
#define HP_WORKER_H

#include <signal.h>
#include <stdbool.h>
#include <sys/types.h>

#include "base/hp.h"

/* Directories and files the child makes between fork and exec, so that a
 * group's rank directories and log files are created in parallel by the
 * children rather than one by one on the agent's path (ext4 allocated each
 * inode in 0.02-0.8 ms: 25 of them were a third of a launch or more). */
struct hp_spawn_fs {
	const char *dirs[2]; /* made in order; one that exists is fine */
	/* unlinked when dirs[1] existed already (a stale error file) */
	const char *stale;
	const char *files[2]; /* created empty (O_TRUNC); NULL = none */
	bool dup[2];          /* files[s] also becomes the child's fd s + 1 */
};

/* What failed in the child, for the caller's message. */
enum hp_spawn_step {
	HP_SPAWN_EXEC = 0,
	HP_SPAWN_DIR0, /* fs->dirs[0] */
	HP_SPAWN_DIR1,
	HP_SPAWN_FILE0, /* fs->files[0] */
	HP_SPAWN_FILE1,
	HP_SPAWN_DUP,
};

struct hp_spawn {
	char *const *argv; /* argv[0] is looked up in PATH */
	char *const *envp;
	int stdout_fd;     /* dup2'd onto 1 in the child; -1 = inherit */
	int stderr_fd;     /* dup2'd onto 2 in the child; -1 = inherit */
	/* stay in the agent's process group instead of leading one: at a
	 * terminal the workers must be in its foreground group, as under
	 * torchrun, or input()/pdb stop them with SIGTTIN */
	bool keep_pgrp;
	/* the signals the child resets to SIG_DFL before exec (those with a
	 * handler or SIG_IGN here: hp_worker_signals_set); NULL = all */
	const sigset_t *reset;
	const struct hp_spawn_fs *fs; /* NULL = none */
};

/* The signals whose disposition in this process is not SIG_DFL. Taken once
 * per group of workers, so each child resets a handful of signals, not
 * all 64 (one syscall each). */
void hp_worker_signals_set(sigset_t *set);

/* Starts the child and returns 0 with *pid set once it has exec'd, or
 * -errno when it could not (the child has then been reaped here, so the
 * caller's waitpid(-1) never sees it; *step, when not NULL, says what
 * failed). The caller closes its copies of stdout_fd/stderr_fd. */
int hp_worker_spawn(const struct hp_spawn *sp, pid_t *pid,
		    enum hp_spawn_step *step);

/* The same in two halves, so that a group of N children make their files
 * and exec in parallel: begin starts the child and returns at once; end
 * waits for the exec (0) or its failure (-errno, child reaped, *step set)
 * and frees what begin took. Nothing may reap in between (the agent calls
 * both from one loop callback). sp and what it points to may be freed as
 * soon as begin returns. */
struct hp_spawn_child {
	pid_t pid;
	int errfd;      /* the child's status pipe */
	void *mem;      /* its stack and arguments (clone path) */
	size_t mem_len;
};
int hp_worker_spawn_begin(const struct hp_spawn *sp,
			  struct hp_spawn_child *c);
int hp_worker_spawn_end(struct hp_spawn_child *c, enum hp_spawn_step *step);

/* The path a failed step was about (NULL for exec and dup2). */
const char *hp_spawn_step_path(const struct hp_spawn_fs *fs,
			       enum hp_spawn_step step);

/* Signals the worker's whole process group (dumb-init), or the worker
 * alone when it leads none (keep_pgrp: kill(-pid) finds no group, and no
 * other group can carry its pid). ESRCH is not an error. Returns 0 or
 * -errno. */
int hp_worker_signal(pid_t pgid, int sig);

/* Is stdin a terminal whose foreground process group is ours? Then the
 * workers are spawned with keep_pgrp. */
bool hp_worker_tty_foreground(void);

/* Sends sig to every child of this process (found in /proc), so that
 * processes a dead worker left behind, re-parented to us as subreaper or
 * PID 1, do not outlive the agent. Returns how many were signalled. */
int hp_worker_signal_children(int sig);

#endif
