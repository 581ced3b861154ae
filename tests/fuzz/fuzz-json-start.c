/* fuzz-json-start — hp_json_parse_start (the /start and /update body
 * decoder) on arbitrary bytes, both as /start and as /update. A body it
 * accepts is carried on the way the agent carries it: echoed back through
 * hp_json_status (progress, worker data) and, for rankIps, merged and
 * rendered as pod_resourceconfig.json; every text that comes back must be
 * JSON that cJSON reads. A 4xx must come with a JSON detail and leave
 * nothing to free. */
#include <cjson/cJSON.h>
#include <string.h>

#include "fuzz.h"
#include "rendezvous/resconf.h"
#include "server/server.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

static void check_json(const char *text)
{
	FUZZ_CHECK(text != NULL);
	cJSON *j = cJSON_Parse(text);
	FUZZ_CHECK(j != NULL);
	cJSON_Delete(j);
}

static void carry_on(const struct hp_start_req *r)
{
	FUZZ_CHECK(r->master_addr != NULL);
	if (r->progress_json)
		check_json(r->progress_json);
	if (r->log_monitoring_json)
		check_json(r->log_monitoring_json);
	if (r->worker_data_json)
		check_json(r->worker_data_json);
	FUZZ_CHECK(!r->n_rank_ips || r->has_rank_ips);
	for (size_t i = 0; i < r->n_rank_ips; i++)
		FUZZ_CHECK(r->rank_ips[i].ip != NULL);

	struct hp_transition tr = {.state = "RUNNING", .ts = "2026-01-01T00:00:00"};
	struct hp_worker_data wd = {
		.rank = r->rank, .group_rank = r->rank, .local_rank = 0,
		.data_json = r->worker_data_json,
	};
	struct hp_status st = {
		.status = "running",
		.transitions = &tr,
		.n_transitions = 1,
		.worker_data = r->worker_data_json ? &wd : NULL,
		.n_worker_data = r->worker_data_json ? 1 : 0,
		.ipversion = r->ip_version,
		.progress_json = r->progress_json,
		.assigned_rank = r->rank,
		.spare = r->spare,
	};
	char *status = hp_json_status(&st);
	check_json(status);
	free(status);

	if (!r->has_rank_ips)
		return;
	char **table = NULL;
	size_t n = 0;
	/* Bounded like the agent: a nnodes past the limit is refused. */
	if (hp_resconf_merge(NULL, 0, r->nnodes, r->rank_ips, r->n_rank_ips,
			     &table, &n) < 0)
		return;
	FUZZ_CHECK(n == (size_t)r->nnodes || r->n_rank_ips == 0);
	const char *cur = r->rank >= 0 && (size_t)r->rank < n ? table[r->rank]
							     : NULL;
	char *text = hp_resconf_render(table, n, cur, r->ip_version);
	check_json(text);
	free(text);
	hp_resconf_ips_free(table, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A copy of exactly size bytes, so ASan sees any read past the end
	 * (the decoder must not rely on a NUL terminator). */
	char *body = malloc(size ? size : 1);
	memcpy(body, data, size);
	for (int upd = 0; upd < 2; upd++) {
		struct hp_start_req r;
		char *detail = (char *)1;
		int rc = hp_json_parse_start(body, size, upd, &r, &detail);
		if (rc == 0) {
			FUZZ_CHECK(detail == NULL);
			carry_on(&r);
			hp_start_req_fini(&r);
		} else {
			FUZZ_CHECK(rc >= 400 && rc < 500);
			check_json(detail);
			free(detail);
		}
	}
	free(body);
	return 0;
}
