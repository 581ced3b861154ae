/* logs.c — worker output plumbing. A redirected stream goes straight to its
 * file (the child writes it, no copy through us); a teed stream goes
 * through a pipe the agent reads, writing the bytes to the file and each
 * line, prefixed, to our stdout/stderr. Never interprets the output beyond
 * splitting lines, and never blocks on our own stdout/stderr: console
 * copies go through hp_console_write, which drops (and counts) lines a
 * stalled reader cannot take, while the files keep every byte. */
#include "logs.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "base/xalloc.h"

#define LINE_MAX_BYTES (64 * 1024)

struct relay {
	struct hp_logs *logs;
	int local_rank;
	int stream;       /* 1 or 2 */
	int child_fd;     /* the end the child gets; -1 once closed */
	int file_fd;      /* -1 = no file */
	/* the child creates the file before exec; the agent opens it at the
	 * first byte it relays (none may ever come) */
	const char *file_later;
	bool console;     /* prefix and copy to our stream */
	bool raw_console; /* copy the bytes, unprefixed, to our stream */
	/* heap-allocated per attempt: a closing handle cannot be reused, and
	 * the next attempt may start before its close callback ran */
	uv_pipe_t *pipe;
	char *line;
	size_t line_len;
};

struct rank_logs {
	char *dir;
	char *error_file;
	char *files[2]; /* stdout.log, stderr.log */
	struct hp_spawn_fs fs;
	char *prefix; /* hp_logs_set_prefix; NULL = "[<role><i>]:" */
	struct relay r[2];
};

struct hp_logs {
	uv_loop_t *loop;
	const struct hp_config *cfg;
	char *tmp_root; /* removed on free, when we made it */
	char *run_dir;
	char *attempt_dir;
	int nproc;
	int attempt;
	struct rank_logs *ranks;
	hp_logs_line_cb line_cb;
	void *line_ud;
	int closing; /* relay pipes whose close callback is pending */
};

static int mkdir_p(const char *path)
{
	char *tmp = xstrdup(path);
	int rc = 0;
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST) {
			rc = -errno;
			goto out;
		}
		*p = '/';
	}
	if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
		rc = -errno;
out:
	free(tmp);
	return rc;
}

struct hp_logs *hp_logs_new(uv_loop_t *loop, const struct hp_config *cfg,
			    const char *run_id, int nproc)
{
	struct hp_logs *l = xcalloc(1, sizeof(*l));
	l->loop = loop;
	l->cfg = cfg;
	l->nproc = nproc;
	l->attempt = -1;
	l->ranks = xcalloc((size_t)nproc, sizeof(*l->ranks));
	for (int i = 0; i < nproc; i++)
		for (int s = 0; s < 2; s++)
			l->ranks[i].r[s] = (struct relay){
				.logs = l, .local_rank = i, .stream = s + 1,
				.child_fd = -1, .file_fd = -1};

	const char *base = cfg->log_dir;
	if (!base) {
		const char *tmpdir = getenv("TMPDIR");
		char *tmpl = xasprintf("%s/torchelastic_XXXXXX",
				       tmpdir && *tmpdir ? tmpdir : "/tmp");
		if (!mkdtemp(tmpl)) {
			hp_error("logs", "cannot create a log directory %s: %s",
				 tmpl, strerror(errno));
			free(tmpl);
			goto fail;
		}
		l->tmp_root = tmpl;
		base = tmpl;
	} else {
		int rc = mkdir_p(base);
		if (rc < 0) {
			hp_error("logs", "cannot create --log-dir %s: %s", base,
				 strerror(-rc));
			goto fail;
		}
	}
	char *tmpl = xasprintf("%s/%s_XXXXXX", base, run_id);
	if (!mkdtemp(tmpl)) {
		hp_error("logs", "cannot create the run log directory %s: %s",
			 tmpl, strerror(errno));
		free(tmpl);
		goto fail;
	}
	l->run_dir = tmpl;
	return l;
fail:
	hp_logs_free(l);
	return NULL;
}

static void free_paths(struct rank_logs *rl)
{
	free(rl->dir);
	free(rl->error_file);
	free(rl->files[0]);
	free(rl->files[1]);
}

const char *hp_logs_run_dir(const struct hp_logs *l)
{
	return l->run_dir;
}

void hp_logs_set_line_cb(struct hp_logs *l, hp_logs_line_cb cb, void *ud)
{
	l->line_cb = cb;
	l->line_ud = ud;
}

