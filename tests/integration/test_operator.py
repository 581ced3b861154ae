"""The operator emulator (hp_operator.py) against the real HTTP server.

Runs tests/helpers/fake-agent (server/ + agent/fsm.c, no workers) on
ephemeral ports and drives it as the operator would: ready -> start ->
faulted -> stop -> ready -> start with faultCount + 1 -> completed ->
shutdown, plus the 4xx/405/404 replies and the status object's shape.
Stdlib only; waits on readiness lines and /status, never sleeps blindly.
"""
import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hp_operator as op  # noqa: E402

FAKE = os.environ.get("HP_FAKE_AGENT")
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$")


class Agent:
    def __init__(self, fail=0):
        self.proc = subprocess.Popen([FAKE, "--fail", str(fail)],
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"ready port (\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError("fake agent said %r: %s"
                               % (line, self.proc.stderr.read()))
        self.port = int(m.group(1))

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()


@unittest.skipUnless(FAKE, "HP_FAKE_AGENT not set")
class OperatorTest(unittest.TestCase):
    def setUp(self):
        self.agents = []

    def tearDown(self):
        for a in self.agents:
            a.close()

    def spawn(self, n, fail=0):
        self.agents = [Agent(fail) for _ in range(n)]
        return [a.port for a in self.agents]

    def test_job_with_one_fault(self):
        ports = self.spawn(2, fail=1)
        job = op.Job(ports, master_port=29500)
        self.assertTrue(job.run(timeout=30, max_restarts=3))
        self.assertEqual(job.fault_count, 1)
        for a in self.agents:
            self.assertEqual(a.proc.wait(timeout=10), 0)

    def test_job_gives_up(self):
        ports = self.spawn(1, fail=5)
        job = op.Job(ports)
        self.assertFalse(job.run(timeout=30, max_restarts=2))
        self.assertEqual(job.fault_count, 2)

    def test_status_shape_and_steps(self):
        (port,) = self.spawn(1, fail=1)
        st = op.wait_state(port, "ready", 10)
        self.assertEqual(st["spare"], "False")
        self.assertTrue(TS.match(st["transitions"]["INIT"]))
        self.assertTrue(TS.match(st["transitions"]["READY"]))
        self.assertNotIn("assigned_rank", st)

        op.start(port, 0, 1, 0, "127.0.0.1", "29500", spare=False,
                 progress={"step": 1})
        st = op.wait_state(port, "faulted", 10)
        self.assertEqual(st["reason"], "WorkerReportedFault")
        self.assertEqual(st["assigned_rank"], "0")
        self.assertEqual(list(st)[:2], ["status", "transitions"])
        self.assertEqual(list(st)[-1], "spare")

        op.stop(port, restart_mode="plr", timeout=5)
        op.wait_state(port, "ready", 10)
        st = op.update(port, 0, 1, 1, "127.0.0.1", 29500,
                       rankIps=[{"rank": 0, "ip": "127.0.0.1"}])
        self.assertEqual(st["status"], "ready")
        op.start(port, 0, 1, 1, "127.0.0.1", 29500)
        op.wait_state(port, "completed", 10)
        op.shutdown(port)
        self.assertEqual(self.agents[0].proc.wait(timeout=10), 0)

    def test_errors(self):
        (port,) = self.spawn(1)
        with self.assertRaises(op.OperatorError) as cm:
            op.start(port, "x", 1, 0, "", 29500)
        self.assertEqual(cm.exception.code, 422)
        detail = cm.exception.json()["detail"]
        self.assertEqual([d["loc"] for d in detail],
                         [["body", "rank"], ["body", "master_addr"]])
        r = op.request(port, "POST", "/start", raw="{not json")
        self.assertEqual(r.code, 422)
        self.assertEqual(r.json()["detail"][0]["type"], "json_invalid")
        r = op.request(port, "GET", "/shutdown")
        self.assertEqual((r.code, r.json()), (405, {"detail":
                                                    "Method Not Allowed"}))
        self.assertEqual(r.headers["content-type"], "application/json")
        r = op.request(port, "GET", "/nowhere")
        self.assertEqual((r.code, r.json()), (404, {"detail": "Not Found"}))
        r = op.request(port, "POST", "/stop")
        self.assertEqual((r.code, r.body), (200, ""))
        with self.assertRaises(TimeoutError):
            op.wait_state(port, "running", 0.2)

    def test_cli(self):
        ports = self.spawn(2)
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(
            [sys.executable, os.path.join(here, "operator.py"), "run",
             "--ports", ",".join(map(str, ports)), "--timeout", "30"],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("all completed", out.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
