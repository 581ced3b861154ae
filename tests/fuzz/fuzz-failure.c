/* fuzz-failure — torch's error.json as a worker leaves it (@record), read
 * by hp_failure_load and shown by hp_failure_summary/hp_failure_text. A
 * worker writes that file, so its bytes are not the agent's to trust: the
 * input is written as the error file of a failed rank (exit code or signal
 * from the first byte), loaded, and the ChildFailedError summary built;
 * the summary must name the rank and its error file when it parsed. */
#include <string.h>
#include <unistd.h>

#include "agent/failure.h"
#include "fuzz.h"

static char path[96];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	const char *tmp = getenv("TMPDIR");
	snprintf(path, sizeof(path), "%s/hp-fuzz-failure-XXXXXX",
		 tmp && strlen(tmp) < 48 ? tmp : "/tmp");
	int fd = mkstemp(path);
	if (fd < 0)
		abort();
	close(fd);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		abort();
	fwrite(data, 1, size, f);
	fclose(f);

	int code = size ? (data[0] & 0x80 ? -(data[0] & 0x1f) : data[0]) : 1;
	struct hp_failure fs[2] = {
		{.rank = 3, .local_rank = 1, .pid = 1234, .exitcode = code,
		 .timestamp = 1700000000},
		{.rank = 2, .local_rank = 0, .pid = 1233, .exitcode = -9,
		 .timestamp = 1700000001},
	};
	hp_failure_load(&fs[0], path);
	char buf[256];
	FUZZ_CHECK(hp_failure_text(&fs[0], buf, sizeof(buf)) != NULL);
	char *s = hp_failure_summary("train.py", fs, 2, "host");
	FUZZ_CHECK(s != NULL);
	FUZZ_CHECK(strstr(s, "rank      : 3 (local_rank: 1)") != NULL);
	if (fs[0].error_file)
		FUZZ_CHECK(strstr(s, path) != NULL);
	free(s);
	hp_failure_fini(&fs[0]);
	hp_failure_fini(&fs[1]);
	return 0;
}
