/* ipc.c — the worker IPC server of the in-process restart: the unix socket
 * on the agent's libuv loop, the length-prefixed JSON frames, the
 * client_id registrations and the per-rank barrier state.
 * DESIGN.md keeps cJSON inside server/json.c and the resource-config
 * writer; this file is the third user, because the wire format to the
 * workers is JSON. cJSON trees never leave this file: the agent gets ints,
 * strings and JSON texts through struct hp_ipc_callbacks.
 * A worker can send anything: no input may crash the agent or make it
 * allocate more than HP_IPC_MAX_FRAME per connection. */
#include "ipc.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/log.h"
#include "base/xalloc.h"

#define COMP "ipc"
/* A decoder keeps a buffer this large between frames; a bigger one is
 * released after its frame so an idle client holds little memory. */
#define KEEP_BUF (64u * 1024u)
/* The reference client shares one socket between its IPR and checkpoint
 * clients; a few client_ids per connection is normal, thousands is not. */
#define MAX_REGS_PER_CONN 64
/* client_ids of the whole agent: past it the client that inits one more
 * is dropped (a loop of inits must not grow the table for ever) */
#define MAX_REGS_TOTAL 4096
/* Bytes queued to one client and not yet taken by it: a client that never
 * reads is dropped past this instead of growing the agent (one message is
 * always let through, however large, when nothing else is queued). */
#define MAX_QUEUED_BYTES (16u * 1024u * 1024u)
/* Open connections: a few per worker (IPR and checkpoint clients); past
 * this a new one is closed at once, so that no client can take the
 * agent's descriptors. */
#define MAX_CONNS(ipc) (8u * (unsigned)(ipc)->local_world_size + 32u)

/* ---- frame codec ---------------------------------------------------------- */

struct hp_ipc_decoder {
	size_t max;
	unsigned char hdr[4];
	size_t hdr_have; /* bytes of the length prefix seen, 0..4 */
	size_t need;     /* payload length of the current frame */
	size_t have;     /* payload bytes buffered */
	char *buf;
	size_t cap;
	bool broken;     /* an oversized prefix was seen */
};

struct hp_ipc_decoder *hp_ipc_decoder_new(size_t max_frame)
{
	struct hp_ipc_decoder *d = xcalloc(1, sizeof(*d));
	d->max = max_frame;
	return d;
}

void hp_ipc_decoder_free(struct hp_ipc_decoder *d)
{
	if (!d)
		return;
	free(d->buf);
	free(d);
}

int hp_ipc_decoder_feed(struct hp_ipc_decoder *d, const char *buf, size_t n,
			hp_ipc_msg_cb *cb, void *ud)
{
	const char *p = buf;
	int r;

	if (d->broken)
		return -EMSGSIZE;
	for (;;) {
		if (d->hdr_have < 4) {
			if (n == 0)
				return 0;
			size_t k = HP_MIN(4 - d->hdr_have, n);
			memcpy(d->hdr + d->hdr_have, p, k);
			d->hdr_have += k;
			p += k;
			n -= k;
			if (d->hdr_have < 4)
				return 0;
			uint32_t len = (uint32_t)d->hdr[0] << 24 |
				       (uint32_t)d->hdr[1] << 16 |
				       (uint32_t)d->hdr[2] << 8 |
				       (uint32_t)d->hdr[3];
			if (len > d->max) {
				d->broken = true;
				return -EMSGSIZE;
			}
			d->need = len;
			d->have = 0;
		}
		/* A frame wholly inside this read goes out without a copy. */
		if (d->have == 0 && n >= d->need) {
			const char *msg = p;
			size_t len = d->need;
			p += len;
			n -= len;
			d->hdr_have = 0;
			if ((r = cb(ud, msg, len)) != 0)
				return r;
			continue;
		}
		if (n == 0)
			return 0;
		if (d->cap < d->need) {
			free(d->buf);
			d->buf = xmalloc(d->need);
			d->cap = d->need;
		}
		size_t k = HP_MIN(d->need - d->have, n);
		memcpy(d->buf + d->have, p, k);
		d->have += k;
		p += k;
		n -= k;
		if (d->have < d->need)
			return 0;
		d->hdr_have = 0;
		d->have = 0;
		r = cb(ud, d->buf, d->need);
		if (d->cap > KEEP_BUF) {
			free(d->buf);
			d->buf = NULL;
			d->cap = 0;
		}
		if (r != 0)
			return r;
	}
}

char *hp_ipc_encode(const char *json, size_t len, size_t *out_len)
{
	if (len > UINT32_MAX)
		return NULL;
	char *out = xmalloc(len + 4);
	out[0] = (char)(len >> 24 & 0xff);
	out[1] = (char)(len >> 16 & 0xff);
	out[2] = (char)(len >> 8 & 0xff);
	out[3] = (char)(len & 0xff);
	if (len)
		memcpy(out + 4, json, len);
	*out_len = len + 4;
	return out;
}

