/* fake-agent.c — the real server/ and agent/fsm.c with a pretend worker
 * group, so the operator emulator (tests/integration/hp_operator.py) can
 * be tested over real HTTP without workers. It prints "ready port N" once
 * listening. Each /start "runs" the job at once: it faults for the first
 * --fail N starts (reason WorkerReportedFault), then completes. /stop goes
 * STOPPING -> READY, /shutdown ends the process with 0. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/fsm.h"
#include "base/log.h"
#include "base/xalloc.h"
#include "server/server.h"

static int wake_fd[2];

static void wake(void *ud)
{
	char c = 1;
	ssize_t w = write(wake_fd[1], &c, 1);
	(void)w;
}

static void publish(struct hp_server *s, const struct hp_fsm *f, int rank,
		    bool spare)
{
	struct hp_transition tr[HP_STATE_COUNT];
	size_t n = 0;
	for (int i = 0; i < HP_STATE_COUNT; i++)
		if (f->entered[i][0])
			tr[n++] = (struct hp_transition){
				hp_state_name((enum hp_state)i), f->entered[i]};
	struct hp_status st = {
		.status = hp_state_lower(f->state),
		.transitions = tr,
		.n_transitions = n,
		.reason = f->reason[0] ? f->reason : NULL,
		.message = f->message[0] ? f->message : NULL,
		.restart_mode = "process_level_restart",
		.agent_version = "fake",
		.assigned_rank = rank,
		.spare = spare,
	};
	hp_server_publish(s, hp_json_status(&st));
}

int main(int argc, char **argv)
{
	int fail = 0;
	for (int i = 1; i + 1 < argc; i++)
		if (strcmp(argv[i], "--fail") == 0)
			fail = atoi(argv[++i]);
	if (pipe(wake_fd) < 0)
		return 99;
	struct hp_server_options o = {
		.host = "127.0.0.1",
		.log_level = "info",
		.max_retry = 1,
		.cmd_timeout = 5,
		.keepalive_timeout = 5,
		.wake_cb = wake,
	};
	struct hp_server *s = hp_server_new(&o);
	if (!s)
		return 99;
	struct hp_fsm f;
	hp_fsm_init(&f, false);
	int rank = -1;
	bool spare = false;
	hp_fsm_fire(&f, HP_EV_READY, NULL, NULL);
	publish(s, &f, rank, spare);
	printf("ready port %d\n", hp_server_port(s));
	fflush(stdout);

	bool done = false;
	while (!done) {
		struct pollfd p = {.fd = wake_fd[0], .events = POLLIN};
		if (poll(&p, 1, -1) < 0 && errno != EINTR)
			break;
		char buf[64];
		ssize_t r = read(wake_fd[0], buf, sizeof(buf));
		(void)r;
		struct hp_cmd *c;
		while ((c = hp_server_pop(s))) {
			int res = 0;
			switch (c->kind) {
			case HP_CMD_START:
				rank = c->start.rank;
				spare = c->start.spare;
				if (hp_fsm_fire(&f, HP_EV_START, NULL, NULL)) {
					res = 409;
					break;
				}
				if (fail > 0) {
					fail--;
					hp_fsm_fire(&f, HP_EV_FAILED,
						    "WorkerReportedFault",
						    "The processes reported a "
						    "failure on ranks [0]");
				} else {
					hp_fsm_fire(&f, HP_EV_SUCCEEDED, NULL,
						    NULL);
				}
				break;
			case HP_CMD_STOP:
				if (hp_fsm_fire(&f, HP_EV_STOP, NULL, NULL) == 0)
					hp_fsm_fire(&f, HP_EV_STOPPED, NULL,
						    NULL);
				break;
			case HP_CMD_UPDATE:
				rank = c->start.rank;
				break;
			case HP_CMD_SHUTDOWN:
				hp_fsm_fire(&f, HP_EV_SHUTDOWN, NULL, NULL);
				done = true;
				break;
			}
			publish(s, &f, rank, spare);
			hp_server_cmd_done(s, c, res);
		}
	}
	hp_server_free(s, 5);
	close(wake_fd[0]);
	close(wake_fd[1]);
	return 0;
}
