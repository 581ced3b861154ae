#!/usr/bin/env python3
"""Suite `fresh`: the README's two commands on a bare Debian 12 root.

The proof that a newcomer's machine needs nothing else: a root made by
`debootstrap --variant=minbase bookworm` from this machine's configured
mirror (debroot.py), the checkout copied in (tracked and untracked files
git does not ignore, as a clone has them), and the two commands of the
README's first code block run in it by chroot, exactly as written, one
after the other, as root in the checkout. The chroot runs in a mount
namespace of its own (unshare --mount, private propagation): /proc, /dev,
/sys and /dev/shm are mounted there only, unmounted on exit, and gone with
the namespace even if this test is killed. Afterwards no process may be
left inside the root, no test of the suite run in it may have failed, and
none may have been skipped for a missing package.

Needs root, debootstrap, unshare and chroot; exits 77 without them.
Takes minutes (packages, two builds, the whole suite). Run it with
`./run-tests.sh build --suite fresh` (the default run leaves it out).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import debroot  # noqa: E402
import unittest_main  # noqa: E402

SRC = os.environ.get("HP_SOURCE_DIR") or os.path.abspath(os.path.join(HERE, "..", ".."))
CHECKOUT = "/root/hyperpodrun"  # where the newcomer cloned it, inside the root
# Seconds for each README command (packages + build + demo; + the suite).
COMMAND_TIMEOUT = int(os.environ.get("HP_FRESH_COMMAND_TIMEOUT", "1500"))
# Skips that no Debian 12 package can cure: hardware this machine lacks,
# and NVIDIA's NCCL (libnccl.so.2: not in Debian's main archive; GPU
# machines bring it with CUDA).
NOT_A_PACKAGE = re.compile(r"GPU|nvidia|CUDA|EFA|NCCL not available", re.I)

# Runs inside `unshare --mount --propagation private`: mounts what the
# commands need, runs one command in the chroot, unmounts on any exit.
CHROOT_SH = r"""
set -eu
root=$1 cmd=$2 dir=$3
cleanup() {
	for m in dev/shm dev sys proc ""; do
		mountpoint -q "$root/$m" && umount -l "$root/$m"
	done
	return 0
}
trap cleanup EXIT
# The root a mount point, as / is on a real machine: `unshare --mount`
# (the PID-1 test's) cannot make a non-mount-point / private (EINVAL).
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount --make-rprivate "$root/dev"
mount -t tmpfs -o mode=1777 shm "$root/dev/shm"
rc=0
chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	/bin/bash -c 'cd "$1" && eval "$2"' bash "$dir" "$cmd" </dev/null || rc=$?
exit "$rc"
"""


def readme_commands():
    """The commands of README.md's first ```sh block, comments dropped."""
    with open(os.path.join(SRC, "README.md")) as f:
        text = f.read()
    m = re.search(r"^```sh\n(.*?)^```", text, re.M | re.S)
    if not m:
        raise AssertionError("README.md has no ```sh block")
    cmds = []
    for line in m.group(1).splitlines():
        cmd = re.sub(r"\s+#.*$", "", line).strip()
        if cmd and not cmd.startswith("#"):
            cmds.append(cmd)
    return cmds


