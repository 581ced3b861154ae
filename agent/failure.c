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

#include "xalloc.h"

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

struct sbuf {
	char *p;
	size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static void sb_rep(struct sbuf *b, char c, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sb_add(b, &c, 1);
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
static size_t format_one(struct sbuf *b, size_t idx, const struct hp_failure *f,
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
	struct sbuf m = {0};
	for (const char *p = msg; *p; p++) {
		if (*p == '\n')
			sb_str(&m, "\n  ");
		else
			sb_add(&m, p, 1);
	}
	if (!m.p)
		sb_str(&m, "");

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
	sb_str(b, blk);
	free(blk);
	return width;
}

char *hp_failure_summary(const char *name, const struct hp_failure *fs,
			 size_t n, const char *hostname)
{
	char *title = xasprintf("%s FAILED", name);
	size_t root = hp_failure_root(fs, n);
	struct sbuf rootb = {0}, others = {0};
	size_t width = strlen(title);
	size_t n_others = 0;
	for (size_t i = 0; i < n; i++) {
		size_t w;
		if (i == root) {
			w = format_one(&rootb, i, &fs[i], hostname);
		} else {
			if (n_others++)
				sb_str(&others, "\n");
			w = format_one(&others, i, &fs[i], hostname);
		}
		width = HP_MAX(width, w);
	}
	width = HP_MIN(width, 60);
	if (!n_others)
		sb_str(&others, "  <NO_OTHER_FAILURES>");
	if (!rootb.p)
		sb_str(&rootb, "");

	struct sbuf out = {0};
	sb_str(&out, "\n");
	sb_rep(&out, '=', width);
	sb_str(&out, "\n");
	sb_str(&out, title);
	sb_str(&out, "\n");
	sb_rep(&out, '-', width);
	sb_str(&out, "\nFailures:\n");
	sb_str(&out, others.p);
	sb_str(&out, "\n");
	sb_rep(&out, '-', width);
	sb_str(&out, "\nRoot Cause (first observed failure):\n");
	sb_str(&out, rootb.p);
	sb_str(&out, "\n");
	sb_rep(&out, '=', width);
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
