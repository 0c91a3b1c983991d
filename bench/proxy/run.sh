#!/usr/bin/env bash
# bottle proxy benchmark: direct vs bottle-sidecar vs squid (ssl-bump) vs mitmproxy,
# side by side in one run, on loopback, against the same nginx TLS upstream.
#
# Usage: bench/proxy/run.sh            (from anywhere; see bench/proxy/README.md)
# Environment (all optional):
#   BENCH_SECONDS=10          duration of each timed scenario
#   BENCH_PROXIES="direct bottle squid mitmproxy"   which columns to run
#   BENCH_LAT_RATE=1000       total req/s of the paced latency run (8 connections)
#   BENCH_NEWCONN_CONNS=8     concurrent workers in the new-connection run
#   BENCH_BULK_MB=1024        size of the bulk file (MiB)
#   BENCH_BULK_TIMEOUT=300    give up on one bulk download after this many seconds
#   BENCH_HOST=localhost      upstream name used in URLs, CONNECT and the policy
#   BENCH_OUT=bench/out       where certificates, configs, logs and results go
#   BOTTLE_SIDECAR=path       use this bottle-sidecar binary instead of building it
#   BENCH_SKIP_DEPS=1         do not call scripts/deps.sh / pip
#   BENCH_UP_PORT=18443       nginx port (wsecho: +1)
#   BENCH_PROXY_PORT=13128    bottle port (squid +1, mitmproxy +2, bottle-dlpoff +3, bottle-noscan +4)
#   BENCH_WS=1                run the WebSocket echo phase (0: skip it)
#   BENCH_WS_SECONDS=$BENCH_SECONDS   duration of each WebSocket run
#   BENCH_WS_ROUNDS=3         WebSocket rounds; each round runs every column once per size, alternating
#   BENCH_WS_CONNS=8          concurrent WebSocket connections
#   BENCH_WS_SIZES="1024 65536"   message sizes (bytes)
# Results: bench/out/proxy-results.md (markdown) and bench/out/proxy-results.jsonl (raw).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${BENCH_OUT:-$ROOT/bench/out}
SECS=${BENCH_SECONDS:-10}
PROXIES=${BENCH_PROXIES:-direct bottle squid mitmproxy}
LAT_RATE=${BENCH_LAT_RATE:-1000}
NEWCONN_CONNS=${BENCH_NEWCONN_CONNS:-8}
BULK_MB=${BENCH_BULK_MB:-1024}
BULK_TIMEOUT=${BENCH_BULK_TIMEOUT:-300}
HOST=${BENCH_HOST:-localhost}
WS=${BENCH_WS:-1}
WS_SECS=${BENCH_WS_SECONDS:-$SECS}
WS_ROUNDS=${BENCH_WS_ROUNDS:-3}
WS_CONNS=${BENCH_WS_CONNS:-8}
WS_SIZES=${BENCH_WS_SIZES:-1024 65536}
UP_PORT=${BENCH_UP_PORT:-18443}
WS_UP_PORT=$((UP_PORT + 1))
BOTTLE_PORT=${BENCH_PROXY_PORT:-13128}
SQUID_PORT=$((BOTTLE_PORT + 1))
MITM_PORT=$((BOTTLE_PORT + 2))
DLPOFF_PORT=$((BOTTLE_PORT + 3))
NOSCAN_PORT=$((BOTTLE_PORT + 4))
VENV=$ROOT/bench/.venv
RESULTS=$OUT/proxy-results.jsonl
REPORT=$OUT/proxy-results.md

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- processes
# Only processes started here are stopped, by pid.
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

stop() { # stop PID
  local p=$1
  kill "$p" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
}

wait_port() { # wait_port PORT PID NAME LOG
  for _ in $(seq 150); do
    if ! kill -0 "$2" 2>/dev/null; then
      log "$3 exited during start-up; last lines of $4:"; tail -n 15 "$4" >&2 || true
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$3 did not listen on 127.0.0.1:$1 within 15 s (log: $4)"
  return 1
}

