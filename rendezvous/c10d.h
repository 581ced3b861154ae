/* c10d.h — the rendezvous of --rdzv-backend=c10d among hyperpodrun agents,
 * with torchrun's semantics but its own wire format (HTTP/1.0 on the
 * --rdzv-endpoint port, not torch's TCPStore). Every node runs the same
 * command line; the agent that can bind the endpoint on its own machine
 * serves the rendezvous there (the others get EADDRINUSE or a foreign
 * address and join as clients), all of them join over TCP. A round closes
 * when --nnodes MAX nodes joined, or MIN joined and last_call_timeout
 * expired; ranks follow the join order, MASTER_ADDR/PORT are group rank
 * 0's address and a port it found free. While a round runs each node keeps
 * a watch open: a failure reported by a node, a node that disconnects
 * without being done, or a late node makes the host start the next round
 * and answer every watch "restart". Owns its uv handles and sockets; never
 * touches workers. Callbacks run on the agent's loop. */
#ifndef HP_C10D_H
#define HP_C10D_H

#include <stdbool.h>
#include <uv.h>

#include "base/hp.h"

struct hp_c10d;

struct hp_c10d_round {
	int round;       /* the host's round number, 0 first */
	int rank;        /* this node's group rank */
	int size;        /* nodes in the round (GROUP_WORLD_SIZE) */
	char master_addr[256];
	int master_port;
};

struct hp_c10d_options {
	const char *endpoint;  /* host[:port]; port 29400 (torch's) if none */
	const char *run_id;    /* joins from another run id are refused */
	int min_nodes, max_nodes;
	double last_call_timeout; /* s after MIN joined (torch: 30) */
	double join_timeout;      /* s a join may wait for its round (600) */
	int is_host;              /* -1 auto (bind where local), 0, 1 */
	const char *local_addr;   /* this node's address; NULL = as seen */
	const char *node_name;    /* for logs and the node id */
	/* a round closed with this node in it */
	void (*on_round)(void *ud, const struct hp_c10d_round *r);
	/* the running round ended (another node failed, left or arrived):
	 * stop the group and hp_c10d_join again */
	void (*on_restart)(void *ud, const char *why);
	/* fatal: the endpoint was lost or a join timed out */
	void (*on_error)(void *ud, const char *msg);
	/* hp_c10d_done's exit barrier: every node of the round is done */
	void (*on_barrier)(void *ud);
	void *ud;
};

/* Parses the endpoint, decides whether this agent hosts the rendezvous
 * and, if so, listens. Returns NULL (logged) when the endpoint is bad or
 * a forced host cannot listen. */
struct hp_c10d *hp_c10d_new(uv_loop_t *loop, const struct hp_c10d_options *o);

bool hp_c10d_is_host(const struct hp_c10d *c);

/* The port the host listens on (the endpoint's, or the one port 0 got). */
int hp_c10d_port(const struct hp_c10d *c);

/* Joins the next round (retrying the connection until join_timeout);
 * on_round or on_error follows. */
void hp_c10d_join(struct hp_c10d *c);

/* This node's group failed in the current round: the host ends it. */
void hp_c10d_fail(struct hp_c10d *c);

/* This node's group succeeded: on_barrier once every node of the round is
 * done or gone (the host keeps serving until then). */
void hp_c10d_done(struct hp_c10d *c);

/* Closes every handle (run the loop afterwards to finish the closes) and
 * frees. NULL is a no-op. */
void hp_c10d_free(struct hp_c10d *c);

#endif
