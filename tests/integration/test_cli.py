"""Command-line behaviour of the real binary (issue 2 §2): --help documents
every flag and exits 0, --version prints the project version, a bad flag
or value exits 2 with a one-line reason and the usage, and a missing
training script fails with a message that names the path."""

import os

import harness


# Every flag issue 2 names; --help must document each one.
FLAGS = [
    "--nnodes", "--nproc-per-node", "--node-rank", "--master-addr", "--master-port",
    "--rdzv-backend", "--rdzv-endpoint", "--rdzv-id", "--rdzv-conf", "--standalone",
    "--max-restarts", "--monitor-interval", "--role", "--module", "--no-python",
    "--run-path", "--log-dir", "--redirects", "--tee", "--local-ranks-filter",
    "--local-addr", "--shutdown-signal", "--shutdown-timeout", "--server-host",
    "--server-port", "--server-log-level", "--server-shutdown-timeout",
    "--pre-train-script", "--pre-train-args", "--post-train-script",
    "--post-train-args", "--inprocess-restart", "--inprocess-timeout",
]


class Cli(harness.ProcessTest):
    def test_help_documents_every_flag(self):
        r = self.agent(["--help"], server=False)
        self.assertExit(r, 0, timeout=10)
        text = r.text()
        self.assertRegex(text, r"(?i)usage:")
        for flag in FLAGS:
            # Either spelling documents the flag.
            under = "--" + flag[2:].replace("-", "_")
            self.assertTrue(flag in text or under in text, f"--help does not mention {flag}")

    def test_short_help(self):
        r = self.agent(["-h"], server=False)
        self.assertExit(r, 0, timeout=10)
        self.assertRegex(r.text(), r"(?i)usage:")

    def test_version(self):
        r = self.agent(["--version"], server=False)
        self.assertExit(r, 0, timeout=10)
        version = harness.project_version()
        self.assertIsNotNone(version)
        self.assertIn(version, r.text())

    def _assert_usage_error(self, args):
        r = self.agent(args, server=False)
        self.assertExit(r, 2, timeout=10)
        err = r.output("err")
        self.assertTrue(any(l.lower().startswith("usage:") for l in err),
                        f"no usage line on stderr for {args}: {err}")
        # A one-line reason besides the usage.
        self.assertTrue(any("usage" not in l.lower() and l.strip() for l in err),
                        f"no reason on stderr for {args}: {err}")
        # Nothing ran: no worker output.
        self.assertEqual(r.matches(r"exit-with rank"), [])
        return r

    def test_unknown_flag_exits_2(self):
        r = self._assert_usage_error(["--no-such-flag", "--no-python",
                                      harness.helper("exit-with"), "0"])
        self.assertIn("--no-such-flag", r.text("err"))

    def test_bad_values_exit_2(self):
        ew = harness.helper("exit-with")
        for bad in (["--nproc-per-node", "abc"], ["--nnodes", "2:1"],
                    ["--max-restarts", "many"], ["--shutdown-signal", "SIGFOO"], ["--redirects", "7"],
                    ["--tee", "x"], ["--master-port", "notaport"]):
            with self.subTest(bad=bad):
                self._assert_usage_error(bad + ["--no-python", ew, "0"])

    def test_missing_script_exits_2(self):
        self._assert_usage_error(["--nproc-per-node", "1"])

    def test_missing_script_path_is_named(self):
        missing = os.path.join(self.tmp, "no", "such", "train_script")
        r = self.agent(["--nproc-per-node", "2", "--no-python", missing])
        rc = r.wait(30)
        self.assertNotEqual(rc, 0, f"missing script exited 0:\n{r.tail()}")
        self.assertIn(missing, r.text(), "the message does not name the missing path")

    def test_missing_python_script_is_named(self):
        missing = os.path.join(self.tmp, "no_such_train.py")
        r = self.agent(["--nproc-per-node", "1", missing])
        rc = r.wait(60)
        self.assertNotEqual(rc, 0, f"missing script exited 0:\n{r.tail()}")
        self.assertIn(missing, r.text())

    def test_exec_failure_reports_127(self):
        # The file exists and is executable, so no up-front check catches
        # it; execve fails (ENOENT for the interpreter). Issue 2 §3: the
        # child reports it over the CLOEXEC pipe and exits 127.
        script = os.path.join(self.tmp, "bad_interp")
        with open(script, "w") as f:
            f.write("#!/no/such/interpreter\n")
        os.chmod(script, 0o755)
        r = self.agent(["--nproc-per-node", "2", "--no-python", script])
        self.assertExit(r, 1, timeout=30)
        text = r.text()
        self.assertIn(script, text, "the exec failure does not name the script")
        self.assertRegex(text, r"exitcode\s*:\s*127\b")

if __name__ == "__main__":
    harness.main()
