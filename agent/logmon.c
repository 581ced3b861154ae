/* logmon.c — the operator's log-monitoring rules, evaluated as the
 * reference agent's LogEvaluator/LogAgent do (hyperpod-elastic-agent
 * 1.1.x, logagent/log_agent.py), but driven by lines and a timer instead of
 * a 1 s polling thread. Owns the compiled PCRE2 patterns, the per-rule
 * state and one uv timer. It must never block: every match runs under
 * PCRE2 match/depth/heap limits. Uses cJSON directly (the one exception to
 * "cJSON stays in server/json.c"): the configuration is free-form JSON the
 * server only forwards as text, and turning it into rules is this file's
 * job. */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "logmon.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/sbuf.h"
#include "base/xalloc.h"

enum op { OP_NONE = 0, OP_GT, OP_LT, OP_EQ, OP_GTEQ, OP_LTEQ };

static const char *const op_names[] = {NULL, "gt", "lt", "eq", "gteq",
				       "lteq"};

struct rule {
	char *name;
	pcre2_code *pat;
	pcre2_code *stop; /* stopPattern, or NULL */
	uint32_t ngroups;
	bool has_start, has_recurring, has_threshold;
	long long start_cutoff_s, recurring_s, threshold;
	enum op op;
	long long eval_points; /* metricEvaluationDataPoints */
	bool fault_on_match;

	/* run time, reset by arm */
	bool active;
	bool matched;
	uint64_t start_ms, match_ms;
	char *match_line; /* with the newline, as Python's readline keeps it */
	long long slow_count;
	enum hp_logmon_state state;
	bool warned;
};

struct hp_logmon {
	uv_loop_t *loop;
	uv_timer_t timer;
	hp_logmon_trip_cb cb;
	void *ud;
	struct rule *rules;
	size_t n;
	pcre2_match_context *mctx;
	pcre2_match_data *md;
	bool armed;
	/* a trip waiting for the timer to deliver it (see trip()) */
	bool pending;
	enum hp_logmon_state p_state;
	char *p_rule, *p_reason, *p_message;
};

const char *hp_logmon_state_name(enum hp_logmon_state s)
{
	static const char *const names[] = {"WAITING", "HEALTHY", "SLOW",
					    "HANGING", "FAULTED"};
	return (unsigned)s < HP_ARRAY_LEN(names) ? names[s] : "?";
}

/* ---- configuration ------------------------------------------------- */

static void rule_fini(struct rule *r)
{
	free(r->name);
	pcre2_code_free(r->pat);
	pcre2_code_free(r->stop);
	free(r->match_line);
	memset(r, 0, sizeof(*r));
}

static void free_rules(struct hp_logmon *m)
{
	for (size_t i = 0; i < m->n; i++)
		rule_fini(&m->rules[i]);
	free(m->rules);
	m->rules = NULL;
	m->n = 0;
}

/* Python's int() of a JSON value: an int, a float (truncated), a bool, or
 * a string of decimal digits (spaces around, a sign, '_' between digits).
 * Anything else makes the reference's int() raise. */
static int py_int(const cJSON *v, long long *out)
{
	if (cJSON_IsBool(v)) {
		*out = cJSON_IsTrue(v);
		return 0;
	}
	if (cJSON_IsNumber(v)) {
		double d = v->valuedouble;
		if (!isfinite(d) || fabs(d) > 1e15)
			return -EINVAL;
		*out = (long long)d; /* truncates toward zero, as int() */
		return 0;
	}
	if (!cJSON_IsString(v))
		return -EINVAL;
	const char *p = v->valuestring;
	while (isspace((unsigned char)*p))
		p++;
	bool neg = *p == '-';
	if (*p == '-' || *p == '+')
		p++;
	long long n = 0;
	int digits = 0;
	bool prev_digit = false;
	for (; *p && !isspace((unsigned char)*p); p++) {
		if (*p == '_' && prev_digit && isdigit((unsigned char)p[1])) {
			prev_digit = false;
			continue;
		}
		if (!isdigit((unsigned char)*p) || n > 100000000000000LL)
			return -EINVAL;
		n = n * 10 + (*p - '0');
		digits++;
		prev_digit = true;
	}
	while (isspace((unsigned char)*p))
		p++;
	if (!digits || *p)
		return -EINVAL;
	*out = neg ? -n : n;
	return 0;
}

