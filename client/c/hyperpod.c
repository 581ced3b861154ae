/* hyperpod.c — libhyperpod's client: the socket, the framing, the reader
 * thread and the event queue. It writes JSON itself, exactly as Python's
 * json.dumps() does (", " and ": " separators, ASCII-only escapes, the
 * reference's key order), so the agent sees the same bytes from this library
 * as from the reference worker library; it reads JSON with cJSON. It must
 * never write to stderr, abort on a peer's bytes, or raise signals. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "hyperpod.h"

struct hp_rank_env {
	size_t n;
	char **keys;
	char **vals;
	char *aggregate;
};

struct event_node {
	struct event_node *next;
	struct hp_client_event ev;
};

/* A worker that never polls (it may rely on the callback alone) must not
 * grow without bound over a long job: past this, the oldest event goes. */
#define MAX_QUEUED 1024

struct hp_client {
	int sock;
	int evfd;   /* readable while the queue is non-empty or broken */
	int stopfd; /* written by hp_client_free to end the reader */
	int local_rank;
	char *client_id;
	pthread_t reader;

	pthread_mutex_t send_lock; /* one frame at a time on the socket */

	pthread_mutex_t lock; /* everything below */
	pthread_cond_t cond;
	struct event_node *head, *tail;
	size_t queued;
	bool evfd_set;
	int broken;     /* 0, or the -errno that ended the connection */
	bool waiting;   /* a hp_client_wait_barrier is between send and start */
	struct hp_rank_env *start; /* the job_start that released the waiter */
	hp_client_fault_cb fault_cb;
	void *fault_ud;
	bool in_fault_cb; /* the reader is running fault_cb right now */
};

/* Allocation failure in a worker is not something to recover from here
 * (STYLE rule 6); abort like the agent's xmalloc, without its logger. */
static void *must(void *p)
{
	if (!p)
		abort();
	return p;
}

static char *dupstr(const char *s)
{
	return must(strdup(s));
}

/* ------------------------------------------------------------ JSON writer */

struct sbuf {
	char *p;
	size_t len, cap;
};

static void sb_grow(struct sbuf *b, size_t more)
{
	if (b->len + more + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + more + 1)
		cap *= 2;
	b->p = must(realloc(b->p, cap));
	b->cap = cap;
}

