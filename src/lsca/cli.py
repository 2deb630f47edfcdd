"""The lsca command: lsca run [options] -- CMD [ARGS...]."""
import argparse
import os
import sys

from lsca import __version__
from lsca.command import CommandError
from lsca.runner import RunError, agent_path, run
from lsca.settings import WORKERS, default_socket
from lsca.statedir import StateDirError
from lsca.stats import StatsError


def build_parser():
    parser = argparse.ArgumentParser(
        prog="lsca",
        description="Linux System Call Agent: run a dynamically linked program so that its system "
                    "calls are executed by a supervised pool of worker processes.")
    parser.add_argument("--version", action="version", version=f"lsca {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run_parser = commands.add_parser(
        "run", help="run a program under LSCA",
        description="Run CMD with the LSCA agent preloaded. Its proxied calls are executed by the "
                    "supervisor named by LSCA_SOCKET, or by one started for this run only. The exit "
                    "status and signals of CMD pass through.",
        epilog="example: lsca run --trace -- ls /")
    run_parser.add_argument("--workers", type=WORKERS.type, metavar="N",
                            help="workers of the supervisor started for this run "
                                 "(default: one per CPU core)")
    run_parser.add_argument("--trace", action="store_true",
                            help="print one strace-like line per proxied call to stderr; "
                                 "--trace=SET records only the calls in SET (as -e trace=SET)")
    run_parser.add_argument("-e", dest="expr", metavar="trace=SET", action="append", default=[],
                            help="strace-style filter: SET is a comma list of calls (openat, read, stat, "
                                 "pread64...) and classes (%%file, %%desc, %%network); a leading ! "
                                 "negates it (implies --trace)")
    run_parser.add_argument("-o", "--output", metavar="FILE",
                            help="write the trace to FILE instead of stderr (implies --trace)")
    run_parser.add_argument("--json", action="store_true",
                            help="trace as JSON lines: time, pid, tid, program, command, worker, op, syscall, call, "
                                 "paths, result, errno, latency_us; records lost to a slow reader: time, pid, "
                                 "program, worker, dropped (implies --trace)")
    run_parser.add_argument("--summary", action="store_true",
                            help="print an strace -c like table at exit: time in the workers, calls and "
                                 "errors per call")
    run_parser.add_argument("--stats", action="store_true",
                            help="print per-call counts of proxied and passthrough calls at exit")
    run_parser.add_argument("--stats-file", metavar="FILE",
                            help="write the counts as JSON to FILE at exit")
    run_parser.add_argument("--policy", metavar="FILE",
                            help="a TOML policy: calls to allow, deny (with an errno) or log, by call, "
                                 "path, uid and program (see README); applied by the workers")
    run_parser.add_argument("--fail-closed", action="store_true",
                            help="when the supervisor cannot be reached (or dies), proxied calls fail "
                                 "with EACCES instead of running natively")
    run_parser.add_argument("--required", action="store_true",
                            help="refuse to start CMD (exit 126) when its calls cannot be proxied: a "
                                 "static, set-uid, set-gid or file-capability program, or no supervisor "
                                 "to reach (LSCA_REQUIRED=1)")
    run_parser.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS]",
                            help="the program to run and its arguments")

    commands.add_parser("agent-path", help="print the path of the agent library (for LD_PRELOAD)")
    stats_parser = commands.add_parser(
        "stats", help="print a running supervisor's statistics: calls, latencies, load, clients",
        description="Ask a running supervisor for its counters twice, INTERVAL apart, and print calls, "
                    "errors and latencies per call (since the supervisor started), calls/s and load "
                    "per worker (over the interval), and its clients. Only the supervisor's user and "
                    "root may ask.")
    add_socket_argument(stats_parser)
    stats_parser.add_argument("--json", action="store_true", help="print one line of JSON instead of tables")
    stats_parser.add_argument("--interval", type=seconds(allow_zero=True), default=1.0, metavar="SEC",
                              help="seconds between the two snapshots the rates come from; 0: one "
                                   "snapshot, no rates (default: %(default)s)")
    top_parser = commands.add_parser(
        "top", help="watch a running supervisor's statistics, refreshed in place",
        description="Like 'lsca stats', refreshed every INTERVAL: in place on a terminal, as plain "
                    "tables separated by a blank line otherwise. q or Ctrl-C quits.")
    add_socket_argument(top_parser)
    top_parser.add_argument("--interval", type=seconds(allow_zero=False), default=1.0, metavar="SEC",
                            help="seconds between refreshes (default: %(default)s)")
    top_parser.add_argument("--iterations", type=WORKERS.type, metavar="N",
                            help="stop after N refreshes (default: until q or Ctrl-C)")
    commands.add_parser(
        "cleanup", help="remove the SysV objects of supervisors that died (kill -9, crash)",
        description="Remove the shared-memory segments and semaphore sets that supervisors of this "
                    "user left when they died without stopping (every supervisor also does this at "
                    "start). Objects of running supervisors are never touched.")
    from lsca import bench
    bench.add_parser(commands)
    return parser