/* Python truthiness of faultOnMatch. */
static bool py_truthy(const cJSON *v)
{
	if (cJSON_IsTrue(v))
		return true;
	if (cJSON_IsNumber(v))
		return v->valuedouble != 0;
	if (cJSON_IsString(v))
		return v->valuestring[0] != '\0';
	if (cJSON_IsArray(v) || cJSON_IsObject(v))
		return cJSON_GetArraySize(v) > 0;
	return false;
}

/* An optional field; JSON null counts as absent (inferred: the reference
 * tests "key in rule", so a null would make its int() raise; an operator
 * that serialises unset fields as null should not lose every rule). */
static const cJSON *field(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsNull(v) ? NULL : v;
}

static pcre2_code *compile(const char *rule, const char *what,
			   const char *pattern)
{
	size_t len = strlen(pattern);
	if (len > HP_LOGMON_MAX_PATTERN) {
		hp_error("logmon", "rule '%s': %s is %zu bytes (the limit is "
			 "%d)", rule, what, len, HP_LOGMON_MAX_PATTERN);
		return NULL;
	}
	int err;
	PCRE2_SIZE off;
	/* Python str patterns are Unicode-aware (\d, \w match non-ASCII);
	 * worker output may hold invalid UTF-8, which must not be an error */
	pcre2_code *c = pcre2_compile((PCRE2_SPTR)pattern, len,
				      PCRE2_UTF | PCRE2_UCP |
					      PCRE2_MATCH_INVALID_UTF,
				      &err, &off, NULL);
	if (!c) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(err, msg, sizeof(msg));
		hp_error("logmon", "rule '%s': %s /%s/ does not compile at "
			 "offset %zu: %s", rule, what, pattern, (size_t)off,
			 (const char *)msg);
		return NULL;
	}
	/* JIT where available (several times faster on the ".*x.*"
	 * patterns operators write); it honours the match limit and its
	 * fixed 32 KiB stack bounds the depth. Without JIT, pcre2_match
	 * interprets under all three limits. */
	(void)pcre2_jit_compile(c, PCRE2_JIT_COMPLETE);
	return c;
}

static int parse_rule(const cJSON *o, size_t idx, struct rule *r)
{
	char label[32];
	snprintf(label, sizeof(label), "#%zu", idx);
	if (!cJSON_IsObject(o)) {
		hp_error("logmon", "rule %s is not an object", label);
		return -EINVAL;
	}
	const cJSON *name = field(o, "name");
	if (!cJSON_IsString(name) || !name->valuestring[0]) {
		hp_error("logmon", "rule %s: 'name' must be a non-empty "
			 "string", label);
		return -EINVAL;
	}
	r->name = xstrdup(name->valuestring);
	const cJSON *pat = field(o, "logPattern");
	if (!cJSON_IsString(pat)) {
		hp_error("logmon", "rule '%s': 'logPattern' must be a string",
			 r->name);
		return -EINVAL;
	}
	if (!(r->pat = compile(r->name, "logPattern", pat->valuestring)))
		return -EINVAL;
	pcre2_pattern_info(r->pat, PCRE2_INFO_CAPTURECOUNT, &r->ngroups);
	const cJSON *stop = field(o, "stopPattern");
	if (stop) {
		if (!cJSON_IsString(stop)) {
			hp_error("logmon", "rule '%s': 'stopPattern' must be a "
				 "string", r->name);
			return -EINVAL;
		}
		if (!(r->stop = compile(r->name, "stopPattern",
					stop->valuestring)))
			return -EINVAL;
	}
	static const struct {
		const char *key;
		size_t has, val;
	} ints[] = {
		{"expectedStartCutOffInSeconds", offsetof(struct rule, has_start),
		 offsetof(struct rule, start_cutoff_s)},
		{"expectedRecurringFrequencyInSeconds",
		 offsetof(struct rule, has_recurring),
		 offsetof(struct rule, recurring_s)},
		{"metricThreshold", offsetof(struct rule, has_threshold),
		 offsetof(struct rule, threshold)},
	};
	for (size_t i = 0; i < HP_ARRAY_LEN(ints); i++) {
		const cJSON *v = field(o, ints[i].key);
		if (!v)
			continue;
		long long *val = (long long *)((char *)r + ints[i].val);
		if (py_int(v, val) < 0) {
			hp_error("logmon", "rule '%s': '%s' is not an integer",
				 r->name, ints[i].key);
			return -EINVAL;
		}
		*(bool *)((char *)r + ints[i].has) = true;
	}
	r->eval_points = 1;
	const cJSON *pts = field(o, "metricEvaluationDataPoints");
	if (pts && py_int(pts, &r->eval_points) < 0) {
		hp_error("logmon", "rule '%s': 'metricEvaluationDataPoints' is "
			 "not an integer", r->name);
		return -EINVAL;
	}
	const cJSON *op = field(o, "operator");
	if (op) {
		/* the reference asserts membership only when truthy */
		if (!cJSON_IsString(op)) {
			hp_error("logmon", "rule '%s': 'operator' must be a "
				 "string", r->name);
			return -EINVAL;
		}
		for (size_t i = 1; i < HP_ARRAY_LEN(op_names); i++)
			if (strcmp(op->valuestring, op_names[i]) == 0)
				r->op = (enum op)i;
		if (!r->op && op->valuestring[0]) {
			hp_error("logmon", "rule '%s': invalid operator '%s', "
				 "should be one of gt, lt, eq, gteq, lteq",
				 r->name, op->valuestring);
			return -EINVAL;
		}
	}
	const cJSON *fom = field(o, "faultOnMatch");
	r->fault_on_match = fom && py_truthy(fom);
	return 0;
}

