#!/usr/bin/env python3
"""Medians and ratios (ringmail / nginx) from bench-compare.sh's results.jsonl, as Markdown."""
import json
import statistics
import sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = defaultdict(list)
for r in rows:
    by[(r["name"], r["target"])].append(r)


def med(name, target, field):
    vals = [r[field] for r in by.get((name, target), []) if r.get(field) is not None]
    return statistics.median(vals) if vals else None


def p99(name, target):
    vals = [r["latency_us"]["p99"] for r in by.get((name, target), [])]
    return statistics.median(vals) if vals else None


metrics = [
    ("login", "CPU µs per login (warm route cache)", lambda t: med("login", t, "cpu_us_per_op"), "{:.1f}", "≤ 0.5"),
    ("login", "logins/s", lambda t: med("login", t, "ops_per_s"), "{:.0f}", ""),
    ("command", "CPU µs per command (1000 sessions)", lambda t: med("command", t, "cpu_us_per_op"), "{:.1f}", "≤ 0.8"),
    ("command", "p99 µs per command (1000 sessions)", lambda t: p99("command", t), "{:.0f}", "≤ 1"),
    ("fetch", "CPU s per GB (1 MiB FETCH)", lambda t: med("fetch", t, "cpu_s_per_gb"), "{:.2f}", "≤ 0.8"),
    ("fetch", "MB/s (1 MiB FETCH, 4 sessions)", lambda t: med("fetch", t, "mb_per_s"), "{:.0f}", ""),
    ("idle", "bytes of RSS per idle session, plaintext", lambda t: med("idle", t, "bytes_per_session"), "{:.0f}", "≤ 2048 B"),
    ("idle-tls", "bytes of RSS per idle session, TLS", lambda t: med("idle-tls", t, "bytes_per_session"), "{:.0f}", "≤ 6144 B"),
]

rounds = len({r["round"] for r in rows})
print(f"Medians of {rounds} round(s); ratio = ringmail / nginx.\n")
print("| metric | ringmail | nginx | ratio | target | backend direct |")
print("|---|---|---|---|---|---|")
for name, label, get, fmt, target in metrics:
    rm, ng, be = get("ringmail"), get("nginx"), get("backend")
    f = lambda v: fmt.format(v) if v is not None else "—"
    ratio = f"{rm / ng:.2f}" if rm is not None and ng else "—"
    print(f"| {label} | {f(rm)} | {f(ng)} | {ratio} | {target} | {f(be)} |")

errors = defaultdict(int)
for r in rows:
    for k, v in r.get("errors", {}).items():
        errors[(r["target"], r["name"], k)] += v
if errors:
    print("\nErrors: " + ", ".join(f"{t}/{n} {k}: {v}" for (t, n, k), v in sorted(errors.items())))
else:
    print("\nNo errors in any run.")
