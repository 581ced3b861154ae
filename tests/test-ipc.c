/* test-ipc.c — the worker IPC: the frame codec on its own (every split,
 * empty and oversized frames), then the server on a real libuv loop with
 * plain AF_UNIX clients written the way the reference's Python client
 * writes (4-byte big-endian length + JSON). Nothing sleeps: the loop runs
 * until a condition holds, under a deadline timer. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>
#include <uv.h>

#include "base/log.h"
#include "base/xalloc.h"
#include "rendezvous/ipc.h"

#define DEADLINE_MS 5000

/* ---- decoder -------------------------------------------------------------- */

struct got {
	char *msg[32];
	size_t len[32];
	size_t n;
	int stop_after; /* return -ECANCELED after this many; 0 = never */
};

static int collect(void *ud, const char *json, size_t len)
{
	struct got *g = ud;
	assert_true(g->n < 32);
	g->msg[g->n] = xmalloc(len + 1);
	if (len)
		memcpy(g->msg[g->n], json, len);
	g->msg[g->n][len] = '\0';
	g->len[g->n] = len;
	g->n++;
	return g->stop_after && g->n >= (size_t)g->stop_after ? -ECANCELED
							       : 0;
}

static void got_clear(struct got *g)
{
	for (size_t i = 0; i < g->n; i++)
		free(g->msg[i]);
	memset(g, 0, sizeof(*g));
}

/* The frames of msgs, back to back, in an exactly sized heap buffer so
 * that ASan sees any read past the end. */
static char *stream_of(const char *const *msgs, size_t n, size_t *total)
{
	size_t t = 0;
	for (size_t i = 0; i < n; i++)
		t += 4 + strlen(msgs[i]);
	char *s = xmalloc(t);
	size_t off = 0;
	for (size_t i = 0; i < n; i++) {
		size_t fl;
		char *f = hp_ipc_encode(msgs[i], strlen(msgs[i]), &fl);
		memcpy(s + off, f, fl);
		off += fl;
		free(f);
	}
	*total = t;
	return s;
}

static void feed_exact(struct hp_ipc_decoder *d, const char *p, size_t n,
		       struct got *g, int want)
{
	char *copy = xmalloc(n ? n : 1);
	memcpy(copy, p, n);
	assert_int_equal(hp_ipc_decoder_feed(d, copy, n, collect, g), want);
	free(copy);
}

static const char *const three[] = {
	"{\"type\":\"init\",\"local_rank\":0,\"client_id\":\"a\"}",
	"{}",
	"{\"type\": \"job_data\", \"data\": \"\\u00e9\", \"x\": [1, 2, 3]}",
};

static void assert_three(const struct got *g)
{
	assert_int_equal(g->n, 3);
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(g->len[i], strlen(three[i]));
		assert_string_equal(g->msg[i], three[i]);
	}
}

static void encode_is_big_endian(void **state)
{
	size_t n;
	char *f = hp_ipc_encode("{}", 2, &n);
	assert_int_equal(n, 6);
	assert_memory_equal(f, "\0\0\0\x02{}", 6);
	free(f);

	char *big = xcalloc(1, 0x010203);
	f = hp_ipc_encode(big, 0x010203, &n);
	assert_int_equal(n, 0x010203 + 4);
	assert_memory_equal(f, "\x00\x01\x02\x03", 4);
	free(f);
	free(big);
}

static void decode_one_message(void **state)
{
	struct got g = {0};
	struct hp_ipc_decoder *d = hp_ipc_decoder_new(HP_IPC_MAX_FRAME);
	size_t n;
	char *s = stream_of(three, 1, &n);
	feed_exact(d, s, n, &g, 0);
	assert_int_equal(g.n, 1);
	assert_string_equal(g.msg[0], three[0]);
	free(s);
	got_clear(&g);
	hp_ipc_decoder_free(d);
	hp_ipc_decoder_free(NULL);
}

static void decode_several_per_read(void **state)
{
	struct got g = {0};
	struct hp_ipc_decoder *d = hp_ipc_decoder_new(HP_IPC_MAX_FRAME);
	size_t n;
	char *s = stream_of(three, 3, &n);
	feed_exact(d, s, n, &g, 0);
	assert_three(&g);
	/* and the decoder is ready for more */
	feed_exact(d, s, n, &g, 0);
	assert_int_equal(g.n, 6);
	free(s);
	got_clear(&g);
	hp_ipc_decoder_free(d);
}

static void decode_split_at_every_byte(void **state)
{
	size_t n;
	char *s = stream_of(three, 3, &n);
	for (size_t cut = 0; cut <= n; cut++) {
		struct got g = {0};
		struct hp_ipc_decoder *d = hp_ipc_decoder_new(HP_IPC_MAX_FRAME);
		feed_exact(d, s, cut, &g, 0);
		feed_exact(d, s + cut, n - cut, &g, 0);
		assert_three(&g);
		got_clear(&g);
		hp_ipc_decoder_free(d);
	}
	/* and one byte per read */
	struct got g = {0};
	struct hp_ipc_decoder *d = hp_ipc_decoder_new(HP_IPC_MAX_FRAME);
	for (size_t i = 0; i < n; i++)
		feed_exact(d, s + i, 1, &g, 0);
	assert_three(&g);
	got_clear(&g);
	hp_ipc_decoder_free(d);
	free(s);
}

