"""dockerd.py — a private Docker engine for the `image` suite.

What it owns: one dockerd (Debian's docker.io) started for a test run with
everything of its own under one temporary directory — socket, data-root,
exec-root (its containerd's state too), pidfile, log — so it neither sees
nor touches an engine the machine may run; storage overlay2, else vfs
where overlay2 cannot mount. Networking: no default bridge (--bridge=none)
and no iptables rules (--iptables=false): builds use the host's network
(`docker build --network host`) to reach the Debian mirror, containers run
on user-defined networks this module makes, and a port published on
127.0.0.1 goes through docker-proxy. `close()` removes every container and
network it made, stops dockerd (SIGTERM, then SIGKILL), unmounts whatever
is left under the directory and deletes it; it runs on failure too.
Stdlib only; needs root.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

# Debian's client first: another docker on PATH may want a buildx plugin.
CLIENTS = ("/usr/bin/docker",)


def docker_client():
    for c in CLIENTS:
        if os.access(c, os.X_OK):
            return c
    return shutil.which("docker")


class EngineError(Exception):
    """No engine could be started here (the suite then skips)."""


class Dockerd:
    def __init__(self, log=print, start_timeout=60):
        self.log = log
        if os.geteuid() != 0:
            raise EngineError("not root: dockerd needs root")
        self.dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        self.client = docker_client()
        if not os.access(self.dockerd, os.X_OK) or not self.client:
            raise EngineError("no dockerd/docker (deps/install.sh image)")
        # short path: containerd's sockets live under exec-root (108-byte limit)
        self.dir = tempfile.mkdtemp(prefix="hpd-", dir="/var/tmp")
        self.sock = os.path.join(self.dir, "docker.sock")
        self.proc = None
        self.networks = []
        self.driver = None
        errors = []
        try:
            for driver in ("overlay2", "vfs"):
                try:
                    self._start(driver, start_timeout)
                    self.driver = driver
                    break
                except EngineError as e:
                    errors.append(f"{driver}: {e}")
                    self._stop_daemon()
            if self.driver is None:
                raise EngineError("dockerd did not start: " + "; ".join(errors))
        except BaseException:
            self.close()
            raise
        self.log(f"dockerd: up on {self.sock} with {self.driver}")

    def _start(self, driver, timeout):
        sub = os.path.join(self.dir, driver)
        os.makedirs(sub, exist_ok=True)
        self.logfile = os.path.join(sub, "dockerd.log")
        argv = [self.dockerd, "--host", "unix://" + self.sock,
                "--data-root", os.path.join(sub, "data"),
                "--exec-root", os.path.join(sub, "x"),
                "--pidfile", os.path.join(sub, "docker.pid"),
                "--storage-driver", driver,
                "--bridge=none", "--iptables=false", "--ip-masq=false",
                "--ipv6=false"]
        with open(self.logfile, "w") as logf:
            self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineError(f"exited {self.proc.returncode}: {self._log_tail()}")
            r = self.run("info", "--format", "{{json .Driver}}", check=False, timeout=10)
            if r.returncode == 0:
                got = json.loads(r.stdout)
                if got != driver:
                    raise EngineError(f"runs {got}, not {driver}")
                return
            time.sleep(0.2)  # polling the socket until dockerd answers
        raise EngineError(f"no answer within {timeout} s: {self._log_tail()}")

    def _log_tail(self):
        try:
            with open(self.logfile) as f:
                return f.read()[-1500:]
        except OSError:
            return ""

    def env(self):
        env = dict(os.environ, DOCKER_HOST="unix://" + self.sock)
        env.pop("DOCKER_CONTEXT", None)
        return env

    def run(self, *args, check=True, timeout=600, input=None, env=None):
        """The docker client against this engine; CompletedProcess (text)."""
        r = subprocess.run([self.client, *args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=timeout,
                           input=input, env=dict(self.env(), **(env or {})))
        if check and r.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {r.returncode}:\n"
                                 f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r

    def popen(self, *args, **kw):
        return subprocess.Popen([self.client, *args], env=self.env(), **kw)

    def network(self, name):
        self.run("network", "create", name)
        self.networks.append(name)
        return name

    def _stop_daemon(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # containerd and its shims are dockerd's: in its session
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            r = self.run("ps", "-aq", check=False, timeout=60)
            ids = r.stdout.split()
            if ids:
                self.run("rm", "-f", "-v", *ids, check=False, timeout=120)
            for net in self.networks:
                self.run("network", "rm", net, check=False, timeout=60)
        self._stop_daemon()
        # shims that outlived dockerd still hold their bundle under exec-root
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if self.dir.encode() in f.read():
                            os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f]
        for m in sorted((m for m in mounts if m.startswith(self.dir + "/")), reverse=True):
            subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", "--one-file-system", self.dir])
        self.log("dockerd: stopped and removed")
