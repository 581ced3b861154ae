/* stubborn — ignores SIGTERM (and SIGINT/SIGHUP), prints "ready pid N",
 * then waits forever: only SIGKILL (or the bounded lifetime) ends it. The
 * process tests use it to prove the agent escalates to SIGKILL. */
#include <signal.h>
#include <unistd.h>

#include "helper.h"

int main(void)
{
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	helper_bound_lifetime();
	helper_say("ready pid %d rank %s", (int)getpid(), helper_env("RANK", "?"));
	for (;;)
		pause();
}
