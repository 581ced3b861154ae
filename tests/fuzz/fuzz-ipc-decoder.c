/* fuzz-ipc-decoder — the worker IPC's frame decoder and message handler.
 * The input's first bytes choose a frame limit and the chunk sizes the
 * stream is cut into (the way reads split it); the rest is the stream.
 * hp_ipc_decoder_feed must give the same frames, in the same order, as a
 * plain reference decoder written here, however the stream is cut, and
 * stop with -EMSGSIZE exactly where the reference meets an oversized
 * prefix. Every frame is then handed to ipc.c's own message handler
 * (static, hence the #include) against a server struct with no sockets,
 * as a connected worker's bytes would be. */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "rendezvous/ipc.c"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

/* Counts frames and hands each to the message handler. */
struct frames {
	size_t n;
	struct conn *c;
};

static int got_frame(void *ud, const char *json, size_t len)
{
	struct frames *f = ud;
	f->n++;
	handle_message(f->c, json, len);
	return 0;
}

/* The reference: whole frames from a contiguous stream. Returns the number
 * of frames; *oversized tells whether it stopped at a too-long prefix. */
static size_t ref_frames(const uint8_t *s, size_t n, size_t max,
			 size_t *off, size_t *len, size_t cap, bool *oversized)
{
	size_t p = 0, k = 0;
	*oversized = false;
	while (n - p >= 4) {
		uint32_t l = (uint32_t)s[p] << 24 | (uint32_t)s[p + 1] << 16 |
			     (uint32_t)s[p + 2] << 8 | s[p + 3];
		if (l > max) {
			*oversized = true;
			break;
		}
		if (n - p - 4 < l)
			break;
		if (k < cap) {
			off[k] = p + 4;
			len[k] = l;
		}
		k++;
		p += 4 + l;
	}
	return k;
}

struct check {
	const uint8_t *stream;
	const size_t *off, *len;
	size_t cap, i;
};

static int cmp_frame(void *ud, const char *json, size_t len)
{
	struct check *c = ud;
	if (c->i < c->cap) {
		FUZZ_CHECK(len == c->len[c->i]);
		FUZZ_CHECK(memcmp(json, c->stream + c->off[c->i], len) == 0);
	}
	c->i++;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t limits[] = {1, 16, 300, 4096, HP_IPC_MAX_FRAME};
	if (size < 2)
		return 0;
	size_t max = limits[data[0] % HP_ARRAY_LEN(limits)];
	size_t nchunks = data[1] & 15;
	if (size < 2 + nchunks)
		return 0;
	const uint8_t *chunks = data + 2;
	const uint8_t *s = data + 2 + nchunks;
	size_t n = size - 2 - nchunks;

	size_t off[64], len[64];
	bool oversized;
	size_t want = ref_frames(s, n, max, off, len, HP_ARRAY_LEN(off),
				 &oversized);

	/* The stream cut into the chosen chunks (one chunk when none). */
	struct hp_ipc_decoder *d = hp_ipc_decoder_new(max);
	struct check ck = {.stream = s, .off = off, .len = len,
			   .cap = HP_ARRAY_LEN(off)};
	size_t p = 0, ci = 0;
	int rc = 0;
	while (p < n) {
		size_t k = nchunks ? (size_t)chunks[ci++ % nchunks] + 1 : n;
		if (k > n - p)
			k = n - p;
		/* a copy of exactly k bytes: a read past the chunk is caught */
		char *buf = malloc(k);
		memcpy(buf, s + p, k);
		rc = hp_ipc_decoder_feed(d, buf, k, cmp_frame, &ck);
		free(buf);
		p += k;
		if (rc < 0)
			break;
	}
	FUZZ_CHECK(ck.i == want);
	if (oversized) {
		FUZZ_CHECK(rc == -EMSGSIZE);
		/* the stream cannot be resynchronised */
		FUZZ_CHECK(hp_ipc_decoder_feed(d, "\0\0\0\0", 4, cmp_frame,
					       &ck) == -EMSGSIZE);
	} else {
		FUZZ_CHECK(rc == 0);
	}
	hp_ipc_decoder_free(d);

	/* Each frame through the real message handler, as a worker on a
	 * connection of a server for 8 local ranks would send it. */
	struct hp_ipc ipc = {.local_world_size = 8};
	struct conn c = {.ipc = &ipc, .id = 1};
	struct frames f = {.c = &c};
	d = hp_ipc_decoder_new(max);
	hp_ipc_decoder_feed(d, (const char *)s, n, got_frame, &f);
	hp_ipc_decoder_free(d);
	FUZZ_CHECK(f.n == want);
	for (size_t i = 0; i < ipc.n_regs; i++) {
		FUZZ_CHECK(ipc.regs[i].local_rank >= 0 &&
			   ipc.regs[i].local_rank < ipc.local_world_size);
		free(ipc.regs[i].client_id);
	}
	free(ipc.regs);
	for (int i = 0; i < HP_MAX_LOCAL_WORKERS; i++)
		FUZZ_CHECK(ipc.state[i] <= HP_IPC_FAILED);
	return 0;
}
