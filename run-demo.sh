#!/usr/bin/env bash
# Installs the Debian packages hyperpodrun needs (when missing), builds it,
# and runs a local 2-worker job in which rank 1 fails once: watch the agent
# stop the group, restart it (TORCHELASTIC_RESTART_COUNT 0 -> 1) and finish.
set -euo pipefail
cd "$(dirname "$0")"

packages=(meson ninja-build pkg-config gcc libuv1-dev libevent-dev
	  libcjson-dev libfabric-dev libcmocka-dev python3 curl)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q ' installed$' ||
		missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	"${sudo[@]}" apt-get update -q
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

[ -f build/build.ninja ] || meson setup build
meson compile -C build hyperpodrun

echo "== hyperpodrun --nnodes=1 --nproc-per-node=2 --max-restarts=1 --tee=3 examples/demo_train.py"
set -x
PYTHON=${PYTHON:-python3} ./build/hyperpodrun --nnodes=1 --nproc-per-node=2 \
	--max-restarts=1 --tee=3 --server-host=127.0.0.1 --server-port=0 \
	examples/demo_train.py
