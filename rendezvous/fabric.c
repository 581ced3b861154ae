/* fabric.c — the agents' control plane over one libfabric RDM endpoint:
 * barrier (dissemination), allgather (dissemination, records packed into
 * <= 4 KiB messages) and broadcast (binomial tree), each bounded by a
 * deadline and tagged with an epoch. It is the only file that includes
 * libfabric headers. It must never block without a deadline, never mix a
 * message of one collective into another, and never free a buffer the
 * provider may still write (every operation owns a fi_context2). */
#include "rendezvous/fabric.h"
#include "rendezvous/fabric-test.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* libfabric is loaded with dlopen on first use, not linked: linking it
 * pulls in every provider's libraries at exec time, and one of them
 * (libpsm_infinipath) sleeps ~200 ms in its constructor, which would cost
 * every launch of hyperpodrun, fabric or not. Only these five symbols are
 * real functions; everything else in the API is an inline call through
 * the objects' ops tables. They are renamed before the headers so that the
 * headers' own inline wrappers (fi_allocinfo) call our shims too. */
#define fi_getinfo hp_fi_getinfo
#define fi_freeinfo hp_fi_freeinfo
#define fi_dupinfo hp_fi_dupinfo
#define fi_fabric hp_fi_fabric
#define fi_strerror hp_fi_strerror
#include <dlfcn.h>
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>

#include "base/log.h"
#include "base/xalloc.h"

#define COMP "fabric"

#define WIRE_MAGIC 0x42465048u /* "HPFB" in little-endian memory order */
#define WIRE_VERSION 1
#define NO_RANK UINT32_MAX

/* Every message starts with this header, in host byte order (every node of
 * a job shares the architecture; a byte-swapped magic is dropped). */
struct wire_hdr {
	uint32_t magic;
	uint8_t version;
	uint8_t op;
	uint16_t round;
	uint32_t src;
	uint32_t seq;
	uint64_t epoch;
	uint32_t arg;
	uint32_t total;
	uint32_t count;
	uint32_t len; /* payload bytes after the header */
};
_Static_assert(sizeof(struct wire_hdr) == 40, "wire header is 40 bytes");

#define BUF_SIZE (sizeof(struct wire_hdr) + HP_FABRIC_RECORD_MAX)
/* Receives kept posted, and send slots added at a time. 64 covers a
 * dissemination round of 64 full records; more ranks only queue. */
#define XFER_CHUNK 64
/* Early messages are bounded so a runaway peer cannot eat the agent. */
#define QUEUE_MAX_BYTES ((size_t)16 << 20)
/* A send the provider keeps refusing (EAGAIN: a peer that is gone or
 * still connecting) is dropped from the backlog after this long. */
#define BACKLOG_MAX_NS ((uint64_t)30 * 1000000000u)
/* poll() never sleeps longer than this, in case a provider misses a
 * wake-up on its wait fd: it only costs a spurious loop. */
#define POLL_CAP_MS 50

struct xfer {
	/* First member: providers with FI_CONTEXT/FI_CONTEXT2 own it while the
	 * operation runs, and the CQ hands it back as op_context. */
	struct fi_context2 ctx;
	struct xfer *next_free; /* in the free list or the backlog */
	unsigned char *buf;
	void *desc;
	bool is_recv;
	bool busy;
	bool required; /* a collective's data: an error fails it */
	bool counted;  /* in its collective's tx_pending */
	unsigned dst;
	size_t len;
	uint64_t queued_ns; /* when it went to the backlog */
	uint64_t epoch;
	uint32_t seq;
};

struct chunk {
	struct chunk *next;
	struct fid_mr *mr;
	unsigned char *mem;
	struct xfer x[XFER_CHUNK];
};

struct qmsg {
	struct qmsg *next;
	struct wire_hdr h;
	unsigned char data[];
};

/* The collective in progress. */
struct coll {
	bool active;
	uint8_t op;
	uint64_t epoch;
	uint32_t seq;
	uint16_t round;
	uint32_t waits_on; /* rank whose data we wait for, NO_RANK if none */
	uint32_t need;     /* records (allgather) or bytes (bcast) this round */
	uint32_t got;
	/* our required sends of this collective not yet completed: a
	 * message over rxm's bounce-buffer size goes out in segments as
	 * the endpoint progresses, and nothing progresses it between
	 * rounds, so a collective is over only once they are out */
	uint32_t tx_pending;
	uint32_t msgs;
	/* allgather/barrier: this round's expected first record */
	uint32_t first;
	unsigned char *out;
	size_t rec_len;
	/* bcast */
	unsigned root;
	/* failure */
	int fail_rc;
	bool fail_told; /* another rank told us: do not re-broadcast */
	char fail_text[768];
	/* who waits for whom, learnt from peers' STATUS messages */
	bool *status_seen;
	uint32_t *status_waits;
	uint32_t status_sent_waits;
	bool status_sent;
	uint64_t start_ns;
	uint64_t status_ns;
	uint64_t deadline_ns;
	int deadline_ms;
};

struct hp_fabric {
	unsigned rank;
	unsigned size;
	uint64_t epoch; /* current epoch: older messages are dropped */
	uint32_t seq;   /* next collective's number inside the epoch */
	bool has_failed;
	uint64_t failed_epoch;
	bool left;
	bool peers_set;
	/* hp_fabric_cancel(), from another thread */
	atomic_bool cancel;

	struct fi_info *info;
	struct fid_fabric *fabric;
	struct fid_domain *domain;
	struct fid_ep *ep;
	struct fid_cq *cq;
	struct fid_av *av;
	int wait_fd;
	bool mr_local;
	bool ordered; /* FI_ORDER_SAS: a peer's messages arrive in order */
	size_t inject_size;
	uint64_t spin_ns;
	uint64_t idle_since_ns;

	unsigned char name[HP_FABRIC_NAME_MAX];
	size_t name_len;
	char provider[64];

	fi_addr_t *addr;
	bool *gone;

	struct chunk *rx;
	unsigned rx_unposted;
	struct chunk *tx_chunks;
	struct xfer *tx_free;
	unsigned tx_busy;
	unsigned *inflight; /* per rank: our sends not completed yet */
	/* Sends the provider refused with EAGAIN, retried in order on every
	 * progress pass so a dead peer never blocks the others. */
	struct xfer *backlog;
	struct xfer **backlog_tail;
	uint32_t *blocked_pass; /* per rank: pass that found it blocked */
	uint32_t pass;

	struct qmsg *qhead;
	struct qmsg **qtail;
	size_t qbytes;

	struct coll c;
	struct hp_fabric_stats st;
	unsigned char scratch[HP_FABRIC_RECORD_MAX];
	char err[1024];
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static const char *op_name(unsigned op)
{
	switch (op) {
	case HP_FABRIC_OP_BARRIER:
		return "barrier";
	case HP_FABRIC_OP_ALLGATHER:
		return "allgather";
	case HP_FABRIC_OP_BCAST:
		return "bcast";
	case HP_FABRIC_OP_STATUS:
		return "status";
	case HP_FABRIC_OP_ABORT:
		return "abort";
	case HP_FABRIC_OP_BYE:
		return "bye";
	default:
		return "unknown";
	}
}

static void set_err(struct hp_fabric *f, const char *fmt, ...) HP_PRINTF(2, 3);
static void set_err(struct hp_fabric *f, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->err, sizeof(f->err), fmt, ap);
	va_end(ap);
}

/* libfabric returns -FI_E* codes that equal -errno for the common ones. */
static int fi_to_errno(ssize_t rc)
{
	if (rc >= 0)
		return 0;
	if (rc == -FI_EAGAIN)
		return -EAGAIN;
	if (-rc < 256)
		return (int)rc;
	return -EIO;
}

/* --- buffers ------------------------------------------------------------ */

