/* test-json.c — server/json.c: request decoding with pydantic-v2 lax rules
 * and FastAPI-shaped 422 details, and the /status encoding byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/log.h"
#include "base/sbuf.h"
#include "base/xalloc.h"
#include "server/server.h"

#define OKBODY                                                                 \
	"\"rank\":1,\"nnodes\":2,\"faultCount\":0,\"master_addr\":\"10.0.0.1\"," \
	"\"master_port\":29500"

static int start(const char *body, struct hp_start_req *r, char **detail)
{
	return hp_json_parse_start(body, strlen(body), false, r, detail);
}

/* Expects 422 (or 'code') and the exact detail text. */
static void expect_err(const char *body, int code, const char *detail)
{
	struct hp_start_req r;
	char *d = NULL;
	assert_int_equal(start(body, &r, &d), code);
	assert_non_null(d);
	assert_string_equal(d, detail);
	assert_null(r.master_addr);
	free(d);
}

static void test_minimal(void **st)
{
	struct hp_start_req r;
	char *d = NULL;
	assert_int_equal(start("{" OKBODY "}", &r, &d), 0);
	assert_null(d);
	assert_int_equal(r.rank, 1);
	assert_int_equal(r.nnodes, 2);
	assert_int_equal(r.fault_count, 0);
	assert_string_equal(r.master_addr, "10.0.0.1");
	assert_int_equal(r.master_port, 29500);
	assert_null(r.log_monitoring_json);
	assert_null(r.ip_version);
	assert_false(r.has_rank_ips);
	assert_null(r.worker_data_json);
	assert_false(r.spare);
	assert_string_equal(r.progress_json, "{}");
	hp_start_req_fini(&r);
}

static void test_full(void **st)
{
	struct hp_start_req r;
	char *d = NULL;
	const char *b =
		"{" OKBODY ",\"log_monitoring_configuration\":[{\"name\":\"x\","
		"\"logPattern\":\".*loss.*\"}],\"ipVersion\":\"2026-01-01\","
		"\"rankIps\":[{\"rank\":0,\"ip\":\"10.0.0.1\"},{\"rank\":\"1\","
		"\"ip\":\"10.0.0.2\"}],\"worker_data\":{\"a\":[1,2.5,null]},"
		"\"spare\":1,\"progress\":{\"step\": 10},\"extra\":{\"x\":1}}";
	assert_int_equal(start(b, &r, &d), 0);
	assert_string_equal(r.log_monitoring_json,
			    "[{\"name\":\"x\",\"logPattern\":\".*loss.*\"}]");
	assert_string_equal(r.ip_version, "2026-01-01");
	assert_true(r.has_rank_ips);
	assert_int_equal(r.n_rank_ips, 2);
	assert_int_equal(r.rank_ips[1].rank, 1);
	assert_string_equal(r.rank_ips[1].ip, "10.0.0.2");
	assert_string_equal(r.worker_data_json, "{\"a\":[1,2.5,null]}");
	assert_true(r.spare);
	assert_string_equal(r.progress_json, "{\"step\":10}");
	hp_start_req_fini(&r);
	assert_null(r.master_addr);
}

static void test_duplicate_keys(void **st)
{
	/* Python's json.loads keeps the last of duplicated keys. */
	struct hp_start_req r;
	char *d = NULL;
	assert_int_equal(start("{\"rank\":\"bad\"," OKBODY ",\"rank\":0}", &r,
			       &d),
			 0);
	assert_int_equal(r.rank, 0);
	hp_start_req_fini(&r);
}

static void test_update_ignores_progress(void **st)
{
	struct hp_start_req r;
	char *d = NULL;
	const char *b = "{" OKBODY ",\"progress\":5,\"rankIps\":[]}";
	assert_int_equal(hp_json_parse_start(b, strlen(b), true, &r, &d), 0);
	assert_null(r.progress_json);
	assert_true(r.has_rank_ips);
	assert_int_equal(r.n_rank_ips, 0);
	hp_start_req_fini(&r);
}

