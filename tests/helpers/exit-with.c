/* exit-with CODE|SIGNAME [RANK] — prints "exit-with rank R attempt A pid P"
 * and exits with CODE or dies of SIGNAME. With RANK, only the worker whose
 * $RANK equals it fails; the others print the same line and wait to be
 * stopped, so the failing rank is the root cause of the group failure. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helper.h"

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: exit-with CODE|SIGNAME [RANK]\n");
		return 99;
	}
	const char *rank = helper_env("RANK", "?");
	helper_say("exit-with rank %s attempt %s pid %d", rank,
		   helper_env("TORCHELASTIC_RESTART_COUNT", "?"), (int)getpid());
	if (argc > 2 && strcmp(argv[2], rank) != 0) {
		helper_bound_lifetime();
		for (;;)
			pause();
	}
	char *end;
	long code = strtol(argv[1], &end, 10);
	if (*argv[1] && *end == '\0')
		return (int)code;
	int sig = helper_signo(argv[1]);
	if (sig < 0) {
		fprintf(stderr, "exit-with: unknown signal %s\n", argv[1]);
		return 99;
	}
	sigset_t all;
	sigfillset(&all);
	sigprocmask(SIG_UNBLOCK, &all, NULL);
	signal(sig, SIG_DFL);
	raise(sig);
	return 98; /* not reached for a fatal signal */
}
