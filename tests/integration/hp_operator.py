"""An emulator of the HyperPod training operator, for end-to-end tests.

It speaks PROTOCOL.md's HTTP API to one or more hyperpodrun agents (each on
its own port, 127.0.0.1 by default) with nothing but the standard library.

Functions (each raises OperatorError on a non-2xx reply):

    status(port)                         -> dict (the /status object)
    start(port, rank, nnodes, fault_count, master_addr, master_port, **extra)
    stop(port, **kw)                     (restart_mode=, is_graceful=, timeout=;
                                          http_timeout= for the request)
    update(port, rank, nnodes, fault_count, master_addr, master_port, **extra)
                                         -> dict (the status after the update)
    shutdown(port)
    wait_state(port, state, timeout)     -> dict, or raises TimeoutError
    request(port, method, path, body)    -> Reply (raw, never raises on codes)

Job drives N agents like the operator does: start every rank, stop all on a
fault, start again with faultCount + 1, shut down when all completed.

Command line (python3 hp_operator.py -h):

    hp_operator.py status PORT
    hp_operator.py wait PORT STATE [--timeout S]
    hp_operator.py start PORT --rank R --nnodes N [--fault-count F] ...
    hp_operator.py stop|shutdown PORT
    hp_operator.py run --ports 8080,8081 [--max-restarts 3] [--timeout S]

This file is hp_operator.py, not operator.py: Python imports the standard
library's "operator" at start-up, so a module of that name cannot be imported
(operator.py next to it is only a command-line shim).
"""

import argparse
import http.client
import json
import sys
import time

__all__ = [
    "OperatorError", "Reply", "request", "status", "start", "stop", "update",
    "shutdown", "wait_state", "Job", "main",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_TIMEOUT = 10.0
POLL_INTERVAL = 0.05


class OperatorError(Exception):
    """A reply other than 2xx (or an unreadable one)."""

    def __init__(self, method, path, code, body):
        self.method, self.path, self.code, self.body = method, path, code, body
        super().__init__("%s %s -> %d %s" % (method, path, code, body[:500]))

    def json(self):
        """The reply body decoded as JSON (e.g. a 422's detail list)."""
        return json.loads(self.body)


class Reply:
    """A raw HTTP reply: code, headers (lower-case names) and body text."""

    def __init__(self, code, headers, body):
        self.code, self.headers, self.body = code, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "Reply(%d, %r)" % (self.code, self.body[:200])


def request(port, method, path, body=None, host=DEFAULT_HOST,
            timeout=DEFAULT_TIMEOUT, raw=None, headers=None):
    """Sends one request on a fresh connection and returns a Reply.

    body is JSON-encoded unless None; raw (bytes or str) is sent as is
    instead, for malformed-body tests. Never raises for an HTTP status;
    connection errors (OSError) propagate.
    """
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        data = None
        if raw is not None:
            data = raw.encode() if isinstance(raw, str) else raw
        elif body is not None:
            data = json.dumps(body).encode()
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()},
                     text)
    finally:
        conn.close()


def _call(port, method, path, body=None, **kw):
    r = request(port, method, path, body, **kw)
    if not 200 <= r.code < 300:
        raise OperatorError(method, path, r.code, r.body)
    return r


def status(port, **kw):
    """GET /status: the agent's status object as a dict."""
    return _call(port, "GET", "/status", **kw).json()


def _start_body(rank, nnodes, fault_count, master_addr, master_port, extra):
    body = {
        "rank": rank,
        "nnodes": nnodes,
        "faultCount": fault_count,
        "master_addr": master_addr,
        "master_port": master_port,
    }
    body.update(extra)
    return body


def start(port, rank, nnodes, fault_count, master_addr, master_port,
          host=DEFAULT_HOST, timeout=DEFAULT_TIMEOUT, **extra):
    """POST /start. extra adds optional StartRequest fields (rankIps,
    ipVersion, spare, progress, worker_data,
    log_monitoring_configuration, ...). Returns None; 200 has no body."""
    _call(port, "POST", "/start",
          _start_body(rank, nnodes, fault_count, master_addr, master_port,
                      extra), host=host, timeout=timeout)