static int chunk_new(struct hp_fabric *f, bool is_recv, struct chunk **out)
{
	struct chunk *ch = xcalloc(1, sizeof(*ch));
	ch->mem = xcalloc(XFER_CHUNK, BUF_SIZE);
	void *desc = NULL;
	if (f->mr_local) {
		int rc = fi_mr_reg(f->domain, ch->mem, XFER_CHUNK * BUF_SIZE,
				   is_recv ? FI_RECV : FI_SEND, 0, 0, 0, &ch->mr,
				   NULL);
		if (rc) {
			hp_error(COMP, "fi_mr_reg: %s", fi_strerror(-rc));
			free(ch->mem);
			free(ch);
			return fi_to_errno(rc);
		}
		desc = fi_mr_desc(ch->mr);
	}
	for (unsigned i = 0; i < XFER_CHUNK; i++) {
		struct xfer *x = &ch->x[i];
		x->buf = ch->mem + (size_t)i * BUF_SIZE;
		x->desc = desc;
		x->is_recv = is_recv;
	}
	*out = ch;
	return 0;
}

static void chunk_free(struct chunk *ch)
{
	while (ch) {
		struct chunk *next = ch->next;
		if (ch->mr)
			fi_close(&ch->mr->fid);
		free(ch->mem);
		free(ch);
		ch = next;
	}
}

static int tx_get(struct hp_fabric *f, struct xfer **out)
{
	if (!f->tx_free) {
		struct chunk *ch;
		int rc = chunk_new(f, false, &ch);
		if (rc)
			return rc;
		ch->next = f->tx_chunks;
		f->tx_chunks = ch;
		for (unsigned i = 0; i < XFER_CHUNK; i++) {
			ch->x[i].next_free = f->tx_free;
			f->tx_free = &ch->x[i];
		}
	}
	struct xfer *x = f->tx_free;
	f->tx_free = x->next_free;
	x->busy = true;
	f->tx_busy++;
	*out = x;
	return 0;
}

static void tx_put(struct hp_fabric *f, struct xfer *x)
{
	if (x->counted && f->c.active && x->epoch == f->c.epoch &&
	    x->seq == f->c.seq && f->c.tx_pending)
		f->c.tx_pending--;
	x->counted = false;
	f->inflight[x->dst]--;
	x->busy = false;
	x->next_free = f->tx_free;
	f->tx_free = x;
	f->tx_busy--;
}

static int rx_post(struct hp_fabric *f, struct xfer *x)
{
	ssize_t rc = fi_recv(f->ep, x->buf, BUF_SIZE, x->desc, FI_ADDR_UNSPEC,
			     &x->ctx);
	if (rc == 0) {
		x->busy = true;
		return 0;
	}
	x->busy = false;
	f->rx_unposted++;
	if (rc == -FI_EAGAIN)
		return 0;
	hp_error(COMP, "fi_recv: %s", fi_strerror((int)-rc));
	return fi_to_errno(rc);
}

static int rx_repost_all(struct hp_fabric *f)
{
	unsigned want = f->rx_unposted;
	f->rx_unposted = 0;
	for (unsigned i = 0; i < XFER_CHUNK && want; i++) {
		if (f->rx->x[i].busy)
			continue;
		want--;
		int rc = rx_post(f, &f->rx->x[i]);
		if (rc)
			return rc;
	}
	return 0;
}

/* 0 when posted, 1 when injected (the buffer is free again at once: the
 * caller puts it back), -EAGAIN when the provider asks to come back, -EIO
 * (text in f->err) otherwise. A collective's small messages are injected:
 * no completion to reap on a barrier's critical path. The others keep
 * their completion, so leave() knows when they are out. */
static int try_send(struct hp_fabric *f, struct xfer *x)
{
	ssize_t r;
	if (x->required && x->len <= f->inject_size) {
		r = fi_inject(f->ep, x->buf, x->len, f->addr[x->dst]);
		if (r == 0)
			return 1;
	} else {
		r = fi_send(f->ep, x->buf, x->len, x->desc, f->addr[x->dst],
			    &x->ctx);
		if (r == 0)
			return 0;
	}
	if (r == -FI_EAGAIN)
		return -EAGAIN;
	set_err(f, "fi_send to rank %u: %s", x->dst, fi_strerror((int)-r));
	return -EIO;
}

static bool backlog_has(const struct hp_fabric *f, unsigned dst)
{
	for (const struct xfer *x = f->backlog; x; x = x->next_free) {
		if (x->dst == dst)
			return true;
	}
	return false;
}

static void backlog_push(struct hp_fabric *f, struct xfer *x)
{
	x->next_free = NULL;
	x->queued_ns = 0;
	*f->backlog_tail = x;
	f->backlog_tail = &x->next_free;
}

static void on_send_done(struct hp_fabric *f, struct xfer *x, int err,
			 const char *text);

/* Retries the backlog in order, keeping each peer's messages in order. */
static void backlog_flush(struct hp_fabric *f, uint64_t now)
{
	f->pass++;
	struct xfer **pp = &f->backlog;
	while (*pp) {
		struct xfer *x = *pp;
		int rc = -EAGAIN;
		if (f->blocked_pass[x->dst] != f->pass)
			rc = try_send(f, x);
		if (rc == -EAGAIN) {
			if (!x->queued_ns)
				x->queued_ns = now;
			if (now - x->queued_ns < BACKLOG_MAX_NS) {
				f->blocked_pass[x->dst] = f->pass;
				pp = &x->next_free;
				continue;
			}
			set_err(f, "send to rank %u refused for %llu s", x->dst,
				(unsigned long long)(BACKLOG_MAX_NS / 1000000000u));
			rc = -EIO;
		}
		*pp = x->next_free;
		if (rc)
			on_send_done(f, x, rc < 0 ? rc : 0, f->err);
	}
	f->backlog_tail = pp;
}

static void backlog_drop(struct hp_fabric *f)
{
	while (f->backlog) {
		struct xfer *x = f->backlog;
		f->backlog = x->next_free;
		tx_put(f, x);
	}
	f->backlog_tail = &f->backlog;
}

/* --- the unexpected-message list ------------------------------------------ */

static void enqueue(struct hp_fabric *f, const struct wire_hdr *h,
		    const unsigned char *p)
{
	if (f->qbytes + h->len > QUEUE_MAX_BYTES) {
		hp_warn(COMP, "unexpected-message list full: dropping %s from "
			"rank %" PRIu32 " (epoch %" PRIu64 ")",
			op_name(h->op), h->src, h->epoch);
		f->st.dropped_bad++;
		return;
	}
	struct qmsg *m = xmalloc(sizeof(*m) + h->len);
	m->next = NULL;
	m->h = *h;
	memcpy(m->data, p, h->len);
	*f->qtail = m;
	f->qtail = &m->next;
	f->qbytes += h->len;
	f->st.queued++;
}

static void queue_fix_tail(struct hp_fabric *f)
{
	f->qtail = &f->qhead;
	while (*f->qtail)
		f->qtail = &(*f->qtail)->next;
}

static void queue_free(struct hp_fabric *f)
{
	while (f->qhead) {
		struct qmsg *m = f->qhead;
		f->qhead = m->next;
		free(m);
	}
	f->qtail = &f->qhead;
	f->qbytes = 0;
}

/* --- message keys ----------------------------------------------------------- */

/* -1: the message belongs to a finished collective or an older epoch;
 *  0: to the collective in progress; 1: to one that has not started. */
static int key_age(const struct hp_fabric *f, uint64_t epoch, uint32_t seq)
{
	uint64_t fe = f->c.active ? f->c.epoch : f->epoch;
	uint32_t fs = f->c.active ? f->c.seq : f->seq;
	if (epoch < fe || (epoch == fe && seq < fs))
		return -1;
	if (epoch == fe && seq == fs && f->c.active)
		return 0;
	return 1;
}

/* --- failure bookkeeping ------------------------------------------------------ */

static void coll_fail(struct hp_fabric *f, int rc, bool told, const char *fmt,
		      ...) HP_PRINTF(4, 5);
static void coll_fail(struct hp_fabric *f, int rc, bool told, const char *fmt,
		      ...)
{
	if (f->c.fail_rc)
		return; /* the first cause wins */
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->c.fail_text, sizeof(f->c.fail_text), fmt, ap);
	va_end(ap);
	f->c.fail_rc = rc;
	f->c.fail_told = told;
}

/* For a bcast only our ancestors in the tree can stop us. */
static bool is_ancestor(const struct hp_fabric *f, unsigned r)
{
	unsigned n = f->size;
	unsigned v = (f->rank + n - f->c.root) % n;
	while (v) {
		v &= v - 1;
		if ((v + f->c.root) % n == r)
			return true;
	}
	return false;
}

