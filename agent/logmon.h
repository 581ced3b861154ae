/* logmon.h — log monitoring: the operator's log_monitoring_configuration
 * (PROTOCOL.md §HTTP, StartRequest) evaluated on worker output lines, as
 * the reference agent's LogEvaluator does. Owns the compiled rules (PCRE2,
 * with match limits), their per-rule state and one uv timer for the
 * start cut-off and recurring-frequency deadlines. It decides nothing
 * about workers or agent states: a tripped rule is reported once through
 * the callback and the monitor disarms itself until the next arm. */
#ifndef HP_LOGMON_H
#define HP_LOGMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct hp_logmon;

/* The reference's LogState. */
enum hp_logmon_state {
	HP_LOGMON_WAITING = 0, /* no match yet */
	HP_LOGMON_HEALTHY,
	HP_LOGMON_SLOW,        /* metric threshold crossed N times in a row */
	HP_LOGMON_HANGING,     /* a start cut-off or recurring deadline missed */
	HP_LOGMON_FAULTED,     /* faultOnMatch rule matched */
};

/* Bounds on hostile input. A match that hits a PCRE2 limit counts as no
 * match (logged once per rule). */
#define HP_LOGMON_MAX_RULES 64
#define HP_LOGMON_MAX_PATTERN 4096      /* bytes per pattern */
#define HP_LOGMON_MATCH_LIMIT 100000u   /* pcre2_set_match_limit */
#define HP_LOGMON_DEPTH_LIMIT 1000u     /* pcre2_set_depth_limit */
#define HP_LOGMON_HEAP_LIMIT 4096u      /* KiB, pcre2_set_heap_limit */

/* A rule tripped (state is SLOW, HANGING or FAULTED). reason is the
 * reference's "LogSlow_<rule>", "LogHang_<rule>" or "LogFault_<rule>"
 * (the first rule, in configuration order, in that state); message is the
 * reference's sentence followed by a Python dict repr of every rule in that
 * state and its last matched line, e.g. {'Hang': 'step 3\n'} or
 * {'Start': None}. rule is the first rule's name. Called on the loop. */
typedef void (*hp_logmon_trip_cb)(void *ud, enum hp_logmon_state state,
				  const char *rule, const char *reason,
				  const char *message);

/* loop may be NULL: then no timer runs and deadlines are only checked by
 * hp_logmon_line_at/hp_logmon_tick_at (unit tests). */
struct hp_logmon *hp_logmon_new(uv_loop_t *loop, hp_logmon_trip_cb cb,
				void *ud);

/* Replaces the rules with those of json (a JSON array of rule objects, as
 * text; NULL, "null" or "[]" = no rules) and disarms. Like the reference,
 * one invalid rule (missing name or logPattern, a pattern PCRE2 rejects, an
 * unknown operator, a non-integer number field) rejects the whole
 * configuration: it logs an error naming the rule and leaves no rules.
 * Returns the number of rules, or -EINVAL. */
int hp_logmon_configure(struct hp_logmon *m, const char *json);

size_t hp_logmon_rule_count(const struct hp_logmon *m);

/* Resets every rule (start time = now, nothing matched, active) and starts
 * the deadline timer. A no-op without rules. */
void hp_logmon_arm(struct hp_logmon *m);
void hp_logmon_arm_at(struct hp_logmon *m, uint64_t now_ms);

/* Stops evaluating and the timer. */
void hp_logmon_disarm(struct hp_logmon *m);
bool hp_logmon_armed(const struct hp_logmon *m);

/* Evaluates one output line (no newline) against every rule at uv_now /
 * at now_ms; trips (callback, then disarm) when a rule is SLOW, HANGING or
 * FAULTED. Returns the aggregated state (FAULTED > HANGING > SLOW >
 * HEALTHY > WAITING, as the reference ranks them); WAITING when disarmed. */
void hp_logmon_line(struct hp_logmon *m, const char *line, size_t len);
enum hp_logmon_state hp_logmon_line_at(struct hp_logmon *m, const char *line,
				       size_t len, uint64_t now_ms);

/* Checks the deadlines only (what the timer does). */
enum hp_logmon_state hp_logmon_tick_at(struct hp_logmon *m, uint64_t now_ms);

/* The earliest time (ms, same clock as arm) a deadline can trip, or
 * UINT64_MAX when none is pending. */
uint64_t hp_logmon_next_deadline(const struct hp_logmon *m);

/* "WAITING", "HEALTHY", ... */
const char *hp_logmon_state_name(enum hp_logmon_state s);

/* Frees everything. With a loop, the timer is closed and the memory goes
 * in its close callback: run the loop once more before closing it. NULL is
 * a no-op. */
void hp_logmon_free(struct hp_logmon *m);

#endif