int hp_logmon_configure(struct hp_logmon *m, const char *json)
{
	hp_logmon_disarm(m);
	free_rules(m);
	if (!json)
		return 0;
	cJSON *root = cJSON_Parse(json);
	int rc = 0;
	if (cJSON_IsNull(root))
		goto out;
	if (!cJSON_IsArray(root)) {
		hp_error("logmon", "log_monitoring_configuration is not a list: "
			 "log monitoring is off");
		rc = -EINVAL;
		goto out;
	}
	size_t n = (size_t)cJSON_GetArraySize(root);
	if (n > HP_LOGMON_MAX_RULES) {
		hp_error("logmon", "log_monitoring_configuration has %zu rules "
			 "(the limit is %d): log monitoring is off", n,
			 HP_LOGMON_MAX_RULES);
		rc = -EINVAL;
		goto out;
	}
	m->rules = xcalloc(n ? n : 1, sizeof(*m->rules));
	m->n = n;
	size_t i = 0;
	const cJSON *o;
	cJSON_ArrayForEach(o, root)
	{
		if (parse_rule(o, i, &m->rules[i]) < 0) {
			hp_error("logmon", "Failed to load Log Monitoring "
				 "Configuration: log monitoring is off");
			free_rules(m);
			rc = -EINVAL;
			goto out;
		}
		i++;
	}
	rc = (int)n;
	if (n)
		hp_info("logmon", "%zu log monitoring rule(s) loaded", n);
out:
	cJSON_Delete(root);
	return rc;
}

size_t hp_logmon_rule_count(const struct hp_logmon *m)
{
	return m->n;
}

/* ---- evaluation ----------------------------------------------------- */

/* Python's re.match: anchored at the start. A limit hit is no match. */
static int match(struct hp_logmon *m, struct rule *r, pcre2_code *c,
		 const char *s, size_t len)
{
	int rc = pcre2_match(c, (PCRE2_SPTR)s, len, 0, PCRE2_ANCHORED, m->md,
			     m->mctx);
	if (rc >= 0)
		return rc;
	if (rc != PCRE2_ERROR_NOMATCH && !r->warned) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(rc, msg, sizeof(msg));
		hp_warn("logmon", "rule '%s': matching stopped (%s): treated "
			"as no match", r->name, (const char *)msg);
		r->warned = true;
	}
	return -1;
}

/* Python's float() of the first group: digits, sign, point, exponent,
 * inf/nan, spaces around. */
