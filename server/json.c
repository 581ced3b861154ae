/* json.c — the server's only cJSON user: encodes the /status object and
 * decodes StartRequest/UpdateRequest/StopRequest with FastAPI/pydantic-v2
 * lax-mode rules, answering 422 with pydantic-shaped details. cJSON trees
 * never leave this file; callers get plain C structs and strings.
 *
 * Decisions where pydantic's lax mode is wider than C ints (documented in
 * server.h): int fields take JSON ints, floats with a zero fraction, bools
 * (true -> 1, as pydantic's lax mode does) and strings of digits (optional
 * sign, surrounding whitespace, single '_' between digits, ".0…"
 * fraction); values outside the C int range get 422 with pydantic's
 * "less_than_equal"/"greater_than_equal" errors. Invalid UTF-8 answers 400
 * {"detail":"There was an error parsing the body"}, as FastAPI does. The
 * Content-Type is not checked: every body is read as JSON. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/xalloc.h"
#include "server.h"

/* ---------------------------------------------------------------- status */

static cJSON *parse_or_string(const char *text)
{
	cJSON *v = cJSON_Parse(text);
	return v ? v : cJSON_CreateString(text);
}

static char *print_compact(cJSON *v)
{
	char *p = cJSON_PrintUnformatted(v);
	if (!p)
		hp_bug("cJSON_PrintUnformatted failed");
	char *out = xstrdup(p);
	cJSON_free(p);
	return out;
}

char *hp_json_status(const struct hp_status *st)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "status", st->status ? st->status : "init");
	cJSON *tr = cJSON_AddObjectToObject(o, "transitions");
	for (size_t i = 0; i < st->n_transitions; i++)
		cJSON_AddStringToObject(tr, st->transitions[i].state,
					st->transitions[i].ts);
	if (st->reason)
		cJSON_AddStringToObject(o, "reason", st->reason);
	if (st->message)
		cJSON_AddStringToObject(o, "message", st->message);
	if (st->restart_mode)
		cJSON_AddStringToObject(o, "restartMode", st->restart_mode);
	if (st->n_worker_data) {
		cJSON *wd = cJSON_AddArrayToObject(o, "worker_data");
		for (size_t i = 0; i < st->n_worker_data; i++) {
			const struct hp_worker_data *w = &st->worker_data[i];
			cJSON *e = cJSON_CreateObject();
			cJSON_AddNumberToObject(e, "rank", w->rank);
			cJSON_AddNumberToObject(e, "group_rank", w->group_rank);
			cJSON_AddNumberToObject(e, "local_rank", w->local_rank);
			cJSON_AddBoolToObject(e, "failed", w->failed);
			cJSON_AddItemToObject(e, "data",
					      w->data_json
						      ? parse_or_string(w->data_json)
						      : cJSON_CreateNull());
			cJSON_AddItemToArray(wd, e);
		}
	}
	if (st->rank_labels_json) {
		cJSON *rl = cJSON_Parse(st->rank_labels_json);
		if (!cJSON_IsObject(rl)) {
			cJSON_Delete(rl);
			rl = cJSON_CreateObject();
		}
		cJSON_AddItemToObject(o, "rank_labels", rl);
	}
	if (st->ipversion)
		cJSON_AddStringToObject(o, "ipversion", st->ipversion);
	if (st->progress_json) {
		/* checked, then spliced as the agent wrote it: cJSON's
		 * number printer would turn a step of 10^15 into 1e+15, a
		 * float to the operator's JSON reader */
		cJSON *pr = cJSON_Parse(st->progress_json);
		if (cJSON_IsObject(pr) && pr->child)
			cJSON_AddRawToObject(o, "progress", st->progress_json);
		cJSON_Delete(pr);
	}
	if (st->agent_version)
		cJSON_AddStringToObject(o, "agent_version", st->agent_version);
	if (st->assigned_rank >= 0) {
		char buf[16];
		snprintf(buf, sizeof(buf), "%d", st->assigned_rank);
		cJSON_AddStringToObject(o, "assigned_rank", buf);
	}
	cJSON_AddStringToObject(o, "spare", st->spare ? "True" : "False");
	if (st->priority)
		cJSON_AddStringToObject(o, "priority", "True");
	char *out = print_compact(o);
	cJSON_Delete(o);
	return out;
}

