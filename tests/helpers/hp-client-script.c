/* hp-client-script — libhyperpod runs a fixed script against the agent at
 * $HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH (local rank from $LOCAL_RANK,
 * client id argv[1]), so test_hyperpod_worker.py can compare its bytes
 * with the Python client's for the same calls. Prints the released RANK. */
#include <stdio.h>
#include <string.h>

#include "hyperpod.h"

int main(int argc, char **argv)
{
	struct hp_client *c;
	struct hp_rank_env *env;
	const char *keys[] = {"PPRank", "k\xc3\xa9"};
	const char *vals[] = {"2", "v"};
	int rc = hp_client_connect(NULL, -1, argc > 1 ? argv[1] : NULL, &c);
	if (rc < 0) {
		fprintf(stderr, "connect: %s\n", strerror(-rc));
		return 1;
	}
	if ((rc = hp_client_report_fault(c, 7, "OOM",
					 "line1\n\"q\" \\ \t\x01\x7f "
					 "\xc3\xa9 \xf0\x9f\x98\x80 </a>",
					 NULL)) < 0 ||
	    (rc = hp_client_report_fault(c, 0, NULL, NULL,
					 "process_level_restart")) < 0 ||
	    (rc = hp_client_send_data(c, 12, "{\"step\": 3}")) < 0 ||
	    (rc = hp_client_send_labels(c, keys, vals, 2)) < 0 ||
	    (rc = hp_client_wait_barrier(c, -1, &env)) < 0) {
		fprintf(stderr, "script: %s\n", strerror(-rc));
		hp_client_free(c);
		return 1;
	}
	printf("RANK=%s\n", hp_rank_env_get(env, "RANK"));
	hp_rank_env_free(env);
	hp_client_free(c);
	return 0;
}
