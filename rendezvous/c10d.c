/* c10d.c — the c10d-style rendezvous among agents (c10d.h): the host's
 * round state and its HTTP/1.0 routes, and every node's client requests.
 * One request per connection; answers are "key=value" lines (4xx answers
 * a JSON {"detail": ...}). Joins, watches and the exit barrier are long
 * polls: the host answers when the round closes or ends. A watch that
 * drops before its node said "done" is that node leaving. Everything runs
 * on the agent's uv loop; nothing here blocks except the one-off name
 * lookup of the endpoint in hp_c10d_new. */
#include "c10d.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "base/xalloc.h"

#define DEFAULT_PORT 29400 /* torch's c10d default */
#define MAX_REQ 4096
#define RETRY_MS 250

enum req_kind { REQ_JOIN, REQ_WATCH, REQ_FAIL, REQ_DONE, REQ_BARRIER };

static const char *const req_names[] = {"join", "watch", "fail", "done",
					"barrier"};

/* One TCP connection, either side. */
struct conn {
	uv_tcp_t tcp;
	uv_connect_t connect;
	uv_write_t write;
	struct hp_c10d *c;
	bool server_side;
	bool closing;
	bool answered;       /* server: a reply was written */
	enum req_kind kind;
	int round;           /* the round the request is about */
	char node[128];
	char *out;           /* bytes being written */
	char buf[MAX_REQ];
	size_t len;
	struct conn *next;   /* in c->conns */
};

struct peer {
	char node[128];
	char addr[INET6_ADDRSTRLEN];
	char sockname[INET6_ADDRSTRLEN]; /* our address on its connection */
	int port;             /* a free port it proposes as MASTER_PORT */
	bool done;
	struct conn *join;    /* pending join reply, NULL once answered */
};

struct hp_c10d {
	uv_loop_t *loop;
	struct hp_c10d_options o;
	char *run_id;
	char *run_hex;   /* the run id on the wire: hex, so any id will do */
	char *local_addr;
	char node_id[192];
	struct sockaddr_storage ep;  /* where to connect */
	char ep_host[256];
	int port;
	struct conn *conns;
	int open_handles;

	/* host */
	bool host;
	uv_tcp_t listener;
	bool listening;
	uv_timer_t last_call;
	int round;
	bool closed;
	struct peer *peers;
	size_t npeers;

	/* client */
	uv_timer_t retry;
	uv_timer_t deadline;
	bool joining;
	bool had_round;   /* the endpoint answered once: a refusal is fatal */
	bool done_sent;
	int my_round;     /* the round this node runs, -1 none */
	struct conn *watch;
};

/* ------------------------------------------------------------------ */
/* connections                                                         */

static void handle_closed(uv_handle_t *h)
{
	struct hp_c10d *c = h->data;
	c->open_handles--;
}

static void conn_closed(uv_handle_t *h)
{
	struct conn *k = h->data;
	struct hp_c10d *c = k->c;
	for (struct conn **p = &c->conns; *p; p = &(*p)->next)
		if (*p == k) {
			*p = k->next;
			break;
		}
	c->open_handles--;
	free(k->out);
	free(k);
}

static void conn_close(struct conn *k)
{
	if (k->closing)
		return;
	k->closing = true;
	uv_close((uv_handle_t *)&k->tcp, conn_closed);
}

static struct conn *conn_new(struct hp_c10d *c, bool server_side)
{
	struct conn *k = xcalloc(1, sizeof(*k));
	k->c = c;
	k->server_side = server_side;
	uv_tcp_init(c->loop, &k->tcp);
	k->tcp.data = k;
	c->open_handles++;
	k->next = c->conns;
	c->conns = k;
	return k;
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	(void)hint;
	struct conn *k = h->data;
	if (k->len >= sizeof(k->buf) - 1) {
		*b = uv_buf_init(NULL, 0);
		return;
	}
	*b = uv_buf_init(k->buf + k->len, (unsigned)(sizeof(k->buf) - 1 - k->len));
}

