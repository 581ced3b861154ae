"""Local-mode restart policy (issue 2 §4, §5, §8): a failed worker stops
and restarts the whole group exactly --max-restarts times, then the agent
exits 1 with torchrun's ChildFailedError root-cause summary; a worker that
fails once recovers; pre/post-train scripts run around each attempt."""

import json
import os
import re
import signal
import stat
import time

import harness


def attempts(run, rank):
    return [int(m.group(1)) for m in run.matches(rf"exit-with rank {rank} attempt (\d+)")]


class Restarts(harness.ProcessTest):
    def test_always_failing_worker_restarts_exactly_max_restarts(self):
        # Rank 1 exits 3 on every attempt; rank 0 waits to be stopped, so
        # rank 1 is the root cause each time.
        r = self.agent(["--nproc-per-node", "2", "--max-restarts", "2", "--shutdown-timeout", "5",
                        "--no-python", harness.helper("exit-with"), "3", "1"])
        self.assertExit(r, 1, timeout=60)
        self.assertEqual(attempts(r, 1), [0, 1, 2], "TORCHELASTIC_RESTART_COUNT per attempt")
        # The healthy rank may be stopped before it prints, but it never
        # runs outside the three attempts.
        self.assertTrue(set(attempts(r, 0)) <= {0, 1, 2}, attempts(r, 0))
        text = r.text()
        self.assertRegex(text, r"ChildFailedError|Root Cause")
        root = text[text.find("Root Cause"):] if "Root Cause" in text else text
        self.assertRegex(root, r"rank\s*:\s*1\b", "root cause names global rank 1")
        self.assertRegex(root, r"exitcode\s*:\s*3\b", "root cause gives exit code 3")

    def test_no_restart_by_default(self):
        r = self.agent(["--nproc-per-node", "2", "--no-python", harness.helper("exit-with"),
                        "5", "0"])
        self.assertExit(r, 1, timeout=60)
        self.assertEqual(attempts(r, 0), [0])
        self.assertRegex(r.text(), r"exitcode\s*:\s*5\b")

    def test_signal_death_is_named(self):
        r = self.agent(["--nproc-per-node", "1", "--no-python", harness.helper("exit-with"),
                        "SIGSEGV"])
        self.assertExit(r, 1, timeout=60)
        # torchrun: "exitcode  : -11 (pid: N)" and "Signal 11 (SIGSEGV)";
        # STYLE.md: 128+signo. Either way the signal must be named.
        self.assertRegex(r.text(), r"SIGSEGV")

    def test_externally_killed_worker_restarts_group(self):
        # A worker killed from outside (the OOM killer's SIGKILL) is a
        # failure like any other: the group restarts with count 1.
        r = self.agent(["--nproc-per-node", "2", "--max-restarts", "1", "--no-python",
                        harness.helper("exit-with"), "0", "none"])
        first = r.wait_lines(r"exit-with rank (\d+) attempt 0 pid (\d+)", 2)
        os.kill(int(first[0].group(2)), signal.SIGKILL)
        r.wait_lines(r"exit-with rank \d+ attempt 1 pid", 2)
        r.signal(signal.SIGTERM)
        self.assertExit(r, 143, timeout=30)
        for m in first:
            self.assertFalse(harness.alive(int(m.group(2))))

    def test_fail_once_recovers(self):
        marker = os.path.join(self.tmp, "marker")
        r = self.agent(["--nproc-per-node", "2", "--max-restarts", "1",
                        "--no-python", harness.helper("fail-once"), marker])
        self.assertExit(r, 0, timeout=60)
        got = [(int(m.group(1)), int(m.group(2)))
               for m in r.matches(r"^attempt (\d+) rank (\d+)$", "out")]
        # Attempt 0: one rank fails, the other may be stopped before it
        # prints. Attempt 1: both ranks run and succeed.
        self.assertGreaterEqual(len([a for a, _ in got if a == 0]), 1)
        self.assertEqual(sorted(rk for a, rk in got if a == 1), [0, 1])
        self.assertEqual(sorted({a for a, _ in got}), [0, 1])

    def test_fail_once_without_restarts_fails(self):
        marker = os.path.join(self.tmp, "marker")
        r = self.agent(["--nproc-per-node", "2", "--max-restarts", "0",
                        "--no-python", harness.helper("fail-once"), marker])
        self.assertExit(r, 1, timeout=60)
        self.assertEqual(len(r.matches(r"^attempt 1 ", "out")), 0)

    def test_error_file_in_summary(self):
        # A worker that writes torch's @record error.json and exits 1: the
        # summary names its error file and, as torchrun's _format_failure
        # does, shows py_callstack when present, else the message.
        script = os.path.join(self.tmp, "record.py")
        with open(script, "w") as f:
            f.write(
                "import json, os, sys, time\n"
                "if os.environ['LOCAL_RANK'] != '1':\n"
                "    time.sleep(60)\n"
                "    sys.exit(0)\n"
                "extra = {'timestamp': str(int(time.time()))}\n"
                "if os.environ.get('WITH_STACK') == '1':\n"
                "    extra['py_callstack'] = 'Traceback: the-callstack-line'\n"
                "with open(os.environ['TORCHELASTIC_ERROR_FILE'], 'w') as f:\n"
                "    json.dump({'message': {'message': 'RuntimeError: boom from rank 1',\n"
                "               'extraInfo': extra}}, f)\n"
                "sys.exit(1)\n")
        for with_stack, shown in (("1", "the-callstack-line"), ("0", "boom from rank 1")):
            with self.subTest(with_stack=with_stack):
                r = self.agent(["--nproc-per-node", "2", script],
                               env=harness.base_env(WITH_STACK=with_stack))
                self.assertExit(r, 1, timeout=60)
                text = r.text()
                self.assertRegex(text, r"traceback\s*:\s*.*" + re.escape(shown))
                self.assertRegex(text, r"error_file\s*:\s*/\S+/attempt_0/1/error\.json")
                self.assertRegex(text, r"rank\s*:\s*1 \(local_rank: 1\)")


