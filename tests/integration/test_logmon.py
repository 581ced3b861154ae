"""Log monitoring end to end (issue 6 §2): the real hyperpodrun in operator
mode, driven over HTTP by hp_operator.py, with a log_monitoring_configuration
in /start and workers that print lines.

Checked: a missed recurring deadline -> FAULTED with the reference's reason
(LogHang_<rule>) and message (the Python dict repr of the last matched
line); the workers are stopped and /stop brings READY; rules are replaced
and re-armed by the next /start (faultOnMatch -> LogFault_<rule>); a start
cut-off with no match (None in the message); a metric threshold over
consecutive data points (LogSlow_<rule>); an invalid configuration is
ignored (the /start is still 200 and the job completes); only local rank
0's stdout is monitored, as in the reference; a catastrophic pattern does
not stall the agent. Every wait is on an agent log line or a state, with a
deadline; none is a pause."""

import os
import stat

import harness
import hp_operator as op

NPROC = 2
LISTEN_RE = r"operator API listening on http://127\.0\.0\.1:(\d+)"
T = 60.0
HANG = ("The job is hanging (not receiving required logs) on the following "
        "log monitoring rules and corresponding last matched log lines: ")
FAULT = ("The job detected a fault indicating log message for the following "
         "log monitoring rules and corresponding log lines: ")
SLOW = ("The job is slowed (logs outside of acceptable thresholds) on the "
        "following log monitoring rules and corresponding log lines: ")


