"""Worker output (issue 2 §7, TORCHRUN.md §Logs): -t/--tee copies lines to
the console prefixed "[<role><local_rank>]:" (stdout to stdout, stderr to
stderr), -r/--redirects sends them only to files, per-rank "i:v" maps,
--log-dir's <log-dir>/<run-id>[_<random>]/attempt_<n>/<local_rank>/
{stdout,stderr}.log layout with the error file beside them, and
--local-ranks-filter."""

import glob
import os
import stat

import harness

SCRIPT = """#!/bin/sh
echo "out $LOCAL_RANK attempt $TORCHELASTIC_RESTART_COUNT"
echo "ef $TORCHELASTIC_ERROR_FILE"
echo "err $LOCAL_RANK attempt $TORCHELASTIC_RESTART_COUNT" >&2
if [ "$FAIL_RANK0_ONCE" = 1 ] && [ "$LOCAL_RANK" = 0 ] && [ "$TORCHELASTIC_RESTART_COUNT" = 0 ]; then
    exit 3
fi
exit 0
"""


class Logs(harness.ProcessTest):
    def setUp(self):
        super().setUp()
        self.script = os.path.join(self.tmp, "say.sh")
        with open(self.script, "w") as f:
            f.write(SCRIPT)
        os.chmod(self.script, os.stat(self.script).st_mode | stat.S_IXUSR)

    def run_job(self, flags, env=None, rc=0):
        r = self.agent(flags + ["--no-python", self.script], env=env)
        self.assertExit(r, rc, timeout=60)
        return r

    def test_no_redirect_passes_output_through(self):
        r = self.run_job(["--nproc-per-node", "2"])
        self.assertEqual(sorted(l for l in r.output("out") if l.startswith("out ")),
                         ["out 0 attempt 0", "out 1 attempt 0"])
        self.assertEqual(sorted(l for l in r.output("err") if l.startswith("err ")),
                         ["err 0 attempt 0", "err 1 attempt 0"])

    def test_tee_all_prefixes_lines(self):
        r = self.run_job(["--nproc-per-node", "2", "-t", "3"])
        out, err = r.output("out"), r.output("err")
        for i in (0, 1):
            self.assertIn(f"[default{i}]:out {i} attempt 0", out)
            self.assertIn(f"[default{i}]:err {i} attempt 0", err)
            self.assertNotIn(f"[default{i}]:err {i} attempt 0", out, "stderr teed to stdout")
        self.assertFalse([l for l in out + err if l.startswith(("out ", "err "))],
                         "unprefixed worker lines with --tee 3")

    def test_tee_uses_role_name(self):
        r = self.run_job(["--nproc-per-node", "1", "--tee", "1", "--role", "trainer"])
        self.assertIn("[trainer0]:out 0 attempt 0", r.output("out"))

    def test_tee_per_rank_map(self):
        # "0:3": rank 0 teed; rank 1 neither teed nor redirected, so its
        # lines reach the console untouched.
        r = self.run_job(["--nproc-per-node", "2", "--tee", "0:3"])
        out = r.output("out")
        self.assertIn("[default0]:out 0 attempt 0", out)
        self.assertIn("out 1 attempt 0", out)
        self.assertFalse([l for l in out if l.startswith("[default1]")])

    def test_tee_stdout_only(self):
        r = self.run_job(["--nproc-per-node", "1", "-t", "1"])
        self.assertIn("[default0]:out 0 attempt 0", r.output("out"))
        self.assertIn("err 0 attempt 0", r.output("err"), "stderr is untouched with -t 1")

    def attempt_dir(self, logdir, run_id, attempt):
        dirs = [d for d in glob.glob(os.path.join(logdir, run_id + "*"))
                if os.path.isdir(os.path.join(d, f"attempt_{attempt}"))]
        self.assertEqual(len(dirs), 1, f"one run dir {run_id}[_*] under {logdir}: "
                                       f"{os.listdir(logdir) if os.path.isdir(logdir) else None}")
        name = os.path.basename(dirs[0])
        self.assertTrue(name == run_id or name.startswith(run_id + "_"), name)
        return os.path.join(dirs[0], f"attempt_{attempt}")

    def read(self, path):
        self.assertTrue(os.path.isfile(path), f"missing {path}")
        with open(path) as f:
            return f.read().splitlines()

    def test_log_dir_layout_with_redirects_and_restart(self):
        logdir = os.path.join(self.tmp, "logs")
        r = self.run_job(["--nproc-per-node", "2", "--max-restarts", "1", "--rdzv-id", "logrun",
                          "--log-dir", logdir, "-r", "3"],
                         env=harness.base_env(FAIL_RANK0_ONCE=1))
        a0 = self.attempt_dir(logdir, "logrun", 0)
        a1 = self.attempt_dir(logdir, "logrun", 1)
        self.assertEqual(os.path.dirname(a0), os.path.dirname(a1), "one run dir for all attempts")
        # Attempt 0: rank 0 wrote before failing (rank 1 may have been
        # stopped before it wrote anything).
        self.assertIn("out 0 attempt 0", self.read(os.path.join(a0, "0", "stdout.log")))
        self.assertIn("err 0 attempt 0", self.read(os.path.join(a0, "0", "stderr.log")))
        for i in (0, 1):
            out = self.read(os.path.join(a1, str(i), "stdout.log"))
            self.assertIn(f"out {i} attempt 1", out)
            self.assertIn(f"ef {os.path.join(a1, str(i), 'error.json')}", out,
                          "TORCHELASTIC_ERROR_FILE lives in the attempt's rank dir")
            self.assertEqual(self.read(os.path.join(a1, str(i), "stderr.log")),
                             [f"err {i} attempt 1"])
        # Redirected, not teed: nothing of the workers' on the console.
        self.assertFalse([l for l in r.output() if "out 1 attempt" in l or "err 1 attempt" in l],
                         "redirected output leaked to the console")

    def test_log_dir_with_tee(self):
        logdir = os.path.join(self.tmp, "logs")
        r = self.run_job(["--nproc_per_node", "2", "--rdzv_id", "teerun", "--log_dir", logdir,
                          "--tee", "3"])
        a0 = self.attempt_dir(logdir, "teerun", 0)
        for i in (0, 1):
            self.assertIn(f"[default{i}]:out {i} attempt 0", r.output("out"))
            self.assertIn(f"out {i} attempt 0", self.read(os.path.join(a0, str(i), "stdout.log")))
            self.assertIn(f"err {i} attempt 0", self.read(os.path.join(a0, str(i), "stderr.log")))

    def test_local_ranks_filter(self):
        logdir = os.path.join(self.tmp, "logs")
        r = self.run_job(["--nproc-per-node", "3", "-t", "3", "--local-ranks-filter=1",
                          "--rdzv-id", "filt", "--log-dir", logdir])
        console = r.output()
        self.assertIn("[default1]:out 1 attempt 0", console)
        self.assertIn("[default1]:err 1 attempt 0", console)
        shown = {l.split("]:")[0] for l in console if l.startswith("[default")}
        self.assertEqual(shown, {"[default1"}, "only rank 1 on the console")
        # The filter is for the console only; the files keep every rank.
        a0 = self.attempt_dir(logdir, "filt", 0)
        self.assertIn("out 0 attempt 0", self.read(os.path.join(a0, "0", "stdout.log")))


if __name__ == "__main__":
    harness.main()
