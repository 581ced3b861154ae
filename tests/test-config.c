/* test-config.c — hp_config_parse against torchrun's run.py: both
 * spellings and both value forms of every flag, PET_<NAME> fallbacks, the
 * value checks, the training script passed through untouched, and the
 * local/operator mode rule. Every case frees what it parsed, so ASan's leak
 * checker covers the error paths too. */
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "launcher/config.h"

#define ERRLEN 256
#define ARGV(...) ((char *[]){"hyperpodrun", __VA_ARGS__, NULL})
#define ENV(...) ((char *[]){__VA_ARGS__, NULL})
#define NOENV ((char **)NULL)

static int count(char **v)
{
	int n = 0;
	while (v[n])
		n++;
	return n;
}

static enum hp_parse_result parse(struct hp_config *c, char **argv,
				  char **envp, char *err)
{
	return hp_config_parse(c, count(argv), argv, envp, err, ERRLEN);
}

/* Parses and insists on success; the caller finis. */
static void ok(struct hp_config *c, char **argv, char **envp)
{
	char err[ERRLEN];
	enum hp_parse_result r = parse(c, argv, envp, err);
	if (r != HP_PARSE_OK)
		fail_msg("parse failed (%d): %s", (int)r, err);
}

/* Parses and insists on an error whose text contains 'want'. */
static void bad(char **argv, char **envp, const char *want)
{
	struct hp_config c;
	char err[ERRLEN];
	enum hp_parse_result r = parse(&c, argv, envp, err);
	if (r != HP_PARSE_ERROR)
		fail_msg("parse of %s ... succeeded (%d), wanted '%s'",
			 argv[1], (int)r, want);
	if (!strstr(err, want))
		fail_msg("error '%s' does not contain '%s'", err, want);
	assert_null(c.script_argv);
	assert_null(c.rdzv_backend);
	hp_config_fini(&c);
}

static void test_defaults(void **state)
{
	struct hp_config c;
	ok(&c, ARGV("train.py"), NOENV);
	assert_int_equal(c.nnodes_min, 1);
	assert_int_equal(c.nnodes_max, 1);
	assert_int_equal(c.nproc_kind, HP_NPROC_NUMBER);
	assert_int_equal(c.nproc_per_node, 1);
	assert_string_equal(c.rdzv_backend, "static");
	assert_string_equal(c.rdzv_endpoint, "");
	assert_string_equal(c.rdzv_id, "none");
	assert_string_equal(c.rdzv_conf, "");
	assert_false(c.standalone);
	assert_int_equal(c.max_restarts, 0);
	assert_true(c.monitor_interval == 5.0);
	assert_string_equal(c.start_method, "spawn");
	assert_string_equal(c.role, "default");
	assert_false(c.module);
	assert_false(c.no_python);
	assert_false(c.run_path);
	assert_null(c.log_dir);
	assert_int_equal(c.redirects.all, HP_STD_NONE);
	assert_int_equal(c.redirects.n, 0);
	assert_int_equal(c.tee.all, HP_STD_NONE);
	assert_int_equal(c.tee.n, 0);
	assert_null(c.local_ranks_filter);
	assert_int_equal(c.n_local_ranks_filter, 0);
	assert_int_equal(c.node_rank, 0);
	assert_string_equal(c.master_addr, "127.0.0.1");
	assert_false(c.master_addr_given);
	assert_int_equal(c.master_port, 29500);
	assert_false(c.master_port_given);
	assert_null(c.local_addr);
	/* HyperPod */
	assert_int_equal(c.shutdown_signal, SIGKILL);
	assert_int_equal(c.shutdown_timeout, 15);
	/* single-node local mode: the unauthenticated API stays on loopback */
	assert_string_equal(c.server_host, "127.0.0.1");
	assert_int_equal(c.server_port, 8080);
	assert_string_equal(c.server_log_level, "info");
	assert_int_equal(c.server_shutdown_timeout, 300);
	assert_null(c.pre_train_script);
	assert_null(c.pre_train_args);
	assert_null(c.post_train_script);
	assert_null(c.post_train_args);
	assert_false(c.inprocess_restart);
	assert_true(c.inprocess_timeout < 0);
	/* script and mode */
	assert_int_equal(c.script_argc, 1);
	assert_string_equal(c.script_argv[0], "train.py");
	assert_null(c.script_argv[1]);
	assert_int_equal(c.mode, HP_MODE_LOCAL);
	assert_non_null(c.mode_reason);
	hp_config_fini(&c);
	hp_config_fini(&c); /* zeroed: safe twice */
}

/* --- every value flag in 4 spellings: dash/underscore x space/'=' ------- */

typedef void check_fn(const struct hp_config *c);

