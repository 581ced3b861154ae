/* log.h — the only way hyperpodrun writes diagnostics to stderr.
 * Every line is "[hyperpodrun] LEVEL component pid: message". The macros
 * test the level before evaluating their arguments (redis) and carry the
 * printf attribute (lwan). The level is the one global of the program. */
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