static void sb_putn(struct sbuf *b, const char *s, size_t n)
{
	sb_grow(b, n);
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_puts(struct sbuf *b, const char *s)
{
	sb_putn(b, s, strlen(s));
}

static void sb_printf(struct sbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	char tmp[64];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		sb_putn(b, tmp,
		       (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Decodes one UTF-8 sequence at s (len bytes left); returns its length or
 * 0 when invalid (overlong, surrogate, beyond U+10FFFF, truncated). */
static size_t utf8_decode(const unsigned char *s, size_t len, uint32_t *cp)
{
	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	size_t n;
	uint32_t min;
	if ((s[0] & 0xe0) == 0xc0) {
		n = 2, min = 0x80, *cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		n = 3, min = 0x800, *cp = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		n = 4, min = 0x10000, *cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		*cp = (*cp << 6) | (s[i] & 0x3f);
	}
	if (*cp < min || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff))
		return 0;
	return n;
}

/* A JSON string as json.dumps(ensure_ascii=True) writes it: the short
 * escapes for " \ \n \r \t \b \f, everything outside ' '..'~' as \u00XX
 * (lowercase hex), astral code points as a surrogate pair. */
static int sb_json_str(struct sbuf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t len = strlen(s);
	sb_putn(b, "\"", 1);
	for (size_t i = 0; i < len;) {
		uint32_t cp;
		size_t n = utf8_decode(p + i, len - i, &cp);
		if (n == 0)
			return -EINVAL;
		i += n;
		switch (cp) {
		case '"': sb_puts(b, "\\\""); continue;
		case '\\': sb_puts(b, "\\\\"); continue;
		case '\n': sb_puts(b, "\\n"); continue;
		case '\r': sb_puts(b, "\\r"); continue;
		case '\t': sb_puts(b, "\\t"); continue;
		case '\b': sb_puts(b, "\\b"); continue;
		case '\f': sb_puts(b, "\\f"); continue;
		default: break;
		}
		if (cp >= 0x20 && cp <= 0x7e) {
			char ch = (char)cp;
			sb_putn(b, &ch, 1);
		} else if (cp < 0x10000) {
			sb_printf(b, "\\u%04x", (unsigned)cp);
		} else {
			cp -= 0x10000;
			sb_printf(b, "\\u%04x\\u%04x",
				  (unsigned)(0xd800 | (cp >> 10)),
				  (unsigned)(0xdc00 | (cp & 0x3ff)));
		}
	}
	sb_putn(b, "\"", 1);
	return 0;
}

/* "key": as json.dumps writes a dict entry, with the ", " before all but
 * the first. */
static void sb_key(struct sbuf *b, const char *key)
{
	if (b->len > 1)
		sb_puts(b, ", ");
	sb_json_str(b, key);
	sb_puts(b, ": ");
}

static int sb_str_or_null(struct sbuf *b, const char *s)
{
	if (!s) {
		sb_puts(b, "null");
		return 0;
	}
	return sb_json_str(b, s);
}

/* ---------------------------------------------------------------- sending */

static int send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Closes the message the caller began with "{" and its own fields: the
 * reference's sendall appends "type", "local_rank" and "client_id" in that
 * order (init already holds local_rank and client_id, so only "type" is
 * new there), then frames it with a 4-byte big-endian length. */
static int finish_and_send(struct hp_client *c, struct sbuf *b,
			   const char *type, bool is_init)
{
	if (!is_init) {
		sb_key(b, "type");
		sb_json_str(b, type);
		sb_key(b, "local_rank");
		sb_printf(b, "%d", c->local_rank);
		sb_key(b, "client_id");
		sb_json_str(b, c->client_id);
	} else {
		sb_key(b, "type");
		sb_json_str(b, type);
	}
	sb_puts(b, "}");

	int rc;
	if (b->len > HP_CLIENT_MAX_FRAME) {
		rc = -EMSGSIZE;
		goto out;
	}
	unsigned char hdr[4] = {
		(unsigned char)(b->len >> 24), (unsigned char)(b->len >> 16),
		(unsigned char)(b->len >> 8), (unsigned char)b->len};
	pthread_mutex_lock(&c->send_lock);
	rc = send_all(c->sock, hdr, sizeof(hdr));
	if (rc == 0)
		rc = send_all(c->sock, b->p, b->len);
	pthread_mutex_unlock(&c->send_lock);
out:
	free(b->p);
	b->p = NULL;
	return rc;
}

static int send_plain(struct hp_client *c, const char *type)
{
	struct sbuf b = {0};
	sb_puts(&b, "{");
	return finish_and_send(c, &b, type, false);
}

static int send_init(struct hp_client *c)
{
	struct sbuf b = {0};
	sb_puts(&b, "{");
	sb_key(&b, "local_rank");
	sb_printf(&b, "%d", c->local_rank);
	sb_key(&b, "client_id");
	sb_json_str(&b, c->client_id);
	return finish_and_send(c, &b, "init", true);
}

int hp_client_report_fault(struct hp_client *c, int rank, const char *reason,
			   const char *message, const char *restart_mode)
{
	struct sbuf b = {0};
	int rc = 0;
	sb_puts(&b, "{");
	sb_key(&b, "rank");
	sb_printf(&b, "%d", rank);
	sb_key(&b, "restart_mode");
	rc |= sb_json_str(&b, restart_mode ? restart_mode
					   : "in_process_restart");
	sb_key(&b, "reason");
	rc |= sb_str_or_null(&b, reason);
	sb_key(&b, "message");
	rc |= sb_str_or_null(&b, message);
	if (rc) {
		free(b.p);
		return -EINVAL;
	}
	return finish_and_send(c, &b, "job_fault", false);
}

int hp_client_send_data(struct hp_client *c, int rank, const char *data)
{
	struct sbuf b = {0};
	sb_puts(&b, "{");
	sb_key(&b, "rank");
	sb_printf(&b, "%d", rank);
	sb_key(&b, "data");
	if (sb_str_or_null(&b, data)) {
		free(b.p);
		return -EINVAL;
	}
	return finish_and_send(c, &b, "job_data", false);
}

int hp_client_send_labels(struct hp_client *c, const char *const *keys,
			  const char *const *values, size_t n)
{
	struct sbuf b = {0};
	int rc = 0;
	sb_puts(&b, "{");
	sb_key(&b, "labels");
	sb_puts(&b, "{");
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			sb_puts(&b, ", ");
		rc |= sb_json_str(&b, keys[i]);
		sb_puts(&b, ": ");
		rc |= sb_json_str(&b, values[i]);
	}
	sb_puts(&b, "}");
	if (rc) {
		free(b.p);
		return -EINVAL;
	}
	return finish_and_send(c, &b, "rank_labels", false);
}

/* ------------------------------------------------------- rank environment */

static struct hp_rank_env *env_from_msg(const cJSON *msg)
{
	struct hp_rank_env *env = must(calloc(1, sizeof(*env)));
	const cJSON *envs = cJSON_GetObjectItemCaseSensitive(msg, "worker_envs");
	size_t n = cJSON_IsObject(envs) ? (size_t)cJSON_GetArraySize(envs) : 0;
	env->keys = must(calloc(n + 1, sizeof(char *)));
	env->vals = must(calloc(n + 1, sizeof(char *)));
	const cJSON *it;
	if (n > 0) {
		cJSON_ArrayForEach(it, envs) {
			if (!it->string)
				continue;
			env->keys[env->n] = dupstr(it->string);
			if (cJSON_IsString(it))
				env->vals[env->n] = dupstr(it->valuestring);
			else if (cJSON_IsNull(it))
				env->vals[env->n] = dupstr("");
			else
				env->vals[env->n] =
					must(cJSON_PrintUnformatted(it));
			env->n++;
		}
	}
	const cJSON *agg =
		cJSON_GetObjectItemCaseSensitive(msg, "aggregate_worker_data");
	env->aggregate = agg ? must(cJSON_PrintUnformatted(agg))
			     : dupstr("null");
	return env;
}

const char *hp_rank_env_get(const struct hp_rank_env *env, const char *key)
{
	if (!env || !key)
		return NULL;
	for (size_t i = 0; i < env->n; i++)
		if (strcmp(env->keys[i], key) == 0)
			return env->vals[i];
	return NULL;
}

size_t hp_rank_env_count(const struct hp_rank_env *env)
{
	return env ? env->n : 0;
}

const char *hp_rank_env_key(const struct hp_rank_env *env, size_t i)
{
	return env && i < env->n ? env->keys[i] : NULL;
}

const char *hp_rank_env_value(const struct hp_rank_env *env, size_t i)
{
	return env && i < env->n ? env->vals[i] : NULL;
}

const char *hp_rank_env_aggregate_worker_data(const struct hp_rank_env *env)
{
	return env ? env->aggregate : NULL;
}

int hp_rank_env_apply(const struct hp_rank_env *env)
{
	for (size_t i = 0; env && i < env->n; i++)
		if (setenv(env->keys[i], env->vals[i], 1) < 0)
			return -errno;
	return 0;
}

void hp_rank_env_free(struct hp_rank_env *env)
{
	if (!env)
		return;
	for (size_t i = 0; i < env->n; i++) {
		free(env->keys[i]);
		free(env->vals[i]);
	}
	free(env->keys);
	free(env->vals);
	free(env->aggregate);
	free(env);
}

/* ------------------------------------------------------------ event queue */

void hp_client_event_fini(struct hp_client_event *ev)
{
	if (!ev)
		return;
	hp_rank_env_free(ev->env);
	free(ev->json);
	memset(ev, 0, sizeof(*ev));
}

/* evfd mirrors "queue non-empty or broken" as a level; called under lock. */
static void sync_evfd(struct hp_client *c)
{
	bool want = c->head != NULL || c->broken != 0;
	if (want == c->evfd_set)
		return;
	uint64_t v = 1;
	ssize_t n = want ? write(c->evfd, &v, sizeof(v))
			 : read(c->evfd, &v, sizeof(v));
	(void)n; /* non-blocking eventfd: neither can fail here */
	c->evfd_set = want;
}

static void enqueue(struct hp_client *c, const struct hp_client_event *ev)
{
	struct event_node *node = must(calloc(1, sizeof(*node)));
	node->ev = *ev;
	if (c->tail)
		c->tail->next = node;
	else
		c->head = node;
	c->tail = node;
	if (++c->queued > MAX_QUEUED) {
		struct event_node *old = c->head;
		c->head = old->next;
		hp_client_event_fini(&old->ev);
		free(old);
		c->queued--;
	}
	sync_evfd(c);
}

/* Drops queued faults: a released barrier starts a new run, and a fault
 * heard before it belongs to the old one. Called under lock. */
static void purge_faults(struct hp_client *c)
{
	struct event_node **pp = &c->head;
	c->tail = NULL;
	while (*pp) {
		struct event_node *node = *pp;
		if (node->ev.kind == HP_CLIENT_EVENT_FAULT) {
			*pp = node->next;
			c->queued--;
			hp_client_event_fini(&node->ev);
			free(node);
		} else {
			c->tail = node;
			pp = &node->next;
		}
	}
	sync_evfd(c);
}

int hp_client_poll(struct hp_client *c, struct hp_client_event *ev)
{
	int rc = 0;
	memset(ev, 0, sizeof(*ev));
	pthread_mutex_lock(&c->lock);
	struct event_node *node = c->head;
	if (node) {
		c->head = node->next;
		if (!c->head)
			c->tail = NULL;
		c->queued--;
		*ev = node->ev;
		free(node);
		rc = 1;
	} else {
		rc = c->broken;
	}
	sync_evfd(c);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int hp_client_fd(const struct hp_client *c)
{
	return c->evfd;
}

void hp_client_on_fault(struct hp_client *c, hp_client_fault_cb cb,
			void *userdata)
{
	pthread_mutex_lock(&c->lock);
	c->fault_cb = cb;
	c->fault_ud = userdata;
	/* Once this returns, the old callback is not running and will not
	 * run again, so its userdata may go (unless we are that callback). */
	while (c->in_fault_cb && !pthread_equal(pthread_self(), c->reader))
		pthread_cond_wait(&c->cond, &c->lock);
	pthread_mutex_unlock(&c->lock);
}

/* --------------------------------------------------------- reader thread */

static char *body_json(cJSON *msg)
{
	cJSON_DeleteItemFromObjectCaseSensitive(msg, "type");
	cJSON_DeleteItemFromObjectCaseSensitive(msg, "client_id");
	return must(cJSON_PrintUnformatted(msg));
}

/* One complete frame from the agent. Like the reference, invalid JSON and
 * messages without type/client_id are skipped; so are messages for another
 * client_id (several clients may share an agent, never a socket here). */
static void handle_frame(struct hp_client *c, const char *data, size_t len)
{
	cJSON *msg = cJSON_ParseWithLength(data, len);
	if (!cJSON_IsObject(msg))
		goto out;
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(msg, "type");
	const cJSON *cid = cJSON_GetObjectItemCaseSensitive(msg, "client_id");
	if (!cJSON_IsString(type) || !cJSON_IsString(cid) ||
	    strcmp(cid->valuestring, c->client_id) != 0)
		goto out;

	struct hp_client_event ev = {.restart_count = -1};
	const char *t = type->valuestring;
	if (strcmp(t, "job_start") == 0) {
		struct hp_rank_env *env = env_from_msg(msg);
		pthread_mutex_lock(&c->lock);
		if (c->waiting) {
			hp_rank_env_free(c->start);
			c->start = env;
			purge_faults(c);
			pthread_cond_broadcast(&c->cond);
		} else {
			ev.kind = HP_CLIENT_EVENT_START;
			ev.env = env;
			ev.json = body_json(msg);
			enqueue(c, &ev);
		}
		pthread_mutex_unlock(&c->lock);
	} else if (strcmp(t, "job_fault") == 0) {
		const cJSON *rcnt =
			cJSON_GetObjectItemCaseSensitive(msg, "restart_count");
		if (cJSON_IsNumber(rcnt) && rcnt->valuedouble >= INT_MIN &&
		    rcnt->valuedouble <= INT_MAX)
			ev.restart_count = (int)rcnt->valuedouble;
		ev.kind = HP_CLIENT_EVENT_FAULT;
		ev.json = body_json(msg);
		pthread_mutex_lock(&c->lock);
		enqueue(c, &ev);
		hp_client_fault_cb cb = c->fault_cb;
		void *ud = c->fault_ud;
		c->in_fault_cb = cb != NULL;
		pthread_mutex_unlock(&c->lock);
		if (cb) {
			cb(c, ev.restart_count, ud);
			pthread_mutex_lock(&c->lock);
			c->in_fault_cb = false;
			pthread_cond_broadcast(&c->cond);
			pthread_mutex_unlock(&c->lock);
		}
	} else {
		if (strcmp(t, "job_rank_info") == 0) {
			ev.kind = HP_CLIENT_EVENT_RANK_INFO;
			ev.env = env_from_msg(msg);
		} else if (strcmp(t, "job_failed_ranks") == 0) {
			ev.kind = HP_CLIENT_EVENT_FAILED_RANKS;
		} else if (strcmp(t, "invalid_response") == 0) {
			ev.kind = HP_CLIENT_EVENT_INVALID_RESPONSE;
		} else {
			goto out;
		}
		ev.json = body_json(msg);
		pthread_mutex_lock(&c->lock);
		enqueue(c, &ev);
		pthread_mutex_unlock(&c->lock);
	}
out:
	cJSON_Delete(msg);
}

/* Under the lock, so that whoever sees the hang-up also sees why. */
static void set_broken(struct hp_client *c, int err)
{
	pthread_mutex_lock(&c->lock);
	/* Stop talking to an agent that broke the connection or the framing. */
	shutdown(c->sock, SHUT_RDWR);
	if (!c->broken)
		c->broken = err;
	sync_evfd(c);
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

/* Reads until the agent closes, a frame is oversized, or stopfd fires.
 * Frames may arrive split across reads or several in one read. */
static void *reader_main(void *arg)
{
	struct hp_client *c = arg;
	size_t cap = 64 * 1024, len = 0;
	unsigned char *buf = must(malloc(cap));
	int err = 0;

	for (;;) {
		struct pollfd pfd[2] = {{.fd = c->sock, .events = POLLIN},
					{.fd = c->stopfd, .events = POLLIN}};
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			break;
		}
		if (pfd[1].revents)
			break;
		if (len == cap) {
			cap *= 2;
			buf = must(realloc(buf, cap));
		}
		ssize_t n = recv(c->sock, buf + len, cap - len, 0);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			err = -errno;
			break;
		}
		if (n == 0) {
			err = -ECONNRESET;
			break;
		}
		len += (size_t)n;

		size_t off = 0;
		while (len - off >= 4) {
			const unsigned char *h = buf + off;
			uint32_t flen = (uint32_t)h[0] << 24 |
					(uint32_t)h[1] << 16 |
					(uint32_t)h[2] << 8 | h[3];
			if (flen > HP_CLIENT_MAX_FRAME) {
				err = -EMSGSIZE;
				break;
			}
			if (len - off - 4 < flen)
				break;
			handle_frame(c, (const char *)h + 4, flen);
			off += 4 + flen;
		}
		if (err)
			break;
		memmove(buf, buf + off, len - off);
		len -= off;
	}
	free(buf);
	if (err)
		set_broken(c, err);
	return NULL;
}

/* -------------------------------------------------------------- lifetime */

static void uuid4(char out[37])
{
	unsigned char r[16];
	size_t got = 0;
	while (got < sizeof(r)) {
		ssize_t n = getrandom(r + got, sizeof(r) - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			abort(); /* the kernel has no randomness for us */
		}
		got += (size_t)n;
	}
	r[6] = (r[6] & 0x0f) | 0x40;
	r[8] = (r[8] & 0x3f) | 0x80;
	snprintf(out, 37,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
		 "%02x%02x%02x%02x%02x%02x",
		 r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9],
		 r[10], r[11], r[12], r[13], r[14], r[15]);
}

static int resolve_local_rank(int local_rank, int *out)
{
	if (local_rank >= 0) {
		*out = local_rank;
		return 0;
	}
	const char *s = getenv("LOCAL_RANK");
	if (!s || !*s) {
		*out = 0;
		return 0;
	}
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || v < 0 || v > INT_MAX)
		return -EINVAL;
	*out = (int)v;
	return 0;
}

