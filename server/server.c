/* server.c — the HTTP server's life: binding (with the operator's retry
 * knobs), the event_base thread, the command queue shared with the agent,
 * deferred replies and the graceful drain. It never touches agent state:
 * the agent takes commands with hp_server_pop and reports back with
 * hp_server_cmd_done, which only flags the command and pokes the server
 * thread (event_active), so no evhttp call ever runs off that thread and a
 * command waiting for the agent never blocks other connections.
 * It also guards the door (issue 12): connections are counted and capped
 * below RLIMIT_NOFILE, given a request deadline, and every request head
 * is checked before evhttp parses it, so that no client can starve the
 * supervisor of descriptors or get an HTML or mis-framed answer. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/xalloc.h"
#include "server-private.h"

#define MAX_BODY (1024 * 1024)
#define MAX_HEADERS (64 * 1024)
/* unread input a connection may hold beyond its current request's body
 * (pipelined requests); reading pauses above it */
#define MAX_UNREAD (MAX_HEADERS + 16 * 1024)
/* seconds replies get to reach clients after the drain deadline */
#define FLUSH_GRACE_S 1
/* seconds a connection gets to deliver a whole request, from its accept
 * or its last reply: evhttp's own timeout re-arms on every byte, so a
 * client trickling a header byte every few seconds was kept for ever */
#define REQUEST_DEADLINE_S 10
/* the most connections at once, whatever RLIMIT_NOFILE allows */
#define MAX_CONNS_CEIL 1024
/* an accept error (EMFILE...) pauses accepting this long */
#define ACCEPT_BACKOFF_MS 200

/* The server of this thread: libevent's accept-error callback carries
 * evhttp's argument, not ours. */
static _Thread_local struct hp_server *thread_server;

static struct hp_pending *pending_of(struct hp_cmd *c)
{
	return (struct hp_pending *)(void *)((char *)c -
					     offsetof(struct hp_pending, cmd));
}

static struct timeval tv_of(double secs)
{
	if (secs < 0)
		secs = 0;
	struct timeval tv;
	tv.tv_sec = (time_t)secs;
	tv.tv_usec = (suseconds_t)((secs - (double)tv.tv_sec) * 1e6);
	return tv;
}

/* ------------------------------------------------------------- replies */

static const char *method_name(enum evhttp_cmd_type m)
{
	switch (m) {
	case EVHTTP_REQ_GET: return "GET";
	case EVHTTP_REQ_POST: return "POST";
	case EVHTTP_REQ_HEAD: return "HEAD";
	case EVHTTP_REQ_PUT: return "PUT";
	case EVHTTP_REQ_DELETE: return "DELETE";
	case EVHTTP_REQ_OPTIONS: return "OPTIONS";
	case EVHTTP_REQ_TRACE: return "TRACE";
	case EVHTTP_REQ_CONNECT: return "CONNECT";
	case EVHTTP_REQ_PATCH: return "PATCH";
	}
	return "?";
}

/* uvicorn's access line: 'HOST:PORT - "METHOD PATH HTTP/1.1" CODE'. With
 * --server-log-level warning or above only failures are logged. */
/* A 503 of GET /fabric/peers says "not every agent joined yet": agents
 * poll it while a round sets up, so it is no error (issue 13 §5). */
static bool not_yet(struct evhttp_request *req, int code)
{
	const char *uri = evhttp_request_get_uri(req);
	return code == 503 && uri && strncmp(uri, "/fabric/peers", 13) == 0;
}

static void access_line(struct hp_server *s, struct evhttp_connection *evcon,
			const char *method, const char *uri, int code,
			bool not_yet_503)
{
	enum hp_log_level lvl = code >= 500   ? HP_LOG_ERROR
				: code >= 400 ? HP_LOG_WARN
					      : HP_LOG_INFO;
	if (not_yet_503)
		lvl = HP_LOG_DEBUG;
	if (s->access_level > HP_LOG_INFO && lvl < s->access_level)
		return;
	if (lvl < hp_log_level)
		return;
	char *peer = NULL;
	ev_uint16_t port = 0;
	if (evcon)
		evhttp_connection_get_peer(evcon, &peer, &port);
	hp_log_write(lvl, "server", "%s:%u - \"%s %s\" %d",
		     peer ? peer : "-", (unsigned)port, method, uri, code);
}

static void access_log(struct hp_server *s, struct evhttp_request *req,
		       int code)
{
	access_line(s, evhttp_request_get_connection(req),
		    method_name(evhttp_request_get_command(req)),
		    evhttp_request_get_uri(req), code, not_yet(req, code));
}

/* HTTP reason phrases (evhttp says "Client Error" for a 422). */
static const char *reason_of(int code)
{
	switch (code) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 412: return "Precondition Failed";
	case 413: return "Request Entity Too Large";
	case 422: return "Unprocessable Entity";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	}
	return code < 500 ? "Client Error" : "Server Error";
}

static void maybe_finish(struct hp_server *s);

static double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_reply_written(struct evhttp_request *req, void *arg)
{
	struct hp_srv_conn *c = arg;
	struct hp_server *s = c->s;
	c->reply_in_flight = false;
	c->busy = false;
	c->since = mono_now();
	s->unflushed--;
	maybe_finish(s);
}

