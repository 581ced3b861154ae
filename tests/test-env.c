/* test-env.c — hp_env_build against torchrun's worker environment
 * (local_elastic_agent._start_workers): rank formulas for several layouts,
 * the parent environment replaced not duplicated, the OMP and NCCL rules,
 * and 'extra' winning over everything. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/env.h"

static struct hp_rank_info layout(int nnodes, int node_rank, int nproc)
{
	struct hp_rank_info ri = {
		.group_rank = node_rank,
		.group_world_size = nnodes,
		.local_world_size = nproc,
		.restart_count = 0,
		.max_restarts = 3,
		.master_addr = "10.0.0.1",
		.master_port = 29500,
		.run_id = "job-1",
		.role = "trainer",
		.use_agent_store = true,
		.spare = -1,
	};
	return ri;
}

/* How many entries have this key: our contract is "exactly one". */
static int count_key(char **env, const char *key)
{
	size_t len = strlen(key);
	int n = 0;
	for (size_t i = 0; env[i]; i++)
		if (strncmp(env[i], key, len) == 0 && env[i][len] == '=')
			n++;
	return n;
}

static void expect(char **env, const char *key, const char *value)
{
	const char *v = hp_env_get(env, key);
	if (!v)
		fail_msg("%s is not set", key);
	if (strcmp(v, value) != 0)
		fail_msg("%s=%s, expected %s", key, v, value);
	assert_int_equal(count_key(env, key), 1);
}

static void expect_int(char **env, const char *key, int value)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%d", value);
	expect(env, key, buf);
}

static void test_all_variables(void **state)
{
	char *parent[] = {"PATH=/usr/bin", "HOME=/root", NULL};
	struct hp_rank_info ri = layout(2, 1, 4);
	ri.restart_count = 2;
	char **env = hp_env_build(parent, &ri, 2, "/logs/attempt_2/2/error.json",
				  NULL);
	expect(env, "PATH", "/usr/bin");
	expect(env, "HOME", "/root");
	expect(env, "LOCAL_RANK", "2");
	expect(env, "RANK", "6");
	expect(env, "GROUP_RANK", "1");
	expect(env, "ROLE_RANK", "6");
	expect(env, "ROLE_NAME", "trainer");
	expect(env, "LOCAL_WORLD_SIZE", "4");
	expect(env, "WORLD_SIZE", "8");
	expect(env, "GROUP_WORLD_SIZE", "2");
	expect(env, "ROLE_WORLD_SIZE", "8");
	expect(env, "MASTER_ADDR", "10.0.0.1");
	expect(env, "MASTER_PORT", "29500");
	expect(env, "TORCHELASTIC_RESTART_COUNT", "2");
	expect(env, "JOB_RESTART_COUNT", "2");
	expect(env, "TORCHELASTIC_MAX_RESTARTS", "3");
	expect(env, "TORCHELASTIC_RUN_ID", "job-1");
	expect(env, "TORCHELASTIC_USE_AGENT_STORE", "True");
	expect(env, "TORCHELASTIC_ERROR_FILE", "/logs/attempt_2/2/error.json");
	expect(env, "NCCL_ASYNC_ERROR_HANDLING", "1");
	expect(env, "TORCH_NCCL_ASYNC_ERROR_HANDLING", "1");
	expect(env, "OMP_NUM_THREADS", "1");
	assert_null(hp_env_get(env, "SPARE"));
	size_t n = 0;
	while (env[n])
		n++;
	assert_int_equal(n, 2 + 20);
	hp_env_free(env);
}

/* torchrun: RANK = group_rank * local_world_size + local_rank and
 * WORLD_SIZE = nnodes * nproc; across all nodes the ranks are exactly
 * 0..WORLD_SIZE-1. */
static void test_rank_formulas(void **state)
{
	static const struct {
		int nnodes, nproc;
	} layouts[] = {{1, 1}, {1, 8}, {2, 8}, {4, 2}, {3, 5}, {16, 8}};
	for (size_t l = 0; l < sizeof(layouts) / sizeof(layouts[0]); l++) {
		int nnodes = layouts[l].nnodes, nproc = layouts[l].nproc;
		int world = nnodes * nproc;
		char *seen = calloc((size_t)world, 1);
		for (int node = 0; node < nnodes; node++) {
			struct hp_rank_info ri = layout(nnodes, node, nproc);
			for (int lr = 0; lr < nproc; lr++) {
				char **env = hp_env_build(NULL, &ri, lr, NULL,
							  NULL);
				int rank = atoi(hp_env_get(env, "RANK"));
				assert_int_equal(rank, node * nproc + lr);
				assert_false(seen[rank]);
				seen[rank] = 1;
				expect_int(env, "LOCAL_RANK", lr);
				expect_int(env, "GROUP_RANK", node);
				expect_int(env, "ROLE_RANK", rank);
				expect_int(env, "WORLD_SIZE", world);
				expect_int(env, "ROLE_WORLD_SIZE", world);
				expect_int(env, "GROUP_WORLD_SIZE", nnodes);
				expect_int(env, "LOCAL_WORLD_SIZE", nproc);
				assert_null(
					hp_env_get(env, "TORCHELASTIC_ERROR_FILE"));
				hp_env_free(env);
			}
		}
		for (int r = 0; r < world; r++)
			assert_true(seen[r]);
		free(seen);
	}
}

