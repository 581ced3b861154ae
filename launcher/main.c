/* main.c — hyperpodrun's entry point. Reads like a table of contents: parse
 * the command line, resolve what needs I/O (GPU/CPU counts, that the
 * scripts exist), hand the config to the agent, return its exit code.
 * Exit codes: 0 success, 1 job failed, 2 usage error, 128+signo when ended
 * by a forwarded signal. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent.h"
#include "base/log.h"
#include "hp-version.h"
#include "launcher/config.h"

extern char **environ;

static int usage_error(const char *msg)
{
	fprintf(stderr, "%s\nhyperpodrun: error: %s\n", hp_config_usage(),
		msg);
	return 2;
}

static int count_gpus(void)
{
	const char *vis = getenv("CUDA_VISIBLE_DEVICES");
	if (vis) {
		int n = 0;
		for (const char *p = vis; *p;) {
			while (*p == ',' || *p == ' ')
				p++;
			if (!*p)
				break;
			if (*p == '-')
				break; /* "-1" hides every device */
			n++;
			while (*p && *p != ',')
				p++;
		}
		return n;
	}
	DIR *d = opendir("/dev");
	if (!d)
		return 0;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		const char *s = e->d_name;
		if (strncmp(s, "nvidia", 6) != 0 || !s[6])
			continue;
		bool digits = true;
		for (const char *p = s + 6; *p; p++)
			digits &= *p >= '0' && *p <= '9';
		n += digits;
	}
	closedir(d);
	return n;
}

/* --nproc-per-node=gpu|cpu|auto need to look at the machine. */
static int resolve_nproc(struct hp_config *c)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	int gpus;
	switch (c->nproc_kind) {
	case HP_NPROC_NUMBER:
		return 0;
	case HP_NPROC_GPU:
		gpus = count_gpus();
		if (gpus <= 0)
			return usage_error("argument --nproc-per-node: 'gpu' "
					   "given but no GPU is visible");
		c->nproc_per_node = gpus;
		return 0;
	case HP_NPROC_CPU:
		c->nproc_per_node = (int)(cpus > 0 ? cpus : 1);
		return 0;
	case HP_NPROC_AUTO:
		gpus = count_gpus();
		c->nproc_per_node = gpus > 0 ? gpus : (int)(cpus > 0 ? cpus : 1);
		return 0;
	}
	return 0;
}

static bool in_path(const char *name)
{
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	char buf[4096];
	for (const char *p = path; *p;) {
		const char *end = strchr(p, ':');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		snprintf(buf, sizeof(buf), "%.*s/%s", (int)len, p, name);
		if (access(buf, X_OK) == 0)
			return true;
		p += len + (end ? 1 : 0);
	}
	return false;
}

/* A missing script is the user's mistake: name the path now rather than
 * failing every worker and restarting max_restarts times. */
static int check_program(const char *what, const char *path, bool executable)
{
	char msg[4200];
	if (!executable || strchr(path, '/')) {
		struct stat st;
		if (stat(path, &st) < 0) {
			snprintf(msg, sizeof(msg), "%s '%s' not found: %s",
				 what, path, strerror(errno));
			return usage_error(msg);
		}
		if (S_ISDIR(st.st_mode)) {
			/* python runs a directory (or a zip: a regular file)
			 * that holds __main__.py, and so does torchrun */
			char main_py[4200];
			snprintf(main_py, sizeof(main_py), "%s/__main__.py",
				 path);
			if (!executable && access(main_py, R_OK) == 0)
				return 0;
			snprintf(msg, sizeof(msg), "%s '%s' is a directory%s",
				 what, path,
				 executable ? "" : " without __main__.py");
			return usage_error(msg);
		}
		if (executable && access(path, X_OK) < 0) {
			snprintf(msg, sizeof(msg), "%s '%s' is not executable",
				 what, path);
			return usage_error(msg);
		}
		return 0;
	}
	if (!in_path(path)) {
		snprintf(msg, sizeof(msg), "%s '%s' not found in PATH", what,
			 path);
		return usage_error(msg);
	}
	return 0;
}

static int check_scripts(const struct hp_config *c)
{
	int rc = 0;
	if (!c->module)
		rc = check_program("training script", c->script_argv[0],
				   c->no_python);
	if (!rc && c->pre_train_script)
		rc = check_program("pre-train script", c->pre_train_script,
				   true);
	if (!rc && c->post_train_script)
		rc = check_program("post-train script", c->post_train_script,
				   true);
	return rc;
}

static void set_log_level(void)
{
	const char *lvl = getenv("HYPERPODRUN_LOG_LEVEL");
	enum hp_log_level l;
	if (lvl && hp_log_parse_level(lvl, &l) == 0)
		hp_log_level = l;
}

int main(int argc, char **argv)
{
	struct hp_config cfg = {0};
	char err[512] = "";
	int rc;

	set_log_level();
	switch (hp_config_parse(&cfg, argc, argv, environ, err, sizeof(err))) {
	case HP_PARSE_HELP:
		fputs(hp_config_help(), stdout);
		rc = 0;
		goto out;
	case HP_PARSE_VERSION:
		printf("hyperpodrun %s (reports agent_version %s)\n", HP_VERSION,
		       HP_AGENT_VERSION(HP_VERSION));
		rc = 0;
		goto out;
	case HP_PARSE_ERROR:
		rc = usage_error(err);
		goto out;
	case HP_PARSE_OK:
		break;
	}
	if (cfg.accepted_note)
		hp_warn("launcher", "torch 2.x flags accepted without effect: "
			"%s", cfg.accepted_note);
	rc = resolve_nproc(&cfg);
	if (!rc)
		rc = check_scripts(&cfg);
	if (rc)
		goto out;

	struct hp_agent *agent = hp_agent_new(&cfg);
	rc = hp_agent_run(agent);
	hp_agent_free(agent);
out:
	hp_config_fini(&cfg);
	return rc;
}
