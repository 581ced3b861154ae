/* xnode.c — the in-process restart across nodes (issue 5 §3-4, issue 13):
 * with --inprocess-restart and nnodes > 1, the agents meet on the libfabric
 * control plane (rendezvous/fabric.h) once their local ranks are at the
 * barrier: a fabric barrier, an allgather of each node's worker data and a
 * broadcast of global rank 0's NCCL unique id, all within one deadline
 * (--inprocess-timeout) for the whole round. Endpoint names travel out of
 * band over HTTP: every round, every agent joins the peer table on rank
 * 0's server for that round's epoch (POST /fabric/join) and reads it back
 * complete for that epoch (GET /fabric/peers?epoch=E), so an agent that
 * came back with a new endpoint is re-learnt. A round runs on a thread of
 * its own that owns the fabric while it runs, never on the loop: the loop
 * keeps taking /start, /stop, /update, SIGCHLD and signals, and hears the
 * outcome through a uv_async. In local mode a worker's fault is told to
 * every peer (POST /stop), so all nodes restart together. It never kills
 * or spawns anything itself (ipr.c decides). */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <ctype.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agent-private.h"
#include "base/log.h"
#include "rendezvous/fabric.h"
#include "rendezvous/resconf.h"
#include "server/server.h"
#include "base/xalloc.h"

#define COMP "xnode"
/* Without --inprocess-timeout, a round gives up after this long. */
#define DEFAULT_DEADLINE_MS 60000
/* One HTTP exchange with rank 0's server. */
#define HTTP_TIMEOUT_MS 2000
/* Telling peers about a restart is best effort and must not hold the
 * loop: one deadline for all of them. */
#define FAULT_POST_TIMEOUT_MS 1000
#define HTTP_REPLY_MAX (1 << 20)
#define NCCL_HEX_LEN 256

/* One round: what the loop hands the thread, and what comes back. The
 * thread owns it (and x->f) from pthread_create to the async callback. */
enum round_kind {
	ROUND_INIT,    /* the barrier of freshly spawned processes */
	ROUND_BARRIER, /* the barrier of an in-process restart */
	ROUND_START,   /* operator mode: after the first /start of a group */
};

struct round {
	enum round_kind kind;
	uint64_t epoch;
	int deadline_ms;  /* for the whole round */
	char *node;       /* the address to bind, NULL: the route's */
	char rec[HP_FABRIC_RECORD_MAX]; /* this node's worker data */
	char nccl[NCCL_HEX_LEN + 1];    /* in: ours (rank 0); out: shared */
	char *all;        /* out: every node's worker data */
	bool disabled;    /* out: this node cannot take part */
	bool opened;      /* out: an endpoint was opened */
	bool relearnt;    /* out: the peer table changed */
	int rc;
	char why[1024];
	long long ms;
};

struct hp_xnode {
	struct hp_agent *a;
	struct hp_fabric *f; /* NULL until opened; the round thread's */
	unsigned rank, size;
	bool disabled; /* no usable provider or server: node-local IPR */
	bool ready;    /* a round succeeded once */
	char *self_http;
	char *root_http;
	char *node;        /* what the endpoint is bound to ("" = route's) */
	char **peer_names; /* [size] hex, the table last applied */
	uint64_t epoch;    /* the last epoch used */
	bool epoch_failed;
	bool reinsert; /* drop every connection at the next round */
	/* the group's ranks hold the job's NCCL id (a round succeeded since
	 * they were spawned): no round needed at /start */
	bool shared;
	/* the round thread */
	pthread_mutex_t mu; /* x->f's pointer, peer_http */
	char **peer_http;   /* [size], from the peer table; mu */
	pthread_t th;
	bool running; /* a thread to join */
	unsigned env_mask; /* hp_fabric_env_set() while an endpoint opens */
	bool wanted;  /* the agent waits for its outcome */
	atomic_bool cancel;
	/* a /stop that came while a round ran: applied once it ended, as if
	 * the loop had waited for the round */
	bool stop_deferred;
	struct hp_stop_req stop;
	struct round r;
	uv_async_t done;
};

/* An endpoint was opened once in this process (libfabric initialised
 * with our environment); the loop's thread only. */
static bool fabric_initialised;

/* ------------------------------------------------------------------ */
/* HTTP between agents: libevent's client on an event base of our own  */

/* The waits look at the cancel flag and the deadline this often. */
#define CANCEL_SLICE_MS 50

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "host:port" or "[v6]:port" into host and port. */
static int split_hostport(const char *hp, char *host, size_t cap,
			  char *port, size_t pcap)
{
	const char *colon = strrchr(hp, ':');
	if (!colon || !colon[1] || strlen(colon + 1) >= pcap)
		return -EINVAL;
	const char *h = hp;
	size_t n = (size_t)(colon - hp);
	if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
		h++;
		n -= 2;
	}
	if (n == 0 || n >= cap)
		return -EINVAL;
	memcpy(host, h, n);
	host[n] = '\0';
	strcpy(port, colon + 1);
	return 0;
}

/* One request in flight on a base; several may share one (tell_all). */
struct call {
	struct event_base *base;
	struct evhttp_connection *conn;
	unsigned *pending;
	bool want_body;
	bool done;
	int rc;     /* 0, or -errno when no answer came */
	int status; /* the answer's HTTP status */
	char *body; /* its body, NUL-terminated (want_body) */
	enum evhttp_request_error err;
	bool failed;
};

static void call_error(enum evhttp_request_error e, void *arg)
{
	struct call *c = arg;
	c->failed = true;
	c->err = e;
}

static void call_done(struct evhttp_request *req, void *arg)
{
	struct call *c = arg;
	int code = req ? evhttp_request_get_response_code(req) : 0;
	if (code <= 0) {
		c->rc = c->failed && c->err == EVREQ_HTTP_TIMEOUT ? -ETIMEDOUT
			: c->failed && c->err == EVREQ_HTTP_EOF   ? -ECONNRESET
								  : -EHOSTUNREACH;
	} else {
		c->status = code;
		struct evbuffer *b = evhttp_request_get_input_buffer(req);
		size_t n = HP_MIN(evbuffer_get_length(b), (size_t)HTTP_REPLY_MAX);
		if (c->want_body) {
			c->body = xmalloc(n + 1);
			evbuffer_copyout(b, c->body, n);
			c->body[n] = '\0';
		}
	}
	c->done = true;
	if (--*c->pending == 0)
		event_base_loopbreak(c->base);
}

/* Sends one request; call_done() reports it. Returns 0, or -errno (then
 * c->done is set and nothing is in flight). */
