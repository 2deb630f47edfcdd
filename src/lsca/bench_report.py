"""lsca bench's report: the text tables of its sections and the scaling plot (the measuring
is lsca.bench's and lsca.bench_sections'; the other sections format themselves there)."""
import sys

from lsca.bench import RATIOS


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def format_ops(results, modes, args, workers):
    lines = [f"per-call cost, ns/call: median of {args.repeats} run(s) of at most {args.iterations} calls or "
             f"{args.run_ms} ms each, after a warm-up; lsca modes on one supervisor with {workers} worker(s)"]
    ratio_names = [name for name, a, b in RATIOS if a in modes and b in modes]
    header = f"{'op':<14}" + "".join(f"{m:>12}" for m in modes) + "".join(f"{r:>19}" for r in ratio_names)
    lines.append(header)
    for op, result in results.items():
        row = f"{op:<14}" + "".join(f"{result['modes'][m]['median_ns']:>12.1f}" for m in modes)
        row += "".join(f"{fmt(result['ratios'][r], '.2f') + 'x':>19}" for r in ratio_names)
        lines.append(row)
    if "strace" in modes and "lsca+trace" in modes:
        lines.append("")
        for op, result in results.items():
            r = result["ratios"]["strace/lsca+trace"]
            if r >= 1:
                lines.append(f"{op}: tracing with LSCA is {r:.1f}x cheaper than strace -f")
            else:
                lines.append(f"{op}: tracing with LSCA is {1 / r:.1f}x MORE expensive than strace -f")
    checked = [m for m in ("lsca", "lsca+trace") if m in modes]
    if checked:
        lines.append("")
        lines.append(f"proxy check passed: in every {' and '.join(checked)} run, `lsca run --stats-file` counted "
                     "every call of the loop (warm-up included) as proxied"
                     + ("; every trace file held a line per call" if "lsca+trace" in modes else ""))
    return "\n".join(lines)


def format_scaling(scaling):
    cells = {(c["workers"], c["clients"]): c for c in scaling["matrix"]}
    clients = range(1, scaling["max_clients"] + 1)
    lines = [f"throughput of {scaling['op']}: calls/s of all clients together, {scaling['seconds']:g} s per cell, "
             "a supervisor per cell"]
    lines.append(f"{'workers':<10}" + "".join(f"{str(k) + (' client' if k == 1 else ' clients'):>14}"
                                             for k in clients))
    for w in range(1, scaling["max_workers"] + 1):
        lines.append(f"{w:<10}" + "".join(f"{cells[(w, k)]['calls_per_s']:>14,.0f}" for k in clients))
    s = scaling["speedup_2_clients_1_to_2_workers"]
    if s is None:
        lines.append("speed-up of 2 clients from 1 to 2 workers: not measured (needs --clients >= 2 and "
                     "--workers >= 2)")
    else:
        lines.append(f"speed-up of 2 clients from 1 to 2 workers: {s:.2f}x")
    return "\n".join(lines)


def format_idle(idle):
    return (f"idle CPU: supervisor with {idle['workers']} worker(s) and one idle attached client, "
            f"{idle['seconds']:.1f} s: {idle['cpu_percent']:.2f}% of one core (supervisor "
            f"{idle['supervisor_percent']:.2f}%, workers {idle['workers_percent']:.2f}%)")


def format_machine(facts):
    load = " ".join(f"{x:.2f}" for x in facts["loadavg"])
    text = (f"lsca bench {facts['lsca']}: nproc {facts['nproc']}, kernel {facts['kernel']} ({facts['machine']}), "
            f"python {facts['python']}, workers {facts['workers']}, load average {load}")
    if facts["cpu_model"]:
        text += f"\ncpu: {facts['cpu_model']}"
    if facts["strace"]:
        text += f"\nstrace: {facts['strace']}"
    return text


def print_report(args, report):
    print(format_machine(report["machine"]))
    for note in report["notes"]:
        print(f"note: {note}")
    if "ops" in report:
        print()
        print(format_ops(report["ops"], report["modes"], args, report["machine"]["workers"]))
    if "scaling" in report:
        print()
        print(format_scaling(report["scaling"]))
    if "idle_cpu" in report:
        print()
        print(format_idle(report["idle_cpu"]))
    from lsca import bench_sections
    for text in bench_sections.format_sections(report):
        print()
        print(text)
    sys.stdout.flush()
