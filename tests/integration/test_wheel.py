"""The wheel (issue 11): `pip wheel . --no-build-isolation` from a copy of
the source gives one wheel, tagged manylinux_2_34_x86_64, that holds the
hyperpodrun binary (its libraries beside it, found through an $ORIGIN
RPATH, no GLIBC_ version above 2.34), hyperpod_worker and the
hyperpod_elastic_agent package; installed into a fresh
`python3 -m venv --system-site-packages`, the venv's hyperpodrun runs a
2-worker in-process-restart job whose workers import the installed
package; one version number everywhere; and the build fails when a
symbol needs a glibc above the floor (meson -Dwheel_glibc)."""
import os
import re
import subprocess
import sys
import tempfile

import harness
import hp_operator as op
import wheel_common as wc

HERE = os.path.dirname(os.path.abspath(__file__))
T = 120.0


class Wheel(harness.ProcessTest):
    survivor_timeout = 10.0

    @classmethod
    def setUpClass(cls):
        why = wc.have_build_tools()
        if why:
            raise harness.unittest.SkipTest(why)
        cls.ctmp = tempfile.mkdtemp(prefix="hp-wheel-")
        cls.wheels, cls.build_log = wc.build_wheel(cls.ctmp, "pip")
        cls.version = harness.project_version()
        cls.venv = os.path.join(cls.ctmp, "venv")
        subprocess.run([wc.PY, "-m", "venv", "--system-site-packages",
                        cls.venv], check=True, timeout=T)
        cls.vpy = os.path.join(cls.venv, "bin", "python")
        if len(cls.wheels) == 1:
            subprocess.run([cls.vpy, "-m", "pip", "install", "-q",
                            "--no-index", "--no-deps", cls.wheels[0]],
                           check=True, timeout=T)
        cls.bin = os.path.join(cls.venv, "bin", "hyperpodrun")

    @classmethod
    def tearDownClass(cls):
        import shutil
        shutil.rmtree(cls.ctmp, ignore_errors=True)

    def test_one_wheel_named_for_the_version_and_the_glibc_floor(self):
        self.assertEqual([os.path.basename(w) for w in self.wheels],
                         [f"hyperpodrun-{self.version}-{wc.TAG}.whl"],
                         self.build_log[-2000:])

    def test_contents(self):
        names = set(wc.names(self.wheels[0]))
        data = f"hyperpodrun-{self.version}.data"
        for n in ([f"{data}/scripts/hyperpodrun"] +
                  [f"{data}/data/lib/hyperpodrun/{lib}" for lib in
                   ("libuv.so.1", "libcjson.so.1", "libpcre2-8.so.0")] +
                  [f"{data}/purelib/{p}" for p in (
                      "hyperpod_worker.py",
                      "hyperpod_elastic_agent/__init__.py",
                      "hyperpod_elastic_agent/checkpoint_discovery.py",
                      "hyperpod_elastic_agent/elastic_event_handler.py",
                      "hyperpod_elastic_agent/ipc/__init__.py",
                      "hyperpod_elastic_agent/ipc/client.py",
                      "hyperpod_elastic_agent/ipc/common.py",
                      "hyperpod_elastic_agent/ipc/socket.py",
                      "hyperpod_elastic_agent/ipc/util.py")]):
            self.assertIn(n, names)
        self.assertFalse([n for n in names if "libevent" in n or
                          "libhyperpod" in n or n.endswith(".a")], names)
        x = wc.extract(self.wheels[0], os.path.join(self.tmp, "x"))
        with open(os.path.join(x, f"hyperpodrun-{self.version}.dist-info",
                               "WHEEL")) as f:
            self.assertIn(f"Tag: {wc.TAG}\n", f.read() + "\n")
        binary = os.path.join(x, data, "scripts", "hyperpodrun")
        self.assertEqual(wc.dynamic(binary, "RUNPATH") +
                         wc.dynamic(binary, "RPATH"),
                         ["$ORIGIN/../lib/hyperpodrun"])
        self.assertEqual(sorted(wc.dynamic(binary, "NEEDED")), sorted([
            "libuv.so.1", "libcjson.so.1", "libpcre2-8.so.0", "libc.so.6",
            "ld-linux-x86-64.so.2"]))
        libdir = os.path.join(x, data, "data", "lib", "hyperpodrun")
        for f in [binary] + [os.path.join(libdir, n)
                             for n in os.listdir(libdir)]:
            self.assertLessEqual(wc.glibc_max(f), (2, 34), f)

    def test_venv_binary_loads_the_bundled_libraries(self):
        out = subprocess.run(["ldd", self.bin], capture_output=True,
                             text=True, check=True).stdout
        libdir = os.path.realpath(os.path.join(self.venv, "lib",
                                               "hyperpodrun"))
        for lib in ("libuv.so.1", "libcjson.so.1", "libpcre2-8.so.0"):
            m = re.search(r"%s => (\S+)" % re.escape(lib), out)
            self.assertTrue(m, out)
            self.assertEqual(os.path.dirname(os.path.realpath(m.group(1))),
                             libdir, out)
        self.assertNotIn("libevent", out)

    def test_one_version_number(self):
        r = subprocess.run([self.bin, "--version"], capture_output=True,
                           text=True, timeout=T)
        # "hyperpodrun 0.1.0", perhaps followed by the agent_version it
        # reports to the operator
        self.assertRegex(r.stdout, r"^hyperpodrun %s(\s|$)"
                         % re.escape(self.version))
        r = subprocess.run([self.vpy, "-c", "import importlib.metadata as m,"
                            " hyperpod_elastic_agent as h; print(m.version("
                            "'hyperpodrun'), h.__version__)"],
                           capture_output=True, text=True, timeout=T,
                           cwd=self.tmp)
        self.assertEqual(r.stdout.split(), [self.version] * 2, r.stderr)
        # and /status agent_version from the venv's agent
        a = self.run_cmd([self.bin, "--server-host", "127.0.0.1",
                          "--server-port", "0", "--rdzv-backend=hyperpod",
                          "--nnodes=1", "--nproc-per-node", "1",
                          harness.helper("print-env")],
                         env=harness.base_env(HYPERPOD_RESOURCE_CONFIG_DIR=
                                              os.path.join(self.tmp, "rc")),
                         label="venv-agent")
        port = int(a.wait_line(r"operator API listening on "
                               r"http://127\.0\.0\.1:(\d+)$", T).group(1))
        st = op.wait_state(port, "ready", T)
        # ours, or a 1.1.x the operator accepts carrying ours
        # ("1.1.0+hyperpodrun.0.1.0")
        self.assertRegex(st.get("agent_version", ""),
                         r"(^|\D)%s$" % re.escape(self.version))
        op.shutdown(port)
        self.assertExit(a, 0, T)

    def test_venv_job_with_workers_on_the_installed_package(self):
        import test_compat_agent as ca
        r = self.run_cmd([self.bin, "--server-host", "127.0.0.1",
                          "--server-port", "0", "--nproc-per-node", "2",
                          "--inprocess-restart",
                          os.path.join(HERE, "compat_worker.py")],
                         env=harness.base_env(
                             PYTHON_EXEC=self.vpy, TMPDIR=self.tmp,
                             COMPAT_FAULT="IN_PROCESS_RESTART:0:0"),
                         label="venv-hyperpodrun")
        self.assertExit(r, 0, T)
        site = subprocess.run([self.vpy, "-c", "import sysconfig; print("
                               "sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True,
                              check=True).stdout.strip()
        con = ca.records(r, "connected")
        self.assertEqual(len(con), 2, r.tail(40))
        for c in con:
            self.assertEqual(os.path.realpath(c["module"]), os.path.realpath(
                os.path.join(site, "hyperpod_elastic_agent")))
            self.assertEqual(c["version"], self.version)
        self.assertEqual(sorted((x["local_rank"], x["seq"])
                                for x in ca.records(r, "run")),
                         [(0, 0), (0, 1), (1, 0), (1, 1)], r.tail(40))

    def test_a_symbol_above_the_floor_fails_the_build(self):
        # -Dwheel_glibc=2.30: the binary needs GLIBC_2.34 (and libuv 2.33)
        src = os.path.join(self.ctmp, "src")
        b = os.path.join(self.tmp, "b")
        subprocess.run(["meson", "setup", b, src, "-Dwheel=true",
                        "-Dwheel_glibc=2.30"], check=True,
                       capture_output=True, timeout=T)
        r = subprocess.run(["ninja", "-C", b], capture_output=True,
                           text=True, timeout=600)
        self.assertNotEqual(r.returncode, 0, r.stdout[-2000:])
        self.assertRegex(r.stdout + r.stderr,
                         r"hyperpodrun needs GLIBC_2\.34 \(.*\), newer than "
                         r"the wheel's floor 2\.30")


if __name__ == "__main__":
    harness.main()
