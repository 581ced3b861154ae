/* fabric-peer — one rank of a fabric process test or benchmark. It opens
 * the fabric, prints "name HEX", reads every rank's name (one hex line per
 * rank, in rank order) from stdin, then runs the commands given on its
 * command line in order and prints one result line per command:
 *   ok CMD ms=T | fail CMD rc=ERRNO ms=T msg=TEXT | bad CMD DETAIL
 * and "done" at the end, then leaves the fabric. It checks allgather and bcast results itself.
 * Exits 77 when no libfabric provider is usable. Commands:
 *   barrier:E[:MS]          allgather:E:LEN[:MS]     bcast:E:ROOT:LEN[:MS]
 *   inject-stale:E:SEQ      (an allgather message of an old epoch to all)
 *   leave                   stats          say:WORD (a readiness line)
 *   wait                    (blocks, not progressing, until stdin says go)
 *   wait-queued:K[:MS]      (as the agent's loop would: poll the fabric fd
 *                           and dispatch until K messages were queued)
 *   bench-barrier:E:ITERS   bench-bcast:E:ITERS:LEN  (prints us per op) */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/xalloc.h"
#include "rendezvous/fabric-test.h"
#include "rendezvous/fabric.h"

#define DEFAULT_MS 5000

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static unsigned char pattern(unsigned rank, uint64_t epoch, size_t j)
{
	return (unsigned char)(rank * 131u + j * 7u + epoch * 17u + (j >> 8));
}

static const char *errname(int rc)
{
	switch (-rc) {
	case ETIMEDOUT:
		return "ETIMEDOUT";
	case ECONNRESET:
		return "ECONNRESET";
	case EIO:
		return "EIO";
	case EPROTO:
		return "EPROTO";
	case ESTALE:
		return "ESTALE";
	case EINVAL:
		return "EINVAL";
	case ESHUTDOWN:
		return "ESHUTDOWN";
	default:
		return "E?";
	}
}

static void report(struct hp_fabric *f, const char *cmd, int rc, double t0)
{
	double ms = now_ms() - t0;
	if (rc == 0)
		printf("ok %s ms=%.1f\n", cmd, ms);
	else
		printf("fail %s rc=%s ms=%.1f msg=%s\n", cmd, errname(rc), ms,
		       hp_fabric_last_error(f));
}

static int do_allgather(struct hp_fabric *f, unsigned rank, unsigned size,
			const char *cmd, uint64_t e, size_t len, int ms)
{
	unsigned char *rec = xmalloc(len ? len : 1);
	unsigned char *out = xcalloc(size, len ? len : 1);
	for (size_t j = 0; j < len; j++)
		rec[j] = pattern(rank, e, j);
	double t0 = now_ms();
	int rc = hp_fabric_allgather(f, e, rec, len, out, ms);
	report(f, cmd, rc, t0);
	for (unsigned r = 0; rc == 0 && r < size; r++) {
		for (size_t j = 0; j < len; j++) {
			if (out[r * len + j] != pattern(r, e, j)) {
				printf("bad %s rank %u byte %zu\n", cmd, r, j);
				rc = -EBADMSG;
				break;
			}
		}
	}
	free(rec);
	free(out);
	return rc;
}

static int do_bcast(struct hp_fabric *f, unsigned rank, const char *cmd,
		    uint64_t e, unsigned root, size_t len, int ms)
{
	unsigned char *buf = xmalloc(len ? len : 1);
	for (size_t j = 0; j < len; j++)
		buf[j] = rank == root ? pattern(root, e, j) : 0xee;
	double t0 = now_ms();
	int rc = hp_fabric_bcast(f, e, root, buf, len, ms);
	report(f, cmd, rc, t0);
	for (size_t j = 0; rc == 0 && j < len; j++) {
		if (buf[j] != pattern(root, e, j)) {
			printf("bad %s byte %zu\n", cmd, j);
			rc = -EBADMSG;
		}
	}
	free(buf);
	return rc;
}

/* Barrier: the mean over back-to-back barriers. Bcast: each one starts
 * right after a barrier and we time only the bcast, as OSU does; a root
 * returns once it has sent, so the driver takes the slowest rank. */
