/* routes.c — one function per route of PROTOCOL.md §HTTP. Each validates
 * its request and either answers at once (/status, /metrics, /fabric, 4xx)
 * or hands a command to the agent through hp_srv_submit. Routing follows
 * Starlette: an unknown path is 404, a known path with another method is
 * 405 with an Allow header; HEAD is served wherever GET is. */
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdlib.h>
#include <string.h>

#include "../agent/xalloc.h"
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

/* The agent's published text, then this thread's own request counters
 * (none before the agent's first publish: the body stays empty). */
static void route_metrics(struct hp_server *s, struct evhttp_request *req)
{
	char *m = hp_srv_copy(s, &s->metrics);
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
};

void hp_srv_count_reply(struct hp_server *s, struct evhttp_request *req,
			int code)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
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
