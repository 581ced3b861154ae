#!/usr/bin/env python3
"""bundle.py: the shared libraries the wheel carries beside hyperpodrun,
and the glibc floor its tag promises.

    bundle.py --objdump OBJDUMP --glibc 2.34 --outdir DIR
              [--libdir D ...] BINARY SONAME...

Copies each SONAME (resolved in the --libdir directories, then the usual
multiarch ones; symlinks followed) into DIR, then fails (exit 1, naming
the culprit) when:
  * BINARY needs a library that is neither glibc's nor in SONAME...;
  * a bundled library needs one that is neither;
  * BINARY or a bundled library needs a GLIBC_x.y symbol version newer
    than --glibc (the wheel would not start on that glibc).
Run by meson at build time (-Dwheel=true), so a too-new symbol fails the
build rather than a user's container. Standard library and objdump only."""
import argparse
import os
import re
import shutil
import subprocess
import sys

# glibc's own libraries: every manylinux system has them.
GLIBC_LIBS = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2",
              "librt.so.1", "libutil.so.1", "ld-linux-x86-64.so.2",
              "ld-linux-aarch64.so.1", "libresolv.so.2"}
DEFAULT_DIRS = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
                "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                "/usr/lib64", "/lib64", "/usr/lib", "/lib"]


def objdump(tool, flag, path):
    return subprocess.run([tool, flag, path], check=True,
                          capture_output=True, text=True).stdout


def needed(tool, path):
    return re.findall(r"^\s*NEEDED\s+(\S+)", objdump(tool, "-p", path),
                      re.M)


def glibc_versions(tool, path):
    """{(major, minor): [symbol, ...]} of the GLIBC_ versions path needs
    (undefined dynamic symbols; its own definitions do not count)."""
    out = {}
    for line in objdump(tool, "-T", path).splitlines():
        m = re.search(r"\*UND\*.*\(GLIBC_(\d+)\.(\d+)(?:\.\d+)?\)\s+(\S+)",
                      line)
        if m:
            out.setdefault((int(m.group(1)), int(m.group(2))),
                           []).append(m.group(3))
    return out


def find(soname, dirs):
    for d in dirs:
        p = os.path.join(d, soname)
        if os.path.exists(p):
            return os.path.realpath(p)
    return None


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--objdump", default="objdump")
    ap.add_argument("--glibc", required=True)
    ap.add_argument("--outdir", required=True)
    ap.add_argument("--libdir", action="append", default=[])
    ap.add_argument("binary")
    ap.add_argument("sonames", nargs="+")
    a = ap.parse_args(argv)
    floor = tuple(int(x) for x in a.glibc.split("."))
    bundle = set(a.sonames)
    errors = []

    for lib in needed(a.objdump, a.binary):
        if lib not in GLIBC_LIBS and lib not in bundle:
            errors.append(f"{a.binary} needs {lib}, which the wheel does "
                          f"not bundle (meson.build: wheel_libs)")
    checked = [a.binary]
    os.makedirs(a.outdir, exist_ok=True)
    for soname in a.sonames:
        src = find(soname, a.libdir + DEFAULT_DIRS)
        if src is None:
            errors.append(f"{soname} not found in {a.libdir + DEFAULT_DIRS}")
            continue
        dst = os.path.join(a.outdir, soname)
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o755)
        checked.append(dst)
        for lib in needed(a.objdump, dst):
            if lib not in GLIBC_LIBS and lib not in bundle:
                errors.append(f"{soname} needs {lib}, which the wheel "
                              f"does not bundle")
    for path in checked:
        for ver, syms in sorted(glibc_versions(a.objdump, path).items()):
            if ver > floor:
                errors.append(
                    f"{os.path.basename(path)} needs GLIBC_{ver[0]}.{ver[1]}"
                    f" ({', '.join(sorted(set(syms)))}), newer than the "
                    f"wheel's floor {a.glibc} (manylinux_"
                    f"{floor[0]}_{floor[1]})")
    for e in errors:
        print(f"bundle.py: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
