"""--rdzv-backend=c10d across hyperpodrun agents (issue 15, "What to build"
2): several agents on loopback run the same command line with
--rdzv-endpoint 127.0.0.1:PORT; the one that binds PORT serves the
rendezvous, the others join. Checked through the real binary: --nnodes=1:2
on one node (last call expires, WORLD_SIZE = nproc), two nodes get distinct
group ranks and one master, a worker crash starts a new round on every node,
a killed node leaves a round of MIN, a late node joins the next round, the
endpoint agent's death is a clear error on the others, and bad requests to
the rendezvous port get a 4xx with a JSON detail. Workers are small Python
scripts that print their environment as JSON (no torch needed)."""

import json
import os
import signal
import socket
import sys
import time

import harness

PY = sys.executable

# Prints the torchrun variables as one JSON line; then, while HOLD (a
# Python expression over the env) is true, stays up until the agent stops
# it; rank CRASH_RANK exits 1 on attempt 0 once the test says so (a FIFO).
WORKER = r"""
import json, os, sys, time
e = {k: os.environ[k] for k in ("RANK", "LOCAL_RANK", "GROUP_RANK", "WORLD_SIZE",
     "GROUP_WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
     "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_RUN_ID")}
e["pid"] = os.getpid()
os.write(1, (json.dumps(e) + "\n").encode())
env = {k: (int(v) if v.isdigit() else v) for k, v in os.environ.items()}
hold = os.environ.get("HOLD")
if os.environ.get("CRASH_FIFO") and e["RANK"] == os.environ.get("CRASH_RANK") \
        and e["TORCHELASTIC_RESTART_COUNT"] == "0":
    open(os.environ["CRASH_FIFO"]).read()
    sys.exit(1)
if hold and eval(hold, {}, env):
    time.sleep(600)
"""


