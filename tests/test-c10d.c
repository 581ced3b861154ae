/* test-c10d.c — the c10d rendezvous (rendezvous/c10d.h) on one real libuv
 * loop: a host and up to two more nodes in this process, talking over
 * loopback TCP. Rounds close at MAX, or at MIN after the last call; a
 * failure, a node that goes away, and the exit barrier; bad endpoints and
 * a foreign run id. Nothing sleeps: the loop runs until a condition holds,
 * under a deadline timer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "base/log.h"
#include "rendezvous/c10d.h"

#define DEADLINE_MS 10000

struct node {
	struct hp_c10d *c;
	int rounds;
	struct hp_c10d_round last;
	int restarts;
	char why[256];
	int errors;
	char error[512];
	int barriers;
};

static void on_round(void *ud, const struct hp_c10d_round *r)
{
	struct node *n = ud;
	n->rounds++;
	n->last = *r;
}

static void on_restart(void *ud, const char *why)
{
	struct node *n = ud;
	n->restarts++;
	snprintf(n->why, sizeof(n->why), "%s", why);
}

static void on_error(void *ud, const char *msg)
{
	struct node *n = ud;
	n->errors++;
	snprintf(n->error, sizeof(n->error), "%s", msg);
}

static void on_barrier(void *ud)
{
	struct node *n = ud;
	n->barriers++;
}

static uv_loop_t loop;

static struct hp_c10d *make(struct node *n, const char *endpoint, int is_host,
			    int min, int max, double last_call,
			    const char *run_id)
{
	memset(n, 0, sizeof(*n));
	struct hp_c10d_options o = {
		.endpoint = endpoint,
		.run_id = run_id ? run_id : "t1",
		.min_nodes = min,
		.max_nodes = max,
		.last_call_timeout = last_call,
		.join_timeout = 5,
		.is_host = is_host,
		.node_name = "unit",
		.on_round = on_round,
		.on_restart = on_restart,
		.on_error = on_error,
		.on_barrier = on_barrier,
		.ud = n,
	};
	n->c = hp_c10d_new(&loop, &o);
	return n->c;
}

static void deadline_cb(uv_timer_t *t)
{
	*(bool *)t->data = true;
	uv_stop(t->loop);
}

/* Runs the loop until *flag (an int) reaches want, or the deadline. */
static void run_until(const int *flag, int want)
{
	bool expired = false;
	uv_timer_t t;
	uv_timer_init(&loop, &t);
	t.data = &expired;
	uv_timer_start(&t, deadline_cb, DEADLINE_MS, 0);
	while (*flag < want && !expired)
		uv_run(&loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(&loop, UV_RUN_NOWAIT);
	if (*flag < want)
		fail_msg("deadline: %d of %d", *flag, want);
}

static int setup(void **state)
{
	(void)state;
	hp_log_level = HP_LOG_ERROR;
	return uv_loop_init(&loop);
}

static int teardown(void **state)
{
	(void)state;
	uv_run(&loop, UV_RUN_NOWAIT);
	return uv_loop_close(&loop) == 0 ? 0 : -1;
}

static char endpoint[64];

static void host_on_free_port(struct node *h, int min, int max, double lc)
{
	assert_non_null(make(h, "127.0.0.1:0", 1, min, max, lc, NULL));
	assert_true(hp_c10d_is_host(h->c));
	snprintf(endpoint, sizeof(endpoint), "127.0.0.1:%d",
		 hp_c10d_port(h->c));
}

static void test_two_nodes_close_at_max(void **state)
{
	(void)state;
	struct node h, b;
	host_on_free_port(&h, 2, 2, 30);
	assert_non_null(make(&b, endpoint, -1, 2, 2, 30, NULL));
	/* the endpoint is bound already: the second node joins it */
	assert_false(hp_c10d_is_host(b.c));
	hp_c10d_join(h.c);
	hp_c10d_join(b.c);
	run_until(&h.rounds, 1);
	run_until(&b.rounds, 1);
	assert_int_equal(h.last.size, 2);
	assert_int_equal(b.last.size, 2);
	assert_int_equal(h.last.rank + b.last.rank, 1);
	assert_string_equal(h.last.master_addr, b.last.master_addr);
	assert_int_equal(h.last.master_port, b.last.master_port);
	assert_true(h.last.master_port > 0);

	/* a failure on b ends the round for h; both join round 1 */
	hp_c10d_fail(b.c);
	run_until(&h.restarts, 1);
	assert_non_null(strstr(h.why, "failed"));
	hp_c10d_join(h.c);
	hp_c10d_join(b.c);
	run_until(&h.rounds, 2);
	run_until(&b.rounds, 2);
	assert_int_equal(h.last.round, 1);
	assert_int_equal(b.last.round, 1);

	/* the exit barrier waits for both */
	hp_c10d_done(h.c);
	hp_c10d_done(b.c);
	run_until(&h.barriers, 1);
	run_until(&b.barriers, 1);
	assert_int_equal(h.errors + b.errors, 0);
	hp_c10d_free(b.c);
	hp_c10d_free(h.c);
}

static void test_min_closes_after_last_call(void **state)
{
	(void)state;
	struct node h;
	host_on_free_port(&h, 1, 3, 0.2);
	uint64_t t0 = uv_hrtime();
	hp_c10d_join(h.c);
	run_until(&h.rounds, 1);
	assert_true(uv_hrtime() - t0 >= 150 * 1000000ull);
	assert_int_equal(h.last.size, 1);
	assert_int_equal(h.last.rank, 0);
	hp_c10d_free(h.c);
}

static void test_late_node_and_leaving_node(void **state)
{
	(void)state;
	struct node h, b;
	host_on_free_port(&h, 1, 2, 0.1);
	hp_c10d_join(h.c);
	run_until(&h.rounds, 1);
	assert_int_equal(h.last.size, 1);
	/* a late node: the running round ends, the next has both */
	assert_non_null(make(&b, endpoint, 0, 1, 2, 0.1, NULL));
	hp_c10d_join(b.c);
	run_until(&h.restarts, 1);
	assert_non_null(strstr(h.why, "waiting"));
	hp_c10d_join(h.c);
	run_until(&h.rounds, 2);
	run_until(&b.rounds, 1);
	assert_int_equal(h.last.size, 2);
	/* b goes away without "done": h's round ends again */
	hp_c10d_free(b.c);
	run_until(&h.restarts, 2);
	assert_non_null(strstr(h.why, "left"));
	hp_c10d_join(h.c);
	run_until(&h.rounds, 3);
	assert_int_equal(h.last.size, 1);
	hp_c10d_free(h.c);
}

static void test_lost_endpoint_and_foreign_run(void **state)
{
	(void)state;
	struct node h, b, x;
	host_on_free_port(&h, 2, 2, 30);
	assert_non_null(make(&x, endpoint, 0, 2, 2, 30, "other run/id"));
	hp_c10d_join(x.c);
	run_until(&x.errors, 1);
	assert_non_null(strstr(x.error, "another --rdzv-id"));
	hp_c10d_free(x.c);

	assert_non_null(make(&b, endpoint, 0, 2, 2, 30, NULL));
	hp_c10d_join(h.c);
	hp_c10d_join(b.c);
	run_until(&b.rounds, 1);
	run_until(&h.rounds, 1);
	hp_c10d_free(h.c); /* the endpoint's agent exits */
	run_until(&b.errors, 1);
	assert_non_null(strstr(b.error, "lost the rendezvous endpoint"));
	hp_c10d_free(b.c);
}

static void test_bad_endpoints(void **state)
{
	(void)state;
	struct node n;
	assert_null(make(&n, "host:notaport", 0, 1, 1, 1, NULL));
	assert_null(make(&n, "127.0.0.1:70000", 0, 1, 1, 1, NULL));
	assert_null(make(&n, "[::1", 0, 1, 1, 1, NULL));
	/* port 0 is only for the host */
	assert_null(make(&n, "192.0.2.1:0", 0, 1, 1, 1, NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_two_nodes_close_at_max,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_min_closes_after_last_call,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_late_node_and_leaving_node,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_lost_endpoint_and_foreign_run, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_endpoints, setup,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
