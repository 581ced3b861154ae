/* chaos-worker — the worker of the chaos test (tests/integration/
 * test_chaos.py). Prints "ready pid P rank R attempt A" on stderr, then
 * numbered lines "seq N rank R attempt A" on stdout, one write() each,
 * every $CHAOS_INTERVAL_US microseconds (2000; the test sets 200), until
 * a signal ends it.
 * After each line's write() returns it stores N+1 in the 8-byte file
 * $CHAOS_DIR/count-<pid> (a shared mapping, so the count survives a
 * SIGKILL): the test then knows how many lines the worker wrote and checks
 * that the agent's logs hold every one of them. SIGUSR1 makes it exit with
 * the code written in $CHAOS_DIR/code-<pid> (how the test injects an exit
 * code); nothing runs in a handler: SIGUSR1 is blocked and taken with
 * sigtimedwait, which also paces the lines. */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>

#include "helper.h"

static int exit_code(const char *dir)
{
	char path[4096], buf[16] = {0};
	snprintf(path, sizeof(path), "%s/code-%d", dir, (int)getpid());
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 98; /* the test did not say: a code it never injects */
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 ? atoi(buf) : 98;
}

static volatile uint64_t *map_counter(const char *dir)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/count-%d", dir, (int)getpid());
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || ftruncate(fd, sizeof(uint64_t)) < 0) {
		perror(path);
		exit(99);
	}
	void *p = mmap(NULL, sizeof(uint64_t), PROT_READ | PROT_WRITE,
		       MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(99);
	}
	close(fd);
	return p;
}

int main(void)
{
	helper_bound_lifetime();
	const char *dir = getenv("CHAOS_DIR");
	if (!dir) {
		fprintf(stderr, "chaos-worker: CHAOS_DIR is not set\n");
		return 99;
	}
	long us = atol(helper_env("CHAOS_INTERVAL_US", "2000"));
	struct timespec pace = {.tv_sec = us / 1000000,
				.tv_nsec = (us % 1000000) * 1000};
	const char *rank = helper_env("LOCAL_RANK", "?");
	const char *attempt = helper_env("TORCHELASTIC_RESTART_COUNT", "?");
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);
	volatile uint64_t *count = map_counter(dir);

	/* stderr is unbuffered: the ready line goes out in one write */
	fprintf(stderr, "ready pid %d rank %s attempt %s\n", (int)getpid(),
		rank, attempt);
	for (uint64_t seq = 0;; seq++) {
		helper_say("seq %llu rank %s attempt %s",
			   (unsigned long long)seq, rank, attempt);
		*count = seq + 1;
		if (sigtimedwait(&set, NULL, &pace) == SIGUSR1)
			return exit_code(dir);
	}
}
