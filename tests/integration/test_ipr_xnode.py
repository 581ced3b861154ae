"""In-process restart across nodes (issue 5 §3-4, end to end): two real
hyperpodrun agents in local static mode (--nnodes 2 --node-rank 0/1, one
machine, FI_PROVIDER=tcp) with two workers each of ipr_probe.py
(client/python/hyperpod_worker.py). Global rank 0 sends a fresh fake NCCL unique
id as job_data before every barrier wait (IPR_NCCL=1).

  * a fault in node 1's worker reaches node 0 (POST /stop): all four
    workers restart in process (same pids, restart count + 1), and each
    run's four ranks see the same NCCL_UNIQUE_ID, the one rank 0 sent for
    that run; every node's worker data is in aggregate_worker_data;
  * a worker that dies on node 1: node 1 restarts its processes and
    tells node 0 to do the same (POST /stop plr); all four ranks run
    again in new processes at restart count 1, with rank 0's new id;
  * a peer that never joins the table: a process-level restart after
    --inprocess-timeout, never a hang; one node alone still hands rank
    0's id to its ranks;
  * a node that never reaches the barrier (its agent SIGSTOPped): the
    other gives up after --inprocess-timeout with a process-level restart
    whose log line names the missing rank, never hangs;
  * an agent that is shut down (SIGTERM) leaves the fabric: the other's
    next barrier fails at once naming it, well before the timeout.

Exit 77 when libfabric has no tcp provider here. Every wait is on an
output line with a deadline; nothing sleeps.
"""
import os
import signal
import subprocess
import sys
import time

import harness
import hp_operator as op
from ipr_common import (PROBE, have_tcp_provider, probe_env, ready_pids,
                        records, wait_records)

T = 120.0  # generous: the test machine is small and shared
# A node that never comes to the round: it never joins that epoch's peer
# table (or, had it joined, never reaches the barrier). group(1): the ms.
MISSED_RANK_1 = (r"process-level restart: cross-node (?:barrier failed: "
                 r"barrier epoch \d+ timed out after (\d+) ms waiting for "
                 r"ranks? 1\b|peer table of epoch \d+ on \S+ was not complete "
                 r"within the round's (\d+) ms \(ranks 1 did not join\))")
FSM = r"INFO fsm \d+: "


class Nodes(harness.ProcessTest):
    survivor_timeout = 10.0

    def stop_agent(self, r):
        """After a failed assertion: stop the agent (and its workers)."""
        if r.running():
            r.signal(signal.SIGCONT)
            r.signal(signal.SIGTERM)
            try:
                r.wait(30)
            except AssertionError:
                pass

    def check_rss(self, nodes):
        """Issue 13 §7: each agent, its fabric endpoint open and a round
        done, within 16 MB (VmHWM, the peak, and VmRSS); the figures go to
        stderr for the benchmark table. Not under a sanitizer, whose
        shadow memory is most of a process. The agents must still run
        (operator mode: they wait for the next command)."""
        ldd = subprocess.run(["ldd", harness.hyperpodrun()], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL).stdout
        for n in nodes:
            with open("/proc/%d/status" % n.proc.pid) as f:
                kb = dict(l.split()[:2] for l in f if l.startswith(("VmHWM", "VmRSS")))
            hwm, rss = int(kb["VmHWM:"]) / 1024.0, int(kb["VmRSS:"]) / 1024.0
            print("xnode agent with the fabric open (tcp): VmHWM %.1f MB VmRSS "
                  "%.1f MB" % (hwm, rss), file=sys.stderr, flush=True)
            if b"libasan" not in ldd and b"libtsan" not in ldd:
                self.assertLessEqual(hwm, 16.0, n.tail())
                self.assertLessEqual(rss, 16.0, n.tail())


