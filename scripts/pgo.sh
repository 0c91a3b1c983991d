#!/usr/bin/env bash
# Trains a profile-guided optimization (PGO) profile for the sidecar: builds the proxy bench
# instrumented, drives LLM-style HTTPS traffic through the real proxy with DLP on and off
# (other bodies and sizes than the ones `dlpbench` measures), and merges the counts into
# target/pgo/bottle.profdata. When that file exists, `bottle images build` compiles the
# sidecar with it (and the sidecar image's hash covers it); delete it to go back.
# Also builds target/pgo/use/release/{dlpbench,dlpprofile} with the profile, to measure what
# the shipped sidecar does.
# Usage: scripts/pgo.sh   (needs rustup's llvm-tools component; installs it if it can)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=target/pgo

profdata=$(find "$(rustc --print sysroot)" -name llvm-profdata -type f 2>/dev/null | head -1 || true)
if [ -z "$profdata" ]; then
  echo "pgo: installing rustup's llvm-tools component (for llvm-profdata)" >&2
  if ! rustup component add llvm-tools >&2; then
    echo "pgo: llvm-tools is not available: no PGO profile (the sidecar is built without one)" >&2
    exit 1
  fi
  profdata=$(find "$(rustc --print sysroot)" -name llvm-profdata -type f | head -1)
fi

rm -rf "$out/raw" "$out/bottle.profdata.tmp"
mkdir -p "$out"
echo "pgo: building the instrumented proxy bench" >&2
RUSTFLAGS="-Cprofile-generate=$root/$out/raw" \
  cargo build --release --locked -p bottle-bench --bin dlpbench --target-dir "$out/gen"
echo "pgo: training (HTTPS through the proxy, DLP off and on, 2/20/60 KB bodies)" >&2
"$out/gen/release/dlpbench" --requests 400 --sizes 2000,20000,60000 \
  --text scanner/src/keywords.rs >/dev/null
"$profdata" merge -o "$out/bottle.profdata.tmp" "$out/raw"
mv "$out/bottle.profdata.tmp" "$out/bottle.profdata"
rm -rf "$out/raw"
echo "pgo: building dlpbench and dlpprofile with the profile (target/pgo/use/release)" >&2
RUSTFLAGS="-Cprofile-use=$root/$out/bottle.profdata" \
  cargo build --release --locked -p bottle-bench --bin dlpbench --bin dlpprofile \
  --target-dir "$out/use"
echo "pgo: wrote $out/bottle.profdata ($(du -h "$out/bottle.profdata" | cut -f1))" >&2
