"""GET /metrics end to end (issue 6 §3): the real hyperpodrun in operator
mode, scraped over HTTP after a fault, a restart and a completion.

Checked: the Prometheus text format (every sample's family announced by
# HELP and # TYPE, histograms cumulative with +Inf == _count, the 0.0.4
Content-Type, HEAD), the state gauge following the agent, restarts by
mode, worker exits by code and by signal, the restart latency histogram,
HTTP requests by route and status code (a 404 and a 422 included)."""

import os
import re
import stat

import harness
import hp_operator as op

NPROC = 2
LISTEN_RE = r"operator API listening on http://127\.0\.0\.1:(\d+)"
T = 60.0

SAMPLE_RE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ([-+]?([0-9.eE+-]+|Inf))$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text, test):
    """{(name, frozenset(labels)): value}; checks the format as it goes."""
    out, types = {}, {}
    test.assertTrue(text.endswith("\n"))
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            test.assertIn(kind, ("counter", "gauge", "histogram"))
            test.assertNotIn(name, types, "family announced twice")
            types[name] = kind
            continue
        m = SAMPLE_RE.match(line)
        test.assertIsNotNone(m, "bad sample line: %r" % line)
        name = m.group(1)
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        test.assertTrue(name in types or family in types,
                        "sample before its # TYPE: %r" % line)
        labels = frozenset(LABEL_RE.findall(m.group(3) or ""))
        out[(name, labels)] = float(m.group(4))
    return out, types


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


class Metrics(harness.ProcessTest):

    def test_scrape_after_restart(self):
        # Attempt 0: rank 0 exits 3, rank 1 hangs (killed by the agent's
        # SIGKILL); attempt 1: both exit 0.
        script = os.path.join(self.tmp, "worker.sh")
        with open(script, "w") as f:
            f.write('#!/bin/sh\n'
                    'if [ "$TORCHELASTIC_RESTART_COUNT" = 0 ]; then\n'
                    '  [ "$LOCAL_RANK" = 0 ] && exit 3\n'
                    '  exec sleep 600\n'
                    'fi\n'
                    'exit 0\n')
        os.chmod(script, os.stat(script).st_mode | stat.S_IXUSR)
        env = harness.base_env(
            HYPERPOD_RESOURCE_CONFIG_DIR=os.path.join(self.tmp, "rc"))
        run = self.agent(["--rdzv-backend", "hyperpod", "--nnodes", "1",
                          "--nproc-per-node", str(NPROC), "--no-python",
                          script], env=env)
        port = int(run.wait_line(LISTEN_RE, timeout=T).group(1))
        op.wait_state(port, "ready", T)

        r = op.request(port, "GET", "/metrics")
        self.assertEqual(r.code, 200)
        self.assertEqual(r.headers["content-type"],
                         "text/plain; version=0.0.4; charset=utf-8")
        s, types = parse(r.body, self)
        self.assertEqual(value(s, "hyperpodrun_agent_state", state="ready"), 1)
        self.assertEqual(sum(v for (n, _), v in s.items()
                             if n == "hyperpodrun_agent_state"), 1)
        for fam, kind in [("hyperpodrun_agent_state", "gauge"),
                          ("hyperpodrun_restarts_total", "counter"),
                          ("hyperpodrun_worker_exits_total", "counter"),
                          ("hyperpodrun_restart_latency_seconds", "histogram"),
                          ("hyperpodrun_ipr_barrier_wait_seconds", "histogram"),
                          ("hyperpodrun_fabric_collective_seconds", "histogram"),
                          ("hyperpodrun_http_requests_total", "counter")]:
            self.assertEqual(types.get(fam), kind, fam)

        # a 404, a 405 and a 422 are counted too
        self.assertEqual(op.request(port, "GET", "/nope").code, 404)
        self.assertEqual(op.request(port, "GET", "/start").code, 405)
        self.assertEqual(op.request(port, "POST", "/start", {"rank": 0}).code,
                         422)

        start = {"rank": 0, "nnodes": 1, "master_addr": "127.0.0.1",
                 "master_port": harness.free_port()}
        op.start(port, **dict(start, fault_count=0))
        op.wait_state(port, "faulted", T)
        run.wait_line(r"worker 1 \(pid \d+\) killed by SIGKILL", timeout=T)
        op.stop(port)
        op.wait_state(port, "ready", T)
        op.start(port, **dict(start, fault_count=1))
        op.wait_state(port, "completed", T, fail_on=("faulted",))
        run.wait_lines(r"worker \d \(pid \d+\) exited with code 0", NPROC,
                       timeout=T)

        r = op.request(port, "GET", "/metrics")
        s, _ = parse(r.body, self)
        self.assertEqual(value(s, "hyperpodrun_agent_state", state="completed"), 1)
        self.assertEqual(value(s, "hyperpodrun_agent_state", state="faulted"), 0)
        self.assertEqual(value(s, "hyperpodrun_restarts_total", mode="process"), 1)
        self.assertEqual(value(s, "hyperpodrun_restarts_total", mode="in_process"), 0)
        ex = "hyperpodrun_worker_exits_total"
        self.assertEqual(value(s, ex, code="3", signal=""), 1)
        self.assertEqual(value(s, ex, code="", signal="SIGKILL"), 1)
        self.assertEqual(value(s, ex, code="0", signal=""), NPROC)
        # one failure answered by one respawn
        lat = "hyperpodrun_restart_latency_seconds"
        self.assertEqual(value(s, lat + "_count"), 1)
        self.assertEqual(value(s, lat + "_bucket", le="+Inf"), 1)
        self.assertGreater(value(s, lat + "_sum"), 0)
        buckets = sorted((float(dict(l)["le"]), v) for (n, l), v in s.items()
                         if n == lat + "_bucket" and dict(l)["le"] != "+Inf")
        counts = [v for _, v in buckets]
        self.assertEqual(counts, sorted(counts), "buckets are cumulative")
        http = "hyperpodrun_http_requests_total"
        self.assertEqual(value(s, http, route="/start", code="200"), 2)
        self.assertEqual(value(s, http, route="/start", code="422"), 1)
        self.assertEqual(value(s, http, route="/start", code="405"), 1)
        self.assertEqual(value(s, http, route="/stop", code="200"), 1)
        self.assertEqual(value(s, http, route="other", code="404"), 1)
        self.assertEqual(value(s, http, route="/metrics", code="200"), 1)
        self.assertGreater(value(s, http, route="/status", code="200"), 0)

        # HEAD: the headers of GET, no body
        r = op.request(port, "HEAD", "/metrics")
        self.assertEqual((r.code, r.body), (200, ""))
        self.assertGreater(int(r.headers["content-length"]), 0)

        op.shutdown(port)
        self.assertExit(run, 0)


if __name__ == "__main__":
    harness.main()
