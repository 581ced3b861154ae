#!/bin/sh
# Example training-container entrypoint: hands PID 1 to hyperpodrun (exec, no
# shell left behind to swallow signals) with the flags a HyperPod job uses.
# The operator reaches the agent on --server-port; the kubelet's SIGTERM goes
# to hyperpodrun, which forwards it to the workers and SIGKILLs them after
# --shutdown-timeout. Keep terminationGracePeriodSeconds above that timeout.
#
#   entrypoint.sh /opt/train/train.py --epochs 10
#
# The HP_* variables are this example's own knobs, not read by hyperpodrun.
set -eu

exec hyperpodrun \
	--nnodes "${HP_NNODES:-1}" \
	--nproc-per-node "${HP_NPROC_PER_NODE:-auto}" \
	--rdzv-backend hyperpod \
	--server-host 0.0.0.0 \
	--server-port "${HP_SERVER_PORT:-8080}" \
	--shutdown-signal SIGTERM \
	--shutdown-timeout "${HP_SHUTDOWN_TIMEOUT:-30}" \
	--inprocess-restart \
	--inprocess-timeout "${HP_INPROCESS_TIMEOUT:-300}" \
	--tee 3 \
	--log-dir "${HP_LOG_DIR:-/tmp/hyperpodrun}" \
	"$@"
