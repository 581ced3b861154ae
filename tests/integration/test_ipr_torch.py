"""In-process restart of a real PyTorch job (issue 4 §Tests): two workers of
Debian's python3-torch (1.13) under hyperpodrun --nnodes=1
--inprocess-restart run a gloo all_reduce (tests/integration/ipr_gloo.py);
rank 1 fails after it, the agent tells rank 0, both destroy their process
group and come back to the barrier, and the same two processes build a new
group for restart 1 (a PrefixStore per restart over one TCPStore) and
all_reduce again. Exits 77 when `import torch` fails."""
import os
import re
import unittest

import harness
from ipr_common import probe_env

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = r"^gloo run rank (\d) world (\d) restart (\d) pid (\d+) sum (\d+)$"


class TorchIPR(harness.ProcessTest):
    survivor_timeout = 10.0

    def setUp(self):
        if not harness.have_torch():
            raise unittest.SkipTest("/usr/bin/python3 -c 'import torch' fails")
        super().setUp()

    def test_gloo_job_survives_an_in_process_fault(self):
        port = harness.free_port()
        r = self.agent(["--nnodes=1", "--nproc-per-node", "2", "--master-port", str(port),
                        "--inprocess-restart", "--inprocess-timeout", "120",
                        "--max-restarts", "0", os.path.join(HERE, "ipr_gloo.py")],
                       env=probe_env(self.tmp))
        self.assertExit(r, 0, timeout=400)
        runs = [tuple(int(x) for x in m.groups()) for m in r.matches(RUN, "out")]
        # run 0: sum of (rank + 1) = 3; run 1: sum of 2 * (rank + 1) = 6
        self.assertEqual(sorted((rk, w, c, s) for rk, w, c, _, s in runs),
                         [(0, 2, 0, 3), (0, 2, 1, 6), (1, 2, 0, 3), (1, 2, 1, 6)], r.tail())
        pid = {}
        for rk, _, c, p, _ in runs:
            self.assertEqual(pid.setdefault(rk, p), p,
                             "rank %d ran restart %d in another process" % (rk, c))
        self.assertNotEqual(pid[0], pid[1])
        notified = sorted(int(m.group(1)) for m in
                          r.matches(r"^gloo notified pid (\d+) restart_count 1$", "out"))
        self.assertEqual(notified, sorted(pid.values()))
        done = sorted(int(m.group(1)) for m in r.matches(r"^gloo done pid (\d+)$", "out"))
        self.assertEqual(done, sorted(pid.values()))
        self.assertEqual(len(r.matches(r"started 2 workers")), 1)
        r.wait_line(r"RUNNING -> FAULTED reason=RuntimeError "
                    r"message=injected gloo fault in rank 1$", 0)
        self.assertFalse(r.matches("process-level restart"))
        self.assertFalse(r.matches(re.escape("never heard of the fault")))


if __name__ == "__main__":
    harness.main()
