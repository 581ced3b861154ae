/* test-client.c — libhyperpod's client against a tiny agent-side peer
 * written here: an AF_UNIX listener that speaks PROTOCOL.md's framing and
 * checks every byte the client sends (the reference's json.dumps output).
 * The peer runs on the test's main thread; only hp_client_wait_barrier,
 * which blocks, runs on a helper thread. Nothing sleeps to synchronise:
 * each step waits on a frame, an fd or a join. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "hyperpod.h"

struct fixture {
	char dir[128];
	char path[160];
	int listener;
	int peer; /* the accepted connection: the agent's end */
	struct hp_client *c;
};

static void peer_listen(struct fixture *f)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(f->dir, sizeof(f->dir), "%s/hpclient-XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/agent.sock", f->dir);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	assert_true(strlen(f->path) < sizeof(sa.sun_path));
	strcpy(sa.sun_path, f->path);
	f->listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->listener >= 0);
	assert_int_equal(bind(f->listener, (struct sockaddr *)&sa, sizeof(sa)),
			 0);
	assert_int_equal(listen(f->listener, 8), 0);
}

static void read_exact(int fd, void *buf, size_t len)
{
	char *p = buf;
	while (len > 0) {
		ssize_t n = read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		assert_true(n > 0);
		p += n;
		len -= (size_t)n;
	}
}

static void write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		assert_true(n > 0);
		p += n;
		len -= (size_t)n;
	}
}

/* Reads one frame and returns its body (caller frees), checking the
 * header is the body's length in big-endian byte order. */
static char *read_frame(int fd)
{
	unsigned char h[4];
	read_exact(fd, h, 4);
	uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 |
		       (uint32_t)h[2] << 8 | h[3];
	assert_true(len < (1u << 20));
	char *body = malloc(len + 1);
	assert_non_null(body);
	read_exact(fd, body, len);
	body[len] = '\0';
	assert_int_equal(strlen(body), len);
	return body;
}

static void expect_frame(int fd, const char *want)
{
	char *got = read_frame(fd);
	assert_string_equal(got, want);
	free(got);
}

static size_t frame(unsigned char *out, const char *json)
{
	size_t len = strlen(json);
	out[0] = (unsigned char)(len >> 24);
	out[1] = (unsigned char)(len >> 16);
	out[2] = (unsigned char)(len >> 8);
	out[3] = (unsigned char)len;
	memcpy(out + 4, json, len);
	return len + 4;
}

static void send_frame(int fd, const char *json)
{
	unsigned char buf[4096];
	assert_true(strlen(json) + 4 <= sizeof(buf));
	write_all(fd, buf, frame(buf, json));
}

#define INIT_3 "{\"local_rank\": 3, \"client_id\": \"cid-1\", \"type\": \"init\"}"
#define TAIL_3 "\"local_rank\": 3, \"client_id\": \"cid-1\"}"

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	peer_listen(f);
	assert_int_equal(hp_client_connect(f->path, 3, "cid-1", &f->c), 0);
	f->peer = accept4(f->listener, NULL, NULL, SOCK_CLOEXEC);
	assert_true(f->peer >= 0);
	expect_frame(f->peer, INIT_3);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	hp_client_free(f->c);
	if (f->peer >= 0)
		close(f->peer);
	close(f->listener);
	unlink(f->path);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* The very first bytes on the wire: header then the init body. */
static void test_init_bytes(void **state)
{
	struct fixture f = {0};
	struct hp_client *c;
	peer_listen(&f);
	assert_int_equal(hp_client_connect(f.path, 3, "cid-1", &c), 0);
	int fd = accept4(f.listener, NULL, NULL, SOCK_CLOEXEC);
	assert_true(fd >= 0);
	unsigned char raw[4 + sizeof(INIT_3) - 1];
	size_t n = sizeof(INIT_3) - 1;
	unsigned char want[4] = {0, 0, (unsigned char)(n >> 8),
				 (unsigned char)n};
	read_exact(fd, raw, 4);
	assert_memory_equal(raw, want, 4);
	read_exact(fd, raw + 4, n);
	assert_memory_equal(raw + 4, INIT_3, n);
	assert_string_equal(hp_client_id(c), "cid-1");
	assert_int_equal(hp_client_local_rank(c), 3);
	hp_client_free(c);
	close(fd);
	close(f.listener);
	unlink(f.path);
	rmdir(f.dir);
}

