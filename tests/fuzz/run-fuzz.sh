#!/bin/sh
# run-fuzz.sh FUZZER SEEDS WORKDIR — one bounded libFuzzer run, as the
# 'fuzz' meson suite runs it: the seed corpus (read-only, in the source
# tree) plus WORKDIR/corpus, where new inputs go, for HP_FUZZ_SECONDS
# seconds (30 by default; CI gives 60). A crash, leak, sanitizer report or
# slow input (over 10 s) fails the test; the input is saved under
# WORKDIR/artifacts/ and libFuzzer prints it in the log.
set -eu
fuzzer=$1 seeds=$2 work=$3
secs=${HP_FUZZ_SECONDS:-30}
# UBSan only prints by default; a finding must fail the run.
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
mkdir -p "$work/corpus" "$work/artifacts"
exec "$fuzzer" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
	-print_final_stats=1 -artifact_prefix="$work/artifacts/" \
	"$work/corpus" "$seeds"
