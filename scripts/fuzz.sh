#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (request-target/authority parsers, policy loader,
# scanner, WebSocket relay) for a fixed time each and prints the exec counts.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 60; TARGETs default to every target in
# fuzz/fuzz_targets. Uses a nightly toolchain if installed, else stable with
# RUSTC_BOOTSTRAP=1; installs cargo-fuzz with `cargo install cargo-fuzz --locked`
# if it is missing. New corpus entries go to target/fuzz-corpus/<target> (the seeds
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
  # Every target in fuzz/fuzz_targets.
  mapfile -t targets < <(ls fuzz/fuzz_targets | sed -n 's/\.rs$//p')
fi

# cargo-fuzz needs nightly compiler flags (-Zsanitizer). Use a nightly toolchain when one is
# installed; otherwise the machine's stable toolchain with RUSTC_BOOTSTRAP=1 (CI has only
# stable, and no other toolchain can be fetched there).
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  toolchain=()
  export RUSTC_BOOTSTRAP=1
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
  # Seeds are optional: a target without fuzz/seeds/<target> starts from an empty corpus.
  dirs=("$corpus")
  if [[ -d "fuzz/seeds/$t" ]]; then dirs+=("seeds/$t"); fi
  (cd fuzz && cargo "${toolchain[@]}" fuzz run "$t" "${dirs[@]}" -- \
    -max_total_time="$secs" -print_final_stats=1 -max_len=4096 -timeout=10 -rss_limit_mb=2048) \
    >"$log" 2>&1
  rc=$?
  set -e
  # (`|| true`: a run that died before its final stats has no such lines.)
  execs="$(grep -E '^stat::number_of_executed_units:' "$log" | tail -1 | awk '{print $2}' || true)"
  rate="$(grep -E '^stat::average_exec_per_sec:' "$log" | tail -1 | awk '{print $2}' || true)"
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