unavailable() { # unavailable LABEL REASON
  log "$1: NOT RUN — $2"
  python3 -c 'import json,sys; print(json.dumps({"label":sys.argv[1],"scenario":"unavailable","first_error":sys.argv[2]}))' \
    "$1" "$2" >>"$RESULTS"
}

# ---------------------------------------------------------------- prerequisites
cd "$ROOT"
mkdir -p "$OUT"
if [ -z "${BENCH_SKIP_DEPS:-}" ]; then
  bash scripts/deps.sh bench
  if [[ " $PROXIES " == *" mitmproxy "* ]] && [ ! -x "$VENV/bin/mitmdump" ]; then
    log "installing mitmproxy into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r bench/proxy/requirements.txt
  fi
fi
for tool in nginx openssl python3; do
  command -v "$tool" >/dev/null || die "$tool not found: run scripts/deps.sh bench"
done

log "building proxyload (release)"
cargo build -q --release -p bottle-bench
LOAD=$ROOT/target/release/proxyload
WSECHO=$ROOT/target/release/wsecho
NOSCAN=$ROOT/target/release/noscanproxy

BOTTLE_BIN=${BOTTLE_SIDECAR:-}
BOTTLE_WHY=""
if [[ " $PROXIES " == *" bottle "* ]] && [ -z "$BOTTLE_BIN" ]; then
  log "building bottle-sidecar (release)"
  if cargo build -q --release -p bottle-sidecar 2>"$OUT/bottle-build.log"; then
    BOTTLE_BIN=$ROOT/target/release/bottle-sidecar
  else
    BOTTLE_WHY="cargo build --release -p bottle-sidecar failed (see $OUT/bottle-build.log)"
  fi
fi

# ---------------------------------------------------------------- upstream: CA, leaf, files, nginx
UP=$OUT/upstream
mkdir -p "$UP"
if [ ! -s "$UP/leaf.pem" ]; then
  log "creating the upstream test CA and certificate ($HOST, 127.0.0.1, ::1)"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=bottle bench upstream CA" -keyout "$UP/ca.key" -out "$UP/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$HOST" \
    -keyout "$UP/leaf.key" -out "$UP/leaf.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1,IP:::1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' "$HOST" >"$UP/leaf.ext"
  openssl x509 -req -in "$UP/leaf.csr" -CA "$UP/ca.pem" -CAkey "$UP/ca.key" -CAcreateserial \
    -days 825 -sha256 -extfile "$UP/leaf.ext" -out "$UP/leaf.pem" 2>/dev/null
fi
mkdir -p "$UP/www"
head -c 1024 /dev/zero | tr '\0' 'x' >"$UP/www/small"
want=$((BULK_MB * 1024 * 1024))
if [ "$(stat -c %s "$UP/www/big" 2>/dev/null || echo 0)" != "$want" ]; then
  log "creating a sparse ${BULK_MB} MiB file"
  rm -f "$UP/www/big"
  truncate -s "$want" "$UP/www/big"
fi
cat >"$UP/nginx.conf" <<EOF
user root;
worker_processes auto;
pid $UP/nginx.pid;
error_log $UP/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  default_type application/octet-stream;
  client_body_temp_path $UP/tmp;
  proxy_temp_path $UP/tmp;
  fastcgi_temp_path $UP/tmp;
  uwsgi_temp_path $UP/tmp;
  scgi_temp_path $UP/tmp;
  server {
    listen 127.0.0.1:$UP_PORT ssl;
    listen [::1]:$UP_PORT ssl;
    server_name _;
    ssl_certificate $UP/leaf.pem;
    ssl_certificate_key $UP/leaf.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    root $UP/www;
  }
}
EOF
mkdir -p "$UP/tmp"
log "starting nginx on 127.0.0.1:$UP_PORT"
nginx -c "$UP/nginx.conf" -g 'daemon off;' >"$UP/nginx.out" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_port "$UP_PORT" "$NGINX_PID" nginx "$UP/error.log" || die "nginx did not start"

