"""Operator mode end to end (issue 3 §Tests): the real hyperpodrun, two
agents x two workers on loopback, driven over real HTTP by hp_operator.py
the way the HyperPod operator drives a job: start -> a worker fault ->
stop -> start with faultCount + 1 -> complete -> shutdown.

Checked on the wire (PROTOCOL.md): /status states (lower case),
transitions (UPPER-CASE keys, ISO-8601 UTC, in order), reason/message of a
fault, assigned_rank as a string, spare "True"; the worker environment
(RANK = group rank x nproc + local rank, WORLD_SIZE, MASTER_*,
TORCHELASTIC_RESTART_COUNT = faultCount); pod_resourceconfig.json (ips,
current_pod_ip, ips_timestamp) including an incremental /update merge;
/update answering with the status body; /shutdown exiting 0 with no
process left behind (harness.ProcessTest's survivor check)."""

import datetime
import json
import os
import re
import stat

import harness
import hp_operator as op

NPROC = 2
NNODES = 2
LISTEN_RE = r"operator API listening on http://127\.0\.0\.1:(\d+)"
ISO_RE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$"
ENV_LINE = r"^\{.*\}$"
# Sanitizer builds on a loaded 2-core machine are slow; every wait has a
# deadline, none of them is a pause.
T = 60.0


def resource_config(rcdir):
    with open(os.path.join(rcdir, "pod_resourceconfig.json")) as f:
        return json.load(f)


def worker_envs(run, attempt):
    """The print-env objects of one attempt (TORCHELASTIC_RESTART_COUNT)."""
    return [e for e in harness.parse_json_lines(run.output("out"))
            if e.get("TORCHELASTIC_RESTART_COUNT") == str(attempt)]


class OperatorCase(harness.ProcessTest):
    """Starts operator-mode agents and learns each one's port from its
    readiness line."""

    def start_agent(self, label, script, extra_env=None, extra_args=()):
        rcdir = os.path.join(self.tmp, "rc-" + label)
        env = harness.base_env(HYPERPOD_RESOURCE_CONFIG_DIR=rcdir,
                               **(extra_env or {}))
        run = self.agent(["--rdzv-backend", "hyperpod", "--nnodes", str(NNODES),
                          "--nproc-per-node", str(NPROC), *extra_args,
                          "--no-python", *script], env=env, label=label)
        port = int(run.wait_line(LISTEN_RE, timeout=T).group(1))
        return run, port, rcdir

    def assertTransitions(self, st, states):
        tr = st["transitions"]
        self.assertEqual(set(tr), set(states), st)
        for name, ts in tr.items():
            self.assertRegex(ts, ISO_RE, f"{name} timestamp")
        times = [datetime.datetime.fromisoformat(tr[s]) for s in states]
        self.assertEqual(times, sorted(times),
                         f"transitions out of order for {states}: {tr}")

    def assertCommon(self, st, rank):
        """Keys every status of a started PLR agent carries."""
        self.assertIsInstance(st["agent_version"], str)
        # the PLR agent starts spare and never changes it (10594914244)
        self.assertEqual(st["spare"], "True")
        if rank is None:
            self.assertNotIn("assigned_rank", st)
        else:
            self.assertEqual(st["assigned_rank"], str(rank),
                             "assigned_rank is a string")


