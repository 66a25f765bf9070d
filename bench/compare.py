#!/usr/bin/env python3
"""Before/after table for scripts/bench-compare.

Reads the bench/pool JSON files <side>-<workers>-<round>.json (side: base or
new) from a directory and prints, per scenario and worker count, the median
of each side and the ratio base/new (> 1: the new library is faster), as the
median of the per-round ratios with their min and max. Rounds pair a base
run with the new run next to it, so drift on a shared machine cancels.
"""
import argparse
import json
import os
import re
import statistics
import sys


def figures(doc):
    """{scenario: ns per task (or per request)} of libals in one run."""
    out = {}
    for t in doc.get("throughput", []):
        lib = t["results"].get("libals")
        if lib:
            out[t["scenario"]] = lib["median_ns"] / t["tasks"]
    req = doc.get("requests")
    if req and "libals" in req["results"]:
        out["requests"] = 1e9 / req["results"]["libals"]["requests_per_s"]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("--base", default="base")
    ap.add_argument("--new", default="new")
    ap.add_argument("--json-out")
    a = ap.parse_args()

    data = {}  # (side, workers, round) -> {scenario: value}
    for name in os.listdir(a.runs):
        m = re.fullmatch(r"(base|new)-(\d+)-(\d+)\.json", name)
        if m:
            with open(os.path.join(a.runs, name)) as f:
                data[(m[1], int(m[2]), int(m[3]))] = figures(json.load(f))
    if not data:
        sys.exit("compare.py: no runs in " + a.runs)
    workers = sorted({k[1] for k in data})
    rounds = sorted({k[2] for k in data})
    scenarios = []
    for v in data.values():
        for s in v:
            if s not in scenarios:
                scenarios.append(s)

    rows = []
    print(f"before/after, libals only: base = {a.base}, new = {a.new}")
    print(f"{len(rounds)} interleaved rounds; ns per task (requests: ns per request), median;")
    print("base/new > 1: new is faster (median of per-round ratios, [min .. max])\n")
    print(f"{'scenario':<12} {'workers':>7} {'base':>10} {'new':>10} {'base/new':>9}  spread")
    for s in scenarios:
        for w in workers:
            pairs = [(data[("base", w, r)].get(s), data[("new", w, r)].get(s))
                     for r in rounds if ("base", w, r) in data and ("new", w, r) in data]
            pairs = [(b, n) for b, n in pairs if b and n]
            if not pairs:
                continue
            ratios = [b / n for b, n in pairs]
            row = {
                "scenario": s, "workers": w, "rounds": len(pairs),
                "base_median": statistics.median(b for b, _ in pairs),
                "new_median": statistics.median(n for _, n in pairs),
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios), "ratio_max": max(ratios),
            }
            rows.append(row)
            print(f"{s:<12} {w:>7} {row['base_median']:>10.1f} {row['new_median']:>10.1f} "
                  f"{row['ratio_median']:>8.3f}x  [{row['ratio_min']:.3f} .. "
                  f"{row['ratio_max']:.3f}]")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"base": a.base, "new": a.new, "rows": rows}, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
