#!/usr/bin/env bash
# Scanner benchmark: bottle-scanner vs detect-secrets (PyPI) vs ripsecrets (crates.io), side by side.
# Usage: bench/scanner/run.sh   (env: CORPUS="dir ...", DS_MB=10 subset size for detect-secrets)
# Installs the tools into bench/.venv and bench/.tools on first run. Prints a table with ratios.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
out="$root/bench/out/scanner"; mkdir -p "$out"
corpus=${CORPUS:-"/usr/include /usr/lib/python3.11"}
ds_mb=${DS_MB:-10}

if [ ! -x bench/.venv/bin/detect-secrets ]; then
  python3 -m venv bench/.venv && bench/.venv/bin/pip install -q detect-secrets==1.5.0
fi
if [ ! -x bench/.tools/bin/ripsecrets ]; then
  cargo install ripsecrets --locked --root bench/.tools
fi
cargo build -q --release -p bottle-scanner --example bench
# honour CARGO_TARGET_DIR (relative paths are relative to the workspace root)
B="${CARGO_TARGET_DIR:-target}/release/examples/bench"

echo "== bottle-scanner: throughput + findings on real code ($corpus)" >&2
BENCH_CAP_MB=400 $B throughput $corpus > "$out/ours-throughput.json"
echo "== bottle-scanner: cargo registry sources (FP listing)" >&2
BENCH_CAP_MB=400 $B throughput "$HOME"/.cargo/registry/src > "$out/ours-registry.json" || true
echo "== bottle-scanner: LLM-style JSON bodies" >&2
BENCH_BODIES_DIR="$out/bodies" $B bodies 1000 $corpus > "$out/ours-bodies.json"
echo "== planted corpus" >&2
rm -rf "$out/planted"; $B recall "$out/planted" > "$out/ours-recall.json"

# ripsecrets over the same corpus (it prints one line per finding)
echo "== ripsecrets" >&2
mb=$(du -scb $corpus | tail -1 | awk '{print $1/1e6}')
t0=$(date +%s.%N); bench/.tools/bin/ripsecrets $corpus > "$out/rip-findings.txt" 2>/dev/null || true; t1=$(date +%s.%N)
rip_secs=$(echo "$t1 - $t0" | bc)
rip_recall=$(bench/.tools/bin/ripsecrets "$out/planted" 2>/dev/null | sed 's/:.*//' | sort -u | wc -l || true)
t0=$(date +%s.%N); for f in "$out"/bodies/body-10000-*.json; do bench/.tools/bin/ripsecrets "$f" >/dev/null 2>&1 || true; done; t1=$(date +%s.%N)
rip_10k=$(echo "($t1 - $t0) / 20 * 1000000" | bc -l)
t0=$(date +%s.%N); for f in "$out"/bodies/body-100000-*.json; do bench/.tools/bin/ripsecrets "$f" >/dev/null 2>&1 || true; done; t1=$(date +%s.%N)
rip_100k=$(echo "($t1 - $t0) / 20 * 1000000" | bc -l)

# detect-secrets on a subset (it is slow): the first DS_MB MB of the corpus files
echo "== detect-secrets (subset ${ds_mb} MB)" >&2
rm -rf "$out/ds-subset"; mkdir -p "$out/ds-subset"
find $corpus -type f \( -name '*.h' -o -name '*.py' \) -size -512k 2>/dev/null | sort | head -100000 | \
  python3 -c "
import sys, shutil, os
cap=int(float('$ds_mb')*1e6); tot=0; i=0
for p in sys.stdin:
    p=p.strip(); s=os.path.getsize(p)
    if tot+s>cap: break
    shutil.copy(p, '$out/ds-subset/%06d-%s' % (i, os.path.basename(p))); tot+=s; i+=1
