/* test-logmon.c — log monitoring against the reference LogEvaluator's
 * semantics: configuration parsing (and its all-or-nothing rejection),
 * re.match anchoring, start cut-off and recurring deadlines (strictly
 * greater), metric thresholds with consecutive data points, faultOnMatch,
 * stopPattern, the reason/message texts with Python reprs, PCRE2 limits
 * against a catastrophic pattern, and the uv timer path with a real loop.
 * Time is passed explicitly (the *_at functions) except in the loop
 * cases, which wait on the timer itself, never on a sleep. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/log.h"
#include "agent/logmon.h"

struct trips {
	int n;
	enum hp_logmon_state state;
	char rule[128], reason[256], message[2048];
};

static void on_trip(void *ud, enum hp_logmon_state st, const char *rule,
		    const char *reason, const char *message)
{
	struct trips *t = ud;
	t->n++;
	t->state = st;
	snprintf(t->rule, sizeof(t->rule), "%s", rule);
	snprintf(t->reason, sizeof(t->reason), "%s", reason);
	snprintf(t->message, sizeof(t->message), "%s", message);
}

static enum hp_logmon_state line(struct hp_logmon *m, const char *s,
				 uint64_t now)
{
	return hp_logmon_line_at(m, s, strlen(s), now);
}

static struct hp_logmon *with(const char *json, struct trips *t)
{
	struct hp_logmon *m = hp_logmon_new(NULL, on_trip, t);
	assert_true(hp_logmon_configure(m, json) > 0);
	hp_logmon_arm_at(m, 0);
	return m;
}

#define HANG_TEXT                                                              \
	"The job is hanging (not receiving required logs) on the following "  \
	"log monitoring rules and corresponding last matched log lines: "

/* ---- configuration ------------------------------------------------- */

static void test_parse_valid(void **st)
{
	struct trips t = {0};
	struct hp_logmon *m = hp_logmon_new(NULL, on_trip, &t);
	/* the reference's own test configuration */
	assert_int_equal(hp_logmon_configure(m,
		"[{\"name\":\"TrainingStart\",\"logPattern\":\".*Training script "
		"started.*\",\"expectedStartCutOffInSeconds\":300},"
		"{\"name\":\"TFLOPs\",\"logPattern\":\".* (.+)TFLOPs.*\","
		"\"expectedRecurringFrequencyInSeconds\":60,"
		"\"metricThreshold\":100,\"operator\":\"lt\"}]"), 2);
	assert_int_equal(hp_logmon_rule_count(m), 2);
	/* every field; numeric strings and floats as Python's int() */
	assert_int_equal(hp_logmon_configure(m,
		"[{\"name\":\"a\",\"logPattern\":\"x(\\\\d+)\","
		"\"stopPattern\":\"done\",\"expectedStartCutOffInSeconds\":\" 1_0 \","
		"\"expectedRecurringFrequencyInSeconds\":2.9,"
		"\"metricThreshold\":\"-5\",\"operator\":\"gteq\","
		"\"metricEvaluationDataPoints\":3,\"faultOnMatch\":false,"
		"\"unknown\":{\"x\":1}}]"), 1);
	/* null fields are absent */
	assert_int_equal(hp_logmon_configure(m,
		"[{\"name\":\"a\",\"logPattern\":\"x\",\"operator\":null,"
		"\"metricThreshold\":null,\"stopPattern\":null}]"), 1);
	assert_int_equal(hp_logmon_configure(m, NULL), 0);
	assert_int_equal(hp_logmon_configure(m, "null"), 0);
	assert_int_equal(hp_logmon_configure(m, "[]"), 0);
	assert_int_equal(hp_logmon_rule_count(m), 0);
	hp_logmon_free(m);
}

