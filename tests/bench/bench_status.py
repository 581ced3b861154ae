#!/usr/bin/env python3
"""GET /status throughput and latency, with and without a restart storm
(issue 3 §Benchmark; target >= 40k req/s and p99 <= 2 ms on 2 cores).

Scenarios, each against a fresh hyperpodrun on 127.0.0.1:
  idle   operator mode, waiting in READY (the /status snapshot never changes)
  storm  local mode, two workers that fail at once (/bin/false) and
         --max-restarts huge: the agent restarts the group continuously and
         republishes /status on every transition while the load runs

Peers, serving the idle agent's own /status bytes with the same load,
interleaved with the idle agent (--rounds rounds, medians printed):
  nginx    Debian's nginx-light, one worker process (the agent serves HTTP
           on one thread), the bytes from a file: the machine's floor
  fastapi  a FastAPI app under uvicorn, the reference agent's stack
Ratios printed: agent/nginx req/s (target >= 1.0), agent/nginx p99
(target <= 1.2), agent/fastapi req/s, storm/idle req/s (target >= 0.8).
The p99 is also measured at the same offered load: bench_status_client.c
paced at half nginx's closed-loop req/s, each latency counted from when its
request was due, the idle agent and nginx interleaved. In a closed loop the
faster server runs at a higher rate, where its thread and the client's two
compete for 2 cores, and its tail is the scheduler's.
The storm's anchor: nginx's req/s while floor.c (beside this file) forks,
execs and reaps the same two /bin/false at the restarts/s the agent's storm
reached, over nginx's idle req/s measured next to it: what is left of the
machine for an HTTP server while that much process churn runs, with none
of the agent's own work.
A peer whose package is missing is left out with a line saying so.

The load comes from wrk (Debian's package) when it is installed, else from
bench_status_client.c beside this file (compiled here with cc): C keep-alive
connections, one request in flight on each, over T client threads. The
client shares the machine with the agent, so on a 2-core box the numbers
are what both together manage; the load average is printed before and after.
Not part of `meson test`.

usage: tests/bench/bench_status.py [--hyperpodrun PATH] [--duration S]
           [--connections C] [--threads T] [--client auto|wrk|c]
           [--storm-worker-ms MS]
"""
import argparse
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TARGET_RPS = 40_000
TARGET_P99_MS = 2.0
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with fastapi and uvicorn
FASTAPI_APP = """
import sys
from fastapi import FastAPI, Response
body = open(sys.argv[1], "rb").read()
app = FastAPI()
@app.get("/status")
def status():
    return Response(content=body, media_type="application/json")
if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]),
                log_level="warning", access_log=False)
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_status(port, timeout=2.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", "/status")
        return json.loads(c.getresponse().read())
    finally:
        c.close()


def post(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("POST", path)
        return c.getresponse().status
    finally:
        c.close()


def load_line():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Agent:
    """One hyperpodrun with its log in a file and a known port."""

    def __init__(self, exe, args, tmp, name):
        self.port = free_port()
        self.log = os.path.join(tmp, name + ".log")
        env = dict(os.environ, HYPERPODRUN_LOG_LEVEL="warning",
                   HYPERPOD_RESOURCE_CONFIG_DIR=os.path.join(tmp, "rc-" + name))
        self.proc = subprocess.Popen(
            [exe, "--server-host", "127.0.0.1", "--server-port", str(self.port),
             "--server-log-level", "error"] + args,
            env=env, cwd=tmp, stdout=subprocess.DEVNULL,
            stderr=open(self.log, "w"), start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.first = get_status(self.port)
                break
            except (OSError, http.client.HTTPException, ValueError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{name}: agent did not come up; see {self.log}")
                time.sleep(0.05)

    def cpu_seconds(self):
        """user + system CPU of the agent process (all its threads)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def restarts(self):
        """The last 'restarting the worker group (N of M restarts)' N."""
        with open(self.log, errors="replace") as f:
            ns = re.findall(r"restarting the worker group \((\d+) of", f.read())
        return int(ns[-1]) if ns else 0

    def stop(self):
        try:
            post(self.port, "/shutdown")
            self.proc.wait(30)
        except (OSError, http.client.HTTPException, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, 9)
            self.proc.wait()


