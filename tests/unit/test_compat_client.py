#!/usr/bin/env python3
"""Unit tests for the hyperpod_elastic_agent compatibility package
(client/python/hyperpod_elastic_agent) against a fake agent written here:
an AF_UNIX listener that reads and writes PROTOCOL.md's frames. They check
the reference's surface (names, return shapes, exception texts), the bytes
on the wire (the same as hyperpod_worker's), the queue per message type
with drain-before-wait, one shared connection for every client object,
and every exception path a real socket can produce. elastic_event_handler
runs in child processes (it reads its mode at import). Every wait has a
deadline; nothing sleeps to synchronise."""
import json
import os
import queue
import signal
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
PYDIR = os.path.join(SRC, "client", "python")
sys.path.insert(0, PYDIR)

import hyperpod_worker as hw  # noqa: E402
import hyperpod_elastic_agent as hea  # noqa: E402
from hyperpod_elastic_agent import ipc  # noqa: E402
from hyperpod_elastic_agent.checkpoint_discovery import CheckpointType  # noqa: E402
from hyperpod_elastic_agent.ipc import client as ipc_client  # noqa: E402
from hyperpod_elastic_agent.ipc import server as ipc_server  # noqa: E402
from hyperpod_elastic_agent.ipc import socket as ipc_socket  # noqa: E402
from hyperpod_elastic_agent.ipc import util as ipc_util  # noqa: E402
from hyperpod_elastic_agent.ipc.common import (  # noqa: E402
    CheckpointDiscoverySocketMessageType as CK,
    HyperPodIPCException,
    InProcessRestartSocketMessageType as IPR,
    RestartMode,
)

T = 10.0  # every wait's deadline
SHARED = ipc_client.BaseIPCSocketClient.socket_client


def frame(obj):
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return struct.pack("!I", len(body)) + body


class FakeAgent:
    """The agent's end: one listener; conns accepted in order."""

    def __init__(self, path):
        self.path = path
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(path)
        self.lsock.listen(8)
        self.lsock.settimeout(T)
        self.conns = []

    def accept(self):
        c, _ = self.lsock.accept()
        c.settimeout(T)
        self.conns.append(c)
        return c

    def pending(self):
        """True when a connection waits to be accepted."""
        self.lsock.setblocking(False)
        try:
            c, _ = self.lsock.accept()
        except BlockingIOError:
            return False
        finally:
            self.lsock.settimeout(T)
        self.conns.append(c)
        return True

    @staticmethod
    def read_exact(conn, n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise EOFError("client closed")
            buf += chunk
        return buf

    def read_raw(self, conn):
        (n,) = struct.unpack("!I", self.read_exact(conn, 4))
        return self.read_exact(conn, n)

    def read(self, conn):
        return json.loads(self.read_raw(conn))

    def close(self):
        for c in self.conns:
            c.close()
        self.lsock.close()


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="hp-compat-")
        self.path = os.path.join(self.tmp, "agent.sock")
        self.agent = FakeAgent(self.path)
        self.env = {k: os.environ.get(k) for k in
                    ("HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH", "LOCAL_RANK")}
        os.environ["HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH"] = self.path
        os.environ["LOCAL_RANK"] = "3"
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        SHARED.disconnect()
        self.agent.close()
        for k, v in self.env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)

    def ipr_client(self):
        """A connected InProcessRestartSocketClient and the agent's conn,
        with init already read (and checked)."""
        c = ipc.InProcessRestartSocketClient()
        conn = self.agent.accept()
        raw = self.agent.read_raw(conn)
        self.assertEqual(raw, ('{"local_rank": 3, "client_id": "%s", '
                               '"type": "init"}' % c.client_id).encode())
        return c, conn

    def in_thread(self, fn, *args, **kw):
        """Runs fn in a thread; returns a queue that gets ("ok", result)
        or ("err", exception)."""
        out = queue.Queue()

        def run():
            try:
                out.put(("ok", fn(*args, **kw)))
            except BaseException as e:  # noqa: B902 - handed to the test
                out.put(("err", e))
        threading.Thread(target=run, daemon=True).start()
        return out

    def agent_gone(self, conn):
        """The agent closes the connection; returns once the client's
        reader saw it."""
        conn.close()
        self.agent.conns.remove(conn)
        SHARED._event_loop_thread.join(T)
        self.assertFalse(SHARED._event_loop_thread.is_alive())
        self.assertFalse(SHARED.running)

    def sync_queue(self, client, msg_type):
        """A queue registered after client's own: once it holds a message,
        client's queue for that type holds it too (same lock, in order)."""
        q = queue.Queue()
        SHARED.register_message_queue(msg_type, q, client.client_id)
        return q


