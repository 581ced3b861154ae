/* log.c — formats diagnostic lines and owns the console writer. It is the
 * only writer of stderr in the agent, and worker lines teed to our
 * stdout/stderr (agent/logs.c) come through here too, so that no thread
 * of ours ever blocks on a console nobody reads (a paused terminal, a
 * stuck log shipper): a line either goes out at once without blocking
 * (RWF_NOWAIT), waits in a bounded per-fd queue drained by a writer
 * thread, or is dropped and counted. One line per write call, so lines
 * from threads never interleave mid-line. Messages are escaped here, once
 * for every caller: control characters from a request or a peer can never
 * end a line early, forge a "[hyperpodrun] ..." line or drive a terminal. */
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum hp_log_level hp_log_level = HP_LOG_INFO;

static const char *const level_names[] = {"DEBUG", "INFO", "WARNING",
					  "ERROR"};

int hp_log_parse_level(const char *s, enum hp_log_level *out)
{
	static const struct {
		const char *name;
		enum hp_log_level lvl;
	} table[] = {
		{"debug", HP_LOG_DEBUG},    {"trace", HP_LOG_DEBUG},
		{"info", HP_LOG_INFO},      {"warning", HP_LOG_WARN},
		{"warn", HP_LOG_WARN},      {"error", HP_LOG_ERROR},
		{"critical", HP_LOG_ERROR}, {"off", HP_LOG_OFF},
	};
	for (size_t i = 0; i < HP_ARRAY_LEN(table); i++) {
		if (strcasecmp(s, table[i].name) == 0) {
			*out = table[i].lvl;
			return 0;
		}
	}
	return -EINVAL;
}

/* ------------------------------------------------------------ console */

#define CONSOLE_CAP (1024 * 1024)

/* One per process fd (1 and 2): these are process-wide by nature, so
 * their queues are too. ring[head, head+len) (mod CONSOLE_CAP) waits to
 * be written; the writer thread is the only one that advances head, and
 * writes straight from the ring with mu released (producers only fill the
 * free part). */
struct console {
	pthread_mutex_t mu;
	pthread_cond_t more;    /* the writer waits for bytes */
	pthread_cond_t written; /* flushers wait for progress */
	int fd;
	char *ring;
	size_t head, len;
	bool thread_up, writing, gone;
	int nowait; /* 1: RWF_NOWAIT works, 0: unknown, -1: it does not */
	bool regular; /* a regular file: a plain write never stalls for long */
	unsigned long long dropped_since; /* not yet reported */
	unsigned long long progress;      /* bytes written so far */
};

static struct console consoles[2] = {
	{PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
	 PTHREAD_COND_INITIALIZER, 1, NULL, 0, 0, false, false, false, 0,
	 false, 0, 0},
	{PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
	 PTHREAD_COND_INITIALIZER, 2, NULL, 0, 0, false, false, false, 0,
	 false, 0, 0},
};
static atomic_ullong console_dropped_total;
static pthread_once_t console_atexit_once = PTHREAD_ONCE_INIT;

static void console_at_exit(void)
{
	hp_console_flush(1.0);
}

static void register_at_exit(void)
{
	atexit(console_at_exit);
}

static void *console_main(void *arg)
{
	struct console *c = arg;
	pthread_mutex_lock(&c->mu);
	for (;;) {
		while (c->len == 0) {
			c->writing = false;
			pthread_cond_broadcast(&c->written);
			pthread_cond_wait(&c->more, &c->mu);
		}
		c->writing = true;
		size_t n = HP_MIN(c->len, (size_t)CONSOLE_CAP - c->head);
		const char *p = c->ring + c->head;
		pthread_mutex_unlock(&c->mu);
		ssize_t w = write(c->fd, p, n);
		int e = errno;
		if (w < 0 && e == EAGAIN) {
			/* someone made the shared description non-blocking */
			struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
			poll(&pfd, 1, 1000);
		}
		pthread_mutex_lock(&c->mu);
		if (w > 0) {
			c->head = (c->head + (size_t)w) % CONSOLE_CAP;
			c->len -= (size_t)w;
			c->progress += (size_t)w;
		} else if (w < 0 && e != EINTR && e != EAGAIN) {
			/* EPIPE, EBADF: the console is gone for good */
			c->gone = true;
			c->head = c->len = 0;
		}
		pthread_cond_broadcast(&c->written);
	}
	return NULL;
}

