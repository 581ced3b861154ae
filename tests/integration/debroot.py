"""debroot.py — a bare Debian 12 root, as a newcomer's machine starts.

What it owns: `debootstrap --variant=minbase bookworm` from the mirror this
machine's apt is configured with (/etc/apt/sources.list*), kept as a
tarball under /var/tmp keyed by the date (a rerun the same day unpacks in
seconds instead of bootstrapping for minutes; older days' tarballs are
removed), and unpacking it into a directory of the caller's. Used by the
`fresh` suite (the README's commands in a chroot) and the `image` suite
(`docker import` as debian:bookworm and debian:bookworm-slim: no registry
is reachable). Needs root and debootstrap; stdlib only.
"""

import datetime
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

CACHE_DIR = os.environ.get("HP_DEBROOT_CACHE", "/var/tmp/hyperpodrun-debroot")
SUITE = "bookworm"


def available():
    """None when a root can be made here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "not root: debootstrap and chroot need root"
    if not shutil.which("debootstrap"):
        return "no debootstrap (deps/install.sh image)"
    return None


def mirror():
    """The first Debian mirror apt here uses for bookworm's main component.

    Reads one-line (`deb URI SUITE COMPONENTS`) and deb822 (`URIs:`,
    `Suites:`, `Components:`) sources; falls back to deb.debian.org."""
    files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*"))
    for path in files:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    k, _, v = line.partition(":")
                    fields[k.strip().lower()] = v.split()
                if ("deb" in fields.get("types", []) and SUITE in fields.get("suites", [])
                        and "main" in fields.get("components", [])):
                    for uri in fields.get("uris", []):
                        if uri.startswith(("http://", "https://")):
                            return uri
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if (len(words) >= 4 and words[0] == "deb" and words[2] == SUITE
                        and "main" in words[3:] and words[1].startswith(("http://", "https://"))):
                    return words[1]
    return "http://deb.debian.org/debian"


def tarball(log=sys.stderr):
    """Path of today's minbase tarball, bootstrapping it when missing."""
    os.makedirs(CACHE_DIR, exist_ok=True)
    day = datetime.date.today().strftime("%Y%m%d")
    path = os.path.join(CACHE_DIR, f"{SUITE}-minbase-{day}.tar")
    if os.path.exists(path):
        return path
    for old in glob.glob(os.path.join(CACHE_DIR, f"{SUITE}-minbase-*.tar")):
        os.unlink(old)
    work = tempfile.mkdtemp(prefix="debootstrap-", dir=CACHE_DIR)
    try:
        root = os.path.join(work, "root")
        url = mirror()
        print(f"debroot: debootstrap --variant=minbase {SUITE} from {url}", file=log, flush=True)
        r = subprocess.run(["debootstrap", "--variant=minbase", SUITE, root, url],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({r.returncode}):\n{r.stdout[-4000:]}")
        # apt's downloaded .debs are not part of a fresh machine
        for deb in glob.glob(os.path.join(root, "var/cache/apt/archives/*.deb")):
            os.unlink(deb)
        tmp = path + ".part"
        subprocess.run(["tar", "-C", root, "--numeric-owner", "-cf", tmp, "."], check=True)
        os.rename(tmp, path)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", work])
    return path


def unpack(dest, log=sys.stderr):
    """Unpacks today's root into dest (created; must be empty)."""
    src = tarball(log)
    os.makedirs(dest, exist_ok=True)
    subprocess.run(["tar", "-C", dest, "--numeric-owner", "-xpf", src], check=True)
    return dest


if __name__ == "__main__":
    # `debroot.py` prints the tarball's path (making it if needed): lets CI
    # or a developer warm the cache.
    why = available()
    if why:
        print(f"debroot: {why}", file=sys.stderr)
        sys.exit(77)
    print(tarball())
