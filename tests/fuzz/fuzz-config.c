/* fuzz-config — hp_config_parse, the command line and PET_* environment
 * parser. The input is cut at NUL bytes into strings: those of the form
 * PET_<NAME>=<value> become the environment, the others argv after
 * "hyperpodrun". Whatever the result, hp_config_fini must free it all; an
 * accepted configuration must satisfy what the agent relies on without
 * checking (a script, sane counts, -r/-t maps with known values) and an
 * error must come with its one-line reason. */
#include <string.h>

#include "fuzz.h"
#include "launcher/config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

#define MAX_STRINGS 64

static void check_spec(const struct hp_std_spec *s)
{
	FUZZ_CHECK(s->all >= HP_STD_NONE && s->all <= HP_STD_ALL);
	for (size_t i = 0; i < s->n; i++) {
		FUZZ_CHECK(s->values[i] >= HP_STD_NONE &&
			   s->values[i] <= HP_STD_ALL);
		FUZZ_CHECK(s->ranks[i] >= 0);
	}
}

static void check_ok(const struct hp_config *c)
{
	FUZZ_CHECK(c->script_argc >= 1 && c->script_argv != NULL);
	FUZZ_CHECK(c->script_argv[0] != NULL);
	FUZZ_CHECK(c->script_argv[c->script_argc] == NULL);
	FUZZ_CHECK(c->nnodes_min >= 1 && c->nnodes_min <= c->nnodes_max);
	FUZZ_CHECK(c->nproc_kind != HP_NPROC_NUMBER || c->nproc_per_node >= 1);
	FUZZ_CHECK(c->max_restarts >= 0);
	FUZZ_CHECK(c->rdzv_backend && c->role && c->master_addr);
	FUZZ_CHECK(c->mode_reason != NULL);
	check_spec(&c->redirects);
	check_spec(&c->tee);
	FUZZ_CHECK(!c->n_local_ranks_filter || c->local_ranks_filter);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* One NUL-terminated copy; the strings point into it. */
	char *buf = malloc(size + 1);
	memcpy(buf, data, size);
	buf[size] = '\0';
	char *argv[MAX_STRINGS + 2], *envp[MAX_STRINGS + 1];
	int argc = 0, envc = 0;
	argv[argc++] = "hyperpodrun";
	for (char *s = buf; s <= buf + size && argc + envc < MAX_STRINGS;
	     s += strlen(s) + 1) {
		if (strncmp(s, "PET_", 4) == 0 && strchr(s, '='))
			envp[envc++] = s;
		else
			argv[argc++] = s;
	}
	argv[argc] = NULL;
	envp[envc] = NULL;

	struct hp_config c;
	char err[256];
	memset(err, 0, sizeof(err));
	enum hp_parse_result r = hp_config_parse(&c, argc, argv, envp, err,
						 sizeof(err));
	switch (r) {
	case HP_PARSE_OK:
		check_ok(&c);
		break;
	case HP_PARSE_ERROR:
		FUZZ_CHECK(err[0] != '\0');
		FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
		break;
	case HP_PARSE_HELP:
	case HP_PARSE_VERSION:
		break;
	default:
		FUZZ_CHECK(!"unknown parse result");
	}
	hp_config_fini(&c);
	free(buf);
	return 0;
}
