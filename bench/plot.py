#!/usr/bin/python3
"""Plots of issue 6's results (PNG) from the JSON lines of bench/run-all.sh
(or of bench/drover/run.sh, bench/peers/run.sh, bench/limits/run.sh).

    bench/plot.py RESULTS.jsonl [MORE.jsonl ...] [--out docs/img] [--tables]

--tables also prints the Markdown tables of docs/benchmarks.md (medians,
ranges, ratios Drover/peer and Drover/limit) on stdout.

Writes into --out (default docs/img/ of the repository):
  issue6-b1-throughput.png  B1 drain jobs/s per system and setting (median of
                            the runs, bars; the range as error bars), D0 and D2
                            coloured apart; the PostgreSQL limits as bars
  issue6-b7-slots.png       Drover's D2 drain jobs/s against worker slots, no-op
                            and 1 ms jobs (and the 1 ms ceiling slots / 1 ms)
  issue6-b2-latency.png     Drover's D2 ack latency p50/p99/p99.9 against the
                            offered rate (open loop)
  issue6-b3-latency.png     submit -> handler start p50 and p99 per system
  issue6-b6-sse.png         SSE delivery latency p50/p99 against subscribers

Uses python3-matplotlib from Debian; installs it with apt-get if missing
(as root).
"""
import argparse
import collections
import json
import os
import statistics
import subprocess
import sys


