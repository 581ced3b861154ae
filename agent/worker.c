/* worker.c — the one fork() in hyperpodrun. Between fork and exec the child
 * makes only async-signal-safe calls. Signals are blocked around fork so
 * that no handler runs in the child before its dispositions are reset
 * (libuv's process.c does the same). Never reaps: that is agent.c's job. */
#include "worker.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static HP_NORETURN void child(const struct hp_spawn *sp, int errpipe,
			      pid_t parent, const sigset_t *oldmask)
{
	int err;

	/* Our own process group, so the agent signals the worker and every
	 * process it starts at once, and a terminal's ^C reaches only us;
	 * at a terminal, the agent's (foreground) group instead. */
	if (!sp->keep_pgrp)
		setpgid(0, 0);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) == 0 && getppid() != parent)
		_exit(127); /* the agent died before prctl took effect */

	/* every handler and SIG_IGN back to the default while the mask
	 * still blocks all: none of the agent's handlers may run here */
	for (int sig = 1; sig < NSIG; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		if (sp->reset && sigismember(sp->reset, sig) != 1)
			continue;
		signal(sig, SIG_DFL);
	}
	(void)oldmask;
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	if (sp->stdout_fd >= 0 && dup2(sp->stdout_fd, STDOUT_FILENO) < 0)
		goto fail;
	if (sp->stderr_fd >= 0 && dup2(sp->stderr_fd, STDERR_FILENO) < 0)
		goto fail;

	execvpe(sp->argv[0], sp->argv, sp->envp);
fail:
	err = errno;
	while (write(errpipe, &err, sizeof(err)) < 0 && errno == EINTR)
		;
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

int hp_worker_spawn_begin(const struct hp_spawn *sp, pid_t *pid, int *errfd)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;

	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pid_t parent = getpid();
	pid_t c = fork();
	if (c == 0)
		child(sp, p[1], parent, &old);
	int fork_errno = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	close(p[1]);
	if (c < 0) {
		close(p[0]);
		return -fork_errno;
	}

	/* Also set the group from the parent: whichever runs first wins, and
	 * a kill(-pid) right after we return must reach the child. */
	if (!sp->keep_pgrp)
		setpgid(c, c);
	*pid = c;
	*errfd = p[0];
	return 0;
}

int hp_worker_spawn_end(pid_t pid, int errfd)
{
	int child_err = 0;
	ssize_t n;
	do {
		n = read(errfd, &child_err, sizeof(child_err));
	} while (n < 0 && errno == EINTR);
	close(errfd);
	if (n == (ssize_t)sizeof(child_err)) {
		int st;
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
		return -child_err;
	}
	return 0; /* EOF: the CLOEXEC end closed on a successful exec */
}

int hp_worker_spawn(const struct hp_spawn *sp, pid_t *pid)
{
	pid_t c;
	int fd;
	int rc = hp_worker_spawn_begin(sp, &c, &fd);
	if (rc < 0)
		return rc;
	rc = hp_worker_spawn_end(c, fd);
	if (rc == 0)
		*pid = c;
	return rc;
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