/* ---- the server ------------------------------------------------------------ */

struct conn {
	uv_pipe_t pipe;
	struct hp_ipc *ipc;
	struct hp_ipc_decoder *dec;
	struct conn *prev, *next;
	unsigned id;      /* for the logs */
	bool closing;
	bool write_failed;
	size_t queued;    /* bytes handed to uv_write, not yet written */
	pid_t peer_pid;   /* SO_PEERCRED at accept; 0 when unknown */
};

/* One client_id (a client object in a worker) on one connection. */
struct reg {
	char *client_id;
	struct conn *c;
	int local_rank;
};

struct hp_ipc {
	uv_loop_t *loop;
	uv_pipe_t server;
	char *path;
	int local_world_size;
	struct hp_ipc_callbacks cbs;
	void *ud;
	struct conn *conns;
	struct reg *regs;
	size_t n_regs, cap_regs;
	enum hp_ipc_rank_state state[HP_MAX_LOCAL_WORKERS];
	pid_t pgid[HP_MAX_LOCAL_WORKERS]; /* the worker's group; 0: unknown */
	unsigned n_handles; /* initialised uv handles not yet closed */
	unsigned next_conn_id;
	unsigned n_conns;        /* open client connections */
	unsigned long long refused; /* connections past the cap */
	bool freeing;
	char rbuf[64 * 1024]; /* one read at a time on the loop thread */
};

struct write_req {
	uv_write_t req;
	struct conn *c;
	size_t len;
	char data[];
};

/* ---- lock-down (issue 12 §5, §6) ------------------------------------------
 * The socket lives at the reference's path, so it is made 0600 before it
 * listens (its mode would follow the umask: 0777 under umask 000) and every
 * peer's uid is checked (SO_PEERCRED): only our own uid, or root. Once the
 * agent has named a worker's process group, only processes of that group
 * may speak for its local rank; and a local rank registered ("init") by
 * one connection is not acted for by another. */

/* A client's queue has room for n more bytes. */
static bool queue_has_room(struct conn *c, size_t n)
{
	if (c->queued == 0 || c->queued + n <= MAX_QUEUED_BYTES)
		return true;
	hp_warn(COMP, "dropping client %u: %zu bytes queued to it and not "
		      "read (the most is %u)",
		c->id, c->queued, MAX_QUEUED_BYTES);
	return false;
}

/* Admits a new connection: the peer is our uid or root. Records its pid. */
static bool peer_admitted(struct conn *c)
{
	uv_os_fd_t fd;
	struct ucred cr;
	socklen_t len = sizeof(cr);
	if (uv_fileno((uv_handle_t *)&c->pipe, &fd) < 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) {
		hp_warn(COMP, "refusing client %u: its credentials cannot be "
			      "read",
			c->id);
		return false;
	}
	if (cr.uid != geteuid() && cr.uid != 0) {
		hp_warn(COMP, "refusing client %u: pid %ld runs as uid %ld, "
			      "not as the agent's uid %ld",
			c->id, (long)cr.pid, (long)cr.uid, (long)geteuid());
		return false;
	}
	c->peer_pid = cr.pid;
	return true;
}

void hp_ipc_set_rank_pgid(struct hp_ipc *ipc, int local_rank, pid_t pgid)
{
	if (local_rank >= 0 && local_rank < ipc->local_world_size)
		ipc->pgid[local_rank] = pgid > 0 ? pgid : 0;
}

/* The connection may speak for local rank lr: its peer is in the
 * worker's process group (when known), and no other connection holds
 * the rank's registrations. */
static bool may_act_for(struct conn *c, int lr, const char *type)
{
	struct hp_ipc *ipc = c->ipc;
	pid_t want = ipc->pgid[lr];
	if (want > 0) {
		pid_t got = c->peer_pid > 0 ? getpgid(c->peer_pid) : -1;
		if (got != want) {
			hp_warn(COMP, "client %u: %s for local rank %d refused: "
				      "pid %ld is not in that worker's "
				      "process group %ld",
				c->id, type, lr, (long)c->peer_pid,
				(long)want);
			return false;
		}
	}
	if (strcmp(type, "init") == 0)
		return true;
	bool owned = false, mine = false;
	for (size_t i = 0; i < ipc->n_regs; i++) {
		if (ipc->regs[i].local_rank != lr)
			continue;
		owned = true;
		mine = mine || ipc->regs[i].c == c;
	}
	if (owned && !mine) {
		hp_warn(COMP, "client %u: %s for local rank %d refused: "
			      "another connection registered that rank",
			c->id, type, lr);
		return false;
	}
	return true;
}

/* An init of client_id by c: refused when a live connection of another
 * process holds that client_id already (it would steal its messages). */
