/* server.h — the operator's HTTP API (PROTOCOL.md §HTTP) on its own thread.
 * The server owns a libevent event_base and evhttp on a private thread. It
 * validates requests (4xx with a JSON detail), turns good ones into struct
 * hp_cmd on a mutex-guarded queue and wakes the agent through wake_cb; it
 * never touches agent state. /status is answered from the last snapshot the
 * agent published (an immutable string swapped under a mutex), so it never
 * waits for the agent. Every command handler waits (with a deadline) until
 * the agent has processed the command, so a /status after a 200 sees it. */
#ifndef HP_SERVER_H
#define HP_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "base/hp.h"
#include "base/rankip.h"

struct hp_server;

enum hp_cmd_kind {
	HP_CMD_START = 0,
	HP_CMD_STOP,
	HP_CMD_UPDATE,
	HP_CMD_SHUTDOWN,
};

/* The largest rankIps rank the reference accepts (10336335176); rank and
 * nnodes are bounded by it too (hp_json_parse_start's range checks). */
#define HP_MAX_RANK_IP 100000

/* StartRequest / UpdateRequest (update has no progress). Optional JSON
 * values the agent only stores and echoes are kept as compact JSON text. */
struct hp_start_req {
	int rank;
	int nnodes;
	int fault_count;
	char *master_addr;
	int master_port;
	char *log_monitoring_json; /* JSON array text, or NULL (absent/null) */
	char *ip_version;          /* NULL when absent/null */
	bool has_rank_ips;         /* rankIps given and not null */
	struct hp_rank_ip *rank_ips;
	size_t n_rank_ips;
	char *worker_data_json;    /* any JSON, NULL when absent/null */
	bool spare;
	char *progress_json;       /* JSON object text; "{}" by default (start only) */
};

struct hp_stop_req {
	char *restart_mode; /* "ipr" by default */
	bool is_graceful;   /* false by default (null = false) */
	int timeout;        /* seconds, -1 when absent/null */
};

struct hp_cmd {
	enum hp_cmd_kind kind;
	struct hp_start_req start; /* START and UPDATE */
	struct hp_stop_req stop;   /* STOP */
	/* private to the server: completion handshake */
	bool done;
	int result;                /* 0, or an HTTP status the agent wants */
	struct hp_cmd *next;
};

struct hp_server_options {
	const char *host;          /* "0.0.0.0" */
	int port;                  /* 0 = pick a free one (see hp_server_port) */
	const char *log_level;     /* access logging: "debug"/"info" log each request */
	int max_retry;             /* bind retries (HYPERPOD_ELASTICAGENT_SERVER_MAX_RETRY, 5) */
	double retry_delay;        /* seconds between retries (…_SERVER_DELAY, 5) */
	double cmd_timeout;        /* seconds a handler waits for the agent (…_SERVER_TIMEOUT, 5) */
	int keepalive_timeout;     /* seconds an idle connection is kept (5) */
	/* called from the server thread after a command is queued; must only
	 * wake the agent (uv_async_send) */
	void (*wake_cb)(void *ud);
	/* called from the server thread on each GET /metrics once a status
	 * was published, returning the agent's text (malloc'd; must be
	 * thread-safe): rendered when asked for, not on every publish.
	 * NULL: the text last given to hp_server_publish_metrics. */
	char *(*metrics_cb)(void *ud);
	void *ud;
};

/* Binds (retrying as the options say) and starts the server thread.
 * Returns NULL and logs a clear message ("cannot listen on HOST:PORT:
 * Address already in use (after N tries)") when it cannot bind. Options
 * left 0 mean: host "0.0.0.0", max_retry 1, no delay, cmd_timeout 5 s,
 * keepalive 5 s, log level info. Until the first hp_server_publish,
 * /status answers {"status":"init","transitions":{},"spare":"False"}.
 * The server thread blocks all signals. */
struct hp_server *hp_server_new(const struct hp_server_options *opts);

/* The port actually bound (useful when opts.port was 0). */
int hp_server_port(const struct hp_server *s);

/* Agent side: takes the next queued command, or NULL. The agent must call
 * hp_server_cmd_done() for each one it takes, after publishing the status
 * that reflects it. result: 0 -> 200 (empty body; /update: the status
 * published at that moment), 400..599 -> that status with
 * {"detail":"<reason phrase>"}, anything else -> 500. A command not taken
 * within cmd_timeout is answered 503 and never handed out; one taken but
 * not done in time is answered 503 and stays valid until cmd_done (a late
 * cmd_done is harmless). Call cmd_done for every taken command before
 * hp_server_free, or the drain waits for it until its deadline. The
 * command (and the strings in it) belong to the server; do not free. */
struct hp_cmd *hp_server_pop(struct hp_server *s);
void hp_server_cmd_done(struct hp_server *s, struct hp_cmd *cmd, int result);

/* Publishes a new /status body (takes ownership of json, a compact JSON
 * object built by hp_json_status). Thread-safe. */