void hp_srv_reply(struct hp_server *s, struct evhttp_request *req, int code,
		  const char *content_type, const char *body, size_t len)
{
	access_log(s, req, code);
	hp_srv_count_reply(s, req, code);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	if (content_type)
		evhttp_add_header(h, "Content-Type", content_type);
	struct evbuffer *buf = evbuffer_new();
	if (!buf)
		hp_bug("evbuffer_new failed");
	/* HEAD: the length of the body GET would give, and no body. */
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
		char n[24];
		snprintf(n, sizeof(n), "%zu", len);
		evhttp_add_header(h, "Content-Length", n);
	} else if (len) {
		evbuffer_add(buf, body, len);
	}
	/* A reply to a client that went away frees the request at once;
	 * otherwise track it until written so the drain can wait for it
	 * (on_conn_gone counts it when the connection dies first). */
	struct hp_srv_conn *c = hp_srv_conn_of(s, req);
	if (c) {
		s->unflushed++;
		c->reply_in_flight = true;
		c->busy = true;
		evhttp_request_set_on_complete_cb(req, on_reply_written, c);
	}
	/* the reply's version is ours, whatever the request line said */
	if (req->major != 1 || req->minor > 1) {
		req->major = 1;
		req->minor = 1;
	}
	evhttp_send_reply(req, code, reason_of(code), buf);
	evbuffer_free(buf);
}

static void json_escape_into(char *out, size_t cap, const char *in)
{
	size_t n = 0;
	for (; *in && n + 7 < cap; in++) {
		unsigned char ch = (unsigned char)*in;
		if (ch == '"' || ch == '\\') {
			out[n++] = '\\';
			out[n++] = (char)ch;
		} else if (ch < 0x20) {
			n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
		} else {
			out[n++] = (char)ch;
		}
	}
	out[n] = '\0';
}

void hp_srv_reply_detail(struct hp_server *s, struct evhttp_request *req,
			 int code, const char *detail)
{
	char esc[512], body[600];
	json_escape_into(esc, sizeof(esc), detail);
	int n = snprintf(body, sizeof(body), "{\"detail\":\"%s\"}", esc);
	hp_srv_reply(s, req, code, "application/json", body, (size_t)n);
}

/* ------------------------------------------------------- command path */

char *hp_srv_copy(struct hp_server *s, char *const *field)
{
	pthread_mutex_lock(&s->mu);
	char *out = xstrdup_or_null(*field);
	pthread_mutex_unlock(&s->mu);
	return out;
}

static void unlink_pending(struct hp_server *s, struct hp_pending *p)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		s->all = p->next;
	if (p->next)
		p->next->prev = p->prev;
	p->prev = p->next = NULL;
}

static void free_pending(struct hp_pending *p)
{
	if (p->timer)
		event_free(p->timer);
	hp_start_req_fini(&p->cmd.start);
	hp_stop_req_fini(&p->cmd.stop);
	free(p);
}

/* Answers the request of a finished command with the agent's result. */
static void answer_done(struct hp_server *s, struct hp_pending *p)
{
	struct evhttp_request *req = p->req;
	int res = p->cmd.result;
	p->req = NULL;
	if (res == 0 && p->cmd.kind == HP_CMD_UPDATE) {
		char *st = hp_srv_copy(s, &s->status);
		const char *body = st ? st : HP_SRV_DEFAULT_STATUS;
		hp_srv_reply(s, req, 200, "application/json", body,
			     strlen(body));
		free(st);
	} else if (res == 0) {
		hp_srv_reply(s, req, 200, NULL, NULL, 0);
	} else {
		int code = (res >= 400 && res <= 599) ? res : 500;
		hp_srv_reply_detail(s, req, code, reason_of(code));
	}
}

static void answer_unavailable(struct hp_server *s, struct hp_pending *p)
{
	struct evhttp_request *req = p->req;
	p->req = NULL;
	hp_srv_reply_detail(s, req, 503, "agent did not answer in time");
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
	struct hp_server *s = arg;
	struct hp_pending *done = NULL;
	pthread_mutex_lock(&s->mu);
	for (struct hp_pending *p = s->all, *nx; p; p = nx) {
		nx = p->next;
		if (!p->cmd.done)
			continue;
		unlink_pending(s, p);
		p->next = done;
		done = p;
	}
	pthread_mutex_unlock(&s->mu);
	while (done) {
		struct hp_pending *p = done;
		done = p->next;
		if (p->req)
			answer_done(s, p);
		free_pending(p);
	}
	maybe_finish(s);
}

static bool unqueue_locked(struct hp_server *s, struct hp_pending *p)
{
	if (!p->queued)
		return false;
	struct hp_cmd **pp = &s->q_head, *prev = NULL;
	while (*pp && *pp != &p->cmd) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (*pp) {
		*pp = p->cmd.next;
		if (s->q_tail == &p->cmd)
			s->q_tail = prev;
	}
	p->cmd.next = NULL;
	p->queued = false;
	return true;
}

static void on_cmd_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct hp_pending *p = arg;
	struct hp_server *s = p->s;
	pthread_mutex_lock(&s->mu);
	bool done = p->cmd.done;
	bool was_queued = !done && unqueue_locked(s, p);
	pthread_mutex_unlock(&s->mu);
	if (done)
		return; /* on_done answers with the agent's result */
	hp_warn("server", "the agent did not take a %s command within %.3gs",
		p->cmd.kind == HP_CMD_START	 ? "start"
		: p->cmd.kind == HP_CMD_STOP	 ? "stop"
		: p->cmd.kind == HP_CMD_UPDATE ? "update"
					       : "shutdown",
		s->cmd_timeout);
	if (p->req)
		answer_unavailable(s, p);
	/* A taken command stays until the agent calls hp_server_cmd_done. */
	if (was_queued) {
		unlink_pending(s, p);
		free_pending(p);
	}
	maybe_finish(s);
}

void hp_srv_submit(struct hp_server *s, struct evhttp_request *req,
		   struct hp_pending *p)
{
	p->s = s;
	p->req = req;
	p->cmd.next = NULL;
	p->cmd.done = false;
	p->cmd.result = 0;
	p->timer = evtimer_new(s->base, on_cmd_timeout, p);
	if (!p->timer)
		hp_bug("evtimer_new failed");
	struct timeval tv = tv_of(s->cmd_timeout);
	evtimer_add(p->timer, &tv);