static void test_parse_invalid_rejects_all(void **st)
{
	static const char *const bad[] = {
		"{}",
		"[1]",
		"[{\"logPattern\":\"x\"}]",
		"[{\"name\":\"\",\"logPattern\":\"x\"}]",
		"[{\"name\":\"a\"}]",
		"[{\"name\":\"a\",\"logPattern\":\"(unclosed\"}]",
		"[{\"name\":\"a\",\"logPattern\":\"x\",\"stopPattern\":\"[\"}]",
		"[{\"name\":\"a\",\"logPattern\":\"x\",\"operator\":\"ge\"}]",
		"[{\"name\":\"a\",\"logPattern\":\"x\","
		"\"expectedStartCutOffInSeconds\":\"1.5\"}]",
		"[{\"name\":\"a\",\"logPattern\":\"x\",\"metricThreshold\":[1]}]",
		"[{\"name\":\"a\",\"logPattern\":\"x\","
		"\"metricEvaluationDataPoints\":\"two\"}]",
		/* one good rule does not save a bad one */
		"[{\"name\":\"ok\",\"logPattern\":\"x\"},"
		"{\"name\":\"b\",\"logPattern\":\"*\"}]",
	};
	struct hp_logmon *m = hp_logmon_new(NULL, NULL, NULL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(hp_logmon_configure(m, "[{\"name\":\"p\","
							"\"logPattern\":\"p\"}]"),
				 1);
		assert_int_equal(hp_logmon_configure(m, bad[i]), -EINVAL);
		assert_int_equal(hp_logmon_rule_count(m), 0);
		hp_logmon_arm_at(m, 0);
		assert_false(hp_logmon_armed(m));
	}
	/* too many rules, too long a pattern */
	char *many = malloc(HP_LOGMON_MAX_RULES * 40 + 64);
	strcpy(many, "[");
	for (int i = 0; i <= HP_LOGMON_MAX_RULES; i++)
		sprintf(many + strlen(many), "%s{\"name\":\"r%d\",\"logPattern\":\"x\"}",
			i ? "," : "", i);
	strcat(many, "]");
	assert_int_equal(hp_logmon_configure(m, many), -EINVAL);
	free(many);
	char *longp = malloc(HP_LOGMON_MAX_PATTERN + 64);
	strcpy(longp, "[{\"name\":\"l\",\"logPattern\":\"");
	size_t off = strlen(longp);
	memset(longp + off, 'a', HP_LOGMON_MAX_PATTERN + 1);
	strcpy(longp + off + HP_LOGMON_MAX_PATTERN + 1, "\"}]");
	assert_int_equal(hp_logmon_configure(m, longp), -EINVAL);
	free(longp);
	hp_logmon_free(m);
}

/* ---- matching and deadlines ---------------------------------------- */

static void test_match_is_anchored(void **st)
{
	struct trips t = {0};
	struct hp_logmon *m =
		with("[{\"name\":\"a\",\"logPattern\":\"loss\"}]", &t);
	assert_int_equal(line(m, "step 1 loss 2", 10), HP_LOGMON_WAITING);
	assert_int_equal(line(m, "loss 2", 20), HP_LOGMON_HEALTHY);
	hp_logmon_free(m);
	m = with("[{\"name\":\"a\",\"logPattern\":\"step \\\\d+$\"}]", &t);
	/* $ before the final newline, as Python's */
	assert_int_equal(line(m, "step 12", 10), HP_LOGMON_HEALTHY);
	hp_logmon_free(m);
	assert_int_equal(t.n, 0);
}

static void test_start_cutoff(void **st)
{
	struct trips t = {0};
	struct hp_logmon *m = with(
		"[{\"name\":\"JobStart\",\"logPattern\":\".*Training started.*\","
		"\"expectedStartCutOffInSeconds\":1}]", &t);
	assert_int_equal(hp_logmon_next_deadline(m), 1001);
	assert_int_equal(line(m, "doing rendezvous", 500), HP_LOGMON_WAITING);
	assert_int_equal(hp_logmon_tick_at(m, 1000), HP_LOGMON_WAITING);
	assert_int_equal(t.n, 0);
	assert_int_equal(hp_logmon_tick_at(m, 1001), HP_LOGMON_HANGING);
	assert_int_equal(t.n, 1);
	assert_int_equal(t.state, HP_LOGMON_HANGING);
	assert_string_equal(t.rule, "JobStart");
	assert_string_equal(t.reason, "LogHang_JobStart");
	assert_string_equal(t.message, HANG_TEXT "{'JobStart': None}");
	/* a trip disarms: nothing more until the next arm */
	assert_false(hp_logmon_armed(m));
	assert_int_equal(hp_logmon_tick_at(m, 5000), HP_LOGMON_WAITING);
	assert_int_equal(t.n, 1);
	/* re-armed: the cut-off counts from the new start; a match in time
	 * satisfies it for good */
	hp_logmon_arm_at(m, 10000);
	assert_int_equal(line(m, "Training started", 10500),
			 HP_LOGMON_HEALTHY);
	assert_int_equal(hp_logmon_next_deadline(m), UINT64_MAX);
	assert_int_equal(hp_logmon_tick_at(m, 99999), HP_LOGMON_HEALTHY);
	assert_int_equal(t.n, 1);
	hp_logmon_free(m);
}