sys.stdin.read()
" || true
ds_subset_mb=$(du -scb "$out/ds-subset" | tail -1 | awk '{print $1/1e6}')
t0=$(date +%s.%N); bench/.venv/bin/detect-secrets scan --all-files "$out/ds-subset" > "$out/ds-findings.json"; t1=$(date +%s.%N)
ds_secs=$(echo "$t1 - $t0" | bc)
bench/.venv/bin/detect-secrets scan --all-files "$out/planted" > "$out/ds-recall.json"
t0=$(date +%s.%N); for f in "$out"/bodies/body-10000-*.json; do bench/.venv/bin/detect-secrets scan "$f" >/dev/null; done; t1=$(date +%s.%N)
ds_10k=$(echo "($t1 - $t0) / 20 * 1000000" | bc -l)
t0=$(date +%s.%N); for f in "$out"/bodies/body-100000-*.json; do bench/.venv/bin/detect-secrets scan "$f" >/dev/null; done; t1=$(date +%s.%N)
ds_100k=$(echo "($t1 - $t0) / 20 * 1000000" | bc -l)
# ours on the same subset, for a like-for-like FP count
BENCH_CAP_MB=400 $B throughput "$out/ds-subset" > "$out/ours-subset.json"

python3 - "$out" "$mb" "$rip_secs" "$rip_recall" "$rip_10k" "$rip_100k" "$ds_subset_mb" "$ds_secs" "$ds_10k" "$ds_100k" <<'PY'
import json, sys
out, mb, rip_secs, rip_recall, rip_10k, rip_100k, ds_mb, ds_secs, ds_10k, ds_100k = sys.argv[1:]
mb, rip_secs, rip_recall, rip_10k, rip_100k, ds_mb, ds_secs, ds_10k, ds_100k = map(float, [mb, rip_secs, rip_recall, rip_10k, rip_100k, ds_mb, ds_secs, ds_10k, ds_100k])
ours = json.load(open(f"{out}/ours-throughput.json"))
reg = json.load(open(f"{out}/ours-registry.json"))
subset = json.load(open(f"{out}/ours-subset.json"))
bodies = [json.loads(l) for l in open(f"{out}/ours-bodies.json")]
rec = json.load(open(f"{out}/ours-recall.json"))
rip_find = sum(1 for _ in open(f"{out}/rip-findings.txt"))
ds = json.load(open(f"{out}/ds-findings.json"))
ds_find = sum(len(v) for v in ds["results"].values())
ds_rec = len(json.load(open(f"{out}/ds-recall.json"))["results"])
b = {(x["size"], x["path"]): x for x in bodies}
planted = rec["planted"]
rows = [
  ("throughput on real code (MB/s, 1 thread)", ours["mb_per_s"], mb / rip_secs, ds_mb / ds_secs),
  ("findings per 100 MB of real code", ours["findings_per_100mb"], rip_find * 100 / mb, ds_find * 100 / ds_mb),
  ("findings per 100 MB (detect-secrets subset)", subset["findings_per_100mb"], float("nan"), ds_find * 100 / ds_mb),
  ("p50 latency 10 KB JSON body (us)", b[(10000, "raw")]["p50_us"], rip_10k, ds_10k),
  ("p50 latency 100 KB JSON body (us)", b[(100000, "raw")]["p50_us"], rip_100k, ds_100k),
  ("p50 10 KB via decode::scan_body (us)", b[(10000, "scan_body")]["p50_us"], float("nan"), float("nan")),
  ("p50 100 KB via decode::scan_body (us)", b[(100000, "scan_body")]["p50_us"], float("nan"), float("nan")),
  ("JSON body throughput (MB/s)", b[(100000, "raw")]["mb_per_s"], float("nan"), float("nan")),
  ("recall on planted corpus (%)", 100 * rec["found"] / planted, 100 * rip_recall / planted, 100 * ds_rec / planted),
]
print(f"corpus: {mb:.0f} MB real code; detect-secrets subset {ds_mb:.1f} MB; planted: {planted} credentials of {planted//3} types")
print(f"{'metric':46} {'bottle':>10} {'ripsecrets':>11} {'detect-sec':>11} {'vs rip':>8} {'vs ds':>8}")
for name, o, r, d in rows:
    def ratio(x):
        if x != x or x == 0:
            return ""
        if 'MB/s' in name or 'recall' in name:
            return f"{o/x:.1f}x"
        return f"{x/o:.1f}x" if o else "inf"
    print(f"{name:46} {o:10.1f} {r:11.1f} {d:11.1f} {ratio(r):>8} {ratio(d):>8}")
print("(ratios: how many times better bottle is; latency for ripsecrets/detect-secrets includes process start-up)")
print("bottle findings by rule (real code):", ours["per_rule"])
print("bottle findings by rule (cargo registry):", reg["per_rule"], f"= {reg['findings_per_100mb']:.1f}/100MB over {reg['mb']:.0f} MB")
print("bottle missed planted:", rec["missed"])
PY
