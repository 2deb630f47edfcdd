"""lsca bench: the sections process, loops, busy and workloads, wired into lsca.bench.

lsca.bench imports this module where it uses it (not at its top: this module and the
section modules import lsca.bench). Here: their command-line options and help, their
defaults under --quick, the one supervisor they share, their report text, JSON and
plot. The measuring is in lsca.bench_process (process, loops), lsca.bench_busy and
lsca.bench_workloads.
"""
import os

from lsca import bench_process, bench_workloads
from lsca.bench import OPS, Runner, comma_list, nproc, positive_int, serving

NAMES = ("process", "loops", "busy", "workloads")
WITH_MODES = NAMES          # every one runs in the modes of --modes (workloads: native, lsca, strace)
DEFAULT_BUSY_OPS = ["write-1B", "stat"]
WORKLOAD_REPEATS = {"default": 3, "quick": 1}

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
