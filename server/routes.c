/* routes.c — one function per route of PROTOCOL.md §HTTP. Each validates
 * its request and either answers at once (/status, /metrics, /fabric and
 * the fabric peer table, 4xx)
 * or hands a command to the agent through hp_srv_submit. Routing follows
 * Starlette: an unknown path is 404, a known path with another method is
 * 405 with an Allow header; HEAD is served wherever GET is. */
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"
#include "server-private.h"

static void body_of(struct evhttp_request *req, const char **body,
		    size_t *len)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	*len = evbuffer_get_length(in);
	*body = *len ? (const char *)evbuffer_pullup(in, -1) : "";
}

static void reply_4xx(struct hp_server *s, struct evhttp_request *req,
		      int code, char *detail_json)
{
	hp_srv_reply(s, req, code, "application/json", detail_json,
		     strlen(detail_json));
	free(detail_json);
}

static void start_or_update(struct hp_server *s, struct evhttp_request *req,
			    enum hp_cmd_kind kind)
{
	const char *body;
	size_t len;
	char *detail = NULL;
	body_of(req, &body, &len);
	struct hp_pending *p = xcalloc(1, sizeof(*p));
	p->cmd.kind = kind;
	p->cmd.stop.timeout = -1;
	int rc = hp_json_parse_start(body, len, kind == HP_CMD_UPDATE,
				     &p->cmd.start, &detail);
	if (rc) {
		free(p);
		reply_4xx(s, req, rc, detail);
		return;
	}
	hp_srv_submit(s, req, p);
}

static void route_start(struct hp_server *s, struct evhttp_request *req)
{
	start_or_update(s, req, HP_CMD_START);
}

static void route_update(struct hp_server *s, struct evhttp_request *req)
{
	start_or_update(s, req, HP_CMD_UPDATE);
}

static void route_stop(struct hp_server *s, struct evhttp_request *req)
{
	const char *body;
	size_t len;
	char *detail = NULL;
	body_of(req, &body, &len);
	struct hp_pending *p = xcalloc(1, sizeof(*p));
	p->cmd.kind = HP_CMD_STOP;
	int rc = hp_json_parse_stop(body, len, &p->cmd.stop, &detail);
	if (rc) {
		free(p);
		reply_4xx(s, req, rc, detail);
		return;
	}
	hp_srv_submit(s, req, p);
}

static void route_shutdown(struct hp_server *s, struct evhttp_request *req)
{
	struct hp_pending *p = xcalloc(1, sizeof(*p));
	p->cmd.kind = HP_CMD_SHUTDOWN;
	p->cmd.stop.timeout = -1;
	hp_srv_submit(s, req, p);
}

static void route_status(struct hp_server *s, struct evhttp_request *req)
{
	char *st = hp_srv_copy(s, &s->status);
	const char *body = st ? st : HP_SRV_DEFAULT_STATUS;
	hp_srv_reply(s, req, 200, "application/json", body, strlen(body));
	free(st);
}

/* The agent's text, then this thread's own request counters (none before
 * the agent's first publish: the body stays empty). With a metrics_cb the
 * text is rendered here, so publishing a status costs no metrics text. */
static char *agent_metrics(struct hp_server *s)
{
	if (!s->metrics_cb)
		return hp_srv_copy(s, &s->metrics);
	pthread_mutex_lock(&s->mu);
	bool published = s->status != NULL;
	pthread_mutex_unlock(&s->mu);
	return published ? s->metrics_cb(s->ud) : NULL;
}

