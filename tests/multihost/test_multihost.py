"""Multi-host end to end (issue 13 §8): three hosts made of network
namespaces (testbed.py: one per host, a private 10.13.0.0/24 on a bridge in
a hub namespace, nothing in the root namespace), each running a real
hyperpodrun as PID 1 of its own pid namespace, the way a pod runs it, with
one real torch gloo worker (mh_gloo.py). An operator emulator of ours
speaks from the hub, as the HyperPod operator does: it polls /status until
every agent is READY, POSTs /start (rank, nnodes, rankIps, faultCount), on
a fault /stop to every agent, waits for READY, /start with faultCount + 1,
and /shutdown once all completed.

Scenarios:
  * happy path: one run on 3 hosts, world 3, every agent COMPLETED;
  * a worker crash (exit 3): process-level restart of every host, the
    next run in new processes;
  * an in-process restart across hosts: the same processes run again,
    cross-node barrier met on the fabric;
  * an agent SIGKILLed (its pid namespace goes with it) and started again
    on the same host: the job recovers, then two more in-process restarts
    stay in process (the others re-learn its new fabric address);
  * the link down while the fabric sets up (the endpoint opens with eth0
    down): a process-level fallback within --inprocess-timeout, and once
    the link is back the next fault is an in-process restart again (the
    endpoint is bound to the host's own address, never loopback);
  * a partition mid-barrier (host 2's fabric traffic dropped while HTTP
    works): a process-level fallback within the timeout; healed, the next
    rounds use fresh connections and stay in process;
  * (in the happy path) one NCCL unique id for every rank from run 0.

Exit 77 without root, network namespaces, torch or a libfabric tcp
provider. Every wait has a deadline and is on a line or a /status state.
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import harness  # noqa: E402
import hp_operator as op  # noqa: E402
import testbed  # noqa: E402
from ipr_common import have_tcp_provider  # noqa: E402

WORKER = os.path.join(HERE, "mh_gloo.py")
PORT = 8080
NHOSTS = 3
T = 120.0  # generous: the test machine is small and shared
IPR_TIMEOUT = 20
RUN = r"^mh run rank (\d+) world (\d+) restart (\d+) pid (\d+) sum (\d+)$"
# Numbers for the benchmark table, printed as one line per scenario.
BENCH = os.environ.get("HP_MULTIHOST_BENCH")


class Cluster(harness.ProcessTest):
    survivor_timeout = 15.0

    def setUp(self):
        super().setUp()
        self.bed = testbed.Testbed(NHOSTS)
        self.addCleanup(self.check_removed)
        self.addCleanup(self.bed.remove)
        self.runs_of = {}
        self.fault_count = 0
        self.env_extra = {}

    def check_removed(self):
        left = self.bed.leftovers()
        self.assertEqual(left, [], "namespaces left behind")

    # -- hosts ----------------------------------------------------------
    def boot(self, i, label=None):
        rc = os.path.join(self.tmp, "rc%d" % i)
        tmp = os.path.join(self.tmp, "tmp%d" % i)
        os.makedirs(tmp, exist_ok=True)
        env = harness.base_env(PYTHON=harness.SYSTEM_PYTHON, TMPDIR=tmp,
                               HP_SOURCE_DIR=harness.source_dir(),
                               HYPERPOD_RESOURCE_CONFIG_DIR=rc,
                               FI_PROVIDER="tcp", GLOO_SOCKET_IFNAME="eth0",
                               **self.env_extra)
        argv = self.bed.wrap(i, [
            harness.hyperpodrun(), "--server-host", "0.0.0.0",
            "--server-port", str(PORT), "--rdzv-backend=hyperpod",
            "--nnodes=%d" % NHOSTS, "--nproc-per-node", "1",
            "--inprocess-restart", "--inprocess-timeout", str(IPR_TIMEOUT),
            WORKER])
        r = self.run_cmd(argv, env=env, label=label or "host%d" % i)
        self.runs_of[i] = r
        r.wait_line(r"operator API listening on http://0\.0\.0\.0:%d$" % PORT, T)
        return r

    def boot_all(self, **env):
        self.env_extra = env
        for i in range(NHOSTS):
            self.boot(i)
        self.addCleanup(self.shutdown_all)

    def shutdown_all(self):
        for i, r in self.runs_of.items():
            if r.running():
                try:
                    self.call(i, "POST", "/shutdown")
                except (OSError, op.OperatorError):
                    pass
        for r in self.runs_of.values():
            if r.running():
                try:
                    r.wait(30)
                except AssertionError:
                    r.kill()

    # -- the operator emulator ------------------------------------------
    def call(self, i, method, path, body=None, timeout=5.0):
        with self.bed.in_hub():
            r = op.request(PORT, method, path, body, host=self.bed.host_ip(i),
                           timeout=timeout)
        if not 200 <= r.code < 300:
            raise op.OperatorError(method, path, r.code, r.body)
        return r

    def status(self, i):
        """/status of host i, or None when it does not answer."""
        try:
            return self.call(i, "GET", "/status", timeout=2.0).json()
        except OSError:
            return None

    def wait_all(self, states, timeout=T):
        states = (states,) if isinstance(states, str) else states
        deadline = time.monotonic() + timeout
        while True:
            sts = [self.status(i) for i in range(NHOSTS)]
            if all(s and s["status"] in states for s in sts):
                return sts
            if time.monotonic() >= deadline:
                raise AssertionError("not all %s within %gs: %s" % (
                    states, timeout, [s and s["status"] for s in sts]))
            time.sleep(op.POLL_INTERVAL)  # a poll interval, as the operator's

    def start_all(self):
        ips = [{"rank": i, "ip": self.bed.host_ip(i)} for i in range(NHOSTS)]
        for i in range(NHOSTS):
            self.call(i, "POST", "/start", {
                "rank": i, "nnodes": NHOSTS, "faultCount": self.fault_count,
                "master_addr": self.bed.host_ip(0),
                "master_port": 29500 + self.fault_count,
                "rankIps": ips, "ipVersion": "v%d" % self.fault_count})

    def wait_fault(self, timeout=T):
        """Polls until an agent is FAULTED or gone; returns when."""
        deadline = time.monotonic() + timeout
        while True:
            sts = [self.status(i) for i in range(NHOSTS)]
            if any(s is None or s["status"] == "faulted" for s in sts):
                return time.monotonic(), sts
            if time.monotonic() >= deadline:
                raise AssertionError("no fault within %gs: %s"
                                     % (timeout, [s and s["status"] for s in sts]))
            time.sleep(op.POLL_INTERVAL)

    def stop_all(self, body=None):
        """/stop to every agent that runs, faulted or completed, side by
        side (the operator does not wait for one agent before the next)."""
        todo = [i for i in range(NHOSTS)
                if (self.status(i) or {}).get("status") in
                ("running", "faulted", "completed")]
        errors = []

        def one(i):
            try:
                self.call(i, "POST", "/stop", body or {})
            except (OSError, op.OperatorError) as e:
                errors.append((i, e))
        threads = [threading.Thread(target=one, args=(i,)) for i in todo]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [], "/stop failed")

    def recover(self, stop=None):
        """/stop to every agent that runs or faulted, READY everywhere,
        /start with faultCount + 1. Returns the seconds from the call to
        every agent RUNNING."""
        t0 = time.monotonic()
        self.stop_all(stop)
        self.wait_all("ready")
        self.fault_count += 1
        self.start_all()
        # a run may fault again at once: that is past /start as well
        self.wait_all(("running", "completed", "faulted"))
        return time.monotonic() - t0

    def then_in_process_again(self, run):
        """After a process-level fallback: the next /start (faultCount + 1)
        gives run `run`; its one fault must be restarted in process (the
        same worker pids in run + 1, no new process-level restart line),
        then the job completes."""
        self.wait_all("ready")
        self.fault_count += 1
        self.start_all()
        first = self.worker_runs(run)
        self.assert_run(first, run)
        plr_before = [len(self.plr_lines(i)) for i in range(NHOSTS)]
        self.wait_fault()
        self.recover()
        second = self.worker_runs(run + 1)
        self.assert_run(second, run + 1)
        for rank in range(NHOSTS):
            self.assertEqual(second[rank][1], first[rank][1],
                             "rank %d: restart %d not in process"
                             % (rank, run + 1))
        self.finish()
        for i in range(NHOSTS):
            self.assertEqual(len(self.plr_lines(i)), plr_before[i],
                             self.runs_of[i].tail(60))

    def finish(self):
        self.wait_all("completed")
        for i in range(NHOSTS):  # for the benchmark table (issue 13 §7)
            pid = self.bed.pid1(i)
            try:
                with open("/proc/%d/status" % pid) as f:
                    kb = dict(l.split()[:2] for l in f
                              if l.startswith(("VmRSS:", "VmHWM:")))
                self.bench("host %d agent RSS, fabric loaded (MB)" % i,
                           int(kb["VmRSS:"]) / 1024.0)
                self.bench("host %d agent peak RSS (VmHWM), fabric loaded (MB)"
                           % i, int(kb["VmHWM:"]) / 1024.0)
            except (OSError, TypeError, KeyError, ValueError):
                pass
        for i in range(NHOSTS):
            self.call(i, "POST", "/shutdown")
        for i, r in self.runs_of.items():
            self.assertExit(r, 0, timeout=T)

    # -- what the workers said ------------------------------------------
    def worker_runs(self, restart, hosts=None, count=1, timeout=T):
        """{rank: (world, pid, sum)} of every host's run at `restart`."""
        out = {}
        for i in (range(NHOSTS) if hosts is None else hosts):
            ms = self.runs_of[i].wait_lines(RUN.replace(r"restart (\d+)",
                                                        "restart (%d)" % restart),
                                            count, timeout, "out")
            for m in ms[-1:]:
                out[int(m.group(1))] = (int(m.group(2)), int(m.group(4)),
                                        int(m.group(5)))
        return out

    def assert_run(self, got, restart):
        self.assertEqual(sorted(got), list(range(NHOSTS)), got)
        want = sum((r + 1) * (restart + 1) for r in range(NHOSTS))
        for rank, (world, _pid, total) in got.items():
            self.assertEqual(world, NHOSTS)
            self.assertEqual(total, want, "rank %d's all_reduce" % rank)

    def plr_lines(self, i):
        return self.runs_of[i].matches(r"process-level restart")

    def bench(self, what, seconds):
        line = "multihost %s: %.3f" % (what, seconds)
        print(line, file=sys.stderr, flush=True)
        if BENCH:
            with open(BENCH, "a") as f:
                f.write(line + "\n")

    # ------------------------------------------------------------------
    def test_happy_path(self):
        # and one NCCL id from run 0: before the first /start every host's
        # local rank 0 has RANK 0 and sends an id; group rank 0's reaches
        # every rank of every host (issue 13 §3)
        self.boot_all(MH_NCCL="1", MH_FAIL="0:2")
        self.wait_all("ready")
        self.start_all()
        self.assert_run(self.worker_runs(0), 0)
        for run in (0, 1):
            if run == 1:
                self.wait_fault()
                self.recover()
                self.assert_run(self.worker_runs(1), 1)
            ids = {}
            for i in range(NHOSTS):
                m = self.runs_of[i].wait_line(
                    r"^mh nccl rank (\d+) restart %d id (\S+)$" % run, T, "out")
                ids[int(m.group(1))] = m.group(2)
            self.assertEqual(len(set(ids.values())), 1, "one id per job: %s" % ids)
            sent = [m.group(1) for m in self.runs_of[0].matches(
                r"^mh nccl sent ([0-9a-f]{256})$", "out")]
            self.assertIn(ids[0], sent, "rank 0's own id")
        self.finish()
        for i in range(NHOSTS):
            self.assertFalse(self.plr_lines(i))

    def test_worker_crash(self):
        self.boot_all(MH_CRASH="0:2")
        self.wait_all("ready")
        self.start_all()
        first = self.worker_runs(0)
        self.assert_run(first, 0)
        t_fault, _ = self.wait_fault()
        took = self.recover()
        self.bench("worker crash, fault seen -> all hosts running (PLR, s)",
                   time.monotonic() - t_fault)
        second = self.worker_runs(1)
        self.assert_run(second, 1)
        self.assertNotEqual(second[2][1], first[2][1], "a new process")
        self.finish()
        self.assertLess(took, T)

    def test_inprocess_restart_across_hosts(self):
        self.boot_all(MH_FAIL="0:1")
        self.wait_all("ready")
        self.start_all()
        first = self.worker_runs(0)
        self.assert_run(first, 0)
        t_fault, _ = self.wait_fault()
        self.recover()
        second = self.worker_runs(1)
        self.bench("fault seen -> every host's next run (IPR, s)",
                   time.monotonic() - t_fault)
        self.assert_run(second, 1)
        for rank in range(NHOSTS):
            self.assertEqual(second[rank][1], first[rank][1],
                             "rank %d changed process" % rank)
        self.finish()
        for i in range(NHOSTS):
            self.assertFalse(self.plr_lines(i), self.runs_of[i].tail())
            self.runs_of[i].wait_line(r"every node is at the barrier", 0)

    def test_agent_killed_then_inprocess_twice(self):
        # run 0: rank 1 fails, an in-process restart (every agent learns
        # the others' fabric addresses); run 1 holds while host 1's agent
        # is SIGKILLed and comes back with a new endpoint; runs 2 and 3
        # fail in one rank each: both must stay in process
        self.boot_all(MH_FAIL="0:1,2:2,3:0", MH_HOLD="1")
        self.wait_all("ready")
        self.start_all()
        self.assert_run(self.worker_runs(0), 0)
        self.wait_fault()
        self.recover()
        self.assert_run(self.worker_runs(1), 1)
        pid1 = self.bed.pid1(1)
        self.assertIsNotNone(pid1)
        os.kill(pid1, signal.SIGKILL)
        self.assertExit(self.runs_of[1], (137, 1), timeout=T)
        self.wait_fault()
        self.boot(1, label="host1-again")
        self.wait_all(("ready", "running", "faulted"))
        # the others' barrier round fails at once: host 1 is READY, it
        # had nothing to stop and will not come (issue 13 §4)
        took = self.recover()
        self.assertLess(took, IPR_TIMEOUT, "waited for the round's deadline")
        for i in (0, 2):
            self.runs_of[i].wait_line(r"rank 1 will not come \(its agent "
                                      r"is ready\)", 0)
        two = self.worker_runs(2)
        self.assert_run(two, 2)
        plr_before = [len(self.plr_lines(i)) for i in range(NHOSTS)]
        t_fault, _ = self.wait_fault()
        self.recover()
        three = self.worker_runs(3)
        self.bench("after an agent came back: fault seen -> next run (IPR, s)",
                   time.monotonic() - t_fault)
        self.assert_run(three, 3)
        self.wait_fault()
        self.recover()
        four = self.worker_runs(4)
        self.assert_run(four, 4)
        for rank in range(NHOSTS):
            self.assertEqual(three[rank][1], two[rank][1],
                             "rank %d: restart 3 not in process" % rank)
            self.assertEqual(four[rank][1], two[rank][1],
                             "rank %d: restart 4 not in process" % rank)
        self.finish()
        for i in range(NHOSTS):
            self.assertEqual(len(self.plr_lines(i)), plr_before[i],
                             self.runs_of[i].tail(60))

    def test_link_down_during_setup(self):
        # run 0: rank 1 fails; on the fault notice host 2's worker takes
        # eth0 down, so host 2 opens its fabric endpoint with the link
        # down. run 1: rank 0 fails, with every link up: in process.
        go = os.path.join(self.tmp, "linkdown-go")
        self.boot_all(MH_FAIL="0:1,1:0", MH_LINKDOWN="0:2", MH_LINKDOWN_GO=go)
        self.wait_all("ready")
        self.start_all()
        self.assert_run(self.worker_runs(0), 0)
        t_fault, _ = self.wait_fault()
        self.stop_all()  # answered before host 2's link goes down
        open(go, "w").close()
        h2 = self.runs_of[2]
        h2.wait_line(r"^mh rank 2 took eth0 down$", T, "out")
        h2.wait_line(r"process-level restart: cross-node peer table", T)
        self.assertLess(time.monotonic() - t_fault, IPR_TIMEOUT + 30)
        self.bed.link(2, True)
        self.then_in_process_again(1)
        self.assertFalse(h2.matches(r"provider tcp.* on 127\."), h2.tail())


    def test_fabric_partition_mid_barrier_then_healed(self):
        # run 0: rank 1 fails, an in-process restart (connections up).
        # run 1: host 2's TCP but the operator API is dropped, then rank 0
        # fails: the round's barrier cannot complete, a process-level
        # fallback within --inprocess-timeout. Healed: the next /start's
        # round and run 2's in-process restart work over connections made
        # afresh, not the stale ones.
        if not have_iptables():
            self.skipTest("no iptables")
        self.boot_all(MH_FAIL="0:1,1:0,2:2")
        self.wait_all("ready")
        self.start_all()
        self.assert_run(self.worker_runs(0), 0)
        self.wait_fault()
        self.recover()
        self.assert_run(self.worker_runs(1), 1)
        self.bed.partition(2, True, PORT)
        healed = False
        try:
            t_fault, _ = self.wait_fault()
            self.stop_all()
            for i in range(NHOSTS):
                self.runs_of[i].wait_line(
                    r"process-level restart: cross-node", T)
            self.assertLess(time.monotonic() - t_fault, IPR_TIMEOUT + 15)
            self.bed.partition(2, False, PORT)
            healed = True
        finally:
            if not healed:
                self.bed.partition(2, False, PORT)
        self.then_in_process_again(2)
        for i in range(NHOSTS):
            self.assertFalse(self.runs_of[i].matches(
                r"the first run starts without"), self.runs_of[i].tail(60))


def have_iptables():
    return subprocess.run(["sh", "-c", "command -v iptables"],
                          stdout=subprocess.DEVNULL).returncode == 0


def main():
    why = testbed.why_not_available()
    if why is None and not harness.have_torch():
        why = "no torch in %s" % harness.SYSTEM_PYTHON
    if why is None and not have_tcp_provider():
        why = "libfabric has no tcp provider here"
    if why:
        print("SKIP: " + why, file=sys.stderr)
        sys.exit(harness.SKIP)
    harness.main()


if __name__ == "__main__":
    main()
