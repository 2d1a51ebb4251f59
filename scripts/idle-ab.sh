#!/usr/bin/env bash
# Idle memory per session of one or more ringmail builds, side by side, against
# `loadtest backend` + `loadtest lookup` (no Dovecot: no backend noise).
#
#   scripts/idle-ab.sh OLD_BINARY NEW_BINARY [...]
#
# For each round (ROUNDS, 2) and binary: a fresh ringmail with 2 workers, every user's route
# cached and a 3 s fetch (so that the provided-buffer ring is resident before the "before"
# sample), then SESSIONS
# (9000) idle IMAP sessions in plaintext, then as many over implicit TLS in a fresh process
# (each with every user's route cached first).
# Prints RSS bytes per idle session for each. Build the binaries first (for an older commit:
# `git worktree add /tmp/old <rev>` and `CARGO_TARGET_DIR=... cargo build --release`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 RINGMAIL_BINARY..." >&2; exit 2; }
cargo build --release -p loadtest
LT=target/release/loadtest
ROUNDS=${ROUNDS:-2}
SESSIONS=${SESSIONS:-9000}
dir=$(mktemp -d)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -keyout "$dir/key.pem" -out "$dir/cert.pem" -subj /CN=bench.example.test 2>/dev/null
cat >"$dir/ringmail.toml" <<TOML
[workers]
count = 2
[imap]
listen = ["127.0.0.1:21143"]
listen_tls = ["127.0.0.1:21993"]
[pop3]
listen = ["127.0.0.1:21110"]
[tls]
certificates = [{ cert = "$dir/cert.pem", key = "$dir/key.pem" }]
[lookup]
handlers = ["http://127.0.0.1:7074/service/extension/nginx-lookup"]
[shutdown]
grace = "0s"
spread = "0s"
TOML
saved_range=$(sysctl -n net.ipv4.ip_local_port_range 2>/dev/null | tr '\t' ' ' || true)
sysctl -qw net.ipv4.ip_local_port_range="1024 65000" 2>/dev/null || true
sysctl -qw net.ipv4.tcp_tw_reuse=1 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$saved_range" ] && sysctl -qw net.ipv4.ip_local_port_range="$saved_range" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
$LT backend --imap 127.0.0.1:10143 --pop3 127.0.0.1:10110 --password secret --message-size 1m 2>/dev/null &
pids+=($!)
$LT lookup --listen 127.0.0.1:7074 --imap-backend 127.0.0.1:10143 --pop3-backend 127.0.0.1:10110 2>/dev/null &
pids+=($!)
sleep 0.5
per_session() { python3 -c "import json,sys; print(round(json.load(sys.stdin)['bytes_per_session']))"; }
start() {
  "$1" --config "$dir/ringmail.toml" 2>"$dir/ringmail.log" &
  pid=$!
  for _ in $(seq 50); do grep -q "ringmail ready" "$dir/ringmail.log" && break; sleep 0.1; done
  # routes cached and the provided-buffer ring resident, as in steady state
  $LT login --target 127.0.0.1:21143 --users 5000 --count 10000 --concurrency 20 --password secret --json >/dev/null
  $LT fetch --target 127.0.0.1:21143 --users 8 --concurrency 8 --duration 3s --password secret --json >/dev/null
}
for round in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do
    start "$bin"
    plain=$($LT idle --target 127.0.0.1:21143 --users 5000 --sessions "$SESSIONS" --rate 1000 --hold 3s \
      --pid $pid --password secret --json | per_session)
    # TLS in a fresh process: it would otherwise reuse what the plaintext sessions freed
    kill $pid; wait $pid 2>/dev/null || true
    start "$bin"
    tls=$($LT idle --target 127.0.0.1:21993 --tls implicit --users 5000 --sessions "$SESSIONS" --rate 1000 \
      --hold 3s --pid $pid --password secret --json | per_session)
    echo "round $round  $bin  plaintext $plain B  tls $tls B per idle session"
    kill $pid; wait $pid 2>/dev/null || true
    sleep 1
  done
done
