"""Chaos (issue 6 §4): a seeded stream of faults against a local-mode
hyperpodrun with 4 workers (tests/helpers/chaos-worker), across restarts.

Events, drawn from random.Random(seed) and planned up front so that a seed
replays exactly (the seed is printed first; HP_CHAOS_SEED picks one,
HP_CHAOS_EVENTS the count):
  * stop / cont  SIGSTOP or SIGCONT a worker: not a failure, no restart;
  * kill         SIGKILL a worker: the group fails with exitcode -9;
  * exit         the worker exits with a random code 1..255 (the test writes
                 the code to a file and sends SIGUSR1).
Each fault is injected only once the attempt's 4 workers have said they are
ready, and the next event waits for the restart, so every fault is seen by
a running agent. --max-restarts is one less than the number of faults, so
the last fault ends the job. Workers print a line every 200 us
(CHAOS_INTERVAL_US), so a kill usually lands with lines still in the
agent's relay pipe.

Asserted: no process outlives the agent (harness); the agent exits 1; it
logs one "restarting the worker group (k of N restarts)" per fault but the
last, each preceded by the rank and exit code the test injected, and the
final summary names the last one; attempt_0..attempt_N exist and no more;
and no log line is lost: each worker counts the lines it wrote (a shared
mapping that survives SIGKILL), and for every worker of every attempt the
attempt's stdout.log and the agent's teed console hold exactly lines
0..count-1 (count+1 when the kill landed between a write and its count),
in order, with nothing else."""

import glob
import os
import random
import re
import shlex
import signal
import struct
import sys

import harness

NPROC = 4


def plan(rng, n_events):
    """[(kind, local_rank, code)]; the last event is always a fault."""
    events, stopped = [], set()
    for i in range(n_events):
        kind = rng.choices(("stop", "cont", "kill", "exit"), (3, 3, 2, 2))[0]
        rank = rng.randrange(NPROC)
        if i == n_events - 1 and kind in ("stop", "cont"):
            kind = "kill"
        if kind == "cont" and stopped:
            rank = rng.choice(sorted(stopped))
        code = rng.randrange(1, 256) if kind == "exit" else None
        if kind == "exit" and rank in stopped:
            # a stopped worker cannot act on SIGUSR1: wake it first
            events.append(("cont", rank, None))
        events.append((kind, rank, code))
        if kind == "stop":
            stopped.add(rank)
        elif kind == "cont":
            stopped.discard(rank)
        else:
            stopped = set()  # the group restarts
    return events