static void test_parent_replaced_not_duplicated(void **state)
{
	char *parent[] = {"RANK=99",      "LOCAL_RANK=7", "KEEP=me",
			  "RANK=98",      "MASTER_PORT=1", "WORLD_SIZE",
			  "RANKX=still",  NULL};
	struct hp_rank_info ri = layout(1, 0, 2);
	char **env = hp_env_build(parent, &ri, 1, NULL, NULL);
	expect(env, "RANK", "1");
	expect(env, "LOCAL_RANK", "1");
	expect(env, "MASTER_PORT", "29500");
	expect(env, "WORLD_SIZE", "2");
	expect(env, "KEEP", "me");
	expect(env, "RANKX", "still");
	for (size_t i = 0; env[i]; i++)
		assert_string_not_equal(env[i], "WORLD_SIZE");
	hp_env_free(env);
}

static void test_omp_rule(void **state)
{
	struct hp_rank_info one = layout(1, 0, 1);
	struct hp_rank_info many = layout(1, 0, 4);
	char *with_omp[] = {"OMP_NUM_THREADS=8", NULL};
	char *empty_omp[] = {"OMP_NUM_THREADS=", NULL};

	char **env = hp_env_build(NULL, &one, 0, NULL, NULL);
	assert_null(hp_env_get(env, "OMP_NUM_THREADS"));
	hp_env_free(env);

	env = hp_env_build(NULL, &many, 3, NULL, NULL);
	expect(env, "OMP_NUM_THREADS", "1");
	hp_env_free(env);

	env = hp_env_build(with_omp, &many, 0, NULL, NULL);
	expect(env, "OMP_NUM_THREADS", "8");
	hp_env_free(env);

	/* Python's "in os.environ": set but empty still counts as set. */
	env = hp_env_build(empty_omp, &many, 0, NULL, NULL);
	expect(env, "OMP_NUM_THREADS", "");
	hp_env_free(env);
}

static void test_nccl_not_overwritten(void **state)
{
	char *parent[] = {"NCCL_ASYNC_ERROR_HANDLING=0",
			  "TORCH_NCCL_ASYNC_ERROR_HANDLING=3", NULL};
	char *only_old[] = {"NCCL_ASYNC_ERROR_HANDLING=0", NULL};
	struct hp_rank_info ri = layout(1, 0, 1);

	char **env = hp_env_build(parent, &ri, 0, NULL, NULL);
	expect(env, "NCCL_ASYNC_ERROR_HANDLING", "0");
	expect(env, "TORCH_NCCL_ASYNC_ERROR_HANDLING", "3");
	hp_env_free(env);

	env = hp_env_build(only_old, &ri, 0, NULL, NULL);
	expect(env, "NCCL_ASYNC_ERROR_HANDLING", "0");
	expect(env, "TORCH_NCCL_ASYNC_ERROR_HANDLING", "1");
	hp_env_free(env);
}

static void test_extra_wins(void **state)
{
	char *parent[] = {"FOO=parent", "OMP_NUM_THREADS=2", NULL};
	char *extra[] = {"RANK=1234", "FOO=first", "FOO=last",
			 "OMP_NUM_THREADS=7", "NCCL_ASYNC_ERROR_HANDLING=0",
			 "NEW=1", NULL};
	struct hp_rank_info ri = layout(2, 1, 2);
	char **env = hp_env_build(parent, &ri, 0, NULL, extra);
	expect(env, "RANK", "1234");
	expect(env, "FOO", "last");
	expect(env, "OMP_NUM_THREADS", "7");
	expect(env, "NCCL_ASYNC_ERROR_HANDLING", "0");
	expect(env, "NEW", "1");
	expect(env, "LOCAL_RANK", "0");
	hp_env_free(env);
}

