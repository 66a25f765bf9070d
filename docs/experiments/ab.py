#!/usr/bin/env python3
"""Same-binary A/B of libals builds: runs build/release/bench/pool (libals
only) once per variant per round, alternating the order each round, each
variant's library chosen with LD_LIBRARY_PATH, and prints per scenario and
worker count each variant's median [min..max] and first-variant/variant.

  docs/experiments/ab.py ROUNDS WORKERS SCENARIOS DIR1 DIR2 ...

DIRn: a folder holding a libals.so.0 (see README.md beside this file).
BENCH_ARGS overrides the bench options (default below)."""
import os, re, statistics, subprocess, sys

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
args = os.environ.get("BENCH_ARGS", "--reps 3 --settle-ms 0 --requests 10000 --tasks 200000 "
                      "--chain 200000 --fanout 200000").split()
rounds, workers, scen, variants = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
res = {}
for r in range(rounds):
    for v in (variants if r % 2 == 0 else variants[::-1]):
        out = subprocess.run([root + "/build/release/bench/pool", "--workers", workers,
                              "--backends", "libals", "--scenarios", scen, *args],
                             env=dict(os.environ, LD_LIBRARY_PATH=os.path.abspath(v)),
                             capture_output=True, text=True, check=True).stdout
        cur = None
        for line in out.splitlines():
            m = re.match(r"^(.*?),? (ns per task|us per request)", line)
            if m:  # "ctx, 4 stores bound" -> "ctx4"; "spawn_many (...)" -> "spawn_many"
                cur = re.sub(r"^ctx, (\d+) stores bound$", r"ctx\1", m.group(1).split(" (")[0])
                continue
            f = line.split()
            if cur and len(f) >= 2 and f[0].isdigit():
                try:
                    res.setdefault((cur, int(f[0])), {}).setdefault(v, []).append(float(f[1]))
                except ValueError:
                    pass
for (scenario, n), row in sorted(res.items()):
    base = statistics.median(row[variants[0]])
    print(f"{scenario:12s} {n:3d} " + "  ".join(
        f"{os.path.basename(v.rstrip('/'))}={statistics.median(row[v]):8.2f} "
        f"[{min(row[v]):.2f}..{max(row[v]):.2f}] ({base / statistics.median(row[v]):.2f}x)"
        for v in variants if v in row))