def stop(port, host=DEFAULT_HOST, http_timeout=DEFAULT_TIMEOUT, **kw):
    """POST /stop. kw is the StopRequest: restart_mode ("ipr", "plr"),
    is_graceful, timeout (seconds before SIGKILL). No kw sends no body (the
    agent's defaults). The HTTP timeout is http_timeout."""
    _call(port, "POST", "/stop", kw if kw else None, host=host,
          timeout=http_timeout)


def update(port, rank, nnodes, fault_count, master_addr, master_port,
           host=DEFAULT_HOST, timeout=DEFAULT_TIMEOUT, **extra):
    """POST /update; returns the status dict the agent answers with."""
    return _call(port, "POST", "/update",
                 _start_body(rank, nnodes, fault_count, master_addr,
                             master_port, extra),
                 host=host, timeout=timeout).json()


def shutdown(port, **kw):
    """POST /shutdown: the agent's loop ends."""
    _call(port, "POST", "/shutdown", **kw)


def wait_state(port, state, timeout, host=DEFAULT_HOST, interval=POLL_INTERVAL,
               fail_on=()):
    """Polls /status until its "status" is `state` (lower case; a tuple
    means any of them) and returns that status dict.

    Connection errors count as "not yet" (the agent may still be binding).
    Raises TimeoutError (with the last status seen) after `timeout` seconds,
    or OperatorError if a state in fail_on is reached first.
    """
    want = (state,) if isinstance(state, str) else tuple(state)
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = status(port, host=host,
                          timeout=max(0.1, min(DEFAULT_TIMEOUT,
                                               deadline - time.monotonic())))
            if last.get("status") in want:
                return last
            if last.get("status") in fail_on:
                raise OperatorError("GET", "/status", 200, json.dumps(last))
        except (OSError, http.client.HTTPException) as e:
            last = "unreachable: %s" % e
        if time.monotonic() >= deadline:
            raise TimeoutError("port %d: no %s within %gs; last status %s"
                               % (port, "/".join(want), timeout, last))
        time.sleep(interval)


class Job:
    """One training job of len(ports) agents (one per node), driven as the
    operator does: group rank i is the agent on ports[i]."""

    def __init__(self, ports, master_addr=DEFAULT_HOST, master_port=29500,
                 host=DEFAULT_HOST, **extra):
        self.ports = list(ports)
        self.master_addr = master_addr
        self.master_port = master_port
        self.host = host
        self.extra = extra
        self.fault_count = 0

    @property
    def nnodes(self):
        return len(self.ports)

    def statuses(self):
        return [status(p, host=self.host) for p in self.ports]

    def wait_all(self, state, timeout):
        """Waits until every agent is in `state`; returns their statuses."""
        deadline = time.monotonic() + timeout
        return [wait_state(p, state, max(0.0, deadline - time.monotonic()),
                           host=self.host) for p in self.ports]

    def start_all(self, **extra):
        kw = dict(self.extra, **extra)
        for rank, p in enumerate(self.ports):
            start(p, rank, self.nnodes, self.fault_count, self.master_addr,
                  self.master_port, host=self.host, **kw)

    def update_all(self, **extra):
        kw = dict(self.extra, **extra)
        return [update(p, rank, self.nnodes, self.fault_count,
                       self.master_addr, self.master_port, host=self.host,
                       **kw) for rank, p in enumerate(self.ports)]

    def stop_all(self, **kw):
        for p in self.ports:
            stop(p, host=self.host, **kw)

    def shutdown_all(self):
        for p in self.ports:
            shutdown(p, host=self.host)

    def restart(self, timeout, **stop_kw):
        """A fault somewhere: stop every agent, wait for READY, start again
        with faultCount + 1."""
        self.stop_all(**stop_kw)
        self.wait_all("ready", timeout)
        self.fault_count += 1
        self.start_all()

    def run(self, timeout, max_restarts=3, log=None):
        """The operator loop: wait READY, start, restart on FAULTED (up to
        max_restarts), shut down when all are COMPLETED. Returns True when
        the job completed."""
        say = log or (lambda *_: None)
        deadline = time.monotonic() + timeout
        left = lambda: max(0.0, deadline - time.monotonic())
        self.wait_all("ready", left())
        say("all %d agents ready; starting (faultCount=0)" % self.nnodes)
        self.start_all()
        while True:
            sts = [s.get("status") for s in self.statuses()]
            if all(s == "completed" for s in sts):
                say("all completed; shutting down")
                self.shutdown_all()
                return True
            if any(s == "faulted" for s in sts):
                if self.fault_count >= max_restarts:
                    say("faulted past %d restarts; shutting down"
                        % max_restarts)
                    self.shutdown_all()
                    return False
                say("fault (%s); restarting with faultCount=%d"
                    % (sts, self.fault_count + 1))
                self.restart(left())
                continue
            if left() <= 0:
                raise TimeoutError("job did not finish; states %s" % sts)
            time.sleep(POLL_INTERVAL)