static void route_metrics(struct hp_server *s, struct evhttp_request *req)
{
	char *m = agent_metrics(s);
	if (!m) {
		hp_srv_reply(s, req, 200,
			     "text/plain; version=0.0.4; charset=utf-8", "", 0);
		return;
	}
	struct evbuffer *b = evbuffer_new();
	if (!b)
		hp_bug("evbuffer_new failed");
	evbuffer_add(b, m, strlen(m));
	evbuffer_add_printf(b,
			    "# HELP hyperpodrun_http_requests_total HTTP "
			    "requests answered, by route and status code.\n"
			    "# TYPE hyperpodrun_http_requests_total counter\n");
	for (size_t i = 0; i < s->n_http_count; i++) {
		const struct hp_srv_http_count *c = &s->http_count[i];
		evbuffer_add_printf(b,
				    "hyperpodrun_http_requests_total{"
				    "route=\"%s\",code=\"%d\"} %llu\n",
				    c->route, c->code, c->n);
	}
	evbuffer_add_printf(b,
			    "# HELP hyperpodrun_console_dropped_lines_total "
			    "Lines for the agent's stdout/stderr dropped "
			    "because nobody read them fast enough (log files "
			    "keep them).\n"
			    "# TYPE hyperpodrun_console_dropped_lines_total "
			    "counter\n"
			    "hyperpodrun_console_dropped_lines_total %llu\n",
			    hp_console_dropped());
	evbuffer_add_printf(b,
			    "# HELP hyperpodrun_http_connections HTTP "
			    "connections open now (this one included).\n"
			    "# TYPE hyperpodrun_http_connections gauge\n"
			    "hyperpodrun_http_connections %d\n"
			    "# HELP hyperpodrun_http_connections_limit The most "
			    "HTTP connections open at once (RLIMIT_NOFILE/2).\n"
			    "# TYPE hyperpodrun_http_connections_limit gauge\n"
			    "hyperpodrun_http_connections_limit %d\n"
			    "# HELP hyperpodrun_http_connections_closed_total "
			    "HTTP connections closed by the agent: no whole "
			    "request within the deadline, or past the limit.\n"
			    "# TYPE hyperpodrun_http_connections_closed_total "
			    "counter\n"
			    "hyperpodrun_http_connections_closed_total{reason="
			    "\"deadline\"} %llu\n"
			    "hyperpodrun_http_connections_closed_total{reason="
			    "\"limit\"} %llu\n",
			    s->n_conns, s->max_conns, s->closed_deadline,
			    s->closed_limit);
	size_t len = evbuffer_get_length(b);
	hp_srv_reply(s, req, 200, "text/plain; version=0.0.4; charset=utf-8",
		     (const char *)evbuffer_pullup(b, -1), len);
	evbuffer_free(b);
	free(m);
}

static void route_fabric(struct hp_server *s, struct evhttp_request *req)
{
	char *f = hp_srv_copy(s, &s->fabric);
	if (!f) {
		hp_srv_reply_detail(s, req, 404, "Not Found");
		return;
	}
	hp_srv_reply(s, req, 200, "application/json", f, strlen(f));
	free(f);
}

/* ---- the fabric peer table (agent/xnode.c's out-of-band exchange) ---- */

/* 2 * HP_FABRIC_NAME_MAX hex digits; a host:port of a name or address. */
#define FABRIC_NAME_HEX_MAX 512
#define FABRIC_HTTP_MAX 300
#define FABRIC_SIZE_MAX 65536

static bool all_of(const char *s, const char *set, size_t max)
{
	size_t n = strlen(s);
	return n > 0 && n <= max && strspn(s, set) == n;
}

/* mu held. Allocates the table on the first size known. */
static void fabric_size_locked(struct hp_server *s, unsigned n)
{
	if (s->fpeers || n == 0)
		return;
	s->fpeers = xcalloc(n, sizeof(*s->fpeers));
	s->n_fpeers = n;
}

void hp_server_fabric_expect(struct hp_server *s, unsigned n)
{
	pthread_mutex_lock(&s->mu);
	fabric_size_locked(s, n);
	pthread_mutex_unlock(&s->mu);
}

void hp_srv_fabric_peers_free(struct hp_server *s)
{
	for (unsigned i = 0; s->fpeers && i < s->n_fpeers; i++) {
		free(s->fpeers[i].name);
		free(s->fpeers[i].http);
	}
	free(s->fpeers);
	s->fpeers = NULL;
	s->n_fpeers = 0;
}

static const char *peer_of(struct evhttp_request *req)
{
	char *peer = NULL;
	ev_uint16_t port = 0;
	struct evhttp_connection *c = evhttp_request_get_connection(req);
	if (c)
		evhttp_connection_get_peer(c, &peer, &port);
	return peer ? peer : "-";
}

/* A rank's record; a second join of the same rank (an agent that came
 * back with a new endpoint) replaces the first. Answered at once, on this
 * thread: the agent's loop may be busy in a collective. */
