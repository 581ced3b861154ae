/* fail-once MARKER — prints "attempt N rank R" (N is
 * TORCHELASTIC_RESTART_COUNT); the first run of any rank creates MARKER
 * and exits 1, every later run (any rank, any attempt) exits 0. One marker
 * for the whole group, so a rank stopped before it ran cannot fail later. MARKER may also come from
 * $HP_MARKER. With $HP_TRACE_FILE set, also appends "worker rank R attempt
 * N" to it, so tests can check the order against pre/post-train scripts. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "helper.h"

int main(int argc, char **argv)
{
	const char *marker = argc > 1 ? argv[1] : getenv("HP_MARKER");
	if (!marker) {
		fprintf(stderr, "usage: fail-once MARKER (or $HP_MARKER)\n");
		return 99;
	}
	const char *rank = helper_env("RANK", "0");
	const char *attempt = helper_env("TORCHELASTIC_RESTART_COUNT", "?");
	helper_say("attempt %s rank %s", attempt, rank);

	const char *trace = getenv("HP_TRACE_FILE");
	if (trace) {
		int fd = open(trace, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
		if (fd >= 0) {
			char line[256];
			int n = snprintf(line, sizeof(line), "worker rank %s attempt %s\n",
					 rank, attempt);
			helper_write_all(fd, line, (size_t)n);
			close(fd);
		}
	}

	int fd = open(marker, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd >= 0) {
		close(fd);
		return 1;
	}
	return errno == EEXIST ? 0 : 99;
}