static void chk_nnodes(const struct hp_config *c)
{
	assert_int_equal(c->nnodes_min, 3);
	assert_int_equal(c->nnodes_max, 3);
}
static void chk_nproc(const struct hp_config *c)
{
	assert_int_equal(c->nproc_per_node, 4);
}
static void chk_backend(const struct hp_config *c)
{
	assert_string_equal(c->rdzv_backend, "c10d");
}
static void chk_endpoint(const struct hp_config *c)
{
	assert_string_equal(c->rdzv_endpoint, "host:1234");
}
static void chk_id(const struct hp_config *c)
{
	assert_string_equal(c->rdzv_id, "job7");
}
static void chk_conf(const struct hp_config *c)
{
	assert_string_equal(c->rdzv_conf, "timeout=60,a=b");
}
static void chk_restarts(const struct hp_config *c)
{
	assert_int_equal(c->max_restarts, 3);
}
static void chk_monitor(const struct hp_config *c)
{
	assert_true(c->monitor_interval == 0.1);
}
static void chk_start(const struct hp_config *c)
{
	assert_string_equal(c->start_method, "fork");
}
static void chk_role(const struct hp_config *c)
{
	assert_string_equal(c->role, "trainer");
}
static void chk_log_dir(const struct hp_config *c)
{
	assert_string_equal(c->log_dir, "/tmp/logs");
}
static void chk_redirects(const struct hp_config *c)
{
	assert_int_equal(c->redirects.all, HP_STD_ALL);
}
static void chk_tee(const struct hp_config *c)
{
	assert_int_equal(c->tee.all, HP_STD_ERR);
}
static void chk_filter(const struct hp_config *c)
{
	assert_int_equal(c->n_local_ranks_filter, 2);
}
static void chk_logs_specs(const struct hp_config *c)
{
	assert_non_null(c->script_argv);
}
static void chk_elh(const struct hp_config *c)
{
	assert_string_equal(c->event_log_handler, "console");
	assert_non_null(strstr(c->accepted_note, "event"));
}
static void chk_numa(const struct hp_config *c)
{
	assert_string_equal(c->numa_binding, "core-complex");
}
static void chk_sigs(const struct hp_config *c)
{
	assert_true(c->signals_to_handle ==
		    ((1ull << SIGUSR1) | (1ull << SIGTERM)));
	assert_null(c->accepted_note);
}
static void chk_dup(const struct hp_config *c)
{
	assert_non_null(strstr(c->accepted_note, "filters"));
}
static void chk_node_rank(const struct hp_config *c)
{
	assert_int_equal(c->node_rank, 1);
}
static void chk_master_addr(const struct hp_config *c)
{
	assert_string_equal(c->master_addr, "10.1.2.3");
	assert_true(c->master_addr_given);
}
static void chk_master_port(const struct hp_config *c)
{
	assert_int_equal(c->master_port, 1234);
	assert_true(c->master_port_given);
}
static void chk_local_addr(const struct hp_config *c)
{
	assert_string_equal(c->local_addr, "10.9.9.9");
}
static void chk_sig(const struct hp_config *c)
{
	assert_int_equal(c->shutdown_signal, SIGTERM);
}
static void chk_sd_timeout(const struct hp_config *c)
{
	assert_int_equal(c->shutdown_timeout, 30);
}
static void chk_host(const struct hp_config *c)
{
	assert_string_equal(c->server_host, "127.0.0.1");
}
static void chk_sport(const struct hp_config *c)
{
	assert_int_equal(c->server_port, 0);
}
static void chk_level(const struct hp_config *c)
{
	assert_string_equal(c->server_log_level, "debug");
}
static void chk_sst(const struct hp_config *c)
{
	assert_int_equal(c->server_shutdown_timeout, 10);
}
static void chk_pre(const struct hp_config *c)
{
	assert_string_equal(c->pre_train_script, "/bin/pre.sh");
}
static void chk_pre_args(const struct hp_config *c)
{
	assert_string_equal(c->pre_train_args, "a b");
}
static void chk_post(const struct hp_config *c)
{
	assert_string_equal(c->post_train_script, "/bin/post.sh");
}
static void chk_post_args(const struct hp_config *c)
{
	assert_string_equal(c->post_train_args, "x");
}
static void chk_ipt(const struct hp_config *c)
{
	assert_true(c->inprocess_timeout == 2.5);
}

static void test_value_flags_all_spellings(void **state)
{
	static const struct {
		const char *dash; /* the --dash-spelling */
		const char *value;
		check_fn *check;
	} cases[] = {
		{"--nnodes", "3", chk_nnodes},
		{"--nproc-per-node", "4", chk_nproc},
		{"--rdzv-backend", "c10d", chk_backend},
		{"--rdzv-endpoint", "host:1234", chk_endpoint},
		{"--rdzv-id", "job7", chk_id},
		{"--rdzv-conf", "timeout=60,a=b", chk_conf},
		{"--max-restarts", "3", chk_restarts},
		{"--monitor-interval", "0.1", chk_monitor},
		{"--start-method", "fork", chk_start},
		{"--role", "trainer", chk_role},
		{"--log-dir", "/tmp/logs", chk_log_dir},
		{"--redirects", "3", chk_redirects},
		{"--tee", "2", chk_tee},
		{"--local-ranks-filter", "0,1", chk_filter},
		{"--logs-specs", "default", chk_logs_specs},
		{"--event-log-handler", "console", chk_elh},
		{"--numa-binding", "core-complex", chk_numa},
		{"--signals-to-handle", "SIGUSR1, TERM", chk_sigs},
		{"--duplicate-stdout-filters", "a,,b,c", chk_dup},
		{"--duplicate-stderr-filters", "x", chk_dup},
		{"--node-rank", "1", chk_node_rank},
		{"--master-addr", "10.1.2.3", chk_master_addr},
		{"--master-port", "1234", chk_master_port},
		{"--local-addr", "10.9.9.9", chk_local_addr},
		{"--shutdown-signal", "SIGTERM", chk_sig},
		{"--shutdown-timeout", "30", chk_sd_timeout},
		{"--server-host", "127.0.0.1", chk_host},
		{"--server-port", "0", chk_sport},
		{"--server-log-level", "debug", chk_level},
		{"--server-shutdown-timeout", "10", chk_sst},
		{"--pre-train-script", "/bin/pre.sh", chk_pre},
		{"--pre-train-args", "a b", chk_pre_args},
		{"--post-train-script", "/bin/post.sh", chk_post},
		{"--post-train-args", "x", chk_post_args},
		{"--inprocess-timeout", "2.5", chk_ipt},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (int form = 0; form < 4; form++) {
			char name[64], joined[128];
			snprintf(name, sizeof(name), "%s", cases[i].dash);
			if (form & 1)
				for (char *p = name + 2; *p; p++)
					if (*p == '-')
						*p = '_';
			snprintf(joined, sizeof(joined), "%s=%s", name,
				 cases[i].value);
			/* --node-rank 1 needs two nodes under static. */
			char *args[8] = {"hyperpodrun", "--nnodes=2:2",
					 "--rdzv-backend=static"};
			int n = 3;
			if (form & 2) {
				args[n++] = joined;
			} else {
				args[n++] = name;
				args[n++] = (char *)cases[i].value;
			}
			args[n++] = "train.py";
			args[n] = NULL;
			if (strcmp(cases[i].dash, "--nnodes") == 0 ||
			    strcmp(cases[i].dash, "--rdzv-backend") == 0)
				args[1] = args[2] = "--role=default";
			struct hp_config c;
			char err[ERRLEN];
			if (parse(&c, args, NOENV, err) != HP_PARSE_OK)
				fail_msg("%s %s: %s", name, cases[i].value,
					 err);
			cases[i].check(&c);
			hp_config_fini(&c);
		}
	}
}

