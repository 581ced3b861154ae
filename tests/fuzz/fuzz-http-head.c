/* fuzz-http-head — server.c's request-head checker (issue 12 §10), the
 * code that stands between a client's bytes and evhttp's parser. The
 * input's first byte chooses the chunk size the stream is cut into (the
 * way reads split it); the rest is the stream, added chunk by chunk to a
 * real evbuffer carrying server.c's own input callback (static, hence the
 * #include), as a connection's reads would add it. Whatever the bytes, the
 * callback may only pass on, hold or drop them: what evhttp gets plus what
 * is held never exceeds what came in, except for the one synthetic
 * request of a rejection; a held head stays within MAX_HEADERS. The
 * connection has a real bufferevent over a socketpair and a server, so
 * the GET /status fast path answers on it as it would (its peer is read
 * now and then, so short sends happen too). */
#include "fuzz.h"
#include "server/server.c"

#include <sys/socket.h>

static struct event_base *fuzz_base;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	fuzz_base = event_base_new();
	FUZZ_CHECK(fuzz_base);
	return 0;
}

/* reads what the fast path sent, as a client would */
static void drain_peer(int fd)
{
	char buf[4096];
	while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t chunk = (size_t)data[0] % 64 + 1;
	data++;
	size--;
	static struct hp_server srv;
	memset(&srv, 0, sizeof(srv));
	pthread_mutex_init(&srv.mu, NULL);
	srv.access_level = HP_LOG_ERROR;
	int sv[2];
	FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
	struct hp_srv_conn c = {.validate = true, .s = &srv};
	c.bev = bufferevent_socket_new(fuzz_base, sv[0], BEV_OPT_CLOSE_ON_FREE);
	struct evbuffer *in = evbuffer_new();
	c.hold = evbuffer_new();
	FUZZ_CHECK(c.bev && in && c.hold);
	struct evbuffer_cb_entry *e = evbuffer_add_cb(in, on_input, &c);
	size_t fed = 0;
	for (size_t off = 0; off < size; off += chunk) {
		size_t n = HP_MIN(chunk, size - off);
		evbuffer_add(in, data + off, n);
		fed += n;
		size_t got = evbuffer_get_length(in) + evbuffer_get_length(c.hold);
		if (!c.reject_code)
			FUZZ_CHECK(got <= fed);
		else
			FUZZ_CHECK(got <= fed + strlen(SYNTHETIC));
		FUZZ_CHECK(evbuffer_get_length(c.hold) <= MAX_HEADERS + chunk);
		/* evhttp takes what it was given, as it would read it */
		if (!c.discard && evbuffer_get_length(in) && data[off] & 1) {
			size_t k = evbuffer_get_length(in);
			evbuffer_drain(in, k);
			fed -= HP_MIN(fed, k);
		}
		if (data[off] & 2)
			drain_peer(sv[1]);
	}
	if (c.reject_code)
		FUZZ_CHECK(c.reject_code >= 400 && c.reject_code <= 505 &&
			   c.reject_why);
	evbuffer_remove_cb_entry(in, e);
	evbuffer_free(in);
	evbuffer_free(c.hold);
	bufferevent_free(c.bev);
	/* libevent 2.1 finalizes (closes, frees) a bufferevent in the loop */
	event_base_loop(fuzz_base, EVLOOP_NONBLOCK);
	close(sv[1]);
	free(srv.fast);
	pthread_mutex_destroy(&srv.mu);
	return 0;
}