/* An ABORT stops a barrier or allgather whoever sends it (the collective
 * cannot complete everywhere once one rank gave up), a bcast only when it
 * comes from our ancestors. */
static bool needs_rank(const struct hp_fabric *f, unsigned r)
{
	if (f->c.op == HP_FABRIC_OP_BCAST)
		return is_ancestor(f, r);
	return r != f->rank;
}

static bool round_done(const struct coll *c)
{
	if (c->waits_on == NO_RANK)
		return true;
	if (c->op == HP_FABRIC_OP_BCAST)
		return c->msgs > 0 && c->got == c->need;
	return c->got == c->need;
}

/* A rank that left fails us only if we still wait for its data: it may
 * have left right after finishing the collective, and its BYE comes after
 * its data (we ask for send-after-send ordering). */
static void check_gone(struct hp_fabric *f)
{
	struct coll *c = &f->c;
	if (c->waits_on != NO_RANK && f->gone[c->waits_on] && !round_done(c))
		coll_fail(f, -ECONNRESET, false,
			  "%s epoch %" PRIu64 " failed: rank %u left the "
			  "fabric",
			  op_name(c->op), c->epoch, (unsigned)c->waits_on);
	/* A message of a later epoch from the rank we wait for: it left our
	 * epoch (finished or gave up) and, its messages being in order,
	 * sent us all it ever will for it. What we still wait for will not
	 * come. */
	if (c->waits_on == NO_RANK || !f->ordered || round_done(c) ||
	    c->fail_rc)
		return;
	for (const struct qmsg *m = f->qhead; m; m = m->next)
		if (m->h.src == c->waits_on && m->h.epoch > c->epoch) {
			coll_fail(f, -ESTALE, false,
				  "%s epoch %" PRIu64 " failed: rank %u moved "
				  "on to epoch %" PRIu64,
				  op_name(c->op), c->epoch,
				  (unsigned)c->waits_on, m->h.epoch);
			return;
		}
}

/* --- applying a message to the collective in progress ------------------------ */

static void apply_data(struct hp_fabric *f, const struct wire_hdr *h,
		       const unsigned char *p)
{
	struct coll *c = &f->c;
	unsigned n = f->size;
	/* The round is complete, or this would overfill it: a duplicate (a
	 * late copy of what we already have). */
	if ((c->msgs > 0 && c->got == c->need) ||
	    (uint64_t)c->got + h->count > c->need) {
		f->st.dropped_stale++;
		hp_debug(COMP, "dropped a duplicate %s from rank %" PRIu32,
			 op_name(h->op), h->src);
		return;
	}
	if (c->op == HP_FABRIC_OP_BCAST) {
		if (h->total != c->rec_len || h->arg > h->total ||
		    h->len > h->total - h->arg || h->count != h->len) {
			coll_fail(f, -EPROTO, false,
				  "bcast epoch %" PRIu64 ": rank %" PRIu32
				  " sent %" PRIu32 " bytes at %" PRIu32
				  " of %" PRIu32 ", expected %zu in all",
				  c->epoch, h->src, h->len, h->arg, h->total,
				  c->rec_len);
			return;
		}
		memcpy(c->out + h->arg, p, h->len);
		c->got += h->len;
		c->msgs++;
		return;
	}
	/* Records first, first-1, ... (mod n), rec_len bytes each. */
	uint32_t off = (c->first + n - h->arg) % n;
	if (h->total != c->rec_len || (uint64_t)h->count * h->total != h->len ||
	    h->arg >= n || off + h->count > c->need) {
		coll_fail(f, -EPROTO, false,
			  "%s epoch %" PRIu64 ": rank %" PRIu32
			  " sent %" PRIu32 " records of %" PRIu32
			  " bytes from rank %" PRIu32
			  ", expected records of %zu bytes",
			  op_name(c->op), c->epoch, h->src, h->count, h->total,
			  h->arg, c->rec_len);
		return;
	}
	for (uint32_t j = 0; j < h->count; j++) {
		uint32_t r = (h->arg + n - j) % n;
		memcpy(c->out + (size_t)r * c->rec_len,
		       p + (size_t)j * c->rec_len, c->rec_len);
	}
	c->got += h->count;
	c->msgs++;
}

/* Applies a message of the collective in progress; returns false when it
 * belongs to a later round (the caller queues it). */
static bool apply(struct hp_fabric *f, const struct wire_hdr *h,
		  const unsigned char *p)
{
	struct coll *c = &f->c;
	switch (h->op) {
	case HP_FABRIC_OP_STATUS:
		c->status_seen[h->src] = true;
		c->status_waits[h->src] = h->arg < f->size ? h->arg : NO_RANK;
		return true;
	case HP_FABRIC_OP_ABORT: {
		if (!needs_rank(f, h->src))
			return true;
		int rc = h->arg > 0 && h->arg < 4096 ? -(int)h->arg : -EIO;
		coll_fail(f, rc, true, "%s epoch %" PRIu64
			  " aborted by rank %" PRIu32 ": %.*s",
			  op_name(c->op), c->epoch, h->src, (int)h->len,
			  (const char *)p);
		return true;
	}
	default:
		break;
	}
	if (h->op != c->op) {
		coll_fail(f, -EPROTO, false,
			  "epoch %" PRIu64 " collective %" PRIu32
			  ": rank %" PRIu32 " runs %s while rank %u runs %s",
			  c->epoch, c->seq, h->src, op_name(h->op), f->rank,
			  op_name(c->op));
		return true;
	}
	if (h->round != c->round || h->src != c->waits_on)
		return false;
	apply_data(f, h, p);
	return true;
}

/* Takes from the unexpected list what the current round can use, and
 * drops what has become stale. */
static void drain_queue(struct hp_fabric *f)
{
	struct qmsg **pp = &f->qhead;
	while (*pp) {
		struct qmsg *m = *pp;
		int age = key_age(f, m->h.epoch, m->h.seq);
		bool take = false;
		if (age < 0) {
			f->st.dropped_stale++;
			take = true;
		} else if (age == 0) {
			take = apply(f, &m->h, m->data);
		}
		if (take) {
			*pp = m->next;
			f->qbytes -= m->h.len;
			free(m);
		} else {
			pp = &m->next;
		}
	}
	queue_fix_tail(f);
}

static void on_bye(struct hp_fabric *f, unsigned src)
{
	if (!f->peers_set || f->gone[src])
		return;
	hp_debug(COMP, "rank %u left the fabric", src);
	f->gone[src] = true;
}

static void handle_msg(struct hp_fabric *f, const unsigned char *buf,
		       size_t n)
{
	struct wire_hdr h;
	if (n < sizeof(h)) {
		f->st.dropped_bad++;
		return;
	}
	memcpy(&h, buf, sizeof(h));
	if (h.magic != WIRE_MAGIC || h.version != WIRE_VERSION ||
	    h.len != n - sizeof(h) || h.len > HP_FABRIC_RECORD_MAX ||
	    h.src >= f->size || h.src == f->rank || h.op < HP_FABRIC_OP_BARRIER ||
	    h.op > HP_FABRIC_OP_BYE || !f->peers_set) {
		f->st.dropped_bad++;
		hp_debug(COMP, "dropped a malformed message (%zu bytes)", n);
		return;
	}
	f->st.received++;
	const unsigned char *p = buf + sizeof(h);
	if (h.op == HP_FABRIC_OP_BYE) {
		on_bye(f, h.src);
		return;
	}
	int age = key_age(f, h.epoch, h.seq);
	if (age < 0) {
		f->st.dropped_stale++;
		hp_debug(COMP, "dropped stale %s from rank %" PRIu32
			 " (epoch %" PRIu64 " seq %" PRIu32 ")",
			 op_name(h.op), h.src, h.epoch, h.seq);
		return;
	}
	if (age == 0 && apply(f, &h, p))
		return;
	enqueue(f, &h, p);
}

/* --- the completion queue -------------------------------------------------------- */