static void decode_zero_length_frame(void **state)
{
	struct got g = {0};
	struct hp_ipc_decoder *d = hp_ipc_decoder_new(HP_IPC_MAX_FRAME);
	const char s[] = "\0\0\0\0\0\0\0\x02{}";
	feed_exact(d, s, 10, &g, 0);
	assert_int_equal(g.n, 2);
	assert_int_equal(g.len[0], 0);
	assert_string_equal(g.msg[1], "{}");
	got_clear(&g);
	/* split inside the empty frame's prefix */
	feed_exact(d, s, 3, &g, 0);
	assert_int_equal(g.n, 0);
	feed_exact(d, s + 3, 1, &g, 0);
	assert_int_equal(g.n, 1);
	got_clear(&g);
	hp_ipc_decoder_free(d);
}

static void decode_oversized_frame(void **state)
{
	struct got g = {0};
	struct hp_ipc_decoder *d = hp_ipc_decoder_new(16);
	/* exactly the limit is fine */
	const char s16[] = "\0\0\0\x10{\"a\":\"01234567\"}";
	feed_exact(d, s16, 20, &g, 0);
	assert_int_equal(g.n, 1);
	/* a frame before the bad prefix is still delivered */
	const char bad[] = "\0\0\0\x02{}\0\0\0\x11{}";
	feed_exact(d, bad, sizeof(bad) - 1, &g, -EMSGSIZE);
	assert_int_equal(g.n, 2);
	/* the stream cannot be resynchronised */
	feed_exact(d, "\0\0\0\x02{}", 6, &g, -EMSGSIZE);
	assert_int_equal(g.n, 2);
	got_clear(&g);
	hp_ipc_decoder_free(d);

	/* the real limit, with the prefix split across reads */
	d = hp_ipc_decoder_new(HP_IPC_MAX_FRAME);
	uint32_t len = HP_IPC_MAX_FRAME + 1;
	unsigned char hdr[4] = {len >> 24, len >> 16 & 0xff, len >> 8 & 0xff,
				len & 0xff};
	feed_exact(d, (char *)hdr, 2, &g, 0);
	feed_exact(d, (char *)hdr + 2, 2, &g, -EMSGSIZE);
	/* 4 GiB - 1 is refused before any allocation */
	hp_ipc_decoder_free(d);
	d = hp_ipc_decoder_new(HP_IPC_MAX_FRAME);
	feed_exact(d, "\xff\xff\xff\xff", 4, &g, -EMSGSIZE);
	assert_int_equal(g.n, 0);
	hp_ipc_decoder_free(d);
}

static void decode_callback_can_stop(void **state)
{
	struct got g = {.stop_after = 2};
	struct hp_ipc_decoder *d = hp_ipc_decoder_new(HP_IPC_MAX_FRAME);
	size_t n;
	char *s = stream_of(three, 3, &n);
	feed_exact(d, s, n, &g, -ECANCELED);
	assert_int_equal(g.n, 2);
	/* a buffered (split) frame can stop it too */
	got_clear(&g);
	g.stop_after = 1;
	hp_ipc_decoder_free(d);
	d = hp_ipc_decoder_new(HP_IPC_MAX_FRAME);
	feed_exact(d, s, 6, &g, 0);
	feed_exact(d, s + 6, n - 6, &g, -ECANCELED);
	assert_int_equal(g.n, 1);
	got_clear(&g);
	free(s);
	hp_ipc_decoder_free(d);
}

/* ---- the server ------------------------------------------------------------ */

struct rec {
	int n_init, n_barrier, n_past, n_fault, n_data, n_labels, n_disc;
	int last_lr, fault_rank, data_rank, disc_rank;
	char reason[64], message[64], mode[64], data[256], labels[256];
	bool null_reason;
	/* checkpoint discovery */
	int n_ckinit, n_ckupd, n_ckget;
	char ck_prefix[64], ck_types[128], ck_path[64], ck_type[64];
	long long ck_step;
	const char *ck_answer; /* what on_ckpt_get answers (NULL: null) */
	/* behaviour */
	bool drop_on_barrier;
	bool free_on_fault;
	struct hp_ipc **ipc;
};

static void copy_str(char *dst, size_t n, const char *s)
{
	snprintf(dst, n, "%s", s ? s : "(null)");
}

static void cb_init(void *ud, int lr)
{
	struct rec *r = ud;
	r->n_init++;
	r->last_lr = lr;
}

