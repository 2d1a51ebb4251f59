#!/usr/bin/env bash
# Compare ringmail with nginx's mail proxy (the proxy the Zimbra Proxy is built on), side by
# side, with the same number of workers, in front of the same backend and lookup handler.
#
# Two backends, two tables (see docs/benchmarks.md):
#   dovecot    the primary table: a real Dovecot 2.3 with $USERS accounts (user<n>@example.com,
#              password "secret"), logins cycling over all of them, the 1 MiB message in the
#              mailboxes the fetch scenario uses; what users will see.
#   synthetic  the secondary table: `loadtest backend`, which answers in one write and has no
#              per-user cost; it flatters a relay, and shows the proxy's own ceiling.
#   web        the HTTP proxy: an nginx origin serving a 1 KiB page and a 10 MiB file, behind
#              ringmail's [http] and behind nginx as a plain reverse proxy (keep-alive upstream,
#              proxy_buffering off: both stream); scenarios http-small (keep-alive GETs on 20
#              connections) and http-10m (8 connections).
#   webtls     the same over TLS to the origin (Zimbra's default, zimbraReverseProxySSLToUpstreamEnabled):
#              ringmail with http.upstream_tls, nginx with proxy_pass https:// (keep-alive, session
#              reuse); neither verifies the origin's certificate (nginx's default). Not in the
#              default BACKENDS.
# Every scenario runs against both proxies in alternating order (A B, then B A, ...), ROUNDS
# times, each proxy started fresh per round and warmed up; the medians and ratios are written
# to $OUT/table.md.
#
#   scripts/bench-compare.sh                                  # both backends, 3 rounds
#   BACKENDS=dovecot ROUNDS=5 PIN=off scripts/bench-compare.sh
#
# ROUNDS (3), WORKERS (2), SESSIONS (9000 idle sessions), USERS (5000), PIN (on: workers pinned
# to CPUs, ringmail by default and nginx with worker_cpu_affinity auto; off: neither), BACKENDS
# ("dovecot synthetic web"), SCENARIOS ("login command fetch fetch-tls idle idle-tls http-small http-10m":
# the http ones run on the web backend only, the others on the mail backends), OUT (target/bench).
# BATCH_WAIT=1ms sets ringmail's workers.batch_wait (batched completion waits; off by default).
# BASELINE=/path/to/ringmail runs that ringmail build in nginx's place (same ports, same
# config): an A/B of two builds, interleaved; the "nginx" column of the table is then the
# baseline build. Build it from another commit with `git worktree add` and CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
WORKERS=${WORKERS:-2}
SESSIONS=${SESSIONS:-9000}
USERS=${USERS:-5000}
PIN=${PIN:-on}
BACKENDS=${BACKENDS:-dovecot synthetic web}
SCENARIOS=${SCENARIOS:-login command fetch fetch-tls idle idle-tls http-small http-10m}
OUT=${OUT:-target/bench}
LT=target/release/loadtest
RM=target/release/ringmail

need=()
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
[ -f /usr/lib/nginx/modules/ngx_mail_module.so ] || need+=(libnginx-mod-mail)
[ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd dovecot-pop3d)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ -n "${PERF:-}" ]; then
  command -v perf >/dev/null 2>&1 || need+=(linux-perf)
  command -v nstat >/dev/null 2>&1 || need+=(iproute2)
fi
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
cargo build --release --workspace

