/* test-log.c — base/log.c: control characters of a message never reach
 * stderr raw (no forged line, no ESC/CR), the failure-summary variant keeps
 * its lines but defuses forged ones, and the
 * console writer never blocks on a pipe nobody reads: it drops and counts
 * whole lines instead. Each case runs with fd 1/2 on a pipe of its own. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/log.h"

static int saved_fd[3];

/* fd 1 and 2 back as they were (cmocka reports on them). */
static void restore(void)
{
	fflush(stdout);
	dup2(saved_fd[1], 1);
	dup2(saved_fd[2], 2);
}

/* Puts a fresh pipe on fd; returns its read end (non-blocking). */
static int pipe_onto(int fd)
{
	fflush(stdout);
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_true(dup2(p[1], fd) == fd);
	close(p[1]);
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	return p[0];
}

static size_t drain(int rd, char *buf, size_t cap)
{
	size_t n = 0;
	for (;;) {
		ssize_t k = read(rd, buf + n, cap - 1 - n);
		if (k <= 0)
			break;
		n += (size_t)k;
	}
	buf[n] = '\0';
	return n;
}

/* Until rd has bytes to read or ms pass: the writer thread's progress is
 * waited on at the pipe, not guessed with a sleep. */
static void wait_readable(int rd, int ms)
{
	struct pollfd p = {.fd = rd, .events = POLLIN};
	(void)poll(&p, 1, ms);
}

static void test_escaped(void **st)
{
	int rd = pipe_onto(2);
	hp_error("test", "addr %s", "10.0.0.1\n[hyperpodrun] ERROR agent 1: "
				    "forged\x1b[2J\r\x7f\xc2\x9b");
	hp_console_flush(1.0);
	char buf[4096];
	drain(rd, buf, sizeof(buf));
	assert_non_null(strstr(buf, "addr 10.0.0.1\\n[hyperpodrun] ERROR agent "
				   "1: forged\\x1b[2J\\r\\x7f\\x9b\n"));
	/* exactly one line */
	assert_ptr_equal(strchr(buf, '\n'), buf + strlen(buf) - 1);
	restore();
	close(rd);
}

static void test_lines_variant(void **st)
{
	int rd = pipe_onto(2);
	hp_log_write_lines(HP_LOG_ERROR, "test", "block:\n  one\n[hyperpodrun] "
						 "ERROR x 1: forged\r");
	hp_console_flush(1.0);
	char buf[4096];
	drain(rd, buf, sizeof(buf));
	assert_non_null(strstr(buf, "block:\n  one\n  [hyperpodrun] ERROR x 1: "
				   "forged\\r\n"));
	restore();
	close(rd);
}

/* 64 KiB of pipe and 1 MiB of queue: 200k lines of 32 bytes cannot all
 * fit, and not one call may block (the test's timeout would catch it). */
static void test_stalled_reader_drops(void **st)
{
	int rd = pipe_onto(1);
	unsigned long long before = hp_console_dropped();
	char line[33];
	memset(line, 'x', 31);
	line[31] = '\n';
	int dropped = 0;
	for (int i = 0; i < 200000; i++)
		dropped += hp_console_write(1, line, 32) == -ENOBUFS;
	assert_true(dropped > 100000);
	assert_int_equal(hp_console_dropped() - before,
			 (unsigned long long)dropped);
	/* the reader comes back: what was queued arrives, then the notice */
	char *buf = malloc(4 << 20);
	size_t got = 0;
	/* all that was accepted: 200k minus the dropped lines */
	size_t want = (size_t)(200000 - dropped) * 32;
	/* wait on the pipe itself, 100 ms at a time, 20 s in all */
	for (int tries = 0; tries < 200 && got < want; tries++) {
		got += drain(rd, buf + got, (size_t)(4 << 20) - got);
		if (got < want)
			wait_readable(rd, 100);
	}
	assert_int_equal(got, want);
	assert_int_equal(hp_console_write(1, "after\n", 6), 0);
	for (int tries = 0; tries < 200 && !strstr(buf, "after\n"); tries++) {
		wait_readable(rd, 100);
		got += drain(rd, buf + got, (size_t)(4 << 20) - got);
	}
	assert_non_null(strstr(buf, "line(s) to stdout dropped: it is not "
				    "read fast enough\nafter\n"));
	free(buf);
	restore();
	close(rd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escaped),
		cmocka_unit_test(test_lines_variant),
		cmocka_unit_test(test_stalled_reader_drops),
	};
	signal(SIGPIPE, SIG_IGN); /* as the agent does */
	saved_fd[1] = dup(1);
	saved_fd[2] = dup(2);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
