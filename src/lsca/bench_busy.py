"""lsca bench, section busy: the per-call cost while CPU hogs run beside the loop.

--hogs processes (default: one per CPU) spin at normal priority (`bench_loop spin`,
started by the bench in sessions of their own) while lsca.bench.Runner times the
--busy-ops loops in every mode, exactly as the ops section does. The hogs are killed
by pid when the section ends, whatever ends it (an error, Ctrl-C, SIGTERM).
"""
import os
import signal
import subprocess
import time

from lsca.bench import BenchError, measure_ops, say
from lsca.launch import clean_env

HOG_SETTLE_S = 0.2          # after starting the hogs, before the first timed run
STRACE_FACTOR = 10          # the issue: under load, lsca must be this much cheaper than strace...
STRACE_FACTOR_OP = "write-1B"   # ...for this op


class Hogs:
    """count CPU-bound processes, for a with block; each is killed by its pid at the end. They are
    also in processes.clients, so that Processes.stop_all() ends them should anything slip by."""

    def __init__(self, processes, loop, count):
        self.processes, self.loop, self.count = processes, loop, count
        self.started = []

    def __enter__(self):
        try:
            for _ in range(self.count):
                self.started.append(self.processes.start_client([self.loop, "spin"], clean_env(),
                                                                subprocess.DEVNULL, subprocess.DEVNULL))
            time.sleep(HOG_SETTLE_S)
            dead = [p.pid for p in self.started if p.poll() is not None]
            if dead:
                raise BenchError(f"CPU hog(s) {dead} exited at start")
        except BaseException:
            self.stop()
            raise
        return self

    def pids(self):
        return [p.pid for p in self.started]

    def stop(self):
        for process in self.started:
            if process.poll() is None:
                try:
                    os.kill(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for process in self.started:
            self.processes.end_client(process)      # reaps it (and would kill its group if still there)
        self.started = []

    def __exit__(self, *exc):
        self.stop()
        return False


def run_busy(args, runner, loop, modes, report):
    hogs = args.hogs
    load_before = list(os.getloadavg())
    with Hogs(runner.processes, loop, hogs) as running:
        say(f"busy: {hogs} CPU hog(s) running (pids {', '.join(map(str, running.pids()))})")
        raw = measure_ops(runner, args.busy_ops, modes, args.repeats, label="busy: ")
    idle = report.get("ops", {})
    ops = {}
    for name, result in raw.items():
        medians = {m: result["modes"][m]["median_ns"] for m in modes}
        lsca, strace = medians.get("lsca"), medians.get("strace")
        entry = {"modes": result["modes"], "ratios": result["ratios"],
                 "lsca_below_strace": None if lsca is None or strace is None else lsca < strace,
                 "strace_over_lsca": None if lsca is None or strace is None else strace / lsca,
                 "slowdown_vs_ops_section": {}}
        if name == STRACE_FACTOR_OP:
            entry["lsca_10x_cheaper_than_strace"] = (None if entry["strace_over_lsca"] is None
                                                     else entry["strace_over_lsca"] >= STRACE_FACTOR)
        if name in idle:
            for m in modes:
                if m in idle[name]["modes"]:
                    entry["slowdown_vs_ops_section"][m] = medians[m] / idle[name]["modes"][m]["median_ns"]
        ops[name] = entry
    return {"hogs": hogs, "ops": ops, "modes": modes, "repeats": args.repeats,
            "loadavg_before": load_before, "loadavg_after": list(os.getloadavg())}


def format_busy(busy):
    modes = busy["modes"]
    load = " ".join(f"{x:.2f}" for x in busy["loadavg_after"])
    lines = [f"busy: per-call cost, ns/call, with {busy['hogs']} CPU hog(s) at normal priority beside the loop "
             f"(median of {busy['repeats']} run(s); load average after: {load})"]
    ratio_names = [r for r in ("lsca/native", "lsca+trace/native", "strace/native") if
                   r.split("/")[0] in modes and "native" in modes]
    lines.append(f"{'op':<14}" + "".join(f"{m:>12}" for m in modes) + "".join(f"{r:>19}" for r in ratio_names)
                 + f"{'strace/lsca':>13}")
    for name, entry in busy["ops"].items():
        row = f"{name:<14}" + "".join(f"{entry['modes'][m]['median_ns']:>12.1f}" for m in modes)
        row += "".join(f"{fmt_x(entry['ratios'][r]):>19}" for r in ratio_names)
        row += f"{fmt_x(entry['strace_over_lsca']):>13}"
        lines.append(row)
    if "lsca" in modes and "strace" in modes:
        lines.append("")
        for name, entry in busy["ops"].items():
            text = (f"{name}: lsca {'is' if entry['lsca_below_strace'] else 'is NOT'} cheaper than strace -f "
                    f"under load ({fmt_x(entry['strace_over_lsca'])})")
            if "lsca_10x_cheaper_than_strace" in entry:
                text += (f"; target >= {STRACE_FACTOR}x cheaper: "
                         + ("met" if entry["lsca_10x_cheaper_than_strace"] else "NOT met"))
            lines.append(text)
    slowdowns = [(name, e["slowdown_vs_ops_section"]) for name, e in busy["ops"].items()
                 if e["slowdown_vs_ops_section"]]
    if slowdowns:
        lines.append("slow-down against the ops section of this run (no hogs): " + "; ".join(
            f"{name} " + ", ".join(f"{m} {v:.2f}x" for m, v in s.items()) for name, s in slowdowns))
    return "\n".join(lines)


def fmt_x(value):
    return "-" if value is None else f"{value:.2f}x"