def wait_http(port, proc, name, deadline_s=30):
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/status")
            if c.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            c.close()
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{name} did not come up (exit {proc.poll()})")
        time.sleep(0.05)


def start_nginx(tmp, body_file):
    """nginx-light with one worker serving body_file at /status, or None."""
    exe = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not exe:
        print("nginx: not installed (apt-get install nginx-light): no nginx peer")
        return None
    port = free_port()
    root = os.path.join(tmp, "nginx")
    os.makedirs(root, exist_ok=True)
    conf = os.path.join(root, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off; worker_processes 1; pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off; keepalive_requests 1000000;
  client_body_temp_path {root};
  server {{
    listen 127.0.0.1:{port};
    location = /status {{ default_type application/json; alias {body_file}; }}
  }}
}}
""")
    proc = subprocess.Popen([exe, "-p", root, "-c", conf], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(root, "stderr.log"), "w"),
                            start_new_session=True)
    wait_http(port, proc, "nginx")
    return proc, port


def start_fastapi(tmp, body_file):
    """uvicorn + FastAPI serving body_file at /status, or None."""
    ok = subprocess.run([SYSTEM_PYTHON, "-c", "import fastapi, uvicorn"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    if not ok:
        print("fastapi: python3-fastapi / python3-uvicorn not installed: no FastAPI peer")
        return None
    app = os.path.join(tmp, "fastapi_status.py")
    with open(app, "w") as f:
        f.write(FASTAPI_APP)
    port = free_port()
    proc = subprocess.Popen([SYSTEM_PYTHON, app, body_file, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_http(port, proc, "fastapi")
    return proc, port


def median_row(rs):
    import statistics
    out = dict(rs[0])
    for k in ("rps", "p50_ms", "p99_ms"):
        out[k] = statistics.median(r[k] for r in rs)
    out["errors"] = sum(r["errors"] for r in rs)
    out["requests"] = sum(r["requests"] for r in rs)
    return out


def to_ms(value, unit):
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def run_wrk(port, args):
    out = subprocess.run(
        ["wrk", "-t", str(args.threads), "-c", str(args.connections),
         "-d", f"{args.duration}s", "--latency", f"http://127.0.0.1:{port}/status"],
        capture_output=True, text=True, check=True).stdout
    lat = {m.group(1): to_ms(m.group(2), m.group(3)) for m in
           re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    mx = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(g) for g in m.groups())
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return {"requests": total, "rps": rps, "p50_ms": lat["50"], "p99_ms": lat["99"],
            "max_ms": to_ms(mx.group(1), mx.group(2)) if mx else None, "errors": errors}


def build_client(tmp):
    exe = os.path.join(tmp, "bench_status_client")
    subprocess.run(["cc", "-O2", "-pthread", "-o", exe,
                    os.path.join(HERE, "bench_status_client.c")], check=True)
    return exe


def run_c(exe, port, args, rate=None):
    out = subprocess.run([exe, "127.0.0.1", str(port), "/status", str(args.connections),
                          str(args.threads), str(args.duration)] +
                         ([f"{rate:.0f}"] if rate else []),
                         capture_output=True, text=True, check=True).stdout
    f = dict(zip(out.split()[0::2], out.split()[1::2]))
    return {"requests": int(f["requests"]), "rps": float(f["rps"]),
            "p50_ms": int(f["p50_us"]) / 1e3, "p99_ms": int(f["p99_us"]) / 1e3,
            "max_ms": float(f["max_us"]) / 1e3, "errors": int(f["errors"])}


def paced_rounds(tmp, cexe, agent_port, procs, peers, args):
    """p99 at the same offered load: the C client paced (wrk2's way: each
    latency from when its request was due) at half of nginx's closed-loop
    req/s, the idle agent and nginx interleaved, --rounds rounds. A closed
    loop measures a faster server at a higher rate, where the client's
    threads and the server's compete for the 2 cores; here both serve the
    same rate. Returns (rate, agent rows, nginx rows) or None without
    nginx."""
    if "nginx" not in procs or not peers.get("nginx"):
        return None
    exe = cexe or build_client(tmp)
    rate = 0.5 * median_row(peers["nginx"])["rps"]
    out = {"agent": [], "nginx": []}
    for _ in range(args.rounds):
        for name, port in (("agent", agent_port), ("nginx", procs["nginx"][1])):
            out[name].append(run_c(exe, port, args, rate))
    return rate, out["agent"], out["nginx"]


def storm_anchor(tmp, body_file, load, rate, args):
    """(nginx idle row, nginx-under-floor-storm row, achieved restarts/s),
    or None without nginx or a storm rate."""
    if rate <= 0:
        return None
    got = start_nginx(tmp, body_file)
    if not got:
        return None
    proc, port = got
    floor = os.path.join(tmp, "floor")
    subprocess.run(["cc", "-O2", "-o", floor, os.path.join(HERE, "floor.c")], check=True)
    try:
        idle = load(port)
        churn = subprocess.Popen([floor, "storm", "2", f"{rate:.1f}", str(args.duration + 1),
                                  "/bin/false"], stdout=subprocess.PIPE, text=True)
        stormed = load(port)
        out = churn.communicate()[0].split()
        achieved = int(out[2]) / float(out[4]) if len(out) >= 5 else rate
    finally:
        os.killpg(proc.pid, 15)
        proc.wait()
    return idle, stormed, achieved


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hyperpodrun", default=os.path.join(ROOT, "build-rel", "hyperpodrun"))
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--client", choices=("auto", "wrk", "c"), default="auto")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds of idle agent / nginx / fastapi")
    ap.add_argument("--storm-worker-ms", type=int, default=0,
                    help="storm workers live this long before failing (0: /bin/false, "
                         "the worst case: hundreds of restarts a second)")
    args = ap.parse_args()
    args.hyperpodrun = os.path.abspath(args.hyperpodrun)
    if not os.access(args.hyperpodrun, os.X_OK):
        raise SystemExit(f"no hyperpodrun at {args.hyperpodrun} "
                         "(meson setup build-rel --buildtype=release && meson compile -C build-rel)")
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "c"
    tmp = tempfile.mkdtemp(prefix="bench-status-")
    os.chmod(tmp, 0o755)  # nginx's worker drops root for nobody and reads from here
    cexe = build_client(tmp) if client == "c" else None

    storm_worker = "/bin/false"
    if args.storm_worker_ms > 0:
        storm_worker = os.path.join(tmp, "fail-later.sh")
        with open(storm_worker, "w") as f:
            f.write(f"#!/bin/sh\nsleep {args.storm_worker_ms / 1000:.3f}\nexit 1\n")
        os.chmod(storm_worker, 0o755)
    print(f"hyperpodrun: {args.hyperpodrun}")
    print(f"client: {client}, {args.connections} connections, {args.threads} threads, "
          f"{args.duration} s per scenario; storm worker {storm_worker}; "
          f"{os.cpu_count()} CPUs; load before: {load_line()}")
    scenarios = {
        "idle": ["--rdzv-backend", "hyperpod", "--nnodes", "2", "--nproc-per-node", "1",
                 "--no-python", "/bin/true"],
        "storm": ["--nnodes", "1", "--nproc-per-node", "2", "--max-restarts", "100000000",
                  "--no-python", storm_worker],
    }
    load = (lambda port: run_wrk(port, args)) if client == "wrk" else \
        (lambda port: run_c(cexe, port, args))

    def measure(agent):
        r0 = agent.restarts()
        c0 = agent.cpu_seconds()
        t0 = time.monotonic()
        res = load(agent.port)
        dt = time.monotonic() - t0
        res["restarts_per_s"] = (agent.restarts() - r0) / dt
        # the agent's own CPU per request: independent of what else runs on
        # the machine (the storm's fork/exec cost included)
        res["agent_cpu_us_per_req"] = (agent.cpu_seconds() - c0) * 1e6 / max(1, res["requests"])
        res["alive"] = agent.proc.poll() is None
        return res

    rows = []
    peers = {}
    agent = Agent(args.hyperpodrun, scenarios["idle"], tmp, "idle")
    try:
        c = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=2)
        c.request("GET", "/status")
        body = c.getresponse().read()
        c.close()
        body_file = os.path.join(tmp, "status.json")
        with open(body_file, "wb") as f:
            f.write(body)
        procs = {}
        for pname, starter in (("nginx", start_nginx), ("fastapi", start_fastapi)):
            got = starter(tmp, body_file)
            if got:
                procs[pname] = got
                peers[pname] = []
        idle = []
        try:
            for _ in range(args.rounds):
                idle.append(measure(agent))
                for pname, (_, port) in procs.items():
                    r = load(port)
                    r.update(restarts_per_s=0.0, agent_cpu_us_per_req=float("nan"), alive=True)
                    peers[pname].append(r)
            paced = paced_rounds(tmp, cexe, agent.port, procs, peers, args)
        finally:
            for proc, _ in procs.values():
                os.killpg(proc.pid, 15)
                proc.wait()
    finally:
        agent.stop()
    row = median_row(idle)
    row["scenario"] = "idle"
    rows.append(row)
    agent = Agent(args.hyperpodrun, scenarios["storm"], tmp, "storm")
    try:
        row = measure(agent)
    finally:
        agent.stop()
    row["scenario"] = "storm"
    rows.append(row)
    anchor = storm_anchor(tmp, body_file, load, row["restarts_per_s"], args)
    peer_rows = []
    for pname, rs in peers.items():
        row = median_row(rs)
        row["scenario"] = pname
        peer_rows.append(row)

    print(f"load after: {load_line()}")
    print(f"{'scenario':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'errors':>6} {'restarts/s':>10} {'cpu us/req':>10}  target (>= {TARGET_RPS} req/s, p99 <= {TARGET_P99_MS} ms)")
    ok = True
    for r in rows:
        hit = r["rps"] >= TARGET_RPS and r["p99_ms"] <= TARGET_P99_MS and r["errors"] == 0
        ok &= hit
        mx = f"{r['max_ms']:8.2f}" if r["max_ms"] is not None else f"{'-':>8}"
        print(f"{r['scenario']:8} {r['rps']:9.0f} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {mx} "
              f"{r['errors']:6d} {r['restarts_per_s']:10.1f} {r['agent_cpu_us_per_req']:10.2f}  "
              f"{'met' if hit else 'MISSED'}")
    for r in peer_rows:
        print(f"{r['scenario']:8} {r['rps']:9.0f} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} "
              f"{'-':>8} {r['errors']:6d} {'-':>10} {'-':>10}  (peer)")
    idle, storm = rows[0], rows[1]
    print(f"storm/idle req/s: {storm['rps'] / idle['rps']:.2f}  (target >= 0.8)")
    if anchor:
        ni, ns, rate = anchor
        print(f"anchor: nginx {ni['rps']:.0f} req/s idle, {ns['rps']:.0f} req/s while floor.c "
              f"restarts 2 x /bin/false {rate:.0f} times/s: nginx storm/idle "
              f"{ns['rps'] / ni['rps']:.2f}; agent storm/idle over nginx's: "
              f"{(storm['rps'] / idle['rps']) / (ns['rps'] / ni['rps']):.2f}")
    for r in peer_rows:
        line = (f"agent/{r['scenario']}: req/s {idle['rps'] / r['rps']:.2f}, "
                f"p99 {idle['p99_ms'] / r['p99_ms']:.2f}")
        if r["scenario"] == "nginx":
            line += "  (targets: req/s >= 1.0, p99 <= 1.2)"
        print(line)
    if paced:
        rate, pa, pn = paced
        a, n = median_row(pa), median_row(pn)
        print(f"paced at {rate:.0f} req/s (half nginx's), C client, {args.connections} "
              f"connections: agent p50 {a['p50_ms']:.3f} p99 {a['p99_ms']:.3f} ms "
              f"({a['rps']:.0f} req/s), nginx p50 {n['p50_ms']:.3f} p99 {n['p99_ms']:.3f} ms "
              f"({n['rps']:.0f} req/s); agent/nginx p99 {a['p99_ms'] / n['p99_ms']:.2f} "
              f"(target <= 1.2)")
    print(json.dumps(rows + peer_rows))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
