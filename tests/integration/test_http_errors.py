"""The operator API's error answers and robustness, against the real
hyperpodrun over real sockets (issue 3 §Tests, PROTOCOL.md §HTTP).

  * bad bodies -> 422 with the exact FastAPI/pydantic v2 detail the
    reference agent answers (its RequestValidationError handler returns
    {"detail": exc.errors()} through JSONResponse: compact JSON, no "url").
    The expected pydantic details below were produced by pydantic 2.13
    against models with PROTOCOL.md's field types; invalid JSON is
    FastAPI's own json_invalid entry, whose position and message come from
    Python's json module, used here as the oracle;
  * body over 1 MiB -> 413 (exactly 1 MiB is accepted);
  * wrong method -> 405 with Allow, unknown path -> 404;
  * /status keeps answering quickly while the agent is stopping a worker
    that ignores SIGTERM, and while another client stalls mid-request (no
    head-of-line blocking);
  * the server port taken -> a message naming HOST:PORT and exit 1;
  * an idle keep-alive connection is closed after the agent's 5 s."""

import json
import os
import socket
import threading
import time
import unittest

import harness
import hp_operator as op

LISTEN_RE = r"operator API listening on http://127\.0\.0\.1:(\d+)"
T = 60.0
MIB = 1024 * 1024
GOOD = {"rank": 0, "nnodes": 2, "faultCount": 0, "master_addr": "127.0.0.1",
        "master_port": 29500}
FIELD_REQUIRED = "Field required"
INT_PARSING = "Input should be a valid integer, unable to parse string as an integer"


def missing(field, body):
    return {"type": "missing", "loc": ["body", field], "msg": FIELD_REQUIRED,
            "input": body}


def without(key):
    return {k: v for k, v in GOOD.items() if k != key}


# (name, route, body, expected detail list)
START_CASES = [
    ("missing rank", without("rank"), [missing("rank", without("rank"))]),
    ("missing every field", {}, [missing(f, {}) for f in
                                 ("rank", "nnodes", "faultCount", "master_addr",
                                  "master_port")]),
    ("rank not numeric", dict(GOOD, rank="abc"),
     [{"type": "int_parsing", "loc": ["body", "rank"], "msg": INT_PARSING,
       "input": "abc"}]),
    ("rank a list", dict(GOOD, rank=[1]),
     [{"type": "int_type", "loc": ["body", "rank"],
       "msg": "Input should be a valid integer", "input": [1]}]),
    ("rank fractional", dict(GOOD, rank=1.5),
     [{"type": "int_from_float", "loc": ["body", "rank"],
       "msg": "Input should be a valid integer, got a number with a fractional part",
       "input": 1.5}]),
    ("nnodes null", dict(GOOD, nnodes=None),
     [{"type": "int_type", "loc": ["body", "nnodes"],
       "msg": "Input should be a valid integer", "input": None}]),
    ("master_addr a number", dict(GOOD, master_addr=5),
     [{"type": "string_type", "loc": ["body", "master_addr"],
       "msg": "Input should be a valid string", "input": 5}]),
    ("two errors in field order", dict(GOOD, faultCount={}, rank="x"),
     [{"type": "int_parsing", "loc": ["body", "rank"], "msg": INT_PARSING,
       "input": "x"},
      {"type": "int_type", "loc": ["body", "faultCount"],
       "msg": "Input should be a valid integer", "input": {}}]),
    ("rankIps not a list", dict(GOOD, rankIps="a"),
     [{"type": "list_type", "loc": ["body", "rankIps"],
       "msg": "Input should be a valid list", "input": "a"}]),
    ("rankIps entry without ip", dict(GOOD, rankIps=[{"rank": 0}]),
     [{"type": "missing", "loc": ["body", "rankIps", 0, "ip"],
       "msg": FIELD_REQUIRED, "input": {"rank": 0}}]),
    ("unicode input echoed", dict(GOOD, rank="zw\u00f6lf \u20ac"),
     [{"type": "int_parsing", "loc": ["body", "rank"], "msg": INT_PARSING,
       "input": "zw\u00f6lf \u20ac"}]),
]