static void cb_barrier(void *ud, int lr)
{
	struct rec *r = ud;
	r->n_barrier++;
	r->last_lr = lr;
	if (r->drop_on_barrier)
		hp_ipc_drop_clients(*r->ipc);
}

static void cb_past(void *ud, int lr)
{
	struct rec *r = ud;
	r->n_past++;
	r->last_lr = lr;
}

static void cb_fault(void *ud, int lr, int rank, const char *reason,
		     const char *message, const char *mode)
{
	struct rec *r = ud;
	r->n_fault++;
	r->last_lr = lr;
	r->fault_rank = rank;
	r->null_reason = reason == NULL;
	copy_str(r->reason, sizeof(r->reason), reason);
	copy_str(r->message, sizeof(r->message), message);
	copy_str(r->mode, sizeof(r->mode), mode);
	if (r->free_on_fault) {
		hp_ipc_free(*r->ipc);
		*r->ipc = NULL;
	}
}

static void cb_data(void *ud, int lr, int rank, const char *data)
{
	struct rec *r = ud;
	r->n_data++;
	r->last_lr = lr;
	r->data_rank = rank;
	copy_str(r->data, sizeof(r->data), data);
}

static void cb_labels(void *ud, int lr, const char *labels)
{
	struct rec *r = ud;
	r->n_labels++;
	r->last_lr = lr;
	copy_str(r->labels, sizeof(r->labels), labels);
}

static void cb_disc(void *ud, int lr)
{
	struct rec *r = ud;
	r->n_disc++;
	r->disc_rank = lr;
}

static void cb_ckinit(void *ud, int lr, const char *prefix,
		      const char *const *names, const int *counts, size_t n)
{
	struct rec *r = ud;
	r->n_ckinit++;
	r->last_lr = lr;
	copy_str(r->ck_prefix, sizeof(r->ck_prefix), prefix);
	int off = 0;
	r->ck_types[0] = '\0';
	for (size_t i = 0; i < n; i++)
		off += snprintf(r->ck_types + off, sizeof(r->ck_types) - (size_t)off,
				"%s=%d;", names[i], counts[i]);
}

static void cb_ckupd(void *ud, int lr, long long step, const char *path,
		     const char *type)
{
	struct rec *r = ud;
	r->n_ckupd++;
	r->last_lr = lr;
	r->ck_step = step;
	copy_str(r->ck_path, sizeof(r->ck_path), path);
	copy_str(r->ck_type, sizeof(r->ck_type), type);
}

static char *cb_ckget(void *ud, int lr)
{
	struct rec *r = ud;
	r->n_ckget++;
	r->last_lr = lr;
	return r->ck_answer ? xstrdup(r->ck_answer) : NULL;
}

static const struct hp_ipc_callbacks cbs = {
	.on_ckpt_init = cb_ckinit,
	.on_ckpt_update = cb_ckupd,
	.on_ckpt_get = cb_ckget,
	.on_init = cb_init,
	.on_barrier = cb_barrier,
	.on_past_barrier = cb_past,
	.on_fault = cb_fault,
	.on_data = cb_data,
	.on_labels = cb_labels,
	.on_disconnect = cb_disc,
};

/* A worker's socket, read through a uv_poll_t on the same loop. */
struct client {
	int fd;
	uv_poll_t poll;
	bool polling;
	struct hp_ipc_decoder *dec;
	struct got got;
	bool eof;
};

struct fx {
	char dir[64];
	uv_loop_t loop;
	uv_timer_t deadline;
	bool expired;
	struct hp_ipc *ipc;
	struct rec rec;
};

static void client_readable(uv_poll_t *p, int status, int events)
{
	struct client *c = p->data;
	char buf[4096];
	for (;;) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
		if (n > 0) {
			assert_int_equal(hp_ipc_decoder_feed(c->dec, buf,
							     (size_t)n,
							     collect, &c->got),
					 0);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		/* 0 (EOF) or ECONNRESET: the server dropped us */
		c->eof = true;
		uv_poll_stop(p);
		return;
	}
}

static void client_connect(struct fx *f, struct client *c)
{
	memset(c, 0, sizeof(*c));
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", hp_ipc_path(f->ipc));
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(c->fd >= 0);
	assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)),
			 0);
	c->dec = hp_ipc_decoder_new(HP_IPC_MAX_FRAME);
	assert_int_equal(uv_poll_init(&f->loop, &c->poll, c->fd), 0);
	c->poll.data = c;
	c->polling = true;
	assert_int_equal(uv_poll_start(&c->poll, UV_READABLE, client_readable),
			 0);
}

static void client_write(struct client *c, const void *p, size_t n)
{
	const char *s = p;
	while (n > 0) {
		ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
		assert_true(w > 0);
		s += w;
		n -= (size_t)w;
	}
}

static void client_send(struct client *c, const char *json)
{
	size_t n;
	char *f = hp_ipc_encode(json, strlen(json), &n);
	client_write(c, f, n);
	free(f);
}