/* torch 2.x: the flags newer torchrun has parse, with its defaults; the
 * ones without an env action ignore PET_*; --numa-binding has choices. */
static void test_torch2_flags(void **state)
{
	(void)state;
	struct hp_config c;
	ok(&c, ARGV("train.py"), NOENV);
	assert_string_equal(c.event_log_handler, "null");
	assert_null(c.numa_binding);
	assert_true(c.signals_to_handle ==
		    ((1ull << SIGTERM) | (1ull << SIGINT) | (1ull << SIGHUP) |
		     (1ull << SIGQUIT)));
	assert_false(c.virtual_local_rank);
	assert_null(c.accepted_note);
	hp_config_fini(&c);

	ok(&c, ARGV("--virtual_local_rank", "--signals_to_handle=SIGFOO",
		    "train.py"),
	   ENV("PET_NUMA_BINDING=node", "PET_LOGS_SPECS=x",
	       "PET_EVENT_LOG_HANDLER=console"));
	assert_true(c.virtual_local_rank);
	assert_null(c.numa_binding);
	assert_string_equal(c.event_log_handler, "console");
	assert_non_null(strstr(c.accepted_note, "SIGFOO"));
	assert_null(strstr(c.accepted_note, "--logs"));
	hp_config_fini(&c);

	bad(ARGV("--numa-binding", "numa", "train.py"), NOENV,
	    "--numa-binding: invalid value 'numa'");
	bad(ARGV("--virtual-local-rank=1", "train.py"), NOENV,
	    "ignored explicit argument");
	/* a prefix shared by a torch 2.x flag is ambiguous, as in argparse */
	bad(ARGV("--dup", "x", "train.py"), NOENV, "ambiguous option");
}

static void test_bool_flags(void **state)
{
	struct hp_config c;
	ok(&c, ARGV("--standalone", "-m", "--run_path", "--inprocess-restart",
		    "train"),
	   NOENV);
	assert_true(c.standalone);
	assert_true(c.module);
	assert_true(c.run_path);
	assert_true(c.inprocess_restart);
	hp_config_fini(&c);

	ok(&c, ARGV("--module", "--inprocess_restart", "pkg.train"), NOENV);
	assert_true(c.module);
	assert_true(c.inprocess_restart);
	hp_config_fini(&c);

	ok(&c, ARGV("--no-python", "./a.out"), NOENV);
	assert_true(c.no_python);
	hp_config_fini(&c);
	ok(&c, ARGV("--no_python", "x"), ENV("PET_RUN_PATH=0"));
	assert_true(c.no_python);
	assert_false(c.run_path);
	hp_config_fini(&c);

	bad(ARGV("--standalone=1", "train.py"), NOENV,
	    "argument --standalone: ignored explicit argument '1'");
	bad(ARGV("-m", "--no-python", "train.py"), NOENV,
	    "Don't use both the '--no-python' flag and the '--module' flag "
	    "at the same time.");
	bad(ARGV("--run-path", "--no_python", "train.py"), NOENV,
	    "'--run-path' flag");
}

