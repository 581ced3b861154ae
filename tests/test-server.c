/* test-server.c — server/ in-process on 127.0.0.1, port 0. A thread plays
 * the agent (pops commands, publishes snapshots, reports done); raw-socket
 * HTTP/1.1 clients check the replies. Nothing sleeps to synchronise: the
 * fake agent announces each command it takes on a condition variable. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/log.h"
#include "base/xalloc.h"
#include "server/server.h"

/* ------------------------------------------------------- the fake agent */

enum mode { AUTO, HOLD, NEVER };

struct agent {
	struct hp_server *srv;
	int wake[2];
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	enum mode mode;
	int result;          /* what AUTO answers */
	int taken;           /* commands popped so far */
	int wakes;           /* wake_cb calls */
	struct hp_cmd *held; /* HOLD: the last command popped */
	enum hp_cmd_kind last_kind;
	int last_rank;
	char last_restart_mode[32];
	bool quit;
};

static void wake_cb(void *ud)
{
	struct agent *a = ud;
	pthread_mutex_lock(&a->mu);
	a->wakes++;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
	char c = 1;
	ssize_t w = write(a->wake[1], &c, 1);
	(void)w;
}

static void *agent_main(void *arg)
{
	struct agent *a = arg;
	for (;;) {
		struct pollfd p = {.fd = a->wake[0], .events = POLLIN};
		poll(&p, 1, -1);
		char buf[64];
		ssize_t r = read(a->wake[0], buf, sizeof(buf));
		(void)r;
		pthread_mutex_lock(&a->mu);
		if (a->quit) {
			pthread_mutex_unlock(&a->mu);
			return NULL;
		}
		enum mode m = a->mode;
		pthread_mutex_unlock(&a->mu);
		if (m == NEVER)
			continue;
		struct hp_cmd *c;
		while ((c = hp_server_pop(a->srv))) {
			pthread_mutex_lock(&a->mu);
			a->taken++;
			a->last_kind = c->kind;
			if (c->kind == HP_CMD_START || c->kind == HP_CMD_UPDATE)
				a->last_rank = c->start.rank;
			if (c->kind == HP_CMD_STOP)
				snprintf(a->last_restart_mode,
					 sizeof(a->last_restart_mode), "%s",
					 c->stop.restart_mode);
			if (m == HOLD)
				a->held = c;
			int res = a->result;
			int n = a->taken;
			pthread_cond_broadcast(&a->cv);
			pthread_mutex_unlock(&a->mu);
			if (m == AUTO) {
				hp_server_publish(
					a->srv,
					xasprintf("{\"status\":\"running\","
						  "\"n\":%d}",
						  n));
				hp_server_cmd_done(a->srv, c, res);
			}
		}
	}
}

static void agent_wait_taken(struct agent *a, int n)
{
	pthread_mutex_lock(&a->mu);
	while (a->taken < n)
		pthread_cond_wait(&a->cv, &a->mu);
	pthread_mutex_unlock(&a->mu);
}

static struct agent *agent_start_ka(enum mode m, double cmd_timeout,
				    int keepalive)
{
	struct agent *a = xcalloc(1, sizeof(*a));
	assert_int_equal(pipe(a->wake), 0);
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv, NULL);
	a->mode = m;
	struct hp_server_options o = {
		.host = "127.0.0.1",
		.port = 0,
		.log_level = "info",
		.max_retry = 1,
		.retry_delay = 0.01,
		.cmd_timeout = cmd_timeout,
		.keepalive_timeout = keepalive,
		.wake_cb = wake_cb,
		.ud = a,
	};
	a->srv = hp_server_new(&o);
	assert_non_null(a->srv);
	assert_true(hp_server_port(a->srv) > 0);
	assert_int_equal(pthread_create(&a->thread, NULL, agent_main, a), 0);
	return a;
}

static struct agent *agent_start(enum mode m, double cmd_timeout)
{
	return agent_start_ka(m, cmd_timeout, 5);
}

static void agent_stop(struct agent *a, double drain)
{
	pthread_mutex_lock(&a->mu);
	a->quit = true;
	pthread_mutex_unlock(&a->mu);
	wake_cb(a);
	pthread_join(a->thread, NULL);
	hp_server_free(a->srv, drain);
	close(a->wake[0]);
	close(a->wake[1]);
	pthread_mutex_destroy(&a->mu);
	pthread_cond_destroy(&a->cv);
	free(a);
}