class CrossNodeIPR(Nodes):

    def start_nodes(self, timeout=20, max_restarts=0, nodes=(0, 1), nnodes=2,
                    **env):
        """Two agents; node 0's server port is fixed first, since node 1
        finds the peer table there (--rdzv-endpoint)."""
        port0 = harness.free_port()
        master_port = harness.free_port()
        runs = []
        for node in nodes:
            args = ["--nnodes", str(nnodes), "--nproc-per-node", "2",
                    "--rdzv-backend", "static", "--node-rank", str(node),
                    "--master-addr", "127.0.0.1",
                    "--master-port", str(master_port),
                    "--rdzv-endpoint", "127.0.0.1:%d" % port0,
                    "--server-port", str(port0) if node == 0 else "0",
                    "--inprocess-restart",
                    "--inprocess-timeout", str(timeout),
                    "--max-restarts", str(max_restarts), PROBE]
            r = self.agent(args, env=probe_env(self.tmp, FI_PROVIDER="tcp",
                                               IPR_NCCL="1", **env),
                           label="node%d" % node)
            self.addCleanup(self.stop_agent, r)
            runs.append(r)
        return runs

    def runs_by_rank(self, nodes, run):
        out = {}
        for n in nodes:
            for rec in records(n, "run", run=run):
                out[rec["rank"]] = rec
        return out

    def wait_runs(self, nodes, run, count=2):
        """Every node's `count` records of run index `run`, by rank."""
        for n in nodes:
            wait_records(n, "run", count, T, run=run)
        return self.runs_by_rank(nodes, run)

    # ------------------------------------------------------------------
    def test_fault_on_one_node_restarts_both_in_process(self):
        n0, n1 = self.start_nodes(IPR_FAIL_RANK=2, IPR_DATA="1")
        first = self.wait_runs((n0, n1), 0)
        self.assertEqual(sorted(first), [0, 1, 2, 3])
        sent = records(n0, "nccl_sent")
        self.assertGreaterEqual(len(sent), 1)
        for rank, rec in first.items():
            env = rec["env"]
            self.assertEqual(env["RANK"], str(rank))
            self.assertEqual(env["WORLD_SIZE"], "4")
            self.assertEqual(env["GROUP_RANK"], str(rank // 2))
            self.assertEqual(env["JOB_RESTART_COUNT"], "0")
            self.assertEqual(env.get("NCCL_UNIQUE_ID"), sent[0]["id"],
                             "rank %d got another id" % rank)
        pids = {rank: rec["pid"] for rank, rec in first.items()}

        second = self.wait_runs((n0, n1), 1)
        self.assertEqual(sorted(second), [0, 1, 2, 3])
        for n in (n0, n1):
            self.assertExit(n, 0, timeout=T)
        sent = records(n0, "nccl_sent")
        self.assertEqual(len(sent), 2, "rank 0 waited at the barrier twice")
        self.assertNotEqual(sent[0]["id"], sent[1]["id"])
        for rank, rec in second.items():
            self.assertEqual(rec["pid"], pids[rank],
                             "rank %d changed process" % rank)
            self.assertEqual(rec["env"]["JOB_RESTART_COUNT"], "1")
            self.assertEqual(rec["restart"], 1)
            self.assertEqual(rec["env"].get("NCCL_UNIQUE_ID"), sent[1]["id"],
                             "rank %d did not get the new id" % rank)
            # every node's worker data of the run that ended (IPR_DATA)
            agg = rec["agg"]["aggregate_worker_data"]
            self.assertEqual(sorted(e["rank"] for e in agg), [0, 1, 2, 3], agg)
            by = {e["rank"]: e for e in agg}
            self.assertEqual(by[3]["group_rank"], 1)
            self.assertEqual(by[3]["data"], "data-r3-c0")
            self.assertTrue(by[2]["failed"], agg)
        # exactly one in-process cycle on each node, no process restart
        for n in (n0, n1):
            self.assertEqual(len(ready_pids(n)), 2)
            self.assertEqual(len(records(n, "done")), 2)
            self.assertEqual(len(n.matches(r"in-process restart 1: asking")), 1)
            self.assertFalse(n.matches("process-level restart"), n.tail())
            n.wait_line(FSM + "STOPPING -> READY", 0)
        n1.wait_line(FSM + r"RUNNING -> FAULTED reason=InjectedFault "
                     r"message=injected into rank 2$", 0)
        n1.wait_line(r"told rank 0 \(127\.0\.0\.1:\d+\) to restart "
                     r"\(in-process\)", 0)
        n0.wait_line(r"/stop \(restart_mode ipr\)", 0)
        self.assertEqual(len(n0.matches(r"peer table complete: 2 agents")), 1)

    # ------------------------------------------------------------------
    def test_node_missing_the_barrier_gives_a_process_level_restart(self):
        timeout = 4
        n0, n1 = self.start_nodes(timeout=timeout, max_restarts=1)
        first = self.wait_runs((n0, n1), 0)
        n1.signal(signal.SIGSTOP)
        os.kill(first[0]["pid"], signal.SIGUSR1)  # a fault on node 0
        wait_records(n0, "fault", 1, T, rank=1)
        m = n0.wait_line(MISSED_RANK_1, T)
        self.assertEqual(int(m.group(1) or m.group(2)), timeout * 1000)
        # the old workers go, new ones come (node 0 alone: node 1 is
        # still stopped, so their barrier times out too and node 0 gives
        # up after its one restart)
        self.assertExit(n0, 1, timeout=T)
        self.assertEqual(len(n0.matches(r"process-level restart: cross-node "
                                        r"(barrier failed|peer table)")), 2)
        pids = set(ready_pids(n0))
        self.assertEqual(len(pids), 4, "two old and two new workers")
        for pid in pids:
            self.assertFalse(harness.alive(pid))
        n0.wait_line(r"could not tell rank 1 \(127\.0\.0\.1:\d+\) to "
                     r"restart \(in-process\)", 0)
        # node 1 comes back and is told to end; what it does first (the
        # /stop node 0 queued on it, or the signal) is a race: it ends
        # either way, by the signal or failing its barrier with node 0 gone
        n1.signal(signal.SIGTERM)
        n1.signal(signal.SIGCONT)
        self.assertExit(n1, (1, 143), timeout=T)

    def test_three_nodes_restart_together(self):
        nodes = self.start_nodes(nodes=(0, 1, 2), nnodes=3, IPR_FAIL_RANK=4)
        first = self.wait_runs(nodes, 0)
        self.assertEqual(sorted(first), list(range(6)))
        second = self.wait_runs(nodes, 1)
        for n in nodes:
            self.assertExit(n, 0, timeout=T)
        sent = records(nodes[0], "nccl_sent")
        self.assertEqual(len(sent), 2)
        for rank, rec in second.items():
            self.assertEqual(rec["pid"], first[rank]["pid"])
            self.assertEqual(rec["env"]["JOB_RESTART_COUNT"], "1")
            self.assertEqual(rec["env"]["WORLD_SIZE"], "6")
            self.assertEqual(rec["env"].get("NCCL_UNIQUE_ID"), sent[1]["id"])
        self.assertEqual(len(nodes[2].matches(r"told rank \d \(127\.0\.0\.1:"
                                              r"\d+\) to restart \(in-process\)")),
                         2)
        for n in nodes:
            self.assertFalse(n.matches("process-level restart"), n.tail())

    # ------------------------------------------------------------------
    def test_peer_that_never_joins_gives_a_process_level_restart(self):
        timeout = 3
        (n0,) = self.start_nodes(timeout=timeout, max_restarts=1, nodes=(0,))
        self.assertExit(n0, 1, timeout=T)
        lines = n0.matches(r"process-level restart: cross-node peer table of "
                           r"epoch \d+ on 127\.0\.0\.1:\d+ was not complete "
                           r"within the round's %d ms" % (timeout * 1000))
        self.assertEqual(len(lines), 2, "one per attempt")
        # the endpoint is opened once, the table asked for again
        self.assertEqual(len(n0.matches(r"fabric endpoint up")), 1)
        self.assertEqual(len(ready_pids(n0)), 4)
        self.assertFalse(records(n0, "run"), "nobody may be released")

    def test_one_node_hands_rank_0_s_id_to_every_rank(self):
        (n0,) = self.start_nodes(nodes=(0,), nnodes=1, IPR_FAIL_RANK=1)
        self.assertExit(n0, 0, timeout=T)
        sent = records(n0, "nccl_sent")
        self.assertEqual(len(sent), 2)
        for run in (0, 1):
            ids = [rec["env"].get("NCCL_UNIQUE_ID")
                   for rec in records(n0, "run", run=run)]
            self.assertEqual(ids, [sent[run]["id"]] * 2, "run %d" % run)
        self.assertFalse(n0.matches(r"xnode"), "no fabric for one node")

    # ------------------------------------------------------------------
    def test_dead_worker_restarts_every_node_s_processes(self):
        n0, n1 = self.start_nodes(max_restarts=1)
        first = self.wait_runs((n0, n1), 0)
        old = {rec["pid"] for rec in first.values()}
        os.kill(first[3]["pid"], signal.SIGKILL)  # node 1, local rank 1
        for n in (n0, n1):
            self.assertExit(n, 0, timeout=T)
        # every rank ran again in a new process, at restart count 1
        new = [rec for n in (n0, n1) for rec in records(n, "run")
               if rec["pid"] not in old]
        self.assertEqual(sorted(rec["rank"] for rec in new), [0, 1, 2, 3], new)
        for rec in new:
            self.assertEqual(rec["env"]["TORCHELASTIC_RESTART_COUNT"], "1")
            self.assertEqual(rec["restart"], 1)
        sent = records(n0, "nccl_sent")
        ids = {rec["env"].get("NCCL_UNIQUE_ID") for rec in new}
        self.assertEqual(ids, {sent[-1]["id"]})
        n1.wait_line(r"told rank 0 \(127\.0\.0\.1:\d+\) to restart "
                     r"\(process-level\)", 0)
        n0.wait_line(r"/stop \(restart_mode plr\)", 0)
        for n in (n0, n1):
            self.assertEqual(len(ready_pids(n)), 4)
            self.assertEqual(len(records(n, "done")), 2)
            for pid in ready_pids(n):
                self.assertFalse(harness.alive(pid))

    # ------------------------------------------------------------------
    def test_agent_shut_down_leaves_the_fabric(self):
        timeout = 60
        n0, n1 = self.start_nodes(timeout=timeout)
        first = self.wait_runs((n0, n1), 0)
        n1.signal(signal.SIGTERM)
        self.assertExit(n1, 143, timeout=T)
        n1.wait_line(r"left the fabric", 0)
        os.kill(first[0]["pid"], signal.SIGUSR1)
        n0.wait_line(r"process-level restart: cross-node (barrier failed: "
                     r".*\b1\b.*left|peer table of epoch \d+: rank 1 left)",
                     T)
        self.assertExit(n0, 1, timeout=T)
        self.assertLess(n0.elapsed, timeout - 10,
                        "waited for the deadline instead of the departure")


class OperatorCrossNode(Nodes):
    """Operator mode: the fabric takes part only after a /start (rank and
    addresses come with it); rank 0's table is found through
    HYPERPODRUN_FABRIC_ROOT, as every agent here has its own port."""

    def boot(self, timeout, nnodes=2):
        port0 = harness.free_port()
        nodes = []
        for g in range(nnodes):
            args = ["--rdzv-backend=hyperpod", "--nnodes=%d" % nnodes,
                    "--nproc-per-node", "2",
                    "--server-port", str(port0) if g == 0 else "0",
                    "--inprocess-restart", "--inprocess-timeout", str(timeout),
                    PROBE]
            env = probe_env(self.tmp, FI_PROVIDER="tcp", IPR_NCCL="1",
                            IPR_DONE_AT="-1",
                            HYPERPODRUN_FABRIC_ROOT="127.0.0.1:%d" % port0,
                            HYPERPOD_RESOURCE_CONFIG_DIR=os.path.join(
                                self.tmp, "rc%d" % g))
            r = self.agent(args, env=env, label="agent%d" % g)
            self.addCleanup(self.stop_agent, r)
            nodes.append(r)
        ports = [int(r.wait_line(r"operator API listening on "
                                 r"http://127\.0\.0\.1:(\d+)$", T).group(1))
                 for r in nodes]
        self.assertEqual(ports[0], port0)
        return nodes, ports

    def start_all(self, ports, fault_count):
        for g, port in enumerate(ports):
            op.start(port, g, len(ports), fault_count, "127.0.0.1", 29611)

    def test_operator_stop_meets_on_the_fabric_and_shares_the_id(self):
        (a0, a1), ports = self.boot(timeout=20)
        for p in ports:
            op.wait_state(p, "ready", T)
        self.start_all(ports, 0)
        for n in (a0, a1):
            wait_records(n, "run", 2, T, restart=0)
        pids = {rec["rank"]: rec["pid"]
                for n in (a0, a1) for rec in records(n, "run", restart=0)}
        self.assertEqual(sorted(pids), [0, 1, 2, 3])
        # the operator stops both: the nodes meet at the fabric barrier
        for p in ports:
            op.stop(p)
        for p in ports:
            op.wait_state(p, "ready", T)
        self.start_all(ports, 1)
        second = {rec["rank"]: rec for n in (a0, a1)
                  for rec in wait_records(n, "run", 2, T, restart=1)}
        sent = records(a0, "nccl_sent")
        for rank, rec in second.items():
            self.assertEqual(rec["pid"], pids[rank])
            self.assertEqual(rec["env"].get("NCCL_UNIQUE_ID"), sent[-1]["id"],
                             "rank %d" % rank)
        for n in (a0, a1):
            n.wait_line(r"INFO xnode \d+: every node is at the barrier", 0)
            self.assertFalse(n.matches("process-level restart"))
        self.check_rss((a0, a1))

    def test_operator_stop_of_one_node_times_out_into_a_plr(self):
        timeout = 4
        (a0, a1), ports = self.boot(timeout=timeout)
        for p in ports:
            op.wait_state(p, "ready", T)
        self.start_all(ports, 0)
        for n in (a0, a1):
            wait_records(n, "run", 2, T, restart=0)
        # the fabric is set up at the first barrier both nodes reach
        for p in ports:
            op.stop(p)
        for p in ports:
            op.wait_state(p, "ready", T)
        self.start_all(ports, 1)
        for n in (a0, a1):
            wait_records(n, "run", 2, T, restart=1)
        old = set(ready_pids(a0))
        op.stop(ports[0])  # node 1 is never stopped: it never comes
        m = a0.wait_line(MISSED_RANK_1, T)
        self.assertEqual(int(m.group(1) or m.group(2)), timeout * 1000)
        st = op.wait_state(ports[0], "ready", T)
        self.assertEqual(st["restartMode"], "process_level_restart", st)
        new = set(ready_pids(a0)) - old
        self.assertEqual(len(new), 2, "two new processes on node 0")
        self.assertEqual(op.status(ports[1])["status"], "running")

    def test_operator_peer_that_never_joins_is_named(self):
        (a0, a1), ports = self.boot(timeout=4)
        for p in ports:
            op.wait_state(p, "ready", T)
        self.start_all(ports, 0)
        for n in (a0, a1):
            wait_records(n, "run", 2, T, restart=0)
        op.stop(ports[0])
        a0.wait_line(r"process-level restart: cross-node peer table of epoch "
                     r"\d+ on 127\.0\.0\.1:%d was not complete within the "
                     r"round's 4000 ms \(ranks 1 did not join\)" % ports[0], T)
        st = op.wait_state(ports[0], "ready", T)
        self.assertEqual(st["restartMode"], "process_level_restart", st)


    # -- the operator stops a node while its round waits (issue 13 §4) ----
    def round_waiting(self, ports, nodes):
        """Both nodes run (fault count 0); then node 0 alone is stopped:
        its barrier round waits for node 1, which runs on and never
        comes. Returns once node 0's round is under way."""
        for p in ports:
            op.wait_state(p, "ready", T)
        self.start_all(ports, 0)
        for n in nodes:
            wait_records(n, "run", 2, T, restart=0)
        op.stop(ports[0])
        nodes[0].wait_line(r"INFO xnode \d+: cross-node round, epoch \d+ "
                           r"\(deadline 30000 ms\)", T)

    def assertPrompt(self, what, fn, *args, **kw):
        """A command answered within 1 s while a round waits: no command
        to the agent waits on a fabric round (issue 13, Done when)."""
        t0 = time.monotonic()
        out = fn(*args, **kw)
        took = time.monotonic() - t0
        self.assertLess(took, 1.0, "%s took %.2f s during the round" % (what, took))
        return out

    def test_plr_stop_during_a_waiting_round_restarts_at_once(self):
        (a0, a1), ports = self.boot(timeout=30)
        self.round_waiting(ports, (a0, a1))
        old = set(ready_pids(a0))
        st = self.assertPrompt("GET /status", op.status, ports[0])
        self.assertEqual(st["status"], "stopping", st)
        self.assertPrompt("/update", op.update, ports[0], 0, 2, 0, "127.0.0.1", 29612)
        self.assertPrompt("/stop (ipr)", op.stop, ports[0])  # nothing more
        t0 = time.monotonic()
        self.assertPrompt("/stop (plr)", op.stop, ports[0],
                          restart_mode="process_level_restart")
        a0.wait_line(r"process-level restart: /stop asked for a "
                     r"process-level restart", T)
        took = time.monotonic() - t0
        self.assertLess(took, 5.0, "the round was not abandoned at once")
        a0.wait_line(r"INFO xnode \d+: /stop \(process-level\) during the "
                     r"cross-node round of epoch \d+: the round is abandoned", 0)
        op.wait_state(ports[0], "ready", T)
        self.assertEqual(len(set(ready_pids(a0)) - old), 2, "two new processes")
        self.assertFalse(a0.matches(r"timed out|was not complete within"), a0.tail())
        self.assertEqual(op.status(ports[1])["status"], "running")

    def test_shutdown_during_a_waiting_round_ends_it_at_once(self):
        (a0, a1), ports = self.boot(timeout=30)
        self.round_waiting(ports, (a0, a1))
        t0 = time.monotonic()
        self.assertPrompt("/shutdown", op.shutdown, ports[0])
        a0.wait(T)
        took = time.monotonic() - t0
        self.assertLess(took, 10.0, "the agent waited for its round")
        a0.wait_line(r"INFO ipr \d+: /shutdown: the barrier wait ends here", 0)
        a0.wait_line(r"INFO xnode \d+: epoch \d+: cross-node round cancelled", 0)
        self.assertFalse(a0.matches(r"timed out|was not complete within"), a0.tail())

    def test_stop_during_the_start_round_abandons_it_and_the_next_start_works(self):
        (a0, a1), ports = self.boot(timeout=30)
        for p in ports:
            op.wait_state(p, "ready", T)
        # only node 0 is started: its round before the first run waits for
        # node 1; the operator's /stop undoes the /start at once
        op.start(ports[0], 0, 2, 0, "127.0.0.1", 29611)
        a0.wait_line(r"INFO xnode \d+: cross-node round before the first run, "
                     r"epoch \d+ \(deadline 30000 ms\)", T)
        st = self.assertPrompt("GET /status", op.status, ports[0])
        self.assertEqual(st["status"], "ready", st)
        t0 = time.monotonic()
        self.assertPrompt("/stop", op.stop, ports[0])
        a0.wait_line(r"the round's outcome is no longer needed", T)
        self.assertLess(time.monotonic() - t0, 5.0, "the round was not abandoned at once")
        a0.wait_line(r"before the first run: the round is abandoned, the "
                     r"ranks stay at the barrier", 0)
        st = op.status(ports[0])
        self.assertEqual(st["status"], "ready", st)
        self.assertEqual(st.get("priority"), "True", st)
        self.assertEqual(records(a0, "run"), [], "released after the /stop")
        # the next /start of both: one round, every rank runs with one id
        self.start_all(ports, 1)
        runs = {rec["rank"]: rec for n in (a0, a1)
                for rec in wait_records(n, "run", 2, T, restart=1)}
        self.assertEqual(sorted(runs), [0, 1, 2, 3])
        for n in (a0, a1):
            n.wait_line(r"INFO xnode \d+: every node is at the barrier, epoch "
                        r"\d+", 0)
            self.assertFalse(n.matches("process-level restart"), n.tail())

    def test_peer_stopped_mid_round_fails_the_others_at_once(self):
        # three nodes, the fabric set up at fault count 1; then nodes 0 and
        # 1 are stopped and wait for node 2 (still running); node 1 is
        # then restarted process-level: it gives up the round and tells
        # its peers, so when node 2 comes (table complete: node 1 joined
        # before) nodes 0 and 2 fail at once instead of waiting 30 s for
        # node 1 at the barrier
        nodes, ports = self.boot(timeout=30, nnodes=3)
        for p in ports:
            op.wait_state(p, "ready", T)
        self.start_all(ports, 0)
        for n in nodes:
            wait_records(n, "run", 2, T, restart=0)
        for p in ports:
            op.stop(p)
        for p in ports:
            op.wait_state(p, "ready", T)
        self.start_all(ports, 1)
        for n in nodes:
            wait_records(n, "run", 2, T, restart=1)
        op.stop(ports[0])
        op.stop(ports[1])
        for n in nodes[:2]:
            n.wait_line(r"INFO xnode \d+: cross-node round, epoch 6 \(deadline "
                        r"30000 ms\)", T)
        # rank 1 is in epoch 6's table before it gives up
        nodes[1].wait_line(r"INFO xnode \d+: epoch 6: joined the peer table", T)
        op.stop(ports[1], restart_mode="process_level_restart")
        nodes[1].wait_line(r"process-level restart: /stop asked for a "
                           r"process-level restart", T)
        t0 = time.monotonic()
        op.stop(ports[2])
        for n in (nodes[0], nodes[2]):
            m = n.wait_line(r"process-level restart: cross-node barrier failed: "
                            r"barrier epoch 6 aborted by rank 1: rank 1 abandoned "
                            r"epoch 6", T)
        self.assertLess(time.monotonic() - t0, 10.0, "a peer waited for rank 1")
        for n in nodes:
            self.assertFalse(n.matches(r"epoch 6 timed out"), n.tail())

if __name__ == "__main__":
    if not have_tcp_provider():
        print("no libfabric tcp provider (fi_info -p tcp)", file=sys.stderr)
        sys.exit(harness.SKIP)
    harness.main()