void hp_server_publish(struct hp_server *s, char *json);

/* Publishes extra text served on GET /metrics (takes ownership). */
void hp_server_publish_metrics(struct hp_server *s, char *text);

/* Publishes the JSON text served on GET /fabric (takes ownership; NULL
 * withdraws it: /fabric then answers 404). Thread-safe. */
void hp_server_publish_fabric(struct hp_server *s, char *text);

/* The fabric peer table (POST /fabric/join, GET /fabric/peers): the agent
 * that is rank 0 of the fabric gathers every agent's endpoint name and HTTP
 * address here. n fixes the table's size (joins may give it too, in a
 * "size" field; the first size known wins, a join that disagrees is 409).
 * Thread-safe; n == 0 does nothing. */
void hp_server_fabric_expect(struct hp_server *s, unsigned n);

/* Stops accepting, lets in-flight requests finish for at most
 * drain_timeout seconds, joins the thread and frees everything.
 * Queued commands not yet taken are answered 503. NULL is a no-op. */
void hp_server_free(struct hp_server *s, double drain_timeout);

/* Frees the strings inside a request (not the struct itself). */
void hp_start_req_fini(struct hp_start_req *r);
void hp_stop_req_fini(struct hp_stop_req *r);

/* ---- JSON (server/json.c, the only cJSON user with the resource-config
 * writer) ---- */

struct hp_worker_data {
	int rank, group_rank, local_rank;
	bool failed;
	char *data_json; /* JSON text (a string value is stored as a JSON string) */
};

struct hp_transition {
	const char *state; /* "INIT", ... */
	const char *ts;    /* ISO-8601 */
};

/* Everything /status shows; NULL / negative / 0-count = key absent. */
struct hp_status {
	const char *status;              /* lower-case state, always */
	const struct hp_transition *transitions; /* always (may be 0 entries) */
	size_t n_transitions;
	const char *reason, *message;
	const char *restart_mode;
	const struct hp_worker_data *worker_data;
	size_t n_worker_data;
	const char *rank_labels_json;    /* object text; NULL = absent */
	const char *ipversion;
	const char *progress_json;       /* object text; absent when NULL or "{}" */
	const char *agent_version;
	int assigned_rank;               /* -1 = absent */
	bool spare;                      /* always, as "True"/"False" */
	bool priority;                   /* "True" only when set */
};

/* Compact JSON (",", ":"), keys in the order of PROTOCOL.md. Caller frees. */
char *hp_json_status(const struct hp_status *st);

/* Decoders used by the routes and by the fuzzers. Return 0, or an HTTP
 * status (422) with *detail_json set to a FastAPI-shaped
 * {"detail":[{"type":…,"loc":["body",…],"msg":…,"input":…}]} (caller frees),
 * listing every error in field order as pydantic does; invalid UTF-8 is
 * FastAPI's 400 {"detail":"There was an error parsing the body"}. On error
 * *out holds nothing to free. Lax rules (pydantic v2): ints accept JSON
 * ints, zero-fraction floats, bools and numeric strings ("3", " 3 ",
 * "1_000", "3.0"), and must fit a C int (else less_than_equal /
 * greater_than_equal); bools accept 0/1 and "true"/"yes"/"on"/"1"/…;
 * spare is bool-or-int (non-zero int = true); null for an optional field
 * (spare, progress included) means absent. Once every field decoded, the
 * numbers are range-checked (422 greater_than_equal / less_than_equal /
 * value_error): 0 <= rank <= 100000, 1 <= nnodes <= 100001, rank < nnodes
 * (/start only), faultCount >= 0, 0 <= master_port <= 65535, rankIps ranks
 * in [0, 100000]; an empty master_addr is the reference's value_error
 * "Value error, Empty master_addr received from operator"; a /stop timeout
 * must be >= 0. Unknown fields are ignored and
 * the Content-Type is not checked. An empty /start body is 422 "missing"
 * at ["body"]; an empty or null /stop body means all defaults. */
int hp_json_parse_start(const char *body, size_t len, bool is_update,
			struct hp_start_req *out, char **detail_json);
int hp_json_parse_stop(const char *body, size_t len, struct hp_stop_req *out,
		       char **detail_json);

/* POST /fabric/join: {"rank": int, "name": str, "http": str, "size": int
 * (optional), "epoch": int (optional)}; the same lax rules and 422
 * details as above. size is -1 when absent, epoch 0 (the round the
 * record is for: GET /fabric/peers?epoch=E waits for records of E or
 * later). The route checks the values themselves. */
struct hp_fabric_join {
	int rank;
	int size;
	int epoch;
	char *name; /* hex endpoint name */
	char *http; /* host:port of that agent's server */
};
int hp_json_parse_fabric_join(const char *body, size_t len,
			      struct hp_fabric_join *out, char **detail_json);
void hp_fabric_join_fini(struct hp_fabric_join *j);

#endif