static void test_missing(void **st)
{
	expect_err("{\"nnodes\":2,\"faultCount\":0,\"master_addr\":\"a\","
		   "\"master_port\":1}",
		   422,
		   "{\"detail\":[{\"type\":\"missing\",\"loc\":[\"body\","
		   "\"rank\"],\"msg\":\"Field required\",\"input\":{\"nnodes\":"
		   "2,\"faultCount\":0,\"master_addr\":\"a\",\"master_port\":"
		   "1}}]}");
	/* All errors are listed, in field order. */
	expect_err("{}", 422,
		   "{\"detail\":[{\"type\":\"missing\",\"loc\":[\"body\","
		   "\"rank\"],\"msg\":\"Field required\",\"input\":{}},"
		   "{\"type\":\"missing\",\"loc\":[\"body\",\"nnodes\"],"
		   "\"msg\":\"Field required\",\"input\":{}},"
		   "{\"type\":\"missing\",\"loc\":[\"body\",\"faultCount\"],"
		   "\"msg\":\"Field required\",\"input\":{}},"
		   "{\"type\":\"missing\",\"loc\":[\"body\",\"master_addr\"],"
		   "\"msg\":\"Field required\",\"input\":{}},"
		   "{\"type\":\"missing\",\"loc\":[\"body\",\"master_port\"],"
		   "\"msg\":\"Field required\",\"input\":{}}]}");
}

static void test_empty_and_null(void **st)
{
	struct hp_start_req r;
	char *d = NULL;
	assert_int_equal(hp_json_parse_start("", 0, false, &r, &d), 422);
	assert_string_equal(d, "{\"detail\":[{\"type\":\"missing\",\"loc\":"
			       "[\"body\"],\"msg\":\"Field required\","
			       "\"input\":null}]}");
	free(d);
	expect_err("null", 422,
		   "{\"detail\":[{\"type\":\"model_attributes_type\",\"loc\":"
		   "[\"body\"],\"msg\":\"Input should be a valid dictionary or "
		   "object to extract fields from\",\"input\":null}]}");
	expect_err("[1]", 422,
		   "{\"detail\":[{\"type\":\"model_attributes_type\",\"loc\":"
		   "[\"body\"],\"msg\":\"Input should be a valid dictionary or "
		   "object to extract fields from\",\"input\":[1]}]}");
	/* Required ints may not be null. */
	expect_err("{\"rank\":null,\"nnodes\":2,\"faultCount\":0,"
		   "\"master_addr\":\"a\",\"master_port\":1}",
		   422,
		   "{\"detail\":[{\"type\":\"int_type\",\"loc\":[\"body\","
		   "\"rank\"],\"msg\":\"Input should be a valid integer\","
		   "\"input\":null}]}");
}

static void test_invalid_json(void **st)
{
	/* The position is cJSON's (Python's json would say 10 here). */
	expect_err("{\"rank\":1,", 422,
		   "{\"detail\":[{\"type\":\"json_invalid\",\"loc\":[\"body\","
		   "9],\"msg\":\"JSON decode error\",\"input\":{},\"ctx\":"
		   "{\"error\":\"Expecting value\"}}]}");
	expect_err("{} x", 422,
		   "{\"detail\":[{\"type\":\"json_invalid\",\"loc\":[\"body\","
		   "3],\"msg\":\"JSON decode error\",\"input\":{},\"ctx\":"
		   "{\"error\":\"Extra data\"}}]}");
	/* Invalid UTF-8 is FastAPI's 400, not a 422. */
	expect_err("{\"a\":\"\xff\"}", 400,
		   "{\"detail\":\"There was an error parsing the body\"}");
	expect_err("{\"a\":\"\xed\xa0\x80\"}", 400,
		   "{\"detail\":\"There was an error parsing the body\"}");
	/* A NUL inside the body is not the end of it. */
	struct hp_start_req r;
	char *d = NULL;
	assert_int_equal(hp_json_parse_start("{}\0{}", 5, false, &r, &d), 422);
	assert_non_null(strstr(d, "json_invalid"));
	free(d);
}