/* ------------------------------------------------------------- decoding */

/* Collected validation errors, in field order, like pydantic; bounded
 * (issue 12 §2): at most MAX_ERRS entries, each input copied at most
 * INPUT_MAX_NODES values deep and its strings cut at INPUT_MAX_STRING
 * bytes, so a reply costs a small constant whatever the body holds
 * (pydantic would answer 349k errors for a 1 MiB list of {}). Small
 * inputs come out exactly as pydantic gives them. */
#define MAX_ERRS 20
#define INPUT_MAX_NODES 32
#define INPUT_MAX_STRING 256

struct errs {
	cJSON *list;
	int n;
};

static char *cut_string(const char *s)
{
	size_t n = strlen(s);
	if (n <= INPUT_MAX_STRING)
		return xstrdup(s);
	n = INPUT_MAX_STRING;
	while (n && ((unsigned char)s[n] & 0xc0) == 0x80)
		n--; /* keep whole UTF-8 sequences */
	return xasprintf("%.*s...", (int)n, s);
}

/* A copy of v within *budget values; NULL once the budget is spent. */
static cJSON *dup_bounded(const cJSON *v, int *budget)
{
	if (--*budget < 0)
		return NULL;
	if (cJSON_IsString(v)) {
		char *c = cut_string(v->valuestring);
		cJSON *o = cJSON_CreateString(c);
		free(c);
		return o;
	}
	if (!cJSON_IsArray(v) && !cJSON_IsObject(v))
		return cJSON_Duplicate(v, false);
	cJSON *o = cJSON_IsArray(v) ? cJSON_CreateArray() : cJSON_CreateObject();
	for (const cJSON *it = v->child; it; it = it->next) {
		cJSON *c = dup_bounded(it, budget);
		if (!c)
			break;
		if (cJSON_IsArray(v)) {
			cJSON_AddItemToArray(o, c);
		} else {
			char *k = cut_string(it->string ? it->string : "");
			cJSON_AddItemToObject(o, k, c);
			free(k);
		}
	}
	return o;
}

static cJSON *input_copy(const cJSON *v)
{
	int budget = INPUT_MAX_NODES;
	return v ? dup_bounded(v, &budget) : cJSON_CreateNull();
}

/* loc: "body", field, then optional index and sub-field (idx < 0: none). */
static void add_err(struct errs *e, const char *type, const char *field,
		    int idx, const char *sub, const char *msg,
		    const cJSON *input, cJSON *ctx)
{
	if (e->n >= MAX_ERRS) {
		cJSON_Delete(ctx);
		return;
	}
	e->n++;
	if (!e->list)
		e->list = cJSON_CreateArray();
	cJSON *d = cJSON_CreateObject();
	cJSON_AddStringToObject(d, "type", type);
	cJSON *loc = cJSON_AddArrayToObject(d, "loc");
	cJSON_AddItemToArray(loc, cJSON_CreateString("body"));
	if (field)
		cJSON_AddItemToArray(loc, cJSON_CreateString(field));
	if (idx >= 0)
		cJSON_AddItemToArray(loc, cJSON_CreateNumber(idx));
	if (sub)
		cJSON_AddItemToArray(loc, cJSON_CreateString(sub));
	cJSON_AddStringToObject(d, "msg", msg);
	cJSON_AddItemToObject(d, "input", input_copy(input));
	if (ctx)
		cJSON_AddItemToObject(d, "ctx", ctx);
	cJSON_AddItemToArray(e->list, d);
}

static char *detail_of(cJSON *list)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddItemToObject(o, "detail", list);
	char *out = print_compact(o);
	cJSON_Delete(o);
	return out;
}

