/* worker.c — the one fork() in hyperpodrun. Between fork and exec the child
 * makes only async-signal-safe calls. Signals are blocked around fork so
 * that no handler runs in the child before its dispositions are reset
 * (libuv's process.c does the same). Never reaps: that is agent.c's job. */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static HP_NORETURN void child(const struct hp_spawn *sp, int errpipe,
			      pid_t parent, const sigset_t *oldmask)
{
	int err;

	/* Our own process group, so the agent signals the worker and every
	 * process it starts at once, and a terminal's ^C reaches only us. */
	setpgid(0, 0);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) == 0 && getppid() != parent)
		_exit(127); /* the agent died before prctl took effect */

	for (int sig = 1; sig < NSIG; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
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
