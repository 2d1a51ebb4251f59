#!/usr/bin/env python3
"""Per-operation kernel counts from bench-compare.sh's PERF=1 files: each perf stat file
($OUT/perf/<backend>-<scenario>-<target>-<round>.txt) divided by the operations its run made
over the same seconds (from the run's per-second series in results.jsonl). Markdown, one row
per file, then the medians per backend, scenario and target."""
import json
import os
import re
import statistics
import sys
from collections import defaultdict

out = sys.argv[1]
seconds = float(os.environ.get("PERF_SECONDS", "6"))
runs = {}
for line in open(os.path.join(out, "results.jsonl")):
    if line.strip():
        r = json.loads(line)
        runs[(r["backend"], r["name"], r["target"], r["round"])] = r

EVENTS = [
    ("task-clock", "CPU µs", 1e3),  # msec -> µs
    ("context-switches", "ctx sw", 1),
    ("raw_syscalls:sys_enter", "syscalls", 1),
    ("syscalls:sys_enter_io_uring_enter", "uring enter", 1),
    ("io_uring:io_uring_submit_req", "ring ops", 1),
    ("io_uring:io_uring_poll_arm", "poll arms", 1),
    ("syscalls:sys_enter_sendto", "sendto", 1),
    ("syscalls:sys_enter_recvfrom", "recvfrom", 1),
    ("syscalls:sys_enter_epoll_wait", "epoll_wait", 1),
]


def ops_between(r, t0, t1):
    """Operations the run made between t0 and t1 seconds (linear between its samples)."""
    s = r.get("series") or []
    if len(s) < 2:
        return r["ops_per_s"] * (t1 - t0)

    def at(t):
        for a, b in zip(s, s[1:]):
            if a["t"] <= t <= b["t"]:
                f = (t - a["t"]) / max(b["t"] - a["t"], 1e-9)
                return a["ops"] + f * (b["ops"] - a["ops"])
        return s[-1]["ops"] if t > s[-1]["t"] else s[0]["ops"]

    return at(t1) - at(t0)


rows = []
for name in sorted(os.listdir(os.path.join(out, "perf"))):
    m = re.match(r"(.+?)-(login|command|fetch-tls|fetch|idle-tls|idle|http-small|http-10m)-(ringmail|nginx)-(\d+)\.txt$", name)
    if not m:
        continue
    backend, scen, target, rnd = m.group(1), m.group(2), m.group(3), int(m.group(4))
    r = runs.get((backend, scen, target, rnd))
    if not r:
        continue
    counts = {}
    ticks = None
    segs = None
    switches = None
    for line in open(os.path.join(out, "perf", name)):
        parts = line.strip().split(",")
        if len(parts) > 3 and parts[0] and parts[0][0].isdigit():
            counts[parts[2]] = float(parts[0])
        g = re.match(r"tcp before (\d+) (\d+) (\d+) after (\d+) (\d+) (\d+)", line)
        if g:
            v = [int(x) for x in g.groups()]
            segs = (v[3] - v[0], v[4] - v[1], v[5] - v[2])
        w = re.match(r"switches voluntary,involuntary before (\d+) (\d+) after (\d+) (\d+)", line)
        if w:
            v = [int(x) for x in w.groups()]
            switches = (v[2] - v[0], v[3] - v[1])
        t = re.match(r"ticks utime,stime \(1/(\d+) s\): before (\d+) (\d+) after (\d+) (\d+)", line)
        if t:
            hz = int(t.group(1))
            ticks = ((int(t.group(4)) - int(t.group(2))) / hz, (int(t.group(5)) - int(t.group(3))) / hz)
    # perf_run starts 2 s after the run (the sessions are open by then) and counts PERF_SECONDS
    ops = ops_between(r, 2.0, 2.0 + seconds)
    if ops <= 0:
        continue
    row = {"key": (backend, scen, target), "round": rnd}
    for ev, label, scale in EVENTS:
        if ev in counts:
            row[label] = counts[ev] * scale / ops
    if ticks:
        row["user µs"] = ticks[0] * 1e6 / ops
        row["sys µs"] = ticks[1] * 1e6 / ops
    if switches:
        row["voluntary sw"], row["preempted"] = (x / ops for x in switches)
    if segs:
        row["TCP segs"], row["delayed ACKs"], row["pure ACKs"] = (x / ops for x in segs)
    rows.append(row)

labels = [l for _, l, _ in EVENTS] + ["user µs", "sys µs", "voluntary sw", "preempted", "TCP segs", "delayed ACKs", "pure ACKs"]
by = defaultdict(list)
for r in rows:
    by[r["key"]].append(r)
print("| backend | scenario | target | rounds | " + " | ".join(labels) + " |")
print("|" + "---|" * (4 + len(labels)))
for key in sorted(by):
    rs = by[key]
    cells = []
    for l in labels:
        v = [r[l] for r in rs if l in r]
        cells.append(f"{statistics.median(v):.2f}" if v else "")
    print(f"| {key[0]} | {key[1]} | {key[2]} | {len(rs)} | " + " | ".join(cells) + " |")