	pthread_mutex_lock(&s->mu);
	p->queued = true;
	if (s->q_tail)
		s->q_tail->next = &p->cmd;
	else
		s->q_head = &p->cmd;
	s->q_tail = &p->cmd;
	p->prev = NULL;
	p->next = s->all;
	if (s->all)
		s->all->prev = p;
	s->all = p;
	pthread_mutex_unlock(&s->mu);

	if (s->wake_cb)
		s->wake_cb(s->ud);
}

struct hp_cmd *hp_server_pop(struct hp_server *s)
{
	pthread_mutex_lock(&s->mu);
	struct hp_cmd *c = s->q_head;
	if (c) {
		s->q_head = c->next;
		if (!s->q_head)
			s->q_tail = NULL;
		c->next = NULL;
		pending_of(c)->queued = false;
	}
	pthread_mutex_unlock(&s->mu);
	return c;
}

void hp_server_cmd_done(struct hp_server *s, struct hp_cmd *cmd, int result)
{
	pthread_mutex_lock(&s->mu);
	cmd->result = result;
	cmd->done = true;
	pthread_mutex_unlock(&s->mu);
	event_active(s->done_ev, EV_READ, 0);
}

static void publish(struct hp_server *s, char **field, char *text)
{
	pthread_mutex_lock(&s->mu);
	char *old = *field;
	*field = text;
	pthread_mutex_unlock(&s->mu);
	if (field == &s->status)
		atomic_fetch_add(&s->status_gen, 1);
	free(old);
}

void hp_server_publish(struct hp_server *s, char *json)
{
	publish(s, &s->status, json);
}

void hp_server_publish_metrics(struct hp_server *s, char *text)
{
	publish(s, &s->metrics, text);
}

void hp_server_publish_fabric(struct hp_server *s, char *text)
{
	publish(s, &s->fabric, text);
}

int hp_server_port(const struct hp_server *s)
{
	return s->port;
}

/* --------------------------------------------------------------- drain */

static size_t unanswered(struct hp_server *s)
{
	size_t n = 0;
	for (struct hp_pending *p = s->all; p; p = p->next)
		n += p->req != NULL;
	return n;
}

static void maybe_finish(struct hp_server *s)
{
	if (s->draining && s->unflushed <= 0 && unanswered(s) == 0)
		event_base_loopbreak(s->base);
}

/* The drain deadline: what still waits for the agent gets 503, and the
 * replies get a short grace to reach their clients; a second expiry ends
 * the loop whatever is left. */
static void on_drain_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct hp_server *s = arg;
	if (s->drain_expired) {
		event_base_loopbreak(s->base);
		return;
	}
	s->drain_expired = true;
	size_t n = unanswered(s);
	if (n)
		hp_warn("server", "drain deadline passed with %zu request(s) "
			"still waiting for the agent", n);
	for (struct hp_pending *p = s->all; p; p = p->next)
		if (p->req)
			answer_unavailable(s, p);
	struct timeval grace = {FLUSH_GRACE_S, 0};
	evtimer_add(s->drain_ev, &grace);
	maybe_finish(s);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
	struct hp_server *s = arg;
	s->draining = true;
	if (s->bound) {
		evhttp_del_accept_socket(s->http, s->bound);
		s->bound = NULL;
	}
	/* Commands the agent never took will not be taken now. */
	struct hp_pending *gone = NULL;
	pthread_mutex_lock(&s->mu);
	double drain = s->drain_timeout;
	for (struct hp_pending *p = s->all, *nx; p; p = nx) {
		nx = p->next;
		if (p->cmd.done || !unqueue_locked(s, p))
			continue;
		unlink_pending(s, p);
		p->next = gone;
		gone = p;
	}
	pthread_mutex_unlock(&s->mu);
	while (gone) {
		struct hp_pending *p = gone;
		gone = p->next;
		if (p->req)
			answer_unavailable(s, p);
		free_pending(p);
	}
	struct timeval tv = tv_of(drain);
	evtimer_add(s->drain_ev, &tv);
	maybe_finish(s);
}

