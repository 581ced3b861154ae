/* ipr_worker.c — a C training worker that survives in-process restarts
 * with libhyperpod. It waits at the barrier, runs HP_STEPS "steps" (each
 * one waits HP_STEP_MS on the client's fd, so a fault from the agent ends
 * the step at once), and on a fault — its own, injected once with
 * HP_FAIL_AT_STEP/HP_FAIL_RANK, or one the agent announces — goes back to
 * the barrier in the same process. With HP_USE_NCCL=1 and NCCL_UNIQUE_ID in
 * the rank environment it also (re)creates an NCCL communicator each run and
 * aborts it from the fault callback. Prints "rank R restart_count C step S"
 * per step and "done" at the end; exits 0, or 1 on an IPC error. */
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hyperpod.h"

static int env_int(const char *name, int dflt)
{
	const char *s = getenv(name);
	return s && *s ? atoi(s) : dflt;
}

/* Runs on the client's reader thread: a collective blocked in NCCL would
 * never see the fault otherwise. */
static void on_fault(struct hp_client *c, int restart_count, void *ud)
{
	(void)c;
	(void)restart_count;
	void *comm = atomic_exchange((_Atomic(void *) *)ud, NULL);
	if (comm)
		hp_nccl_comm_abort(comm);
}

/* One run between two barriers. Returns 0 when all steps finished, 1 when
 * the run ended in a fault (back to the barrier), -errno on IPC failure. */
static int env_get_int(const struct hp_rank_env *env, const char *key)
{
	const char *s = hp_rank_env_get(env, key);
	return s ? atoi(s) : 0;
}

static int run(struct hp_client *c, const struct hp_rank_env *env,
	       _Atomic(void *) *comm, bool *injected)
{
	int rank = env_get_int(env, "RANK");
	int world = env_get_int(env, "WORLD_SIZE");
	int restart_count = env_get_int(env, "JOB_RESTART_COUNT");
	int steps = env_int("HP_STEPS", 5), step_ms = env_int("HP_STEP_MS", 10);
	int fail_at = env_int("HP_FAIL_AT_STEP", -1);
	int fail_rank = env_int("HP_FAIL_RANK", 0);

	unsigned char id[HP_NCCL_UNIQUE_ID_BYTES];
	if (env_int("HP_USE_NCCL", 0) &&
	    hp_nccl_unique_id_from_env(env, id) == 0) {
		void *nc = NULL;
		int rc = hp_nccl_comm_init_rank(&nc, world, id, rank);
		atomic_store(comm, nc);
		if (rc < 0)
			fprintf(stderr, "rank %d nccl init: %s\n", rank,
				strerror(-rc));
	}

	for (int step = 0; step < steps; step++) {
		printf("rank %d restart_count %d step %d\n", rank,
		       restart_count, step);
		fflush(stdout);
		if (step == fail_at && rank == fail_rank && !*injected) {
			*injected = true;
			int rc = hp_client_report_fault(c, rank, "InjectedFault",
							"HP_FAIL_AT_STEP", NULL);
			return rc < 0 ? rc : 1;
		}
		struct pollfd pfd = {.fd = hp_client_fd(c), .events = POLLIN};
		if (poll(&pfd, 1, step_ms) <= 0)
			continue;
		struct hp_client_event ev;
		int got = hp_client_poll(c, &ev);
		if (got < 0)
			return got;
		bool fault = ev.kind == HP_CLIENT_EVENT_FAULT;
		if (fault)
			printf("rank %d fault restart_count %d\n", rank,
			       ev.restart_count);
		hp_client_event_fini(&ev);
		if (fault)
			return 1;
	}
	return 0;
}

int main(void)
{
	struct hp_client *c;
	_Atomic(void *) comm = NULL;
	bool injected = false;
	char why[256];
	int rc = hp_client_connect(NULL, -1, NULL, &c);
	if (rc < 0) {
		fprintf(stderr, "ipr_worker: connect: %s\n", strerror(-rc));
		return 1;
	}
	if (env_int("HP_USE_NCCL", 0) && !hp_nccl_available(why, sizeof(why)))
		fprintf(stderr, "ipr_worker: %s\n", why);
	hp_client_on_fault(c, on_fault, &comm);

	for (;;) {
		struct hp_rank_env *env;
		rc = hp_client_wait_barrier(c, -1, &env);
		if (rc < 0)
			break;
		hp_rank_env_apply(env);
		rc = run(c, env, &comm, &injected);
		hp_rank_env_free(env);
		if (rc <= 0)
			break;
	}
	hp_client_on_fault(c, NULL, NULL);
	void *nc = atomic_exchange(&comm, NULL);
	if (nc)
		hp_nccl_comm_abort(nc);
	hp_client_free(c);
	if (rc < 0) {
		fprintf(stderr, "ipr_worker: %s\n", strerror(-rc));
		return 1;
	}
	printf("done\n");
	return 0;
}