def need_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("installing python3-matplotlib (Debian)", file=sys.stderr)
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", "python3-matplotlib"]
        if os.geteuid() != 0:
            cmd = ["sudo"] + cmd
        subprocess.run(cmd, check=True, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def load(paths):
    rows = []
    for p in paths:
        with open(p) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    return rows


def peer_label(r):
    s = r.get("system", "?")
    settings = r.get("settings", "")
    if s.startswith("graphile"):
        s = "graphile-worker " + ("batched" if "localQueue" in settings or "batched" in settings else "default")
    return f"{s} ({r.get('durability')})"


def b1_bars(rows):
    """label -> (durability, [jobs/s of each run])"""
    out = collections.OrderedDict()
    for r in rows:
        if r.get("summary") or r.get("workload") != "B1":
            continue
        if r.get("system") == "drover":
            us = r.get("job_us", 0)
            if us:
                continue  # the 1 ms and 10 ms jobs are in their own plot group
            label = f"Drover ({r['durability']}, {r.get('slots')} slots)"
            v = r.get("drain_jobs_per_s")
        else:
            label = peer_label(r)
            v = r.get("jobs_per_s")
        if v is None:
            continue
        out.setdefault(label, (r.get("durability"), []))[1].append(float(v))
    return out


def finish_log_plot(plt, fig, ax, outdir, name, xlabel, ylabel, title, legend_size=8,
                    xticks=None):
    """Log-log axes (base 2 with the given xticks), labels, legend and grid;
    saves outdir/name and returns its path."""
    if xticks:
        ax.set_xscale("log", base=2)
        ax.set_xticks(xticks)
        ax.set_xticklabels([str(x) for x in xticks])
    else:
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend_size)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = os.path.join(outdir, name)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_b1(plt, rows, outdir):
    bars = b1_bars(rows)
    if not bars:
        return None
    # PostgreSQL limits (jobs/s of pgbench scripts, D2) as bars of their own.
    for r in rows:
        if r.get("limit") in ("skip_locked", "skip_locked_delete", "lifecycle",
                              "lifecycle_merged", "lifecycle_events_only") and "jobs_per_s" in r:
            bars.setdefault(f"limit: pgbench {r['limit']}", ("limit", []))[1].append(
                float(r["jobs_per_s"]))
    items = sorted(bars.items(), key=lambda kv: -statistics.median(kv[1][1]))
    labels = [k for k, _ in items]
    med = [statistics.median(v[1]) for _, v in items]
    lo = [m - min(v[1]) for m, (_, v) in zip(med, items)]
    hi = [max(v[1]) - m for m, (_, v) in zip(med, items)]
    colors = ["#c0392b" if v[0] == "D2" else "#2c5f8a" if v[0] == "limit" else "#7f8c8d"
              for _, v in items]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 2))
    y = range(len(labels))
    ax.barh(y, med, xerr=[lo, hi], color=colors, capsize=3)
    ax.set_yticks(list(y))
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    for i, m in enumerate(med):
        ax.text(m, i, f" {m:,.0f}", va="center", fontsize=8)
    ax.set_xlabel("jobs/s (drain of preloaded no-op jobs; median, range over runs)")
    ax.set_title("B1: drain throughput, same machine, same run\n"
                 "(red = D2 durable, grey = D0, blue = PostgreSQL limits at D2)")
    fig.tight_layout()
    path = os.path.join(outdir, "issue6-b1-throughput.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_b7(plt, rows, outdir):
    series = collections.defaultdict(dict)
    for r in rows:
        if r.get("system") == "drover" and r.get("workload") == "B7" and not r.get("summary") \
                and r.get("durability") == "D2":
            series[r.get("job_us", 0)].setdefault(int(r["slots"]), []).append(
                float(r["drain_jobs_per_s"]))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for us, pts in sorted(series.items()):
        xs = sorted(pts)
        ys = [statistics.median(pts[x]) for x in xs]
        label = "no-op jobs" if us == 0 else f"{us / 1000:g} ms jobs"
        ax.plot(xs, ys, marker="o", label=f"Drover D2, {label}")
        for x, yv in zip(xs, ys):
            ax.annotate(f"{yv:,.0f}", (x, yv), textcoords="offset points",
                        xytext=(0, 6 if us == 0 else -13),
                        fontsize=7, ha="center")
        if us > 0:
            ax.plot(xs, [x * 1e6 / us for x in xs], linestyle=":", color="grey",
                    label=f"ceiling: slots / {us / 1000:g} ms")
    allx = sorted({x for pts in series.values() for x in pts})
    return finish_log_plot(plt, fig, ax, outdir, "issue6-b7-slots.png", "worker slots",
                           "drain jobs/s", "B7: throughput as worker slots are added (D2)",
                           xticks=allx)


def b2_medians(rows):
    """scheduler -> offered rate -> {field: [values over runs]}"""
    out = collections.defaultdict(lambda: collections.defaultdict(lambda: collections.defaultdict(list)))
    for r in rows:
        if r.get("system") != "drover" or r.get("workload") != "B2" or r.get("summary"):
            continue
        cell = out[r.get("scheduler", "stealing")][r["offered_per_s"]]
        for k, v in r.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                cell[k].append(v)
        cell["saturated"].append(bool(r.get("saturated")))
    return out


def plot_b2(plt, rows, outdir):
    series = b2_medians(rows)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    styles = {"stealing": "-", "sharing": "--"}
    for sched, cells in sorted(series.items()):
        xs = sorted(cells)
        for key, label in (("ack_p50_us", "p50"), ("ack_p99_us", "p99")):
            ax.plot(xs, [statistics.median(cells[x][key]) / 1000 for x in xs], marker="o",
                    linestyle=styles.get(sched, "-"), label=f"ack {label}, {sched} scheduler")
    peers = collections.defaultdict(list)
    for r in rows:
        if r.get("workload") == "B2" and r.get("system") != "drover" and not r.get("saturated"):
            peers[peer_label(r)].append((r["offered_per_s"], r["ack_p99_ms"]))
    for label, pts in sorted(peers.items()):
        pts.sort()
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="x", linestyle=":",
                label=f"{label} ack p99")
    ax.axhline(2, color="grey", linestyle=":", linewidth=1, label="target p99 2 ms")
    return finish_log_plot(plt, fig, ax, outdir, "issue6-b2-latency.png",
                           "offered submissions/s (open loop)",
                           "submit -> ack, ms (D2: after COMMIT; median of runs)",
                           "B2: ack latency against the offered rate", legend_size=7)


def plot_b6(plt, rows, outdir):
    cells = collections.defaultdict(lambda: ([], []))
    for r in rows:
        if r.get("bench") == "sse":
            cells[r["subscribers"]][0].append(r["latency_ms_p50"])
            cells[r["subscribers"]][1].append(r["latency_ms_p99"])
    if not cells:
        return None
    xs = sorted(cells)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(xs, [statistics.median(cells[x][0]) for x in xs], marker="o", label="p50")
    ax.plot(xs, [statistics.median(cells[x][1]) for x in xs], marker="o", label="p99")
    ax.axhline(50, color="grey", linestyle=":", linewidth=1, label="target p99 50 ms")
    return finish_log_plot(plt, fig, ax, outdir, "issue6-b6-sse.png",
                           "SSE subscribers of one job",
                           "progress report -> delivered, ms (median of runs)",
                           "B6: progress fan-out over SSE")


