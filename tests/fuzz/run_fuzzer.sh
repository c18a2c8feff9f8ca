#!/usr/bin/env bash
# Runs one fuzzer for a bounded time over the committed seeds, then checks that it really ran and found nothing:
#   run_fuzzer.sh FUZZER SECONDS FOUND_DIR SEED_DIR
set -euo pipefail
fuzzer=$1 seconds=$2 found=$3 seeds=$4
mkdir -p "$found" "$found-artifacts"
ls "$seeds"/* > /dev/null  # the seeds must exist: a missing corpus is an error, not an empty run
log=$found.log
status=0
"$fuzzer" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
  -artifact_prefix="$found-artifacts/" "$found" "$seeds" > "$log" 2>&1 || status=$?
grep -E "^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|new_units_added|peak_rss_mb)" "$log" || true
if [[ $status -ne 0 ]]; then
  tail -60 "$log"
  echo "FAIL: $fuzzer exited with $status; the input is in $found-artifacts/" >&2
  exit 1
fi
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
if [[ -z "$runs" || "$runs" -lt 100 ]]; then
  echo "FAIL: $fuzzer ran only '${runs:-no}' inputs" >&2
  exit 1
fi
echo "ok: $runs inputs, no crash"
