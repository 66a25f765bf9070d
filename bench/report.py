#!/usr/bin/env python3
"""Turns the JSON of bench/context and bench/pool runs into the suite's
report: one combined JSON, a Markdown file of tables and PNG plots
(gnuplot). Called by scripts/bench; standard library only.

  report.py --date D --out DIR --context ctx.json --pool pool-1.json [--pool ...]
"""
import argparse
import json
import os
import platform
import shutil
import subprocess


def fmt(v, digits=2):
    return f"{v:.{digits}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--date", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--context", required=True)
    ap.add_argument("--pool", action="append", default=[])
    a = ap.parse_args()

    with open(a.context) as f:
        ctx = json.load(f)
    pools = []
    for p in a.pool:
        with open(p) as f:
            pools.append(json.load(f))
    pools.sort(key=lambda r: r["threads"])
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    machine = {"cpus": os.cpu_count(), "cpu": cpu, "kernel": platform.release()}
    combined = {"date": a.date, "machine": machine, "context": ctx, "pool": pools}
    os.makedirs(a.out, exist_ok=True)
    base = os.path.join(a.out, a.date)
    with open(base + ".json", "w") as f:
        json.dump(combined, f, indent=1)
        f.write("\n")

    backends = [b["name"] for b in pools[0]["backends"]] if pools else []
    md = []
    w = md.append
    w(f"# libals benchmark results, {a.date}\n")
    w(f"Machine: {machine['cpus']} CPUs ({cpu or 'unknown CPU'}), Linux {machine['kernel']}. "
      f"Produced by `scripts/bench`; raw data in `{a.date}.json`. Compare numbers within one "
      "run only: the machine is shared and noisy.\n")
    if pools:
        w("Backends:\n")
        for b in pools[0]["backends"]:
            w(f"- `{b['name']}`: {b['label']}")
        w("")

    # ---- pool: throughput per thread count
    for r in pools:
        t = r["threads"]
        w(f"## bench/pool, {t} worker thread{'s' if t > 1 else ''} "
          f"(median of {r['repetitions']} runs)\n")
        w("Throughput, M tasks/s (higher is better); `libals/X`: how many times faster libals is.\n")
        others = [b for b in backends if b not in ("libals", "als_help")]  # als_help: libals, helping
        w("| scenario | tasks | " + " | ".join(backends) + " | " +
          " | ".join(f"libals/{b}" for b in others) + " |")
        w("|---|---:|" + "---:|" * (len(backends) + len(others)))
        for s in r["throughput"]:
            n = s["tasks"]
            cells = [fmt(s["results"][b]["tasks_per_s"] / 1e6) for b in backends]
            sp = s.get("libals_speedup", {})
            ratios = [fmt(sp[b]) + "x" for b in others if b in sp]
            w(f"| {s['scenario']} | {n} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
        w("")
        rts = [(s["scenario"], s["cross_cpu_rt_ns"]) for s in r["throughput"]
               if s.get("cross_cpu_rt_ns", -1) > 0]
        if r.get("requests", {}).get("cross_cpu_rt_ns", -1) > 0:
            rts.append(("requests", r["requests"]["cross_cpu_rt_ns"]))
        if rts:
            w("The machine's mode while each scenario ran (cross-CPU cache-line round trip, "
              "ns, median over the runs): " + ", ".join(f"{n} {v:.0f}" for n, v in rts) + ".\n")
        if "requests" in r:
            q = r["requests"]
            res = q["results"]
            w(f"Requests: {q['requests']} requests, each binding a trace context and fanning out "
              f"{q['fanout']} subtasks (FNV-1a over {q['buffer_bytes']} bytes), in waves of "
              f"{q['inflight']}. libals subtasks read the context with `als_get`; the baselines "
              "cannot carry a context, so it is passed by hand in the task argument.\n")
            w("| | " + " | ".join(backends) + " |")
            w("|---|" + "---:|" * len(backends))
            w("| k requests/s | " + " | ".join(fmt(res[b]["requests_per_s"] / 1e3, 1) for b in backends) + " |")
            w("| p50 latency, us | " + " | ".join(fmt(res[b]["p50_ns"] / 1e3, 1) for b in backends) + " |")
            w("| p99 latency, us | " + " | ".join(fmt(res[b]["p99_ns"] / 1e3, 1) for b in backends) + " |")
            if "libals" in res:
                la = res["libals"]
                w("| libals/X requests/s | " + " | ".join(
                    fmt(la["requests_per_s"] / res[b]["requests_per_s"]) + "x" for b in backends) + " |")
                w("| X/libals p99 | " + " | ".join(
                    fmt(res[b]["p99_ns"] / la["p99_ns"]) + "x" for b in backends) + " |")
            w("")
        if "latency" in r:
            L = r["latency"]
            res = L["results"]
            w(f"Wake latency of an idle pool, submit to task start, us (lower is better); "
              f"{L['samples']} samples, {L['gap_us']} us idle gap.\n")
            w("| percentile | " + " | ".join(backends) + " |")
            w("|---|" + "---:|" * len(backends))
            for k in ("p50", "p90", "p99", "max"):
                w(f"| {k} | " + " | ".join(fmt(res[b][k + '_ns'] / 1e3, 1) for b in backends) + " |")
            w("")
        counts = sched_rows(r)
        if counts:
            w("libals scheduling per 1000 tasks: futex waits of workers (parks), futex wakes of "
              "workers and of blocked submitters, steals. System calls per task do not depend "
              "on the machine's noise.\n")
            w("| scenario | parks | wake-ups | submitter wake-ups | steals |")
            w("|---|---:|---:|---:|---:|")
            for sn, c in counts:
                w(f"| {sn} | {fmt(c['parks'])} | {fmt(c['wakeups'])} | "
                  f"{fmt(c['submitter_wakeups'])} | {fmt(c['steals'])} |")
            w("")
        if "libals_ctx4_over_ctx0" in r:
            w(f"libals context cost: ctx4 / ctx0 time = {r['libals_ctx4_over_ctx0']:.3f}.\n")

    # ---- scaling
    if len(pools) > 1:
        ts = [r["threads"] for r in pools]
        w("## Scaling\n")
        w(f"M tasks/s (requests: k requests/s) at {', '.join(map(str, ts))} worker threads.\n")
        w("| scenario | backend | " + " | ".join(f"{t}T" for t in ts) + f" | {ts[-1]}T/{ts[0]}T |")
        w("|---|---|" + "---:|" * (len(ts) + 1))
        scen = [s["scenario"] for s in pools[0]["throughput"]]
        for sn in scen + (["requests"] if all("requests" in r for r in pools) else []):
            for b in backends:
                vals = []
                for r in pools:
                    if sn == "requests":
                        vals.append(r["requests"]["results"][b]["requests_per_s"] / 1e3)
                    else:
                        s = next(x for x in r["throughput"] if x["scenario"] == sn)
                        vals.append(s["results"][b]["tasks_per_s"] / 1e6)
                w(f"| {sn} | {b} | " + " | ".join(fmt(v) for v in vals) +
                  f" | {fmt(vals[-1] / vals[0])}x |")
        w("")

    # ---- context
    w(f"## bench/context, ns/op (median of {ctx['repetitions']} repetitions)\n")
    w("| operation | ns/op | min | max |")
    w("|---|---:|---:|---:|")
    for o in ctx["results"]:
        w(f"| {o['label']} | {fmt(o['median'])} | {fmt(o['min'])} | {fmt(o['max'])} |")
    for o in ctx.get("derived", []):
        w(f"| {o['label']} | {fmt(o['median'])} | | |")
    w("")

    # ---- plots
    pngs = plots(a.out, a.date, ctx, pools, backends)
    if pngs:
        w("## Plots\n")
        for p in pngs:
            w(f"![{p}]({p})\n")
    with open(base + ".md", "w") as f:
        f.write("\n".join(md))


def sched_rows(r):
    """(scenario, libals per_1000_tasks) of one bench/pool run, if measured."""
    rows = [(s["scenario"], s["results"]["libals"]["per_1000_tasks"]) for s in r["throughput"]
            if "per_1000_tasks" in s["results"].get("libals", {})]
    for sn in ("requests", "latency"):
        lib = r.get(sn, {}).get("results", {}).get("libals", {})
        if "per_1000_tasks" in lib:
            rows.append((sn, lib["per_1000_tasks"]))
    return rows


def plots(out, date, ctx, pools, backends):
    if not shutil.which("gnuplot"):
        print("report.py: gnuplot not found, no plots")
        return []
    made = []
    datdir = os.path.join(out, ".plotdata")
    os.makedirs(datdir, exist_ok=True)
    script = []
    common = ("set terminal pngcairo size 1100,560 noenhanced font ',10'\n"
              "set style data histogram\nset style histogram cluster gap 1\n"
              "set style fill solid 0.85 border -1\nset boxwidth 0.9\n"
              "set key top right outside\nset grid ytics\n")

    def histogram(name, title, ylabel, header, rows, log=True, rotate=False):
        dat = os.path.join(datdir, name + ".dat")
        with open(dat, "w") as f:
            f.write(" ".join(f'"{h}"' for h in header) + "\n")
            for r in rows:
                f.write(" ".join(f'"{c}"' if isinstance(c, str) else f"{c:.6g}" for c in r) + "\n")
        png = f"{date}-{name}.png"
        script.append(common + f"set output '{os.path.join(out, png)}'\n"
                      f"set title '{title}'\nset ylabel '{ylabel}'\n" +
                      ("set logscale y\n" if log else "unset logscale y\n") +
                      ("set xtics rotate by -35\n" if rotate else "set xtics norotate\n") +
                      f"plot for [i=2:{len(header)}] '{dat}' using i:xtic(1) title columnheader(i)\n")
        made.append(png)

    for r in pools:
        t = r["threads"]
        rows = [[s["scenario"]] + [s["results"][b]["tasks_per_s"] / 1e6 for b in backends]
                for s in r["throughput"]]
        if "requests" in r:
            rows.append(["requests (x8 subtasks)"] +
                        [r["requests"]["results"][b]["requests_per_s"] * 8 / 1e6 for b in backends])
        histogram(f"throughput-{t}t", f"bench/pool throughput, {t} worker threads "
                  "(higher is better; log scale)", "M tasks/s", ["scenario"] + backends, rows)
        if "latency" in r:
            res = r["latency"]["results"]
            rows = [[b] + [res[b][k + "_ns"] / 1e3 for k in ("p50", "p90", "p99")] for b in backends]
            histogram(f"latency-{t}t", f"wake latency of an idle pool, {t} worker threads "
                      "(lower is better; log scale)", "us", ["backend", "p50", "p90", "p99"], rows)
    if pools and all("requests" in r for r in pools):
        rows = [[b] + [r["requests"]["results"][b]["requests_per_s"] / 1e3 for r in pools]
                for b in backends]
        histogram("requests", "requests scenario: requests/s by worker threads (higher is better)",
                  "k requests/s", ["backend"] + [f"{r['threads']} threads" for r in pools], rows,
                  log=False)
        rows = [[b] + [r["requests"]["results"][b]["p99_ns"] / 1e3 for r in pools]
                for b in backends]
        histogram("requests-p99", "requests scenario: p99 latency per request (lower is better; "
                  "log scale)", "us", ["backend"] + [f"{r['threads']} threads" for r in pools], rows)
    rows = [[o["name"], o["median"]] for o in ctx["results"]]
    histogram("context", "bench/context: ns per operation (lower is better; log scale)", "ns/op",
              ["operation", "ns/op"], rows, rotate=True)
    gp = os.path.join(datdir, "plots.gp")
    with open(gp, "w") as f:
        f.write("\n".join(script))
    subprocess.run(["gnuplot", gp], check=True)
    shutil.rmtree(datdir)
    return made


if __name__ == "__main__":
    main()
