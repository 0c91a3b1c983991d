#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (bottle-proxy's authority/request-target
# parsers, policy loader and WebSocket relay) for a fixed time each and prints the exec counts.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 60; TARGETs default to every target
# (authority, policy, websocket). Needs the nightly toolchain (`rustup toolchain install
# nightly`); installs cargo-fuzz with `cargo install cargo-fuzz --locked` if it
# is missing. New corpus entries go to target/fuzz-corpus/<target> (the seeds
# in fuzz/seeds/<target> are read, never written); crashes go to
# fuzz/artifacts/<target> and make this script fail.
set -euo pipefail

secs="${1:-60}"
if [[ $# -gt 0 ]]; then shift; fi
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [[ "$secs" -lt 1 ]]; then
  echo "fuzz.sh: SECONDS_PER_TARGET must be a positive integer, got '$secs'" >&2
  exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  targets=(authority policy websocket)
fi

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz.sh: cargo-fuzz needs the nightly toolchain; run: rustup toolchain install nightly" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
  cargo install cargo-fuzz --locked
fi

# Keep fuzz builds next to the workspace's, out of the source tree.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/fuzz}"
logdir="$root/target/fuzz-logs"
mkdir -p "$logdir"

summary=()
status=0
for t in "${targets[@]}"; do
  if [[ ! -f "fuzz/fuzz_targets/$t.rs" ]]; then
    echo "fuzz.sh: no target '$t' (have: $(ls fuzz/fuzz_targets | sed 's/\.rs$//' | tr '\n' ' '))" >&2
    exit 2
  fi
  corpus="$root/target/fuzz-corpus/$t"
  mkdir -p "$corpus"
  log="$logdir/$t.log"
  echo "== fuzzing '$t' for ${secs}s (log: $log)"
  set +e
  (cd fuzz && cargo +nightly fuzz run "$t" "$corpus" "seeds/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 -max_len=4096 -timeout=10 -rss_limit_mb=2048) \
    >"$log" 2>&1
  rc=$?
  set -e
  execs="$(grep -E '^stat::number_of_executed_units:' "$log" | tail -1 | awk '{print $2}')"
  rate="$(grep -E '^stat::average_exec_per_sec:' "$log" | tail -1 | awk '{print $2}')"
  units="$(find "$corpus" -type f | wc -l)"
  if [[ $rc -ne 0 ]]; then
    status=1
    echo "!! '$t' failed (exit $rc); tail of $log:" >&2
    tail -n 40 "$log" >&2
    summary+=("$t: FAILED after ${execs:-?} execs (see $log and fuzz/artifacts/$t)")
  else
    summary+=("$t: ${execs:-?} execs in ${secs}s (${rate:-?}/s), corpus ${units} inputs, no crash")
  fi
done

echo
echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
exit $status