/* NULL path/-1 rank/NULL id come from the environment and a UUID4. */
static void test_env_defaults(void **state)
{
	struct fixture f = {0};
	struct hp_client *c;
	peer_listen(&f);

	unsetenv(HP_CLIENT_SOCKET_ENV);
	assert_int_equal(hp_client_connect(NULL, -1, NULL, &c), -EINVAL);
	assert_null(c);
	setenv(HP_CLIENT_SOCKET_ENV, f.path, 1);
	setenv("LOCAL_RANK", "x1", 1);
	assert_int_equal(hp_client_connect(NULL, -1, NULL, &c), -EINVAL);
	setenv("LOCAL_RANK", "5", 1);
	assert_int_equal(hp_client_connect(NULL, -1, NULL, &c), 0);
	unsetenv("LOCAL_RANK");
	unsetenv(HP_CLIENT_SOCKET_ENV);

	int fd = accept4(f.listener, NULL, NULL, SOCK_CLOEXEC);
	char *body = read_frame(fd);
	const char *pre = "{\"local_rank\": 5, \"client_id\": \"";
	assert_memory_equal(body, pre, strlen(pre));
	const char *id = body + strlen(pre);
	assert_int_equal(strlen(id), 36 + strlen("\", \"type\": \"init\"}"));
	assert_string_equal(id + 36, "\", \"type\": \"init\"}");
	assert_memory_equal(id, hp_client_id(c), 36);
	for (int i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23)
			assert_int_equal(id[i], '-');
		else
			assert_non_null(strchr("0123456789abcdef", id[i]));
	}
	assert_int_equal(id[14], '4');
	assert_non_null(strchr("89ab", id[19]));
	free(body);
	hp_client_free(c);
	close(fd);

	assert_int_equal(hp_client_connect("/nonexistent/dir/agent.sock", 0,
					   NULL, &c),
			 -ENOENT);
	close(f.listener);
	unlink(f.path);
	rmdir(f.dir);
}

static void test_fault_data_labels_bytes(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(
		hp_client_report_fault(f->c, 7, "OOM",
				       "line1\n\"q\" \\ \t\x01\x7f "
				       "\xc3\xa9 \xf0\x9f\x98\x80 </a>",
				       NULL),
		0);
	expect_frame(f->peer,
		     "{\"rank\": 7, \"restart_mode\": \"in_process_restart\", "
		     "\"reason\": \"OOM\", \"message\": \"line1\\n\\\"q\\\" "
		     "\\\\ \\t\\u0001\\u007f \\u00e9 \\ud83d\\ude00 </a>\", "
		     "\"type\": \"job_fault\", " TAIL_3);

	assert_int_equal(hp_client_report_fault(f->c, 0, NULL, NULL,
						"process_level_restart"),
			 0);
	expect_frame(f->peer,
		     "{\"rank\": 0, \"restart_mode\": \"process_level_restart\", "
		     "\"reason\": null, \"message\": null, "
		     "\"type\": \"job_fault\", " TAIL_3);

	/* Invalid UTF-8 is refused and nothing reaches the wire. */
	assert_int_equal(hp_client_report_fault(f->c, 0, "\xc3(", NULL, NULL),
			 -EINVAL);
	assert_int_equal(hp_client_send_data(f->c, 0, "\xed\xa0\x80"),
			 -EINVAL);

	assert_int_equal(hp_client_send_data(f->c, 12, "{\"step\": 3}"), 0);
	expect_frame(f->peer, "{\"rank\": 12, \"data\": \"{\\\"step\\\": 3}\", "
			      "\"type\": \"job_data\", " TAIL_3);

	const char *keys[] = {"PPRank", "k\xc3\xa9"};
	const char *vals[] = {"2", "v"};
	assert_int_equal(hp_client_send_labels(f->c, keys, vals, 2), 0);
	expect_frame(f->peer,
		     "{\"labels\": {\"PPRank\": \"2\", \"k\\u00e9\": \"v\"}, "
		     "\"type\": \"rank_labels\", " TAIL_3);
	assert_int_equal(hp_client_send_labels(f->c, NULL, NULL, 0), 0);
	expect_frame(f->peer, "{\"labels\": {}, \"type\": \"rank_labels\", "
			      TAIL_3);
}

static void test_send_oversized(void **state)
{
	struct fixture *f = *state;
	size_t n = HP_CLIENT_MAX_FRAME;
	char *big = malloc(n + 1);
	assert_non_null(big);
	memset(big, 'a', n);
	big[n] = '\0';
	assert_int_equal(hp_client_send_data(f->c, 0, big), -EMSGSIZE);
	free(big);
	assert_int_equal(hp_client_send_data(f->c, 1, "x"), 0);
	expect_frame(f->peer, "{\"rank\": 1, \"data\": \"x\", "
			      "\"type\": \"job_data\", " TAIL_3);
}

