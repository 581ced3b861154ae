/* server.c — the HTTP server's life: binding (with the operator's retry
 * knobs), the event_base thread, the command queue shared with the agent,
 * deferred replies and the graceful drain. It never touches agent state:
 * the agent takes commands with hp_server_pop and reports back with
 * hp_server_cmd_done, which only flags the command and pokes the server
 * thread (event_active), so no evhttp call ever runs off that thread and a
 * command waiting for the agent never blocks other connections. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/xalloc.h"
#include "server-private.h"

#define MAX_BODY (1024 * 1024)
#define MAX_HEADERS (64 * 1024)
/* seconds replies get to reach clients after the drain deadline */
#define FLUSH_GRACE_S 1

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

static void access_log(struct hp_server *s, struct evhttp_request *req,
		       int code)
{
	enum hp_log_level lvl = code >= 500   ? HP_LOG_ERROR
				: code >= 400 ? HP_LOG_WARN
					      : HP_LOG_INFO;
	if (not_yet(req, code))
		lvl = HP_LOG_DEBUG;
	if (s->access_level > HP_LOG_INFO && lvl < s->access_level)
		return;
	if (lvl < hp_log_level)
		return;
	char *peer = NULL;
	ev_uint16_t port = 0;
	struct evhttp_connection *c = evhttp_request_get_connection(req);
	if (c)
		evhttp_connection_get_peer(c, &peer, &port);
	hp_log_write(lvl, "server", "%s:%u - \"%s %s\" %d",
		     peer ? peer : "-", (unsigned)port,
		     method_name(evhttp_request_get_command(req)),
		     evhttp_request_get_uri(req), code);
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
	case 422: return "Unprocessable Entity";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	}
	return code < 500 ? "Client Error" : "Server Error";
}

static void maybe_finish(struct hp_server *s);

static void on_reply_written(struct evhttp_request *req, void *arg)
{
	struct hp_server *s = arg;
	struct evhttp_connection *c = evhttp_request_get_connection(req);
	if (c)
		evhttp_connection_set_closecb(c, NULL, NULL);
	s->unflushed--;
	maybe_finish(s);
}

/* The connection died before the reply was written (the closecb is only
 * set while a reply is in flight; on_reply_written clears it). */
static void on_conn_closed(struct evhttp_connection *c, void *arg)
{
	struct hp_server *s = arg;
	evhttp_connection_set_closecb(c, NULL, NULL);
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
	 * otherwise track it until written so the drain can wait for it. */
	struct evhttp_connection *c = evhttp_request_get_connection(req);
	if (c) {
		s->unflushed++;
		evhttp_request_set_on_complete_cb(req, on_reply_written, s);
		evhttp_connection_set_closecb(c, on_conn_closed, s);
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
	event_base_loop(s->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
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
		    listen(fd, 128) == 0) {
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
	if (s->base)
		event_base_free(s->base);
	hp_srv_fabric_peers_free(s);
	pthread_mutex_destroy(&s->mu);
	free(s->status);
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

	s->base = event_base_new();
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
	evhttp_set_gencb(s->http, hp_srv_route, s);
	s->bound = evhttp_accept_socket_with_handle(s->http, fd);
	if (!s->bound) {
		hp_error("server", "cannot accept on %s:%d", s->host, s->port);
		close(fd);
		goto fail;
	}
	s->done_ev = event_new(s->base, -1, 0, on_done, s);
	s->stop_ev = event_new(s->base, -1, 0, on_stop, s);
	s->drain_ev = evtimer_new(s->base, on_drain_deadline, s);
	if (!s->done_ev || !s->stop_ev || !s->drain_ev)
		hp_bug("event_new failed");

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