class PrePostTrain(harness.ProcessTest):
    def write_script(self, name, body):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + body)
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
        return path

    def trace(self):
        with open(os.path.join(self.tmp, "trace")) as f:
            return [l.rstrip("\n") for l in f]

    def stage_script(self, stage, fail_first=False):
        body = (f'echo "{stage} local_rank=$LOCAL_RANK rank=$RANK world=$WORLD_SIZE '
                f'restart=$TORCHELASTIC_RESTART_COUNT args=$#:$1|$2" >> "$HP_TRACE_FILE"\n')
        if fail_first:
            body += ('[ -e "$HP_TRACE_FILE.prefail" ] && exit 0\n'
                     ': > "$HP_TRACE_FILE.prefail"\nexit 4\n')
        return self.write_script(stage + ".sh", body)

    def test_pre_once_per_attempt_post_once_after_success(self):
        trace = os.path.join(self.tmp, "trace")
        env = harness.base_env(HP_TRACE_FILE=trace)
        r = self.agent([
            "--nproc-per-node", "2", "--max-restarts", "1",
            "--pre-train-script", self.stage_script("pre"), "--pre-train-args", "a 'b c'",
            "--post-train-script", self.stage_script("post"), "--post-train-args", "x",
            "--no-python", harness.helper("fail-once"), os.path.join(self.tmp, "marker"),
        ], env=env)
        self.assertExit(r, 0, timeout=60)
        lines = self.trace()
        pre = [l for l in lines if l.startswith("pre ")]
        post = [l for l in lines if l.startswith("post ")]
        # --pre-train-args is one opaque argv element, as the reference
        # passes it (30774934184 test_additional_hyperpod_config_from_args)
        self.assertEqual(pre, [
            "pre local_rank=0 rank=0 world=2 restart=0 args=1:a 'b c'|",
            "pre local_rank=0 rank=0 world=2 restart=1 args=1:a 'b c'|",
        ])
        self.assertEqual(post, ["post local_rank=0 rank=0 world=2 restart=1 args=1:x|"])
        # Order: pre before its attempt's workers, post after all of them.
        kinds = [("pre", int(l.split("restart=")[1].split()[0])) if l.startswith("pre ")
                 else ("post", None) if l.startswith("post ")
                 else ("worker", int(l.rsplit(" ", 1)[1])) for l in lines]
        # Attempt 0's second worker may be stopped before it writes.
        self.assertEqual(kinds[0], ("pre", 0))
        i = kinds.index(("pre", 1))
        self.assertIn(kinds[1:i], ([("worker", 0)], [("worker", 0), ("worker", 0)]))
        self.assertEqual(kinds[i + 1:], [("worker", 1), ("worker", 1), ("post", None)])

    def test_no_post_after_failure(self):
        trace = os.path.join(self.tmp, "trace")
        env = harness.base_env(HP_TRACE_FILE=trace)
        r = self.agent([
            "--nproc-per-node", "1", "--max-restarts", "1",
            "--pre-train-script", self.stage_script("pre"),
            "--post-train-script", self.stage_script("post"),
            "--no-python", harness.helper("exit-with"), "1",
        ], env=env)
        self.assertExit(r, 1, timeout=60)
        lines = self.trace()
        self.assertEqual(len([l for l in lines if l.startswith("pre ")]), 2)
        self.assertEqual([l for l in lines if l.startswith("post ")], [])

    def test_failing_pre_train_counts_as_a_restart(self):
        trace = os.path.join(self.tmp, "trace")
        env = harness.base_env(HP_TRACE_FILE=trace)
        r = self.agent([
            "--nproc-per-node", "1", "--max-restarts", "1",
            "--pre-train-script", self.stage_script("pre", fail_first=True),
            "--no-python", harness.helper("fail-once"), os.path.join(self.tmp, "marker"),
        ], env=env)
        # Attempt 0: pre fails, no worker. Attempt 1: pre passes, the worker
        # runs for the first time and fails (fail-once); no restarts left.
        self.assertExit(r, 1, timeout=60)
        lines = self.trace()
        self.assertEqual([l.split()[0] for l in lines], ["pre", "pre", "worker"])
        self.assertIn("restart=1", lines[1])
        self.assertEqual(lines[2], "worker rank 0 attempt 1")


if __name__ == "__main__":
    harness.main()