static void *server_main(void *arg)
{
	struct hp_server *s = arg;
	thread_server = s;
	event_base_loop(s->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

/* ------------------------------------------------------------- framing */

/* evhttp 2.1 answers framing errors itself with HTML (never counted),
 * takes the first of two different Content-Lengths, answers CONNECT
 * without a Content-Length on a kept-alive connection and reads no body
 * for a GET with one (the bytes become the next request). So each request
 * head is held back in c->hold until it is complete and checked here
 * before evhttp sees a byte of it; a bad one is replaced by a synthetic
 * request that on_request answers with {"detail": …} and closes. Bodies
 * pass straight through (Content-Length bytes); after a chunked body the
 * connection is left to evhttp alone. The input buffer's callback runs
 * inside the read, before evhttp's read callback. */

#define REJECTED_PATH "/-rejected-"
#define SYNTHETIC "GET " REJECTED_PATH " HTTP/1.1\r\nConnection: close\r\n\r\n"

static bool token_eq(const char *p, size_t n, const char *lit)
{
	return strlen(lit) == n && strncasecmp(p, lit, n) == 0;
}

/* 0, or the HTTP code and *why for a bad request line. */
static int check_request_line(const char *p, size_t n, bool *may_body)
{
	static const char *const bodied[] = {"POST", "PUT", "PATCH"};
	static const char *const plain[] = {"GET",    "HEAD",  "DELETE",
					    "OPTIONS", "TRACE"};
	const char *sp1 = memchr(p, ' ', n);
	if (!sp1)
		return 400;
	const char *rest = sp1 + 1;
	size_t rn = n - (size_t)(rest - p);
	const char *sp2 = memchr(rest, ' ', rn);
	if (!sp2 || sp2 == rest || sp1 == p)
		return 400;
	const char *ver = sp2 + 1;
	size_t vn = n - (size_t)(ver - p);
	if (memchr(ver, ' ', vn))
		return 400;
	size_t mn = (size_t)(sp1 - p);
	bool v1x = vn == 8 && (memcmp(ver, "HTTP/1.1", 8) == 0 ||
			       memcmp(ver, "HTTP/1.0", 8) == 0);
	if (!v1x)
		return vn >= 5 && memcmp(ver, "HTTP/", 5) == 0 ? 505 : 400;
	*may_body = false;
	for (size_t i = 0; i < HP_ARRAY_LEN(bodied); i++)
		if (mn == strlen(bodied[i]) && memcmp(p, bodied[i], mn) == 0) {
			*may_body = true;
			return 0;
		}
	for (size_t i = 0; i < HP_ARRAY_LEN(plain); i++)
		if (mn == strlen(plain[i]) && memcmp(p, plain[i], mn) == 0)
			return 0;
	if (mn == 7 && memcmp(p, "CONNECT", 7) == 0)
		return 405;
	return 501;
}

/* Checks a complete head (request line, headers, empty line). Returns 0
 * with the body's length or *chunked, or an HTTP code and *why. */
static int check_head(const char *h, size_t n, unsigned long long *body,
		      bool *chunked, const char **why)
{
	const char *end = h + n, *line = h;
	bool may_body = false, have_cl = false;
	unsigned long long cl = 0;
	*chunked = false;
	*why = "Bad Request";
	for (int i = 0; line < end; i++) {
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		if (!nl)
			break;
		size_t len = (size_t)(nl - line);
		if (len && line[len - 1] == '\r')
			len--;
		if (i == 0) {
			int code = check_request_line(line, len, &may_body);
			*why = code == 505   ? "HTTP Version Not Supported"
			       : code == 405 ? "Method Not Allowed"
			       : code == 501 ? "Not Implemented"
					     : "malformed request line";
			if (code)
				return code;
		} else if (len == 0) {
			break;
		} else {
			const char *colon = memchr(line, ':', len);
			*why = "malformed header line";
			if (!colon || colon == line || line[0] == ' ' ||
			    line[0] == '\t' || colon[-1] == ' ' ||
			    colon[-1] == '\t')
				return 400;
			size_t nn = (size_t)(colon - line);
			const char *v = colon + 1, *ve = line + len;
			while (v < ve && (*v == ' ' || *v == '\t'))
				v++;
			while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
				ve--;
			size_t vn = (size_t)(ve - v);
			if (token_eq(line, nn, "Content-Length")) {
				*why = "invalid Content-Length";
				if (vn == 0 || vn > 19 || strspn(v, "0123456789") < vn)
					return 400;
				unsigned long long x = strtoull(v, NULL, 10);
				*why = "conflicting Content-Length headers";
				if (have_cl && x != cl)
					return 400;
				have_cl = true;
				cl = x;
			} else if (token_eq(line, nn, "Transfer-Encoding")) {
				*why = "Transfer-Encoding other than chunked";
				if (!token_eq(v, vn, "chunked"))
					return 501;
				*chunked = true;
			}
		}
		line = nl + 1;
	}
	*why = "both Content-Length and Transfer-Encoding";
	if (have_cl && *chunked)
		return 400;
	*why = "a body on a request that takes none";
	if (!may_body && (cl > 0 || *chunked))
		return 400;
	*why = "Request Entity Too Large";
	if (cl > MAX_BODY)
		return 413;
	*body = cl;
	return 0;
}

/* Moves n bytes of from to evhttp's input (server thread). */
static void pass_on(struct hp_srv_conn *c, struct evbuffer *in,
		    struct evbuffer *from, size_t n)
{
	c->passing = true;
	evbuffer_remove_buffer(from, in, n);
	c->passing = false;
}

static void reject(struct hp_srv_conn *c, struct evbuffer *in, int code,
		   const char *why)
{
	c->reject_code = code;
	c->reject_why = why;
	c->discard = true;
	evbuffer_drain(c->hold, evbuffer_get_length(c->hold));
	c->passing = true;
	evbuffer_add(in, SYNTHETIC, strlen(SYNTHETIC));
	c->passing = false;
}

/* The end of the head in c->hold (past its empty line), or 0. */
static size_t head_end(struct hp_srv_conn *c)
{
	/* leading empty lines (after a body) are no request */
	for (;;) {
		unsigned char b[2];
		ev_ssize_t k = evbuffer_copyout(c->hold, b, 2);
		if (k >= 1 && b[0] == '\n')
			evbuffer_drain(c->hold, 1);
		else if (k == 2 && b[0] == '\r' && b[1] == '\n')
			evbuffer_drain(c->hold, 2);
		else
			break;
		c->scanned = 0;
	}
	/* from where the last search stopped, so that a head trickled in
	 * byte by byte costs linear, not quadratic, time */
	size_t len = evbuffer_get_length(c->hold);
	size_t from = c->scanned > 3 ? c->scanned - 3 : 0;
	c->scanned = len;
	if (from >= len)
		return 0;
	struct evbuffer_ptr start;
	if (evbuffer_ptr_set(c->hold, &start, from, EVBUFFER_PTR_SET) < 0)
		return 0;
	struct evbuffer_ptr a = evbuffer_search(c->hold, "\n\r\n", 3, &start);
	struct evbuffer_ptr b = evbuffer_search(c->hold, "\n\n", 2, &start);
	size_t ea = a.pos >= 0 ? (size_t)a.pos + 3 : 0;
	size_t eb = b.pos >= 0 ? (size_t)b.pos + 2 : 0;
	if (ea && eb)
		return HP_MIN(ea, eb);
	return ea ? ea : eb;
}

/* ------------------------------------------------ GET /status fast path */

/* The operator, monitors and benchmarks poll GET /status. A plain
 * keep-alive "GET /status HTTP/1.1" on a connection with nothing else in
 * progress is answered here, from the head checker, in one send(2) of a
 * reply rendered once per publication and second: no evhttp request, no
 * header table, no printf, no read/write toggling of the socket. The
 * bytes are what evhttp sends for it (same headers, same order; see
 * e2e-http-fast). Everything else goes to evhttp. */

static bool fast_candidate(const char *h, size_t n)
{
	static const char first[] = "GET /status HTTP/1.1";
	const size_t fn = sizeof(first) - 1;
	if (n < fn + 1 || memcmp(h, first, fn) != 0)
		return false;
	const char *p = h + fn, *end = h + n;
	if (p < end && *p == '\r')
		p++;
	if (p >= end || *p != '\n')
		return false;
	for (p++; p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl)
			break;
		size_t len = (size_t)(nl - p);
		if (len && p[len - 1] == '\r')
			len--;
		if (len == 0)
			break;
		const char *colon = memchr(p, ':', len);
		size_t nn = colon ? (size_t)(colon - p) : len;
		/* evhttp answers these itself (close, keep-alive, 100) */
		if (token_eq(p, nn, "Connection") || token_eq(p, nn, "Expect"))
			return false;
		p = nl + 1;
	}
	return true;
}

/* evutil_date_rfc1123's format, without the locale */
static void http_date(time_t t, char out[32])
{
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed",
					   "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr",
					     "May", "Jun", "Jul", "Aug",
					     "Sep", "Oct", "Nov", "Dec"};
	struct tm tm;
	gmtime_r(&t, &tm);
	snprintf(out, 32, "%s, %02d %s %4d %02d:%02d:%02d GMT",
		 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
		 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static const char *fast_reply(struct hp_server *s, size_t *len)
{
	time_t now = time(NULL);
	unsigned gen = atomic_load(&s->status_gen);
	if (!s->fast || gen != s->fast_gen || now != s->fast_sec) {
		/* a publish after the load above renders again next time */
		char *st = hp_srv_copy(s, &s->status);
		const char *body = st ? st : HP_SRV_DEFAULT_STATUS;
		char date[32];
		http_date(now, date);
		free(s->fast);
		s->fast = xasprintf("HTTP/1.1 200 OK\r\n"
				    "Content-Type: application/json\r\n"
				    "Date: %s\r\n"
				    "Content-Length: %zu\r\n\r\n%s",
				    date, strlen(body), body);
		s->fast_len = strlen(s->fast);
		s->fast_gen = gen;
		s->fast_sec = now;
		free(st);
	}
	*len = s->fast_len;
	return s->fast;
}

static struct hp_srv_conn *conn_of_evcon(struct hp_server *s,
					 struct evhttp_connection *evcon)
{
	for (struct hp_srv_conn *c = s->conns; c; c = c->next)
		if (c->evcon == evcon)
			return c;
	return NULL;
}

/* The rest of a fast reply is out: evhttp's callbacks back, reading on. */
static void fast_written(struct bufferevent *bev, void *arg)
{
	struct hp_server *s = thread_server;
	struct hp_srv_conn *c = s ? conn_of_evcon(s, arg) : NULL;
	if (!c || !c->fast_pending)
		return;
	bufferevent_data_cb rcb;
	bufferevent_event_cb ecb;
	bufferevent_getcb(bev, &rcb, NULL, &ecb, NULL);
	bufferevent_setcb(bev, rcb, c->fast_saved_wcb, ecb, arg);
	bufferevent_disable(bev, EV_WRITE);
	bufferevent_enable(bev, EV_READ);
	c->fast_pending = false;
	c->reply_in_flight = false;
	c->since = mono_now();
	s->unflushed--;
	maybe_finish(s);
}

/* Answers the head h (n bytes, all of c->hold) if it is a plain GET
 * /status and nothing else is under way on c; false leaves it to evhttp. */
static bool fast_status(struct hp_srv_conn *c, struct evbuffer *in,
			const char *h, size_t n)
{
	struct hp_server *s = c->s;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	if (c->busy || c->reply_in_flight || c->fast_pending || s->draining ||
	    evbuffer_get_length(in) || evbuffer_get_length(c->hold) != n ||
	    evbuffer_get_length(out) || !fast_candidate(h, n))
		return false;
	size_t len;
	const char *r = fast_reply(s, &len);
	access_line(s, c->evcon, "GET", "/status", 200, false);
	hp_srv_count_path(s, "/status", 200);
	ssize_t w;
	do {
		w = send(bufferevent_getfd(c->bev), r, len,
			 MSG_NOSIGNAL | MSG_DONTWAIT);
	} while (w < 0 && errno == EINTR);
	if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
		w = (ssize_t)len; /* the peer is gone: evhttp's read sees it */
	if (w < 0)
		w = 0;
	if ((size_t)w < len) {
		/* the socket is full (a client that does not read): the rest
		 * goes out through the bufferevent, and nothing more is read
		 * until it has, so no later reply can come first */
		evbuffer_add(out, r + w, len - (size_t)w);
		bufferevent_data_cb rcb, wcb;
		bufferevent_event_cb ecb;
		void *arg;
		bufferevent_getcb(c->bev, &rcb, &wcb, &ecb, &arg);
		c->fast_saved_wcb = wcb;
		c->fast_pending = true;
		c->reply_in_flight = true;
		s->unflushed++;
		bufferevent_setcb(c->bev, rcb, fast_written, ecb, arg);
		bufferevent_disable(c->bev, EV_READ);
		bufferevent_enable(c->bev, EV_WRITE);
		return true;
	}
	c->since = mono_now();
	return true;
}

static void on_input(struct evbuffer *in, const struct evbuffer_cb_info *info,
		     void *arg)
{
	struct hp_srv_conn *c = arg;
	if (c->passing || !c->validate || info->n_added == 0)
		return;
	/* the new bytes are the last n_added; older ones are evhttp's */
	size_t len = evbuffer_get_length(in);
	size_t old = len - HP_MIN(len, info->n_added);
	struct evbuffer *fresh = evbuffer_new();
	if (!fresh)
		hp_bug("evbuffer_new failed");
	c->passing = true;
	evbuffer_remove_buffer(in, fresh, len);
	evbuffer_remove_buffer(fresh, in, old);
	c->passing = false;
	while (!c->discard && evbuffer_get_length(fresh)) {
		if (c->body_left || !c->validate) {
			size_t k = evbuffer_get_length(fresh);
			if (c->validate && c->body_left < k)
				k = (size_t)c->body_left;
			pass_on(c, in, fresh, k);
			if (c->validate)
				c->body_left -= k;
			continue;
		}
		evbuffer_remove_buffer(fresh, c->hold,
				       evbuffer_get_length(fresh));
		size_t end = head_end(c);
		if (!end) {
			if (evbuffer_get_length(c->hold) > MAX_HEADERS)
				reject(c, in, 431,
				       "Request Header Fields Too Large");
			break;
		}
		if (end > MAX_HEADERS) {
			reject(c, in, 431, "Request Header Fields Too Large");
			break;
		}
		unsigned long long body = 0;
		bool chunked = false;
		const char *why = NULL;
		const char *h = (const char *)evbuffer_pullup(c->hold,
							     (ev_ssize_t)end);
		int code = check_head(h, end, &body, &chunked, &why);
		if (code) {
			reject(c, in, code, why);
			break;
		}
		if (!body && !chunked && fast_status(c, in, h, end)) {
			evbuffer_drain(c->hold, end);
			c->scanned = 0;
			continue;
		}
		pass_on(c, in, c->hold, end);
		c->scanned = 0;
		c->body_left = body;
		if (chunked)
			c->validate = false;
		/* evhttp takes a body only once all of it is in its input */
		bufferevent_setwatermark(c->bev, EV_READ, 0,
					 MAX_UNREAD +
						 (chunked ? MAX_BODY : body));
		/* what follows the head: its body, maybe more requests */
		evbuffer_remove_buffer(c->hold, fresh,
				       evbuffer_get_length(c->hold));
	}
	evbuffer_free(fresh);
}

/* --------------------------------------------------------- connections */

/* Connections are counted from accept to close so that clients can never
 * take the file descriptors the supervisor needs for its workers: at the
 * cap a new connection replaces the longest idle one, a
 * connection that has not delivered a request within REQUEST_DEADLINE_S
 * is closed, and accept errors pause accepting instead of spinning. evhttp
 * 2.1 has no hooks for this, so: its bufferevent callback tells us a
 * connection was accepted, and once evhttp has wired it up (the same loop
 * pass), the bufferevent's callback argument is its evhttp_connection, on
 * which we set the close callback. */

static int conn_cap(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return MAX_CONNS_CEIL;
	/* half of the descriptors stay with the supervisor */
	long n = (long)rl.rlim_cur / 2 - 16;
	return (int)(n < 4 ? 4 : n > MAX_CONNS_CEIL ? MAX_CONNS_CEIL : n);
}

static void accept_update(struct hp_server *s)
{
	if (!s->bound)
		return;
	bool off = s->accept_backoff || s->accept_batch_full;
	if (off == s->accept_off)
		return;
	struct evconnlistener *l = evhttp_bound_socket_get_listener(s->bound);
	s->accept_off = off;
	if (off)
		evconnlistener_disable(l);
	else
		evconnlistener_enable(l);
}

static struct bufferevent *on_new_bev(struct event_base *base, void *arg)
{
	struct hp_server *s = arg;
	struct bufferevent *bev =
		bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!bev)
		return NULL; /* evhttp tries its own; it goes untracked */
	if (s->n_fresh == s->cap_fresh) {
		s->cap_fresh = s->cap_fresh ? 2 * s->cap_fresh : 16;
		s->fresh = xrealloc(s->fresh,
				    (size_t)s->cap_fresh * sizeof(*s->fresh));
	}
	s->fresh[s->n_fresh++] = bev;
	event_active(s->adopt_ev, EV_READ, 0);
	/* libevent's listener accepts until EAGAIN in one go; stop it at the
	 * cap (it checks after each callback) so a burst cannot take every
	 * descriptor before on_adopt makes room. */
	if (s->n_conns + s->n_fresh >= s->max_conns) {
		s->accept_batch_full = true;
		accept_update(s);
	}
	return bev;
}

static void on_conn_gone(struct evhttp_connection *evcon, void *arg)
{
	struct hp_srv_conn *c = arg;
	struct hp_server *s = c->s;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->n_conns--;
	if (c->reply_in_flight)
		s->unflushed--; /* the client left before the reply was out */
	if (c->in_cb)
		evbuffer_remove_cb_entry(bufferevent_get_input(c->bev),
					 c->in_cb);
	if (c->hold)
		evbuffer_free(c->hold);
	free(c);
	maybe_finish(s);
}

/* The connection that waited longest without a request in progress. */
static struct hp_srv_conn *oldest_idle(struct hp_server *s)
{
	struct hp_srv_conn *best = NULL;
	for (struct hp_srv_conn *c = s->conns; c; c = c->next)
		if (!c->busy && !c->reply_in_flight &&
		    (!best || c->since < best->since))
			best = c;
	return best;
}

static void on_adopt(evutil_socket_t fd, short what, void *arg)
{
	struct hp_server *s = arg;
	double now = mono_now();
	for (int i = 0; i < s->n_fresh; i++) {
		void *cbarg = NULL;
		bufferevent_getcb(s->fresh[i], NULL, NULL, NULL, &cbarg);
		struct evhttp_connection *evcon = cbarg;
		if (!evcon)
			continue;
		if (s->n_conns >= s->max_conns) {
			/* At the cap the newcomer takes the place of the
			 * connection idle the longest, so a flood of idle or
			 * trickling clients cannot lock the operator out. */
			struct hp_srv_conn *victim = oldest_idle(s);
			s->closed_limit++;
			if (now - s->limit_logged >= 10) {
				hp_warn("server", "%d HTTP connections open, the "
					"most allowed (RLIMIT_NOFILE/2): closing "
					"the longest idle ones",
					s->n_conns);
				s->limit_logged = now;
			}
			if (!victim) {
				evhttp_connection_free(evcon);
				continue;
			}
			evhttp_connection_free(victim->evcon);
		}
		struct hp_srv_conn *c = xcalloc(1, sizeof(*c));
		c->s = s;
		c->evcon = evcon;
		c->since = now;
		c->next = s->conns;
		if (s->conns)
			s->conns->prev = c;
		s->conns = c;
		s->n_conns++;
		evhttp_connection_set_closecb(evcon, on_conn_gone, c);
		struct evbuffer *in = bufferevent_get_input(s->fresh[i]);
		c->bev = s->fresh[i];
		c->hold = evbuffer_new();
		if (!c->hold)
			hp_bug("evbuffer_new failed");
		/* bytes read before we got here: evhttp's alone */
		c->validate = evbuffer_get_length(in) == 0;
		c->in_cb = evbuffer_add_cb(in, on_input, c);
		/* a client that pipelines requests and never reads the
		 * replies: stop reading it once this much waits for evhttp
		 * (each request waits for the reply before it to be written),
		 * instead of keeping all it sends */
		bufferevent_setwatermark(c->bev, EV_READ, 0, MAX_UNREAD);
	}
	s->n_fresh = 0;
	s->accept_batch_full = false;
	accept_update(s);
}

struct hp_srv_conn *hp_srv_conn_of(struct hp_server *s,
				   struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	return evcon ? conn_of_evcon(s, evcon) : NULL;
}

/* evhttp's request callback: the connection is busy from here until its
 * reply is written (a request waiting for the agent is never swept). */
static void on_request(struct evhttp_request *req, void *arg)
{
	struct hp_server *s = arg;
	struct hp_srv_conn *c = hp_srv_conn_of(s, req);
	if (c)
		c->busy = true;
	if (c && c->reject_code) {
		char *peer = NULL;
		ev_uint16_t port = 0;
		evhttp_connection_get_peer(c->evcon, &peer, &port);
		hp_warn("server", "refused a request from %s:%u: %s (%d)",
			peer ? peer : "-", (unsigned)port, c->reject_why,
			c->reject_code);
		evhttp_add_header(evhttp_request_get_output_headers(req),
				  "Connection", "close");
		hp_srv_reply_detail(s, req, c->reject_code, c->reject_why);
		return;
	}
	hp_srv_route(req, s);
}

/* Once a second: close what has not delivered a request in time. */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct hp_server *s = arg;
	double now = mono_now();
	for (struct hp_srv_conn *c = s->conns, *nx; c; c = nx) {
		nx = c->next;
		if (c->busy || c->reply_in_flight ||
		    now - c->since < REQUEST_DEADLINE_S)
			continue;
		s->closed_deadline++;
		evhttp_connection_free(c->evcon); /* on_conn_gone frees c */
	}
}

