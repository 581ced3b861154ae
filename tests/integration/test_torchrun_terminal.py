"""torchrun parity at a terminal and for newer command lines (issue 15,
TORCHRUN.md "At a terminal"), each through the real binary:
  * a worker at a pseudo-terminal can read it (input()), because at a
    terminal the workers stay in its foreground process group; Ctrl-C there
    stops everything and what a worker left behind dies too;
  * a second SIGINT ends the stop wait at once;
  * --run-path failures carry the traceback (torchrun's @record);
  * without --log-dir the error file the summary names still exists;
  * a directory or zip with __main__.py runs as the script;
  * c10d picks a free MASTER_PORT, so two jobs run side by side;
  * a torch 2.x command line parses.
Python workers use /usr/bin/python3 or sys.executable (no torch needed)."""

import fcntl
import os
import re
import select
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
import zipfile

import harness

PY = sys.executable


def pgid(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    return int(data[data.rfind(")") + 2:].split()[2])


class PtyRun:
    """hyperpodrun with a pseudo-terminal as its controlling terminal and
    stdin/stdout/stderr, the session leader and so the foreground group."""

    def __init__(self, argv, env, cwd):
        self.master, slave = os.openpty()
        self.buf = b""
        self.cond = threading.Condition()
        self.closed = False

        def ctty():
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        print(f"[pty] $ {' '.join(argv)}", file=sys.stderr, flush=True)
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=slave, stdout=slave,
                                     stderr=slave, start_new_session=True, preexec_fn=ctty)
        os.close(slave)
        harness.TRACKER.popen_pids.add(self.proc.pid)
        self.t = threading.Thread(target=self._reader, daemon=True)
        self.t.start()
        self.scan_stop = threading.Event()
        threading.Thread(target=self._scanner, daemon=True).start()

    def _reader(self):
        while True:
            try:
                r, _, _ = select.select([self.master], [], [], 0.5)
                if not r:
                    if self.proc.poll() is not None:
                        break
                    continue
                data = os.read(self.master, 4096)
            except OSError:
                break
            if not data:
                break
            sys.stderr.write(data.decode("utf-8", "replace"))
            with self.cond:
                self.buf += data
                self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def _scanner(self):
        while not self.scan_stop.is_set():
            for pid in harness.descendants(self.proc.pid):
                harness.TRACKER.track(pid)
            if self.proc.poll() is not None:
                break
            self.scan_stop.wait(0.02)

    def wait_for(self, regex, timeout=20):
        rx = re.compile(regex.encode())
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                m = rx.search(self.buf)
                if m:
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise AssertionError(f"no /{regex}/ on the terminal; got:\n"
                                         f"{self.buf.decode('utf-8', 'replace')[-3000:]}")
                self.cond.wait(left)

    def write(self, data):
        os.write(self.master, data)

    def wait(self, timeout=30):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"hyperpodrun did not exit within {timeout}s; terminal:\n"
                                 f"{self.buf.decode('utf-8', 'replace')[-3000:]}")
        self.t.join(5)
        return 128 - rc if rc < 0 else rc

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait()
        self.scan_stop.set()
        try:
            os.close(self.master)
        except OSError:
            pass


