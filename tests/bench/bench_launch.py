#!/usr/bin/env python3
"""Launch, memory and restart benchmark: hyperpodrun vs Debian's torchrun.

Runs both launchers, in this one run, on the same jobs and prints medians
and ratios (torchrun / hyperpodrun):
  * launch-to-exit wall time of an 8-worker job whose workers exit 0 at once
  * the agent's peak RSS (VmHWM of the launcher process itself)
  * restart latency: worker failure -> every replacement worker started
    (fail-once job: local rank 0 fails on attempt 0; the others are stopped
    and the whole group restarts once)

torchrun gets `-r 1 -t 2 --log_dir … --monitor_interval 0.1` (Debian's 1.13
needs the redirects); hyperpodrun the same flags. Not part of `meson test`.
Usage: tests/bench/bench_launch.py [--runs N] [--hyperpodrun PATH]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def build_stamp(tmp):
    exe = os.path.join(tmp, "stamp")
    subprocess.run(["cc", "-O2", "-o", exe, os.path.join(HERE, "stamp.c")],
                   check=True)
    return exe


def launcher_cmd(which, exe, tmp, nproc, job, max_restarts):
    logdir = tempfile.mkdtemp(dir=tmp, prefix="logs_")
    common_tr = ["-r", "1", "-t", "2", "--log_dir", logdir,
                 "--monitor_interval", "0.1", f"--nproc_per_node={nproc}",
                 f"--max_restarts={max_restarts}", "--no_python"]
    if which == "torchrun":
        return ["/usr/bin/torchrun"] + common_tr + [exe, job]
    return [which, "--server-port", "0", "--server-host", "127.0.0.1"] + \
        common_tr + [exe, job]


def run_once(cmd, env, sample_rss):
    """Runs cmd to completion; returns (wall seconds, peak RSS kB or None)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    peak = None
    if sample_rss:
        # VmHWM is the high-water mark: the last sample before exit is it.
        while p.poll() is None:
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak = int(line.split()[1])
            except (FileNotFoundError, ProcessLookupError):
                break
            time.sleep(0.002)
    p.wait()
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed with {p.returncode}: {' '.join(cmd)}")
    return wall, peak


def restart_latency(stampfile, nproc):
    fail = None
    starts = []
    with open(stampfile) as f:
        for line in f:
            tag, attempt, ns = line.split()
            if tag == "fail":
                fail = int(ns)
            elif tag == "start" and attempt == "1":
                starts.append(int(ns))
    if fail is None or len(starts) != nproc:
        raise SystemExit(f"bad stamps in {stampfile}: fail={fail} starts={len(starts)}")
    return (max(starts) - fail) / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--nproc", type=int, default=8)
    ap.add_argument("--hyperpodrun",
                    default=os.environ.get("HYPERPODRUN",
                                           os.path.join(ROOT, "build", "hyperpodrun")))
    args = ap.parse_args()
    have_torchrun = shutil.which("torchrun") is not None or os.path.exists("/usr/bin/torchrun")
    tmp = tempfile.mkdtemp(prefix="hpbench_")
    try:
        exe = build_stamp(tmp)
        launchers = [("hyperpodrun", args.hyperpodrun)]
        if have_torchrun:
            launchers.append(("torchrun", "torchrun"))
        res = {}
        for name, which in launchers:
            walls, rss, lat = [], [], []
            for i in range(args.runs):
                env = dict(os.environ)
                env["HP_BENCH_DIR"] = tempfile.mkdtemp(dir=tmp)
                cmd = launcher_cmd(which, exe, tmp, args.nproc, "exit", 0)
                w, peak = run_once(cmd, env, sample_rss=(i == 0))
                walls.append(w)
                if peak:
                    rss.append(peak)
                env["HP_BENCH_DIR"] = tempfile.mkdtemp(dir=tmp)
                cmd = launcher_cmd(which, exe, tmp, args.nproc, "fail-once", 1)
                run_once(cmd, env, sample_rss=False)
                lat.append(restart_latency(os.path.join(env["HP_BENCH_DIR"], "stamps"),
                                           args.nproc))
            res[name] = (statistics.median(walls), max(rss) if rss else float("nan"),
                         statistics.median(lat))
        base = statistics.median(run_once(["/bin/true"], dict(os.environ), False)[0]
                                 for _ in range(args.runs))
        print(f"{args.nproc} workers, median of {args.runs} runs "
              f"(walls include {base*1000:.1f} ms of this harness spawning /bin/true)")
        print(f"{'':14}{'launch→exit':>14}{'peak RSS':>12}{'restart':>12}")
        for name, (w, r, l) in res.items():
            print(f"{name:14}{w*1000:11.1f} ms{r/1024:9.1f} MB{l*1000:9.2f} ms")
        if "torchrun" in res:
            h, t = res["hyperpodrun"], res["torchrun"]
            print(f"{'ratio (tr/hp)':14}{t[0]/h[0]:12.0f}× {t[1]/h[1]:10.0f}× {t[2]/h[2]:10.0f}×")
        else:
            print("torchrun not found: no ratios (apt-get install python3-torch)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