static int open_socket(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno == EINTR)
			continue;
		int rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

int hp_client_connect(const char *path, int local_rank, const char *client_id,
		      struct hp_client **out)
{
	int rc, lr;
	*out = NULL;
	if (!path)
		path = getenv(HP_CLIENT_SOCKET_ENV);
	if (!path || !*path)
		return -EINVAL;
	rc = resolve_local_rank(local_rank, &lr);
	if (rc < 0)
		return rc;

	struct hp_client *c = must(calloc(1, sizeof(*c)));
	c->sock = c->evfd = c->stopfd = -1;
	c->local_rank = lr;
	if (client_id) {
		c->client_id = dupstr(client_id);
	} else {
		char id[37];
		uuid4(id);
		c->client_id = dupstr(id);
	}
	pthread_mutex_init(&c->send_lock, NULL);
	pthread_mutex_init(&c->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cond, &ca);
	pthread_condattr_destroy(&ca);

	c->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	c->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->evfd < 0 || c->stopfd < 0) {
		rc = -errno;
		goto fail;
	}
	c->sock = open_socket(path);
	if (c->sock < 0) {
		rc = c->sock;
		goto fail;
	}
	/* init before the reader starts, so it is the first frame sent. */
	rc = send_init(c);
	if (rc < 0)
		goto fail;

	/* The reader must never take a signal meant for the application. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = -pthread_create(&c->reader, NULL, reader_main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc < 0)
		goto fail;
	*out = c;
	return 0;
fail:
	if (c->sock >= 0)
		close(c->sock);
	if (c->evfd >= 0)
		close(c->evfd);
	if (c->stopfd >= 0)
		close(c->stopfd);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->send_lock);
	free(c->client_id);
	free(c);
	return rc;
}

void hp_client_free(struct hp_client *c)
{
	if (!c)
		return;
	uint64_t one = 1;
	ssize_t n = write(c->stopfd, &one, sizeof(one));
	(void)n; /* an eventfd write of 1 cannot fail here */
	pthread_join(c->reader, NULL);
	close(c->sock);
	close(c->evfd);
	close(c->stopfd);
	while (c->head) {
		struct event_node *node = c->head;
		c->head = node->next;
		hp_client_event_fini(&node->ev);
		free(node);
	}
	hp_rank_env_free(c->start);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->send_lock);
	free(c->client_id);
	free(c);
}