# /start only: UpdateRequest has no progress (an extra field, ignored).
START_ONLY_CASES = [
    ("progress a list", dict(GOOD, progress=[1]),
     [{"type": "dict_type", "loc": ["body", "progress"],
       "msg": "Input should be a valid dictionary", "input": [1]}]),
]

STOP_CASES = [
    ("is_graceful not a bool", {"is_graceful": "maybe"},
     [{"type": "bool_parsing", "loc": ["body", "is_graceful"],
       "msg": "Input should be a valid boolean, unable to interpret input",
       "input": "maybe"}]),
    ("timeout not numeric", {"timeout": "x"},
     [{"type": "int_parsing", "loc": ["body", "timeout"], "msg": INT_PARSING,
       "input": "x"}]),
    ("restart_mode a number", {"restart_mode": 5},
     [{"type": "string_type", "loc": ["body", "restart_mode"],
       "msg": "Input should be a valid string", "input": 5}]),
]

INVALID_JSON = [
    "not json",
    '{"rank": }',
    "{} x",
    '{"rank": 1} {"rank": 2}',
]

# Bodies where Python's json module (FastAPI's parser) gives another
# message, or a position counted in characters where the body is not ASCII.
INVALID_JSON_PYTHON_ONLY = [
    '{"rank":1,',
    '{"rank" 1}',
    '[1, 2',
    '{"master_addr":"\u00e9\u20ac", "rank": }',
]


def json_invalid_detail(text):
    """FastAPI's answer for a body json.loads rejects."""
    try:
        json.loads(text.encode())
    except json.JSONDecodeError as e:
        return [{"type": "json_invalid", "loc": ["body", e.pos],
                 "msg": "JSON decode error", "input": {},
                 "ctx": {"error": e.msg}}]
    raise AssertionError(f"{text!r} is valid JSON")


