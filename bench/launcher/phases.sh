#!/usr/bin/env bash
# Per-phase breakdown of `bottle run shell -- true` (images present): runs it RUNS times with
# BOTTLE_TRACE_TIMING=1 and prints the median of every phase (and of the end offset, i.e. when
# the phase finished, in ms since `main` started). Phases that run concurrently overlap.
# Usage: bench/launcher/phases.sh [RUNS]   (default 10). Needs a built bottle (honours
# CARGO_TARGET_DIR) and its images (`bottle images build`).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-10}"
bottle="${CARGO_TARGET_DIR:-target}/release/bottle"
out=bench/out/launcher; mkdir -p "$out"
export BOTTLE_HOME="${BOTTLE_HOME:-$PWD/$out/home}"; mkdir -p "$BOTTLE_HOME"
: > "$out/phases.txt"
"$bottle" run shell -- true 2>/dev/null || true # warm-up (caches, first-run image checks)
for _ in $(seq "$runs"); do
  BOTTLE_TRACE_TIMING=1 "$bottle" run shell -- true 2>>"$out/phases.txt" >/dev/null
done
python3 - "$out/phases.txt" "$runs" <<'PY'
import re, statistics, sys
rx = re.compile(r"^bottle: timing \[\s*([\d.]+) ms\] (.+?)\s+([\d.]+) ms$")
at, dur, order = {}, {}, []
for line in open(sys.argv[1]):
    m = rx.match(line.rstrip("\n"))
    if not m:
        continue
    end, name, d = float(m[1]), m[2], float(m[3])
    if name not in dur:
        order.append(name); at[name] = []; dur[name] = []
    at[name].append(end); dur[name].append(d)
order.sort(key=lambda n: statistics.median(at[n]) - statistics.median(dur[n]))
print(f"\nmedian of {sys.argv[2]} runs of `bottle run shell -- true` (BOTTLE_TRACE_TIMING=1)\n")
print("| phase | starts at ms | duration ms |\n|---|---:|---:|")
for n in order:
    a, d = statistics.median(at[n]), statistics.median(dur[n])
    print(f"| {n} | {a - d:.0f} | {d:.0f} |")
PY