static void on_send_done(struct hp_fabric *f, struct xfer *x, int err,
			 const char *text)
{
	if (err) {
		bool current = f->c.active && x->epoch == f->c.epoch &&
			       x->seq == f->c.seq;
		if (x->required && current) {
			coll_fail(f, -EIO, false,
				  "%s epoch %" PRIu64 ": send to rank %u "
				  "failed: %s",
				  op_name(f->c.op), f->c.epoch, x->dst, text);
		} else {
			hp_debug(COMP, "send to rank %u failed: %s", x->dst,
				 text);
		}
	}
	tx_put(f, x);
}

/* Reads the CQ until it is empty; returns the completions handled, or
 * -errno when the CQ itself failed. */
static int progress(struct hp_fabric *f)
{
	int handled = 0;
	if (f->backlog)
		backlog_flush(f, now_ns());
	if (f->rx_unposted) {
		int rc = rx_repost_all(f);
		if (rc)
			return rc;
	}
	for (;;) {
		struct fi_cq_msg_entry e[16];
		ssize_t n = fi_cq_read(f->cq, e, HP_ARRAY_LEN(e));
		if (n == -FI_EAGAIN)
			return handled;
		if (n == -FI_EAVAIL) {
			struct fi_cq_err_entry ee;
			memset(&ee, 0, sizeof(ee));
			ssize_t r = fi_cq_readerr(f->cq, &ee, 0);
			if (r < 0)
				return handled;
			char pbuf[256];
			const char *ptext = fi_cq_strerror(
				f->cq, ee.prov_errno, ee.err_data, pbuf,
				sizeof(pbuf));
			char text[384];
			snprintf(text, sizeof(text), "%s (%s)",
				 fi_strerror(ee.err), ptext ? ptext : "");
			struct xfer *x = ee.op_context;
			handled++;
			if (!x)
				continue;
			if (x->is_recv) {
				x->busy = false;
				if (ee.err != FI_ECANCELED) {
					hp_warn(COMP, "receive failed: %s",
						text);
					int rc = rx_post(f, x);
					if (rc)
						return rc;
				}
			} else {
				on_send_done(f, x, -ee.err, text);
			}
			continue;
		}
		if (n < 0) {
			set_err(f, "fi_cq_read: %s", fi_strerror((int)-n));
			return -EIO;
		}
		for (ssize_t i = 0; i < n; i++) {
			struct xfer *x = e[i].op_context;
			handled++;
			if (x->is_recv) {
				x->busy = false;
				handle_msg(f, x->buf, e[i].len);
				int rc = rx_post(f, x);
				if (rc)
					return rc;
			} else {
				on_send_done(f, x, 0, NULL);
			}
		}
	}
}

/* Progresses until something happened or until_ns passed: sleeps on the
 * wait fd where there is one (after spin_ns without news), spins
 * (yielding the CPU) where not. */
static int progress_wait(struct hp_fabric *f, uint64_t until_ns)
{
	int n = progress(f);
	if (n != 0) {
		f->idle_since_ns = 0;
		return n < 0 ? n : 0;
	}
	uint64_t now = now_ns();
	if (now >= until_ns)
		return 0;
	if (!f->idle_since_ns)
		f->idle_since_ns = now;
	/* Sleeping costs a wake-up per message: spin a little first. */
	if (f->wait_fd < 0 || now - f->idle_since_ns < f->spin_ns) {
		sched_yield();
		return 0;
	}
	struct fid *fids[1] = {&f->cq->fid};
	if (fi_trywait(f->fabric, fids, 1) != FI_SUCCESS)
		return 0;
	uint64_t ms = (until_ns - now + 999999) / 1000000;
	struct pollfd pfd = {.fd = f->wait_fd, .events = POLLIN};
	if (poll(&pfd, 1, (int)HP_MIN(ms, (uint64_t)POLL_CAP_MS)) < 0 &&
	    errno != EINTR)
		return -errno;
	return 0;
}

/* --- sending --------------------------------------------------------------------- */

/* Posts one message, or puts it in the backlog when the provider says
 * EAGAIN. A send the collective cannot do without is "required": its
 * error completion fails the collective. Returns 0 or -errno. */
static int post_send(struct hp_fabric *f, unsigned dst, struct wire_hdr *h,
		     const void *payload, bool required)
{
	struct xfer *x;
	int rc = tx_get(f, &x);
	if (rc)
		return rc;
	h->magic = WIRE_MAGIC;
	h->version = WIRE_VERSION;
	h->src = f->rank;
	memcpy(x->buf, h, sizeof(*h));
	if (h->len)
		memcpy(x->buf + sizeof(*h), payload, h->len);
	x->len = sizeof(*h) + h->len;
	x->required = required;
	x->dst = dst;
	f->inflight[dst]++;
	x->epoch = h->epoch;
	x->seq = h->seq;
	x->counted = required && f->c.active && h->epoch == f->c.epoch &&
		     h->seq == f->c.seq;
	if (x->counted)
		f->c.tx_pending++;
	f->st.sent++;
	if (backlog_has(f, dst)) {
		backlog_push(f, x);
		return 0;
	}
	rc = try_send(f, x);
	if (rc == -EAGAIN && required) {
		/* rxm wants its CQ read before it takes more. Best-effort
		 * messages wait in the backlog instead: they are sent at a
		 * deadline, where every microsecond counts. */
		int p = progress(f);
		if (p < 0) {
			tx_put(f, x);
			return p;
		}
		rc = backlog_has(f, dst) ? -EAGAIN : try_send(f, x);
	}
	if (rc == -EAGAIN) {
		backlog_push(f, x);
		return 0;
	}
	if (rc)
		tx_put(f, x);
	return rc < 0 ? rc : 0;
}

/* Best effort to every peer but us and those gone (STATUS, ABORT, BYE). */
static void send_all(struct hp_fabric *f, struct wire_hdr *h,
		     const void *payload)
{
	for (unsigned r = 0; r < f->size; r++) {
		if (r == f->rank || f->gone[r])
			continue;
		struct wire_hdr copy = *h;
		if (post_send(f, r, &copy, payload, false))
			hp_debug(COMP, "%s to rank %u not sent: %s",
				 op_name(h->op), r, f->err);
	}
}

static void send_status(struct hp_fabric *f)
{
	struct coll *c = &f->c;
	struct wire_hdr h = {.op = HP_FABRIC_OP_STATUS,
			     .epoch = c->epoch,
			     .seq = c->seq,
			     .arg = c->waits_on};
	c->status_sent = true;
	c->status_sent_waits = c->waits_on;
	send_all(f, &h, NULL);
}

/* --- the collective skeleton -------------------------------------------------------- */

static void append_rank(char *buf, size_t cap, unsigned r, bool *first)
{
	size_t used = strlen(buf);
	if (used + 12 < cap)
		snprintf(buf + used, cap - used, "%s%u", *first ? "" : ",", r);
	*first = false;
}

/* The ranks that did not answer: whoever we or the peers still inside the
 * collective wait for and who said nothing themselves. */
static void timeout_text(struct hp_fabric *f)
{
	struct coll *c = &f->c;
	unsigned n = f->size;
	bool *suspect = xcalloc(n, sizeof(*suspect));
	if (c->waits_on < n)
		suspect[c->waits_on] = true;
	for (unsigned r = 0; r < n; r++) {
		if (c->status_seen[r] && c->status_waits[r] < n)
			suspect[c->status_waits[r]] = true;
	}
	bool any = false;
	for (unsigned r = 0; r < n; r++) {
		if (c->status_seen[r] || r == f->rank)
			suspect[r] = false;
		any |= suspect[r];
	}
	if (!any && c->waits_on < n)
		suspect[c->waits_on] = true;
	char list[512] = "";
	bool first = true;
	for (unsigned r = 0; r < n; r++) {
		if (suspect[r])
			append_rank(list, sizeof(list), r, &first);
	}
	char via[64] = "";
	if (c->waits_on < n && !suspect[c->waits_on])
		snprintf(via, sizeof(via), " (blocked on rank %u)",
			 (unsigned)c->waits_on);
	coll_fail(f, -ETIMEDOUT, false,
		  "%s epoch %" PRIu64 " timed out after %d ms waiting for "
		  "ranks %s%s",
		  op_name(c->op), c->epoch, c->deadline_ms,
		  list[0] ? list : "?", via);
	free(suspect);
}