static void written(uv_write_t *w, int status)
{
	struct conn *k = w->data;
	(void)status;
	/* the server closes after its answer; the client waits for one */
	if (k->server_side)
		conn_close(k);
}

static void conn_send(struct conn *k, char *text)
{
	free(k->out);
	k->out = text;
	uv_buf_t b = uv_buf_init(text, (unsigned)strlen(text));
	k->write.data = k;
	if (uv_write(&k->write, (uv_stream_t *)&k->tcp, &b, 1, written) < 0)
		conn_close(k);
}

/* ------------------------------------------------------------------ */
/* host: round state                                                   */

static void answer(struct conn *k, int code, const char *body)
{
	if (!k || k->answered || k->closing)
		return;
	k->answered = true;
	const char *why = code == 200 ? "OK"
			  : code == 404 ? "Not Found"
			  : code == 409 ? "Conflict"
					: "Bad Request";
	char *text;
	if (code == 200)
		text = xasprintf("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
				 "Content-Length: %zu\r\n\r\n%s",
				 strlen(body), body);
	else
		text = xasprintf("HTTP/1.0 %d %s\r\nContent-Type: "
				 "application/json\r\nContent-Length: %zu\r\n"
				 "\r\n{\"detail\":\"%s\"}",
				 code, why, strlen(body) + 13, body);
	conn_send(k, text);
}

static bool is_loopback(const char *addr)
{
	return strncmp(addr, "127.", 4) == 0 || strcmp(addr, "::1") == 0 ||
	       strncmp(addr, "::ffff:127.", 11) == 0;
}

/* Answers every pending watch (and barrier) of the running round: it is
 * over. The next round opens empty; everyone joins again. */
static void reopen(struct hp_c10d *c, const char *why)
{
	hp_info("rdzv", "round %d ends: %s; round %d opens", c->round, why,
		c->round + 1);
	char *body = xasprintf("restart=%s\n", why);
	for (struct conn *k = c->conns; k; k = k->next)
		if (k->server_side && !k->answered &&
		    (k->kind == REQ_WATCH || k->kind == REQ_BARRIER) &&
		    k->round == c->round)
			answer(k, 200, body);
	free(body);
	for (size_t i = 0; i < c->npeers; i++)
		answer(c->peers[i].join, 409, "the round ended before it closed");
	c->npeers = 0;
	c->round++;
	c->closed = false;
	uv_timer_stop(&c->last_call);
}

static void close_round(struct hp_c10d *c)
{
	uv_timer_stop(&c->last_call);
	c->closed = true;
	/* a node that joined over loopback is the host's own machine: the
	 * others reach it at the address they connected to */
	const char *outside = NULL;
	for (size_t i = 0; i < c->npeers; i++)
		if (!is_loopback(c->peers[i].addr))
			outside = c->peers[i].sockname;
	if (outside)
		for (size_t i = 0; i < c->npeers; i++)
			if (is_loopback(c->peers[i].addr))
				snprintf(c->peers[i].addr,
					 sizeof(c->peers[i].addr), "%s",
					 outside);
	hp_info("rdzv", "round %d closed with %zu node(s); master %s:%d",
		c->round, c->npeers, c->peers[0].addr, c->peers[0].port);
	for (size_t i = 0; i < c->npeers; i++) {
		char *body = xasprintf("round=%d\nrank=%zu\nsize=%zu\n"
				       "master_addr=%s\nmaster_port=%d\n",
				       c->round, i, c->npeers,
				       c->peers[0].addr, c->peers[0].port);
		answer(c->peers[i].join, 200, body);
		c->peers[i].join = NULL;
		free(body);
	}
}

static void last_call_cb(uv_timer_t *t)
{
	struct hp_c10d *c = t->data;
	if (!c->closed && c->npeers >= (size_t)c->o.min_nodes)
		close_round(c);
}

