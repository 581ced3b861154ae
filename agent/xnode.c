/* xnode.c — the in-process restart across nodes (issue 5 §3-4): with
 * --inprocess-restart and nnodes > 1, the agents meet on the libfabric
 * control plane (rendezvous/fabric.h) once their local ranks are at the
 * barrier: a fabric barrier, an allgather of each node's worker data and a
 * broadcast of global rank 0's NCCL unique id, all bounded by
 * --inprocess-timeout. Endpoint names travel out of band over HTTP: every
 * agent joins the peer table on rank 0's server (POST /fabric/join) and
 * reads it back complete (GET /fabric/peers). In local mode a worker's
 * fault is told to every peer (POST /stop), so all nodes restart together.
 * It blocks the loop only inside a set-up or a collective, each with a
 * deadline; it never kills or spawns anything itself (ipr.c decides). */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
/* Without --inprocess-timeout, a collective or the set-up gives up after
 * this long. */
#define DEFAULT_DEADLINE_MS 60000
/* One HTTP exchange with rank 0's server. */
#define HTTP_TIMEOUT_MS 2000
/* Telling peers about a restart is best effort and must not hold the
 * loop: one deadline for all of them. */
#define FAULT_POST_TIMEOUT_MS 1000
#define HTTP_REPLY_MAX (1 << 20)
#define NCCL_HEX_LEN 256

struct hp_xnode {
	struct hp_agent *a;
	struct hp_fabric *f; /* NULL until set up, or when disabled */
	unsigned rank, size;
	bool disabled; /* no usable provider or server: node-local IPR */
	bool ready;    /* peers set */
	char *self_http;
	char *root_http;
	char **peer_http; /* [size], from the peer table */
	uint64_t epoch;   /* the last epoch used */
	bool epoch_failed;
	/* the loop's view of the fabric between collectives */
	uv_poll_t poll;
	uv_timer_t timer;
	bool poll_started;
	int open_handles; /* freed when both close callbacks ran */
};

/* ------------------------------------------------------------------ */
/* a tiny blocking HTTP/1.1 client                                     */

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

