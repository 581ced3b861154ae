/* stamp.c — the benchmark's worker: appends "<tag> <CLOCK_REALTIME ns>\n"
 * to $HP_BENCH_DIR/stamps, then behaves as argv says:
 *   stamp exit            exit 0 at once
 *   stamp fail-once       attempt 0, local rank 0: waits until every rank
 *                         of the attempt has stamped "start" (so the
 *                         failure does not overlap the launch), then
 *                         stamps "fail" and exits 1;
 *                         attempt 0, others: stamp "start", wait for death;
 *                         later attempts: stamp "start", exit 0
 * One write(2) with O_APPEND per stamp, so concurrent workers never mix. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void stamp(const char *tag)
{
	const char *dir = getenv("HP_BENCH_DIR");
	const char *att = getenv("TORCHELASTIC_RESTART_COUNT");
	if (!dir)
		return;
	char path[4096], line[128];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(path, sizeof(path), "%s/stamps", dir);
	int n = snprintf(line, sizeof(line), "%s %s %lld\n", tag,
			 att ? att : "0",
			 (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (fd >= 0) {
		if (write(fd, line, (size_t)n) < 0)
			perror("write");
		close(fd);
	}
}

/* Polls the stamps file until LOCAL_WORLD_SIZE "start" lines are there
 * (a benchmark helper, not a test: polling is fine here). */
static void wait_all_started(void)
{
	const char *dir = getenv("HP_BENCH_DIR");
	int want = atoi(getenv("LOCAL_WORLD_SIZE") ?: "1");
	char path[4096];
	snprintf(path, sizeof(path), "%s/stamps", dir ? dir : ".");
	for (int tries = 0; tries < 20000; tries++) {
		FILE *f = fopen(path, "r");
		int n = 0;
		char line[128];
		while (f && fgets(line, sizeof(line), f))
			n += strncmp(line, "start ", 6) == 0;
		if (f)
			fclose(f);
		if (n >= want)
			return;
		usleep(500);
	}
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "exit";
	int attempt = atoi(getenv("TORCHELASTIC_RESTART_COUNT") ?: "0");
	int rank = atoi(getenv("LOCAL_RANK") ?: "0");
	if (strcmp(mode, "fail-once") == 0) {
		if (attempt == 0 && rank == 0) {
			stamp("start");
			wait_all_started();
			stamp("fail");
			return 1;
		}
		stamp("start");
		if (attempt == 0)
			for (;;)
				pause();
		return 0;
	}
	return 0;
}