class Terminal(harness.ProcessTest):
    def pty(self, args, env=None):
        r = PtyRun(harness.agent_argv(args), env or harness.base_env(), self.tmp)
        self.addCleanup(r.kill)
        return r

    def script(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_worker_reads_the_terminal(self):
        # Under torchrun a worker's input()/breakpoint() reads the terminal;
        # a worker outside the foreground group would be stopped (SIGTTIN).
        w = self.script("ask.py", "import os\n"
                        "print('pgrp', os.getpgrp(), 'pid', os.getpid(), flush=True)\n"
                        "s = input('name? ')\n"
                        "print('hello ' + s[::-1], flush=True)\n")
        r = self.pty(["--nproc-per-node", "1", w], env=harness.base_env(PYTHON=PY))
        m = r.wait_for(r"pgrp (\d+) pid (\d+)")
        self.assertEqual(int(m.group(1)), r.proc.pid,
                         "the worker is in the agent's (the terminal's foreground) group")
        r.wait_for(r"name\? ")
        r.write(b"dlrow\n")
        r.wait_for(r"hello world")
        self.assertEqual(r.wait(), 0)

    def test_ctrl_c_at_the_terminal_leaves_nothing(self):
        # ^C reaches the whole foreground group; a grandchild that ignores
        # SIGINT (and the SIGHUP of the session's end) and outlives its
        # worker is killed by pid when the agent ends.
        w = self.script("w.py", "import os, subprocess, sys, time\n"
                        "c = subprocess.Popen([sys.executable, '-c', 'import os, signal, time; "
                        "signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGHUP, signal.SIG_IGN); "
                        "os.write(1, (\"ready pid %d\\\\n\" % os.getpid()).encode()); time.sleep(600)'])\n"
                        "os.write(1, ('worker pid %d\\n' % os.getpid()).encode())\n"
                        "time.sleep(600)\n")
        r = self.pty(["--nproc-per-node", "2", w], env=harness.base_env(PYTHON=PY))
        deadline = time.monotonic() + 20
        with r.cond:
            while len(re.findall(rb"ready pid (\d+)", r.buf)) < 2 or \
                    len(re.findall(rb"worker pid", r.buf)) < 2:
                left = deadline - time.monotonic()
                self.assertGreater(left, 0, "workers and grandchildren did not start")
                r.cond.wait(left)
            kids = [int(p) for p in re.findall(rb"ready pid (\d+)", r.buf)]
        for k in kids:
            harness.TRACKER.track(k, "grandchild")
        r.write(b"\x03")
        self.assertEqual(r.wait(), 130)
        for k in kids:
            st = harness.proc_stat(k)
            self.assertTrue(st is None or st[0] in ("Z", "X"), f"grandchild {k} outlived the agent")

    def test_no_terminal_keeps_own_groups(self):
        # Without a terminal (here: pipes) each worker still leads its group.
        w = self.script("p.py", "import os\nprint('pgrp', os.getpgrp(), 'pid', os.getpid())\n")
        r = self.agent(["--nproc-per-node", "1", w], env=harness.base_env(PYTHON=PY))
        m = r.wait_line(r"pgrp (\d+) pid (\d+)")
        self.assertEqual(m.group(1), m.group(2))
        self.assertExit(r, 0)


class SecondSigint(harness.ProcessTest):
    def test_second_sigint_ends_the_wait(self):
        # Workers that ignore SIGINT: the first ^C waits --shutdown-timeout
        # (15 s); the second kills them at once.
        w = os.path.join(self.tmp, "deaf.py")
        with open(w, "w") as f:
            f.write("import os, signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                    "os.write(1, ('ready pid %d\\n' % os.getpid()).encode())\n"
                    "time.sleep(600)\n")
        r = self.agent(["--nproc-per-node", "2", "--shutdown-signal", "SIGTERM", w],
                       env=harness.base_env(PYTHON=PY))
        r.wait_lines(r"ready pid (\d+)", 2, timeout=20)
        r.signal(signal.SIGINT)
        r.wait_line(r"received SIGINT: stopping the workers")
        r.wait_line(r"stopping 2 worker\(s\) with SIGINT")
        t0 = time.monotonic()
        r.signal(signal.SIGINT)
        self.assertExit(r, 130, timeout=20)
        self.assertLess(time.monotonic() - t0, 5, "the second SIGINT did not cut the wait short")
        r.wait_line(r"received SIGINT again: killing the workers")


class RunPathAndErrorFiles(harness.ProcessTest):
    BOOM = "import sys\nprint('argv', sys.argv, flush=True)\nraise ValueError('boom ' + sys.argv[1])\n"

    def test_run_path_summary_has_traceback_and_error_file_survives(self):
        w = os.path.join(self.tmp, "boom.py")
        with open(w, "w") as f:
            f.write(self.BOOM)
        tmpdir = os.path.join(self.tmp, "t")
        os.mkdir(tmpdir)
        r = self.agent(["--run-path", w, "xyz"],
                       env=harness.base_env(PYTHON=PY, TMPDIR=tmpdir))
        self.assertExit(r, 1)
        r.wait_line(r"argv \['.*boom.py', 'xyz'\]")
        text = r.text("err")
        self.assertIn("run_script_path FAILED", text)
        self.assertRegex(text, r"traceback : Traceback \(most recent call last\)")
        self.assertIn("raise ValueError('boom ' + sys.argv[1])", text)
        self.assertIn("ValueError: boom xyz", text)
        m = re.search(r"error_file: (\S+)", text)
        self.assertTrue(m and m.group(1).startswith(tmpdir), text[-2000:])
        # torchrun leaves its temporary log dir; the file must still exist
        self.assertTrue(os.path.isfile(m.group(1)), f"{m.group(1)} is gone after exit")

    def test_long_summary_keeps_its_root_cause(self):
        # A traceback past log.c's 4 KiB line bound: before, the block was
        # cut there and lost its end, the root cause and the closing rule.
        w = os.path.join(self.tmp, "long.py")
        with open(w, "w") as f:
            f.write("raise ValueError('\\n'.join('line %d' % i for i in range(900)))\n")
        r = self.agent(["--run-path", w], env=harness.base_env(PYTHON=PY))
        self.assertExit(r, 1)
        text = r.text("err")
        root = text.find("Root Cause (first observed failure):")
        self.assertGreater(root, 0, text[-3000:])
        self.assertIn("line 899", text[root:])
        self.assertRegex(text[root:], r"line 899\n(.*\n)*=+\n")

    def test_success_leaves_no_temp_dir(self):
        tmpdir = os.path.join(self.tmp, "t")
        os.mkdir(tmpdir)
        r = self.agent(["--no-python", "/bin/true"], env=harness.base_env(TMPDIR=tmpdir))
        self.assertExit(r, 0)
        self.assertEqual(os.listdir(tmpdir), [])

    def test_run_path_same_traceback_as_torchrun(self):
        if not os.access(harness.TORCHRUN, os.X_OK) or not harness.have_torch():
            self.skipTest("no /usr/bin/torchrun with a working torch")
        w = os.path.join(self.tmp, "boom.py")
        with open(w, "w") as f:
            f.write(self.BOOM)
        env = harness.base_env(TMPDIR=self.tmp)
        tr = self.run_cmd([harness.TORCHRUN, "--run_path", "-r", "1", "-t", "1",
                           "--master_port", str(harness.free_port()), w, "q"], env=env,
                          label="torchrun")
        self.assertExit(tr, 1, timeout=120)
        hp = self.agent(["--run_path", "-r", "1", "-t", "1", w, "q"],
                        env=dict(env, PYTHON=harness.SYSTEM_PYTHON))
        self.assertExit(hp, 1, timeout=60)

        def root(run):
            t = run.text("all")
            i = t.rfind("Root Cause")
            self.assertGreater(i, 0, t[-2000:])
            return t[i:]
        for run in (tr, hp):
            rc = root(run)
            self.assertIn("run_script_path FAILED", run.text("all"))
            self.assertIn("exitcode  : 1", rc)
            self.assertIn(f'File "{w}", line 3, in <module>', rc)
            self.assertIn("ValueError: boom q", rc)


class ScriptForms(harness.ProcessTest):
    MAIN = "import sys\nprint('main ran', __name__, sys.argv[1:], flush=True)\n"

    def test_directory_with_main(self):
        d = os.path.join(self.tmp, "app")
        os.mkdir(d)
        with open(os.path.join(d, "__main__.py"), "w") as f:
            f.write(self.MAIN)
        for flags in ([], ["--run-path"]):
            r = self.agent(flags + [d, "a", "b"], env=harness.base_env(PYTHON=PY))
            self.assertExit(r, 0)
            r.wait_line(r"main ran __main__ \['a', 'b'\]")

    def test_zip_with_main(self):
        z = os.path.join(self.tmp, "app.pyz")
        with zipfile.ZipFile(z, "w") as zf:
            zf.writestr("__main__.py", self.MAIN)
        r = self.agent([z, "c"], env=harness.base_env(PYTHON=PY))
        self.assertExit(r, 0)
        r.wait_line(r"main ran __main__ \['c'\]")

    def test_directory_without_main_is_a_usage_error(self):
        d = os.path.join(self.tmp, "empty")
        os.mkdir(d)
        r = self.agent([d], env=harness.base_env(PYTHON=PY))
        self.assertExit(r, 2)
        r.wait_line(r"is a directory without __main__.py")


BIND = """import os, socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT'])))
s.listen(1)
print('bound', os.environ['MASTER_ADDR'], os.environ['MASTER_PORT'], flush=True)
s.settimeout(60)
s.accept()
print('released', flush=True)
"""


class C10dPorts(harness.ProcessTest):
    def test_two_c10d_jobs_side_by_side(self):
        # torchtitan's documented --rdzv_endpoint=localhost:0: each job's
        # rank 0 gets a free MASTER_PORT, never a fixed 29500.
        w = os.path.join(self.tmp, "bind.py")
        with open(w, "w") as f:
            f.write(BIND)
        runs = [self.agent(["--rdzv-backend=c10d", "--rdzv_endpoint=localhost:0",
                            "--master-port", "29500", w], env=harness.base_env(PYTHON=PY),
                           label=f"job{i}") for i in range(2)]
        ports = []
        for r in runs:
            m = r.wait_line(r"bound (\S+) (\d+)", timeout=30)
            ports.append(int(m.group(2)))
            self.assertNotEqual(int(m.group(2)), 29500)
        self.assertNotEqual(ports[0], ports[1])
        for r, p in zip(runs, ports):
            socket.create_connection(("127.0.0.1", p), timeout=10).close()
            r.wait_line("released", timeout=20)
            self.assertExit(r, 0)

    def test_standalone_free_port(self):
        w = os.path.join(self.tmp, "bind.py")
        with open(w, "w") as f:
            f.write(BIND)
        r = self.agent(["--standalone", w], env=harness.base_env(PYTHON=PY))
        m = r.wait_line(r"bound (\S+) (\d+)", timeout=30)
        socket.create_connection(("127.0.0.1", int(m.group(2))), timeout=10).close()
        self.assertExit(r, 0)


class Torch2CommandLine(harness.ProcessTest):
    def test_torch2_flags_parse_and_run(self):
        # A torch 2.x user's command line, dash and underscore spellings.
        for spelling in ("-", "_"):
            def f(name):
                return "--" + name.replace("-", spelling)
            args = [f("nproc-per-node"), "2", f("logs-specs"), "default",
                    f("event-log-handler"), "null", f("numa-binding"), "node",
                    f("signals-to-handle"), "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
                    f("duplicate-stdout-filters"), "loss,,acc", f("duplicate-stderr-filters"), "",
                    f("local-ranks-filter"), "0", f("monitor-interval"), "0.1",
                    f("virtual-local-rank"), f("shutdown-timeout"), "5",
                    f("rdzv-backend"), "c10d", f("rdzv-endpoint"), "localhost:0",
                    "--no-python", harness.helper("print-env")]
            r = self.agent(args)
            self.assertExit(r, 0)
            r.wait_line(r"torch 2.x flags accepted without effect: .*logs.specs")
            envs = harness.parse_json_lines(r.output("out"))
            self.assertEqual([e["LOCAL_RANK"] for e in envs], ["0"],
                             "--local-ranks-filter=0 shows rank 0 only")
            self.assertEqual(envs[0]["WORLD_SIZE"], "2")
            self.assertNotEqual(envs[0]["MASTER_PORT"], "29500")

    def test_virtual_local_rank(self):
        # torch 2.x: LOCAL_RANK=0 everywhere, each worker sees one GPU
        for vis, want in (("3, 5", ["3", "5"]), (None, ["0", "1"])):
            r = self.agent(["--nproc-per-node=2", "--virtual_local_rank", "--no-python",
                            harness.helper("print-env")],
                           env=harness.base_env(CUDA_VISIBLE_DEVICES=vis))
            self.assertExit(r, 0)
            envs = sorted(harness.parse_json_lines(r.output("out")), key=lambda e: e["RANK"])
            self.assertEqual([e["LOCAL_RANK"] for e in envs], ["0", "0"])
            self.assertEqual([e["CUDA_VISIBLE_DEVICES"] for e in envs], want)

    def test_signals_to_handle_usr1_stops_the_workers(self):
        # SLURM users add SIGUSR1: torchrun then stops the workers with it
        r = self.agent(["--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
                        "--no-python", harness.helper("print-signals")],
                       env=harness.base_env(HP_SIGNAL_LIMIT=1))
        r.wait_line(r"ready pid \d+")
        r.signal(signal.SIGUSR1)
        self.assertExit(r, 128 + signal.SIGUSR1, timeout=30)
        r.wait_line(rf"signal {int(signal.SIGUSR1)} rank")
        r.wait_line(r"received SIGUSR1: stopping the workers")
        # without it SIGUSR1 is forwarded and the job goes on (HyperPod)
        r = self.agent(["--no-python", harness.helper("print-signals")],
                       env=harness.base_env(HP_SIGNAL_LIMIT=1))
        r.wait_line(r"ready pid \d+")
        r.signal(signal.SIGUSR1)
        r.wait_line(r"forwarding SIGUSR1 to the workers")
        self.assertExit(r, 0, timeout=30)

    def test_bad_numa_binding_is_a_usage_error(self):
        r = self.agent(["--numa-binding", "all", "--no-python", "/bin/true"])
        self.assertExit(r, 2)
        r.wait_line(r"^usage: hyperpodrun")
        r.wait_line(r"argument --numa-binding: invalid value 'all'")


if __name__ == "__main__":
    harness.main()
