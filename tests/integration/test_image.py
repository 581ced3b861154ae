#!/usr/bin/env python3
"""Suite `image`: docker/'s images built and run for real.

A private dockerd (dockerd.py: own socket, data-root, exec-root; overlay2,
else vfs), base images `debian:bookworm` and `debian:bookworm-slim`
imported from a debootstrap root (debroot.py: no registry is reachable),
then docker/Dockerfile built with the legacy builder (which reads only the
root .dockerignore) and with BuildKit (offline: no `# syntax` line), and
docker/Dockerfile.training-example with BuildKit, and the images run:

  * `--version`;
  * the build context holds no .git and no build directory;
  * a local 2-worker job in which one worker fails once and is restarted;
  * /status through a port published on 127.0.0.1;
  * `docker stop` with a worker that ignores SIGTERM: hyperpodrun SIGKILLs
    it after --shutdown-timeout and exits 143, within --shutdown-timeout +
    STOP_SLACK s, before the engine's own SIGKILL (which would be 137);
    the training image's entrypoint defaults do so under `docker stop`'s
    default 10 s;
  * orphans of a worker reparented to hyperpodrun (PID 1) are reaped;
  * operator mode across two containers on a user-defined network, driven
    by the operator emulator (hp_operator.py): a fault, a restart with
    faultCount 1, completion, /shutdown;
  * the training example: real torch gloo ranks in two containers through
    an in-process restart (tests/integration/ipr_gloo.py), driven the same
    way.

Everything made is removed at the end, on failure too. Exits 77 only where
no engine can start (not root, no dockerd). The build stage's own tests
are skipped (RUN_TESTS=0: the suite ran them already) unless
HP_IMAGE_RUN_TESTS=1. Run: `./run-tests.sh build --suite image`.
"""
import json
import os
import re
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
import dockerd  # noqa: E402
import hp_operator  # noqa: E402
import unittest_main  # noqa: E402

SRC = os.environ.get("HP_SOURCE_DIR") or os.path.abspath(os.path.join(HERE, "..", ".."))
IMAGE = "hyperpodrun:latest"
IMAGE_BUILDKIT = "hyperpodrun:buildkit"
TRAINING = "hyperpodrun-training:test"
BUILD_STAGE = "hyperpodrun-build:test"
# docker/README.md: hyperpodrun exits at most this long after
# --shutdown-timeout has passed (reaping, logging, closing the server).
STOP_SLACK = 2.0
GLOO_RUN = re.compile(r"gloo run rank (\d) world (\d) restart (\d) pid (\d+) sum (\d+)$")

WORKERS = {
    # local and operator mode: group rank 1's worker fails in attempt 0
    "fail_once.sh": """#!/bin/sh
echo "worker rank $RANK attempt $JOB_RESTART_COUNT"
if [ "$JOB_RESTART_COUNT" = 0 ] && [ "$RANK" = 1 ]; then exit 3; fi
exit 0
""",
    # SIG_IGN is inherited across exec: sleep ignores SIGTERM too
    "stubborn.sh": """#!/bin/sh
trap '' TERM
echo "stubborn ready pid $$"
exec sleep 1000
""",
    # three processes orphaned at once, each ending 0.3 s later
    "orphans.sh": """#!/bin/sh
for i in 1 2 3; do sh -c 'sleep 0.3 & echo "orphan pid $!"'; done
echo "orphans made"
exec sleep 1000
""",
    "idle.sh": """#!/bin/sh
echo "idle ready"
exec sleep 1000
""",
}


def say(text):
    print(text, flush=True)


class Logs:
    """`docker logs -f` of a container, read on a thread: wait for a line."""

    def __init__(self, engine, name):
        self.p = engine.popen("logs", "-f", name, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.p.stdout:
            with self.cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self.cond.notify_all()

    def wait(self, pattern, timeout=60):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line /{pattern}/ within {timeout} s; got:\n"
                                         + "\n".join(self.lines[-40:]))
                self.cond.wait(left)

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        self.p.stdout.close()