static void route_fabric_join(struct hp_server *s, struct evhttp_request *req)
{
	const char *body;
	size_t len;
	char *detail = NULL;
	struct hp_fabric_join j;
	body_of(req, &body, &len);
	int rc = hp_json_parse_fabric_join(body, len, &j, &detail);
	if (rc) {
		reply_4xx(s, req, rc, detail);
		return;
	}
	const char *bad = NULL;
	if (!all_of(j.name, "0123456789abcdefABCDEF", FABRIC_NAME_HEX_MAX) ||
	    strlen(j.name) % 2)
		bad = "name must be an even number of hex digits";
	else if (!all_of(j.http,
			 "0123456789abcdefghijklmnopqrstuvwxyz"
			 "ABCDEFGHIJKLMNOPQRSTUVWXYZ.-_:[]%",
			 FABRIC_HTTP_MAX) ||
		 !strchr(j.http, ':'))
		bad = "http must be host:port";
	else if (j.rank < 0 || j.rank >= FABRIC_SIZE_MAX ||
		 (j.size != -1 && (j.size < 1 || j.size > FABRIC_SIZE_MAX)) ||
		 j.epoch < 0)
		bad = "rank or size out of range";
	if (bad) {
		hp_fabric_join_fini(&j);
		hp_srv_reply_detail(s, req, 422, bad);
		return;
	}
	int code = 200;
	bool replaced = false;
	/* Only the agent sizes the table (hp_server_fabric_expect, its own
	 * nnodes): a stranger's "size":1 used to fix it for ever and turn
	 * every real join into a 409 (issue 12 §8). Until the agent knows,
	 * joins get 409 and retry. */
	pthread_mutex_lock(&s->mu);
	if (!s->fpeers) {
		bad = "the table's size is not known yet; retry";
		code = 409;
	} else if (j.size > 0 && (unsigned)j.size != s->n_fpeers) {
		bad = "size differs from this agent's nnodes";
		code = 422;
	} else if ((unsigned)j.rank >= s->n_fpeers) {
		bad = "rank is not below the table's size";
		code = 422;
	} else {
		struct hp_srv_fabric_peer *p = &s->fpeers[j.rank];
		replaced = p->name && (strcmp(p->name, j.name) != 0 ||
				       strcmp(p->http, j.http) != 0);
		if (replaced)
			hp_warn("server", "fabric peer table: rank %d replaced "
				"(was %s, now %s from %s)", j.rank, p->http,
				j.http, peer_of(req));
		free(p->name);
		free(p->http);
		p->name = j.name;
		p->http = j.http;
		p->epoch = j.epoch;
		j.name = j.http = NULL;
	}
	pthread_mutex_unlock(&s->mu);
	hp_fabric_join_fini(&j);
	if (bad) {
		hp_srv_reply_detail(s, req, code, bad);
		return;
	}
	hp_srv_reply(s, req, 200, "application/json", "{}", 2);
}

/* ?epoch=E of GET /fabric/peers (issue 13 §1): a record of an older
 * round (an agent that has not re-joined since it came back) does not
 * count. 0 when absent or not a number. */
static int peers_epoch(struct evhttp_request *req)
{
	const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
	struct evkeyvalq kv;
	int epoch = 0;
	if (q && evhttp_parse_query_str(q, &kv) == 0) {
		const char *v = evhttp_find_header(&kv, "epoch");
		char *end = NULL;
		long n = v ? strtol(v, &end, 10) : 0;
		if (v && *v && end && !*end && n > 0 && n < INT_MAX)
			epoch = (int)n;
		evhttp_clear_headers(&kv);
	}
	return epoch;
}

/* {"size":N,"peers":[{"rank":r,"name":hex,"http":"host:port"},…]} once
 * every rank joined (for ?epoch=E: with a record of round E or later),
 * else 503 {"detail":"incomplete","missing":[ranks]}
 * ({"detail":"incomplete"} while the size is unknown). Names and
 * addresses were checked on the way in: nothing here needs escaping. */