def raw_exchange(port, data, timeout=10.0):
    """Sends raw bytes, returns (status code, headers text, body) of the
    first reply; tolerates the server closing early."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except ConnectionResetError:
            pass
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    code = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else None
    return code, "\n".join(lines[1:]), body


class AgentCase(harness.ProcessTest):
    def start_agent(self, script, extra_args=(), env=None, label="agent"):
        env = env or harness.base_env(
            HYPERPOD_RESOURCE_CONFIG_DIR=os.path.join(self.tmp, "rc"))
        run = self.agent(["--rdzv-backend", "hyperpod", "--nnodes", "2",
                          "--nproc-per-node", "2", *extra_args,
                          "--no-python", *script], env=env, label=label)
        port = int(run.wait_line(LISTEN_RE, timeout=T).group(1))
        op.wait_state(port, "ready", T)
        return run, port

    def shutdown(self, run, port):
        op.shutdown(port)
        self.assertExit(run, 0, timeout=T)


class BadRequests(AgentCase):
    """One agent, every bad request; it must stay READY throughout."""

    def assert422(self, port, path, detail, body=None, raw=None, what=""):
        r = op.request(port, "POST", path, body, raw=raw)
        self.assertEqual(r.code, 422, f"{what}: {r}")
        self.assertEqual(r.headers.get("content-type"), "application/json", what)
        self.assertEqual(r.json(), {"detail": detail}, what)
        # compact separators, like Starlette's JSONResponse
        self.assertEqual(r.body, json.dumps({"detail": detail}, separators=(",", ":"),
                                            ensure_ascii=False), what)

    def test_bad_requests(self):
        run, port = self.start_agent([harness.helper("exit-with"), "0"])
        with self.subTest("422 /start and /update"):
            for name, body, detail in START_CASES:
                for path in ("/start", "/update"):
                    with self.subTest(f"{path}: {name}"):
                        self.assert422(port, path, detail, body=body, what=f"{path} {name}")
        with self.subTest("422 /stop"):
            for name, body, detail in STOP_CASES:
                with self.subTest(f"/stop: {name}"):
                    self.assert422(port, "/stop", detail, body=body, what=name)
        for name, body, detail in START_ONLY_CASES:
            with self.subTest(f"/start: {name}"):
                self.assert422(port, "/start", detail, body=body, what=name)
        for path in ("/start", "/update", "/stop"):
            for text in INVALID_JSON:
                with self.subTest(f"invalid JSON {path} {text!r}"):
                    self.assert422(port, path, json_invalid_detail(text), raw=text,
                                   what=f"{path} {text!r}")
        with self.subTest("empty /start body"):
            self.assert422(port, "/start", [{"type": "missing", "loc": ["body"],
                                             "msg": FIELD_REQUIRED, "input": None}],
                           raw=b"", what="empty /start")
        with self.subTest("body not an object"):
            r = op.request(port, "POST", "/start", [1])
            self.assertEqual(r.code, 422)
            d = r.json()["detail"]
            self.assertEqual([e["loc"] for e in d], [["body"]], d)

        # None of it changed anything.
        st = op.status(port)
        self.assertEqual(st["status"], "ready", st)
        self.assertNotIn("assigned_rank", st)

        with self.subTest("405"):
            for method, path, allow in (("GET", "/start", "POST"), ("PUT", "/stop", "POST"),
                                        ("DELETE", "/update", "POST"),
                                        ("GET", "/shutdown", "POST"),
                                        ("POST", "/status", "GET")):
                r = op.request(port, method, path)
                self.assertEqual(r.code, 405, f"{method} {path}: {r}")
                self.assertEqual(r.json(), {"detail": "Method Not Allowed"})
                self.assertIn(allow, r.headers.get("allow", ""), f"{method} {path}")
        with self.subTest("404"):
            for method, path in (("GET", "/"), ("GET", "/nope"), ("POST", "/start/"),
                                 ("GET", "/statusx")):
                r = op.request(port, method, path)
                self.assertEqual(r.code, 404, f"{method} {path}: {r}")
                self.assertEqual(r.json(), {"detail": "Not Found"})

        with self.subTest("413"):
            # exactly 1 MiB is accepted (a /stop while READY is a no-op) ...
            body = b"{}" + b" " * (MIB - 2)
            r = op.request(port, "POST", "/stop", raw=body)
            self.assertEqual(r.code, 200, r)
            # ... one byte more is refused, whether or not it is sent
            head = (f"POST /stop HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {MIB + 1}\r\n\r\n").encode()
            code, _, _ = raw_exchange(port, head)
            self.assertEqual(code, 413, "declared length over 1 MiB")
            code, _, _ = raw_exchange(port, head + b"{}" + b" " * (MIB - 1))
            self.assertEqual(code, 413, "body over 1 MiB")
            # a chunked body over the limit
            chunk = b" " * (64 * 1024)
            data = (b"POST /stop HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(17))
                    + b"0\r\n\r\n")
            code, _, _ = raw_exchange(port, data)
            self.assertEqual(code, 413, "chunked body over 1 MiB")

        self.assertEqual(op.status(port)["status"], "ready")
        self.shutdown(run, port)

    # Agent bug, kept visible: server/json.c reports every JSON syntax
    # error as "Expecting value" at cJSON's stop offset, in bytes. FastAPI
    # answers json.JSONDecodeError's own msg and pos (characters), e.g.
    # '{"rank":1,' -> loc ["body", 10], "Expecting property name enclosed
    # in double quotes"; the agent says ["body", 9], "Expecting value".
    @unittest.expectedFailure
    def test_invalid_json_detail_as_fastapi(self):
        run, port = self.start_agent([harness.helper("exit-with"), "0"])
        self.addCleanup(self.shutdown, run, port)
        bad = []
        for path in ("/start", "/stop"):
            for text in INVALID_JSON_PYTHON_ONLY:
                r = op.request(port, "POST", path, raw=text)
                want = {"detail": json_invalid_detail(text)}
                if r.code != 422 or r.json() != want:
                    bad.append(f"{path} {text!r}: got {r.code} {r.body}, want {want}")
        self.assertEqual(bad, [], "\n".join(bad))


class NoHeadOfLineBlocking(AgentCase):
    def test_status_while_stopping_a_stubborn_worker(self):
        grace = 3
        run, port = self.start_agent(
            [harness.helper("stubborn")],
            extra_args=["--shutdown-signal", "SIGTERM", "--shutdown-timeout", str(grace)])
        op.start(port, 0, 2, 0, "127.0.0.1", harness.free_port())
        run.wait_lines(r"^ready pid \d+ rank \d+$", 2, timeout=T, stream="out")
        op.wait_state(port, "running", T)

        # A client that stalls in the middle of a request body.
        staller = socket.create_connection(("127.0.0.1", port), timeout=T)
        self.addCleanup(staller.close)
        staller.sendall(b"POST /update HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"ra")

        t0 = time.monotonic()
        r = op.request(port, "POST", "/stop")
        stop_latency = time.monotonic() - t0
        self.assertEqual(r.code, 200)
        self.assertLess(stop_latency, 2.0, "/stop must not wait for the workers")

        # Poll /status (fresh connections and one keep-alive connection)
        # until READY; every answer must be quick.
        import http.client
        keep = http.client.HTTPConnection("127.0.0.1", port, timeout=T)
        self.addCleanup(keep.close)
        seen, worst, n = [], 0.0, 0
        deadline = time.monotonic() + grace + T
        while time.monotonic() < deadline:
            for use_keep in (False, True):
                t = time.monotonic()
                if use_keep:
                    keep.request("GET", "/status")
                    resp = keep.getresponse()
                    st = json.loads(resp.read())
                else:
                    st = op.status(port)
                worst = max(worst, time.monotonic() - t)
                n += 1
                if not seen or seen[-1] != st["status"]:
                    seen.append(st["status"])
            if seen[-1] == "ready":
                break
        elapsed = time.monotonic() - t0
        self.assertEqual(seen[0], "stopping", seen)
        self.assertEqual(seen[-1], "ready", seen)
        self.assertNotIn("running", seen)
        # The workers ignore SIGTERM: READY only after the SIGKILL.
        self.assertGreaterEqual(elapsed, grace - 0.5, "READY before the grace expired")
        run.wait_line(r"sending SIGKILL", timeout=T)
        # "fast": far below the 3 s the agent spends stopping (1 s leaves room
        # for a loaded CI machine running a sanitizer build)
        self.assertLess(worst, 1.0, f"slowest /status of {n} took {worst:.3f}s")
        self.assertGreater(n, 4)
        self.shutdown(run, port)


class PortInUse(harness.ProcessTest):
    def test_port_in_use_operator_mode(self):
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        self.addCleanup(holder.close)
        port = holder.getsockname()[1]
        env = harness.base_env(HYPERPOD_RESOURCE_CONFIG_DIR=os.path.join(self.tmp, "rc"),
                               HYPERPOD_ELASTICAGENT_SERVER_MAX_RETRY="2",
                               HYPERPOD_ELASTICAGENT_SERVER_DELAY="0.1")
        run = self.agent(["--server-host", "127.0.0.1", "--server-port", str(port),
                          "--rdzv-backend", "hyperpod", "--nnodes", "2",
                          "--no-python", harness.helper("exit-with"), "0"],
                         env=env, server=False)
        rc = run.wait(T)
        self.assertTrue(0 < rc < 128, f"exit status {rc}: expected a plain failure")
        err = run.text("err")
        self.assertIn(f"127.0.0.1:{port}", err)
        self.assertIn("Address already in use", err)
        # it retried as told: one retry line, then the final error
        self.assertEqual(len(run.matches(rf"cannot listen on 127\.0\.0\.1:{port}.*retrying",
                                         "err")), 1, err)
        self.assertNotIn("operator API listening", err)


class KeepAlive(AgentCase):
    def test_idle_keepalive_closed_after_5s(self):
        run, port = self.start_agent([harness.helper("exit-with"), "0"])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            head, _, body = buf.partition(b"\r\n\r\n")
            length = int([l.split(b":")[1] for l in head.split(b"\r\n")
                          if l.lower().startswith(b"content-length:")][0])
            while len(body) < length:
                body += s.recv(65536)
            self.assertIn(b" 200 ", head.split(b"\r\n")[0])
            self.assertNotIn(b"connection: close", head.lower())
            # a second request on the same connection still works
            s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            head, _, body = buf.partition(b"\r\n\r\n")
            while len(body) < length:
                body += s.recv(65536)
            idle_from = time.monotonic()
            # now idle: the server closes it (recv returns b"") after ~5 s
            closed = s.recv(1)
            idle = time.monotonic() - idle_from
        self.assertEqual(closed, b"")
        self.assertGreaterEqual(idle, 4.0, "closed too early")
        self.assertLessEqual(idle, 10.0, "not closed about 5 s after going idle")
        self.shutdown(run, port)


if __name__ == "__main__":
    harness.main()