/* The message i a client received, parsed. */
static cJSON *client_msg(struct client *c, size_t i)
{
	assert_true(i < c->got.n);
	cJSON *m = cJSON_Parse(c->got.msg[i]);
	assert_non_null(m);
	return m;
}

static const char *jstr(const cJSON *o, const char *k)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
	assert_true(cJSON_IsString(it));
	return it->valuestring;
}

static void expired_cb(uv_timer_t *t)
{
	struct fx *f = t->data;
	f->expired = true;
}

typedef bool until_cb(struct fx *f, void *arg);

/* Runs the loop until cond holds; false when the deadline passed. */
static bool run_until(struct fx *f, until_cb *cond, void *arg)
{
	f->expired = false;
	uv_timer_start(&f->deadline, expired_cb, DEADLINE_MS, 0);
	while (!cond(f, arg) && !f->expired)
		uv_run(&f->loop, UV_RUN_ONCE);
	uv_timer_stop(&f->deadline);
	return cond(f, arg);
}

static void poll_closed(uv_handle_t *h)
{
	((struct client *)h->data)->polling = false;
}

static bool poll_gone(struct fx *f, void *arg)
{
	return !((struct client *)arg)->polling;
}

/* The poll handle lives in the test's stack frame: wait for its close
 * callback before the frame goes. */
