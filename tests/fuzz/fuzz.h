/* fuzz.h — what the libFuzzer targets share: the entry points' prototypes
 * (-Wmissing-prototypes wants them) and a one-time set-up that silences the
 * agent's logger, so a fuzzer spends its time in the parser and not in
 * stderr. A finding is a sanitizer report or a failed FUZZ_CHECK, which
 * aborts with the broken invariant named. */
#ifndef HP_FUZZ_H
#define HP_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_CHECK(cond)                                                       \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: invariant broken: %s\n",       \
				__FILE__, __LINE__, #cond);                    \
			abort();                                               \
		}                                                              \
	} while (0)

static inline void fuzz_quiet(void)
{
	/* HP_FUZZ_LOG=1 keeps the agent's log lines, to read one finding. */
	const char *v = getenv("HP_FUZZ_LOG");
	if (!v || *v != '1')
		hp_log_level = HP_LOG_OFF;
}

#endif
