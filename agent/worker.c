/* worker.c — the one vfork() in hyperpodrun. Between vfork and exec the
 * child makes only async-signal-safe calls and writes no memory of the
 * agent's but its status word. Signals are blocked around vfork so that no
 * handler runs in the child before its dispositions are reset (libuv's
 * process.c does the same). Never reaps a worker that exec'd: that is
 * agent.c's job. */
#include "worker.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The child's part of sp->fs; returns the failed step (errno set) or
 * HP_SPAWN_EXEC when all went well. Async-signal-safe calls only. */
static enum hp_spawn_step child_fs(const struct hp_spawn_fs *fs)
{
	bool existed = false;
	for (int i = 0; i < 2; i++) {
		if (!fs->dirs[i])
			continue;
		existed = mkdir(fs->dirs[i], 0755) < 0;
		if (existed && errno != EEXIST)
			return (enum hp_spawn_step)(HP_SPAWN_DIR0 + i);
	}
	if (existed && fs->stale)
		unlink(fs->stale);
	for (int s = 0; s < 2; s++) {
		if (!fs->files[s])
			continue;
		int fd = open(fs->files[s],
			      O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0)
			return (enum hp_spawn_step)(HP_SPAWN_FILE0 + s);
		if (fs->dup[s]) {
			if (dup2(fd, s + 1) < 0)
				return HP_SPAWN_DUP;
		}
		close(fd); /* the dup2'd copy stays */
	}
	return HP_SPAWN_EXEC;
}

/* What a child that did not exec leaves in its parent's memory (vfork
 * shares it until exec or _exit). */
struct child_status {
	int err;  /* errno; 0 = exec'd */
	int step; /* enum hp_spawn_step */
};

static HP_NORETURN void child(const struct hp_spawn *sp,
			      volatile struct child_status *st, pid_t parent)
{
	/* Our own process group, so the agent signals the worker and every
	 * process it starts at once, and a terminal's ^C reaches only us;
	 * at a terminal, the agent's (foreground) group instead. The parent
	 * runs again only after our exec, so the group exists by then. */
	if (!sp->keep_pgrp)
		setpgid(0, 0);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) == 0 && getppid() != parent)
		_exit(127); /* the agent died before prctl took effect */

	/* every handler and SIG_IGN back to the default while the mask
	 * still blocks all: none of the agent's handlers may run here (they
	 * would run on the agent's memory) */
	for (int sig = 1; sig < NSIG; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		if (sp->reset && sigismember(sp->reset, sig) != 1)
			continue;
		signal(sig, SIG_DFL);
	}
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	enum hp_spawn_step step = HP_SPAWN_EXEC;
	if (sp->fs) {
		step = child_fs(sp->fs);
		if (step != HP_SPAWN_EXEC)
			goto fail;
	}
	step = HP_SPAWN_DUP;
	if (sp->stdout_fd >= 0 && dup2(sp->stdout_fd, STDOUT_FILENO) < 0)
		goto fail;
	if (sp->stderr_fd >= 0 && dup2(sp->stderr_fd, STDERR_FILENO) < 0)
		goto fail;

	step = HP_SPAWN_EXEC;
	execvpe(sp->argv[0], sp->argv, sp->envp);
fail:
	st->step = (int)step;
	st->err = errno > 0 ? errno : EIO;
	_exit(127);
}

void hp_worker_signals_set(sigset_t *set)
{
	sigemptyset(set);
	for (int sig = 1; sig < NSIG; sig++) {
		struct sigaction sa;
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		/* a signal we cannot query is reset, as before */
		if (sigaction(sig, NULL, &sa) < 0 ||
		    sa.sa_handler != SIG_DFL)
			sigaddset(set, sig);
	}
}

int hp_worker_spawn(const struct hp_spawn *sp, pid_t *pid,
		    enum hp_spawn_step *step)
{
	/* vfork: no copy of the agent's page tables and no copy-on-write
	 * faults after it (a fork cost the agent ~0.1 ms more per worker
	 * than the floor's); we run again once the child has exec'd or
	 * failed, so an exec failure needs no pipe */
	volatile struct child_status st = {0, HP_SPAWN_EXEC};
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pid_t parent = getpid();
	pid_t c = vfork();
	if (c == 0)
		child(sp, &st, parent);
	int fork_errno = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (c < 0)
		return -fork_errno;
	if (st.err) {
		/* reaped here, so the caller's waitpid(-1) never sees it */
		int status;
		while (waitpid(c, &status, 0) < 0 && errno == EINTR)
			;
		if (step)
			*step = (enum hp_spawn_step)st.step;
		return -st.err;
	}
	*pid = c;
	return 0;
}

const char *hp_spawn_step_path(const struct hp_spawn_fs *fs,
			       enum hp_spawn_step step)
{
	if (!fs)
		return NULL;
	switch (step) {
	case HP_SPAWN_DIR0:
	case HP_SPAWN_DIR1:
		return fs->dirs[step - HP_SPAWN_DIR0];
	case HP_SPAWN_FILE0:
	case HP_SPAWN_FILE1:
		return fs->files[step - HP_SPAWN_FILE0];
	default:
		return NULL;
	}
}

int hp_worker_signal(pid_t pgid, int sig)
{
	if (pgid <= 0)
		return -EINVAL;
	if (kill(-pgid, sig) < 0 && errno != ESRCH) {
		/* the group may be gone while the leader is a zombie: try it */
		if (kill(pgid, sig) < 0 && errno != ESRCH)
			return -errno;
	}
	return 0;
}

bool hp_worker_tty_foreground(void)
{
	if (!isatty(STDIN_FILENO))
		return false;
	pid_t fg = tcgetpgrp(STDIN_FILENO);
	return fg > 0 && fg == getpgrp();
}

/* The parent pid in /proc/<pid>/stat, or -1. */
static pid_t parent_of(const char *pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%s/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	/* "pid (comm) state ppid ...": comm may hold spaces and ')' */
	char *p = strrchr(buf, ')');
	if (!p || p[1] != ' ' || !p[2] || p[3] != ' ')
		return -1;
	return (pid_t)strtol(p + 4, NULL, 10);
}

int hp_worker_signal_children(int sig)
{
	DIR *d = opendir("/proc");
	if (!d)
		return 0;
	pid_t me = getpid();
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		if (parent_of(e->d_name) != me)
			continue;
		if (kill((pid_t)strtol(e->d_name, NULL, 10), sig) == 0)
			n++;
	}
	closedir(d);
	return n;
}
