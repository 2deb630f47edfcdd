"""lsca bench: the sections process, loops, busy and workloads, wired into lsca.bench.

lsca.bench imports this module where it uses it (not at its top: this module and the
section modules import lsca.bench). Here: their command-line options and help, their
defaults under --quick, the one supervisor they share, their report text, JSON and
plot. The measuring is in lsca.bench_process (process, loops), lsca.bench_busy and
lsca.bench_workloads.
"""
import os

from lsca import bench_process, bench_workloads
from lsca.bench import OPS, Runner, comma_list, nproc, positive_int, say, serving

NAMES = ("process", "loops", "busy", "workloads")
WITH_MODES = NAMES          # every one runs in the modes of --modes (workloads: native, lsca, strace)
DEFAULT_BUSY_OPS = ["write-1B", "stat"]
WORKLOAD_REPEATS = {"default": 3, "quick": 1}
PLOT_SUFFIX = "-sections"
MODE_COLORS = {"lsca": "tab:blue", "lsca+trace": "tab:orange", "strace": "tab:green"}

DESCRIPTION = f"""
process (UnixBench style): processes started per second in every mode (--modes),
  median of --repeats runs of at most --iterations starts or --run-ms ms, after a
  warm-up, and each mode's rate as % of native, next to the issue's target:
{bench_process.describe(bench_process.PROCESS)}
  Each lsca run is checked: the loop's own stat(2) calls must be proxied (spawn: and
  every /bin/true must have registered with the supervisor).

loops (UnixBench style): operations per second in every mode, % of native, targets:
{bench_process.describe(bench_process.LOOPS)}
  Each lsca run is checked to have proxied every call of the loop.

busy: the per-call cost of --busy-ops (default: {','.join(DEFAULT_BUSY_OPS)}) in every mode
  while --hogs CPU-bound processes (default: one per CPU, here {nproc()}) spin at normal
  priority beside the loop; they are started and killed (by pid) by the bench. Prints
  ns/call, the ratios to native, whether lsca is cheaper than strace under load and
  (write-1B) at least 10x cheaper, and the slow-down against the ops section of the
  same run.

workloads (not in the default set, or --workloads): small real jobs natively, under
  lsca run and under strace -f -o /dev/null, wall time (median of --workload-repeats):
""" + "\n".join(bench_process.help_line(w.name, w.what) for w in bench_workloads.WORKLOADS.values()) + f"""
  A job whose tools are missing is skipped with a note. Every lsca run must have
  proxied calls (lsca run --stats-file), else the benchmark fails; every run's result
  is checked, and a job that fails is reported (the others go on; exit status 1).
  Prints native s, lsca s and strace s with x native, whether lsca stays within
  {bench_workloads.LIMIT_X_NATIVE:g}x native and whether it is cheaper than strace. --quick: smaller jobs
  (3 .c files, 30 files, 500 rows, 8 modules, 40 requests) and one repeat.
"""


def add_arguments(parser):
    parser.add_argument("--busy-ops", type=comma_list(list(OPS), "op"), default=list(DEFAULT_BUSY_OPS),
                        metavar="OP,...", help=f"ops of the busy section (default: {','.join(DEFAULT_BUSY_OPS)})")
    parser.add_argument("--hogs", type=positive_int, default=nproc(), metavar="N",
                        help="CPU-bound processes beside the loop in the busy section (default: one per CPU "
                             "core, here %(default)s)")
    parser.add_argument("--workloads", action="store_true",
                        help="run the workloads section: alone when --sections is not given, else added to it")
    parser.add_argument("--workloads-only", type=comma_list(list(bench_workloads.WORKLOADS), "workload"),
                        metavar="NAME,...", help="the jobs of the workloads section (implies --workloads; "
                        f"default: all: {','.join(bench_workloads.WORKLOADS)})")
    parser.add_argument("--workload-repeats", type=positive_int, metavar="N",
                        help="runs of each (job, mode) of the workloads section, the median is reported "
                             f"(default: --repeats when given, else {WORKLOAD_REPEATS['default']}; "
                             f"--quick: {WORKLOAD_REPEATS['quick']})")
    parser.add_argument("--http-requests", type=positive_int, metavar="N",
                        help="requests of the http job (default: "
                             f"{bench_workloads.FULL['http_requests']}; --quick: "
                             f"{bench_workloads.QUICK['http_requests']})")


def resolve(args):
    """The sections chosen and the workload settings; before lsca.bench.resolve fills --repeats."""
    from lsca.bench import DEFAULT_SECTIONS, SECTIONS
    workloads = args.workloads or args.workloads_only is not None
    if args.sections is None:
        args.sections = ["workloads"] if workloads else list(DEFAULT_SECTIONS)
    elif workloads and "workloads" not in args.sections:
        args.sections = [s for s in SECTIONS if s in args.sections or s == "workloads"]
    if args.workload_repeats is None:
        args.workload_repeats = args.repeats or WORKLOAD_REPEATS["quick" if args.quick else "default"]


def settings(args):
    return {"busy_ops": args.busy_ops, "hogs": args.hogs, "workloads": bench_workloads.selected(args),
            "workload_repeats": args.workload_repeats,
            "http_requests": args.http_requests or (bench_workloads.QUICK if args.quick
                                                    else bench_workloads.FULL)["http_requests"]}


def plotted(sections):
    return any(name in sections for name in NAMES)


def run_sections(args, processes, workdir, loop, data_file, strace, modes, report):
    """Run the chosen sections of this module, on one supervisor for all of them."""
    chosen = [name for name in NAMES if name in args.sections]
    if not chosen:
        return
    if not modes:
        report["notes"].append(f"no mode left to measure: {', '.join(chosen)} skipped")
        return
    with serving(processes, workdir, args, modes) as supervisor:
        runner = Runner(args, processes, workdir, loop, data_file, supervisor, strace)
        for name in chosen:
            load = list(os.getloadavg())
            if name == "process":
                report["process"] = bench_process.run_process(args, runner, modes)
            elif name == "loops":
                report["loops"] = bench_process.run_loops(args, runner, modes)
            elif name == "busy":
                from lsca import bench_busy
                report["busy"] = bench_busy.run_busy(args, runner, loop, modes, report)
            else:
                report["workloads"] = bench_workloads.run_workloads(args, processes, workdir, loop, supervisor,
                                                                    strace, modes)
            report[name]["loadavg_at_start"] = load


def format_sections(report):
    """The report texts of the sections that ran, in order."""
    texts = []
    heading = ("median of {repeats} run(s) of at most {iterations} or {run_ms} ms each, after a warm-up; "
               "load average at start {load}")
    settings_ = report["settings"]
    for name, title, unit in (("process", "process start, per second", "/s"),
                              ("loops", "UnixBench-style loops, operations per second", "/s")):
        if name in report:
            load = " ".join(f"{x:.2f}" for x in report[name]["loadavg_at_start"])
            texts.append(bench_process.format_rates(
                f"{title}: " + heading.format(repeats=report[name]["repeats"], iterations=settings_["iterations"],
                                              run_ms=settings_["run_ms"], load=load), report[name], unit))
    if "busy" in report:
        from lsca import bench_busy
        texts.append(bench_busy.format_busy(report["busy"]))
    if "workloads" in report:
        texts.append(bench_workloads.format_workloads(report["workloads"], report["machine"]["workers"]))
    return texts


def failures(report):
    return report.get("workloads", {}).get("failures", [])


def sections_plot_path(path):
    base, ext = os.path.splitext(path)
    return f"{base}{PLOT_SUFFIX}{ext or '.png'}"


def plot(report, path):
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

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
