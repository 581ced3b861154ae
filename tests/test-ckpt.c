/* test-ckpt.c — the checkpoint-discovery tracker (agent/ckpt.c) against
 * the reference's CheckpointTracker behaviour (10321396173; its server and
 * client tests 9960341539 test_get_latest_callback, 10809832043
 * test_get_latest_checkpoint_path_*): a step is complete only when every
 * type has its announced count of distinct local ranks; the latest
 * complete step only grows; /start's progress seeds it; a query forgets
 * pending steps; another prefix drops the old steps. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "agent/ckpt.h"

static const struct hp_ckpt_type MODEL2[] = {{"model_checkpoint", 2},
					     {"data_checkpoint", 0}};

static void expect_progress(struct hp_ckpt *t, const char *prefix,
			    const char *path, long long step)
{
	const char *p, *q;
	long long s;
	assert_true(hp_ckpt_progress(t, &p, &q, &s));
	assert_string_equal(p, prefix);
	if (path)
		assert_string_equal(q, path);
	else
		assert_null(q);
	assert_int_equal(s, step);
}

static void test_complete_only_with_every_rank(void **st)
{
	struct hp_ckpt *t = hp_ckpt_new();
	const char *p, *q;
	long long s;
	assert_int_equal(hp_ckpt_update(t, 0, 1, "/x", "model_checkpoint"),
			 -ENOENT);
	hp_ckpt_init(t, "job", MODEL2, 2);
	assert_null(hp_ckpt_latest_path(t));
	assert_int_equal(hp_ckpt_update(t, 0, 10, "/c/10", "model_checkpoint"),
			 0);
	/* the same rank twice is one rank */
	assert_int_equal(hp_ckpt_update(t, 0, 10, NULL, "model_checkpoint"), 0);
	assert_false(hp_ckpt_progress(t, &p, &q, &s));
	assert_int_equal(hp_ckpt_update(t, 1, 10, NULL, "model_checkpoint"), 1);
	expect_progress(t, "job", "/c/10", 10);
	assert_string_equal(hp_ckpt_latest_path(t), "/c/10");
	/* an unknown type, a rank out of range */
	assert_int_equal(hp_ckpt_update(t, 0, 11, "/c", "optimizer"), -EINVAL);
	assert_int_equal(hp_ckpt_update(t, 999, 11, "/c", "model_checkpoint"),
			 -EINVAL);
	/* a data report where 0 were announced keeps the step incomplete */
	hp_ckpt_update(t, 0, 12, "/c/12", "model_checkpoint");
	hp_ckpt_update(t, 1, 12, "/c/12", "data_checkpoint");
	assert_int_equal(hp_ckpt_update(t, 1, 12, NULL, "model_checkpoint"),
			 0);
	expect_progress(t, "job", "/c/10", 10);
	/* an older step completing later does not move the latest back */
	hp_ckpt_update(t, 0, 5, "/c/5", "model_checkpoint");
	assert_int_equal(hp_ckpt_update(t, 1, 5, NULL, "model_checkpoint"), 0);
	expect_progress(t, "job", "/c/10", 10);
	hp_ckpt_free(t);
}

static void test_null_count_never_completes(void **st)
{
	struct hp_ckpt *t = hp_ckpt_new();
	struct hp_ckpt_type ty[] = {{"model_checkpoint", 1},
				    {"data_checkpoint", -1}};
	hp_ckpt_init(t, "j", ty, 2);
	assert_int_equal(hp_ckpt_update(t, 0, 1, "/a", "model_checkpoint"), 0);
	/* the same prefix again fills the null count */
	struct hp_ckpt_type fix[] = {{"data_checkpoint", 0}};
	hp_ckpt_init(t, "j", fix, 1);
	assert_int_equal(hp_ckpt_update(t, 0, 2, "/b", "model_checkpoint"), 1);
	hp_ckpt_free(t);
}

static void test_query_forgets_pending_steps(void **st)
{
	struct hp_ckpt *t = hp_ckpt_new();
	hp_ckpt_init(t, "j", MODEL2, 2);
	hp_ckpt_update(t, 0, 10, "/c/10", "model_checkpoint");
	/* no complete step: the query drops every pending one */
	assert_null(hp_ckpt_latest_path(t));
	assert_int_equal(hp_ckpt_update(t, 1, 10, "/c/10", "model_checkpoint"),
			 0);
	assert_int_equal(hp_ckpt_update(t, 0, 10, NULL, "model_checkpoint"), 1);
	/* with one: steps above it are dropped, below are kept */
	hp_ckpt_update(t, 0, 20, "/c/20", "model_checkpoint");
	assert_string_equal(hp_ckpt_latest_path(t), "/c/10");
	assert_int_equal(hp_ckpt_update(t, 1, 20, NULL, "model_checkpoint"), 0);
	hp_ckpt_free(t);
}

static void test_progress_seeds_and_prefix_change(void **st)
{
	struct hp_ckpt *t = hp_ckpt_new();
	assert_int_equal(hp_ckpt_set_progress(t, "[1]"), -EINVAL);
	assert_int_equal(
		hp_ckpt_set_progress(t, "{\"job\":{\"progressCount\":\"7\","
					"\"progressData\":\"/c/7\"}}"),
		0);
	hp_ckpt_init(t, "job", MODEL2, 2);
	expect_progress(t, "job", "/c/7", 7);
	assert_string_equal(hp_ckpt_latest_path(t), "/c/7");
	hp_ckpt_update(t, 0, 8, "/c/8", "model_checkpoint");
	/* another prefix: no progress for it, the old steps are gone */
	hp_ckpt_init(t, "other", MODEL2, 2);
	const char *p, *q;
	long long s;
	assert_false(hp_ckpt_progress(t, &p, &q, &s));
	assert_int_equal(hp_ckpt_update(t, 1, 8, NULL, "model_checkpoint"), 0);
	/* back to job: seeded again from progress */
	hp_ckpt_init(t, "job", MODEL2, 2);
	expect_progress(t, "job", "/c/7", 7);
	hp_ckpt_free(t);
}

static void test_bounds(void **st)
{
	struct hp_ckpt *t = hp_ckpt_new();
	hp_ckpt_init(t, "j", MODEL2, 2);
	for (int i = 0; i < HP_CKPT_MAX_STEPS; i++)
		assert_int_equal(
			hp_ckpt_update(t, 0, i, "/p", "model_checkpoint"), 0);
	assert_int_equal(hp_ckpt_update(t, 0, -1, "/p", "model_checkpoint"),
			 -ENOSPC);
	hp_ckpt_free(t);
	hp_ckpt_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_complete_only_with_every_rank),
		cmocka_unit_test(test_null_count_never_completes),
		cmocka_unit_test(test_query_forgets_pending_steps),
		cmocka_unit_test(test_progress_seeds_and_prefix_change),
		cmocka_unit_test(test_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