static int call_start(struct call *c, struct event_base *base,
		      unsigned *pending, const char *hostport,
		      enum evhttp_cmd_type method, const char *path,
		      const char *body, int timeout_ms)
{
	char host[256], port[16];
	memset(c, 0, sizeof(*c));
	c->base = base;
	c->pending = pending;
	c->done = true;
	char *end = NULL;
	long p = 0;
	if (split_hostport(hostport, host, sizeof(host), port, sizeof(port)) ||
	    (p = strtol(port, &end, 10)) <= 0 || p > 65535 || *end)
		return c->rc = -EINVAL;
	c->conn = evhttp_connection_base_new(base, NULL, host,
					     (ev_uint16_t)p);
	if (!c->conn)
		return c->rc = -ENOMEM;
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	evhttp_connection_set_timeout_tv(c->conn, &tv);
	evhttp_connection_set_retries(c->conn, 0);
	struct evhttp_request *req = evhttp_request_new(call_done, c);
	if (!req)
		return c->rc = -ENOMEM;
	evhttp_request_set_error_cb(req, call_error);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Host", hostport);
	evhttp_add_header(h, "Connection", "close");
	if (body) {
		evhttp_add_header(h, "Content-Type", "application/json");
		evbuffer_add(evhttp_request_get_output_buffer(req), body,
			     strlen(body));
	}
	c->done = false;
	(*pending)++;
	if (evhttp_make_request(c->conn, req, method, path) != 0) {
		/* libevent freed req */
		(*pending)--;
		c->done = true;
		return c->rc = -EIO;
	}
	return 0;
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg; /* only wakes event_base_loop up to look at the clock */
}

/* Runs base until nothing is pending, until (ms, monotonic) passes or
 * *cancel is set; whatever did not answer gets -ETIMEDOUT/-ECANCELED. */
static void calls_run(struct event_base *base, struct call *calls, size_t n,
		      unsigned *pending, long long until,
		      const atomic_bool *cancel)
{
	struct timeval slice = {0, CANCEL_SLICE_MS * 1000};
	struct event *wake = event_new(base, -1, EV_PERSIST, wake_cb, NULL);
	if (wake)
		event_add(wake, &slice);
	while (*pending && now_ms() < until &&
	       !(cancel && atomic_load(cancel)))
		event_base_loop(base, EVLOOP_ONCE);
	if (wake)
		event_free(wake);
	for (size_t i = 0; i < n; i++) {
		struct call *c = &calls[i];
		if (!c->done)
			c->rc = cancel && atomic_load(cancel) ? -ECANCELED
							      : -ETIMEDOUT;
		if (c->conn)
			evhttp_connection_free(c->conn); /* frees its request */
		c->conn = NULL;
		c->done = true;
	}
	*pending = 0;
}

/* One exchange on the round thread's base: status in *status and the
 * body (caller frees) in *body. Returns 0 or -errno. */
static int http_request(struct event_base *base, const char *hostport,
			enum evhttp_cmd_type method, const char *path,
			const char *req_body, int timeout_ms,
			const atomic_bool *cancel, int *status, char **body)
{
	struct call c;
	unsigned pending = 0;
	*status = 0;
	*body = NULL;
	int rc = call_start(&c, base, &pending, hostport, method, path,
			    req_body, timeout_ms);
	if (rc == 0) {
		c.want_body = true;
		calls_run(base, &c, 1, &pending, now_ms() + timeout_ms, cancel);
		rc = c.rc;
	}
	if (rc == 0) {
		*status = c.status;
		*body = c.body;
	} else {
		free(c.body);
	}
	return rc;
}

/* ------------------------------------------------------------------ */
/* where things are                                                    */

static int deadline_ms(const struct hp_agent *a)
{
	double t = a->cfg->inprocess_timeout;
	return t > 0 ? (int)HP_MAX(t * 1000.0, 1.0) : DEFAULT_DEADLINE_MS;
}

static bool is_loopback(const char *addr)
{
	return addr && (strncmp(addr, "127.", 4) == 0 ||
			strcmp(addr, "localhost") == 0 ||
			strcmp(addr, "::1") == 0);
}

static bool is_wildcard(const char *host)
{
	return !host || !*host || strcmp(host, "0.0.0.0") == 0 ||
	       strcmp(host, "::") == 0;
}

/* Operator mode: group rank r's IP from the table of /start's rankIps,
 * or NULL. */
static char *rank_ip(const struct hp_agent *a, int r)
{
	if (!a->resconf)
		return NULL;
	char *ips = hp_resconf_ips_json(a->resconf);
	cJSON *v = cJSON_Parse(ips);
	free(ips);
	const cJSON *ip = cJSON_GetArrayItem(v, r);
	char *out = cJSON_IsString(ip) && *ip->valuestring
			    ? xstrdup(ip->valuestring)
			    : NULL;
	cJSON_Delete(v);
	return out;
}

static char *host_port(const char *host, int port)
{
	if (strchr(host, ':'))
		return xasprintf("[%s]:%d", host, port);
	return xasprintf("%s:%d", host, port);
}

/* Where peers reach our server: --local-addr, else the server's own
 * address when it is not a wildcard, else (operator mode) our IP in
 * /start's rankIps, else loopback when the master is (one machine), else
 * our host name. */
static char *self_http(const struct hp_agent *a, int port)
{
	const struct hp_config *c = a->cfg;
	if (c->local_addr && *c->local_addr)
		return host_port(c->local_addr, port);
	if (!is_wildcard(c->server_host))
		return host_port(c->server_host, port);
	char *ip = c->mode == HP_MODE_OPERATOR ? rank_ip(a, a->group_rank)
					       : NULL;
	char *out = host_port(ip                            ? ip
			      : is_loopback(a->master_addr) ? "127.0.0.1"
							    : a->hostname,
			      port);
	free(ip);
	return out;
}

/* Rank 0's server: HYPERPODRUN_FABRIC_ROOT; else in operator mode rank
 * 0's IP in /start's rankIps with our own --server-port (every agent of a
 * job listens on the same one); else --rdzv-endpoint (local static mode);
 * else our own server when we are rank 0. */
static char *root_http(const struct hp_agent *a, int port)
{
	const char *env = getenv("HYPERPODRUN_FABRIC_ROOT");
	if (env && *env)
		return xstrdup(env);
	if (a->cfg->mode == HP_MODE_OPERATOR) {
		char *ip = rank_ip(a, 0);
		char *out = ip ? host_port(ip, port) : NULL;
		free(ip);
		return out;
	}
	const char *ep = a->cfg->rdzv_endpoint;
	if (ep && strchr(ep, ':') && strcmp(strrchr(ep, ':'), ":0") != 0)
		return xstrdup(ep);
	if (a->group_rank == 0)
		return host_port(is_wildcard(a->cfg->server_host)
					 ? "127.0.0.1"
					 : a->cfg->server_host,
				 port);
	return NULL;
}

