#!/usr/bin/env python3
"""docker/ checked against the build, without a Docker engine.

What the image build would find out late, this finds out at `meson test`:
a library the binary links that the runtime stage does not install, a
runtime package nothing uses, a meson dependency() whose -dev package the
build stage lacks, a shell-form ENTRYPOINT (sh as PID 1 swallows SIGTERM),
and example files that disagree with each other or with `hyperpodrun --help`.
Needs dpkg (Debian); exits 77 where there is none. Stdlib only; PyYAML is
used when present.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import unittest

import unittest_main

SRC = os.environ.get("HP_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("HP_BUILD_DIR", "")
BIN = os.environ.get("HYPERPODRUN", "")
DOCKER = os.path.join(SRC, "docker")

# Libraries every image has, and sanitizer runtimes that only CI builds link.
C_RUNTIME_PKGS = {"libc6"}
SANITIZER_PKG = re.compile(r"^lib(asan|ubsan|lsan|tsan|hwasan)\d+$")
# dependency() names meson resolves itself, not through a Debian package.
MESON_INTERNAL_DEPS = {"threads", "dl", "openmp", "mpi"}


def run(argv, check=True):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, check=check)


# --- Dockerfile parsing -----------------------------------------------------

def dockerfile_stages(path):
    """[(stage name, [(INSTRUCTION, argument text)])] in file order.

    Continuation lines are joined and comment lines dropped, as Docker does;
    ${ARG} references take the ARG defaults declared before the first FROM."""
    with open(path) as f:
        lines = f.read().splitlines()
    logical, cur = [], ""
    for line in lines:
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        cur += line
        if cur.strip():
            logical.append(cur.strip())
        cur = ""
    if cur.strip():
        logical.append(cur.strip())

    args, stages = {}, []
    for text in logical:
        instr, _, rest = text.partition(" ")
        instr = instr.upper()
        rest = rest.strip()
        if instr == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
            continue
        rest = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), rest)
        if instr == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?$", rest, re.IGNORECASE)
            stages.append((m.group(2) or m.group(1), [("FROM", m.group(1))]))
        else:
            stages[-1][1].append((instr, rest))
    return stages


def stage(stages, name):
    for n, instrs in stages:
        if n == name:
            return instrs
    raise AssertionError(f"no stage named {name!r} (stages: {[n for n, _ in stages]})")


def apt_installs(instrs):
    """Package names after every `apt-get install` in the stage's RUN lines."""
    pkgs = []
    for instr, text in instrs:
        if instr != "RUN":
            continue
        words = shlex.split(text)
        for i, w in enumerate(words):
            if w == "install" and i > 0 and words[i - 1] in ("apt-get", "apt"):
                for w2 in words[i + 1:]:
                    if w2 in ("&&", "||", ";", "|") or w2.endswith(";"):
                        break
                    if not w2.startswith("-"):
                        pkgs.append(w2)
    return pkgs


def list_installs(instrs):
    """Packages a stage installs through `deps/install.sh PURPOSE...` (the
    one package list, deps/debian-packages)."""
    pkgs = []
    for instr, text in instrs:
        m = re.search(r"deps/install\.sh((?: [a-z]+)+)", text) if instr == "RUN" else None
        if m:
            out = run([os.path.join(SRC, "deps", "install.sh"), "--list", *m.group(1).split()])
            pkgs += out.stdout.split()
    return pkgs


def exec_form(text):
    """The argv of an exec-form (JSON) ENTRYPOINT/CMD. The shell form would
    make /bin/sh PID 1, which neither forwards SIGTERM nor reaps."""
    try:
        argv = json.loads(text)
    except ValueError:
        argv = None
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise AssertionError(f"{text!r} is not exec form: write [\"hyperpodrun\", ...]")
    return argv


def run_text(instrs):
    return "\n".join(t for i, t in instrs if i == "RUN")


# --- dpkg -------------------------------------------------------------------

def dpkg_owners(paths):
    """{path: package} for the paths dpkg knows (others are left out)."""
    out = run(["dpkg-query", "-S", *paths], check=False).stdout
    owners = {}
    for line in out.splitlines():
        pkgs, sep, path = line.partition(": ")
        if not sep or pkgs.startswith("diversion by"):
            continue
        owners[path.strip()] = pkgs.split(",")[0].strip().split(":")[0]
    return owners


