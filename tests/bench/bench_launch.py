#!/usr/bin/env python3
"""Launch, memory and restart benchmark: hyperpodrun vs Debian's torchrun
and vs the machine's own floor.

Runs every launcher in this one run, on the same jobs (the agent and the
floors interleaved, their order rotating each round; torchrun's runs after
them, as its exit slows whatever runs next), and prints medians and ratios (torchrun / hyperpodrun, hyperpodrun / floor):
  * launch-to-exit wall time of an 8-worker job whose workers exit 0 at once
  * the agent's peak RSS (VmHWM of the launcher process itself)
  * restart latency: worker failure -> every replacement worker started
    (fail-once job: local rank 0 fails on attempt 0; the others are stopped
    and the whole group restarts once)

The floor is floor.c beside this file: a bare fork/exec/wait of the same N
workers for launch, and kill/reap/fork+exec of the same N for a restart,
with none of a launcher's duties. "floor+logs" is the same with each child
making its attempt_<n>/<rank>/ and two log files first (FLOOR_LOG_DIR), in
the same temporary directory as the launchers' --log_dir: the part of a
launch the filesystem decides (on an ext4 that has seen much file churn, 25
inode allocations can take milliseconds; TMPDIR=/dev/shm puts every log
directory on tmpfs). Instruction counts of one launch and of
one restart job (the launcher process alone, not its workers) come from
`perf stat -e instructions:u` where the machine has the counter, else from
valgrind's callgrind; they do not move with the machine's load.

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


def build(tmp, name):
    exe = os.path.join(tmp, name)
    subprocess.run(["cc", "-O2", "-o", exe, os.path.join(HERE, name + ".c")],
                   check=True)
    return exe


def launcher_cmd(which, exe, tmp, nproc, job, max_restarts, floor=None):
    if which in ("floor", "floor+logs"):
        mode = "launch" if max_restarts == 0 else "restart"
        return [floor, mode, str(nproc), exe, job]
    logdir = tempfile.mkdtemp(dir=tmp, prefix="logs_")
    common_tr = ["-r", "1", "-t", "2", "--log_dir", logdir,
                 "--monitor_interval", "0.1", f"--nproc_per_node={nproc}",
                 f"--max_restarts={max_restarts}", "--no_python"]
    if which == "torchrun":
        return ["/usr/bin/torchrun"] + common_tr + [exe, job]
    return [which, "--server-port", "0", "--server-host", "127.0.0.1"] + \
        common_tr + [exe, job]


def load_line():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


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


def instructions(cmd, env):
    """User-space instructions retired by cmd's own process (not its
    children): perf where the counter exists, else callgrind; None if
    neither works here."""
    if shutil.which("perf"):
        r = subprocess.run(["perf", "stat", "-x,", "--no-inherit", "-e",
                            "instructions:u", "--"] + cmd, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
        for line in r.stderr.splitlines():
            f = line.split(",")
            if len(f) > 2 and f[2].startswith("instructions") and f[0].isdigit():
                return int(f[0]), "perf"
    if shutil.which("valgrind"):
        out = tempfile.mktemp(prefix="callgrind.")
        subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                        "--"] + cmd, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        try:
            with open(out) as f:
                for line in f:
                    if line.startswith(("summary:", "totals:")):
                        return int(line.split()[1]), "callgrind"
        except FileNotFoundError:
            pass
        finally:
            if os.path.exists(out):
                os.unlink(out)
    return None, None


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
        exe = build(tmp, "stamp")
        floor = build(tmp, "floor")
        launchers = [("hyperpodrun", args.hyperpodrun), ("floor", "floor"),
                     ("floor+logs", "floor+logs")]
        if have_torchrun:
            launchers.append(("torchrun", "torchrun"))
        samples = {name: ([], [], []) for name, _ in launchers}
        fs = subprocess.run(["stat", "-f", "-c", "%T", tmp], capture_output=True,
                            text=True).stdout.strip()
        print(f"load average before: {load_line()}; log directories on {fs} ({tmp})")
        # interleaved: one run of each native launcher per round, so a
        # change in the machine's load hits all of them alike, in an order
        # that rotates each round; torchrun's runs come after all of them.
        # Interleaved with the others, torchrun (a 240 MB interpreter and
        # its workers exiting) slowed whichever launcher ran next: the
        # agent, always next in the cycle, measured 1.75x its floor there
        # and 1.29x in the same run without torchrun.
        native = [l for l in launchers if l[0] != "torchrun"]
        order = []
        for i in range(args.runs):
            k = i % len(native)
            order += native[k:] + native[:k]
        order += [l for l in launchers if l[0] == "torchrun"] * args.runs
        for name, which in order:
            first = not samples[name][0]  # its RSS is sampled once
            walls, rss, lat = samples[name]
            env = dict(os.environ)
            env["HP_BENCH_DIR"] = tempfile.mkdtemp(dir=tmp)
            if which == "floor+logs":
                env["FLOOR_LOG_DIR"] = tempfile.mkdtemp(dir=tmp, prefix="logs_")
            cmd = launcher_cmd(which, exe, tmp, args.nproc, "exit", 0, floor)
            w, peak = run_once(cmd, env, sample_rss=first)
            walls.append(w)
            if peak:
                rss.append(peak)
            env["HP_BENCH_DIR"] = tempfile.mkdtemp(dir=tmp)
            if which == "floor+logs":
                env["FLOOR_LOG_DIR"] = tempfile.mkdtemp(dir=tmp, prefix="logs_")
            cmd = launcher_cmd(which, exe, tmp, args.nproc, "fail-once", 1, floor)
            run_once(cmd, env, sample_rss=False)
            lat.append(restart_latency(os.path.join(env["HP_BENCH_DIR"], "stamps"),
                                       args.nproc))
        res = {name: (statistics.median(w), max(r) if r else float("nan"),
                      statistics.median(l)) for name, (w, r, l) in samples.items()}
        instr = {}
        for name, which in launchers:
            if name in ("torchrun", "floor+logs"):
                continue  # torchrun: an interpreter's count says nothing; floor+logs: floor's
            env = dict(os.environ, HP_BENCH_DIR=tempfile.mkdtemp(dir=tmp))
            li, tool = instructions(launcher_cmd(which, exe, tmp, args.nproc, "exit", 0,
                                                 floor), env)
            env["HP_BENCH_DIR"] = tempfile.mkdtemp(dir=tmp)
            ri, _ = instructions(launcher_cmd(which, exe, tmp, args.nproc, "fail-once", 1,
                                              floor), env)
            instr[name] = (li, ri, tool)
        base = statistics.median(run_once(["/bin/true"], dict(os.environ), False)[0]
                                 for _ in range(args.runs))
        print(f"load average after: {load_line()}")
        print(f"{args.nproc} workers, median of {args.runs} runs "
              f"(walls include {base*1000:.1f} ms of this harness spawning /bin/true)")
        print(f"{'':14}{'launch→exit':>14}{'peak RSS':>12}{'restart':>12}")
        for name, (w, r, l) in res.items():
            print(f"{name:14}{w*1000:11.1f} ms{r/1024:9.1f} MB{l*1000:9.2f} ms")
        h, f = res["hyperpodrun"], res["floor"]
        print(f"{'ratio (hp/fl)':14}{h[0]/f[0]:12.2f}× {'':>11}{h[2]/f[2]:10.2f}×"
              f"   target ≤ 1.25× for both")
        g = res["floor+logs"]
        print(f"{'hp/(fl+logs)':14}{h[0]/g[0]:12.2f}× {'':>11}{h[2]/g[2]:10.2f}×"
              f"   (the floor doing the same log layout)")
        for name, (li, ri, tool) in instr.items():
            if li is None:
                print(f"instructions: neither perf nor valgrind works here")
                break
            print(f"instructions ({tool}) {name:12} launch {li:>12,}  restart job {ri:>12,}")
        if "hyperpodrun" in instr and "floor" in instr and instr["floor"][0]:
            (hl, hr, _), (fl, fr, _) = instr["hyperpodrun"], instr["floor"]
            print(f"instructions ratio (hp/fl): launch {hl/fl:.1f}×, restart job {hr/fr:.1f}×")
        if "torchrun" in res:
            h, t = res["hyperpodrun"], res["torchrun"]
            print(f"{'ratio (tr/hp)':14}{t[0]/h[0]:12.0f}× {t[1]/h[1]:10.0f}× {t[2]/h[2]:10.0f}×")
        else:
            print("torchrun not found: no ratios (apt-get install python3-torch)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