class Surface(unittest.TestCase):
    """Names and shapes of the reference (spec section 4)."""

    def test_exports(self):
        self.assertEqual(sorted(hea.__all__), sorted([
            "CheckpointDiscoverySocketClient", "HyperPodRendezvousBackend",
            "HyperpodRendezvousException", "InProcessRestartSocketClient",
            "InProcessRestartSocketMessageType", "RestartMode",
            "TrainingManager"]))
        self.assertEqual(sorted(ipc.__all__), sorted([
            "CheckpointDiscoverySocketClient",
            "CheckpointDiscoverySocketServer", "HyperPodPLRException",
            "HyperPodIPCException", "InProcessRestartSocketClient",
            "InProcessRestartSocketMessageType",
            "InProcessRestartSocketServer", "RestartMode",
            "TrainingManager"]))
        for name in hea.__all__:
            self.assertTrue(hasattr(hea, name), name)
        for name in ipc.__all__:
            self.assertTrue(hasattr(ipc, name), name)
        self.assertTrue(issubclass(ipc.HyperPodIPCException, RuntimeError))
        self.assertTrue(issubclass(ipc.HyperPodPLRException, RuntimeError))
        self.assertIs(ipc_client.InProcessRestartSocketClient,
                      ipc.InProcessRestartSocketClient)
        self.assertTrue(hasattr(ipc_socket, "HyperPodElasticAgentSocketClient"))
        self.assertTrue(hasattr(ipc_util, "LengthPrefixMessageFramer"))

    def test_enums_are_wire_strings(self):
        self.assertEqual(RestartMode.LOCAL_PRL, "local_process_level_restart")
        self.assertEqual({m.name: m.value for m in RestartMode}, {
            "IN_PROCESS_RESTART": "in_process_restart",
            "JOB_LEVEL_RESTART": "job_level_restart",
            "LOCAL_PRL": "local_process_level_restart",
            "PROCESS_LEVEL_RESTART": "process_level_restart"})
        self.assertEqual(IPR.JOB_START, "job_start")
        self.assertEqual({m.value for m in IPR}, {
            "at_rcb_barrier", "job_data", "job_failed_ranks", "job_fault",
            "job_rank_info", "job_start", "past_rcb_barrier",
            "rank_labels"})
        self.assertEqual({m.value for m in CK},
                         {"ckpt_info_get", "ckpt_info_update", "ckpt_init"})
        self.assertEqual([m.value for m in CheckpointType],
                         ["model_checkpoint", "data_checkpoint"])
        self.assertEqual(json.dumps({CheckpointType.DATA_CHECKPOINT:
                                     RestartMode.LOCAL_PRL}),
                         '{"data_checkpoint": "local_process_level_restart"}')

    def test_agent_side_names_are_stubs(self):
        for cls in (ipc.InProcessRestartSocketServer,
                    ipc.CheckpointDiscoverySocketServer,
                    ipc_socket.HyperPodElasticAgentSocketServer,
                    hea.HyperPodRendezvousBackend):
            with self.assertRaises(NotImplementedError) as cm:
                cls()
            self.assertIn("hyperpodrun binary", str(cm.exception))
        self.assertTrue(issubclass(ipc_server.InProcessRestartSocketServer,
                                   object))

    def test_framer(self):
        f = ipc_util.LengthPrefixMessageFramer()
        data = f.frame_message(b'{"a": 1}') + f.frame_message(b"xy")
        self.assertEqual(data[:4], b"\x00\x00\x00\x08")
        out = []
        for i in range(len(data)):  # one byte at a time
            out += f.process_data(data[i:i + 1])
        self.assertEqual(out, [b'{"a": 1}', b"xy"])
        self.assertEqual(f.process_data(f.frame_message(b"z") + struct.pack(
            "!I", hw.MAX_FRAME + 1)), [b"z"])
        with self.assertRaises(OSError):
            f.process_data(b"more")