class LogMonitoring(harness.ProcessTest):

    def script(self, body):
        path = os.path.join(self.tmp, "worker%d.sh" % len(os.listdir(self.tmp)))
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + body)
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
        return path

    def start_agent(self, script, nproc=NPROC):
        env = harness.base_env(
            HYPERPOD_RESOURCE_CONFIG_DIR=os.path.join(self.tmp, "rc"))
        run = self.agent(["--rdzv-backend", "hyperpod", "--nnodes", "1",
                          "--nproc-per-node", str(nproc), "--no-python",
                          script], env=env)
        port = int(run.wait_line(LISTEN_RE, timeout=T).group(1))
        op.wait_state(port, "ready", T)
        return run, port

    def start(self, port, fault_count, rules):
        r = op.request(port, "POST", "/start", {
            "rank": 0, "nnodes": 1, "faultCount": fault_count,
            "master_addr": "127.0.0.1", "master_port": harness.free_port(),
            "log_monitoring_configuration": rules})
        self.assertEqual((r.code, r.body), (200, ""))

    def faulted(self, run, port, reason, count=1):
        """Waits for the count-th transition to FAULTED with reason (the
        agent's fsm log line, written just before /status is republished),
        then returns /status."""
        run.wait_lines(r"RUNNING -> FAULTED reason=%s " % reason, count,
                       timeout=T)
        st = op.wait_state(port, "faulted", T)
        self.assertEqual(st["reason"], reason, st)
        return st

    def shutdown(self, run, port):
        # after a failed run the reference exits 1 (torch's run() raises
        # ChildFailedError, 10414151774)
        failed = op.status(port)["status"] == "faulted"
        op.shutdown(port)
        self.assertExit(run, 1 if failed else 0)

    def test_hang_then_rearm_with_new_rules(self):
        # Attempts 0 and 1 print and then hang; attempt 2 completes.
        script = self.script(
            'echo "Training started"\n'
            'echo "step 1 loss 2.5"\n'
            'echo "step 2 loss 2.25"\n'
            'echo "rank $LOCAL_RANK ready"\n'
            '[ "$TORCHELASTIC_RESTART_COUNT" = 2 ] && exit 0\n'
            'exec sleep 600\n')
        run, port = self.start_agent(script)

        # --- a missed recurring deadline ---------------------------------
        self.start(port, 0, [
            {"name": "JobStart", "logPattern": ".*Training started.*",
             "expectedStartCutOffInSeconds": 120},
            {"name": "JobHangingDetection",
             "logPattern": r".*step (\d+) loss.*",
             "expectedRecurringFrequencyInSeconds": 1,
             "expectedStartCutOffInSeconds": 120},
        ])
        st = self.faulted(run, port, "LogHang_JobHangingDetection")
        self.assertEqual(
            st["message"],
            HANG + "{'JobHangingDetection': 'step 2 loss 2.25\\n'}")
        self.assertEqual(list(st["transitions"]),
                         ["INIT", "READY", "RUNNING", "FAULTED"])
        # the hung workers are stopped (as for a worker failure)
        run.wait_lines(r"worker \d \(pid \d+\) killed by SIGKILL", NPROC,
                       timeout=T)
        self.assertTrue(run.running())
        op.stop(port)
        op.wait_state(port, "ready", T)

        # --- /start replaces the rules and re-arms them ------------------
        self.start(port, 1, [
            {"name": "Loss", "logPattern": r".*step 2 loss.*",
             "faultOnMatch": True},
        ])
        st = self.faulted(run, port, "LogFault_Loss")
        self.assertEqual(st["message"],
                         FAULT + "{'Loss': 'step 2 loss 2.25\\n'}")
        op.stop(port)
        op.wait_state(port, "ready", T)

        # --- no configuration: nothing is monitored any more --------------
        self.start(port, 2, None)
        st = op.wait_state(port, "completed", T, fail_on=("faulted",))
        self.assertNotIn("reason", st)
        self.shutdown(run, port)

    def test_start_cutoff_without_match(self):
        script = self.script('echo "doing rendezvous"\nexec sleep 600\n')
        run, port = self.start_agent(script)
        self.start(port, 0, [
            {"name": "JobStart", "logPattern": ".*Training started.*",
             "expectedStartCutOffInSeconds": 1},
            {"name": "Other", "logPattern": "never",
             "expectedStartCutOffInSeconds": 600},
        ])
        st = self.faulted(run, port, "LogHang_JobStart")
        self.assertEqual(st["message"], HANG + "{'JobStart': None}")
        self.shutdown(run, port)

    def test_metric_threshold(self):
        # Two consecutive throughputs under 100 TFLOPs trip the rule; one
        # good value in between resets the count.
        script = self.script(
            'echo "throughput 50.5 TFLOPs"\n'
            'echo "throughput 150 TFLOPs"\n'
            'echo "throughput 80 TFLOPs"\n'
            'echo "throughput 70 TFLOPs"\n'
            'exec sleep 600\n')
        run, port = self.start_agent(script, nproc=1)
        self.start(port, 0, [
            {"name": "TFLOPs", "logPattern": r".* (.+) TFLOPs.*",
             "metricThreshold": 100, "operator": "lt",
             "metricEvaluationDataPoints": 2},
        ])
        st = self.faulted(run, port, "LogSlow_TFLOPs")
        self.assertEqual(st["message"],
                         SLOW + "{'TFLOPs': 'throughput 70 TFLOPs\\n'}")
        self.shutdown(run, port)

    def test_invalid_configuration_is_ignored(self):
        script = self.script('echo "step 1"\nexit 0\n')
        run, port = self.start_agent(script)
        # one bad pattern rejects the whole configuration, as the
        # reference's LogAgent does; the /start itself is accepted
        self.start(port, 0, [
            {"name": "Good", "logPattern": "step", "faultOnMatch": True},
            {"name": "Bad", "logPattern": "(unclosed"},
        ])
        st = op.wait_state(port, "completed", T, fail_on=("faulted",))
        self.assertNotIn("reason", st)
        run.wait_line(r"rule 'Bad': logPattern /\(unclosed/ does not compile",
                      timeout=T)
        self.shutdown(run, port)

    def test_only_rank0_stdout_and_hostile_pattern(self):
        # "boom" on rank 1's stdout and on rank 0's stderr is not seen; a
        # catastrophic pattern on rank 0's stdout is bounded by the PCRE2
        # limits, so the line after it is still evaluated promptly.
        script = self.script(
            '[ "$LOCAL_RANK" = 1 ] && echo boom\n'
            'echo boom >&2\n'
            'if [ "$LOCAL_RANK" = 0 ]; then\n'
            '  echo aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab\n'
            '  echo "done $LOCAL_RANK"\n'
            'fi\n'
            'exec sleep 600\n')
        run, port = self.start_agent(script)
        self.start(port, 0, [
            {"name": "Boom", "logPattern": "boom", "faultOnMatch": True},
            {"name": "Evil", "logPattern": "(a+)+$"},
            {"name": "Done", "logPattern": "done 0", "faultOnMatch": True},
        ])
        st = self.faulted(run, port, "LogFault_Done")
        self.assertEqual(st["message"], FAULT + "{'Done': 'done 0\\n'}")
        self.shutdown(run, port)


