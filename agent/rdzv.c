/* rdzv.c — the agent's side of --rdzv-backend=c10d across nodes
 * (rendezvous/c10d.h does the protocol): join a round before each group
 * start, take the group rank, node count and master from it, stop and
 * rejoin when another node fails, leaves or arrives, report this node's
 * failures, and wait at the exit barrier after a success. Restarts are
 * counted as torchrun does: --max-restarts is spent only by this node's
 * own failures ("membership changes do not count as retries"); every new
 * round is a new attempt (TORCHELASTIC_RESTART_COUNT + 1). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agent-private.h"
#include "base/log.h"
#include "base/xalloc.h"
#include "rendezvous/c10d.h"

/* torch's rdzv_conf values: "k=v,k=v"; *out unchanged when absent. */
static void conf_double(const char *conf, const char *key, double *out)
{
	size_t kl = strlen(key);
	for (const char *p = conf; p && *p;) {
		while (*p == ' ' || *p == ',')
			p++;
		if (strncmp(p, key, kl) == 0) {
			const char *q = p + kl;
			while (*q == ' ')
				q++;
			if (*q == '=') {
				char *end;
				double v = strtod(q + 1, &end);
				if (end != q + 1 && v >= 0)
					*out = v;
			}
		}
		p = strchr(p, ',');
	}
}

/* is_host: torch reads true/false/1/0/yes/no; -1 = decide by address. */
static int conf_is_host(const char *conf)
{
	const char *p = strstr(conf, "is_host");
	if (!p)
		return -1;
	p += 7;
	while (*p == ' ')
		p++;
	if (*p != '=')
		return -1;
	p++;
	while (*p == ' ')
		p++;
	if (!strncmp(p, "1", 1) || !strncasecmp(p, "true", 4) ||
	    !strncasecmp(p, "yes", 3))
		return 1;
	return 0;
}

static void on_round(void *ud, const struct hp_c10d_round *r)
{
	struct hp_agent *a = ud;
	a->group_rank = r->rank;
	a->nnodes = r->size;
	free(a->master_addr);
	a->master_addr = xstrdup(r->master_addr);
	a->master_port = r->master_port;
	hp_info("agent", "rendezvous round %d: group rank %d of %d node(s), "
		"master %s:%d", r->round, r->rank, r->size, r->master_addr,
		r->master_port);
	agent_begin_attempt(a);
}

static bool group_up(const struct hp_agent *a)
{
	return a->stage == STAGE_PRE || a->stage == STAGE_TRAIN ||
	       a->stage == STAGE_POST;
}

static void on_restart(void *ud, const char *why)
{
	struct hp_agent *a = ud;
	if (a->stage == STAGE_STOPPING || a->exiting)
		return; /* a stop of our own is under way and rejoins itself */
	if (uv_is_active((uv_handle_t *)&a->backoff_timer)) {
		/* our own restart waits out its spawn back-off and then
		 * rejoins (local_restart_now -> rdzv_restart); joining now
		 * too would start the group twice */
		hp_info("agent", "rendezvous: %s: joining the new round once "
			"the spawn back-off ends", why);
		return;
	}
	hp_warn("agent", "rendezvous: %s: restarting the worker group in a "
		"new round", why);
	if (!group_up(a)) {
		rdzv_stopped(a);
		return;
	}
	agent_fire(a, HP_EV_STOP, NULL, NULL);
	agent_start_stop(a, AFTER_RDZV, a->cfg->shutdown_signal,
			 a->cfg->shutdown_timeout);
}

static void on_error(void *ud, const char *msg)
{
	struct hp_agent *a = ud;
	hp_error("agent", "rendezvous: %s", msg);
	a->rdzv_error = true;
	if (a->exiting || a->stage == STAGE_STOPPING)
		return; /* that stop ends in rdzv_restart/stopped: exit 1 */
	if (!group_up(a)) {
		agent_finish(a, 1);
		return;
	}
	agent_fire(a, HP_EV_FAILED, "RendezvousError", msg);
	agent_start_stop(a, AFTER_RDZV, a->cfg->shutdown_signal,
			 a->cfg->shutdown_timeout);
}

static void on_barrier(void *ud)
{
	struct hp_agent *a = ud;
	hp_info("agent", "rendezvous: every node is done");
	agent_finish(a, 0);
}

bool rdzv_wanted(const struct hp_config *c)
{
	return c->mode == HP_MODE_LOCAL && !c->standalone &&
	       strcmp(c->rdzv_backend, "c10d") == 0 && c->nnodes_max > 1 &&
	       !c->inprocess_restart;
}

int rdzv_setup(struct hp_agent *a)
{
	const struct hp_config *c = a->cfg;
	if (!rdzv_wanted(c))
		return 0;
	struct hp_c10d_options o = {
		.endpoint = c->rdzv_endpoint,
		.run_id = c->rdzv_id,
		.min_nodes = c->nnodes_min,
		.max_nodes = c->nnodes_max,
		.last_call_timeout = 30,
		.join_timeout = 600,
		.is_host = conf_is_host(c->rdzv_conf),
		.local_addr = c->local_addr,
		.node_name = a->hostname,
		.on_round = on_round,
		.on_restart = on_restart,
		.on_error = on_error,
		.on_barrier = on_barrier,
		.ud = a,
	};
	conf_double(c->rdzv_conf, "last_call_timeout", &o.last_call_timeout);
	conf_double(c->rdzv_conf, "join_timeout", &o.join_timeout);
	conf_double(c->rdzv_conf, "timeout", &o.join_timeout);
	a->c10d = hp_c10d_new(&a->loop, &o);
	return a->c10d ? 0 : -EINVAL;
}

void rdzv_begin(struct hp_agent *a)
{
	hp_info("agent", "rendezvous: joining a round of %d..%d node(s)",
		a->cfg->nnodes_min, a->cfg->nnodes_max);
	hp_c10d_join(a->c10d);
}

void rdzv_restart(struct hp_agent *a)
{
	if (a->rdzv_error) {
		agent_finish(a, 1);
		return;
	}
	hp_c10d_fail(a->c10d);
	hp_c10d_join(a->c10d);
}

void rdzv_stopped(struct hp_agent *a)
{
	if (a->rdzv_error) {
		agent_finish(a, 1);
		return;
	}
	agent_fire(a, HP_EV_STOPPED, NULL, NULL);
	agent_fire(a, HP_EV_START, NULL, NULL);
	a->restart_count++;
	hp_c10d_join(a->c10d);
}

void rdzv_succeeded(struct hp_agent *a)
{
	hp_info("agent", "rendezvous: waiting for the other nodes to finish");
	hp_c10d_done(a->c10d);
}

void rdzv_teardown(struct hp_agent *a)
{
	hp_c10d_free(a->c10d);
	a->c10d = NULL;
}
