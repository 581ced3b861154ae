/* log.h — the only way hyperpodrun writes diagnostics to stderr, and the
 * console writer every line to our stdout/stderr goes through.
 * Every line is "[hyperpodrun] LEVEL component pid: message", with the
 * control characters of the message escaped (a request string can never
 * forge a line). The macros test the level before evaluating their
 * arguments (redis) and carry the printf attribute (lwan). The level is the
 * one global of the program (the console queues are per process fd). */
#ifndef HP_LOG_H
#define HP_LOG_H

#include "hp.h"

enum hp_log_level {
	HP_LOG_DEBUG = 0,
	HP_LOG_INFO = 1,
	HP_LOG_WARN = 2,
	HP_LOG_ERROR = 3,
	HP_LOG_OFF = 4,
};

extern enum hp_log_level hp_log_level;

/* Parses "debug", "info", "warning"/"warn", "error", "critical", "off"
 * (case-insensitive). Returns 0, or -EINVAL for anything else. */
int hp_log_parse_level(const char *s, enum hp_log_level *out);

void hp_log_write(enum hp_log_level lvl, const char *component, const char *fmt,
		  ...) HP_PRINTF(3, 4);

/* The console: stdout (fd 1) and stderr (fd 2) of the agent, written
 * without ever blocking the caller. A line that fits goes out at once when
 * the reader keeps up; otherwise it waits in a bounded queue (1 MiB per
 * fd) that a writer thread drains; past the bound whole lines are dropped
 * and counted, and a warning says how many once the reader is back.
 * Thread-safe; one call = one line, never interleaved with another.
 * Returns 0, or -ENOBUFS when the line was dropped. */
int hp_console_write(int fd, const char *p, size_t n);
/* Lines dropped so far, both fds together (for /metrics). */
unsigned long long hp_console_dropped(void);
/* Waits until the queues are written out, or until no byte went out for
 * stall_s seconds (a reader that never comes back must not hold up exit).
 * Runs at exit by itself. */
void hp_console_flush(double stall_s);

/* hp_log_write for a block of several lines (the failure summary):
 * newlines stay, every other control character is escaped, and a line that
 * would start like one of ours is indented. */
void hp_log_write_lines(enum hp_log_level lvl, const char *component,
			const char *fmt, ...) HP_PRINTF(3, 4);

#define hp_log(lvl, comp, ...)                                                 \
	do {                                                                   \
		if ((lvl) >= hp_log_level)                                     \
			hp_log_write((lvl), (comp), __VA_ARGS__);              \
	} while (0)
#define hp_debug(comp, ...) hp_log(HP_LOG_DEBUG, comp, __VA_ARGS__)
#define hp_info(comp, ...) hp_log(HP_LOG_INFO, comp, __VA_ARGS__)
#define hp_warn(comp, ...) hp_log(HP_LOG_WARN, comp, __VA_ARGS__)
#define hp_error(comp, ...) hp_log(HP_LOG_ERROR, comp, __VA_ARGS__)

#endif