if [ "$WS" != 0 ]; then
  log "starting wsecho (WebSocket echo upstream) on 127.0.0.1:$WS_UP_PORT"
  "$WSECHO" --listen "127.0.0.1:$WS_UP_PORT" --cert "$UP/leaf.pem" --key "$UP/leaf.key" >"$UP/wsecho.log" 2>&1 &
  WSECHO_PID=$!
  PIDS+=("$WSECHO_PID")
  wait_port "$WS_UP_PORT" "$WSECHO_PID" wsecho "$UP/wsecho.log" || die "wsecho did not start"
fi

URL_SMALL="https://$HOST:$UP_PORT/small"
URL_WS="https://$HOST:$WS_UP_PORT/echo"
URL_BIG="https://$HOST:$UP_PORT/big"
: >"$RESULTS"

# ---------------------------------------------------------------- proxies
# Each start_* sets PROXY_PID, PROXY_ADDR, PROXY_CA, PROXY_LOG or returns 1 (with WHY set).
# start_bottle [VARIANT [PORT]]: VARIANT is
#   default  bottle-sidecar host mode as a bottle runs it: DLP inspector (DlpInspector::for_bottle,
#            installed by host mode), one bottle secret (--secrets-file, 0600) that both routes inject
#            as `Authorization: Bearer` (so the known-secret pass, credential injection and the
#            response-reflection check are all active), DLP default (on);
#   dlpoff   bottle-sidecar, no secrets, both routes `dlp = false` (what a policy can switch off; the
#            inspector is still installed and still scans WebSocket messages, see the README);
#   noscan   noscanproxy: the same proxy library with no inspector and no secrets (no per-message
#            scan at all; frames still parsed and re-framed).
start_bottle() {
  WHY=""
  local variant=${1:-default} port=${2:-$BOTTLE_PORT}
  if [ -n "$BOTTLE_WHY" ]; then WHY=$BOTTLE_WHY; return 1; fi
  [ -x "$BOTTLE_BIN" ] || { WHY="no bottle-sidecar binary at $BOTTLE_BIN"; return 1; }
  local d=$OUT/bottle-$variant
  rm -rf "$d"; mkdir -p "$d"
  if ! "$BOTTLE_BIN" gen-ca --out "$d/ca" >"$d/gen-ca.log" 2>&1; then
    WHY="bottle-sidecar gen-ca failed: $(tail -n 3 "$d/gen-ca.log" | tr '\n' ' ')"; return 1
  fi
  local cert key extra=""
  cert=$d/ca/ca.pem
  key=$d/ca/ca.key
  [ -s "$cert" ] && [ -s "$key" ] || { WHY="gen-ca did not write ca.pem and ca.key in $d/ca: $(ls "$d/ca" | tr '\n' ' ')"; return 1; }
  case $variant in
    default) extra='auth = { scheme = "Bearer", secret = "BENCH_TOKEN" }' ;;
    dlpoff) extra='dlp = false' ;;
    noscan) ;;
    *) WHY="unknown bottle variant $variant"; return 1 ;;
  esac
  {
    printf '[settings]\nextra_roots = ["""\n%s\n"""]\n\n' "$(cat "$UP/ca.pem")"
    printf '[[route]]\nid = "bench-upstream"\nhost = "%s"\nports = [%s]\nallow_private = ["127.0.0.1/32", "::1/128"]\n%s\n\n' "$HOST" "$UP_PORT" "$extra"
    printf '[[route]]\nid = "bench-ws"\nhost = "%s"\nports = [%s]\nallow_private = ["127.0.0.1/32", "::1/128"]\n%s\n' "$HOST" "$WS_UP_PORT" "$extra"
  } >"$d/policy.toml"
  local args=(--policy "$d/policy.toml" --ca-cert "$cert" --ca-key "$key" --listen "127.0.0.1:$port" --audit "$d/audit.jsonl")
  local bin=$BOTTLE_BIN
  if [ "$variant" = default ]; then
    # A bottle secret for host mode: a 0600 JSON file (never env or argv).
    (umask 077; printf '{"BENCH_TOKEN": "bench_%s"}\n' "$(openssl rand -hex 20)" >"$d/secrets.json")
    args+=(--secrets-file "$d/secrets.json")
  elif [ "$variant" = noscan ]; then
    [ -x "$NOSCAN" ] || { WHY="no noscanproxy binary at $NOSCAN"; return 1; }
    bin=$NOSCAN
  fi
  PROXY_LOG=$d/sidecar.log
  "$bin" "${args[@]}" >"$PROXY_LOG" 2>&1 &
  PROXY_PID=$!; PIDS+=("$PROXY_PID")
  PROXY_ADDR=127.0.0.1:$port; PROXY_CA=$cert
  wait_port "$port" "$PROXY_PID" "bottle ($variant)" "$PROXY_LOG" || { WHY="bottle ($variant) did not start (see $PROXY_LOG)"; return 1; }
}