static void on_resume_accept(evutil_socket_t fd, short what, void *arg)
{
	struct hp_server *s = arg;
	s->accept_backoff = false;
	accept_update(s);
}

/* accept(2) failed for another reason than a retriable one (EMFILE,
 * ENFILE, ENOBUFS): libevent would retry at once, for ever, logging each
 * time. Pause accepting instead, and say so at most every 10 s. */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
	int e = EVUTIL_SOCKET_ERROR();
	struct hp_server *s = thread_server;
	if (!s)
		return;
	s->accept_errs++;
	double now = mono_now();
	if (s->accept_err_logged == 0 || now - s->accept_err_logged >= 10) {
		hp_warn("server", "cannot accept HTTP connections: %s (%llu "
			"time(s)); pausing accepts for %d ms",
			strerror(e), s->accept_errs, ACCEPT_BACKOFF_MS);
		s->accept_err_logged = now;
		s->accept_errs = 0;
	}
	s->accept_backoff = true;
	accept_update(s);
	struct timeval tv = {0, ACCEPT_BACKOFF_MS * 1000};
	evtimer_add(s->resume_ev, &tv);
}

/* libevent's own warnings: through our log (which never blocks), at most
 * a few a second. */
static void on_libevent_log(int severity, const char *msg)
{
	static _Atomic long window;
	static _Atomic int in_window;
	if (severity < EVENT_LOG_WARN)
		return;
	long now = (long)mono_now();
	if (atomic_exchange(&window, now) != now)
		atomic_store(&in_window, 0);
	if (atomic_fetch_add(&in_window, 1) < 5)
		hp_warn("libevent", "%s", msg);
}

