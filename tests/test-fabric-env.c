/* test-fabric-env.c — the environment the agent gives libfabric (issue 13
 * §7): the provider chosen when FI_PROVIDER is unset (efa where an RDMA
 * device is bound to the efa driver, else tcp), and the sizes set only
 * where the user set nothing, every one of them taken out again. Builds a
 * fake /sys/class/infiniband in a temporary directory; never loads
 * libfabric. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "rendezvous/fabric.h"

static char root[256];

/* root/<dev>/device/driver -> ../../drivers/<driver> */
static void add_device(const char *dev, const char *driver)
{
	char path[PATH_MAX], target[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", root, dev);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/%s/device", root, dev);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/%s/device/driver", root, dev);
	snprintf(target, sizeof(target), "../../../bus/pci/drivers/%s", driver);
	assert_int_equal(symlink(target, path), 0);
}

static int setup(void **state)
{
	(void)state;
	const char *tmp = getenv("TMPDIR");
	snprintf(root, sizeof(root), "%.200s/hp-ib-XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(root));
	setenv("HP_SYSFS_INFINIBAND", root, 1);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
	unsetenv("HP_SYSFS_INFINIBAND");
	return 0;
}

static void test_default_provider(void **state)
{
	(void)state;
	assert_string_equal(hp_fabric_default_provider(), "tcp"); /* none */
	add_device("mlx5_0", "mlx5_core");
	assert_string_equal(hp_fabric_default_provider(), "tcp");
	add_device("rdmap0s6", "efa");
	assert_string_equal(hp_fabric_default_provider(), "efa");
	setenv("HP_SYSFS_INFINIBAND", "/nonexistent/hp-ib", 1);
	assert_string_equal(hp_fabric_default_provider(), "tcp");
	setenv("HP_SYSFS_INFINIBAND", root, 1);
}

static const char *const ours[] = {
	"FI_OFI_RXM_BUFFER_SIZE", "FI_OFI_RXM_RX_SIZE", "FI_OFI_RXM_TX_SIZE",
	"FI_OFI_RXM_MSG_RX_SIZE", "FI_OFI_RXM_MSG_TX_SIZE", "FI_TCP_RX_SIZE",
	"FI_TCP_TX_SIZE", "FI_PROVIDER"};

static void test_env_set_only_where_unset(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++)
		unsetenv(ours[i]);
	/* the user's values (an empty one too) are never touched */
	setenv("FI_OFI_RXM_BUFFER_SIZE", "9000", 1);
	setenv("FI_TCP_TX_SIZE", "", 1);
	unsigned mask = hp_fabric_env_set();
	assert_string_equal(getenv("FI_OFI_RXM_BUFFER_SIZE"), "9000");
	assert_string_equal(getenv("FI_TCP_TX_SIZE"), "");
	assert_string_equal(getenv("FI_PROVIDER"), "tcp"); /* no efa device */
	assert_string_equal(getenv("FI_OFI_RXM_RX_SIZE"), "256");
	assert_string_equal(getenv("FI_TCP_RX_SIZE"), "256");
	hp_fabric_env_unset(mask);
	assert_string_equal(getenv("FI_OFI_RXM_BUFFER_SIZE"), "9000");
	assert_string_equal(getenv("FI_TCP_TX_SIZE"), "");
	for (size_t i = 1; i < sizeof(ours) / sizeof(ours[0]); i++)
		if (strcmp(ours[i], "FI_TCP_TX_SIZE") != 0)
			assert_null(getenv(ours[i]));
	/* nothing of the user's: our bounce-buffer size, efa where there is
	 * an efa device */
	unsetenv("FI_OFI_RXM_BUFFER_SIZE");
	add_device("efa_0", "efa");
	mask = hp_fabric_env_set();
	assert_string_equal(getenv("FI_OFI_RXM_BUFFER_SIZE"), "512");
	assert_string_equal(getenv("FI_PROVIDER"), "efa");
	hp_fabric_env_unset(mask);
	assert_null(getenv("FI_OFI_RXM_BUFFER_SIZE"));
	assert_null(getenv("FI_PROVIDER"));
	/* a user's FI_PROVIDER wins over the device */
	setenv("FI_PROVIDER", "verbs", 1);
	mask = hp_fabric_env_set();
	assert_string_equal(getenv("FI_PROVIDER"), "verbs");
	hp_fabric_env_unset(mask);
	assert_string_equal(getenv("FI_PROVIDER"), "verbs");
	unsetenv("FI_PROVIDER");
	unsetenv("FI_TCP_TX_SIZE");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_default_provider, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_env_set_only_where_unset,
						setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