static int coll_begin(struct hp_fabric *f, unsigned op, uint64_t epoch,
		      int deadline_ms)
{
	f->err[0] = '\0';
	if (f->left) {
		set_err(f, "%s: this rank left the fabric", op_name(op));
		return -ESHUTDOWN;
	}
	if (!f->peers_set || deadline_ms <= 0) {
		set_err(f, "%s: %s", op_name(op),
			f->peers_set ? "deadline must be > 0 ms"
				     : "peers are not set");
		return -EINVAL;
	}
	if (epoch < f->epoch) {
		set_err(f, "%s epoch %" PRIu64 ": epoch went backwards (now %"
			PRIu64 ")", op_name(op), epoch, f->epoch);
		return -EINVAL;
	}
	if (f->has_failed && epoch <= f->failed_epoch) {
		set_err(f, "%s epoch %" PRIu64 ": epoch %" PRIu64
			" was abandoned after an error; use a newer one",
			op_name(op), epoch, f->failed_epoch);
		return -ESTALE;
	}
	if (epoch > f->epoch) {
		f->epoch = epoch;
		f->seq = 0;
	}
	struct coll *c = &f->c;
	c->active = true;
	c->op = (uint8_t)op;
	c->epoch = epoch;
	c->seq = f->seq++;
	c->round = 0;
	c->waits_on = NO_RANK;
	c->need = c->got = c->msgs = 0;
	c->tx_pending = 0;
	c->fail_rc = 0;
	c->fail_told = false;
	c->fail_text[0] = '\0';
	memset(c->status_seen, 0, f->size * sizeof(*c->status_seen));
	c->status_sent = false;
	c->deadline_ms = deadline_ms;
	c->start_ns = now_ns();
	c->deadline_ns = c->start_ns + (uint64_t)deadline_ms * 1000000u;
	c->status_ns = c->start_ns + (uint64_t)deadline_ms * 500000u;
	return 0;
}

/* An ABORT is best effort: this long at most to hand it to the provider
 * (connected peers take it at once), as nothing progresses the endpoint
 * between rounds. */
#define ABORT_OUT_MS 200

/* Progresses until every send to a live peer completed, or ms passed. */
static void push_out(struct hp_fabric *f, int ms)
{
	uint64_t until = now_ns() + (uint64_t)ms * 1000000u;
	for (;;) {
		bool live = false;
		for (unsigned r = 0; r < f->size && !live; r++)
			live = f->inflight[r] && !f->gone[r];
		if (!live || now_ns() >= until || progress_wait(f, until) < 0)
			return;
	}
}

/* Progresses until this collective's required sends are out (see
 * tx_pending), within its deadline; sends to a peer that left do not
 * count. Returns 0, or the failure (recorded in c->fail_rc). */
static int flush_sends(struct hp_fabric *f)
{
	struct coll *c = &f->c;
	while (c->tx_pending && !c->fail_rc) {
		bool live = false;
		for (unsigned r = 0; r < f->size && !live; r++)
			live = f->inflight[r] && !f->gone[r];
		if (!live)
			break;
		if (atomic_exchange(&f->cancel, false)) {
			coll_fail(f, -ECANCELED, false, "%s epoch %" PRIu64
				  " cancelled", op_name(c->op), c->epoch);
			break;
		}
		if (now_ns() >= c->deadline_ns) {
			coll_fail(f, -ETIMEDOUT, false,
				  "%s epoch %" PRIu64 ": %u of our sends not "
				  "out after %d ms", op_name(c->op), c->epoch,
				  (unsigned)c->tx_pending, c->deadline_ms);
			break;
		}
		int rc = progress_wait(f, c->deadline_ns);
		if (rc < 0)
			return rc;
	}
	return c->fail_rc;
}

static int coll_end(struct hp_fabric *f, int rc)
{
	struct coll *c = &f->c;
	if (rc == 0)
		rc = flush_sends(f);
	if (rc == 0 && c->fail_rc)
		rc = c->fail_rc;
	if (rc < 0) {
		if (!c->fail_rc)
			coll_fail(f, rc, false, "%s epoch %" PRIu64 ": %s",
				  op_name(c->op), c->epoch,
				  f->err[0] ? f->err : strerror(-rc));
		f->has_failed = true;
		f->failed_epoch = c->epoch;
		if (!c->fail_told) {
			struct wire_hdr h = {.op = HP_FABRIC_OP_ABORT,
					     .epoch = c->epoch,
					     .seq = c->seq,
					     .arg = (uint32_t)-c->fail_rc,
					     .len = (uint32_t)strlen(
						     c->fail_text)};
			send_all(f, &h, c->fail_text);
			push_out(f, ABORT_OUT_MS);
		}
		snprintf(f->err, sizeof(f->err), "%s", c->fail_text);
		hp_debug(COMP, "%s", f->err);
		rc = c->fail_rc;
	}
	c->active = false;
	return rc;
}

/* Waits until the round's data is in, the collective failed, or the
 * deadline passed. Halfway to the deadline (and whenever we then move on
 * to wait for someone else) we tell every peer whom we wait for. */
static int wait_round(struct hp_fabric *f)
{
	struct coll *c = &f->c;
	drain_queue(f);
	for (;;) {
		if (round_done(c))
			return c->fail_rc;
		check_gone(f);
		if (c->fail_rc)
			return c->fail_rc;
		if (atomic_exchange(&f->cancel, false)) {
			/* not "told": coll_end's ABORT fails the peers
			 * waiting on us at once (the operator stopped us) */
			coll_fail(f, -ECANCELED, false, "%s epoch %" PRIu64
				  " cancelled on rank %u", op_name(c->op),
				  c->epoch, f->rank);
			return c->fail_rc;
		}
		uint64_t now = now_ns();
		if (now >= c->deadline_ns) {
			timeout_text(f);
			return c->fail_rc;
		}
		uint64_t until = c->deadline_ns;
		if (now >= c->status_ns) {
			if (!c->status_sent || c->status_sent_waits != c->waits_on)
				send_status(f);
		} else {
			until = c->status_ns;
		}
		int rc = progress_wait(f, until);
		if (rc < 0)
			return rc;
	}
}

/* Dissemination: in round k (d = 2^k) rank i sends what it holds, records
 * i, i-1, ..., i-c+1 with c = min(d, n-d), to rank i+d and receives the
 * same from rank i-d. After ceil(log2 n) rounds everyone holds all. A
 * barrier is the same with empty records. */
static int dissemination(struct hp_fabric *f)
{
	struct coll *c = &f->c;
	unsigned n = f->size, i = f->rank;
	size_t len = c->rec_len;
	uint32_t per = len ? (uint32_t)(HP_FABRIC_RECORD_MAX / len) : n;
	for (unsigned d = 1; d < n; d <<= 1, c->round++) {
		uint32_t cnt = HP_MIN(d, n - d);
		unsigned to = (i + d) % n;
		/* Expect before sending, and take what is queued first: what
		 * arrives while we post is applied at once, and must come
		 * after what arrived before (a duplicate is then dropped). */
		c->waits_on = (i + n - d) % n;
		c->first = c->waits_on;
		c->need = cnt;
		c->got = c->msgs = 0;
		drain_queue(f);
		for (uint32_t off = 0; off < cnt; off += per) {
			uint32_t m = HP_MIN(per, cnt - off);
			uint32_t first = (i + n - off) % n;
			for (uint32_t j = 0; j < m; j++) {
				uint32_t r = (first + n - j) % n;
				memcpy(f->scratch + (size_t)j * len,
				       c->out + (size_t)r * len, len);
			}
			struct wire_hdr h = {.op = c->op,
					     .round = c->round,
					     .epoch = c->epoch,
					     .seq = c->seq,
					     .arg = first,
					     .total = (uint32_t)len,
					     .count = m,
					     .len = (uint32_t)(m * len)};
			int rc = post_send(f, to, &h, f->scratch, true);
			if (rc)
				return rc;
		}
		int rc = wait_round(f);
		if (rc)
			return rc;
	}
	c->waits_on = NO_RANK;
	return 0;
}

int hp_fabric_barrier(struct hp_fabric *f, uint64_t epoch, int deadline_ms)
{
	int rc = coll_begin(f, HP_FABRIC_OP_BARRIER, epoch, deadline_ms);
	if (rc)
		return rc;
	f->c.rec_len = 0;
	f->c.out = f->scratch;
	rc = dissemination(f);
	return coll_end(f, rc);
}