class NoAgent(unittest.TestCase):
    def tearDown(self):
        SHARED.disconnect()

    def test_no_socket_variable(self):
        old = os.environ.pop("HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH", None)
        try:
            with self.assertRaises(ValueError) as cm:
                ipc.InProcessRestartSocketClient()
            self.assertEqual(str(cm.exception),
                             "HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH not "
                             "set. Can't initialize client")
        finally:
            if old is not None:
                os.environ["HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH"] = old

    def test_nobody_listening(self):
        with tempfile.TemporaryDirectory() as d:
            os.environ["HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH"] = \
                os.path.join(d, "none.sock")
            try:
                with self.assertRaises(OSError):
                    ipc.InProcessRestartSocketClient()
                with self.assertRaises(OSError):
                    ipc.CheckpointDiscoverySocketClient("p")
                self.assertFalse(SHARED.running)
            finally:
                del os.environ["HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH"]


class InProcessRestart(Base):
    def test_barrier_job_start_past(self):
        c, conn = self.ipr_client()
        res = self.in_thread(c.hyperpod_barrier)
        self.assertEqual(self.agent.read_raw(conn), (
            '{"type": "at_rcb_barrier", "local_rank": 3, "client_id": "%s"}'
            % c.client_id).encode())
        body = {"worker_envs": {"RANK": "7", "JOB_RESTART_COUNT": "2"},
                "aggregate_worker_data": {"rank_ips": []}}
        conn.sendall(frame(dict(type="job_start", client_id=c.client_id,
                                **body)))
        kind, val = res.get(timeout=T)
        self.assertEqual(kind, "ok", val)
        typ, got = val
        self.assertEqual(typ, IPR.JOB_START)
        self.assertEqual(typ, "job_start")
        self.assertEqual(got, body)
        c.hyperpod_past_rcb_barrier()
        self.assertEqual(self.agent.read(conn), {
            "type": "past_rcb_barrier", "local_rank": 3,
            "client_id": c.client_id})

    def test_barrier_drops_a_stale_job_start_and_times_out(self):
        c, conn = self.ipr_client()
        sync = self.sync_queue(c, "job_start")
        conn.sendall(frame({"type": "job_start", "client_id": c.client_id,
                            "worker_envs": {}}))
        sync.get(timeout=T)
        with self.assertRaises(HyperPodIPCException) as cm:
            c.hyperpod_barrier(timeout=0.2)
        self.assertEqual(str(cm.exception),
                         "Timed out reading data from server after 0.2 "
                         "seconds")
        self.assertEqual(self.agent.read(conn)["type"], "at_rcb_barrier")

    def test_wait_fault_drains_stale_faults(self):
        c, conn = self.ipr_client()
        sync = self.sync_queue(c, "job_fault")
        conn.sendall(frame({"type": "job_fault", "client_id": c.client_id,
                            "restart_count": 1}))
        sync.get(timeout=T)
        with self.assertRaises(HyperPodIPCException) as cm:
            c.hyperpod_wait_fault(timeout=0.2)
        self.assertIn("after 0.2 seconds", str(cm.exception))
        # a fault that comes while waiting is returned
        res = self.in_thread(c.hyperpod_wait_fault, timeout=T)
        # The waiter drains first and when it did cannot be seen from
        # here, so faults go out one by one until one is answered: that
        # one came after the drain.
        for n in range(2, 200):
            conn.sendall(frame({"type": "job_fault",
                                "client_id": c.client_id,
                                "restart_count": n}))
            sync.get(timeout=T)
            try:
                kind, val = res.get(timeout=0.05)
                break
            except queue.Empty:
                continue
        self.assertEqual(kind, "ok", val)
        self.assertEqual(val[0], "job_fault")
        self.assertGreaterEqual(val[1]["restart_count"], 2)

    def test_wait_rank_info_newest_then_timeout(self):
        c, conn = self.ipr_client()
        sync = self.sync_queue(c, "job_rank_info")
        for r in ("1", "2"):
            conn.sendall(frame({"type": "job_rank_info",
                                "client_id": c.client_id,
                                "worker_envs": {"RANK": r}}))
            sync.get(timeout=T)
        typ, body = c.hyperpod_wait_rank_info()
        self.assertEqual((typ, body), ("job_rank_info",
                                       {"worker_envs": {"RANK": "2"}}))
        with self.assertRaises(HyperPodIPCException) as cm:
            c.hyperpod_wait_rank_info(timeout=0.1)
        self.assertEqual(str(cm.exception), "Timed out reading data from "
                         "server after 0.1 seconds")

    def test_wait_rank_info_blocks_for_the_next(self):
        c, conn = self.ipr_client()
        res = self.in_thread(c.hyperpod_wait_rank_info)
        conn.sendall(frame({"type": "job_rank_info", "client_id": c.client_id,
                            "worker_envs": {"RANK": "9"}}))
        self.assertEqual(res.get(timeout=T),
                         ("ok", ("job_rank_info",
                                 {"worker_envs": {"RANK": "9"}})))

    def test_skips_garbage_other_clients_and_reassembles(self):
        c, conn = self.ipr_client()
        res = self.in_thread(c.hyperpod_wait_rank_info, timeout=T)
        data = (frame(b"not json") + frame(b"[1, 2]") +
                frame({"type": "job_rank_info"}) +
                frame({"type": "job_rank_info", "client_id": "someone-else",
                       "worker_envs": {"RANK": "0"}}) +
                frame({"type": "job_rank_info", "client_id": c.client_id,
                       "worker_envs": {"RANK": "5"}}))
        for i in range(0, len(data), 3):  # 3 bytes per write
            conn.sendall(data[i:i + 3])
        self.assertEqual(res.get(timeout=T),
                         ("ok", ("job_rank_info",
                                 {"worker_envs": {"RANK": "5"}})))

    def test_send_bytes_match_hyperpod_worker(self):
        c, conn = self.ipr_client()
        c.hyperpod_send_fault(5, RestartMode.PROCESS_LEVEL_RESTART)
        c.hyperpod_send_fault(5, RestartMode.LOCAL_PRL, "Boom", "it broke")
        c.hyperpod_send_data(5, '{"step": 3}')
        c.hyperpod_notify_labels({"PPRank": "1"})
        got = [self.agent.read_raw(conn) for _ in range(4)]
        self.assertEqual(got[0], (
            '{"rank": 5, "restart_mode": "process_level_restart", "reason": '
            'null, "message": null, "type": "job_fault", "local_rank": 3, '
            '"client_id": "%s"}' % c.client_id).encode())
        # hyperpod_worker's AgentClient writes the very same bytes
        w = hw.AgentClient(path=self.path, local_rank=3,
                           client_id=c.client_id).connect()
        try:
            wconn = self.agent.accept()
            self.agent.read_raw(wconn)  # its init
            w.report_fault(rank=5, restart_mode="process_level_restart")
            w.report_fault("Boom", "it broke", "local_process_level_restart",
                           rank=5)
            w.send_data('{"step": 3}', rank=5)
            w.send_labels({"PPRank": "1"})
            wgot = [self.agent.read_raw(wconn) for _ in range(4)]
        finally:
            w.close()
        self.assertEqual(got, wgot)
        self.assertEqual(json.loads(got[2]), {
            "rank": 5, "data": '{"step": 3}', "type": "job_data",
            "local_rank": 3, "client_id": c.client_id})
        self.assertEqual(json.loads(got[3])["labels"], {"PPRank": "1"})

    def test_local_rank_is_read_at_each_send(self):
        c, conn = self.ipr_client()
        os.environ["LOCAL_RANK"] = "6"
        c.hyperpod_past_rcb_barrier()
        self.assertEqual(self.agent.read(conn)["local_rank"], 6)

    def test_every_send_fails_once_the_agent_is_gone(self):
        c, conn = self.ipr_client()
        ck = ipc.CheckpointDiscoverySocketClient("p", 1, 0)
        self.agent.read(conn), self.agent.read(conn)  # init, ckpt_init
        self.agent_gone(conn)
        cases = [
            (c.hyperpod_barrier, (), "Failed to communicate barrier to "
             "server"),
            (c.hyperpod_send_fault, (1,), "Failed to send job_fault to Agent"),
            (c.hyperpod_send_data, (1, "x"), "Failed to send data to Agent"),
            (c.hyperpod_past_rcb_barrier, (), "Failed to notify Agent of "
             "passing the RCB barrier"),
            (c.hyperpod_notify_labels, ({"a": "b"},), "Failed to notify "
             "Agent of current labels"),
            (ck.update, (5, "/ck/5", CheckpointType.MODEL_CHECKPOINT),
             "Failed to update HyperPodElasticAgent with the latest step=5, "
             "path='/ck/5', checkpoint_type="),
            (ck.get_latest_checkpoint_path, (), "Failed to request latest "
             "checkpoint from agent."),
        ]
        for fn, args, text in cases:
            with self.subTest(fn=fn.__name__):
                with self.assertRaises(HyperPodIPCException) as cm:
                    fn(*args)
                self.assertTrue(str(cm.exception).startswith(text),
                                str(cm.exception))
        # the next client dials again
        c2 = ipc.InProcessRestartSocketClient()
        conn2 = self.agent.accept()
        self.assertEqual(self.agent.read(conn2)["client_id"], c2.client_id)

    def test_oversized_frame_from_the_agent_drops_the_connection(self):
        c, conn = self.ipr_client()
        # the frame before it, in the same write, still arrives
        conn.sendall(frame({"type": "job_rank_info", "client_id": c.client_id,
                            "worker_envs": {}}) +
                     struct.pack("!I", hw.MAX_FRAME + 1))
        SHARED._event_loop_thread.join(T)
        self.assertEqual(c.hyperpod_wait_rank_info(timeout=0),
                         ("job_rank_info", {"worker_envs": {}}))
        self.assertFalse(SHARED.running)
        with self.assertRaises(HyperPodIPCException):
            c.hyperpod_past_rcb_barrier()


