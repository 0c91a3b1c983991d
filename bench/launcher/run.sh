#!/usr/bin/env bash
# Launcher start-up benchmark (issue 4): `bottle run shell -- true` end to end (images present)
# vs one plain `docker run --rm` of the same agent image vs `docker-compose up` of an equivalent
# two-service setup (sidecar + agent on an internal network), side by side in one hyperfine run.
# Usage: bench/launcher/run.sh [RUNS]   (default 10). Prints two tables (each command once on a
# settled engine; bottle vs docker back to back) with ratios to `docker run --rm`.
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
# Before each timed run: wait until no bottle object is left (the background teardown of the
# previous `bottle run`) and docker-compose's project is down, so every command starts on a
# settled engine. This is the one-off latency a user or an orchestrator sees.
cat > "$out/settle.sh" <<'SH'
#!/bin/sh
for _ in $(seq 100); do
  [ -z "$(docker ps -aq --filter label=io.bottle.id)" ] &&
    [ -z "$(docker network ls -q --filter label=io.bottle.id)" ] && break
  sleep 0.1
done
sleep 0.3
SH
chmod +x "$out/settle.sh"
hyperfine --warmup 2 --runs "$runs" --prepare "$out/settle.sh" --export-json "$out/launcher.json" \
  -n "bottle run shell -- true" "$bottle run shell -- true" \
  -n "bottle run --wait-teardown" "$bottle run --wait-teardown shell -- true" \
  -n "docker run --rm" "docker run --rm $agent true" \
  -n "docker-compose up (2 services)" "docker-compose -p bottlebench -f $out/compose.yml up --quiet-pull >/dev/null 2>&1; docker-compose -p bottlebench -f $out/compose.yml down >/dev/null 2>&1"
# Back to back (no settling): a loop pays every run's engine work, including the removals
# that `bottle run` leaves to its background teardown.
hyperfine --warmup 2 --runs "$runs" --export-json "$out/launcher-loop.json" \
  -n "bottle run shell -- true" "$bottle run shell -- true" \
  -n "docker run --rm" "docker run --rm $agent true"
python3 - "$out/launcher.json" "$out/launcher-loop.json" <<'PY'
import json, sys
for title, path in (("one run, settled engine", sys.argv[1]), ("back to back", sys.argv[2])):
    r = {x["command"]: x for x in json.load(open(path))["results"]}
    base = r["docker run --rm"]["median"]
    print(f"\n{title}\n| command | median s | mean ± σ s | ratio to docker run --rm (medians) |\n|---|---:|---:|---:|")
    for name, x in r.items():
        print(f"| {name} | {x['median']:.3f} | {x['mean']:.3f} ± {x['stddev']:.3f} | {x['median']/base:.2f}x |")
PY
