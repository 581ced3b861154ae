"""harness.py — runs the real hyperpodrun binary for the process tests.

What it owns: starting $HYPERPODRUN (always on 127.0.0.1 and a free or
ephemeral server port, so tests run in parallel), reading its stdout and
stderr line by line on threads, waiting for a line or an exit with a
deadline (never a bare sleep), and proving that no process a test started
outlives it. Standard library only.

How survivors are caught:
  * the test process makes itself a child subreaper, so any descendant the
    agent orphans is re-parented to us instead of vanishing into init;
  * every pid a helper prints ("ready pid N", "orphan pid N", "exit-with ...
    pid N") and every descendant of the agent seen in /proc while it runs is
    tracked through a pidfd (immune to pid reuse);
  * at tearDown every tracked pidfd must become readable (the process ended)
    within a short deadline, and no child of ours may be left alive; any
    survivor is SIGKILLed and the test fails.
"""

import ctypes
import json
import os
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import unittest_main

SKIP = 77
HARD_ERROR = 99

_PR_SET_CHILD_SUBREAPER = 36


def _make_subreaper():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except OSError:
        pass


_make_subreaper()


def hyperpodrun():
    path = os.environ.get("HYPERPODRUN")
    if not path:
        build = os.environ.get("HP_BUILD_DIR", "build")
        path = os.path.join(build, "hyperpodrun")
    return path


def helper(name):
    """Absolute path of a tests/helpers program ('print-env', ...)."""
    key = "HP_HELPER_" + name.upper().replace("-", "_")
    path = os.environ.get(key)
    if not path:
        build = os.environ.get("HP_BUILD_DIR", "build")
        path = os.path.join(build, "tests", name)
    if not os.access(path, os.X_OK):
        raise AssertionError(f"helper {name} not found at {path} (set {key})")
    return path


def source_dir():
    return os.environ.get(
        "HP_SOURCE_DIR",
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def project_version():
    with open(os.path.join(source_dir(), "meson.build")) as f:
        m = re.search(r"version:\s*'([^']+)'", f.read())
    return m.group(1) if m else None


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Variables a sanitizer or valgrind build needs to reach the agent.
_PASS_THROUGH = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "ASAN_OPTIONS",
                 "UBSAN_OPTIONS", "LSAN_OPTIONS", "LD_PRELOAD", "LD_LIBRARY_PATH",
                 "HP_HELPER_LIFETIME", "VALGRIND_OPTS")