static bool may_take_client_id(struct conn *c, const struct reg *g)
{
	if (g->c == c || g->c->closing || g->c->peer_pid == c->peer_pid)
		return true;
	hp_warn(COMP, "client %u: init of a client_id that client %u (pid "
		      "%ld) holds; refused",
		c->id, g->c->id, (long)g->c->peer_pid);
	return false;
}

static void maybe_release(struct hp_ipc *ipc)
{
	if (!ipc->freeing || ipc->n_handles > 0)
		return;
	for (size_t i = 0; i < ipc->n_regs; i++)
		free(ipc->regs[i].client_id);
	free(ipc->regs);
	free(ipc->path);
	free(ipc);
}

static void conn_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	struct hp_ipc *ipc = c->ipc;
	hp_ipc_decoder_free(c->dec);
	free(c);
	ipc->n_handles--;
	maybe_release(ipc);
}

static void server_closed(uv_handle_t *h)
{
	struct hp_ipc *ipc = h->data;
	ipc->n_handles--;
	maybe_release(ipc);
}

static bool rank_ok(const struct hp_ipc *ipc, int local_rank)
{
	return local_rank >= 0 && local_rank < ipc->local_world_size;
}

bool hp_ipc_rank_connected(const struct hp_ipc *ipc, int local_rank)
{
	for (size_t i = 0; i < ipc->n_regs; i++)
		if (ipc->regs[i].local_rank == local_rank)
			return true;
	return false;
}

static void reg_remove_at(struct hp_ipc *ipc, size_t i)
{
	free(ipc->regs[i].client_id);
	ipc->regs[i] = ipc->regs[--ipc->n_regs];
}

/* Closes a connection and forgets its client_ids; with notify, tells the
 * agent about each rank left with no client. The memory goes in
 * conn_closed, after the loop has run, so callers up the stack may still
 * look at c->closing. */
static void conn_close(struct conn *c, bool notify)
{
	struct hp_ipc *ipc = c->ipc;
	unsigned char lost[HP_MAX_LOCAL_WORKERS] = {0};

	if (c->closing)
		return;
	c->closing = true;
	ipc->n_conns--;
	if (c->prev)
		c->prev->next = c->next;
	else
		ipc->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	uv_close((uv_handle_t *)&c->pipe, conn_closed);

	for (size_t i = 0; i < ipc->n_regs;) {
		if (ipc->regs[i].c != c) {
			i++;
			continue;
		}
		lost[ipc->regs[i].local_rank] = 1;
		reg_remove_at(ipc, i);
	}
	for (int r = 0; r < ipc->local_world_size; r++) {
		if (!lost[r] || hp_ipc_rank_connected(ipc, r))
			continue;
		hp_info(COMP, "client %u of local rank %d disconnected", c->id,
			r);
		if (notify && !ipc->freeing && ipc->cbs.on_disconnect)
			ipc->cbs.on_disconnect(ipc->ud, r);
	}
}

static void close_failed_writers(struct hp_ipc *ipc)
{
	for (;;) {
		struct conn *c = ipc->conns;
		while (c && !c->write_failed)
			c = c->next;
		if (!c)
			return;
		conn_close(c, true);
	}
}

static void write_done(uv_write_t *req, int status)
{
	struct write_req *w = (struct write_req *)req;
	struct conn *c = w->c;
	c->queued -= w->len;
	free(w);
	if (status < 0 && status != UV_ECANCELED && !c->closing) {
		hp_warn(COMP, "dropping client %u: write failed: %s", c->id,
			uv_strerror(status));
		conn_close(c, true);
	}
}

/* Queues one frame; a failure marks the connection for
 * close_failed_writers so that no callback runs under the sender. */
static void conn_write(struct conn *c, const char *json, size_t len)
{
	if (!queue_has_room(c, len + 4)) {
		c->write_failed = true;
		return;
	}
	struct write_req *w = xmalloc(sizeof(*w) + 4 + len);
	size_t n;
	char *frame = hp_ipc_encode(json, len, &n);
	if (!frame)
		hp_bug("a %zu-byte message cannot be framed", len);
	memcpy(w->data, frame, n);
	free(frame);
	w->c = c;
	w->len = n;
	uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
	int r = uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, write_done);
	if (r == 0)
		c->queued += n;
	if (r < 0) {
		hp_warn(COMP, "dropping client %u: write failed: %s", c->id,
			uv_strerror(r));
		free(w);
		c->write_failed = true;
	}
}

/* ---- worker → agent ------------------------------------------------------ */

/* Like Python's json.loads: one value, nothing but whitespace after it. */
static cJSON *parse_strict(const char *s, size_t len)
{
	const char *end = NULL;
	if (len == 0)
		return NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(s, len, &end, false);
	if (!root)
		return NULL;
	size_t off = (size_t)(end - s);
	while (off < len && (s[off] == ' ' || s[off] == '\t' ||
			     s[off] == '\n' || s[off] == '\r'))
		off++;
	if (off != len) {
		cJSON_Delete(root);
		return NULL;
	}
	return root;
}