class CheckpointDiscovery(Base):
    def test_shares_one_connection_and_speaks_the_reference(self):
        c, conn = self.ipr_client()
        ck = ipc.CheckpointDiscoverySocketClient("run1", 2, 1)
        self.assertFalse(self.agent.pending(), "a second connection")
        self.assertEqual(self.agent.read(conn), {
            "local_rank": 3, "client_id": ck.client_id, "type": "init"})
        self.assertEqual(self.agent.read_raw(conn), (
            '{"prefix": "run1", "checkpoint_types": {"model_checkpoint": 2, '
            '"data_checkpoint": 1}, "type": "ckpt_init", "local_rank": 3, '
            '"client_id": "%s"}' % ck.client_id).encode())
        self.assertNotEqual(ck.client_id, c.client_id)
        self.assertEqual(repr(ck), "CheckpointDiscoverySocketClient("
                         "self.prefix='run1', self.num_model_checkpoints=2, "
                         "self.num_data_checkpoints=1)")
        ck.update(40, "/ck/40", CheckpointType.MODEL_CHECKPOINT)
        self.assertEqual(self.agent.read(conn), {
            "step": 40, "path": "/ck/40", "checkpoint_type":
            "model_checkpoint", "type": "ckpt_info_update", "local_rank": 3,
            "client_id": ck.client_id})

    def test_get_latest_checkpoint_path(self):
        ck = ipc.CheckpointDiscoverySocketClient("run1")
        conn = self.agent.accept()
        self.agent.read(conn), self.agent.read(conn)
        sync = self.sync_queue(ck, "ckpt_info_get")
        # a stale answer is drained before the request
        conn.sendall(frame({"type": "ckpt_info_get",
                            "client_id": ck.client_id, "path": "/old"}))
        sync.get(timeout=T)
        res = self.in_thread(ck.get_latest_checkpoint_path)
        self.assertEqual(self.agent.read(conn), {
            "type": "ckpt_info_get", "local_rank": 3,
            "client_id": ck.client_id})
        # an answer for another client does not count
        conn.sendall(frame({"type": "ckpt_info_get", "client_id": "other",
                            "path": "/theirs"}) +
                     frame({"type": "ckpt_info_get",
                            "client_id": ck.client_id, "path": "/ck/9"}))
        self.assertEqual(res.get(timeout=T), ("ok", "/ck/9"))
        res = self.in_thread(ck.get_latest_checkpoint_path)
        self.agent.read(conn)
        conn.sendall(frame({"type": "ckpt_info_get",
                            "client_id": ck.client_id}))
        self.assertEqual(res.get(timeout=T), ("ok", None))

    def test_register_fails_for_an_oversized_prefix(self):
        with self.assertRaises(ValueError) as cm:
            ipc.CheckpointDiscoverySocketClient("p" * (hw.MAX_FRAME + 1))
        self.assertTrue(str(cm.exception).startswith(
            "Failed to register checkpoint client with prefix='ppp"))
        self.assertTrue(str(cm.exception).endswith(
            "' with the HyperPodElasticAgent"))
        conn = self.agent.accept()
        self.assertEqual(self.agent.read(conn)["type"], "init")

    def test_training_manager(self):
        m = hea.TrainingManager()
        self.assertIsInstance(m.InProcessRestart,
                              ipc.InProcessRestartSocketClient)
        ck = m.get_checkpoint_discovery_client("pfx", 4, 0)
        self.assertIsInstance(ck, ipc.CheckpointDiscoverySocketClient)
        self.assertEqual((ck.prefix, ck.num_model_checkpoints,
                          ck.num_data_checkpoints), ("pfx", 4, 0))
        conn = self.agent.accept()
        kinds = [self.agent.read(conn)["type"] for _ in range(3)]
        self.assertEqual(kinds, ["init", "init", "ckpt_init"])


