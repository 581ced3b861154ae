/* test-fsm.c — the state machine against PROTOCOL.md §states: every cell
 * of both allowed-transition tables, the event table, refusals leaving
 * the machine untouched, and the Python-isoformat timestamps. */
#include <errno.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "agent/fsm.h"
#include "base/log.h"

#define I HP_STATE_INIT
#define R HP_STATE_READY
#define U HP_STATE_RUNNING
#define C HP_STATE_COMPLETED
#define F HP_STATE_FAULTED
#define S HP_STATE_STOPPING
#define D HP_STATE_SHUTDOWN

/* The PROTOCOL.md table, written out independently of fsm.c. */
static const int plr[HP_STATE_COUNT][HP_STATE_COUNT] = {
	[I] = {[R] = 1, [D] = 1},
	[R] = {[U] = 1, [D] = 1},
	[U] = {[C] = 1, [F] = 1, [S] = 1, [D] = 1},
	[F] = {[S] = 1, [D] = 1},
	[S] = {[R] = 1},
	[C] = {[D] = 1, [S] = 1},
	[D] = {0},
};
static const int ipr[HP_STATE_COUNT][HP_STATE_COUNT] = {
	[I] = {[R] = 1, [D] = 1, [F] = 1},
	[R] = {[I] = 1, [U] = 1, [D] = 1, [F] = 1},
	[U] = {[I] = 1, [C] = 1, [F] = 1, [S] = 1, [D] = 1},
	[F] = {[I] = 1, [S] = 1, [D] = 1},
	[S] = {[R] = 1, [I] = 1},
	[C] = {[D] = 1, [S] = 1},
	[D] = {0},
};

static void test_names(void **st)
{
	static const char *up[] = {"INIT", "READY", "RUNNING", "COMPLETED",
				   "FAULTED", "STOPPING", "SHUTDOWN"};
	static const char *lo[] = {"init", "ready", "running", "completed",
				   "faulted", "stopping", "shutdown"};
	for (int s = 0; s < HP_STATE_COUNT; s++) {
		assert_string_equal(hp_state_name((enum hp_state)s), up[s]);
		assert_string_equal(hp_state_lower((enum hp_state)s), lo[s]);
	}
	assert_string_equal(hp_state_name(HP_STATE_COUNT), "UNKNOWN");
	for (int e = 0; e < HP_EV_COUNT; e++)
		assert_string_not_equal(hp_event_name((enum hp_event)e),
					"unknown");
	assert_string_equal(hp_event_name(HP_EV_COUNT), "unknown");
}

static void test_allowed_tables(void **st)
{
	for (int a = 0; a < HP_STATE_COUNT; a++)
		for (int b = 0; b < HP_STATE_COUNT; b++) {
			assert_int_equal(hp_fsm_allowed(false, (enum hp_state)a,
							(enum hp_state)b),
					 plr[a][b]);
			assert_int_equal(hp_fsm_allowed(true, (enum hp_state)a,
							(enum hp_state)b),
					 ipr[a][b]);
		}
	assert_false(hp_fsm_allowed(true, HP_STATE_COUNT, I));
	assert_false(hp_fsm_allowed(true, I, HP_STATE_COUNT));
}

/* Drives a fresh machine to 'from' through allowed steps. */
static void reach(struct hp_fsm *f, bool is_ipr, enum hp_state from)
{
	static const enum hp_state path[HP_STATE_COUNT][4] = {
		[I] = {I},
		[R] = {R},
		[U] = {R, U},
		[C] = {R, U, C},
		[F] = {R, U, F},
		[S] = {R, U, S},
		[D] = {D},
	};
	static const int len[HP_STATE_COUNT] = {0, 1, 2, 3, 3, 3, 1};
	hp_fsm_init(f, is_ipr);
	for (int i = 0; i < len[from]; i++)
		assert_int_equal(hp_fsm_go(f, path[from][i], NULL, NULL), 0);
	assert_int_equal(f->state, from);
}

static void check_go_all(bool is_ipr)
{
	const int(*t)[HP_STATE_COUNT] = is_ipr ? ipr : plr;
	for (int a = 0; a < HP_STATE_COUNT; a++)
		for (int b = 0; b < HP_STATE_COUNT; b++) {
			struct hp_fsm f, before;
			reach(&f, is_ipr, (enum hp_state)a);
			before = f;
			int rc = hp_fsm_go(&f, (enum hp_state)b, "Why", "msg");
			if (t[a][b]) {
				assert_int_equal(rc, 0);
				assert_int_equal(f.state, b);
				assert_string_equal(f.reason, "Why");
				assert_string_equal(f.message, "msg");
				assert_true(f.entered[b][0] != '\0');
			} else {
				assert_int_equal(rc, -EPERM);
				assert_memory_equal(&f, &before, sizeof(f));
			}
		}
}

static void test_go_plr(void **st)
{
	check_go_all(false);
}

static void test_go_ipr(void **st)
{
	check_go_all(true);
}

