#!/usr/bin/env bash
# Soak test (not run in CI): SESSIONS logged-in IMAP sessions through ringmail doing NOOPs for
# SECONDS, while the lookup handler is restarted twice and ringmail gets SIGHUP (certificate
# reload) twice. Pass: no session dropped (loadtest reports no error) and ringmail's RSS flat
# once every session is open.
#
#   scripts/soak.sh [SECONDS] [SESSIONS]          (default: 600 s, 9000 sessions)
#   RINGMAIL_FLAGS="--buffers-per-worker 64" scripts/soak.sh      (extra ringmail flags)
#
# The backend is `loadtest backend` (one process, a task per session): a Dovecot with 9000
# logged-in sessions needs 9000 imap processes, more than this 2-core machine can run beside
# the proxy and the load generator. Output: a summary on stdout, files in $SOAK_DIR
# (default: a new temporary directory): report.json, rss.tsv, ringmail.log.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-600}"
sessions="${2:-9000}"
dir="${SOAK_DIR:-$(mktemp -d /tmp/ringmail-soak.XXXXXX)}"
mkdir -p "$dir"
ulimit -n 20000

cargo build --release --workspace --quiet
bin=target/release

# ports kept out of the ephemeral range (a benchmark may have widened it)
imap=21143 pop3=21110 lookup=27072 proxy=21430
reserved=$(sysctl -n net.ipv4.ip_local_reserved_ports 2>/dev/null || true)
sysctl -qw net.ipv4.ip_local_reserved_ports="${reserved:+$reserved,}$imap,$pop3,$lookup,$proxy" 2>/dev/null || true

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj /CN=soak.example.test -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sysctl -qw net.ipv4.ip_local_reserved_ports="$reserved" 2>/dev/null || true
}
trap cleanup EXIT

"$bin/loadtest" backend --imap "127.0.0.1:$imap" --pop3 "127.0.0.1:$pop3" --message-size 10k \
  2> "$dir/backend.log" &
pids+=($!)
start_lookup() {
  "$bin/loadtest" lookup --listen "127.0.0.1:$lookup" --imap-backend "127.0.0.1:$imap" \
    --pop3-backend "127.0.0.1:$pop3" 2>> "$dir/lookup.log" &
  lookup_pid=$!
  pids+=($lookup_pid)
}
start_lookup

cat > "$dir/ringmail.toml" <<CONF
[workers]
max_connections = 10000
[imap]
listen = ["127.0.0.1:$proxy"]
starttls = "on"
[pop3]
listen = []
[tls]
certificates = [{ cert = "$dir/cert.pem", key = "$dir/key.pem" }]
[lookup]
handlers = ["http://127.0.0.1:$lookup/lookup"]
CONF
# shellcheck disable=SC2086
"$bin/ringmail" --config "$dir/ringmail.toml" ${RINGMAIL_FLAGS:-} 2> "$dir/ringmail.log" &
rm_pid=$!
pids+=($rm_pid)
for _ in $(seq 100); do
  grep -q "ringmail ready" "$dir/ringmail.log" && break
  sleep 0.1
done

rate=1000
open_secs=$(( sessions / rate + 1 ))
"$bin/loadtest" command --target "127.0.0.1:$proxy" --sessions "$sessions" --rate "$rate" \
  --duration "${secs}s" --users 5000 --pid "$rm_pid" --json > "$dir/report.json" 2> "$dir/loadtest.log" &
lt_pid=$!
pids+=($lt_pid)

rss() { awk '/VmRSS/ {print $2}' "/proc/$rm_pid/status"; }
echo -e "seconds\trss_kib\tevent" > "$dir/rss.tsv"
t0=$(date +%s)
total=$(( secs + open_secs ))
events=( $(( open_secs + secs / 4 )) $(( open_secs + secs / 2 )) $(( open_secs + 3 * secs / 4 )) )
done_events=0
while kill -0 "$lt_pid" 2>/dev/null; do
  now=$(( $(date +%s) - t0 ))
  event=""
  if [ $done_events -lt 3 ] && [ "$now" -ge "${events[$done_events]}" ]; then
    case $done_events in
      0) kill "$lookup_pid"; sleep 1; start_lookup; event="lookup restarted" ;;
      1) kill -HUP "$rm_pid"; event="SIGHUP" ;;
      2) kill "$lookup_pid"; sleep 1; start_lookup; kill -HUP "$rm_pid"; event="lookup restarted + SIGHUP" ;;
    esac
    done_events=$(( done_events + 1 ))
  fi
  echo -e "$now\t$(rss)\t$event" >> "$dir/rss.tsv"
  [ "$now" -gt $(( total + 120 )) ] && { echo "loadtest did not finish"; break; }
  sleep 10
done
wait "$lt_pid" || true

python3 - "$dir" "$open_secs" "$sessions" <<'PY'
import json, sys
d, open_secs, sessions = sys.argv[1], int(sys.argv[2]), sys.argv[3]
r = json.load(open(f"{d}/report.json"))
rows = [l.rstrip("\n").split("\t") for l in open(f"{d}/rss.tsv")][1:]
rss = [(int(t), int(k)) for t, k, *_ in rows if k]
steady = [k for t, k in rss if t >= open_secs + 20]
print(f"sessions {sessions}  seconds {r['seconds']:.0f}  ops {r['ops']}  errors {r['errors'] or 'none'}  "
      f"p50 {r['latency_us']['p50']} us  p99 {r['latency_us']['p99']} us")
if steady:
    print(f"ringmail RSS after all sessions opened: first {steady[0]} KiB, "
          f"min {min(steady)} KiB, max {max(steady)} KiB, last {steady[-1]} KiB "
          f"(growth {steady[-1] - steady[0]:+d} KiB over {len(steady) * 10} s)")
print("events:", [(t, e) for t, _, *e in rows if e and e[0]])
PY
echo "files in $dir"
grep -c "SIGHUP: TLS certificates reloaded" "$dir/ringmail.log" | sed 's/^/certificate reloads logged: /'
