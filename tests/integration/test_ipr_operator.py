"""Operator-driven in-process restart (issue 4 §Tests, end to end): two real
hyperpodrun agents (--rdzv-backend=hyperpod --inprocess-restart, 2 workers
each, tests/integration/ipr_probe.py) driven over HTTP by the operator
emulator (hp_operator.py), as the HyperPod operator drives a 2-node job.

  * an agent is READY only once its workers are at the barrier;
  * /start releases them with the rank information of PROTOCOL.md;
  * a worker fault on agent A -> A FAULTED (B stays RUNNING);
  * /stop on both -> in-process restart -> READY, same processes;
  * /start(faultCount + 1) -> RUNNING, the new count visible to workers;
  * /stop restart_mode process_level_restart -> new worker processes, INIT,
    READY again;
  * /stop with a rank that never returns (--inprocess-timeout) or after a
    worker died -> new processes on that agent, READY again;
  * /update reaches the workers as job_rank_info;
  * worker_data, rank_labels and restartMode in /status.

Waits are on output lines and /status states with deadlines; nothing
sleeps to synchronise.
"""
import json
import os
import signal
import time

import harness
import hp_operator as op
from ipr_common import (ENV_KEYS, PROBE, READY, probe_env, ready_pids,
                        records, wait_records)

T = 120.0
NPROC = 2


class Node:
    def __init__(self, run, port, group_rank, rcdir):
        self.run, self.port, self.group_rank, self.rcdir = run, port, group_rank, rcdir

    def status(self):
        return op.status(self.port)

    def wait(self, state, timeout=T):
        return op.wait_state(self.port, state, timeout)