static void client_close(struct fx *f, struct client *c)
{
	if (c->polling) {
		uv_poll_stop(&c->poll);
		uv_close((uv_handle_t *)&c->poll, poll_closed);
		assert_true(run_until(f, poll_gone, c));
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	got_clear(&c->got);
	hp_ipc_decoder_free(c->dec);
	c->dec = NULL;
}

static bool cnt_at_least(struct fx *f, void *arg)
{
	(void)f;
	return *(int *)((void **)arg)[0] >= *(int *)((void **)arg)[1];
}

#define WAIT_COUNT(f, field, want)                                             \
	do {                                                                   \
		int want_ = (want);                                            \
		void *args_[2] = {&(f)->rec.field, &want_};                    \
		assert_true(run_until((f), cnt_at_least, args_));              \
		assert_int_equal((f)->rec.field, want_);                       \
	} while (0)

static bool got_msgs(struct fx *f, void *arg)
{
	void **a = arg;
	struct client *c = a[0];
	return c->got.n >= *(size_t *)a[1];
}

#define WAIT_MSGS(f, c, want)                                                  \
	do {                                                                   \
		size_t want_ = (want);                                         \
		void *args_[2] = {(c), &want_};                                \
		assert_true(run_until((f), got_msgs, args_));                  \
		assert_int_equal((c)->got.n, want_);                           \
	} while (0)

static bool got_eof(struct fx *f, void *arg)
{
	return ((struct client *)arg)->eof;
}

static int srv_setup(void **state)
{
	struct fx *f = xcalloc(1, sizeof(*f));
	strcpy(f->dir, "/tmp/test-ipc-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	if (uv_loop_init(&f->loop) != 0)
		return -1;
	uv_timer_init(&f->loop, &f->deadline);
	f->deadline.data = f;
	f->rec.ipc = &f->ipc;
	*state = f;
	return 0;
}

static int srv_teardown(void **state)
{
	struct fx *f = *state;
	hp_ipc_free(f->ipc);
	uv_close((uv_handle_t *)&f->deadline, NULL);
	/* the close callbacks release everything; then nothing is left */
	while (uv_run(&f->loop, UV_RUN_DEFAULT) != 0)
		;
	int r = uv_loop_close(&f->loop);
	char *cmd = xasprintf("rm -rf '%s'", f->dir);
	int rr = system(cmd);
	free(cmd);
	free(f);
	return r == 0 && rr == 0 ? 0 : -1;
}

static void new_ipc(struct fx *f, int lws)
{
	f->ipc = hp_ipc_new(&f->loop, f->dir, 4242, lws, &cbs, &f->rec);
	assert_non_null(f->ipc);
}

static void server_path_and_stale_file(void **state)
{
	struct fx *f = *state;
	char *want = xasprintf("%s/hyperpod_elastic_agent_4242.sock", f->dir);
	/* a stale file from a previous agent with the same pid */
	int fd = open(want, O_CREAT | O_WRONLY, 0644);
	assert_true(fd >= 0);
	close(fd);

	/* a trailing '/' in TMPDIR gives no doubled '/' */
	char *dir = xasprintf("%s/", f->dir);
	f->ipc = hp_ipc_new(&f->loop, dir, 4242, 1, &cbs, &f->rec);
	free(dir);
	assert_non_null(f->ipc);
	assert_string_equal(hp_ipc_path(f->ipc), want);
	struct stat st;
	assert_int_equal(stat(want, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	hp_ipc_free(f->ipc);
	f->ipc = NULL;
	assert_int_equal(stat(want, &st), -1);
	free(want);

	/* unusable directories and sizes */
	char longdir[200];
	memset(longdir, 'a', sizeof(longdir) - 1);
	longdir[0] = '/';
	longdir[sizeof(longdir) - 1] = '\0';
	assert_null(hp_ipc_new(&f->loop, longdir, 1, 1, &cbs, NULL));
	assert_null(hp_ipc_new(&f->loop, "/nonexistent-dir-for-ipc", 1, 1,
			       &cbs, NULL));
	assert_null(hp_ipc_new(&f->loop, f->dir, 1, 0, &cbs, NULL));
	assert_null(hp_ipc_new(&f->loop, f->dir, 1, HP_MAX_LOCAL_WORKERS + 1,
			       &cbs, NULL));
}

static void server_roundtrip(void **state)
{
	struct fx *f = *state;
	new_ipc(f, 2);
	struct client a, b, c;

	client_connect(f, &a);
	client_send(&a, "{\"type\": \"init\", \"local_rank\": 0, "
			"\"client_id\": \"A\"}");
	WAIT_COUNT(f, n_init, 1);
	assert_true(hp_ipc_rank_connected(f->ipc, 0));
	assert_false(hp_ipc_rank_connected(f->ipc, 1));

	client_send(&a, "{\"type\": \"at_rcb_barrier\", \"local_rank\": 0, "
			"\"client_id\": \"A\"}");
	WAIT_COUNT(f, n_barrier, 1);
	assert_int_equal(hp_ipc_rank_state(f->ipc, 0), HP_IPC_AT_BARRIER);
	assert_int_equal(hp_ipc_rank_state(f->ipc, 1), HP_IPC_HEALTHY);
	assert_false(hp_ipc_all_in_state(f->ipc, HP_IPC_AT_BARRIER));

	/* garbage: logged, skipped, the connection stays */
	client_send(&a, "not json");
	client_send(&a, "{\"type\": \"at_rcb_barrier\"} trailing");
	client_send(&a, "[1, 2]");
	client_send(&a, "");
	client_send(&a, "{\"type\": \"at_rcb_barrier\", \"client_id\": \"A\"}");
	client_send(&a, "{\"local_rank\": 0, \"client_id\": \"A\"}");
	client_send(&a, "{\"type\": \"at_rcb_barrier\", \"local_rank\": 0}");
	client_send(&a, "{\"type\": \"at_rcb_barrier\", \"local_rank\": 7, "
			"\"client_id\": \"A\"}");
	client_send(&a, "{\"type\": \"at_rcb_barrier\", \"local_rank\": "
			"\"0\", \"client_id\": \"A\"}");
	client_send(&a, "{\"type\": \"at_rcb_barrier\", \"local_rank\": 0.5, "
			"\"client_id\": \"A\"}");
	client_send(&a, "{\"type\": 5, \"local_rank\": 0, \"client_id\": "
			"\"A\"}");
	client_send(&a, "{\"type\": \"ckpt_info_update\", \"local_rank\": 0, "
			"\"client_id\": \"A\"}");
	client_send(&a, "{\"type\": \"rank_labels\", \"labels\": [1], "
			"\"local_rank\": 0, \"client_id\": \"A\"}");
	client_send(&a, "{\"type\": \"past_rcb_barrier\", \"local_rank\": 0, "
			"\"client_id\": \"A\"}");
	WAIT_COUNT(f, n_past, 1);
	assert_int_equal(f->rec.n_barrier, 1);
	assert_int_equal(f->rec.n_labels, 0);
	assert_false(a.eof);
	assert_int_equal(hp_ipc_rank_state(f->ipc, 0), HP_IPC_PAST_BARRIER);

	client_send(&a, "{\"rank\": 3, \"restart_mode\": "
			"\"process_level_restart\", \"reason\": \"R\", "
			"\"message\": \"M\", \"type\": \"job_fault\", "
			"\"local_rank\": 0, \"client_id\": \"A\"}");
	WAIT_COUNT(f, n_fault, 1);
	assert_int_equal(f->rec.fault_rank, 3);
	assert_string_equal(f->rec.reason, "R");
	assert_string_equal(f->rec.message, "M");
	assert_string_equal(f->rec.mode, "process_level_restart");
	assert_int_equal(hp_ipc_rank_state(f->ipc, 0), HP_IPC_FAILED);
	assert_true(hp_ipc_any_failed(f->ipc));

	/* the reference client sends null reason/message by default */
	client_send(&a, "{\"rank\": 3, \"restart_mode\": "
			"\"in_process_restart\", \"reason\": null, "
			"\"message\": null, \"type\": \"job_fault\", "
			"\"local_rank\": 0, \"client_id\": \"A\"}");
	WAIT_COUNT(f, n_fault, 2);
	assert_true(f->rec.null_reason);

	client_send(&a, "{\"rank\": 3, \"data\": {\"k\": [1, 2]}, \"type\": "
			"\"job_data\", \"local_rank\": 0, \"client_id\": "
			"\"A\"}");
	WAIT_COUNT(f, n_data, 1);
	assert_int_equal(f->rec.data_rank, 3);
	assert_string_equal(f->rec.data, "{\"k\":[1,2]}");
	client_send(&a, "{\"rank\": 3, \"data\": \"s\", \"type\": "
			"\"job_data\", \"local_rank\": 0, \"client_id\": "
			"\"A\"}");
	WAIT_COUNT(f, n_data, 2);
	assert_string_equal(f->rec.data, "\"s\"");

	client_send(&a, "{\"labels\": {\"pp\": \"1\"}, \"type\": "
			"\"rank_labels\", \"local_rank\": 0, \"client_id\": "
			"\"A\"}");
	WAIT_COUNT(f, n_labels, 1);
	assert_string_equal(f->rec.labels, "{\"pp\":\"1\"}");

	/* a second worker with two client objects on one socket */
	client_connect(f, &b);
	client_send(&b, "{\"type\": \"init\", \"local_rank\": 1, "
			"\"client_id\": \"B1\"}");
	client_send(&b, "{\"type\": \"init\", \"local_rank\": 1, "
			"\"client_id\": \"B2\"}");
	WAIT_COUNT(f, n_init, 3);
	assert_true(hp_ipc_rank_connected(f->ipc, 1));

	/* job_start reaches rank 0 only, with A's client_id */
	assert_int_equal(hp_ipc_send_start(f->ipc, 0,
					   "{\"RANK\": \"0\", \"SPARE\": "
					   "\"False\"}",
					   "{\"rank_ips\": [{\"rank\": 0, "
					   "\"ip\": \"10.0.0.1\"}], "
					   "\"aggregate_worker_data\": null}"),
			 0);
	WAIT_MSGS(f, &a, 1);
	cJSON *m = client_msg(&a, 0);
	assert_string_equal(jstr(m, "type"), "job_start");
	assert_string_equal(jstr(m, "client_id"), "A");
	const cJSON *envs = cJSON_GetObjectItemCaseSensitive(m, "worker_envs");
	assert_string_equal(jstr(envs, "RANK"), "0");
	const cJSON *agg =
		cJSON_GetObjectItemCaseSensitive(m, "aggregate_worker_data");
	assert_true(cJSON_IsArray(
		cJSON_GetObjectItemCaseSensitive(agg, "rank_ips")));
	assert_false(cJSON_HasObjectItem(m, "local_rank"));
	cJSON_Delete(m);
	assert_int_equal(hp_ipc_rank_state(f->ipc, 0), HP_IPC_HEALTHY);

	/* the fault is broadcast, once per client_id */
	assert_int_equal(hp_ipc_send_fault(f->ipc, HP_IPC_ALL_RANKS, 2), 0);
	WAIT_MSGS(f, &a, 2);
	WAIT_MSGS(f, &b, 2);
	m = client_msg(&a, 1);
	assert_string_equal(jstr(m, "type"), "job_fault");
	assert_int_equal(
		cJSON_GetObjectItemCaseSensitive(m, "restart_count")->valueint,
		2);
	cJSON_Delete(m);
	cJSON *b0 = client_msg(&b, 0), *b1 = client_msg(&b, 1);
	assert_string_not_equal(jstr(b0, "client_id"), jstr(b1, "client_id"));
	assert_true(strcmp(jstr(b0, "client_id"), "B1") == 0 ||
		    strcmp(jstr(b1, "client_id"), "B1") == 0);
	cJSON_Delete(b0);
	cJSON_Delete(b1);

	/* a client sending an oversized frame is dropped; B stays */
	client_connect(f, &c);
	client_send(&c, "{\"type\": \"init\", \"local_rank\": 1, "
			"\"client_id\": \"C\"}");
	WAIT_COUNT(f, n_init, 4);
	uint32_t len = HP_IPC_MAX_FRAME + 1;
	unsigned char hdr[8] = {len >> 24, len >> 16 & 0xff, len >> 8 & 0xff,
				len & 0xff, '{', '"', 'a', '"'};
	client_write(&c, hdr, sizeof(hdr));
	assert_true(run_until(f, got_eof, &c));
	/* rank 1 still has B: no disconnect */
	assert_int_equal(f->rec.n_disc, 0);
	assert_true(hp_ipc_rank_connected(f->ipc, 1));
	assert_int_equal(hp_ipc_send_rank_info(f->ipc, 1, "{\"RANK\": \"1\"}",
					       NULL),
			 0);
	WAIT_MSGS(f, &b, 4);
	m = client_msg(&b, 3);
	assert_string_equal(jstr(m, "type"), "job_rank_info");
	assert_true(cJSON_IsNull(
		cJSON_GetObjectItemCaseSensitive(m, "aggregate_worker_data")));
	cJSON_Delete(m);
	assert_false(b.eof);

	assert_int_equal(hp_ipc_send_failed_ranks(f->ipc, 1,
						  "{\"failed_ranks\": [3]}"),
			 0);
	WAIT_MSGS(f, &b, 6);

	/* A goes away: rank 0 has no client left */
	client_close(f, &a);
	WAIT_COUNT(f, n_disc, 1);
	assert_int_equal(f->rec.disc_rank, 0);
	assert_false(hp_ipc_rank_connected(f->ipc, 0));
	assert_int_equal(hp_ipc_send_start(f->ipc, 0, "{}", NULL), -ENOTCONN);

	/* bad arguments */
	assert_int_equal(hp_ipc_send(f->ipc, 1, "x", "[1]"), -EINVAL);
	assert_int_equal(hp_ipc_send(f->ipc, 1, "x", "{"), -EINVAL);
	assert_int_equal(hp_ipc_send(f->ipc, 2, "x", NULL), -EINVAL);
	assert_int_equal(hp_ipc_send(f->ipc, 1, "", NULL), -EINVAL);
	assert_int_equal(hp_ipc_send_start(f->ipc, 1, "{", NULL), -EINVAL);

	/* the agent's own drop: no on_disconnect, the workers see EOF */
	hp_ipc_drop_clients(f->ipc);
	assert_true(run_until(f, got_eof, &b));
	assert_int_equal(f->rec.n_disc, 1);
	assert_false(hp_ipc_rank_connected(f->ipc, 1));

	hp_ipc_reset_states(f->ipc);
	assert_true(hp_ipc_all_in_state(f->ipc, HP_IPC_HEALTHY));
	assert_false(hp_ipc_any_failed(f->ipc));
	assert_string_equal(hp_ipc_rank_state_name(HP_IPC_PAST_BARRIER),
			    "PAST_BARRIER");

	client_close(f, &b);
	client_close(f, &c);
}

static void server_all_at_barrier(void **state)
{
	struct fx *f = *state;
	new_ipc(f, 3);
	struct client w[3];
	for (int i = 0; i < 3; i++) {
		client_connect(f, &w[i]);
		char *s = xasprintf("{\"type\": \"init\", \"local_rank\": %d, "
				    "\"client_id\": \"w%d\"}",
				    i, i);
		client_send(&w[i], s);
		free(s);
		s = xasprintf("{\"type\": \"at_rcb_barrier\", \"local_rank\": "
			      "%d, \"client_id\": \"w%d\"}",
			      i, i);
		client_send(&w[i], s);
		free(s);
	}
	WAIT_COUNT(f, n_barrier, 3);
	assert_true(hp_ipc_all_in_state(f->ipc, HP_IPC_AT_BARRIER));
	assert_int_equal(hp_ipc_send_start(f->ipc, HP_IPC_ALL_RANKS, "{}",
					   "{}"),
			 0);
	assert_true(hp_ipc_all_in_state(f->ipc, HP_IPC_HEALTHY));
	for (int i = 0; i < 3; i++) {
		WAIT_MSGS(f, &w[i], 1);
		cJSON *m = client_msg(&w[i], 0);
		char want[8];
		snprintf(want, sizeof(want), "w%d", i);
		assert_string_equal(jstr(m, "client_id"), want);
		cJSON_Delete(m);
	}
	/* the server goes first: the workers see EOF, the file is gone */
	char *path = xstrdup(hp_ipc_path(f->ipc));
	hp_ipc_free(f->ipc);
	f->ipc = NULL;
	assert_int_equal(access(path, F_OK), -1);
	free(path);
	for (int i = 0; i < 3; i++) {
		assert_true(run_until(f, got_eof, &w[i]));
		client_close(f, &w[i]);
	}
	assert_int_equal(f->rec.n_disc, 0);
}

/* Checkpoint discovery on the same socket (10690281936): ckpt_init and
 * ckpt_info_update reach the callbacks decoded, bad ones are dropped, and
 * ckpt_info_get is answered {"path": …} with the request's type and
 * client_id on the asking connection. */
static void server_checkpoint_discovery(void **state)
{
	struct fx *f = *state;
	new_ipc(f, 2);
	struct client c;
	client_connect(f, &c);
	client_send(&c, "{\"type\":\"ckpt_init\",\"client_id\":\"ck\","
			"\"local_rank\":1,\"prefix\":\"job\",\"checkpoint_types\":"
			"{\"model_checkpoint\":2,\"data_checkpoint\":null}}");
	WAIT_COUNT(f, n_ckinit, 1);
	assert_int_equal(f->rec.last_lr, 1);
	assert_string_equal(f->rec.ck_prefix, "job");
	assert_string_equal(f->rec.ck_types,
			    "model_checkpoint=2;data_checkpoint=-1;");
	/* ignored: no prefix, a fractional step, a numeric path */
	client_send(&c, "{\"type\":\"ckpt_init\",\"client_id\":\"ck\","
			"\"local_rank\":1,\"checkpoint_types\":{}}");
	client_send(&c, "{\"type\":\"ckpt_info_update\",\"client_id\":\"ck\","
			"\"local_rank\":1,\"step\":1.5,\"path\":\"/p\","
			"\"checkpoint_type\":\"model_checkpoint\"}");
	client_send(&c, "{\"type\":\"ckpt_info_update\",\"client_id\":\"ck\","
			"\"local_rank\":1,\"step\":2,\"path\":7,"
			"\"checkpoint_type\":\"model_checkpoint\"}");
	client_send(&c, "{\"type\":\"ckpt_info_update\",\"client_id\":\"ck\","
			"\"local_rank\":1,\"step\":9007199254740992,\"path\":null,"
			"\"checkpoint_type\":\"model_checkpoint\"}");
	WAIT_COUNT(f, n_ckupd, 1);
	assert_int_equal(f->rec.n_ckinit, 1);
	assert_true(f->rec.ck_step == 9007199254740992LL);
	assert_string_equal(f->rec.ck_path, "(null)");
	/* the answer: null, then a path; same type and client_id */
	client_send(&c, "{\"type\":\"ckpt_info_get\",\"client_id\":\"ck\","
			"\"local_rank\":1}");
	WAIT_MSGS(f, &c, 1);
	f->rec.ck_answer = "/ckpt/\"9\"";
	client_send(&c, "{\"type\":\"ckpt_info_get\",\"client_id\":\"other\","
			"\"local_rank\":0}");
	WAIT_MSGS(f, &c, 2);
	cJSON *m = client_msg(&c, 0);
	assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(m, "path")));
	assert_string_equal(jstr(m, "type"), "ckpt_info_get");
	assert_string_equal(jstr(m, "client_id"), "ck");
	cJSON_Delete(m);
	m = client_msg(&c, 1);
	assert_string_equal(jstr(m, "path"), "/ckpt/\"9\"");
	assert_string_equal(jstr(m, "client_id"), "other");
	cJSON_Delete(m);
	assert_int_equal(f->rec.n_ckget, 2);
	client_close(f, &c);
}

static void server_callback_drops_clients(void **state)
{
	struct fx *f = *state;
	new_ipc(f, 1);
	f->rec.drop_on_barrier = true;
	struct client a;
	client_connect(f, &a);
	/* three messages in one write: the drop stops the rest */
	size_t n;
	const char *msgs[] = {
		"{\"type\": \"init\", \"local_rank\": 0, \"client_id\": \"A\"}",
		"{\"type\": \"at_rcb_barrier\", \"local_rank\": 0, "
		"\"client_id\": \"A\"}",
		"{\"type\": \"past_rcb_barrier\", \"local_rank\": 0, "
		"\"client_id\": \"A\"}",
	};
	char *s = stream_of(msgs, 3, &n);
	client_write(&a, s, n);
	free(s);
	assert_true(run_until(f, got_eof, &a));
	assert_int_equal(f->rec.n_barrier, 1);
	assert_int_equal(f->rec.n_past, 0);
	assert_int_equal(f->rec.n_disc, 0);
	client_close(f, &a);
}

static void server_callback_frees_server(void **state)
{
	struct fx *f = *state;
	new_ipc(f, 1);
	f->rec.free_on_fault = true;
	struct client a;
	client_connect(f, &a);
	size_t n;
	const char *msgs[] = {
		"{\"type\": \"job_fault\", \"rank\": 0, \"local_rank\": 0, "
		"\"client_id\": \"A\"}",
		"{\"type\": \"past_rcb_barrier\", \"local_rank\": 0, "
		"\"client_id\": \"A\"}",
	};
	char *s = stream_of(msgs, 2, &n);
	client_write(&a, s, n);
	free(s);
	assert_true(run_until(f, got_eof, &a));
	assert_int_equal(f->rec.n_fault, 1);
	assert_int_equal(f->rec.n_past, 0);
	assert_null(f->ipc);
	client_close(f, &a);
}

int main(void)
{
	/* a worker may die while we write to it */
	signal(SIGPIPE, SIG_IGN);
	hp_log_level = HP_LOG_WARN;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(encode_is_big_endian),
		cmocka_unit_test(decode_one_message),
		cmocka_unit_test(decode_several_per_read),
		cmocka_unit_test(decode_split_at_every_byte),
		cmocka_unit_test(decode_zero_length_frame),
		cmocka_unit_test(decode_oversized_frame),
		cmocka_unit_test(decode_callback_can_stop),
		cmocka_unit_test_setup_teardown(server_path_and_stale_file,
						srv_setup, srv_teardown),
		cmocka_unit_test_setup_teardown(server_roundtrip, srv_setup,
						srv_teardown),
		cmocka_unit_test_setup_teardown(server_checkpoint_discovery,
						srv_setup, srv_teardown),
		cmocka_unit_test_setup_teardown(server_all_at_barrier,
						srv_setup, srv_teardown),
		cmocka_unit_test_setup_teardown(server_callback_drops_clients,
						srv_setup, srv_teardown),
		cmocka_unit_test_setup_teardown(server_callback_frees_server,
						srv_setup, srv_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