struct barrier_call {
	struct hp_client *c;
	int timeout_ms;
	int rc;
	struct hp_rank_env *env;
};

static void *barrier_thread(void *arg)
{
	struct barrier_call *b = arg;
	b->rc = hp_client_wait_barrier(b->c, b->timeout_ms, &b->env);
	return NULL;
}

#define AT_BARRIER "{\"type\": \"at_rcb_barrier\", " TAIL_3
#define PAST_BARRIER "{\"type\": \"past_rcb_barrier\", " TAIL_3
#define JOB_START                                                              \
	"{\"type\":\"job_start\",\"client_id\":\"cid-1\",\"worker_envs\":{"    \
	"\"RANK\":\"4\",\"WORLD_SIZE\":\"8\",\"JOB_RESTART_COUNT\":\"1\","     \
	"\"N\":5,\"Z\":null},\"aggregate_worker_data\":{\"rank_ips\":"         \
	"[{\"rank\":0,\"ip\":\"10.0.0.1\"}]}}"

/* job_start releases the barrier with the env; the frame arrives in
 * pieces, after junk the client must skip, and after a fault that the
 * release makes stale. */
static void test_barrier(void **state)
{
	struct fixture *f = *state;
	struct barrier_call b = {.c = f->c, .timeout_ms = -1};
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, barrier_thread, &b), 0);
	expect_frame(f->peer, AT_BARRIER);

	send_frame(f->peer, "{\"type\":\"job_start\",\"client_id\":\"other\","
			    "\"worker_envs\":{}}");
	send_frame(f->peer, "not json {");
	send_frame(f->peer, "[1,2]");
	send_frame(f->peer, "{\"client_id\":\"cid-1\"}");
	send_frame(f->peer, "{\"type\":\"job_fault\",\"client_id\":\"cid-1\","
			    "\"restart_count\":0}");

	unsigned char buf[1024];
	size_t len = frame(buf, JOB_START);
	write_all(f->peer, buf, 2);
	write_all(f->peer, buf + 2, 3);
	for (size_t i = 5; i < len; i += 7)
		write_all(f->peer, buf + i, len - i < 7 ? len - i : 7);
	expect_frame(f->peer, PAST_BARRIER);
	assert_int_equal(pthread_join(t, NULL), 0);

	assert_int_equal(b.rc, 0);
	assert_non_null(b.env);
	assert_string_equal(hp_rank_env_get(b.env, "RANK"), "4");
	assert_string_equal(hp_rank_env_get(b.env, "WORLD_SIZE"), "8");
	assert_string_equal(hp_rank_env_get(b.env, "JOB_RESTART_COUNT"), "1");
	assert_string_equal(hp_rank_env_get(b.env, "N"), "5");
	assert_string_equal(hp_rank_env_get(b.env, "Z"), "");
	assert_null(hp_rank_env_get(b.env, "MASTER_ADDR"));
	assert_int_equal(hp_rank_env_count(b.env), 5);
	assert_string_equal(hp_rank_env_key(b.env, 0), "RANK");
	assert_string_equal(hp_rank_env_value(b.env, 1), "8");
	assert_string_equal(hp_rank_env_aggregate_worker_data(b.env),
			    "{\"rank_ips\":[{\"rank\":0,\"ip\":\"10.0.0.1\"}]}");
	hp_rank_env_free(b.env);

	/* The stale fault was dropped and the fd is quiet. */
	struct hp_client_event ev;
	assert_int_equal(hp_client_poll(f->c, &ev), 0);
	struct pollfd pfd = {.fd = hp_client_fd(f->c), .events = POLLIN};
	assert_int_equal(poll(&pfd, 1, 0), 0);
}

/* A job_start from before the call is stale; a timeout is reported and the
 * next wait still works. */
