"""How the training script is launched (issue 2 §2, TORCHRUN.md, torch
1.13 run.py config_from_args): under $PYTHON (or torchrun's PYTHON_EXEC)
as `python -u script args`, `-m` as `python -u -m module args`, --run-path
as __main__ of the interpreter, --no-python directly; --nproc-per-node
cpu|auto|gpu; torchrun's other flags accepted; and an event-driven failure
path that does not wait for --monitor-interval."""

import glob
import json
import os
import stat
import subprocess
import time

import harness


class ScriptModes(harness.ProcessTest):
    def setUp(self):
        super().setUp()
        self.fake = os.path.join(self.tmp, "fakepython")
        with open(self.fake, "w") as f:
            f.write('#!/bin/sh\nprintf "fakepython"\n'
                    'for a in "$@"; do printf " <%s>" "$a"; done\necho\n')
        os.chmod(self.fake, 0o755)
        self.script = os.path.join(self.tmp, "train.py")
        with open(self.script, "w") as f:
            f.write("import json, sys\n"
                    "print('argv ' + json.dumps([__name__] + sys.argv), flush=True)\n")

    def argv_line(self, run):
        lines = [l for l in run.output("out") if l.startswith("fakepython")]
        self.assertEqual(len(lines), 1, run.tail())
        return lines[0]

    def test_python_u_script_args(self):
        r = self.agent(["--nproc-per-node", "1", self.script, "x", "--y=1"],
                       env=harness.base_env(PYTHON=self.fake))
        self.assertExit(r, 0)
        # torchrun: [python, "-u", script, *args]; no --local_rank (use_env).
        self.assertEqual(self.argv_line(r), f"fakepython <-u> <{self.script}> <x> <--y=1>")

    def test_python_exec_like_torchrun(self):
        # torchrun 1.13 reads PYTHON_EXEC (run.py: os.getenv("PYTHON_EXEC",
        # sys.executable)); a drop-in must honour it too.
        r = self.agent(["--nproc-per-node", "1", self.script],
                       env=harness.base_env(PYTHON_EXEC=self.fake))
        self.assertExit(r, 0)
        self.assertEqual(self.argv_line(r), f"fakepython <-u> <{self.script}>")

    def test_module(self):
        r = self.agent(["--nproc-per-node", "1", "-m", "pkg.train", "a b"],
                       env=harness.base_env(PYTHON=self.fake))
        self.assertExit(r, 0)
        self.assertEqual(self.argv_line(r), "fakepython <-u> <-m> <pkg.train> <a b>")

    def test_module_long_flag_real_python(self):
        pkg = os.path.join(self.tmp, "hp_mod_pkg")
        os.mkdir(pkg)
        open(os.path.join(pkg, "__init__.py"), "w").close()
        with open(os.path.join(pkg, "main.py"), "w") as f:
            # one write per line: under -u print() writes each piece
            # apart, and two workers share the agent's stdout
            f.write("import os, sys\nsys.stdout.write('module %s %s %s\\n' % (__name__,"
                    " os.environ['RANK'], sys.argv[1:]))\n")
        r = self.agent(["--nproc-per-node", "2", "--module", "hp_mod_pkg.main", "q"],
                       env=harness.base_env(PYTHONPATH=self.tmp))
        self.assertExit(r, 0, timeout=60)
        got = sorted(l for l in r.output("out") if l.startswith("module"))
        self.assertEqual(got, ["module __main__ 0 ['q']", "module __main__ 1 ['q']"])

    def test_run_path(self):
        r = self.agent(["--nproc-per-node", "1", "--run-path", self.script, "p", "-q"])
        self.assertExit(r, 0, timeout=60)
        lines = [l for l in r.output("out") if l.startswith("argv ")]
        self.assertEqual(len(lines), 1, r.tail())
        self.assertEqual(json.loads(lines[0][5:]), ["__main__", self.script, "p", "-q"])

    def test_no_python_runs_directly(self):
        r = self.agent(["--nproc-per-node", "1", "--no-python", self.fake, "z"],
                       env=harness.base_env(PYTHON="/bin/false"))
        self.assertExit(r, 0)
        self.assertEqual(self.argv_line(r), "fakepython <z>")


def gpu_present():
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def gpu_counts():
    """Plausible GPU counts: device nodes, and nvidia-smi's list."""
    counts = {len(glob.glob("/dev/nvidia[0-9]*"))}
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
        if out.returncode == 0:
            counts.add(len([l for l in out.stdout.splitlines() if l.startswith("GPU ")]))
    except (OSError, subprocess.TimeoutExpired):
        pass
    return counts


class NprocKinds(harness.ProcessTest):
    def count(self, value):
        r = self.agent(["--nproc-per-node", value, "--no-python", harness.helper("print-env")])
        self.assertExit(r, 0, timeout=60)
        envs = harness.parse_json_lines(r.output("out"))
        self.assertTrue(envs, r.tail())
        self.assertEqual({e["LOCAL_WORLD_SIZE"] for e in envs}, {str(len(envs))})
        return len(envs)

    def cores(self):
        return {os.cpu_count(), len(os.sched_getaffinity(0))}

    def test_cpu(self):
        self.assertIn(self.count("cpu"), self.cores())

    def test_auto(self):
        n = self.count("auto")
        self.assertIn(n, gpu_counts() if gpu_present() else self.cores())

    def test_gpu_with_gpus(self):
        if not gpu_present():
            self.skipTest("no GPU on this machine")
        self.assertIn(self.count("gpu"), gpu_counts())

    def test_gpu_without_gpus_fails(self):
        if gpu_present():
            self.skipTest("this machine has GPUs")
        r = self.agent(["--nproc-per-node", "gpu", "--no-python", harness.helper("print-env")])
        rc = r.wait(30)
        self.assertNotEqual(rc, 0)
        self.assertEqual(harness.parse_json_lines(r.output("out")), [], "workers started")
        self.assertRegex(r.text("err").lower(), r"gpu|cuda")


class Accepted(harness.ProcessTest):
    def test_torchrun_flags_accepted(self):
        r = self.agent(["--nproc_per_node=2", "--monitor_interval=0.1", "--start_method=fork",
                        "--rdzv_conf=timeout=5,read_timeout=3", "--local_addr=127.0.0.1",
                        "--no_python", harness.helper("print-env")])
        self.assertExit(r, 0)
        self.assertEqual(len(harness.parse_json_lines(r.output("out"))), 2)


class EventDriven(harness.ProcessTest):
    def test_failure_not_paced_by_monitor_interval(self):
        # issue 2 §3: no polling interval on the failure path. With a 30 s
        # monitor interval a failing worker still ends the job at once.
        marker = os.path.join(self.tmp, "marker")
        t0 = time.monotonic()
        r = self.agent(["--nproc-per-node", "2", "--monitor-interval", "30", "--max-restarts", "1",
                        "--no-python", harness.helper("fail-once"), marker])
        self.assertExit(r, 0, timeout=60)
        self.assertLess(time.monotonic() - t0, 5, "the restart waited for the monitor interval")
        t0 = time.monotonic()
        r = self.agent(["--nproc-per-node", "2", "--monitor-interval", "30",
                        "--no-python", harness.helper("exit-with"), "3", "0"])
        self.assertExit(r, 1, timeout=60)
        self.assertLess(time.monotonic() - t0, 5, "the failure waited for the monitor interval")


if __name__ == "__main__":
    harness.main()