start_squid() {
  WHY=""
  command -v squid >/dev/null || { WHY="squid not installed (scripts/deps.sh bench installs squid-openssl)"; return 1; }
  squid -v 2>/dev/null | grep -c -- '--with-openssl' >/dev/null || { WHY="this squid has no OpenSSL (install squid-openssl)"; return 1; }
  local certgen=/usr/lib/squid/security_file_certgen
  [ -x "$certgen" ] || { WHY="$certgen missing"; return 1; }
  local d=$OUT/squid
  rm -rf "$d"; mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=bench squid CA" -keyout "$d/ca.key" -out "$d/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  "$certgen" -c -s "$d/ssl_db" -M 16MB >"$d/certgen-init.log" 2>&1 || { WHY="security_file_certgen -c failed (see $d/certgen-init.log)"; return 1; }
  cat >"$d/squid.conf" <<EOF
http_port 127.0.0.1:$SQUID_PORT ssl-bump tls-cert=$d/ca.pem tls-key=$d/ca.key generate-host-certificates=on dynamic_cert_mem_cache_size=16MB
sslcrtd_program $certgen -s $d/ssl_db -M 16MB
sslcrtd_children 4 startup=1 idle=1
ssl_bump bump all
tls_outgoing_options cafile=$UP/ca.pem
http_access allow localhost
http_access deny all
cache deny all
${SQUID_EXTRA:-}
cache_mem 8 MB
pid_filename $d/squid.pid
cache_log $d/cache.log
access_log stdio:$d/access.log
cache_store_log none
coredump_dir $d
cache_effective_user proxy
shutdown_lifetime 1 seconds
visible_hostname bottle-bench
pinger_enable off
netdb_filename none
EOF
  chown -R proxy:proxy "$d"
  PROXY_LOG=$d/cache.log
  squid -N -f "$d/squid.conf" >"$d/squid.out" 2>&1 &
  PROXY_PID=$!; PIDS+=("$PROXY_PID")
  PROXY_ADDR=127.0.0.1:$SQUID_PORT; PROXY_CA=$d/ca.pem
  wait_port "$SQUID_PORT" "$PROXY_PID" squid "$PROXY_LOG" || { WHY="squid did not start (see $d/cache.log, $d/squid.out)"; return 1; }
}

start_mitmproxy() {
  WHY=""
  [ -x "$VENV/bin/mitmdump" ] || { WHY="mitmdump not found in $VENV (run without BENCH_SKIP_DEPS to pip install it)"; return 1; }
  local d=$OUT/mitmproxy
  rm -rf "$d"; mkdir -p "$d"
  PROXY_LOG=$d/mitmdump.log
  "$VENV/bin/mitmdump" --listen-host 127.0.0.1 --listen-port "$MITM_PORT" \
    --set confdir="$d" --set ssl_verify_upstream_trusted_ca="$UP/ca.pem" >"$PROXY_LOG" 2>&1 &
  PROXY_PID=$!; PIDS+=("$PROXY_PID")
  PROXY_ADDR=127.0.0.1:$MITM_PORT; PROXY_CA=$d/mitmproxy-ca-cert.pem
  wait_port "$MITM_PORT" "$PROXY_PID" mitmdump "$PROXY_LOG" || { WHY="mitmdump did not start (see $PROXY_LOG)"; return 1; }
  for _ in $(seq 50); do [ -s "$PROXY_CA" ] && return 0; sleep 0.1; done
  WHY="mitmdump wrote no CA at $PROXY_CA"; return 1
}

