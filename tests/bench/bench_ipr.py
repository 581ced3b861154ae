#!/usr/bin/env python3
"""In-process restart benchmark (issue 4 §Benchmark). Not part of `meson test`.

In one run, with the real hyperpodrun in local mode (--nnodes=1
--inprocess-restart) and workers that `import torch` at start
(tests/bench/bench_ipr_worker.py, Debian's /usr/bin/python3):

  * fault-to-resume latency, in-process restart vs process-level restart:
    from the moment rank 0 fails to the moment the last rank is released
    from the barrier with the next restart count. IPR: rank 0 raises,
    reports job_fault, every rank returns to the barrier in the same
    process. PLR: rank 0 exits 1; the agent kills the group and starts a
    new one (fresh interpreters, fresh `import torch`), which reaches the
    barrier and is released. Ratio PLR / IPR (target >= 50);
  * barrier release latency with 8 local workers: from the last worker's
    at_rcb_barrier to every worker holding its job_start
    (max(release) - max(arrive), raw-socket workers; also the first
    release). Target <= 1 ms.

Times come from time.monotonic() in the workers (CLOCK_MONOTONIC is
system-wide). Usage: tests/bench/bench_ipr.py [--faults N] [--nproc N]
[--iters N] [--hyperpodrun PATH]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORKER = os.path.join(HERE, "bench_ipr_worker.py")
PYTHON = "/usr/bin/python3"


def run_agent(exe, tmp, nproc, env_extra, max_restarts, timeout):
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    env.update(PYTHON=PYTHON, TMPDIR=tmp, PYTHONDONTWRITEBYTECODE="1",
               OMP_NUM_THREADS="1", **env_extra)
    outp = os.path.join(tmp, "out-%s.txt" % env_extra.get("BENCH_MODE", "bar"))
    errp = outp.replace("out-", "err-")
    cmd = [exe, "--server-host", "127.0.0.1", "--server-port", "0", "--nnodes=1",
           "--nproc-per-node", str(nproc), "--inprocess-restart",
           "--inprocess-timeout", "600", "--max-restarts", str(max_restarts), WORKER]
    with open(outp, "w") as o, open(errp, "w") as e:
        rc = subprocess.run(cmd, env=env, stdout=o, stderr=e, timeout=timeout).returncode
    with open(outp) as f:
        text = f.read()
    if rc != 0:
        with open(errp) as f:
            tail = f.read()[-3000:]
        sys.exit("agent exited %d\nstdout:\n%s\nstderr tail:\n%s" % (rc, text[-3000:], tail))
    return text


def fault_to_resume(exe, tmp, mode, nproc, faults):
    text = run_agent(exe, tmp, nproc, {"BENCH_MODE": mode, "BENCH_FAULTS": str(faults)},
                     faults if mode == "plr" else 0, timeout=900)
    fault_t = {int(rc): float(t) for rc, t in
               re.findall(r"^bench fault rank 0 rc (\d+) t ([\d.]+)$", text, re.M)}
    resume = {}
    pids = {}
    for rank, rc, t, pid in re.findall(
            r"^bench resume rank (\d+) rc (\d+) t ([\d.]+) pid (\d+)$", text, re.M):
        resume.setdefault(int(rc), []).append(float(t))
        pids.setdefault(int(rc), set()).add(int(pid))
    lat = []
    for k in range(faults):
        if k not in fault_t or len(resume.get(k + 1, [])) != nproc:
            sys.exit("%s: incomplete records for fault %d:\n%s" % (mode, k, text))
        lat.append(max(resume[k + 1]) - fault_t[k])
    same = all(pids[k] == pids[0] for k in pids)
    return lat, same


def barrier_latency(exe, tmp, nproc, iters):
    text = run_agent(exe, tmp, nproc, {"BENCH_KIND": "barrier", "BENCH_ITERS": str(iters)},
                     0, timeout=600)
    by_it = {}
    for it, rank, arr, rel in re.findall(
            r"^bar it (\d+) rank (\d+) arrive ([\d.]+) release ([\d.]+)$", text, re.M):
        by_it.setdefault(int(it), []).append((float(arr), float(rel)))
    last, first = [], []
    for it in sorted(by_it):
        recs = by_it[it]
        if len(recs) != nproc:
            sys.exit("barrier: iteration %d has %d records" % (it, len(recs)))
        arrive = max(a for a, _ in recs)
        last.append(max(r for _, r in recs) - arrive)
        first.append(min(r for _, r in recs) - arrive)
    return last, first


def ms(xs):
    return ", ".join("%.2f" % (x * 1000) for x in xs)


def pct(xs, p):
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hyperpodrun", default=os.path.join(ROOT, "build", "hyperpodrun"))
    ap.add_argument("--faults", type=int, default=3)
    ap.add_argument("--nproc", type=int, default=2, help="workers in the fault runs")
    ap.add_argument("--iters", type=int, default=50, help="barrier iterations")
    a = ap.parse_args()
    exe = os.path.abspath(a.hyperpodrun)
    if subprocess.run([PYTHON, "-c", "import torch"], capture_output=True).returncode:
        sys.exit("%s cannot import torch" % PYTHON)
    with open("/proc/loadavg") as f:
        print("load average before: %s" % " ".join(f.read().split()[:3]))
    print("cpus: %d; hyperpodrun: %s" % (os.cpu_count(), exe))
    with tempfile.TemporaryDirectory(prefix="bench-ipr-") as tmp:
        ipr, ipr_same = fault_to_resume(exe, tmp, "ipr", a.nproc, a.faults)
        plr, plr_same = fault_to_resume(exe, tmp, "plr", a.nproc, a.faults)
        print("\nfault-to-resume, %d workers importing torch, %d faults each:"
              % (a.nproc, a.faults))
        print("  IPR  ms: %s  (median %.2f; same pids throughout: %s)"
              % (ms(ipr), statistics.median(ipr) * 1000, ipr_same))
        print("  PLR  ms: %s  (median %.2f; same pids throughout: %s)"
              % (ms(plr), statistics.median(plr) * 1000, plr_same))
        ratio = statistics.median(plr) / statistics.median(ipr)
        print("  ratio PLR/IPR (medians): %.1fx  (target >= 50x: %s)"
              % (ratio, "met" if ratio >= 50 else "NOT met"))

        last, first = barrier_latency(exe, tmp, 8, a.iters)
        print("\nbarrier release, 8 workers, %d iterations (last arrival -> release):"
              % a.iters)
        print("  every worker released: median %.3f ms, p90 %.3f ms, max %.3f ms"
              % (statistics.median(last) * 1000, pct(last, 90) * 1000, max(last) * 1000))
        print("  first worker released: median %.3f ms, p90 %.3f ms"
              % (statistics.median(first) * 1000, pct(first, 90) * 1000))
        print("  target <= 1 ms (median, all released): %s"
              % ("met" if statistics.median(last) <= 0.001 else "NOT met"))
    with open("/proc/loadavg") as f:
        print("\nload average after: %s" % " ".join(f.read().split()[:3]))


if __name__ == "__main__":
    main()