int hp_fabric_allgather(struct hp_fabric *f, uint64_t epoch, const void *rec,
			size_t len, void *out, int deadline_ms)
{
	if (len > HP_FABRIC_RECORD_MAX || (len && (!rec || !out))) {
		set_err(f, "allgather: record of %zu bytes (at most %d)", len,
			HP_FABRIC_RECORD_MAX);
		return -EMSGSIZE;
	}
	int rc = coll_begin(f, HP_FABRIC_OP_ALLGATHER, epoch, deadline_ms);
	if (rc)
		return rc;
	f->c.rec_len = len;
	f->c.out = len ? out : f->scratch;
	if (len)
		memmove(f->c.out + (size_t)f->rank * len, rec, len);
	rc = dissemination(f);
	return coll_end(f, rc);
}

/* Binomial tree over v = (rank - root) mod n: v's parent is v with its
 * lowest set bit cleared, its children v + 2^k for 2^k below that bit,
 * sent largest subtree first. */
static int binomial(struct hp_fabric *f)
{
	struct coll *c = &f->c;
	unsigned n = f->size;
	unsigned v = (f->rank + n - c->root) % n;
	unsigned low = v ? (v & -v) : 1u << 31;
	if (v) {
		c->waits_on = ((v & (v - 1)) + c->root) % n;
		c->need = (uint32_t)c->rec_len;
		c->got = c->msgs = 0;
		int rc = wait_round(f);
		if (rc)
			return rc;
		c->waits_on = NO_RANK;
	}
	c->round = 1;
	unsigned top = 1;
	while (top < n && top < low)
		top <<= 1;
	for (unsigned d = top; d >= 1; d >>= 1) {
		if (d >= low || v + d >= n)
			continue;
		unsigned to = (v + d + c->root) % n;
		size_t off = 0;
		do {
			size_t m = HP_MIN(c->rec_len - off,
					  (size_t)HP_FABRIC_RECORD_MAX);
			struct wire_hdr h = {.op = HP_FABRIC_OP_BCAST,
					     .round = 0,
					     .epoch = c->epoch,
					     .seq = c->seq,
					     .arg = (uint32_t)off,
					     .total = (uint32_t)c->rec_len,
					     .count = (uint32_t)m,
					     .len = (uint32_t)m};
			int rc = post_send(f, to, &h, c->out + off, true);
			if (rc)
				return rc;
			off += m;
		} while (off < c->rec_len);
	}
	return 0;
}

int hp_fabric_bcast(struct hp_fabric *f, uint64_t epoch, unsigned root,
		    void *buf, size_t len, int deadline_ms)
{
	if (len > UINT32_MAX || (len && !buf) || root >= f->size) {
		set_err(f, "bcast: bad root %u or length %zu", root, len);
		return -EINVAL;
	}
	int rc = coll_begin(f, HP_FABRIC_OP_BCAST, epoch, deadline_ms);
	if (rc)
		return rc;
	f->c.root = root;
	f->c.rec_len = len;
	f->c.out = len ? buf : f->scratch;
	rc = binomial(f);
	return coll_end(f, rc);
}

/* --- libfabric, loaded on first use ------------------------------------------------- */

static struct {
	void *lib;
	int (*getinfo)(uint32_t, const char *, const char *, uint64_t,
		       const struct fi_info *, struct fi_info **);
	void (*freeinfo)(struct fi_info *);
	struct fi_info *(*dupinfo)(const struct fi_info *);
	int (*fabric)(struct fi_fabric_attr *, struct fid_fabric **, void *);
	const char *(*strerror)(int);
} fi_lib;

/* Loads libfabric.so.1 once (HP_LIBFABRIC overrides the name, for tests).
 * One thread at a time calls it (the agent's round thread). Returns 0 or
 * -ENOSYS. */
static int fi_load(void)
{
	if (fi_lib.lib)
		return 0;
	const char *name = getenv("HP_LIBFABRIC");
	void *h = dlopen(name && *name ? name : "libfabric.so.1",
			 RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		hp_error(COMP, "libfabric is not available: %s", dlerror());
		return -ENOSYS;
	}
	/* POSIX's way to turn dlsym's void * into a function pointer */
	*(void **)&fi_lib.getinfo = dlsym(h, "fi_getinfo");
	*(void **)&fi_lib.freeinfo = dlsym(h, "fi_freeinfo");
	*(void **)&fi_lib.dupinfo = dlsym(h, "fi_dupinfo");
	*(void **)&fi_lib.fabric = dlsym(h, "fi_fabric");
	*(void **)&fi_lib.strerror = dlsym(h, "fi_strerror");
	if (!fi_lib.getinfo || !fi_lib.freeinfo || !fi_lib.dupinfo ||
	    !fi_lib.fabric || !fi_lib.strerror) {
		hp_error(COMP, "libfabric lacks a symbol: %s", dlerror());
		dlclose(h);
		fi_lib.getinfo = NULL;
		return -ENOSYS;
	}
	fi_lib.lib = h;
	return 0;
}

int hp_fi_getinfo(uint32_t version, const char *node, const char *service,
		  uint64_t flags, const struct fi_info *hints,
		  struct fi_info **info)
{
	if (fi_load() < 0)
		return -FI_ENOSYS;
	return fi_lib.getinfo(version, node, service, flags, hints, info);
}

void hp_fi_freeinfo(struct fi_info *info)
{
	if (fi_lib.lib)
		fi_lib.freeinfo(info);
}

struct fi_info *hp_fi_dupinfo(const struct fi_info *info)
{
	return fi_load() < 0 ? NULL : fi_lib.dupinfo(info);
}

int hp_fi_fabric(struct fi_fabric_attr *attr, struct fid_fabric **fabric,
		 void *context)
{
	if (fi_load() < 0)
		return -FI_ENOSYS;
	return fi_lib.fabric(attr, fabric, context);
}

const char *hp_fi_strerror(int errnum)
{
	return fi_lib.lib ? fi_lib.strerror(errnum) : strerror(errnum);
}

/* --- set-up and tear-down ------------------------------------------------------------ */

static struct fi_info *make_hints(const struct hp_fabric_options *o)
{
	struct fi_info *h = fi_allocinfo();
	if (!h)
		hp_bug("fi_allocinfo: out of memory");
	h->ep_attr->type = FI_EP_RDM;
	h->caps = FI_MSG;
	/* We give every operation a struct fi_context2, and register our
	 * buffers when the provider asks for it (EFA does). */
	h->mode = FI_CONTEXT | FI_CONTEXT2;
	h->domain_attr->mr_mode =
		FI_MR_LOCAL | FI_MR_ALLOCATED | FI_MR_PROV_KEY | FI_MR_VIRT_ADDR;
	h->domain_attr->threading = FI_THREAD_DOMAIN;
	/* A peer's BYE must not overtake its last data. */
	h->tx_attr->msg_order = FI_ORDER_SAS;
	h->rx_attr->msg_order = FI_ORDER_SAS;
	if (o->provider)
		h->fabric_attr->prov_name = xstrdup(o->provider);
	return h;
}

static int open_cq(struct hp_fabric *f, bool want_fd)
{
	struct fi_cq_attr attr = {.format = FI_CQ_FORMAT_MSG,
				  .wait_obj = want_fd ? FI_WAIT_FD
						      : FI_WAIT_NONE};
	int rc = fi_cq_open(f->domain, &attr, &f->cq, NULL);
	if (rc)
		return rc;
	f->wait_fd = -1;
	if (want_fd) {
		int fd = -1;
		if (fi_control(&f->cq->fid, FI_GETWAIT, &fd) == 0 && fd >= 0)
			f->wait_fd = fd;
	}
	return 0;
}