# ---------------------------------------------------------------- scenarios
measure() { # measure LABEL [PID]: runs every scenario, appending JSON lines
  local label=$1 pid=${2:-} common
  common=(--label "$label" --ca "$CA")
  [ -n "$ADDR" ] && common+=(--proxy "$ADDR")
  if ! "$LOAD" keepalive "${common[@]}" --scenario warmup --url "$URL_SMALL" --conns 1 --seconds 1 >"$OUT/$label-warmup.json" 2>&1 \
     || ! grep -q '"requests":[1-9]' "$OUT/$label-warmup.json"; then
    unavailable "$label" "warm-up request failed: $(head -c 400 "$OUT/$label-warmup.json" | tr '\n' ' ')"
    return 0
  fi
  if [ -n "$pid" ]; then
    sleep 1
    "$LOAD" rss --label "$label" --pid "$pid" >>"$RESULTS"
  fi
  log "$label: keep-alive, 8 connections, ${SECS}s"
  "$LOAD" keepalive "${common[@]}" --scenario ka8 --url "$URL_SMALL" --conns 8 --seconds "$SECS" >>"$RESULTS" \
    || log "$label: scenario ka8 could not run"
  log "$label: keep-alive, 64 connections, ${SECS}s"
  "$LOAD" keepalive "${common[@]}" --scenario ka64 --url "$URL_SMALL" --conns 64 --seconds "$SECS" >>"$RESULTS" \
    || log "$label: scenario ka64 could not run"
  log "$label: new connection per request, $NEWCONN_CONNS workers, ${SECS}s"
  "$LOAD" newconn "${common[@]}" --scenario newconn --url "$URL_SMALL" --conns "$NEWCONN_CONNS" --seconds "$SECS" >>"$RESULTS" \
    || log "$label: scenario newconn could not run"
  log "$label: latency, 8 connections paced at $LAT_RATE req/s, ${SECS}s"
  "$LOAD" keepalive "${common[@]}" --scenario lat8 --url "$URL_SMALL" --conns 8 --seconds "$SECS" --rate "$LAT_RATE" >>"$RESULTS" \
    || log "$label: scenario lat8 could not run"
  log "$label: bulk download of ${BULK_MB} MiB (timeout ${BULK_TIMEOUT}s)"
  local watch=()
  [ -n "$pid" ] && watch=(--watch-pid "$pid")
  "$LOAD" bulk "${common[@]}" --scenario bulk --url "$URL_BIG" --timeout "$BULK_TIMEOUT" "${watch[@]}" >>"$RESULTS" \
    || log "$label: scenario bulk could not run"
}

for label in $PROXIES; do
  case $label in
    direct)
      CA=$UP/ca.pem; ADDR=""
      measure direct
      ;;
    bottle|squid|mitmproxy)
      log "starting $label"
      if "start_$label"; then
        CA=$PROXY_CA; ADDR=$PROXY_ADDR
        measure "$label" "$PROXY_PID"
        if ! kill -0 "$PROXY_PID" 2>/dev/null; then
          log "$label exited during the run (see $PROXY_LOG)"
        fi
        stop "$PROXY_PID"
      else
        unavailable "$label" "$WHY"
        [ -n "${PROXY_PID:-}" ] && stop "$PROXY_PID"
      fi
      PROXY_PID=""
      ;;
    *) die "unknown entry '$label' in BENCH_PROXIES (use direct bottle squid mitmproxy)" ;;
  esac
done

