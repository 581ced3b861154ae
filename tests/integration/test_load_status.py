"""/status under load while the workers restart (issue 3 §Tests, Load).

A local-mode agent whose two workers fail at once (/bin/false) with a huge
--max-restarts restarts its group continuously (a restart storm), while
16 threads, each on its own keep-alive connection (http.client), send a
bounded 20,000 GET /status between them. Required: 0 errors (connection
errors, non-200 codes, bodies that are not a JSON object with "status"),
every connection kept alive for the whole run (one connect each), and the
agent visibly restarting during the load (several distinct RUNNING
timestamps seen by the clients). The loop is bounded by the request count
and a deadline, so it stops by itself; /shutdown then ends the agent.

Built to stay well under 60 s on 2 cores with an ASan build: the access log
and the agent's own log are turned down so 20,000 requests and thousands of
restarts do not become 100,000 log lines for the harness to read."""

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time

import harness
import hp_operator as op

REQUESTS = 20_000
CONNECTIONS = 16
DEADLINE_S = 50.0
T = 60.0


class CountingConnection(http.client.HTTPConnection):
    """An HTTPConnection that counts its TCP connects (a dropped
    keep-alive connection would be silently reopened otherwise)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.connects = 0

    def connect(self):
        self.connects += 1
        super().connect()


class Client(threading.Thread):
    def __init__(self, port, count, start_evt, deadline):
        super().__init__(daemon=True)
        self.port, self.count, self.start_evt, self.deadline = port, count, start_evt, deadline
        self.done = 0
        self.errors = []
        self.states = set()
        self.running_ts = set()
        self.connects = 0
        self.worst = 0.0

    def run(self):
        conn = CountingConnection("127.0.0.1", self.port, timeout=10)
        self.start_evt.wait()
        try:
            for _ in range(self.count):
                if time.monotonic() > self.deadline:
                    self.errors.append("deadline passed")
                    break
                t = time.monotonic()
                try:
                    conn.request("GET", "/status")
                    resp = conn.getresponse()
                    body = resp.read()
                except (OSError, http.client.HTTPException) as e:
                    self.errors.append(f"request failed: {e!r}")
                    conn.close()
                    continue
                self.worst = max(self.worst, time.monotonic() - t)
                self.done += 1
                if resp.status != 200:
                    self.errors.append(f"HTTP {resp.status}: {body[:200]!r}")
                    continue
                try:
                    st = json.loads(body)
                except ValueError:
                    self.errors.append(f"invalid JSON: {body[:200]!r}")
                    continue
                if not isinstance(st, dict) or "status" not in st:
                    self.errors.append(f"no status key: {body[:200]!r}")
                    continue
                self.states.add(st["status"])
                ts = st.get("transitions", {}).get("RUNNING")
                if ts:
                    self.running_ts.add(ts)
        finally:
            self.connects = conn.connects
            conn.close()


class LoadStatus(harness.ProcessTest):
    def test_20k_status_requests_during_restart_storm(self):
        port = harness.free_port()
        env = harness.base_env(HYPERPODRUN_LOG_LEVEL="error")
        run = self.agent(["--server-host", "127.0.0.1", "--server-port", str(port),
                          "--server-log-level", "error",
                          "--nnodes", "1", "--nproc-per-node", "2",
                          "--max-restarts", "1000000",
                          "--no-python", "/bin/false"],
                         env=env, server=False, label="agent")
        # The storm is on once /status has shown a RUNNING time.
        first = op.wait_state(port, ("running", "faulted", "stopping", "ready"), T)
        self.assertIn("RUNNING", first["transitions"], first)

        start_evt = threading.Event()
        deadline = time.monotonic() + DEADLINE_S
        per = REQUESTS // CONNECTIONS
        clients = [Client(port, per + (1 if i < REQUESTS % CONNECTIONS else 0),
                          start_evt, deadline) for i in range(CONNECTIONS)]
        for c in clients:
            c.start()
        t0 = time.monotonic()
        start_evt.set()
        for c in clients:
            c.join(max(0.0, deadline - time.monotonic()) + 10)
        elapsed = time.monotonic() - t0
        self.assertFalse(any(c.is_alive() for c in clients), "a client thread hung")

        errors = [e for c in clients for e in c.errors]
        done = sum(c.done for c in clients)
        states = set().union(*(c.states for c in clients))
        running_ts = set().union(*(c.running_ts for c in clients))
        worst = max(c.worst for c in clients)
        print(f"load: {done} requests in {elapsed:.2f}s ({done / elapsed:.0f} req/s) over "
              f"{CONNECTIONS} connections; slowest {worst * 1000:.1f} ms; states {sorted(states)}; "
              f"{len(running_ts)} distinct RUNNING times", flush=True)

        self.assertEqual(errors[:10], [], f"{len(errors)} errors")
        self.assertEqual(done, REQUESTS)
        self.assertEqual([c.connects for c in clients], [1] * CONNECTIONS,
                         "a keep-alive connection was dropped and reopened")
        # The agent really restarted while we loaded it.
        self.assertGreaterEqual(len(running_ts), 3, "no restarts seen during the load")
        self.assertTrue(run.running(), "agent ended during the load")

        op.shutdown(port)
        self.assertExit(run, 0, timeout=T)


class HostileLoad(harness.ProcessTest):
    """Issue 12 §Tests, kept in the load test so they stay fixed: /status
    under load while the agent's stdout and stderr are pipes nobody reads
    (its workers print 20,000 lines per attempt in a restart storm), five
    clients trickle header bytes, a hundred idle connections are held and
    1 MiB amplification bodies are posted. Required: 0 errors, every
    keep-alive connection kept, the restart storm going on, exit on
    SIGTERM within 10 s."""

    def test_status_under_hostile_clients_and_stalled_console(self):
        port = harness.free_port()
        pipe = subprocess.PIPE
        p = subprocess.Popen([harness.hyperpodrun(), "--server-host", "127.0.0.1",
                              "--server-port", str(port), "--tee", "3",
                              "--max-restarts", "1000000", "--nproc-per-node", "2",
                              "--no-python", "sh", "-c", "seq 1 20000; exit 1"],
                             env=harness.base_env(), cwd=self.tmp, stdin=subprocess.DEVNULL,
                             stdout=pipe, stderr=pipe, start_new_session=True)
        harness.TRACKER.popen_pids.add(p.pid)
        held = []
        try:
            first = op.wait_state(port, ("running", "faulted", "stopping", "ready"), T)
            self.assertIn("RUNNING", first["transitions"], first)
            for _ in range(100):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            stop = threading.Event()

            def trickle():
                sk = socket.create_connection(("127.0.0.1", port), timeout=5)
                try:
                    for ch in b"GET /status HTTP/1.1\r\nX: " + b"a" * 1000:
                        if stop.wait(0.2):
                            break
                        sk.sendall(bytes([ch]))
                except OSError:
                    pass  # closed by the request deadline
                sk.close()

            def amplify(out):
                body = ('{"rank":0,"nnodes":2,"faultCount":0,"rankIps":['
                        + ",".join(["{}"] * 349000) + "]}")
                out.append(op.request(port, "POST", "/start", raw=body, timeout=30))

            amp = []
            side = [threading.Thread(target=trickle, daemon=True) for _ in range(5)]
            side += [threading.Thread(target=amplify, args=(amp,), daemon=True)
                     for _ in range(2)]
            start_evt = threading.Event()
            deadline = time.monotonic() + DEADLINE_S
            clients = [Client(port, 500, start_evt, deadline) for _ in range(8)]
            for t in side + clients:
                t.start()
            t0 = time.monotonic()
            start_evt.set()
            for c in clients:
                c.join(max(0.0, deadline - time.monotonic()) + 10)
            elapsed = time.monotonic() - t0
            stop.set()
            for t in side:
                t.join(40)
            errors = [e for c in clients for e in c.errors]
            done = sum(c.done for c in clients)
            worst = max(c.worst for c in clients)
            running_ts = set().union(*(c.running_ts for c in clients))
            print(f"hostile load: {done} requests in {elapsed:.2f}s; slowest "
                  f"{worst * 1000:.1f} ms; {len(running_ts)} distinct RUNNING times; "
                  f"amplification replies {[len(a.body) for a in amp]} bytes", flush=True)
            self.assertEqual(errors[:10], [], f"{len(errors)} errors")
            self.assertEqual(done, 4000)
            self.assertEqual([c.connects for c in clients], [1] * 8)
            self.assertGreaterEqual(len(running_ts), 3, "no restarts seen during the load")
            self.assertEqual([a.code for a in amp], [422, 422])
            self.assertTrue(all(len(a.body) < 16384 for a in amp))
            t = time.monotonic()
            p.send_signal(signal.SIGTERM)
            rc = p.wait(15)
            self.assertLess(time.monotonic() - t, 10.0)
            self.assertEqual(rc, -signal.SIGTERM if rc < 0 else 143)
        finally:
            for sk in held:
                sk.close()
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            p.stdout.close()
            p.stderr.close()


if __name__ == "__main__":
    harness.main()