/* "ranks 1,3 did not join" from a 503 {"missing":[1,3]}; false if none. */
static bool missing_ranks(const char *body, char *out, size_t cap)
{
	cJSON *v = body ? cJSON_Parse(body) : NULL;
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(v, "missing");
	const cJSON *r;
	size_t off = 0;
	out[0] = '\0';
	if (cJSON_IsArray(m) && cJSON_GetArraySize(m) > 0) {
		off = (size_t)snprintf(out, cap, "ranks ");
		cJSON_ArrayForEach(r, m)
		{
			if (off < cap && cJSON_IsNumber(r))
				off += (size_t)snprintf(out + off, cap - off,
							"%s%d",
							r == m->child ? "" : ",",
							r->valueint);
		}
		if (off < cap)
			snprintf(out + off, cap - off, " did not join");
	}
	cJSON_Delete(v);
	return out[0] != '\0';
}

/* ------------------------------------------------------------------ */
/* what a round carries                                                */

static bool is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]))
			return false;
	return s[n] == '\0';
}

/* Global rank 0's {"NCCL_UNIQUE_ID": "<256 hex>"}, sent as job_data (a
 * JSON string holding that object, or the object itself), into out
 * (NCCL_HEX_LEN + 1 bytes); "" when rank 0 is not here or sent none.
 * Data sent before the operator ranked the job carries a negative rank
 * (group rank -1 before /start, as the reference's): it counts when the
 * worker that sent it is global rank 0 now. */
static void local_nccl_id(const struct hp_agent *a, char *out)
{
	out[0] = '\0';
	for (int i = 0; i < a->nproc; i++) {
		const struct worker *w = &a->workers[i];
		bool rank0 = w->data_rank == 0 ||
			     (w->data_rank < 0 && agent_global_rank(a, i) == 0);
		if (!rank0 || !w->data_json)
			continue;
		cJSON *v = cJSON_Parse(w->data_json);
		if (cJSON_IsString(v)) {
			cJSON *inner = cJSON_Parse(v->valuestring);
			cJSON_Delete(v);
			v = inner;
		}
		const cJSON *id =
			cJSON_GetObjectItemCaseSensitive(v, "NCCL_UNIQUE_ID");
		if (cJSON_IsString(id) &&
		    strlen(id->valuestring) == NCCL_HEX_LEN &&
		    is_hex(id->valuestring, NCCL_HEX_LEN))
			memcpy(out, id->valuestring, NCCL_HEX_LEN + 1);
		else if (id)
			hp_warn(COMP, "rank 0's NCCL_UNIQUE_ID is not %d hex "
				"digits: ignored", NCCL_HEX_LEN);
		cJSON_Delete(v);
	}
}

/* This node's /status worker_data entries as a JSON array, into rec
 * (HP_FABRIC_RECORD_MAX bytes, NUL-padded); the data values are left out
 * when they do not fit. */
static void node_record(const struct hp_agent *a, char *rec)
{
	memset(rec, 0, HP_FABRIC_RECORD_MAX);
	for (int with_data = 1; with_data >= 0; with_data--) {
		cJSON *arr = cJSON_CreateArray();
		for (int i = 0; i < a->nproc; i++) {
			const struct worker *w = &a->workers[i];
			if (w->data_rank < 0 && !w->failed)
				continue;
			cJSON *o = cJSON_CreateObject();
			cJSON_AddNumberToObject(
				o, "rank",
				w->data_rank >= 0
					? w->data_rank
					: a->group_rank * a->nproc + i);
			cJSON_AddNumberToObject(o, "group_rank", a->group_rank);
			cJSON_AddNumberToObject(o, "local_rank", i);
			cJSON_AddBoolToObject(o, "failed", w->failed);
			cJSON *d = with_data && w->data_json
					   ? cJSON_Parse(w->data_json)
					   : NULL;
			cJSON_AddItemToObject(o, "data",
					      d ? d : cJSON_CreateNull());
			cJSON_AddItemToArray(arr, o);
		}
		char *s = cJSON_PrintUnformatted(arr);
		cJSON_Delete(arr);
		size_t n = s ? strlen(s) : 0;
		if (s && n < HP_FABRIC_RECORD_MAX) {
			memcpy(rec, s, n);
			cJSON_free(s);
			if (!with_data)
				hp_warn(COMP, "this node's worker data is over "
					"%d bytes: sent without the data",
					HP_FABRIC_RECORD_MAX);
			return;
		}
		cJSON_free(s);
	}
	strcpy(rec, "[]");
}

/* Every node's array joined into one. */
static char *join_records(const char *all, unsigned n)
{
	size_t cap = 2, len = 0;
	for (unsigned r = 0; r < n; r++)
		cap += strnlen(all + (size_t)r * HP_FABRIC_RECORD_MAX,
			       HP_FABRIC_RECORD_MAX) + 1;
	char *out = xmalloc(cap + 1);
	out[len++] = '[';
	for (unsigned r = 0; r < n; r++) {
		const char *rec = all + (size_t)r * HP_FABRIC_RECORD_MAX;
		size_t m = strnlen(rec, HP_FABRIC_RECORD_MAX);
		if (m < 3 || rec[0] != '[' || rec[m - 1] != ']')
			continue; /* "[]" or a record we do not understand */
		if (len > 1)
			out[len++] = ',';
		memcpy(out + len, rec + 1, m - 2);
		len += m - 2;
	}
	out[len++] = ']';
	out[len] = '\0';
	return out;
}


/* ------------------------------------------------------------------ */
/* the address the endpoint binds (issue 13 §2)                        */

/* What the loop knows: --local-addr, else (operator mode) our IP in
 * /start's rankIps, else the master's address when it is loopback (one
 * machine); NULL: the thread asks the kernel for the route to rank 0's
 * server. Never libfabric's first interface, which is loopback when the
 * link is down while the endpoint opens. */
static char *bind_addr(const struct hp_agent *a)
{
	const struct hp_config *c = a->cfg;
	if (c->local_addr && *c->local_addr)
		return xstrdup(c->local_addr);
	if (c->mode == HP_MODE_OPERATOR) {
		char *ip = rank_ip(a, a->group_rank);
		if (ip)
			return ip;
	}
	if (is_loopback(a->master_addr))
		return xstrdup("127.0.0.1");
	return NULL;
}

/* The source address the kernel would use towards host:port, or NULL:
 * a UDP connect sends nothing but picks the route. */
static char *route_source(const char *hostport)
{
	char host[256], port[16];
	if (split_hostport(hostport, host, sizeof(host), port, sizeof(port)))
		return NULL;
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_DGRAM,
				 .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	if (getaddrinfo(host, port, &hints, &res) != 0 || !res)
		return NULL;
	char *out = NULL;
	int fd = socket(res->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char buf[INET6_ADDRSTRLEN];
	if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) == 0 &&
	    getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
		const void *src =
			ss.ss_family == AF_INET6
				? (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
				: (const void *)&((struct sockaddr_in *)&ss)->sin_addr;
		if (inet_ntop(ss.ss_family, src, buf, sizeof(buf)))
			out = xstrdup(buf);
	}
	if (fd >= 0)
		close(fd);
	freeaddrinfo(res);
	return out;
}