static bool valid_utf8(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned c = s[i];
		size_t k;
		unsigned min;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			k = 1, min = 0x80, c &= 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			k = 2, min = 0x800, c &= 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			k = 3, min = 0x10000, c &= 0x07;
		} else {
			return false;
		}
		if (i + k >= n)
			return false;
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
			c = (c << 6) | (s[i + j] & 0x3f);
		}
		/* Python's decoder rejects overlong forms, surrogates and
		 * code points past U+10FFFF. */
		if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
			return false;
		i += k + 1;
	}
	return true;
}

/* Parses a whole body as one JSON value. Returns 0 and *out, 400 for
 * undecodable bytes, or 422 with the FastAPI json_invalid detail. */
static int parse_body(const char *body, size_t len, cJSON **out,
		      char **detail)
{
	*out = NULL;
	if (!valid_utf8((const unsigned char *)body, len)) {
		*detail = xstrdup(
			"{\"detail\":\"There was an error parsing the body\"}");
		return 400;
	}
	const char *end = NULL;
	cJSON *v = cJSON_ParseWithLengthOpts(body, len, &end, false);
	size_t pos = end ? (size_t)(end - body) : 0;
	const char *why = "Expecting value";
	if (v) {
		while (pos < len && (body[pos] == ' ' || body[pos] == '\t' ||
				     body[pos] == '\n' || body[pos] == '\r'))
			pos++;
		if (pos == len) {
			*out = v;
			return 0;
		}
		cJSON_Delete(v);
		why = "Extra data";
	}
	if (pos > len)
		pos = len;
	cJSON *list = cJSON_CreateArray();
	cJSON *d = cJSON_CreateObject();
	cJSON_AddStringToObject(d, "type", "json_invalid");
	cJSON *loc = cJSON_AddArrayToObject(d, "loc");
	cJSON_AddItemToArray(loc, cJSON_CreateString("body"));
	cJSON_AddItemToArray(loc, cJSON_CreateNumber((double)pos));
	cJSON_AddStringToObject(d, "msg", "JSON decode error");
	cJSON_AddItemToObject(d, "input", cJSON_CreateObject());
	cJSON *ctx = cJSON_AddObjectToObject(d, "ctx");
	cJSON_AddStringToObject(ctx, "error", why);
	cJSON_AddItemToArray(list, d);
	*detail = detail_of(list);
	return 422;
}

/* Result of a lax integer conversion. */
enum lax { LAX_OK, LAX_TYPE, LAX_PARSE, LAX_FRACTION, LAX_INF, LAX_BIG,
	   LAX_SMALL };

/* pydantic's str -> int: surrounding whitespace, optional sign, digits
 * with single underscores between them, an optional all-zero fraction. */
static enum lax lax_int_string(const char *s, long long *out)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		n--;
	const char *p = s, *end = s + n;
	bool neg = false;
	if (p < end && (*p == '+' || *p == '-'))
		neg = *p++ == '-';
	if (p == end || !isdigit((unsigned char)*p))
		return LAX_PARSE;
	unsigned long long v = 0;
	bool big = false;
	while (p < end && (isdigit((unsigned char)*p) || *p == '_')) {
		if (*p == '_') {
			if (p + 1 >= end || !isdigit((unsigned char)p[1]))
				return LAX_PARSE;
			p++;
			continue;
		}
		if (v > (ULLONG_MAX - 9) / 10)
			big = true;
		else
			v = v * 10 + (unsigned)(*p - '0');
		p++;
	}
	if (p < end && *p == '.') {
		p++;
		if (p == end)
			return LAX_PARSE;
		while (p < end && *p == '0')
			p++;
		if (p < end)
			return LAX_PARSE;
	}
	if (p != end)
		return LAX_PARSE;
	if (big || v > (unsigned long long)INT_MAX + 1)
		return neg ? LAX_SMALL : LAX_BIG;
	*out = neg ? -(long long)v : (long long)v;
	return LAX_OK;
}

