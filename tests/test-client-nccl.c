/* test-client-nccl.c — libhyperpod's NCCL helper against the real
 * libnccl.so.2, where one is installed (exit 77, skip, where not). A
 * unique id needs no GPU; a one-rank communicator does, so without a CUDA
 * device the init must fail cleanly with -EIO, and with one the
 * init -> async error -> abort cycle must succeed. Its own process, since
 * the library is loaded once per process. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "hyperpod.h"

static void test_unique_id_and_comm(void **state)
{
	unsigned char id[HP_NCCL_UNIQUE_ID_BYTES], back[sizeof(id)];
	unsigned char zero[sizeof(id)] = {0};
	char hex[HP_NCCL_UNIQUE_ID_HEX_LEN + 1];
	void *comm = NULL;
	int err = -1;

	assert_int_equal(hp_nccl_get_unique_id(id), 0);
	assert_memory_not_equal(id, zero, sizeof(id));
	assert_int_equal(hp_nccl_unique_id_hex(id, hex, sizeof(hex)), 0);
	assert_int_equal(hp_nccl_unique_id_from_hex(hex, back), 0);
	assert_memory_equal(id, back, sizeof(id));

	assert_int_equal(hp_nccl_comm_init_rank(&comm, 1, id, 1), -EINVAL);
	int rc = hp_nccl_comm_init_rank(&comm, 1, id, 0);
	if (rc == -EIO) {
		print_message("no usable CUDA device: %s\n",
			      hp_nccl_strerror(1));
		assert_null(comm);
		return;
	}
	assert_int_equal(rc, 0);
	assert_non_null(comm);
	assert_int_equal(hp_nccl_async_error(comm, &err), 0);
	assert_int_equal(err, 0);
	assert_int_equal(hp_nccl_comm_abort(comm), 0);

	/* Re-init with a fresh id, as after an in-process restart. */
	assert_int_equal(hp_nccl_get_unique_id(id), 0);
	assert_int_equal(hp_nccl_comm_init_rank(&comm, 1, id, 0), 0);
	assert_int_equal(hp_nccl_comm_abort(comm), 0);
}

int main(void)
{
	char why[512];
	if (!hp_nccl_available(why, sizeof(why))) {
		printf("# skip: %s\n", why);
		return 77;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unique_id_and_comm),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
