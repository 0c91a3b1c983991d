#!/usr/bin/env bash
# Git gate benchmark: push of ~100 MB of new history through the gate vs directly (ratio), the
# gate's scan throughput on it, warm fetch through the gate vs directly, and the idle RSS of the
# sidecar with the gate loaded. Usage: bench/git-gate/run.sh   (env: GATEBENCH_MB=100)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
out="$root/bench/out/git-gate"; mkdir -p "$out"
cargo build -q --release -p bottle-git-gate --bin bottle-git-hook --example gatebench
cargo build -q --release -p bottle-sidecar
T="$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)"
GATEBENCH_HOOK="$T/bottle-git-hook" GATEBENCH_SIDECAR="$T/bottle-sidecar" \
  "$T/examples/gatebench" | tee "$out/result.txt"
