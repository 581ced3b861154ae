/* fsm.c — the agent state machine of PROTOCOL.md §states as static tables:
 * which transitions each agent (PLR, IPR) may make, and which state each
 * event leads to (s6's state x event table). It records when each state
 * was entered, for /status. It owns no I/O except log lines and must stay
 * libc-only: it never looks at workers, sockets or JSON. */
#include "fsm.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "base/log.h"

#define B(s) (1u << (s))

/* allowed[from] is the set of states "from" may go to (PROTOCOL.md). */
static const unsigned plr_allowed[HP_STATE_COUNT] = {
	[HP_STATE_INIT] = B(HP_STATE_READY) | B(HP_STATE_SHUTDOWN),
	[HP_STATE_READY] = B(HP_STATE_RUNNING) | B(HP_STATE_SHUTDOWN),
	[HP_STATE_RUNNING] = B(HP_STATE_COMPLETED) | B(HP_STATE_FAULTED) |
			     B(HP_STATE_STOPPING) | B(HP_STATE_SHUTDOWN),
	[HP_STATE_FAULTED] = B(HP_STATE_STOPPING) | B(HP_STATE_SHUTDOWN),
	[HP_STATE_STOPPING] = B(HP_STATE_READY),
	[HP_STATE_COMPLETED] = B(HP_STATE_SHUTDOWN) | B(HP_STATE_STOPPING),
	[HP_STATE_SHUTDOWN] = 0,
};

static const unsigned ipr_allowed[HP_STATE_COUNT] = {
	[HP_STATE_INIT] = B(HP_STATE_READY) | B(HP_STATE_SHUTDOWN) |
			  B(HP_STATE_FAULTED),
	[HP_STATE_READY] = B(HP_STATE_INIT) | B(HP_STATE_RUNNING) |
			   B(HP_STATE_SHUTDOWN) | B(HP_STATE_FAULTED),
	[HP_STATE_RUNNING] = B(HP_STATE_INIT) | B(HP_STATE_COMPLETED) |
			     B(HP_STATE_FAULTED) | B(HP_STATE_STOPPING) |
			     B(HP_STATE_SHUTDOWN),
	[HP_STATE_FAULTED] = B(HP_STATE_INIT) | B(HP_STATE_STOPPING) |
			     B(HP_STATE_SHUTDOWN),
	[HP_STATE_STOPPING] = B(HP_STATE_READY) | B(HP_STATE_INIT),
	[HP_STATE_COMPLETED] = B(HP_STATE_SHUTDOWN) | B(HP_STATE_STOPPING),
	[HP_STATE_SHUTDOWN] = 0,
};

/* (state, event) -> target. Targets are stored plus one so that an empty
 * cell (0) means "the event does not apply" while INIT stays a target. */
#define TO(s) ((s) + 1)

static const unsigned char plr_target[HP_STATE_COUNT][HP_EV_COUNT] = {
	[HP_STATE_INIT] = {[HP_EV_READY] = TO(HP_STATE_READY),
			   [HP_EV_SHUTDOWN] = TO(HP_STATE_SHUTDOWN)},
	[HP_STATE_READY] = {[HP_EV_START] = TO(HP_STATE_RUNNING),
			    [HP_EV_SHUTDOWN] = TO(HP_STATE_SHUTDOWN)},
	[HP_STATE_RUNNING] = {[HP_EV_SUCCEEDED] = TO(HP_STATE_COMPLETED),
			      [HP_EV_FAILED] = TO(HP_STATE_FAULTED),
			      [HP_EV_STOP] = TO(HP_STATE_STOPPING),
			      [HP_EV_SHUTDOWN] = TO(HP_STATE_SHUTDOWN)},
	[HP_STATE_FAULTED] = {[HP_EV_STOP] = TO(HP_STATE_STOPPING),
			      [HP_EV_SHUTDOWN] = TO(HP_STATE_SHUTDOWN)},
	[HP_STATE_STOPPING] = {[HP_EV_STOPPED] = TO(HP_STATE_READY)},
	[HP_STATE_COMPLETED] = {[HP_EV_STOP] = TO(HP_STATE_STOPPING),
				[HP_EV_SHUTDOWN] = TO(HP_STATE_SHUTDOWN)},
	[HP_STATE_SHUTDOWN] = {0},
};