static void do_bench(struct hp_fabric *f, const char *cmd, bool bcast,
		     uint64_t e, long iters, size_t len)
{
	unsigned char buf[HP_FABRIC_RECORD_MAX] = {0};
	int rc = 0;
	double spent = 0, t0 = 0;
	/* Warm-up: some providers set connections up lazily. */
	for (long i = -20; i < iters && !rc; i++) {
		if (i == 0)
			t0 = now_ms();
		if (!bcast) {
			rc = hp_fabric_barrier(f, e, 20000);
			continue;
		}
		rc = hp_fabric_barrier(f, e, 20000);
		double t = now_ms();
		if (!rc)
			rc = hp_fabric_bcast(f, e, 0, buf, len, 20000);
		if (i >= 0)
			spent += now_ms() - t;
	}
	if (rc) {
		report(f, cmd, rc, t0);
		return;
	}
	if (!bcast)
		spent = now_ms() - t0;
	printf("ok %s us=%.2f\n", cmd, spent * 1e3 / (double)iters);
}

static int run(struct hp_fabric *f, unsigned rank, unsigned size, char *cmd)
{
	char copy[256];
	snprintf(copy, sizeof(copy), "%s", cmd);
	char *save = NULL;
	char *verb = strtok_r(copy, ":", &save);
	char *a[4] = {0};
	for (int i = 0; i < 4; i++)
		a[i] = strtok_r(NULL, ":", &save);
#define NUM(i, dflt) (a[i] ? strtoull(a[i], NULL, 10) : (dflt))
	if (!verb)
		return -EINVAL;
	if (strcmp(verb, "barrier") == 0) {
		double t0 = now_ms();
		int rc = hp_fabric_barrier(f, NUM(0, 1),
					   (int)NUM(1, DEFAULT_MS));
		report(f, cmd, rc, t0);
		return rc;
	}
	if (strcmp(verb, "allgather") == 0)
		return do_allgather(f, rank, size, cmd, NUM(0, 1),
				    (size_t)NUM(1, 64), (int)NUM(2, DEFAULT_MS));
	if (strcmp(verb, "bcast") == 0)
		return do_bcast(f, rank, cmd, NUM(0, 1), (unsigned)NUM(1, 0),
				(size_t)NUM(2, 128), (int)NUM(3, DEFAULT_MS));
	if (strcmp(verb, "inject-stale") == 0) {
		/* Exactly what round 0 of an allgather at (E, SEQ) from us
		 * looks like, with a payload no real record has. */
		unsigned char poison[64];
		memset(poison, 0x5a, sizeof(poison));
		struct hp_fabric_test_msg m = {
			.op = HP_FABRIC_OP_ALLGATHER,
			.epoch = NUM(0, 0),
			.seq = (uint32_t)NUM(1, 0),
			.round = 0,
			.arg = rank,
			.total = sizeof(poison),
			.count = 1,
			.payload = poison,
			.len = sizeof(poison)};
		int rc = 0;
		double t0 = now_ms();
		for (unsigned r = 0; r < size && !rc; r++) {
			if (r != rank)
				rc = hp_fabric_test_send(f, r, &m, DEFAULT_MS);
		}
		report(f, cmd, rc, t0);
		return rc;
	}
	if (strcmp(verb, "leave") == 0) {
		double t0 = now_ms();
		int rc = hp_fabric_leave(f, DEFAULT_MS);
		report(f, cmd, rc, t0);
		return rc;
	}
	if (strcmp(verb, "stats") == 0) {
		struct hp_fabric_stats st;
		hp_fabric_dispatch(f);
		hp_fabric_get_stats(f, &st);
		printf("stats sent=%" PRIu64 " received=%" PRIu64
		       " dropped_stale=%" PRIu64 " dropped_bad=%" PRIu64
		       " queued=%" PRIu64 "\n",
		       st.sent, st.received, st.dropped_stale, st.dropped_bad,
		       st.queued);
		return 0;
	}
	if (strcmp(verb, "wait-queued") == 0) {
		double t0 = now_ms(), end = t0 + (double)NUM(1, DEFAULT_MS);
		struct hp_fabric_stats st;
		int rc;
		for (;;) {
			rc = hp_fabric_dispatch(f);
			hp_fabric_get_stats(f, &st);
			if ((rc < 0 && rc != -EAGAIN) || st.queued >= NUM(0, 1))
				break;
			if (now_ms() >= end) {
				rc = -ETIMEDOUT;
				break;
			}
			struct pollfd pfd = {.fd = hp_fabric_fd(f),
					     .events = POLLIN};
			if (rc == 0 && pfd.fd >= 0)
				poll(&pfd, 1, (int)(end - now_ms()) + 1);
		}
		if (rc == -EAGAIN)
			rc = 0;
		report(f, cmd, rc, t0);
		return rc;
	}
	if (strcmp(verb, "wait") == 0) {
		char line[64];
		return fgets(line, sizeof(line), stdin) ? 0 : -EPIPE;
	}
	if (strcmp(verb, "say") == 0) {
		printf("say %s\n", a[0] ? a[0] : "");
		return 0;
	}
	if (strcmp(verb, "bench-barrier") == 0) {
		do_bench(f, cmd, false, NUM(0, 1), (long)NUM(1, 100), 0);
		return 0;
	}
	if (strcmp(verb, "bench-bcast") == 0) {
		do_bench(f, cmd, true, NUM(0, 1), (long)NUM(1, 100),
			 (size_t)NUM(2, 128));
		return 0;
	}
#undef NUM
	printf("bad %s unknown command\n", cmd);
	return -EINVAL;
}

