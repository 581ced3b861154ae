#!/usr/bin/env python3
"""Unit tests for client/python/hyperpod_worker.py against an agent-side peer
written here (an AF_UNIX listener speaking PROTOCOL.md's framing), plus:
the C client (hp-client-script, $HP_CLIENT_SCRIPT) and the Python client
send the same bytes for the same calls; and the examples ipr_train.py,
ipr_worker ($HP_IPR_WORKER) and ipr_gloo.py (Debian torch, skipped without
it) survive an injected fault in-process against a small fake IPR agent. Nothing sleeps to synchronise: every wait is on a
frame, a descriptor, a queue or a process exit."""
import json
import os
import queue
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("HP_SOURCE_DIR",
                     os.path.abspath(os.path.join(HERE, "..", "..")))
sys.path.insert(0, os.path.join(SRC, "client", "python"))

import hyperpod_worker as hw  # noqa: E402

TAIL = b'"local_rank": 3, "client_id": "cid-1"}'
MESSAGE = 'line1\n"q" \\ \t\x01\x7f \u00e9 \U0001F600 </a>'
JOB_START = {"type": "job_start", "client_id": "cid-1",
             "worker_envs": {"RANK": "4", "WORLD_SIZE": "8",
                             "JOB_RESTART_COUNT": "1", "N": 5, "Z": None},
             "aggregate_worker_data": {"rank_ips": [{"rank": 0,
                                                     "ip": "10.0.0.1"}]}}


def frame(obj):
    body = obj if isinstance(obj, bytes) else \
        json.dumps(obj, separators=(",", ":")).encode()
    return struct.pack("!I", len(body)) + body


def read_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError("peer closed")
        buf += chunk
    return buf


def read_frame(conn):
    (n,) = struct.unpack("!I", read_exact(conn, 4))
    assert n < (1 << 20), n
    return read_exact(conn, n)