static const unsigned char ipr_target[HP_STATE_COUNT][HP_EV_COUNT] = {
	[HP_STATE_INIT] = {[HP_EV_READY] = TO(HP_STATE_READY),
			   [HP_EV_FAILED] = TO(HP_STATE_FAULTED),
			   [HP_EV_SHUTDOWN] = TO(HP_STATE_SHUTDOWN)},
	[HP_STATE_READY] = {[HP_EV_START] = TO(HP_STATE_RUNNING),
			    [HP_EV_FAILED] = TO(HP_STATE_FAULTED),
			    [HP_EV_REINIT] = TO(HP_STATE_INIT),
			    [HP_EV_SHUTDOWN] = TO(HP_STATE_SHUTDOWN)},
	[HP_STATE_RUNNING] = {[HP_EV_SUCCEEDED] = TO(HP_STATE_COMPLETED),
			      [HP_EV_FAILED] = TO(HP_STATE_FAULTED),
			      [HP_EV_STOP] = TO(HP_STATE_STOPPING),
			      [HP_EV_REINIT] = TO(HP_STATE_INIT),
			      [HP_EV_SHUTDOWN] = TO(HP_STATE_SHUTDOWN)},
	[HP_STATE_FAULTED] = {[HP_EV_STOP] = TO(HP_STATE_STOPPING),
			      [HP_EV_REINIT] = TO(HP_STATE_INIT),
			      [HP_EV_SHUTDOWN] = TO(HP_STATE_SHUTDOWN)},
	[HP_STATE_STOPPING] = {[HP_EV_STOPPED] = TO(HP_STATE_READY),
			       [HP_EV_REINIT] = TO(HP_STATE_INIT)},
	[HP_STATE_COMPLETED] = {[HP_EV_STOP] = TO(HP_STATE_STOPPING),
				[HP_EV_SHUTDOWN] = TO(HP_STATE_SHUTDOWN)},
	[HP_STATE_SHUTDOWN] = {0},
};

static const char *const upper_names[HP_STATE_COUNT] = {
	"INIT", "READY", "RUNNING", "COMPLETED", "FAULTED", "STOPPING",
	"SHUTDOWN",
};

static const char *const lower_names[HP_STATE_COUNT] = {
	"init", "ready", "running", "completed", "faulted", "stopping",
	"shutdown",
};

static const char *const event_names[HP_EV_COUNT] = {
	"ready", "start", "succeeded", "failed",
	"stop",  "stopped", "reinit", "shutdown",
};

static bool state_ok(int s)
{
	return s >= 0 && s < HP_STATE_COUNT;
}

const char *hp_state_name(enum hp_state s)
{
	return state_ok((int)s) ? upper_names[s] : "UNKNOWN";
}

const char *hp_state_lower(enum hp_state s)
{
	return state_ok((int)s) ? lower_names[s] : "unknown";
}

const char *hp_event_name(enum hp_event e)
{
	return ((int)e >= 0 && e < HP_EV_COUNT) ? event_names[e] : "unknown";
}

/* Python's datetime.now(timezone.utc).isoformat(): microseconds are
 * printed only when non-zero ("2026-11-25T13:04:30.123456+00:00", or
 * "2026-11-25T13:04:30+00:00"); we match it byte for byte. */
static void now_iso(char out[HP_FSM_TS_LEN])
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	long us = ts.tv_nsec / 1000;
	size_t n = strftime(out, HP_FSM_TS_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
	if (us)
		snprintf(out + n, HP_FSM_TS_LEN - n, ".%06ld+00:00", us);
	else
		snprintf(out + n, HP_FSM_TS_LEN - n, "+00:00");
}

static void set_text(char *dst, size_t cap, const char *src)
{
	if (!src) {
		dst[0] = '\0';
		return;
	}
	snprintf(dst, cap, "%s", src);
}

void hp_fsm_init(struct hp_fsm *f, bool ipr)
{
	memset(f, 0, sizeof(*f));
	f->state = HP_STATE_INIT;
	f->ipr = ipr;
	now_iso(f->entered[HP_STATE_INIT]);
}

bool hp_fsm_allowed(bool ipr, enum hp_state from, enum hp_state to)
{
	if (!state_ok((int)from) || !state_ok((int)to))
		return false;
	const unsigned *t = ipr ? ipr_allowed : plr_allowed;
	return (t[from] & B(to)) != 0;
}

int hp_fsm_target(bool ipr, enum hp_state s, enum hp_event e)
{
	if (!state_ok((int)s) || (int)e < 0 || e >= HP_EV_COUNT)
		return -1;
	unsigned char to = ipr ? ipr_target[s][e] : plr_target[s][e];
	return to ? (int)to - 1 : -1;
}

int hp_fsm_go(struct hp_fsm *f, enum hp_state to, const char *reason,
	      const char *message)
{
	if (!hp_fsm_allowed(f->ipr, f->state, to)) {
		hp_warn("fsm", "refused transition %s -> %s (%s agent)",
			hp_state_name(f->state), hp_state_name(to),
			f->ipr ? "IPR" : "PLR");
		return -EPERM;
	}
	enum hp_state from = f->state;
	f->state = to;
	now_iso(f->entered[to]);
	set_text(f->reason, sizeof(f->reason), reason);
	set_text(f->message, sizeof(f->message), message);
	hp_info("fsm", "%s -> %s%s%s%s%s", hp_state_name(from),
		hp_state_name(to), reason ? " reason=" : "",
		reason ? reason : "", message ? " message=" : "",
		message ? message : "");
	return 0;
}

int hp_fsm_fire(struct hp_fsm *f, enum hp_event e, const char *reason,
		const char *message)
{
	int to = hp_fsm_target(f->ipr, f->state, e);
	if (to < 0) {
		hp_warn("fsm", "event %s does not apply in state %s (%s agent)",
			hp_event_name(e), hp_state_name(f->state),
			f->ipr ? "IPR" : "PLR");
		return -EPERM;
	}
	return hp_fsm_go(f, (enum hp_state)to, reason, message);
}
