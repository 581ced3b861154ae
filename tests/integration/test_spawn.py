"""How a worker starts (issue 16): the agent forks and each child makes
its own attempt_<n>/<local_rank>/ directory and log files before it execs,
so that work leaves the agent's path. What a worker sees must not change:
its log files and error-file directory exist when its program starts, no
descriptor of the agent's leaks into it, it leads its own process group in
the agent's cwd, a stale error file in a rank directory that already
exists is gone, and a directory that cannot be made is named in the
failure, not lost."""

import glob
import json
import os
import stat
import sys

import harness

# A Python worker that reports, before it writes anything, what it found.
PROBE = r"""
import json, os, sys
rank = os.environ["LOCAL_RANK"]
ef = os.environ["TORCHELASTIC_ERROR_FILE"]
rdir = os.path.dirname(ef)
open_fds = []
for fd in range(3, 1024):
    try:
        os.fstat(fd)
    except OSError:
        continue
    open_fds.append(fd)
report = {
    "rank": rank,
    "fds": open_fds,
    "stdout_log": os.path.isfile(os.path.join(rdir, "stdout.log")),
    "stderr_log": os.path.isfile(os.path.join(rdir, "stderr.log")),
    "dir": os.path.isdir(rdir),
    "pgid_is_pid": os.getpgid(0) == os.getpid(),
    "cwd": os.getcwd(),
    "stdout_is_file": os.path.samefile("/proc/self/fd/1", os.path.join(rdir, "stdout.log")),
}
os.write(1, ("probe " + json.dumps(report) + "\n").encode())
"""

# Attempt 0 of rank 0 plants something in attempt 1's place and fails;
# attempt 1 reports whether the planted error file is still there.
PLANT = r"""
import os, sys
ef = os.environ["TORCHELASTIC_ERROR_FILE"]
rank, attempt = os.environ["LOCAL_RANK"], os.environ["TORCHELASTIC_RESTART_COUNT"]
run_dir = os.path.dirname(os.path.dirname(os.path.dirname(ef)))
what = os.environ["PLANT"]
if attempt == "0":
    if rank == "0":
        nxt = os.path.join(run_dir, "attempt_1")
        if what == "stale":
            os.makedirs(os.path.join(nxt, "0"))
            with open(os.path.join(nxt, "0", "error.json"), "w") as f:
                f.write('{"message": {"message": "STALE planted error", "extraInfo": '
                        '{"py_callstack": "", "timestamp": "0"}}}')
        else:
            with open(nxt, "w") as f:
                f.write("a file where attempt_1/ should be\n")
        sys.exit(3)
    sys.exit(0)
# one write(2): two workers' print() pieces would interleave
os.write(1, f"attempt1 rank {rank} stale_present={os.path.exists(ef)}\n".encode())
sys.exit(0)
"""


class Spawn(harness.ProcessTest):
    def script(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write("#!" + sys.executable + "\n" + text)
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
        return path

    def test_worker_starts_with_its_files_and_nothing_of_ours(self):
        logdir = os.path.join(self.tmp, "logs")
        r = self.agent(["--nproc-per-node", "3", "--rdzv-id", "probe", "--log-dir", logdir,
                        "-r", "1", "-t", "2", "--no-python", self.script("probe.py", PROBE)])
        self.assertExit(r, 0, timeout=60)
        runs = glob.glob(os.path.join(logdir, "probe_*"))
        self.assertEqual(len(runs), 1, runs)
        seen = set()
        for i in range(3):
            rdir = os.path.join(runs[0], "attempt_0", str(i))
            with open(os.path.join(rdir, "stdout.log")) as f:
                lines = [l for l in f.read().splitlines() if l.startswith("probe ")]
            self.assertEqual(len(lines), 1, f"rank {i}'s stdout.log: {lines}")
            rep = json.loads(lines[0][len("probe "):])
            seen.add(rep["rank"])
            self.assertTrue(rep["dir"], f"rank {i}: no error-file directory at start")
            self.assertTrue(rep["stdout_log"] and rep["stderr_log"],
                            f"rank {i}: log files missing when the worker started: {rep}")
            self.assertTrue(rep["stdout_is_file"], f"rank {i}: -r 1 stdout is not stdout.log")
            self.assertEqual(rep["fds"], [], f"rank {i}: the agent's descriptors leaked in")
            self.assertTrue(rep["pgid_is_pid"], f"rank {i} does not lead its process group")
            self.assertEqual(os.path.realpath(rep["cwd"]), os.path.realpath(self.tmp))
            # teed but never written: the file is there, empty
            self.assertEqual(os.path.getsize(os.path.join(rdir, "stderr.log")), 0)
        self.assertEqual(seen, {"0", "1", "2"})

    def planted(self, what):
        """A 2-rank job, one restart allowed, whose attempt 0 plants
        `what` (PLANT) in attempt 1's log layout before failing."""
        logdir = os.path.join(self.tmp, "logs")
        return self.agent(["--nproc-per-node", "2", "--max-restarts", "1", "--log-dir", logdir,
                           "--no-python", self.script("plant.py", PLANT)],
                          env=harness.base_env(PLANT=what))

    def test_stale_error_file_in_an_existing_rank_dir_is_removed(self):
        r = self.planted("stale")
        self.assertExit(r, 0, timeout=60)
        got = {m.group(1): m.group(2)
               for m in r.matches(r"attempt1 rank (\d+) stale_present=(\w+)")}
        self.assertEqual(got, {"0": "False", "1": "False"},
                         "the planted error file of attempt 1 survived its start")
        self.assertFalse([l for l in r.output() if "STALE" in l])

    def test_rank_dir_that_cannot_be_made_is_named(self):
        r = self.planted("file")
        self.assertExit(r, 1, timeout=60)
        err = "\n".join(r.output("err"))
        self.assertRegex(err, r"cannot start worker 0: cannot create \S+/attempt_1/0: "
                              r"Not a directory")
        # the failure summary carries it too
        self.assertRegex(err, r"exitcode\s*:\s*127 \(pid: 0\)")
        self.assertRegex(err, r"traceback\s*:\s*cannot create \S+/attempt_1/0: Not a directory")
        self.assertFalse([l for l in r.output() if l.startswith("attempt1 ")],
                         "a worker of attempt 1 ran without its directory")


if __name__ == "__main__":
    harness.main()
