#!/usr/bin/env bash
# The one test command (README's and CI's): configure BUILDDIR if it is not
# configured yet, then run every meson test in it. CI calls it on a fresh,
# sanitized build dir (.ci/run); a developer runs plain `./run-tests.sh`.
#
#   ./run-tests.sh [BUILDDIR [MESON-TEST-ARGS...]]
#
# BUILDDIR defaults to `build`. Extra arguments go to `meson test`
# (e.g. `./run-tests.sh build --suite unit`). HP_SANITIZE=1 configures a new
# BUILDDIR with ASan+UBSan and -Dwerror=true, as CI does; HP_TEST_JOBS sets the
# number of tests run at once (2, what CI has).
#
# First it installs what the suites need (deps/debian-packages, purposes
# build, test, torch, wheel and multihost; apt-get needs root, or sudo), so that no test skips
# for a missing package. The default run leaves out the suites `fresh` and
# `image` (a bare Debian root, a Docker engine: minutes each, and root);
# CI runs them by name: `./run-tests.sh BUILDDIR --suite fresh`.
set -euo pipefail

cd "$(dirname "$0")"
deps/install.sh build test torch wheel multihost
builddir=${1:-build}
[ $# -gt 0 ] && shift

if [ ! -f "$builddir/build.ninja" ]; then
	setup_args=()
	if [ "${HP_SANITIZE:-0}" = 1 ]; then
		# b_lundef=false: clang cannot link -Wl,--no-undefined with sanitizers.
		setup_args+=('-Db_sanitize=address,undefined' -Db_lundef=false -Dwerror=true)
	fi
	meson setup "$builddir" "${setup_args[@]}"
fi

exec meson test -C "$builddir" --print-errorlogs --num-processes "${HP_TEST_JOBS:-2}" "$@"
