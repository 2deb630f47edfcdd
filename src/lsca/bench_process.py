"""lsca bench, sections process and loops: rates of UnixBench-style loops.

Both run bench_loop.c's `time` mode through lsca.bench.Runner (so natively, under
`lsca run`, `lsca run --trace -o FILE` and `strace -f -o /dev/null`, each LSCA run
checked through its --stats-file counts) and report operations per second, the
percentage of the native rate and the issue's target for the lsca mode.

process  starting processes: exec (the program execs itself), fork+wait, spawn
         (posix_spawn of /bin/true + waitpid)
loops    dup+close, file copy in 1 KiB blocks, pipe throughput, pipe ping-pong
"""
import textwrap
from collections import namedtuple

from lsca.bench import BenchError, measure_ops, ratio

# name: as shown; loop: the op of bench_loop.c; counted: the names in `lsca run --stats-file` each
# iteration adds (at least) one to; what: for --help; target: the lowest % of native the lsca mode
# should reach (None: no target); check: how an LSCA run's counts are checked (None: check_proxied
# of counted).
Item = namedtuple("Item", "name loop counted what target check")


def proxied_at_least(minimum, processes_per_call=0):
    """A check for loops whose calls are not proxied themselves (fork, exec, spawn): the loop's
    own stat(2) calls must be proxied, and with processes_per_call every process started must
    have registered with the supervisor (the session's process count)."""

    def check(stats, item, made, what):
        proxied = stats.get("proxied", {})
        counts = {name: proxied.get(name, 0) for name in minimum}
        counts["processes"] = stats.get("processes", 0)
        short = {name: (counts[name], need) for name, need in minimum.items() if counts[name] < need}
        if short:
            raise BenchError(f"{what} was NOT proxied by LSCA: proxied counts {short} (have, need); counts: "
                             f"{proxied}; the lsca column would measure the native path")
        if processes_per_call and counts["processes"] < made * processes_per_call + 1:
            raise BenchError(f"{what}: {counts['processes']} process(es) registered with the supervisor "
                             f"for {made} started: the programs started were not served by LSCA")
        return counts
    return check


PROCESS = {item.name: item for item in [
    Item("exec", "exec", (), "the program execs itself N times, a counter in argv (UnixBench \"Execl "
         "Throughput\"), timed from the first exec to the start of the last image; the first and last "
         "image stat(2) a file (the proxied calls counted)", 70, proxied_at_least({"fstatat": 2})),
    Item("fork+wait", "fork", (), "fork(2), the child _exit(0)s, the parent waitpid(2)s (UnixBench "
         "\"Process Creation\")", 80, proxied_at_least({"fstatat": 1})),
    Item("spawn", "spawn", (), "posix_spawn(3) of /bin/true, then waitpid(2); under LSCA every /bin/true "
         "registers with the supervisor (checked)", None, proxied_at_least({"fstatat": 1}, 1)),
]}

LOOPS = {item.name: item for item in [
    Item("dup+close", "dup", ("dup", "close"), "dup(2) of a descriptor, then close(2) of the copy", 25, None),
    Item("file-copy-1KiB", "copy", ("read", "write"), "read(2) 1 KiB from a 64 KiB file, write(2) it to "
         "another, both rewound with lseek(2) at the end (UnixBench fstime)", 50, None),
    Item("pipe", "pipe", ("write", "read"), "write(2) 512 B into a pipe and read(2) them back (UnixBench "
         "\"Pipe Throughput\")", 35, None),
    Item("pipe-pingpong", "pingpong", ("write", "read"), "two processes pass an integer back and forth "
         "through two pipes, one round trip per op (UnixBench \"Pipe-based Context Switching\")", 25, None),
]}

TARGET_MODE = "lsca"


def describe(table):
    """The items for --help, each wrapped under its name."""
    lines = []
    for item in table.values():
        target = f" [target: lsca >= {item.target}% of native]" if item.target else ""
        lines.append(help_line(item.name, item.what + target))
    return "\n".join(lines)


def help_line(name, text, width=86, indent=20):
    return textwrap.fill(text, width=width, initial_indent=f"    {name:<{indent - 4}}",
                         subsequent_indent=" " * indent)


def measure_rates(runner, table, modes, repeats, label):
    """Every item of table in every mode: the per-call medians (lsca.bench.measure_ops), turned into
    rates per second and percentages of the native rate, and each item's target."""
    raw = measure_ops(runner, list(table), modes, repeats, table=table, label=label)
    items = {}
    for name, result in raw.items():
        medians = {mode: result["modes"][mode]["median_ns"] for mode in modes}
        per_mode = {}
        for mode in modes:
            entry = result["modes"][mode]
            per_mode[mode] = {"median_ns": entry["median_ns"], "rate_per_s": 1e9 / entry["median_ns"],
                              "percent_of_native": percent(medians.get("native"), medians[mode]),
                              "samples_ns": entry["samples_ns"], "runs": entry["runs"]}
        item = table[name]
        target = None
        if item.target is not None:
            got = per_mode.get(TARGET_MODE, {}).get("percent_of_native")
            target = {"mode": TARGET_MODE, "min_percent_of_native": item.target,
                      "met": None if got is None else got >= item.target}
        items[name] = {"what": item.what, "modes": per_mode, "ratios": result["ratios"], "target": target}
    return {"modes": modes, "repeats": repeats, "items": items}


def percent(native_ns, mode_ns):
    """The mode's rate as a percentage of the native rate (None without a native figure)."""
    r = ratio(native_ns, mode_ns)
    return None if r is None else 100 * r


def format_rate(value):
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def format_rates(title, result, unit):
    """A table: per item the rate in each mode, then each mode's % of native, then the target."""
    modes = result["modes"]
    others = [m for m in modes if m != "native"]
    width = max([16] + [len(name) + 2 for name in result["items"]])
    lines = [title, f"{'':<{width}}" + "".join(f"{m + ' ' + unit:>18}" for m in modes)
             + ("".join(f"{m + ' %nat':>16}" for m in others) if "native" in modes else "") + "  target"]
    for name, item in result["items"].items():
        row = f"{name:<{width}}" + "".join(f"{format_rate(item['modes'][m]['rate_per_s']):>18}" for m in modes)
        if "native" in modes:
            row += "".join(f"{fmt_percent(item['modes'][m]['percent_of_native']):>16}" for m in others)
        row += "  " + format_target(item["target"])
        lines.append(row)
    return "\n".join(lines)


def fmt_percent(value):
    return "-" if value is None else f"{value:.1f}%"


def format_target(target):
    if target is None:
        return "(none)"
    text = f"{target['mode']} >= {target['min_percent_of_native']}% of native: "
    if target["met"] is None:
        return text + "not measured"
    return text + ("met" if target["met"] else "NOT met")


def run_process(args, runner, modes):
    return measure_rates(runner, PROCESS, modes, args.repeats, "process: ")


def run_loops(args, runner, modes):
    return measure_rates(runner, LOOPS, modes, args.repeats, "loops: ")