/* ------------------------------------------------------- the HTTP client */

struct resp {
	int code;
	char *headers; /* raw, lower-cased */
	char *body;
	size_t body_len;
};

static void resp_fini(struct resp *r)
{
	free(r->headers);
	free(r->body);
}

static int connect_to(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct timeval tv = {20, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* the server may close early (413) */
		p += w;
		n -= (size_t)w;
	}
}

/* Reads to EOF (Connection: close) and splits status, headers, body. */
static void read_resp(int fd, struct resp *r)
{
	size_t cap = 4096, len = 0;
	char *buf = xmalloc(cap);
	for (;;) {
		if (len + 1024 > cap)
			buf = xrealloc(buf, cap *= 2);
		ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	memset(r, 0, sizeof(*r));
	r->code = -1;
	char *sep = strstr(buf, "\r\n\r\n");
	if (sscanf(buf, "HTTP/1.%*d %d", &r->code) != 1 || !sep) {
		r->headers = xstrdup("");
		r->body = buf;
		r->body_len = len;
		return;
	}
	*sep = '\0';
	r->headers = xstrdup(buf);
	for (char *p = r->headers; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	r->body_len = len - (size_t)(sep + 4 - buf);
	r->body = xmalloc(r->body_len + 1);
	memcpy(r->body, sep + 4, r->body_len);
	r->body[r->body_len] = '\0';
	free(buf);
}

static void http(int port, const char *method, const char *path,
		 const char *body, struct resp *r)
{
	int fd = connect_to(port);
	size_t blen = body ? strlen(body) : 0;
	char *head = xasprintf("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
			       "Connection: close\r\nContent-Type: "
			       "application/json\r\nContent-Length: %zu\r\n\r\n",
			       method, path, blen);
	send_all(fd, head, strlen(head));
	if (blen)
		send_all(fd, body, blen);
	free(head);
	read_resp(fd, r);
	close(fd);
}

static void expect(int port, const char *method, const char *path,
		   const char *body, int code, const char *want_body)
{
	struct resp r;
	http(port, method, path, body, &r);
	if (r.code != code || (want_body && strcmp(r.body, want_body) != 0))
		fail_msg("%s %s: got %d '%s', want %d '%s'", method, path,
			 r.code, r.body, code, want_body ? want_body : "*");
	if (want_body && want_body[0] == '{')
		assert_non_null(
			strstr(r.headers, "content-type: application/json"));
	resp_fini(&r);
}

/* A request in flight on a client thread. */
struct call {
	pthread_t t;
	int port;
	const char *method, *path, *body;
	struct resp r;
};

static void *call_main(void *arg)
{
	struct call *c = arg;
	http(c->port, c->method, c->path, c->body, &c->r);
	return NULL;
}

static void call_start(struct call *c, int port, const char *method,
		       const char *path, const char *body)
{
	c->port = port;
	c->method = method;
	c->path = path;
	c->body = body;
	assert_int_equal(pthread_create(&c->t, NULL, call_main, c), 0);
}

static void call_join(struct call *c)
{
	pthread_join(c->t, NULL);
}

#define START_BODY                                                             \
	"{\"rank\":3,\"nnodes\":4,\"faultCount\":0,\"master_addr\":"           \
	"\"127.0.0.1\",\"master_port\":\"29500\"}"

/* ------------------------------------------------------------- tests */

static void test_routes(void **st)
{
	struct agent *a = agent_start(AUTO, 5);
	int port = hp_server_port(a->srv);
	expect(port, "GET", "/status", NULL, 200,
	       "{\"status\":\"init\",\"transitions\":{},\"spare\":\"False\"}");
	hp_server_publish(a->srv, xstrdup("{\"status\":\"ready\"}"));
	expect(port, "GET", "/status", NULL, 200, "{\"status\":\"ready\"}");
	expect(port, "GET", "/status?x=1", NULL, 200, "{\"status\":\"ready\"}");
	expect(port, "HEAD", "/status", NULL, 200, "");
	expect(port, "GET", "/nope", NULL, 404, "{\"detail\":\"Not Found\"}");
	expect(port, "POST", "/nope", "{}", 404, "{\"detail\":\"Not Found\"}");
	expect(port, "GET", "/start", NULL, 405,
	       "{\"detail\":\"Method Not Allowed\"}");
	expect(port, "POST", "/status", "{}", 405,
	       "{\"detail\":\"Method Not Allowed\"}");
	expect(port, "PATCH", "/stop", NULL, 405,
	       "{\"detail\":\"Method Not Allowed\"}");
	expect(port, "POST", "/start", "{\"rank\":1}", 422,
	       "{\"detail\":[{\"type\":\"missing\",\"loc\":[\"body\","
	       "\"nnodes\"],\"msg\":\"Field required\",\"input\":{\"rank\":1}},"
	       "{\"type\":\"missing\",\"loc\":[\"body\",\"faultCount\"],"
	       "\"msg\":\"Field required\",\"input\":{\"rank\":1}},"
	       "{\"type\":\"missing\",\"loc\":[\"body\",\"master_addr\"],"
	       "\"msg\":\"Field required\",\"input\":{\"rank\":1}},"
	       "{\"type\":\"missing\",\"loc\":[\"body\",\"master_port\"],"
	       "\"msg\":\"Field required\",\"input\":{\"rank\":1}}]}");
	expect(port, "POST", "/start", "{oops", 422, NULL);
	struct resp r;
	http(port, "POST", "/start", "[]", &r);
	assert_int_equal(strncmp(r.headers, "http/1.1 422 unprocessable entity",
				 33),
			 0);
	resp_fini(&r);
	assert_int_equal(a->taken, 0);

	expect(port, "POST", "/start", START_BODY, 200, "");
	assert_int_equal(a->taken, 1);
	assert_int_equal(a->last_kind, HP_CMD_START);
	assert_int_equal(a->last_rank, 3);
	/* /status after a 200 sees what the agent published for it. */
	expect(port, "GET", "/status", NULL, 200,
	       "{\"status\":\"running\",\"n\":1}");

	expect(port, "POST", "/stop", NULL, 200, "");
	assert_int_equal(a->last_kind, HP_CMD_STOP);
	assert_string_equal(a->last_restart_mode, "ipr");
	expect(port, "POST", "/stop", "{\"restart_mode\":\"plr\"}", 200, "");
	assert_string_equal(a->last_restart_mode, "plr");
	expect(port, "POST", "/stop", "{\"timeout\":\"x\"}", 422, NULL);

	expect(port, "POST", "/update", START_BODY, 200,
	       "{\"status\":\"running\",\"n\":4}");
	assert_int_equal(a->last_kind, HP_CMD_UPDATE);

	expect(port, "GET", "/metrics", NULL, 200, "");
	hp_server_publish_metrics(a->srv, xstrdup("hp_up 1\n"));
	http(port, "GET", "/metrics", NULL, &r);
	assert_int_equal(r.code, 200);
	/* the agent's text, then the server's own request counters (the
	 * first /metrics above counted already) */
	assert_int_equal(strncmp(r.body, "hp_up 1\n# HELP ", 15), 0);
	assert_non_null(strstr(r.body, "\nhyperpodrun_http_requests_total{"
				       "route=\"/metrics\",code=\"200\"} 1\n"));
	assert_non_null(strstr(r.headers, "content-type: text/plain; "
					  "version=0.0.4"));
	resp_fini(&r);

	expect(port, "GET", "/fabric", NULL, 404, "{\"detail\":\"Not Found\"}");
	hp_server_publish_fabric(a->srv, xstrdup("{\"addr\":\"x\"}"));
	expect(port, "GET", "/fabric", NULL, 200, "{\"addr\":\"x\"}");

	expect(port, "POST", "/shutdown", NULL, 200, "");
	assert_int_equal(a->last_kind, HP_CMD_SHUTDOWN);
	agent_stop(a, 5);
}

static void test_too_large(void **st)
{
	struct agent *a = agent_start(AUTO, 5);
	size_t n = 1024 * 1024 + 10;
	char *big = xmalloc(n + 1);
	memset(big, ' ', n);
	big[0] = '{';
	big[n - 1] = '}';
	big[n] = '\0';
	struct resp r;
	http(hp_server_port(a->srv), "POST", "/start", big, &r);
	assert_int_equal(r.code, 413);
	resp_fini(&r);
	free(big);
	assert_int_equal(a->taken, 0);
	agent_stop(a, 5);
}

static void test_status_while_waiting(void **st)
{
	struct agent *a = agent_start(HOLD, 30);
	int port = hp_server_port(a->srv);
	struct call c;
	call_start(&c, port, "POST", "/update", START_BODY);
	agent_wait_taken(a, 1);
	/* The command is with the agent; the server keeps answering. */
	hp_server_publish(a->srv, xstrdup("{\"status\":\"ready\"}"));
	expect(port, "GET", "/status", NULL, 200, "{\"status\":\"ready\"}");
	expect(port, "GET", "/nope", NULL, 404, "{\"detail\":\"Not Found\"}");
	pthread_mutex_lock(&a->mu);
	struct hp_cmd *held = a->held;
	pthread_mutex_unlock(&a->mu);
	hp_server_publish(a->srv, xstrdup("{\"status\":\"running\"}"));
	hp_server_cmd_done(a->srv, held, 0);
	call_join(&c);
	assert_int_equal(c.r.code, 200);
	assert_string_equal(c.r.body, "{\"status\":\"running\"}");
	resp_fini(&c.r);
	agent_stop(a, 5);
}

static void test_agent_error(void **st)
{
	struct agent *a = agent_start(AUTO, 5);
	a->result = 409;
	expect(hp_server_port(a->srv), "POST", "/start", START_BODY, 409,
	       "{\"detail\":\"Conflict\"}");
	a->result = -5;
	expect(hp_server_port(a->srv), "POST", "/shutdown", NULL, 500,
	       "{\"detail\":\"Internal Server Error\"}");
	agent_stop(a, 5);
}

static void test_timeout(void **st)
{
	/* Never taken: 503, and the command is dropped from the queue. */
	struct agent *a = agent_start(NEVER, 0.2);
	int port = hp_server_port(a->srv);
	expect(port, "POST", "/start", START_BODY, 503,
	       "{\"detail\":\"agent did not answer in time\"}");
	assert_null(hp_server_pop(a->srv));
	agent_stop(a, 5);

	/* Taken but never answered in time: 503; a late done is harmless. */
	a = agent_start(HOLD, 0.2);
	port = hp_server_port(a->srv);
	expect(port, "POST", "/stop", "{}", 503,
	       "{\"detail\":\"agent did not answer in time\"}");
	agent_wait_taken(a, 1);
	pthread_mutex_lock(&a->mu);
	struct hp_cmd *held = a->held;
	pthread_mutex_unlock(&a->mu);
	hp_server_cmd_done(a->srv, held, 0);
	expect(port, "GET", "/status", NULL, 200, NULL);
	agent_stop(a, 5);
}

static void test_free_answers_queued(void **st)
{
	struct agent *a = agent_start(NEVER, 30);
	struct call c;
	call_start(&c, hp_server_port(a->srv), "POST", "/start", START_BODY);
	/* Wait until the command is queued (wake_cb ran). */
	pthread_mutex_lock(&a->mu);
	while (a->wakes < 1)
		pthread_cond_wait(&a->cv, &a->mu);
	pthread_mutex_unlock(&a->mu);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	agent_stop(a, 20);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	call_join(&c);
	assert_int_equal(c.r.code, 503);
	resp_fini(&c.r);
	assert_true(t1.tv_sec - t0.tv_sec < 10);
}

static void test_drain_waits_for_agent(void **st)
{
	/* A command the agent holds is answered before free returns. */
	struct agent *a = agent_start(HOLD, 30);
	struct call c;
	call_start(&c, hp_server_port(a->srv), "POST", "/shutdown", NULL);
	agent_wait_taken(a, 1);
	hp_server_cmd_done(a->srv, a->held, 0);
	agent_stop(a, 20);
	call_join(&c);
	assert_int_equal(c.r.code, 200);
	resp_fini(&c.r);

	/* Held past the drain deadline: 503, and free returns. */
	a = agent_start(HOLD, 30);
	call_start(&c, hp_server_port(a->srv), "POST", "/shutdown", NULL);
	agent_wait_taken(a, 1);
	agent_stop(a, 0.1);
	call_join(&c);
	assert_int_equal(c.r.code, 503);
	resp_fini(&c.r);
}

static void test_port_in_use(void **st)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 1), 0);
	socklen_t len = sizeof(sa);
	getsockname(fd, (struct sockaddr *)&sa, &len);
	struct hp_server_options o = {
		.host = "127.0.0.1",
		.port = ntohs(sa.sin_port),
		.max_retry = 2,
		.retry_delay = 0.01,
		.cmd_timeout = 1,
		.keepalive_timeout = 1,
	};
	assert_null(hp_server_new(&o));
	o.max_retry = 1;
	assert_null(hp_server_new(&o));
	close(fd);
	/* Free again: the same port now binds. */
	struct hp_server *s = hp_server_new(&o);
	assert_non_null(s);
	assert_int_equal(hp_server_port(s), ntohs(sa.sin_port));
	hp_server_free(s, 1);
	hp_server_free(NULL, 1);
}