static bool py_float(const char *s, size_t len, double *out)
{
	char buf[128];
	if (len >= sizeof(buf))
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	size_t k = 0;
	for (size_t i = 0; i < len; i++)
		if (buf[i] != '_')
			buf[k++] = buf[i];
	buf[k] = '\0';
	char *p = buf;
	while (isspace((unsigned char)*p))
		p++;
	if (!*p || (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')))
		return false; /* strtod would take hex; Python does not */
	char *end;
	*out = strtod(p, &end);
	if (end == p)
		return false;
	while (isspace((unsigned char)*end))
		end++;
	return *end == '\0';
}

static bool crossed(const struct rule *r, double v)
{
	double t = (double)r->threshold;
	switch (r->op) {
	case OP_GT:
		return v > t;
	case OP_LT:
		return v < t;
	case OP_EQ:
		return v == t;
	case OP_GTEQ:
		return v >= t;
	case OP_LTEQ:
		return v <= t;
	case OP_NONE:
		break;
	}
	return false;
}

/* LogEvaluator.evaluate(line); line NULL = a deadline check only. */
static enum hp_logmon_state evaluate(struct hp_logmon *m, struct rule *r,
				     const char *line, size_t len,
				     uint64_t now)
{
	if (!r->active)
		return r->state = HP_LOGMON_HEALTHY;
	int mrc = line ? match(m, r, r->pat, line, len) : -1;
	if (mrc >= 0) {
		free(r->match_line);
		r->match_line = xmalloc(len + 1);
		memcpy(r->match_line, line, len);
		r->match_line[len] = '\0';
		r->matched = true;
		r->match_ms = now;
		if (r->fault_on_match)
			return r->state = HP_LOGMON_FAULTED;
	}
	/* groups of logPattern are read below, before stopPattern reuses
	 * the match data */
	double value = 0;
	bool bad_value = false;
	if (mrc >= 0 && r->ngroups && r->has_threshold && r->op) {
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(m->md);
		/* rc 1: no group took part; rc 0: the ovector is full, so
		 * group 1 is in it */
		if (mrc == 1 || ov[2] == PCRE2_UNSET)
			bad_value = true; /* float(None) raises */
		else
			bad_value = !py_float(line + ov[2], ov[3] - ov[2],
					      &value);
	}
	if (line && r->stop && match(m, r, r->stop, line, len) >= 0) {
		r->active = false;
		return r->state = HP_LOGMON_HEALTHY;
	}
	if (r->has_start && !r->matched &&
	    now - r->start_ms > (uint64_t)HP_MAX(r->start_cutoff_s, 0) * 1000)
		return r->state = HP_LOGMON_HANGING;
	if (r->has_recurring && r->matched &&
	    now - r->match_ms > (uint64_t)HP_MAX(r->recurring_s, 0) * 1000)
		return r->state = HP_LOGMON_HANGING;
	if (mrc < 0)
		return r->state;
	if (!r->ngroups || !r->has_threshold || !r->op)
		return r->state = HP_LOGMON_HEALTHY;
	if (bad_value) {
		/* the reference's evaluate raises here and the line is
		 * skipped: nothing changes */
		hp_debug("logmon", "rule '%s': the first group is not a "
			 "number", r->name);
		return r->state;
	}
	if (crossed(r, value)) {
		if (r->slow_count < r->eval_points)
			r->slow_count++;
	} else {
		r->slow_count = 0;
	}
	if (r->slow_count >= r->eval_points)
		return r->state = HP_LOGMON_SLOW;
	return r->state = HP_LOGMON_HEALTHY;
}

/* Python's repr() of a str: single quotes unless the text has a single
 * quote and no double quote; \\, \n, \r, \t and \xNN for other controls. */
static void sb_repr(struct hp_sbuf *b, const char *s)
{
	char q = strchr(s, '\'') && !strchr(s, '"') ? '"' : '\'';
	hp_sbuf_add(b, &q, 1);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		char esc[8];
		if (*p == '\\' || *p == (unsigned char)q) {
			esc[0] = '\\';
			esc[1] = (char)*p;
			hp_sbuf_add(b, esc, 2);
		} else if (*p == '\n') {
			hp_sbuf_puts(b, "\\n");
		} else if (*p == '\r') {
			hp_sbuf_puts(b, "\\r");
		} else if (*p == '\t') {
			hp_sbuf_puts(b, "\\t");
		} else if (*p < 0x20 || *p == 0x7f) {
			snprintf(esc, sizeof(esc), "\\x%02x", *p);
			hp_sbuf_puts(b, esc);
		} else {
			hp_sbuf_add(b, (const char *)p, 1);
		}
	}
	hp_sbuf_add(b, &q, 1);
}

static void deliver(struct hp_logmon *m)
{
	if (!m->pending)
		return;
	m->pending = false;
	if (m->cb)
		m->cb(m->ud, m->p_state, m->p_rule, m->p_reason, m->p_message);
	free(m->p_rule);
	free(m->p_reason);
	free(m->p_message);
	m->p_rule = m->p_reason = m->p_message = NULL;
}

static void timer_cb(uv_timer_t *t);

/* Records the trip of the given state (set_agent_state_fault's reason and
 * message), disarms, and hands it to the callback from the timer: never
 * from inside the logs relay that fed the line, so the callback may stop
 * workers and close their pipes. */
static void trip(struct hp_logmon *m, enum hp_logmon_state st)
{
	static const char *const prefix[] = {
		[HP_LOGMON_SLOW] = "LogSlow_",
		[HP_LOGMON_HANGING] = "LogHang_",
		[HP_LOGMON_FAULTED] = "LogFault_",
	};
	static const char *const text[] = {
		[HP_LOGMON_SLOW] =
			"The job is slowed (logs outside of acceptable "
			"thresholds) on the following log monitoring rules "
			"and corresponding log lines: ",
		[HP_LOGMON_HANGING] =
			"The job is hanging (not receiving required logs) on "
			"the following log monitoring rules and corresponding "
			"last matched log lines: ",
		[HP_LOGMON_FAULTED] =
			"The job detected a fault indicating log message for "
			"the following log monitoring rules and corresponding "
			"log lines: ",
	};
	struct hp_sbuf msg = {0};
	const char *first = NULL;
	hp_sbuf_puts(&msg, text[st]);
	hp_sbuf_puts(&msg, "{");
	for (size_t i = 0; i < m->n; i++) {
		const struct rule *r = &m->rules[i];
		if (r->state != st)
			continue;
		if (first)
			hp_sbuf_puts(&msg, ", ");
		else
			first = r->name;
		sb_repr(&msg, r->name);
		hp_sbuf_puts(&msg, ": ");
		if (r->match_line)
			sb_repr(&msg, r->match_line);
		else
			hp_sbuf_puts(&msg, "None");
	}
	hp_sbuf_puts(&msg, "}");
	hp_logmon_disarm(m);
	m->pending = true;
	m->p_state = st;
	m->p_rule = xstrdup(first);
	m->p_reason = xasprintf("%s%s", prefix[st], first);
	m->p_message = hp_sbuf_finish(&msg);
	hp_debug("logmon", "%s: %s", m->p_reason, m->p_message);
	if (m->loop)
		uv_timer_start(&m->timer, timer_cb, 0, 0);
	else
		deliver(m);
}

uint64_t hp_logmon_next_deadline(const struct hp_logmon *m)
{
	uint64_t next = UINT64_MAX;
	if (!m->armed)
		return next;
	for (size_t i = 0; i < m->n; i++) {
		const struct rule *r = &m->rules[i];
		uint64_t d = UINT64_MAX;
		if (!r->active)
			continue;
		/* the evaluator trips when the elapsed time is strictly
		 * greater than the limit: one millisecond past it */
		if (r->has_start && !r->matched)
			d = r->start_ms +
			    (uint64_t)HP_MAX(r->start_cutoff_s, 0) * 1000 + 1;
		else if (r->has_recurring && r->matched)
			d = r->match_ms +
			    (uint64_t)HP_MAX(r->recurring_s, 0) * 1000 + 1;
		next = HP_MIN(next, d);
	}
	return next;
}

static void reschedule(struct hp_logmon *m, uint64_t now)
{
	if (!m->loop || m->pending)
		return;
	uint64_t d = hp_logmon_next_deadline(m);
	if (d == UINT64_MAX) {
		uv_timer_stop(&m->timer);
		return;
	}
	uv_timer_start(&m->timer, timer_cb, d > now ? d - now : 0, 0);
}

/* One evaluation round over every rule, aggregated as LogAgent does. */
static enum hp_logmon_state round_(struct hp_logmon *m, const char *line,
				   size_t len, uint64_t now)
{
	if (!m->armed)
		return HP_LOGMON_WAITING;
	bool seen[HP_LOGMON_FAULTED + 1] = {false};
	for (size_t i = 0; i < m->n; i++)
		seen[evaluate(m, &m->rules[i], line, len, now)] = true;
	static const enum hp_logmon_state rank[] = {
		HP_LOGMON_FAULTED, HP_LOGMON_HANGING, HP_LOGMON_SLOW,
		HP_LOGMON_HEALTHY};
	for (size_t i = 0; i < HP_ARRAY_LEN(rank); i++) {
		if (!seen[rank[i]])
			continue;
		if (rank[i] != HP_LOGMON_HEALTHY)
			trip(m, rank[i]);
		else
			reschedule(m, now);
		return rank[i];
	}
	reschedule(m, now);
	return HP_LOGMON_WAITING;
}

enum hp_logmon_state hp_logmon_line_at(struct hp_logmon *m, const char *line,
				       size_t len, uint64_t now_ms)
{
	if (!m->armed)
		return HP_LOGMON_WAITING;
	/* the reference reads lines with their newline; PCRE2's $ matches
	 * before a final newline exactly as Python's does */
	char stackbuf[1024];
	char *buf = len + 2 <= sizeof(stackbuf) ? stackbuf : xmalloc(len + 2);
	memcpy(buf, line, len);
	buf[len] = '\n';
	buf[len + 1] = '\0';
	enum hp_logmon_state st = round_(m, buf, len + 1, now_ms);
	if (buf != stackbuf)
		free(buf);
	return st;
}

void hp_logmon_line(struct hp_logmon *m, const char *line, size_t len)
{
	if (m->armed)
		hp_logmon_line_at(m, line, len, uv_now(m->loop));
}

enum hp_logmon_state hp_logmon_tick_at(struct hp_logmon *m, uint64_t now_ms)
{
	return round_(m, NULL, 0, now_ms);
}

static void timer_cb(uv_timer_t *t)
{
	struct hp_logmon *m = t->data;
	if (m->pending) {
		deliver(m);
		/* re-armed while the trip waited (or from the callback) */
		if (m->armed)
			reschedule(m, uv_now(m->loop));
		return;
	}
	hp_logmon_tick_at(m, uv_now(m->loop));
}

/* ---- life cycle ----------------------------------------------------- */

void hp_logmon_arm_at(struct hp_logmon *m, uint64_t now_ms)
{
	hp_logmon_disarm(m);
	if (!m->n)
		return;
	for (size_t i = 0; i < m->n; i++) {
		struct rule *r = &m->rules[i];
		r->active = true;
		r->matched = false;
		r->start_ms = now_ms;
		r->match_ms = 0;
		free(r->match_line);
		r->match_line = NULL;
		r->slow_count = 0;
		r->state = HP_LOGMON_WAITING;
		r->warned = false;
	}
	m->armed = true;
	hp_debug("logmon", "%zu rule(s) armed", m->n);
	reschedule(m, now_ms);
}

void hp_logmon_arm(struct hp_logmon *m)
{
	hp_logmon_arm_at(m, m->loop ? uv_now(m->loop) : 0);
}

void hp_logmon_disarm(struct hp_logmon *m)
{
	m->armed = false;
	if (m->loop && !m->pending)
		uv_timer_stop(&m->timer);
}

bool hp_logmon_armed(const struct hp_logmon *m)
{
	return m->armed;
}

struct hp_logmon *hp_logmon_new(uv_loop_t *loop, hp_logmon_trip_cb cb,
				void *ud)
{
	struct hp_logmon *m = xcalloc(1, sizeof(*m));
	m->loop = loop;
	m->cb = cb;
	m->ud = ud;
	m->mctx = pcre2_match_context_create(NULL);
	if (!m->mctx)
		hp_bug("pcre2_match_context_create: out of memory");
	pcre2_set_match_limit(m->mctx, HP_LOGMON_MATCH_LIMIT);
	pcre2_set_depth_limit(m->mctx, HP_LOGMON_DEPTH_LIMIT);
	pcre2_set_heap_limit(m->mctx, HP_LOGMON_HEAP_LIMIT);
	/* room for every group a pattern may have; pcre2 keeps the first
	 * pairs when a pattern has more */
	m->md = pcre2_match_data_create(16, NULL);
	if (!m->md)
		hp_bug("pcre2_match_data_create: out of memory");
	if (loop) {
		uv_timer_init(loop, &m->timer);
		m->timer.data = m;
	}
	return m;
}

static void free_mem(struct hp_logmon *m)
{
	free_rules(m);
	free(m->p_rule);
	free(m->p_reason);
	free(m->p_message);
	pcre2_match_data_free(m->md);
	pcre2_match_context_free(m->mctx);
	free(m);
}

static void timer_closed(uv_handle_t *h)
{
	free_mem(h->data);
}

void hp_logmon_free(struct hp_logmon *m)
{
	if (!m)
		return;
	if (!m->loop) {
		free_mem(m);
		return;
	}
	m->pending = false;
	uv_close((uv_handle_t *)&m->timer, timer_closed);
}