static void test_barrier_timeout_and_stale_start(void **state)
{
	struct fixture *f = *state;
	struct hp_client_event ev;
	struct pollfd pfd = {.fd = hp_client_fd(f->c), .events = POLLIN};

	send_frame(f->peer, JOB_START);
	assert_int_equal(poll(&pfd, 1, -1), 1);
	assert_int_equal(hp_client_poll(f->c, &ev), 1);
	assert_int_equal(ev.kind, HP_CLIENT_EVENT_START);
	assert_string_equal(hp_rank_env_get(ev.env, "RANK"), "4");
	hp_client_event_fini(&ev);

	struct hp_rank_env *env = (void *)1;
	assert_int_equal(hp_client_wait_barrier(f->c, 20, &env), -ETIMEDOUT);
	assert_null(env);
	expect_frame(f->peer, AT_BARRIER);

	struct barrier_call b = {.c = f->c, .timeout_ms = 60000};
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, barrier_thread, &b), 0);
	expect_frame(f->peer, AT_BARRIER);
	send_frame(f->peer, JOB_START);
	expect_frame(f->peer, PAST_BARRIER);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(b.rc, 0);
	hp_rank_env_free(b.env);
}

static int fault_pipe[2];

static void on_fault(struct hp_client *c, int restart_count, void *ud)
{
	assert_ptr_equal(ud, &fault_pipe);
	ssize_t n = write(fault_pipe[1], &restart_count, sizeof(int));
	assert_int_equal(n, sizeof(int));
}

/* Agent -> worker notifications: several frames in one write, the fd
 * level, poll order, and the callback on the reader thread. */
static void test_notifications(void **state)
{
	struct fixture *f = *state;
	struct hp_client_event ev;
	struct pollfd pfd = {.fd = hp_client_fd(f->c), .events = POLLIN};
	assert_int_equal(poll(&pfd, 1, 0), 0);
	assert_int_equal(hp_client_poll(f->c, &ev), 0);
	assert_int_equal(ev.kind, HP_CLIENT_EVENT_NONE);

	assert_int_equal(pipe(fault_pipe), 0);
	hp_client_on_fault(f->c, on_fault, &fault_pipe);

	unsigned char buf[2048];
	size_t len = 0;
	len += frame(buf + len, "{\"type\":\"job_rank_info\",\"client_id\":"
				"\"cid-1\",\"worker_envs\":{\"RANK\":\"9\"}}");
	len += frame(buf + len, "{\"type\":\"job_fault\",\"client_id\":"
				"\"cid-1\",\"restart_count\":2}");
	len += frame(buf + len, "{\"type\":\"job_failed_ranks\",\"client_id\":"
				"\"cid-1\",\"failed_ranks\":[3]}");
	len += frame(buf + len, "{\"type\":\"invalid_response\","
				"\"client_id\":\"cid-1\"}");
	write_all(f->peer, buf, len);

	int rcnt = -5;
	read_exact(fault_pipe[0], &rcnt, sizeof(rcnt));
	assert_int_equal(rcnt, 2);

	assert_int_equal(poll(&pfd, 1, -1), 1);
	assert_int_equal(hp_client_poll(f->c, &ev), 1);
	assert_int_equal(ev.kind, HP_CLIENT_EVENT_RANK_INFO);
	assert_string_equal(hp_rank_env_get(ev.env, "RANK"), "9");
	hp_client_event_fini(&ev);
	assert_int_equal(hp_client_poll(f->c, &ev), 1);
	assert_int_equal(ev.kind, HP_CLIENT_EVENT_FAULT);
	assert_int_equal(ev.restart_count, 2);
	assert_string_equal(ev.json, "{\"restart_count\":2}");
	hp_client_event_fini(&ev);

	/* The callback may run before the reader has handled the last two
	 * frames, so wait on the fd rather than assume they are queued. */
	assert_int_equal(poll(&pfd, 1, -1), 1);
	assert_int_equal(hp_client_poll(f->c, &ev), 1);
	assert_int_equal(ev.kind, HP_CLIENT_EVENT_FAILED_RANKS);
	assert_string_equal(ev.json, "{\"failed_ranks\":[3]}");
	hp_client_event_fini(&ev);
	assert_int_equal(poll(&pfd, 1, -1), 1);
	assert_int_equal(hp_client_poll(f->c, &ev), 1);
	assert_int_equal(ev.kind, HP_CLIENT_EVENT_INVALID_RESPONSE);
	hp_client_event_fini(&ev);
	assert_int_equal(hp_client_poll(f->c, &ev), 0);
	assert_int_equal(poll(&pfd, 1, 0), 0);

	/* A fault sent one byte at a time still arrives whole. */
	len = frame(buf, "{\"type\":\"job_fault\",\"client_id\":\"cid-1\","
			 "\"restart_count\":3}");
	for (size_t i = 0; i < len; i++)
		write_all(f->peer, buf + i, 1);
	read_exact(fault_pipe[0], &rcnt, sizeof(rcnt));
	assert_int_equal(rcnt, 3);
	hp_client_on_fault(f->c, NULL, NULL);
	assert_int_equal(hp_client_poll(f->c, &ev), 1);
	assert_int_equal(ev.kind, HP_CLIENT_EVENT_FAULT);
	assert_int_equal(ev.restart_count, 3);
	hp_client_event_fini(&ev);
	close(fault_pipe[0]);
	close(fault_pipe[1]);
}

