/* hyperpod.h — libhyperpod, the worker side of the hyperpodrun IPC socket.
 * A training process links this to take part in in-process restarts: it
 * connects to the agent, waits at the restart barrier, reports faults and
 * hears about faults elsewhere. It owns one socket and one reader thread per
 * client; it never forks, never touches signals and never links libuv or
 * libevent. The wire format is the reference HyperPod agent's, byte for byte
 * (shared/PROTOCOL.md §Worker IPC).
 *
 * Every int-returning call answers 0 (or a count) on success and -errno on
 * failure. Pointer parameters are borrowed unless a comment says otherwise.
 * The calls are thread-safe, except hp_client_free. */
#ifndef HYPERPOD_H
#define HYPERPOD_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HP_CLIENT_API __attribute__((visibility("default")))

/* The largest frame body either side may send (the reference sets none). A
 * bigger incoming frame breaks the connection with -EMSGSIZE; a bigger
 * outgoing one is refused with -EMSGSIZE and nothing is sent. */
#define HP_CLIENT_MAX_FRAME (1024u * 1024u)

/* The environment variable the agent sets to the socket path. */
#define HP_CLIENT_SOCKET_ENV "HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH"

struct hp_client;
struct hp_rank_env;

/* ------------------------------------------------------------------ client */

/* Connects to the agent's socket and registers with an "init" message.
 * path: NULL means $HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH (-EINVAL when
 * unset or empty). local_rank: -1 means $LOCAL_RANK, or 0 when unset, as the
 * reference does (-EINVAL when not an integer). client_id: NULL generates a
 * random UUID4 string, as the reference does. Starts the reader thread (all
 * signals blocked in it). On success stores a new client in *out. */
HP_CLIENT_API int hp_client_connect(const char *path, int local_rank,
				    const char *client_id,
				    struct hp_client **out);

/* Stops the reader thread, closes the socket, frees the client and any
 * queued events. NULL does nothing. Must not be called from a callback. */
HP_CLIENT_API void hp_client_free(struct hp_client *c);

HP_CLIENT_API const char *hp_client_id(const struct hp_client *c);
HP_CLIENT_API int hp_client_local_rank(const struct hp_client *c);

/* Sends "at_rcb_barrier" and blocks until the agent's "job_start" arrives
 * or timeout_ms passes (-1: no limit; -ETIMEDOUT); one thread at a time.
 * A job_start that arrived before this call is stale and ignored (it
 * belongs to the previous run). Fault notifications received while waiting
 * are dropped when the barrier is released: they concern the run that just
 * ended. Then sends "past_rcb_barrier". On success, when out is not NULL,
 * stores the new rank environment there (the caller frees it with
 * hp_rank_env_free). When the connection broke: -ECONNRESET (the agent
 * closed it), -EMSGSIZE (it sent an oversized frame) or the socket's own
 * -errno. */
HP_CLIENT_API int hp_client_wait_barrier(struct hp_client *c, int timeout_ms,
					 struct hp_rank_env **out);

/* Sends "job_fault" for global rank 'rank'. reason and message may be NULL
 * (sent as null; the agent then uses its defaults). restart_mode NULL means
 * "in_process_restart"; the others are "process_level_restart",
 * "job_level_restart" and "local_process_level_restart". Strings must be
 * valid UTF-8 (-EINVAL). */
HP_CLIENT_API int hp_client_report_fault(struct hp_client *c, int rank,
					 const char *reason,
					 const char *message,
					 const char *restart_mode);

/* Sends "job_data": opaque per-rank data the agent reports to the operator
 * in /status worker_data. The reference types it as a string, so 'data'
 * (usually JSON text, e.g. "{\"step\": 3}") travels as a JSON string value. */
HP_CLIENT_API int hp_client_send_data(struct hp_client *c, int rank,
				      const char *data);

/* Sends "rank_labels" with the string map keys[i] -> values[i], i < n, in
 * that order. */
HP_CLIENT_API int hp_client_send_labels(struct hp_client *c,
					const char *const *keys,
					const char *const *values, size_t n);

/* ------------------------------------------------- notifications from agent */

enum hp_client_event_kind {
	HP_CLIENT_EVENT_NONE = 0,
	/* "job_fault": a fault happened somewhere; abort the step, clean up
	 * and go back to hp_client_wait_barrier. restart_count is set. */
	HP_CLIENT_EVENT_FAULT,
	/* "job_rank_info": new rank information (an operator /update). */
	HP_CLIENT_EVENT_RANK_INFO,
	/* "job_start" that arrived while nobody waited at the barrier. */
	HP_CLIENT_EVENT_START,
	/* "job_failed_ranks": the body is in json. */
	HP_CLIENT_EVENT_FAILED_RANKS,
	/* "invalid_response": the agent refused a message; body in json. */
	HP_CLIENT_EVENT_INVALID_RESPONSE,
};

struct hp_client_event {
	enum hp_client_event_kind kind;
	int restart_count;       /* FAULT: the agent's count; -1 when absent */
	struct hp_rank_env *env; /* RANK_INFO, START: owned, else NULL */
	char *json; /* the message without "type"/"client_id", compact JSON;
		       owned */
};

/* A file descriptor that polls readable (POLLIN) while events are queued or
 * the connection has broken; never read or close it. Stays valid until
 * hp_client_free. */
HP_CLIENT_API int hp_client_fd(const struct hp_client *c);

/* Never blocks. Returns 1 and fills *ev with the oldest queued event (free
 * it with hp_client_event_fini), 0 when none is queued, or -errno when none
 * is queued and the connection broke (-ECONNRESET: the agent closed it;
 * -EMSGSIZE: it sent a frame over HP_CLIENT_MAX_FRAME). */
