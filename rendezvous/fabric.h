/* fabric.h — the libfabric control plane between agents: one RDM endpoint,
 * one CQ, one AV, and blocking collectives (barrier, allgather, broadcast)
 * that each carry an epoch and a deadline. It owns the endpoint and every
 * buffer the provider touches; it never learns peers' names by itself (the
 * agent exchanges them out of band, e.g. over HTTP) and never includes
 * anything from the agent but hp.h/log.h. fabric.c is the only file in the
 * tree that includes libfabric headers. */
#ifndef HP_FABRIC_H
#define HP_FABRIC_H

#include <stddef.h>
#include <stdint.h>

#include "base/hp.h"

/* The largest record allgather takes, and the largest message payload. */
#define HP_FABRIC_RECORD_MAX 4096
/* The largest endpoint name we accept (EFA's is 32 bytes, tcp's 16..28). */
#define HP_FABRIC_NAME_MAX 256

struct hp_fabric;

struct hp_fabric_options {
	unsigned rank; /* this agent's rank, < size */
	unsigned size; /* number of agents (>= 1) */
	/* Messages of an epoch below this are dropped from the start. */
	uint64_t epoch;
	/* Provider name ("efa", "tcp"); NULL lets fi_getinfo choose, which
	 * honours the FI_PROVIDER environment variable. */
	const char *provider;
	/* Local address to bind ("127.0.0.1", a pod IP); NULL lets the
	 * provider choose its first interface. */
	const char *node;
	/* Do not ask for a wait fd even where the provider offers one:
	 * collectives then spin on the CQ (the EFA path; for tests). */
	bool no_wait_fd;
	/* Inside a collective, poll the CQ this long after the last event
	 * before sleeping on the wait fd: a wake-up costs more than a
	 * loopback message. 0 sleeps at once (best when agents outnumber
	 * cores). */
	unsigned spin_us;
};

/* Counters for tests and the status endpoint. */
struct hp_fabric_stats {
	uint64_t sent;          /* messages posted */
	uint64_t received;      /* messages received and well-formed */
	uint64_t dropped_stale; /* dropped: older epoch or finished collective */
	uint64_t dropped_bad;   /* dropped: bad magic/version/size/rank */
	uint64_t queued;        /* arrived early and went to the unexpected list */
};

/* Opens the fabric, domain, endpoint, CQ and AV and posts receives. A
 * fabric is then used from one thread only (FI_THREAD_DOMAIN): the
 * agent's loop.
 * Returns NULL and logs why when no provider fits (a caller that cannot
 * run without the fabric treats that as "no fabric here"); *err gets the
 * -errno when err is not NULL. */
struct hp_fabric *hp_fabric_new(const struct hp_fabric_options *opts,
				int *err);

/* Memory (issue 13 §7): libfabric initialises every provider it has
 * unless FI_PROVIDER names one, and the tcp and rxm providers size their
 * queues and buffer pools from the environment, ~70 MB per endpoint by
 * default; for our messages (<= 4 KiB + header, a few in flight) the
 * values in fabric.c keep the agent near 9 MB with the fabric open.
 * hp_fabric_env_set() puts each in the environment where the user set
 * nothing (FI_PROVIDER: hp_fabric_default_provider()) and returns which
 * it set; hp_fabric_env_unset() takes those out again, so workers spawned
 * later do not inherit them. Call both from the thread that owns the
 * environment, around hp_fabric_new() (libfabric reads them while it
 * initialises and opens the endpoint). */
unsigned hp_fabric_env_set(void);
void hp_fabric_env_unset(unsigned mask);

/* The provider the agents use when FI_PROVIDER is unset: "efa" where an
 * RDMA device is bound to the efa driver (HyperPod), else "tcp". Reads
 * /sys/class/infiniband (HP_SYSFS_INFINIBAND overrides it, for tests). */
const char *hp_fabric_default_provider(void);

/* Closes everything; pending operations are cancelled. NULL does nothing.
 * Call hp_fabric_leave() first for a clean departure. */
void hp_fabric_free(struct hp_fabric *f);

/* This endpoint's address, *len bytes, valid until hp_fabric_free(). It is
 * what peers must pass to hp_fabric_set_peers() at our rank. */
const void *hp_fabric_name(const struct hp_fabric *f, size_t *len);

/* The provider actually used, e.g. "tcp;ofi_rxm" or "efa". */
const char *hp_fabric_provider(const struct hp_fabric *f);

/* Lowercase hex of len bytes; the caller frees it. */
char *hp_fabric_hex_encode(const void *name, size_t len);

/* Decodes hex (either case, even length) into out (cap bytes); stores the
 * byte count in *len. Returns 0, -EINVAL on a bad digit or odd length,
 * -ENOSPC when out is too small. */
int hp_fabric_hex_decode(const char *hex, void *out, size_t cap, size_t *len);