static struct hp_fabric *fabric_open(const struct hp_fabric_options *o,
				     int *err)
{
	struct hp_fabric *f = xcalloc(1, sizeof(*f));
	struct fi_info *hints = NULL;
	int rc = 0;
	const char *step = "";

	f->rank = o->rank;
	f->size = o->size;
	f->epoch = o->epoch;
	f->wait_fd = -1;
	f->spin_ns = (uint64_t)o->spin_us * 1000u;
	f->qtail = &f->qhead;
	f->backlog_tail = &f->backlog;
	if (o->size == 0 || o->rank >= o->size) {
		hp_error(COMP, "rank %u of size %u", o->rank, o->size);
		rc = -EINVAL;
		goto out;
	}
	rc = fi_load();
	if (rc < 0)
		goto out;
	f->addr = xcalloc(o->size, sizeof(*f->addr));
	f->gone = xcalloc(o->size, sizeof(*f->gone));
	f->blocked_pass = xcalloc(o->size, sizeof(*f->blocked_pass));
	f->inflight = xcalloc(o->size, sizeof(*f->inflight));
	f->c.status_seen = xcalloc(o->size, sizeof(*f->c.status_seen));
	f->c.status_waits = xcalloc(o->size, sizeof(*f->c.status_waits));

	hints = make_hints(o);
	step = "fi_getinfo";
	uint64_t flags = o->node ? FI_SOURCE : 0;
	rc = fi_getinfo(FI_VERSION(1, 9), o->node, NULL, flags, hints, &f->info);
	if (rc == -FI_ENODATA) {
		hints->tx_attr->msg_order = hints->rx_attr->msg_order = 0;
		rc = fi_getinfo(FI_VERSION(1, 9), o->node, NULL, flags, hints,
				&f->info);
		if (rc == 0)
			hp_warn(COMP, "%s does not order messages: a peer that "
				"leaves right after a collective may be "
				"reported as a failure",
				f->info->fabric_attr->prov_name);
	}
	if (rc)
		goto out;
	if (f->info->ep_attr->max_msg_size < BUF_SIZE) {
		hp_error(COMP, "%s: max_msg_size %zu < %zu",
			 f->info->fabric_attr->prov_name,
			 f->info->ep_attr->max_msg_size, BUF_SIZE);
		rc = -EMSGSIZE;
		goto out;
	}
	f->inject_size = f->info->tx_attr->inject_size;
	f->ordered = (f->info->tx_attr->msg_order & FI_ORDER_SAS) &&
		     (f->info->rx_attr->msg_order & FI_ORDER_SAS);
	snprintf(f->provider, sizeof(f->provider), "%s",
		 f->info->fabric_attr->prov_name);
	f->mr_local = f->info->domain_attr->mr_mode & FI_MR_LOCAL;
#ifdef FI_LOCAL_MR
	f->mr_local |= (f->info->mode & FI_LOCAL_MR) != 0;
#endif

	step = "fi_fabric";
	rc = fi_fabric(f->info->fabric_attr, &f->fabric, NULL);
	if (rc)
		goto out;
	step = "fi_domain";
	rc = fi_domain(f->fabric, f->info, &f->domain, NULL);
	if (rc)
		goto out;
	step = "fi_cq_open";
	rc = open_cq(f, !o->no_wait_fd);
	if (rc && !o->no_wait_fd)
		rc = open_cq(f, false);
	if (rc)
		goto out;
	step = "fi_av_open";
	struct fi_av_attr av_attr = {
		.type = f->info->domain_attr->av_type != FI_AV_UNSPEC
				? f->info->domain_attr->av_type
				: FI_AV_TABLE,
		.count = o->size};
	rc = fi_av_open(f->domain, &av_attr, &f->av, NULL);
	if (rc)
		goto out;
	step = "fi_endpoint";
	rc = fi_endpoint(f->domain, f->info, &f->ep, NULL);
	if (rc)
		goto out;
	step = "fi_ep_bind";
	rc = fi_ep_bind(f->ep, &f->av->fid, 0);
	if (rc)
		goto out;
	rc = fi_ep_bind(f->ep, &f->cq->fid, FI_TRANSMIT | FI_RECV);
	if (rc)
		goto out;
	step = "fi_enable";
	rc = fi_enable(f->ep);
	if (rc)
		goto out;
	step = "fi_getname";
	f->name_len = sizeof(f->name);
	rc = fi_getname(&f->ep->fid, f->name, &f->name_len);
	if (rc)
		goto out;
	step = "receive buffers";
	rc = chunk_new(f, true, &f->rx);
	if (rc)
		goto out;
	for (unsigned i = 0; i < XFER_CHUNK && !rc; i++)
		rc = rx_post(f, &f->rx->x[i]);
	if (rc)
		goto out;
	hp_debug(COMP, "rank %u/%u on %s, wait fd %d, %s", f->rank, f->size,
		 f->provider, f->wait_fd,
		 f->mr_local ? "local MR" : "no local MR");
out:
	if (hints)
		fi_freeinfo(hints);
	if (rc) {
		if (step[0])
			hp_error(COMP, "%s: %s", step, fi_strerror(-rc));
		if (err)
			*err = fi_to_errno(rc);
		hp_fabric_free(f);
		return NULL;
	}
	if (err)
		*err = 0;
	return f;
}

/* Loading libfabric runs its providers' constructors, and libfabric's
 * initialisation installs handlers for SIGTERM, SIGINT, SIGSEGV, SIGBUS,
 * SIGILL and SIGABRT (SIGTERM then exits 1). The caller's dispositions
 * (the agent's libuv handlers) must survive: save them all, put back any
 * that changed. */
struct hp_fabric *hp_fabric_new(const struct hp_fabric_options *o, int *err)
{
	struct sigaction saved[NSIG];
	for (int sig = 1; sig < NSIG; sig++)
		sigaction(sig, NULL, &saved[sig]);
	struct hp_fabric *f = fabric_open(o, err);
	for (int sig = 1; sig < NSIG; sig++) {
		struct sigaction now;
		if (sig == SIGKILL || sig == SIGSTOP ||
		    sigaction(sig, NULL, &now) < 0 ||
		    now.sa_handler == saved[sig].sa_handler)
			continue;
		hp_debug(COMP, "libfabric changed the handler of %s: restored",
			 hp_signal_name(sig));
		sigaction(sig, &saved[sig], NULL);
	}
	return f;
}

/* Where the user set nothing. Measured with two agents on loopback, tcp
 * (README's benchmark table): rxm's bounce buffers dominate the endpoint
 * (two pools of ~1024 of FI_OFI_RXM_BUFFER_SIZE each, touched as they are
 * threaded on the free lists): 16.3 MB of agent RSS at 4352 bytes, 11.7 at
 * 2048, 9.8 at 1024, 8.6 at 512. A 4 KiB record then travels in rxm's
 * segments (SAR), which costs a control-plane round nothing measurable. */
static const char *const env_knobs[][2] = {
	{"FI_OFI_RXM_BUFFER_SIZE", "512"},
	{"FI_OFI_RXM_RX_SIZE", "256"}, /* >= XFER_CHUNK receives posted */
	{"FI_OFI_RXM_TX_SIZE", "256"},
	{"FI_OFI_RXM_MSG_RX_SIZE", "256"},
	{"FI_OFI_RXM_MSG_TX_SIZE", "256"},
	{"FI_TCP_RX_SIZE", "256"},
	{"FI_TCP_TX_SIZE", "256"},
	/* last: its value is chosen at run time (hp_fabric_default_provider) */
	{"FI_PROVIDER", NULL},
};