struct slow_cb {
	int entered[2], release[2], clearing[2];
	atomic_int counter;
	int cb_done, clear_done; /* values of counter at each event */
	struct hp_client *c;
};

static void slow_fault_cb(struct hp_client *c, int restart_count, void *ud)
{
	struct slow_cb *s = ud;
	char byte = 'e';
	assert_int_equal(write(s->entered[1], &byte, 1), 1);
	read_exact(s->release[0], &byte, 1);
	s->cb_done = atomic_fetch_add(&s->counter, 1) + 1;
}

static void *clear_thread(void *arg)
{
	struct slow_cb *s = arg;
	assert_int_equal(write(s->clearing[1], "c", 1), 1);
	hp_client_on_fault(s->c, NULL, NULL);
	s->clear_done = atomic_fetch_add(&s->counter, 1) + 1;
	return NULL;
}

/* Clearing the callback waits for a running one, so its userdata can go. */
static void test_clear_callback_waits(void **state)
{
	struct fixture *f = *state;
	struct slow_cb s = {.c = f->c};
	assert_int_equal(pipe(s.entered), 0);
	assert_int_equal(pipe(s.release), 0);
	assert_int_equal(pipe(s.clearing), 0);
	hp_client_on_fault(f->c, slow_fault_cb, &s);
	send_frame(f->peer, "{\"type\":\"job_fault\",\"client_id\":\"cid-1\","
			    "\"restart_count\":1}");
	char byte;
	read_exact(s.entered[0], &byte, 1);

	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, clear_thread, &s), 0);
	read_exact(s.clearing[0], &byte, 1); /* it is about to clear */
	assert_int_equal(write(s.release[1], "r", 1), 1);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(s.cb_done, 1);
	assert_int_equal(s.clear_done, 2);
	for (int i = 0; i < 2; i++) {
		close(s.entered[i]);
		close(s.release[i]);
		close(s.clearing[i]);
	}
}

/* An unpolled queue keeps only the newest 1024 events. */
static void test_queue_cap(void **state)
{
	struct fixture *f = *state;
	char json[128];
	assert_int_equal(pipe(fault_pipe), 0);
	for (int i = 0; i < 1030; i++) {
		snprintf(json, sizeof(json),
			 "{\"type\":\"job_rank_info\",\"client_id\":\"cid-1\","
			 "\"worker_envs\":{\"I\":\"%d\"}}",
			 i);
		send_frame(f->peer, json);
	}
	/* The callback runs after every earlier frame was queued. */
	hp_client_on_fault(f->c, on_fault, &fault_pipe);
	send_frame(f->peer, "{\"type\":\"job_fault\",\"client_id\":\"cid-1\","
			    "\"restart_count\":4}");
	int rcnt;
	read_exact(fault_pipe[0], &rcnt, sizeof(rcnt));
	assert_int_equal(rcnt, 4);

	struct hp_client_event ev;
	int n = 0;
	while (hp_client_poll(f->c, &ev) == 1) {
		if (n == 0) {
			assert_int_equal(ev.kind, HP_CLIENT_EVENT_RANK_INFO);
			assert_string_equal(hp_rank_env_get(ev.env, "I"), "7");
		}
		n++;
		if (n == 1024)
			assert_int_equal(ev.kind, HP_CLIENT_EVENT_FAULT);
		hp_client_event_fini(&ev);
	}
	assert_int_equal(n, 1024);
	hp_client_on_fault(f->c, NULL, NULL);
	close(fault_pipe[0]);
	close(fault_pipe[1]);
}

