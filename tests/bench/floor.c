/* floor.c — the machine's own floor for the launch and restart benchmarks
 * (issue 16): the least a launcher can do for the same job, with nothing
 * of hyperpodrun's (no loop, no server, no logs, no error files).
 *
 *   floor launch N PROG [ARGS...]    fork+exec N workers, wait for all
 *   floor restart N PROG [ARGS...]   start N (TORCHELASTIC_RESTART_COUNT=0),
 *        wait for the first non-zero exit, SIGKILL and reap the others,
 *        start N again (TORCHELASTIC_RESTART_COUNT=1), wait for all
 *   floor storm N RATE SECS PROG [ARGS...]   the restart storm's anchor:
 *        start N, wait for all, again, RATE times a second (paced to
 *        absolute deadlines; as fast as it can when it cannot keep up)
 *        for SECS seconds; prints "storm restarts R seconds S" at the end
 *
 * With FLOOR_LOG_DIR set, each child first makes FLOOR_LOG_DIR/attempt_<a>/
 * <rank>/ and its stdout.log and stderr.log there (onto fds 1 and 2), as a
 * launcher with -r 3 --log-dir must: the floor of the log layout's cost,
 * which on ext4 is most of a launch's extra time.
 *
 * Each worker gets the env the stamp worker reads (LOCAL_RANK,
 * LOCAL_WORLD_SIZE, TORCHELASTIC_RESTART_COUNT), so bench_launch.py times
 * it exactly as it times the launchers. A benchmark helper, not a test. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pid_t spawn(int rank, int n, int attempt, char **argv)
{
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	if (pid == 0) {
		char v[16];
		const char *ld = getenv("FLOOR_LOG_DIR");
		if (ld && *ld) {
			char d[4096], f[4200];
			snprintf(d, sizeof(d), "%s/attempt_%d", ld, attempt);
			mkdir(d, 0755);
			snprintf(d, sizeof(d), "%s/attempt_%d/%d", ld, attempt, rank);
			mkdir(d, 0755);
			for (int fd = 1; fd <= 2; fd++) {
				snprintf(f, sizeof(f), "%s/%s", d,
					 fd == 1 ? "stdout.log" : "stderr.log");
				int o = open(f, O_WRONLY | O_CREAT | O_TRUNC, 0644);
				if (o < 0 || dup2(o, fd) < 0)
					_exit(126);
				close(o);
			}
		}
		snprintf(v, sizeof(v), "%d", rank);
		setenv("LOCAL_RANK", v, 1);
		setenv("RANK", v, 1);
		snprintf(v, sizeof(v), "%d", n);
		setenv("LOCAL_WORLD_SIZE", v, 1);
		setenv("WORLD_SIZE", v, 1);
		snprintf(v, sizeof(v), "%d", attempt);
		setenv("TORCHELASTIC_RESTART_COUNT", v, 1);
		execvp(argv[0], argv);
		_exit(127);
	}
	return pid;
}

static void start_all(pid_t *pids, int n, int attempt, char **argv)
{
	for (int i = 0; i < n; i++)
		pids[i] = spawn(i, n, attempt, argv);
}

/* Waits until every pid in pids has exited; returns how many failed. */
static int wait_all(int n)
{
	int failed = 0, st;
	for (int left = n; left > 0; left--) {
		if (wait(&st) < 0)
			break;
		failed += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	return failed;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int storm(int n, pid_t *pids, double rate, double secs, char **prog)
{
	double t0 = now_s(), next = t0;
	long rounds = 0;
	while (now_s() - t0 < secs) {
		start_all(pids, n, (int)(rounds & 0xffff), prog);
		wait_all(n);
		rounds++;
		next += 1.0 / rate;
		double wait = next - now_s();
		if (wait > 0) {
			struct timespec d = {(time_t)wait,
					     (long)((wait - (double)(time_t)wait) * 1e9)};
			nanosleep(&d, NULL);
		}
	}
	printf("storm restarts %ld seconds %.3f\n", rounds, now_s() - t0);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: floor launch|restart N PROG [ARGS...]\n"
				"       floor storm N RATE SECS PROG [ARGS...]\n");
		return 2;
	}
	int n = atoi(argv[2]);
	if (n < 1 || n > 4096) {
		fprintf(stderr, "floor: N must be 1..4096\n");
		return 2;
	}
	pid_t *pids = calloc((size_t)n, sizeof(*pids));
	if (!pids)
		return 1;
	char **prog = argv + 3;
	if (strcmp(argv[1], "storm") == 0) {
		double rate = argc > 5 ? atof(argv[3]) : 0;
		double secs = argc > 5 ? atof(argv[4]) : 0;
		if (rate <= 0 || secs <= 0) {
			fprintf(stderr, "floor: storm N RATE SECS PROG\n");
			return 2;
		}
		return storm(n, pids, rate, secs, argv + 5);
	}
	if (strcmp(argv[1], "launch") == 0) {
		start_all(pids, n, 0, prog);
		return wait_all(n) ? 1 : 0;
	}
	if (strcmp(argv[1], "restart") != 0) {
		fprintf(stderr, "floor: unknown mode %s\n", argv[1]);
		return 2;
	}
	start_all(pids, n, 0, prog);
	int st, left = n;
	for (;;) {
		pid_t p = wait(&st);
		if (p < 0)
			return 1;
		left--;
		if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
			break;
		if (left == 0)
			return 0; /* nothing failed: nothing to restart */
	}
	for (int i = 0; i < n; i++)
		kill(pids[i], SIGKILL); /* the dead one's pid: ESRCH, harmless */
	while (left-- > 0)
		wait(&st);
	start_all(pids, n, 1, prog);
	return wait_all(n) ? 1 : 0;
}