/* ---------------------------------------------------------------- bind */

static int listen_once(const char *host, int port, int *fd_out,
		       const char **why)
{
	struct addrinfo hints = {0}, *res = NULL;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	char service[16];
	snprintf(service, sizeof(service), "%d", port);
	int g = getaddrinfo(host, service, &hints, &res);
	if (g) {
		*why = gai_strerror(g);
		return -EINVAL;
	}
	int err = -EADDRNOTAVAIL;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family,
				ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
				ai->ai_protocol);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, SOMAXCONN) == 0) {
			freeaddrinfo(res);
			*fd_out = fd;
			return 0;
		}
		err = -errno;
		close(fd);
	}
	freeaddrinfo(res);
	*why = strerror(-err);
	return err;
}

static int listen_retrying(const char *host, int port, int tries,
			   double delay, int *fd_out)
{
	const char *why = "";
	int err = 0;
	for (int i = 0; i < tries; i++) {
		if (i > 0) {
			hp_warn("server", "cannot listen on %s:%d: %s; retrying "
				"in %gs (%d/%d)", host, port, why, delay, i + 1,
				tries);
			struct timespec ts = {(time_t)delay,
					      (long)((delay - (double)(time_t)delay) *
						     1e9)};
			while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
				;
		}
		err = listen_once(host, port, fd_out, &why);
		if (err == 0)
			return 0;
	}
	hp_error("server", "cannot listen on %s:%d: %s (after %d %s)", host,
		 port, why, tries, tries == 1 ? "try" : "tries");
	return err;
}