static enum lax lax_int(const cJSON *v, int *out)
{
	long long x;
	if (cJSON_IsBool(v)) {
		x = cJSON_IsTrue(v) ? 1 : 0;
	} else if (cJSON_IsNumber(v)) {
		double d = v->valuedouble;
		if (!isfinite(d))
			return LAX_INF;
		if (d != trunc(d))
			return LAX_FRACTION;
		if (d > INT_MAX)
			return LAX_BIG;
		if (d < INT_MIN)
			return LAX_SMALL;
		x = (long long)d;
	} else if (cJSON_IsString(v)) {
		enum lax r = lax_int_string(v->valuestring, &x);
		if (r != LAX_OK)
			return r;
	} else {
		return LAX_TYPE;
	}
	if (x > INT_MAX)
		return LAX_BIG;
	if (x < INT_MIN)
		return LAX_SMALL;
	*out = (int)x;
	return LAX_OK;
}

static void int_err(struct errs *e, enum lax r, const char *field, int idx,
		    const char *sub, const cJSON *v)
{
	cJSON *ctx = NULL;
	switch (r) {
	case LAX_OK:
		return;
	case LAX_TYPE:
		add_err(e, "int_type", field, idx, sub,
			"Input should be a valid integer", v, NULL);
		return;
	case LAX_PARSE:
		add_err(e, "int_parsing", field, idx, sub,
			"Input should be a valid integer, unable to parse "
			"string as an integer",
			v, NULL);
		return;
	case LAX_FRACTION:
		add_err(e, "int_from_float", field, idx, sub,
			"Input should be a valid integer, got a number with a "
			"fractional part",
			v, NULL);
		return;
	case LAX_INF:
		add_err(e, "finite_number", field, idx, sub,
			"Input should be a finite number", v, NULL);
		return;
	case LAX_BIG:
		ctx = cJSON_CreateObject();
		cJSON_AddNumberToObject(ctx, "le", INT_MAX);
		add_err(e, "less_than_equal", field, idx, sub,
			"Input should be less than or equal to 2147483647", v,
			ctx);
		return;
	case LAX_SMALL:
		ctx = cJSON_CreateObject();
		cJSON_AddNumberToObject(ctx, "ge", INT_MIN);
		add_err(e, "greater_than_equal", field, idx, sub,
			"Input should be greater than or equal to -2147483648",
			v, ctx);
		return;
	}
}

/* pydantic's lax bool: 0/1 numbers and the usual words. Returns 0, or
 * 1 for a wrong type, 2 for an uninterpretable value. */
static int lax_bool(const cJSON *v, bool *out)
{
	static const char *const yes[] = {"1", "on", "t", "true", "y", "yes"};
	static const char *const no[] = {"0", "off", "f", "false", "n", "no"};
	if (cJSON_IsBool(v)) {
		*out = cJSON_IsTrue(v);
		return 0;
	}
	if (cJSON_IsNumber(v)) {
		if (v->valuedouble == 0 || v->valuedouble == 1) {
			*out = v->valuedouble == 1;
			return 0;
		}
		return 2;
	}
	if (cJSON_IsString(v)) {
		for (size_t i = 0; i < HP_ARRAY_LEN(yes); i++) {
			if (strcasecmp(v->valuestring, yes[i]) == 0) {
				*out = true;
				return 0;
			}
			if (strcasecmp(v->valuestring, no[i]) == 0) {
				*out = false;
				return 0;
			}
		}
		return 2;
	}
	return 1;
}

static void bool_err(struct errs *e, int r, const char *field,
		     const char *sub, const cJSON *v)
{
	if (r == 1)
		add_err(e, "bool_type", field, -1, sub,
			"Input should be a valid boolean", v, NULL);
	else
		add_err(e, "bool_parsing", field, -1, sub,
			"Input should be a valid boolean, unable to interpret "
			"input",
			v, NULL);
}

/* The member called name; with duplicates the last one wins, as with
 * Python's json.loads (cJSON's own lookup returns the first). */
static const cJSON *field(const cJSON *o, const char *name)
{
	const cJSON *found = NULL;
	for (const cJSON *it = o->child; it; it = it->next)
		if (it->string && strcmp(it->string, name) == 0)
			found = it;
	return found;
}

static bool absent(const cJSON *v)
{
	return !v || cJSON_IsNull(v);
}