def add_socket_argument(parser):
    parser.add_argument("--socket", metavar="PATH", default=None,
                        help="the supervisor's socket (default: LSCA_SOCKET, else the supervisor's "
                             f"default, here {default_socket()})")


def seconds(allow_zero):
    def convert(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}")
        if not (value >= 0 if allow_zero else value > 0) or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r}: must be a number of seconds "
                                             f"{'0 or more' if allow_zero else 'above 0'}")
        return value
    return convert


VALUE_OPTIONS = {"-o", "--output", "--workers", "-e", "--stats-file", "--policy"}


def split_trace_option(argv):
    """--trace=SET means --trace -e trace=SET (only before the command: its own arguments
    are never touched)."""
    out, takes_value = [], False
    for i, arg in enumerate(argv):
        if arg == "--" or (i > 0 and not takes_value and not arg.startswith("-")):
            return out + argv[i:]       # the command starts here
        takes_value = arg in VALUE_OPTIONS
        if arg.startswith("--trace="):
            out += ["--trace", "-e", "trace=" + arg[len("--trace="):]]
        else:
            out.append(arg)
    return out


def trace_filter(parser, expressions):
    """The set of op names the -e trace= expressions select; None when there are none."""
    from lsca.opclasses import parse_filter
    chosen = None
    for expr in expressions:
        key, _, value = expr.partition("=")
        if key != "trace" or not value:
            parser.error(f"run: -e {expr}: only trace=SET is known")
        try:
            ops = parse_filter(value)
        except ValueError as e:
            parser.error(f"run: -e {expr}: {e}")
        chosen = ops if chosen is None else chosen & ops
    return chosen


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(split_trace_option(sys.argv[1:] if argv is None else list(argv)))
    try:
        if args.command == "run":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            if not cmd:
                parser.error("run: no command given (lsca run [options] -- CMD [ARGS])")
            trace_ops = trace_filter(parser, args.expr)
            return run(cmd, workers=args.workers,
                       trace=args.trace or args.json or bool(args.output) or trace_ops is not None,
                       show_stats=args.stats, stats_file=args.stats_file, trace_file=args.output,
                       trace_json=args.json, summary=args.summary, trace_ops=trace_ops,
                       policy=args.policy, fail_closed=args.fail_closed, required=args.required)
        if args.command == "bench":
            from lsca import bench
            return bench.run(args)
        if args.command in ("stats", "top"):
            from lsca.stats import stats_command, top_command
            path = args.socket or os.environ.get("LSCA_SOCKET") or default_socket()
            if args.command == "stats":
                return stats_command(path, args.interval, args.json)
            return top_command(path, args.interval, args.iterations)
        if args.command == "agent-path":
            print(agent_path())
            return 0
        if args.command == "cleanup":
            from lsca.supervisor.registry import cleanup_dead
            instances, segments, sets = cleanup_dead()
            print(f"lsca: removed {segments} shared-memory segment(s) and {sets} semaphore set(s) "
                  f"of {instances} dead supervisor(s)")
            return 0
        parser.print_help()
        return 2
    except (RunError, CommandError) as e:
        print(f"lsca: {e}", file=sys.stderr)
        return e.status
    except (StatsError, StateDirError) as e:
        print(f"lsca: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
