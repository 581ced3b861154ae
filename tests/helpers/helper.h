/* helper.h — what the test helper programs share: a bounded lifetime, so a
 * helper that an agent bug leaves behind cannot outlive a CI run, and a
 * write-whole-line helper so concurrent workers never interleave a line.
 * Header-only on purpose: each helper is one .c file and one executable. */
#ifndef HP_TEST_HELPER_H
#define HP_TEST_HELPER_H

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Writes the whole buffer with as few write() calls as the pipe allows:
 * lines under PIPE_BUF reach the reader in one piece. */
static inline void helper_write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		buf += n;
		len -= (size_t)n;
	}
}

/* printf one line to stdout with a single write(). */
__attribute__((format(printf, 1, 2))) static inline void helper_say(const char *fmt, ...)
{
	char buf[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	helper_write_all(STDOUT_FILENO, buf, (size_t)n);
}

/* A helper that waits for a signal still dies after HP_HELPER_LIFETIME
 * seconds (120 by default) through SIGALRM's default action, so a leaked
 * helper is bounded; the tests fail on leaks long before that. */
static inline void helper_bound_lifetime(void)
{
	const char *s = getenv("HP_HELPER_LIFETIME");
	unsigned secs = s ? (unsigned)strtoul(s, NULL, 10) : 120;
	signal(SIGALRM, SIG_DFL);
	alarm(secs ? secs : 120);
}

static inline const char *helper_env(const char *key, const char *dflt)
{
	const char *v = getenv(key);
	return v ? v : dflt;
}

/* Signal names with and without the SIG prefix; -1 when unknown. */
static inline int helper_signo(const char *name)
{
	static const struct {
		const char *name;
		int signo;
	} table[] = {
		{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT},
		{"ILL", SIGILL},   {"ABRT", SIGABRT}, {"FPE", SIGFPE},
		{"KILL", SIGKILL}, {"SEGV", SIGSEGV}, {"PIPE", SIGPIPE},
		{"ALRM", SIGALRM}, {"TERM", SIGTERM}, {"USR1", SIGUSR1},
		{"USR2", SIGUSR2}, {"BUS", SIGBUS},   {"TRAP", SIGTRAP},
	};
	if (strncmp(name, "SIG", 3) == 0)
		name += 3;
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (strcmp(name, table[i].name) == 0)
			return table[i].signo;
	return -1;
}

#endif
