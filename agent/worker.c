/* worker.c — the one fork() in hyperpodrun. Between fork and exec the child
 * makes only async-signal-safe calls: its process group, signals, its log
 * directories and files, exec. Signals are blocked around fork so that no
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

static HP_NORETURN void child(const struct hp_spawn *sp, int errpipe,
			      pid_t parent)
{
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
fail:;
	int msg[2] = {errno > 0 ? errno : EIO, (int)step};
	while (write(errpipe, msg, sizeof(msg)) < 0 && errno == EINTR)
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
		child(sp, p[1], parent);
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

int hp_worker_spawn_end(pid_t pid, int errfd, enum hp_spawn_step *step)
{
	int msg[2] = {0, HP_SPAWN_EXEC};
	ssize_t n;
	do {
		n = read(errfd, msg, sizeof(msg));
	} while (n < 0 && errno == EINTR);
	close(errfd);
	if (n != (ssize_t)sizeof(msg))
		return 0; /* EOF: the CLOEXEC end closed on a successful exec */
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (step)
		*step = msg[1] >= HP_SPAWN_EXEC && msg[1] <= HP_SPAWN_DUP
				? (enum hp_spawn_step)msg[1]
				: HP_SPAWN_EXEC;
	return msg[0] > 0 ? -msg[0] : -EIO;
}

int hp_worker_spawn(const struct hp_spawn *sp, pid_t *pid,
		    enum hp_spawn_step *step)
{
	pid_t c;
	int fd;
	int rc = hp_worker_spawn_begin(sp, &c, &fd);
	if (rc < 0)
		return rc;
	rc = hp_worker_spawn_end(c, fd, step);
	if (rc == 0)
		*pid = c;
	return rc;
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