def plot_b3(plt, rows, outdir):
    groups = collections.OrderedDict()
    for r in rows:
        if r.get("workload") != "B3" or r.get("summary") or r.get("ok") is False:
            continue
        if r.get("system") == "drover":
            label = (f"Drover ({r['durability']}), {r.get('phase', '').replace('_', '-')}, "
                     f"{r.get('scheduler', 'stealing')} scheduler")
            p50, p99 = r["submit_to_start_p50_us"] / 1000, r["submit_to_start_p99_us"] / 1000
        else:
            label = peer_label(r) + ", idle"
            p50, p99 = r.get("p50_ms"), r.get("p99_ms")
        if p50 is None:
            continue
        g = groups.setdefault(label, ([], []))
        g[0].append(p50)
        g[1].append(p99)
    if not groups:
        return None
    labels = list(groups)
    p50 = [statistics.median(groups[k][0]) for k in labels]
    p99 = [statistics.median(groups[k][1]) for k in labels]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(labels) + 2))
    y = list(range(len(labels)))
    ax.barh([i + 0.2 for i in y], p99, height=0.4, label="p99", color="#e67e22")
    ax.barh([i - 0.2 for i in y], p50, height=0.4, label="p50", color="#2980b9")
    ax.set_yticks(y)
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1, color="grey", linestyle="--", linewidth=1, label="target p50 1 ms")
    ax.set_xlabel("submit -> handler start, ms")
    ax.set_title("B3: start latency, one job at a time (median of runs)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(outdir, "issue6-b3-latency.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fmt(x, prec=0):
    if x is None:
        return "—"
    return f"{x:,.{prec}f}"


def rng(vals):
    if len(vals) < 2:
        return "(1 run)"
    return f"{min(vals):,.0f} – {max(vals):,.0f}"


def load1(r):
    for k in ("loadavg_at_start", "loadavg"):
        if isinstance(r.get(k), list):
            return r[k][0]
    if "loadavg_1m_at_start" in r:
        return r["loadavg_1m_at_start"]
    if "loadavg_1m_at_end" in r:
        return r["loadavg_1m_at_end"]
    return None


def tables(rows):
    """Markdown tables of the results (medians, ranges, ratios)."""
    out = []
    p = out.append
    # -- B1 -----------------------------------------------------------------
    b1 = collections.OrderedDict()
    for r in rows:
        if r.get("summary") or r.get("workload") != "B1":
            continue
        if r.get("system") == "drover":
            us = r.get("job_us", 0)
            job = "no-op" if not us else f"{us / 1000:g} ms"
            label = (f"Drover, {r.get('slots')} slots, {job} jobs"
                     + ("" if r.get("executor", "cache") == "cache" else f", {r['executor']} executor"))
            v = r.get("drain_jobs_per_s")
            cpu = (r.get("cpu_s_per_job", 0) + r.get("postgres_cpu_s_per_job", 0)) * 1e6
        else:
            label = peer_label(r).rsplit(" (", 1)[0] + f", {r.get('settings', '')}"[:0]
            label = peer_label(r).rsplit(" (", 1)[0]
            v = r.get("jobs_per_s")
            cpu = r.get("cpu_seconds_per_job", 0) * 1e6
        e = b1.setdefault((label, r.get("durability")), {"v": [], "cpu": [], "load": []})
        e["v"].append(float(v))
        e["cpu"].append(cpu)
        e["load"].append(load1(r))
    ref = None
    for (label, d), e in b1.items():
        if label.startswith("Drover, ") and "no-op" in label and d == "D2" and "executor" not in label:
            ref = statistics.median(e["v"])
    p("| system, setting | durability | runs | B1 jobs/s, median | range | CPU µs/job (all processes) | load 1 min at start | Drover D2 no-op / this |")
    p("|---|---|---:|---:|---:|---:|---|---:|")
    for (label, d), e in sorted(b1.items(), key=lambda kv: -statistics.median(kv[1]["v"])):
        m = statistics.median(e["v"])
        loads = ", ".join(f"{x:.1f}" for x in e["load"] if x is not None)
        ratio = f"{ref / m:.2f}" if ref else "—"
        p(f"| {label} | {d} | {len(e['v'])} | {fmt(m)} | {rng(e['v'])} | {fmt(statistics.median(e['cpu']))} | {loads} | {ratio} |")
    # -- limits ---------------------------------------------------------------
    p("")
    p("| limit | what | rate | Drover D2 no-op / limit |")
    p("|---|---|---:|---:|")
    for r in rows:
        if "limit" not in r:
            continue
        keys = [k for k in r if k.endswith("_per_s")]
        if not keys:
            continue
        v = float(r[keys[0]])
        what = f"{r.get('system')} {keys[0].replace('_per_s', '/s')}"
        if "commit_ms_p50" in r:
            what += f"; commit p50 {r['commit_ms_p50']:.2f} ms, p99 {r['commit_ms_p99']:.2f} ms"
        ratio = (f"{ref / v:.3f}" if ref and r.get("system") == "postgresql"
                 and keys[0] in ("jobs_per_s", "rows_per_s") else "—")
        p(f"| {r['limit']} | {what} | {fmt(v)} | {ratio} |")
    # -- B7 -------------------------------------------------------------------
    b7 = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in rows:
        if r.get("system") == "drover" and r.get("workload") == "B7" and not r.get("summary"):
            b7[int(r["slots"])][r.get("job_us", 0)].append(r)
    if b7:
        p("")
        p("| slots | no-op jobs/s, median | range | CPU µs/job (process + PostgreSQL) | 1 ms jobs/s, median | range | ceiling slots/1 ms |")
        p("|---:|---:|---:|---:|---:|---:|---:|")
        for slots in sorted(b7):
            a0, a1 = b7[slots].get(0, []), b7[slots].get(1000, [])
            v0 = [x["drain_jobs_per_s"] for x in a0]
            v1 = [x["drain_jobs_per_s"] for x in a1]
            cpu = [(x["cpu_s_per_job"] + x["postgres_cpu_s_per_job"]) * 1e6 for x in a0]
            p(f"| {slots} | {fmt(statistics.median(v0) if v0 else None)} | {rng(v0)} | "
              f"{fmt(statistics.median(cpu) if cpu else None)} | {fmt(statistics.median(v1) if v1 else None)} | {rng(v1)} | {fmt(slots * 1000)} |")
    # -- B3 -------------------------------------------------------------------
    b3 = collections.OrderedDict()
    failed_b3 = []
    for r in rows:
        if r.get("workload") != "B3" or r.get("summary"):
            continue
        if r.get("ok") is False:
            failed_b3.append(r)
            continue
        if r.get("system") == "drover":
            key = (f"Drover (32 slots), {r.get('scheduler', 'stealing')} scheduler", r["durability"],
                   r["phase"].replace("_", "-"))
            vals = (r["submit_to_start_p50_us"] / 1000, r["submit_to_start_p99_us"] / 1000,
                    r["submit_to_ack_p50_us"] / 1000, r.get("background_rate_per_s") or 0)
        else:
            key = (peer_label(r).rsplit(" (", 1)[0], r["durability"], "idle")
            vals = (r["p50_ms"], r["p99_ms"], None, 0)
        b3.setdefault(key, []).append(vals)
    if b3:
        p("")
        p("| system | durability | phase (background jobs/s) | runs | submit → start p50 ms, median | range | p99 ms, median | range | submit → ack p50 ms |")
        p("|---|---|---|---:|---:|---:|---:|---:|---:|")
        for (label, d, phase), vs in b3.items():
            p50 = [v[0] for v in vs]
            p99 = [v[1] for v in vs]
            ack = [v[2] for v in vs if v[2] is not None]
            bg = statistics.median([v[3] for v in vs])
            ph = phase + (f" ({fmt(bg)})" if bg else "")
            r2 = lambda xs: f"{min(xs):.2f} – {max(xs):.2f}" if len(xs) > 1 else "(1 run)"
            p(f"| {label} | {d} | {ph} | {len(vs)} | {statistics.median(p50):.2f} | {r2(p50)} | "
              f"{statistics.median(p99):.2f} | {r2(p99)} | {(f'{statistics.median(ack):.2f}' if ack else '—')} |")
        for r in failed_b3:
            p("")
            p(f"Failed B3 run (left out above): {r.get('scheduler', '')} scheduler, {r.get('phase')}, "
              f"background {fmt(r.get('background_rate_per_s'))} jobs/s: {r.get('lost')} probe(s) did not start within 30 s "
              f"(p50 {r['submit_to_start_p50_us'] / 1000:.1f} ms).")
    # -- B2 -------------------------------------------------------------------
    series = b2_medians(rows)
    for sched, cells in sorted(series.items()):
        p("")
        p(f"B2, {sched} scheduler (medians of {max(len(c['ack_p50_us']) for c in cells.values())} runs):")
        p("")
        p("| offered/s | acked/s | ack p50 ms | p99 ms | p99 range ms | p99.9 ms | backlog at end | saturated (runs) |")
        p("|---:|---:|---:|---:|---:|---:|---:|---|")
        for x in sorted(cells):
            c = cells[x]
            med = lambda k: statistics.median(c[k])
            p99s = c["ack_p99_us"]
            p(f"| {fmt(x)} | {fmt(med('acked_per_s'))} | {med('ack_p50_us') / 1000:.1f} | {med('ack_p99_us') / 1000:.1f}"
              f" | {min(p99s) / 1000:.1f} – {max(p99s) / 1000:.1f} | {med('ack_p999_us') / 1000:.1f} | {fmt(med('backlog_at_end'))}"
              f" | {sum(c['saturated'])} of {len(c['saturated'])} |")
    for r in rows:
        if r.get("system") == "drover" and r.get("workload") == "B2" and r.get("summary"):
            p("")
            p(f"B2 summary ({r.get('scheduler', 'stealing')}): highest rate with p99 ≤ {r['p99_bound_ms']:g} ms: "
              f"{fmt(r['max_rate_p99_bounded'])}/s; with execution keeping up too: "
              f"{fmt(r['max_rate_p99_bounded_and_kept_up'])}/s; ack p99 at {fmt(r['half_rate'])}/s (≈ half): "
              f"{r['ack_p99_us_at_half_rate'] / 1000:.1f} ms.")
    pb2 = [r for r in rows if r.get("workload") == "B2" and r.get("system") != "drover"]
    if pb2:
        p("")
        p("| peer | durability | offered/s | acked/s | ack p50 ms | p99 ms | p99.9 ms | saturated |")
        p("|---|---|---:|---:|---:|---:|---:|---|")
        for r in pb2:
            p(f"| {peer_label(r).rsplit(' (', 1)[0]} | {r['durability']} | {fmt(r['offered_per_s'])} | {fmt(r['acked_per_s'])}"
              f" | {r['ack_p50_ms']:.1f} | {r['ack_p99_ms']:.1f} | {r['ack_p999_ms']:.1f} | {'yes' if r['saturated'] else 'no'} |")
    # -- B6 -------------------------------------------------------------------
    b6 = collections.defaultdict(list)
    for r in rows:
        if r.get("bench") == "sse":
            b6[r["subscribers"]].append(r)
    if b6:
        p("")
        p("| subscribers | runs | delivered events/s, median | p50 ms | p99 ms, median | p99 range | streams completed |")
        p("|---:|---:|---:|---:|---:|---:|---|")
        for n in sorted(b6):
            rs = b6[n]
            p99 = [x["latency_ms_p99"] for x in rs]
            p(f"| {fmt(n)} | {len(rs)} | {fmt(statistics.median([x['delivered_per_second'] for x in rs]))} | "
              f"{statistics.median([x['latency_ms_p50'] for x in rs]):.1f} | {statistics.median(p99):.1f} | "
              f"{min(p99):.1f} – {max(p99):.1f} | {', '.join(str(x['completed_streams']) for x in rs)} |")
    http = collections.defaultdict(list)
    for r in rows:
        if r.get("bench") in ("http_get", "http_submit"):
            http[(r["label"], r["durability"])].append(r)
    if http:
        p("")
        p("| HTTP (wrk, 64 connections) | durability | runs | requests/s, median | range | p50 ms | p99 ms |")
        p("|---|---|---:|---:|---:|---:|---:|")
        for (label, d), rs in http.items():
            v = [x["requests_per_second"] for x in rs]
            p(f"| {label} | {d} | {len(rs)} | {fmt(statistics.median(v))} | {rng(v)} | "
              f"{statistics.median([x['latency_ms_p50'] for x in rs]):.2f} | {statistics.median([x['latency_ms_p99'] for x in rs]):.2f} |")
    # -- B4, B5, CAF ------------------------------------------------------------
    for w in ("B4", "B5"):
        for r in rows:
            if r.get("system") == "drover" and r.get("workload") == w:
                p("")
                p(f"{w}: " + ", ".join(f"{k} = {v}" for k, v in r.items()
                                       if k not in ("run_id", "part", "machine", "commit", "system", "workload")
                                       and not isinstance(v, (dict, list))))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="+")
    ap.add_argument("--tables", action="store_true",
                    help="also print Markdown tables (medians, ranges, ratios) on stdout")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "docs", "img"))
    args = ap.parse_args()
    rows = load(args.results)
    if not rows:
        print("no results", file=sys.stderr)
        return 1
    if args.tables:
        print(tables(rows))
    plt = need_matplotlib()
    os.makedirs(args.out, exist_ok=True)
    for fn in (plot_b1, plot_b7, plot_b2, plot_b3, plot_b6):
        path = fn(plt, rows, args.out)
        if path:
            print(f"wrote {os.path.relpath(path)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