static int read_peers(struct hp_fabric *f, unsigned size)
{
	char line[2 * HP_FABRIC_NAME_MAX + 8];
	unsigned char(*names)[HP_FABRIC_NAME_MAX] =
		xcalloc(size, sizeof(*names));
	const void **ptrs = xcalloc(size, sizeof(*ptrs));
	size_t *lens = xcalloc(size, sizeof(*lens));
	int rc = 0;
	for (unsigned r = 0; r < size && !rc; r++) {
		if (!fgets(line, sizeof(line), stdin)) {
			rc = -EPIPE;
			break;
		}
		line[strcspn(line, "\r\n")] = '\0';
		rc = hp_fabric_hex_decode(line, names[r], HP_FABRIC_NAME_MAX,
					  &lens[r]);
		ptrs[r] = names[r];
	}
	if (!rc)
		rc = hp_fabric_set_peers(f, ptrs, lens, size);
	if (rc)
		fprintf(stderr, "fabric-peer: peers: %s (%d)\n",
			hp_fabric_last_error(f), rc);
	free(names);
	free(ptrs);
	free(lens);
	return rc;
}

int main(int argc, char **argv)
{
	struct hp_fabric_options o = {.size = 1};
	static const struct option longopts[] = {
		{"rank", required_argument, NULL, 'r'},
		{"size", required_argument, NULL, 's'},
		{"node", required_argument, NULL, 'n'},
		{"epoch", required_argument, NULL, 'e'},
		{"no-wait-fd", no_argument, NULL, 'b'},
		{"spin-us", required_argument, NULL, 'u'},
		{NULL, 0, NULL, 0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "r:s:n:e:bu:", longopts, NULL)) != -1) {
		switch (c) {
		case 'r':
			o.rank = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 's':
			o.size = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'n':
			o.node = optarg;
			break;
		case 'e':
			o.epoch = strtoull(optarg, NULL, 10);
			break;
		case 'b':
			o.no_wait_fd = true;
			break;
		case 'u':
			o.spin_us = (unsigned)strtoul(optarg, NULL, 10);
			break;
		default:
			return 2;
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (getenv("HP_FABRIC_DEBUG"))
		hp_log_level = HP_LOG_DEBUG;

	int err;
	/* the agent's sizes and provider choice (xnode.c), so the
	 * collectives are tested as the agent runs them */
	unsigned knobs = hp_fabric_env_set();
	struct hp_fabric *f = hp_fabric_new(&o, &err);
	hp_fabric_env_unset(knobs);
	if (!f) {
		printf("skip no usable libfabric provider (%d)\n", err);
		return 77;
	}
	size_t len;
	const void *name = hp_fabric_name(f, &len);
	char *hex = hp_fabric_hex_encode(name, len);
	printf("name %s %s fd=%d\n", hex, hp_fabric_provider(f),
	       hp_fabric_fd(f));
	free(hex);

	int status = 0;
	if (read_peers(f, o.size)) {
		status = 99;
		goto out;
	}
	for (int i = optind; i < argc; i++) {
		printf("begin %s\n", argv[i]);
		int rc = run(f, o.rank, o.size, argv[i]);
		/* A failure that is not a check failure is reported and the
		 * script goes on: tests read what each rank printed. */
		if (rc == -EBADMSG)
			status = 1;
	}
	printf("done\n");
	/* Leave as an agent does on shutdown, so peers still inside a
	 * collective with us hear why we went (our ABORT goes out first). */
	hp_fabric_leave(f, 2000);
out:
	hp_fabric_free(f);
	return status;
}