static void test_flags_and_spare(void **state)
{
	struct hp_rank_info ri = layout(1, 0, 1);
	ri.use_agent_store = false;
	ri.spare = 0;
	char **env = hp_env_build(NULL, &ri, 0, NULL, NULL);
	expect(env, "TORCHELASTIC_USE_AGENT_STORE", "False");
	expect(env, "SPARE", "False");
	hp_env_free(env);

	ri.spare = 1;
	env = hp_env_build(NULL, &ri, 0, NULL, NULL);
	expect(env, "SPARE", "True");
	hp_env_free(env);
}

/* Operator mode: GROUP_WORLD_SIZE is the world size (the reference's
 * 10336335176); the pre/post-train group of one keeps the training
 * group's stride; group rank -1 before /start gives negative ranks, as the
 * reference's; int extremes cannot overflow (64-bit arithmetic). */
static void test_operator_layouts(void **state)
{
	(void)state;
	char *parent[] = {NULL};
	struct hp_rank_info ri = layout(4, 1, 2);
	ri.group_world_is_world = true;
	char **env = hp_env_build(parent, &ri, 1, NULL, NULL);
	expect(env, "GROUP_WORLD_SIZE", "8");
	expect(env, "WORLD_SIZE", "8");
	expect(env, "RANK", "3");
	hp_env_free(env);

	ri = layout(4, 3, 1); /* the pre-train group of one, nproc 8 */
	ri.node_stride = 8;
	env = hp_env_build(parent, &ri, 0, NULL, NULL);
	expect(env, "LOCAL_WORLD_SIZE", "1");
	expect(env, "RANK", "24");
	expect(env, "WORLD_SIZE", "32");
	hp_env_free(env);

	ri = layout(2, -1, 2);
	env = hp_env_build(parent, &ri, 1, NULL, NULL);
	expect(env, "RANK", "-1");
	expect(env, "GROUP_RANK", "-1");
	hp_env_free(env);

	ri = layout(2147483647, 2147483646, 256);
	ri.group_world_is_world = true;
	env = hp_env_build(parent, &ri, 255, NULL, NULL);
	expect(env, "RANK", "549755813631");
	expect(env, "WORLD_SIZE", "549755813632");
	expect(env, "GROUP_WORLD_SIZE", "549755813632");
	hp_env_free(env);
}

/* Numbers are written in decimal whatever their sign or size: the operator
 * mode's unranked start (MASTER_PORT -1), the extremes of the types. */
static void test_numbers(void **state)
{
	(void)state;
	char *parent[] = {NULL};
	struct hp_rank_info ri = layout(1, 0, 1);
	ri.master_port = -1;
	ri.restart_count = 2147483647;
	ri.max_restarts = 0;
	char **env = hp_env_build(parent, &ri, 0, "/e/error.json", NULL);
	expect(env, "MASTER_PORT", "-1");
	expect(env, "TORCHELASTIC_RESTART_COUNT", "2147483647");
	expect(env, "JOB_RESTART_COUNT", "2147483647");
	expect(env, "TORCHELASTIC_MAX_RESTARTS", "0");
	expect(env, "TORCHELASTIC_ERROR_FILE", "/e/error.json");
	expect(env, "LOCAL_RANK", "0");
	hp_env_free(env);

	ri = layout(2, -2147483647 - 1, 256);
	env = hp_env_build(parent, &ri, 0, NULL, NULL);
	expect(env, "GROUP_RANK", "-2147483648");
	expect(env, "RANK", "-549755813888");
	hp_env_free(env);
}

static void test_env_get(void **state)
{
	char *env[] = {"RANKX=1", "RANK=2", "EMPTY=", "BARE", "RANK=3", NULL};
	assert_string_equal(hp_env_get(env, "RANK"), "2");
	assert_string_equal(hp_env_get(env, "EMPTY"), "");
	assert_null(hp_env_get(env, "BARE"));
	assert_null(hp_env_get(env, "RAN"));
	assert_null(hp_env_get(env, "MISSING"));
	assert_null(hp_env_get(NULL, "RANK"));
	hp_env_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_all_variables),
		cmocka_unit_test(test_rank_formulas),
		cmocka_unit_test(test_operator_layouts),
		cmocka_unit_test(test_parent_replaced_not_duplicated),
		cmocka_unit_test(test_omp_rule),
		cmocka_unit_test(test_nccl_not_overwritten),
		cmocka_unit_test(test_extra_wins),
		cmocka_unit_test(test_flags_and_spare),
		cmocka_unit_test(test_env_get),
		cmocka_unit_test(test_numbers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
