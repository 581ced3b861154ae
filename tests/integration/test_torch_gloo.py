"""Real PyTorch (issue 2 §Tests): a gloo init_process_group + all_reduce job
under hyperpodrun with PYTHON=/usr/bin/python3 computes the right sum on
every rank. Exits 77 when `import torch` fails."""

import os
import unittest

import harness

HERE = os.path.dirname(os.path.abspath(__file__))


class Gloo(harness.ProcessTest):
    def setUp(self):
        if not harness.have_torch():
            raise unittest.SkipTest("python3 -c 'import torch' fails")
        super().setUp()

    def run_gloo(self, script, nproc, extra=()):
        port = harness.free_port()
        env = harness.base_env(PYTHON=harness.SYSTEM_PYTHON)
        r = self.agent(["--nproc-per-node", str(nproc), "--master-port", str(port),
                        *extra, script], env=env)
        self.assertExit(r, 0, timeout=240)
        return r

    def test_two_worker_allreduce(self):
        r = self.run_gloo(os.path.join(HERE, "gloo_allreduce.py"), 2)
        got = sorted((int(m.group(1)), int(m.group(2)), int(m.group(3)))
                     for m in r.matches(r"gloo rank (\d+) world (\d+) sum (\d+)"))
        self.assertEqual(got, [(0, 2, 3), (1, 2, 3)])

    def test_four_worker_allreduce_teed(self):
        r = self.run_gloo(os.path.join(HERE, "gloo_allreduce.py"), 4, ["--tee", "3"])
        got = sorted(m.group(1) for m in
                     r.matches(r"^\[default(\d)\]:gloo rank \1 world 4 sum 10$", "out"))
        self.assertEqual(got, ["0", "1", "2", "3"])

    def test_example_train_gloo(self):
        example = os.path.join(harness.source_dir(), "examples", "train_gloo.py")
        if not os.path.exists(example):
            self.skipTest("examples/train_gloo.py does not exist")
        self.run_gloo(example, 2)


if __name__ == "__main__":
    harness.main()