/* mu held. */
static void console_start_locked(struct console *c)
{
	if (c->thread_up)
		return;
	pthread_once(&console_atexit_once, register_at_exit);
	if (!c->ring) {
		c->ring = malloc(CONSOLE_CAP);
		if (!c->ring)
			return;
	}
	/* Every signal stays with the loop thread; EPIPE comes back as an
	 * error here, not as SIGPIPE. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_t t;
	int e = pthread_create(&t, NULL, console_main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e == 0) {
		pthread_detach(t);
		c->thread_up = true;
	}
}

/* mu held. Appends n bytes (they fit). */
static void ring_put(struct console *c, const char *p, size_t n)
{
	size_t tail = (c->head + c->len) % CONSOLE_CAP;
	size_t first = HP_MIN(n, (size_t)CONSOLE_CAP - tail);
	memcpy(c->ring + tail, p, first);
	memcpy(c->ring, p + first, n - first);
	c->len += n;
}

/* mu held; the queue is empty and nobody writes. Writes what goes out
 * without blocking; returns the bytes written. */
static size_t try_direct(struct console *c, const char *p, size_t n)
{
	if (c->nowait == 0) {
		struct stat st;
		c->regular = fstat(c->fd, &st) == 0 && S_ISREG(st.st_mode);
	}
	size_t done = 0;
	while (done < n) {
		ssize_t w;
		if (c->regular) {
			w = write(c->fd, p + done, n - done);
		} else if (c->nowait >= 0) {
			struct iovec v = {(void *)(p + done), n - done};
			w = pwritev2(c->fd, &v, 1, -1, RWF_NOWAIT);
			if (w < 0 && (errno == EOPNOTSUPP || errno == EINVAL ||
				      errno == ENOSYS)) {
				c->nowait = -1; /* a tty, a socket */
				break;
			}
			if (w >= 0)
				c->nowait = 1;
		} else {
			break;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno != EAGAIN) {
			c->gone = true;
			return n;
		}
		if (w <= 0)
			break;
		done += (size_t)w;
		c->progress += (size_t)w;
	}
	return done;
}

static unsigned long long count_lines(const char *p, size_t n)
{
	unsigned long long k = 0;
	for (const char *e = p + n; (p = memchr(p, '\n', (size_t)(e - p)));
	     p++)
		k++;
	return k ? k : 1;
}

/* mu held. The notice for lines dropped earlier, once they fit again. */
static void put_drop_notice(struct console *c)
{
	char note[160];
	int k = snprintf(note, sizeof(note),
			 "[hyperpodrun] WARNING console %d: %llu line(s) to "
			 "%s dropped: it is not read fast enough\n",
			 (int)getpid(), c->dropped_since,
			 c->fd == 1 ? "stdout" : "stderr");
	if (k > 0 && (size_t)k <= CONSOLE_CAP - c->len) {
		ring_put(c, note, (size_t)k);
		c->dropped_since = 0;
	}
}

int hp_console_write(int fd, const char *p, size_t n)
{
	if (fd != 1 && fd != 2)
		return -EBADF;
	struct console *c = &consoles[fd - 1];
	int rc = 0;
	pthread_mutex_lock(&c->mu);
	if (c->gone)
		goto out; /* nobody will ever read it: not a drop */
	if (c->len == 0 && !c->writing && !c->dropped_since) {
		size_t done = try_direct(c, p, n);
		p += done;
		n -= done;
		if (n == 0 || c->gone)
			goto out;
	}
	console_start_locked(c);
	if (!c->thread_up || n > CONSOLE_CAP - c->len) {
		unsigned long long k = count_lines(p, n);
		c->dropped_since += k;
		atomic_fetch_add(&console_dropped_total, k);
		rc = -ENOBUFS;
		goto out;
	}
	if (c->dropped_since)
		put_drop_notice(c);
	if (n <= CONSOLE_CAP - c->len) {
		ring_put(c, p, n);
	} else {
		c->dropped_since += count_lines(p, n);
		atomic_fetch_add(&console_dropped_total, count_lines(p, n));
		rc = -ENOBUFS;
	}
	pthread_cond_signal(&c->more);
out:
	pthread_mutex_unlock(&c->mu);
	return rc;
}

unsigned long long hp_console_dropped(void)
{
	return atomic_load(&console_dropped_total);
}

static double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void hp_console_flush(double stall_s)
{
	for (int i = 0; i < 2; i++) {
		struct console *c = &consoles[i];
		pthread_mutex_lock(&c->mu);
		unsigned long long seen = c->progress;
		double since = mono_now();
		while (c->thread_up && !c->gone && (c->len || c->writing)) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 100 * 1000 * 1000;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&c->written, &c->mu, &ts);
			if (c->progress != seen) {
				seen = c->progress;
				since = mono_now();
			} else if (mono_now() - since >= stall_s) {
				break;
			}
		}
		pthread_mutex_unlock(&c->mu);
	}
}