# ---------------------------------------------------------------- WebSocket echo phase
# All columns run at once (idle ones cost nothing) and the runs alternate: each round runs every
# column once per message size, so load from elsewhere on the box hits all columns alike.
if [ "$WS" != 0 ]; then
  declare -A WS_ADDR WS_CA
  for label in $PROXIES; do
    case $label in
      direct) WS_ADDR[direct]=""; WS_CA[direct]=$UP/ca.pem ;;
      bottle)
        for v in default dlpoff noscan; do
          case $v in default) lab=bottle; port=$BOTTLE_PORT ;; dlpoff) lab=bottle-dlpoff; port=$DLPOFF_PORT ;; noscan) lab=bottle-noscan; port=$NOSCAN_PORT ;; esac
          log "websocket: starting $lab"
          if start_bottle "$v" "$port"; then WS_ADDR[$lab]=$PROXY_ADDR; WS_CA[$lab]=$PROXY_CA
          else unavailable "$lab" "$WHY"; fi
        done ;;
      squid)
        log "websocket: starting squid (http_upgrade_request_protocols WebSocket allow all)"
        if SQUID_EXTRA="http_upgrade_request_protocols WebSocket allow all" start_squid; then
          WS_ADDR[squid]=$PROXY_ADDR; WS_CA[squid]=$PROXY_CA
        else unavailable squid-ws "$WHY"; fi ;;
      mitmproxy)
        log "websocket: starting mitmproxy"
        if start_mitmproxy; then WS_ADDR[mitmproxy]=$PROXY_ADDR; WS_CA[mitmproxy]=$PROXY_CA
        else unavailable mitmproxy-ws "$WHY"; fi ;;
    esac
  done
  WS_LABELS=()
  for lab in direct bottle bottle-dlpoff bottle-noscan squid mitmproxy; do
    [ -n "${WS_CA[$lab]+x}" ] && WS_LABELS+=("$lab")
  done
  for round in $(seq "$WS_ROUNDS"); do
    for size in $WS_SIZES; do
      sc=ws$((size / 1024))k
      for lab in "${WS_LABELS[@]}"; do
        args=(--label "$lab" --scenario "$sc" --url "$URL_WS" --ca "${WS_CA[$lab]}" --conns "$WS_CONNS" --seconds "$WS_SECS" --size "$size")
        [ -n "${WS_ADDR[$lab]}" ] && args+=(--proxy "${WS_ADDR[$lab]}")
        log "websocket round $round/$WS_ROUNDS: $lab, $WS_CONNS connections, $size-byte messages, ${WS_SECS}s"
        "$LOAD" ws "${args[@]}" >>"$RESULTS" || log "$lab: scenario $sc could not run"
      done
    done
  done
fi

# ---------------------------------------------------------------- report
{
  echo "## Proxy benchmark — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Loopback, $(nproc) cores shared by client, proxy and upstream; nginx $(nginx -v 2>&1 | sed 's/.*nginx\///') TLS upstream" \
       "(ECDSA P-256, TLS 1.3), 1 KiB response, ${BULK_MB} MiB file; ${SECS} s per scenario; client: proxyload (Rust, hyper + rustls," \
       "2 threads, no TLS session resumption). bottle $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')," \
       "squid $(squid -v 2>/dev/null | sed -n 's/^Squid Cache: Version //p' || echo '?')," \
       "mitmproxy $("$VENV/bin/mitmdump" --version 2>/dev/null | sed -n 's/^Mitmproxy: //p' || echo '?') (default settings)."
  echo "Latency 'paced' = 8 keep-alive connections at $LAT_RATE req/s in total; 'saturated' = the 8-connection keep-alive run." \
       "RSS = VmRSS of the proxy process tree (squid: with its helpers), peak sampled every 50 ms."
  [ "$WS" != 0 ] && echo "WebSocket: $WS_CONNS connections ping-ponging one text message (LLM-style JSON) at a time with" \
       "wsecho (Rust, tokio-tungstenite, TLS), ${WS_SECS} s per run, $WS_ROUNDS alternating rounds: median (min–max)."
  echo
  "$LOAD" report --results "$RESULTS"
} >"$REPORT"
cat "$REPORT"
log "results: $REPORT (raw: $RESULTS)"