int hp_logs_begin_attempt(struct hp_logs *l, int attempt)
{
	/* paths only: each child makes its attempt and rank directory (and
	 * unlinks a stale error file there) before it execs */
	l->attempt = attempt;
	free(l->attempt_dir);
	l->attempt_dir = xasprintf("%s/attempt_%d", l->run_dir, attempt);
	for (int i = 0; i < l->nproc; i++) {
		struct rank_logs *rl = &l->ranks[i];
		free_paths(rl);
		rl->dir = xasprintf("%s/%d", l->attempt_dir, i);
		rl->error_file = xasprintf("%s/error.json", rl->dir);
		rl->files[0] = xasprintf("%s/stdout.log", rl->dir);
		rl->files[1] = xasprintf("%s/stderr.log", rl->dir);
	}
	return 0;
}

const struct hp_spawn_fs *hp_logs_rank_fs(const struct hp_logs *l,
					  int local_rank)
{
	return &l->ranks[local_rank].fs;
}

const char *hp_logs_error_file(const struct hp_logs *l, int local_rank)
{
	return l->ranks[local_rank].error_file;
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return; /* a full disk: nothing better to do */
		}
		p += w;
		n -= (size_t)w;
	}
}

static void emit_line(struct relay *r, const char *p, size_t n)
{
	struct hp_logs *l = r->logs;
	if (r->console) {
		char prefix[96];
		const char *custom = l->ranks[r->local_rank].prefix;
		int pl = custom ? snprintf(prefix, sizeof(prefix), "%s", custom)
				: snprintf(prefix, sizeof(prefix), "[%s%d]:",
					   l->cfg->role, r->local_rank);
		pl = HP_MIN(pl, (int)sizeof(prefix) - 1);
		/* one write per line so lines of different ranks never mix */
		size_t tot = (size_t)pl + n + 1;
		char stackbuf[4096];
		char *buf = tot <= sizeof(stackbuf) ? stackbuf : xmalloc(tot);
		memcpy(buf, prefix, (size_t)pl);
		memcpy(buf + pl, p, n);
		buf[tot - 1] = '\n';
		hp_console_write(r->stream, buf, tot);
		if (buf != stackbuf)
			free(buf);
	}
	if (l->line_cb)
		l->line_cb(l->line_ud, r->local_rank, r->stream, p, n);
}

static void consume(struct relay *r, const char *p, size_t n)
{
	if (r->file_later) {
		/* the child made it before exec, and these bytes come from
		 * the exec'd program */
		r->file_fd = open(r->file_later,
				  O_WRONLY | O_APPEND | O_CLOEXEC);
		if (r->file_fd < 0)
			hp_error("logs", "cannot open %s: %s", r->file_later,
				 strerror(errno));
		r->file_later = NULL;
	}
	if (r->file_fd >= 0)
		write_all(r->file_fd, p, n);
	if (r->raw_console)
		hp_console_write(r->stream, p, n);
	while (n) {
		const char *nl = memchr(p, '\n', n);
		size_t take = nl ? (size_t)(nl - p) : n;
		if (r->line_len + take > LINE_MAX_BYTES) {
			/* an endless line: flush what we have as a line */
			emit_line(r, r->line, r->line_len);
			r->line_len = 0;
		}
		if (nl && r->line_len == 0) {
			emit_line(r, p, take);
		} else {
			if (!r->line)
				r->line = xmalloc(LINE_MAX_BYTES);
			size_t room = LINE_MAX_BYTES - r->line_len;
			size_t c = HP_MIN(take, room);
			memcpy(r->line + r->line_len, p, c);
			r->line_len += c;
			if (nl) {
				emit_line(r, r->line, r->line_len);
				r->line_len = 0;
			}
		}
		if (!nl)
			break;
		p += take + 1;
		n -= take + 1;
	}
}

static void flush_partial(struct relay *r)
{
	if (r->line_len) {
		emit_line(r, r->line, r->line_len);
		r->line_len = 0;
	}
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static char slab[65536];
	(void)h;
	(void)suggested;
	/* the loop is single-threaded and consume() copies out at once */
	buf->base = slab;
	buf->len = sizeof(slab);
}

static void relay_closed(uv_handle_t *h)
{
	struct hp_logs *l = h->data;
	l->closing--;
	free(h);
}

static void relay_stop(struct relay *r)
{
	if (r->pipe) {
		r->pipe->data = r->logs;
		r->logs->closing++;
		uv_close((uv_handle_t *)r->pipe, relay_closed);
		r->pipe = NULL;
	}
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct relay *r = s->data;
	if (n > 0) {
		consume(r, buf->base, (size_t)n);
		return;
	}
	if (n < 0) {
		flush_partial(r);
		relay_stop(r);
	}
}