class Lifecycle(OperatorCase):
    def write_worker(self):
        # print-env (the worker's environment as one JSON line), then
        # fail-once: the first run to create $HP_MARKER exits 1.
        path = os.path.join(self.tmp, "worker.sh")
        with open(path, "w") as f:
            f.write("#!/bin/sh\n"
                    f"'{harness.helper('print-env')}' || exit 99\n"
                    f"exec '{harness.helper('fail-once')}'\n")
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
        return path

    def check_env(self, env, group_rank, attempt, master_port):
        local = int(env["LOCAL_RANK"])
        self.assertIn(local, range(NPROC))
        self.assertEqual(env["RANK"], str(group_rank * NPROC + local), env)
        self.assertEqual(env["GROUP_RANK"], str(group_rank))
        self.assertEqual(env["WORLD_SIZE"], str(NNODES * NPROC))
        self.assertEqual(env["LOCAL_WORLD_SIZE"], str(NPROC))
        self.assertEqual(env["MASTER_ADDR"], "127.0.0.1")
        self.assertEqual(env["MASTER_PORT"], str(master_port))
        self.assertEqual(env["TORCHELASTIC_RESTART_COUNT"], str(attempt))

    def test_start_fault_stop_restart_complete(self):
        script = self.write_worker()
        # Agent 0 faults on attempt 0 (its marker does not exist yet);
        # agent 1's marker exists, so its workers always succeed.
        m0 = os.path.join(self.tmp, "marker0")
        m1 = os.path.join(self.tmp, "marker1")
        open(m1, "w").close()
        a0, p0, rc0 = self.start_agent("agent0", [script], {"HP_MARKER": m0})
        a1, p1, rc1 = self.start_agent("agent1", [script], {"HP_MARKER": m1})
        agents = [(a0, p0, rc0), (a1, p1, rc1)]
        master_port = harness.free_port()

        # --- INIT -> READY, nothing assigned yet --------------------------
        for _, port, rcdir in agents:
            st = op.wait_state(port, "ready", T)
            self.assertTransitions(st, ["INIT", "READY"])
            self.assertCommon(st, None)
            self.assertNotIn("reason", st)
        # no resource config before the first /start
        self.assertFalse(os.path.exists(os.path.join(rc0, "pod_resourceconfig.json")))

        # --- /start (faultCount 0) ----------------------------------------
        ips = [{"rank": 0, "ip": "10.0.0.1"}, {"rank": 1, "ip": "10.0.0.2"}]
        body = {"rank": 0, "nnodes": NNODES, "faultCount": 0,
                "master_addr": "127.0.0.1", "master_port": master_port,
                "rankIps": ips, "ipVersion": "v1", "spare": False,
                "unknown_extra_field": {"ignored": True}}
        r = op.request(p0, "POST", "/start", body)
        self.assertEqual((r.code, r.body), (200, ""), "/start answers 200, empty body")
        # master_port as a numeric string (PROTOCOL.md) for the second node
        r = op.request(p1, "POST", "/start",
                       dict(body, rank=1, master_port=str(master_port)))
        self.assertEqual((r.code, r.body), (200, ""))

        # --- agent 0 faults, agent 1 completes ----------------------------
        st0 = op.wait_state(p0, "faulted", T, fail_on=("completed",))
        st1 = op.wait_state(p1, "completed", T, fail_on=("faulted",))
        self.assertEqual(st0["reason"], "WorkerCrash", st0)
        # the reference PLR agent's words for a crashed worker
        self.assertRegex(st0["message"],
                         r"^A training worker process has crashed:\n"
                         r"    Local Rank [01] exited with code 1 due to: ")
        self.assertTransitions(st0, ["INIT", "READY", "RUNNING", "FAULTED"])
        self.assertTransitions(st1, ["INIT", "READY", "RUNNING", "COMPLETED"])
        self.assertCommon(st0, 0)
        self.assertCommon(st1, 1)
        self.assertEqual(st0["ipversion"], "v1")
        self.assertEqual(st1["ipversion"], "v1")
        # In operator mode a completed agent waits for the operator.
        self.assertTrue(a1.running(), "agent exited on its own after COMPLETED")

        # worker environment, attempt 0: agent 1 ran both ranks to the end
        a1.wait_lines(r'^\{.*"TORCHELASTIC_RESTART_COUNT": "0"', NPROC,
                      timeout=T, stream="out")
        envs1 = worker_envs(a1, 0)
        self.assertEqual(sorted(e["RANK"] for e in envs1), ["2", "3"])
        for e in envs1:
            self.check_env(e, 1, 0, master_port)
        # agent 0: the failing rank printed first; its peer may have been
        # killed before printing.
        a0.wait_lines(ENV_LINE, 1, timeout=T, stream="out")
        for e in worker_envs(a0, 0):
            self.check_env(e, 0, 0, master_port)

        # resource config after /start: the whole table
        for rank, (_, _, rcdir) in enumerate(agents):
            self.assertEqual(resource_config(rcdir), {
                "ips": ["10.0.0.1", "10.0.0.2"],
                "current_pod_ip": ips[rank]["ip"], "ips_timestamp": "v1"})
            self.assertEqual(os.listdir(rcdir), ["pod_resourceconfig.json"],
                             "written through a temp file and renamed")

        # --- /update: only the re-ranked entry; answers the status body ----
        for rank, (_, port, rcdir) in enumerate(agents):
            got = op.update(port, rank, NNODES, 0, "127.0.0.1", master_port,
                            rankIps=[{"rank": 1, "ip": "10.0.0.12"}],
                            ipVersion="v2")
            self.assertEqual(got["ipversion"], "v2", got)
            self.assertEqual(got["status"], ("faulted", "completed")[rank])
            self.assertCommon(got, rank)
            self.assertEqual(got, op.status(port),
                             "/update answers the same body as /status")
            self.assertEqual(resource_config(rcdir), {
                "ips": ["10.0.0.1", "10.0.0.12"],
                "current_pod_ip": ["10.0.0.1", "10.0.0.12"][rank],
                "ips_timestamp": "v2"})
            # no rankIps: the table is kept
            op.update(port, rank, NNODES, 0, "127.0.0.1", master_port)
            self.assertEqual(resource_config(rcdir)["ips"],
                             ["10.0.0.1", "10.0.0.12"])

        # --- /stop from FAULTED and COMPLETED -> STOPPING -> READY ---------
        for _, port, _ in agents:
            r = op.request(port, "POST", "/stop")
            self.assertEqual((r.code, r.body), (200, ""))
        st0 = op.wait_state(p0, "ready", T)
        st1 = op.wait_state(p1, "ready", T)
        self.assertTransitions(st0, ["INIT", "RUNNING", "FAULTED", "STOPPING", "READY"])
        self.assertTransitions(st1, ["INIT", "RUNNING", "COMPLETED", "STOPPING", "READY"])

        # --- /start again with faultCount + 1 -> both complete ------------
        ips2 = [{"rank": 0, "ip": "10.0.0.1"}, {"rank": 1, "ip": "10.0.0.22"}]
        for rank, (_, port, _) in enumerate(agents):
            op.start(port, rank, NNODES, 1, "127.0.0.1", master_port,
                     rankIps=ips2, ipVersion="v3")
        for rank, (run, port, rcdir) in enumerate(agents):
            st = op.wait_state(port, "completed", T, fail_on=("faulted",))
            self.assertTransitions(st, [
                ["INIT", "FAULTED", "STOPPING", "READY", "RUNNING", "COMPLETED"],
                ["INIT", "STOPPING", "READY", "RUNNING", "COMPLETED"]][rank])
            self.assertCommon(st, rank)
            self.assertEqual(st["ipversion"], "v3")
            self.assertEqual(resource_config(rcdir), {
                "ips": ["10.0.0.1", "10.0.0.22"],
                "current_pod_ip": ips2[rank]["ip"], "ips_timestamp": "v3"})
            # attempt 1: both ranks ran, with the operator's fault count
            run.wait_lines(r'^\{.*"TORCHELASTIC_RESTART_COUNT": "1"', NPROC,
                           timeout=T, stream="out")
            envs = worker_envs(run, 1)
            self.assertEqual(sorted(int(e["RANK"]) for e in envs),
                             [rank * NPROC + i for i in range(NPROC)])
            for e in envs:
                self.check_env(e, rank, 1, master_port)

        # --- /shutdown: exit 0, nothing left (checked at cleanup) ----------
        for run, port, _ in agents:
            self.assertTrue(run.running())
            r = op.request(port, "POST", "/shutdown")
            self.assertEqual(r.code, 200)
        for run, _, _ in agents:
            self.assertExit(run, 0, timeout=T)


