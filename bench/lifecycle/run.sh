#!/usr/bin/env bash
# Verb latency of bottle's lifecycle verbs side by side with the docker CLI doing the nearest
# equivalent on the same image, in one run: median of ROUNDS (default 5) for each, with ratios.
#   spawn (a detached bottle, ready)       vs  docker run -d
#   send-keys -> capture round trip        vs  docker exec echo
#   pause + resume                         vs  docker pause + unpause
#   end                                    vs  docker rm -f
#   bottle run shell -- true               vs  docker run --rm ... true
# Usage: bench/lifecycle/run.sh   (env: ROUNDS=5)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
rounds=${ROUNDS:-5}
cargo build -q --release -p bottle
B="$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)/bottle"
home=$(mktemp -d); export BOTTLE_HOME="$home"; trap 'rm -rf "$home"' EXIT
"$B" images build sidecar agent-shell >/dev/null
img=$("$B" images list --json | python3 -c 'import json,sys; print(next(i["tag"] for i in json.load(sys.stdin)["images"] if i["image"]=="agent-shell"))')
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
declare -A R
add() { R[$1]+="$2"$'\n'; }
for i in $(seq "$rounds"); do
  s=$(date +%s%N); id=$("$B" spawn shell -- bash --norc 2>/dev/null); add spawn "$(ms "$s")"
  s=$(date +%s%N); cid=$(docker run -d "$img" sleep 600); add docker_run_d "$(ms "$s")"
  sleep 0.5
  m="m$RANDOM$i"; s=$(date +%s%N)
  "$B" send-keys "$id" "echo $m-done" --enter
  until "$B" capture "$id" --plain --lines 5 2>/dev/null | grep -q "$m-done"; do :; done
  add keys_capture "$(ms "$s")"
  s=$(date +%s%N); docker exec "$cid" echo hi >/dev/null; add docker_exec "$(ms "$s")"
  s=$(date +%s%N); "$B" pause "$id" 2>/dev/null; "$B" resume "$id" 2>/dev/null; add pause_resume "$(ms "$s")"
  s=$(date +%s%N); docker pause "$cid" >/dev/null; docker unpause "$cid" >/dev/null; add docker_pause_unpause "$(ms "$s")"
  s=$(date +%s%N); "$B" end "$id" 2>/dev/null; add end "$(ms "$s")"
  s=$(date +%s%N); docker rm -f "$cid" >/dev/null; add docker_rm_f "$(ms "$s")"
  s=$(date +%s%N); "$B" run shell -- true >/dev/null 2>&1; add run_true "$(ms "$s")"
  s=$(date +%s%N); docker run --rm "$img" true >/dev/null; add docker_run_rm "$(ms "$s")"
done
med() { printf '%s' "${R[$1]}" | median; }
row() {
  local a b; a=$(med "$1"); b=$(med "$2")
  printf '| %s | %s ms | %s | %s ms | %s× | %s |\n' "$3" "$a" "$4" "$b" \
    "$(python3 -c "print(f'{$a/max($b,1):.2f}')")" "$5"
}
echo "bottle lifecycle verbs vs docker CLI (median of $rounds, ms)"
echo "| bottle | time | docker | time | ratio | target |"
echo "|---|---:|---|---:|---:|---|"
row spawn docker_run_d "spawn (ready)" "docker run -d" "≤ 1.5×"
row keys_capture docker_exec "send-keys→capture" "docker exec echo" "≤ 50 ms"
row pause_resume docker_pause_unpause "pause+resume" "docker pause+unpause" "≤ 1.2×"
row end docker_rm_f "end" "docker rm -f" ""
row run_true docker_run_rm "run shell -- true" "docker run --rm true" "≤ 1.5×"