int hp_logs_open_rank(struct hp_logs *l, int local_rank, int *out_fd,
		      int *err_fd)
{
	struct rank_logs *rl = &l->ranks[local_rank];
	const struct hp_config *c = l->cfg;
	bool shown = hp_config_rank_shown(c, local_rank);
	enum hp_std red = hp_std_for_rank(&c->redirects, local_rank);
	enum hp_std tee = hp_std_for_rank(&c->tee, local_rank);
	int *outs[2] = {out_fd, err_fd};

	rl->fs = (struct hp_spawn_fs){.dirs = {l->attempt_dir, rl->dir},
				      .stale = rl->error_file};
	for (int s = 0; s < 2; s++) {
		struct relay *r = &rl->r[s];
		unsigned bit = (unsigned)(s + 1);
		bool teed = (unsigned)tee & bit;
		bool redirected = teed || ((unsigned)red & bit) || !shown;
		*outs[s] = -1;
		r->console = teed && shown;
		r->raw_console = false;
		r->line_len = 0;
		r->file_later = NULL;
		if (redirected)
			rl->fs.files[s] = rl->files[s];
		bool relay = r->console || (l->line_cb && (shown || redirected));
		if (!relay) {
			/* the child opens the file onto its fd itself */
			rl->fs.dup[s] = redirected;
			continue;
		}
		r->file_later = redirected ? rl->files[s] : NULL;
		if (!redirected) {
			/* relayed only for the line callback: keep the
			 * console as it would be without us */
			r->console = false;
			r->raw_console = true;
		}
		int p[2];
		if (pipe2(p, O_CLOEXEC) < 0) {
			int e = errno;
			hp_error("logs", "pipe: %s", strerror(e));
			return -e;
		}
		r->pipe = xmalloc(sizeof(*r->pipe));
		uv_pipe_init(l->loop, r->pipe, 0);
		r->pipe->data = r;
		int rc = uv_pipe_open(r->pipe, p[0]);
		if (rc < 0) {
			close(p[0]);
			close(p[1]);
			hp_error("logs", "uv_pipe_open: %s", uv_strerror(rc));
			relay_stop(r);
			return rc;
		}
		r->child_fd = p[1];
		*outs[s] = p[1];
	}
	return 0;
}

void hp_logs_started_rank(struct hp_logs *l, int local_rank)
{
	struct rank_logs *rl = &l->ranks[local_rank];
	for (int s = 0; s < 2; s++) {
		struct relay *r = &rl->r[s];
		if (r->child_fd >= 0) {
			close(r->child_fd);
			r->child_fd = -1;
		}
		if (r->pipe)
			uv_read_start((uv_stream_t *)r->pipe, alloc_cb,
				      read_cb);
	}
}

void hp_logs_drain_rank(struct hp_logs *l, int local_rank)
{
	struct rank_logs *rl = &l->ranks[local_rank];
	for (int s = 0; s < 2; s++) {
		struct relay *r = &rl->r[s];
		if (!r->pipe)
			continue;
		uv_os_fd_t fd;
		if (uv_fileno((uv_handle_t *)r->pipe, &fd) < 0)
			continue;
		char buf[65536];
		for (;;) {
			ssize_t n = read(fd, buf, sizeof(buf));
			if (n > 0) {
				consume(r, buf, (size_t)n);
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			break; /* EAGAIN (a grandchild keeps it open) or EOF */
		}
		flush_partial(r);
	}
}

void hp_logs_close_rank(struct hp_logs *l, int local_rank)
{
	struct rank_logs *rl = &l->ranks[local_rank];
	for (int s = 0; s < 2; s++) {
		struct relay *r = &rl->r[s];
		flush_partial(r);
		relay_stop(r);
		if (r->child_fd >= 0) {
			close(r->child_fd);
			r->child_fd = -1;
		}
		if (r->file_fd >= 0) {
			close(r->file_fd);
			r->file_fd = -1;
		}
		r->file_later = NULL;
	}
}

static int rm_entry(const char *path, const struct stat *sb, int flag,
		    struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	/* by type, as nftw tells it: remove() would try unlink on every
	 * directory first and fail */
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

void hp_logs_keep(struct hp_logs *l)
{
	if (!l || !l->tmp_root)
		return;
	free(l->tmp_root);
	l->tmp_root = NULL;
}

void hp_logs_free(struct hp_logs *l)
{
	if (!l)
		return;
	for (int i = 0; i < l->nproc; i++) {
		hp_logs_close_rank(l, i);
		free_paths(&l->ranks[i]);
		free(l->ranks[i].prefix);
		for (int s = 0; s < 2; s++)
			free(l->ranks[i].r[s].line);
	}
	/* the relays' close callbacks must run before the memory goes */
	while (l->closing > 0)
		uv_run(l->loop, UV_RUN_NOWAIT);
	if (l->tmp_root)
		nftw(l->tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(l->tmp_root);
	free(l->run_dir);
	free(l->attempt_dir);
	free(l->ranks);
	free(l);
}

void hp_logs_set_prefix(struct hp_logs *l, int local_rank, const char *prefix)
{
	free(l->ranks[local_rank].prefix);
	l->ranks[local_rank].prefix = xstrdup_or_null(prefix);
}