static void peer_joined(struct hp_c10d *c)
{
	size_t n = c->npeers;
	if (n >= (size_t)c->o.max_nodes) {
		close_round(c);
	} else if (n >= (size_t)c->o.min_nodes && !uv_is_active((uv_handle_t *)&c->last_call)) {
		uv_timer_start(&c->last_call, last_call_cb,
			       (uint64_t)(c->o.last_call_timeout * 1000), 0);
	}
}

static struct peer *find_peer(struct hp_c10d *c, const char *node)
{
	for (size_t i = 0; i < c->npeers; i++)
		if (strcmp(c->peers[i].node, node) == 0)
			return &c->peers[i];
	return NULL;
}

/* "a=b&c=d" -> the value of key, copied into out. */
static bool query(const char *q, const char *key, char *out, size_t cap)
{
	size_t kl = strlen(key);
	for (const char *p = q; p && *p;) {
		const char *amp = strchr(p, '&');
		size_t len = amp ? (size_t)(amp - p) : strlen(p);
		if (len > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
			size_t vl = len - kl - 1;
			if (vl >= cap)
				return false;
			memcpy(out, p + kl + 1, vl);
			out[vl] = '\0';
			return true;
		}
		p = amp ? amp + 1 : NULL;
	}
	return false;
}

static bool safe_token(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || strchr("-_.:%", *s)))
			return false;
	return true;
}

static void serve_join(struct hp_c10d *c, struct conn *k, const char *q)
{
	char port[16] = "", addr[INET6_ADDRSTRLEN] = "";
	query(q, "port", port, sizeof(port));
	query(q, "addr", addr, sizeof(addr));
	if (c->closed) {
		/* a late node (or one restarting by itself): torchrun's
		 * running agents see a node waiting and restart */
		reopen(c, "a node is waiting to join");
	}
	struct peer *p = find_peer(c, k->node);
	if (!p) {
		c->peers = xrealloc(c->peers, (c->npeers + 1) * sizeof(*p));
		p = &c->peers[c->npeers++];
		memset(p, 0, sizeof(*p));
		snprintf(p->node, sizeof(p->node), "%s", k->node);
	} else {
		answer(p->join, 409, "joined again");
	}
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	char peer_addr[INET6_ADDRSTRLEN] = "127.0.0.1";
	if (uv_tcp_getpeername(&k->tcp, (struct sockaddr *)&ss, &len) == 0)
		uv_ip_name((struct sockaddr *)&ss, peer_addr, sizeof(peer_addr));
	len = sizeof(ss);
	p->sockname[0] = '\0';
	if (uv_tcp_getsockname(&k->tcp, (struct sockaddr *)&ss, &len) == 0)
		uv_ip_name((struct sockaddr *)&ss, p->sockname,
			   sizeof(p->sockname));
	if (strncmp(peer_addr, "::ffff:", 7) == 0)
		memmove(peer_addr, peer_addr + 7, strlen(peer_addr + 7) + 1);
	if (strncmp(p->sockname, "::ffff:", 7) == 0)
		memmove(p->sockname, p->sockname + 7, strlen(p->sockname + 7) + 1);
	snprintf(p->addr, sizeof(p->addr), "%s", addr[0] ? addr : peer_addr);
	p->port = atoi(port);
	p->join = k;
	p->done = false;
	k->round = c->round;
	hp_info("rdzv", "round %d: node %s (%s) joined, %zu of %d..%d",
		c->round, k->node, p->addr, c->npeers, c->o.min_nodes,
		c->o.max_nodes);
	peer_joined(c);
}

static bool round_all_done(struct hp_c10d *c)
{
	for (size_t i = 0; i < c->npeers; i++)
		if (!c->peers[i].done)
			return false;
	return true;
}

static void barrier_check(struct hp_c10d *c)
{
	if (!c->closed || !round_all_done(c))
		return;
	for (struct conn *k = c->conns; k; k = k->next)
		if (k->server_side && !k->answered && k->kind == REQ_BARRIER)
			answer(k, 200, "done=1\n");
}