def owner_of(path, owners_cache):
    """The package that ships `path`, trying the merged-/usr twin and the
    resolved symlink (ldd may print /lib/... for a file dpkg lists under
    /usr/lib/..., and the reverse)."""
    cands = [path, os.path.realpath(path)]
    for p in list(cands):
        cands.append(p[4:] if p.startswith("/usr/") else "/usr" + p)
    for c in cands:
        if c in owners_cache:
            return owners_cache[c]
    found = dpkg_owners(cands)
    owners_cache.update(found)
    for c in cands:
        if c in found:
            return found[c]
    return None


class Dpkg:
    """Installed packages and their Depends/Pre-Depends graph."""

    def __init__(self):
        fmt = "${Package}\t${Priority}\t${Essential}\t${Depends}, ${Pre-Depends}\t${Provides}\t${db:Status-Abbrev}\n"
        out = run(["dpkg-query", "-W", "-f", fmt]).stdout
        self.deps, self.providers, self.required = {}, {}, set()
        for line in out.splitlines():
            name, prio, essential, deps, provides, status = line.split("\t")
            if not status.startswith("ii"):
                continue
            self.deps[name] = deps
            if prio == "required" or essential == "yes":
                self.required.add(name)
            for p in provides.split(","):
                p = p.strip().split(" ")[0]
                if p:
                    self.providers.setdefault(p, set()).add(name)

    def closure(self, roots):
        """Installed packages reachable from roots by dependencies (every
        installed alternative of an `a | b` counts)."""
        seen, todo = set(), [r for r in roots if r in self.deps]
        while todo:
            p = todo.pop()
            if p in seen:
                continue
            seen.add(p)
            for alt in re.split(r"[,|]", self.deps.get(p, "")):
                n = alt.strip().split(" ")[0].split(":")[0]
                if not n:
                    continue
                for m in ({n} if n in self.deps else set()) | self.providers.get(n, set()):
                    if m not in seen:
                        todo.append(m)
        return seen

    def base_image(self):
        """What a bookworm(-slim) image holds before any apt-get install:
        the Essential and Priority: required packages and their dependencies."""
        return self.closure(self.required)


# --- ELF --------------------------------------------------------------------