def _ports(text):
    return [int(p) for p in text.split(",") if p]


def main(argv=None):
    ap = argparse.ArgumentParser(description="HyperPod operator emulator")
    ap.add_argument("--host", default=DEFAULT_HOST)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("status")
    s.add_argument("port", type=int)
    s = sub.add_parser("wait")
    s.add_argument("port", type=int)
    s.add_argument("state")
    s.add_argument("--timeout", type=float, default=60)
    for name in ("start", "update"):
        s = sub.add_parser(name)
        s.add_argument("port", type=int)
        s.add_argument("--rank", type=int, required=True)
        s.add_argument("--nnodes", type=int, required=True)
        s.add_argument("--fault-count", type=int, default=0)
        s.add_argument("--master-addr", default=DEFAULT_HOST)
        s.add_argument("--master-port", type=int, default=29500)
        s.add_argument("--extra", default="{}",
                       help="JSON object of extra request fields")
    s = sub.add_parser("stop")
    s.add_argument("port", type=int)
    s.add_argument("--restart-mode")
    s.add_argument("--graceful", action="store_true")
    s.add_argument("--kill-timeout", type=int)
    s = sub.add_parser("shutdown")
    s.add_argument("port", type=int)
    s = sub.add_parser("run")
    s.add_argument("--ports", type=_ports, required=True)
    s.add_argument("--master-addr", default=DEFAULT_HOST)
    s.add_argument("--master-port", type=int, default=29500)
    s.add_argument("--max-restarts", type=int, default=3)
    s.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args(argv)
    kw = {"host": a.host}
    try:
        if a.cmd == "status":
            print(json.dumps(status(a.port, **kw)))
        elif a.cmd == "wait":
            print(json.dumps(wait_state(a.port, a.state, a.timeout, **kw)))
        elif a.cmd in ("start", "update"):
            fn = start if a.cmd == "start" else update
            out = fn(a.port, a.rank, a.nnodes, a.fault_count, a.master_addr,
                     a.master_port, **kw, **json.loads(a.extra))
            if out is not None:
                print(json.dumps(out))
        elif a.cmd == "stop":
            body = {}
            if a.restart_mode:
                body["restart_mode"] = a.restart_mode
            if a.graceful:
                body["is_graceful"] = True
            if a.kill_timeout is not None:
                body["timeout"] = a.kill_timeout
            stop(a.port, **kw, **body)
        elif a.cmd == "shutdown":
            shutdown(a.port, **kw)
        elif a.cmd == "run":
            job = Job(a.ports, a.master_addr, a.master_port, host=a.host)
            ok = job.run(a.timeout, a.max_restarts,
                         log=lambda m: print("operator: " + m,
                                             file=sys.stderr))
            return 0 if ok else 1
    except OperatorError as e:
        print("operator: %s" % e, file=sys.stderr)
        return 1
    except TimeoutError as e:
        print("operator: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