def base_env(**extra):
    """A small, known environment for the agent (so a worker's printed
    environment stays one short line), plus `extra`. A value of None
    removes the key."""
    env = {k: os.environ[k] for k in _PASS_THROUGH if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


# ---------------------------------------------------------------------------
# /proc helpers

def proc_stat(pid):
    """(state, ppid) of pid, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    rest = data[data.rfind(")") + 2:].split()
    return rest[0], int(rest[1])


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return "?"


def proc_status_field(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def all_ppids():
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st:
                out[int(d)] = st
    return out


def descendants(root):
    """Live (non-zombie) descendants of root, from one /proc scan."""
    table = all_ppids()
    kids = {}
    for pid, (state, ppid) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return [p for p in out if table.get(p, ("Z",))[0] not in ("Z", "X")]


def alive(pid):
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


# ---------------------------------------------------------------------------
# Process tracking

class _Tracker:
    """pidfds of every process a test has seen; shared by all runs."""

    def __init__(self):
        self.lock = threading.Lock()
        self.fds = {}  # pid -> (pidfd, description)
        self.popen_pids = set()

    def track(self, pid, what=""):
        with self.lock:
            if pid in self.fds or pid == os.getpid():
                return
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                return  # already gone and reaped
            self.fds[pid] = (fd, what or proc_cmdline(pid))

    def survivors(self, timeout):
        """Tracked processes still running after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self.lock:
            pending = dict(self.fds)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            poller = select.poll()
            byfd = {}
            for pid, (fd, what) in pending.items():
                poller.register(fd, select.POLLIN)
                byfd[fd] = pid
            for fd, _ in poller.poll(left * 1000):
                pending.pop(byfd[fd], None)
        return {pid: what for pid, (fd, what) in pending.items()}

    def orphans_of_ours(self):
        """Live children of the test process that no Popen owns: processes
        the agent let escape (we are their subreaper)."""
        me = os.getpid()
        out = []
        for pid, (state, ppid) in all_ppids().items():
            if ppid == me and pid not in self.popen_pids and state not in ("Z", "X"):
                out.append(pid)
        return out

    def reap_orphan_zombies(self):
        me = os.getpid()
        for pid, (state, ppid) in all_ppids().items():
            if ppid == me and pid not in self.popen_pids and state in ("Z", "X"):
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass

    def reset(self):
        with self.lock:
            for fd, _ in self.fds.values():
                os.close(fd)
            self.fds.clear()


TRACKER = _Tracker()

_PID_LINE = re.compile(r"\b(?:ready pid|orphan pid|exit-with rank \S+ attempt \S+ pid) (\d+)")


# ---------------------------------------------------------------------------
# Running a process

class Run:
    """One child process (normally hyperpodrun) with its output captured.

    Lines are kept per stream ('out', 'err') and in arrival order ('all').
    Every line is echoed to our stderr so meson's log shows the run."""

    def __init__(self, argv, env=None, cwd=None, label="run", track_pids=True,
                 stdin=subprocess.DEVNULL):
        self.argv = list(argv)
        self.label = label
        self.track_pids = track_pids
        self.cond = threading.Condition()
        self.lines = {"out": [], "err": []}
        self.all = []  # (stream, line)
        self.open_streams = 2
        self.start_time = time.monotonic()
        print(f"[{label}] $ {shlex.join(self.argv)}", file=sys.stderr, flush=True)
        self.proc = subprocess.Popen(self.argv, env=env, cwd=cwd, stdin=stdin,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        TRACKER.popen_pids.add(self.proc.pid)
        self.pid = self.proc.pid
        self.returncode = None
        self._threads = [
            threading.Thread(target=self._reader, args=(self.proc.stdout, "out"), daemon=True),
            threading.Thread(target=self._reader, args=(self.proc.stderr, "err"), daemon=True),
        ]
        self._stop_scan = threading.Event()
        self._threads.append(threading.Thread(target=self._scanner, daemon=True))
        for t in self._threads:
            t.start()

    # -- capture ------------------------------------------------------------
    def _reader(self, pipe, stream):
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            print(f"[{self.label} {stream}] {line}", file=sys.stderr, flush=True)
            if self.track_pids:
                m = _PID_LINE.search(line)
                if m:
                    TRACKER.track(int(m.group(1)), line)
            with self.cond:
                self.lines[stream].append(line)
                self.all.append((stream, line))
                self.cond.notify_all()
        pipe.close()
        with self.cond:
            self.open_streams -= 1
            self.cond.notify_all()

    def _scanner(self):
        # Not synchronisation: a record of every descendant we can see, so
        # the survivor check covers processes that print no pid.
        while not self._stop_scan.is_set():
            for pid in descendants(self.proc.pid):
                TRACKER.track(pid)
            if self.proc.poll() is not None:
                break
            self._stop_scan.wait(0.02)

    # -- queries ------------------------------------------------------------
    def _source(self, stream):
        if stream == "all":
            return [line for _, line in self.all]
        return self.lines[stream]

    def text(self, stream="all"):
        with self.cond:
            return "\n".join(self._source(stream))

    def output(self, stream="all"):
        with self.cond:
            return list(self._source(stream))

    def tail(self, n=40):
        with self.cond:
            return "\n".join(f"  {s}: {l}" for s, l in self.all[-n:])

    def wait_lines(self, regex, count, timeout=10.0, stream="all"):
        """Waits until `count` lines of `stream` match `regex` (re.search);
        returns their match objects. Fails at the deadline or when the
        streams close first."""
        rx = re.compile(regex)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [m for m in (rx.search(l) for l in self._source(stream)) if m]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0 or self.open_streams == 0:
                    why = "timed out" if left <= 0 else "output closed"
                    raise AssertionError(
                        f"{why} waiting for {count} line(s) /{regex}/ on {stream} "
                        f"(got {len(found)}); last output:\n{self.tail()}")
                self.cond.wait(left)

    def wait_line(self, regex, timeout=10.0, stream="all"):
        return self.wait_lines(regex, 1, timeout, stream)[0]

    def matches(self, regex, stream="all"):
        rx = re.compile(regex)
        with self.cond:
            return [m for m in (rx.search(l) for l in self._source(stream)) if m]

    # -- control ------------------------------------------------------------
    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def wait(self, timeout=30.0):
        """Exit status as the shell reports it (128+signo for a signal)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.label} did not exit within {timeout}s; last output:\n{self.tail()}")
        self._finish_output(timeout=10)
        self.returncode = 128 - rc if rc < 0 else rc
        self.elapsed = time.monotonic() - self.start_time
        return self.returncode

    def _finish_output(self, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.open_streams > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    # A descendant still holds our pipes; the survivor
                    # check reports it.
                    return
                self.cond.wait(left)

    def running(self):
        return self.proc.poll() is None

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.kill()
            self.proc.wait()
        self._stop_scan.set()


def agent_argv(args, server=True, wrapper=()):
    """hyperpodrun's argv: the server on loopback and an ephemeral port
    first, then the test's own flags and script."""
    argv = list(wrapper) + [hyperpodrun()]
    if server:
        argv += ["--server-host", "127.0.0.1", "--server-port", "0"]
    return argv + list(args)


def parse_json_lines(lines, prefix_re=None):
    """Decodes worker lines that are JSON objects; with prefix_re, strips a
    matching prefix first (e.g. r'^\\[default\\d+\\]:')."""
    out = []
    for line in lines:
        if prefix_re:
            m = re.match(prefix_re, line)
            if not m:
                continue
            line = line[m.end():]
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


# ---------------------------------------------------------------------------
# Test case base

class ProcessTest(unittest.TestCase):
    """unittest.TestCase that owns a temp dir and every Run it starts, and
    fails when any process started by the test outlives it."""

    survivor_timeout = 5.0

    def setUp(self):
        TRACKER.reset()
        self.runs = []
        self.tmp = tempfile.mkdtemp(prefix="hp-test-")
        self.addCleanup(self._cleanup)

    def agent(self, args, env=None, server=True, wrapper=(), label="hyperpodrun",
              track_pids=True, cwd=None):
        r = Run(agent_argv(args, server, wrapper), env=env if env is not None else base_env(),
                cwd=cwd or self.tmp, label=label, track_pids=track_pids)
        self.runs.append(r)
        return r

    def run_cmd(self, argv, env=None, label="cmd", cwd=None, track_pids=True):
        r = Run(argv, env=env if env is not None else base_env(), cwd=cwd or self.tmp,
                label=label, track_pids=track_pids)
        self.runs.append(r)
        return r

    def assertExit(self, run, expected, timeout=30.0):
        rc = run.wait(timeout)
        if isinstance(expected, (tuple, list, set)):
            ok = rc in expected
        else:
            ok = rc == expected
        self.assertTrue(ok, f"{run.label} exited {rc}, expected {expected}; "
                            f"last output:\n{run.tail()}")
        return rc

    def _cleanup(self):
        problems = []
        for r in self.runs:
            if r.running():
                problems.append(f"{r.label} (pid {r.pid}) still running at the end")
                r.kill()
            r._stop_scan.set()
        left = TRACKER.survivors(self.survivor_timeout)
        for pid in TRACKER.orphans_of_ours():
            if pid not in left:
                left[pid] = proc_cmdline(pid)
        for pid, what in left.items():
            problems.append(f"pid {pid} survived the test: {what}")
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        # Reap what we inherited as subreaper (including the survivors just
        # killed) so one test's leftovers never show up in the next.
        for pid in list(left):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        TRACKER.reap_orphan_zombies()
        TRACKER.reset()
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)
        if problems:
            self.fail("processes outlived the test:\n  " + "\n  ".join(problems))


def require_binary():
    path = hyperpodrun()
    if not os.access(path, os.X_OK):
        print(f"hyperpodrun not built at {path}", file=sys.stderr)
        sys.exit(HARD_ERROR)


def main():
    """unittest.main that maps 'everything skipped' to exit 77 (meson's
    skip) and a missing binary to 99."""
    require_binary()
    unittest_main.run()


# ---------------------------------------------------------------------------
# Optional dependencies

SYSTEM_PYTHON = "/usr/bin/python3"
TORCHRUN = "/usr/bin/torchrun"


def have_torch():
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return False
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import torch, torch.distributed"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=120)
    return r.returncode == 0


_UNSHARE_TRIES = (
    ["unshare", "--pid", "--fork", "--mount-proc"],
    # Not root: a user namespace makes the pid namespace possible.
    ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"],
)


def unshare_pid_argv():
    """The unshare command line that gives a fresh pid namespace here, or
    None when none is permitted."""
    for argv in _UNSHARE_TRIES:
        try:
            r = subprocess.run(argv + ["true"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return argv
    return None


def can_unshare_pid():
    return unshare_pid_argv() is not None