static void test_recurring(void **st)
{
	struct trips t = {0};
	struct hp_logmon *m = with(
		"[{\"name\":\"Steps\",\"logPattern\":\".*step (\\\\d+).*\","
		"\"expectedRecurringFrequencyInSeconds\":2}]", &t);
	/* no deadline before the first match */
	assert_int_equal(hp_logmon_next_deadline(m), UINT64_MAX);
	assert_int_equal(hp_logmon_tick_at(m, 100000), HP_LOGMON_WAITING);
	assert_int_equal(line(m, "step 1", 100000), HP_LOGMON_HEALTHY);
	assert_int_equal(hp_logmon_next_deadline(m), 102001);
	assert_int_equal(line(m, "step 2", 101500), HP_LOGMON_HEALTHY);
	/* a non-matching line past the deadline is noticed as well */
	assert_int_equal(line(m, "noise", 103000), HP_LOGMON_HEALTHY);
	assert_int_equal(line(m, "noise", 103501), HP_LOGMON_HANGING);
	assert_int_equal(t.n, 1);
	assert_string_equal(t.reason, "LogHang_Steps");
	assert_string_equal(t.message, HANG_TEXT "{'Steps': 'step 2\\n'}");
	hp_logmon_free(m);
}

static void test_threshold(void **st)
{
	struct trips t = {0};
	struct hp_logmon *m = with(
		"[{\"name\":\"TFLOPs\",\"logPattern\":\".* (.+)TFLOPs.*\","
		"\"metricThreshold\":100,\"operator\":\"lt\","
		"\"metricEvaluationDataPoints\":2}]", &t);
	assert_int_equal(line(m, "throughput 50TFLOPs", 1), HP_LOGMON_HEALTHY);
	assert_int_equal(line(m, "throughput 150TFLOPs", 2),
			 HP_LOGMON_HEALTHY); /* resets the count */
	assert_int_equal(line(m, "throughput 99.9TFLOPs", 3),
			 HP_LOGMON_HEALTHY);
	/* not a number: the reference's evaluate raises, nothing changes */
	assert_int_equal(line(m, "throughput abcTFLOPs", 4),
			 HP_LOGMON_HEALTHY);
	assert_int_equal(t.n, 0);
	assert_int_equal(line(m, "throughput 1e1TFLOPs", 5), HP_LOGMON_SLOW);
	assert_int_equal(t.n, 1);
	assert_string_equal(t.reason, "LogSlow_TFLOPs");
	assert_string_equal(t.message,
			    "The job is slowed (logs outside of acceptable "
			    "thresholds) on the following log monitoring rules "
			    "and corresponding log lines: "
			    "{'TFLOPs': 'throughput 1e1TFLOPs\\n'}");
	hp_logmon_free(m);

	/* every operator; threshold truncated as int(100.9) == 100 */
	static const struct {
		const char *op;
		const char *value;
		bool slow;
	} cases[] = {
		{"gt", "101", true},  {"gt", "100", false},
		{"lt", "99.5", true}, {"lt", "100", false},
		{"eq", "100", true},  {"eq", "100.5", false},
		{"gteq", "100", true}, {"gteq", "99", false},
		{"lteq", "100", true}, {"lteq", "100.1", false},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char cfg[256], l[64];
		snprintf(cfg, sizeof(cfg),
			 "[{\"name\":\"m\",\"logPattern\":\"v=(\\\\S+)\","
			 "\"metricThreshold\":100.9,\"operator\":\"%s\"}]",
			 cases[i].op);
		memset(&t, 0, sizeof(t));
		m = with(cfg, &t);
		snprintf(l, sizeof(l), "v=%s", cases[i].value);
		assert_int_equal(line(m, l, 1), cases[i].slow
							? HP_LOGMON_SLOW
							: HP_LOGMON_HEALTHY);
		hp_logmon_free(m);
	}
	/* no group, or no operator: a match is simply healthy */
	memset(&t, 0, sizeof(t));
	m = with("[{\"name\":\"m\",\"logPattern\":\"v=\\\\S+\","
		 "\"metricThreshold\":1,\"operator\":\"gt\"}]", &t);
	assert_int_equal(line(m, "v=5", 1), HP_LOGMON_HEALTHY);
	hp_logmon_free(m);
}

