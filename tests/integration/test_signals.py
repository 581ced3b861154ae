"""Signals (issue 2 §3, §6; STYLE.md rules 3 and 12): SIGTERM/SIGINT/
SIGHUP/SIGQUIT to the agent stop every worker and the agent exits
128+signo; --shutdown-signal SIGTERM escalates to SIGKILL after
--shutdown-timeout; a SIGKILLed agent leaves nothing behind
(PR_SET_PDEATHSIG); every worker has its own process group and starts with
an empty signal mask and no ignored signals whatever the agent inherited."""

import os
import signal
import threading
import time

import harness


def pgid(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    return int(data[data.rfind(")") + 2:].split()[2])


class Forwarding(harness.ProcessTest):
    def ready_pids(self, run, n, timeout=15):
        return [int(m.group(1)) for m in run.wait_lines(r"ready pid (\d+)", n, timeout)]

    def test_sigterm_with_sigterm_shutdown_signal(self):
        env = harness.base_env(HP_SIGNAL_LIMIT=1)
        r = self.agent(["--nproc-per-node", "4", "--shutdown-signal", "SIGTERM",
                        "--shutdown-timeout", "30", "--no-python",
                        harness.helper("print-signals")], env=env)
        pids = self.ready_pids(r, 4)
        # Each worker leads its own process group, apart from the agent's.
        for p in pids:
            self.assertEqual(pgid(p), p, f"worker {p} is not a process-group leader")
        self.assertNotIn(pgid(r.pid), pids)
        t0 = time.monotonic()
        r.signal(signal.SIGTERM)
        self.assertExit(r, 143, timeout=20)
        self.assertLess(time.monotonic() - t0, 10,
                        "workers exited at once on SIGTERM; the agent must not wait "
                        "for --shutdown-timeout")
        got = sorted(m.group(1) for m in r.matches(r"signal 15 rank (\d+)"))
        self.assertEqual(got, ["0", "1", "2", "3"], "every worker got SIGTERM")

    def test_sigterm_with_default_shutdown_signal(self):
        # Issue 2 §6: a signal to the agent is forwarded to the workers and
        # escalated to SIGKILL after --shutdown-timeout, whatever
        # --shutdown-signal (default SIGKILL) says for failure stops.
        # print-signals takes every catchable signal, so only SIGKILL
        # ends it: the agent must escalate within the timeout.
        r = self.agent(["--nproc-per-node", "4", "--shutdown-timeout", "2", "--no-python",
                        harness.helper("print-signals")])
        pids = self.ready_pids(r, 4)
        t0 = time.monotonic()
        r.signal(signal.SIGTERM)
        self.assertExit(r, 143, timeout=30)
        self.assertLess(time.monotonic() - t0, 2 + 5, "no SIGKILL after --shutdown-timeout=2")
        for p in pids:
            self.assertFalse(harness.alive(p), f"worker {p} survived")

    def test_other_signals_exit_128_plus_signo(self):
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
            with self.subTest(sig=sig.name):
                env = harness.base_env(HP_SIGNAL_LIMIT=1)
                r = self.agent(["--nproc-per-node", "2", "--shutdown-signal", "SIGTERM",
                                "--shutdown-timeout", "30", "--no-python",
                                harness.helper("print-signals")], env=env)
                pids = self.ready_pids(r, 2)
                r.signal(sig)
                self.assertExit(r, 128 + sig, timeout=20)
                self.assertEqual(len(r.matches(r"signal \d+ rank")), 2,
                                 f"both workers were signalled on {sig.name}")
                for p in pids:
                    self.assertFalse(harness.alive(p))

    def test_stubborn_worker_sigkilled_after_timeout(self):
        r = self.agent(["--nproc-per-node", "2", "--shutdown-signal", "SIGTERM",
                        "--shutdown-timeout", "1", "--no-python", harness.helper("stubborn")])
        pids = self.ready_pids(r, 2)
        t0 = time.monotonic()
        r.signal(signal.SIGTERM)
        self.assertExit(r, 143, timeout=20)
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, 0.9, "the agent did not give SIGTERM its grace period")
        self.assertLess(took, 8, "SIGKILL did not follow --shutdown-timeout=1")
        for p in pids:
            self.assertFalse(harness.alive(p), f"stubborn worker {p} survived")

    def test_stubborn_worker_on_group_failure(self):
        # Rank 0 is stubborn; rank 1 fails once the test writes to a FIFO
        # (after rank 0 is ready). The group stop sends SIGTERM, waits
        # --shutdown-timeout=1, then SIGKILLs rank 0; no restarts left -> 1.
        fifo = os.path.join(self.tmp, "go")
        os.mkfifo(fifo)
        script = (f'if [ "$LOCAL_RANK" = 0 ]; then exec {harness.helper("stubborn")}; fi\n'
                  f'read line < {fifo}\nexit 3\n')
        r = self.agent(["--nproc-per-node", "2", "--shutdown-signal", "SIGTERM",
                        "--shutdown-timeout", "1", "--no-python", "/bin/sh", "-c", script])
        pid = self.ready_pids(r, 1)[0]
        opened = threading.Event()

        def trigger():
            with open(fifo, "w") as f:
                f.write("go\n")
            opened.set()
        threading.Thread(target=trigger, daemon=True).start()
        self.assertTrue(opened.wait(15), "rank 1 never opened the FIFO")
        t0 = time.monotonic()
        self.assertExit(r, 1, timeout=20)
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, 0.9, "stubborn rank 0 was not given SIGTERM first")
        self.assertLess(took, 8)
        self.assertFalse(harness.alive(pid))
        self.assertRegex(r.text(), r"exitcode\s*:\s*3\b")

    def test_repeated_sigterm(self):
        # A second SIGTERM during the grace period neither crashes the agent
        # nor skips the escalation.
        r = self.agent(["--nproc-per-node", "2", "--shutdown-signal", "SIGTERM",
                        "--shutdown-timeout", "1", "--no-python", harness.helper("stubborn")])
        pids = self.ready_pids(r, 2)
        r.signal(signal.SIGTERM)
        # The second one usually lands in the grace period (the two may
        # also merge while pending; either way the agent must cope).
        r.signal(signal.SIGTERM)
        self.assertExit(r, 143, timeout=20)
        for p in pids:
            self.assertFalse(harness.alive(p))

    def test_sigterm_during_pre_train(self):
        # The pre-train script is a child like any worker: a signal while it
        # runs stops it (SIGKILL after the timeout; print-signals takes
        # SIGTERM) and the agent exits 143 without starting the workers.
        fifo = os.path.join(self.tmp, "pre-ready")
        os.mkfifo(fifo)
        pre = os.path.join(self.tmp, "pre.sh")
        with open(pre, "w") as f:
            f.write(f"#!/bin/sh\necho $$ > {fifo}\nexec {harness.helper('print-signals')}\n")
        os.chmod(pre, 0o755)
        r = self.agent(["--nproc-per-node", "2", "--shutdown-timeout", "1",
                        "--pre-train-script", pre, "--no-python",
                        harness.helper("exit-with"), "0"])
        got = []
        t = threading.Thread(target=lambda: got.append(open(fifo).read().strip()), daemon=True)
        t.start()
        t.join(15)
        self.assertTrue(got, "the pre-train script never started")
        pre_pid = int(got[0])
        harness.TRACKER.track(pre_pid, "pre-train script")
        r.signal(signal.SIGTERM)
        self.assertExit(r, 143, timeout=20)
        self.assertFalse(harness.alive(pre_pid), "the pre-train script survived")
        self.assertEqual(r.matches(r"exit-with rank"), [], "workers started after SIGTERM")

    def test_agent_sigkill_leaves_no_worker(self):
        r = self.agent(["--nproc-per-node", "4", "--no-python", harness.helper("stubborn")])
        pids = self.ready_pids(r, 4)
        r.signal(signal.SIGKILL)
        self.assertEqual(r.wait(10), 128 + signal.SIGKILL)
        left = harness.TRACKER.survivors(5)
        self.assertEqual(left, {}, "workers outlived a SIGKILLed agent (PR_SET_PDEATHSIG)")
        for p in pids:
            self.assertFalse(harness.alive(p))

    def test_group_stop_takes_grandchildren(self):
        # orphan-maker linger: the grandchild stays in the worker's process
        # group after its parent exits; stopping the group must kill it.
        r = self.agent(["--nproc-per-node", "2", "--no-python",
                        harness.helper("orphan-maker"), "linger"])
        orphans = [int(m.group(1)) for m in r.wait_lines(r"orphan pid (\d+)", 2)]
        r.wait_lines(r"orphan ppid", 2)
        r.signal(signal.SIGTERM)
        self.assertExit(r, 143, timeout=20)
        left = harness.TRACKER.survivors(5)
        self.assertEqual({p for p in left if p in orphans}, set(),
                         "a grandchild in the worker's process group survived")