static bool root_on_loopback(const struct hp_xnode *x)
{
	char host[256], port[16];
	return split_hostport(x->root_http, host, sizeof(host), port,
			      sizeof(port)) == 0 &&
	       is_loopback(host);
}

/* ------------------------------------------------------------------ */
/* the round thread                                                    */

/* Opens the endpoint on the round's address. A node with no provider at
 * all takes no part (r->disabled); one that fails on its address fails
 * the round and tries again at the next. */
static int open_endpoint(struct hp_xnode *x, struct round *r)
{
	struct hp_agent *a = x->a;
	char *node = r->node ? xstrdup(r->node) : route_source(x->root_http);
	if (node && is_loopback(node) && !root_on_loopback(x)) {
		snprintf(r->why, sizeof(r->why), "the route to rank 0's server "
			 "%s leaves through loopback (%s): no endpoint opened",
			 x->root_http, node);
		free(node);
		return -ENETUNREACH;
	}
	/* FI_PROVIDER as the user set it, else our choice (what the first
	 * endpoint's environment named, hp_fabric_env_set) */
	const char *prov = getenv("FI_PROVIDER");
	if (!prov)
		prov = hp_fabric_default_provider();
	struct hp_fabric_options o = {
		.rank = x->rank,
		.size = x->size,
		.epoch = 0,
		.provider = prov && *prov ? prov : NULL,
		.node = node,
		.spin_us = 50,
	};
	int err = 0;
	struct hp_fabric *f = hp_fabric_new(&o, &err); /* keeps our handlers */
	if (!f) {
		snprintf(r->why, sizeof(r->why), "no usable libfabric "
			 "provider%s%s on %s (%s)", o.provider ? " " : "",
			 o.provider ? o.provider : "", node ? node : "any address",
			 strerror(-err));
		/* no provider at all, or only not on this address? */
		r->disabled = !node || err == -ENOSYS;
		if (!r->disabled) {
			o.node = NULL;
			struct hp_fabric *any = hp_fabric_new(&o, NULL);
			r->disabled = !any;
			hp_fabric_free(any);
		}
		free(node);
		return r->disabled ? 0 : (err ? err : -EIO);
	}
	pthread_mutex_lock(&x->mu);
	x->f = f;
	pthread_mutex_unlock(&x->mu);
	free(x->node);
	x->node = node ? node : xstrdup("");
	size_t len = 0;
	const void *name = hp_fabric_name(f, &len);
	char *hex = hp_fabric_hex_encode(name, len);
	hp_server_publish_fabric(
		a->server,
		xasprintf("{\"rank\":%u,\"name\":\"%s\",\"provider\":\"%s\","
			  "\"http\":\"%s\"}",
			  x->rank, hex, hp_fabric_provider(f), x->self_http));
	free(hex);
	if (x->rank == 0)
		hp_server_fabric_expect(a->server, x->size);
	hp_info(COMP, "fabric endpoint up (provider %s on %s, rank %u of %u); "
		"peer table on %s", hp_fabric_provider(f),
		*x->node ? x->node : "the provider's address", x->rank,
		x->size, x->root_http);
	r->opened = true;
	return 0;
}

/* Parses {"size":N,"peers":[{"rank","name","http"}…]}; when a name
 * changed (an agent came back) or the last round failed (connections
 * may be stale), every address is removed from the AV and inserted
 * again, which also drops the old connections. */
static int apply_peers(struct hp_xnode *x, struct round *r, const char *text)
{
	cJSON *root = cJSON_Parse(text);
	const cJSON *peers = cJSON_GetObjectItemCaseSensitive(root, "peers");
	int rc = 0;
	unsigned n = x->size;
	unsigned char(*names)[HP_FABRIC_NAME_MAX] =
		xcalloc(n, HP_FABRIC_NAME_MAX);
	const void **ptrs = xcalloc(n, sizeof(*ptrs));
	size_t *lens = xcalloc(n, sizeof(*lens));
	char **http = xcalloc(n, sizeof(*http));
	char **hex = xcalloc(n, sizeof(*hex));
	if (!cJSON_IsArray(peers) || (unsigned)cJSON_GetArraySize(peers) != n) {
		snprintf(r->why, sizeof(r->why),
			 "the peer table is not %u records: %.200s", n, text);
		rc = -EPROTO;
		goto out;
	}
	const cJSON *p;
	cJSON_ArrayForEach(p, peers)
	{
		const cJSON *rk = cJSON_GetObjectItemCaseSensitive(p, "rank");
		const cJSON *nm = cJSON_GetObjectItemCaseSensitive(p, "name");
		const cJSON *h = cJSON_GetObjectItemCaseSensitive(p, "http");
		if (!cJSON_IsNumber(rk) || rk->valueint < 0 ||
		    (unsigned)rk->valueint >= n || !cJSON_IsString(nm) ||
		    !cJSON_IsString(h) || http[rk->valueint] ||
		    hp_fabric_hex_decode(nm->valuestring, names[rk->valueint],
					 HP_FABRIC_NAME_MAX,
					 &lens[rk->valueint]) < 0) {
			snprintf(r->why, sizeof(r->why),
				 "a bad peer record: %.200s", text);
			rc = -EPROTO;
			goto out;
		}
		http[rk->valueint] = xstrdup(h->valuestring);
		hex[rk->valueint] = xstrdup(nm->valuestring);
	}
	char changed[256] = "";
	size_t off = 0;
	for (unsigned i = 0; i < n; i++) {
		ptrs[i] = names[i];
		if (x->peer_names && x->peer_names[i] &&
		    strcmp(x->peer_names[i], hex[i]) != 0 &&
		    off < sizeof(changed))
			off += (size_t)snprintf(changed + off,
						sizeof(changed) - off, "%s%u",
						off ? "," : "", i);
	}
	if (x->peer_names && !changed[0] && !x->reinsert)
		goto keep; /* the same endpoints: keep the connections */
	rc = hp_fabric_set_peers(x->f, ptrs, lens, n);
	if (rc < 0) {
		snprintf(r->why, sizeof(r->why), "%s",
			 hp_fabric_last_error(x->f));
		goto out;
	}
	if (!x->peer_names)
		hp_info(COMP, "peer table complete: %u agents", n);
	else if (changed[0])
		hp_info(COMP, "epoch %llu: rank(s) %s came back with a new "
			"endpoint: peers re-learnt",
			(unsigned long long)r->epoch, changed);
	else if (x->peer_names)
		hp_info(COMP, "epoch %llu: peers inserted again after the last "
			"round failed (stale connections dropped)",
			(unsigned long long)r->epoch);
	r->relearnt = x->peer_names != NULL;
	x->reinsert = false;
	for (unsigned i = 0; x->peer_names && i < n; i++)
		free(x->peer_names[i]);
	free(x->peer_names);
	x->peer_names = hex;
	hex = NULL;
keep:
	pthread_mutex_lock(&x->mu);
	char **old = x->peer_http;
	x->peer_http = http;
	pthread_mutex_unlock(&x->mu);
	http = old;
out:
	for (unsigned i = 0; i < n; i++) {
		if (http)
			free(http[i]);
		if (hex)
			free(hex[i]);
	}
	free(hex);
	free(http);
	free(lens);
	free(ptrs);
	free(names);
	cJSON_Delete(root);
	return rc;
}