static void req_int(struct errs *e, const cJSON *body, const char *name,
		    int *out)
{
	const cJSON *v = field(body, name);
	if (!v) {
		add_err(e, "missing", name, -1, NULL, "Field required", body,
			NULL);
		return;
	}
	int_err(e, lax_int(v, out), name, -1, NULL, v);
}

/* An optional string (absent/null -> NULL). */
static void opt_string(struct errs *e, const cJSON *body, const char *name,
		       char **out)
{
	const cJSON *v = field(body, name);
	if (absent(v))
		return;
	if (!cJSON_IsString(v)) {
		add_err(e, "string_type", name, -1, NULL,
			"Input should be a valid string", v, NULL);
		return;
	}
	*out = xstrdup(v->valuestring);
}

static void parse_master(struct errs *e, const cJSON *body,
			 struct hp_start_req *r)
{
	const cJSON *v = field(body, "master_addr");
	if (!v) {
		add_err(e, "missing", "master_addr", -1, NULL,
			"Field required", body, NULL);
	} else if (!cJSON_IsString(v)) {
		add_err(e, "string_type", "master_addr", -1, NULL,
			"Input should be a valid string", v, NULL);
	} else if (!v->valuestring[0]) {
		/* the reference's field_validator raises ValueError
		 * (10406912796; 9938808707 test_api_start_empty_master) */
		cJSON *ctx = cJSON_CreateObject();
		cJSON_AddStringToObject(ctx, "error",
					"Empty master_addr received from "
					"operator");
		add_err(e, "value_error", "master_addr", -1, NULL,
			"Value error, Empty master_addr received from operator",
			v, ctx);
	} else {
		r->master_addr = xstrdup(v->valuestring);
	}

	v = field(body, "master_port");
	if (!v) {
		add_err(e, "missing", "master_port", -1, NULL,
			"Field required", body, NULL);
	} else if (cJSON_IsString(v) && !v->valuestring[0]) {
		r->master_port = 0;
	} else {
		int_err(e, lax_int(v, &r->master_port), "master_port", -1,
			NULL, v);
	}
}

/* ---- range checks (issue 12 §4): numbers the agent multiplies, indexes
 * or hands to workers; pydantic's ge/le constraint errors. */

static void ge_err(struct errs *e, const char *field, int idx,
		   const char *sub, const cJSON *v, int ge)
{
	char msg[96];
	snprintf(msg, sizeof(msg),
		 "Input should be greater than or equal to %d", ge);
	cJSON *ctx = cJSON_CreateObject();
	cJSON_AddNumberToObject(ctx, "ge", ge);
	add_err(e, "greater_than_equal", field, idx, sub, msg, v, ctx);
}

static void le_err(struct errs *e, const char *field, int idx,
		   const char *sub, const cJSON *v, int le)
{
	char msg[96];
	snprintf(msg, sizeof(msg), "Input should be less than or equal to %d",
		 le);
	cJSON *ctx = cJSON_CreateObject();
	cJSON_AddNumberToObject(ctx, "le", le);
	add_err(e, "less_than_equal", field, idx, sub, msg, v, ctx);
}

/* x (already parsed from v) within [lo, hi]; false (and an error) if not */
static bool in_range(struct errs *e, const char *field, int idx,
		     const char *sub, const cJSON *v, int x, int lo, int hi)
{
	if (x < lo) {
		ge_err(e, field, idx, sub, v, lo);
		return false;
	}
	if (x > hi) {
		le_err(e, field, idx, sub, v, hi);
		return false;
	}
	return true;
}

static void value_err(struct errs *e, const char *field, int idx,
		      const char *sub, const cJSON *v, const char *why)
{
	char msg[256];
	snprintf(msg, sizeof(msg), "Value error, %s", why);
	cJSON *ctx = cJSON_CreateObject();
	cJSON_AddStringToObject(ctx, "error", why);
	add_err(e, "value_error", field, idx, sub, msg, v, ctx);
}