/* A header announcing more than 1 MiB breaks the connection. */
static void test_oversized_frame(void **state)
{
	struct fixture *f = *state;
	uint32_t n = HP_CLIENT_MAX_FRAME + 1;
	/* One write: the client hangs up once it has read the header, and a
	 * second write could then fail. */
	unsigned char h[6] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
			      (unsigned char)(n >> 8), (unsigned char)n, '{',
			      '}'};
	send_frame(f->peer, "{\"type\":\"job_fault\",\"client_id\":\"cid-1\","
			    "\"restart_count\":1}");
	write_all(f->peer, h, sizeof(h));

	/* The client hangs up on us. */
	char byte;
	assert_int_equal(read(f->peer, &byte, 1), 0);

	struct hp_client_event ev;
	struct pollfd pfd = {.fd = hp_client_fd(f->c), .events = POLLIN};
	assert_int_equal(poll(&pfd, 1, -1), 1);
	assert_int_equal(hp_client_poll(f->c, &ev), 1);
	assert_int_equal(ev.kind, HP_CLIENT_EVENT_FAULT);
	hp_client_event_fini(&ev);
	assert_int_equal(hp_client_poll(f->c, &ev), -EMSGSIZE);
	assert_int_equal(poll(&pfd, 1, 0), 1); /* stays readable */
	assert_int_equal(hp_client_wait_barrier(f->c, -1, NULL), -EMSGSIZE);
}

static void test_peer_closes(void **state)
{
	struct fixture *f = *state;
	struct barrier_call b = {.c = f->c, .timeout_ms = -1};
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, barrier_thread, &b), 0);
	expect_frame(f->peer, AT_BARRIER);
	close(f->peer);
	f->peer = -1;
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(b.rc, -ECONNRESET);
	assert_null(b.env);
	struct hp_client_event ev;
	assert_int_equal(hp_client_poll(f->c, &ev), -ECONNRESET);
	assert_int_equal(hp_client_report_fault(f->c, 0, NULL, NULL, NULL),
			 -EPIPE);
}

static void test_nccl_missing(void **state)
{
	char why[512];
	setenv("HP_NCCL_LIBRARY", "/nonexistent/libnccl.so.2", 1);
	assert_false(hp_nccl_available(why, sizeof(why)));
	const char *want = "NCCL not available: /nonexistent/libnccl.so.2: "
			   "cannot open shared object file";
	assert_memory_equal(why, want, strlen(want));
	assert_false(hp_nccl_available(NULL, 0));

	unsigned char id[HP_NCCL_UNIQUE_ID_BYTES] = {0};
	void *comm = NULL;
	int err = 0;
	assert_int_equal(hp_nccl_get_unique_id(id), -ENOSYS);
	assert_int_equal(hp_nccl_comm_init_rank(&comm, 1, id, 0), -ENOSYS);
	assert_int_equal(hp_nccl_comm_abort(comm), -ENOSYS);
	assert_int_equal(hp_nccl_async_error(comm, &err), -ENOSYS);
	assert_string_equal(hp_nccl_strerror(1), "NCCL not available");
}

static void test_nccl_hex(void **state)
{
	unsigned char id[HP_NCCL_UNIQUE_ID_BYTES], back[sizeof(id)];
	char hex[HP_NCCL_UNIQUE_ID_HEX_LEN + 1];
	for (size_t i = 0; i < sizeof(id); i++)
		id[i] = (unsigned char)(i * 37 + 1);
	id[5] = 0;
	assert_int_equal(hp_nccl_unique_id_hex(id, hex, sizeof(hex) - 1),
			 -ENOSPC);
	assert_int_equal(hp_nccl_unique_id_hex(id, hex, sizeof(hex)), 0);
	assert_int_equal(strlen(hex), HP_NCCL_UNIQUE_ID_HEX_LEN);
	assert_memory_equal(hex, "0126", 4);
	assert_int_equal(hp_nccl_unique_id_from_hex(hex, back), 0);
	assert_memory_equal(id, back, sizeof(id));
	hex[7] = 'g';
	assert_int_equal(hp_nccl_unique_id_from_hex(hex, back), -EINVAL);
	assert_int_equal(hp_nccl_unique_id_from_hex("00", back), -EINVAL);
	assert_int_equal(hp_nccl_unique_id_from_env(NULL, back), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_bytes),
		cmocka_unit_test(test_env_defaults),
		cmocka_unit_test_setup_teardown(test_fault_data_labels_bytes,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_oversized, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_barrier, setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_barrier_timeout_and_stale_start, setup, teardown),
		cmocka_unit_test_setup_teardown(test_notifications, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_queue_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_clear_callback_waits, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_oversized_frame, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_peer_closes, setup,
						teardown),
		cmocka_unit_test(test_nccl_missing),
		cmocka_unit_test(test_nccl_hex),
	};
	/* A peer write racing a hang-up should fail an assert, not kill us. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
