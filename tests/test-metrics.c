/* test-metrics.c — the Prometheus text format of /metrics: every family
 * has # HELP and # TYPE before its samples, sample lines parse
 * (name{labels} value), histograms are cumulative with +Inf == _count,
 * label values are escaped, label sets stay bounded, and recording from
 * several threads loses nothing. */
#include <pthread.h>
#include <regex.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/log.h"
#include "agent/metrics.h"

/* The sample line "name{labels} value" for this name+labels, or fails. */
static double sample(const char *text, const char *series)
{
	size_t n = strlen(series);
	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p) {
		if (strncmp(p, series, n) == 0 && p[n] == ' ')
			return strtod(p + n + 1, NULL);
	}
	fail_msg("no sample %s in:\n%s", series, text);
	return -1;
}

static bool has(const char *text, const char *s)
{
	return strstr(text, s) != NULL;
}

/* Every line is a comment (# HELP / # TYPE) or a sample; every sample's
 * family was announced by # TYPE before it. */
static void check_format(const char *text)
{
	regex_t sample_re, help_re, type_re;
	assert_int_equal(regcomp(&sample_re,
				 "^([a-zA-Z_:][a-zA-Z0-9_:]*)(\\{([a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\",?)*\\})? "
				 "[-+0-9.eE]+(Inf)?$",
				 REG_EXTENDED),
			 0);
	assert_int_equal(regcomp(&help_re, "^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+$",
				 REG_EXTENDED),
			 0);
	assert_int_equal(regcomp(&type_re,
				 "^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$",
				 REG_EXTENDED),
			 0);
	char *copy = strdup(text);
	char family[128] = "";
	assert_true(strlen(text) > 0 && text[strlen(text) - 1] == '\n');
	for (char *save = NULL, *l = strtok_r(copy, "\n", &save); l;
	     l = strtok_r(NULL, "\n", &save)) {
		regmatch_t mt[3];
		if (l[0] == '#') {
			if (regexec(&type_re, l, 3, mt, 0) == 0) {
				size_t n = (size_t)(mt[1].rm_eo - mt[1].rm_so);
				memcpy(family, l + mt[1].rm_so, n);
				family[n] = '\0';
				continue;
			}
			if (regexec(&help_re, l, 0, NULL, 0) != 0)
				fail_msg("bad comment line: %s", l);
			continue;
		}
		if (regexec(&sample_re, l, 3, mt, 0) != 0)
			fail_msg("bad sample line: %s", l);
		if (strncmp(l, family, strlen(family)) != 0 || !family[0])
			fail_msg("sample outside its family %s: %s", family, l);
	}
	free(copy);
	regfree(&sample_re);
	regfree(&help_re);
	regfree(&type_re);
}

static void test_empty(void **st)
{
	struct hp_metrics *m = hp_metrics_new("1.2.3");
	char *t = hp_metrics_render(m);
	check_format(t);
	assert_true(has(t, "# TYPE hyperpodrun_agent_state gauge\n"));
	assert_true(has(t, "hyperpodrun_build_info{version=\"1.2.3\"} 1\n"));
	assert_int_equal(sample(t, "hyperpodrun_agent_state{state=\"init\"}"), 1);
	assert_int_equal(sample(t, "hyperpodrun_agent_state{state=\"running\"}"), 0);
	assert_int_equal(sample(t, "hyperpodrun_restarts_total{mode=\"process\"}"), 0);
	assert_int_equal(sample(t, "hyperpodrun_restarts_total{mode=\"in_process\"}"), 0);
	assert_int_equal(sample(t, "hyperpodrun_restart_latency_seconds_count"), 0);
	assert_int_equal(sample(t, "hyperpodrun_restart_latency_seconds_bucket{le=\"+Inf\"}"), 0);
	assert_true(has(t, "# TYPE hyperpodrun_fabric_collective_seconds histogram\n"));
	assert_true(has(t, "# TYPE hyperpodrun_worker_exits_total counter\n"));
	free(t);
	hp_metrics_free(m);
	hp_metrics_free(NULL);
}