const char *hp_client_id(const struct hp_client *c)
{
	return c->client_id;
}

int hp_client_local_rank(const struct hp_client *c)
{
	return c->local_rank;
}

/* ---------------------------------------------------------------- barrier */

int hp_client_wait_barrier(struct hp_client *c, int timeout_ms,
			   struct hp_rank_env **out)
{
	struct timespec deadline;
	int rc;
	if (out)
		*out = NULL;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	if (timeout_ms >= 0) {
		deadline.tv_sec += timeout_ms / 1000;
		deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
		if (deadline.tv_nsec >= 1000000000L) {
			deadline.tv_sec++;
			deadline.tv_nsec -= 1000000000L;
		}
	}

	/* Arm before sending: a job_start can only answer this request. */
	pthread_mutex_lock(&c->lock);
	hp_rank_env_free(c->start);
	c->start = NULL;
	rc = c->broken;
	c->waiting = rc == 0;
	pthread_mutex_unlock(&c->lock);
	if (rc < 0)
		return rc;

	rc = send_plain(c, "at_rcb_barrier");

	pthread_mutex_lock(&c->lock);
	while (rc == 0 && !c->start && !c->broken) {
		if (timeout_ms < 0)
			pthread_cond_wait(&c->cond, &c->lock);
		else
			rc = -pthread_cond_timedwait(&c->cond, &c->lock,
						     &deadline);
	}
	struct hp_rank_env *env = c->start;
	c->start = NULL;
	c->waiting = false;
	if (env)
		rc = 0; /* a start that raced the timeout still counts */
	else if (rc == 0)
		rc = c->broken;
	pthread_mutex_unlock(&c->lock);
	if (rc < 0) {
		hp_rank_env_free(env);
		return rc;
	}

	rc = send_plain(c, "past_rcb_barrier");
	if (rc < 0 || !out)
		hp_rank_env_free(env);
	else
		*out = env;
	return rc;
}
