/* failure.c — parses torch's error.json and formats the ChildFailedError
 * summary exactly as torch/distributed/elastic/multiprocessing/errors does
 * (templates copied field for field), so log scrapers keep working. Uses
 * cJSON for the error file only. */
#include "failure.h"

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/sbuf.h"
#include "base/xalloc.h"

static char *read_file(const char *path)
{
	FILE *fp = fopen(path, "r");
	if (!fp)
		return NULL;
	size_t cap = 4096, len = 0;
	char *buf = xmalloc(cap);
	size_t n;
	while ((n = fread(buf + len, 1, cap - len - 1, fp)) > 0) {
		len += n;
		if (len + 1 == cap)
			buf = xrealloc(buf, cap *= 2);
		if (len > (16u << 20))
			break; /* a runaway error file is not worth more */
	}
	fclose(fp);
	buf[len] = '\0';
	return buf;
}

/* The worker writes the error file: a timestamp out of range (1e300, NaN)
 * must not become undefined behaviour in a cast. Values are clamped to
 * what time_t arithmetic and localtime_r can take. */
#define TS_MAX 253402300799L /* 9999-12-31T23:59:59Z */

static long clamp_ts(double d)
{
	if (!(d == d) || d < 0)
		return 0;
	if (d > (double)TS_MAX)
		return TS_MAX;
	return (long)d;
}

static long json_long(const cJSON *v)
{
	if (cJSON_IsNumber(v))
		return clamp_ts(v->valuedouble);
	if (cJSON_IsString(v))
		return clamp_ts(strtod(v->valuestring, NULL));
	return 0;
}

void hp_failure_load(struct hp_failure *f, const char *error_file)
{
	char *text = error_file ? read_file(error_file) : NULL;
	if (!text)
		return;
	cJSON *root = cJSON_Parse(text);
	free(text);
	const cJSON *msg = cJSON_GetObjectItemCaseSensitive(root, "message");
	if (!msg) {
		cJSON_Delete(root);
		return;
	}
	f->error_file = xstrdup(error_file);
	free(f->message);
	f->message = NULL;
	if (cJSON_IsString(msg)) {
		f->message = xstrdup(msg->valuestring);
		const cJSON *ts =
			cJSON_GetObjectItemCaseSensitive(root, "timestamp");
		f->timestamp = ts ? json_long(ts) : 0;
	} else if (cJSON_IsObject(msg)) {
		const cJSON *extra =
			cJSON_GetObjectItemCaseSensitive(msg, "extraInfo");
		const cJSON *cs =
			cJSON_GetObjectItemCaseSensitive(extra, "py_callstack");
		const cJSON *m =
			cJSON_GetObjectItemCaseSensitive(msg, "message");
		if (cJSON_IsString(cs))
			f->message = xstrdup(cs->valuestring);
		else if (cJSON_IsString(m))
			f->message = xstrdup(m->valuestring);
		else
			f->message = xstrdup("<N/A>");
		f->timestamp = json_long(
			cJSON_GetObjectItemCaseSensitive(extra, "timestamp"));
	}
	cJSON_Delete(root);
}

size_t hp_failure_root(const struct hp_failure *fs, size_t n)
{
	size_t best = 0;
	for (size_t i = 1; i < n; i++)
		if (fs[i].timestamp < fs[best].timestamp)
			best = i;
	return best;
}

const char *hp_failure_text(const struct hp_failure *f, char *buf, size_t len)
{
	if (f->message)
		return f->message;
	if (f->exitcode < 0)
		snprintf(buf, len, "Signal %d (%s) received by PID %d",
			 -f->exitcode, hp_signal_name(-f->exitcode),
			 (int)f->pid);
	else
		snprintf(buf, len, "To enable traceback see: "
				   "https://pytorch.org/docs/stable/elastic/"
				   "errors.html");
	return buf;
}

