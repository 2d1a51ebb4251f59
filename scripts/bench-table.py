#!/usr/bin/env python3
"""Medians and ratios (ringmail / nginx) from bench-compare.sh's results.jsonl, as Markdown:
one table per backend, the real Dovecot first."""
import json
import statistics
import sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = defaultdict(list)
for r in rows:
    by[(r.get("backend", "synthetic"), r["name"], r["target"])].append(r)


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def field(b, name, target, f):
    return med([r.get(f) for r in by.get((b, name, target), [])])


def pct(b, name, target, p):
    return med([r["latency_us"][p] for r in by.get((b, name, target), [])])


# (scenario, label, getter, format, target, lower is better)
metrics = [
    ("login", "CPU µs per login", lambda b, t: field(b, "login", t, "cpu_us_per_op"), "{:.1f}", "≤ 0.5", True),
    ("login", "logins/s", lambda b, t: field(b, "login", t, "ops_per_s"), "{:.0f}", "", False),
    ("command", "CPU µs per NOOP (1000 sessions)", lambda b, t: field(b, "command", t, "cpu_us_per_op"), "{:.1f}", "≤ 0.7", True),
    ("command", "NOOP p50 µs", lambda b, t: pct(b, "command", t, "p50"), "{:.0f}", "", True),
    ("command", "NOOP p99 µs", lambda b, t: pct(b, "command", t, "p99"), "{:.0f}", "≤ 1", True),
    ("fetch", "CPU ms per MB (1 MiB FETCH)", lambda b, t: field(b, "fetch", t, "cpu_s_per_gb"), "{:.2f}", "≤ 0.6", True),
    ("fetch", "MB/s (1 MiB FETCH, 8 sessions)", lambda b, t: field(b, "fetch", t, "mb_per_s"), "{:.0f}", "≥ 1", False),
    ("fetch-tls", "CPU ms per MB (1 MiB FETCH, client TLS)", lambda b, t: field(b, "fetch-tls", t, "cpu_s_per_gb"), "{:.2f}", "", True),
    ("fetch-tls", "MB/s (1 MiB FETCH, client TLS)", lambda b, t: field(b, "fetch-tls", t, "mb_per_s"), "{:.0f}", "", False),
    ("idle", "RSS bytes per idle session, plaintext", lambda b, t: field(b, "idle", t, "bytes_per_session"), "{:.0f}", "≤ 1024 B", True),
    ("idle-tls", "RSS bytes per idle session, TLS", lambda b, t: field(b, "idle-tls", t, "bytes_per_session"), "{:.0f}", "≤ 4096 B", True),
    ("http-small", "CPU µs per request (1 KiB GET, keep-alive)", lambda b, t: field(b, "http-small", t, "cpu_us_per_op"), "{:.1f}", "≤ 1", True),
    ("http-small", "requests/s (1 KiB GET, 20 connections)", lambda b, t: field(b, "http-small", t, "ops_per_s"), "{:.0f}", "", False),
    ("http-small", "GET p99 µs", lambda b, t: pct(b, "http-small", t, "p99"), "{:.0f}", "", True),
    ("http-10m", "CPU µs per request (10 MiB GET)", lambda b, t: field(b, "http-10m", t, "cpu_us_per_op"), "{:.0f}", "≤ 1", True),
    ("http-10m", "MB/s (10 MiB GET, 8 connections)", lambda b, t: field(b, "http-10m", t, "mb_per_s"), "{:.0f}", "", False),
]

backends = sorted({k[0] for k in by}, key=lambda b: (b != "dovecot", b))
for b in backends:
    bro = [r for r in rows if r.get("backend", "synthetic") == b]
    rounds = len({r["round"] for r in bro})
    pins = sorted({r.get("pin", "on") for r in bro})
    workers = sorted({r.get("workers", 2) for r in bro})
    title = {"dovecot": "Real Dovecot backend (primary)", "synthetic": "`loadtest backend` (secondary)", "web": "HTTP proxy: nginx origin, ringmail `[http]` vs nginx reverse proxy", "webtls": "HTTP proxy over TLS to the origin (`http.upstream_tls` vs nginx `proxy_pass https://`)"}.get(b, b)
    print(f"### {title}\n")
    print(f"Medians of {rounds} round(s); workers {workers}, pinned {pins}; ratio = ringmail / nginx.\n")
    print("| metric | ringmail | nginx | ratio | target | met? | backend direct |")
    print("|---|---|---|---|---|---|---|")
    for name, label, get, fmt, target, lower in metrics:
        rm, ng, be = get(b, "ringmail"), get(b, "nginx"), get(b, "backend")
        if rm is None and ng is None:
            continue  # a scenario this backend does not run
        f = lambda v: fmt.format(v) if v is not None else "—"
        ratio = rm / ng if rm is not None and ng else None
        met = ""
        if target.startswith("≤ ") and target.endswith(" B") and rm is not None:
            met = "yes" if rm <= float(target[2:-2]) else "no"
        elif target.startswith("≤ ") and ratio is not None:
            met = "yes" if ratio <= float(target[2:]) else "no"
        elif target.startswith("≥ ") and ratio is not None:
            met = "yes" if ratio >= float(target[2:]) else "no"
        r = f"{ratio:.2f}" if ratio is not None else "—"
        print(f"| {label} | {f(rm)} | {f(ng)} | {r} | {target} | {met} | {f(be)} |")
    errors = defaultdict(int)
    for r in bro:
        for k, v in r.get("errors", {}).items():
            errors[(r["target"], r["name"], k)] += v
    if errors:
        print("\nErrors: " + ", ".join(f"{t}/{n} {k}: {v}" for (t, n, k), v in sorted(errors.items())))
    else:
        print("\nNo errors in any run.")
    print()
