/* agent.h — the hyperpodrun agent: one libuv loop that owns the worker
 * group, the stages (pre-train -> train -> post-train), the restart policy,
 * the state machine, and the glue to the HTTP server and the rendezvous.
 * The only thing launcher/main.c needs. */
#ifndef HP_AGENT_H
#define HP_AGENT_H

#include "config.h"

struct hp_agent;

/* cfg is borrowed and must outlive the agent; nproc_per_node must be
 * resolved. */
struct hp_agent *hp_agent_new(const struct hp_config *cfg);

/* Runs until the job ends (local mode), /shutdown, or a terminating signal.
 * Returns the process exit code: 0 success, 1 job failed, 128+signo after
 * a forwarded terminating signal. */
int hp_agent_run(struct hp_agent *a);

/* NULL is a no-op. */
void hp_agent_free(struct hp_agent *a);

#endif
