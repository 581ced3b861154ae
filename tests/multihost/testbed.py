"""testbed.py -- a few hosts on a private network, made of Linux network
namespaces, for the multi-host tests (suite 'multihost').

What it owns: one namespace per host (loopback and an eth0 with a private
address 10.13.0.<i+1>/24), a hub namespace holding the bridge every host's
veth pair plugs into (and 10.13.0.254, where the operator emulator speaks
from), and the removal of all of it -- every process inside, then every
namespace -- on exit, even when the test fails or is killed by a signal.
Nothing is created in the root network namespace: each veth pair is made
inside the hub and one end moved straight into its host. Names carry the
test's pid and a random tag, so runs side by side never meet, and a sweep
removes what a SIGKILLed earlier run left behind (its pid is gone).

Standard library only (ctypes for setns).
"""
import atexit
import ctypes
import os
import random
import re
import signal
import subprocess
import threading

PREFIX = "hpmh"
SUBNET = "10.13.0"
HUB_IP = SUBNET + ".254"
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_LIVE = []  # every Testbed not yet removed, for atexit and signals
_LOCK = threading.Lock()


def ip(*args, ns=None, check=True):
    argv = (["ip", "netns", "exec", ns] if ns else []) + ["ip"] + list(args)
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(argv), r.stderr.decode().strip()))
    return r.stdout.decode()


