"""Drop-in parity with Debian's torchrun (PyTorch 1.13): the same job under
both launchers gives every worker the same torchrun variables with the same
values, the same "[default<i>]:" console prefix, and the same exit code and
root-cause fields on failure. Exits 77 without /usr/bin/torchrun + torch.

Debian's torchrun 1.13 on Python 3.11 crashes unless -r and -t are 1 or 2
(its Std IntFlag loses 0 and 3 when iterated), so both runs use -r 1 -t 1."""

import os
import re
import unittest

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
PRINT_ENV = os.path.join(HERE, "print_env.py")
PREFIX = r"^\[default(\d+)\]:"

# Values that legitimately differ: per-run paths, and
# TORCHELASTIC_USE_AGENT_STORE, which torchrun sets to "True" only because
# its agent hosts a TCPStore on MASTER_PORT; hyperpodrun hosts none, so it
# must say "False" and let rank 0 host the store (test_torch_gloo checks
# that this works).
DIFFERENT_PER_RUN = {"TORCHELASTIC_ERROR_FILE", "_", "TORCHELASTIC_USE_AGENT_STORE"}
# Variables hyperpodrun adds (issue 2: JOB_RESTART_COUNT and the newer
# TORCH_NCCL_ASYNC_ERROR_HANDLING spelling).
HYPERPODRUN_EXTRAS = {"JOB_RESTART_COUNT", "TORCH_NCCL_ASYNC_ERROR_HANDLING"}


def by_rank(run):
    out = {}
    for line in run.output("out"):
        m = re.match(PREFIX, line)
        if m:
            env = harness.parse_json_lines([line[m.end():]])
            if env:
                out[int(m.group(1))] = env[0]
    return out


class TorchrunParity(harness.ProcessTest):
    def setUp(self):
        if not os.access(harness.TORCHRUN, os.X_OK) or not harness.have_torch():
            raise unittest.SkipTest("no /usr/bin/torchrun with a working torch")
        super().setUp()

    def both(self, flags, script_args=(), env=None, rc=0):
        env = env or harness.base_env()
        tr = self.run_cmd([harness.TORCHRUN, *flags, PRINT_ENV, *script_args], env=env,
                          label="torchrun")
        self.assertExit(tr, rc, timeout=180)
        hp_env = dict(env, PYTHON=harness.SYSTEM_PYTHON)
        hp = self.agent([*flags, PRINT_ENV, *script_args], env=hp_env)
        self.assertExit(hp, rc, timeout=180)
        return tr, hp

    def test_same_worker_environment(self):
        port = harness.free_port()
        tr, hp = self.both(["--nproc_per_node", "2", "-r", "1", "-t", "1", "--rdzv_id", "parity",
                            "--master_port", str(port), "--max_restarts", "2"])
        t, h = by_rank(tr), by_rank(hp)
        self.assertEqual(sorted(t), [0, 1], "torchrun printed both ranks")
        self.assertEqual(sorted(h), [0, 1], "hyperpodrun printed both ranks with [defaultN]:")
        base = set(harness.base_env())
        for rank in (0, 1):
            te, he = t[rank], h[rank]
            for key, value in te.items():
                if key in DIFFERENT_PER_RUN or key == "PYTHON":
                    continue
                with self.subTest(rank=rank, key=key):
                    self.assertIn(key, he, f"torchrun sets {key}={value!r}, hyperpodrun does not")
                    self.assertEqual(he[key], value, f"rank {rank}: {key}")
            with self.subTest(rank=rank, key="TORCHELASTIC_ERROR_FILE"):
                self.assertTrue(he["TORCHELASTIC_ERROR_FILE"].endswith(f"/attempt_0/{rank}/error.json"))
                self.assertTrue(te["TORCHELASTIC_ERROR_FILE"].endswith(f"/attempt_0/{rank}/error.json"))
            extras = set(he) - set(te) - HYPERPODRUN_EXTRAS - base - {"PYTHON"}
            with self.subTest(rank=rank, key="extras"):
                self.assertEqual(extras, set(), "variables torchrun does not set")

    def test_same_standalone_environment(self):
        # --standalone: both pick a free port and a fresh run id, and
        # torchrun says "localhost" where a loopback address is as good.
        tr, hp = self.both(["--standalone", "--nproc_per_node", "2", "-r", "1", "-t", "1"])
        t, h = by_rank(tr), by_rank(hp)
        self.assertEqual(sorted(h), [0, 1])
        per_run = DIFFERENT_PER_RUN | {"TORCHELASTIC_RUN_ID", "MASTER_PORT", "MASTER_ADDR", "PYTHON"}
        for rank in (0, 1):
            for key, value in t[rank].items():
                if key in per_run:
                    continue
                with self.subTest(rank=rank, key=key):
                    self.assertEqual(h[rank].get(key), value, f"rank {rank}: {key}")
            self.assertNotEqual(h[rank]["TORCHELASTIC_RUN_ID"], "none")
            self.assertIn(h[rank]["MASTER_ADDR"], ("localhost", "127.0.0.1", "::1"))
        self.assertEqual(h[0]["MASTER_PORT"], h[1]["MASTER_PORT"])
        self.assertEqual(h[0]["TORCHELASTIC_RUN_ID"], h[1]["TORCHELASTIC_RUN_ID"])

    def test_same_failure_summary(self):
        port = harness.free_port()
        env = harness.base_env(HP_EXIT_RANK="1", HP_EXIT_RANK_CODE="3")
        tr, hp = self.both(["--nproc_per_node", "2", "-r", "1", "-t", "1",
                            "--master_port", str(port)], env=env, rc=1)
        for run in (tr, hp):
            with self.subTest(launcher=run.label):
                text = run.text()
                self.assertIn("ChildFailedError", text)
                self.assertRegex(text, r"Root Cause \(first observed failure\)")
                self.assertRegex(text, r"rank\s*:\s*1 \(local_rank: 1\)")
                self.assertRegex(text, r"exitcode\s*:\s*3 \(pid: \d+\)")
                self.assertIn("print_env.py FAILED", text)


if __name__ == "__main__":
    harness.main()
