"""GET /status's fast path (issue 16): a plain keep-alive
"GET /status HTTP/1.1" is answered by the server's head checker from a
reply rendered once per publication and second; everything else goes to
evhttp. Neither a client nor the operator may tell the two apart: the same
bytes (but the Date's second), requests answered in the order sent when
the two paths alternate on one connection, the request counted in
/metrics, the access line at info, and a publication seen at once."""

import json
import re
import socket
import threading
import time

import harness
import hp_operator as op

T = 30.0
DATE_RE = rb"Date: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT\r\n"


def read_reply(f, head_only=False):
    """One HTTP/1.x reply from file object f: (status line, headers bytes,
    body)."""
    status = f.readline()
    if not status:
        raise AssertionError("connection closed before a reply")
    head = b""
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        head += line
        m = re.match(rb"(?i)content-length:\s*(\d+)", line)
        if m:
            length = int(m.group(1))
    body = b"" if head_only else f.read(length)
    return status, head, body


class HttpFast(harness.ProcessTest):
    def boot(self, log_level="error"):
        port = harness.free_port()
        env = harness.base_env(HYPERPODRUN_LOG_LEVEL="info",
                               HYPERPOD_RESOURCE_CONFIG_DIR=self.tmp + "/rc")
        run = self.agent(["--server-host", "127.0.0.1", "--server-port", str(port),
                          "--server-log-level", log_level,
                          "--rdzv-backend", "hyperpod", "--nnodes", "2",
                          "--nproc-per-node", "1", "--no-python", "/bin/true"],
                         env=env, server=False, label="agent")
        op.wait_state(port, ("ready",), T)
        self.addCleanup(lambda: run.running() and (op.shutdown(port), run.wait(T)))
        return run, port

    def conn(self, port):
        s = socket.create_connection(("127.0.0.1", port), timeout=T)
        self.addCleanup(s.close)
        return s, s.makefile("rb")

    def test_fast_reply_is_evhttps_reply(self):
        _, port = self.boot()
        s, f = self.conn(port)
        s.sendall(b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n")
        fast = read_reply(f)
        # a Connection header sends the same request through evhttp
        s.sendall(b"GET /status HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
        slow = read_reply(f)
        self.assertEqual(fast[0], b"HTTP/1.1 200 OK\r\n")
        self.assertRegex(fast[1], DATE_RE)
        strip = lambda h: re.sub(DATE_RE, b"", h)
        self.assertEqual((fast[0], strip(fast[1]), fast[2]),
                         (slow[0], strip(slow[1]), slow[2]))
        self.assertEqual(strip(fast[1]), b"Content-Type: application/json\r\n"
                         + b"Content-Length: %d\r\n" % len(fast[2]))
        self.assertIn(b'"status":"ready"', fast[2])

    def test_pipelined_mix_answered_in_order(self):
        _, port = self.boot()
        s, f = self.conn(port)
        kinds = ["status", "metrics", "status", "head", "status", "close-kw", "status"] * 40
        req = {
            "status": b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n",
            "metrics": b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
            "head": b"HEAD /status HTTP/1.1\r\nHost: a\r\n\r\n",
            "close-kw": b"GET /status HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
        }
        got = []
        errors = []

        def reader():
            try:
                for k in kinds:
                    got.append(read_reply(f, head_only=(k == "head")))
            except Exception as e:  # reported below
                errors.append(repr(e))

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        # one request per send and bursts of several in one segment, so both
        # paths meet with bytes pending on either side
        for i in range(0, len(kinds), 7):
            if i % 14 == 0:
                s.sendall(b"".join(req[k] for k in kinds[i:i + 7]))
            else:
                for k in kinds[i:i + 7]:
                    s.sendall(req[k])
        t.join(T)
        self.assertFalse(t.is_alive(), f"only {len(got)} of {len(kinds)} replies came")
        self.assertEqual(errors, [])
        for i, (k, (status, head, body)) in enumerate(zip(kinds, got)):
            self.assertEqual(status, b"HTTP/1.1 200 OK\r\n", f"reply {i} ({k})")
            if k == "metrics":
                self.assertIn(b"text/plain", head, f"reply {i}: not /metrics's")
            elif k == "head":
                self.assertEqual(body, b"")
                self.assertIn(b"application/json", head)
            else:
                self.assertIn(b"application/json", head, f"reply {i} ({k})")
                self.assertTrue(body.startswith(b'{"status":'), f"reply {i}: {body[:60]!r}")

    def test_counted_and_logged(self):
        run, port = self.boot(log_level="info")
        s, f = self.conn(port)
        before = self.status_count(port)
        for _ in range(25):
            s.sendall(b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n")
            read_reply(f)
        self.assertEqual(self.status_count(port) - before, 25)
        local = s.getsockname()
        run.wait_line(re.escape(f'127.0.0.1:{local[1]} - "GET /status" 200'), timeout=T)

    def status_count(self, port):
        text = op.request(port, "GET", "/metrics").body
        m = re.search(r'hyperpodrun_http_requests_total\{route="/status",code="200"\} (\d+)',
                      text)
        return int(m.group(1)) if m else 0

    def test_publication_seen_on_the_next_request(self):
        run, port = self.boot()
        s, f = self.conn(port)

        def get(slow):
            extra = b"Connection: keep-alive\r\n" if slow else b""
            s.sendall(b"GET /status HTTP/1.1\r\nHost: a\r\n" + extra + b"\r\n")
            body = read_reply(f)[2]
            return json.loads(body)

        self.assertEqual(get(False)["status"], "ready")
        op.start(port, rank=0, nnodes=2, fault_count=0, master_addr="127.0.0.1",
                 master_port=harness.free_port())
        # Between two replies of evhttp's, the fast path's must show every
        # transition the first did and none the second did not: it is never
        # an older publication than the one before it.
        deadline = time.monotonic() + T
        while True:
            a, fast, b = get(True), get(False), get(True)
            ta, tf, tb = (set(x["transitions"]) for x in (a, fast, b))
            self.assertTrue(ta <= tf <= tb, f"{ta} / fast {tf} / {tb}")
            if "RUNNING" in tf:
                break
            self.assertLess(time.monotonic(), deadline, "never RUNNING")


    def test_client_that_reads_late(self):
        # A client that sends 3000 requests before it reads a reply (with a
        # 4 KiB receive buffer): replies back up into the socket while both
        # paths answer; then it reads. Every reply arrives, in order.
        _, port = self.boot()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        self.addCleanup(s.close)
        reqs = [b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n",
                b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n"]
        s.setblocking(False)
        sent = 0
        deadline = time.monotonic() + T
        while time.monotonic() < deadline and sent < 3000:
            try:
                s.send(reqs[sent % 2 if sent % 5 == 4 else 0])
            except BlockingIOError:
                break
            sent += 1
        s.setblocking(True)
        s.settimeout(T)
        f = s.makefile("rb")
        for i in range(sent):
            status, head, body = read_reply(f)
            self.assertEqual(status, b"HTTP/1.1 200 OK\r\n", f"reply {i}")
            want = b"text/plain" if i % 5 == 4 and i % 2 == 1 else b"application/json"
            self.assertIn(want, head, f"reply {i} of {sent} out of order")


if __name__ == "__main__":
    harness.main()
