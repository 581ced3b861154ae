"""hyperpodrun as PID 1 of a pid namespace (`unshare --pid --fork
--mount-proc`, as in a container; issue 2 §6): orphans that a worker leaves
behind are re-parented to it and reaped, and a SIGTERM still ends it with
143 although the kernel drops a signal PID 1 raises at itself. Exits 77
when unshare is not permitted. The non-PID-1 case (subreaper) is in
test_signals.py."""

import os
import signal
import unittest

import harness

class Pid1(harness.ProcessTest):
    def setUp(self):
        self.unshare = harness.unshare_pid_argv()
        if not self.unshare:
            raise unittest.SkipTest("unshare --pid --fork --mount-proc is not permitted here")
        super().setUp()

    def agent_pid(self, run):
        # The agent's pid outside the namespace: the descendant of unshare
        # that runs hyperpodrun.
        m = run.wait_line(r"ready pid|orphan pid", timeout=15)
        for pid in harness.descendants(run.pid):
            if harness.proc_cmdline(pid).startswith(harness.hyperpodrun()):
                ns = harness.proc_status_field(pid, "NSpid")
                if ns and ns.split()[-1] == "1":
                    return pid
        self.fail("no hyperpodrun with pid 1 in its namespace under unshare")

    def test_orphans_reaped_as_pid1(self):
        # Pids printed inside the namespace mean nothing outside it.
        r = self.agent(["--nproc-per-node", "2", "--no-python", harness.helper("orphan-maker")],
                       wrapper=self.unshare, track_pids=False)
        ppids = [m.group(1) for m in r.wait_lines(r"orphan ppid (-?\d+)", 2, timeout=15)]
        self.assertEqual(ppids, ["1", "1"], "orphans go to PID 1 inside the namespace")
        self.assertExit(r, 0, timeout=30)
        self.assertEqual(len(r.matches(r"^orphan reaped$", "out")), 2,
                         "hyperpodrun as PID 1 did not reap the orphans")

    def test_sigterm_as_pid1(self):
        env = harness.base_env(HP_SIGNAL_LIMIT=1)
        r = self.agent(["--nproc-per-node", "2", "--shutdown-signal", "SIGTERM",
                        "--shutdown-timeout", "30", "--no-python",
                        harness.helper("print-signals")],
                       env=env, wrapper=self.unshare, track_pids=False)
        r.wait_lines(r"ready pid", 2, timeout=15)
        os_pid = self.agent_pid(r)
        os.kill(os_pid, signal.SIGTERM)
        self.assertExit(r, 143, timeout=20)
        self.assertEqual(len(r.matches(r"signal 15 rank")), 2)


if __name__ == "__main__":
    harness.main()