def checkout_files():
    """Paths (relative) of the checkout: what `git clone` would give, plus
    files not yet committed that git does not ignore."""
    r = subprocess.run(["git", "-C", SRC, "ls-files", "-z", "--cached", "--others",
                        "--exclude-standard"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode == 0:
        return [p for p in r.stdout.decode().split("\0")
                if p and os.path.lexists(os.path.join(SRC, p))]
    files = []  # not a git checkout: everything but build dirs and caches
    for root, dirs, names in os.walk(SRC):
        dirs[:] = [d for d in dirs if not d.startswith((".git", "build", "__pycache__"))]
        files += [os.path.relpath(os.path.join(root, n), SRC) for n in names]
    return files


def processes_in(root):
    """Pids whose root directory is `root` (left over inside the chroot)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.path.realpath(f"/proc/{pid}/root") == root:
                pids.append(int(pid))
        except OSError:
            pass
    return pids


class FreshDebianTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        why = debroot.available()
        if why is None and not shutil.which("unshare"):
            why = "no unshare (util-linux)"
        if why is None:
            probe = subprocess.run(["unshare", "--mount", "true"], stderr=subprocess.PIPE)
            if probe.returncode != 0:
                why = "unshare --mount not permitted: " + probe.stderr.decode().strip()
        if why:
            raise unittest.SkipTest(why)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="hp-fresh-", dir="/var/tmp")
        self.root = os.path.realpath(os.path.join(self.tmp, "root"))
        _current.append(self)

    def tearDown(self):
        left = processes_in(self.root)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while processes_in(self.root) and time.monotonic() < deadline:
            time.sleep(0.1)  # the kernel tearing SIGKILLed processes down
        # --one-file-system: never descend into a mount, should one remain
        subprocess.run(["rm", "-rf", "--one-file-system", self.tmp])
        self.assertEqual(left, [], "processes were left running inside the fresh root")

    def run_in_root(self, cmd):
        """Runs one README command in the chroot; streams its output to our
        stdout with elapsed seconds; returns (exit code, output, seconds)."""
        start = time.monotonic()
        p = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                              CHROOT_SH, "chroot.sh", self.root, cmd, CHECKOUT],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
        out = []
        # the deadline holds even while the command prints nothing
        timer = threading.Timer(COMMAND_TIMEOUT, os.killpg, (p.pid, signal.SIGKILL))
        timer.start()
        try:
            for raw in p.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                out.append(line)
                print(f"[{time.monotonic() - start:7.1f}s] {line}", flush=True)
            rc = p.wait()
        finally:
            timer.cancel()
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            p.stdout.close()
        if rc == -signal.SIGKILL:
            out.append(f"fresh: killed after the {COMMAND_TIMEOUT} s deadline")
        secs = time.monotonic() - start
        print(f"fresh: `{cmd}` exited {rc} after {secs:.0f} s", flush=True)
        return rc, out, secs

    def test_readme_commands_on_bare_debian(self):
        cmds = readme_commands()
        self.assertEqual(cmds, ["./run-demo.sh", "./run-tests.sh"],
                         "the README's set-up is two commands")
        t0 = time.monotonic()
        debroot.unpack(self.root, log=sys.stdout)
        print(f"fresh: root unpacked in {time.monotonic() - t0:.0f} s", flush=True)
        # A bare root: no compiler, no headers, nothing of ours.
        for absent in ("usr/bin/gcc", "usr/bin/meson", "usr/include/stdio.h"):
            self.assertFalse(os.path.exists(os.path.join(self.root, absent)), absent)
        # What the Debian installer writes and debootstrap does not: the
        # network's name server (apt needs it) and /etc/hosts (without it
        # `localhost`, torchrun's default rendezvous host, goes to DNS).
        shutil.copy("/etc/resolv.conf", os.path.join(self.root, "etc", "resolv.conf"))
        with open(os.path.join(self.root, "etc", "hosts"), "w") as f:
            f.write("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n")
        dest = os.path.join(self.root, CHECKOUT.lstrip("/"))
        os.makedirs(dest)
        files = checkout_files()
        tar = subprocess.run(f"tar -C {SRC!r} --null -T - -cf - | tar -C {dest!r} -xf -",
                             shell=True, input="\0".join(files).encode())
        self.assertEqual(tar.returncode, 0, "copying the checkout in failed")

        rc, out, secs = self.run_in_root(cmds[0])
        self.assertEqual(rc, 0, f"{cmds[0]} failed in a fresh Debian 12 root:\n" +
                         "\n".join(out[-60:]))
        # The demo's point: a restart, then success.
        self.assertTrue(any("attempt 1" in l for l in out), "the demo job did not restart")

        rc, out, secs = self.run_in_root(cmds[1])
        log = os.path.join(dest, "build", "meson-logs", "testlog.json")
        results = []
        if os.path.exists(log):
            with open(log) as f:
                results = [json.loads(l) for l in f if l.strip()]
        failed = [r["name"] for r in results if r["result"] not in ("OK", "SKIP", "EXPECTEDFAIL")]
        skipped = [(r["name"], (r.get("stdout") or "") + (r.get("stderr") or ""))
                   for r in results if r["result"] == "SKIP"]
        print(f"fresh: {len(results)} tests, failed {failed}, skipped "
              f"{[n for n, _ in skipped]}", flush=True)
        self.assertEqual(rc, 0, f"{cmds[1]} failed in a fresh Debian 12 root (failed: {failed}):\n"
                         + "\n".join(out[-80:]))
        self.assertGreater(len(results), 20, "the suite hardly ran")
        for name, text in skipped:
            self.assertRegex(text, NOT_A_PACKAGE, f"{name} was skipped on a fresh root "
                             f"(a package missing from deps/debian-packages?):\n{text[-1500:]}")


_current = []  # the FreshDebianTest running, for the SIGTERM handler


def _on_term(signo, frame):
    # meson's timeout (SIGTERM): end what runs in the root, delete the root
    for test in _current:
        for pid in processes_in(test.root):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["rm", "-rf", "--one-file-system", test.tmp])
    os._exit(128 + signo)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_term)
    unittest_main.run()
