"""The wheel on a machine that has none of our libraries (issue 11): a bare
Debian 12 root (debootstrap --variant=minbase bookworm, plus only python3
and python3-venv, from the mirror in /etc/apt/sources.list*), the wheel
built with `python3 -m build --no-isolation` installed there into a venv
(chroot, in a mount and pid namespace of its own, the root under an
overlay so the cached root stays clean), then a 2-worker local job with a
process-level restart (--max-restarts=1, a worker that fails once) and a
2-worker in-process restart job whose workers use the installed
hyperpod_elastic_agent package.

The root is made once a day and kept in /var/tmp/hyperpodrun-bookworm-
<YYYYMMDD>/root (older days are removed); exit 77 without root,
debootstrap, unshare or overlayfs."""
import fcntl
import glob
import os
import re
import shutil
import subprocess
import tempfile
import time

import debroot
import harness
import wheel_common as wc

HERE = os.path.dirname(os.path.abspath(__file__))
T = 120.0
CACHE = "/var/tmp"
PREFIX = "hyperpodrun-bookworm-"

# Rank 1 fails attempt 0 only once rank 0 has written its line (they
# meet at a FIFO the job's shell made): otherwise the group's stop can
# take rank 0 before it wrote anything.
FAIL_ONCE = r"""import os, sys
rank, n = os.environ["RANK"], os.environ["TORCHELASTIC_RESTART_COUNT"]
sys.stdout.write("chroot worker rank %s attempt %s\n" % (rank, n))
sys.stdout.flush()
if n == "0":
    with open("/tmp/rank0-wrote", "w" if rank == "0" else "r"):
        pass
sys.exit(7 if n == "0" and rank == "1" else 0)
"""


def bookworm_root():
    """The cached root for today, made (under a lock) when missing."""
    day = time.strftime("%Y%m%d", time.gmtime())
    top = os.path.join(CACHE, PREFIX + day)
    root = os.path.join(top, "root")
    with open(os.path.join(CACHE, PREFIX + "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isfile(os.path.join(root, "usr/bin/python3")):
            return root
        for old in glob.glob(os.path.join(CACHE, PREFIX + "2*")):
            if old != top:
                shutil.rmtree(old, ignore_errors=True)
        tmp = os.path.join(top, "root.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(top, exist_ok=True)
        r = subprocess.run(["debootstrap", "--variant=minbase",
                            "--include=python3,python3-venv", "bookworm",
                            tmp, debroot.mirror()], capture_output=True, text=True,
                           timeout=1800)
        if r.returncode != 0:
            raise AssertionError("debootstrap failed:\n" +
                                 (r.stdout + r.stderr)[-3000:])
        shutil.rmtree(root, ignore_errors=True)
        os.rename(tmp, root)
        return root


def why_not():
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot, mounts)"
    for tool in ("debootstrap", "unshare", "chroot", "mount"):
        if not shutil.which(tool):
            return f"no {tool}"
    if "overlay" not in open("/proc/filesystems").read():
        return "no overlayfs"
    return wc.have_build_tools()


class WheelChroot(harness.ProcessTest):
    survivor_timeout = 10.0

    def chroot(self, root, script, timeout=T):
        """Runs script (sh) in the root, over an overlay; returns the Run."""
        ov = os.path.join(self.tmp, "ov")
        for d in ("upper", "work", "merged"):
            os.makedirs(os.path.join(ov, d))
        setup = (
            "set -e; mount --make-rprivate /; "
            f"mount -t overlay overlay -o lowerdir={root},"
            f"upperdir={ov}/upper,workdir={ov}/work {ov}/merged; "
            f"mount -t proc proc {ov}/merged/proc; "
            f"mkdir -p {ov}/merged/opt/in; "
            f"mount --bind {self.inbox} {ov}/merged/opt/in; "
            f"exec chroot {ov}/merged /bin/sh -ec \"$0\"")
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                       "/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
               "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        r = self.run_cmd(["unshare", "--mount", "--pid", "--fork", "sh",
                          "-c", setup, script], env=env, label="chroot")
        r.wait(timeout)
        return r

    def test_bare_bookworm_runs_the_wheel(self):
        why = why_not()
        if why:
            self.skipTest(why)
        root = bookworm_root()
        # nor libfabric: the jobs below start without it (it is dlopened
        # at the first cross-node round only)
        for lib in ("libuv.so.1", "libcjson.so.1", "libevent-2.1.so.7",
                    "libfabric.so.1"):
            self.assertFalse(glob.glob(os.path.join(root, "usr/lib/*", lib)),
                             f"{lib} in the bare root")
        wheels, log = wc.build_wheel(self.tmp, "build")
        self.assertEqual(len(wheels), 1, log[-2000:])
        self.inbox = os.path.join(self.tmp, "in")
        os.makedirs(self.inbox)
        shutil.copy(wheels[0], self.inbox)
        shutil.copy(os.path.join(HERE, "compat_worker.py"), self.inbox)
        with open(os.path.join(self.inbox, "fail_once.py"), "w") as f:
            f.write(FAIL_ONCE)
        name = os.path.basename(wheels[0])
        run = ("--server-host 127.0.0.1 --server-port 0 "
               "--nproc-per-node=2")
        r = self.chroot(root, (
            "python3 -m venv /opt/hp\n"
            f"/opt/hp/bin/pip install -q --no-index --no-deps /opt/in/{name}\n"
            "/opt/hp/bin/hyperpodrun --version\n"
            "ldd /opt/hp/bin/hyperpodrun\n"
            "export PYTHON_EXEC=/opt/hp/bin/python TMPDIR=/tmp\n"
            "mkfifo /tmp/rank0-wrote\n"
            f"/opt/hp/bin/hyperpodrun {run} --max-restarts=1 "
            "/opt/in/fail_once.py\n"
            "echo plr-job-ok\n"
            "COMPAT_FAULT=IN_PROCESS_RESTART:1:0 /opt/hp/bin/hyperpodrun "
            f"{run} --inprocess-restart /opt/in/compat_worker.py\n"
            "echo ipr-job-ok\n"))
        self.assertEqual(r.wait(1), 0, r.tail(80))
        out = r.text("out")
        self.assertIn(f"hyperpodrun {harness.project_version()}", out)
        self.assertRegex(out, r"libuv\.so\.1 => /opt/hp/bin/\.\./lib/"
                              r"hyperpodrun/libuv\.so\.1")
        # the restart: rank 1 failed in attempt 0, both ran attempt 1
        for rank, attempt in (("0", "0"), ("1", "0"), ("0", "1"),
                              ("1", "1")):
            self.assertIn(f"chroot worker rank {rank} attempt {attempt}",
                          out)
        self.assertIn("plr-job-ok", out)
        self.assertEqual(len(re.findall(r'^compat run .*"seq": 1',
                                        out, re.M)), 2, r.tail(60))
        self.assertIn('"module": "/opt/hp/lib/python3.11/site-packages/'
                      'hyperpod_elastic_agent"', out)
        self.assertIn("ipr-job-ok", out)


if __name__ == "__main__":
    harness.main()
