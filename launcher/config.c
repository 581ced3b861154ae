/* config.c — argv + PET_* environment -> struct hp_config, the torchrun way.
 * Owns the option table, argparse's parsing rules (abbreviations, "=value",
 * "--", REMAINDER after the script) and every validation of a value. It
 * must stay pure: no I/O, no exit(), no getenv() (envp is an argument), so
 * that every flag is unit-tested. Decisions made here on purpose:
 * - An empty PET_<NAME> counts as unset (torchrun would crash on it).
 * - --standalone keeps rdzv_id "none" unless given; the launcher picks a
 *   unique id (torchrun uses a uuid4), and node_rank is forced to 0.
 * - HyperPod flags read PET_<NAME> too, as if declared with torchrun's env
 *   action; --run-path wins over -m, as in torchrun. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "base/xalloc.h"

enum opt_id {
	O_NNODES,
	O_NPROC_PER_NODE,
	O_RDZV_BACKEND,
	O_RDZV_ENDPOINT,
	O_RDZV_ID,
	O_RDZV_CONF,
	O_STANDALONE,
	O_MAX_RESTARTS,
	O_MONITOR_INTERVAL,
	O_START_METHOD,
	O_ROLE,
	O_MODULE,
	O_NO_PYTHON,
	O_RUN_PATH,
	O_LOG_DIR,
	O_REDIRECTS,
	O_TEE,
	O_LOCAL_RANKS_FILTER,
	O_LOGS_SPECS,
	O_EVENT_LOG_HANDLER,
	O_NUMA_BINDING,
	O_SIGNALS_TO_HANDLE,
	O_DUP_STDOUT_FILTERS,
	O_DUP_STDERR_FILTERS,
	O_VIRTUAL_LOCAL_RANK,
	O_NODE_RANK,
	O_MASTER_ADDR,
	O_MASTER_PORT,
	O_LOCAL_ADDR,
	O_SHUTDOWN_SIGNAL,
	O_SHUTDOWN_TIMEOUT,
	O_SERVER_HOST,
	O_SERVER_PORT,
	O_SERVER_LOG_LEVEL,
	O_SERVER_SHUTDOWN_TIMEOUT,
	O_PRE_TRAIN_SCRIPT,
	O_PRE_TRAIN_ARGS,
	O_POST_TRAIN_SCRIPT,
	O_POST_TRAIN_ARGS,
	O_INPROCESS_RESTART,
	O_INPROCESS_TIMEOUT,
	O_HELP,
	O_VERSION,
	O_COUNT,
};

/* One row per option. 'name' is torchrun's dest (underscore spelling); the
 * dash spelling and PET_<NAME> are derived from it. 'def' NULL = None. */
static const struct opt {
	const char *name;
	char short_name;
	bool flag;    /* takes no value */
	bool no_env;  /* never read from PET_<NAME> */
	const char *def;
} opts[O_COUNT] = {
	[O_NNODES] = {"nnodes", 0, false, false, "1:1"},
	[O_NPROC_PER_NODE] = {"nproc_per_node", 0, false, false, "1"},
	[O_RDZV_BACKEND] = {"rdzv_backend", 0, false, false, "static"},
	[O_RDZV_ENDPOINT] = {"rdzv_endpoint", 0, false, false, ""},
	[O_RDZV_ID] = {"rdzv_id", 0, false, false, "none"},
	[O_RDZV_CONF] = {"rdzv_conf", 0, false, false, ""},
	[O_STANDALONE] = {"standalone", 0, true, false, NULL},
	[O_MAX_RESTARTS] = {"max_restarts", 0, false, false, "0"},
	[O_MONITOR_INTERVAL] = {"monitor_interval", 0, false, false, "5"},
	[O_START_METHOD] = {"start_method", 0, false, false, "spawn"},
	[O_ROLE] = {"role", 0, false, false, "default"},
	[O_MODULE] = {"module", 'm', true, false, NULL},
	[O_NO_PYTHON] = {"no_python", 0, true, false, NULL},
	[O_RUN_PATH] = {"run_path", 0, true, false, NULL},
	[O_LOG_DIR] = {"log_dir", 0, false, false, NULL},
	[O_REDIRECTS] = {"redirects", 'r', false, false, "0"},
	[O_TEE] = {"tee", 't', false, false, "0"},
	[O_LOCAL_RANKS_FILTER] = {"local_ranks_filter", 0, false, false, ""},
	/* torch 2.x; --logs-specs and --numa-binding have no env action */
	[O_LOGS_SPECS] = {"logs_specs", 0, false, true, NULL},
	[O_EVENT_LOG_HANDLER] = {"event_log_handler", 0, false, false, "null"},
	[O_NUMA_BINDING] = {"numa_binding", 0, false, true, NULL},
	[O_SIGNALS_TO_HANDLE] = {"signals_to_handle", 0, false, false,
				 "SIGTERM,SIGINT,SIGHUP,SIGQUIT"},
	[O_DUP_STDOUT_FILTERS] = {"duplicate_stdout_filters", 0, false, false,
				  ""},
	[O_DUP_STDERR_FILTERS] = {"duplicate_stderr_filters", 0, false, false,
				  ""},
	[O_VIRTUAL_LOCAL_RANK] = {"virtual_local_rank", 0, true, false, NULL},
	[O_NODE_RANK] = {"node_rank", 0, false, false, "0"},
	[O_MASTER_ADDR] = {"master_addr", 0, false, false, "127.0.0.1"},
	[O_MASTER_PORT] = {"master_port", 0, false, false, "29500"},
	[O_LOCAL_ADDR] = {"local_addr", 0, false, false, NULL},
	[O_SHUTDOWN_SIGNAL] = {"shutdown_signal", 0, false, false, "SIGKILL"},
	[O_SHUTDOWN_TIMEOUT] = {"shutdown_timeout", 0, false, false, "15"},
	[O_SERVER_HOST] = {"server_host", 0, false, false, "0.0.0.0"},
	[O_SERVER_PORT] = {"server_port", 0, false, false, "8080"},
	[O_SERVER_LOG_LEVEL] = {"server_log_level", 0, false, false, "info"},
	[O_SERVER_SHUTDOWN_TIMEOUT] = {"server_shutdown_timeout", 0, false,
				       false, "300"},
	[O_PRE_TRAIN_SCRIPT] = {"pre_train_script", 0, false, false, NULL},
	[O_PRE_TRAIN_ARGS] = {"pre_train_args", 0, false, false, NULL},
	[O_POST_TRAIN_SCRIPT] = {"post_train_script", 0, false, false, NULL},
	[O_POST_TRAIN_ARGS] = {"post_train_args", 0, false, false, NULL},
	[O_INPROCESS_RESTART] = {"inprocess_restart", 0, true, false, NULL},
	[O_INPROCESS_TIMEOUT] = {"inprocess_timeout", 0, false, false, NULL},
	[O_HELP] = {"help", 'h', true, true, NULL},
	[O_VERSION] = {"version", 0, true, true, NULL},
};