static void route_fabric_peers(struct hp_server *s, struct evhttp_request *req)
{
	struct evbuffer *b = evbuffer_new();
	if (!b)
		hp_bug("evbuffer_new failed");
	bool complete = false;
	int epoch = peers_epoch(req);
	pthread_mutex_lock(&s->mu);
	if (s->fpeers) {
		complete = true;
		for (unsigned i = 0; i < s->n_fpeers; i++)
			complete = complete && s->fpeers[i].name &&
				   s->fpeers[i].epoch >= epoch;
	}
	if (complete) {
		evbuffer_add_printf(b, "{\"size\":%u,\"peers\":[", s->n_fpeers);
		for (unsigned i = 0; i < s->n_fpeers; i++)
			evbuffer_add_printf(b,
					    "%s{\"rank\":%u,\"name\":\"%s\","
					    "\"http\":\"%s\"}",
					    i ? "," : "", i, s->fpeers[i].name,
					    s->fpeers[i].http);
		evbuffer_add_printf(b, "]}");
	} else if (s->fpeers) {
		/* who has not joined yet, for the waiting agents' logs */
		evbuffer_add_printf(b, "{\"detail\":\"incomplete\","
				       "\"missing\":[");
		bool first = true;
		for (unsigned i = 0; i < s->n_fpeers; i++) {
			if (s->fpeers[i].name && s->fpeers[i].epoch >= epoch)
				continue;
			evbuffer_add_printf(b, "%s%u", first ? "" : ",", i);
			first = false;
		}
		evbuffer_add_printf(b, "]}");
	}
	pthread_mutex_unlock(&s->mu);
	if (complete || evbuffer_get_length(b))
		hp_srv_reply(s, req, complete ? 200 : 503, "application/json",
			     (const char *)evbuffer_pullup(b, -1),
			     evbuffer_get_length(b));
	else
		hp_srv_reply_detail(s, req, 503, "incomplete");
	evbuffer_free(b);
}

static const struct route {
	const char *path;
	enum evhttp_cmd_type method;
	const char *allow;
	void (*fn)(struct hp_server *s, struct evhttp_request *req);
} routes[] = {
	{"/start", EVHTTP_REQ_POST, "POST", route_start},
	{"/stop", EVHTTP_REQ_POST, "POST", route_stop},
	{"/update", EVHTTP_REQ_POST, "POST", route_update},
	{"/shutdown", EVHTTP_REQ_POST, "POST", route_shutdown},
	{"/status", EVHTTP_REQ_GET, "GET, HEAD", route_status},
	{"/metrics", EVHTTP_REQ_GET, "GET, HEAD", route_metrics},
	{"/fabric", EVHTTP_REQ_GET, "GET, HEAD", route_fabric},
	{"/fabric/join", EVHTTP_REQ_POST, "POST", route_fabric_join},
	{"/fabric/peers", EVHTTP_REQ_GET, "GET, HEAD", route_fabric_peers},
};

void hp_srv_count_path(struct hp_server *s, const char *path, int code)
{
	/* only known routes become labels, so a scan of random paths cannot
	 * grow the table */
	const char *route = "other";
	for (size_t i = 0; path && i < HP_ARRAY_LEN(routes); i++)
		if (strcmp(path, routes[i].path) == 0)
			route = routes[i].path;
	size_t i = 0;
	struct hp_srv_http_count *c = s->http_count;
	while (i < s->n_http_count &&
	       !(c[i].route == route && c[i].code == code))
		i++;
	if (i == s->n_http_count) {
		if (i == HP_ARRAY_LEN(s->http_count))
			return; /* 8 routes x the codes we send fit */
		c[s->n_http_count++] =
			(struct hp_srv_http_count){route, code, 0};
	}
	c[i].n++;
}

void hp_srv_count_reply(struct hp_server *s, struct evhttp_request *req,
			int code)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	hp_srv_count_path(s, uri ? evhttp_uri_get_path(uri) : NULL, code);
}

void hp_srv_route(struct evhttp_request *req, void *arg)
{
	struct hp_server *s = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type m = evhttp_request_get_command(req);
	if (m == EVHTTP_REQ_HEAD)
		m = EVHTTP_REQ_GET;
	for (size_t i = 0; path && i < HP_ARRAY_LEN(routes); i++) {
		if (strcmp(path, routes[i].path) != 0)
			continue;
		if (m != routes[i].method) {
			evhttp_add_header(evhttp_request_get_output_headers(req),
					  "Allow", routes[i].allow);
			hp_srv_reply_detail(s, req, 405, "Method Not Allowed");
			return;
		}
		routes[i].fn(s, req);
		return;
	}
	hp_srv_reply_detail(s, req, 404, "Not Found");
}
