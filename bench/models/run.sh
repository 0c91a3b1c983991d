#!/usr/bin/env bash
# Model sidecars ([[model]]) side by side with the same model container run by plain docker, in one
# run: medians over ROUNDS (default 5) rounds, with ratios.
#   streaming tokens/s and time to first token (TTFT) of the fake model server
#   (bottle/test-upstream --model-server):
#     (a) through the bottle: the client runs in the agent of a detached bottle with two model
#         sidecars and calls $OPENAI_BASE_URL/chat/completions (http://llm:8000/v1, set by the launcher)
#     (b) directly: the same model image by `docker run -d` on a plain user-created bridge, the
#         same client in a plain `docker run` container of the same (agent-shell) image on it
#     two sizes: FAST_TOKENS (20000) at 0 ms between tokens (throughput bound), PACED_TOKENS (200)
#     at PACED_MS (5) ms (a decode pace, where TTFT matters). Each round builds both worlds anew
#     three times: with the bottle's networks newest, with the direct network newest, and with an
#     empty spacer network created after both (which network is newest changes bridged
#     throughput: see README.md); each time it sends REPS (3) requests of each size through each,
#     alternating (a) and (b) request by request.
#   start-up to a ready model: `bottle spawn <bottle with one model> -- sleep 600` (returns once the
#     model answers its ready check)  vs  `docker run -d` of the model + polling /v1/models until 200;
#     and the same bottle without its model, for what the model adds.
# Usage: bench/models/run.sh   (env: ROUNDS=5 REPS=3 FAST_TOKENS=20000 PACED_TOKENS=200 PACED_MS=5;
#        RAW=file writes every sample there)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
rounds=${ROUNDS:-5} reps=${REPS:-3}
fast_n=${FAST_TOKENS:-20000} paced_n=${PACED_TOKENS:-200} paced_ms=${PACED_MS:-5}
cargo build -q --release -p bottle
B="$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)/bottle"
home=$(mktemp -d) ws=$(mktemp -d)
export BOTTLE_HOME="$home"
tag="bench.models=$$" net="bench-models-$$" spacer="bench-models-spacer-$$"
cleanup() {
  set +e
  # Every bottle this run spawned carries $tag (spawn --tag): end them, then our plain containers.
  docker ps -a --filter "label=$tag" --format '{{.Label "io.bottle.id"}}' | sort -u |
    while read -r id; do [ -n "$id" ] && "$B" end "$id" >/dev/null 2>&1; done
  docker ps -aq --filter "label=$tag" | xargs -r docker rm -f >/dev/null 2>&1
  docker network rm "$net" "$spacer" >/dev/null 2>&1
  rm -rf "$home" "$ws"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
imgs=$("$B" images build --test)
up=$(grep '^bottle/test-upstream:' <<<"$imgs")
agent=$(grep '^bottle/agent-shell:' <<<"$imgs")
mkdir -p "$home/bottles"
# The agent runs as the workspace owner; a root-owned one would make it 65534 (with a warning).
[ "$(id -u)" = 0 ] && chown 1000:1000 "$ws"
model() { # name interval_ms
  printf '\n[[model]]\nname = "%s"\nengine = "openai"\nmodel = "fake-model"\nimage = "%s"\n' "$1" "$up"
  printf 'args = ["--model-server"]\nenv = { FAKE_MODEL_TOKEN_INTERVAL_MS = "%s" }\n' "$2"
}
base='image = "shell"
workspace = "bind"'
{ echo "$base"; model llm 0; model paced "$paced_ms"; } >"$home/bottles/bench-stream.toml"
{ echo "$base"; model llm 0; } >"$home/bottles/bench-start.toml"
echo "$base" >"$home/bottles/bench-bare.toml"

# The client: for each (label, base URL, tokens) "<label>_ttft <ms>" and "<label>_tps <tokens/s>",
# one pair per measured request. TTFT = from connect() (the address is resolved beforehand,
# outside the timing) to the first chunk carrying a content token; tokens/s = (tokens - 1) /
# (last token - first token), the decode rate without the TTFT. A new connection per request
# (Connection: close); one unmeasured 20-token warm-up request per URL first.
cat >"$ws/client.py" <<'EOF'
import json, os, socket, sys, time
from urllib.parse import urlsplit
PAT = b'"content": "tok'
def one(addr, host, path, n):
    body = json.dumps({"model": "fake-model", "stream": True, "max_tokens": n,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = (b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\n"
           b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (path.encode(), host.encode(), len(body))) + body
    t0 = time.perf_counter_ns()
    s = socket.create_connection(addr)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(req)
    seen, tail, first, last = 0, b"", None, None
    while True:
        d = s.recv(65536)
        if not d:
            break
        k = (tail + d).count(PAT)
        if k:
            now = time.perf_counter_ns()
            first = first or now
            last, seen = now, seen + k
        tail = d[-(len(PAT) - 1):]
    s.close()
    if seen != n:
        sys.exit("got %d of %d tokens from %s" % (seen, n, host))
    return (first - t0) / 1e6, (n - 1) / (max(last - first, 1) / 1e9)
args = sys.argv[1:]
reps = int(args.pop())
for label, url, n in zip(args[0::3], args[1::3], args[2::3]):
    u = urlsplit(os.path.expandvars(url))
    addr = socket.getaddrinfo(u.hostname, u.port, socket.AF_INET, socket.SOCK_STREAM)[0][4]
    path = u.path.rstrip("/") + "/chat/completions"
    one(addr, u.netloc, path, 20)
    for _ in range(reps):
        ttft, tps = one(addr, u.netloc, path, int(n))
        print("%s_ttft %.4f\n%s_tps %.2f" % (label, ttft, label, tps))
EOF
# Polls /v1/models on this host until 200 every 20 ms (run in a model container by docker exec).
poll='import time, urllib.request
for _ in range(3000):
    try:
        if urllib.request.urlopen("http://127.0.0.1:8000/v1/models", timeout=2).status == 200: break
    except OSError: pass
    time.sleep(0.02)
else: raise SystemExit("model not ready")'

# spawn, with its messages shown only when it fails.
spawn() {
  "$B" spawn --tag "$tag" --workspace "$ws" "$@" 2>"$home/spawn.err" || { cat "$home/spawn.err" >&2; return 1; }
}
# (a)'s world: a detached bottle with the two models (llm: 0 ms, paced: PACED_MS); spawn returns
# once both answer.
bottle_up() { sid=$(spawn bench-stream -- sleep 600); }
# (b)'s world: a plain bridge network, the same two models, a client container (same workspace).
direct_up() {
  local m
  docker network create --label "$tag" "$net" >/dev/null
  for m in llm:0 "paced:$paced_ms"; do
    docker run -d --label "$tag" --network "$net" --network-alias "${m%:*}" --name "$net-${m%:*}" \
      -e FAKE_MODEL_TOKEN_INTERVAL_MS="${m#*:}" "$up" --model-server >/dev/null
    docker exec "$net-${m%:*}" python3 -c "$poll"
  done
  client=$(docker run -d --label "$tag" --network "$net" -v "$ws:/workspace:ro" -w /workspace \
    -u "$(stat -c %u:%g "$ws")" "$agent" sleep 600)
}
worlds_down() {
  "$B" end "$sid" >/dev/null 2>&1
  docker rm -f "$client" "$net-llm" "$net-paced" >/dev/null
  docker network rm "$net" >/dev/null
  docker network rm "$spacer" >/dev/null 2>&1 || true
}

ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
median() { sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
declare -A R
add() { R[$1]+="$2"$'\n'; }
# Adds the client's "<size>_<ttft|tps> value" lines to R[<path>_<size>_<ttft|tps>], and the
# throughput ones also to R[<path>_<size>_tps_<newest world>].
collect() {
  local k v
  while read -r k v; do
    add "$1_$k" "$v"
    if [[ $k = *_tps ]]; then add "$1_${k}_$newest" "$v"; fi
  done <<<"$2"
}
# One request of one size (after the client's warm-up request), through the bottle or directly.
stream_bottle() { # size url tokens
  local out
  out=$("$B" exec --no-reap "$sid" -- python3 /workspace/client.py "$1" "$2" "$3" 1)
  collect bottle "$out"
}
stream_direct() { # size url tokens
  local out
  out=$(docker exec "$client" python3 /workspace/client.py "$1" "$2" "$3" 1)
  collect direct "$out"
}
# shellcheck disable=SC2016 # $OPENAI_BASE_URL is expanded by the client, inside the bottle
stream() { # first second (bottle / direct): one request of each size through each, in that order
  local w
  for w in "$1" "$2"; do
    if [ "$w" = bottle ]; then stream_bottle fast '$OPENAI_BASE_URL' "$fast_n"
    else stream_direct fast http://llm:8000/v1 "$fast_n"; fi
  done
  for w in "$1" "$2"; do "stream_$w" paced http://paced:8000/v1 "$paced_n"; done
}
start_bottle() {
  local s id; s=$(date +%s%N)
  id=$(spawn bench-start -- sleep 600); add spawn_model "$(ms "$s")"
  "$B" end "$id" 2>/dev/null
  s=$(date +%s%N)
  id=$(spawn bench-bare -- sleep 600); add spawn_bare "$(ms "$s")"
  "$B" end "$id" 2>/dev/null
}
start_direct() {
  local s cid; s=$(date +%s%N)
  cid=$(docker run -d --label "$tag" --network "$net" "$up" --model-server)
  docker exec "$cid" python3 -c "$poll"; add docker_model "$(ms "$s")"
  docker rm -f "$cid" >/dev/null
}
base_url=
for i in $(seq "$rounds"); do
  # Three creation orders in every round, the first two alternating; "spacer": an empty plain
  # network created after both worlds, so that neither is the newest.
  if (( i % 2 )); then orders="bottle direct spacer"; else orders="direct bottle spacer"; fi
  for newest in $orders; do
    case $newest in
      bottle) direct_up; bottle_up ;;
      direct) bottle_up; direct_up ;;
      spacer) bottle_up; direct_up; docker network create --label "$tag" "$spacer" >/dev/null ;;
    esac
    [ -n "$base_url" ] || base_url=$("$B" exec --no-reap "$sid" -- printenv OPENAI_BASE_URL)
    for r in $(seq "$reps"); do
      if (( (i + r) % 2 )); then stream bottle direct; else stream direct bottle; fi
    done
    worlds_down
  done
  docker network create --label "$tag" "$net" >/dev/null # for (b)'s model
  if (( i % 2 )); then start_bottle; start_direct; else start_direct; start_bottle; fi
  docker network rm "$net" >/dev/null
done
if [ -n "${RAW:-}" ]; then # every sample, in order, for a closer look
  for k in "${!R[@]}"; do printf '%s\n' "${R[$k]}" | sed "/^$/d; s/^/$k /"; done | sort -s -k1,1 >"$RAW"
fi
med() { printf '%s' "${R[$1]}" | median; }
py() { python3 -c "print($1)"; }
echo "model sidecar vs plain docker (median of $rounds rounds × 3 orders × $reps requests; agent's OPENAI_BASE_URL=$base_url)"
echo "| measure | through the bottle | direct | ratio / difference | target |"
echo "|---|---:|---:|---:|---|"
tps_row() { # key label
  local a b; a=$(med "bottle_$1") b=$(med "direct_$1")
  printf '| tokens/s, %s | %s | %s | %s× | ≥ 0.98× |\n' "$2" "$(py "f'{$a:.0f}'")" "$(py "f'{$b:.0f}'")" \
    "$(py "f'{$a/$b:.3f}'")"
}
for k in "fast|$fast_n tokens @ 0 ms" "paced|$paced_n tokens @ $paced_ms ms"; do
  size=${k%%|*} label=${k#*|}
  tps_row "${size}_tps" "$label"
  if [ "$size" = fast ]; then
    tps_row fast_tps_bottle "… rounds with the bottle created last"
    tps_row fast_tps_direct "… rounds with the direct network created last"
    tps_row fast_tps_spacer "… rounds with a spacer network created last"
  fi
  a=$(med "bottle_${size}_ttft") b=$(med "direct_${size}_ttft")
  printf '| TTFT, %s | %s ms | %s ms | %s ms | ≤ +1 ms |\n' "$label" "$(py "f'{$a:.2f}'")" "$(py "f'{$b:.2f}'")" \
    "$(py "f'{$a-$b:+.2f}'")"
done
a=$(med spawn_model) b=$(med docker_model) c=$(med spawn_bare)
printf '| start-up to a ready model | %s ms (spawn) | %s ms (docker run -d + poll) | %s× | |\n' "$a" "$b" \
  "$(py "f'{$a/max($b,1):.2f}'")"
printf '| spawn, the same bottle without its model | %s ms | | the model adds %+d ms | |\n' "$c" "$((a - c))"
