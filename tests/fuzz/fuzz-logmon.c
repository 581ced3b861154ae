/* fuzz-logmon — the operator's log_monitoring_configuration and the worker
 * lines it is evaluated on (agent/logmon.c). Both are input the agent does
 * not control: the rules (PCRE2 patterns included) come over HTTP, the
 * lines from the training script. The input is the configuration JSON, a
 * NUL, then worker lines separated by '\n'; a line's first byte moves the
 * clock forward ((byte & 63) * 500 ms) and the rest is the line. Checked:
 * configure gives -EINVAL or a count within HP_LOGMON_MAX_RULES; states
 * and trips are consistent (a trip names a Log* reason and disarms); and no
 * line takes long to evaluate, whatever the pattern (the match limits). */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "agent/logmon.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

struct trips {
	int n;
};

static void on_trip(void *ud, enum hp_logmon_state state, const char *rule,
		    const char *reason, const char *message)
{
	struct trips *t = ud;
	FUZZ_CHECK(state == HP_LOGMON_SLOW || state == HP_LOGMON_HANGING ||
		   state == HP_LOGMON_FAULTED);
	FUZZ_CHECK(rule && reason && message);
	FUZZ_CHECK(strncmp(reason, "Log", 3) == 0);
	t->n++;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1);
	memcpy(buf, data, size);
	buf[size] = '\0';
	size_t cfg_len = strlen(buf);
	struct trips t = {0};
	struct hp_logmon *m = hp_logmon_new(NULL, on_trip, &t);
	int n = hp_logmon_configure(m, buf);
	FUZZ_CHECK(n == -EINVAL || (n >= 0 && n <= HP_LOGMON_MAX_RULES));
	FUZZ_CHECK(hp_logmon_rule_count(m) == (n < 0 ? 0 : (size_t)n));
	uint64_t now = 1000;
	hp_logmon_arm_at(m, now);
	FUZZ_CHECK(hp_logmon_armed(m) == (n > 0));
	if (cfg_len < size) {
		char *p = buf + cfg_len + 1, *end = buf + size;
		while (p < end) {
			char *nl = memchr(p, '\n', (size_t)(end - p));
			size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
			if (len > 0) {
				now += (uint64_t)((unsigned char)p[0] & 63) * 500;
				bool armed = hp_logmon_armed(m);
				int before = t.n;
				double t0 = now_s();
				enum hp_logmon_state s =
					hp_logmon_line_at(m, p + 1, len - 1, now);
				/* generous for ASan on a loaded machine; the
				 * match limits keep it in milliseconds */
				FUZZ_CHECK(now_s() - t0 < 2.0);
				FUZZ_CHECK(s <= HP_LOGMON_FAULTED);
				if (!armed)
					FUZZ_CHECK(s == HP_LOGMON_WAITING &&
						   t.n == before);
				if (t.n > before)
					FUZZ_CHECK(!hp_logmon_armed(m));
				uint64_t next = hp_logmon_next_deadline(m);
				if (next != UINT64_MAX && next > now)
					hp_logmon_tick_at(m, next);
			}
			p += len + 1;
		}
	}
	hp_logmon_free(m);
	free(buf);
	return 0;
}