/* A rank the 503 {"missing":[…]} names that has left the fabric (its BYE
 * read now), or -1: a peer known gone fails the round at once instead of
 * at the deadline. */
static int departed(struct hp_xnode *x, const char *body)
{
	hp_fabric_dispatch(x->f);
	cJSON *v = body ? cJSON_Parse(body) : NULL;
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(v, "missing");
	const cJSON *r;
	int out = -1;
	cJSON_ArrayForEach(r, m)
	{
		if (out < 0 && cJSON_IsNumber(r) && r->valueint >= 0 &&
		    hp_fabric_gone(x->f, (unsigned)r->valueint))
			out = r->valueint;
	}
	cJSON_Delete(v);
	return out;
}

/* How often a barrier round asks the agents it waits for how they are. */
#define PROBE_EVERY_MS 500
#define PROBE_TIMEOUT_MS 500

/* A barrier round (after /stop): a rank still missing from the table
 * whose agent does not answer at all, or answers READY/INIT (it had
 * nothing to stop: e.g. it came back after a crash), will not come to
 * this round; the round fails at once instead of at its deadline. Asks
 * each missing rank's GET /status at its last known address. Returns that
 * rank, with what it said in state, or -1. */
static int not_coming(struct hp_xnode *x, struct event_base *base,
		      const char *body, char *state, size_t cap)
{
	if (!x->peer_http)
		return -1;
	cJSON *v = body ? cJSON_Parse(body) : NULL;
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(v, "missing");
	const cJSON *r;
	int out = -1;
	cJSON_ArrayForEach(r, m)
	{
		if (out >= 0 || !cJSON_IsNumber(r) || r->valueint < 0 ||
		    (unsigned)r->valueint >= x->size ||
		    (unsigned)r->valueint == x->rank ||
		    !x->peer_http[r->valueint])
			continue;
		int status = 0;
		char *reply = NULL;
		int rc = http_request(base, x->peer_http[r->valueint],
				      EVHTTP_REQ_GET, "/status", NULL,
				      PROBE_TIMEOUT_MS, &x->cancel, &status,
				      &reply);
		cJSON *st = rc == 0 && status == 200 ? cJSON_Parse(reply) : NULL;
		const cJSON *s = cJSON_GetObjectItemCaseSensitive(st, "status");
		if (rc == -EHOSTUNREACH || rc == -ECONNRESET) {
			snprintf(state, cap, "its agent does not answer");
			out = r->valueint;
		} else if (cJSON_IsString(s) &&
			   (strcmp(s->valuestring, "ready") == 0 ||
			    strcmp(s->valuestring, "init") == 0)) {
			snprintf(state, cap, "its agent is %s", s->valuestring);
			out = r->valueint;
		}
		cJSON_Delete(st);
		free(reply);
	}
	cJSON_Delete(v);
	return out;
}

/* Joins rank 0's table for this epoch and waits until it is complete for
 * it. Polls with a growing interval (10 ms .. 250 ms) until the round's
 * deadline. */
static int exchange_peers(struct hp_xnode *x, struct round *r,
			  struct event_base *base, long long until)
{
	size_t nlen = 0;
	const void *name = hp_fabric_name(x->f, &nlen);
	char *hexname = hp_fabric_hex_encode(name, nlen);
	char *join = xasprintf("{\"rank\":%u,\"size\":%u,\"epoch\":%llu,"
			       "\"name\":\"%s\",\"http\":\"%s\"}",
			       x->rank, x->size, (unsigned long long)r->epoch,
			       hexname, x->self_http);
	free(hexname);
	char *path = xasprintf("/fabric/peers?epoch=%llu",
			       (unsigned long long)r->epoch);
	int delay = 10, rc = -ETIMEDOUT, status = 0;
	long long next_probe = now_ms() + PROBE_EVERY_MS;
	bool joined = false, complete = false;
	char *body = NULL;
	char last[160] = "no answer";
	while (now_ms() < until && !atomic_load(&x->cancel)) {
		int t = (int)HP_MIN((long long)HTTP_TIMEOUT_MS,
				    HP_MAX(until - now_ms(), 1LL));
		free(body);
		body = NULL;
		if (!joined)
			rc = http_request(base, x->root_http, EVHTTP_REQ_POST,
					  "/fabric/join", join, t, &x->cancel,
					  &status, &body);
		else
			rc = http_request(base, x->root_http, EVHTTP_REQ_GET,
					  path, NULL, t, &x->cancel, &status,
					  &body);
		if (rc == 0 && status == 200 && !joined) {
			joined = true;
			hp_info(COMP, "epoch %llu: joined the peer table on %s",
				(unsigned long long)r->epoch, x->root_http);
			continue;
		}
		if (rc == 0 && status == 200) {
			complete = true;
			break;
		}
		if (rc == 0 && status >= 400 && status < 500 && status != 409) {
			snprintf(r->why, sizeof(r->why),
				 "%s refused our record (%d): %.200s",
				 x->root_http, status, body ? body : "");
			rc = -EPROTO;
			goto out;
		}
		int left = rc == 0 ? departed(x, body) : -1;
		if (left >= 0) {
			snprintf(r->why, sizeof(r->why), "cross-node peer table "
				 "of epoch %llu: rank %d left the fabric",
				 (unsigned long long)r->epoch, left);
			rc = -ECONNRESET;
			goto out;
		}
		if (rc == 0 && r->kind == ROUND_BARRIER &&
		    now_ms() >= next_probe) {
			next_probe = now_ms() + PROBE_EVERY_MS;
			char state[64];
			left = not_coming(x, base, body, state, sizeof(state));
			if (left >= 0) {
				snprintf(r->why, sizeof(r->why), "cross-node "
					 "peer table of epoch %llu: rank %d will "
					 "not come (%s)",
					 (unsigned long long)r->epoch, left,
					 state);
				rc = -ECONNRESET;
				goto out;
			}
		}
		if (rc < 0)
			snprintf(last, sizeof(last), "%s", strerror(-rc));
		else if (!missing_ranks(body, last, sizeof(last)))
			snprintf(last, sizeof(last), "HTTP %d %.100s", status,
				 body ? body : "");
		rc = -ETIMEDOUT;
		/* a pause, on the round's own thread: nothing else waits */
		long long stop = HP_MIN(now_ms() + delay, until);
		while (now_ms() < stop && !atomic_load(&x->cancel))
			poll(NULL, 0, (int)HP_MIN(stop - now_ms(), 50LL));
		delay = HP_MIN(delay * 2, 250);
	}
	/* the loop also ends right after the join's 200 (cancelled, or out
	 * of time): only a complete table counts */
	if (complete) {
		rc = apply_peers(x, r, body);
	} else if (atomic_load(&x->cancel)) {
		snprintf(r->why, sizeof(r->why), "the round was cancelled");
		rc = -ECANCELED;
	} else {
		rc = -ETIMEDOUT;
		snprintf(r->why, sizeof(r->why), "cross-node peer table of epoch %llu "
			 "on %s was not complete within the round's %d ms (%s)",
			 (unsigned long long)r->epoch, x->root_http,
			 r->deadline_ms, last);
	}
out:
	free(path);
	free(body);
	free(join);
	return rc;
}

