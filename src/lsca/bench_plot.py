"""The bench's two plots (matplotlib, the `bench` extra): calls/s against workers (the
scaling part) and, per section, each item's cost against native (FILE-sections.png)."""
import os

from lsca import bench_process, bench_workloads
from lsca.bench import say

PLOT_SUFFIX = "-sections"
MODE_COLORS = {"lsca": "tab:blue", "lsca+trace": "tab:orange", "strace": "tab:green"}


def pyplot():
    """matplotlib's pyplot, drawing to files only."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_scaling(scaling, path):
    """FILE.png: calls/s of all clients against workers, a line per client count."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    workers = list(range(1, scaling["max_workers"] + 1))
    cells = {(c["workers"], c["clients"]): c["calls_per_s"] for c in scaling["matrix"]}
    for k in range(1, scaling["max_clients"] + 1):
        ax.plot(workers, [cells[(w, k)] for w in workers], marker="o",
                label=f"{k} client" + ("" if k == 1 else "s"))
    ax.set_xlabel("workers")
    ax.set_ylabel("calls/s (all clients)")
    ax.set_xticks(workers)
    ax.set_ylim(bottom=0)
    ax.set_title(f"LSCA throughput, {scaling['op']}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def sections_plot_path(path):
    base, ext = os.path.splitext(path)
    return f"{base}{PLOT_SUFFIX}{ext or '.png'}"


def plot_sections(report, path):
    """FILE-sections.png: per section a bar chart, % of native (workloads: x native) per item and mode."""
    panels = []
    for name in ("process", "loops"):
        if name in report:
            items = report[name]["items"]
            panels.append((name, {item: {m: v["percent_of_native"] for m, v in e["modes"].items() if m != "native"}
                                  for item, e in items.items()},
                           {item: e["target"]["min_percent_of_native"] for item, e in items.items() if e["target"]},
                           "% of native rate"))
    if "busy" in report:
        panels.append(("busy (CPU hogs)", {op: {m: bench_process.percent(e["modes"]["native"]["median_ns"],
                                                                        v["median_ns"])
                                                for m, v in e["modes"].items() if m != "native"}
                                           for op, e in report["busy"]["ops"].items()
                                           if "native" in e["modes"]}, {}, "% of native rate"))
    if "workloads" in report:
        panels.append(("workloads", {w: {m: x for m, x in e["x_native"].items() if m != "native"}
                                     for w, e in report["workloads"]["workloads"].items() if "x_native" in e},
                       {}, "time, x native"))
    panels = [p for p in panels if any(x is not None for v in p[1].values() for x in v.values())]
    if not panels:
        return None

    plt = pyplot()
    import matplotlib.ticker

    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.2 * len(panels)), squeeze=False)
    for ax, (title, values, targets, ylabel) in zip(axes[:, 0], panels):
        items = list(values)
        modes = sorted({m for v in values.values() for m in v}, key=lambda m: ("lsca", "lsca+trace", "strace",
                                                                               m).index(m))
        width = 0.8 / max(1, len(modes))
        for k, mode in enumerate(modes):
            xs = [i + (k - (len(modes) - 1) / 2) * width for i in range(len(items))]
            ys = [values[item].get(mode) or 0 for item in items]
            ax.bar(xs, ys, width, label=mode, color=MODE_COLORS.get(mode))
        for i, item in enumerate(items):
            if item in targets:
                ax.hlines(targets[item], i - 0.4, i + 0.4, colors="black", linestyles="dashed")
        ax.set_xticks(range(len(items)))
        ax.set_xticklabels(items)
        if title == "workloads":     # x native: a linear scale from 0, the limit dashed
            ax.axhline(bench_workloads.LIMIT_X_NATIVE, color="black", linestyle="dashed", linewidth=0.8,
                       label=f"{bench_workloads.LIMIT_X_NATIVE:g}x native")
            ax.axhline(1, color="grey", linewidth=0.8)
            ax.set_ylim(bottom=0)
        else:                        # % of native spans decades: log scale, native (100%) grey
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.axhline(100, color="grey", linewidth=0.8)
        ax.set_ylabel(ylabel)
        ax.set_title(f"LSCA bench: {title}" + (" (dashed: target)" if targets else ""))
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    out = sections_plot_path(path)
    fig.savefig(out, format="png")
    plt.close(fig)
    say(f"plotted the sections to {out}")
    return out
