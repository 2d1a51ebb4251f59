#!/usr/bin/env bash
# What a route costs a login, by where it comes from: the process cache, the memcached tier,
# or the lookup handler. Same ringmail, same backend and handler (`loadtest backend`,
# `loadtest lookup`), a real memcached; `lookup.cache_ttl = "0s"` makes every login miss the
# process cache, so the memcached and handler rows pay their round trips on every login.
# Rounds alternate the three set-ups; medians go to $OUT/table.md (docs/benchmarks.md).
#
#   scripts/bench-routes.sh            # ROUNDS=3 USERS=1000 DURATION=10s WORKERS=2
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
USERS=${USERS:-1000}
DURATION=${DURATION:-10s}
WORKERS=${WORKERS:-2}
OUT=${OUT:-target/bench-routes}
LT=target/release/loadtest
RM=target/release/ringmail

[ -x /usr/bin/memcached ] || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends memcached; }
cargo build --release --workspace
rm -rf "$OUT" && mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
$LT backend --imap 127.0.0.1:23143 --pop3 127.0.0.1:23110 >/dev/null 2>&1 & pids+=($!)
$LT lookup --listen 127.0.0.1:23072 --imap-backend 127.0.0.1:23143 --pop3-backend 127.0.0.1:23110 >/dev/null 2>&1 & pids+=($!)
/usr/bin/memcached -l 127.0.0.1 -p 23211 -U 0 -m 64 -u nobody & pids+=($!)
sleep 0.5

conf() { # name, extra
  cat > "$OUT/$1.toml" <<CONF
[workers]
count = $WORKERS
pin = false
[admin]
listen = ""
[imap]
listen = ["127.0.0.1:23001"]
[pop3]
listen = []
[lookup]
handlers = ["http://127.0.0.1:23072/service/extension/nginx-lookup"]
$2
CONF
}
conf process ''
conf memcached $'cache_ttl = "0s"\n[memcache]\nservers = ["127.0.0.1:23211"]'
conf handler 'cache_ttl = "0s"'

run() { # name, round
  $RM --config "$OUT/$1.toml" 2>"$OUT/$1-$2.log" & local pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/23001) 2>/dev/null && break; sleep 0.05; done
  # warm up: every user's route looked up once (into the process cache and memcached)
  $LT login --target 127.0.0.1:23001 --users "$USERS" --count "$((USERS * 2))" --password secret >/dev/null
  $LT login --target 127.0.0.1:23001 --users "$USERS" --duration "$DURATION" --password secret \
    --pid "$pid" --json --label "$1" > "$OUT/$1-$2.json"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
for r in $(seq "$ROUNDS"); do
  for s in process memcached handler; do run "$s" "$r"; done
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rows = []
for s, what in [("process", "process cache (routes warm)"),
                ("memcached", "memcached tier (process cache off)"),
                ("handler", "lookup handler on every login")]:
    runs = [json.load(open(f"{out}/{s}-{r}.json")) for r in range(1, rounds + 1)]
    def med(f):
        return statistics.median(f(j) for j in runs)
    rows.append((what,
                 med(lambda j: j["ops_per_s"]),
                 med(lambda j: j["latency_us"]["p50"]),
                 med(lambda j: j["latency_us"]["p99"]),
                 med(lambda j: j["cpu_us_per_op"])))
with open(f"{out}/table.md", "w") as f:
    f.write("| route from | logins/s | p50 µs | p99 µs | ringmail CPU µs per login |\n|---|---|---|---|---|\n")
    for r in rows:
        f.write(f"| {r[0]} | {r[1]:.0f} | {r[2]:.0f} | {r[3]:.0f} | {r[4]:.1f} |\n")
print(open(f"{out}/table.md").read())
PY
