"""In-process restart in local mode (issue 4 §Tests, end to end): the real
hyperpodrun --nnodes=1 --inprocess-restart with 4 workers of
tests/integration/ipr_probe.py (the Python client, hyperpod_worker.py)
or the C example (examples/ipr_worker.c, libhyperpod).

  * a fault in rank 2 reaches every worker, they come back to the barrier
    and resume with the restart count + 1 in the same processes;
  * a bare job_fault gives the default reason and message;
  * a rank that never comes back, or dies during the barrier wait, turns
    it into a process-level restart (new pids), counted against
    --max-restarts;
  * a client that sends garbage on the IPC socket is skipped or dropped
    and the workers carry on;
  * the C example worker survives a fault too.

Every wait has a deadline and is on an output line; nothing sleeps.
"""
import os
import signal
import socket
import time
import unittest

import harness
from ipr_common import (ENV_KEYS, PROBE, READY, frame, probe_env, raw_client,
                        read_until_eof, ready_pids, records, socket_path,
                        wait_records)

FSM = r"INFO fsm \d+: "
T = 120.0  # generous: the test machine is small and shared


class LocalIPR(harness.ProcessTest):
    survivor_timeout = 10.0

    def start(self, nproc=4, timeout=30, max_restarts=0, extra=(), **env):
        args = ["--nnodes=1", "--nproc-per-node", str(nproc),
                "--inprocess-restart", "--inprocess-timeout", str(timeout),
                "--max-restarts", str(max_restarts), *extra, PROBE]
        r = self.agent(args, env=probe_env(self.tmp, **env))
        self.addCleanup(self.stop_agent, r)
        return r

    def stop_agent(self, r):
        """After a failed assertion: stop the agent (and so its workers)
        with SIGTERM so the survivor check reports only real leaks."""
        if r.running():
            r.signal(signal.SIGTERM)
            try:
                r.wait(30)
            except AssertionError:
                pass

    def by_rank(self, recs):
        return {r["rank"]: r for r in recs}

    # ------------------------------------------------------------------
    def test_fault_in_rank2_every_worker_resumes_in_process(self):
        r = self.start(IPR_FAIL_RANK=2)
        first = self.by_rank(wait_records(r, "run", 4, T, run=0))
        self.assertEqual(sorted(first), [0, 1, 2, 3])
        for rank, rec in first.items():
            self.assertEqual(set(rec["env"]), ENV_KEYS, rec)
            self.assertEqual(rec["env"]["RANK"], str(rank))
            self.assertEqual(rec["env"]["WORLD_SIZE"], "4")
            self.assertEqual(rec["env"]["GROUP_RANK"], "0")
            self.assertEqual(rec["env"]["SPARE"], "False")
            self.assertEqual(rec["env"]["TORCHELASTIC_RESTART_COUNT"], "0")
            self.assertEqual(rec["env"]["JOB_RESTART_COUNT"], "0")
            self.assertEqual(rec["local_rank"], rank)

        pids = {rank: rec["pid"] for rank, rec in first.items()}
        # back at the barrier and released again: same processes, count + 1
        second = self.by_rank(wait_records(r, "run", 4, T, run=1))
        self.assertEqual(sorted(second), [0, 1, 2, 3])
        for rank, rec in second.items():
            self.assertEqual(rec["pid"], pids[rank], "rank %d changed process" % rank)
            self.assertEqual(rec["env"]["TORCHELASTIC_RESTART_COUNT"], "1")
            self.assertEqual(rec["env"]["JOB_RESTART_COUNT"], "1")
            self.assertEqual(rec["env"]["RANK"], str(rank))
            self.assertEqual(rec["restart"], 1)
        self.assertExit(r, 0, timeout=T)

        # the fault reached all four, with the new restart count
        notified = records(r, "notified")
        self.assertEqual(sorted(n["pid"] for n in notified), sorted(pids.values()),
                         "every worker gets exactly one job_fault")
        self.assertTrue(all(n["restart_count"] == 1 for n in notified), notified)
        # the three healthy ranks left their run because of it
        self.assertEqual(sorted(f["rank"] for f in records(r, "fault")), [0, 1, 3])

        self.assertEqual(len(records(r, "run")), 8, "exactly two runs per rank")
        self.assertEqual(sorted(ready_pids(r)), sorted(pids.values()),
                         "no worker process was started again")
        self.assertEqual(len(records(r, "done")), 4)

        # the agent's side: FAULTED with the worker's reason, then the cycle
        r.wait_line(FSM + r"RUNNING -> FAULTED reason=InjectedFault "
                    r"message=injected into rank 2$", 0)
        for step in ("FAULTED -> STOPPING", "STOPPING -> READY",
                     "RUNNING -> COMPLETED"):
            r.wait_line(FSM + step, 0)
        self.assertEqual(len(r.matches(FSM + r"READY -> RUNNING reason=RunningStarted")), 2)
        self.assertFalse(r.matches("process-level restart"), r.tail())

    def test_bare_fault_gets_the_default_reason_and_message(self):
        r = self.start(IPR_FAIL_RANK=2, IPR_FAIL_BARE="1")
        self.assertExit(r, 0, timeout=T)
        r.wait_line(FSM + r"RUNNING -> FAULTED reason=WorkerReportedFault "
                    r"message=The processes reported a failure on ranks 2$", 0)
        self.assertEqual(len(records(r, "run", restart=1)), 4)
        self.assertEqual(len(ready_pids(r)), 4)

    # ------------------------------------------------------------------
    def test_rank_that_never_returns_gives_a_process_level_restart(self):
        timeout = 2
        r = self.start(timeout=timeout, max_restarts=1, IPR_FAIL_RANK=2,
                       IPR_HANG_RANK=1)
        # rank -> pid of the first four processes (local rank = rank here)
        first = {int(m.group(2)): int(m.group(1)) for m in r.wait_lines(READY, 4, T)}
        notified = wait_records(r, "notified", 4, T)
        wait_records(r, "hang", 1, T, rank=1)
        r.wait_line(r"process-level restart: local rank\(s\) 1 not at the "
                    r"barrier within --inprocess-timeout=%d s" % timeout, T)
        seen = time.monotonic()
        # the agent waited the whole timeout (the clock is system-wide)
        waited = seen - min(n["t"] for n in notified)
        self.assertGreaterEqual(waited, timeout - 0.25,
                                "process-level restart after %.2fs" % waited)

        # a fresh group: four new processes that run to the end
        self.assertExit(r, 0, timeout=T)
        pids = ready_pids(r)
        self.assertEqual(len(pids), 8, "4 first-generation + 4 new workers")
        new = [rec for rec in records(r, "run") if rec["pid"] not in first.values()]
        self.assertEqual(sorted(rec["rank"] for rec in new), [0, 1, 2, 3], new)
        self.assertFalse(set(rec["pid"] for rec in new) & set(first.values()))
        for rec in new:
            self.assertGreaterEqual(int(rec["env"]["TORCHELASTIC_RESTART_COUNT"]), 1)
        r.wait_line(r"worker 1 \(pid %d\) killed by SIGKILL" % first[1], 0)
        for pid in first.values():
            self.assertFalse(harness.alive(pid), "old worker %d still alive" % pid)

    def test_process_level_restart_counts_against_max_restarts(self):
        r = self.start(timeout=2, max_restarts=0, IPR_FAIL_RANK=2, IPR_HANG_RANK=1)
        self.assertExit(r, 1, timeout=T)
        r.wait_line(r"not at the barrier within --inprocess-timeout=2 s", 0)
        self.assertEqual(len(ready_pids(r)), 4, "no new group with --max-restarts 0")
        self.assertFalse(records(r, "done"))

    def test_worker_dying_during_the_wait_gives_a_process_level_restart(self):
        r = self.start(timeout=60, max_restarts=1, IPR_FAIL_RANK=2, IPR_DIE_RANK=3)
        # the first four processes (a slow one may never get to its run:
        # the restart can kill it first, so runs do not tell generations)
        first = {int(m.group(1)) for m in r.wait_lines(READY, 4, T)}
        wait_records(r, "die", 1, T, rank=3)
        self.assertExit(r, 0, timeout=T)
        # well before the 60 s timeout: the death itself ends the wait
        self.assertLess(r.elapsed, 55, "waited for --inprocess-timeout")
        r.wait_line(r"process-level restart: ", 0)
        pids = set(ready_pids(r))
        self.assertEqual(len(pids), 8)
        done = {rec["pid"] for rec in records(r, "done")}
        self.assertEqual(len(done), 4)
        self.assertFalse(done & first, "the finishing workers must be new processes")

    def test_dropped_connection_during_the_wait_gives_a_process_level_restart(self):
        r = self.start(timeout=60, max_restarts=1, IPR_FAIL_RANK=2, IPR_DROP_RANK=0)
        first = {int(m.group(2)): int(m.group(1)) for m in r.wait_lines(READY, 4, T)}
        wait_records(r, "drop", 1, T, rank=0)
        r.wait_line(r"process-level restart: local rank 0 dropped its connection "
                    r"during the barrier wait", T)
        self.assertExit(r, 0, timeout=T)
        self.assertLess(r.elapsed, 55, "waited for --inprocess-timeout")
        # the worker was alive: the agent killed it
        r.wait_line(r"worker 0 \(pid %d\) killed by SIGKILL" % first[0], 0)
        done = {rec["pid"] for rec in records(r, "done")}
        self.assertEqual(len(done), 4)
        self.assertFalse(done & set(first.values()))

    def test_two_ranks_failing_at_once_give_one_restart(self):
        r = self.start(IPR_FAIL_RANK="1,2")
        self.assertExit(r, 0, timeout=T)
        pids = {rec["rank"]: rec["pid"] for rec in records(r, "run", run=0)}
        again = {rec["rank"]: rec["pid"] for rec in records(r, "run", run=1)}
        self.assertEqual(again, pids)
        self.assertEqual(sorted(rec["restart"] for rec in records(r, "run", run=1)), [1] * 4)
        self.assertEqual(sorted(n["restart_count"] for n in records(r, "notified")), [1] * 4)
        self.assertEqual(len(r.matches(r"in-process restart \d+: asking")), 1)
        self.assertEqual(len(r.matches(r"reported a fault: InjectedFault, restart mode")), 2)
        self.assertEqual(len(records(r, "run")), 8)

    # ------------------------------------------------------------------
    def test_garbage_on_the_ipc_socket_is_dropped_without_harm(self):
        r = self.start(IPR_DONE_AT="1")
        first = {rec["rank"]: rec["pid"] for rec in wait_records(r, "run", 4, T, run=0)}
        path = r.wait_line(r"worker IPC listening on (\S+)$", T).group(1)
        self.assertEqual(path, socket_path(self.tmp, r.pid))
        port = int(r.wait_line(r"operator API listening on http://127\.0\.0\.1:(\d+)",
                               T).group(1))

        # 1. invalid JSON and ill-formed messages: skipped, connection kept
        a = raw_client(path)
        a.sendall(frame(b"{not json"))
        r.wait_line(r"a message of 9 bytes is not valid JSON; skipped", T)
        a.sendall(frame(b"\xff\xfe\x00garbage"))
        r.wait_line(r"a message of 10 bytes is not valid JSON; skipped", T)
        a.sendall(frame([1, 2, 3]))
        r.wait_line(r"a message is not a JSON object; skipped", T)
        a.sendall(frame({"type": "at_rcb_barrier", "local_rank": 0}))
        r.wait_line(r"message without a client_id; ignored", T)
        a.sendall(frame({"type": "job_fault", "client_id": "x", "local_rank": 99}))
        r.wait_line(r"job_fault message with local_rank outside \[0, 4\); ignored", T)
        # still connected: a well-formed init after all that is judged,
        # and refused, as this process is not worker 2's (issue 12 §6)
        a.sendall(frame({"type": "init", "local_rank": 2, "client_id": "garbage-a"}))
        r.wait_line(r"init for local rank 2 refused: pid \d+ is not in that "
                    r"worker's process group", T)
        # 2. an oversized frame: the client is dropped
        a.sendall(b"\x7f\xff\xff\xff" + b"x" * 1024)
        r.wait_line(r"dropping client \d+: a frame is longer than 1048576 bytes", T)
        self.assertTrue(read_until_eof(a, T), "the agent kept an oversized client")
        a.close()
        # 3. a frame just over the limit, fully sent, from a fresh client
        b = raw_client(path)
        try:
            b.sendall(frame(b" " * (1024 * 1024 + 1)))
        except (BrokenPipeError, ConnectionResetError):
            pass  # dropped while we were still writing: as good
        self.assertTrue(read_until_eof(b, T))
        b.close()
        r.wait_lines(r"dropping client \d+: a frame is longer", 2, T)
        # 4. half a frame, then hang up
        c = raw_client(path)
        c.sendall(b"\x00\x00\x01\x00{\"type\":")
        c.close()

        # the agent is alive and its workers carry on: a fault in rank 2
        # still runs the whole in-process cycle in the same processes
        import hp_operator as op
        self.assertEqual(op.status(port)["status"], "running")
        os.kill(first[2], signal.SIGUSR1)
        self.assertExit(r, 0, timeout=T)
        again = {rec["rank"]: rec["pid"] for rec in records(r, "run", run=1)}
        self.assertEqual(again, first)
        self.assertEqual(len(records(r, "notified", restart_count=1)), 4)
        r.wait_line(FSM + r"RUNNING -> FAULTED reason=InjectedFault "
                    r"message=SIGUSR1 into rank 2$", 0)
        self.assertFalse(r.matches("process-level restart"))
        self.assertEqual(len(ready_pids(r)), 4)

    # ------------------------------------------------------------------
    def test_c_example_worker_survives_a_fault(self):
        build = os.environ.get("HP_BUILD_DIR", "build")
        worker = os.path.join(build, "ipr_worker")
        if not os.access(worker, os.X_OK):
            self.skipTest("examples/ipr_worker.c not built at %s" % worker)
        env = harness.base_env(TMPDIR=self.tmp, HYPERPODRUN_LOG_LEVEL="debug",
                               HP_STEPS="30", HP_STEP_MS="100",
                               HP_FAIL_AT_STEP="1", HP_FAIL_RANK="2")
        r = self.agent(["--nnodes=1", "--nproc-per-node", "4", "--no-python",
                        "--inprocess-restart", "--inprocess-timeout", "30",
                        "--max-restarts", "0", worker], env=env)
        self.assertExit(r, 0, timeout=T)
        started = {int(m.group(1)): int(m.group(2)) for m in
                   r.matches(r"worker (\d) started \(pid (\d+)\)")}
        exited = {int(m.group(1)): int(m.group(2)) for m in
                  r.matches(r"worker (\d) \(pid (\d+)\) exited with code 0")}
        self.assertEqual(len(started), 4)
        self.assertEqual(exited, started, "the workers that finished are the first ones")
        self.assertEqual(len(r.matches(r"started 4 workers")), 1)
        # the three others heard the fault with the new count ...
        self.assertEqual(sorted(int(m.group(1)) for m in
                                r.matches(r"^rank (\d) fault restart_count 1$")),
                         [0, 1, 3])
        # ... and every rank ran all its steps again at restart count 1
        for rank in range(4):
            r.wait_line(r"^rank %d restart_count 1 step 29$" % rank, 0)
        self.assertEqual(len(r.matches(r"^done$")), 4)
        r.wait_line(FSM + r"RUNNING -> FAULTED reason=InjectedFault "
                    r"message=HP_FAIL_AT_STEP$", 0)
        self.assertFalse(r.matches("process-level restart"))


if __name__ == "__main__":
    harness.main()