static const char *get_str(const cJSON *o, const char *key)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* An integral JSON number within [lo, hi], or def. */
static int get_int(const cJSON *o, const char *key, int lo, int hi, int def)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!cJSON_IsNumber(it))
		return def;
	double v = it->valuedouble;
	if (!(v >= lo && v <= hi) || v != (double)(int)v)
		return def;
	return (int)v;
}

static void do_register(struct conn *c, const char *client_id,
			int local_rank)
{
	struct hp_ipc *ipc = c->ipc;
	size_t mine = 0;
	for (size_t i = 0; i < ipc->n_regs; i++) {
		struct reg *g = &ipc->regs[i];
		if (strcmp(g->client_id, client_id) == 0) {
			/* The same client object again, maybe from a new
			 * connection: the latest one wins. */
			if (!may_take_client_id(c, g))
				return;
			g->c = c;
			g->local_rank = local_rank;
			goto done;
		}
		if (g->c == c)
			mine++;
	}
	if (mine >= MAX_REGS_PER_CONN || ipc->n_regs >= MAX_REGS_TOTAL) {
		hp_warn(COMP, "dropping client %u: more than %d client_ids on "
			      "one connection or %d in all",
			c->id, MAX_REGS_PER_CONN, MAX_REGS_TOTAL);
		conn_close(c, true);
		return;
	}
	if (ipc->n_regs == ipc->cap_regs) {
		ipc->cap_regs = ipc->cap_regs ? 2 * ipc->cap_regs : 16;
		ipc->regs =
			xrealloc(ipc->regs, ipc->cap_regs * sizeof(*ipc->regs));
	}
	ipc->regs[ipc->n_regs++] = (struct reg){
		.client_id = xstrdup(client_id),
		.c = c,
		.local_rank = local_rank,
	};
done:
	hp_info(COMP, "client %u registered %s for local rank %d", c->id,
		client_id, local_rank);
	if (ipc->cbs.on_init)
		ipc->cbs.on_init(ipc->ud, local_rank);
}

static char *print_item(const cJSON *o, const char *key, const char *def)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
	char *s = it ? cJSON_PrintUnformatted(it) : NULL;
	if (it && !s)
		hp_bug("cJSON cannot print a parsed value");
	return s ? s : xstrdup(def);
}

/* ---- checkpoint discovery (kept apart from the IPR messages) ------------ */

/* A JSON integer within +-2^53, as Python's int would carry it. */
static bool get_step(const cJSON *o, const char *key, long long *out)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!cJSON_IsNumber(it) || cJSON_IsBool(it))
		return false;
	double v = it->valuedouble;
	if (!(v >= -9007199254740992.0 && v <= 9007199254740992.0) ||
	    v != (double)(long long)v)
		return false;
	*out = (long long)v;
	return true;
}

static void ckpt_init_msg(struct hp_ipc *ipc, const cJSON *msg, int lr)
{
	const char *prefix = get_str(msg, "prefix");
	const cJSON *types = cJSON_GetObjectItemCaseSensitive(msg,
							     "checkpoint_types");
	if (!prefix || !cJSON_IsObject(types)) {
		hp_warn(COMP, "local rank %d: ckpt_init without a prefix "
			      "string or a checkpoint_types object; ignored",
			lr);
		return;
	}
	const char *names[HP_IPC_MAX_CKPT_TYPES];
	int counts[HP_IPC_MAX_CKPT_TYPES];
	size_t n = 0;
	for (const cJSON *it = types->child; it; it = it->next) {
		if (n == HP_IPC_MAX_CKPT_TYPES) {
			hp_warn(COMP, "local rank %d: ckpt_init with more than "
				      "%d checkpoint types; the rest ignored",
				lr, HP_IPC_MAX_CKPT_TYPES);
			break;
		}
		int v = -1;
		if (!cJSON_IsNull(it)) {
			double d = cJSON_IsNumber(it) ? it->valuedouble : -1;
			if (!(d >= 0 && d <= HP_MAX_LOCAL_WORKERS) ||
			    d != (double)(int)d) {
				hp_warn(COMP, "local rank %d: ckpt_init count "
					      "of a checkpoint type is not an "
					      "int in [0, %d]; type ignored",
					lr, HP_MAX_LOCAL_WORKERS);
				continue;
			}
			v = (int)d;
		}
		names[n] = it->string;
		counts[n++] = v;
	}
	hp_debug(COMP, "local rank %d: ckpt_init with %zu checkpoint type(s)",
		 lr, n);
	if (ipc->cbs.on_ckpt_init)
		ipc->cbs.on_ckpt_init(ipc->ud, lr, prefix, names, counts, n);
}