static int left_ms(long long until)
{
	return (int)HP_MAX(until - now_ms(), 1LL);
}

static int collectives(struct hp_xnode *x, struct round *r, long long until)
{
	uint64_t e = r->epoch;
	int rc = hp_fabric_barrier(x->f, e, left_ms(until));
	const char *what = "barrier";
	char *all = NULL;
	if (rc == 0) {
		what = "worker-data allgather";
		all = xcalloc(x->size, HP_FABRIC_RECORD_MAX);
		char *mine = all + (size_t)x->rank * HP_FABRIC_RECORD_MAX;
		memcpy(mine, r->rec, HP_FABRIC_RECORD_MAX);
		rc = hp_fabric_allgather(x->f, e, mine, HP_FABRIC_RECORD_MAX,
					 all, left_ms(until));
	}
	if (rc == 0) {
		r->all = join_records(all, x->size);
		what = "NCCL unique id broadcast";
		char id[NCCL_HEX_LEN + 1];
		memset(id, 0, sizeof(id));
		if (x->rank == 0)
			memcpy(id, r->nccl, sizeof(id));
		rc = hp_fabric_bcast(x->f, e, 0, id, NCCL_HEX_LEN,
				     left_ms(until));
		id[NCCL_HEX_LEN] = '\0';
		if (rc == 0 && id[0] && !is_hex(id, NCCL_HEX_LEN)) {
			hp_warn(COMP, "the NCCL unique id from rank 0 is not "
				"hex: ignored");
			id[0] = '\0';
		}
		if (rc == 0)
			memcpy(r->nccl, id, sizeof(id));
	}
	free(all);
	if (rc < 0)
		snprintf(r->why, sizeof(r->why), "cross-node %s failed: %s",
			 what, hp_fabric_last_error(x->f));
	return rc;
}

static void *round_main(void *arg)
{
	struct hp_xnode *x = arg;
	struct round *r = &x->r;
	long long t0 = now_ms(), until = t0 + r->deadline_ms;
	int rc = 0;
	struct event_base *base = event_base_new();
	if (!base) {
		snprintf(r->why, sizeof(r->why), "no event base for the peer "
			 "table");
		rc = -ENOMEM;
	}
	if (rc == 0 && !x->f)
		rc = open_endpoint(x, r);
	if (rc == 0 && !r->disabled)
		rc = exchange_peers(x, r, base, until);
	if (rc == -ECANCELED && x->f)
		/* stopped before the collectives: peers that already have
		 * the table (and wait in the barrier) fail at once */
		hp_fabric_abandon(x->f, r->epoch, "its agent was stopped");
	if (rc == 0 && !r->disabled)
		rc = collectives(x, r, until);
	if (base)
		event_base_free(base);
	r->rc = rc;
	r->ms = now_ms() - t0;
	uv_async_send(&x->done);
	return NULL;
}

/* Waits for a round thread that is over or cancelled. */
static void join_round(struct hp_xnode *x)
{
	if (!x->running)
		return;
	pthread_join(x->th, NULL);
	x->running = false;
	hp_fabric_env_unset(x->env_mask);
	x->env_mask = 0;
	struct round *r = &x->r;
	if (r->opened)
		fabric_initialised = true;
	if (r->disabled) {
		hp_warn(COMP, "%s: running the in-process restart without "
			"cross-node coordination", r->why);
		x->disabled = true;
	} else if (r->rc < 0) {
		x->epoch_failed = true;
		x->reinsert = true;
	} else {
		x->ready = true;
	}
	free(r->node);
	r->node = NULL;
}

static void done_cb(uv_async_t *h)
{
	struct hp_xnode *x = h->data;
	if (!x->running)
		return;
	join_round(x);
	struct round *r = &x->r;
	struct hp_agent *a = x->a;
	if (!x->wanted) {
		hp_info(COMP, "epoch %llu: the round's outcome is no longer "
			"needed (%s)", (unsigned long long)r->epoch,
			r->rc < 0 ? r->why : "it succeeded");
		free(r->all);
		r->all = NULL;
		return;
	}
	x->wanted = false;
	if (r->rc == 0 && !r->disabled)
		x->shared = true;
	if (r->rc == 0 && !r->disabled) {
		free(a->xn_worker_data);
		a->xn_worker_data = r->all;
		r->all = NULL;
		memcpy(a->nccl_id, r->nccl, sizeof(a->nccl_id));
		hp_info(COMP, "every node is at the barrier, epoch %llu (%lld "
			"ms)%s", (unsigned long long)r->epoch, r->ms,
			a->nccl_id[0] ? "; NCCL unique id shared" : "");
	}
	/* a failed round is logged once, where ipr.c decides what follows */
	free(r->all);
	r->all = NULL;
	if (r->kind == ROUND_START)
		ipr_start_round_done(a, r->rc, r->why);
	else
		ipr_round_done(a, r->kind == ROUND_INIT, r->rc, r->why);
	if (a->xnode == x && x->stop_deferred) {
		struct hp_stop_req stop = x->stop;
		x->stop_deferred = false;
		memset(&x->stop, 0, sizeof(x->stop));
		hp_info(COMP, "the /stop that came during the round, now");
		ipr_cmd_stop(a, &stop);
		free(stop.restart_mode);
	}
}

static void close_cb(uv_handle_t *h)
{
	struct hp_xnode *x = h->data;
	pthread_mutex_destroy(&x->mu);
	free(x);
}

static struct hp_xnode *xnode_new(struct hp_agent *a)
{
	struct hp_xnode *x = xcalloc(1, sizeof(*x));
	x->a = a;
	x->rank = (unsigned)a->group_rank;
	x->size = (unsigned)a->nnodes;
	pthread_mutex_init(&x->mu, NULL);
	atomic_init(&x->cancel, false);
	uv_async_init(&a->loop, &x->done, done_cb);
	x->done.data = x;
	return x;
}
/* ------------------------------------------------------------------ */
/* the agent's side (the loop thread)                                  */