class LogMonitoringIPR(harness.ProcessTest):
    """--inprocess-restart in operator mode (ipr_probe.py workers): the
    rules are armed when /start releases the barrier; a hang trip leaves
    the group unhealthy, so the operator's /stop restarts the processes
    (a hung rank may never reach the barrier: the reference's
    _handle_failed_state, 10759738055); the next /start arms its own
    rules. /metrics counts the process restart and its latency."""
    survivor_timeout = 10.0

    def test_ipr_hang_then_process_restart_on_stop(self):
        from ipr_common import PROBE, probe_env, ready_pids, wait_records
        run = self.agent(["--rdzv-backend=hyperpod", "--nnodes=1",
                          "--nproc-per-node", str(NPROC),
                          "--inprocess-restart", "--inprocess-timeout", "60",
                          PROBE],
                         env=probe_env(self.tmp, IPR_DONE_AT="-1",
                                       HYPERPOD_RESOURCE_CONFIG_DIR=os.path.join(
                                           self.tmp, "rc")))
        port = int(run.wait_line(LISTEN_RE, timeout=T).group(1))
        op.wait_state(port, "ready", T)
        pids = set(ready_pids(run))
        # the probe prints one "ipr run" record per release and then
        # trains silently: the recurring rule misses its deadline
        op.start(port, 0, 1, 0, "127.0.0.1", harness.free_port(),
                 log_monitoring_configuration=[
                     {"name": "Run", "logPattern": r"ipr run \{",
                      "expectedRecurringFrequencyInSeconds": 1}])
        run.wait_line(r"RUNNING -> FAULTED reason=LogHang_Run ", timeout=T)
        st = op.wait_state(port, "faulted", T)
        self.assertTrue(st["message"].startswith(HANG + "{'Run': 'ipr run {"),
                        st)
        self.assertEqual(st["restartMode"], "in_process_restart")
        # the group is unhealthy: /stop starts new processes
        op.stop(port)
        run.wait_line(r"/stop \(restart_mode ipr; the group is unhealthy\)", T)
        # INIT lasts only until the new workers meet (tens of ms): wait
        # on the agent's own transition lines, not a /status poll
        run.wait_line(r"STOPPING -> INIT", T)
        run.wait_lines(r"INIT -> READY", 2, T)  # the first was at start
        op.wait_state(port, "ready", T)
        op.start(port, 0, 1, 1, "127.0.0.1", harness.free_port(),
                 log_monitoring_configuration=[
                     {"name": "Restarted", "faultOnMatch": True,
                      "logPattern": r'ipr run .*"restart": 1'}])
        run.wait_line(r"RUNNING -> FAULTED reason=LogFault_Restarted ",
                      timeout=T)
        wait_records(run, "run", 2 * NPROC, T)
        new = set(ready_pids(run)) - pids
        self.assertEqual(len(new), NPROC, "new worker processes")
        text = op.request(port, "GET", "/metrics").body
        self.assertIn('hyperpodrun_restarts_total{mode="in_process"} 0\n',
                      text)
        self.assertIn('hyperpodrun_restarts_total{mode="process"} 1\n', text)
        self.assertIn("hyperpodrun_restart_latency_seconds_count 1\n", text)
        self.assertIn('hyperpodrun_log_rule_trips_total{rule="Run",'
                      'state="hanging"} 1\n', text)
        self.assertIn('hyperpodrun_log_rule_trips_total{rule="Restarted",'
                      'state="faulted"} 1\n', text)
        op.shutdown(port)
        self.assertExit(run, 1)  # the last run faulted


if __name__ == "__main__":
    harness.main()
