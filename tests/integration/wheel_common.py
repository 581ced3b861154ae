"""Shared by the wheel tests (test_wheel.py, test_wheel_chroot.py):
building the wheel from a copy of the source tree, the way a user does,
with Debian's tools (python3-mesonpy, python3-pip / python3-build) and no
network, and reading what is inside it."""
import glob
import os
import re
import shutil
import subprocess
import zipfile

import harness

PY = harness.SYSTEM_PYTHON
TAG = "py3-none-manylinux_2_34_x86_64"


def copy_source(dst):
    """The files git tracks (or would: untracked but not ignored) copied to
    dst, so a build never writes into the checkout; falls back to the tree
    less build outputs when this is no git checkout."""
    src = harness.source_dir()
    try:
        out = subprocess.run(
            ["git", "-C", src, "ls-files", "-z", "--cached", "--others",
             "--exclude-standard"], check=True, capture_output=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = None
    if not names:
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
            "build*", ".git", "__pycache__", ".mesonpy*"))
        return dst
    for n in names:
        p = os.path.join(src, n)
        if not os.path.isfile(p):
            continue  # deleted in the work tree, or a submodule
        os.makedirs(os.path.dirname(os.path.join(dst, n)), exist_ok=True)
        shutil.copy2(p, os.path.join(dst, n))
    return dst


def have_build_tools():
    """None when Debian's wheel tools are there, else why not."""
    r = subprocess.run([PY, "-c", "import mesonpy, pip, build"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return f"{PY} lacks mesonpy/pip/build: {r.stderr.strip()[-200:]}"
    return None


def build_wheel(tmp, tool="pip"):
    """Builds the wheel from a copy of the source in tmp/src into
    tmp/dist; returns (the wheels built, the tool's output)."""
    src = copy_source(os.path.join(tmp, "src"))
    dist = os.path.join(tmp, "dist")
    if tool == "pip":
        argv = [PY, "-m", "pip", "wheel", ".", "--no-build-isolation",
                "--no-deps", "--no-index", "-w", dist]
    else:
        argv = [PY, "-m", "build", "--no-isolation", "--wheel", "-o",
                dist, "."]
    env = dict(os.environ)
    for k in ("PYTHONPATH", "_PYTHON_HOST_PLATFORM", "CFLAGS", "LDFLAGS",
              "ASAN_OPTIONS", "UBSAN_OPTIONS"):
        env.pop(k, None)
    r = subprocess.run(argv, cwd=src, env=env, capture_output=True,
                       text=True, timeout=600)
    out = r.stdout + r.stderr
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {r.returncode}:\n"
                             f"{out[-4000:]}")
    return sorted(glob.glob(os.path.join(dist, "*.whl"))), out


def names(whl):
    with zipfile.ZipFile(whl) as z:
        return z.namelist()


def extract(whl, dst):
    with zipfile.ZipFile(whl) as z:
        z.extractall(dst)
    return dst


def glibc_max(path):
    """The newest GLIBC_x.y that path's undefined symbols need."""
    out = subprocess.run(["objdump", "-T", path], check=True,
                         capture_output=True, text=True).stdout
    vers = [tuple(int(x) for x in m) for m in
            re.findall(r"\*UND\*.*\(GLIBC_(\d+)\.(\d+)", out)]
    return max(vers) if vers else (0, 0)


def dynamic(path, key):
    out = subprocess.run(["objdump", "-p", path], check=True,
                         capture_output=True, text=True).stdout
    return re.findall(r"^\s*%s\s+(\S+)" % key, out, re.M)
