/* fuzz-json-fabric-join — hp_json_parse_fabric_join (the POST /fabric/join
 * body decoder of the fabric peer table) on arbitrary bytes: an accepted
 * body always yields a name and an address (size -1 when absent); a 4xx
 * comes with a JSON detail and leaves nothing to free. */
#include <cjson/cJSON.h>
#include <string.h>

#include "fuzz.h"
#include "server/server.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *body = malloc(size ? size : 1);
	memcpy(body, data, size);
	struct hp_fabric_join j;
	char *detail = (char *)1;
	int rc = hp_json_parse_fabric_join(body, size, &j, &detail);
	if (rc == 0) {
		FUZZ_CHECK(detail == NULL);
		FUZZ_CHECK(j.name != NULL && j.http != NULL);
		hp_fabric_join_fini(&j);
	} else {
		FUZZ_CHECK(rc >= 400 && rc < 500);
		FUZZ_CHECK(detail != NULL);
		FUZZ_CHECK(j.name == NULL && j.http == NULL);
		cJSON *v = cJSON_Parse(detail);
		FUZZ_CHECK(v != NULL);
		cJSON_Delete(v);
		free(detail);
	}
	free(body);
	return 0;
}