EVENT_SCRIPT = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from hyperpod_elastic_agent.elastic_event_handler import elastic_event_detected
if len(sys.argv) > 2:  # a one-rank gloo group: the all-reduce path
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method="file://" + sys.argv[2],
                            rank=0, world_size=1)
before = elastic_event_detected()
os.kill(os.getpid(), signal.SIGUSR1)
print(before, elastic_event_detected(), elastic_event_detected(signal.SIGTERM))
"""


class ElasticEvent(unittest.TestCase):
    def run_mode(self, mode, *extra):
        env = dict(os.environ)
        env.pop("HYPERPOD_SIGNAL_COORDINATION", None)
        if mode is not None:
            env["HYPERPOD_SIGNAL_COORDINATION"] = mode
        r = subprocess.run([sys.executable, "-c", EVENT_SCRIPT, PYDIR,
                            *extra], env=env, capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.split(), r.stderr

    def test_default_is_disabled(self):
        self.assertEqual(self.run_mode(None)[0], ["False", "False", "False"])
        self.assertEqual(self.run_mode("DISABLED")[0],
                         ["False", "False", "False"])

    def test_distributed_without_a_group_is_the_local_flag(self):
        self.assertEqual(self.run_mode("distributed")[0],
                         ["False", "True", "False"])

    def test_invalid_mode_warns_and_is_disabled(self):
        out, err = self.run_mode("bogus")
        self.assertEqual(out, ["False", "False", "False"])
        self.assertIn('Invalid HYPERPOD_SIGNAL_COORDINATION value: "bogus"',
                      err)

    def test_distributed_all_reduce_in_a_gloo_group(self):
        r = subprocess.run([sys.executable, "-c", "import torch.distributed"],
                           capture_output=True, timeout=120)
        if r.returncode != 0:
            self.skipTest(f"no torch.distributed in {sys.executable}")
        with tempfile.TemporaryDirectory() as d:
            self.assertEqual(self.run_mode("distributed",
                                           os.path.join(d, "store"))[0],
                             ["False", "True", "False"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
