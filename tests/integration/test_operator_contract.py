"""The reference-exact operator contract (issue 10), end to end: the real
hyperpodrun driven over HTTP (hp_operator.py) with workers that speak the
raw IPC wire format (raw_worker.py), and raw IPC clients of the test's own.

  * the mode decision: AWS's recipe command line inside a pod (NNODES set)
    waits for /start; on a laptop it runs at once; HYPERPODRUN_MODE;
  * /update before the ranks connect (nothing sent, ipversion null), then
    the operator's re-send (job_rank_info with faultCount, a 253-byte
    MASTER_ADDR whole, assigned_rank);
  * spare -> non-spare -> /start reaching RUNNING, priority, the pause;
  * checkpoint discovery: a checkpoint written by 2 ranks becomes progress
    only when complete; ckpt_info_get answered on its type and client_id;
  * /shutdown's SIGTERM, pre-train argv, env and log directory, the
    range table; job_start with a missing client; a local PLR fault.

Every wait is on a line, a record or a /status state with a deadline.
"""
import json
import os
import re
import shutil
import socket
import struct
import uuid

import harness
import hp_operator as op
import ipr_common

HERE = os.path.dirname(os.path.abspath(__file__))
RAW = os.path.join(HERE, "raw_worker.py")
T = 60.0
LISTEN_RE = r"operator API listening on http://127\.0\.0\.1:(\d+)$"
IPC_RE = r"worker IPC listening on (\S+)$"
# --tee prefixes worker lines with "[default<N>]:"
records, _ = ipr_common.record_readers(r"(?:\[[a-z]+\d+\]:)?raw")


def msgs(run, typ, local_rank=None):
    return [r for r in records(run, "msg", type=typ)
            if local_rank is None or r["local_rank"] == local_rank]


def wait_msgs(run, typ, count, timeout=T):
    deadline = harness.time.monotonic() + timeout
    while True:
        got = msgs(run, typ)
        if len(got) >= count:
            return got
        left = deadline - harness.time.monotonic()
        if left <= 0:
            raise AssertionError("no %d %s message(s); output:\n%s"
                                 % (count, typ, run.tail(40)))
        n = len(run.matches(r"raw msg \{", "out"))
        try:
            run.wait_lines(r"raw msg \{", n + 1, timeout=left, stream="out")
        except AssertionError:
            pass


class RawClient:
    """One connection speaking the wire format; client objects on it are
    named by client_id as the reference's client does."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(10)
        self.s.connect(path)

    def send(self, obj):
        data = json.dumps(obj).encode()
        self.s.sendall(struct.pack("!I", len(data)) + data)

    def recv(self):
        hdr = self._exact(4)
        return json.loads(self._exact(struct.unpack("!I", hdr)[0]))

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise EOFError("agent closed the connection")
            buf += chunk
        return buf

    def close(self):
        self.s.close()


RELAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ipc_relay.py")


def relay_clients(run, tmp, n):
    """A RawClient per local rank through that rank's ipc_relay.py worker:
    only a worker's own process group may speak for its rank."""
    run.wait_lines(r"relay \d listening on", n, T, stream="out")
    return [RawClient(os.path.join(tmp, f"relay-{lr}.sock")) for lr in range(n)]


def pod_env(tmp, **extra):
    return harness.base_env(TMPDIR=tmp, PYTHON=harness.SYSTEM_PYTHON,
                            HYPERPOD_RESOURCE_CONFIG_DIR=os.path.join(tmp, "rc"),
                            **extra)