static void test_pet_fallback(void **state)
{
	struct hp_config c;
	ok(&c, ARGV("train.py"),
	   ENV("PET_NPROC_PER_NODE=3", "PET_NNODES=2", "PET_NODE_RANK=1",
	       "PET_MASTER_ADDR=10.0.0.5", "PET_MASTER_PORT=23456",
	       "PET_MAX_RESTARTS=4", "PET_RDZV_ID=abc", "PET_ROLE=r",
	       "PET_SERVER_PORT=9090", "PET_SHUTDOWN_SIGNAL=SIGTERM",
	       "PET_TEE=0:1", "NNODES=7", "PET_NNODESX=9"));
	assert_int_equal(c.nproc_per_node, 3);
	assert_int_equal(c.nnodes_min, 2);
	assert_int_equal(c.nnodes_max, 2);
	assert_int_equal(c.node_rank, 1);
	assert_string_equal(c.master_addr, "10.0.0.5");
	assert_true(c.master_addr_given);
	assert_int_equal(c.master_port, 23456);
	assert_true(c.master_port_given);
	assert_int_equal(c.max_restarts, 4);
	assert_string_equal(c.rdzv_id, "abc");
	assert_string_equal(c.role, "r");
	assert_int_equal(c.server_port, 9090);
	assert_int_equal(c.shutdown_signal, SIGTERM);
	assert_int_equal(c.tee.n, 1);
	/* nnodes 2 from PET and no backend: the operator drives it. */
	assert_int_equal(c.mode, HP_MODE_OPERATOR);
	hp_config_fini(&c);

	/* CLI beats PET_. */
	ok(&c, ARGV("--nproc_per_node=5", "--master-port", "1", "train.py"),
	   ENV("PET_NPROC_PER_NODE=3", "PET_MASTER_PORT=2"));
	assert_int_equal(c.nproc_per_node, 5);
	assert_int_equal(c.master_port, 1);
	hp_config_fini(&c);

	/* check_env flags: PET_X=1 on, PET_X=0 off, the CLI flag wins. */
	ok(&c, ARGV("train.py"), ENV("PET_STANDALONE=1", "PET_MODULE=0"));
	assert_true(c.standalone);
	assert_false(c.module);
	hp_config_fini(&c);
	ok(&c, ARGV("-m", "train.py"), ENV("PET_MODULE=0"));
	assert_true(c.module);
	hp_config_fini(&c);

	/* An empty PET_ is unset; a bad one names its variable. */
	ok(&c, ARGV("train.py"), ENV("PET_NNODES=", "PET_LOG_DIR="));
	assert_int_equal(c.nnodes_max, 1);
	assert_null(c.log_dir);
	hp_config_fini(&c);
	bad(ARGV("train.py"), ENV("PET_NPROC_PER_NODE=x"),
	    "argument --nproc-per-node: invalid value 'x' from "
	    "PET_NPROC_PER_NODE (expected an int, gpu, cpu or auto)");
	bad(ARGV("train.py"), ENV("PET_STANDALONE=yes"),
	    "invalid value 'yes' from PET_STANDALONE");
}

static void test_nnodes(void **state)
{
	struct hp_config c;
	ok(&c, ARGV("--nnodes", "4", "train.py"), NOENV);
	assert_int_equal(c.nnodes_min, 4);
	assert_int_equal(c.nnodes_max, 4);
	hp_config_fini(&c);
	ok(&c, ARGV("--nnodes=2:8", "--rdzv-backend=c10d", "train.py"), NOENV);
	assert_int_equal(c.nnodes_min, 2);
	assert_int_equal(c.nnodes_max, 8);
	hp_config_fini(&c);

	static const char *const bads[] = {"0",   "3:2", "1:2:3", "x", "",
					   ":2",  "2:",  "0:1",   "-1", "1.5",
					   "2:x", "99999999999"};
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		char want[128];
		snprintf(want, sizeof(want),
			 "argument --nnodes: invalid value '%s' (expected N "
			 "or MIN:MAX",
			 bads[i]);
		bad(ARGV("--nnodes", (char *)bads[i], "--rdzv-backend=c10d",
			 "train.py"),
		    NOENV, want);
	}
}

/* Issue 12 §11: loopback by default only where nobody else needs the
 * API; an explicit --server-host always wins. */
static void test_server_host_default(void **state)
{
	struct hp_config c;
	ok(&c, ARGV("--standalone", "train.py"), NOENV);
	assert_string_equal(c.server_host, "127.0.0.1");
	hp_config_fini(&c);
	ok(&c, ARGV("--nnodes", "4", "train.py"), NOENV);
	assert_int_equal(c.mode, HP_MODE_OPERATOR);
	assert_string_equal(c.server_host, "0.0.0.0");
	hp_config_fini(&c);
	ok(&c, ARGV("--rdzv-backend=hyperpod", "train.py"), NOENV);
	assert_string_equal(c.server_host, "0.0.0.0");
	hp_config_fini(&c);
	ok(&c, ARGV("--nnodes", "2", "--rdzv-backend=static", "train.py"),
	   NOENV);
	assert_string_equal(c.server_host, "0.0.0.0");
	hp_config_fini(&c);
	ok(&c, ARGV("--server-host", "0.0.0.0", "train.py"), NOENV);
	assert_string_equal(c.server_host, "0.0.0.0");
	hp_config_fini(&c);
	ok(&c, ARGV("train.py"), ENV("PET_SERVER_HOST=10.1.2.3"));
	assert_string_equal(c.server_host, "10.1.2.3");
	hp_config_fini(&c);
}

static void test_nproc(void **state)
{
	struct hp_config c;
	static const struct {
		const char *v;
		enum hp_nproc_kind kind;
		int n;
	} goods[] = {{"1", HP_NPROC_NUMBER, 1},
		     {"8", HP_NPROC_NUMBER, 8},
		     {"256", HP_NPROC_NUMBER, 256},
		     {"gpu", HP_NPROC_GPU, 0},
		     {"cpu", HP_NPROC_CPU, 0},
		     {"auto", HP_NPROC_AUTO, 0}};
	for (size_t i = 0; i < sizeof(goods) / sizeof(goods[0]); i++) {
		ok(&c, ARGV("--nproc-per-node", (char *)goods[i].v, "t.py"),
		   NOENV);
		assert_int_equal(c.nproc_kind, goods[i].kind);
		if (goods[i].kind == HP_NPROC_NUMBER)
			assert_int_equal(c.nproc_per_node, goods[i].n);
		hp_config_fini(&c);
	}
	bad(ARGV("--nproc-per-node", "x", "train.py"), NOENV,
	    "argument --nproc-per-node: invalid value 'x' (expected an int, "
	    "gpu, cpu or auto)");
	bad(ARGV("--nproc_per_node=GPU", "train.py"), NOENV,
	    "argument --nproc_per_node: invalid value 'GPU'");
	bad(ARGV("--nproc-per-node", "0", "train.py"), NOENV,
	    "invalid value '0' (expected an int from 1 to 256");
	bad(ARGV("--nproc-per-node", "-1", "train.py"), NOENV,
	    "invalid value '-1'");
	bad(ARGV("--nproc-per-node", "257", "train.py"), NOENV,
	    "invalid value '257'");
	bad(ARGV("--nproc-per-node", "4x", "train.py"), NOENV,
	    "invalid value '4x'");
}

