/* print-signals — prints "ready pid N rank R", then "signal N" for every
 * signal it receives (all catchable ones are blocked and taken with
 * sigwaitinfo, so nothing runs in a handler). Exits 0 after
 * $HP_SIGNAL_LIMIT signals; without it only SIGKILL ends it (or the
 * bounded lifetime: SIGALRM is left out of the set so it still kills). */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "helper.h"

int main(void)
{
	sigset_t set;
	sigfillset(&set);
	sigdelset(&set, SIGALRM);
	sigdelset(&set, SIGSEGV);
	sigdelset(&set, SIGBUS);
	sigdelset(&set, SIGFPE);
	sigdelset(&set, SIGILL);
	sigprocmask(SIG_BLOCK, &set, NULL);
	helper_bound_lifetime();
	long limit = atol(helper_env("HP_SIGNAL_LIMIT", "0"));
	helper_say("ready pid %d rank %s", (int)getpid(), helper_env("RANK", "?"));
	for (long n = 0; limit <= 0 || n < limit;) {
		siginfo_t si;
		int sig = sigwaitinfo(&set, &si);
		if (sig < 0)
			continue;
		helper_say("signal %d rank %s from %d", sig, helper_env("RANK", "?"),
			   (int)si.si_pid);
		n++;
	}
	return 0;
}