class C10d(harness.ProcessTest):
    def setUp(self):
        super().setUp()
        self.worker = os.path.join(self.tmp, "w.py")
        with open(self.worker, "w") as f:
            f.write(WORKER)
        self.port = harness.free_port()

    def node(self, nnodes, nproc=2, extra=(), env=None, label="node"):
        args = [f"--nnodes={nnodes}", f"--nproc-per-node={nproc}", "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{self.port}", "--rdzv-id=job15", *extra,
                self.worker]
        return self.agent(args, env=harness.base_env(PYTHON=PY, **(env or {})), label=label)

    @staticmethod
    def envs(run):
        return [e for e in harness.parse_json_lines(run.output("out")) if "RANK" in e]

    def wait_envs(self, run, n, timeout=30, where=lambda e: True):
        deadline = time.monotonic() + timeout
        while True:
            got = [e for e in self.envs(run) if where(e)]
            if len(got) >= n:
                return got
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, f"{run.label}: {len(got)} of {n} workers; "
                                        f"last output:\n{run.tail()}")
            with run.cond:
                run.cond.wait(min(left, 1.0))

    def test_one_node_of_min_one_max_two(self):
        # torchrun: 1 node joins, the last call expires, WORLD_SIZE = nproc
        t0 = time.monotonic()
        r = self.node("1:2", extra=["--rdzv-conf=last_call_timeout=1"])
        self.assertExit(r, 0, timeout=60)
        envs = self.envs(r)
        self.assertEqual(sorted(e["RANK"] for e in envs), ["0", "1"])
        for e in envs:
            self.assertEqual(e["WORLD_SIZE"], "2")
            self.assertEqual(e["GROUP_WORLD_SIZE"], "1")
            self.assertNotEqual(e["MASTER_PORT"], "29500")
        r.wait_line(r"round 0 closed with 1 node")
        self.assertGreater(time.monotonic() - t0, 0.9, "closed before the last call")

    def test_two_nodes_distinct_group_ranks(self):
        a = self.node("2", label="a")
        b = self.node("2", label="b")
        self.assertExit(a, 0, timeout=60)
        self.assertExit(b, 0, timeout=60)
        ea, eb = self.envs(a), self.envs(b)
        self.assertEqual(len(ea), 2)
        self.assertEqual(len(eb), 2)
        groups = {ea[0]["GROUP_RANK"], eb[0]["GROUP_RANK"]}
        self.assertEqual(groups, {"0", "1"}, "two nodes must not both be group rank 0")
        every = ea + eb
        self.assertEqual(sorted(int(e["RANK"]) for e in every), [0, 1, 2, 3])
        self.assertEqual({e["WORLD_SIZE"] for e in every}, {"4"})
        self.assertEqual(len({(e["MASTER_ADDR"], e["MASTER_PORT"]) for e in every}), 1)
        for e in every:
            self.assertEqual(int(e["RANK"]), int(e["GROUP_RANK"]) * 2 + int(e["LOCAL_RANK"]))
        self.assertEqual(len([r for r in (a, b) if r.matches(r"serving the c10d rendezvous")]), 1)

    def test_crash_starts_a_new_round_everywhere(self):
        fifo = os.path.join(self.tmp, "crash")
        os.mkfifo(fifo)
        env = {"CRASH_FIFO": fifo, "CRASH_RANK": "3",
               "HOLD": "TORCHELASTIC_RESTART_COUNT == 0"}
        a = self.node("2", extra=["--max-restarts=1"], env=env, label="a")
        b = self.node("2", extra=["--max-restarts=1"], env=env, label="b")
        self.wait_envs(a, 2)
        self.wait_envs(b, 2)
        with open(fifo, "w") as f:
            f.write("go")
        self.assertExit(a, 0, timeout=60)
        self.assertExit(b, 0, timeout=60)
        for r in (a, b):
            second = [e for e in self.envs(r) if e["TORCHELASTIC_RESTART_COUNT"] == "1"]
            self.assertEqual(len(second), 2, f"{r.label} ran a second round")
            self.assertEqual({e["WORLD_SIZE"] for e in second}, {"4"})
        every = [e for r in (a, b) for e in self.envs(r)
                 if e["TORCHELASTIC_RESTART_COUNT"] == "1"]
        self.assertEqual(sorted(int(e["RANK"]) for e in every), [0, 1, 2, 3])
        self.assertTrue(any(r.matches(r"node \S+ failed|a node is waiting|node \S+ left")
                            for r in (a, b)))

    def test_crash_past_max_restarts_fails_every_node(self):
        fifo = os.path.join(self.tmp, "crash")
        os.mkfifo(fifo)
        env = {"CRASH_FIFO": fifo, "CRASH_RANK": "1", "HOLD": "1"}
        a = self.node("2", nproc=1, env=env, label="a")
        b = self.node("2", nproc=1, env=env, label="b")
        self.wait_envs(a, 1)
        self.wait_envs(b, 1)
        with open(fifo, "w") as f:
            f.write("go")
        # the crashed node exits 1 with the summary; the other one waits for
        # a round of 2 that cannot come, or loses the endpoint: exit 1
        crashed = a if self.envs(a)[0]["RANK"] == "1" else b
        other = b if crashed is a else a
        self.assertExit(crashed, 1, timeout=60)
        crashed.wait_line(r"ChildFailedError")
        other.signal(signal.SIGTERM)
        self.assertExit(other, (1, 143), timeout=60)

    def test_killed_node_leaves_a_round_of_min(self):
        env = {"HOLD": "GROUP_WORLD_SIZE == 3"}
        extra = ["--rdzv-conf=last_call_timeout=1"]
        nodes = [self.node("2:3", nproc=1, extra=extra, env=env, label=f"n{i}")
                 for i in range(3)]
        for n in nodes:
            self.wait_envs(n, 1)
        host = [n for n in nodes if n.matches(r"serving the c10d rendezvous")]
        self.assertEqual(len(host), 1)
        victim = next(n for n in nodes if n is not host[0])
        victim.proc.send_signal(signal.SIGKILL)
        victim.wait(timeout=20)
        for n in nodes:
            if n is victim:
                continue
            self.assertExit(n, 0, timeout=60)
            last = self.envs(n)[-1]
            self.assertEqual(last["GROUP_WORLD_SIZE"], "2")
            self.assertEqual(last["WORLD_SIZE"], "2")
            n.wait_line(r"rendezvous: node \S+ left|node \S+ left")

    def test_late_node_joins_the_next_round(self):
        env = {"HOLD": "GROUP_WORLD_SIZE == 1"}
        extra = ["--rdzv-conf=last_call_timeout=1"]
        a = self.node("1:2", extra=extra, env=env, label="early")
        first = self.wait_envs(a, 2)
        self.assertEqual({e["WORLD_SIZE"] for e in first}, {"2"})
        b = self.node("1:2", extra=extra, env=env, label="late")
        self.assertExit(a, 0, timeout=60)
        self.assertExit(b, 0, timeout=60)
        ea = [e for e in self.envs(a) if e["GROUP_WORLD_SIZE"] == "2"]
        eb = self.envs(b)
        self.assertEqual(len(ea), 2)
        self.assertEqual(len(eb), 2)
        self.assertEqual(sorted(int(e["RANK"]) for e in ea + eb), [0, 1, 2, 3])
        a.wait_line(r"a node is waiting to join")

    def test_endpoint_agent_death_is_a_clear_error(self):
        env = {"HOLD": "1"}
        a = self.node("2", nproc=1, env=env, label="a")
        b = self.node("2", nproc=1, env=env, label="b")
        self.wait_envs(a, 1)
        self.wait_envs(b, 1)
        host = a if a.matches(r"serving the c10d rendezvous") else b
        other = b if host is a else a
        host.proc.send_signal(signal.SIGKILL)
        host.wait(timeout=20)
        self.assertExit(other, 1, timeout=60)
        other.wait_line(r"lost the rendezvous endpoint 127\.0\.0\.1:\d+")

    def test_bad_requests_get_4xx_with_detail(self):
        a = self.node("2", nproc=1, env={"HOLD": "1"}, label="a")
        a.wait_line(r"serving the c10d rendezvous")

        def ask(line):
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                s.sendall(line.encode() + b"\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            head, _, body = data.decode().partition("\r\n\r\n")
            return int(head.split()[1]), body
        for line, code in (("GET /nope HTTP/1.0", 404),
                           ("GET /rdzv/join HTTP/1.0", 400),
                           ("GET /rdzv/join?node=x&run=6f74686572 HTTP/1.0", 409),
                           ("POST /rdzv/join HTTP/1.0", 404)):
            with self.subTest(line=line):
                got, body = ask(line)
                self.assertEqual(got, code)
                self.assertIn("detail", json.loads(body))
        a.signal(signal.SIGTERM)
        self.assertExit(a, 143, timeout=30)


# gloo across the nodes; rank CRASH_RANK raises on attempt 0 after joining
# the process group, so every rank's collective fails and both nodes restart.
GLOO = r"""
import os, sys
import torch
import torch.distributed as dist
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
attempt = os.environ["TORCHELASTIC_RESTART_COUNT"]
if os.environ.get("CRASH_RANK") == str(rank) and attempt == "0":
    raise RuntimeError("crash on purpose")
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
os.write(1, f"gloo rank {rank} world {world} attempt {attempt} sum {int(t.item())}\n".encode())
dist.barrier()
dist.destroy_process_group()
"""


class C10dTorch(harness.ProcessTest):
    def setUp(self):
        if not harness.have_torch():
            self.skipTest("no torch under /usr/bin/python3")
        super().setUp()
        self.worker = os.path.join(self.tmp, "gloo.py")
        with open(self.worker, "w") as f:
            f.write(GLOO)
        self.port = harness.free_port()

    def nodes(self, extra=(), env=None):
        out = []
        for i in range(2):
            args = ["--nnodes=2", "--nproc-per-node=2", "--rdzv-backend=c10d",
                    f"--rdzv-endpoint=127.0.0.1:{self.port}", *extra, self.worker]
            out.append(self.agent(args, env=harness.base_env(
                PYTHON=harness.SYSTEM_PYTHON, **(env or {})), label=f"n{i}"))
        return out

    def sums(self, runs, attempt):
        got = []
        for r in runs:
            got += [m for m in r.matches(r"gloo rank (\d+) world (\d+) attempt (\d+) sum (\d+)")
                    if m.group(3) == attempt]
        return sorted((int(m.group(1)), int(m.group(2)), int(m.group(4))) for m in got)

    def test_gloo_across_two_nodes(self):
        runs = self.nodes()
        for r in runs:
            self.assertExit(r, 0, timeout=240)
        self.assertEqual(self.sums(runs, "0"), [(k, 4, 10) for k in range(4)])

    def test_gloo_crash_restarts_both_nodes(self):
        runs = self.nodes(["--max-restarts=1"], {"CRASH_RANK": "3"})
        for r in runs:
            self.assertExit(r, 0, timeout=240)
        self.assertEqual(self.sums(runs, "1"), [(k, 4, 10) for k in range(4)])
        self.assertEqual(self.sums(runs, "0"), [])


if __name__ == "__main__":
    harness.main()
