"""Shared bits of the in-process restart tests (test_ipr_*.py): the probe
worker's records, the agent's command line and IPC socket path."""
import json
import os
import re
import socket
import struct
import subprocess

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
PROBE = os.path.join(HERE, "ipr_probe.py")

ENV_KEYS = {"RANK", "GROUP_RANK", "ROLE_RANK", "WORLD_SIZE", "GROUP_WORLD_SIZE",
            "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "JOB_RESTART_COUNT",
            "TORCHELASTIC_RESTART_COUNT", "SPARE"}

READY = r"^ipr-worker ready pid (\d+) local (\d+)$"


def record_readers(prefix, default_timeout=None):
    """records() and wait_records() for a worker that prints its events as
    'PREFIX KIND {json}' lines (PREFIX a regex: the probe's 'ipr', the
    compat workers' 'compat', raw_worker's 'raw' behind --tee's prefix)."""
    rec_rx = re.compile(r"^%s ([a-z_-]+) (\{.*\})$" % prefix)

    def records(run, kind=None, /, **where):
        """The records from run's output, in order, optionally only those
        of one kind whose fields equal `where`."""
        out = []
        for line in run.output("out"):
            m = rec_rx.match(line)
            if not m or (kind is not None and m.group(1) != kind):
                continue
            rec = json.loads(m.group(2))
            rec["kind"] = m.group(1)
            if all(rec.get(k) == v for k, v in where.items()):
                out.append(rec)
        return out

    def wait_records(run, kind, count, /, timeout=default_timeout, **where):
        """Waits until `count` records of `kind` (matching `where`) are out."""
        # The regex only wakes us; the fields are checked on the decoded record.
        rx = r"^%s %s \{" % (prefix, re.escape(kind))
        deadline = harness.time.monotonic() + timeout
        while True:
            got = records(run, kind, **where)
            if len(got) >= count:
                return got
            left = deadline - harness.time.monotonic()
            if left <= 0:
                raise AssertionError(
                    "timed out waiting for %d '%s' record(s) %r (got %d); last "
                    "output:\n%s" % (count, kind, where, len(got), run.tail(60)))
            n = len(run.matches(rx, "out"))
            try:
                run.wait_lines(rx, n + 1, timeout=left, stream="out")
            except AssertionError:
                pass  # re-checked (and reported) at the top

    return records, wait_records


records, wait_records = record_readers("ipr")


def ready_pids(run):
    """{pid: local_rank} of every worker process the probe announced."""
    return {int(m.group(1)): int(m.group(2)) for m in run.matches(READY, "out")}


def probe_env(tmp, **extra):
    """The agent's environment: Debian's python for the workers, TMPDIR in
    the test's directory (so the IPC socket is ours alone)."""
    return harness.base_env(PYTHON=harness.SYSTEM_PYTHON, TMPDIR=tmp,
                            HP_SOURCE_DIR=harness.source_dir(), **extra)


def socket_path(tmp, agent_pid):
    return os.path.join(tmp, "hyperpod_elastic_agent_%d.sock" % agent_pid)


def frame(obj_or_bytes):
    data = obj_or_bytes if isinstance(obj_or_bytes, bytes) else \
        json.dumps(obj_or_bytes).encode()
    return struct.pack("!I", len(data)) + data


def raw_client(path, timeout=10.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def read_until_eof(sock, timeout):
    """Reads and discards until the peer closes (True) or the deadline
    passes (False)."""
    sock.settimeout(timeout)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def have_tcp_provider():
    """libfabric's tcp provider is there (fi_info finds it): the cross-node
    tests need it."""
    try:
        r = subprocess.run(["fi_info", "-p", "tcp"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, timeout=60,
                           env=dict(os.environ, FI_PROVIDER="tcp"))
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and b"provider:" in r.stdout