static void test_ints(void **st)
{
	static const struct {
		const char *v;
		int want;
	} good[] = {
		{"3", 3},	 {"\"3\"", 3},	   {"3.0", 3},	 {"\" 3 \"", 3},
		{"\"3.00\"", 3}, {"\"-3.0\"", -3}, {"true", 1},	 {"false", 0},
		{"\"1_000\"", 1000}, {"\"+7\"", 7},	  {"1e3", 1000},
		{"\"00012\"", 12},   {"-2147483648", -2147483648},
		{"\"2147483647\"", 2147483647},
	};
	for (size_t i = 0; i < HP_ARRAY_LEN(good); i++) {
		char b[256];
		/* /fabric/join's rank has the lax rules and no range
		 * check; /start's ranges are test_ranges' */
		snprintf(b, sizeof(b),
			 "{\"rank\":%s,\"name\":\"n\",\"http\":\"h\"}",
			 good[i].v);
		struct hp_fabric_join j;
		char *d = NULL;
		int rc = hp_json_parse_fabric_join(b, strlen(b), &j, &d);
		if (rc)
			fail_msg("%s: %s", good[i].v, d);
		assert_int_equal(j.rank, good[i].want);
		hp_fabric_join_fini(&j);
	}
	static const struct {
		const char *v, *type;
	} bad[] = {
		{"3.5", "int_from_float"},
		{"\"3.5\"", "int_parsing"},
		{"\"abc\"", "int_parsing"},
		{"\"\"", "int_parsing"},
		{"\"1e3\"", "int_parsing"},
		{"\"0x10\"", "int_parsing"},
		{"\"1__0\"", "int_parsing"},
		{"\"3.\"", "int_parsing"},
		{"\"\xef\xbc\x93\"", "int_parsing"}, /* fullwidth 3 */
		{"[1]", "int_type"},
		{"{}", "int_type"},
		{"2147483648", "less_than_equal"},
		{"99999999999999999999999", "less_than_equal"},
		{"\"99999999999999999999999\"", "less_than_equal"},
		{"-2147483649", "greater_than_equal"},
		{"1e400", "finite_number"},
	};
	for (size_t i = 0; i < HP_ARRAY_LEN(bad); i++) {
		char b[256], want[64];
		snprintf(b, sizeof(b),
			 "{\"rank\":%s,\"nnodes\":2,\"faultCount\":0,"
			 "\"master_addr\":\"a\",\"master_port\":1}",
			 bad[i].v);
		snprintf(want, sizeof(want), "{\"detail\":[{\"type\":\"%s\"",
			 bad[i].type);
		struct hp_start_req r;
		char *d = NULL;
		assert_int_equal(start(b, &r, &d), 422);
		if (strncmp(d, want, strlen(want)) != 0)
			fail_msg("%s: %s", bad[i].v, d);
		assert_non_null(strstr(d, "\"loc\":[\"body\",\"rank\"]"));
		free(d);
	}
	expect_err("{\"rank\":\"x\",\"nnodes\":2,\"faultCount\":0,"
		   "\"master_addr\":\"a\",\"master_port\":1}",
		   422,
		   "{\"detail\":[{\"type\":\"int_parsing\",\"loc\":[\"body\","
		   "\"rank\"],\"msg\":\"Input should be a valid integer, "
		   "unable to parse string as an integer\",\"input\":\"x\"}]}");
	expect_err("{\"rank\":2147483648,\"nnodes\":2,\"faultCount\":0,"
		   "\"master_addr\":\"a\",\"master_port\":1}",
		   422,
		   "{\"detail\":[{\"type\":\"less_than_equal\",\"loc\":[\"body\","
		   "\"rank\"],\"msg\":\"Input should be less than or equal to "
		   "2147483647\",\"input\":2147483648,\"ctx\":{\"le\":"
		   "2147483647}}]}");
}