/* One "[idx]:" block; returns its widest line. */
static size_t format_one(struct hp_sbuf *b, size_t idx, const struct hp_failure *f,
			 const char *hostname)
{
	char when[64] = "<N/A>";
	time_t t = (time_t)f->timestamp;
	struct tm tm;
	if (localtime_r(&t, &tm))
		strftime(when, sizeof(when), "%Y-%m-%d_%H:%M:%S", &tm);

	char made_up[128];
	const char *msg = hp_failure_text(f, made_up, sizeof(made_up));
	/* indent a multi-line traceback as torch does */
	struct hp_sbuf m = {0};
	for (const char *p = msg; *p; p++) {
		if (*p == '\n')
			hp_sbuf_puts(&m, "\n  ");
		else
			hp_sbuf_add(&m, p, 1);
	}
	if (!m.p)
		hp_sbuf_puts(&m, "");

	char *blk = xasprintf("[%zu]:\n"
			      "  time      : %s\n"
			      "  host      : %s\n"
			      "  rank      : %d (local_rank: %d)\n"
			      "  exitcode  : %d (pid: %d)\n"
			      "  error_file: %s\n"
			      "  traceback : %s",
			      idx, when, hostname, f->rank, f->local_rank,
			      f->exitcode, (int)f->pid,
			      f->error_file ? f->error_file : "<N/A>", m.p);
	free(m.p);
	size_t width = 0, cur = 0;
	for (const char *p = blk; *p; p++) {
		if (*p == '\n') {
			width = HP_MAX(width, cur);
			cur = 0;
		} else {
			cur++;
		}
	}
	width = HP_MAX(width, cur);
	hp_sbuf_puts(b, blk);
	free(blk);
	return width;
}

char *hp_failure_summary(const char *name, const struct hp_failure *fs,
			 size_t n, const char *hostname)
{
	char *title = xasprintf("%s FAILED", name);
	size_t root = hp_failure_root(fs, n);
	struct hp_sbuf rootb = {0}, others = {0};
	size_t width = strlen(title);
	size_t n_others = 0;
	for (size_t i = 0; i < n; i++) {
		size_t w;
		if (i == root) {
			w = format_one(&rootb, i, &fs[i], hostname);
		} else {
			if (n_others++)
				hp_sbuf_puts(&others, "\n");
			w = format_one(&others, i, &fs[i], hostname);
		}
		width = HP_MAX(width, w);
	}
	width = HP_MIN(width, 60);
	if (!n_others)
		hp_sbuf_puts(&others, "  <NO_OTHER_FAILURES>");
	if (!rootb.p)
		hp_sbuf_puts(&rootb, "");

	struct hp_sbuf out = {0};
	hp_sbuf_puts(&out, "\n");
	hp_sbuf_repeat(&out, '=', width);
	hp_sbuf_puts(&out, "\n");
	hp_sbuf_puts(&out, title);
	hp_sbuf_puts(&out, "\n");
	hp_sbuf_repeat(&out, '-', width);
	hp_sbuf_puts(&out, "\nFailures:\n");
	hp_sbuf_puts(&out, others.p);
	hp_sbuf_puts(&out, "\n");
	hp_sbuf_repeat(&out, '-', width);
	hp_sbuf_puts(&out, "\nRoot Cause (first observed failure):\n");
	hp_sbuf_puts(&out, rootb.p);
	hp_sbuf_puts(&out, "\n");
	hp_sbuf_repeat(&out, '=', width);
	free(title);
	free(rootb.p);
	free(others.p);
	return out.p;
}

void hp_failure_fini(struct hp_failure *f)
{
	if (!f)
		return;
	free(f->error_file);
	free(f->message);
	f->error_file = NULL;
	f->message = NULL;
}

const char hp_failure_run_path_py[] =
	"import faulthandler, json, os, runpy, sys, time, traceback\n"
	"try:\n"
	"    faulthandler.enable(all_threads=True)\n"
	"except Exception:\n"
	"    pass\n"
	"sys.argv = sys.argv[1:]\n"
	"try:\n"
	"    runpy.run_path(sys.argv[0], run_name='__main__')\n"
	"except Exception as e:\n"
	"    f = os.environ.get('TORCHELASTIC_ERROR_FILE')\n"
	"    if f:\n"
	"        d = {'message': {'message': '%s: %s' % (type(e).__name__, e),\n"
	"             'extraInfo': {'py_callstack': traceback.format_exc(),\n"
	"                           'timestamp': str(int(time.time()))}}}\n"
	"        with open(f, 'w') as fp:\n"
	"            json.dump(d, fp)\n"
	"    raise\n";