/* ------------------------------------------------------------- escape */

/* Escapes one byte into out (room for 4); returns the bytes used, 0 when
 * it needs none. U+0080..U+009F (C2 80..C2 9F) are C1 controls. */
static size_t escape_byte(const unsigned char *s, char *out, size_t *skip)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char ch = s[0];
	*skip = 1;
	if (ch == 0xc2 && s[1] >= 0x80 && s[1] <= 0x9f) {
		*skip = 2;
		ch = s[1];
	} else if (ch >= 0x20 && ch != 0x7f) {
		return 0;
	}
	out[0] = '\\';
	if (ch == '\n' || ch == '\r' || ch == '\t') {
		out[1] = ch == '\n' ? 'n' : ch == '\r' ? 'r' : 't';
		return 2;
	}
	out[1] = 'x';
	out[2] = hex[ch >> 4];
	out[3] = hex[ch & 15];
	return 4;
}

/* Escapes s[0..n) in place within buf (capacity cap); returns the new
 * length, truncated to fit. With multiline, newlines stay and a line that
 * would start like one of ours ("[hyperpodrun]") is indented. */
static size_t escape_in_place(char *buf, size_t n, size_t cap, bool multiline)
{
	static const char mark[] = "[hyperpodrun]";
	bool any = false;
	for (size_t i = 0; i < n && !any; i++) {
		unsigned char ch = (unsigned char)buf[i];
		any = ch < 0x20 || ch == 0x7f || ch == 0xc2;
	}
	if (!any)
		return n;
	char tmp[4096 * 4];
	size_t o = 0;
	buf[n] = '\0'; /* escape_byte looks one byte ahead */
	for (size_t i = 0; i < n && o + 4 < sizeof(tmp);) {
		if (multiline && buf[i] == '\n') {
			tmp[o++] = '\n';
			i++;
			if (n - i >= sizeof(mark) - 1 &&
			    memcmp(buf + i, mark, sizeof(mark) - 1) == 0 &&
			    o + 2 < sizeof(tmp)) {
				tmp[o++] = ' ';
				tmp[o++] = ' ';
			}
			continue;
		}
		size_t skip;
		size_t k = escape_byte((const unsigned char *)buf + i, tmp + o,
				       &skip);
		if (!k)
			tmp[o++] = buf[i];
		o += k;
		i += skip;
	}
	o = HP_MIN(o, cap);
	memcpy(buf, tmp, o);
	return o;
}

/* ---------------------------------------------------------------- log */

static void vwrite_line(const char *level, const char *component,
			bool multiline, const char *fmt, va_list ap)
{
	char buf[4096];
	int saved = errno;
	int n = snprintf(buf, sizeof(buf), "[hyperpodrun] %s %s %d: ", level,
			 component, (int)getpid());
	if (n < 0)
		n = 0;
	int m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	if (m < 0)
		m = 0;
	size_t mlen = HP_MIN((size_t)m, sizeof(buf) - (size_t)n - 2);
	mlen = escape_in_place(buf + n, mlen, sizeof(buf) - (size_t)n - 2,
			       multiline);
	size_t len = (size_t)n + mlen;
	buf[len++] = '\n';
	hp_console_write(STDERR_FILENO, buf, len);
	errno = saved;
}

void hp_log_write(enum hp_log_level lvl, const char *component, const char *fmt,
		  ...)
{
	va_list ap;
	va_start(ap, fmt);
	vwrite_line(level_names[lvl < HP_LOG_OFF ? lvl : HP_LOG_ERROR],
		    component, false, fmt, ap);
	va_end(ap);
}

void hp_log_write_lines(enum hp_log_level lvl, const char *component,
			const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vwrite_line(level_names[lvl < HP_LOG_OFF ? lvl : HP_LOG_ERROR],
		    component, true, fmt, ap);
	va_end(ap);
}

void hp_bug_at(const char *file, int line, const char *fmt, ...)
{
	char where[256];
	snprintf(where, sizeof(where), "BUG %s:%d", file, line);
	va_list ap;
	va_start(ap, fmt);
	vwrite_line("BUG", where, false, fmt, ap);
	va_end(ap);
	hp_console_flush(1.0);
	abort();
}