static void test_fault_on_match_and_ranking(void **st)
{
	struct trips t = {0};
	struct hp_logmon *m = with(
		"[{\"name\":\"Hang\",\"logPattern\":\"tick\","
		"\"expectedRecurringFrequencyInSeconds\":1},"
		"{\"name\":\"OOM\",\"logPattern\":\".*OutOfMemoryError.*\","
		"\"faultOnMatch\":true},"
		"{\"name\":\"OOM2\",\"logPattern\":\".*Error\","
		"\"faultOnMatch\":1}]", &t);
	assert_int_equal(line(m, "tick", 0), HP_LOGMON_HEALTHY);
	/* both a hang (tick overdue) and two faults: FAULTED wins, the
	 * message lists every faulted rule in order */
	assert_int_equal(line(m, "torch.OutOfMemoryError", 5000),
			 HP_LOGMON_FAULTED);
	assert_int_equal(t.n, 1);
	assert_string_equal(t.reason, "LogFault_OOM");
	assert_string_equal(t.message,
			    "The job detected a fault indicating log message "
			    "for the following log monitoring rules and "
			    "corresponding log lines: {'OOM': "
			    "'torch.OutOfMemoryError\\n', 'OOM2': "
			    "'torch.OutOfMemoryError\\n'}");
	hp_logmon_free(m);

	/* two rules hanging at once: both listed, the first names it */
	memset(&t, 0, sizeof(t));
	m = with("[{\"name\":\"A\",\"logPattern\":\"a\","
		 "\"expectedStartCutOffInSeconds\":1},"
		 "{\"name\":\"B\",\"logPattern\":\"b\","
		 "\"expectedStartCutOffInSeconds\":1}]", &t);
	assert_int_equal(hp_logmon_tick_at(m, 2000), HP_LOGMON_HANGING);
	assert_string_equal(t.reason, "LogHang_A");
	assert_string_equal(t.message, HANG_TEXT "{'A': None, 'B': None}");
	hp_logmon_free(m);
}

static void test_stop_pattern(void **st)
{
	struct trips t = {0};
	struct hp_logmon *m = with(
		"[{\"name\":\"S\",\"logPattern\":\"step\","
		"\"stopPattern\":\".*Training finished.*\","
		"\"expectedRecurringFrequencyInSeconds\":1}]", &t);
	assert_int_equal(line(m, "step", 0), HP_LOGMON_HEALTHY);
	assert_int_equal(line(m, "Training finished", 500), HP_LOGMON_HEALTHY);
	assert_int_equal(hp_logmon_next_deadline(m), UINT64_MAX);
	assert_int_equal(hp_logmon_tick_at(m, 100000), HP_LOGMON_HEALTHY);
	assert_int_equal(t.n, 0);
	/* arming reactivates the rule */
	hp_logmon_arm_at(m, 200000);
	assert_int_equal(line(m, "step", 200000), HP_LOGMON_HEALTHY);
	assert_int_equal(hp_logmon_tick_at(m, 201001), HP_LOGMON_HANGING);
	hp_logmon_free(m);
}

static void test_python_repr(void **st)
{
	struct trips t = {0};
	struct hp_logmon *m = with(
		"[{\"name\":\"it's\",\"logPattern\":\"x\",\"faultOnMatch\":true}]",
		&t);
	assert_int_equal(line(m, "x\t\\ 'q' \x01", 0), HP_LOGMON_FAULTED);
	/* name has a single quote: double quotes; the line has no double
	 * quote but single quotes: double quotes too */
	const char *dict = strchr(t.message, '{');
	assert_non_null(dict);
	assert_string_equal(dict, "{\"it's\": \"x\\t\\\\ 'q' \\x01\\n\"}");
	hp_logmon_free(m);
	memset(&t, 0, sizeof(t));
	m = with("[{\"name\":\"n\",\"logPattern\":\"x\",\"faultOnMatch\":true}]",
		 &t);
	assert_int_equal(line(m, "x'\"", 0), HP_LOGMON_FAULTED);
	dict = strchr(t.message, '{');
	assert_string_equal(dict, "{'n': 'x\\'\"\\n'}");
	hp_logmon_free(m);
}

static void test_limits(void **st)
{
	struct trips t = {0};
	/* catastrophic backtracking: 2^40 paths without the match limit */
	struct hp_logmon *m = with(
		"[{\"name\":\"evil\",\"logPattern\":\"(a+)+$\"},"
		"{\"name\":\"deep\",\"logPattern\":\"(?:(a)|b)*c\"}]", &t);
	char l[64 * 1024];
	memset(l, 'a', 40);
	l[40] = 'b';
	assert_int_equal(hp_logmon_line_at(m, l, 41, 1), HP_LOGMON_WAITING);
	/* a 64 KiB line against both: bounded too (without the limits this
	 * would outlive the test's timeout) */
	memset(l, 'a', sizeof(l));
	l[sizeof(l) - 1] = 'b';
	assert_int_equal(hp_logmon_line_at(m, l, sizeof(l), 2),
			 HP_LOGMON_WAITING);
	hp_logmon_free(m);
	/* invalid UTF-8 in a line is matched, not an error */
	m = with("[{\"name\":\"u\",\"logPattern\":\".*ok\"}]", &t);
	assert_int_equal(line(m, "\xff\xfe ok", 3), HP_LOGMON_HEALTHY);
	hp_logmon_free(m);
	assert_int_equal(t.n, 0);
}