class StopRunning(OperatorCase):
    def test_stop_graceful_then_forced(self):
        # print-signals blocks every signal and prints each one it takes;
        # with HP_SIGNAL_LIMIT=1 it exits 0 after the first.
        run, port, _ = self.start_agent(
            "agent", [harness.helper("print-signals")], {"HP_SIGNAL_LIMIT": "1"})
        op.wait_state(port, "ready", T)
        op.start(port, 0, NNODES, 0, "127.0.0.1", harness.free_port())
        op.wait_state(port, "running", T)
        run.wait_lines(r"^ready pid \d+ rank \d+$", NPROC, timeout=T, stream="out")

        # graceful: SIGUSR1 to every worker, they exit 0 by themselves
        op.stop(port, is_graceful=True, timeout=30)
        st = op.wait_state(port, "ready", T)
        self.assertTransitions(st, ["INIT", "RUNNING", "STOPPING", "READY"])
        sigs = run.wait_lines(r"^signal (\d+) rank (\d+)", NPROC, timeout=T, stream="out")
        self.assertEqual(sorted(int(m.group(1)) for m in sigs), [10, 10],
                         "graceful /stop sends SIGUSR1")
        self.assertEqual(sorted(m.group(2) for m in sigs), ["0", "1"])

        # the default stop (--shutdown-signal SIGKILL): no signal is seen
        op.start(port, 0, NNODES, 1, "127.0.0.1", harness.free_port())
        op.wait_state(port, "running", T)
        ready = run.wait_lines(r"^ready pid (\d+) rank \d+$", 2 * NPROC,
                               timeout=T, stream="out")[NPROC:]
        op.stop(port)
        op.wait_state(port, "ready", T)
        survivors = harness.TRACKER.survivors(5.0)
        for m in ready:
            self.assertNotIn(int(m.group(1)), survivors, "worker outlived /stop")
        self.assertEqual(len(run.matches(r"^signal ", "out")), NPROC,
                         "SIGKILL is not catchable: no new signal line")
        op.shutdown(port)
        self.assertExit(run, 0, timeout=T)

    def test_shutdown_while_running(self):
        # exit-with 0 99: no rank is 99, so every worker waits to be stopped
        run, port, _ = self.start_agent("agent", [harness.helper("exit-with"), "0", "99"])
        op.wait_state(port, "ready", T)
        op.start(port, 1, NNODES, 0, "127.0.0.1", harness.free_port())
        pids = [int(m.group(1)) for m in run.wait_lines(
            r"^exit-with rank \d+ attempt 0 pid (\d+)$", NPROC, timeout=T, stream="out")]
        r = op.request(port, "POST", "/shutdown")
        self.assertEqual(r.code, 200)
        self.assertExit(run, 0, timeout=T)
        survivors = harness.TRACKER.survivors(5.0)
        self.assertEqual([p for p in pids if p in survivors], [], "workers outlived /shutdown")