static int wait_fd(int fd, short events, long long until)
{
	for (;;) {
		long long left = until - now_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		struct pollfd p = {.fd = fd, .events = events};
		int n = poll(&p, 1, (int)left);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

static int connect_until(const char *hostport, long long until)
{
	char host[256], port[16];
	if (split_hostport(hostport, host, sizeof(host), port, sizeof(port)))
		return -EINVAL;
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	if (getaddrinfo(host, port, &hints, &res) != 0 || !res)
		return -EHOSTUNREACH;
	int rc = -ECONNREFUSED;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family,
				ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
				ai->ai_protocol);
		if (fd < 0) {
			rc = -errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			freeaddrinfo(res);
			return fd;
		}
		rc = -errno;
		if (rc == -EINPROGRESS) {
			rc = wait_fd(fd, POLLOUT, until);
			int err = 0;
			socklen_t len = sizeof(err);
			if (rc == 0 &&
			    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
				err = errno;
			if (rc == 0 && err == 0) {
				freeaddrinfo(res);
				return fd;
			}
			if (rc == 0)
				rc = -err;
		}
		close(fd);
	}
	freeaddrinfo(res);
	return rc;
}

/* One request with "Connection: close"; the reply's status in *status and
 * its body (NUL-terminated, caller frees) in *body when body is not NULL.
 * Returns 0 or -errno (-ETIMEDOUT past timeout_ms, -EPROTO on a reply
 * that is not HTTP). */
static int http_request(const char *hostport, const char *method,
			const char *path, const char *req_body, int timeout_ms,
			int *status, char **body)
{
	long long until = now_ms() + timeout_ms;
	*status = 0;
	if (body)
		*body = NULL;
	int fd = connect_until(hostport, until);
	if (fd < 0)
		return fd;
	size_t blen = req_body ? strlen(req_body) : 0;
	char *req = xasprintf("%s %s HTTP/1.1\r\nHost: %s\r\n"
			      "Connection: close\r\n"
			      "Content-Type: application/json\r\n"
			      "Content-Length: %zu\r\n\r\n%s",
			      method, path, hostport, blen,
			      req_body ? req_body : "");
	size_t len = strlen(req), off = 0;
	int rc = 0;
	while (off < len && rc == 0) {
		ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
		if (n > 0)
			off += (size_t)n;
		else if (n < 0 && (errno == EAGAIN || errno == EINTR))
			rc = wait_fd(fd, POLLOUT, until);
		else
			rc = n < 0 ? -errno : -EPIPE;
	}
	free(req);
	size_t cap = 4096, got = 0;
	char *buf = xmalloc(cap);
	while (rc == 0) {
		if (got + 1 >= cap) {
			if (cap >= HTTP_REPLY_MAX) {
				rc = -EMSGSIZE;
				break;
			}
			buf = xrealloc(buf, cap *= 2);
		}
		ssize_t n = recv(fd, buf + got, cap - got - 1, 0);
		if (n > 0)
			got += (size_t)n;
		else if (n == 0)
			break;
		else if (errno == EAGAIN || errno == EINTR)
			rc = wait_fd(fd, POLLIN, until);
		else
			rc = -errno;
	}
	close(fd);
	buf[got] = '\0';
	int code = 0;
	char *sep = strstr(buf, "\r\n\r\n");
	if (rc == 0 && (sscanf(buf, "HTTP/1.%*d %d", &code) != 1 || !sep))
		rc = -EPROTO;
	if (rc == 0) {
		*status = code;
		if (body)
			*body = xstrdup(sep + 4);
	}
	free(buf);
	return rc;
}

/* ------------------------------------------------------------------ */
/* set-up                                                              */

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

static void on_dispatch(struct hp_xnode *x);

static void timer_cb(uv_timer_t *t)
{
	on_dispatch(t->data);
}

static void poll_cb(uv_poll_t *p, int status, int events)
{
	(void)status;
	(void)events;
	on_dispatch(p->data);
}

/* Between collectives the loop keeps the fabric going (sends that the
 * last collective left queued, departures), as fabric.h asks. */
static void on_dispatch(struct hp_xnode *x)
{
	if (!x->f)
		return;
	int rc = hp_fabric_dispatch(x->f);
	if (rc == -EAGAIN || (rc == 0 && hp_fabric_fd(x->f) < 0))
		uv_timer_start(&x->timer, timer_cb, rc == -EAGAIN ? 0 : 100, 0);
	else if (rc < 0)
		hp_debug(COMP, "dispatch: %s", hp_fabric_last_error(x->f));
}

/* Parses {"size":N,"peers":[{"rank","name","http"}…]} into the fabric's
 * peer list and x->peer_http. */
static int apply_peers(struct hp_xnode *x, const char *text, char *why,
		       size_t cap)
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
	if (!cJSON_IsArray(peers) || (unsigned)cJSON_GetArraySize(peers) != n) {
		snprintf(why, cap, "the peer table is not %u records: %.200s",
			 n, text);
		rc = -EPROTO;
		goto out;
	}
	const cJSON *p;
	cJSON_ArrayForEach(p, peers)
	{
		const cJSON *r = cJSON_GetObjectItemCaseSensitive(p, "rank");
		const cJSON *nm = cJSON_GetObjectItemCaseSensitive(p, "name");
		const cJSON *h = cJSON_GetObjectItemCaseSensitive(p, "http");
		if (!cJSON_IsNumber(r) || r->valueint < 0 ||
		    (unsigned)r->valueint >= n || !cJSON_IsString(nm) ||
		    !cJSON_IsString(h) || http[r->valueint] ||
		    hp_fabric_hex_decode(nm->valuestring, names[r->valueint],
					 HP_FABRIC_NAME_MAX,
					 &lens[r->valueint]) < 0) {
			snprintf(why, cap, "a bad peer record: %.200s", text);
			rc = -EPROTO;
			goto out;
		}
		http[r->valueint] = xstrdup(h->valuestring);
	}
	for (unsigned i = 0; i < n; i++)
		ptrs[i] = names[i];
	rc = hp_fabric_set_peers(x->f, ptrs, lens, n);
	if (rc < 0) {
		snprintf(why, cap, "%s", hp_fabric_last_error(x->f));
		goto out;
	}
	for (unsigned i = 0; x->peer_http && i < n; i++)
		free(x->peer_http[i]);
	free(x->peer_http);
	x->peer_http = http;
	http = NULL;
out:
	for (unsigned i = 0; http && i < n; i++)
		free(http[i]);
	free(http);
	free(lens);
	free(ptrs);
	free(names);
	cJSON_Delete(root);
	return rc;
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

/* Joins rank 0's table and waits until it is complete. Polls with a
 * growing interval (10 ms .. 250 ms) until the deadline. */
static int exchange_peers(struct hp_xnode *x, const char *hexname, char *why,
			  size_t cap)
{
	long long until = now_ms() + deadline_ms(x->a);
	char *join = xasprintf("{\"rank\":%u,\"size\":%u,\"name\":\"%s\","
			       "\"http\":\"%s\"}",
			       x->rank, x->size, hexname, x->self_http);
	int delay = 10, rc = -ETIMEDOUT, status = 0;
	bool joined = false;
	char *body = NULL;
	char last[160] = "no answer";
	while (now_ms() < until) {
		int t = (int)HP_MIN((long long)HTTP_TIMEOUT_MS,
				    HP_MAX(until - now_ms(), 1LL));
		free(body);
		body = NULL;
		if (!joined)
			rc = http_request(x->root_http, "POST", "/fabric/join",
					  join, t, &status, &body);
		else
			rc = http_request(x->root_http, "GET", "/fabric/peers",
					  NULL, t, &status, &body);
		if (rc == 0 && status == 200 && !joined) {
			joined = true;
			continue;
		}
		if (rc == 0 && status == 200)
			break;
		if (rc == 0 && status >= 400 && status < 500 && status != 409) {
			snprintf(why, cap, "%s refused our record (%d): %.200s",
				 x->root_http, status, body ? body : "");
			free(body);
			free(join);
			return -EPROTO;
		}
		if (rc < 0)
			snprintf(last, sizeof(last), "%s", strerror(-rc));
		else if (!missing_ranks(body, last, sizeof(last)))
			snprintf(last, sizeof(last), "HTTP %d %.100s", status,
				 body ? body : "");
		rc = -ETIMEDOUT;
		struct timespec ts = {0, (long)delay * 1000000L};
		nanosleep(&ts, NULL);
		delay = HP_MIN(delay * 2, 250);
	}
	free(join);
	if (rc == 0)
		rc = apply_peers(x, body, why, cap);
	else
		snprintf(why, cap, "the peer table on %s was not complete "
			 "within %d ms (%s)", x->root_http, deadline_ms(x->a),
			 last);
	free(body);
	return rc;
}

static void disable(struct hp_xnode *x, const char *what)
{
	hp_warn(COMP, "%s: running the in-process restart without "
		"cross-node coordination", what);
	x->disabled = true;
	hp_fabric_free(x->f);
	x->f = NULL;
}

/* Opens the endpoint (once) and publishes it on GET /fabric. Returns
 * false, with x->disabled set and logged, when this node cannot take part. */
static bool open_endpoint(struct hp_xnode *x)
{
	struct hp_agent *a = x->a;
	if (!a->server) {
		disable(x, "no HTTP server to exchange fabric addresses on");
		return false;
	}
	int port = hp_server_port(a->server);
	const char *node = a->cfg->local_addr && *a->cfg->local_addr
				   ? a->cfg->local_addr
			   : is_loopback(a->master_addr) ? a->master_addr
							 : NULL;
	const char *prov = getenv("FI_PROVIDER");
	struct hp_fabric_options o = {
		.rank = x->rank,
		.size = x->size,
		.provider = prov && *prov ? prov : NULL,
		.node = node,
		.spin_us = 50,
	};
	int err = 0;
	x->f = hp_fabric_new(&o, &err); /* keeps our signal handlers */
	if (!x->f) {
		char what[160];
		snprintf(what, sizeof(what), "no usable libfabric provider%s%s "
			 "(%s)", o.provider ? " " : "",
			 o.provider ? o.provider : "", strerror(-err));
		disable(x, what);
		return false;
	}
	x->root_http = root_http(a, port);
	if (!x->root_http) {
		disable(x, "rank 0's server is unknown (give --rdzv-endpoint "
			"HOST:PORT or HYPERPODRUN_FABRIC_ROOT)");
		return false;
	}
	x->self_http = self_http(a, port);
	size_t len = 0;
	const void *name = hp_fabric_name(x->f, &len);
	char *hex = hp_fabric_hex_encode(name, len);
	hp_server_publish_fabric(
		a->server,
		xasprintf("{\"rank\":%u,\"name\":\"%s\",\"provider\":\"%s\","
			  "\"http\":\"%s\"}",
			  x->rank, hex, hp_fabric_provider(x->f),
			  x->self_http));
	free(hex);
	if (x->rank == 0)
		hp_server_fabric_expect(a->server, x->size);
	hp_info(COMP, "fabric endpoint up (provider %s, rank %u of %u); "
		"peer table on %s", hp_fabric_provider(x->f), x->rank, x->size,
		x->root_http);
	return true;
}

/* Opens the endpoint if needed and exchanges the peer table (again, after
 * a table that never completed). Returns 0 (x->ready, or x->disabled when
 * this node cannot take part) or -errno with why set. */
static int setup(struct hp_xnode *x, char *why, size_t cap)
{
	struct hp_agent *a = x->a;
	if (!x->f && !open_endpoint(x))
		return 0;
	size_t len = 0;
	const void *name = hp_fabric_name(x->f, &len);
	char *hex = hp_fabric_hex_encode(name, len);
	int rc = exchange_peers(x, hex, why, cap);
	free(hex);
	if (rc < 0)
		return rc;
	x->ready = true;
	int fd = hp_fabric_fd(x->f);
	if (fd >= 0 && uv_poll_init(&a->loop, &x->poll, fd) == 0) {
		x->poll_started = true;
		uv_poll_start(&x->poll, UV_READABLE, poll_cb);
	}
	on_dispatch(x);
	hp_info(COMP, "peer table complete: %u agents", x->size);
	return 0;
}

static void close_cb(uv_handle_t *h)
{
	struct hp_xnode *x = h->data;
	if (--x->open_handles == 0)
		free(x);
}

static struct hp_xnode *xnode_new(struct hp_agent *a)
{
	struct hp_xnode *x = xcalloc(1, sizeof(*x));
	x->a = a;
	x->rank = (unsigned)a->group_rank;
	x->size = (unsigned)a->nnodes;
	uv_timer_init(&a->loop, &x->timer);
	x->timer.data = x;
	x->poll.data = x;
	x->open_handles = 1;
	return x;
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
 * (NCCL_HEX_LEN + 1 bytes); "" when rank 0 is not here or sent none. */
static void local_nccl_id(const struct hp_agent *a, char *out)
{
	out[0] = '\0';
	for (int i = 0; i < a->nproc; i++) {
		const struct worker *w = &a->workers[i];
		if (w->data_rank != 0 || !w->data_json)
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
/* the agent's side                                                    */

bool xnode_active(const struct hp_agent *a)
{
	return a->xnode && !a->xnode->disabled && a->xnode->ready;
}

static int collectives(struct hp_xnode *x, uint64_t e, int ms, char *why,
		       size_t cap)
{
	struct hp_agent *a = x->a;
	int rc = hp_fabric_barrier(x->f, e, ms);
	const char *what = "barrier";
	char *all = NULL;
	if (rc == 0) {
		what = "worker-data allgather";
		all = xcalloc(x->size, HP_FABRIC_RECORD_MAX);
		char *mine = all + (size_t)x->rank * HP_FABRIC_RECORD_MAX;
		node_record(a, mine);
		rc = hp_fabric_allgather(x->f, e, mine, HP_FABRIC_RECORD_MAX,
					 all, ms);
	}
	if (rc == 0) {
		free(a->xn_worker_data);
		a->xn_worker_data = join_records(all, x->size);
		what = "NCCL unique id broadcast";
		char id[NCCL_HEX_LEN + 1];
		memset(id, 0, sizeof(id));
		if (x->rank == 0)
			memcpy(id, a->nccl_id, sizeof(id));
		rc = hp_fabric_bcast(x->f, e, 0, id, NCCL_HEX_LEN, ms);
		id[NCCL_HEX_LEN] = '\0';
		if (rc == 0 && id[0] && !is_hex(id, NCCL_HEX_LEN)) {
			hp_warn(COMP, "the NCCL unique id from rank 0 is not "
				"hex: ignored");
			id[0] = '\0';
		}
		if (rc == 0)
			memcpy(a->nccl_id, id, sizeof(id));
	}
	free(all);
	if (rc < 0)
		snprintf(why, cap, "cross-node %s failed: %s", what,
			 hp_fabric_last_error(x->f));
	return rc;
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

int xnode_round(struct hp_agent *a, bool init, char *why, size_t cap)
{
	local_nccl_id(a, a->nccl_id);
	if (!a->cfg->inprocess_restart || a->nnodes <= 1 ||
	    a->group_rank < 0 || a->group_rank >= a->nnodes)
		return 0;
	if (a->cfg->mode == HP_MODE_OPERATOR && !operator_round(a, init))
		return 0;
	if (!a->xnode)
		a->xnode = xnode_new(a);
	struct hp_xnode *x = a->xnode;
	if (x->disabled)
		return 0;
	if (!x->ready) {
		int rc = setup(x, why, cap);
		if (rc < 0 || x->disabled)
			return rc;
	}
	/* every node counts the same restarts, so the restart count names
	 * the round; an epoch abandoned after an error is never reused */
	uint64_t e = (uint64_t)HP_MAX(a->restart_count, 0) + 1;
	if (e < x->epoch || (e == x->epoch && x->epoch_failed))
		e = x->epoch + (x->epoch_failed ? 1 : 0);
	if (e > x->epoch)
		x->epoch_failed = false;
	x->epoch = e;
	int ms = deadline_ms(a);
	hp_info(COMP, "cross-node barrier, epoch %llu (deadline %d ms)",
		(unsigned long long)e, ms);
	long long t0 = now_ms();
	int rc = collectives(x, e, ms, why, cap);
	on_dispatch(x);
	if (rc < 0) {
		x->epoch_failed = true;
		hp_error(COMP, "%s", why);
		return rc;
	}
	hp_info(COMP, "every node is at the barrier (%lld ms)%s",
		now_ms() - t0, a->nccl_id[0] ? "; NCCL unique id shared" : "");
	return 0;
}

/* One POST of many sent side by side (tell_all). */
struct post {
	int fd;
	char *req;
	size_t len, off;
	char buf[256]; /* the status line is all we read */
	size_t got;
	int rc; /* 1 while in flight */
	int status;
};

static void post_step(struct post *p, short revents)
{
	if (p->off < p->len) {
		int err = 0;
		socklen_t elen = sizeof(err);
		if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
			err = errno;
		if (err) {
			p->rc = -err;
			return;
		}
		ssize_t n = send(p->fd, p->req + p->off, p->len - p->off,
				 MSG_NOSIGNAL);
		if (n > 0)
			p->off += (size_t)n;
		else if (n < 0 && errno != EAGAIN && errno != EINTR)
			p->rc = -errno;
		return;
	}
	if (!(revents & (POLLIN | POLLHUP | POLLERR)))
		return;
	ssize_t n = recv(p->fd, p->buf + p->got, sizeof(p->buf) - 1 - p->got,
			 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n < 0) {
		p->rc = -errno;
		return;
	}
	p->got += (size_t)n;
	p->buf[p->got] = '\0';
	if (n == 0 || p->got == sizeof(p->buf) - 1 || strstr(p->buf, "\r\n")) {
		p->rc = sscanf(p->buf, "HTTP/1.%*d %d", &p->status) == 1
				? 0
				: -EPROTO;
	}
}

/* POSTs body to path on every peer but us at once, all within one
 * timeout: a peer that is slow to answer (its loop busy in a collective)
 * costs the loop FAULT_POST_TIMEOUT_MS once, not once per peer. */
static void tell_all(struct hp_xnode *x, const char *path, const char *body,
		     const char *what)
{
	long long until = now_ms() + FAULT_POST_TIMEOUT_MS;
	struct post *ps = xcalloc(x->size, sizeof(*ps));
	struct pollfd *pfd = xcalloc(x->size, sizeof(*pfd));
	for (unsigned r = 0; r < x->size; r++) {
		struct post *p = &ps[r];
		p->fd = -1;
		p->rc = r == x->rank ? 0 : 1;
		if (r == x->rank)
			continue;
		char host[256], port[16];
		struct addrinfo hints = {.ai_family = AF_UNSPEC,
					 .ai_socktype = SOCK_STREAM,
					 .ai_flags = AI_NUMERICSERV};
		struct addrinfo *res = NULL;
		if (split_hostport(x->peer_http[r], host, sizeof(host), port,
				   sizeof(port)) ||
		    getaddrinfo(host, port, &hints, &res) != 0 || !res) {
			p->rc = -EHOSTUNREACH;
			continue;
		}
		p->fd = socket(res->ai_family,
			       res->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			       res->ai_protocol);
		if (p->fd < 0 || (connect(p->fd, res->ai_addr,
					  res->ai_addrlen) < 0 &&
				  errno != EINPROGRESS))
			p->rc = -errno;
		freeaddrinfo(res);
		p->req = xasprintf("POST %s HTTP/1.1\r\nHost: %s\r\n"
				   "Connection: close\r\n"
				   "Content-Type: application/json\r\n"
				   "Content-Length: %zu\r\n\r\n%s",
				   path, x->peer_http[r], strlen(body), body);
		p->len = strlen(p->req);
	}
	for (;;) {
		nfds_t n = 0;
		for (unsigned r = 0; r < x->size; r++) {
			if (ps[r].rc != 1)
				continue;
			pfd[n].fd = ps[r].fd;
			pfd[n].events = ps[r].off < ps[r].len ? POLLOUT : POLLIN;
			pfd[n].revents = 0;
			n++;
		}
		long long left = until - now_ms();
		if (n == 0 || left <= 0)
			break;
		if (poll(pfd, n, (int)left) < 0 && errno != EINTR)
			break;
		nfds_t k = 0;
		for (unsigned r = 0; r < x->size; r++)
			if (ps[r].rc == 1 && pfd[k++].revents)
				post_step(&ps[r], pfd[k - 1].revents);
	}
	for (unsigned r = 0; r < x->size; r++) {
		struct post *p = &ps[r];
		if (r == x->rank)
			continue;
		if (p->rc == 1)
			p->rc = -ETIMEDOUT;
		if (p->rc == 0 && p->status == 200)
			hp_info(COMP, "told rank %u (%s) to restart (%s)", r,
				x->peer_http[r], what);
		else if (p->rc == 0)
			hp_warn(COMP, "could not tell rank %u (%s) to restart "
				"(%s): HTTP %d", r, x->peer_http[r], what,
				p->status);
		else
			hp_warn(COMP, "could not tell rank %u (%s) to restart "
				"(%s): %s", r, x->peer_http[r], what,
				strerror(-p->rc));
		if (p->fd >= 0)
			close(p->fd);
		free(p->req);
	}
	free(pfd);
	free(ps);
}

void xnode_tell_peers(struct hp_agent *a, bool plr)
{
	struct hp_xnode *x = a->xnode;
	if (a->cfg->mode != HP_MODE_LOCAL || !xnode_active(a) ||
	    !x->peer_http)
		return;
	tell_all(x, "/stop",
		 plr ? "{\"restart_mode\":\"plr\"}"
		     : "{\"restart_mode\":\"ipr\"}",
		 plr ? "process-level" : "in-process");
}

void xnode_teardown(struct hp_agent *a)
{
	struct hp_xnode *x = a->xnode;
	if (!x)
		return;
	a->xnode = NULL;
	if (x->f) {
		int rc = hp_fabric_leave(x->f, 1000);
		if (rc < 0)
			hp_warn(COMP, "leaving the fabric: %s",
				hp_fabric_last_error(x->f));
		else
			hp_info(COMP, "left the fabric");
	}
	if (x->poll_started) {
		uv_poll_stop(&x->poll);
		x->open_handles++;
		uv_close((uv_handle_t *)&x->poll, close_cb);
	}
	hp_fabric_free(x->f);
	x->f = NULL;
	for (unsigned i = 0; x->peer_http && i < x->size; i++)
		free(x->peer_http[i]);
	free(x->peer_http);
	free(x->self_http);
	free(x->root_http);
	uv_close((uv_handle_t *)&x->timer, close_cb);
}