bool xnode_active(const struct hp_agent *a)
{
	return a->xnode && !a->xnode->disabled && a->xnode->ready;
}

/* Operator mode: may this barrier meet the other nodes? Only after a
 * /start (the rank and the nodes' addresses come with it), and not at the
 * barrier of freshly spawned processes: a process-level restart may be
 * this node's alone, and the operator's /start brings the nodes together
 * then. A fabric set up for another rank, size or root is replaced. */
static bool operator_round(struct hp_agent *a, bool init)
{
	if (init || a->assigned_rank < 0 || !a->server)
		return false;
	char *root = root_http(a, hp_server_port(a->server));
	if (!root) {
		hp_info(COMP, "no rankIps from /start and no "
			"HYPERPODRUN_FABRIC_ROOT: this barrier is node-local");
		return false;
	}
	struct hp_xnode *x = a->xnode;
	if (x && (x->rank != (unsigned)a->group_rank ||
		  x->size != (unsigned)a->nnodes ||
		  (x->root_http && strcmp(x->root_http, root) != 0))) {
		hp_info(COMP, "rank %d of %d now, peer table on %s: a new "
			"fabric endpoint", a->group_rank, a->nnodes, root);
		xnode_teardown(a);
	}
	free(root);
	return true;
}

/* An endpoint bound elsewhere than where this round wants it (the
 * operator moved our rank's IP): closed, the round opens a new one. */
static void check_bind(struct hp_xnode *x, const char *want)
{
	if (!x->f || !want || !x->node || strcmp(x->node, want) == 0)
		return;
	hp_info(COMP, "this node's address is %s now (the endpoint is on "
		"%s): a new endpoint", want, *x->node ? x->node : "another");
	hp_fabric_free(x->f);
	x->f = NULL;
	for (unsigned i = 0; x->peer_names && i < x->size; i++)
		free(x->peer_names[i]);
	free(x->peer_names);
	x->peer_names = NULL;
}

static bool first_setup(struct hp_xnode *x)
{
	struct hp_agent *a = x->a;
	if (!a->server) {
		hp_warn(COMP, "no HTTP server to exchange fabric addresses on: "
			"running the in-process restart without cross-node "
			"coordination");
		x->disabled = true;
		return false;
	}
	int port = hp_server_port(a->server);
	x->root_http = root_http(a, port);
	if (!x->root_http) {
		hp_warn(COMP, "rank 0's server is unknown (give --rdzv-endpoint "
			"HOST:PORT or HYPERPODRUN_FABRIC_ROOT): running the "
			"in-process restart without cross-node coordination");
		x->disabled = true;
		return false;
	}
	x->self_http = self_http(a, port);
	return true;
}

static bool round_begin(struct hp_agent *a, enum round_kind kind);

bool xnode_round_start(struct hp_agent *a, bool init)
{
	local_nccl_id(a, a->nccl_id);
	/* worker data never outlives its round (issue 13 §5) */
	free(a->xn_worker_data);
	a->xn_worker_data = NULL;
	if (!a->cfg->inprocess_restart || a->nnodes <= 1 ||
	    a->group_rank < 0 || a->group_rank >= a->nnodes)
		return false;
	if (init && a->xnode)
		a->xnode->shared = false; /* new processes, no id yet */
	if (a->cfg->mode == HP_MODE_OPERATOR && !operator_round(a, init))
		return false;
	return round_begin(a, init ? ROUND_INIT : ROUND_BARRIER);
}

bool xnode_start_round(struct hp_agent *a)
{
	if (a->cfg->mode != HP_MODE_OPERATOR || !a->cfg->inprocess_restart ||
	    a->nnodes <= 1 || a->group_rank < 0 ||
	    a->group_rank >= a->nnodes ||
	    (a->xnode && (a->xnode->shared || a->xnode->disabled)))
		return false;
	if (xnode_round_running(a))
		return true; /* a second /start: that round releases */
	local_nccl_id(a, a->nccl_id);
	free(a->xn_worker_data);
	a->xn_worker_data = NULL;
	if (!operator_round(a, false))
		return false;
	return round_begin(a, ROUND_START);
}

static bool round_begin(struct hp_agent *a, enum round_kind kind)
{
	if (!a->xnode)
		a->xnode = xnode_new(a);
	struct hp_xnode *x = a->xnode;
	join_round(x); /* a cancelled one still finishing */
	if (x->disabled || (!x->root_http && !first_setup(x)))
		return false;
	/* every node counts the same restarts, so the restart count names
	 * the round: the barrier of restart c is epoch 2c + 2, the round
	 * after a /start with faultCount c is 2c + 3; an epoch abandoned
	 * after an error is never reused. In operator mode the count is the
	 * operator's faultCount, which counts a fault only at the /start
	 * after it: the barrier that follows a /stop belongs to restart
	 * c + 1 (else it would reuse the epoch of the /start round before
	 * it, whose complete peer table would count again). */
	uint64_t c = (uint64_t)HP_MAX(a->restart_count, 0);
	if (kind != ROUND_START && a->cfg->mode == HP_MODE_OPERATOR)
		c++;
	uint64_t e = 2 * c + 2 + (kind == ROUND_START ? 1 : 0);
	if (e < x->epoch || (e == x->epoch && x->epoch_failed))
		e = x->epoch + (x->epoch_failed ? 1 : 0);
	if (e > x->epoch)
		x->epoch_failed = false;
	x->epoch = e;
	struct round *r = &x->r;
	memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->epoch = e;
	r->deadline_ms = deadline_ms(a);
	r->node = bind_addr(a);
	check_bind(x, r->node);
	node_record(a, r->rec);
	memcpy(r->nccl, a->nccl_id, sizeof(r->nccl));
	atomic_store(&x->cancel, false);
	/* libfabric reads its provider choice and sizes once, when it
	 * initialises: only the first endpoint of the process needs them,
	 * and workers spawned while they are set would inherit them */
	if (!x->f && !fabric_initialised)
		x->env_mask = hp_fabric_env_set(); /* on the loop's thread */
	/* the thread takes no signal: they are the loop's */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(&x->th, NULL, round_main, x);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		hp_error(COMP, "no thread for the cross-node round: %s",
			 strerror(rc));
		hp_fabric_env_unset(x->env_mask);
		x->env_mask = 0;
		free(r->node);
		r->node = NULL;
		return false;
	}
	x->running = true;
	x->wanted = true;
	hp_info(COMP, "cross-node round%s, epoch %llu (deadline %d ms)",
		kind == ROUND_START ? " before the first run" : "",
		(unsigned long long)e, r->deadline_ms);
	return true;
}