/* A request line arrived: "GET /rdzv/<kind>?<query> HTTP/1.x". */
static void serve(struct hp_c10d *c, struct conn *k)
{
	char method[8], target[1024];
	if (sscanf(k->buf, "%7s %1023s", method, target) != 2 ||
	    strcmp(method, "GET") != 0 || strncmp(target, "/rdzv/", 6) != 0) {
		answer(k, 404, "no such route");
		return;
	}
	char *q = strchr(target, '?');
	if (q)
		*q++ = '\0';
	int kind = -1;
	for (int i = 0; i < (int)HP_ARRAY_LEN(req_names); i++)
		if (strcmp(target + 6, req_names[i]) == 0)
			kind = i;
	char run[256] = "", round[16] = "";	/* run: hex, at most 200 */
	if (kind < 0) {
		answer(k, 404, "no such route");
		return;
	}
	if (!q || !query(q, "node", k->node, sizeof(k->node)) ||
	    !safe_token(k->node) || !query(q, "run", run, sizeof(run))) {
		answer(k, 400, "node and run are required");
		return;
	}
	if (strcmp(run, c->run_hex) != 0) {
		answer(k, 409, "another run id is served here");
		return;
	}
	k->kind = (enum req_kind)kind;
	k->round = query(q, "round", round, sizeof(round)) ? atoi(round) : -1;
	struct peer *p = find_peer(c, k->node);
	switch (k->kind) {
	case REQ_JOIN:
		serve_join(c, k, q);
		return;
	case REQ_WATCH:
		/* answered when the round ends; a drop is the node leaving */
		if (k->round != c->round || !c->closed || !p)
			answer(k, 200, "restart=the round is over\n");
		return;
	case REQ_FAIL:
		answer(k, 200, "ok=1\n");
		if (k->round == c->round && c->closed && p) {
			char why[200];
			snprintf(why, sizeof(why), "node %s failed", k->node);
			reopen(c, why);
		}
		return;
	case REQ_DONE:
		if (p && k->round == c->round)
			p->done = true;
		answer(k, 200, "ok=1\n");
		barrier_check(c);
		return;
	case REQ_BARRIER:
		if (k->round != c->round)
			answer(k, 200, "restart=the round is over\n");
		else
			barrier_check(c);
		return;
	}
}

/* A server connection dropped before its answer. */
static void client_gone(struct hp_c10d *c, struct conn *k)
{
	if (k->answered)
		return;
	k->answered = true;
	struct peer *p = find_peer(c, k->node);
	if (!p)
		return;
	if (k->kind == REQ_JOIN && !c->closed && p->join == k) {
		/* left before the round closed: forget it */
		hp_info("rdzv", "round %d: node %s left before it closed",
			c->round, k->node);
		*p = c->peers[--c->npeers];
		return;
	}
	if (k->kind == REQ_WATCH && c->closed && k->round == c->round &&
	    !p->done) {
		char why[200];
		snprintf(why, sizeof(why), "node %s left", k->node);
		reopen(c, why);
	}
}

static void server_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	(void)b;
	struct conn *k = s->data;
	struct hp_c10d *c = k->c;
	if (n < 0) {
		client_gone(c, k);
		conn_close(k);
		return;
	}
	/* keep reading after the request: its EOF is the node going away */
	k->len += (size_t)n;
	k->buf[k->len] = '\0';
	if (k->node[0] || k->answered)
		return; /* the request was handled already */
	if (strstr(k->buf, "\r\n\r\n") || strstr(k->buf, "\n\n")) {
		serve(c, k);
	} else if (k->len >= sizeof(k->buf) - 1) {
		answer(k, 400, "request too long");
	}
}

