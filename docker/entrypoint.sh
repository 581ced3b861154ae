#!/bin/sh
# Training-container entrypoint: hands PID 1 to hyperpodrun (exec, no shell
# left behind to swallow signals) with the flags a HyperPod job uses.
#
#   hyperpodrun-entrypoint /opt/train/train.py --epochs 10
#
# Knobs (this script's own; hyperpodrun reads none of them):
#   HP_NNODES (1), HP_NPROC_PER_NODE (auto), HP_SERVER_PORT (8080)
#   HP_INPROCESS_RESTART (0): 1 adds --inprocess-restart. Only for training
#       code that uses the in-process-restart client (hyperpod_worker.py /
#       the reference's InProcessRestartSocketClient): a plain script never
#       reaches the barrier, so the agent never gets READY and restarts it
#       every --inprocess-timeout.
#   HP_INPROCESS_TIMEOUT (300): --inprocess-timeout, with the above
#   HP_SHUTDOWN_TIMEOUT (8): seconds from SIGTERM to SIGKILL of the workers.
#       8 fits `docker stop`'s default 10 s, so hyperpodrun escalates and
#       exits 143 before the engine SIGKILLs the container (exit 137).
#       Raising it? Raise `docker stop -t` / terminationGracePeriodSeconds
#       above it too (docker/README.md, "Signals and timeouts").
#   HP_LOG_DIR (/tmp/hyperpodrun)
set -eu

ipr=
if [ "${HP_INPROCESS_RESTART:-0}" = 1 ]; then
	ipr="--inprocess-restart --inprocess-timeout ${HP_INPROCESS_TIMEOUT:-300}"
fi

# shellcheck disable=SC2086 # $ipr is zero or three words
exec hyperpodrun \
	--nnodes "${HP_NNODES:-1}" \
	--nproc-per-node "${HP_NPROC_PER_NODE:-auto}" \
	--rdzv-backend hyperpod \
	--server-host 0.0.0.0 \
	--server-port "${HP_SERVER_PORT:-8080}" \
	--shutdown-signal SIGTERM \
	--shutdown-timeout "${HP_SHUTDOWN_TIMEOUT:-8}" \
	$ipr \
	--tee 3 \
	--log-dir "${HP_LOG_DIR:-/tmp/hyperpodrun}" \
	"$@"