def why_not_available():
    """None when this process may build a testbed, else the reason."""
    if os.geteuid() != 0:
        return "not root: network namespaces need CAP_SYS_ADMIN"
    for tool in ("ip", "unshare"):
        if subprocess.run(["sh", "-c", "command -v " + tool],
                          stdout=subprocess.DEVNULL).returncode != 0:
            return tool + " is not installed"
    name = "%s%dprobe%04x" % (PREFIX, os.getpid(), random.getrandbits(16))
    r = subprocess.run(["ip", "netns", "add", name], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    if r.returncode != 0:
        return "ip netns add failed: " + r.stderr.decode().strip()
    try:
        ok = subprocess.run(["ip", "netns", "exec", name, "unshare", "--pid",
                             "--fork", "--mount-proc", "true"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if ok.returncode != 0:
            return "no pid namespace inside a network namespace: " + \
                ok.stderr.decode().strip()
    finally:
        subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)
    return None


def _kill_all_in(ns):
    """SIGKILLs every process in network namespace ns, until none is left
    (a dying PID 1 of a pid namespace takes its children with it)."""
    for _ in range(50):
        out = subprocess.run(["ip", "netns", "pids", ns], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL).stdout.decode().split()
        if not out:
            return
        for pid in out:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        for pid in out:
            try:  # ours (a subreaper or parent) are reaped here
                os.waitpid(int(pid), os.WNOHANG)
            except (OSError, ValueError):
                pass
        threading.Event().wait(0.02)  # not synchronisation: a retry pace


def _delete(ns):
    _kill_all_in(ns)
    subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


def sweep_stale():
    """Removes the namespaces of earlier runs whose test process is gone."""
    rx = re.compile(r"^%s(\d+)[a-z]" % PREFIX)
    out = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL).stdout.decode()
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = rx.match(name)
        if m and not os.path.exists("/proc/%s" % m.group(1)):
            _delete(name)


class Testbed:
    """nhosts hosts on one bridge. host_ns(i) names host i's namespace,
    host_ip(i) its address; wrap(i, argv) runs argv there as PID 1 of a
    new pid namespace (the way a container runs its entrypoint)."""

    def __init__(self, nhosts):
        sweep_stale()
        self.tag = "%s%d%s%04x" % (PREFIX, os.getpid(), "x",
                                   random.getrandbits(16))
        self.hub = self.tag + "hub"
        self.hosts = [self.tag + "h%d" % i for i in range(nhosts)]
        self.removed = False
        with _LOCK:
            _LIVE.append(self)
        try:
            self._build()
        except BaseException:
            self.remove()
            raise

    def _build(self):
        for ns in [self.hub] + self.hosts:
            ip("netns", "add", ns)
            ip("link", "set", "lo", "up", ns=ns)
        ip("link", "add", "br0", "type", "bridge", ns=self.hub)
        ip("addr", "add", HUB_IP + "/24", "dev", "br0", ns=self.hub)
        ip("link", "set", "br0", "up", ns=self.hub)
        for i, ns in enumerate(self.hosts):
            port = "vh%d" % i
            ip("link", "add", port, "type", "veth", "peer", "name", "eth0",
               "netns", ns, ns=self.hub)
            ip("link", "set", port, "master", "br0", ns=self.hub)
            ip("link", "set", port, "up", ns=self.hub)
            ip("addr", "add", self.host_ip(i) + "/24", "dev", "eth0", ns=ns)
            ip("link", "set", "eth0", "up", ns=ns)

    def host_ns(self, i):
        return self.hosts[i]

    @staticmethod
    def host_ip(i):
        return "%s.%d" % (SUBNET, i + 1)

    def wrap(self, i, argv):
        """argv run inside host i, as PID 1 of its own pid namespace (with
        its own /proc); killing that PID 1 ends everything it started."""
        return ["ip", "netns", "exec", self.hosts[i], "unshare", "--pid",
                "--fork", "--mount-proc", "--kill-child"] + list(argv)

    def link(self, i, up):
        """Takes host i's eth0 down or up (its address stays)."""
        ip("link", "set", "eth0", "up" if up else "down", ns=self.hosts[i])

    def partition(self, i, on, keep_port):
        """Drops (on) or lets through again every TCP segment into host i
        but those to or from keep_port (the operator API): the fabric and
        gloo are cut off while HTTP still works."""
        ns = self.hosts[i]
        rules = [["-p", "tcp", "--dport", str(keep_port), "-j", "ACCEPT"],
                 ["-p", "tcp", "--sport", str(keep_port), "-j", "ACCEPT"],
                 ["-p", "tcp", "-j", "DROP"]]
        for rule in rules:
            argv = ["ip", "netns", "exec", ns, "iptables",
                    "-A" if on else "-D", "INPUT"] + rule
            r = subprocess.run(argv, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=30)
            if r.returncode != 0:
                raise RuntimeError("%s: %s" % (" ".join(argv),
                                               r.stderr.decode().strip()))

    def pid1(self, i):
        """The root-namespace pid of the process that is PID 1 of a pid
        namespace inside host i (its agent), or None."""
        out = subprocess.run(["ip", "netns", "pids", self.hosts[i]],
                             stdout=subprocess.PIPE).stdout.decode().split()
        for pid in out:
            try:
                with open("/proc/%s/status" % pid) as f:
                    for line in f:
                        if line.startswith("NSpid:"):
                            ids = line.split()[1:]
                            if len(ids) >= 2 and ids[-1] == "1":
                                return int(pid)
            except OSError:
                continue
        return None

    def in_hub(self):
        """A context manager: sockets made inside it live in the hub (the
        operator's seat on the bridge). Only the calling thread moves."""
        return _InNetns(self.hub)

    def remove(self):
        with _LOCK:
            if self.removed:
                return
            self.removed = True
            if self in _LIVE:
                _LIVE.remove(self)
        for ns in self.hosts + [self.hub]:
            _delete(ns)

    def leftovers(self):
        """Namespaces of this testbed that still exist (for the test's own
        check that removal worked)."""
        out = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL).stdout.decode()
        names = {l.split()[0] for l in out.splitlines() if l.split()}
        return sorted(n for n in names if n.startswith(self.tag))


class _InNetns:
    def __init__(self, ns):
        self.ns = ns

    def __enter__(self):
        self.back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        fd = os.open("/run/netns/" + self.ns, os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                e = ctypes.get_errno()
                raise OSError(e, "setns %s: %s" % (self.ns, os.strerror(e)))
        finally:
            os.close(fd)
        return self

    def __exit__(self, *exc):
        try:
            if _libc.setns(self.back, CLONE_NEWNET) != 0:
                e = ctypes.get_errno()
                raise OSError(e, "setns back: %s" % os.strerror(e))
        finally:
            os.close(self.back)
        return False


def _remove_all():
    for bed in list(_LIVE):
        bed.remove()


atexit.register(_remove_all)


def _on_signal(signo, _frame):
    _remove_all()
    os._exit(128 + signo)


for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_sig, _on_signal)