static void ckpt_update_msg(struct hp_ipc *ipc, const cJSON *msg, int lr)
{
	long long step;
	const cJSON *path = cJSON_GetObjectItemCaseSensitive(msg, "path");
	const char *type = get_str(msg, "checkpoint_type");
	if (!get_step(msg, "step", &step) || !type ||
	    (path && !cJSON_IsString(path) && !cJSON_IsNull(path))) {
		hp_warn(COMP, "local rank %d: ckpt_info_update without an "
			      "integer step, a checkpoint_type string or a "
			      "string/null path; ignored",
			lr);
		return;
	}
	if (ipc->cbs.on_ckpt_update)
		ipc->cbs.on_ckpt_update(ipc->ud, lr, step,
					cJSON_IsString(path) ? path->valuestring
							     : NULL,
					type);
}

/* The reference answers a callback's reply on the asking socket with the
 * request's own type and client_id (10085800244). */
static void ckpt_get_msg(struct conn *c, int lr, const char *client_id)
{
	struct hp_ipc *ipc = c->ipc;
	if (!ipc->cbs.on_ckpt_get)
		return;
	char *path = ipc->cbs.on_ckpt_get(ipc->ud, lr);
	if (c->closing || ipc->freeing) {
		free(path);
		return;
	}
	cJSON *reply = cJSON_CreateObject();
	if (!reply ||
	    !cJSON_AddItemToObject(reply, "path",
				   path ? cJSON_CreateString(path)
					: cJSON_CreateNull()) ||
	    !cJSON_AddStringToObject(reply, "type", "ckpt_info_get") ||
	    !cJSON_AddStringToObject(reply, "client_id", client_id))
		hp_bug("cJSON out of memory");
	free(path);
	char *text = cJSON_PrintUnformatted(reply);
	if (!text)
		hp_bug("cJSON out of memory");
	conn_write(c, text, strlen(text));
	cJSON_free(text);
	cJSON_Delete(reply);
	close_failed_writers(ipc);
}

/* True when type is a checkpoint-discovery message (handled here). */
static bool dispatch_ckpt(struct conn *c, const cJSON *msg, const char *type,
			  int lr, const char *client_id)
{
	if (strcmp(type, "ckpt_init") == 0)
		ckpt_init_msg(c->ipc, msg, lr);
	else if (strcmp(type, "ckpt_info_update") == 0)
		ckpt_update_msg(c->ipc, msg, lr);
	else if (strcmp(type, "ckpt_info_get") == 0)
		ckpt_get_msg(c, lr, client_id);
	else
		return false;
	return true;
}

static void dispatch(struct conn *c, const cJSON *msg, const char *type,
		     int lr)
{
	struct hp_ipc *ipc = c->ipc;
	const struct hp_ipc_callbacks *cb = &ipc->cbs;

	if (strcmp(type, "at_rcb_barrier") == 0) {
		hp_debug(COMP, "local rank %d at the barrier", lr);
		ipc->state[lr] = HP_IPC_AT_BARRIER;
		if (cb->on_barrier)
			cb->on_barrier(ipc->ud, lr);
	} else if (strcmp(type, "past_rcb_barrier") == 0) {
		hp_info(COMP, "local rank %d passed the barrier", lr);
		ipc->state[lr] = HP_IPC_PAST_BARRIER;
		if (cb->on_past_barrier)
			cb->on_past_barrier(ipc->ud, lr);
	} else if (strcmp(type, "job_fault") == 0) {
		int rank = get_int(msg, "rank", 0, INT32_MAX, -1);
		const char *reason = get_str(msg, "reason");
		const char *text = get_str(msg, "message");
		const char *mode = get_str(msg, "restart_mode");
		hp_info(COMP, "local rank %d (rank %d) reported a fault: %s%s%s",
			lr, rank, reason ? reason : "(no reason)",
			mode ? ", restart mode " : "", mode ? mode : "");
		ipc->state[lr] = HP_IPC_FAILED;
		if (cb->on_fault)
			cb->on_fault(ipc->ud, lr, rank, reason, text, mode);
	} else if (strcmp(type, "job_data") == 0) {
		int rank = get_int(msg, "rank", 0, INT32_MAX, -1);
		char *data = print_item(msg, "data", "null");
		hp_debug(COMP, "local rank %d (rank %d) sent %zu bytes of data",
			 lr, rank, strlen(data));
		if (cb->on_data)
			cb->on_data(ipc->ud, lr, rank, data);
		free(data);
	} else if (strcmp(type, "rank_labels") == 0) {
		const cJSON *l = cJSON_GetObjectItemCaseSensitive(msg, "labels");
		if (!cJSON_IsObject(l)) {
			hp_warn(COMP, "local rank %d: rank_labels without a "
				      "labels object; ignored",
				lr);
			return;
		}
		char *labels = print_item(msg, "labels", "{}");
		if (cb->on_labels)
			cb->on_labels(ipc->ud, lr, labels);
		free(labels);
	} else {
		hp_debug(COMP, "local rank %d: message type %s not handled; "
			       "ignored",
			 lr, type);
	}
}