static void on_connection(uv_stream_t *l, int status)
{
	struct hp_c10d *c = l->data;
	if (status < 0)
		return;
	struct conn *k = conn_new(c, true);
	if (uv_accept(l, (uv_stream_t *)&k->tcp) < 0) {
		conn_close(k);
		return;
	}
	uv_read_start((uv_stream_t *)&k->tcp, alloc_cb, server_read);
}

/* ------------------------------------------------------------------ */
/* client                                                              */

static void client_request(struct hp_c10d *c, enum req_kind kind);

/* "key=value" lines of an answer body. */
static bool body_get(const char *body, const char *key, char *out, size_t cap)
{
	size_t kl = strlen(key);
	for (const char *p = body; p && *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		if (len > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
			size_t vl = HP_MIN(len - kl - 1, cap - 1);
			memcpy(out, p + kl + 1, vl);
			out[vl] = '\0';
			return true;
		}
		p = nl ? nl + 1 : NULL;
	}
	return false;
}

static void retry_cb(uv_timer_t *t)
{
	struct hp_c10d *c = t->data;
	if (c->joining)
		client_request(c, REQ_JOIN);
}

static void deadline_cb(uv_timer_t *t)
{
	struct hp_c10d *c = t->data;
	if (!c->joining)
		return;
	c->joining = false;
	uv_timer_stop(&c->retry);
	for (struct conn *k = c->conns; k; k = k->next)
		if (!k->server_side && k->kind == REQ_JOIN)
			conn_close(k);
	char msg[512];
	snprintf(msg, sizeof(msg),
		 "rendezvous at %s:%d timed out after %g s (join_timeout): "
		 "fewer than %d node(s) joined",
		 c->ep_host, c->port, c->o.join_timeout, c->o.min_nodes);
	c->o.on_error(c->o.ud, msg);
}

/* The whole answer is in k->buf (the server closed). */
static void client_answer(struct hp_c10d *c, struct conn *k)
{
	int code = 0;
	sscanf(k->buf, "HTTP/%*s %d", &code);
	const char *body = strstr(k->buf, "\r\n\r\n");
	body = body ? body + 4 : "";
	char val[256];
	switch (k->kind) {
	case REQ_JOIN: {
		if (!c->joining)
			return;
		if (code != 200) {
			/* the round ended before it closed (409): join the
			 * next one; a refusal of the run id is fatal */
			if (strstr(body, "run id")) {
				c->joining = false;
				c->o.on_error(c->o.ud, "the rendezvous endpoint "
					      "serves another --rdzv-id");
				return;
			}
			uv_timer_start(&c->retry, retry_cb, RETRY_MS, 0);
			return;
		}
		struct hp_c10d_round r = {0};
		char tmp[32];
		bool ok = body_get(body, "round", tmp, sizeof(tmp)) &&
			  (r.round = atoi(tmp), true) &&
			  body_get(body, "rank", tmp, sizeof(tmp)) &&
			  (r.rank = atoi(tmp), true) &&
			  body_get(body, "size", tmp, sizeof(tmp)) &&
			  (r.size = atoi(tmp), true) &&
			  body_get(body, "master_addr", r.master_addr,
				   sizeof(r.master_addr)) &&
			  body_get(body, "master_port", tmp, sizeof(tmp)) &&
			  (r.master_port = atoi(tmp), true);
		if (!ok) {
			uv_timer_start(&c->retry, retry_cb, RETRY_MS, 0);
			return;
		}
		c->joining = false;
		c->had_round = true;
		uv_timer_stop(&c->deadline);
		c->my_round = r.round;
		c->done_sent = false;
		client_request(c, REQ_WATCH);
		c->o.on_round(c->o.ud, &r);
		return;
	}
	case REQ_WATCH:
		if (k != c->watch)
			return;
		c->watch = NULL;
		if (c->done_sent)
			return; /* finished: the barrier decides now */
		if (code == 200 && body_get(body, "restart", val, sizeof(val))) {
			c->my_round = -1;
			c->o.on_restart(c->o.ud, val);
			return;
		}
		break;
	case REQ_BARRIER:
		/* torchrun logs a failed exit barrier and still succeeds */
		if (code != 200)
			hp_warn("rdzv", "exit barrier: lost the endpoint %s:%d; "
				"not waiting for the other nodes", c->ep_host,
				c->port);
		c->o.on_barrier(c->o.ud);
		return;
	case REQ_FAIL:
	case REQ_DONE:
		return;
	}
	/* a watch or barrier without a proper answer: the endpoint is gone */
	char msg[512];
	snprintf(msg, sizeof(msg),
		 "lost the rendezvous endpoint %s:%d (its agent exited or the "
		 "network failed)",
		 c->ep_host, c->port);
	c->o.on_error(c->o.ud, msg);
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	(void)b;
	struct conn *k = s->data;
	struct hp_c10d *c = k->c;
	if (n > 0) {
		k->len += (size_t)n;
		k->buf[k->len] = '\0';
		return;
	}
	if (n == 0)
		return;
	/* EOF (or a reset): the answer is complete, or never came */
	conn_close(k);
	client_answer(c, k);
}

