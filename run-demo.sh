#!/usr/bin/env bash
# Installs the Debian packages hyperpodrun needs (when missing), builds it,
# and runs a local 2-worker job in which rank 1 fails once: watch the agent
# stop the group, restart it (TORCHELASTIC_RESTART_COUNT 0 -> 1) and finish.
set -euo pipefail
cd "$(dirname "$0")"

# deps/debian-packages, purpose "build" (apt-get needs root: run as root or
# with sudo; nothing is installed when everything is there already).
deps/install.sh build

[ -f build/build.ninja ] || meson setup build
meson compile -C build hyperpodrun

echo "== hyperpodrun --nnodes=1 --nproc-per-node=2 --max-restarts=1 --tee=3 examples/demo_train.py"
set -x
PYTHON=${PYTHON:-python3} ./build/hyperpodrun --nnodes=1 --nproc-per-node=2 \
	--max-restarts=1 --tee=3 --server-host=127.0.0.1 --server-port=0 \
	examples/demo_train.py