static void test_master(void **st)
{
	struct hp_start_req r;
	char *d = NULL;
	const char *b = "{\"rank\":0,\"nnodes\":1,\"faultCount\":0,"
			"\"master_addr\":\"h\",\"master_port\":\"\"}";
	assert_int_equal(start(b, &r, &d), 0);
	assert_int_equal(r.master_port, 0);
	hp_start_req_fini(&r);
	b = "{\"rank\":0,\"nnodes\":1,\"faultCount\":0,"
	    "\"master_addr\":\"h\",\"master_port\":\"29500\"}";
	assert_int_equal(start(b, &r, &d), 0);
	assert_int_equal(r.master_port, 29500);
	hp_start_req_fini(&r);
	expect_err("{\"rank\":0,\"nnodes\":1,\"faultCount\":0,"
		   "\"master_addr\":\"\",\"master_port\":1}",
		   422,
		   "{\"detail\":[{\"type\":\"value_error\",\"loc\":"
		   "[\"body\",\"master_addr\"],\"msg\":\"Value error, Empty "
		   "master_addr received from operator\",\"input\":\"\","
		   "\"ctx\":{\"error\":\"Empty master_addr received from "
		   "operator\"}}]}");
	expect_err("{\"rank\":0,\"nnodes\":1,\"faultCount\":0,"
		   "\"master_addr\":5,\"master_port\":\"p\"}",
		   422,
		   "{\"detail\":[{\"type\":\"string_type\",\"loc\":[\"body\","
		   "\"master_addr\"],\"msg\":\"Input should be a valid string\","
		   "\"input\":5},{\"type\":\"int_parsing\",\"loc\":[\"body\","
		   "\"master_port\"],\"msg\":\"Input should be a valid integer, "
		   "unable to parse string as an integer\",\"input\":\"p\"}]}");
}

/* issue 12 §4: the numbers the agent multiplies, indexes or hands to the
 * workers are range-checked; each row: a body's fields, /update or not,
 * and the error type and loc expected (NULL: accepted). */