static void client_connected(uv_connect_t *r, int status)
{
	struct conn *k = r->data;
	struct hp_c10d *c = k->c;
	if (status < 0) {
		conn_close(k);
		if (k->kind == REQ_JOIN && c->joining && !c->had_round) {
			/* the host may not be up yet */
			uv_timer_start(&c->retry, retry_cb, RETRY_MS, 0);
		} else if (k->kind == REQ_JOIN && c->joining) {
			c->joining = false;
			uv_timer_stop(&c->deadline);
			k->kind = REQ_WATCH;
			c->watch = k;
			k->len = 0;
			k->buf[0] = '\0';
			client_answer(c, k);
		} else if (k->kind == REQ_WATCH || k->kind == REQ_BARRIER) {
			k->len = 0;
			k->buf[0] = '\0';
			client_answer(c, k);
		}
		return;
	}
	uv_tcp_keepalive(&k->tcp, 1, 5);
	char free_port[16] = "";
	if (k->kind == REQ_JOIN) {
		/* propose a port free on this node: used if it is rank 0 */
		int port = hp_free_port(true);
		if (port > 0)
			snprintf(free_port, sizeof(free_port), "%d", port);
	}
	char *text = xasprintf(
		"GET /rdzv/%s?run=%s&node=%s&round=%d%s%s%s%s HTTP/1.0\r\n"
		"Host: %s\r\n\r\n",
		req_names[k->kind], c->run_hex, c->node_id, k->round,
		free_port[0] ? "&port=" : "", free_port,
		c->local_addr ? "&addr=" : "", c->local_addr ? c->local_addr : "",
		c->ep_host);
	conn_send(k, text);
	uv_read_start((uv_stream_t *)&k->tcp, alloc_cb, client_read);
}

static void client_request(struct hp_c10d *c, enum req_kind kind)
{
	struct conn *k = conn_new(c, false);
	k->kind = kind;
	k->round = c->my_round;
	k->connect.data = k;
	if (kind == REQ_WATCH)
		c->watch = k;
	int rc = uv_tcp_connect(&k->connect, &k->tcp,
				(const struct sockaddr *)&c->ep,
				client_connected);
	if (rc < 0) {
		conn_close(k);
		if (kind == REQ_JOIN)
			uv_timer_start(&c->retry, retry_cb, RETRY_MS, 0);
	}
}

void hp_c10d_join(struct hp_c10d *c)
{
	c->joining = true;
	c->my_round = -1;
	if (c->watch) {
		conn_close(c->watch);
		c->watch = NULL;
	}
	uv_timer_start(&c->deadline, deadline_cb,
		       (uint64_t)(c->o.join_timeout * 1000), 0);
	client_request(c, REQ_JOIN);
}