static void test_values(void **st)
{
	struct hp_metrics *m = hp_metrics_new("v\"1\\\n");
	hp_metrics_set_state(m, HP_STATE_FAULTED);
	hp_metrics_restart(m, HP_METRICS_RESTART_PROCESS);
	hp_metrics_restart(m, HP_METRICS_RESTART_PROCESS);
	hp_metrics_restart(m, HP_METRICS_RESTART_IN_PROCESS);
	hp_metrics_worker_exit(m, 1 << 8);          /* exit 1 */
	hp_metrics_worker_exit(m, 1 << 8);
	hp_metrics_worker_exit(m, 0);               /* exit 0 */
	hp_metrics_worker_exit(m, SIGKILL);         /* killed */
	hp_metrics_worker_exit(m, 64);              /* an unnamed signal */
	hp_metrics_observe_restart(m, 0.2);
	hp_metrics_observe_restart(m, 7);
	hp_metrics_observe_restart(m, 1000);        /* above every bucket */
	hp_metrics_observe_barrier(m, 0.01);
	hp_metrics_observe_collective(m, "barrier", 0.002);
	hp_metrics_observe_collective(m, "allgather", 0.5);
	hp_metrics_observe_collective(m, "barrier", 0.004);
	hp_metrics_log_trip(m, "Hang \"x\"", "hanging");
	hp_metrics_log_trip(m, "Hang \"x\"", "hanging");
	hp_metrics_log_trip(m, "Slow", "slow");
	char *t = hp_metrics_render(m);
	check_format(t);
	assert_true(has(t, "hyperpodrun_build_info{version=\"v\\\"1\\\\\\n\"} 1\n"));
	assert_int_equal(sample(t, "hyperpodrun_agent_state{state=\"faulted\"}"), 1);
	assert_int_equal(sample(t, "hyperpodrun_agent_state{state=\"init\"}"), 0);
	assert_int_equal(sample(t, "hyperpodrun_restarts_total{mode=\"process\"}"), 2);
	assert_int_equal(sample(t, "hyperpodrun_restarts_total{mode=\"in_process\"}"), 1);
	assert_int_equal(sample(t, "hyperpodrun_worker_exits_total{code=\"1\",signal=\"\"}"), 2);
	assert_int_equal(sample(t, "hyperpodrun_worker_exits_total{code=\"0\",signal=\"\"}"), 1);
	assert_int_equal(sample(t, "hyperpodrun_worker_exits_total{code=\"\",signal=\"SIGKILL\"}"), 1);
	assert_int_equal(sample(t, "hyperpodrun_worker_exits_total{code=\"\",signal=\"SIG64\"}"), 1);
	/* cumulative buckets; le printed like the Prometheus clients */
	const char *h = "hyperpodrun_restart_latency_seconds";
	char s[160];
	snprintf(s, sizeof(s), "%s_bucket{le=\"0.1\"}", h);
	assert_int_equal(sample(t, s), 0);
	snprintf(s, sizeof(s), "%s_bucket{le=\"0.25\"}", h);
	assert_int_equal(sample(t, s), 1);
	snprintf(s, sizeof(s), "%s_bucket{le=\"10\"}", h);
	assert_int_equal(sample(t, s), 2);
	snprintf(s, sizeof(s), "%s_bucket{le=\"300\"}", h);
	assert_int_equal(sample(t, s), 2);
	snprintf(s, sizeof(s), "%s_bucket{le=\"+Inf\"}", h);
	assert_int_equal(sample(t, s), 3);
	snprintf(s, sizeof(s), "%s_count", h);
	assert_int_equal(sample(t, s), 3);
	snprintf(s, sizeof(s), "%s_sum", h);
	assert_float_equal(sample(t, s), 1007.2, 1e-9);
	assert_int_equal(sample(t, "hyperpodrun_ipr_barrier_wait_seconds_bucket{le=\"0.01\"}"), 1);
	assert_int_equal(sample(t, "hyperpodrun_ipr_barrier_wait_seconds_bucket{le=\"0.005\"}"), 0);
	assert_int_equal(sample(t, "hyperpodrun_fabric_collective_seconds_count{op=\"barrier\"}"), 2);
	assert_int_equal(sample(t, "hyperpodrun_fabric_collective_seconds_bucket{op=\"barrier\",le=\"0.005\"}"), 2);
	assert_int_equal(sample(t, "hyperpodrun_fabric_collective_seconds_bucket{op=\"allgather\",le=\"0.25\"}"), 0);
	assert_int_equal(sample(t, "hyperpodrun_fabric_collective_seconds_bucket{op=\"allgather\",le=\"+Inf\"}"), 1);
	assert_int_equal(sample(t, "hyperpodrun_log_rule_trips_total{rule=\"Hang \\\"x\\\"\",state=\"hanging\"}"), 2);
	assert_int_equal(sample(t, "hyperpodrun_log_rule_trips_total{rule=\"Slow\",state=\"slow\"}"), 1);
	free(t);
	hp_metrics_free(m);
}

static void test_bounded_labels(void **st)
{
	struct hp_metrics *m = hp_metrics_new("x");
	char name[32];
	for (int i = 0; i < 200; i++) {
		snprintf(name, sizeof(name), "op%d", i);
		hp_metrics_observe_collective(m, name, 0.1);
		snprintf(name, sizeof(name), "rule%d", i);
		hp_metrics_log_trip(m, name, "faulted");
		hp_metrics_worker_exit(m, (i & 0xff) << 8);
	}
	char *t = hp_metrics_render(m);
	check_format(t);
	assert_true(has(t, "op=\"other\""));
	assert_true(has(t, "rule=\"other\""));
	assert_true(has(t, "code=\"other\""));
	assert_false(has(t, "op=\"op150\""));
	/* nothing lost: the sum over ops is every observation */
	double total = 0;
	for (const char *p = t; (p = strstr(p, "hyperpodrun_fabric_collective_seconds_count{"));) {
		p = strchr(p, ' ');
		total += strtod(p, NULL);
	}
	assert_int_equal((int)total, 200);
	free(t);
	hp_metrics_free(m);
}

static void *recorder(void *arg)
{
	struct hp_metrics *m = arg;
	for (int i = 0; i < 10000; i++) {
		hp_metrics_restart(m, HP_METRICS_RESTART_PROCESS);
		hp_metrics_observe_barrier(m, 0.001);
		if (i % 1000 == 0)
			free(hp_metrics_render(m));
	}
	return NULL;
}

static void test_threads(void **st)
{
	struct hp_metrics *m = hp_metrics_new("x");
	pthread_t th[4];
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&th[i], NULL, recorder, m), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	char *t = hp_metrics_render(m);
	assert_int_equal(sample(t, "hyperpodrun_restarts_total{mode=\"process\"}"), 40000);
	assert_int_equal(sample(t, "hyperpodrun_ipr_barrier_wait_seconds_count"), 40000);
	free(t);
	hp_metrics_free(m);
}

int main(void)
{
	hp_log_level = HP_LOG_OFF;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_bounded_labels),
		cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
