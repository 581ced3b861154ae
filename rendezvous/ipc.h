/* ipc.h — the agent side of the worker IPC of the in-process restart
 * (PROTOCOL.md §Worker IPC), wire-compatible with the reference agent: one
 * AF_UNIX stream socket, frames of a 4-byte big-endian length followed by
 * one UTF-8 JSON object. The module owns the listening socket, the client
 * connections, the client_id → (connection, local rank) registrations and
 * the per-rank barrier state; it runs on the agent's libuv loop and reaches
 * the agent only through struct hp_ipc_callbacks. It never forks, never
 * reads the environment and never decides a restart.
 * The frame codec is separate from the sockets so that it can be unit
 * tested and fuzzed on its own. */
#ifndef HP_IPC_H
#define HP_IPC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <uv.h>

#include "base/hp.h"

/* The largest frame accepted from a worker. The reference sets no limit;
 * a client that sends more is dropped. */
#define HP_IPC_MAX_FRAME (1024u * 1024u)

/* checkpoint_types entries passed to on_ckpt_init. */
#define HP_IPC_MAX_CKPT_TYPES 8

/* local_rank for the senders: every registered client. */
#define HP_IPC_ALL_RANKS (-1)

/* ---- frame codec (pure) ------------------------------------------------ */

struct hp_ipc_decoder;

/* One complete frame's payload (len may be 0). The bytes are valid only
 * during the call and are NOT NUL-terminated. Return 0 to go on, or a
 * negative value to stop: hp_ipc_decoder_feed then returns it at once. */
typedef int hp_ipc_msg_cb(void *ud, const char *json, size_t len);

/* A decoder for one byte stream; frames longer than max_frame bytes are
 * refused. */
struct hp_ipc_decoder *hp_ipc_decoder_new(size_t max_frame);

/* NULL is a no-op. */
void hp_ipc_decoder_free(struct hp_ipc_decoder *d);

/* Feeds n bytes of the stream: calls cb for every frame they complete, in
 * order (several frames may complete in one call, and a frame may span any
 * number of calls). Returns 0; cb's negative value when it asked to stop;
 * or -EMSGSIZE when a length prefix exceeds max_frame (the frames before it
 * have been delivered; the stream cannot be resynchronised, so every later
 * call returns -EMSGSIZE too). */
int hp_ipc_decoder_feed(struct hp_ipc_decoder *d, const char *buf, size_t n,
			hp_ipc_msg_cb *cb, void *ud);

/* One frame for payload json/len: 4-byte big-endian length, then the bytes.
 * Returns a heap buffer of *out_len bytes (caller frees), or NULL when len
 * does not fit in 32 bits. */
char *hp_ipc_encode(const char *json, size_t len, size_t *out_len);

/* ---- the socket server --------------------------------------------------- */

/* Per local rank, as the reference's IPCRankState. */
enum hp_ipc_rank_state {
	HP_IPC_HEALTHY = 0, /* running, or not heard from since a reset */
	HP_IPC_AT_BARRIER,  /* sent at_rcb_barrier */
	HP_IPC_PAST_BARRIER, /* sent past_rcb_barrier */
	HP_IPC_FAILED,      /* sent job_fault */
};

/* "HEALTHY", "AT_BARRIER", "PAST_BARRIER", "FAILED". */
const char *hp_ipc_rank_state_name(enum hp_ipc_rank_state s);

/* What the workers tell the agent. Every member may be NULL. Strings and
 * JSON texts are borrowed for the call. Callbacks may call the senders and
 * the state functions, and hp_ipc_drop_clients/hp_ipc_free: the read that
 * delivered the message stops there. */
struct hp_ipc_callbacks {
	/* a client registered for local_rank ("init") */
	void (*on_init)(void *ud, int local_rank);
	/* at_rcb_barrier; the rank's state is AT_BARRIER already */
	void (*on_barrier)(void *ud, int local_rank);
	/* past_rcb_barrier; the rank's state is PAST_BARRIER already (the
	 * agent clears the rank's previous data and failure) */
	void (*on_past_barrier)(void *ud, int local_rank);
	/* job_fault; state FAILED. rank is the global rank (-1 when absent);
	 * reason, message and restart_mode are NULL when absent or null
	 * (restart_mode NULL means in_process_restart) */
	void (*on_fault)(void *ud, int local_rank, int rank, const char *reason,
			 const char *message, const char *restart_mode);
	/* job_data: data_json is the "data" value as compact JSON text ("null"
	 * when absent; a string stays a JSON string) */
	void (*on_data)(void *ud, int local_rank, int rank,
			const char *data_json);
	/* rank_labels: labels_json is the "labels" object as compact JSON */
	void (*on_labels)(void *ud, int local_rank, const char *labels_json);
	/* Checkpoint discovery (the reference's CheckpointDiscoverySocket
	 * server, 10690281936), on the same socket. ckpt_init: prefix and the
	 * checkpoint_types map as (name, expected count; -1 for null) pairs,
	 * at most HP_IPC_MAX_CKPT_TYPES. */
	void (*on_ckpt_init)(void *ud, int local_rank, const char *prefix,
			     const char *const *type_names,
			     const int *type_counts, size_t n_types);
	/* ckpt_info_update: step (an integer), path (NULL for null) and
	 * checkpoint_type */
	void (*on_ckpt_update)(void *ud, int local_rank, long long step,
			       const char *path, const char *type);
	/* ckpt_info_get: returns the latest checkpoint path as a heap string
	 * (the module frees it) or NULL for none; the module answers
	 * {"path": …} with the same type and client_id on the asking
	 * connection. Without this callback the request is not answered. */
	char *(*on_ckpt_get)(void *ud, int local_rank);
	/* the last client registered for local_rank went away (EOF, socket
	 * error, or dropped for an oversized frame); not called for
	 * hp_ipc_drop_clients or hp_ipc_free */
	void (*on_disconnect)(void *ud, int local_rank);
};

