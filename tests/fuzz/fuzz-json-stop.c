/* fuzz-json-stop — hp_json_parse_stop (the /stop body decoder) on
 * arbitrary bytes: an accepted body always yields a restart mode ("ipr"
 * by default); a 4xx comes with a JSON detail and leaves nothing to
 * free. */
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
	struct hp_stop_req r;
	char *detail = (char *)1;
	int rc = hp_json_parse_stop(body, size, &r, &detail);
	if (rc == 0) {
		FUZZ_CHECK(detail == NULL);
		FUZZ_CHECK(r.restart_mode != NULL);
		hp_stop_req_fini(&r);
	} else {
		FUZZ_CHECK(rc >= 400 && rc < 500);
		FUZZ_CHECK(detail != NULL);
		cJSON *j = cJSON_Parse(detail);
		FUZZ_CHECK(j != NULL);
		cJSON_Delete(j);
		free(detail);
	}
	free(body);
	return 0;
}