static void test_hyperpod_bad_values(void **state)
{
	static const struct {
		const char *flag, *value, *want;
	} cases[] = {
		{"--shutdown-signal", "SIGINT", "(expected SIGTERM or SIGKILL)"},
		{"--shutdown-signal", "sigterm", "invalid value 'sigterm'"},
		{"--shutdown-timeout", "-1", "invalid value '-1'"},
		{"--shutdown-timeout", "x", "invalid value 'x'"},
		{"--server-port", "65536", "(expected a port from 0 to 65535)"},
		{"--server-port", "-1", "invalid value '-1'"},
		{"--server-port", "http", "invalid value 'http'"},
		{"--server-host", "", "invalid value ''"},
		{"--server-log-level", "loud", "invalid value 'loud'"},
		{"--server-shutdown-timeout", "1.5", "invalid value '1.5'"},
		{"--inprocess-timeout", "0", "(expected seconds > 0)"},
		{"--inprocess-timeout", "-2", "invalid value '-2'"},
		{"--inprocess-timeout", "soon", "invalid value 'soon'"},
		{"--inprocess-timeout", "nan", "invalid value 'nan'"},
		{"--max-restarts", "-1", "(expected an int >= 0)"},
		{"--monitor-interval", "fast", "invalid value 'fast'"},
		{"--start-method", "thread", "(expected spawn, fork or forkserver)"},
		{"--master-port", "70000", "invalid value '70000'"},
		{"--master-addr", "", "invalid value ''"},
		{"--node-rank", "-1", "invalid value '-1'"},
		{"--node-rank", "1", "(expected an int below --nnodes 1)"},
		{"--rdzv-backend", "etcd", "(expected static, c10d or hyperpod)"},
		{"--rdzv-conf", "a", "invalid value 'a'"},
		{"--rdzv-conf", "a=1,=2", "invalid value 'a=1,=2'"},
		{"--rdzv-conf", "a=", "invalid value 'a='"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char want[160];
		snprintf(want, sizeof(want), "argument %s: ", cases[i].flag);
		bad(ARGV((char *)cases[i].flag, (char *)cases[i].value,
			 "train.py"),
		    NOENV, want);
		bad(ARGV((char *)cases[i].flag, (char *)cases[i].value,
			 "train.py"),
		    NOENV, cases[i].want);
	}

	struct hp_config c;
	ok(&c, ARGV("--server-log-level", "WARNING", "--shutdown-signal",
		    "SIGKILL", "--rdzv-conf", " ", "train.py"),
	   NOENV);
	assert_string_equal(c.server_log_level, "WARNING");
	assert_int_equal(c.shutdown_signal, SIGKILL);
	hp_config_fini(&c);

	/* A value that starts with '-' is taken when it has a space in it
	 * or comes after '=', as argparse does. */
	ok(&c, ARGV("--pre-train-args", "--epochs 3", "--post-train-args=--x",
		    "train.py"),
	   NOENV);
	assert_string_equal(c.pre_train_args, "--epochs 3");
	assert_string_equal(c.post_train_args, "--x");
	hp_config_fini(&c);
	bad(ARGV("--pre-train-args", "--x", "train.py"), NOENV,
	    "argument --pre-train-args: expected one argument");
}

static void test_std_maps(void **state)
{
	struct hp_config c;
	ok(&c, ARGV("-r", "0:1,1:2,3:3", "-t2", "train.py"), NOENV);
	assert_int_equal(c.redirects.n, 3);
	assert_int_equal(hp_std_for_rank(&c.redirects, 0), HP_STD_OUT);
	assert_int_equal(hp_std_for_rank(&c.redirects, 1), HP_STD_ERR);
	assert_int_equal(hp_std_for_rank(&c.redirects, 2), HP_STD_NONE);
	assert_int_equal(hp_std_for_rank(&c.redirects, 3), HP_STD_ALL);
	assert_int_equal(c.tee.n, 0);
	assert_int_equal(hp_std_for_rank(&c.tee, 7), HP_STD_ERR);
	hp_config_fini(&c);

	/* Later entries win, as in a Python dict. */
	ok(&c, ARGV("-t=0:3,0:1,12:2", "--redirects=1", "train.py"), NOENV);
	assert_int_equal(c.tee.n, 2);
	assert_int_equal(hp_std_for_rank(&c.tee, 0), HP_STD_OUT);
	assert_int_equal(hp_std_for_rank(&c.tee, 12), HP_STD_ERR);
	assert_int_equal(hp_std_for_rank(&c.redirects, 5), HP_STD_OUT);
	hp_config_fini(&c);

	static const char *const bads[] = {"4", "0:4", "a:1", "0:", ":1",
					   "1,2", "0:1,", "", "01", "0:12"};
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		char want[128];
		snprintf(want, sizeof(want),
			 "argument -r/--redirects: invalid value '%s'",
			 bads[i]);
		bad(ARGV("-r", (char *)bads[i], "train.py"), NOENV, want);
		snprintf(want, sizeof(want),
			 "argument --tee: invalid value '%s'", bads[i]);
		bad(ARGV("--tee", (char *)bads[i], "train.py"), NOENV, want);
	}
}

