#!/usr/bin/env python3
"""Fabric control-plane latency vs number of agents, on loopback.

Runs N fabric-peer processes (N = 2..64) on 127.0.0.1 with the tcp provider,
times back-to-back barriers and 128-byte broadcasts (each broadcast starts
right after a barrier; the slowest rank's time counts, as OSU does), and
prints them next to fi_pingpong's round trip measured in the same run, with
the ratio to RTT x ceil(log2 N) (target: within 3x).

Not part of `meson test`. Usage:
  tests/bench/fabric-bench.py [--peer BUILD/tests/fabric-peer]
                              [--sizes 2,4,8,16,32,64] [--no-wait-fd]
                              [--spin-us US]
Use a build without sanitizers (meson setup build-rel). Processes beyond
the machine's cores share them: the table prints the core count."""
import argparse
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from test_fabric import Group  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    """True once something listens on port (from /proc/net/tcp)."""
    want = f":{port:04X}"
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                for line in f.readlines()[1:]:
                    cols = line.split()
                    if cols[1].endswith(want) and cols[3] == "0A":
                        return True
        except OSError:
            pass
    return False


def pingpong_rtt_us(size=128, iters=20000):
    """fi_pingpong over tcp/rdm on 127.0.0.1; it prints usec per one-way
    transfer, so the round trip is twice that."""
    port = free_port()
    env = dict(os.environ, FI_PROVIDER="tcp")
    args = ["fi_pingpong", "-p", "tcp", "-e", "rdm", "-I", str(iters),
            "-S", str(size)]
    srv = subprocess.Popen(args + ["-B", str(port)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not listening(port):
            if time.monotonic() > deadline or srv.poll() is not None:
                raise RuntimeError("fi_pingpong server did not start")
            time.sleep(0.01)
        out = subprocess.run(args + ["-P", str(port), "127.0.0.1"], env=env,
                             capture_output=True, text=True, timeout=60)
    finally:
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
        srv.stdout.close()
    for line in out.stdout.splitlines():
        cols = line.split()
        if cols and cols[0] == str(size):
            return 2 * float(cols[6])
    raise RuntimeError(f"fi_pingpong: {out.stdout} {out.stderr}")


def run_size(peer, n, iters, args):
    script = [f"bench-barrier:1:{iters}", f"bench-bcast:2:{iters}:128"]
    g = Group(peer, n, [script] * n, args, timeout=600)
    try:
        lines = g.finish()
    finally:
        g.kill()

    def us(prefix):
        vals = []
        for r in range(n):
            for l in lines[r]:
                if l.startswith(f"ok {prefix}"):
                    vals.append(float(re.search(r"us=([0-9.]+)", l).group(1)))
        if len(vals) != n:
            raise RuntimeError(f"n={n}: {prefix}: {lines}")
        return vals

    return statistics.median(us("bench-barrier")), max(us("bench-bcast"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", default=os.path.join(
        HERE, "..", "..", "build-rel", "tests", "fabric-peer"))
    ap.add_argument("--sizes", default="2,4,8,16,32,64")
    ap.add_argument("--no-wait-fd", action="store_true")
    ap.add_argument("--spin-us", type=int, default=0)
    o = ap.parse_args()
    args = ["--no-wait-fd"] if o.no_wait_fd else []
    args += ["--spin-us", str(o.spin_us)]
    # RTT: the best of three fi_pingpong runs (tcp, rdm, 128 B), so the
    # reference does not flatter us when the machine is busy.
    print(f"fi_pingpong tcp rdm 128 B on 127.0.0.1, best of 3 per row; "
          f"{os.cpu_count()} cores; "
          f"{'busy polling' if o.no_wait_fd else 'wait fd + poll()'}, "
          f"spin {o.spin_us} us")
    print(f"{'N':>4} {'rounds':>6} {'RTT us':>7} {'barrier us':>11} "
          f"{'bcast128 us':>12} {'RTT*rounds':>11} {'barrier x':>10} "
          f"{'bcast x':>8}")
    rows, best = [], float("inf")
    for n in [int(x) for x in o.sizes.split(",")]:
        rounds = math.ceil(math.log2(n))
        iters = max(50, 4000 // n)
        # The machine may be shared: measure the reference next to each row.
        rtt = min(pingpong_rtt_us(iters=5000) for _ in range(3))
        bar, bc = run_size(o.peer, n, iters, args)
        rows.append((n, rounds, bar, bc))
        best = min(best, rtt)
        ref = rtt * rounds
        print(f"{n:>4} {rounds:>6} {rtt:>7.1f} {bar:>11.1f} {bc:>12.1f} "
              f"{ref:>11.1f} {bar / ref:>10.2f} {bc / ref:>8.2f}", flush=True)
    # On a shared machine a row's RTT may be inflated; the best RTT of the
    # run is the stricter reference.
    print(f"against the best RTT of the run, {best:.1f} us:")
    for n, rounds, bar, bc in rows:
        ref = best * rounds
        print(f"{n:>4} barrier x {bar / ref:>7.2f}   bcast x {bc / ref:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