class ImageTest(unittest.TestCase):
    engine = None

    @classmethod
    def setUpClass(cls):
        try:
            cls.engine = dockerd.Dockerd(log=say)
        except dockerd.EngineError as e:
            raise unittest.SkipTest(f"no Docker engine can start here: {e}")
        try:
            cls._prepare()
        except BaseException:
            cls.engine.close()
            cls.engine = None
            raise

    @classmethod
    def _prepare(cls):
        e = cls.engine
        t0 = time.monotonic()
        tar = debroot.tarball(log=sys.stdout)
        e.run("import", tar, "debian:bookworm")
        e.run("tag", "debian:bookworm", "debian:bookworm-slim")
        say(f"image: base images imported in {time.monotonic() - t0:.0f} s")
        run_tests = os.environ.get("HP_IMAGE_RUN_TESTS", "0")
        t0 = time.monotonic()
        e.run("build", "--network", "host", "--build-arg", f"RUN_TESTS={run_tests}",
              "-f", os.path.join(SRC, "docker", "Dockerfile"), "-t", IMAGE, SRC,
              env={"DOCKER_BUILDKIT": "0"}, timeout=1500)
        say(f"image: docker/Dockerfile (legacy builder) built in {time.monotonic() - t0:.0f} s")
        # The same file with BuildKit: offline only without a `# syntax`
        # line; the build stage's layers differ, so this is a second build.
        t0 = time.monotonic()
        e.run("build", "--network", "host", "--progress", "plain", "--build-arg",
              f"RUN_TESTS={run_tests}", "-f", os.path.join(SRC, "docker", "Dockerfile"),
              "-t", IMAGE_BUILDKIT, SRC, env={"DOCKER_BUILDKIT": "1"}, timeout=1500)
        say(f"image: docker/Dockerfile (BuildKit) built in {time.monotonic() - t0:.0f} s")
        e.run("build", "--network", "host", "--build-arg", f"RUN_TESTS={run_tests}",
              "--target", "build", "-f", os.path.join(SRC, "docker", "Dockerfile"),
              "-t", BUILD_STAGE, SRC, env={"DOCKER_BUILDKIT": "0"}, timeout=600)
        t0 = time.monotonic()
        e.run("build", "--network", "host", "--progress", "plain",
              "-f", os.path.join(SRC, "docker", "Dockerfile.training-example"),
              "-t", TRAINING, SRC, env={"DOCKER_BUILDKIT": "1"}, timeout=1500)
        say(f"image: Dockerfile.training-example (BuildKit) built in "
            f"{time.monotonic() - t0:.0f} s")
        cls.jobdir = tempfile.mkdtemp(prefix="hp-image-job-")
        for name, text in WORKERS.items():
            path = os.path.join(cls.jobdir, name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o755)
        os.chmod(cls.jobdir, 0o755)
        cls.net = e.network(f"hp-image-{os.getpid()}")

    @classmethod
    def tearDownClass(cls):
        if cls.engine is not None:
            cls.engine.close()
        if getattr(cls, "jobdir", None):
            subprocess.run(["rm", "-rf", cls.jobdir])

    def setUp(self):
        self.names = []
        self.logs = []

    def tearDown(self):
        for lg in self.logs:
            lg.close()
        if self.names:
            self.engine.run("rm", "-f", *self.names, check=False)

    # --- helpers ---------------------------------------------------------
    def docker(self, *args, **kw):
        return self.engine.run(*args, **kw)

    def container(self, name, image, args, network=None, publish=False, env=None,
                  volumes=(), entrypoint=None):
        """docker run -d; returns the host port of 8080 when published."""
        name = f"{name}-{os.getpid()}"
        argv = ["run", "-d", "--name", name, "--network", network or "none",
                "-v", f"{self.jobdir}:/job:ro"]
        for v in volumes:
            argv += ["-v", v]
        for k, v in (env or {}).items():
            argv += ["-e", f"{k}={v}"]
        if publish:
            argv += ["-p", "127.0.0.1::8080"]
        if entrypoint:
            argv += ["--entrypoint", entrypoint]
        self.docker(*argv, image, *args)
        self.names.append(name)
        self.logs.append(Logs(self.engine, name))
        port = None
        if publish:
            out = self.docker("port", name, "8080/tcp").stdout.split()[0]
            port = int(out.rsplit(":", 1)[1])
        return name, self.logs[-1], port

    def exit_code(self, name, timeout=60):
        r = self.docker("wait", name, timeout=timeout)
        return int(r.stdout.strip())

    def ip(self, name):
        out = self.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", name).stdout
        return json.loads(out)[self.net]["IPAddress"]

    # --- the tests -------------------------------------------------------
    def test_version(self):
        with open(os.path.join(SRC, "meson.build")) as f:
            version = re.search(r"version:\s*'([^']+)'", f.read()).group(1)
        for image in (IMAGE, IMAGE_BUILDKIT):
            r = self.docker("run", "--rm", "--network", "none", image, "--version")
            self.assertIn(version, r.stdout + r.stderr, image)
        r = self.docker("run", "--rm", "--network", "none", TRAINING, "--help")
        self.assertIn("--inprocess-restart", r.stdout + r.stderr)  # via the entrypoint

    def test_build_context_holds_no_git_or_build_dirs(self):
        r = self.docker("run", "--rm", "--network", "none", "--entrypoint", "sh", BUILD_STAGE,
                        "-c", "ls -a /src")
        names = r.stdout.split()
        self.assertIn("meson.build", names)
        self.assertNotIn(".git", names, "the .dockerignore lets .git into the context")
        self.assertEqual([n for n in names if n.startswith("build")], [])

    def test_local_job_restarts_a_failed_worker(self):
        name, logs, _ = self.container("hp-local", IMAGE, [
            "--nnodes=1", "--nproc-per-node=2", "--max-restarts=1", "--no-python",
            "/job/fail_once.sh"])
        self.assertEqual(self.exit_code(name), 0, "\n".join(logs.lines[-30:]))
        logs.wait(r"worker rank 1 attempt 1$")
        logs.wait(r"restarting the worker group \(1 of 1")

    def test_status_through_a_published_port(self):
        name, logs, port = self.container("hp-status", IMAGE, [
            "--nnodes=1", "--rdzv-backend=hyperpod", "--no-python", "/job/idle.sh"],
            network=self.net, publish=True)
        published = self.docker("port", name, "8080/tcp").stdout.split()
        self.assertEqual(published, [f"127.0.0.1:{port}"], "published beyond loopback")
        st = hp_operator.wait_state(port, "ready", 60)
        self.assertEqual(sorted(st["transitions"]), ["INIT", "READY"])
        self.assertTrue(st.get("agent_version"))
        m = hp_operator.request(port, "GET", "/metrics")
        self.assertEqual(m.code, 200)
        self.assertIn('hyperpodrun_agent_state{state="ready"} 1', m.body)

    def test_docker_stop_escalates_and_exits_143(self):
        timeout = 3
        name, logs, _ = self.container("hp-stop", IMAGE, [
            "--nnodes=1", "--nproc-per-node=1", "--shutdown-signal=SIGTERM",
            f"--shutdown-timeout={timeout}", "--no-python", "/job/stubborn.sh"])
        logs.wait(r"stubborn ready")
        t0 = time.monotonic()
        self.docker("stop", "-t", "10", name)  # docker's default grace period
        took = time.monotonic() - t0
        code = self.exit_code(name)
        say(f"image: docker stop took {took:.2f} s (--shutdown-timeout {timeout})")
        self.assertEqual(code, 143, "\n".join(logs.lines[-20:]))
        self.assertGreaterEqual(took, timeout - 0.5)
        self.assertLess(took, timeout + STOP_SLACK)
        logs.wait(r"sending SIGKILL", 5)

    def test_training_entrypoint_defaults_fit_docker_stop(self):
        # Operator mode: the workers start on /start. The defaults
        # (HP_SHUTDOWN_TIMEOUT 8 s) must escalate inside docker stop's 10 s.
        name, logs, port = self.container("hp-defaults", TRAINING, [
            "--no-python", "/job/stubborn.sh"], network=self.net, publish=True,
            env={"HP_NPROC_PER_NODE": "1"})
        hp_operator.wait_state(port, "ready", 60)
        hp_operator.start(port, 0, 1, 0, "127.0.0.1", 29500)
        logs.wait(r"stubborn ready")
        t0 = time.monotonic()
        self.docker("stop", name)  # no -t: the engine's default 10 s
        took = time.monotonic() - t0
        say(f"image: docker stop with the entrypoint's defaults took {took:.2f} s")
        self.assertEqual(self.exit_code(name), 143,
                         "the engine, not hyperpodrun, killed the container:\n"
                         + "\n".join(logs.lines[-20:]))
        self.assertLess(took, 8 + STOP_SLACK)

    def test_orphans_are_reaped(self):
        name, logs, _ = self.container("hp-orphans", IMAGE, [
            "--nnodes=1", "--nproc-per-node=1", "--no-python", "/job/orphans.sh"])
        logs.wait(r"orphans made")
        pids = [m for m in re.findall(r"orphan pid (\d+)", "\n".join(logs.lines))]
        self.assertEqual(len(pids), 3, logs.lines)
        check = "for p in %s; do [ -e /proc/$p ] && cat /proc/$p/stat; done; true" % " ".join(pids)
        deadline = time.monotonic() + 15
        while True:
            left = self.docker("exec", name, "sh", "-c", check).stdout.strip()
            if not left:
                break  # every orphan ended and was reaped
            if time.monotonic() > deadline:
                self.fail(f"orphans not reaped by PID 1 (state Z = zombie):\n{left}")
            time.sleep(0.2)  # the orphans sleep 0.3 s before they end
        one = self.docker("exec", name, "cat", "/proc/1/cmdline").stdout
        self.assertTrue(one.startswith("hyperpodrun"), one)
        self.docker("stop", "-t", "10", name)

    def test_operator_mode_across_two_containers(self):
        ports, names, logs = [], [], []
        for rank in range(2):
            name, lg, port = self.container(f"hp-op{rank}", IMAGE, [
                "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=hyperpod",
                "--no-python", "/job/fail_once.sh"], network=self.net, publish=True)
            ports.append(port)
            names.append(name)
            logs.append(lg)
        job = hp_operator.Job(ports, master_addr=self.ip(names[0]), master_port=29500)
        done = job.run(180, max_restarts=1, log=lambda t: say("operator: " + t))
        self.assertTrue(done, "the job did not complete")
        self.assertEqual(job.fault_count, 1)
        for name, lg in zip(names, logs):
            self.assertEqual(self.exit_code(name), 0, "\n".join(lg.lines[-30:]))
        logs[1].wait(r"worker rank 1 attempt 0$")
        logs[1].wait(r"worker rank 1 attempt 1$")
        logs[0].wait(r"worker rank 0 attempt 1$")

    def test_training_example_gloo_across_containers_in_process_restart(self):
        ports, names, logs = [], [], []
        for rank in range(2):
            name, lg, port = self.container(f"hp-train{rank}", TRAINING, [
                "/src/tests/integration/ipr_gloo.py"], network=self.net, publish=True,
                volumes=[f"{SRC}:/src:ro"],
                env={"HP_NNODES": "2", "HP_NPROC_PER_NODE": "1",
                     "HP_INPROCESS_RESTART": "1", "HP_INPROCESS_TIMEOUT": "120",
                     "HP_SOURCE_DIR": "/src", "PYTHONDONTWRITEBYTECODE": "1",
                     "GLOO_SOCKET_IFNAME": "eth0"})
            ports.append(port)
            names.append(name)
            logs.append(lg)
        job = hp_operator.Job(ports, master_addr=self.ip(names[0]), master_port=29500)
        done = job.run(400, max_restarts=1, log=lambda t: say("operator: " + t))
        codes = [self.exit_code(n, timeout=120) for n in names]
        out = [lg.lines for lg in logs]
        self.assertTrue(done, "\n".join(out[0][-30:] + out[1][-30:]))
        self.assertEqual(codes, [0, 0], "\n".join(out[0][-30:] + out[1][-30:]))
        runs = []
        for lines in out:
            runs += [tuple(int(x) for x in m.groups())
                     for m in (GLOO_RUN.search(l) for l in lines) if m]
        # restart 0: sum of (rank + 1) = 3; restart 1: 2 * (rank + 1) summed = 6
        self.assertEqual(sorted((rk, w, c, s) for rk, w, c, _, s in runs),
                         [(0, 2, 0, 3), (0, 2, 1, 6), (1, 2, 0, 3), (1, 2, 1, 6)])
        pid = {}
        for rk, _, c, p, _ in runs:
            self.assertEqual(pid.setdefault(rk, p), p,
                             f"rank {rk} ran restart {c} in a new process: not in-process")


def _on_term(signo, frame):
    # meson's timeout (SIGTERM): remove the engine and all it made anyway
    if ImageTest.engine is not None:
        ImageTest.engine.close()
    os._exit(128 + signo)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_term)
    unittest_main.run()