void hp_c10d_fail(struct hp_c10d *c)
{
	if (c->my_round < 0)
		return;
	client_request(c, REQ_FAIL);
	c->my_round = -1;
	/* the watch stays open (its drop would be a second, racing reason)
	 * but its answer is no longer ours to act on */
	c->watch = NULL;
}

void hp_c10d_done(struct hp_c10d *c)
{
	c->done_sent = true;
	client_request(c, REQ_DONE);
	client_request(c, REQ_BARRIER);
}

/* ------------------------------------------------------------------ */
/* set-up                                                              */

/* Can this machine bind addr? Then the endpoint is ours to serve. */
static bool is_local(const struct sockaddr *sa, socklen_t len)
{
	int fd = socket(sa->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_storage ss;
	memcpy(&ss, sa, len);
	if (ss.ss_family == AF_INET)
		((struct sockaddr_in *)&ss)->sin_port = 0;
	else
		((struct sockaddr_in6 *)&ss)->sin6_port = 0;
	bool ok = bind(fd, (struct sockaddr *)&ss, len) == 0;
	close(fd);
	return ok;
}

static int listen_on(struct hp_c10d *c, int family)
{
	struct sockaddr_storage any;
	if (family == AF_INET6)
		uv_ip6_addr("::", c->port, (struct sockaddr_in6 *)&any);
	else
		uv_ip4_addr("0.0.0.0", c->port, (struct sockaddr_in *)&any);
	uv_tcp_init(c->loop, &c->listener);
	c->listener.data = c;
	c->open_handles++;
	c->listening = true;
	int rc = uv_tcp_bind(&c->listener, (struct sockaddr *)&any, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&c->listener, 128, on_connection);
	if (rc < 0)
		return rc;
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	if (uv_tcp_getsockname(&c->listener, (struct sockaddr *)&ss, &len) == 0)
		c->port = ntohs(ss.ss_family == AF_INET
					? ((struct sockaddr_in *)&ss)->sin_port
					: ((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;
}

struct hp_c10d *hp_c10d_new(uv_loop_t *loop, const struct hp_c10d_options *o)
{
	struct hp_c10d *c = xcalloc(1, sizeof(*c));
	c->loop = loop;
	c->o = *o;
	c->run_id = xstrdup(o->run_id && *o->run_id ? o->run_id : "none");
	c->local_addr = xstrdup_or_null(o->local_addr);
	c->my_round = -1;
	snprintf(c->node_id, sizeof(c->node_id), "%.64s_%d_%08x",
		 o->node_name && *o->node_name ? o->node_name : "node",
		 (int)getpid(), (unsigned)((uintptr_t)c * 2654435761u));
	for (char *p = c->node_id; *p; p++)
		if (!safe_token((char[]){*p, 0}))
			*p = '_';
	size_t idlen = HP_MIN(strlen(c->run_id), (size_t)100);
	c->run_hex = xmalloc(idlen * 2 + 1);
	for (size_t i = 0; i < idlen; i++)
		snprintf(c->run_hex + 2 * i, 3, "%02x",
			 (unsigned char)c->run_id[i]);
	c->run_hex[idlen * 2] = '\0';

	/* host[:port], [v6]:port */
	const char *ep = o->endpoint && *o->endpoint ? o->endpoint : "localhost";
	const char *colon = strrchr(ep, ':');
	c->port = DEFAULT_PORT;
	if (ep[0] == '[') {
		const char *close = strchr(ep, ']');
		if (!close)
			goto bad;
		snprintf(c->ep_host, sizeof(c->ep_host), "%.*s",
			 (int)(close - ep - 1), ep + 1);
		colon = close[1] == ':' ? close + 1 : NULL;
	} else if (colon && strchr(ep, ':') == colon) {
		snprintf(c->ep_host, sizeof(c->ep_host), "%.*s",
			 (int)(colon - ep), ep);
	} else {
		snprintf(c->ep_host, sizeof(c->ep_host), "%s", ep);
		colon = NULL;
	}
	if (colon) {
		char *end;
		long p = strtol(colon + 1, &end, 10);
		if (*end || end == colon + 1 || p < 0 || p > 65535)
			goto bad;
		c->port = (int)p;
	}
	if (!c->ep_host[0])
		goto bad;

	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	int gai = getaddrinfo(c->ep_host, NULL, &hints, &res);
	if (gai != 0) {
		hp_error("rdzv", "--rdzv-endpoint %s: cannot resolve %s: %s",
			 ep, c->ep_host, gai_strerror(gai));
		goto fail;
	}
	bool local = false;
	memcpy(&c->ep, res->ai_addr, res->ai_addrlen);
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
		if (is_local(ai->ai_addr, ai->ai_addrlen)) {
			local = true;
			memcpy(&c->ep, ai->ai_addr, ai->ai_addrlen);
			break;
		}
	int family = res->ai_family;
	freeaddrinfo(res);

	uv_timer_init(loop, &c->last_call);
	uv_timer_init(loop, &c->retry);
	uv_timer_init(loop, &c->deadline);
	c->last_call.data = c->retry.data = c->deadline.data = c;
	c->open_handles += 3;

	bool try_host = o->is_host > 0 || (o->is_host < 0 && local);
	if (try_host) {
		int rc = listen_on(c, c->ep.ss_family ? c->ep.ss_family : family);
		if (rc == 0) {
			c->host = true;
			hp_info("rdzv", "serving the c10d rendezvous on port %d "
				"(run id %s, %d..%d nodes, last call %g s)",
				c->port, c->run_id, o->min_nodes, o->max_nodes,
				o->last_call_timeout);
		} else if (o->is_host > 0 || rc != UV_EADDRINUSE) {
			hp_error("rdzv", "cannot serve the rendezvous on port "
				 "%d: %s", c->port, uv_strerror(rc));
			goto fail;
		} else {
			hp_info("rdzv", "port %d is taken: another agent on "
				"this machine serves the rendezvous; joining it",
				c->port);
		}
		if (!c->host) {
			uv_close((uv_handle_t *)&c->listener, handle_closed);
			c->listening = false;
		}
	}
	if (c->ep.ss_family == AF_INET)
		((struct sockaddr_in *)&c->ep)->sin_port = htons((uint16_t)c->port);
	else
		((struct sockaddr_in6 *)&c->ep)->sin6_port =
			htons((uint16_t)c->port);
	if (c->port == 0) {
		hp_error("rdzv", "--rdzv-endpoint %s: port 0 only works where "
			 "this agent serves the rendezvous", ep);
		goto fail;
	}
	return c;
bad:
	hp_error("rdzv", "--rdzv-endpoint '%s': expected HOST[:PORT]",
		 o->endpoint);
fail:
	hp_c10d_free(c);
	return NULL;
}

bool hp_c10d_is_host(const struct hp_c10d *c)
{
	return c->host;
}

int hp_c10d_port(const struct hp_c10d *c)
{
	return c->port;
}

void hp_c10d_free(struct hp_c10d *c)
{
	if (!c)
		return;
	for (struct conn *k = c->conns; k; k = k->next)
		conn_close(k);
	if (c->listening && !uv_is_closing((uv_handle_t *)&c->listener))
		uv_close((uv_handle_t *)&c->listener, handle_closed);
	uv_timer_t *timers[] = {&c->last_call, &c->retry, &c->deadline};
	for (size_t i = 0; i < HP_ARRAY_LEN(timers); i++)
		if (timers[i]->loop && !uv_is_closing((uv_handle_t *)timers[i]))
			uv_close((uv_handle_t *)timers[i], handle_closed);
	while (c->open_handles > 0)
		uv_run(c->loop, UV_RUN_NOWAIT);
	free(c->peers);
	free(c->run_id);
	free(c->run_hex);
	free(c->local_addr);
	free(c);
}