/* Once every field decoded: 0 <= rank <= HP_MAX_RANK_IP, 1 <= nnodes <=
 * HP_MAX_RANK_IP + 1, rank < nnodes on /start (an /update may name a
 * rank past a shrunk job, as the reference's scale-down test does:
 * 10653318562 test_scale_down_out_of_range_rank), faultCount >= 0,
 * master_port a port, rankIps ranks in [0, HP_MAX_RANK_IP]. */
static void check_ranges(struct errs *e, const cJSON *body, bool is_update,
			 struct hp_start_req *r)
{
	bool rank_ok = in_range(e, "rank", -1, NULL, field(body, "rank"),
				r->rank, 0, HP_MAX_RANK_IP);
	bool nn_ok = in_range(e, "nnodes", -1, NULL, field(body, "nnodes"),
			      r->nnodes, 1, HP_MAX_RANK_IP + 1);
	if (rank_ok && nn_ok && !is_update && r->rank >= r->nnodes) {
		char why[128];
		snprintf(why, sizeof(why),
			 "rank %d is not below nnodes %d", r->rank, r->nnodes);
		value_err(e, "rank", -1, NULL, field(body, "rank"), why);
	}
	in_range(e, "faultCount", -1, NULL, field(body, "faultCount"),
		 r->fault_count, 0, INT_MAX);
	if (r->master_addr)
		in_range(e, "master_port", -1, NULL,
			 field(body, "master_port"), r->master_port, 0, 65535);
	if (!r->has_rank_ips)
		return;
	const cJSON *list = field(body, "rankIps");
	int i = 0;
	for (const cJSON *it = list->child; it; it = it->next, i++) {
		int x = r->rank_ips[i].rank;
		if (x < 0) {
			ge_err(e, "rankIps", i, "rank", field(it, "rank"), 0);
		} else if (x > HP_MAX_RANK_IP) {
			/* the reference raises in the handler (HTTP 500,
			 * 10336335176); a 422 fails the request alike, before
			 * anything is applied */
			char why[160];
			snprintf(why, sizeof(why),
				 "rank %d is over %d: list assignment index "
				 "out of range",
				 x, HP_MAX_RANK_IP);
			value_err(e, "rankIps", i, "rank", field(it, "rank"),
				  why);
		}
	}
}

static void parse_log_monitoring(struct errs *e, const cJSON *body,
				 struct hp_start_req *r)
{
	const char *name = "log_monitoring_configuration";
	const cJSON *v = field(body, name);
	if (absent(v))
		return;
	if (!cJSON_IsArray(v)) {
		add_err(e, "list_type", name, -1, NULL,
			"Input should be a valid list", v, NULL);
		return;
	}
	bool ok = true;
	int i = 0;
	for (const cJSON *it = v->child; it; it = it->next, i++) {
		if (!cJSON_IsObject(it)) {
			add_err(e, "dict_type", name, i, NULL,
				"Input should be a valid dictionary", it, NULL);
			ok = false;
		}
	}
	if (ok)
		r->log_monitoring_json = print_compact((cJSON *)v);
}

static void parse_rank_ips(struct errs *e, const cJSON *body,
			   struct hp_start_req *r)
{
	const char *name = "rankIps";
	const cJSON *v = field(body, name);
	if (absent(v))
		return;
	if (!cJSON_IsArray(v)) {
		add_err(e, "list_type", name, -1, NULL,
			"Input should be a valid list", v, NULL);
		return;
	}
	size_t n = (size_t)cJSON_GetArraySize(v);
	struct hp_rank_ip *ips = xcalloc(n, sizeof(*ips));
	bool ok = true;
	int i = 0;
	for (const cJSON *it = v->child; it; it = it->next, i++) {
		if (!cJSON_IsObject(it)) {
			add_err(e, "model_attributes_type", name, i, NULL,
				"Input should be a valid dictionary or object "
				"to extract fields from",
				it, NULL);
			ok = false;
			continue;
		}
		const cJSON *rank = field(it, "rank");
		const cJSON *ip = field(it, "ip");
		if (!rank) {
			add_err(e, "missing", name, i, "rank", "Field required",
				it, NULL);
			ok = false;
		} else {
			enum lax lr = lax_int(rank, &ips[i].rank);
			if (lr != LAX_OK) {
				int_err(e, lr, name, i, "rank", rank);
				ok = false;
			}
		}
		if (!ip) {
			add_err(e, "missing", name, i, "ip", "Field required",
				it, NULL);
			ok = false;
		} else if (!cJSON_IsString(ip)) {
			add_err(e, "string_type", name, i, "ip",
				"Input should be a valid string", ip, NULL);
			ok = false;
		} else {
			ips[i].ip = xstrdup(ip->valuestring);
		}
	}
	/* Hand over the table even when invalid so that fini frees it. */
	r->rank_ips = ips;
	r->n_rank_ips = n;
	r->has_rank_ips = ok;
}