void xnode_round_cancel(struct hp_agent *a)
{
	free(a->xn_worker_data);
	a->xn_worker_data = NULL;
	struct hp_xnode *x = a->xnode;
	if (!x || !x->running || !x->wanted)
		return;
	x->wanted = false;
	/* what follows (a process-level restart) supersedes a kept /stop */
	x->stop_deferred = false;
	atomic_store(&x->cancel, true);
	pthread_mutex_lock(&x->mu);
	if (x->f)
		hp_fabric_cancel(x->f);
	pthread_mutex_unlock(&x->mu);
	hp_info(COMP, "epoch %llu: cross-node round cancelled",
		(unsigned long long)x->r.epoch);
}

bool xnode_round_running(const struct hp_agent *a)
{
	return a->xnode && a->xnode->running && a->xnode->wanted;
}

/* The reference reads restart_mode as a RestartMode member name, any
 * case; local mode's peers send "plr" (xnode_tell_peers). */
static bool stop_wants_plr(const struct hp_agent *a, const char *mode)
{
	return mode && (strcasecmp(mode, "process_level_restart") == 0 ||
			(a->cfg->mode == HP_MODE_LOCAL &&
			 strcmp(mode, "plr") == 0));
}

bool xnode_defer_stop(struct hp_agent *a, const struct hp_stop_req *r)
{
	if (!xnode_round_running(a))
		return false;
	struct hp_xnode *x = a->xnode;
	unsigned long long e = (unsigned long long)x->r.epoch;
	/* A process-level restart needs no round: the round is abandoned
	 * now (its peers hear an ABORT) and ipr_cmd_stop() restarts the
	 * processes at once, not after the round's deadline. */
	if (stop_wants_plr(a, r->restart_mode)) {
		hp_info(COMP, "/stop (process-level) during the cross-node "
			"round of epoch %llu: the round is abandoned", e);
		xnode_round_cancel(a);
		return false;
	}
	if (a->cfg->mode == HP_MODE_OPERATOR && x->r.kind == ROUND_START) {
		/* the run the /start asked for has not begun: the operator's
		 * /stop undoes it at once; the ranks stay at the barrier,
		 * READY and paused as after an in-process stop, for the next
		 * /start */
		hp_info(COMP, "/stop during the cross-node round of epoch %llu "
			"before the first run: the round is abandoned, the "
			"ranks stay at the barrier", e);
		xnode_round_cancel(a);
		a->start_pending = false;
		a->priority = true;
		return true;
	}
	if (a->cfg->mode == HP_MODE_OPERATOR) {
		/* the barrier of the in-process restart a /stop began: the
		 * reference refuses STOPPING -> STOPPING, so a second /stop
		 * changes nothing, and the round goes on */
		hp_info(COMP, "/stop during the cross-node round of epoch %llu "
			"of an in-process restart: nothing more to stop", e);
		return true;
	}
	/* local mode: a peer's in-process /stop during our round is applied
	 * once it ended, as if the loop had waited for it */
	free(x->stop.restart_mode);
	x->stop = *r;
	x->stop.restart_mode = r->restart_mode ? xstrdup(r->restart_mode)
					       : NULL;
	x->stop_deferred = true;
	hp_info(COMP, "/stop during the cross-node round of epoch %llu: "
		"applied when it ends", e);
	return true;
}

/* POSTs body to path on every peer but us at once, all within one
 * timeout: a peer that is slow to answer costs the loop
 * FAULT_POST_TIMEOUT_MS once, not once per peer. */
static void tell_all(struct hp_xnode *x, char *const *peer_http,
		     const char *path, const char *body, const char *what)
{
	struct event_base *base = event_base_new();
	if (!base) {
		hp_warn(COMP, "could not tell the peers to restart (%s): no "
			"event base", what);
		return;
	}
	struct call *calls = xcalloc(x->size, sizeof(*calls));
	unsigned pending = 0;
	for (unsigned r = 0; r < x->size; r++) {
		calls[r].done = true;
		if (r != x->rank && peer_http[r])
			call_start(&calls[r], base, &pending, peer_http[r],
				   EVHTTP_REQ_POST, path, body,
				   FAULT_POST_TIMEOUT_MS);
	}
	calls_run(base, calls, x->size, &pending,
		  now_ms() + FAULT_POST_TIMEOUT_MS, NULL);
	for (unsigned r = 0; r < x->size; r++) {
		const struct call *c = &calls[r];
		if (r == x->rank || !peer_http[r])
			continue;
		if (c->rc == 0 && c->status == 200)
			hp_info(COMP, "told rank %u (%s) to restart (%s)", r,
				peer_http[r], what);
		else if (c->rc == 0)
			hp_warn(COMP, "could not tell rank %u (%s) to restart "
				"(%s): HTTP %d", r, peer_http[r], what,
				c->status);
		else
			hp_warn(COMP, "could not tell rank %u (%s) to restart "
				"(%s): %s", r, peer_http[r], what,
				strerror(-c->rc));
	}
	free(calls);
	event_base_free(base);
}

void xnode_tell_peers(struct hp_agent *a, bool plr)
{
	struct hp_xnode *x = a->xnode;
	if (a->cfg->mode != HP_MODE_LOCAL || !xnode_active(a))
		return;
	/* a copy: a round thread still finishing may replace the table */
	char **http = xcalloc(x->size, sizeof(*http));
	bool any = false;
	pthread_mutex_lock(&x->mu);
	for (unsigned i = 0; x->peer_http && i < x->size; i++) {
		http[i] = x->peer_http[i] ? xstrdup(x->peer_http[i]) : NULL;
		any = true;
	}
	pthread_mutex_unlock(&x->mu);
	if (any)
		tell_all(x, http, "/stop",
			 plr ? "{\"restart_mode\":\"plr\"}"
			     : "{\"restart_mode\":\"ipr\"}",
			 plr ? "process-level" : "in-process");
	for (unsigned i = 0; i < x->size; i++)
		free(http[i]);
	free(http);
}

void xnode_teardown(struct hp_agent *a)
{
	struct hp_xnode *x = a->xnode;
	if (!x)
		return;
	a->xnode = NULL;
	if (x->running) {
		x->wanted = false;
		atomic_store(&x->cancel, true);
		pthread_mutex_lock(&x->mu);
		if (x->f)
			hp_fabric_cancel(x->f);
		pthread_mutex_unlock(&x->mu);
		join_round(x);
		free(x->r.all);
	}
	if (x->f) {
		int rc = hp_fabric_leave(x->f, 1000);
		if (rc < 0)
			hp_warn(COMP, "leaving the fabric: %s",
				hp_fabric_last_error(x->f));
		else
			hp_info(COMP, "left the fabric");
	}
	hp_fabric_free(x->f);
	x->f = NULL;
	for (unsigned i = 0; i < x->size; i++) {
		if (x->peer_http)
			free(x->peer_http[i]);
		if (x->peer_names)
			free(x->peer_names[i]);
	}
	free(x->peer_http);
	free(x->peer_names);
	free(x->self_http);
	free(x->root_http);
	free(x->node);
	free(x->stop.restart_mode);
	uv_close((uv_handle_t *)&x->done, close_cb);
}