class OperatorIPR(harness.ProcessTest):
    survivor_timeout = 10.0

    def boot(self, nnodes=2, timeout=30, **env):
        """nnodes agents; returns their Nodes once their APIs listen. The
        workers never finish by themselves (IPR_DONE_AT=-1)."""
        env.setdefault("IPR_DONE_AT", "-1")
        nodes = []
        for g in range(nnodes):
            rcdir = os.path.join(self.tmp, "rc%d" % g)
            r = self.agent(["--rdzv-backend=hyperpod", "--nnodes=%d" % nnodes,
                            "--nproc-per-node", str(NPROC), "--inprocess-restart",
                            "--inprocess-timeout", str(timeout), PROBE],
                           env=probe_env(self.tmp, HYPERPOD_RESOURCE_CONFIG_DIR=rcdir,
                                         **env),
                           label="agent%d" % g)
            nodes.append((r, g, rcdir))
        out = []
        for r, g, rcdir in nodes:
            m = r.wait_line(r"operator API listening on http://127\.0\.0\.1:(\d+)$", T)
            out.append(Node(r, int(m.group(1)), g, rcdir))
        self.nodes = out
        self.addCleanup(self.shutdown_all)
        return out

    def shutdown_all(self):
        for n in self.nodes:
            if n.run.running():
                try:
                    op.shutdown(n.port)
                except (OSError, op.OperatorError):
                    pass
        for n in self.nodes:
            if n.run.running():
                try:
                    n.run.wait(30)
                except AssertionError:
                    pass

    def start_all(self, fault_count, master_port, **extra):
        for n in self.nodes:
            op.start(n.port, n.group_rank, len(self.nodes), fault_count,
                     "127.0.0.1", master_port, **extra)

    def run_recs(self, node, **where):
        return {rec["local_rank"]: rec for rec in records(node.run, "run", **where)}

    def pids(self, node, **where):
        return {lr: rec["pid"] for lr, rec in self.run_recs(node, **where).items()}

    def check_env(self, node, rec, restart, master_port):
        env = rec["env"]
        self.assertEqual(set(env), ENV_KEYS, rec)
        rank = node.group_rank * NPROC + rec["local_rank"]
        world = len(self.nodes) * NPROC
        self.assertEqual(env["RANK"], str(rank))
        self.assertEqual(env["ROLE_RANK"], str(rank))
        self.assertEqual(env["GROUP_RANK"], str(node.group_rank))
        self.assertEqual(env["WORLD_SIZE"], str(world))
        self.assertEqual(env["ROLE_WORLD_SIZE"], str(world))
        # the reference's GROUP_WORLD_SIZE is the world size (10336335176)
        self.assertEqual(env["GROUP_WORLD_SIZE"], str(world))
        self.assertEqual(env["MASTER_ADDR"], "127.0.0.1")
        self.assertEqual(env["MASTER_PORT"], str(master_port))
        self.assertEqual(env["JOB_RESTART_COUNT"], str(restart))
        self.assertEqual(env["TORCHELASTIC_RESTART_COUNT"], str(restart))
        self.assertEqual(env["SPARE"], "False")

    def start_and_run(self, fault_count=0, master_port=29611, **extra):
        """All READY -> /start -> every worker released; returns nothing."""
        for n in self.nodes:
            n.wait("ready")
        self.start_all(fault_count, master_port, **extra)
        for n in self.nodes:
            st = n.wait("running")
            # RunningStarted, then Running once job_start went out
            self.assertEqual(st.get("reason"), "Running", st)
            wait_records(n.run, "run", NPROC, T, restart=fault_count)

    # ------------------------------------------------------------------
    def test_ready_only_at_the_barrier_and_start_releases(self):
        # a FIFO per agent and local rank: the test lets each worker reach
        # the barrier when it chooses
        nodes = []
        for g in range(2):
            for lr in range(NPROC):
                os.mkfifo(os.path.join(self.tmp, "gate%d-%d" % (g, lr)))
            rcdir = os.path.join(self.tmp, "rc%d" % g)
            r = self.agent(["--rdzv-backend=hyperpod", "--nnodes=2",
                            "--nproc-per-node", str(NPROC), "--inprocess-restart",
                            "--inprocess-timeout", "30", PROBE],
                           env=probe_env(self.tmp, HYPERPOD_RESOURCE_CONFIG_DIR=rcdir,
                                         HYPERPODRUN_LOG_LEVEL="debug", IPR_DONE_AT="-1",
                                         IPR_GATE=os.path.join(self.tmp, "gate%d-{local_rank}" % g)),
                           label="agent%d" % g)
            m = r.wait_line(r"operator API listening on http://127\.0\.0\.1:(\d+)$", T)
            nodes.append(Node(r, int(m.group(1)), g, rcdir))
        self.nodes = nodes
        self.addCleanup(self.shutdown_all)

        # workers connected (init registered) but held before the barrier
        for n in nodes:
            wait_records(n.run, "gate", NPROC, T)
            n.run.wait_lines(r"registered \S+ for local rank \d$", NPROC, T)
            st = n.status()
            self.assertEqual(st["status"], "init", st)
            self.assertNotIn("READY", st["transitions"])
            self.assertEqual(st["restartMode"], "in_process_restart")
            self.assertEqual(st["rank_labels"], {})

        # one rank at the barrier is not enough (agent 0: local rank 0
        # first, agent 1: local rank 1 first); both are
        for n, order in ((nodes[0], (0, 1)), (nodes[1], (1, 0))):
            gate = lambda lr: os.path.join(self.tmp, "gate%d-%d" % (n.group_rank, lr))
            fd = os.open(gate(order[0]), os.O_WRONLY)
            try:
                n.run.wait_line(r"local rank %d at the barrier$" % order[0], T)
                st = n.status()
                self.assertEqual(st["status"], "init",
                                 "agent%d left INIT with only local rank %d at the "
                                 "barrier: %s" % (n.group_rank, order[0], st))
            finally:
                os.close(fd)
            fd = os.open(gate(order[1]), os.O_WRONLY)
            try:
                n.wait("ready")
                n.run.wait_line(r"every local rank is at the barrier", T)
            finally:
                os.close(fd)
        self.assertEqual(nodes[1].status()["status"], "ready")
        for n in nodes:
            self.assertFalse(records(n.run, "run"), "released before /start")

        # /start releases: RUNNING, reason RunningStarted, the rank env
        self.start_all(0, 29611)
        for n in nodes:
            st = n.wait("running")
            self.assertEqual(st["reason"], "Running")
            self.assertEqual(st["assigned_rank"], str(n.group_rank))
            recs = wait_records(n.run, "run", NPROC, T)
            for rec in recs:
                self.check_env(n, rec, 0, 29611)

    # ------------------------------------------------------------------
    def test_fault_stop_and_start_again_in_process(self):
        nodes = self.boot()
        a, b = nodes
        self.start_and_run(0, 29611)
        pids = {n.group_rank: self.pids(n) for n in nodes}

        # a fault in agent A's local rank 1 (global rank 1)
        os.kill(pids[0][1], signal.SIGUSR1)
        st = a.wait("faulted")
        self.assertEqual(st["reason"], "InjectedFault", st)
        self.assertEqual(st["message"], "SIGUSR1 into rank 1", st)
        self.assertEqual(st["restartMode"], "in_process_restart")
        # worker_data lists only ranks that sent data (the reference's
        # get_worker_data, 10281984903): the failed rank sent none
        self.assertEqual(st.get("worker_data", []), [], st)
        self.assertEqual(b.status()["status"], "running", "B must not fault")
        # the operator decides: nobody has been told to restart yet
        for n in nodes:
            self.assertFalse(records(n.run, "notified"))

        # operator: /stop both (default restart_mode: ipr) -> READY
        for n in nodes:
            op.stop(n.port)
        for n in nodes:
            st = n.wait("ready")
            self.assertIn("STOPPING", st["transitions"])
            got = wait_records(n.run, "notified", NPROC, T)
            # the reference's _pause_workers sends the current count (the
            # operator's faultCount), not the next one (10759738055)
            self.assertEqual([x["restart_count"] for x in got], [0] * NPROC)
        # the workers wait at the barrier: no run before /start
        for n in nodes:
            self.assertEqual(len(records(n.run, "run")), NPROC)

        # /start with faultCount 1 and a new master port
        self.start_all(1, 29622)
        for n in nodes:
            st = n.wait("running")
            self.assertEqual(st["reason"], "Running")
            recs = wait_records(n.run, "run", NPROC, T, restart=1)
            for rec in recs:
                self.check_env(n, rec, 1, 29622)
            # the same processes, none started again
            self.assertEqual(self.pids(n, restart=1), pids[n.group_rank])
            self.assertEqual(sorted(ready_pids(n.run)), sorted(pids[n.group_rank].values()))
            self.assertFalse(n.run.matches(r"process-level restart"))
        # the worker_data of the failed rank is cleared by past_rcb_barrier
        st = self.poll_status(a, lambda s: not any(w["failed"] for w in s.get("worker_data", [])))
        self.assertEqual(st["status"], "running")

    def poll_status(self, node, pred, timeout=T):
        """Polls /status until pred(status) holds (no fixed sleeps: each
        poll is an HTTP round trip, spaced like wait_state's)."""
        deadline = time.monotonic() + timeout
        while True:
            st = node.status()
            if pred(st):
                return st
            if time.monotonic() > deadline:
                self.fail("status never matched; last %s" % st)
            time.sleep(op.POLL_INTERVAL)

    # ------------------------------------------------------------------
    def test_stop_plr_starts_new_processes(self):
        nodes = self.boot()
        self.start_and_run(0, 29611)
        old = {n.group_rank: set(self.pids(n).values()) for n in nodes}
        for n in nodes:
            op.stop(n.port, restart_mode="process_level_restart")
        for n in nodes:
            # the old processes are killed, a new group starts: INIT again
            n.run.wait_lines(r"killed by SIGKILL", NPROC, T)
            st = self.wait_ready_after_plr(n, old[n.group_rank])
            tr = st["transitions"]
            self.assertGreater(tr["INIT"], tr["STOPPING"], "INIT again after /stop plr")
            self.assertGreater(tr["READY"], tr["INIT"])
        # and the new group is released by the next /start
        self.start_all(1, 29633)
        for n in nodes:
            n.wait("running")
            recs = wait_records(n.run, "run", NPROC, T, restart=1)
            self.assertFalse({r["pid"] for r in recs} & old[n.group_rank])
            for rec in recs:
                self.check_env(n, rec, 1, 29633)

    def wait_ready_after_plr(self, n, old_pids):
        """After a process-level restart: new processes at the barrier, then
        READY (with a precise message when the agent does not get there)."""
        n.run.wait_lines(READY, len(old_pids) + NPROC, T)
        n.run.wait_lines(r"every local rank is at the barrier", 2, T)
        try:
            st = n.wait("ready", 15)
        except TimeoutError as e:
            fsm = [l for l in n.run.output("err") if " fsm " in l][-3:]
            self.fail("agent%d: the new workers are at the barrier but the agent "
                      "never became READY after the process-level restart: %s; "
                      "fsm log: %s" % (n.group_rank, e, fsm))
        new = set(ready_pids(n.run)) - set(old_pids)
        self.assertEqual(len(new), NPROC)
        for pid in old_pids:
            self.assertFalse(harness.alive(pid))
        return st

    def test_stop_with_a_rank_that_never_returns(self):
        # agent 0's local rank 1 ignores the fault; --inprocess-timeout 2
        nodes = self.boot(timeout=2, IPR_HANG_RANK=1)
        a, b = nodes
        self.start_and_run(0, 29611)
        pids = {n.group_rank: self.pids(n) for n in nodes}
        for n in nodes:
            op.stop(n.port)
        # B: an in-process restart; A: a process-level one after 2 s
        b.wait("ready")
        wait_records(a.run, "hang", 1, T, rank=1)
        a.run.wait_line(r"process-level restart: local rank\(s\) 1 not at the "
                        r"barrier within --inprocess-timeout=2 s", T)
        self.wait_ready_after_plr(a, list(pids[0].values()))
        self.start_all(1, 29655)
        for n in nodes:
            n.wait("running")
            for rec in wait_records(n.run, "run", NPROC, T, restart=1):
                self.check_env(n, rec, 1, 29655)
        self.assertEqual(self.pids(b, restart=1), pids[1], "B kept its processes")
        self.assertFalse(set(self.pids(a, restart=1).values()) & set(pids[0].values()))

    def test_dead_worker_faults_and_stop_restarts_the_processes(self):
        nodes = self.boot()
        a = nodes[0]
        self.start_and_run(0, 29611)
        pids = self.pids(a)
        os.kill(pids[0], signal.SIGKILL)
        st = a.wait("faulted")
        # a crashed process (not an IPC-reported fault): the reference's
        # WorkerCrash, naming local rank 0 and the signal
        self.assertEqual(st["reason"], "WorkerCrash", st)
        self.assertIn("Local Rank 0 exited with code -9", st["message"])
        for n in nodes:
            op.stop(n.port)
        nodes[1].wait("ready")
        self.wait_ready_after_plr(a, list(pids.values()))
        self.start_all(1, 29666)
        for n in nodes:
            n.wait("running")
            for rec in wait_records(n.run, "run", NPROC, T, restart=1):
                self.check_env(n, rec, 1, 29666)

    # ------------------------------------------------------------------
    def test_update_reaches_workers_as_rank_info(self):
        nodes = self.boot()
        ips = [{"rank": 0, "ip": "10.0.0.1"}, {"rank": 1, "ip": "10.0.0.2"}]
        self.start_and_run(0, 29611, rankIps=ips, ipVersion="v1")
        for n in nodes:
            for rec in records(n.run, "run"):
                self.assertEqual(rec["agg"]["rank_ips"], ips)
        agg = {"step": 7, "who": ["a", "b"]}
        for n in nodes:
            st = op.update(n.port, n.group_rank, 2, 0, "127.0.0.1", 29644,
                           rankIps=[{"rank": 1, "ip": "10.0.0.9"}], ipVersion="v2",
                           worker_data=agg)
            self.assertEqual(st["status"], "running")
            self.assertEqual(st["ipversion"], "v2")
        for n in nodes:
            infos = wait_records(n.run, "rank_info", NPROC, T)
            self.assertEqual(sorted(i["local_rank"] for i in infos), list(range(NPROC)))
            for info in infos:
                self.check_env(n, info, 0, 29644)
                self.assertEqual(info["agg"]["aggregate_worker_data"], agg)
                self.assertIn({"rank": 1, "ip": "10.0.0.9"}, info["agg"]["rank_ips"])
            # still the first run: /update neither releases nor restarts
            self.assertEqual(len(records(n.run, "run")), NPROC)
            self.assertEqual(n.status()["status"], "running")
            with open(os.path.join(n.rcdir, "pod_resourceconfig.json")) as f:
                conf = json.load(f)
            self.assertEqual(conf["ips"], ["10.0.0.1", "10.0.0.9"])
            self.assertEqual(conf["ips_timestamp"], "v2")

    # ------------------------------------------------------------------
    def test_rank_info_that_needs_escaping_reaches_workers_intact(self):
        # worker_envs is JSON text the agent builds (cJSON): the operator's
        # master_addr comes back byte for byte, whatever it holds
        n, = self.boot(nnodes=1)
        n.wait("ready")
        odd = ['q"uo\\te/\b\f\n\r\t\x01\x1f\x7f', "\u00e9\u6f22\U0001F600 \u2028"]
        op.start(n.port, 0, 1, 0, odd[0], 29611)
        n.wait("running")
        for rec in wait_records(n.run, "run", NPROC, T):
            self.assertEqual(set(rec["env"]), ENV_KEYS, rec)
            self.assertEqual(rec["env"]["MASTER_ADDR"], odd[0])
            self.assertEqual(rec["env"]["RANK"], str(rec["local_rank"]))
        op.update(n.port, 0, 1, 0, odd[1], 29644)
        for info in wait_records(n.run, "rank_info", NPROC, T):
            self.assertEqual(set(info["env"]), ENV_KEYS, info)
            self.assertEqual(info["env"]["MASTER_ADDR"], odd[1])
            self.assertEqual(info["env"]["MASTER_PORT"], "29644")

    # ------------------------------------------------------------------
    def test_worker_data_and_rank_labels_in_status(self):
        nodes = self.boot(IPR_DATA="1")
        self.start_and_run(0, 29611)
        for n in nodes:
            st = self.poll_status(n, lambda s: len(s.get("worker_data", [])) == NPROC
                                  and s["rank_labels"])
            base = n.group_rank * NPROC
            self.assertEqual(
                sorted((w["rank"], w["group_rank"], w["local_rank"], w["failed"], w["data"])
                       for w in st["worker_data"]),
                [(base + i, n.group_rank, i, False, "data-r%d-c0" % (base + i))
                 for i in range(NPROC)])
            # the last sender's map replaces the group's (the reference's
            # assign_labels; 9960341539 test_notify_labels_callback)
            self.assertIn(st["rank_labels"],
                          [{"label_r%d" % (base + i): "c0"} for i in range(NPROC)])

    def test_worker_can_raise_restart_mode(self):
        nodes = self.boot(IPR_FAULT_MODE="process_level_restart")
        self.start_and_run(0, 29611)
        os.kill(self.pids(nodes[1])[0], signal.SIGUSR1)
        st = nodes[1].wait("faulted")
        self.assertEqual(st["restartMode"], "process_level_restart", st)
        self.assertEqual(st["reason"], "InjectedFault")
        self.assertEqual(nodes[0].status()["restartMode"], "in_process_restart")


if __name__ == "__main__":
    harness.main()