rm -rf "$OUT" && mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# 9000 idle sessions through a proxy use 18000 loopback connections per run; the settings are
# put back on exit
saved_range=$(sysctl -n net.ipv4.ip_local_port_range 2>/dev/null | tr '\t' ' ' || true)
saved_reserved=$(sysctl -n net.ipv4.ip_local_reserved_ports 2>/dev/null || true)
sysctl -qw net.ipv4.ip_local_port_range="1024 65000" 2>/dev/null || echo "note: could not widen the local port range"
sysctl -qw net.ipv4.tcp_tw_reuse=1 2>/dev/null || true
# keep the listening ports out of the (now wide) ephemeral range
sysctl -qw net.ipv4.ip_local_reserved_ports=7072,7073,7074,10080,10110,10143,11110,11143,21080,21110,21143,21993,22080,22110,22143,22993 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -keyout "$OUT/key.pem" -out "$OUT/cert.pem" -subj /CN=bench.example.test \
  -addext subjectAltName=DNS:bench.example.test,IP:127.0.0.1 2>/dev/null

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$saved_range" ] && sysctl -qw net.ipv4.ip_local_port_range="$saved_range" 2>/dev/null
  sysctl -qw net.ipv4.ip_local_reserved_ports="$saved_reserved" 2>/dev/null || true
  [ -f "$OUT/nginx/nginx.pid" ] && kill "$(cat "$OUT/nginx/nginx.pid")" 2>/dev/null || true
  [ -f "$OUT/dovecot/run/master.pid" ] && kill "$(cat "$OUT/dovecot/run/master.pid")" 2>/dev/null || true
  [ -f "$OUT/origin/nginx.pid" ] && kill "$(cat "$OUT/origin/nginx.pid")" 2>/dev/null || true
}
trap cleanup EXIT

# --- backends ---------------------------------------------------------------------------

# The 1 MiB message the fetch scenario reads (message 1 of INBOX).
python3 - "$OUT/message.eml" <<'PY'
import sys
body = b"Subject: bench\r\nFrom: bench@example.com\r\n\r\n"
i = 0
while len(body) < 1048576:
    body += b"%08d " % i + b"x" * 68 + b"\r\n"; i += 1
open(sys.argv[1], "wb").write(body[:1048574] + b"\r\n")
PY

start_dovecot() {
  local d="$OUT/dovecot"
  mkdir -p "$d/run" "$d/state" "$d/mail"
  cat >"$d/dovecot.conf" <<EOF
base_dir = $d/run
state_dir = $d/state
log_path = $d/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
first_valid_uid = 1
mail_location = maildir:$d/mail/%u
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $d/passwd
}
userdb {
  driver = static
  args = uid=dovecot gid=dovecot home=$d/mail/%u
}
# high-performance login processes, and up to 64 sessions per long-lived imap process, so that
# 9000 idle sessions fit in memory (9000 single-session imap processes would need ~20 GiB)
service imap-login {
  inet_listener imap {
    port = 11143
  }
  inet_listener imaps {
    port = 0
  }
  service_count = 0
  process_min_avail = $WORKERS
  client_limit = 20000
}
service pop3-login {
  inet_listener pop3 {
    port = 11110
  }
  inet_listener pop3s {
    port = 0
  }
}
service imap {
  service_count = 0
  client_limit = 64
  process_limit = 1024
}
service auth {
  client_limit = 20000
}
default_process_limit = 1024
default_client_limit = 20000
default_vsz_limit = 1G
protocol imap {
  mail_max_userip_connections = 100
}
EOF
  python3 - "$d/passwd" "$USERS" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for n in range(int(sys.argv[2])):
        f.write(f"user{n}@example.com:{{PLAIN}}secret\n")
PY
  # the fetch scenario reads message 1 of users 0..7
  for n in 0 1 2 3 4 5 6 7; do
    local m="$d/mail/user$n@example.com"
    mkdir -p "$m/cur" "$m/new" "$m/tmp"
    cp "$OUT/message.eml" "$m/cur/1700000000.M1P1.bench:2,S"
  done
  chown -R dovecot:dovecot "$d/mail"
  chmod 755 "$d"
  /usr/sbin/dovecot -c "$d/dovecot.conf"
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/11143) 2>/dev/null && break; sleep 0.1; done
  BACKEND_PID=$(cat "$d/run/master.pid")
  IMAP_BACKEND=127.0.0.1:11143 POP3_BACKEND=127.0.0.1:11110 LOOKUP=127.0.0.1:7073
  # Dovecot forks imap processes as sessions arrive, so no fixed pid list covers its CPU: the
  # "backend direct" rows give its latency and throughput only
  BACKEND_PIDS() { :; }
}