static void handle_message(struct conn *c, const char *json, size_t len)
{
	struct hp_ipc *ipc = c->ipc;
	cJSON *msg = parse_strict(json, len);
	if (!msg) {
		hp_warn(COMP, "client %u: a message of %zu bytes is not valid "
			      "JSON; skipped",
			c->id, len);
		return;
	}
	if (!cJSON_IsObject(msg)) {
		hp_warn(COMP, "client %u: a message is not a JSON object; "
			      "skipped",
			c->id);
		goto out;
	}
	const char *type = get_str(msg, "type");
	const char *client_id = get_str(msg, "client_id");
	const cJSON *lr_item = cJSON_GetObjectItemCaseSensitive(msg,
							      "local_rank");
	int lr = get_int(msg, "local_rank", 0, HP_MAX_LOCAL_WORKERS, -1);
	const char *missing = NULL;
	if (!type || !*type)
		missing = "type";
	else if (!client_id || !*client_id)
		missing = "client_id";
	else if (!lr_item)
		missing = "local_rank";
	if (missing) {
		hp_warn(COMP, "client %u: message without a %s; ignored",
			c->id, missing);
		goto out;
	}
	if (!rank_ok(ipc, lr)) {
		hp_warn(COMP, "client %u: %s message with local_rank outside "
			      "[0, %d); ignored",
			c->id, type, ipc->local_world_size);
		goto out;
	}
	/* Like the reference, a message is handled even before its init:
	 * it names its local rank itself. */
	if (!may_act_for(c, lr, type))
		goto out;
	if (strcmp(type, "init") == 0)
		do_register(c, client_id, lr);
	else if (!dispatch_ckpt(c, msg, type, lr, client_id))
		dispatch(c, msg, type, lr);
out:
	cJSON_Delete(msg);
}

static int on_frame(void *ud, const char *json, size_t len)
{
	struct conn *c = ud;
	handle_message(c, json, len);
	/* A callback may have dropped this client or freed the server. */
	return c->closing || c->ipc->freeing ? -ECANCELED : 0;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;
	*buf = uv_buf_init(c->ipc->rbuf, sizeof(c->ipc->rbuf));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = s->data;
	if (c->closing)
		return;
	if (nread > 0) {
		int r = hp_ipc_decoder_feed(c->dec, buf->base, (size_t)nread,
					    on_frame, c);
		if (r == -EMSGSIZE) {
			hp_warn(COMP, "dropping client %u: a frame is longer "
				      "than %u bytes",
				c->id, HP_IPC_MAX_FRAME);
			conn_close(c, true);
		}
	} else if (nread < 0) {
		if (nread != UV_EOF)
			hp_warn(COMP, "client %u: read failed: %s", c->id,
				uv_strerror((int)nread));
		else
			hp_debug(COMP, "client %u: end of stream", c->id);
		conn_close(c, true);
	}
}

static void on_connection(uv_stream_t *server, int status)
{
	struct hp_ipc *ipc = server->data;
	if (status < 0) {
		hp_warn(COMP, "accept failed: %s", uv_strerror(status));
		return;
	}
	struct conn *c = xcalloc(1, sizeof(*c));
	c->ipc = ipc;
	c->id = ++ipc->next_conn_id;
	c->dec = hp_ipc_decoder_new(HP_IPC_MAX_FRAME);
	uv_pipe_init(ipc->loop, &c->pipe, 0);
	c->pipe.data = c;
	ipc->n_handles++;
	c->next = ipc->conns;
	if (ipc->conns)
		ipc->conns->prev = c;
	ipc->conns = c;
	ipc->n_conns++;
	int r = uv_accept(server, (uv_stream_t *)&c->pipe);
	if (r == 0 && ipc->n_conns > MAX_CONNS(ipc)) {
		/* accepted only to be closed: the backlog must not fill */
		if (ipc->refused++ % 100 == 0)
			hp_warn(COMP, "refusing client %u: %u connections open, "
				      "the most allowed (%llu refused)",
				c->id, ipc->n_conns - 1, ipc->refused);
		conn_close(c, false);
		return;
	}
	if (r == 0 && !peer_admitted(c)) {
		conn_close(c, false);
		return;
	}
	if (r == 0)
		r = uv_read_start((uv_stream_t *)&c->pipe, alloc_cb, read_cb);
	if (r < 0) {
		hp_warn(COMP, "cannot accept a client: %s", uv_strerror(r));
		conn_close(c, false);
		return;
	}
	hp_debug(COMP, "client %u connected", c->id);
}

/* ---- public ------------------------------------------------------------- */

const char *hp_ipc_rank_state_name(enum hp_ipc_rank_state s)
{
	switch (s) {
	case HP_IPC_HEALTHY:
		return "HEALTHY";
	case HP_IPC_AT_BARRIER:
		return "AT_BARRIER";
	case HP_IPC_PAST_BARRIER:
		return "PAST_BARRIER";
	case HP_IPC_FAILED:
		return "FAILED";
	}
	return "?";
}