/* An EFA device is an RDMA device bound to the efa driver. */
static bool have_efa(void)
{
	const char *root = getenv("HP_SYSFS_INFINIBAND");
	if (!root || !*root)
		root = "/sys/class/infiniband";
	DIR *d = opendir(root);
	if (!d)
		return false;
	bool found = false;
	struct dirent *e;
	while (!found && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char path[PATH_MAX], link[PATH_MAX];
		snprintf(path, sizeof(path), "%s/%s/device/driver", root,
			 e->d_name);
		ssize_t n = readlink(path, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		const char *base = strrchr(link, '/');
		found = strcmp(base ? base + 1 : link, "efa") == 0;
	}
	closedir(d);
	return found;
}

const char *hp_fabric_default_provider(void)
{
	return have_efa() ? "efa" : "tcp";
}

unsigned hp_fabric_env_set(void)
{
	unsigned mask = 0;
	for (unsigned i = 0; i < HP_ARRAY_LEN(env_knobs); i++) {
		const char *v = env_knobs[i][1] ? env_knobs[i][1]
						: hp_fabric_default_provider();
		if (!getenv(env_knobs[i][0]) &&
		    setenv(env_knobs[i][0], v, 0) == 0)
			mask |= 1u << i;
	}
	return mask;
}

void hp_fabric_env_unset(unsigned mask)
{
	for (unsigned i = 0; i < HP_ARRAY_LEN(env_knobs); i++)
		if (mask & (1u << i))
			unsetenv(env_knobs[i][0]);
}

void hp_fabric_free(struct hp_fabric *f)
{
	if (!f)
		return;
	/* Closing the endpoint first cancels what is posted, so the
	 * buffers below are ours again. */
	if (f->ep)
		fi_close(&f->ep->fid);
	if (f->av)
		fi_close(&f->av->fid);
	if (f->cq)
		fi_close(&f->cq->fid);
	chunk_free(f->rx);
	chunk_free(f->tx_chunks);
	if (f->domain)
		fi_close(&f->domain->fid);
	if (f->fabric)
		fi_close(&f->fabric->fid);
	if (f->info)
		fi_freeinfo(f->info);
	queue_free(f);
	free(f->addr);
	free(f->gone);
	free(f->blocked_pass);
	free(f->inflight);
	free(f->c.status_seen);
	free(f->c.status_waits);
	free(f);
}

const void *hp_fabric_name(const struct hp_fabric *f, size_t *len)
{
	*len = f->name_len;
	return f->name;
}

const char *hp_fabric_provider(const struct hp_fabric *f)
{
	return f->provider;
}

char *hp_fabric_hex_encode(const void *name, size_t len)
{
	static const char digits[] = "0123456789abcdef";
	const unsigned char *p = name;
	char *s = xmalloc(2 * len + 1);
	for (size_t i = 0; i < len; i++) {
		s[2 * i] = digits[p[i] >> 4];
		s[2 * i + 1] = digits[p[i] & 15];
	}
	s[2 * len] = '\0';
	return s;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int hp_fabric_hex_decode(const char *hex, void *out, size_t cap, size_t *len)
{
	size_t n = strlen(hex);
	if (n % 2)
		return -EINVAL;
	if (n / 2 > cap)
		return -ENOSPC;
	unsigned char *p = out;
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		p[i] = (unsigned char)(hi << 4 | lo);
	}
	*len = n / 2;
	return 0;
}

int hp_fabric_set_peers(struct hp_fabric *f, const void *const names[],
			const size_t lens[], unsigned n)
{
	f->err[0] = '\0';
	if (n != f->size) {
		set_err(f, "set_peers: %u names for %u ranks", n, f->size);
		return -EINVAL;
	}
	if (lens[f->rank] != f->name_len ||
	    memcmp(names[f->rank], f->name, f->name_len) != 0) {
		set_err(f, "set_peers: the name at rank %u is not ours", f->rank);
		return -EINVAL;
	}
	if (f->peers_set) {
		/* Old addresses may be reused by the AV: what waits for them
		 * must not go to the new peers. */
		backlog_drop(f);
		fi_av_remove(f->av, f->addr, f->size, 0);
		f->peers_set = false;
	}
	for (unsigned r = 0; r < n; r++) {
		int rc = fi_av_insert(f->av, names[r], 1, &f->addr[r], 0, NULL);
		if (rc != 1) {
			set_err(f, "fi_av_insert rank %u: %s", r,
				rc < 0 ? fi_strerror(-rc) : "address refused");
			if (r)
				fi_av_remove(f->av, f->addr, r, 0);
			return -EINVAL;
		}
	}
	memset(f->gone, 0, f->size * sizeof(*f->gone));
	f->peers_set = true;
	return 0;
}

int hp_fabric_leave(struct hp_fabric *f, int deadline_ms)
{
	if (f->left || !f->peers_set) {
		f->left = true;
		return 0;
	}
	uint64_t until = now_ns() + (uint64_t)HP_MAX(deadline_ms, 0) * 1000000u;
	/* If our last collective failed because another rank told us, a peer
	 * still waiting on us may hear our BYE before that rank's ABORT (two
	 * senders, no order between them) and report "rank N left" instead of
	 * the real error. Our own ABORT first keeps the order: it reaches each
	 * peer before our BYE (send-after-send ordering). */
	if (f->has_failed && f->c.fail_rc && f->c.epoch == f->failed_epoch) {
		struct wire_hdr a = {.op = HP_FABRIC_OP_ABORT,
				     .epoch = f->c.epoch,
				     .seq = f->c.seq,
				     .arg = (uint32_t)-f->c.fail_rc,
				     .len = (uint32_t)strlen(f->c.fail_text)};
		send_all(f, &a, f->c.fail_text);
	}
	struct wire_hdr h = {.op = HP_FABRIC_OP_BYE, .epoch = f->epoch};
	send_all(f, &h, NULL);
	f->left = true;
	/* Everything sent before (an ABORT) must be out too, or closing the
	 * endpoint drops it; a peer that left needs no telling. */
	for (;;) {
		unsigned untold = 0;
		for (unsigned r = 0; r < f->size; r++)
			untold += f->inflight[r] && !f->gone[r];
		if (!untold)
			break;
		if (now_ns() >= until) {
			set_err(f, "leave: %u peers not told after %d ms",
				untold, deadline_ms);
			return -ETIMEDOUT;
		}
		int rc = progress_wait(f, until);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int hp_fabric_abandon(struct hp_fabric *f, uint64_t epoch,
		      const char *why)
{
	if (f->left || !f->peers_set || f->c.active)
		return -EINVAL;
	if (epoch < f->epoch || (f->has_failed && epoch <= f->failed_epoch))
		return 0; /* nothing of it left to tell */
	f->epoch = epoch;
	f->seq = 0;
	f->has_failed = true;
	f->failed_epoch = epoch;
	char text[256];
	snprintf(text, sizeof(text), "rank %u abandoned epoch %" PRIu64 ": %s",
		 f->rank, epoch, why ? why : "cancelled");
	struct wire_hdr h = {.op = HP_FABRIC_OP_ABORT,
			     .epoch = epoch,
			     .seq = 0,
			     .arg = ECANCELED,
			     .len = (uint32_t)strlen(text)};
	send_all(f, &h, text);
	push_out(f, ABORT_OUT_MS);
	return 0;
}

bool hp_fabric_gone(const struct hp_fabric *f, unsigned rank)
{
	return f->peers_set && rank < f->size && f->gone[rank];
}

void hp_fabric_cancel(struct hp_fabric *f)
{
	atomic_store(&f->cancel, true);
}

const char *hp_fabric_last_error(const struct hp_fabric *f)
{
	return f->err;
}

int hp_fabric_fd(const struct hp_fabric *f)
{
	return f->wait_fd;
}

int hp_fabric_dispatch(struct hp_fabric *f)
{
	/* The fd may only be slept on once fi_trywait() agrees: providers
	 * keep work the fd does not show (rxm's own buffers). */
	for (int i = 0; i < 16; i++) {
		int rc = progress(f);
		if (rc < 0)
			return rc;
		if (f->wait_fd < 0)
			return 0;
		struct fid *fids[1] = {&f->cq->fid};
		if (fi_trywait(f->fabric, fids, 1) == FI_SUCCESS)
			return 0;
	}
	return -EAGAIN;
}

void hp_fabric_get_stats(const struct hp_fabric *f,
			 struct hp_fabric_stats *out)
{
	*out = f->st;
}

int hp_fabric_test_send(struct hp_fabric *f, unsigned dst,
			const struct hp_fabric_test_msg *m, int deadline_ms)
{
	if (dst >= f->size || !f->peers_set || m->len > HP_FABRIC_RECORD_MAX)
		return -EINVAL;
	struct wire_hdr h = {.op = (uint8_t)m->op,
			     .round = m->round,
			     .epoch = m->epoch,
			     .seq = m->seq,
			     .arg = m->arg,
			     .total = m->total,
			     .count = m->count,
			     .len = m->len};
	uint64_t until = now_ns() + (uint64_t)deadline_ms * 1000000u;
	int rc = post_send(f, dst, &h, m->payload, false);
	while (!rc && f->tx_busy) {
		if (now_ns() >= until)
			return -ETIMEDOUT;
		rc = progress_wait(f, until);
	}
	return rc;
}
