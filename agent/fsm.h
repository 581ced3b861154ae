/* fsm.h — the agent state machine of PROTOCOL.md §states as data: the
 * allowed-transition tables for the PLR and IPR agents, the state names on
 * the wire, and the transition history with timestamps for /status.
 * It decides nothing about workers; agent.c asks it before acting.
 * An illegal transition is logged and refused, never applied. */
#ifndef HP_FSM_H
#define HP_FSM_H

#include <stdbool.h>

#include "base/hp.h"

enum hp_state {
	HP_STATE_INIT = 0,
	HP_STATE_READY,
	HP_STATE_RUNNING,
	HP_STATE_COMPLETED,
	HP_STATE_FAULTED,
	HP_STATE_STOPPING,
	HP_STATE_SHUTDOWN,
	HP_STATE_COUNT,
};

/* Events the agent feeds the machine; the (state, event) table gives the
 * target state, or none (the event is ignored in that state). */
enum hp_event {
	HP_EV_READY = 0,   /* workers prepared / at the barrier: INIT -> READY */
	HP_EV_START,       /* /start: READY -> RUNNING */
	HP_EV_SUCCEEDED,   /* training (and post-train) succeeded -> COMPLETED */
	HP_EV_FAILED,      /* a worker failed -> FAULTED */
	HP_EV_STOP,        /* /stop -> STOPPING */
	HP_EV_STOPPED,     /* workers stopped or paused: STOPPING -> READY */
	HP_EV_REINIT,      /* IPR: back to INIT to wait for the barrier */
	HP_EV_SHUTDOWN,    /* /shutdown or a signal -> SHUTDOWN */
	HP_EV_COUNT,
};

#define HP_FSM_TS_LEN 40

struct hp_fsm {
	enum hp_state state;
	bool ipr;
	/* transitions: time each state was last entered, "" if never */
	char entered[HP_STATE_COUNT][HP_FSM_TS_LEN];
	char reason[128];
	char message[1024];
};

/* "INIT", "READY", ... (the transitions keys) */
const char *hp_state_name(enum hp_state s);
/* "init", "ready", ... (the status field) */
const char *hp_state_lower(enum hp_state s);
const char *hp_event_name(enum hp_event e);

/* Starts in INIT (entered now). */
void hp_fsm_init(struct hp_fsm *f, bool ipr);

/* Is from -> to in the PLR (ipr=false) or IPR table? */
bool hp_fsm_allowed(bool ipr, enum hp_state from, enum hp_state to);

/* The target of event e in state s, or -1 when the event does not apply. */
int hp_fsm_target(bool ipr, enum hp_state s, enum hp_event e);

/* Moves to 'to' if allowed: records the timestamp (ISO-8601 UTC with
 * microseconds, like Python's datetime.isoformat()), sets reason and
 * message (NULL clears them), logs at info. Returns 0, or -EPERM when the
 * transition is not in the table (logged at warning, nothing changes). */
int hp_fsm_go(struct hp_fsm *f, enum hp_state to, const char *reason,
	      const char *message);

/* hp_fsm_go(f, hp_fsm_target(...)) ; -EPERM when the event does not apply. */
int hp_fsm_fire(struct hp_fsm *f, enum hp_event e, const char *reason,
		const char *message);

#endif