def ldd(path):
    """{soname: resolved path} of everything the dynamic loader would load."""
    out = run(["ldd", path]).stdout
    libs = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\S+)\s+=>\s+(\S+)\s+\(", line)
        if m:
            if m.group(2) == "not":
                raise AssertionError(f"{path}: {m.group(1)} not found")
            libs[m.group(1)] = m.group(2)
        else:
            m = re.match(r"\s*(/\S+)\s+\(", line)  # the loader itself
            if m:
                libs[os.path.basename(m.group(1))] = m.group(1)
    return libs


def needed(path):
    """The DT_NEEDED sonames: what the binary names itself."""
    out = run(["readelf", "-d", path]).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def shipped_elves():
    """hyperpodrun and, when built, libhyperpod's shared library."""
    elves = [BIN]
    if BUILD and os.path.isdir(BUILD):
        for root, _, files in os.walk(BUILD):
            for f in files:
                p = os.path.join(root, f)
                if re.match(r"libhyperpod\.so(\.\d+)*$", f) and not os.path.islink(p):
                    elves.append(p)
    return elves


# --- meson.build parsing ----------------------------------------------------

def meson_files():
    for root, dirs, files in os.walk(SRC):
        dirs[:] = [d for d in dirs if not d.startswith((".", "build", "subprojects"))]
        if "meson.build" in files:
            yield os.path.join(root, "meson.build")


def meson_calls(func):
    """(first string argument, whole call text, file) for each func('...', ...)
    call; the text runs to the matching parenthesis."""
    for path in meson_files():
        with open(path) as f:
            text = re.sub(r"#[^\n]*", "", f.read())
        for m in re.finditer(r"(?<![\w.])" + func + r"\(\s*'([^']+)'", text):
            depth, i = 0, m.start() + len(func)
            while i < len(text):
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                if depth == 0:
                    break
                i += 1
            yield m.group(1), text[m.start():i + 1], path


def is_required(call):
    """A call without `required:` or with `required: true`."""
    m = re.search(r"required\s*:\s*([^,)\s]+)", call)
    return m is None or m.group(1) == "true"


# --- the tests --------------------------------------------------------------

class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not shutil.which("dpkg-query"):
            raise unittest.SkipTest("no dpkg: these checks need Debian")
        if not BIN or not os.path.exists(BIN):
            raise AssertionError("HYPERPODRUN does not name the built binary")
        cls.stages = dockerfile_stages(os.path.join(DOCKER, "Dockerfile"))
        cls.build = stage(cls.stages, "build")
        cls.runtime = stage(cls.stages, "runtime")
        cls.runtime_pkgs = apt_installs(cls.runtime)
        cls.build_pkgs = apt_installs(cls.build) + list_installs(cls.build)
        cls.dpkg = Dpkg()
        cls.base = cls.dpkg.base_image()
        cls.owners = {}

    def lib_packages(self, libs):
        """{soname: package}, failing on a library no package ships."""
        pkgs = {}
        for soname, path in libs.items():
            if soname.startswith("linux-vdso") or soname.startswith("linux-gate"):
                continue
            pkg = owner_of(path, self.owners)
            self.assertIsNotNone(pkg, f"{soname} ({path}) belongs to no Debian package")
            pkgs[soname] = pkg
        return pkgs

    def test_runtime_is_final_stage_of_slim(self):
        self.assertEqual(self.stages[-1][0], "runtime",
                         "the runtime stage must be the last (the image docker build tags)")
        base = self.runtime[0][1]
        self.assertRegex(base, r"^debian:bookworm-slim$")
        self.assertRegex(self.build[0][1], r"^debian:bookworm$")

    def test_every_linked_library_is_installed_by_runtime_stage(self):
        installed = self.dpkg.closure(self.runtime_pkgs) | self.base
        for elf in shipped_elves():
            for soname, pkg in self.lib_packages(ldd(elf)).items():
                if SANITIZER_PKG.match(pkg):
                    continue  # CI's -Db_sanitize build; the image's is not
                self.assertTrue(pkg in installed,
                                f"{os.path.basename(elf)} loads {soname} from package {pkg}, "
                                "which docker/Dockerfile's runtime stage does not install")

    def test_directly_linked_libraries_are_listed_by_name(self):
        # A library the binary names itself must not arrive only as some other
        # package's dependency: that can change under us.
        for elf in shipped_elves():
            resolved = ldd(elf)
            direct = {s: resolved[s] for s in needed(elf) if s in resolved}
            for soname, pkg in self.lib_packages(direct).items():
                if pkg in C_RUNTIME_PKGS or SANITIZER_PKG.match(pkg):
                    continue
                self.assertIn(pkg, self.runtime_pkgs,
                              f"{os.path.basename(elf)} links {soname} ({pkg}): add `{pkg}` "
                              "to the runtime stage's apt-get install in docker/Dockerfile")

    def test_runtime_stage_installs_nothing_unused(self):
        # Used: loaded by the binaries, or the library of a dependency() the
        # top-level meson.build declares (the linker's --as-needed drops one
        # whose code is not called yet; it stays in the image's contract).
        used = set()
        for elf in shipped_elves():
            used |= set(self.lib_packages(ldd(elf)).values())
        declared = set()
        for name, call, path in meson_calls("dependency"):
            if os.path.dirname(path) == SRC and name not in MESON_INTERNAL_DEPS:
                declared |= self.library_packages_of(name)
        for pkg in self.runtime_pkgs:
            self.assertTrue(pkg in used | declared,
                            f"runtime stage installs {pkg}, but hyperpodrun and libhyperpod load no "
                            "library of it and meson.build declares no dependency() on one (the "
                            "runtime image holds only their runtime libraries)")

    def library_packages_of(self, name):
        """The packages of the shared libraries pkg-config's -l flags name."""
        r_dir = run(["pkg-config", "--variable=libdir", name], check=False)
        r_libs = run(["pkg-config", "--libs-only-l", name], check=False)
        if r_dir.returncode or r_libs.returncode:
            return set()
        pkgs = set()
        for flag in r_libs.stdout.split():
            so = os.path.join(r_dir.stdout.strip(), "lib" + flag[2:] + ".so")
            if flag.startswith("-l") and os.path.exists(so):
                pkg = owner_of(os.path.realpath(so), self.owners)
                if pkg:
                    pkgs.add(pkg)
        return pkgs

    def test_every_meson_dependency_has_its_dev_package_in_build_stage(self):
        checked = 0
        for name, call, path in meson_calls("dependency"):
            if name in MESON_INTERNAL_DEPS or not is_required(call):
                continue
            r = run(["pkg-config", "--variable=pcfiledir", name], check=False)
            self.assertEqual(r.returncode, 0,
                             f"{os.path.relpath(path, SRC)}: dependency('{name}') has no pkg-config file "
                             "here; cannot tell which -dev package the Dockerfile needs")
            pc = os.path.join(r.stdout.strip(), name + ".pc")
            pkg = owner_of(pc, self.owners)
            self.assertIsNotNone(pkg, f"{pc} belongs to no package")
            self.assertIn(pkg, self.build_pkgs,
                          f"{os.path.relpath(path, SRC)}: dependency('{name}') comes from {pkg}; "
                          "add it to the build stage's apt-get install in docker/Dockerfile")
            checked += 1
        self.assertGreater(checked, 0, "no dependency() found in the meson files")

    def test_required_programs_of_the_build_are_in_build_stage(self):
        # The build stage runs `meson test`: the programs meson.build requires
        # must be there, from a listed package or from the base image.
        installed = self.dpkg.closure(self.build_pkgs) | self.base
        for name, call, path in meson_calls("find_program"):
            if not is_required(call):
                continue
            here = os.path.dirname(path)
            if os.path.exists(os.path.join(here, name)):
                continue  # a script in the tree
            prog = name if name.startswith("/") else shutil.which(
                name, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            if prog is None or not os.path.exists(prog):
                continue  # meson falls back to the next name given
            pkg = owner_of(prog, self.owners)
            self.assertIsNotNone(pkg, f"find_program('{name}'): {prog} belongs to no package")
            self.assertTrue(pkg in installed,
                            f"{os.path.relpath(path, SRC)}: find_program('{name}') is {prog} "
                            f"from {pkg}, which the build stage does not install")
        for tool in ("gcc", "libc6-dev", "meson", "ninja-build", "pkg-config"):
            self.assertIn(tool, self.build_pkgs)

    def test_build_stage_builds_tests_and_installs(self):
        text = run_text(self.build)
        self.assertRegex(text, r"meson setup (\S+)")
        builddir = re.search(r"meson setup (\S+)", text).group(1)
        self.assertRegex(text, r"meson compile -C " + re.escape(builddir))
        test = re.search(r"meson test -C " + re.escape(builddir) + r"[^\n&;]*", text)
        self.assertIsNotNone(test, "the build stage must run meson test on its build dir")
        for suite in ("unit", "process"):
            self.assertIn(f"--suite {suite}", test.group(0))
        self.assertRegex(text, r"meson install -C " + re.escape(builddir) + r" --destdir \S+")
        copies = [t for i, t in self.runtime if i == "COPY" and "--from=build" in t]
        self.assertTrue(copies, "the runtime stage must copy the installed tree from the build stage")

    def test_entrypoint_is_exec_form_hyperpodrun(self):
        entry = [t for i, t in self.runtime if i == "ENTRYPOINT"]
        self.assertEqual(len(entry), 1)
        self.assertEqual(exec_form(entry[0])[0], "hyperpodrun")
        stop = [t for i, t in self.runtime if i == "STOPSIGNAL"]
        self.assertEqual(stop, ["SIGTERM"])
        self.assertIn("8080", [t for i, t in self.runtime if i == "EXPOSE"])

    def test_training_example_matches_runtime_stage(self):
        stages = dockerfile_stages(os.path.join(DOCKER, "Dockerfile.training-example"))
        final = stages[-1][1]
        self.assertEqual(sorted(apt_installs(final)), sorted(self.runtime_pkgs),
                         "Dockerfile.training-example must install the runtime stage's libraries")
        self.assertTrue(any(i == "COPY" and "hyperpodrun" in t for i, t in final))
        exec_form([t for i, t in final if i == "ENTRYPOINT"][0])


class BuildContextTest(unittest.TestCase):
    """What makes a build work offline and with either builder."""

    def test_no_syntax_directive(self):
        # `# syntax=docker/dockerfile:1` makes BuildKit pull a frontend
        # image from a registry before it reads anything else.
        for name in ("Dockerfile", "Dockerfile.training-example"):
            with open(os.path.join(DOCKER, name)) as f:
                for n, line in enumerate(f, 1):
                    self.assertNotRegex(line, r"^#\s*syntax\s*=", f"docker/{name}:{n}")

    def test_root_dockerignore_is_the_only_one(self):
        # The legacy builder reads only <context>/.dockerignore; a
        # docker/Dockerfile.dockerignore would make BuildKit's context differ.
        self.assertEqual([f for f in os.listdir(DOCKER) if f.endswith(".dockerignore")], [])
        with open(os.path.join(SRC, ".dockerignore")) as f:
            rules = [l.strip() for l in f if l.strip() and not l.startswith("#")]
        for rule in (".git", "build*"):
            self.assertIn(rule, rules)


def help_text():
    r = run([BIN, "--help"], check=False)
    return r.stdout + r.stderr if r.returncode == 0 else None


def flag_names(argv):
    return [a.split("=")[0] for a in argv if a.startswith("--")]


class ExamplesTest(unittest.TestCase):
    def entrypoint_argv(self):
        with open(os.path.join(DOCKER, "entrypoint.sh")) as f:
            text = f.read()
        m = re.search(r"^exec (hyperpodrun\b.*?)\"\$@\"", text, re.M | re.S)
        self.assertIsNotNone(m, "entrypoint.sh must end in `exec hyperpodrun ... \"$@\"`")
        return shlex.split(m.group(1).replace("\\\n", " "))

    def test_entrypoint_execs_hyperpodrun_with_hyperpod_flags(self):
        argv = self.entrypoint_argv()
        flags = flag_names(argv)
        for f in ("--server-port", "--shutdown-signal", "--shutdown-timeout",
                  "--rdzv-backend"):
            self.assertIn(f, flags)
        # In-process restart only when asked: a plain script never reaches
        # the barrier and would be restarted every --inprocess-timeout.
        self.assertNotIn("--inprocess-restart", flags)
        with open(os.path.join(DOCKER, "entrypoint.sh")) as f:
            self.assertRegex(f.read(), r'if \[ "\$\{HP_INPROCESS_RESTART:-0\}" = 1 \]; then\n'
                             r'\s+ipr="--inprocess-restart ')
        self.assertEqual(argv[argv.index("--shutdown-signal") + 1], "SIGTERM")
        self.assertTrue(os.access(os.path.join(DOCKER, "entrypoint.sh"), os.X_OK))

    def test_example_flags_are_hyperpodrun_flags(self):
        text = help_text()
        if text is None:
            self.skipTest("hyperpodrun --help does not work yet")
        flags = set(flag_names(self.entrypoint_argv()))
        job = load_job()
        if job is not None:
            container = job["spec"]["replicaSpecs"][0]["template"]["spec"]["containers"][0]
            args = container["args"]
            script = next(i for i, a in enumerate(args) if not a.startswith("--"))
            flags |= set(flag_names(args[:script]))
        for f in sorted(flags):
            self.assertRegex(text, re.escape(f) + r"\b", f"{f} is not in hyperpodrun --help")

    def test_job_yaml(self):
        job = load_job()
        if job is None:
            self.skipTest("no PyYAML")
        self.assertEqual(job["apiVersion"], "sagemaker.amazonaws.com/v1")
        self.assertEqual(job["kind"], "HyperPodPyTorchJob")
        replica = job["spec"]["replicaSpecs"][0]
        pod = replica["template"]["spec"]
        container = pod["containers"][0]
        self.assertEqual(container["command"], ["hyperpodrun"])
        args = dict(a.split("=", 1) for a in container["args"] if a.startswith("--") and "=" in a)
        # The operator gives the agent only rank and master address: the
        # counts on the command line must match what it schedules.
        self.assertEqual(args["--nproc-per-node"], str(job["spec"]["nprocPerNode"]))
        self.assertEqual(args["--nnodes"], str(replica["replicas"]))
        self.assertIn(int(args["--server-port"]),
                      [p["containerPort"] for p in container["ports"]])
        self.assertGreater(pod["terminationGracePeriodSeconds"], int(args["--shutdown-timeout"]))
        for rule in job["spec"]["runPolicy"]["logMonitoringConfiguration"]:
            re.compile(rule["logPattern"])


def load_job():
    try:
        import yaml
    except ImportError:
        return None
    with open(os.path.join(DOCKER, "hyperpod-pytorch-job.yaml")) as f:
        return yaml.safe_load(f)


if __name__ == "__main__":
    unittest_main.run()