class Chaos(harness.ProcessTest):
    survivor_timeout = 10.0

    def test_chaos(self):
        seed = int(os.environ.get("HP_CHAOS_SEED", "20261125"))
        n_events = int(os.environ.get("HP_CHAOS_EVENTS", "300"))
        print(f"chaos: seed {seed}, {n_events} events "
              f"(HP_CHAOS_SEED={seed} replays this run)", file=sys.stderr, flush=True)
        events = plan(random.Random(seed), n_events)
        faults = [e for e in events if e[0] in ("kill", "exit")]
        max_restarts = len(faults) - 1

        chaos_dir = os.path.join(self.tmp, "chaos")
        log_dir = os.path.join(self.tmp, "logs")
        console = os.path.join(self.tmp, "console.out")
        os.mkdir(chaos_dir)
        env = harness.base_env(CHAOS_DIR=chaos_dir, HP_CONSOLE=console,
                               CHAOS_INTERVAL_US=os.environ.get("CHAOS_INTERVAL_US", "200"))
        # The teed worker stdout (thousands of lines) goes to a file, not
        # through the harness's pipe and meson's log; stderr (ready lines
        # and the agent's log) stays on the pipe to wait on. exec keeps the
        # agent's pid.
        # HP_CHAOS_WRAPPER runs the agent under a tool, e.g. "valgrind
        # --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite".
        wrapper = ["sh", "-c", 'exec "$@" >"$HP_CONSOLE"', "sh"]
        wrapper += shlex.split(os.environ.get("HP_CHAOS_WRAPPER", ""))
        worker = harness.helper("chaos-worker")
        r = self.agent(["--nproc-per-node", str(NPROC), "--max-restarts", str(max_restarts),
                        "--tee", "3", "--log-dir", log_dir, "--rdzv-id", "chaos",
                        "--shutdown-timeout", "5", "--no-python", worker],
                       env=env, wrapper=wrapper)

        attempt = 0
        pids = self.ready(r, attempt)
        injected = []  # (local_rank, exitcode as the agent reports it)
        counts = {}    # pid -> (attempt, local_rank)
        for pid, rank in pids.items():
            counts[pid] = (attempt, rank)
        by_rank = {rank: pid for pid, rank in pids.items()}
        for kind, rank, code in events:
            pid = by_rank[rank]
            if kind == "stop":
                os.kill(pid, signal.SIGSTOP)
                continue
            if kind == "cont":
                os.kill(pid, signal.SIGCONT)
                continue
            if kind == "kill":
                os.kill(pid, signal.SIGKILL)
                injected.append((rank, -signal.SIGKILL))
            else:
                with open(os.path.join(chaos_dir, f"code-{pid}"), "w") as f:
                    f.write(str(code))
                os.kill(pid, signal.SIGUSR1)
                injected.append((rank, code))
            if len(injected) == len(faults):
                break
            r.wait_line(rf"restarting the worker group \({len(injected)} of "
                        rf"{max_restarts} restarts\)", timeout=30, stream="err")
            attempt += 1
            pids = self.ready(r, attempt)
            for p, rk in pids.items():
                counts[p] = (attempt, rk)
            by_rank = {rk: p for p, rk in pids.items()}

        self.assertExit(r, 1, timeout=60)
        self.check_history(r, injected, max_restarts)
        self.check_attempt_dirs(log_dir, attempt)
        self.check_lines(chaos_dir, log_dir, console, counts)

    def ready(self, r, attempt):
        """Waits for the attempt's 4 ready lines; {pid: local_rank}."""
        ms = r.wait_lines(rf"ready pid (\d+) rank (\d+) attempt {attempt}$", NPROC,
                          timeout=30, stream="err")
        pids = {int(m.group(1)): int(m.group(2)) for m in ms}
        self.assertEqual(sorted(pids.values()), list(range(NPROC)), ms)
        return pids

    def check_history(self, r, injected, max_restarts):
        err = r.output("err")
        restarts = [int(m.group(1)) for m in
                    (re.search(r"restarting the worker group \((\d+) of (\d+) restarts\)", l)
                     for l in err) if m]
        self.assertEqual(restarts, list(range(1, max_restarts + 1)),
                         "one restart per fault but the last, in order")
        failed = [(int(m.group(2)), int(m.group(3))) for m in
                  (re.search(r"worker group failed: rank (\d+) \(local_rank (\d+)\) "
                             r"exitcode (-?\d+)", l) for l in err) if m]
        self.assertEqual(failed, injected[:-1], "root cause of each restart")
        text = r.text("err")
        self.assertIn("giving up", text)
        root = text[text.find("Root Cause"):]
        rank, code = injected[-1]
        self.assertRegex(root, rf"rank\s*:\s*{rank}\b", "the last fault is the root cause")
        self.assertRegex(root, rf"exitcode\s*:\s*{code}\b")

    def check_attempt_dirs(self, log_dir, last):
        runs = glob.glob(os.path.join(log_dir, "chaos*"))
        self.assertEqual(len(runs), 1, runs)
        got = sorted(int(d.rsplit("_", 1)[1])
                     for d in glob.glob(os.path.join(runs[0], "attempt_*")))
        self.assertEqual(got, list(range(last + 1)))
        self.run_dir = runs[0]

    def check_lines(self, chaos_dir, log_dir, console, counts):
        teed = {}
        with open(console, "rb") as f:
            for raw in f:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                m = re.fullmatch(r"\[default(\d)\]:seq (\d+) rank (\d) attempt (\d+)", line)
                self.assertTrue(m, f"unexpected console line {line!r}")
                self.assertEqual(m.group(1), m.group(3))
                teed.setdefault((int(m.group(4)), int(m.group(1))), []).append(int(m.group(2)))
        total = 0
        for pid, (attempt, rank) in sorted(counts.items(), key=lambda kv: kv[1]):
            with open(os.path.join(chaos_dir, f"count-{pid}"), "rb") as f:
                wrote = struct.unpack("=Q", f.read(8))[0]
            path = os.path.join(self.run_dir, f"attempt_{attempt}", str(rank), "stdout.log")
            with open(path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").split("\n")
            self.assertEqual(lines[-1], "", f"{path}: last line not complete")
            seqs = []
            for line in lines[:-1]:
                m = re.fullmatch(rf"seq (\d+) rank {rank} attempt {attempt}", line)
                self.assertTrue(m, f"{path}: unexpected line {line!r}")
                seqs.append(int(m.group(1)))
            where = f"attempt {attempt} rank {rank} (pid {pid}) wrote {wrote}"
            self.assertIn(len(seqs), (wrote, wrote + 1), f"{where}; {path} has {len(seqs)}")
            self.assertEqual(seqs, list(range(len(seqs))), f"{where}: gap or reorder in {path}")
            self.assertEqual(teed.get((attempt, rank), []), seqs,
                             f"{where}: console copy differs from {path}")
            total += len(seqs)
        print(f"chaos: {len(counts)} workers, {total} lines checked", file=sys.stderr)


if __name__ == "__main__":
    harness.main()
