#!/usr/bin/env python3
"""Same-binary A/B of libals builds: runs build/release/bench/pool (libals
only) once per variant per round, alternating the order each round, each
variant's library chosen with LD_LIBRARY_PATH, and prints per scenario and
worker count each variant's median [min..max] and first-variant/variant.

Each figure comes with the machine's mode measured just before it (the
`rt ns` column: a cross-CPU cache-line round trip, bench_util.h). Below
AB_RT_SPLIT ns (default 450: the 2-vCPU development VM reads 335-401
when its vCPUs share a cache, 477-900 when they do not) a figure is
"fast", else "slow"; the medians are also given per mode, so that a round
that caught the other mode does not decide the comparison.

  docs/experiments/ab.py ROUNDS WORKERS SCENARIOS DIR1 DIR2 ...

DIRn: a folder holding a libals.so.0 (see README.md beside this file).
BENCH_ARGS overrides the bench options (default below)."""
import os, re, statistics, subprocess, sys

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
args = os.environ.get("BENCH_ARGS", "--reps 3 --settle-ms 0 --requests 10000 --tasks 200000 "
                      "--chain 200000 --fanout 200000").split()
split = float(os.environ.get("AB_RT_SPLIT", "450"))
rounds, workers, scen, variants = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
res = {}  # (scenario, workers) -> variant -> [(value, rt)]
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
                    rt = float(f[-1]) if f[-1] != "-" else -1
                    res.setdefault((cur, int(f[0])), {}).setdefault(v, []).append(
                        (float(f[1]), rt))
                except ValueError:
                    pass


def cell(xs, base):
    m = statistics.median(x for x, _ in xs)
    lo, hi = min(x for x, _ in xs), max(x for x, _ in xs)
    return m, f"{m:8.2f} [{lo:.2f}..{hi:.2f}]" + (f" ({base / m:.2f}x)" if base else "")


name = {v: os.path.basename(v.rstrip("/")) for v in variants}
for (scenario, n), row in sorted(res.items()):
    base, _ = cell(row[variants[0]], None)
    print(f"{scenario:12s} {n:3d} all  " + "  ".join(
        f"{name[v]}={cell(row[v], base)[1]}" for v in variants if v in row))
    for mode, keep in (("fast", lambda rt: 0 < rt < split), ("slow", lambda rt: rt >= split)):
        sub = {v: [x for x in row.get(v, []) if keep(x[1])] for v in variants}
        if all(sub[v] for v in variants):
            b, _ = cell(sub[variants[0]], None)
            print(f"{'':12s} {'':3s} {mode} " + "  ".join(
                f"{name[v]}={cell(sub[v], b)[1]} n={len(sub[v])}" for v in variants))