class SignalMask(harness.ProcessTest):
    ZERO = "0000000000000000"

    def test_baseline_trick_works(self):
        # Without an agent in between the sets are inherited, so the check
        # below can fail.
        r = self.run_cmd([harness.helper("ignore-and-exec"), harness.helper("sigmask")])
        self.assertExit(r, 0)
        m = r.wait_line(r"SigBlk=(\w+) SigIgn=(\w+)")
        self.assertNotEqual(m.group(1), self.ZERO)
        self.assertNotEqual(m.group(2), self.ZERO)

    def test_workers_start_with_clean_mask(self):
        r = self.agent(["--nproc-per-node", "2", "--no-python", harness.helper("sigmask")],
                       wrapper=[harness.helper("ignore-and-exec")])
        self.assertExit(r, 0, timeout=30)
        got = r.matches(r"sigmask rank (\d+) SigBlk=(\w+) SigIgn=(\w+)")
        self.assertEqual(sorted(m.group(1) for m in got), ["0", "1"])
        for m in got:
            self.assertEqual(m.group(2), self.ZERO, f"rank {m.group(1)} starts with signals blocked")
            self.assertEqual(m.group(3), self.ZERO, f"rank {m.group(1)} starts with signals ignored")


class Reaping(harness.ProcessTest):
    def test_orphans_reaped_as_subreaper(self):
        r = self.agent(["--nproc-per-node", "2", "--no-python", harness.helper("orphan-maker")])
        ppids = [int(m.group(1)) for m in r.wait_lines(r"orphan ppid (-?\d+)", 2, timeout=15)]
        self.assertEqual(ppids, [r.pid, r.pid],
                         "orphans must be re-parented to the agent (PR_SET_CHILD_SUBREAPER)")
        self.assertExit(r, 0, timeout=30)
        self.assertEqual(len(r.matches(r"^orphan reaped$", "out")), 2,
                         "the agent did not reap its orphans")


if __name__ == "__main__":
    harness.main()