static void test_ranges(void **st)
{
	static const struct {
		const char *fields;
		bool update;
		const char *type, *loc;
	} rows[] = {
		{"\"rank\":0,\"nnodes\":1", false, NULL, NULL},
		{"\"rank\":100000,\"nnodes\":100001", false, NULL, NULL},
		{"\"rank\":-1,\"nnodes\":4", false, "greater_than_equal",
		 "[\"body\",\"rank\"]"},
		{"\"rank\":100001,\"nnodes\":100001", false, "less_than_equal",
		 "[\"body\",\"rank\"]"},
		{"\"rank\":2147483647,\"nnodes\":2", false, "less_than_equal",
		 "[\"body\",\"rank\"]"},
		{"\"rank\":0,\"nnodes\":0", false, "greater_than_equal",
		 "[\"body\",\"nnodes\"]"},
		{"\"rank\":0,\"nnodes\":100002", false, "less_than_equal",
		 "[\"body\",\"nnodes\"]"},
		{"\"rank\":0,\"nnodes\":2147483647", false, "less_than_equal",
		 "[\"body\",\"nnodes\"]"},
		{"\"rank\":14,\"nnodes\":4", false, "value_error",
		 "[\"body\",\"rank\"]"},
		{"\"rank\":4,\"nnodes\":4", false, "value_error",
		 "[\"body\",\"rank\"]"},
		/* the reference's scale-down: an /update may name a rank
		 * past the new size (10653318562) */
		{"\"rank\":10,\"nnodes\":8", true, NULL, NULL},
		{"\"rank\":0,\"nnodes\":1,\"faultCount\":-1", false,
		 "greater_than_equal", "[\"body\",\"faultCount\"]"},
		{"\"rank\":0,\"nnodes\":1,\"master_port\":70000", false,
		 "less_than_equal", "[\"body\",\"master_port\"]"},
		{"\"rank\":0,\"nnodes\":1,\"master_port\":-1", false,
		 "greater_than_equal", "[\"body\",\"master_port\"]"},
		{"\"rank\":0,\"nnodes\":1,\"master_port\":\"65535\"", false,
		 NULL, NULL},
		{"\"rank\":0,\"nnodes\":1,\"rankIps\":[{\"rank\":100000,"
		 "\"ip\":\"a\"}]", false, NULL, NULL},
		{"\"rank\":0,\"nnodes\":1,\"rankIps\":[{\"rank\":0,\"ip\":"
		 "\"a\"},{\"rank\":100001,\"ip\":\"b\"}]", true, "value_error",
		 "[\"body\",\"rankIps\",1,\"rank\"]"},
		{"\"rank\":0,\"nnodes\":1,\"rankIps\":[{\"rank\":-1,\"ip\":"
		 "\"a\"}]", false, "greater_than_equal",
		 "[\"body\",\"rankIps\",0,\"rank\"]"},
	};
	for (size_t i = 0; i < HP_ARRAY_LEN(rows); i++) {
		char b[512];
		/* later members win (json.loads): the defaults come first */
		snprintf(b, sizeof(b),
			 "{\"faultCount\":0,\"master_addr\":\"h\","
			 "\"master_port\":1,%s}",
			 rows[i].fields);
		struct hp_start_req r;
		char *d = NULL;
		int rc = hp_json_parse_start(b, strlen(b), rows[i].update, &r,
					     &d);
		if (!rows[i].type) {
			if (rc)
				fail_msg("row %zu: %s: %s", i, b, d);
			hp_start_req_fini(&r);
			continue;
		}
		if (rc != 422)
			fail_msg("row %zu: %s accepted", i, b);
		char want[128], loc[160];
		snprintf(want, sizeof(want), "{\"detail\":[{\"type\":\"%s\"",
			 rows[i].type);
		snprintf(loc, sizeof(loc), "\"loc\":%s", rows[i].loc);
		if (strncmp(d, want, strlen(want)) != 0 || !strstr(d, loc))
			fail_msg("row %zu: %s: %s", i, b, d);
		assert_null(r.master_addr);
		free(d);
	}
	/* /stop: a negative timeout is refused */
	struct hp_stop_req s;
	char *d = NULL;
	assert_int_equal(hp_json_parse_stop("{\"timeout\":-1}", 14, &s, &d),
			 422);
	assert_non_null(strstr(d, "greater_than_equal"));
	free(d);
	assert_int_equal(hp_json_parse_stop("{\"timeout\":0}", 13, &s, &d), 0);
	assert_int_equal(s.timeout, 0);
	hp_stop_req_fini(&s);
}

static void test_unicode(void **st)
{
	struct hp_start_req r;
	char *d = NULL;
	const char *b = "{\"rank\":0,\"nnodes\":1,\"faultCount\":0,"
			"\"master_addr\":\"h\\u00e9\\ud83d\\ude00\xc3\xa9\","
			"\"master_port\":1,\"ipVersion\":\"\xe2\x82\xac\"}";
	assert_int_equal(start(b, &r, &d), 0);
	assert_string_equal(r.master_addr, "h\xc3\xa9\xf0\x9f\x98\x80\xc3\xa9");
	assert_string_equal(r.ip_version, "\xe2\x82\xac");
	hp_start_req_fini(&r);
}