/* Inserts all peers' names in the AV, names[r] of lens[r] bytes for rank r,
 * r < n; n must be the size given at creation and names[rank] our own
 * name. May be called again (a peer came back with a new address): the old
 * addresses are removed and departures forgotten. Returns 0 or -errno. */
int hp_fabric_set_peers(struct hp_fabric *f, const void *const names[],
			const size_t lens[], unsigned n);

/* Collectives. All ranks call the same sequence of collectives with the
 * same epoch; epochs never go backwards (-EINVAL). Messages of an older
 * epoch are dropped; messages that arrive early (a later collective or
 * epoch) wait in an unexpected list and are never mixed in. Each call
 * blocks, progressing the CQ itself, for at most deadline_ms (> 0).
 *
 * Return 0, or:
 *   -ETIMEDOUT   the deadline passed; hp_fabric_last_error() names the
 *                ranks that did not answer, also when they blocked us
 *                through others ("barrier epoch 3 timed out after 2000 ms
 *                waiting for ranks 2,5"). Ranks still inside the collective
 *                share who they wait for halfway to the deadline, so every
 *                rank names the same culprits.
 *   -ECONNRESET  a rank this one waited for left (hp_fabric_leave()).
 *   -EIO         an error completion (the text has fi_strerror's).
 *   -EPROTO      a peer runs a different collective at the same point.
 *   -ESTALE      the epoch was already abandoned after an error here, or
 *                a rank this one waited for sent a message of a later
 *                epoch (it moved on, and will send nothing more for this
 *                one; with ordered messages only).
 *   -ESHUTDOWN   hp_fabric_leave() was called.
 * and the same code when another rank failed the collective first and
 * told us (the text then says "aborted by rank R: ..."). After any error
 * the ranks' positions differ: the next collective must use a newer
 * epoch, or it returns -ESTALE. */
int hp_fabric_barrier(struct hp_fabric *f, uint64_t epoch, int deadline_ms);

/* Gathers every rank's len-byte record (len <= HP_FABRIC_RECORD_MAX, the
 * same on all ranks) into out, rank r's at out + r * len. rec may point
 * at our own slot in out. */
int hp_fabric_allgather(struct hp_fabric *f, uint64_t epoch, const void *rec,
			size_t len, void *out, int deadline_ms);

/* Copies root's len bytes of buf into every rank's buf (binomial tree). A
 * broadcast longer than HP_FABRIC_RECORD_MAX travels in several messages. */
int hp_fabric_bcast(struct hp_fabric *f, uint64_t epoch, unsigned root,
		    void *buf, size_t len, int deadline_ms);

/* Tells every peer that we leave for good, so a peer blocked on us fails
 * at once with -ECONNRESET naming us instead of waiting for its deadline,
 * and waits up to deadline_ms for those messages to go out. Afterwards
 * only hp_fabric_free() is useful. Returns 0 or -ETIMEDOUT. */
int hp_fabric_leave(struct hp_fabric *f, int deadline_ms);

/* This rank gives up epoch before its first collective began (the agent
 * was stopped while it waited for the peer table): every peer gets an
 * ABORT for that epoch's first collective, so one already waiting there,
 * or arriving later, fails at once with -ECANCELED instead of at its
 * deadline; the epoch is never used here again. Waits at most 200 ms for
 * the messages to go out. Returns 0, or -EINVAL without peers or inside
 * a collective. */
int hp_fabric_abandon(struct hp_fabric *f, uint64_t epoch, const char *why);

/* Has rank said BYE (hp_fabric_leave) since the peers were last set?
 * Only what a collective or hp_fabric_dispatch() has read counts. */
bool hp_fabric_gone(const struct hp_fabric *f, unsigned rank);

/* Makes the collective now running on another thread (or the next one
 * to wait) fail soon with -ECANCELED, as if its deadline had passed. The
 * only call that may come from a thread other than the fabric's. */
void hp_fabric_cancel(struct hp_fabric *f);

/* The text of the last failed call ("" if none). Valid until the next
 * call on f. */
const char *hp_fabric_last_error(const struct hp_fabric *f);

/* For the agent's loop (libinput style): an fd that turns readable when
 * the fabric has work, or -1 when the provider offers none (then call
 * hp_fabric_dispatch() from a timer, e.g. every 100 ms). Call
 * hp_fabric_dispatch() once before the first poll and after every
 * collective, then whenever the fd is readable. */
int hp_fabric_fd(const struct hp_fabric *f);

/* Drains the CQ without blocking: early messages are queued, departures
 * recorded, receives reposted. Returns 0 when the fd may be slept on,
 * -EAGAIN when the provider still had work (call again soon, e.g. from a
 * zero timer), or another -errno. */
int hp_fabric_dispatch(struct hp_fabric *f);

void hp_fabric_get_stats(const struct hp_fabric *f,
			 struct hp_fabric_stats *out);

#endif