start_synthetic() {
  $LT backend --imap 127.0.0.1:10143 --pop3 127.0.0.1:10110 --password secret --message-size 1m 2>"$OUT/backend.log" &
  BACKEND_PID=$!; pids+=($BACKEND_PID)
  IMAP_BACKEND=127.0.0.1:10143 POP3_BACKEND=127.0.0.1:10110 LOOKUP=127.0.0.1:7072
  BACKEND_PIDS() { echo "$BACKEND_PID"; }
  sleep 0.3
}

# an nginx web origin standing in for a mailbox server's web port
start_web() {
  # a previous web backend's origin (web, then webtls)
  if [ -f "$OUT/origin/nginx.pid" ]; then
    kill "$(cat "$OUT/origin/nginx.pid")" 2>/dev/null || true
    sleep 1
  fi
  UPSTREAM_TLS=
  mkdir -p "$OUT/origin/html"
  head -c 1024 /dev/zero | tr '\0' 'x' >"$OUT/origin/html/small.html"
  head -c 10485760 /dev/zero >"$OUT/origin/html/10m.bin"
  cat >"$OUT/origin/nginx.conf" <<EOF
worker_processes $WORKERS;
pid $OUT/origin/nginx.pid;
error_log $OUT/origin/error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:10080; root $OUT/origin/html; }
    server {
        listen 127.0.0.1:10443 ssl;
        ssl_certificate $OUT/cert.pem;
        ssl_certificate_key $OUT/key.pem;
        root $OUT/origin/html;
    }
}
EOF
  nginx -c "$OUT/origin/nginx.conf" -p "$OUT/origin/"
  sleep 0.5
  ORIGIN=127.0.0.1:10080 IMAP_BACKEND=127.0.0.1:10080 POP3_BACKEND=127.0.0.1:10080 LOOKUP=127.0.0.1:7074
  BACKEND_PIDS() { pgrep -P "$(cat "$OUT/origin/nginx.pid")" | tr '\n' ' '; }
}

# the same origin, reached over TLS
start_webtls() {
  start_web
  ORIGIN=127.0.0.1:10443 UPSTREAM_TLS=1 LOOKUP=127.0.0.1:7075
}

start_lookup() {
  $LT lookup --listen "$LOOKUP" --imap-backend "$IMAP_BACKEND" --pop3-backend "$POP3_BACKEND" 2>>"$OUT/lookup.log" &
  pids+=($!)
  sleep 0.3
}

# --- proxies ----------------------------------------------------------------------------

