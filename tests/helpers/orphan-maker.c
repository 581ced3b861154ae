/* orphan-maker [linger] — double-forks: the middle child exits at once, so
 * the grandchild is re-parented to the nearest subreaper (the agent, or PID
 * 1 inside a pid namespace). The worker itself (top) then prints the
 * grandchild's new parent and checks that it gets reaped.
 *
 * Default mode: the grandchild prints "orphan pid N" and exits once the top
 * process has seen its new parent (EOF on a release pipe that only top
 * holds open), becoming a zombie that only that parent can reap. The top
 * process prints "orphan ppid P", releases it, then waits (bounded, 10 s)
 * for the zombie to vanish from /proc: "orphan reaped" and exit 0, or
 * "orphan not reaped" and exit 1.
 *
 * linger: the grandchild prints "orphan pid N" and lives until killed (or
 * the bounded lifetime); the top process prints "orphan ppid P" and waits
 * to be stopped too. Both stay in the worker's process group, so stopping
 * the group must take the orphan with it. */
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helper.h"

/* State and parent of pid from /proc/pid/stat; false when it is gone. */
static bool proc_stat(pid_t pid, char *state, long *ppid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	char *rp = strrchr(buf, ')');
	if (!rp || sscanf(rp + 1, " %c %ld", state, ppid) != 2)
		return false;
	return true;
}

int main(int argc, char **argv)
{
	bool linger = argc > 1 && strcmp(argv[1], "linger") == 0;
	int pidpipe[2], release[2];
	if (pipe(pidpipe) < 0 || pipe(release) < 0)
		return 99;
	helper_bound_lifetime();

	pid_t middle = fork();
	if (middle < 0)
		return 99;
	if (middle == 0) {
		pid_t gc = fork();
		if (gc < 0)
			_exit(99);
		if (gc == 0) {
			helper_bound_lifetime(); /* alarms do not survive fork */
			close(release[1]);
			close(pidpipe[0]);
			pid_t me = getpid();
			helper_say("orphan pid %d", (int)me);
			helper_write_all(pidpipe[1], (const char *)&me, sizeof(me));
			close(pidpipe[1]);
			/* EOF once top has printed our new parent. */
			char c;
			while (read(release[0], &c, 1) > 0)
				;
			if (linger)
				for (;;)
					pause();
			_exit(0);
		}
		_exit(0);
	}
	close(release[0]);
	close(pidpipe[1]);
	pid_t gc = -1;
	if (read(pidpipe[0], &gc, sizeof(gc)) != (ssize_t)sizeof(gc)) {
		helper_say("orphan-maker: no grandchild pid");
		return 99;
	}
	int status;
	while (waitpid(middle, &status, 0) < 0)
		;
	/* The middle child has exited, so the kernel has already re-parented
	 * the grandchild. */
	char state = '?';
	long ppid = -1;
	proc_stat(gc, &state, &ppid);
	helper_say("orphan ppid %ld", ppid);
	close(release[1]);
	if (linger)
		for (;;)
			pause();

	struct timespec start, now, nap = {0, 5 * 1000 * 1000};
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		if (!proc_stat(gc, &state, &ppid)) {
			helper_say("orphan reaped");
			return 0;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - start.tv_sec >= 10) {
			helper_say("orphan not reaped (state %c ppid %ld)", state, ppid);
			return 1;
		}
		nanosleep(&nap, NULL); /* bounded poll: reaping has no event */
	}
}