class LocalModeByHand(harness.ProcessTest):
    """Local mode keeps the server: /stop then /start by hand (issue 3 §5)."""

    def test_local_stop_then_start(self):
        marker = os.path.join(self.tmp, "second-attempt")
        script = os.path.join(self.tmp, "worker.sh")
        with open(script, "w") as f:
            f.write("#!/bin/sh\n"
                    f"'{harness.helper('print-env')}' || exit 99\n"
                    f"[ -e '{marker}' ] && exit 0\n"
                    f"exec '{harness.helper('exit-with')}' 0 99\n")
        os.chmod(script, 0o755)
        run = self.agent(["--nnodes", "1", "--nproc-per-node", str(NPROC),
                          "--no-python", script], label="local")
        port = int(run.wait_line(LISTEN_RE, timeout=T).group(1))
        op.wait_state(port, "running", T)
        run.wait_lines(r"^exit-with rank \d+ attempt 0 pid \d+$", NPROC, timeout=T, stream="out")

        op.stop(port)
        st = op.wait_state(port, "ready", T)
        self.assertTrue(run.running(), "local mode exited on /stop")
        self.assertIn("STOPPING", st["transitions"])

        open(marker, "w").close()
        master_port = harness.free_port()
        op.start(port, 0, 1, 5, "127.0.0.1", master_port)
        # the second attempt succeeds: local mode then exits 0 by itself
        self.assertExit(run, 0, timeout=T)
        envs = worker_envs(run, 5)
        self.assertEqual(sorted(e["RANK"] for e in envs), [str(i) for i in range(NPROC)],
                         "TORCHELASTIC_RESTART_COUNT is the /start faultCount")
        for e in envs:
            self.assertEqual(e["MASTER_PORT"], str(master_port))
            self.assertEqual(e["WORLD_SIZE"], str(NPROC))


if __name__ == "__main__":
    harness.main()