static void test_optional_types(void **st)
{
	expect_err("{" OKBODY ",\"log_monitoring_configuration\":{},"
		   "\"ipVersion\":1,\"rankIps\":[{\"rank\":\"a\"},3],"
		   "\"spare\":\"maybe\",\"progress\":[]}",
		   422,
		   "{\"detail\":[{\"type\":\"list_type\",\"loc\":[\"body\","
		   "\"log_monitoring_configuration\"],\"msg\":\"Input should "
		   "be a valid list\",\"input\":{}},"
		   "{\"type\":\"string_type\",\"loc\":[\"body\",\"ipVersion\"],"
		   "\"msg\":\"Input should be a valid string\",\"input\":1},"
		   "{\"type\":\"int_parsing\",\"loc\":[\"body\",\"rankIps\",0,"
		   "\"rank\"],\"msg\":\"Input should be a valid integer, unable "
		   "to parse string as an integer\",\"input\":\"a\"},"
		   "{\"type\":\"missing\",\"loc\":[\"body\",\"rankIps\",0,"
		   "\"ip\"],\"msg\":\"Field required\",\"input\":{\"rank\":"
		   "\"a\"}},"
		   "{\"type\":\"model_attributes_type\",\"loc\":[\"body\","
		   "\"rankIps\",1],\"msg\":\"Input should be a valid dictionary "
		   "or object to extract fields from\",\"input\":3},"
		   "{\"type\":\"bool_parsing\",\"loc\":[\"body\",\"spare\","
		   "\"bool\"],\"msg\":\"Input should be a valid boolean, unable "
		   "to interpret input\",\"input\":\"maybe\"},"
		   "{\"type\":\"int_parsing\",\"loc\":[\"body\",\"spare\","
		   "\"int\"],\"msg\":\"Input should be a valid integer, unable "
		   "to parse string as an integer\",\"input\":\"maybe\"},"
		   "{\"type\":\"dict_type\",\"loc\":[\"body\",\"progress\"],"
		   "\"msg\":\"Input should be a valid dictionary\",\"input\":"
		   "[]}]}");
	/* nulls mean "absent" for the optional fields. */
	struct hp_start_req r;
	char *d = NULL;
	assert_int_equal(
		start("{" OKBODY ",\"log_monitoring_configuration\":null,"
		      "\"ipVersion\":null,\"rankIps\":null,\"worker_data\":"
		      "null,\"spare\":null,\"progress\":null}",
		      &r, &d),
		0);
	assert_null(r.log_monitoring_json);
	assert_null(r.ip_version);
	assert_false(r.has_rank_ips);
	assert_null(r.worker_data_json);
	assert_false(r.spare);
	assert_string_equal(r.progress_json, "{}");
	hp_start_req_fini(&r);
}

static void test_spare(void **st)
{
	static const struct {
		const char *v;
		bool want;
	} cases[] = {
		{"true", true},	    {"false", false},	{"0", false},
		{"1", true},	    {"2", true},	{"\"yes\"", true},
		{"\"off\"", false}, {"\"2\"", true},	{"1.0", true},
		{"0.0", false},	    {"\"True\"", true},
	};
	for (size_t i = 0; i < HP_ARRAY_LEN(cases); i++) {
		char b[256];
		snprintf(b, sizeof(b), "{" OKBODY ",\"spare\":%s}", cases[i].v);
		struct hp_start_req r;
		char *d = NULL;
		assert_int_equal(start(b, &r, &d), 0);
		assert_int_equal(r.spare, cases[i].want);
		hp_start_req_fini(&r);
	}
	struct hp_start_req r;
	char *d = NULL;
	assert_int_equal(start("{" OKBODY ",\"spare\":2.5}", &r, &d), 422);
	assert_non_null(strstr(d, "int_from_float"));
	free(d);
}