/* A bound, listening, close-on-exec socket at path, or -errno. */
static int listen_socket(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
			0);
	if (fd < 0)
		return -errno;
	if (unlink(path) == 0)
		hp_debug(COMP, "unlinked a stale %s", path);
	/* 0600 before listen(): until then a connect is refused, so no
	 * other uid gets in between (issue 12 §6) */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(path, 0600) < 0 || listen(fd, SOMAXCONN) < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

struct hp_ipc *hp_ipc_new(uv_loop_t *loop, const char *tmpdir, pid_t pid,
			  int local_world_size,
			  const struct hp_ipc_callbacks *cbs, void *ud)
{
	struct sockaddr_un sa;
	if (local_world_size < 1 || local_world_size > HP_MAX_LOCAL_WORKERS) {
		hp_error(COMP, "local world size %d outside [1, %d]",
			 local_world_size, HP_MAX_LOCAL_WORKERS);
		return NULL;
	}
	if (!tmpdir || !*tmpdir)
		tmpdir = "/tmp";
	/* os.path.join on an absolute tmpdir: no doubled '/'. */
	size_t tl = strlen(tmpdir);
	while (tl > 1 && tmpdir[tl - 1] == '/')
		tl--;
	char *path = xasprintf("%.*s%shyperpod_elastic_agent_%ld.sock",
			       (int)tl, tmpdir,
			       tmpdir[tl - 1] == '/' ? "" : "/", (long)pid);
	if (strlen(path) >= sizeof(sa.sun_path)) {
		hp_error(COMP, "socket path %s is longer than %zu bytes; "
			       "set TMPDIR to a shorter directory",
			 path, sizeof(sa.sun_path) - 1);
		free(path);
		return NULL;
	}
	int fd = listen_socket(path);
	if (fd < 0) {
		hp_error(COMP, "cannot listen on %s: %s", path,
			 strerror(-fd));
		free(path);
		return NULL;
	}

	struct hp_ipc *ipc = xcalloc(1, sizeof(*ipc));
	ipc->loop = loop;
	ipc->path = path;
	ipc->local_world_size = local_world_size;
	if (cbs)
		ipc->cbs = *cbs;
	ipc->ud = ud;
	uv_pipe_init(loop, &ipc->server, 0);
	ipc->server.data = ipc;
	ipc->n_handles = 1;
	int r = uv_pipe_open(&ipc->server, fd);
	if (r < 0)
		close(fd);
	else
		r = uv_listen((uv_stream_t *)&ipc->server, SOMAXCONN,
			      on_connection);
	if (r < 0) {
		hp_error(COMP, "cannot listen on %s: %s", path,
			 uv_strerror(r));
		unlink(path);
		/* The handle is initialised: it goes in server_closed. */
		ipc->freeing = true;
		uv_close((uv_handle_t *)&ipc->server, server_closed);
		return NULL;
	}
	hp_info(COMP, "listening on %s for %d local ranks", path,
		local_world_size);
	return ipc;
}

const char *hp_ipc_path(const struct hp_ipc *ipc)
{
	return ipc->path;
}

void hp_ipc_drop_clients(struct hp_ipc *ipc)
{
	while (ipc->conns)
		conn_close(ipc->conns, false);
}

void hp_ipc_free(struct hp_ipc *ipc)
{
	if (!ipc || ipc->freeing)
		return;
	ipc->freeing = true;
	hp_ipc_drop_clients(ipc);
	uv_close((uv_handle_t *)&ipc->server, server_closed);
	unlink(ipc->path);
}

/* Sends msg (an object; ownership taken) to the rank's clients. */
static int send_obj(struct hp_ipc *ipc, int lr, const char *type, cJSON *msg)
{
	int sent = 0;

	cJSON_DeleteItemFromObjectCaseSensitive(msg, "type");
	cJSON_DeleteItemFromObjectCaseSensitive(msg, "client_id");
	for (size_t i = 0; i < ipc->n_regs; i++) {
		struct reg *g = &ipc->regs[i];
		if ((lr != HP_IPC_ALL_RANKS && g->local_rank != lr) ||
		    g->c->closing || g->c->write_failed)
			continue;
		if (!cJSON_AddStringToObject(msg, "type", type) ||
		    !cJSON_AddStringToObject(msg, "client_id", g->client_id))
			hp_bug("cJSON out of memory");
		char *text = cJSON_PrintUnformatted(msg);
		if (!text)
			hp_bug("cJSON out of memory");
		conn_write(g->c, text, strlen(text));
		cJSON_free(text);
		cJSON_DeleteItemFromObjectCaseSensitive(msg, "type");
		cJSON_DeleteItemFromObjectCaseSensitive(msg, "client_id");
		sent++;
	}
	cJSON_Delete(msg);
	close_failed_writers(ipc);
	if (sent == 0) {
		hp_debug(COMP, "%s: no client registered for local rank %d",
			 type, lr);
		return -ENOTCONN;
	}
	hp_debug(COMP, "sent %s to %d client(s) of local rank %d", type, sent,
		 lr);
	return 0;
}

