/* ignore-and-exec PROGRAM ARGS... — tini's sigconf trick: blocks SIGUSR1,
 * SIGUSR2, SIGWINCH and SIGALRM and ignores SIGPIPE, SIGTTIN and SIGXFSZ,
 * then execs PROGRAM, which inherits both sets. Run the agent under it to
 * check that workers still start with a clean mask and dispositions.
 * SIGCHLD and the shutdown signals are left alone so the agent can run. */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: ignore-and-exec PROGRAM ARGS...\n");
		return 99;
	}
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, SIGWINCH);
	sigaddset(&set, SIGALRM);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTTIN, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN);
	execvp(argv[1], argv + 1);
	perror(argv[1]);
	return 127;
}