write_proxy_configs() {
  local pin_rm="" affinity="worker_cpu_affinity auto;" up_tls=false scheme=http
  [ -z "${UPSTREAM_TLS:-}" ] || { up_tls=true; scheme=https; }
  [ "$PIN" = on ] || { pin_rm="pin = false"; affinity=""; }
  local batch=""
  [ -z "${BATCH_WAIT:-}" ] || batch="batch_wait = \"$BATCH_WAIT\""
  cat >"$OUT/ringmail.toml" <<EOF
[workers]
count = $WORKERS
$pin_rm
$batch
[imap]
listen = ["127.0.0.1:21143"]
listen_tls = ["127.0.0.1:21993"]
[pop3]
listen = ["127.0.0.1:21110"]
[tls]
certificates = [{ cert = "$OUT/cert.pem", key = "$OUT/key.pem" }]
[lookup]
handlers = ["http://$LOOKUP/service/extension/nginx-lookup"]
[http]
listen = ["127.0.0.1:21080"]
servers = ["${ORIGIN:-127.0.0.1:10080}"]
upstream_tls = $up_tls
[upstream]
insecure_skip_verify = $up_tls
[shutdown]
grace = "0s"
spread = "0s"
EOF
  mkdir -p "$OUT/nginx"
  cat >"$OUT/nginx/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_mail_module.so;
worker_processes $WORKERS;
$affinity
worker_rlimit_nofile 20000;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log error;
events { worker_connections 20000; }
mail {
    server_name bench.example.test;
    auth_http $LOOKUP/auth;
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
http {
    access_log off;
    keepalive_requests 1000000;
    upstream origin { server ${ORIGIN:-127.0.0.1:10080}; keepalive 64; }
    server {
        listen 127.0.0.1:22080;
        location / {
            proxy_pass $scheme://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_buffering off;
        }
    }
}
EOF
}

# start_<proxy>: start fresh and set PIDARGS / PORT / TLSPORT
start_ringmail() {
  $RM --config "$OUT/ringmail.toml" 2>"$OUT/ringmail.log" &
  RM_PID=$!; pids+=($RM_PID)
  for _ in $(seq 50); do grep -q "ringmail ready" "$OUT/ringmail.log" 2>/dev/null && break; sleep 0.1; done
  PIDARGS="--pid $RM_PID"; PORT=21143; TLSPORT=21993; HTTPPORT=21080
}
stop_ringmail() { kill "$RM_PID"; wait "$RM_PID" 2>/dev/null || true; }
start_nginx() {
  nginx -c "$OUT/nginx/nginx.conf" -p "$OUT/nginx/"
  sleep 0.7
  PIDARGS=$(pgrep -P "$(cat "$OUT/nginx/nginx.pid")" | sed 's/^/--pid /' | tr '\n' ' ')
  PORT=22143; TLSPORT=22993; HTTPPORT=22080
}
stop_nginx() {
  local p; p=$(cat "$OUT/nginx/nginx.pid"); kill -QUIT "$p"
  while kill -0 "$p" 2>/dev/null; do sleep 0.1; done
}
if [ -n "${BASELINE:-}" ]; then
  # A/B: the baseline ringmail build on nginx's ports
  start_nginx() {
    sed 's/21143/22143/; s/21993/22993/; s/21110/22110/; s/21080/22080/' "$OUT/ringmail.toml" >"$OUT/baseline.toml"
    "$BASELINE" --config "$OUT/baseline.toml" 2>"$OUT/baseline.log" &
    BASE_PID=$!; pids+=($BASE_PID)
    for _ in $(seq 50); do grep -q "ringmail ready" "$OUT/baseline.log" 2>/dev/null && break; sleep 0.1; done
    PIDARGS="--pid $BASE_PID"; PORT=22143; TLSPORT=22993; HTTPPORT=22080
  }
  stop_nginx() { kill "$BASE_PID"; wait "$BASE_PID" 2>/dev/null || true; }
fi

# PERF=1: while each measured run of a proxy is under way, count what it asks of the kernel
# (perf stat: syscalls, context switches, io_uring operations and poll arms; user and system
# CPU from /proc) over PERF_SECONDS (6) from its second second, into
# $OUT/perf/<backend>-<scenario>-<target>-<round>.txt; $OUT/perf.md divides them by the
# operations the run made over the same seconds, with the host's TCP segments (nstat) per
# operation beside them. PERF=record also samples call graphs
# (perf record -e cpu-clock -g) into <same name>.data. The counting costs a little CPU, the
# same for both proxies; compare ratios from runs without it.
perf_run() { # perf_run <file> <pids...>
  local f=$1; shift
  local pl; pl=$(echo "$@" | tr ' ' ',')
  sleep 2
  local before; before=$(for p in "$@"; do awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null; done | awk '{u+=$1; s+=$2} END {print u, s}')
  local segs; segs=$(tcp_counts)
  local sw; sw=$(switches "$@")
  perf stat -x, -e task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter \
    -e syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom \
    -e syscalls:sys_enter_epoll_wait,io_uring:io_uring_submit_req,io_uring:io_uring_poll_arm \
    -p "$pl" -o "$f" -- sleep "${PERF_SECONDS:-6}" 2>/dev/null &
  local stat=$!
  if [ "$PERF" = record ]; then
    # and a profile of the same seconds (perf report -i <file>.data)
    perf record -q -e cpu-clock -g -p "$pl" -o "${f%.txt}.data" -- sleep "${PERF_SECONDS:-6}" >/dev/null 2>&1 || true
  fi
  wait "$stat" || true
  local after; after=$(for p in "$@"; do awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null; done | awk '{u+=$1; s+=$2} END {print u, s}')
  echo "ticks utime,stime (1/$(getconf CLK_TCK) s): before $before after $after" >>"$f"
  # the whole host's TCP segments (clients, proxy and backend together: what the proxy makes
  # the others send counts too)
  echo "tcp before $segs after $(tcp_counts)" >>"$f"
  echo "switches voluntary,involuntary before $sw after $(switches "$@")" >>"$f"
}
switches() { # voluntary and involuntary context switches of the processes' threads
  for p in "$@"; do cat /proc/"$p"/task/*/status 2>/dev/null; done |
    awk '$1 == "voluntary_ctxt_switches:" {v+=$2} $1 == "nonvoluntary_ctxt_switches:" {n+=$2} END {print v+0, n+0}'
}
tcp_counts() { # TcpOutSegs DelayedACKs TCPPureAcks, host-wide
  nstat -az 2>/dev/null | awk '$1 == "TcpOutSegs" {o=$2} $1 == "TcpExtDelayedACKs" {d=$2} $1 == "TcpExtTCPPureAcks" {p=$2} END {print o+0, d+0, p+0}'
}
run() { # run <backend> <round> <target> <scenario-name> <loadtest args...>
  local backend=$1 round=$2 target=$3 name=$4; shift 4
  echo "$backend  round $round  $target  $name" >&2
  local perf_pid=
  if [ -n "${PERF:-}" ] && [ "$target" != backend ]; then
    mkdir -p "$OUT/perf"
    # shellcheck disable=SC2086
    perf_run "$OUT/perf/$backend-$name-$target-$round.txt" $(echo $PIDARGS | sed 's/--pid //g') &
    perf_pid=$!
  fi
  # reports (charts) next to the table; up to 1 % errors is tolerated, and reported
  $LT "$@" --password secret --json --label "$target" --max-errors 0.01 \
    --report "$OUT/reports/$backend-$name-$target-$round" | python3 -c "
import json, sys
r = json.load(sys.stdin); r['round'] = $round; r['target'] = '$target'; r['name'] = '$name'
r['backend'] = '$backend'; r['pin'] = '$PIN'; r['workers'] = $WORKERS
print(json.dumps(r))" >>"$OUT/results.jsonl"
  if [ -n "$perf_pid" ]; then wait "$perf_pid" || true; fi
  sleep 2
}

http_scenarios() { # http_scenarios <backend> <round> <target> <port>
  local b=$1 r=$2 t=$3 port=$4
  for s in $SCENARIOS; do
    case $s in
      http-small) run "$b" "$r" "$t" http-small http --target 127.0.0.1:$port --path /small.html --duration 10s --concurrency 20 $PIDARGS ;;
      http-10m) run "$b" "$r" "$t" http-10m http --target 127.0.0.1:$port --path /10m.bin --duration 10s --concurrency 8 $PIDARGS ;;
    esac
  done
}

# every user logs in twice, so that the routes are cached
warm_up() {
  $LT login --target 127.0.0.1:$PORT --users $USERS --count $((2 * USERS)) --concurrency 20 --password secret --json --max-errors 1 >/dev/null
}

# idle memory is measured in a fresh process (routes warmed): what earlier scenarios freed
# would otherwise be reused by the idle sessions and flatter the figure. A short fetch first
# makes ringmail's provided-buffer ring resident (a per-worker cost, not a per-session one).
fresh() {
  "stop_$1"
  "start_$1"
  warm_up
  $LT fetch --target 127.0.0.1:$PORT --users 8 --concurrency 8 --duration 3s --password secret --json >/dev/null
}

scenarios() { # scenarios <backend> <round> <target>
  local b=$1 r=$2 t=$3 u="--users $USERS"
  if [ "$b" = web ] || [ "$b" = webtls ]; then
    $LT http --target 127.0.0.1:$HTTPPORT --path /small.html --count 2000 --concurrency 20 --json --max-errors 1 >/dev/null
    http_scenarios "$b" "$r" "$t" "$HTTPPORT"
    return
  fi
  warm_up
  for s in $SCENARIOS; do
    case $s in
      login) run "$b" "$r" "$t" login login --target 127.0.0.1:$PORT $u --duration 10s --concurrency 20 $PIDARGS ;;
      command) run "$b" "$r" "$t" command command --target 127.0.0.1:$PORT $u --sessions 1000 --rate 1000 --duration 10s $PIDARGS ;;
      fetch) run "$b" "$r" "$t" fetch fetch --target 127.0.0.1:$PORT --users 8 --duration 10s --concurrency 8 $PIDARGS ;;
      fetch-tls) run "$b" "$r" "$t" fetch-tls fetch --target 127.0.0.1:$TLSPORT --tls implicit --users 8 --duration 10s --concurrency 8 $PIDARGS ;;
      idle) fresh "$t"; run "$b" "$r" "$t" idle idle --target 127.0.0.1:$PORT $u --sessions "$SESSIONS" --rate 1000 --hold 5s $PIDARGS ;;
      idle-tls) fresh "$t"; run "$b" "$r" "$t" idle-tls idle --target 127.0.0.1:$TLSPORT --tls implicit $u --sessions "$SESSIONS" --rate 1000 --hold 5s $PIDARGS ;;
    esac
  done
}

for backend in $BACKENDS; do
  "start_$backend"
  start_lookup
  write_proxy_configs
  # warm the mail backend up first, unmeasured: a fresh Dovecot (its auth cache, its imap
  # processes) made the first proxy of round 1, always ringmail, measure 20-38 % dearer per
  # NOOP than the second in every A/B of session 10
  if [ "$backend" != web ] && [ "$backend" != webtls ]; then
    for s in $SCENARIOS; do
      case $s in
        login) $LT login --target "$IMAP_BACKEND" --users "$USERS" --duration 5s --concurrency 20 >/dev/null 2>&1 || true ;;
        command) $LT command --target "$IMAP_BACKEND" --users "$USERS" --sessions 1000 --rate 1000 --duration 3s >/dev/null 2>&1 || true ;;
        # every account logged in and its INBOX selected once (Dovecot creates the maildirs
        # on first use): without it the first proxy measured, ringmail, waited ~9 s per login
        # in round 1 of session 12's idle run and kept that storm's memory
        idle|idle-tls) $LT idle --target "$IMAP_BACKEND" --users "$USERS" --sessions "$USERS" --rate 1000 --hold 1s >/dev/null 2>&1 || true ;;
      esac
    done
  fi
  for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order="ringmail nginx"; else order="nginx ringmail"; fi
    for t in $order; do
      "start_$t"
      scenarios "$backend" "$round" "$t"
      "stop_$t"
    done
    PIDARGS=$(BACKEND_PIDS | tr ' ' '\n' | { grep . || true; } | sed 's/^/--pid /' | tr '\n' ' ')
    PORT=${IMAP_BACKEND##*:}
    if [ "$backend" = web ] || [ "$backend" = webtls ]; then
      # the origin's plaintext port: loadtest speaks plain HTTP
      PORT=10080
      http_scenarios "$backend" "$round" backend "$PORT"
      continue
    fi
    for s in $SCENARIOS; do
      case $s in
        login) run "$backend" "$round" backend login login --target 127.0.0.1:$PORT --users "$USERS" --duration 10s --concurrency 20 $PIDARGS ;;
        command) run "$backend" "$round" backend command command --target 127.0.0.1:$PORT --users "$USERS" --sessions 1000 --rate 1000 --duration 10s $PIDARGS ;;
        fetch) run "$backend" "$round" backend fetch fetch --target 127.0.0.1:$PORT --users 8 --duration 10s --concurrency 8 $PIDARGS ;;
      esac
    done
  done
done

python3 scripts/bench-table.py "$OUT/results.jsonl" | tee "$OUT/table.md"
if [ -n "${PERF:-}" ]; then
  python3 scripts/bench-perf.py "$OUT" | tee "$OUT/perf.md"
fi
# one overlay chart per backend and scenario: ringmail against nginx, first round
for backend in $BACKENDS; do
  for s in $SCENARIOS; do
    a="$OUT/reports/$backend-$s-ringmail-1/report.json"
    b="$OUT/reports/$backend-$s-nginx-1/report.json"
    [ -f "$a" ] && [ -f "$b" ] && $LT compare "$a" "$b" --out "$OUT/reports/compare-$backend-$s.html" \
      > "$OUT/reports/compare-$backend-$s.txt"
  done
done
echo "results: $OUT/results.jsonl, table: $OUT/table.md, charts: $OUT/reports/" >&2