class Contract(harness.ProcessTest):
    survivor_timeout = 10.0

    def boot(self, args, env, label="agent"):
        run = self.agent(args, env=env, label=label)
        port = int(run.wait_line(LISTEN_RE, timeout=T).group(1))
        self.addCleanup(self.shutdown, run, port)
        return run, port

    def shutdown(self, run, port):
        if run.running():
            try:
                op.shutdown(port)
            except (OSError, op.OperatorError):
                pass
            try:
                run.wait(30)
            except AssertionError:
                pass

    def recipe(self, extra_args=(), script=RAW):
        """AWS's checkpointless job line: no --nnodes, no backend."""
        return ["--nproc_per_node=2", "--log_dir", os.path.join(self.tmp, "logs"),
                "--tee", "3", "--redirect", "3", *extra_args, script]

    # -- 1. the mode decision ----------------------------------------------
    def test_recipe_command_line_in_a_pod_waits_for_start(self):
        run, port = self.boot(self.recipe(["--inprocess-restart"]),
                              pod_env(self.tmp, NNODES="2"))
        run.wait_line(r"operator mode \(inside a HyperPod pod \(NNODES=2", T)
        run.wait_line(r"waiting for the operator's /start on http://127\.0\.0\.1:%d "
                      r"\(no operator here\? run with HYPERPODRUN_MODE=local" % port, T)
        st = op.wait_state(port, "ready", T)
        self.assertEqual(st["spare"], "True", st)
        # (--tee relays the workers' lines asynchronously)
        run.wait_lines(r"raw ready \{", 2, T, stream="out")
        # before /start no worker believes it is rank 0: the reference's
        # group rank -1, no master (10336335176)
        ready = {r["local_rank"]: r["env"] for r in records(run, "ready")}
        self.assertEqual(sorted(ready), [0, 1])
        for lr, env in ready.items():
            self.assertEqual(env["RANK"], str(-2 + lr), env)
            self.assertEqual(env["WORLD_SIZE"], "4", env)
            self.assertEqual(env["MASTER_ADDR"], "", env)
            self.assertEqual(env["MASTER_PORT"], "-1", env)
            self.assertEqual(env["SPARE"], "True", env)
            self.assertEqual(env["HYPERPOD_SIGNAL_COORDINATION"], "disabled", env)
        self.assertFalse(msgs(run, "job_start"), "released before /start")
        op.start(port, 1, 2, 0, "127.0.0.1", 29555)
        got = wait_msgs(run, "job_start", 2)
        for m in got:
            env = m["worker_envs"]
            self.assertEqual(env["RANK"], str(2 + m["local_rank"]))
            self.assertEqual(env["WORLD_SIZE"], "4")
            self.assertEqual(env["GROUP_WORLD_SIZE"], "4")  # nproc x nnodes
            self.assertEqual(env["SPARE"], "False")
        st = op.status(port)
        self.assertEqual((st["status"], st["reason"]), ("running", "Running"), st)
        # agent_version: the reference release we follow, ours as local
        # metadata; ours alone in /metrics' build info
        self.assertEqual(st["agent_version"],
                         "1.1.0+hyperpodrun." + harness.project_version())
        self.assertIn('version="%s"' % harness.project_version(),
                      op.request(port, "GET", "/metrics").body)

    def test_recipe_command_line_on_a_laptop_runs_at_once(self):
        script = [harness.helper("print-env")]
        run = self.agent(self.recipe(["--no-python"], script[0]),
                         env=harness.base_env(TMPDIR=self.tmp))
        self.assertExit(run, 0, T)
        self.assertTrue(run.matches(r"local mode \(--nnodes=1"), run.tail())
        envs = harness.parse_json_lines(run.output("out"), r"^\[default\d\]:")
        self.assertEqual(sorted(e["RANK"] for e in envs), ["0", "1"])

    def test_log_line_prefix_template(self):
        # torch's TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE with the reference's
        # names (10071915287), expanded as string.Template.safe_substitute
        tmpl = "[$role_name r$rank-l${local_rank}-g$group_rank-a$restart_count $$ $nope ${x]:"
        run = self.agent(["--nproc-per-node=2", "--node-rank=1", "--nnodes=2",
                          "--rdzv-backend=static", "--master-port=1", "--tee=3",
                          "--no-python", harness.helper("print-env")],
                         env=harness.base_env(TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE=tmpl))
        self.assertExit(run, 0, T)
        got = sorted(l.split('{"', 1)[0] for l in run.output("out") if '{"' in l)
        self.assertEqual(got, ["[default r%d-l%d-g1-a0 $ $nope ${x]:" % (2 + i, i)
                               for i in range(2)])

    def test_mode_overrides_and_refusals(self):
        pe = harness.helper("print-env")
        # any Kubernetes pod: operator mode, and the reference's warning for
        # another backend
        run, port = self.boot(["--rdzv-backend=c10d", "--no-python", pe],
                              pod_env(self.tmp, KUBERNETES_SERVICE_HOST="10.0.0.1"))
        run.wait_line(r"operator mode \(inside a Kubernetes pod", T)
        run.wait_line(r"Overriding `rdzv_backend='hyperpod'`", T)
        self.assertEqual(op.wait_state(port, "ready", T)["status"], "ready")
        # HYPERPODRUN_MODE=local wins over the pod
        run2 = self.agent(["--nproc-per-node=1", "--no-python", pe],
                          env=pod_env(self.tmp, NNODES="4", HYPERPODRUN_MODE="local"),
                          label="local")
        self.assertExit(run2, 0, T)
        self.assertTrue(run2.matches(r"local mode \(HYPERPODRUN_MODE=local"))
        # refusals: exit 2 with a usage line
        for env, args, want in (
                ({"HYPERPODRUN_MODE": "bogus"}, [], "HYPERPODRUN_MODE: invalid value"),
                ({"NNODES": "x"}, [], "NNODES: invalid value"),
                ({"NNODES": "4"}, ["--nnodes=1:4", "--rdzv-backend=static"],
                 "Elastic cluster size is currently not supported")):
            r = self.agent([*args, "--no-python", pe], env=pod_env(self.tmp, **env),
                           label="bad")
            self.assertExit(r, 2, T)
            self.assertTrue(r.matches(re.escape(want)), r.tail())
            self.assertTrue(r.matches(r"^usage: hyperpodrun"), r.tail())

    # -- 2/3. /update, spare, priority ----------------------------------------
    def test_update_before_ranks_connect_then_resend(self):
        gate = os.path.join(self.tmp, "gate{local_rank}")
        for lr in range(2):
            os.mkfifo(gate.format(local_rank=lr))
        run, port = self.boot(self.recipe(["--inprocess-restart"]),
                              pod_env(self.tmp, NNODES="2", RAW_GATE=gate))
        run.wait_lines(r"raw ready \{", 2, T, stream="out")
        master = "m" * 200 + ".job-worker-0.svc.cluster.local"
        master = master + "x" * (253 - len(master))
        ips = [{"rank": 0, "ip": "10.0.0.1"}, {"rank": 1, "ip": "10.0.0.2"}]
        body = dict(ipVersion="v1", rankIps=ips, spare=False)
        # the ranks have not connected: nothing is sent, ipversion null so
        # the operator sends /update again (10759738055 send_rank_info)
        st = op.update(port, 1, 2, 0, master, 29500, **body)
        self.assertNotIn("ipversion", st)
        self.assertNotIn("assigned_rank", st)
        # a fresh non-spare node with faultCount 0 in INIT has priority
        self.assertEqual(st["status"], "init")
        self.assertEqual((st["spare"], st.get("priority")), ("False", "True"), st)
        fds = [os.open(gate.format(local_rank=lr), os.O_WRONLY) for lr in range(2)]
        for fd in fds:
            os.close(fd)
        op.wait_state(port, "ready", T)
        self.assertFalse(msgs(run, "job_rank_info"))
        # the re-send reaches every rank, with faultCount as the count
        st = op.update(port, 1, 2, 7, master, 29500, **body)
        self.assertEqual((st["ipversion"], st["assigned_rank"]), ("v1", "1"), st)
        got = wait_msgs(run, "job_rank_info", 2)
        for m in got:
            env = m["worker_envs"]
            self.assertEqual(env["MASTER_ADDR"], master)  # 253 bytes, whole
            self.assertEqual(env["JOB_RESTART_COUNT"], "7")
            self.assertEqual(env["TORCHELASTIC_RESTART_COUNT"], "7")
            self.assertEqual(env["RANK"], str(2 + m["local_rank"]))
            self.assertEqual(m["aggregate_worker_data"]["rank_ips"], ips)
            self.assertEqual(m["client_id"] != "", True)
        # /start releases; priority cleared
        op.start(port, 1, 2, 7, master, 29500, **body)
        wait_msgs(run, "job_start", 2)
        st = op.status(port)
        self.assertEqual(st["reason"], "Running")
        self.assertNotIn("priority", st)

    def test_spare_to_non_spare_to_start_reaches_running(self):
        run, port = self.boot(self.recipe(["--inprocess-restart"]),
                              pod_env(self.tmp, NNODES="2"))
        st = op.wait_state(port, "ready", T)
        run.wait_lines(r"raw ready \{", 2, T, stream="out")
        pids = sorted(r["pid"] for r in records(run, "ready"))
        # spare -> spare: nothing; spare -> non-spare: no restart either
        op.update(port, 0, 2, 1, "127.0.0.1", 29500, spare=True)
        st = op.update(port, 0, 2, 1, "127.0.0.1", 29500, spare=False)
        self.assertEqual(st["spare"], "False")
        op.start(port, 0, 2, 1, "127.0.0.1", 29500, spare=False)
        got = wait_msgs(run, "job_start", 2)
        self.assertEqual({m["worker_envs"]["SPARE"] for m in got}, {"False"})
        self.assertEqual(op.status(port)["status"], "running")
        self.assertEqual(sorted(r["pid"] for r in records(run, "ready")), pids)
        self.assertFalse(run.matches(r"process-level restart"))
        # the in-process pause: job_fault with the current count (not the
        # next), READY with priority, ipversion kept (10759738055)
        op.stop(port)
        faults = wait_msgs(run, "job_fault", 2)
        self.assertEqual([f["restart_count"] for f in faults], [1, 1])
        st = op.wait_state(port, "ready", T)
        self.assertEqual(st.get("priority"), "True", st)
        # non-spare -> spare: a process-level restart, and the new
        # processes are released by /start with SPARE=True
        op.update(port, 0, 2, 2, "127.0.0.1", 29500, spare=True)
        run.wait_line(r"process-level restart: this node became a spare", T)
        run.wait_lines(r"raw ready \{", 4, T, stream="out")
        op.wait_state(port, "ready", T)
        op.start(port, 0, 2, 2, "127.0.0.1", 29500, spare=True)
        got = wait_msgs(run, "job_start", 4)
        self.assertEqual([m["worker_envs"]["SPARE"] for m in got[2:]], ["True"] * 2)
        st = op.status(port)
        self.assertEqual((st["status"], st["spare"]), ("running", "True"), st)
        # "plr" is no member of RestartMode: an in-process restart
        op.stop(port, restart_mode="plr")
        run.wait_line(r"unexpected restart_mode 'plr'", T)
        op.wait_state(port, "ready", T)
        self.assertEqual(len(records(run, "ready")), 4, "no new processes for 'plr'")
        # process_level_restart (any case) restarts the processes, READY
        # (paused) too
        op.stop(port, restart_mode="PROCESS_LEVEL_RESTART")
        run.wait_line(r"process-level restart: /stop asked for a process-level", T)
        run.wait_lines(r"raw ready \{", 6, T, stream="out")
        st = op.wait_state(port, "ready", T)
        self.assertNotIn("priority", st, "a process stop clears priority")

    def test_job_start_with_a_missing_client_is_a_fault(self):
        # 9960341539 test_send_start_missing_clients: all or nothing
        run, port = self.boot(self.recipe(["--inprocess-restart"]),
                              pod_env(self.tmp, NNODES="1", RAW_DROP_RANK="1",
                                      RAW_SAFETY_S="60"))
        run.wait_line(r"raw dropped \{", T, stream="out")
        op.wait_state(port, "ready", T)
        op.start(port, 0, 1, 0, "127.0.0.1", 29500)
        st = op.wait_state(port, "faulted", T)
        self.assertEqual(st["reason"], "WorkerFault", st)
        self.assertFalse(msgs(run, "job_start"), "job_start went to some ranks")
        run.wait_line(r"no connected client for local rank\(s\) 1", T)

    def test_local_plr_fault_passes_through_faulted(self):
        # 10027259171 test_handle_healthy_state: FAULTED with the worker's
        # reason, then new processes (INIT)
        run, port = self.boot(self.recipe(["--inprocess-restart"]),
                              pod_env(self.tmp, NNODES="1",
                                      RAW_FAULT_MODE="local_process_level_restart"))
        op.wait_state(port, "ready", T)
        op.start(port, 0, 1, 0, "127.0.0.1", 29500)
        run.wait_line(r"RUNNING -> FAULTED reason=RawFault", T)
        run.wait_line(r"FAULTED -> INIT", T)
        run.wait_lines(r"raw ready \{", 4, T, stream="out")
        op.wait_state(port, "ready", T)

    # -- 9. checkpoint discovery (PLR: the socket exists there too) --------
    def test_checkpoint_of_two_ranks_is_progress_only_when_complete(self):
        run, port = self.boot(["--nnodes=2", "--nproc-per-node=2", "--no-python",
                               harness.SYSTEM_PYTHON, RELAY, self.tmp],
                              pod_env(self.tmp, NNODES="2", HYPERPODRUN_LOG_LEVEL="debug"))
        path = run.wait_line(IPC_RE, T).group(1)
        op.wait_state(port, "ready", T)
        op.start(port, 0, 2, 0, "127.0.0.1", 29500,
                 progress={"other": {"progressCount": 3, "progressData": "/o/3"}})
        st = op.wait_state(port, "running", T)
        self.assertEqual(st["reason"], "Running")
        self.assertNotIn("progress", st, "progress comes from the tracker")
        c0, c1 = relay_clients(run, self.tmp, 2)
        self.addCleanup(c0.close)
        self.addCleanup(c1.close)
        ids = [str(uuid.uuid4()), str(uuid.uuid4())]
        for lr, c in enumerate((c0, c1)):
            c.send({"type": "init", "client_id": ids[lr], "local_rank": lr})
            c.send({"type": "ckpt_init", "client_id": ids[lr], "local_rank": lr,
                    "prefix": "ckpt", "checkpoint_types":
                    {"model_checkpoint": 2, "data_checkpoint": 0}})
        c0.send({"type": "ckpt_info_get", "client_id": ids[0], "local_rank": 0})
        self.assertEqual(c0.recv(), {"path": None, "type": "ckpt_info_get",
                                     "client_id": ids[0]})
        upd = {"type": "ckpt_info_update", "step": 10, "path": "/ck/10",
               "checkpoint_type": "model_checkpoint"}
        c0.send(dict(upd, client_id=ids[0], local_rank=0))
        c0.send(dict(upd, client_id=ids[0], local_rank=0))  # a rank twice
        # (a ckpt_info_get here would forget the pending step, as the
        # reference's does: wait for the agent's own debug line instead)
        run.wait_lines(r"checkpoint step 10: local rank 0 reported", 2, T)
        self.assertNotIn("progress", op.status(port), "one rank of two")
        c1.send(dict(upd, client_id=ids[1], local_rank=1))
        c1.send({"type": "ckpt_info_get", "client_id": ids[1], "local_rank": 1})
        self.assertEqual(c1.recv(), {"path": "/ck/10", "type": "ckpt_info_get",
                                     "client_id": ids[1]})
        st = op.status(port)
        self.assertEqual(st["progress"],
                         {"ckpt": {"progressData": "/ck/10", "progressCount": 10}}, st)
        # PLR workers see the socket too
        self.assertTrue(os.path.exists(path))

    def test_start_progress_seeds_the_tracker(self):
        run, port = self.boot(["--nproc-per-node=1", "--no-python",
                               harness.SYSTEM_PYTHON, RELAY, self.tmp],
                              pod_env(self.tmp, NNODES="1"))
        op.wait_state(port, "ready", T)
        op.start(port, 0, 1, 0, "127.0.0.1", 29500,
                 progress={"ckpt": {"progressCount": 5, "progressData": "/ck/5"}})
        c, = relay_clients(run, self.tmp, 1)
        self.addCleanup(c.close)
        cid = str(uuid.uuid4())
        c.send({"type": "ckpt_init", "client_id": cid, "local_rank": 0,
                "prefix": "ckpt", "checkpoint_types": {"model_checkpoint": 1}})
        c.send({"type": "ckpt_info_get", "client_id": cid, "local_rank": 0})
        self.assertEqual(c.recv()["path"], "/ck/5")
        self.assertEqual(op.status(port)["progress"],
                         {"ckpt": {"progressData": "/ck/5", "progressCount": 5}})

    def test_progress_strings_that_need_escaping_come_back_intact(self):
        # /status progress is JSON text the agent builds (cJSON) from the
        # workers' prefix and path; a step past INT_MAX keeps its digits
        prefix, path = 'c"k\\p\n\x01\u00e9', "/ck/\t\u6f22\U0001F600\x7f"
        step = 2 ** 40 + 1
        run, port = self.boot(["--nproc-per-node=1", "--no-python",
                               harness.SYSTEM_PYTHON, RELAY, self.tmp],
                              pod_env(self.tmp, NNODES="1"))
        op.wait_state(port, "ready", T)
        op.start(port, 0, 1, 0, "127.0.0.1", 29500,
                 progress={prefix: {"progressCount": step, "progressData": path}})
        c, = relay_clients(run, self.tmp, 1)
        self.addCleanup(c.close)
        cid = str(uuid.uuid4())
        c.send({"type": "ckpt_init", "client_id": cid, "local_rank": 0,
                "prefix": prefix, "checkpoint_types": {"model_checkpoint": 1}})
        c.send({"type": "ckpt_info_get", "client_id": cid, "local_rank": 0})
        self.assertEqual(c.recv()["path"], path)
        st = op.status(port)
        self.assertEqual(st["progress"],
                         {prefix: {"progressData": path, "progressCount": step}})
        self.assertIs(type(st["progress"][prefix]["progressCount"]), int)

    # -- 6. stopping --------------------------------------------------------
    def test_shutdown_sends_sigterm_then_exits_1_after_a_failed_run(self):
        ps = harness.helper("print-signals")
        run, port = self.boot(["--nproc-per-node=1", "--shutdown-timeout=30",
                               "--no-python", ps], pod_env(self.tmp, NNODES="1"))
        op.wait_state(port, "ready", T)
        op.start(port, 0, 1, 0, "127.0.0.1", 29500)
        run.wait_line(r"ready pid \d+", T)
        # --shutdown-signal is SIGKILL by default; /shutdown is SIGTERM
        op.shutdown(port)
        run.wait_line(r"SIGTERM", T)
        self.assertExit(run, 0, T)
        # after a failed run /shutdown exits 1, as torch's ChildFailedError
        ew = harness.helper("exit-with")
        run2, port2 = self.boot(["--nproc-per-node=1", "--no-python", ew, "3"],
                                pod_env(self.tmp, NNODES="1"), label="failing")
        op.wait_state(port2, "ready", T)
        op.start(port2, 0, 1, 0, "127.0.0.1", 29500)
        op.wait_state(port2, "faulted", T)
        op.shutdown(port2)
        self.assertExit(run2, 1, T)

    # -- 5. pre-train ----------------------------------------------------------
    def test_pre_train_args_are_one_argv_element(self):
        pre = os.path.join(self.tmp, "pre.sh")
        with open(pre, "w") as f:
            f.write('#!/bin/sh\necho "pre argc=$# arg1=$1 lws=$LOCAL_WORLD_SIZE '
                    'rank=$RANK world=$WORLD_SIZE"\n')
        os.chmod(pre, 0o755)
        ew = harness.helper("exit-with")
        logs = os.path.join(self.tmp, "logs")
        for args, want in ((["--pre-train-args", "a b 'c d'"], "argc=1 arg1=a b 'c d'"),
                           ([], "argc=1 arg1=None")):
            run, port = self.boot(["--nproc-per-node=2", "--log-dir", logs, "--tee", "3",
                                   "--rdzv-id", "job7", "--pre-train-script", pre,
                                   *args, "--no-python", ew, "0"],
                                  pod_env(self.tmp, NNODES="2"), label="pre")
            op.wait_state(port, "ready", T)
            op.start(port, 1, 2, 0, "127.0.0.1", 29500)
            run.wait_line(r"pre argc=", T, stream="out")
            got = [l.split(":", 1)[1] for l in run.output("out") if "pre argc=" in l]
            self.assertEqual(got, ["pre %s lws=1 rank=2 world=4" % want])
            op.wait_state(port, "completed", T)
            self.shutdown(run, port)
            # its own log directory, as the reference's pre_train_<run_id>_*
            dirs = [d for d in os.listdir(logs) if d.startswith("pre_train_job7_")]
            self.assertEqual(len(dirs), 1, os.listdir(logs))
            with open(os.path.join(logs, dirs[0], "attempt_0", "0", "stdout.log")) as f:
                self.assertEqual(f.read(), "pre %s lws=1 rank=2 world=4\n" % want)
            shutil.rmtree(os.path.join(logs, dirs[0]))  # the next case's

    def test_pre_train_output_is_log_monitored(self):
        # 10071915287: log monitoring starts with every stage, pre-train too
        pre = os.path.join(self.tmp, "pre-boom.sh")
        with open(pre, "w") as f:
            f.write('#!/bin/sh\necho "pre: boom"\nexec sleep 600\n')
        os.chmod(pre, 0o755)
        run, port = self.boot(["--nproc-per-node=1", "--pre-train-script", pre,
                               "--no-python", harness.helper("exit-with"), "0"],
                              pod_env(self.tmp, NNODES="1"))
        op.wait_state(port, "ready", T)
        op.start(port, 0, 1, 0, "127.0.0.1", 29500, log_monitoring_configuration=[
            {"name": "Boom", "logPattern": ".*boom.*", "faultOnMatch": True}])
        st = op.wait_state(port, "faulted", T)
        self.assertEqual(st["reason"], "LogFault_Boom", st)

    # -- 4. requests: the range table ---------------------------------------
    def test_bad_numbers_are_422_and_change_nothing(self):
        pe = harness.helper("exit-with")
        run, port = self.boot(["--nproc-per-node=1", "--no-python", pe, "0", "99"],
                              pod_env(self.tmp, NNODES="4"))
        op.wait_state(port, "ready", T)
        good = {"rank": 0, "nnodes": 4, "faultCount": 0, "master_addr": "h",
                "master_port": 29500}
        table = [
            ({"rank": 2147483647}, "/start", "less_than_equal", ["body", "rank"]),
            ({"rank": -2}, "/start", "greater_than_equal", ["body", "rank"]),
            ({"rank": 14}, "/start", "value_error", ["body", "rank"]),
            ({"nnodes": 0}, "/start", "greater_than_equal", ["body", "nnodes"]),
            ({"nnodes": 2147483647}, "/update", "less_than_equal", ["body", "nnodes"]),
            ({"master_port": 70000}, "/start", "less_than_equal", ["body", "master_port"]),
            ({"faultCount": -1}, "/update", "greater_than_equal", ["body", "faultCount"]),
            ({"master_addr": ""}, "/start", "value_error", ["body", "master_addr"]),
            ({"master_addr": ""}, "/update", "value_error", ["body", "master_addr"]),
            ({"rankIps": [{"rank": 100001, "ip": "a"}], "ipVersion": "v"}, "/update",
             "value_error", ["body", "rankIps", 0, "rank"]),
        ]
        for change, route, typ, loc in table:
            r = op.request(port, "POST", route, dict(good, **change))
            self.assertEqual(r.code, 422, (change, r))
            d = r.json()["detail"]
            self.assertEqual((d[0]["type"], d[0]["loc"]), (typ, loc), d)
        r = op.request(port, "POST", "/start", dict(good, master_addr=""))
        self.assertEqual(r.json()["detail"][0]["msg"],
                         "Value error, Empty master_addr received from operator")
        r = op.request(port, "POST", "/stop", {"timeout": -1})
        self.assertEqual(r.code, 422)
        st = op.status(port)
        self.assertEqual(st["status"], "ready", st)
        self.assertNotIn("assigned_rank", st)


if __name__ == "__main__":
    harness.main()