static bool send_args_ok(const struct hp_ipc *ipc, int lr, const char *type)
{
	if (!type || !*type || ipc->freeing ||
	    (lr != HP_IPC_ALL_RANKS && !rank_ok(ipc, lr))) {
		hp_error(COMP, "cannot send %s to local rank %d",
			 type ? type : "(no type)", lr);
		return false;
	}
	return true;
}

int hp_ipc_send(struct hp_ipc *ipc, int local_rank, const char *type,
		const char *fields_json)
{
	if (!send_args_ok(ipc, local_rank, type))
		return -EINVAL;
	cJSON *msg = fields_json ? parse_strict(fields_json, strlen(fields_json))
				 : cJSON_CreateObject();
	if (!cJSON_IsObject(msg)) {
		hp_error(COMP, "cannot send %s: the fields are not a JSON "
			       "object",
			 type);
		cJSON_Delete(msg);
		return -EINVAL;
	}
	return send_obj(ipc, local_rank, type, msg);
}

static int send_rank_msg(struct hp_ipc *ipc, int lr, const char *type,
			 const char *envs_json, const char *agg_json)
{
	if (!send_args_ok(ipc, lr, type))
		return -EINVAL;
	cJSON *envs = envs_json ? parse_strict(envs_json, strlen(envs_json))
				: cJSON_CreateObject();
	cJSON *agg = agg_json ? parse_strict(agg_json, strlen(agg_json))
			      : cJSON_CreateNull();
	if (!envs || !agg) {
		hp_error(COMP, "cannot send %s: %s is not valid JSON", type,
			 !envs ? "worker_envs" : "aggregate_worker_data");
		cJSON_Delete(envs);
		cJSON_Delete(agg);
		return -EINVAL;
	}
	cJSON *msg = cJSON_CreateObject();
	if (!msg)
		hp_bug("cJSON out of memory");
	cJSON_AddItemToObject(msg, "worker_envs", envs);
	cJSON_AddItemToObject(msg, "aggregate_worker_data", agg);
	return send_obj(ipc, lr, type, msg);
}

int hp_ipc_send_start(struct hp_ipc *ipc, int local_rank,
		      const char *worker_envs_json, const char *aggregate_json)
{
	int r = send_rank_msg(ipc, local_rank, "job_start", worker_envs_json,
			      aggregate_json);
	if (r == 0) {
		for (int i = 0; i < ipc->local_world_size; i++)
			if (local_rank == HP_IPC_ALL_RANKS || i == local_rank)
				ipc->state[i] = HP_IPC_HEALTHY;
	}
	return r;
}

int hp_ipc_send_rank_info(struct hp_ipc *ipc, int local_rank,
			  const char *worker_envs_json,
			  const char *aggregate_json)
{
	return send_rank_msg(ipc, local_rank, "job_rank_info",
			     worker_envs_json, aggregate_json);
}

int hp_ipc_send_fault(struct hp_ipc *ipc, int local_rank, int restart_count)
{
	if (!send_args_ok(ipc, local_rank, "job_fault"))
		return -EINVAL;
	cJSON *msg = cJSON_CreateObject();
	if (!msg || !cJSON_AddNumberToObject(msg, "restart_count",
					     restart_count))
		hp_bug("cJSON out of memory");
	return send_obj(ipc, local_rank, "job_fault", msg);
}

int hp_ipc_send_failed_ranks(struct hp_ipc *ipc, int local_rank,
			     const char *fields_json)
{
	return hp_ipc_send(ipc, local_rank, "job_failed_ranks", fields_json);
}

enum hp_ipc_rank_state hp_ipc_rank_state(const struct hp_ipc *ipc,
					 int local_rank)
{
	return rank_ok(ipc, local_rank) ? ipc->state[local_rank]
					: HP_IPC_HEALTHY;
}

bool hp_ipc_all_in_state(const struct hp_ipc *ipc, enum hp_ipc_rank_state s)
{
	for (int i = 0; i < ipc->local_world_size; i++)
		if (ipc->state[i] != s)
			return false;
	return true;
}

bool hp_ipc_any_failed(const struct hp_ipc *ipc)
{
	for (int i = 0; i < ipc->local_world_size; i++)
		if (ipc->state[i] == HP_IPC_FAILED)
			return true;
	return false;
}

void hp_ipc_reset_states(struct hp_ipc *ipc)
{
	for (int i = 0; i < HP_MAX_LOCAL_WORKERS; i++)
		ipc->state[i] = HP_IPC_HEALTHY;
}