class Peer:
    """The agent's end: a listener, and the connections it accepted."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="hpworker-")
        self.path = os.path.join(self.dir, "agent.sock")
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(self.path)
        self.lsock.listen(16)

    def accept(self):
        conn, _ = self.lsock.accept()
        return conn

    def close(self):
        self.lsock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


class PeerTest(unittest.TestCase):
    def setUp(self):
        self.peer = Peer()
        self.client = hw.AgentClient(self.peer.path, 3, "cid-1").connect()
        self.conn = self.peer.accept()
        self.assertEqual(read_frame(self.conn),
                         b'{"local_rank": 3, "client_id": "cid-1", '
                         b'"type": "init"}')

    def tearDown(self):
        self.client.close()
        self.conn.close()
        self.peer.close()

    def barrier_in_thread(self, timeout=None):
        out = queue.Queue()

        def run():
            try:
                out.put(self.client.wait_at_barrier(timeout))
            except Exception as e:  # handed to the test thread
                out.put(e)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t, out

    def test_init_header_is_big_endian(self):
        peer = Peer()
        try:
            c = hw.AgentClient(peer.path, 3, "cid-1").connect()
            conn = peer.accept()
            raw = read_exact(conn, 4 + 55)
            body = b'{"local_rank": 3, "client_id": "cid-1", "type": "init"}'
            self.assertEqual(raw, b"\x00\x00\x00\x37" + body)
            c.close()
            conn.close()
        finally:
            peer.close()

    def test_defaults_from_environment(self):
        saved = dict(os.environ)
        try:
            os.environ.pop(hw.SOCKET_ENV, None)
            with self.assertRaises(ValueError):
                hw.AgentClient()
            os.environ[hw.SOCKET_ENV] = self.peer.path
            os.environ["LOCAL_RANK"] = "5"
            c = hw.AgentClient().connect()
            conn = self.peer.accept()
            msg = json.loads(read_frame(conn))
            self.assertEqual(list(msg), ["local_rank", "client_id", "type"])
            self.assertEqual(msg["local_rank"], 5)
            cid = msg["client_id"]
            self.assertRegex(cid, r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-"
                                  r"[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
            c.close()
            conn.close()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def test_fault_data_labels_bytes(self):
        self.client.report_fault("OOM", MESSAGE, rank=7)
        self.assertEqual(
            read_frame(self.conn),
            b'{"rank": 7, "restart_mode": "in_process_restart", '
            b'"reason": "OOM", "message": "line1\\n\\"q\\" \\\\ \\t\\u0001'
            b'\\u007f \\u00e9 \\ud83d\\ude00 </a>", "type": "job_fault", '
            + TAIL)
        self.client.report_fault(restart_mode="process_level_restart",
                                 rank=0)
        self.assertEqual(
            read_frame(self.conn),
            b'{"rank": 0, "restart_mode": "process_level_restart", '
            b'"reason": null, "message": null, "type": "job_fault", ' + TAIL)
        self.client.send_data('{"step": 3}', rank=12)
        self.assertEqual(read_frame(self.conn),
                         b'{"rank": 12, "data": "{\\"step\\": 3}", '
                         b'"type": "job_data", ' + TAIL)
        self.client.send_data({"step": 4}, rank=12)
        self.assertEqual(read_frame(self.conn),
                         b'{"rank": 12, "data": "{\\"step\\": 4}", '
                         b'"type": "job_data", ' + TAIL)
        self.client.send_labels({"PPRank": "2", "k\u00e9": "v"})
        self.assertEqual(read_frame(self.conn),
                         b'{"labels": {"PPRank": "2", "k\\u00e9": "v"}, '
                         b'"type": "rank_labels", ' + TAIL)

    def test_send_oversized_refused(self):
        with self.assertRaises(OSError):
            self.client.send_data("a" * hw.MAX_FRAME, rank=0)
        self.client.send_data("x", rank=1)
        self.assertEqual(read_frame(self.conn),
                         b'{"rank": 1, "data": "x", "type": "job_data", '
                         + TAIL)

    def test_barrier_split_frames_and_junk(self):
        saved = dict(os.environ)
        t, out = self.barrier_in_thread()
        self.assertEqual(read_frame(self.conn),
                         b'{"type": "at_rcb_barrier", ' + TAIL)
        self.conn.sendall(frame({"type": "job_start", "client_id": "other",
                                 "worker_envs": {}}))
        self.conn.sendall(frame(b"not json {"))
        self.conn.sendall(frame(b"[1,2]"))
        self.conn.sendall(frame(b"\xff\xfe"))
        self.conn.sendall(frame({"client_id": "cid-1"}))
        self.conn.sendall(frame({"type": "job_fault", "client_id": "cid-1",
                                 "restart_count": 0}))
        data = frame(JOB_START)
        self.conn.sendall(data[:2])
        self.conn.sendall(data[2:5])
        for i in range(5, len(data), 7):
            self.conn.sendall(data[i:i + 7])
        self.assertEqual(read_frame(self.conn),
                         b'{"type": "past_rcb_barrier", ' + TAIL)
        t.join()
        env = out.get()
        try:
            self.assertEqual(env, {"RANK": "4", "WORLD_SIZE": "8",
                                   "JOB_RESTART_COUNT": "1", "N": "5",
                                   "Z": ""})
            self.assertEqual(os.environ["RANK"], "4")
            self.assertEqual(self.client.restart_count, 1)
            self.assertEqual(self.client.aggregate_worker_data,
                             JOB_START["aggregate_worker_data"])
            # The fault heard at the barrier was for the old run.
            self.assertIsNone(self.client.poll_event())
            self.client.check()
            self.assertEqual(select.select([self.client], [], [], 0)[0], [])
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def test_barrier_timeout_and_stale_start(self):
        self.conn.sendall(frame(JOB_START))
        select.select([self.client], [], [])
        ev = self.client.poll_event()
        self.assertEqual(ev.kind, "start")
        self.assertEqual(ev.env["RANK"], "4")
        with self.assertRaises(hw.HyperPodIPCError):
            self.client.wait_at_barrier(timeout=0.02)
        self.assertEqual(read_frame(self.conn),
                         b'{"type": "at_rcb_barrier", ' + TAIL)
        saved = dict(os.environ)
        try:
            t, out = self.barrier_in_thread(timeout=60)
            self.assertEqual(read_frame(self.conn),
                             b'{"type": "at_rcb_barrier", ' + TAIL)
            self.conn.sendall(frame(JOB_START))
            self.assertEqual(read_frame(self.conn),
                             b'{"type": "past_rcb_barrier", ' + TAIL)
            t.join()
            self.assertEqual(out.get()["RANK"], "4")
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def test_notifications(self):
        self.assertIsNone(self.client.poll_event())
        self.assertIsNone(self.client.wait_fault(timeout=0))
        self.assertEqual(select.select([self.client], [], [], 0)[0], [])
        seen = queue.Queue()
        self.client.on_fault(seen.put)
        self.conn.sendall(
            frame({"type": "job_rank_info", "client_id": "cid-1",
                   "worker_envs": {"RANK": "9"}}) +
            frame({"type": "job_fault", "client_id": "cid-1",
                   "restart_count": 2}) +
            frame({"type": "job_failed_ranks", "client_id": "cid-1",
                   "failed_ranks": [3]}) +
            frame({"type": "invalid_response", "client_id": "cid-1"}))
        self.assertEqual(seen.get(timeout=30), 2)
        self.assertEqual(self.client.wait_fault(), 2)
        with self.assertRaises(hw.FaultInterrupt) as cm:
            self.client.check()
        self.assertEqual(cm.exception.restart_count, 2)
        self.assertTrue(self.client.fault_pending)
        kinds = []
        while len(kinds) < 4:
            select.select([self.client], [], [])
            ev = self.client.poll_event()
            kinds.append(ev.kind)
            if ev.kind == "rank_info":
                self.assertEqual(ev.env, {"RANK": "9"})
            if ev.kind == "fault":
                self.assertEqual(ev.restart_count, 2)
            if ev.kind == "failed_ranks":
                self.assertEqual(ev.body, {"failed_ranks": [3]})
        self.assertEqual(kinds, ["rank_info", "fault", "failed_ranks",
                                 "invalid_response"])
        self.assertIsNone(self.client.poll_event())
        self.assertEqual(select.select([self.client], [], [], 0)[0], [])

        data = frame({"type": "job_fault", "client_id": "cid-1",
                      "restart_count": 3})
        for i in range(len(data)):
            self.conn.sendall(data[i:i + 1])
        self.assertEqual(seen.get(timeout=30), 3)

    def test_queue_cap(self):
        seen = queue.Queue()
        self.client.on_fault(seen.put)
        self.conn.sendall(b"".join(
            frame({"type": "job_rank_info", "client_id": "cid-1",
                   "worker_envs": {"I": str(i)}})
            for i in range(hw.MAX_QUEUED + 6)))
        self.conn.sendall(frame({"type": "job_fault", "client_id": "cid-1",
                                 "restart_count": 4}))
        self.assertEqual(seen.get(timeout=30), 4)  # all earlier are queued
        events = []
        while True:
            ev = self.client.poll_event()
            if ev is None:
                break
            events.append(ev)
        self.assertEqual(len(events), hw.MAX_QUEUED)
        self.assertEqual(events[0].env, {"I": "7"})
        self.assertEqual(events[-1].kind, "fault")

    def test_oversized_frame_breaks_connection(self):
        self.conn.sendall(frame({"type": "job_fault", "client_id": "cid-1",
                                 "restart_count": 1}))
        self.conn.sendall(struct.pack("!I", hw.MAX_FRAME + 1) + b"{}")
        self.assertEqual(self.conn.recv(1), b"")  # the client hung up
        select.select([self.client], [], [])
        self.assertEqual(self.client.poll_event().kind, "fault")
        with self.assertRaises(hw.HyperPodIPCError):
            self.client.poll_event()
        self.assertEqual(select.select([self.client], [], [], 0)[0],
                         [self.client])
        with self.assertRaises(hw.HyperPodIPCError):
            self.client.wait_at_barrier()

    def test_peer_closes_during_barrier(self):
        t, out = self.barrier_in_thread()
        self.assertEqual(read_frame(self.conn),
                         b'{"type": "at_rcb_barrier", ' + TAIL)
        self.conn.close()
        t.join()
        self.assertIsInstance(out.get(), hw.HyperPodIPCError)
        self.conn = socket.socket()  # for tearDown

    def test_restartable(self):
        calls = []

        def train(client, arg):
            calls.append(arg)
            if len(calls) == 1:
                raise ValueError("boom")
            client.check()  # the fault echoed at the barrier is stale
            return "ok"

        saved = dict(os.environ)
        result = queue.Queue()
        run = hw.restartable(client=self.client)(train)
        t = threading.Thread(target=lambda: result.put(run("a")), daemon=True)
        try:
            t.start()
            self.assertEqual(read_frame(self.conn),
                             b'{"type": "at_rcb_barrier", ' + TAIL)
            self.conn.sendall(frame(JOB_START))
            self.assertEqual(read_frame(self.conn),
                             b'{"type": "past_rcb_barrier", ' + TAIL)
            self.assertEqual(
                read_frame(self.conn),
                b'{"rank": 4, "restart_mode": "in_process_restart", '
                b'"reason": "ValueError", "message": "boom", '
                b'"type": "job_fault", ' + TAIL)
            self.assertEqual(read_frame(self.conn),
                             b'{"type": "at_rcb_barrier", ' + TAIL)
            self.conn.sendall(frame({"type": "job_fault",
                                     "client_id": "cid-1",
                                     "restart_count": 1}))
            self.conn.sendall(frame(JOB_START))
            self.assertEqual(read_frame(self.conn),
                             b'{"type": "past_rcb_barrier", ' + TAIL)
            t.join()
            self.assertEqual(result.get(), "ok")
            self.assertEqual(calls, ["a", "a"])
        finally:
            os.environ.clear()
            os.environ.update(saved)


class SameBytesTest(unittest.TestCase):
    """libhyperpod and hyperpod_worker.py send identical frames."""

    SCRIPT = os.environ.get("HP_CLIENT_SCRIPT")

    def record(self, peer, start_client):
        frames = []
        started = start_client()
        conn = peer.accept()
        try:
            while True:
                body = read_frame(conn)
                frames.append(body)
                if json.loads(body)["type"] == "at_rcb_barrier":
                    conn.sendall(frame(dict(JOB_START, client_id="same-id")))
                if json.loads(body)["type"] == "past_rcb_barrier":
                    break
        finally:
            conn.close()
        return started, frames

    @unittest.skipUnless(SCRIPT, "HP_CLIENT_SCRIPT not set")
    def test_same_bytes(self):
        peer = Peer()
        env = dict(os.environ, LOCAL_RANK="2")
        env[hw.SOCKET_ENV] = peer.path
        try:
            proc, c_frames = self.record(peer, lambda: subprocess.Popen(
                [self.SCRIPT, "same-id"], env=env, stdout=subprocess.PIPE))
            out, _ = proc.communicate(timeout=60)
            self.assertEqual(proc.returncode, 0)
            self.assertEqual(out, b"RANK=4\n")

            def python_client():
                c = hw.AgentClient(peer.path, 2, "same-id").connect()
                c.report_fault("OOM", MESSAGE, rank=7)
                c.report_fault(None, None, "process_level_restart", rank=0)
                c.send_data('{"step": 3}', rank=12)
                c.send_labels({"PPRank": "2", "k\u00e9": "v"})
                t = threading.Thread(target=c.wait_at_barrier, daemon=True)
                t.start()
                return c, t
            saved = dict(os.environ)
            try:
                (c, t), py_frames = self.record(peer, python_client)
                t.join()
                c.close()
            finally:
                os.environ.clear()
                os.environ.update(saved)
        finally:
            peer.close()
        self.assertEqual(len(c_frames), 7)
        self.assertEqual(c_frames, py_frames)


class FakeAgent(threading.Thread):
    """Just enough of an IPR agent for the examples: release the barrier
    when all n workers are at it; on a worker's job_fault, tell every worker
    (restart_count + 1). Ends when every worker has come and gone."""

    def __init__(self, peer, n, master_port=0):
        super().__init__(daemon=True)
        self.peer, self.n, self.master_port = peer, n, master_port
        self.clients = {}
        self.at_barrier = set()
        self.restart_count = 0
        self.inits = []
        self.faults = []
        self.error = None
        self.stop_r, self.stop_w = os.pipe()

    def send(self, conn, obj):
        obj = dict(obj, client_id=self.clients[conn]["client_id"])
        conn.sendall(frame(obj))

    def handle(self, conn, msg):
        t = msg["type"]
        if t == "init":
            self.clients[conn].update(client_id=msg["client_id"],
                                      local_rank=msg["local_rank"])
            self.inits.append(msg["local_rank"])
        elif t == "at_rcb_barrier":
            self.at_barrier.add(conn)
            if len(self.at_barrier) == self.n:
                self.at_barrier.clear()
                rc = str(self.restart_count)
                for c, st in self.clients.items():
                    r = str(st["local_rank"])
                    self.send(c, {"type": "job_start", "worker_envs": {
                        "RANK": r, "LOCAL_RANK": r, "GROUP_RANK": "0",
                        "WORLD_SIZE": str(self.n),
                        "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(self.master_port),
                        "JOB_RESTART_COUNT": rc,
                        "TORCHELASTIC_RESTART_COUNT": rc},
                        "aggregate_worker_data": {}})
        elif t == "job_fault":
            self.faults.append(msg)
            self.restart_count += 1
            for c in self.clients:
                self.send(c, {"type": "job_fault",
                              "restart_count": self.restart_count})

    def run(self):
        try:
            seen = 0
            while seen < self.n or self.clients:
                socks = [self.peer.lsock, self.stop_r] + list(self.clients)
                r, _, _ = select.select(socks, [], [])
                if self.stop_r in r:
                    return
                for s in r:
                    if s is self.peer.lsock:
                        conn = self.peer.accept()
                        self.clients[conn] = {"buf": b""}
                        seen += 1
                        continue
                    data = s.recv(65536)
                    if not data:
                        del self.clients[s]
                        self.at_barrier.discard(s)
                        s.close()
                        continue
                    st = self.clients[s]
                    st["buf"] += data
                    while len(st["buf"]) >= 4:
                        (n,) = struct.unpack("!I", st["buf"][:4])
                        if len(st["buf"]) < 4 + n:
                            break
                        body = st["buf"][4:4 + n]
                        st["buf"] = st["buf"][4 + n:]
                        self.handle(s, json.loads(body))
        except Exception as e:  # reported by the test thread
            self.error = e

    def stop(self):
        os.write(self.stop_w, b"x")
        self.join()
        for c in list(self.clients):
            c.close()
        os.close(self.stop_r)
        os.close(self.stop_w)


class ExamplesTest(unittest.TestCase):
    """The examples survive an injected fault in the same process."""

    def run_workers(self, argv, n, extra, master_port=0):
        peer = Peer()
        agent = FakeAgent(peer, n, master_port)
        agent.start()
        procs = []
        try:
            for lr in range(n):
                env = dict(os.environ, LOCAL_RANK=str(lr), **extra)
                env[hw.SOCKET_ENV] = peer.path
                procs.append(subprocess.Popen(argv, env=env,
                                              stdout=subprocess.PIPE,
                                              text=True))
            outs = []
            for p in procs:
                out, _ = p.communicate(timeout=120)
                self.assertEqual(p.returncode, 0, out)
                outs.append(out.splitlines())
            agent.join()
            self.assertIsNone(agent.error)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            agent.stop()
            peer.close()
        # One init per worker: the processes never restarted.
        self.assertEqual(sorted(agent.inits), list(range(n)))
        self.assertEqual(len(agent.faults), 1)
        return outs, agent

    def check_single(self, argv):
        outs, agent = self.run_workers(argv, 1, {
            "HP_FAIL_AT_STEP": "2", "HP_FAIL_RANK": "0", "HP_STEPS": "4"})
        steps = [ln for ln in outs[0] if ln.startswith("rank ")]
        self.assertEqual(steps, [
            "rank 0 restart_count 0 step 0", "rank 0 restart_count 0 step 1",
            "rank 0 restart_count 0 step 2", "rank 0 restart_count 1 step 0",
            "rank 0 restart_count 1 step 1", "rank 0 restart_count 1 step 2",
            "rank 0 restart_count 1 step 3"])
        self.assertEqual(outs[0][-1], "done")
        return agent

    def check_pair(self, argv):
        # Rank 1 fails at once; rank 0 has 40 x 50 ms of steps to hear it.
        outs, agent = self.run_workers(argv, 2, {
            "HP_FAIL_AT_STEP": "0", "HP_FAIL_RANK": "1", "HP_STEPS": "40",
            "HP_STEP_MS": "50"})
        for r, out in enumerate(outs):
            self.assertIn(f"rank {r} restart_count 1 step 39", out)
            self.assertNotIn(f"rank {r} restart_count 0 step 39", out)
            self.assertEqual(out[-1], "done")
        self.assertEqual(agent.faults[0]["rank"], 1)

    def test_ipr_train_py(self):
        script = os.path.join(SRC, "examples", "ipr_train.py")
        agent = self.check_single([sys.executable, script])
        self.assertEqual(agent.faults[0]["reason"], "InjectedFault")
        self.check_pair([sys.executable, script])

    def test_ipr_gloo(self):
        torch_python = "/usr/bin/python3"
        if subprocess.run([torch_python, "-c", "import torch.distributed"],
                          stderr=subprocess.DEVNULL).returncode != 0:
            self.skipTest("no torch for /usr/bin/python3")
        with socket.socket() as s:  # a free port for rank 0's TCPStore
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        outs, agent = self.run_workers(
            [torch_python, os.path.join(SRC, "examples", "ipr_gloo.py")], 2,
            {"HP_FAIL_AT_STEP": "1", "HP_FAIL_RANK": "0", "HP_STEPS": "3"},
            port)
        self.assertEqual(agent.faults[0]["rank"], 0)
        for r, out in enumerate(outs):
            steps = [ln.split(" pid ")[1].split(" ", 1)[1] for ln in out
                     if ln.startswith(f"rank {r} pid ")]
            self.assertEqual(steps[-3:], [
                "restart_count 1 step 0 sum 3", "restart_count 1 step 1 sum 3",
                "restart_count 1 step 2 sum 3"])
            self.assertNotIn("restart_count 0 step 1 sum 3", steps)
            self.assertEqual(len({ln.split()[3] for ln in out
                                  if ln.startswith("rank ")}), 1)  # one pid
            self.assertEqual(out[-1], "done")

    @unittest.skipUnless(os.environ.get("HP_IPR_WORKER"),
                         "HP_IPR_WORKER not set")
    def test_ipr_worker_c(self):
        argv = [os.environ["HP_IPR_WORKER"]]
        agent = self.check_single(argv)
        self.assertEqual(agent.faults[0]["reason"], "InjectedFault")
        self.check_pair(argv)


if __name__ == "__main__":
    unittest.main(verbosity=2)
