#!/usr/bin/env python3
"""deps/debian-packages checked against the meson build and the scripts.

The package list is the only set-up: run-demo.sh, run-tests.sh, .ci/run and
docker/Dockerfile's build stage install from it. A dependency() added to a
meson file whose -dev package the list lacks broke a newcomer's
`./run-demo.sh` once while CI, with its own longer list, stayed green; this
test fails instead. Needs dpkg and pkg-config (Debian); exits 77 without.
"""
import os
import re
import shutil
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import test_docker as td  # noqa: E402  (meson/dpkg parsing shared with it)
import unittest_main  # noqa: E402

SRC = td.SRC
LIST = os.path.join(SRC, "deps", "debian-packages")
PURPOSES = {"build", "test", "torch", "image", "wheel", "bench", "fuzz", "multihost"}


def read_list():
    """[(package, {purposes}, why, line number)]."""
    rows = []
    with open(LIST) as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            words = line.split(None, 2)
            rows.append((words[0], set(words[1].split(",")) if len(words) > 1 else set(),
                         words[2].strip() if len(words) > 2 else "", n))
    return rows


def install_sh(*args):
    r = subprocess.run([os.path.join(SRC, "deps", "install.sh"), *args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return r.returncode, r.stdout.split(), r.stderr


class PackageListTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not shutil.which("dpkg-query") or not shutil.which("pkg-config"):
            raise unittest.SkipTest("no dpkg/pkg-config: these checks need Debian")
        cls.rows = read_list()
        cls.by_purpose = {p: {r[0] for r in cls.rows if p in r[1]} for p in PURPOSES}
        cls.owners = {}

    def test_format(self):
        seen = set()
        for pkg, purposes, why, n in self.rows:
            self.assertRegex(pkg, r"^[a-z0-9][a-z0-9.+-]+$", f"line {n}: bad package name")
            self.assertNotIn(pkg, seen, f"line {n}: {pkg} listed twice")
            seen.add(pkg)
            self.assertTrue(purposes and purposes <= PURPOSES,
                            f"line {n}: {pkg}: purposes {sorted(purposes)} not in {sorted(PURPOSES)}")
            self.assertTrue(why, f"line {n}: {pkg}: say why it is needed")

    def test_install_sh_lists_by_purpose(self):
        for purpose, pkgs in self.by_purpose.items():
            rc, out, err = install_sh("--list", purpose)
            self.assertEqual(rc, 0, err)
            self.assertEqual(set(out), pkgs, purpose)
        rc, out, _ = install_sh("--list", "build", "torch")
        self.assertEqual(set(out), self.by_purpose["build"] | self.by_purpose["torch"])
        rc, _, err = install_sh("--list", "biuld")
        self.assertEqual(rc, 2)
        self.assertIn("biuld", err)

    def test_every_meson_dependency_has_its_dev_package_in_build(self):
        checked = 0
        for name, call, path in td.meson_calls("dependency"):
            if name in td.MESON_INTERNAL_DEPS or not td.is_required(call):
                continue
            where = os.path.relpath(path, SRC)
            r = td.run(["pkg-config", "--variable=pcfiledir", name], check=False)
            self.assertEqual(r.returncode, 0, f"{where}: dependency('{name}') has no pkg-config "
                             "file here: cannot tell its package (install it, then list it)")
            pc = os.path.join(r.stdout.strip(), name + ".pc")
            pkg = td.owner_of(pc, self.owners)
            self.assertIsNotNone(pkg, f"{pc} belongs to no package")
            self.assertIn(pkg, self.by_purpose["build"],
                          f"{where}: dependency('{name}') comes from {pkg}: add `{pkg}  build  "
                          f"dependency('{name}')` to deps/debian-packages")
            checked += 1
        # meson.build's and tests/meson.build's, at least libuv and cmocka
        self.assertGreaterEqual(checked, 7, "dependency() calls not found in the meson files")

    def test_required_programs_come_from_build_or_the_base_system(self):
        dpkg = td.Dpkg()
        have = dpkg.closure(self.by_purpose["build"]) | dpkg.base_image()
        for name, call, path in td.meson_calls("find_program"):
            if not td.is_required(call) or os.path.exists(os.path.join(os.path.dirname(path), name)):
                continue
            prog = name if name.startswith("/") else shutil.which(
                name, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            if prog is None or not os.path.exists(prog):
                continue  # meson tries the next name
            pkg = td.owner_of(prog, self.owners)
            self.assertIsNotNone(pkg, f"find_program('{name}'): {prog} belongs to no package")
            self.assertIn(pkg, have, f"{os.path.relpath(path, SRC)}: find_program('{name}') is "
                          f"{prog} from {pkg}: list it with purpose build")
        # gcc without recommends brings no libc headers: the fresh-root failure
        for pkg in ("gcc", "libc6-dev", "meson", "ninja-build", "pkg-config"):
            self.assertIn(pkg, self.by_purpose["build"])

    def test_listed_packages_exist(self):
        r = td.run(["apt-cache", "policy", *[r[0] for r in self.rows]], check=False)
        if "Candidate:" not in r.stdout:
            self.skipTest("apt has no package lists here (apt-get update)")
        known = set(re.findall(r"^(\S+):\n\s+Installed: .*\n\s+Candidate: (?!\(none\))",
                               r.stdout, re.M))
        for pkg, _, _, n in self.rows:
            self.assertIn(pkg, known, f"line {n}: apt knows no installable package {pkg}")

    def test_scripts_install_from_the_list(self):
        def text(p):
            with open(os.path.join(SRC, p)) as f:
                return f.read()
        self.assertRegex(text("run-demo.sh"), r"\ndeps/install\.sh build\n")
        self.assertRegex(text("run-tests.sh"), r"\ndeps/install\.sh build test torch wheel multihost\n")
        ci = text(".ci/run")
        self.assertTrue("deps/install.sh" in ci, ".ci/run does not call deps/install.sh")
        for purpose in PURPOSES:
            self.assertRegex(ci, r"deps/install\.sh[^\n]*\b" + purpose + r"\b", purpose)
        self.assertIn("deps/install.sh build test", text("docker/Dockerfile"))
        for p in ("run-demo.sh", "run-tests.sh", ".ci/run"):
            self.assertNotIn("apt-get install", text(p), f"{p} installs outside the list")


if __name__ == "__main__":
    unittest_main.run()