static void test_stop(void **st)
{
	struct hp_stop_req s;
	char *d = NULL;
	assert_int_equal(hp_json_parse_stop("", 0, &s, &d), 0);
	assert_string_equal(s.restart_mode, "ipr");
	assert_false(s.is_graceful);
	assert_int_equal(s.timeout, -1);
	hp_stop_req_fini(&s);
	assert_int_equal(hp_json_parse_stop("null", 4, &s, &d), 0);
	assert_string_equal(s.restart_mode, "ipr");
	hp_stop_req_fini(&s);
	const char *b = "{\"restart_mode\":\"plr\",\"is_graceful\":true,"
			"\"timeout\":\"30\",\"x\":1}";
	assert_int_equal(hp_json_parse_stop(b, strlen(b), &s, &d), 0);
	assert_string_equal(s.restart_mode, "plr");
	assert_true(s.is_graceful);
	assert_int_equal(s.timeout, 30);
	hp_stop_req_fini(&s);
	b = "{\"restart_mode\":null,\"is_graceful\":null,\"timeout\":null}";
	assert_int_equal(hp_json_parse_stop(b, strlen(b), &s, &d), 0);
	assert_string_equal(s.restart_mode, "ipr");
	assert_false(s.is_graceful);
	assert_int_equal(s.timeout, -1);
	hp_stop_req_fini(&s);
	b = "{\"restart_mode\":1,\"is_graceful\":[],\"timeout\":1.5}";
	assert_int_equal(hp_json_parse_stop(b, strlen(b), &s, &d), 422);
	assert_string_equal(
		d, "{\"detail\":[{\"type\":\"string_type\",\"loc\":[\"body\","
		   "\"restart_mode\"],\"msg\":\"Input should be a valid "
		   "string\",\"input\":1},{\"type\":\"bool_type\",\"loc\":"
		   "[\"body\",\"is_graceful\"],\"msg\":\"Input should be a "
		   "valid boolean\",\"input\":[]},{\"type\":\"int_from_float\","
		   "\"loc\":[\"body\",\"timeout\"],\"msg\":\"Input should be a "
		   "valid integer, got a number with a fractional part\","
		   "\"input\":1.5}]}");
	free(d);
	assert_null(s.restart_mode);
	assert_int_equal(hp_json_parse_stop("[", 1, &s, &d), 422);
	assert_non_null(strstr(d, "json_invalid"));
	free(d);
	assert_int_equal(hp_json_parse_stop("7", 1, &s, &d), 422);
	assert_non_null(strstr(d, "model_attributes_type"));
	free(d);
}

static void test_status_minimal(void **st)
{
	struct hp_status s = {.status = "init", .assigned_rank = -1};
	char *j = hp_json_status(&s);
	assert_string_equal(j, "{\"status\":\"init\",\"transitions\":{},"
			       "\"spare\":\"False\"}");
	free(j);
}

static void test_status_full(void **st)
{
	const struct hp_transition tr[] = {
		{"INIT", "2026-11-25T13:04:30.123456+00:00"},
		{"READY", "2026-11-25T13:04:31+00:00"},
		{"RUNNING", "2026-11-25T13:04:32.000001+00:00"},
	};
	const struct hp_worker_data wd[] = {
		{0, 0, 0, false, "{\"loss\": 1.5}"},
		{1, 0, 1, true, "\"text\""},
		{2, 0, 2, false, "not json"},
		{3, 0, 3, false, NULL},
	};
	struct hp_status s = {
		.status = "running",
		.transitions = tr,
		.n_transitions = 3,
		.reason = "RunningStarted",
		.message = "say \"hi\"\n\xc3\xa9",
		.restart_mode = "in_process_restart",
		.worker_data = wd,
		.n_worker_data = 4,
		.rank_labels_json = "{\"0\":\"a\"}",
		.ipversion = "v1",
		.progress_json = "{\"step\":3}",
		.agent_version = "0.1.0",
		.assigned_rank = 7,
		.spare = true,
		.priority = true,
	};
	char *j = hp_json_status(&s);
	assert_string_equal(
		j, "{\"status\":\"running\",\"transitions\":{\"INIT\":"
		   "\"2026-11-25T13:04:30.123456+00:00\",\"READY\":"
		   "\"2026-11-25T13:04:31+00:00\",\"RUNNING\":"
		   "\"2026-11-25T13:04:32.000001+00:00\"},\"reason\":"
		   "\"RunningStarted\",\"message\":\"say \\\"hi\\\"\\n\xc3\xa9\","
		   "\"restartMode\":\"in_process_restart\",\"worker_data\":["
		   "{\"rank\":0,\"group_rank\":0,\"local_rank\":0,\"failed\":"
		   "false,\"data\":{\"loss\":1.5}},{\"rank\":1,\"group_rank\":0,"
		   "\"local_rank\":1,\"failed\":true,\"data\":\"text\"},"
		   "{\"rank\":2,\"group_rank\":0,\"local_rank\":2,\"failed\":"
		   "false,\"data\":\"not json\"},{\"rank\":3,\"group_rank\":0,"
		   "\"local_rank\":3,\"failed\":false,\"data\":null}],"
		   "\"rank_labels\":{\"0\":\"a\"},\"ipversion\":\"v1\","
		   "\"progress\":{\"step\":3},\"agent_version\":\"0.1.0\","
		   "\"assigned_rank\":\"7\",\"spare\":\"True\",\"priority\":"
		   "\"True\"}");
	free(j);
}