/* spare: Union[bool, int] in pydantic's smart mode: a bool-like value is
 * a bool, any other integer is true when non-zero. null means false. */
static void parse_spare(struct errs *e, const cJSON *body, bool *out)
{
	const cJSON *v = field(body, "spare");
	*out = false;
	if (absent(v))
		return;
	int br = lax_bool(v, out);
	if (br == 0)
		return;
	int x = 0;
	enum lax ir = lax_int(v, &x);
	if (ir == LAX_OK) {
		*out = x != 0;
		return;
	}
	bool_err(e, br, "spare", "bool", v);
	int_err(e, ir, "spare", -1, "int", v);
}

int hp_json_parse_start(const char *body, size_t len, bool is_update,
			struct hp_start_req *out, char **detail_json)
{
	memset(out, 0, sizeof(*out));
	*detail_json = NULL;
	if (len == 0) {
		*detail_json = xstrdup("{\"detail\":[{\"type\":\"missing\","
				       "\"loc\":[\"body\"],\"msg\":\"Field "
				       "required\",\"input\":null}]}");
		return 422;
	}
	cJSON *root;
	int rc = parse_body(body, len, &root, detail_json);
	if (rc)
		return rc;
	struct errs e = {0};
	if (!cJSON_IsObject(root)) {
		e.list = cJSON_CreateArray();
		cJSON *d = cJSON_CreateObject();
		cJSON_AddStringToObject(d, "type", "model_attributes_type");
		cJSON *loc = cJSON_AddArrayToObject(d, "loc");
		cJSON_AddItemToArray(loc, cJSON_CreateString("body"));
		cJSON_AddStringToObject(d, "msg",
					"Input should be a valid dictionary or "
					"object to extract fields from");
		cJSON_AddItemToObject(d, "input", input_copy(root));
		cJSON_AddItemToArray(e.list, d);
		goto out;
	}

	req_int(&e, root, "rank", &out->rank);
	req_int(&e, root, "nnodes", &out->nnodes);
	req_int(&e, root, "faultCount", &out->fault_count);
	parse_master(&e, root, out);
	parse_log_monitoring(&e, root, out);
	opt_string(&e, root, "ipVersion", &out->ip_version);
	parse_rank_ips(&e, root, out);
	const cJSON *wd = field(root, "worker_data");
	if (!absent(wd))
		out->worker_data_json = print_compact((cJSON *)wd);
	parse_spare(&e, root, &out->spare);
	if (!e.list)
		check_ranges(&e, root, is_update, out);
	if (!is_update) {
		const cJSON *pr = field(root, "progress");
		if (absent(pr))
			out->progress_json = xstrdup("{}");
		else if (cJSON_IsObject(pr))
			out->progress_json = print_compact((cJSON *)pr);
		else
			add_err(&e, "dict_type", "progress", -1, NULL,
				"Input should be a valid dictionary", pr, NULL);
	}
out:
	cJSON_Delete(root);
	if (e.list) {
		hp_start_req_fini(out);
		*detail_json = detail_of(e.list);
		return 422;
	}
	return 0;
}