static void test_keepalive(void **st)
{
	/* Two requests on one connection, then the server closes it when
	 * idle past keepalive_timeout (1 s here). */
	struct hp_server_options o = {.host = "127.0.0.1",
				      .max_retry = 1,
				      .cmd_timeout = 1,
				      .keepalive_timeout = 1};
	struct hp_server *s = hp_server_new(&o);
	assert_non_null(s);
	int fd = connect_to(hp_server_port(s));
	const char *req = "GET /status HTTP/1.1\r\nHost: x\r\n\r\n";
	char buf[4096];
	for (int i = 0; i < 2; i++) {
		send_all(fd, req, strlen(req));
		ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
		assert_true(n > 0);
		buf[n] = '\0';
		assert_non_null(strstr(buf, "HTTP/1.1 200"));
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(recv(fd, buf, sizeof(buf), 0), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true(t1.tv_sec - t0.tv_sec < 5);
	close(fd);
	hp_server_free(s, 1);
}

static void test_wait_longer_than_keepalive(void **st)
{
	/* The idle timeout must not cut a request waiting for the agent. */
	struct agent *a = agent_start_ka(NEVER, 1.5, 1);
	expect(hp_server_port(a->srv), "POST", "/start", START_BODY, 503,
	       "{\"detail\":\"agent did not answer in time\"}");
	agent_stop(a, 1);
}

static void test_client_gone(void **st)
{
	/* The client hangs up while its command is with the agent; the
	 * late answer must not touch freed memory. */
	struct agent *a = agent_start(HOLD, 30);
	int fd = connect_to(hp_server_port(a->srv));
	char *req = xasprintf("POST /stop HTTP/1.1\r\nHost: x\r\n"
			      "Content-Length: 0\r\n\r\n");
	send_all(fd, req, strlen(req));
	free(req);
	agent_wait_taken(a, 1);
	close(fd);
	/* /status still works; then the agent finishes the command. */
	expect(hp_server_port(a->srv), "GET", "/status", NULL, 200, NULL);
	pthread_mutex_lock(&a->mu);
	struct hp_cmd *held = a->held;
	pthread_mutex_unlock(&a->mu);
	hp_server_cmd_done(a->srv, held, 0);
	expect(hp_server_port(a->srv), "GET", "/status", NULL, 200, NULL);
	agent_stop(a, 5);
}

/* The fabric peer table: joins answered by the server thread alone (the
 * fake agent never takes a command), GET /fabric/peers complete or 503. */
static void test_fabric_peers(void **st)
{
	struct agent *a = agent_start(NEVER, 5);
	int port = hp_server_port(a->srv);
	expect(port, "GET", "/fabric/peers", NULL, 503,
	       "{\"detail\":\"incomplete\"}");
	/* no size known yet: a join cannot set it, so a stranger's
	 * "size":1 does not fix the table for ever (issue 12 §8) */
	expect(port, "POST", "/fabric/join",
	       "{\"rank\":1,\"name\":\"ab\",\"http\":\"h:1\"}", 409, NULL);
	expect(port, "POST", "/fabric/join",
	       "{\"rank\":0,\"name\":\"ab\",\"http\":\"h:1\",\"size\":1}",
	       409, NULL);
	hp_server_fabric_expect(a->srv, 2);
	expect(port, "POST", "/fabric/join",
	       "{\"rank\":0,\"name\":\"ab\",\"http\":\"h:1\",\"size\":1}",
	       422, NULL);
	expect(port, "POST", "/fabric/join",
	       "{\"rank\":1,\"name\":\"abcd\",\"http\":\"127.0.0.1:81\","
	       "\"size\":2}",
	       200, "{}");
	expect(port, "GET", "/fabric/peers", NULL, 503,
	       "{\"detail\":\"incomplete\",\"missing\":[0]}");
	/* bad records: type errors, a non-hex name, an odd length, a bad
	 * address, ranks and sizes out of range */
	expect(port, "POST", "/fabric/join", "{\"rank\":0}", 422, NULL);
	expect(port, "POST", "/fabric/join", "[1]", 422, NULL);
	expect(port, "POST", "/fabric/join",
	       "{\"rank\":0,\"name\":7,\"http\":\"h:1\"}", 422, NULL);
	expect(port, "POST", "/fabric/join",
	       "{\"rank\":0,\"name\":\"xy\",\"http\":\"h:1\"}", 422, NULL);
	expect(port, "POST", "/fabric/join",
	       "{\"rank\":0,\"name\":\"abc\",\"http\":\"h:1\"}", 422, NULL);
	expect(port, "POST", "/fabric/join",
	       "{\"rank\":0,\"name\":\"ab\",\"http\":\"h\\\"x:1\"}", 422, NULL);
	expect(port, "POST", "/fabric/join",
	       "{\"rank\":0,\"name\":\"ab\",\"http\":\"nohostport\"}", 422,
	       NULL);
	expect(port, "POST", "/fabric/join",
	       "{\"rank\":2,\"name\":\"ab\",\"http\":\"h:1\"}", 422, NULL);
	expect(port, "POST", "/fabric/join",
	       "{\"rank\":-1,\"name\":\"ab\",\"http\":\"h:1\"}", 422, NULL);
	expect(port, "POST", "/fabric/join",
	       "{\"rank\":0,\"name\":\"ab\",\"http\":\"h:1\",\"size\":3}", 422,
	       NULL);
	expect(port, "GET", "/fabric/join", NULL, 405, NULL);
	expect(port, "POST", "/fabric/peers", NULL, 405, NULL);
	expect(port, "GET", "/fabric/peers", NULL, 503, NULL);
	/* the last rank completes it; a rejoin replaces a record */
	expect(port, "POST", "/fabric/join",
	       "{\"rank\":0,\"name\":\"00ff\",\"http\":\"127.0.0.1:80\"}", 200,
	       "{}");
	expect(port, "GET", "/fabric/peers", NULL, 200,
	       "{\"size\":2,\"peers\":[{\"rank\":0,\"name\":\"00ff\","
	       "\"http\":\"127.0.0.1:80\"},{\"rank\":1,\"name\":\"abcd\","
	       "\"http\":\"127.0.0.1:81\"}]}");
	expect(port, "POST", "/fabric/join",
	       "{\"rank\":1,\"name\":\"beef\",\"http\":\"[::1]:82\","
	       "\"size\":\"2\"}",
	       200, "{}");
	expect(port, "GET", "/fabric/peers", NULL, 200,
	       "{\"size\":2,\"peers\":[{\"rank\":0,\"name\":\"00ff\","
	       "\"http\":\"127.0.0.1:80\"},{\"rank\":1,\"name\":\"beef\","
	       "\"http\":\"[::1]:82\"}]}");
	pthread_mutex_lock(&a->mu);
	assert_int_equal(a->taken, 0);
	pthread_mutex_unlock(&a->mu);
	agent_stop(a, 5);

	/* the size from the agent's side */
	a = agent_start(NEVER, 5);
	port = hp_server_port(a->srv);
	hp_server_fabric_expect(a->srv, 1);
	expect(port, "POST", "/fabric/join",
	       "{\"rank\":0,\"name\":\"01\",\"http\":\"a:1\"}", 200, "{}");
	expect(port, "GET", "/fabric/peers", NULL, 200,
	       "{\"size\":1,\"peers\":[{\"rank\":0,\"name\":\"01\","
	       "\"http\":\"a:1\"}]}");
	agent_stop(a, 5);
}

/* issue 13 §1: GET /fabric/peers?epoch=E counts only records joined for
 * round E or later, so an agent that came back (and has not re-joined for
 * this round) is waited for, not handed out with its old name. */
static void test_fabric_peers_epoch(void **st)
{
	(void)st;
	struct agent *a = agent_start(NEVER, 5);
	int port = hp_server_port(a->srv);
	hp_server_fabric_expect(a->srv, 2);
	expect(port, "POST", "/fabric/join",
	       "{\"rank\":0,\"name\":\"00\",\"http\":\"a:1\",\"epoch\":3}",
	       200, "{}");
	expect(port, "POST", "/fabric/join",
	       "{\"rank\":1,\"name\":\"11\",\"http\":\"b:1\",\"epoch\":2}",
	       200, "{}");
	/* complete for epoch 2 (and without an epoch), not for 3 */
	expect(port, "GET", "/fabric/peers?epoch=2", NULL, 200,
	       "{\"size\":2,\"peers\":[{\"rank\":0,\"name\":\"00\","
	       "\"http\":\"a:1\"},{\"rank\":1,\"name\":\"11\","
	       "\"http\":\"b:1\"}]}");
	expect(port, "GET", "/fabric/peers", NULL, 200, NULL);
	expect(port, "GET", "/fabric/peers?epoch=3", NULL, 503,
	       "{\"detail\":\"incomplete\",\"missing\":[1]}");
	/* a bad epoch is ignored in the query, refused in a join */
	expect(port, "GET", "/fabric/peers?epoch=x", NULL, 200, NULL);
	expect(port, "POST", "/fabric/join",
	       "{\"rank\":1,\"name\":\"22\",\"http\":\"b:2\",\"epoch\":-1}",
	       422, NULL);
	expect(port, "POST", "/fabric/join",
	       "{\"rank\":1,\"name\":\"22\",\"http\":\"b:2\",\"epoch\":\"q\"}",
	       422, NULL);
	/* rank 1 came back with a new name for round 3 */
	expect(port, "POST", "/fabric/join",
	       "{\"rank\":1,\"name\":\"22\",\"http\":\"b:2\",\"epoch\":3}",
	       200, "{}");
	expect(port, "GET", "/fabric/peers?epoch=3", NULL, 200,
	       "{\"size\":2,\"peers\":[{\"rank\":0,\"name\":\"00\","
	       "\"http\":\"a:1\"},{\"rank\":1,\"name\":\"22\","
	       "\"http\":\"b:2\"}]}");
	agent_stop(a, 5);
}

/* With a metrics_cb the agent's text is rendered per GET /metrics, on the
 * server thread, and only once a status was published (the body stays
 * empty before, as with hp_server_publish_metrics). */
static int metrics_calls;

static char *count_metrics(void *ud)
{
	(void)ud;
	return xasprintf("hp_renders %d\n", ++metrics_calls);
}

static void test_metrics_cb(void **state)
{
	(void)state;
	struct hp_server_options o = {
		.host = "127.0.0.1",
		.max_retry = 1,
		.metrics_cb = count_metrics,
	};
	struct hp_server *s = hp_server_new(&o);
	assert_non_null(s);
	int port = hp_server_port(s);
	expect(port, "GET", "/metrics", NULL, 200, "");
	assert_int_equal(metrics_calls, 0);
	hp_server_publish(s, xstrdup("{\"status\":\"running\"}"));
	for (int i = 1; i <= 2; i++) {
		struct resp r;
		http(port, "GET", "/metrics", NULL, &r);
		assert_int_equal(r.code, 200);
		char want[32];
		snprintf(want, sizeof(want), "hp_renders %d\n# HELP ", i);
		assert_int_equal(strncmp(r.body, want, strlen(want)), 0);
		resp_fini(&r);
	}
	assert_int_equal(metrics_calls, 2);
	hp_server_free(s, 1);
}

int main(void)
{
	const char *v = getenv("HP_TEST_VERBOSE");
	hp_log_level = v && *v ? HP_LOG_DEBUG : HP_LOG_ERROR;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_too_large),
		cmocka_unit_test(test_status_while_waiting),
		cmocka_unit_test(test_agent_error),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_free_answers_queued),
		cmocka_unit_test(test_drain_waits_for_agent),
		cmocka_unit_test(test_port_in_use),
		cmocka_unit_test(test_keepalive),
		cmocka_unit_test(test_wait_longer_than_keepalive),
		cmocka_unit_test(test_client_gone),
		cmocka_unit_test(test_fabric_peers),
		cmocka_unit_test(test_fabric_peers_epoch),
		cmocka_unit_test(test_metrics_cb),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
