/* log.c — formats diagnostic lines to stderr. It is the only writer of
 * stderr in the agent (worker output goes through agent/logs.c). One
 * write(2) per line so lines from threads never interleave mid-line. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

enum hp_log_level hp_log_level = HP_LOG_INFO;

static const char *const level_names[] = {"DEBUG", "INFO", "WARNING",
					  "ERROR"};

int hp_log_parse_level(const char *s, enum hp_log_level *out)
{
	static const struct {
		const char *name;
		enum hp_log_level lvl;
	} table[] = {
		{"debug", HP_LOG_DEBUG},    {"trace", HP_LOG_DEBUG},
		{"info", HP_LOG_INFO},      {"warning", HP_LOG_WARN},
		{"warn", HP_LOG_WARN},      {"error", HP_LOG_ERROR},
		{"critical", HP_LOG_ERROR}, {"off", HP_LOG_OFF},
	};
	for (size_t i = 0; i < HP_ARRAY_LEN(table); i++) {
		if (strcasecmp(s, table[i].name) == 0) {
			*out = table[i].lvl;
			return 0;
		}
	}
	return -EINVAL;
}

static void vwrite_line(const char *level, const char *component,
			const char *fmt, va_list ap)
{
	char buf[4096];
	int saved = errno;
	int n = snprintf(buf, sizeof(buf), "[hyperpodrun] %s %s %d: ", level,
			 component, (int)getpid());
	if (n < 0)
		n = 0;
	int m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	if (m < 0)
		m = 0;
	size_t len = (size_t)n + (size_t)m;
	if (len > sizeof(buf) - 2)
		len = sizeof(buf) - 2;
	buf[len++] = '\n';
	ssize_t w = write(STDERR_FILENO, buf, len);
	(void)w;
	errno = saved;
}

void hp_log_write(enum hp_log_level lvl, const char *component, const char *fmt,
		  ...)
{
	va_list ap;
	va_start(ap, fmt);
	vwrite_line(level_names[lvl < HP_LOG_OFF ? lvl : HP_LOG_ERROR],
		    component, fmt, ap);
	va_end(ap);
}

void hp_bug_at(const char *file, int line, const char *fmt, ...)
{
	char where[256];
	snprintf(where, sizeof(where), "BUG %s:%d", file, line);
	va_list ap;
	va_start(ap, fmt);
	vwrite_line("BUG", where, fmt, ap);
	va_end(ap);
	abort();
}