/* ---- with a real loop ---------------------------------------------- */

struct loop_case {
	uv_loop_t loop;
	struct trips t;
	struct hp_logmon *m;
};

static void on_trip_stop(void *ud, enum hp_logmon_state s, const char *rule,
			 const char *reason, const char *message)
{
	struct loop_case *c = ud;
	on_trip(&c->t, s, rule, reason, message);
	uv_stop(&c->loop);
}

static void test_loop_timer(void **st)
{
	struct loop_case c = {0};
	assert_int_equal(uv_loop_init(&c.loop), 0);
	c.m = hp_logmon_new(&c.loop, on_trip_stop, &c);
	assert_int_equal(hp_logmon_configure(c.m,
		"[{\"name\":\"Start\",\"logPattern\":\"go\","
		"\"expectedStartCutOffInSeconds\":0}]"), 1);
	hp_logmon_arm(c.m);
	uint64_t t0 = uv_now(&c.loop);
	/* the timer is the only thing that can end this run */
	uv_run(&c.loop, UV_RUN_DEFAULT);
	assert_int_equal(c.t.n, 1);
	assert_string_equal(c.t.reason, "LogHang_Start");
	assert_true(uv_now(&c.loop) >= t0 + 1);

	/* a line that trips is delivered from the timer, not from inside
	 * the caller (the logs relay) */
	assert_int_equal(hp_logmon_configure(c.m,
		"[{\"name\":\"F\",\"logPattern\":\"boom\",\"faultOnMatch\":true}]"),
		1);
	hp_logmon_arm(c.m);
	hp_logmon_line(c.m, "boom", 4);
	assert_int_equal(c.t.n, 1);
	uv_run(&c.loop, UV_RUN_DEFAULT);
	assert_int_equal(c.t.n, 2);
	assert_string_equal(c.t.reason, "LogFault_F");

	/* re-armed while a trip waits for delivery: the deadlines of the
	 * new arm still run afterwards */
	assert_int_equal(hp_logmon_configure(c.m,
		"[{\"name\":\"F\",\"logPattern\":\"boom\",\"faultOnMatch\":true},"
		"{\"name\":\"S\",\"logPattern\":\"never\","
		"\"expectedStartCutOffInSeconds\":0}]"), 2);
	hp_logmon_arm(c.m);
	hp_logmon_line(c.m, "boom", 4);
	hp_logmon_arm(c.m);
	uv_run(&c.loop, UV_RUN_DEFAULT);
	/* uv_stop ends the run after the current iteration: on a slow
	 * machine (valgrind) the hang deadline fires in the same one */
	if (c.t.n == 3) {
		assert_string_equal(c.t.reason, "LogFault_F");
		uv_run(&c.loop, UV_RUN_DEFAULT);
	}
	assert_int_equal(c.t.n, 4);
	assert_string_equal(c.t.reason, "LogHang_S");

	/* disarmed: the loop has nothing left to wait for */
	assert_int_equal(hp_logmon_configure(c.m,
		"[{\"name\":\"S\",\"logPattern\":\"x\","
		"\"expectedStartCutOffInSeconds\":1000}]"), 1);
	hp_logmon_arm(c.m);
	hp_logmon_disarm(c.m);
	assert_int_equal(uv_run(&c.loop, UV_RUN_NOWAIT), 0);
	hp_logmon_free(c.m);
	uv_run(&c.loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&c.loop), 0);
}

int main(void)
{
	hp_log_level = HP_LOG_OFF;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_valid),
		cmocka_unit_test(test_parse_invalid_rejects_all),
		cmocka_unit_test(test_match_is_anchored),
		cmocka_unit_test(test_start_cutoff),
		cmocka_unit_test(test_recurring),
		cmocka_unit_test(test_threshold),
		cmocka_unit_test(test_fault_on_match_and_ranking),
		cmocka_unit_test(test_stop_pattern),
		cmocka_unit_test(test_python_repr),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_loop_timer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
