/* agent.h — the hyperpodrun agent: one libuv loop that owns the worker
 * group, the stages (pre-train -> train -> post-train), the restart policy,
 * the state machine, and the glue to the HTTP server and the rendezvous.
 * The only thing launcher/main.c needs. */
#ifndef HP_AGENT_H
#define HP_AGENT_H

#include "config.h"

struct hp_agent;

/* The agent_version /status reports: the reference release whose contract
 * we follow, with our own version as PEP 440 / semver local metadata
 * ("1.1.0+hyperpodrun.0.1.0"), so a check for 1.1.x (==, >=, a "1.1."
 * prefix, packaging.version) accepts it; nothing public compares it
 * (README, "agent_version"). Our own version alone is in --version and in
 * /metrics' build info. */
#define HP_REFERENCE_VERSION "1.1.0"
#define HP_AGENT_VERSION(ours) HP_REFERENCE_VERSION "+hyperpodrun." ours

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
