#!/usr/bin/env bash
# Launcher start-up benchmark (issue 4): `bottle run shell -- true` end to end (images present)
# vs one plain `docker run --rm` of the same agent image vs `docker-compose up` of an equivalent
# two-service setup (sidecar + agent on an internal network), side by side in one hyperfine run.
# Usage: bench/launcher/run.sh [RUNS]   (default 10). Prints a table with ratios to `docker run`.
# Honours CARGO_TARGET_DIR; BENCH_SKIP_DEPS=1 skips the package check. The per-phase breakdown of
# `bottle run` is bench/launcher/phases.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-10}"
[ "${BENCH_SKIP_DEPS:-}" = 1 ] || ./scripts/deps.sh bench
cargo build --release -q -p bottle
bottle="${CARGO_TARGET_DIR:-target}/release/bottle"
$bottle images build >/dev/null
agent=$(docker images --format '{{.Repository}}:{{.Tag}}' 'bottle/agent-shell' | head -1)
sidecar=$(docker images --format '{{.Repository}}:{{.Tag}}' 'bottle/sidecar' | head -1)
out=bench/out/launcher; mkdir -p "$out"
cat > "$out/compose.yml" <<YML
version: "2.4"
services:
  sidecar:
    image: $sidecar
    command: ["--version"]
    read_only: true
    networks: [inner, egress]
  agent:
    image: $agent
    command: ["true"]
    read_only: true
    networks: [inner]
networks:
  inner: { internal: true }
  egress: {}
YML
export BOTTLE_HOME="$out/home"; mkdir -p "$BOTTLE_HOME"
hyperfine --warmup 1 --runs "$runs" --export-json "$out/launcher.json" \
  -n "bottle run shell -- true" "$bottle run shell -- true" \
  -n "docker run --rm" "docker run --rm $agent true" \
  -n "docker-compose up (2 services)" "docker-compose -p bottlebench -f $out/compose.yml up --quiet-pull >/dev/null 2>&1; docker-compose -p bottlebench -f $out/compose.yml down >/dev/null 2>&1"
python3 - "$out/launcher.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
base = r["docker run --rm"]["mean"]
print("\n| command | mean s | ratio to docker run --rm |\n|---|---:|---:|")
for name, x in r.items():
    print(f"| {name} | {x['mean']:.3f} | {x['mean']/base:.2f}x |")
PY