static void test_local_ranks_filter(void **state)
{
	struct hp_config c;
	ok(&c, ARGV("--local-ranks-filter", "0,2,2", "train.py"), NOENV);
	assert_int_equal(c.n_local_ranks_filter, 2);
	assert_int_equal(c.local_ranks_filter[0], 0);
	assert_int_equal(c.local_ranks_filter[1], 2);
	assert_true(hp_config_rank_shown(&c, 0));
	assert_false(hp_config_rank_shown(&c, 1));
	assert_true(hp_config_rank_shown(&c, 2));
	hp_config_fini(&c);

	ok(&c, ARGV("--local_ranks_filter=", "train.py"), NOENV);
	assert_null(c.local_ranks_filter);
	assert_true(hp_config_rank_shown(&c, 5));
	hp_config_fini(&c);

	bad(ARGV("--local-ranks-filter", "0,,1", "t.py"), NOENV,
	    "argument --local-ranks-filter: invalid value '0,,1'");
	bad(ARGV("--local-ranks-filter", "a", "t.py"), NOENV,
	    "invalid value 'a'");
	bad(ARGV("--local-ranks-filter=-1", "t.py"), NOENV,
	    "invalid value '-1'");
}

static void test_script_untouched(void **state)
{
	struct hp_config c;
	ok(&c,
	   ARGV("--nproc-per-node", "2", "train.py", "--lr", "0.1", "--nnodes",
		"9", "-h", "--", "--foo=bar", "-m"),
	   NOENV);
	assert_int_equal(c.nnodes_max, 1);
	assert_false(c.module);
	static const char *const want[] = {"train.py", "--lr",  "0.1",
					   "--nnodes", "9",     "-h",
					   "--",       "--foo=bar", "-m"};
	assert_int_equal(c.script_argc, 9);
	for (int i = 0; i < 9; i++)
		assert_string_equal(c.script_argv[i], want[i]);
	assert_null(c.script_argv[9]);
	hp_config_fini(&c);

	/* "--" ends the options, even before something that looks like one. */
	ok(&c, ARGV("--nnodes=1", "--", "--weird-script", "--nnodes", "3"),
	   NOENV);
	assert_int_equal(c.script_argc, 3);
	assert_string_equal(c.script_argv[0], "--weird-script");
	assert_int_equal(c.nnodes_max, 1);
	hp_config_fini(&c);

	/* "-" and an arg with a space are positional (argparse). */
	ok(&c, ARGV("-", "x"), NOENV);
	assert_string_equal(c.script_argv[0], "-");
	hp_config_fini(&c);
	ok(&c, ARGV("-m", "-my module"), NOENV);
	assert_string_equal(c.script_argv[0], "-my module");
	hp_config_fini(&c);
}

static void test_missing_script_and_unknown(void **state)
{
	bad(ARGV("--nnodes", "1"), NOENV,
	    "the following arguments are required: training_script");
	bad(ARGV("--"), NOENV, "required: training_script");
	bad(ARGV("--standalone"), NOENV, "required");
	{
		char *argv[] = {"hyperpodrun", NULL};
		bad(argv, NOENV, "required");
	}
	bad(ARGV("--foo", "train.py"), NOENV, "unrecognized arguments: --foo");
	bad(ARGV("--foo=1", "train.py"), NOENV,
	    "unrecognized arguments: --foo=1");
	bad(ARGV("-x", "train.py"), NOENV, "unrecognized arguments: -x");
	bad(ARGV("-mx", "train.py"), NOENV, "unrecognized arguments: -mx");
	bad(ARGV("--nnodes"), NOENV, "argument --nnodes: expected one argument");
	bad(ARGV("--nnodes", "--standalone", "t.py"), NOENV,
	    "argument --nnodes: expected one argument");
	bad(ARGV("-r"), NOENV, "argument -r/--redirects: expected one argument");
	bad(ARGV("--master", "x", "t.py"), NOENV,
	    "ambiguous option: --master could match --master-addr, "
	    "--master-port");
}

static void test_abbreviations(void **state)
{
	struct hp_config c;
	ok(&c, ARGV("--nproc", "2", "--max_r=3", "train.py"), NOENV);
	assert_int_equal(c.nproc_per_node, 2);
	assert_int_equal(c.max_restarts, 3);
	hp_config_fini(&c);
}

static void test_help_and_version(void **state)
{
	struct hp_config c;
	char err[ERRLEN];
	assert_int_equal(parse(&c, ARGV("-h"), NOENV, err), HP_PARSE_HELP);
	hp_config_fini(&c);
	assert_int_equal(parse(&c, ARGV("--nnodes", "2", "--help", "x"), NOENV,
			       err),
			 HP_PARSE_HELP);
	hp_config_fini(&c);
	assert_int_equal(parse(&c, ARGV("--version"), NOENV, err),
			 HP_PARSE_VERSION);
	hp_config_fini(&c);

	const char *u = hp_config_usage();
	assert_int_equal(strncmp(u, "usage: hyperpodrun [-h] [", 25), 0);
	assert_null(strchr(u, '\n'));
	assert_non_null(strstr(u, "[--nnodes NNODES] "
				  "[--nproc-per-node NPROC_PER_NODE]"));
	size_t ul = strlen(u);
	assert_string_equal(u + ul - strlen("training_script ..."),
			    "training_script ...");

	static const char *const flags[] = {
		"--nnodes",          "--nproc-per-node",  "--rdzv-backend",
		"--rdzv-endpoint",   "--rdzv-id",         "--rdzv-conf",
		"--standalone",      "--max-restarts",    "--monitor-interval",
		"--start-method",    "--role",            "-m, --module",
		"--no-python",       "--run-path",        "--log-dir",
		"--redirects",       "--tee",             "--local-ranks-filter",
		"--logs-specs",      "--node-rank",       "--master-addr",
		"--master-port",     "--local-addr",      "--shutdown-signal",
		"--shutdown-timeout", "--server-host",    "--server-port",
		"--server-log-level", "--server-shutdown-timeout",
		"--pre-train-script", "--pre-train-args", "--post-train-script",
		"--post-train-args", "--inprocess-restart",
		"--inprocess-timeout", "--help",          "--version",
		"(default: 1:1)",    "(default: 29500)",  "(default: 8080)",
		"(default: SIGKILL)", "(default: 300)",   "(default: 127.0.0.1)",
		"(default: 0.0.0.0)", "(default: info)",  "(default: 15)",
		"PET_",
	};
	const char *h = hp_config_help();
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		if (!strstr(h, flags[i]))
			fail_msg("help lacks %s", flags[i]);
		bool in_usage = flags[i][0] == '-' && flags[i][1] == '-' &&
				strcmp(flags[i], "--help") != 0 &&
				strcmp(flags[i], "--redirects") != 0 &&
				strcmp(flags[i], "--tee") != 0;
		if (in_usage && !strstr(u, flags[i]))
			fail_msg("usage lacks %s", flags[i]);
	}
}