HP_CLIENT_API int hp_client_poll(struct hp_client *c,
				 struct hp_client_event *ev);

HP_CLIENT_API void hp_client_event_fini(struct hp_client_event *ev);

/* Called on the client's reader thread for each "job_fault", in addition
 * to (not instead of) the queued FAULT event — for code that cannot poll,
 * e.g. to abort an NCCL communicator stuck in a collective. It must return
 * quickly, may call hp_client_report_fault/send_* and hp_nccl_comm_abort,
 * and must not call hp_client_free or hp_client_wait_barrier. */
typedef void (*hp_client_fault_cb)(struct hp_client *c, int restart_count,
				   void *userdata);

/* Sets (or with cb NULL clears) the fault callback. When it returns, the
 * previous callback is not running (unless called from inside it) and will
 * not run again, so its userdata may be freed. */
HP_CLIENT_API void hp_client_on_fault(struct hp_client *c,
				      hp_client_fault_cb cb, void *userdata);

/* ----------------------------------------------------------- rank environment */

/* The value for key in the "worker_envs" map (RANK, WORLD_SIZE,
 * MASTER_ADDR, JOB_RESTART_COUNT, ...), or NULL. Non-string values are
 * given as their compact JSON text; null as "". */
HP_CLIENT_API const char *hp_rank_env_get(const struct hp_rank_env *env,
					  const char *key);
HP_CLIENT_API size_t hp_rank_env_count(const struct hp_rank_env *env);
HP_CLIENT_API const char *hp_rank_env_key(const struct hp_rank_env *env,
					  size_t i);
HP_CLIENT_API const char *hp_rank_env_value(const struct hp_rank_env *env,
					    size_t i);
/* "aggregate_worker_data" as compact JSON text ("null" when absent). */
HP_CLIENT_API const char *
hp_rank_env_aggregate_worker_data(const struct hp_rank_env *env);
/* setenv()s every pair, as the Python client updates os.environ. setenv is
 * not thread-safe: call it where no other thread reads the environment. */
HP_CLIENT_API int hp_rank_env_apply(const struct hp_rank_env *env);
HP_CLIENT_API void hp_rank_env_free(struct hp_rank_env *env);

/* ------------------------------------------------------------ NCCL helper */

/* libnccl.so.2 is loaded with dlopen on first use, never linked; the
 * environment variable HP_NCCL_LIBRARY overrides the file name. Every
 * hp_nccl_* call returns -ENOSYS when it cannot be loaded, and -EIO,
 * -EINVAL, -ECONNRESET or -EINPROGRESS for NCCL's own errors.
 *
 * The unique id travels through the agent as text: 256 lowercase hex digits
 * (the 128 bytes of ncclUniqueId) under the rank-environment key
 * NCCL_UNIQUE_ID. Text, because the rank environment is a string map that
 * the agent and the operator pass on unchanged; hex, because the id holds
 * arbitrary bytes, including NULs. Global rank 0 calls
 * hp_nccl_get_unique_id and publishes the hex with
 * hp_client_send_data(c, 0, "{\"NCCL_UNIQUE_ID\": \"<hex>\"}") before it
 * waits at the barrier; every rank reads it back with
 * hp_nccl_unique_id_from_env. */
#define HP_NCCL_UNIQUE_ID_BYTES 128
#define HP_NCCL_UNIQUE_ID_HEX_LEN (2 * HP_NCCL_UNIQUE_ID_BYTES)
#define HP_NCCL_UNIQUE_ID_ENV "NCCL_UNIQUE_ID"

/* True when libnccl.so.2 loads and has the symbols we need; otherwise false
 * with why set to "NCCL not available: <dlerror text>". why may be NULL. */
HP_CLIENT_API bool hp_nccl_available(char *why, size_t why_len);
/* ncclGetUniqueId into id128 (HP_NCCL_UNIQUE_ID_BYTES bytes). */
HP_CLIENT_API int hp_nccl_get_unique_id(void *id128);
/* ncclCommInitRank; *comm receives the ncclComm_t. Blocks until every rank
 * has joined. */
HP_CLIENT_API int hp_nccl_comm_init_rank(void **comm, int nranks,
					 const void *id128, int rank);
/* ncclCommAbort: frees the communicator and makes pending collectives
 * return; safe to call from the fault callback. */
HP_CLIENT_API int hp_nccl_comm_abort(void *comm);
/* ncclCommGetAsyncError; *err receives the raw ncclResult_t (0: none). */
HP_CLIENT_API int hp_nccl_async_error(void *comm, int *err);
/* ncclGetErrorString, or a fixed text when NCCL is absent. */
HP_CLIENT_API const char *hp_nccl_strerror(int nccl_result);
/* Writes HP_NCCL_UNIQUE_ID_HEX_LEN hex digits and a NUL into hex, which
 * holds hex_len bytes (-ENOSPC when fewer than 257). */
HP_CLIENT_API int hp_nccl_unique_id_hex(const void *id128, char *hex,
					size_t hex_len);
/* Parses exactly HP_NCCL_UNIQUE_ID_HEX_LEN hex digits (-EINVAL otherwise). */
HP_CLIENT_API int hp_nccl_unique_id_from_hex(const char *hex, void *id128);
/* Reads NCCL_UNIQUE_ID from a rank environment (-ENOENT when missing). */
HP_CLIENT_API int hp_nccl_unique_id_from_env(const struct hp_rank_env *env,
					     void *id128);

#ifdef __cplusplus
}
#endif

#endif