static int bound_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return -1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return -1;
}

/* ------------------------------------------------------------ lifetime */

static pthread_once_t threads_once = PTHREAD_ONCE_INIT;

static void use_pthreads(void)
{
	if (evthread_use_pthreads() < 0)
		hp_bug("evthread_use_pthreads failed");
	event_set_log_callback(on_libevent_log);
}

static void free_resources(struct hp_server *s)
{
	while (s->all) {
		struct hp_pending *p = s->all;
		unlink_pending(s, p);
		free_pending(p);
	}
	if (s->http)
		evhttp_free(s->http);
	if (s->done_ev)
		event_free(s->done_ev);
	if (s->stop_ev)
		event_free(s->stop_ev);
	if (s->drain_ev)
		event_free(s->drain_ev);
	if (s->adopt_ev)
		event_free(s->adopt_ev);
	if (s->sweep_ev)
		event_free(s->sweep_ev);
	if (s->resume_ev)
		event_free(s->resume_ev);
	free(s->fresh);
	/* connections evhttp_free did not report closed */
	while (s->conns) {
		struct hp_srv_conn *c = s->conns;
		s->conns = c->next;
		if (c->hold)
			evbuffer_free(c->hold);
		free(c);
	}
	if (s->base)
		event_base_free(s->base);
	hp_srv_fabric_peers_free(s);
	pthread_mutex_destroy(&s->mu);
	free(s->status);
	free(s->fast);
	free(s->metrics);
	free(s->fabric);
	free(s->host);
	free(s);
}