struct hp_ipc;

/* Listens on <tmpdir>/hyperpod_elastic_agent_<pid>.sock (a stale file there
 * is unlinked first; the socket is close-on-exec, mode 0600, and admits
 * only peers of our uid or root) on loop, for local ranks
 * 0 .. local_world_size-1 (at most HP_MAX_LOCAL_WORKERS). The caller passes
 * tmpdir as Python's tempfile.gettempdir() would find it ($TMPDIR, else
 * /tmp), must ignore SIGPIPE (a worker may die while we write to it), and
 * owns and runs the loop. cbs is copied. Returns NULL, with the reason
 * logged, when the socket cannot be set up. */
struct hp_ipc *hp_ipc_new(uv_loop_t *loop, const char *tmpdir, pid_t pid,
			  int local_world_size,
			  const struct hp_ipc_callbacks *cbs, void *ud);

/* The socket path, for HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH. */
const char *hp_ipc_path(const struct hp_ipc *ipc);

/* Stops listening, unlinks the socket file and closes every connection,
 * without callbacks. The memory is released by the handles' close
 * callbacks, so the caller must run the loop afterwards (uv_run until it
 * returns 0, or as part of its own shutdown). NULL is a no-op. */
void hp_ipc_free(struct hp_ipc *ipc);

/* Sends {<members of fields_json>, "type": type, "client_id": id} to every
 * client registered for local_rank (HP_IPC_ALL_RANKS: to every client),
 * each with its own client_id, as the reference does. fields_json is a
 * JSON object text, or NULL for none. Returns 0 when queued; -ENOTCONN when
 * no client is registered for the rank (logged at debug: the reference
 * reports it to its caller); -EINVAL (logged) for bad arguments. A write
 * that fails later drops that client. */
int hp_ipc_send(struct hp_ipc *ipc, int local_rank, const char *type,
		const char *fields_json);

/* job_start: releases the barrier. worker_envs_json is the rank's env map
 * (JSON object text); aggregate_json the aggregate_worker_data value
 * ({"rank_ips": …, "aggregate_worker_data": …}; NULL sends null). The
 * rank's state goes back to HEALTHY, as the reference resets it. */
int hp_ipc_send_start(struct hp_ipc *ipc, int local_rank,
		      const char *worker_envs_json, const char *aggregate_json);

/* job_rank_info: the same fields, pushed on /update; state unchanged. */
int hp_ipc_send_rank_info(struct hp_ipc *ipc, int local_rank,
			  const char *worker_envs_json,
			  const char *aggregate_json);

/* job_fault {"restart_count": n}: clean up and come back to the barrier.
 * The reference broadcasts it: pass HP_IPC_ALL_RANKS. */
int hp_ipc_send_fault(struct hp_ipc *ipc, int local_rank, int restart_count);

/* job_failed_ranks with the members of fields_json (the reference defines
 * the type but never sends it, so there is no fixed payload). */
int hp_ipc_send_failed_ranks(struct hp_ipc *ipc, int local_rank,
			     const char *fields_json);

/* The rank's state; HP_IPC_HEALTHY for a rank out of range. */
enum hp_ipc_rank_state hp_ipc_rank_state(const struct hp_ipc *ipc,
					 int local_rank);

/* True when every local rank is in state s (the reference's at_barrier()
 * and passed_barrier()). */
bool hp_ipc_all_in_state(const struct hp_ipc *ipc, enum hp_ipc_rank_state s);

/* True when some local rank is FAILED (the reference's is_failed). */
bool hp_ipc_any_failed(const struct hp_ipc *ipc);

/* Every rank back to HEALTHY (the reference's reset_worker_state). */
void hp_ipc_reset_states(struct hp_ipc *ipc);

/* True when at least one client is registered for local_rank. */
bool hp_ipc_rank_connected(const struct hp_ipc *ipc, int local_rank);

/* Names the process group of the worker of local_rank (its pid: workers
 * run in groups of their own); from then on only processes of that group
 * may send messages for the rank. 0 forgets it (anyone of our uid). */
void hp_ipc_set_rank_pgid(struct hp_ipc *ipc, int local_rank, pid_t pgid);

/* Closes every client connection without on_disconnect (the reference's
 * clear_clients, before a process-level restart). */
void hp_ipc_drop_clients(struct hp_ipc *ipc);

#endif