int hp_json_parse_stop(const char *body, size_t len, struct hp_stop_req *out,
		       char **detail_json)
{
	memset(out, 0, sizeof(*out));
	out->timeout = -1;
	*detail_json = NULL;
	cJSON *root = NULL;
	struct errs e = {0};
	if (len > 0) {
		int rc = parse_body(body, len, &root, detail_json);
		if (rc)
			return rc;
	}
	/* The body is optional: none, or a JSON null, means all defaults. */
	if (root && !cJSON_IsNull(root)) {
		if (!cJSON_IsObject(root)) {
			add_err(&e, "model_attributes_type", NULL, -1, NULL,
				"Input should be a valid dictionary or object "
				"to extract fields from",
				root, NULL);
			goto out;
		}
		opt_string(&e, root, "restart_mode", &out->restart_mode);
		const cJSON *v = field(root, "is_graceful");
		if (!absent(v)) {
			int r = lax_bool(v, &out->is_graceful);
			if (r)
				bool_err(&e, r, "is_graceful", NULL, v);
		}
		v = field(root, "timeout");
		if (!absent(v)) {
			enum lax lr = lax_int(v, &out->timeout);
			int_err(&e, lr, "timeout", -1, NULL, v);
			if (lr == LAX_OK)
				in_range(&e, "timeout", -1, NULL, v,
					 out->timeout, 0, INT_MAX);
		}
	}
out:
	cJSON_Delete(root);
	if (e.list) {
		hp_stop_req_fini(out);
		*detail_json = detail_of(e.list);
		return 422;
	}
	if (!out->restart_mode)
		out->restart_mode = xstrdup("ipr");
	return 0;
}

void hp_start_req_fini(struct hp_start_req *r)
{
	if (!r)
		return;
	free(r->master_addr);
	free(r->log_monitoring_json);
	free(r->ip_version);
	for (size_t i = 0; i < r->n_rank_ips; i++)
		free(r->rank_ips[i].ip);
	free(r->rank_ips);
	free(r->worker_data_json);
	free(r->progress_json);
	memset(r, 0, sizeof(*r));
}

void hp_stop_req_fini(struct hp_stop_req *r)
{
	if (!r)
		return;
	free(r->restart_mode);
	memset(r, 0, sizeof(*r));
	r->timeout = -1;
}

/* ------------------------------------------------------ fabric peer table */

int hp_json_parse_fabric_join(const char *body, size_t len,
			      struct hp_fabric_join *out, char **detail_json)
{
	memset(out, 0, sizeof(*out));
	out->size = -1;
	out->epoch = 0;
	*detail_json = NULL;
	cJSON *root = NULL;
	struct errs e = {0};
	int rc = parse_body(body, len, &root, detail_json);
	if (rc)
		return rc;
	if (!cJSON_IsObject(root)) {
		add_err(&e, "model_attributes_type", NULL, -1, NULL,
			"Input should be a valid dictionary or object to "
			"extract fields from",
			root, NULL);
		goto out;
	}
	req_int(&e, root, "rank", &out->rank);
	const char *names[2] = {"name", "http"};
	char **dst[2] = {&out->name, &out->http};
	for (int i = 0; i < 2; i++) {
		const cJSON *v = field(root, names[i]);
		if (!v)
			add_err(&e, "missing", names[i], -1, NULL,
				"Field required", root, NULL);
		else if (!cJSON_IsString(v))
			add_err(&e, "string_type", names[i], -1, NULL,
				"Input should be a valid string", v, NULL);
		else
			*dst[i] = xstrdup(v->valuestring);
	}
	const cJSON *v = field(root, "size");
	if (!absent(v))
		int_err(&e, lax_int(v, &out->size), "size", -1, NULL, v);
	v = field(root, "epoch");
	if (!absent(v))
		int_err(&e, lax_int(v, &out->epoch), "epoch", -1, NULL, v);
out:
	cJSON_Delete(root);
	if (e.list) {
		hp_fabric_join_fini(out);
		*detail_json = detail_of(e.list);
		return 422;
	}
	return 0;
}

void hp_fabric_join_fini(struct hp_fabric_join *j)
{
	if (!j)
		return;
	free(j->name);
	free(j->http);
	memset(j, 0, sizeof(*j));
}