struct hp_server *hp_server_new(const struct hp_server_options *o)
{
	pthread_once(&threads_once, use_pthreads);

	struct hp_server *s = xcalloc(1, sizeof(*s));
	pthread_mutex_init(&s->mu, NULL);
	s->host = xstrdup(o->host ? o->host : "0.0.0.0");
	s->cmd_timeout = o->cmd_timeout > 0 ? o->cmd_timeout : 5;
	s->wake_cb = o->wake_cb;
	s->metrics_cb = o->metrics_cb;
	s->ud = o->ud;
	s->access_level = HP_LOG_INFO;
	if (o->log_level &&
	    hp_log_parse_level(o->log_level, &s->access_level) < 0) {
		hp_warn("server", "unknown server log level '%s', using info",
			o->log_level);
		s->access_level = HP_LOG_INFO;
	}

	int fd = -1;
	int tries = o->max_retry > 0 ? o->max_retry : 1;
	double delay = o->retry_delay > 0 ? o->retry_delay : 0;
	if (listen_retrying(s->host, o->port, tries, delay, &fd) < 0)
		goto fail;
	s->port = bound_port(fd);

	/* epoll's changelist: evhttp turns a connection's read and write
	 * events off and on again within one request (4 epoll_ctl per GET
	 * /status); batched per loop pass, the pairs that cancel cost none.
	 * Its caveat (dup'd descriptors) does not apply: nothing here dups a
	 * socket. */
	struct event_config *ecfg = event_config_new();
	if (!ecfg)
		hp_bug("event_config_new failed");
	event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	s->base = event_base_new_with_config(ecfg);
	event_config_free(ecfg);
	if (!s->base)
		hp_bug("event_base_new failed");
	s->http = evhttp_new(s->base);
	if (!s->http)
		hp_bug("evhttp_new failed");
	evhttp_set_timeout(s->http,
			   o->keepalive_timeout > 0 ? o->keepalive_timeout : 5);
	evhttp_set_max_body_size(s->http, MAX_BODY);
	evhttp_set_max_headers_size(s->http, MAX_HEADERS);
	evhttp_set_allowed_methods(
		s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
				 EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
				 EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
				 EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_default_content_type(s->http, NULL);
	evhttp_set_gencb(s->http, on_request, s);
	evhttp_set_bevcb(s->http, on_new_bev, s);
	s->max_conns = conn_cap();
	s->bound = evhttp_accept_socket_with_handle(s->http, fd);
	if (!s->bound) {
		hp_error("server", "cannot accept on %s:%d", s->host, s->port);
		close(fd);
		goto fail;
	}
	evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(s->bound),
				    on_accept_error);
	s->done_ev = event_new(s->base, -1, 0, on_done, s);
	s->stop_ev = event_new(s->base, -1, 0, on_stop, s);
	s->drain_ev = evtimer_new(s->base, on_drain_deadline, s);
	s->adopt_ev = event_new(s->base, -1, 0, on_adopt, s);
	s->sweep_ev = event_new(s->base, -1, EV_PERSIST, on_sweep, s);
	s->resume_ev = evtimer_new(s->base, on_resume_accept, s);
	if (!s->done_ev || !s->stop_ev || !s->drain_ev || !s->adopt_ev ||
	    !s->sweep_ev || !s->resume_ev)
		hp_bug("event_new failed");
	struct timeval sweep = {1, 0};
	evtimer_add(s->sweep_ev, &sweep);

	/* The thread blocks every signal: the agent's loop owns them, and a
	 * write to a closed socket gives EPIPE here instead of SIGPIPE. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int e = pthread_create(&s->thread, NULL, server_main, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e) {
		hp_error("server", "cannot start the server thread: %s",
			 strerror(e));
		goto fail;
	}
	hp_info("server", "listening on %s:%d", s->host, s->port);
	return s;
fail:
	free_resources(s);
	return NULL;
}

void hp_server_free(struct hp_server *s, double drain_timeout)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	s->drain_timeout = drain_timeout;
	pthread_mutex_unlock(&s->mu);
	event_active(s->stop_ev, EV_READ, 0);
	pthread_join(s->thread, NULL);
	free_resources(s);
}