static void test_status_empty_progress(void **st)
{
	struct hp_status s = {.status = "ready",
			      .rank_labels_json = "{}",
			      .progress_json = "{}",
			      .assigned_rank = 0};
	char *j = hp_json_status(&s);
	assert_string_equal(j, "{\"status\":\"ready\",\"transitions\":{},"
			       "\"rank_labels\":{},\"assigned_rank\":\"0\","
			       "\"spare\":\"False\"}");
	free(j);
}

/* A step of 10^15 stays an integer: cJSON's own number printer would
 * give 1e+15, which a JSON reader takes for a float. */
static void test_status_large_progress_count(void **st)
{
	struct hp_status s = {
		.status = "running",
		.progress_json = "{\"run\":{\"progressData\":\"/c/1\","
				 "\"progressCount\":1000000000000000}}",
		.assigned_rank = -1};
	char *j = hp_json_status(&s);
	assert_non_null(strstr(j, "\"progressCount\":1000000000000000}"));
	assert_null(strstr(j, "e+"));
	free(j);
}

/* Issue 12 §2: 100k bad rankIps entries give 20 errors, a long string
 * input comes back cut, and a short one exactly as pydantic gives it. */
static void test_bounded_errors(void **st)
{
	struct hp_sbuf b = {0};
	hp_sbuf_puts(&b, "{" OKBODY ",\"rankIps\":[");
	for (int i = 0; i < 100000; i++)
		hp_sbuf_puts(&b, i ? ",{}" : "{}");
	hp_sbuf_puts(&b, "]}");
	char *body = hp_sbuf_finish(&b);
	struct hp_start_req r;
	char *d = NULL;
	assert_int_equal(start(body, &r, &d), 422);
	hp_start_req_fini(&r);
	size_t n = 0;
	for (const char *p = d; (p = strstr(p, "\"type\":")); p++)
		n++;
	assert_int_equal(n, 20);
	assert_true(strlen(d) < 4096);
	free(d);
	free(body);

	char big[2000];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	char *b2 = xasprintf("{" OKBODY ",\"ipVersion\":{\"k\":\"%s\"}}", big);
	d = NULL;
	assert_int_equal(start(b2, &r, &d), 422);
	hp_start_req_fini(&r);
	assert_non_null(strstr(d, "aaa...\"}"));
	assert_true(strlen(d) < 1000);
	free(d);
	free(b2);
}

int main(void)
{
	hp_log_level = HP_LOG_ERROR;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_minimal),
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_update_ignores_progress),
		cmocka_unit_test(test_duplicate_keys),
		cmocka_unit_test(test_missing),
		cmocka_unit_test(test_empty_and_null),
		cmocka_unit_test(test_invalid_json),
		cmocka_unit_test(test_ints),
		cmocka_unit_test(test_ranges),
		cmocka_unit_test(test_master),
		cmocka_unit_test(test_unicode),
		cmocka_unit_test(test_optional_types),
		cmocka_unit_test(test_spare),
		cmocka_unit_test(test_stop),
		cmocka_unit_test(test_status_minimal),
		cmocka_unit_test(test_status_full),
		cmocka_unit_test(test_status_empty_progress),
		cmocka_unit_test(test_status_large_progress_count),
		cmocka_unit_test(test_bounded_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