static void test_mode_rules(void **state)
{
	struct hp_config c;

	/* Operator: --rdzv-backend=hyperpod, even on one node. */
	ok(&c, ARGV("--rdzv-backend=hyperpod", "train.py"), NOENV);
	assert_int_equal(c.mode, HP_MODE_OPERATOR);
	assert_non_null(strstr(c.mode_reason, "hyperpod"));
	hp_config_fini(&c);

	/* Operator: nnodes > 1 and no backend given; the backend becomes
	 * hyperpod. */
	ok(&c, ARGV("--nnodes", "4", "train.py"), NOENV);
	assert_int_equal(c.mode, HP_MODE_OPERATOR);
	assert_string_equal(c.rdzv_backend, "hyperpod");
	assert_non_null(strstr(c.mode_reason, "--nnodes"));
	hp_config_fini(&c);

	/* Local: a static or c10d backend given explicitly (CLI or PET_). */
	ok(&c, ARGV("--nnodes", "4", "--rdzv_backend", "static", "--node_rank",
		    "3", "train.py"),
	   NOENV);
	assert_int_equal(c.mode, HP_MODE_LOCAL);
	assert_string_equal(c.rdzv_backend, "static");
	hp_config_fini(&c);
	ok(&c, ARGV("--nnodes", "4", "train.py"), ENV("PET_RDZV_BACKEND=c10d"));
	assert_int_equal(c.mode, HP_MODE_LOCAL);
	assert_string_equal(c.rdzv_backend, "c10d");
	hp_config_fini(&c);
	ok(&c, ARGV("--nnodes", "1:4", "--rdzv-backend", "c10d", "train.py"),
	   NOENV);
	assert_int_equal(c.mode, HP_MODE_LOCAL);
	hp_config_fini(&c);

	/* Local: one node without hyperpod. */
	ok(&c, ARGV("--nnodes", "1", "train.py"), NOENV);
	assert_int_equal(c.mode, HP_MODE_LOCAL);
	assert_string_equal(c.rdzv_backend, "static");
	hp_config_fini(&c);

	/* Local: --standalone beats everything. */
	ok(&c, ARGV("--standalone", "--rdzv-backend=hyperpod", "--nnodes=4",
		    "train.py"),
	   NOENV);
	assert_int_equal(c.mode, HP_MODE_LOCAL);
	hp_config_fini(&c);

	/* Operator mode wants a fixed size. */
	bad(ARGV("--nnodes", "2:4", "train.py"), NOENV,
	    "Elastic cluster size is currently not supported");
	bad(ARGV("--rdzv-backend", "hyperpod", "--nnodes=1:2", "train.py"),
	    NOENV, "Elastic cluster size is currently not supported");
	ok(&c, ARGV("--rdzv-backend", "hyperpod", "--nnodes=3:3", "--node-rank",
		    "7", "train.py"),
	   NOENV);
	assert_int_equal(c.mode, HP_MODE_OPERATOR);
	hp_config_fini(&c);
}

/* Inside a pod the operator drives the job whatever the command line
 * says (the reference forces rdzv_backend=hyperpod); HYPERPODRUN_MODE
 * overrides both ways. */