static void test_events(void **st)
{
	/* Every target the event table gives must be in the allowed table,
	 * and the main paths must be there. */
	for (int m = 0; m < 2; m++)
		for (int s = 0; s < HP_STATE_COUNT; s++)
			for (int e = 0; e < HP_EV_COUNT; e++) {
				int to = hp_fsm_target(m, (enum hp_state)s,
						       (enum hp_event)e);
				if (to >= 0)
					assert_true(hp_fsm_allowed(
						m, (enum hp_state)s,
						(enum hp_state)to));
			}
	for (int m = 0; m < 2; m++) {
		assert_int_equal(hp_fsm_target(m, I, HP_EV_READY), R);
		assert_int_equal(hp_fsm_target(m, R, HP_EV_START), U);
		assert_int_equal(hp_fsm_target(m, U, HP_EV_SUCCEEDED), C);
		assert_int_equal(hp_fsm_target(m, U, HP_EV_FAILED), F);
		assert_int_equal(hp_fsm_target(m, U, HP_EV_STOP), S);
		assert_int_equal(hp_fsm_target(m, F, HP_EV_STOP), S);
		assert_int_equal(hp_fsm_target(m, C, HP_EV_STOP), S);
		assert_int_equal(hp_fsm_target(m, S, HP_EV_STOPPED), R);
		for (int s = 0; s < HP_STATE_COUNT; s++)
			if (s != S && s != D)
				assert_int_equal(
					hp_fsm_target(m, (enum hp_state)s,
						      HP_EV_SHUTDOWN),
					D);
		/* /shutdown in STOPPING is not in either table. */
		assert_int_equal(hp_fsm_target(m, S, HP_EV_SHUTDOWN), -1);
		for (int e = 0; e < HP_EV_COUNT; e++)
			assert_int_equal(hp_fsm_target(m, D, (enum hp_event)e),
					 -1);
		assert_int_equal(hp_fsm_target(m, R, HP_EV_STOP), -1);
		assert_int_equal(hp_fsm_target(m, I, HP_EV_START), -1);
		assert_int_equal(hp_fsm_target(m, I, HP_EV_COUNT), -1);
	}
	/* IPR only. */
	assert_int_equal(hp_fsm_target(true, I, HP_EV_FAILED), F);
	assert_int_equal(hp_fsm_target(false, I, HP_EV_FAILED), -1);
	assert_int_equal(hp_fsm_target(true, R, HP_EV_FAILED), F);
	assert_int_equal(hp_fsm_target(false, R, HP_EV_FAILED), -1);
	static const enum hp_state re[] = {R, U, F, S};
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(hp_fsm_target(true, re[i], HP_EV_REINIT), I);
		assert_int_equal(hp_fsm_target(false, re[i], HP_EV_REINIT), -1);
	}
}

static void test_fire(void **st)
{
	struct hp_fsm f;
	hp_fsm_init(&f, false);
	assert_int_equal(hp_fsm_fire(&f, HP_EV_START, NULL, NULL), -EPERM);
	assert_int_equal(f.state, I);
	assert_int_equal(hp_fsm_fire(&f, HP_EV_READY, NULL, NULL), 0);
	assert_int_equal(hp_fsm_fire(&f, HP_EV_START, "RunningStarted", NULL),
			 0);
	assert_int_equal(f.state, U);
	assert_string_equal(f.reason, "RunningStarted");
	assert_string_equal(f.message, "");
	assert_int_equal(hp_fsm_fire(&f, HP_EV_FAILED, "WorkerReportedFault",
				     "The processes reported a failure on "
				     "ranks [1]"),
			 0);
	assert_int_equal(f.state, F);
	assert_int_equal(hp_fsm_fire(&f, HP_EV_STOP, NULL, NULL), 0);
	assert_string_equal(f.reason, "");
	assert_int_equal(hp_fsm_fire(&f, HP_EV_STOPPED, NULL, NULL), 0);
	assert_int_equal(f.state, R);
	assert_int_equal(hp_fsm_fire(&f, HP_EV_SHUTDOWN, NULL, NULL), 0);
	assert_int_equal(hp_fsm_fire(&f, HP_EV_SHUTDOWN, NULL, NULL), -EPERM);
	assert_int_equal(f.state, D);
}

static void test_timestamps(void **st)
{
	regex_t re;
	assert_int_equal(
		regcomp(&re,
			"^[0-9]{4}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:"
			"[0-6][0-9](\\.[0-9]{6})?\\+00:00$",
			REG_EXTENDED | REG_NOSUB),
		0);
	struct hp_fsm f;
	hp_fsm_init(&f, true);
	assert_int_equal(regexec(&re, f.entered[I], 0, NULL, 0), 0);
	for (int s = 1; s < HP_STATE_COUNT; s++)
		assert_string_equal(f.entered[s], "");
	assert_int_equal(hp_fsm_go(&f, R, NULL, NULL), 0);
	assert_int_equal(regexec(&re, f.entered[R], 0, NULL, 0), 0);
	/* Later entries never sort before earlier ones (same format, UTC). */
	assert_true(strcmp(f.entered[R], f.entered[I]) >= 0 ||
		    strlen(f.entered[R]) != strlen(f.entered[I]));
	/* Re-entering a state overwrites its time. */
	char first[HP_FSM_TS_LEN];
	memcpy(first, f.entered[R], sizeof(first));
	assert_int_equal(hp_fsm_go(&f, I, NULL, NULL), 0);
	assert_int_equal(hp_fsm_go(&f, R, NULL, NULL), 0);
	assert_int_equal(regexec(&re, f.entered[R], 0, NULL, 0), 0);
	regfree(&re);
}

int main(void)
{
	hp_log_level = HP_LOG_ERROR;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_allowed_tables),
		cmocka_unit_test(test_go_plr),
		cmocka_unit_test(test_go_ipr),
		cmocka_unit_test(test_events),
		cmocka_unit_test(test_fire),
		cmocka_unit_test(test_timestamps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
