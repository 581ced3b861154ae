/* server-private.h — what server.c (thread, queue, replies) and routes.c
 * (one function per route) share. Nothing outside server/ includes it.
 * The two call each other on purpose: they are one unit (one struct
 * hp_server, one thread), split into transport and routes, not two modules.
 * Threading rule: fields marked "mu" are shared with the agent thread and
 * read or written only under mu; everything else belongs to the server
 * thread (the event_base's) once hp_server_new has returned. */
#ifndef HP_SERVER_PRIVATE_H
#define HP_SERVER_PRIVATE_H

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "base/log.h"
#include "server.h"

/* /status before the agent's first hp_server_publish. */
#define HP_SRV_DEFAULT_STATUS                                                  \
	"{\"status\":\"init\",\"transitions\":{},\"spare\":\"False\"}"

/* One command waiting for the agent, and the HTTP request to answer. */
struct hp_pending {
	struct hp_cmd cmd;           /* what the agent sees; cmd.done is mu */
	struct hp_server *s;
	struct evhttp_request *req;  /* NULL once answered */
	struct event *timer;         /* cmd_timeout */
	bool queued;                 /* mu: on the agent queue, not taken */
	struct hp_pending *prev, *next; /* every pending not yet freed */
};

/* One accepted connection (server thread only), tracked from accept to
 * close so that their number stays under the cap and none outlives the
 * request deadline. */
struct hp_srv_conn {
	struct hp_server *s;
	struct evhttp_connection *evcon;
	double since;         /* accepted, or its last reply written */
	bool busy;            /* a request is being answered */
	bool reply_in_flight; /* handed to evhttp, not yet written */
	/* framing (server.c): each request head is held until complete and
	 * checked before evhttp sees any of it */
	struct bufferevent *bev;
	struct evbuffer_cb_entry *in_cb; /* on the bufferevent's input */
	struct evbuffer *hold;  /* head bytes not yet passed on */
	size_t scanned;         /* of hold, searched for its end already */
	unsigned long long body_left; /* body bytes to pass straight on */
	bool validate;          /* false after a chunked body: evhttp's alone */
	bool passing;           /* we are adding to the input ourselves */
	bool discard;           /* rejected: drop whatever else comes */
	/* a fast-path reply (server.c) the socket did not take at once is
	 * in the bufferevent's output; reading waits until it is out */
	bool fast_pending;
	bufferevent_data_cb fast_saved_wcb;
	int reject_code;        /* the synthetic request stands for this */
	const char *reject_why;
	struct hp_srv_conn *prev, *next;
};

struct hp_server {
	char *host;
	int port;
	double cmd_timeout;
	enum hp_log_level access_level; /* from --server-log-level */
	void (*wake_cb)(void *ud);
	char *(*metrics_cb)(void *ud);
	void *ud;

	struct event_base *base;
	struct evhttp *http;
	struct evhttp_bound_socket *bound;
	struct event *done_ev;  /* activated by hp_server_cmd_done */
	struct event *stop_ev;  /* activated by hp_server_free */
	struct event *drain_ev; /* drain deadline */
	pthread_t thread;

	pthread_mutex_t mu;
	struct hp_cmd *q_head, *q_tail; /* mu */
	char *status, *metrics, *fabric; /* mu */
	atomic_uint status_gen; /* bumped by every publish of status */
	/* server thread: the GET /status reply, rendered for status_gen
	 * fast_gen in second fast_sec (server.c's fast path) */
	char *fast;
	size_t fast_len;
	unsigned fast_gen;
	time_t fast_sec;
	double drain_timeout;           /* mu */
	/* mu: the fabric peer table (routes.c), NULL until its size is known */
	struct hp_srv_fabric_peer {
		char *name, *http; /* NULL until that rank joined */
		int epoch;         /* the round of that record */
	} *fpeers;
	unsigned n_fpeers;

	/* server thread only: replies by route and status, for /metrics */
	struct hp_srv_http_count {
		const char *route; /* a routes[] path or "other" */
		int code;
		unsigned long long n;
	} http_count[64];
	size_t n_http_count;

	struct hp_pending *all;
	int unflushed; /* replies handed to evhttp and not yet written */

	/* server thread only: connections (server.c) */
	struct hp_srv_conn *conns;
	int n_conns, max_conns;
	struct bufferevent **fresh; /* accepted, not yet adopted */
	int n_fresh, cap_fresh;
	unsigned long long closed_deadline, closed_limit;
	double limit_logged;
	struct event *adopt_ev;  /* adopts fresh connections */
	struct event *sweep_ev;  /* request deadline, once a second */
	struct event *resume_ev; /* accept again after an accept error */
	bool accept_off, accept_backoff, accept_batch_full;
	double accept_err_logged; /* when, for rate limiting */
	unsigned long long accept_errs; /* since that line */
	bool draining;
	bool drain_expired;
};

/* server.c: the connection of req, or NULL (server thread). */
struct hp_srv_conn *hp_srv_conn_of(struct hp_server *s,
				   struct evhttp_request *req);

/* routes.c: the evhttp generic callback. */
void hp_srv_route(struct evhttp_request *req, void *arg);

/* server.c: replies (with the access log line) and the command path. */
void hp_srv_reply(struct hp_server *s, struct evhttp_request *req, int code,
		  const char *content_type, const char *body, size_t len);
/* {"detail":"<detail>"} with Content-Type application/json. */
void hp_srv_reply_detail(struct hp_server *s, struct evhttp_request *req,
			 int code, const char *detail);
/* Queues p->cmd for the agent, wakes it and arms the deadline; the reply
 * is sent later from the server thread. Takes ownership of p. */
void hp_srv_submit(struct hp_server *s, struct evhttp_request *req,
		   struct hp_pending *p);
/* routes.c: counts one reply in s->http_count (server thread). */
void hp_srv_count_reply(struct hp_server *s, struct evhttp_request *req,
			int code);
/* The same for a reply to path that evhttp never saw. */
void hp_srv_count_path(struct hp_server *s, const char *path, int code);
/* routes.c: frees the fabric peer table (at hp_server_free). */
void hp_srv_fabric_peers_free(struct hp_server *s);
/* A copy of a published text (status/metrics/fabric), or NULL. */
char *hp_srv_copy(struct hp_server *s, char *const *field);

#endif