enum src { SRC_DEFAULT = 0, SRC_ENV, SRC_CLI };

/* What the command line and environment said, before conversion. The
 * strings are borrowed from argv/envp/opts. */
struct raw {
	const char *val[O_COUNT];
	enum src src[O_COUNT];
	bool underscore[O_COUNT]; /* the user spelled it --foo_bar */
	bool short_used[O_COUNT]; /* the user spelled it -r */
};

/* Error reporting: every message is one line in err. */
static enum hp_parse_result fail(char *err, size_t errlen, const char *fmt,
				 ...) HP_PRINTF(3, 4);
static enum hp_parse_result fail(char *err, size_t errlen, const char *fmt,
				 ...)
{
	if (errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return HP_PARSE_ERROR;
}

/* "--nproc-per-node" or "--nproc_per_node", as the user wrote it; "-r/--
 * redirects" for a short spelling, as argparse names it. */
static void flag_name(const struct raw *raw, enum opt_id id, char *buf,
		      size_t len)
{
	const struct opt *o = &opts[id];
	size_t n = 0;
	if (raw->short_used[id])
		n = (size_t)snprintf(buf, len, "-%c/", o->short_name);
	if (n >= len)
		return;
	snprintf(buf + n, len - n, "--%s", o->name);
	if (!raw->underscore[id])
		for (char *p = buf + n + 2; *p; p++)
			if (*p == '_')
				*p = '-';
}

/* "argument --x: invalid value 'v' (expected ...)" naming where the value
 * came from when it was not the command line. */
static enum hp_parse_result bad_value(char *err, size_t errlen,
				      const struct raw *raw, enum opt_id id,
				      const char *expected)
{
	char name[64], pet[64];
	flag_name(raw, id, name, sizeof(name));
	pet[0] = '\0';
	if (raw->src[id] == SRC_ENV) {
		size_t n = (size_t)snprintf(pet, sizeof(pet), " from PET_");
		for (const char *p = opts[id].name; *p && n + 1 < sizeof(pet);
		     p++)
			pet[n++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
		pet[n] = '\0';
	}
	return fail(err, errlen, "argument %s: invalid value '%s'%s (expected %s)",
		    name, raw->val[id], pet, expected);
}

/* --- argparse's notion of "is this an option?" ------------------------- */

static bool is_negative_number(const char *s)
{
	/* argparse: '^-\d+$|^-\d*\.\d+$' */
	if (s[0] != '-' || !s[1])
		return false;
	const char *p = s + 1;
	while (*p >= '0' && *p <= '9')
		p++;
	if (!*p)
		return true;
	if (*p != '.')
		return false;
	const char *frac = ++p;
	while (*p >= '0' && *p <= '9')
		p++;
	return !*p && p > frac;
}

/* Compares a user's long name (no leading dashes, 'len' bytes, '-' and '_'
 * interchangeable) with an option name; prefix allows abbreviations. */
static bool name_matches(const char *user, size_t len, const char *name,
			 bool prefix)
{
	size_t i;
	for (i = 0; i < len; i++) {
		char u = user[i] == '-' ? '_' : user[i];
		if (!name[i] || u != name[i])
			return false;
	}
	return prefix || !name[i];
}

/* Finds the option for "--name" (len bytes of name). Returns O_COUNT when
 * unknown, O_COUNT + 1 when ambiguous (err filled). */
static enum opt_id find_long(const char *name, size_t len, const char *arg,
			     char *err, size_t errlen)
{
	for (int i = 0; i < O_COUNT; i++)
		if (name_matches(name, len, opts[i].name, false))
			return (enum opt_id)i;
	/* argparse's allow_abbrev: a unique prefix names the option. */
	int found = -1, n = 0;
	char list[512];
	size_t used = 0;
	list[0] = '\0';
	for (int i = 0; i < O_COUNT; i++) {
		if (len == 0 || !name_matches(name, len, opts[i].name, true))
			continue;
		found = i;
		n++;
		if (used < sizeof(list)) {
			int w = snprintf(list + used, sizeof(list) - used,
					 "%s--%s", n > 1 ? ", " : "",
					 opts[i].name);
			used += w > 0 ? (size_t)w : 0;
		}
	}
	if (n == 1)
		return (enum opt_id)found;
	if (n > 1) {
		int alen = (int)(len + 2);
		for (char *p = list; *p; p++)
			if (*p == '_')
				*p = '-';
		fail(err, errlen, "ambiguous option: %.*s could match %s", alen,
		     arg, list);
		return (enum opt_id)(O_COUNT + 1);
	}
	return O_COUNT;
}

/* Does 'arg' start an option (true) or is it a positional / a value that
 * begins with '-' (false)? Mirrors argparse's _parse_optional: "-" and
 * negative numbers are positional, and so is anything with a space in it
 * unless it is "--known-option=value with spaces". */
static bool looks_like_option(const char *arg)
{
	if (arg[0] != '-' || !arg[1])
		return false;
	if (arg[1] != '-' && is_negative_number(arg))
		return false;
	if (!strchr(arg, ' '))
		return true;
	const char *eq = strchr(arg, '=');
	if (arg[1] != '-' || !eq)
		return false;
	return find_long(arg + 2, (size_t)(eq - arg - 2), arg, NULL, 0) <
	       O_COUNT;
}

/* Parses the options before the training script into raw; *script is the
 * argv index of the script, or argc when there is none. */
static enum hp_parse_result parse_argv(struct raw *raw, int argc,
				       char *const argv[], int *script,
				       char *err, size_t errlen)
{
	int i = 1;
	while (i < argc) {
		const char *arg = argv[i];
		if (strcmp(arg, "--") == 0) {
			i++;
			break;
		}
		if (!looks_like_option(arg))
			break;

		enum opt_id id = O_COUNT;
		const char *value = NULL; /* explicit "=value" or "-rVALUE" */
		bool underscore = false, short_used = false;
		if (arg[1] == '-') {
			const char *name = arg + 2;
			const char *eq = strchr(name, '=');
			size_t len = eq ? (size_t)(eq - name) : strlen(name);
			id = find_long(name, len, arg, err, errlen);
			if (id == O_COUNT + 1)
				return HP_PARSE_ERROR;
			if (eq)
				value = eq + 1;
			underscore = memchr(name, '_', len) != NULL;
		} else {
			for (int k = 0; k < O_COUNT; k++)
				if (opts[k].short_name == arg[1])
					id = (enum opt_id)k;
			short_used = true;
			if (id != O_COUNT && arg[2])
				value = arg[2] == '=' ? arg + 3 : arg + 2;
			if (id != O_COUNT && opts[id].flag && arg[2])
				id = O_COUNT; /* "-mx": not an option we know */
		}
		if (id == O_COUNT)
			return fail(err, errlen, "unrecognized arguments: %s",
				    arg);
		raw->underscore[id] = underscore;
		raw->short_used[id] = short_used;

		if (id == O_HELP)
			return HP_PARSE_HELP;
		if (id == O_VERSION)
			return HP_PARSE_VERSION;

		if (opts[id].flag) {
			if (value) {
				char name[64];
				flag_name(raw, id, name, sizeof(name));
				return fail(err, errlen,
					    "argument %s: ignored explicit "
					    "argument '%s'",
					    name, value);
			}
			value = "1";
		} else if (!value) {
			if (i + 1 >= argc || looks_like_option(argv[i + 1])) {
				char name[64];
				flag_name(raw, id, name, sizeof(name));
				return fail(err, errlen,
					    "argument %s: expected one argument",
					    name);
			}
			value = argv[++i];
		}
		raw->val[id] = value;
		raw->src[id] = SRC_CLI;
		i++;
	}
	*script = i;
	return HP_PARSE_OK;
}

/* The value of PET_<NAME> in envp, or NULL when unset or empty. */
static const char *pet_lookup(char *const envp[], const char *name)
{
	if (!envp)
		return NULL;
	for (size_t e = 0; envp[e]; e++) {
		const char *s = envp[e];
		if (strncmp(s, "PET_", 4) != 0)
			continue;
		s += 4;
		const char *n = name;
		while (*n && *s && *s == (*n >= 'a' && *n <= 'z' ? *n - 32 : *n)) {
			s++;
			n++;
		}
		if (!*n && *s == '=')
			return s[1] ? s + 1 : NULL;
	}
	return NULL;
}

static void fill_from_env(struct raw *raw, char *const envp[])
{
	for (int i = 0; i < O_COUNT; i++) {
		if (raw->src[i] == SRC_CLI)
			continue;
		const char *v = opts[i].no_env ? NULL
					       : pet_lookup(envp, opts[i].name);
		if (v) {
			raw->val[i] = v;
			raw->src[i] = SRC_ENV;
		} else {
			raw->val[i] = opts[i].def;
		}
	}
}

/* --- value conversions: true on success -------------------------------- */

static bool to_long(const char *s, long lo, long hi, long *out)
{
	if (!s || !*s)
		return false;
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (end == s || errno)
		return false;
	while (*end == ' ' || *end == '\t')
		end++;
	if (*end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

static bool to_int(const char *s, int lo, int hi, int *out)
{
	long v;
	if (!to_long(s, lo, hi, &v))
		return false;
	*out = (int)v;
	return true;
}

static bool to_double(const char *s, double *out)
{
	if (!s || !*s)
		return false;
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno || !isfinite(v))
		return false;
	while (*end == ' ' || *end == '\t')
		end++;
	if (*end)
		return false;
	*out = v;
	return true;
}

/* check_env flags: a CLI flag is "1"; PET_<NAME> must be an int. */
static bool to_flag(const char *s, bool *out)
{
	long v = 0;
	if (s && !to_long(s, LONG_MIN, LONG_MAX, &v))
		return false;
	*out = v != 0;
	return true;
}

static bool parse_nnodes(const char *s, int *min, int *max)
{
	const char *colon = strchr(s, ':');
	if (!colon)
		return to_int(s, 1, INT_MAX, min) && (*max = *min, true);
	if (strchr(colon + 1, ':'))
		return false;
	char lo[32];
	size_t n = (size_t)(colon - s);
	if (n >= sizeof(lo))
		return false;
	memcpy(lo, s, n);
	lo[n] = '\0';
	return to_int(lo, 1, INT_MAX, min) &&
	       to_int(colon + 1, 1, INT_MAX, max) && *min <= *max;
}

static bool std_value(const char *s, size_t n, enum hp_std *out)
{
	if (n != 1 || s[0] < '0' || s[0] > '3')
		return false;
	*out = (enum hp_std)(s[0] - '0');
	return true;
}

/* torchrun's Std.from_str: "0".."3", or "rank:v,rank:v" (later wins). */
static bool parse_std(const char *s, struct hp_std_spec *spec)
{
	memset(spec, 0, sizeof(*spec));
	if (std_value(s, strlen(s), &spec->all))
		return true;
	spec->all = HP_STD_NONE;
	size_t pieces = 1;
	for (const char *p = s; *p; p++)
		pieces += *p == ',';
	spec->ranks = xcalloc(pieces, sizeof(*spec->ranks));
	spec->values = xcalloc(pieces, sizeof(*spec->values));
	const char *p = s;
	for (;;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *colon = memchr(p, ':', len);
		if (!colon || colon == p)
			return false;
		long rank = 0;
		for (const char *d = p; d < colon; d++) {
			if (*d < '0' || *d > '9' || rank > HP_MAX_LOCAL_WORKERS)
				return false;
			rank = rank * 10 + (*d - '0');
		}
		enum hp_std v;
		if (!std_value(colon + 1, len - (size_t)(colon + 1 - p), &v))
			return false;
		size_t k = 0;
		while (k < spec->n && spec->ranks[k] != (int)rank)
			k++;
		spec->ranks[k] = (int)rank;
		spec->values[k] = v;
		if (k == spec->n)
			spec->n++;
		if (!end)
			return true;
		p = end + 1;
	}
}

static bool parse_ranks_filter(const char *s, struct hp_config *cfg)
{
	if (!*s)
		return true;
	size_t pieces = 1;
	for (const char *p = s; *p; p++)
		pieces += *p == ',';
	cfg->local_ranks_filter = xcalloc(pieces, sizeof(int));
	char buf[32];
	const char *p = s;
	for (;;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		int rank;
		if (len >= sizeof(buf))
			return false;
		memcpy(buf, p, len);
		buf[len] = '\0';
		if (!to_int(buf, 0, INT_MAX, &rank))
			return false;
		size_t k = 0;
		while (k < cfg->n_local_ranks_filter &&
		       cfg->local_ranks_filter[k] != rank)
			k++;
		if (k == cfg->n_local_ranks_filter)
			cfg->local_ranks_filter[cfg->n_local_ranks_filter++] =
				rank;
		if (!end)
			return true;
		p = end + 1;
	}
}

/* torchrun's _parse_rendezvous_config: "" or "k=v,k=v", keys and values
 * non-empty after trimming. */
static bool valid_rdzv_conf(const char *s)
{
	while (*s == ' ')
		s++;
	if (!*s)
		return true;
	for (;;) {
		const char *end = strchr(s, ',');
		size_t len = end ? (size_t)(end - s) : strlen(s);
		const char *eq = memchr(s, '=', len);
		if (!eq)
			return false;
		bool key = false, val = false;
		for (const char *p = s; p < eq; p++)
			key |= *p != ' ' && *p != '\t';
		for (const char *p = eq + 1; p < s + len; p++)
			val |= *p != ' ' && *p != '\t';
		if (!key || !val)
			return false;
		if (!end)
			return true;
		s = end + 1;
	}
}

static bool one_of(const char *s, const char *const *choices)
{
	for (; *choices; choices++)
		if (strcmp(s, *choices) == 0)
			return true;
	return false;
}

static char *dup_opt(const struct raw *raw, enum opt_id id)
{
	return xstrdup_or_null(raw->val[id]);
}

/* The signal number named "SIGTERM" (or "TERM"), 0 when unknown. */
static int signal_by_name(const char *s, size_t len)
{
	char want[32];
	if (len >= 3 && strncmp(s, "SIG", 3) == 0) {
		s += 3;
		len -= 3;
	}
	if (!len || len + 4 > sizeof(want))
		return 0;
	snprintf(want, sizeof(want), "SIG%.*s", (int)len, s);
	for (int sig = 1; sig < 64; sig++)
		if (strcmp(hp_signal_name(sig), want) == 0)
			return sig;
	return 0;
}

/* Appends "--flag (why)" to the accepted-but-inert note. */
static void note_flag(struct hp_config *cfg, const struct raw *raw,
		      enum opt_id id, const char *why)
{
	char name[64];
	flag_name(raw, id, name, sizeof(name));
	char *old = cfg->accepted_note;
	cfg->accepted_note = xasprintf("%s%s%s %s", old ? old : "",
				       old ? "; " : "", name, why);
	free(old);
}

/* torch 2.x's flags. torchrun validates --numa-binding's choices and
 * nothing else (an unknown signal name is a warning there; an unknown
 * --logs-specs or event handler fails later in Python, at a plugin
 * lookup we cannot do), so the rest parse as given. */
static enum hp_parse_result convert_torch2(struct hp_config *cfg,
					   const struct raw *raw, char *err,
					   size_t errlen)
{
	static const char *const numa[] = {"node", "socket", "exclusive",
					   "core-complex", NULL};
	const char *v = raw->val[O_NUMA_BINDING];
	if (v && !one_of(v, numa))
		return bad_value(err, errlen, raw, O_NUMA_BINDING,
				 "node, socket, exclusive or core-complex");
	cfg->numa_binding = dup_opt(raw, O_NUMA_BINDING);
	cfg->event_log_handler = dup_opt(raw, O_EVENT_LOG_HANDLER);

	/* a comma list of names; torch skips what it cannot register */
	const char *s = raw->val[O_SIGNALS_TO_HANDLE];
	char unknown[128] = "";
	for (;;) {
		const char *end = strchr(s, ',');
		size_t len = end ? (size_t)(end - s) : strlen(s);
		while (len && (*s == ' ' || *s == '\t')) {
			s++;
			len--;
		}
		while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
			len--;
		int sig = signal_by_name(s, len);
		if (sig)
			cfg->signals_to_handle |= 1ull << sig;
		else if (len && strlen(unknown) + len + 3 < sizeof(unknown))
			snprintf(unknown + strlen(unknown),
				 sizeof(unknown) - strlen(unknown), "%s%.*s",
				 unknown[0] ? ", " : "", (int)len, s);
		if (!end)
			break;
		s = end + 1;
	}

	/* what is accepted without effect, said once at start-up */
	if (raw->val[O_LOGS_SPECS])
		note_flag(cfg, raw, O_LOGS_SPECS,
			  "(a Python entry point: the default log layout is "
			  "used)");
	if (cfg->numa_binding)
		note_flag(cfg, raw, O_NUMA_BINDING,
			  "(not applied: workers keep the agent's CPU "
			  "affinity)");
	if (strcmp(cfg->event_log_handler, "null") != 0)
		note_flag(cfg, raw, O_EVENT_LOG_HANDLER,
			  "(torch's event handlers are Python; hyperpodrun logs "
			  "its own transitions)");
	if (*raw->val[O_DUP_STDOUT_FILTERS])
		note_flag(cfg, raw, O_DUP_STDOUT_FILTERS, "(ignored)");
	if (*raw->val[O_DUP_STDERR_FILTERS])
		note_flag(cfg, raw, O_DUP_STDERR_FILTERS, "(ignored)");
	if (unknown[0]) {
		char *why = xasprintf("(unknown signal names skipped: %s)",
				      unknown);
		note_flag(cfg, raw, O_SIGNALS_TO_HANDLE, why);
		free(why);
	}
	return HP_PARSE_OK;
}

/* Converts every raw value into cfg, failing on the first bad one. */
static enum hp_parse_result convert(struct hp_config *cfg,
				    const struct raw *raw, char *err,
				    size_t errlen)
{
	static const char *const backends[] = {"static", "c10d", "hyperpod",
					       NULL};
	static const char *const methods[] = {"spawn", "fork", "forkserver",
					      NULL};
	const char *v;

	if (!parse_nnodes(raw->val[O_NNODES], &cfg->nnodes_min,
			  &cfg->nnodes_max))
		return bad_value(err, errlen, raw, O_NNODES,
				 "N or MIN:MAX with 1 <= MIN <= MAX");

	v = raw->val[O_NPROC_PER_NODE];
	if (strcmp(v, "gpu") == 0) {
		cfg->nproc_kind = HP_NPROC_GPU;
	} else if (strcmp(v, "cpu") == 0) {
		cfg->nproc_kind = HP_NPROC_CPU;
	} else if (strcmp(v, "auto") == 0) {
		cfg->nproc_kind = HP_NPROC_AUTO;
	} else {
		long n;
		cfg->nproc_kind = HP_NPROC_NUMBER;
		if (!to_long(v, LONG_MIN, LONG_MAX, &n))
			return bad_value(err, errlen, raw, O_NPROC_PER_NODE,
					 "an int, gpu, cpu or auto");
		if (n < 1 || n > HP_MAX_LOCAL_WORKERS) {
			char what[64];
			snprintf(what, sizeof(what),
				 "an int from 1 to %d, gpu, cpu or auto",
				 HP_MAX_LOCAL_WORKERS);
			return bad_value(err, errlen, raw, O_NPROC_PER_NODE,
					 what);
		}
		cfg->nproc_per_node = (int)n;
	}

	for (int id = 0; id < O_COUNT; id++) {
		bool *flag = NULL;
		switch (id) {
		case O_STANDALONE: flag = &cfg->standalone; break;
		case O_MODULE: flag = &cfg->module; break;
		case O_NO_PYTHON: flag = &cfg->no_python; break;
		case O_RUN_PATH: flag = &cfg->run_path; break;
		case O_INPROCESS_RESTART: flag = &cfg->inprocess_restart; break;
		case O_VIRTUAL_LOCAL_RANK: flag = &cfg->virtual_local_rank; break;
		default: continue;
		}
		if (!to_flag(raw->val[id], flag))
			return bad_value(err, errlen, raw, (enum opt_id)id,
					 "an int: 0 off, else on");
	}

	if (!cfg->standalone && !one_of(raw->val[O_RDZV_BACKEND], backends))
		return bad_value(err, errlen, raw, O_RDZV_BACKEND,
				 "static, c10d or hyperpod");
	cfg->rdzv_backend = dup_opt(raw, O_RDZV_BACKEND);
	cfg->rdzv_endpoint = dup_opt(raw, O_RDZV_ENDPOINT);
	cfg->rdzv_id = dup_opt(raw, O_RDZV_ID);
	if (!valid_rdzv_conf(raw->val[O_RDZV_CONF]))
		return bad_value(err, errlen, raw, O_RDZV_CONF,
				 "KEY=VALUE,KEY=VALUE,...");
	cfg->rdzv_conf = dup_opt(raw, O_RDZV_CONF);

	if (!to_int(raw->val[O_MAX_RESTARTS], 0, INT_MAX, &cfg->max_restarts))
		return bad_value(err, errlen, raw, O_MAX_RESTARTS,
				 "an int >= 0");
	if (!to_double(raw->val[O_MONITOR_INTERVAL], &cfg->monitor_interval) ||
	    cfg->monitor_interval < 0)
		return bad_value(err, errlen, raw, O_MONITOR_INTERVAL,
				 "seconds >= 0");
	if (!one_of(raw->val[O_START_METHOD], methods))
		return bad_value(err, errlen, raw, O_START_METHOD,
				 "spawn, fork or forkserver");
	cfg->start_method = dup_opt(raw, O_START_METHOD);
	cfg->role = dup_opt(raw, O_ROLE);
	cfg->log_dir = dup_opt(raw, O_LOG_DIR);
	if (!parse_std(raw->val[O_REDIRECTS], &cfg->redirects))
		return bad_value(err, errlen, raw, O_REDIRECTS,
				 "0-3 or LOCAL_RANK:0-3,...");
	if (!parse_std(raw->val[O_TEE], &cfg->tee))
		return bad_value(err, errlen, raw, O_TEE,
				 "0-3 or LOCAL_RANK:0-3,...");
	if (!parse_ranks_filter(raw->val[O_LOCAL_RANKS_FILTER], cfg))
		return bad_value(err, errlen, raw, O_LOCAL_RANKS_FILTER,
				 "comma-separated local ranks >= 0");

	if (!to_int(raw->val[O_NODE_RANK], 0, INT_MAX, &cfg->node_rank))
		return bad_value(err, errlen, raw, O_NODE_RANK, "an int >= 0");
	if (!*raw->val[O_MASTER_ADDR])
		return bad_value(err, errlen, raw, O_MASTER_ADDR,
				 "a host name or address");
	cfg->master_addr = dup_opt(raw, O_MASTER_ADDR);
	cfg->master_addr_given = raw->src[O_MASTER_ADDR] != SRC_DEFAULT;
	if (!to_int(raw->val[O_MASTER_PORT], 0, 65535, &cfg->master_port))
		return bad_value(err, errlen, raw, O_MASTER_PORT,
				 "a port from 0 to 65535");
	cfg->master_port_given = raw->src[O_MASTER_PORT] != SRC_DEFAULT;
	cfg->local_addr = dup_opt(raw, O_LOCAL_ADDR);

	v = raw->val[O_SHUTDOWN_SIGNAL];
	if (strcmp(v, "SIGTERM") == 0)
		cfg->shutdown_signal = SIGTERM;
	else if (strcmp(v, "SIGKILL") == 0)
		cfg->shutdown_signal = SIGKILL;
	else
		return bad_value(err, errlen, raw, O_SHUTDOWN_SIGNAL,
				 "SIGTERM or SIGKILL");
	if (!to_int(raw->val[O_SHUTDOWN_TIMEOUT], 0, INT_MAX,
		    &cfg->shutdown_timeout))
		return bad_value(err, errlen, raw, O_SHUTDOWN_TIMEOUT,
				 "seconds, an int >= 0");
	if (!*raw->val[O_SERVER_HOST])
		return bad_value(err, errlen, raw, O_SERVER_HOST,
				 "a host name or address");
	cfg->server_host = dup_opt(raw, O_SERVER_HOST);
	if (!to_int(raw->val[O_SERVER_PORT], 0, 65535, &cfg->server_port))
		return bad_value(err, errlen, raw, O_SERVER_PORT,
				 "a port from 0 to 65535");
	enum hp_log_level lvl;
	if (hp_log_parse_level(raw->val[O_SERVER_LOG_LEVEL], &lvl) != 0)
		return bad_value(err, errlen, raw, O_SERVER_LOG_LEVEL,
				 "debug, info, warning, error, critical or "
				 "off");
	cfg->server_log_level = dup_opt(raw, O_SERVER_LOG_LEVEL);
	if (!to_int(raw->val[O_SERVER_SHUTDOWN_TIMEOUT], 0, INT_MAX,
		    &cfg->server_shutdown_timeout))
		return bad_value(err, errlen, raw, O_SERVER_SHUTDOWN_TIMEOUT,
				 "seconds, an int >= 0");
	cfg->pre_train_script = dup_opt(raw, O_PRE_TRAIN_SCRIPT);
	cfg->pre_train_args = dup_opt(raw, O_PRE_TRAIN_ARGS);
	cfg->post_train_script = dup_opt(raw, O_POST_TRAIN_SCRIPT);
	cfg->post_train_args = dup_opt(raw, O_POST_TRAIN_ARGS);
	enum hp_parse_result r = convert_torch2(cfg, raw, err, errlen);
	if (r != HP_PARSE_OK)
		return r;
	cfg->inprocess_timeout = -1;
	if (raw->val[O_INPROCESS_TIMEOUT] &&
	    (!to_double(raw->val[O_INPROCESS_TIMEOUT],
			&cfg->inprocess_timeout) ||
	     cfg->inprocess_timeout <= 0))
		return bad_value(err, errlen, raw, O_INPROCESS_TIMEOUT,
				 "seconds > 0");
	return HP_PARSE_OK;
}

static void set_str(char **dst, const char *s)
{
	free(*dst);
	*dst = xstrdup(s);
}

/* The control API has no authentication: on an engineer's single-node
 * run it listens on loopback unless told otherwise. Operator mode keeps
 * the reference's 0.0.0.0 (the operator reaches it from outside), and so
 * does a local multi-node run (its peers join over HTTP). */
static void default_server_host(struct hp_config *cfg, const struct raw *raw)
{
	if (raw->src[O_SERVER_HOST] == SRC_DEFAULT &&
	    cfg->mode == HP_MODE_LOCAL && cfg->nnodes_max <= 1)
		set_str(&cfg->server_host, "127.0.0.1");
}

/* The value of NAME in envp ("NAME=value"), or NULL when unset or empty. */
static const char *env_lookup(char *const envp[], const char *name)
{
	size_t n = strlen(name);
	for (size_t e = 0; envp && envp[e]; e++)
		if (strncmp(envp[e], name, n) == 0 && envp[e][n] == '=')
			return envp[e][n + 1] ? envp[e] + n + 1 : NULL;
	return NULL;
}

/* Today's rules for a machine with no operator: --standalone, an explicit
 * backend, or the size decide. */
static void command_line_mode(struct hp_config *cfg, const struct raw *raw)
{
	bool explicit_backend = raw->src[O_RDZV_BACKEND] != SRC_DEFAULT;
	const char *backend = cfg->rdzv_backend;
	if (strcmp(backend, "hyperpod") == 0) {
		cfg->mode = HP_MODE_OPERATOR;
		cfg->mode_reason = xstrdup(
			"--rdzv-backend=hyperpod: the HyperPod operator starts "
			"and stops the workers");
	} else if (explicit_backend) {
		cfg->mode = HP_MODE_LOCAL;
		cfg->mode_reason = xasprintf(
			"--rdzv-backend=%s given: local %s rendezvous, no "
			"operator",
			backend, backend);
	} else if (cfg->nnodes_max > 1) {
		cfg->mode = HP_MODE_OPERATOR;
		cfg->mode_reason = xasprintf(
			"--nnodes=%s with no --rdzv-backend: the HyperPod "
			"operator starts and stops the workers",
			raw->val[O_NNODES]);
		set_str(&cfg->rdzv_backend, "hyperpod");
	} else {
		cfg->mode = HP_MODE_LOCAL;
		cfg->mode_reason = xstrdup(
			"--nnodes=1: single node, static rendezvous, no "
			"operator");
	}
}

/* Operator mode whatever the command line said: the reference's run()
 * forces rdzv_backend=hyperpod and only warns (10414151774), and AWS's
 * own job files give neither --nnodes nor --rdzv-backend. */
static void force_operator(struct hp_config *cfg, const struct raw *raw,
			   char *reason)
{
	cfg->mode = HP_MODE_OPERATOR;
	cfg->mode_reason = reason;
	if (cfg->standalone || (raw->src[O_RDZV_BACKEND] != SRC_DEFAULT &&
				strcmp(cfg->rdzv_backend, "hyperpod") != 0))
		cfg->mode_warning = xasprintf(
			"Overriding `rdzv_backend='hyperpod'` (the command line "
			"asked for %s)",
			cfg->standalone ? "--standalone" : cfg->rdzv_backend);
	cfg->standalone = false;
	set_str(&cfg->rdzv_backend, "hyperpod");
}

/* Cross-flag rules, --standalone's overrides and the mode rule. The mode:
 * HYPERPODRUN_MODE=operator|local wins; else inside a pod (the operator
 * injects NNODES; any Kubernetes pod has KUBERNETES_SERVICE_HOST)
 * operator mode; else the command line decides (command_line_mode). */
static enum hp_parse_result derive(struct hp_config *cfg,
				   const struct raw *raw, char *const envp[],
				   char *err, size_t errlen)
{
	if (cfg->no_python && cfg->module)
		return fail(err, errlen,
			    "Don't use both the '--no-python' flag and the "
			    "'--module' flag at the same time.");
	if (cfg->no_python && cfg->run_path)
		return fail(err, errlen,
			    "Don't use both the '--no-python' flag and the "
			    "'--run-path' flag at the same time.");

	const char *want = env_lookup(envp, "HYPERPODRUN_MODE");
	const char *nnodes_env = env_lookup(envp, "NNODES");
	const char *k8s = env_lookup(envp, "KUBERNETES_SERVICE_HOST");
	if (want && strcasecmp(want, "operator") != 0 &&
	    strcasecmp(want, "local") != 0)
		return fail(err, errlen,
			    "environment variable HYPERPODRUN_MODE: invalid "
			    "value '%s' (choose from 'operator', 'local')",
			    want);
	bool local_forced = want && strcasecmp(want, "local") == 0;
	if (nnodes_env && !local_forced) {
		/* the reference sizes the job from NNODES before /start
		 * (10336335176); a garbled value is refused as it is there */
		char *end;
		long v = strtol(nnodes_env, &end, 10);
		if (*end || v < 1 || v > HP_MAX_NNODES)
			return fail(err, errlen,
				    "environment variable NNODES: invalid "
				    "value '%s' (expected an int in [1, %d])",
				    nnodes_env, HP_MAX_NNODES);
		cfg->env_nnodes = (int)v;
	}

	if (want && !local_forced) {
		force_operator(cfg, raw,
			       xstrdup("HYPERPODRUN_MODE=operator: waiting for "
				       "the HyperPod operator's /start"));
	} else if (!want && (nnodes_env || k8s)) {
		force_operator(
			cfg, raw,
			nnodes_env
				? xasprintf("inside a HyperPod pod (NNODES=%s "
					    "set by the operator): waiting for "
					    "its /start",
					    nnodes_env)
				: xstrdup("inside a Kubernetes pod "
					  "(KUBERNETES_SERVICE_HOST set): "
					  "waiting for the operator's /start"));
	} else if (cfg->standalone) {
		/* torchrun: "--rdzv_backend, --rdzv_endpoint, --rdzv_id are
		 * auto-assigned; any explicitly set values are ignored". */
		set_str(&cfg->rdzv_backend, "c10d");
		set_str(&cfg->rdzv_endpoint, "localhost:0");
		cfg->master_port = 0;
		cfg->nnodes_min = cfg->nnodes_max = 1;
		cfg->node_rank = 0;
		cfg->mode = HP_MODE_LOCAL;
		cfg->mode_reason = xstrdup(
			"--standalone: one node, local rendezvous on a free "
			"port");
		return HP_PARSE_OK;
	} else {
		command_line_mode(cfg, raw);
		if (local_forced && cfg->mode == HP_MODE_OPERATOR) {
			free(cfg->mode_reason);
			cfg->mode = HP_MODE_LOCAL;
			cfg->mode_reason = xstrdup(
				"HYPERPODRUN_MODE=local: no operator, the "
				"agent starts the workers itself");
			if (strcmp(cfg->rdzv_backend, "hyperpod") == 0)
				set_str(&cfg->rdzv_backend, "static");
		} else if (local_forced) {
			char *r = xasprintf("HYPERPODRUN_MODE=local; %s",
					    cfg->mode_reason);
			free(cfg->mode_reason);
			cfg->mode_reason = r;
		}
	}

	if (cfg->mode == HP_MODE_OPERATOR &&
	    cfg->nnodes_min != cfg->nnodes_max)
		return fail(err, errlen,
			    "argument --nnodes: invalid value '%s'%s (Elastic "
			    "cluster size is currently not supported; use N)",
			    raw->val[O_NNODES],
			    raw->src[O_NNODES] == SRC_ENV ? " from PET_NNODES"
							  : "");
	/* the c10d rounds (agent/rdzv.c) drive process-level restarts only;
	 * with --inprocess-restart every node would run as group rank 0 */
	if (cfg->mode == HP_MODE_LOCAL && cfg->inprocess_restart &&
	    !cfg->standalone && strcmp(cfg->rdzv_backend, "c10d") == 0 &&
	    cfg->nnodes_max > 1)
		return fail(err, errlen,
			    "argument --inprocess-restart: not allowed with "
			    "--rdzv-backend=c10d across nodes (use "
			    "--rdzv-backend=static with --node-rank, or the "
			    "HyperPod operator)");
	if (cfg->mode == HP_MODE_LOCAL &&
	    strcmp(cfg->rdzv_backend, "static") == 0 &&
	    cfg->node_rank >= cfg->nnodes_max)
		return fail(err, errlen,
			    "argument --node-rank: invalid value '%s' "
			    "(expected an int below --nnodes %d)",
			    raw->val[O_NODE_RANK], cfg->nnodes_max);
	return HP_PARSE_OK;
}

enum hp_parse_result hp_config_parse(struct hp_config *cfg, int argc,
				     char *const argv[], char *const envp[],
				     char *err, size_t errlen)
{
	struct raw raw;
	int script = argc;
	enum hp_parse_result r;

	memset(cfg, 0, sizeof(*cfg));
	memset(&raw, 0, sizeof(raw));
	if (errlen)
		err[0] = '\0';

	r = parse_argv(&raw, argc, argv, &script, err, errlen);
	if (r != HP_PARSE_OK)
		goto out;
	if (script >= argc) {
		r = fail(err, errlen,
			 "the following arguments are required: "
			 "training_script, training_script_args");
		goto out;
	}
	fill_from_env(&raw, envp);
	r = convert(cfg, &raw, err, errlen);
	if (r != HP_PARSE_OK)
		goto out;
	r = derive(cfg, &raw, envp, err, errlen);
	if (r != HP_PARSE_OK)
		goto out;
	default_server_host(cfg, &raw);

	cfg->script_argc = argc - script;
	cfg->script_argv = xcalloc((size_t)cfg->script_argc + 1,
				   sizeof(char *));
	for (int i = 0; i < cfg->script_argc; i++)
		cfg->script_argv[i] = xstrdup(argv[script + i]);
out:
	if (r == HP_PARSE_ERROR)
		hp_config_fini(cfg);
	return r;
}

static void std_spec_fini(struct hp_std_spec *s)
{
	free(s->ranks);
	free(s->values);
	memset(s, 0, sizeof(*s));
}

void hp_config_fini(struct hp_config *cfg)
{
	char **strs[] = {
		&cfg->rdzv_backend,      &cfg->rdzv_endpoint,
		&cfg->rdzv_id,           &cfg->rdzv_conf,
		&cfg->start_method,      &cfg->role,
		&cfg->log_dir,           &cfg->master_addr,
		&cfg->local_addr,        &cfg->server_host,
		&cfg->server_log_level,  &cfg->pre_train_script,
		&cfg->pre_train_args,    &cfg->post_train_script,
		&cfg->post_train_args,   &cfg->mode_reason,
		&cfg->event_log_handler, &cfg->numa_binding,
		&cfg->accepted_note,     &cfg->mode_warning,
	};
	for (size_t i = 0; i < HP_ARRAY_LEN(strs); i++)
		free(*strs[i]);
	std_spec_fini(&cfg->redirects);
	std_spec_fini(&cfg->tee);
	free(cfg->local_ranks_filter);
	if (cfg->script_argv)
		for (int i = 0; i < cfg->script_argc; i++)
			free(cfg->script_argv[i]);
	free(cfg->script_argv);
	memset(cfg, 0, sizeof(*cfg));
}

const char *hp_config_usage(void)
{
	return "usage: hyperpodrun [-h] [--version] [--nnodes NNODES] "
	       "[--nproc-per-node NPROC_PER_NODE] "
	       "[--rdzv-backend RDZV_BACKEND] [--rdzv-endpoint RDZV_ENDPOINT] "
	       "[--rdzv-id RDZV_ID] [--rdzv-conf RDZV_CONF] [--standalone] "
	       "[--max-restarts MAX_RESTARTS] "
	       "[--monitor-interval MONITOR_INTERVAL] "
	       "[--start-method {spawn,fork,forkserver}] [--role ROLE] [-m] "
	       "[--no-python] [--run-path] [--log-dir LOG_DIR] "
	       "[-r REDIRECTS] [-t TEE] "
	       "[--local-ranks-filter LOCAL_RANKS_FILTER] "
	       "[--logs-specs LOGS_SPECS] "
	       "[--event-log-handler EVENT_LOG_HANDLER] "
	       "[--numa-binding {node,socket,exclusive,core-complex}] "
	       "[--signals-to-handle SIGNALS_TO_HANDLE] "
	       "[--duplicate-stdout-filters DUPLICATE_STDOUT_FILTERS] "
	       "[--duplicate-stderr-filters DUPLICATE_STDERR_FILTERS] "
	       "[--virtual-local-rank] [--node-rank NODE_RANK] "
	       "[--master-addr MASTER_ADDR] [--master-port MASTER_PORT] "
	       "[--local-addr LOCAL_ADDR] "
	       "[--shutdown-signal {SIGTERM,SIGKILL}] "
	       "[--shutdown-timeout SHUTDOWN_TIMEOUT] "
	       "[--server-host SERVER_HOST] [--server-port SERVER_PORT] "
	       "[--server-log-level SERVER_LOG_LEVEL] "
	       "[--server-shutdown-timeout SERVER_SHUTDOWN_TIMEOUT] "
	       "[--pre-train-script PRE_TRAIN_SCRIPT] "
	       "[--pre-train-args PRE_TRAIN_ARGS] "
	       "[--post-train-script POST_TRAIN_SCRIPT] "
	       "[--post-train-args POST_TRAIN_ARGS] [--inprocess-restart] "
	       "[--inprocess-timeout INPROCESS_TIMEOUT] "
	       "training_script ...";
}

const char *hp_config_help(void)
{
	/* Under 4095 bytes: the longest literal C11 promises. */
	return "usage: hyperpodrun [options] training_script [args ...]\n"
	       "\n"
	       "torchrun plus the HyperPod elastic agent. Options also take underscores\n"
	       "(--nproc_per_node), '--opt VALUE' or '--opt=VALUE', unique prefixes, and\n"
	       "fall back to PET_<NAME> (PET_NNODES, ...). The first non-option argument\n"
	       "(or the one after '--') is the script; it and its args pass untouched.\n"
	       "\n"
	       "  -h, --help                 show this help and exit\n"
	       "  --version                  show the version and exit\n"
	       "torchrun:\n"
	       "  --nnodes N|MIN:MAX         number of nodes (default: 1:1)\n"
	       "  --nproc-per-node N         workers per node: int, gpu, cpu, auto (default: 1)\n"
	       "  --node-rank N              this node's rank, static rdzv (default: 0)\n"
	       "  --master-addr ADDR         rank 0 node's address (default: 127.0.0.1)\n"
	       "  --master-port PORT         rank 0 node's port (default: 29500)\n"
	       "  --local-addr ADDR          this node's address (default: none)\n"
	       "  --rdzv-backend NAME        static, c10d or hyperpod (default: static)\n"
	       "  --rdzv-endpoint HOST[:P]   rendezvous endpoint (default: \"\")\n"
	       "  --rdzv-id ID               run id, TORCHELASTIC_RUN_ID (default: none)\n"
	       "  --rdzv-conf K=V,...        rendezvous settings (default: \"\")\n"
	       "  --standalone               one node, local rendezvous on a free port;\n"
	       "                             overrides the rdzv flags (default: off)\n"
	       "  --max-restarts N           group restarts before failing (default: 0)\n"
	       "  --monitor-interval SECS    accepted; we are event-driven (default: 5)\n"
	       "  --start-method {spawn,fork,forkserver}  ignored (default: spawn)\n"
	       "  --role ROLE                ROLE_NAME (default: default)\n"
	       "  -m, --module               run as 'python -m' (default: off)\n"
	       "  --no-python                exec the script directly (default: off)\n"
	       "  --run-path                 run via runpy.run_path (default: off)\n"
	       "  --log-dir DIR              per-attempt, per-rank logs (default: none)\n"
	       "  -r, --redirects V          to log files: 0 none, 1 stdout, 2 stderr,\n"
	       "                             3 both, or RANK:V,... (default: 0)\n"
	       "  -t, --tee V                like -r, also to the console (default: 0)\n"
	       "  --local-ranks-filter R,..  ranks shown on the console (default: all)\n"
	       "  torch 2.x, parsed, warned about when inert: --logs-specs NAME,\n"
	       "  --event-log-handler NAME, --numa-binding MODE, --signals-to-handle\n"
	       "  SIG,..., --duplicate-std{out,err}-filters F,...\n"
	       "  --virtual-local-rank       LOCAL_RANK=0, one GPU in CUDA_VISIBLE_DEVICES\n"
	       "HyperPod:\n"
	       "  --shutdown-signal {SIGTERM,SIGKILL}\n"
	       "                             stops workers; SIGTERM is followed by SIGKILL\n"
	       "                             after --shutdown-timeout (default: SIGKILL)\n"
	       "  --shutdown-timeout SECS    SIGTERM to SIGKILL (default: 15)\n"
	       "  --server-host ADDR         agent HTTP server address; 127.0.0.1 in\n"
	       "                             single-node local mode (default: 0.0.0.0)\n"
	       "  --server-port PORT         its port, 0 = any free (default: 8080)\n"
	       "  --server-log-level LEVEL   debug, info, warning, error, critical, off\n"
	       "                             (default: info)\n"
	       "  --server-shutdown-timeout SECS  graceful server stop (default: 300)\n"
	       "  --pre-train-script PATH    run before each group (re)start (default: none)\n"
	       "  --pre-train-args ARGS      its arguments, one string (default: none)\n"
	       "  --post-train-script PATH   run after training succeeds (default: none)\n"
	       "  --post-train-args ARGS     its arguments, one string (default: none)\n"
	       "  --inprocess-restart        restart workers in process (default: off)\n"
	       "  --inprocess-timeout SECS   wait at the restart barrier before a process\n"
	       "                             restart (default: none)\n"
	       "\n"
	       "Operator mode (waits for the HyperPod operator, needs a fixed --nnodes N):\n"
	       "--rdzv-backend=hyperpod, or --nnodes > 1 with no --rdzv-backend. Local\n"
	       "mode: --standalone, --rdzv-backend=static|c10d, or one node.\n"
	       "Exit status: 0 ok, 1 job failed, 2 usage error, 128+N killed by signal N.\n";
}
