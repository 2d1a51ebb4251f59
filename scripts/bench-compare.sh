#!/usr/bin/env bash
# Compare ringmail with nginx's mail proxy (the proxy the Zimbra Proxy is built on), side by
# side, with the same number of workers, in front of the same `loadtest backend` and
# `loadtest lookup`, and straight at the backend as the reference. Every scenario runs against
# both proxies in alternating order (A B, then B A, ...), ROUNDS times; the table of medians
# and ratios is written to $OUT/table.md. See docs/benchmarks.md.
#
#   scripts/bench-compare.sh                 # 3 rounds, 2 workers, 9000 idle sessions
#   ROUNDS=5 SESSIONS=6000 scripts/bench-compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
WORKERS=${WORKERS:-2}
SESSIONS=${SESSIONS:-9000}
OUT=${OUT:-target/bench}
LT=target/release/loadtest
RM=target/release/ringmail

need=()
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
[ -f /usr/lib/nginx/modules/ngx_mail_module.so ] || need+=(libnginx-mod-mail)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
cargo build --release --workspace

rm -rf "$OUT" && mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# 9000 idle sessions through a proxy use 18000 loopback connections per run
sysctl -qw net.ipv4.ip_local_port_range="1024 65000" 2>/dev/null || echo "note: could not widen the local port range"
sysctl -qw net.ipv4.tcp_tw_reuse=1 2>/dev/null || true
# keep the listening ports out of the (now wide) ephemeral range
sysctl -qw net.ipv4.ip_local_reserved_ports=7072,10110,10143,21110,21143,21993,22110,22143,22993 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -keyout "$OUT/key.pem" -out "$OUT/cert.pem" -subj /CN=bench.example.test \
  -addext subjectAltName=DNS:bench.example.test,IP:127.0.0.1 2>/dev/null

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$OUT/nginx/nginx.pid" ] && kill "$(cat "$OUT/nginx/nginx.pid")" 2>/dev/null || true
}
trap cleanup EXIT

$LT backend --imap 127.0.0.1:10143 --pop3 127.0.0.1:10110 --message-size 1m 2>"$OUT/backend.log" &
pids+=($!); BACKEND_PID=$!
$LT lookup --listen 127.0.0.1:7072 --imap-backend 127.0.0.1:10143 --pop3-backend 127.0.0.1:10110 2>"$OUT/lookup.log" &
pids+=($!); LOOKUP_PID=$!
sleep 0.5

cat >"$OUT/ringmail.toml" <<EOF
[workers]
count = $WORKERS
[imap]
listen = ["127.0.0.1:21143"]
listen_tls = ["127.0.0.1:21993"]
[pop3]
listen = ["127.0.0.1:21110"]
[tls]
certificates = [{ cert = "$OUT/cert.pem", key = "$OUT/key.pem" }]
[lookup]
handlers = ["http://127.0.0.1:7072/service/extension/nginx-lookup"]
EOF

mkdir -p "$OUT/nginx"
cat >"$OUT/nginx/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_mail_module.so;
worker_processes $WORKERS;
worker_cpu_affinity auto;
worker_rlimit_nofile 20000;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log error;
events { worker_connections 20000; }
mail {
    server_name bench.example.test;
    auth_http 127.0.0.1:7072/auth;
    proxy_pass_error_message on;
    imap_capabilities IMAP4rev1 IDLE LITERAL+ SASL-IR;
    imap_auth plain login;
    pop3_auth plain;
    ssl_certificate $OUT/cert.pem;
    ssl_certificate_key $OUT/key.pem;
    server { listen 127.0.0.1:22143; protocol imap; }
    server { listen 127.0.0.1:22993 ssl; protocol imap; }
    server { listen 127.0.0.1:22110; protocol pop3; }
}
EOF

# start_<target>: start fresh, warm up, and set PIDARGS / PORT / TLSPORT
start_ringmail() {
  $RM --config "$OUT/ringmail.toml" 2>"$OUT/ringmail.log" &
  RM_PID=$!
  sleep 0.7
  PIDARGS="--pid $RM_PID"; PORT=21143; TLSPORT=21993
}
stop_ringmail() { kill "$RM_PID"; wait "$RM_PID" 2>/dev/null || true; }
start_nginx() {
  nginx -c "$OUT/nginx/nginx.conf" -p "$OUT/nginx/"
  sleep 0.7
  PIDARGS=$(pgrep -P "$(cat "$OUT/nginx/nginx.pid")" | sed 's/^/--pid /' | tr '\n' ' ')
  PORT=22143; TLSPORT=22993
}
stop_nginx() {
  local p; p=$(cat "$OUT/nginx/nginx.pid"); kill -QUIT "$p"
  while kill -0 "$p" 2>/dev/null; do sleep 0.1; done
}

run() { # run <round> <target> <scenario-name> <loadtest args...>
  local round=$1 target=$2 name=$3; shift 3
  echo "round $round  $target  $name" >&2
  $LT "$@" --json --label "$target" | python3 -c "
import json, sys
r = json.load(sys.stdin); r['round'] = $round; r['target'] = '$target'; r['name'] = '$name'
print(json.dumps(r))" >>"$OUT/results.jsonl"
  sleep 2
}

scenarios() { # scenarios <round> <target>
  local r=$1 t=$2
  $LT login --target 127.0.0.1:$PORT --duration 2s --concurrency 20 --json >/dev/null  # warm up
  run "$r" "$t" login login --target 127.0.0.1:$PORT --duration 5s --concurrency 20 $PIDARGS
  run "$r" "$t" command command --target 127.0.0.1:$PORT --sessions 1000 --rate 2000 --duration 10s $PIDARGS
  run "$r" "$t" fetch fetch --target 127.0.0.1:$PORT --duration 5s --concurrency 4 $PIDARGS
  run "$r" "$t" idle idle --target 127.0.0.1:$PORT --sessions "$SESSIONS" --rate 2000 --hold 3s $PIDARGS
  run "$r" "$t" idle-tls idle --target 127.0.0.1:$TLSPORT --tls implicit --sessions "$SESSIONS" --rate 1000 --hold 3s $PIDARGS
}

for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then order="ringmail nginx"; else order="nginx ringmail"; fi
  for t in $order; do
    "start_$t"
    scenarios "$round" "$t"
    "stop_$t"
  done
  PIDARGS="--pid $BACKEND_PID"; PORT=10143
  run "$round" backend login login --target 127.0.0.1:$PORT --duration 5s --concurrency 20 $PIDARGS
  run "$round" backend command command --target 127.0.0.1:$PORT --sessions 1000 --rate 2000 --duration 10s $PIDARGS
  run "$round" backend fetch fetch --target 127.0.0.1:$PORT --duration 5s --concurrency 4 $PIDARGS
done

python3 scripts/bench-table.py "$OUT/results.jsonl" | tee "$OUT/table.md"
echo "results: $OUT/results.jsonl, table: $OUT/table.md" >&2