static void test_mode_in_a_pod(void **state)
{
	struct hp_config c;

	/* AWS's recipe line: no --nnodes, no backend; NNODES from the pod */
	ok(&c, ARGV("--nproc_per_node=8", "--tee", "3", "--redirect", "3",
		    "--inprocess-restart", "train.py"),
	   ENV("NNODES=16"));
	assert_int_equal(c.mode, HP_MODE_OPERATOR);
	assert_string_equal(c.rdzv_backend, "hyperpod");
	assert_int_equal(c.env_nnodes, 16);
	assert_non_null(strstr(c.mode_reason, "NNODES=16"));
	assert_null(c.mode_warning);
	hp_config_fini(&c);

	/* any Kubernetes pod; another backend is overridden with a warning */
	ok(&c, ARGV("--rdzv-backend=c10d", "train.py"),
	   ENV("KUBERNETES_SERVICE_HOST=10.0.0.1"));
	assert_int_equal(c.mode, HP_MODE_OPERATOR);
	assert_string_equal(c.rdzv_backend, "hyperpod");
	assert_non_null(strstr(c.mode_warning, "Overriding"));
	assert_non_null(strstr(c.mode_warning, "c10d"));
	hp_config_fini(&c);
	ok(&c, ARGV("--standalone", "train.py"), ENV("NNODES=2"));
	assert_int_equal(c.mode, HP_MODE_OPERATOR);
	assert_false(c.standalone);
	assert_non_null(c.mode_warning);
	hp_config_fini(&c);

	/* HYPERPODRUN_MODE=local wins over the pod; =operator over a laptop */
	ok(&c, ARGV("--nnodes=2", "train.py"),
	   ENV("NNODES=2", "HYPERPODRUN_MODE=local"));
	assert_int_equal(c.mode, HP_MODE_LOCAL);
	assert_string_equal(c.rdzv_backend, "static");
	assert_int_equal(c.env_nnodes, 0);
	assert_non_null(strstr(c.mode_reason, "HYPERPODRUN_MODE=local"));
	hp_config_fini(&c);
	ok(&c, ARGV("train.py"), ENV("HYPERPODRUN_MODE=Operator"));
	assert_int_equal(c.mode, HP_MODE_OPERATOR);
	hp_config_fini(&c);
	/* an empty variable counts as unset */
	ok(&c, ARGV("train.py"), ENV("NNODES=", "KUBERNETES_SERVICE_HOST="));
	assert_int_equal(c.mode, HP_MODE_LOCAL);
	hp_config_fini(&c);

	/* refusals */
	bad(ARGV("train.py"), ENV("HYPERPODRUN_MODE=both"),
	    "HYPERPODRUN_MODE: invalid value 'both'");
	/* c10d rounds restart processes only: IPR across c10d nodes would
	 * make every node group rank 0; one node or the operator is fine */
	bad(ARGV("--nnodes=2", "--rdzv-backend=c10d", "--inprocess-restart",
		 "train.py"), NOENV, "not allowed with --rdzv-backend=c10d");
	ok(&c, ARGV("--nnodes=1", "--rdzv-backend=c10d", "--inprocess-restart",
		    "train.py"), NOENV);
	hp_config_fini(&c);
	ok(&c, ARGV("--nnodes=2", "--rdzv-backend=c10d", "--inprocess-restart",
		    "train.py"), ENV("NNODES=2"));
	assert_int_equal(c.mode, HP_MODE_OPERATOR);
	hp_config_fini(&c);
	bad(ARGV("train.py"), ENV("NNODES=0"), "NNODES: invalid value '0'");
	bad(ARGV("train.py"), ENV("NNODES=100002"), "NNODES: invalid value");
	bad(ARGV("train.py"), ENV("NNODES=4x"), "NNODES: invalid value");
	/* the reference's test_unsupported_elasticity (30774934184): in a pod
	 * MIN:MAX is refused whatever the backend */
	bad(ARGV("--nnodes=1:4", "--rdzv-backend", "static", "train.py"),
	    ENV("NNODES=4"), "Elastic cluster size is currently not supported");
	/* outside a pod a local elastic range stays an engineer's choice */
	ok(&c, ARGV("--nnodes=1:4", "--rdzv-backend", "static", "train.py"),
	   NOENV);
	assert_int_equal(c.mode, HP_MODE_LOCAL);
	hp_config_fini(&c);
}

static void test_standalone_defaults(void **state)
{
	struct hp_config c;
	ok(&c, ARGV("--standalone", "--nproc-per-node=4", "train.py"), NOENV);
	assert_true(c.standalone);
	assert_string_equal(c.rdzv_backend, "c10d");
	assert_string_equal(c.rdzv_endpoint, "localhost:0");
	assert_string_equal(c.rdzv_id, "none");
	assert_int_equal(c.master_port, 0);
	assert_int_equal(c.nnodes_min, 1);
	assert_int_equal(c.nnodes_max, 1);
	assert_int_equal(c.node_rank, 0);
	assert_int_equal(c.mode, HP_MODE_LOCAL);
	assert_non_null(strstr(c.mode_reason, "standalone"));
	hp_config_fini(&c);

	ok(&c, ARGV("--standalone", "--rdzv-id", "mine", "--rdzv-endpoint",
		    "h:1", "--master-port", "1234", "--rdzv-backend", "etcd",
		    "--nnodes", "2:3", "train.py"),
	   NOENV);
	assert_string_equal(c.rdzv_id, "mine");
	assert_string_equal(c.rdzv_endpoint, "localhost:0");
	assert_string_equal(c.rdzv_backend, "c10d");
	assert_int_equal(c.master_port, 0);
	assert_true(c.master_port_given);
	assert_int_equal(c.nnodes_max, 1);
	hp_config_fini(&c);
}

static void test_null_err_buffer(void **state)
{
	struct hp_config c;
	char *argv[] = {"hyperpodrun", "--foo", NULL};
	assert_int_equal(hp_config_parse(&c, 2, argv, NULL, NULL, 0),
			 HP_PARSE_ERROR);
	hp_config_fini(&c);
	/* A tiny buffer truncates but stays terminated. */
	char err[8];
	assert_int_equal(hp_config_parse(&c, 2, argv, NULL, err, sizeof(err)),
			 HP_PARSE_ERROR);
	assert_int_equal(strlen(err), 7);
	hp_config_fini(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_value_flags_all_spellings),
		cmocka_unit_test(test_bool_flags),
		cmocka_unit_test(test_torch2_flags),
		cmocka_unit_test(test_pet_fallback),
		cmocka_unit_test(test_nnodes),
		cmocka_unit_test(test_server_host_default),
		cmocka_unit_test(test_nproc),
		cmocka_unit_test(test_hyperpod_bad_values),
		cmocka_unit_test(test_std_maps),
		cmocka_unit_test(test_local_ranks_filter),
		cmocka_unit_test(test_script_untouched),
		cmocka_unit_test(test_missing_script_and_unknown),
		cmocka_unit_test(test_abbreviations),
		cmocka_unit_test(test_help_and_version),
		cmocka_unit_test(test_mode_rules),
		cmocka_unit_test(test_mode_in_a_pod),
		cmocka_unit_test(test_standalone_defaults),
		cmocka_unit_test(test_null_err_buffer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
