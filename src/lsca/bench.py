"""lsca bench: what a proxied call costs, how the pool scales and what it costs idle.

Three parts here, all in one run (the sections process, loops, busy and workloads
are in lsca.bench_sections and the modules it names):

  per-call cost  A small C loop (bench_loop.c, shipped with the package and compiled at
                 run time with cc) times one kind of call per run and prints ns/call of
                 its timed part, after a warm-up. The same binary runs natively, under
                 LSCA (`lsca run` on one long-lived supervisor, so start-up is not
                 measured), under LSCA with tracing to a file (`lsca run --trace -o`)
                 and under `strace -f -o /dev/null`. Medians of --repeats runs, modes
                 interleaved within each repeat. Every LSCA run is checked: its
                 `lsca run --stats-file` counts must show every call of the loop as
                 proxied (and the trace file a line per call), otherwise the benchmark
                 fails: it would have measured the native path.
  throughput     Aggregate write-1B calls/s of K concurrent clients on a supervisor with
                 W workers, for K = 1..--clients and W = 1..--workers, each cell on a
                 supervisor of its own. The clients start their timed part together.
  idle CPU       CPU used by a supervisor with --workers workers and one idle attached
                 client over --idle-seconds (psutil, the supervisor's process tree).
"""
import argparse
import contextlib
import itertools
import json
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import namedtuple
from importlib import resources

from lsca import __version__
from lsca.launch import SupervisorStartError, clean_env, start_supervisor, stop_supervisor
from lsca import settings
from lsca.settings import argument_type

# ---- what is measured ----


# name: as shown and chosen with --ops; loop: the op of bench_loop.c; counted: the names in
# `lsca run --stats-file` that each iteration adds one to; what: for --help.
Op = namedtuple("Op", "name loop counted what")


OPS = {op.name: op for op in [
    Op("write-1B", "write", ("write",), "write(2) of 1 byte to /dev/null"),
    Op("pread-4KiB", "pread", ("pread",), "pread(2) of 4 KiB at offset 0 from a cached 64 KiB file"),
    Op("fstat", "fstat", ("fstat",), "fstat(2) of an open regular file"),
    Op("openat+close", "openat", ("openat", "close"),
       "openat(2) of a regular file then close(2): one pair is one call"),
    Op("stat", "stat", ("fstatat",), "stat(2) of an existing regular file"),
]}
MODES = {
    "native": "the loop alone",
    "lsca": "lsca run on the benchmark's supervisor (the proxy only)",
    "lsca+trace": "lsca run --trace -o FILE (a trace line per call, to a file)",
    "strace": "strace -f -o /dev/null",
}
# process, loops, busy, workloads: lsca.bench_sections (imported where used: it imports this module).
SECTIONS = ("ops", "scaling", "idle", "process", "loops", "busy", "workloads")
DEFAULT_SECTIONS = ("ops", "scaling", "idle", "process", "loops", "busy")
SCALING_OP = OPS["write-1B"]
SOCKET_NUMBERS = itertools.count(1)

DEFAULTS = {"repeats": 5, "iterations": 200000, "run_ms": 300, "scale_seconds": 1.0, "idle_seconds": 3.0}
QUICK = {"repeats": 1, "iterations": 2000, "run_ms": 50, "scale_seconds": 0.25, "idle_seconds": 1.0}

DATA_FILE_SIZE = 64 * 1024
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
WATCH_INTERVAL_S = 0.25
RUN_TIMEOUT_S = 120.0          # a single run beyond its own time budget: something hangs
IDLE_SETTLE_S = 0.3            # after the idle client's call, before measuring


class BenchError(Exception):
    """Why the benchmark cannot go on: a one-line message (or a few, for compiler output)."""


class Interrupted(BaseException):
    """SIGTERM/SIGHUP: unwind like Ctrl-C so every finally block runs."""


def say(text):
    print(f"lsca bench: {text}", file=sys.stderr, flush=True)


# ---- command line ----


def comma_list(known, what):
    lookup = {k.lower(): k for k in known}

    def parse(text):
        names = [t.strip() for t in text.split(",") if t.strip()]
        if not names:
            raise argparse.ArgumentTypeError(f"no {what} given")
        unknown = [n for n in names if n.lower() not in lookup]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {what}: {', '.join(unknown)} "
                                             f"(known: {','.join(known)})")
        chosen = {lookup[n.lower()] for n in names}
        return [k for k in known if k in chosen]   # canonical order
    return parse




def nproc():
    return len(os.sched_getaffinity(0))


DESCRIPTION = """\
Benchmark LSCA on this machine, in parts (--sections):

per-call cost: a small C loop (shipped with lsca, compiled with cc into a temporary
  directory) times one kind of call per run and reports ns/call of its timed part,
  after a warm-up. Ops (--ops):
{ops}
  Modes (--modes), all in this one run against the same loop binary:
{modes}
  The lsca modes share one lsca-supervisor (--workers workers) started once, so no
  start-up is measured. Each (op, mode) runs --repeats times, modes interleaved; the
  median is reported with the ratios to native and strace/(lsca+trace): how much
  cheaper tracing with LSCA is than strace. Every lsca run is checked through its
  `lsca run --stats-file` counts (and its trace file): if any call of the loop was
  not proxied, the benchmark fails instead of reporting the native path as LSCA's.

throughput: aggregate calls/s of write-1B with K concurrent client processes on a
  supervisor with W workers, K = 1..--clients, W = 1..--workers, each cell on a
  supervisor of its own; the clients start their timed part together. Prints the
  matrix and the speed-up of 2 clients from 1 to 2 workers.

idle CPU: a supervisor with --workers workers and one attached client that does
  nothing, for --idle-seconds: CPU time of the supervisor and its workers (psutil) as
  a percentage of one core.
{sections}"""

EPILOG = """\
strace: when it is missing, the strace column is skipped with a note; with
--install-strace (as root, where apt-get exists) it is installed first with
`apt-get install -y strace` (said on stderr).

--json FILE holds every number: machine facts (nproc, load average), settings, per op
and mode every sample (ns/call, calls, warm-up calls, proxied counts) and the median,
the ratios, the throughput matrix, the idle CPU and every number of the sections
process, loops, busy and workloads. --plot FILE.png draws calls/s against workers, one
line per client count, and FILE-sections.png next to it the sections process, loops,
busy (% of native per item and mode) and workloads (x native) as bars (needs
matplotlib: pip install 'lsca[bench]').

Ctrl-C or SIGTERM stops everything: clients, CPU hogs and workload processes are
killed (by pid, or their session's process group), supervisors stopped with
SIGTERM (their SysV objects removed), the temporary directory deleted.

examples:
  lsca bench
  lsca bench --quick --json /tmp/bench.json
  lsca bench --ops write-1B,stat --modes native,lsca,lsca+trace --clients 4 --plot scaling.png
  lsca bench --sections process,loops,busy --repeats 3
  lsca bench --workloads --workloads-only make,sqlite,http
"""


def format_description():
    ops = "\n".join(f"    {op.name:<14}{op.what}" for op in OPS.values())
    modes = "\n".join(f"    {name:<14}{what}" for name, what in MODES.items())
    from lsca import bench_sections
    return DESCRIPTION.format(ops=ops, modes=modes, sections=bench_sections.DESCRIPTION)


def add_parser(subparsers):
    """The `lsca bench` subcommand, for lsca.cli."""
    parser = subparsers.add_parser(
        "bench", help="benchmark per-call cost (native, LSCA, LSCA tracing, strace), scaling, idle CPU",
        description=format_description(), epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser


def add_arguments(parser):
    parser.add_argument("--ops", type=comma_list(list(OPS), "op"), default=list(OPS), metavar="OP,...",
                        help=f"ops of the per-call part (default: all: {','.join(OPS)})")
    parser.add_argument("--modes", type=comma_list(list(MODES), "mode"), default=list(MODES),
                        metavar="MODE,...",
                        help=f"modes of the per-call part and of the sections process, loops, busy, workloads "
                             f"(default: all: {','.join(MODES)}; workloads: never lsca+trace)")
    parser.add_argument("--repeats", type=positive_int, metavar="N",
                        help=f"runs of each (op, mode), also of the sections process, loops, busy; the "
                             f"median is reported (default: {DEFAULTS['repeats']})")
    parser.add_argument("--iterations", type=positive_int, metavar="N",
                        help=f"at most N timed calls per run (default: {DEFAULTS['iterations']})")
    parser.add_argument("--run-ms", type=positive_int, metavar="MS",
                        help=f"at most MS milliseconds of timed calls per run, whichever of --iterations "
                             f"and this ends first (default: {DEFAULTS['run_ms']})")
    parser.add_argument("--workers", type=positive_int, default=nproc(), metavar="N",
                        help="workers of the per-call and idle supervisors, and the largest worker count "
                             "of the throughput part (default: one per CPU core, here %(default)s)")
    parser.add_argument("--clients", type=positive_int, default=2, metavar="N",
                        help="largest number of concurrent clients of the throughput part (default: 2)")
    parser.add_argument("--scale-seconds", type=positive_float, metavar="S",
                        help=f"timed seconds of each throughput cell (default: {DEFAULTS['scale_seconds']})")
    parser.add_argument("--idle-seconds", type=positive_float, metavar="S",
                        help=f"how long idle CPU is measured (default: {DEFAULTS['idle_seconds']})")
    parser.add_argument("--worker-spin-us", type=non_negative_int, metavar="US",
                        help="passed to every lsca-supervisor (default: the supervisor's own)")
    parser.add_argument("--sections", type=comma_list(list(SECTIONS), "section"), metavar="PART,...",
                        help=f"parts to run: {', '.join(SECTIONS)} (default: all but workloads)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a short run for tests: {QUICK['iterations']} iterations or {QUICK['run_ms']} ms "
                             f"per run, {QUICK['repeats']} repeat, {QUICK['scale_seconds']} s per throughput "
                             f"cell, {QUICK['idle_seconds']:.0f} s idle, small workloads (flags given "
                             "explicitly win)")
    parser.add_argument("--install-strace", action="store_true",
                        help="install strace with apt-get when it is missing (as root); without it a "
                             "missing strace only skips its column")
    parser.add_argument("--json", metavar="FILE", help="write every number as JSON to FILE")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw the throughput (calls/s against workers, a line per client count) "
                             "to FILE.png and the sections process, loops, busy, workloads to "
                             "FILE-sections.png (needs matplotlib)")
    from lsca import bench_sections
    bench_sections.add_arguments(parser)
    return parser


def resolve(args):
    """Fill the defaults that depend on --quick."""
    from lsca import bench_sections
    bench_sections.resolve(args)    # first: it needs to know which flags were given
    base = QUICK if args.quick else DEFAULTS
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


# ---- environment and helpers ----


def lsca_cli():
    return [sys.executable, "-m", "lsca.cli"]


def loop_source():
    source = resources.files("lsca").joinpath("bench_loop.c")
    if not source.is_file():
        raise BenchError(f"the benchmark loop is missing at {source}: reinstall lsca")
    return source


def compile_loop(workdir):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise BenchError("no C compiler (cc or gcc) on PATH: the benchmark loop is compiled at run time")
    source = os.path.join(workdir, "bench_loop.c")
    with open(source, "w") as f:
        f.write(loop_source().read_text())
    binary = os.path.join(workdir, "bench_loop")
    result = subprocess.run([compiler, "-O2", "-Wall", "-o", binary, source], capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(f"compiling bench_loop.c failed:\n{result.stderr.strip()}")
    return binary


def make_data_file(workdir):
    """A 64 KiB regular file, read once so that it is in the page cache."""
    path = os.path.join(workdir, "data.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(DATA_FILE_SIZE))
    with open(path, "rb") as f:
        f.read()
    return path


def find_strace(args, notes):
    """strace's path, installing it when allowed; None (and a note) when it cannot be had."""
    path = shutil.which("strace")
    if path:
        return path
    if not args.install_strace:
        notes.append("strace is not installed (--install-strace installs it): the strace column is skipped")
        return None
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or not apt:
        notes.append("strace is not installed (and cannot be installed here: needs root and apt-get): "
                     "the strace column is skipped")
        return None
    say("strace is not installed: installing it with `apt-get install -y strace` (--install-strace)")
    env = {**clean_env(), "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", "strace"]
    result = subprocess.run(install, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        say("apt-get install failed; running apt-get update and trying again")
        subprocess.run([apt, "update", "-q"], env=env, stdin=subprocess.DEVNULL, capture_output=True)
        result = subprocess.run(install, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    path = shutil.which("strace")
    if result.returncode != 0 or not path:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        notes.append(f"installing strace failed ({last}): the strace column is skipped")
        return None
    notes.append("strace was installed with apt-get for this benchmark")
    return path


def machine_facts(workers, strace):
    facts = {"nproc": nproc(), "cpu_count": os.cpu_count(), "kernel": platform.release(),
             "machine": platform.machine(), "python": platform.python_version(), "lsca": __version__,
             "workers": workers, "loadavg": list(os.getloadavg()), "cpu_model": None, "strace": None}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    facts["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if strace:
        result = subprocess.run([strace, "-V"], capture_output=True, text=True)
        facts["strace"] = (result.stdout.strip().splitlines() or [None])[0]
    return facts


# ---- processes: everything started is tracked, and ended by its id ----


class Processes:
    """Every client started (each in a session of its own, so killing its process group
    ends `lsca run`/strace and the loop below it) and every supervisor."""

    def __init__(self):
        self.clients = []
        self.supervisors = []

    def start_client(self, command, env, stdout, stderr, cwd=None):
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                   start_new_session=True, bufsize=0, cwd=cwd)
        self.clients.append(process)
        return process

    def end_client(self, process):
        """Kill the client's process group if it is still running, reap it, forget it. (Once
        reaped, `lsca run` and strace have waited for the loop below them: nothing is left.)"""
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        if process in self.clients:
            self.clients.remove(process)

    def stop_all(self):
        for process in list(self.clients):
            self.end_client(process)
        for supervisor in list(self.supervisors):
            supervisor.stop()


class Supervisor:
    """An lsca-supervisor in its own session (Ctrl-C does not reach it), stopped by stop()
    with SIGTERM: it removes its SysV objects and socket."""

    def __init__(self, processes, workdir, workers, spin_us=None):
        self.processes = processes
        self.workers = workers
        self.socket_path = os.path.join(workdir, f"supervisor-{next(SOCKET_NUMBERS)}.sock")
        args = ["--workers", str(workers), "--exit-with", str(os.getpid())]
        if spin_us is not None:
            args += ["--worker-spin-us", str(spin_us)]
        try:
            self.process = start_supervisor(self.socket_path, args, stdin=subprocess.DEVNULL, start_new_session=True)
        except SupervisorStartError as e:
            raise BenchError(f"lsca-supervisor: {e}") from None
        self.stopped = False
        processes.supervisors.append(self)

    def client_env(self):
        env = clean_env()
        # LSCA_REQUIRED: a client that cannot reach the supervisor fails instead of running natively.
        env.update(LSCA_SOCKET=self.socket_path, LSCA_REQUIRED="1")
        return env

    def check_alive(self, grace=0.0):
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            return
        raise BenchError(f"lsca-supervisor died during the benchmark (status {self.process.returncode}); "
                         "was it killed by another program?")

    def tree(self):
        """psutil processes of the supervisor and its workers."""
        import psutil
        root = psutil.Process(self.process.pid)
        return [root] + root.children(recursive=True)

    def stop(self):
        if self.stopped:
            return
        stop_supervisor(self.process, grace=STOP_TIMEOUT_S, on_kill=lambda p: say(
            f"lsca-supervisor {p.pid} ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s: killing it"))
        if self.process.returncode not in (0, -signal.SIGTERM):
            say(f"lsca-supervisor {self.process.pid} ended with status {self.process.returncode}: "
                "removing the SysV objects of dead supervisors (lsca cleanup)")
            from lsca.supervisor.registry import cleanup_dead
            try:
                cleanup_dead()
            except Exception as e:   # reported, never hides the benchmark's own outcome
                say(f"lsca cleanup failed: {e}; check `ipcs -m -s`")
        try:
            os.unlink(self.socket_path)
        except OSError:
            pass
        # Only now: interrupted before this point, stop_all() stops it again.
        self.stopped = True
        if self in self.processes.supervisors:
            self.processes.supervisors.remove(self)


@contextlib.contextmanager
def serving(processes, workdir, args, modes):
    """The supervisor of the lsca modes (None when none is measured), stopped at the end; when
    the body failed, whether it died is said first."""
    supervisor = None
    try:
        if any(m.startswith("lsca") for m in modes):
            supervisor = Supervisor(processes, workdir, args.workers, args.worker_spin_us)
        yield supervisor
    except BenchError:
        if supervisor is not None:
            supervisor.check_alive(grace=0.5)
        raise
    finally:
        if supervisor is not None:
            supervisor.stop()


def watch(process, supervisor, timeout, what):
    """Wait for a client started with stdout/stderr pipes; returns (status, stdout, stderr) as text.
    Gives up when the supervisor dies (its clients could wait forever) or after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            out, err = process.communicate(timeout=WATCH_INTERVAL_S)
            return (process.returncode, (out or b"").decode(errors="replace"),
                    (err or b"").decode(errors="replace"))
        except subprocess.TimeoutExpired:
            if supervisor is not None:
                supervisor.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"{what} did not finish within {timeout:.0f} s")


def read_stats(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise BenchError(f"{what}: `lsca run --stats-file` wrote no counts ({e}): cannot check that the "
                         "calls were proxied")


def check_proxied(stats, op, expected, what):
    """Every call of the loop (timed and warm-up) must have gone to a worker: answered by it, or
    tried by it and handed back because it would wait (then it waited natively, reported)."""
    proxied = stats.get("proxied", {})
    waited = stats.get("waited", {})
    passthrough = stats.get("passthrough", {})
    for name in op.counted:
        if proxied.get(name, 0) + waited.get(name, 0) < expected:
            raise BenchError(
                f"{what} was NOT proxied by LSCA: {proxied.get(name, 0)} {name} call(s) proxied "
                f"and {waited.get(name, 0)} handed back to wait of {expected} made ({passthrough.get(name, 0)} "
                f"passthrough; counts: {json.dumps({'proxied': proxied, 'waited': waited, 'passthrough': passthrough})});"
                " the lsca column would measure the native path")
    return {name: proxied.get(name, 0) + waited.get(name, 0) for name in op.counted}


def count_lines(path):
    lines = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            lines += chunk.count(b"\n")
    return lines


positive_int = argument_type(settings.positive_int)
positive_float = argument_type(settings.positive_float)
non_negative_int = argument_type(settings.non_negative_int)


# ---- per-call cost ----


class Runner:
    """Runs the loop in each mode and checks the LSCA runs."""

    def __init__(self, args, processes, workdir, loop, data_file, supervisor, strace):
        self.args = args
        self.processes = processes
        self.workdir = workdir
        self.loop = loop
        self.data_file = data_file
        self.supervisor = supervisor
        self.strace = strace
        self.counter = 0

    def once(self, op, mode):
        """One run: {"ns_per_call", "calls", "warmup", and for lsca modes "proxied" (and "trace_lines")}."""
        self.counter += 1
        loop_cmd = [self.loop, "time", op.loop, self.data_file, str(self.args.iterations), str(self.args.run_ms)]
        stats_file = os.path.join(self.workdir, f"stats-{self.counter}.json")
        trace_file = os.path.join(self.workdir, f"trace-{self.counter}.txt")
        supervisor = None
        if mode == "native":
            command, env = loop_cmd, clean_env()
        elif mode == "strace":
            command, env = [self.strace, "-f", "-o", "/dev/null", *loop_cmd], clean_env()
        else:
            extra = ["--trace", "-o", trace_file] if mode == "lsca+trace" else []
            command = [*lsca_cli(), "run", "--stats-file", stats_file, *extra, "--", *loop_cmd]
            env, supervisor = self.supervisor.client_env(), self.supervisor
        what = f"{op.name} ({mode})"
        process = self.processes.start_client(command, env, subprocess.PIPE, subprocess.PIPE)
        try:
            status, out, err = watch(process, supervisor, RUN_TIMEOUT_S + self.args.run_ms / 1000 * 2, what)
        finally:
            self.processes.end_client(process)
        if status != 0:
            raise BenchError(f"{what}: {' '.join(command)} exited with status {status}:\n{err.strip()}")
        try:
            ns, calls, warmup = out.strip().splitlines()[-1].split()
            sample = {"ns_per_call": float(ns), "calls": int(calls), "warmup": int(warmup)}
        except (ValueError, IndexError):
            raise BenchError(f"{what}: the loop printed no timing: {out!r}") from None
        if supervisor is not None:
            made = sample["calls"] + sample["warmup"]
            # An op may check its counts its own way (lsca.bench_process: calls that start processes).
            check = getattr(op, "check", None) or check_proxied
            sample["proxied"] = check(read_stats(stats_file, what), op, made, what)
            os.unlink(stats_file)
            if mode == "lsca+trace":
                lines = count_lines(trace_file) if os.path.exists(trace_file) else 0
                if lines < made * len(op.counted):
                    raise BenchError(f"{what}: the trace file holds {lines} line(s) for "
                                     f"{made * len(op.counted)} proxied calls: tracing was not measured")
                sample["trace_lines"] = lines
                os.unlink(trace_file)
        return sample


def ratio(a, b):
    return a / b if a is not None and b else None


RATIOS = [("lsca/native", "lsca", "native"), ("lsca+trace/native", "lsca+trace", "native"),
          ("strace/native", "strace", "native"), ("strace/lsca+trace", "strace", "lsca+trace")]


def measure_ops(runner, ops, modes, repeats, table=OPS, label=""):
    """Per op (a name in table): per mode the samples and the median ns/call, and the ratios."""
    runs = {op: {mode: [] for mode in modes} for op in ops}
    for op in ops:
        for _ in range(repeats):
            for mode in modes:   # interleaved: drift of the machine affects every mode alike
                runs[op][mode].append(runner.once(table[op], mode))
        say(f"measured {label}{op}")
    import statistics

    results = {}
    for op in ops:
        per_mode = {}
        for mode in modes:
            samples = runs[op][mode]
            per_mode[mode] = {"median_ns": statistics.median(s["ns_per_call"] for s in samples),
                              "samples_ns": [s["ns_per_call"] for s in samples], "runs": samples}
        medians = {mode: per_mode[mode]["median_ns"] for mode in modes}
        results[op] = {"modes": per_mode,
                       "ratios": {name: ratio(medians.get(a), medians.get(b)) for name, a, b in RATIOS}}
    return results


# ---- throughput ----


def read_ready_lines(clients, supervisor, timeout):
    """Wait until every client's loop printed "ready PID"; returns the pids, in order."""
    fds = [c.stdout.fileno() for c in clients]
    buffers = [b""] * len(clients)
    pids = [None] * len(clients)
    deadline = time.monotonic() + timeout
    while None in pids:
        supervisor.check_alive()
        for i, c in enumerate(clients):
            if pids[i] is None and c.poll() is not None:
                raise BenchError(f"a client exited with status {c.returncode} before it was ready"
                                 f"{stderr_tail(c)}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BenchError(f"the clients were not ready within {timeout:.0f} s")
        waiting = [fds[i] for i in range(len(clients)) if pids[i] is None]
        readable, _, _ = select.select(waiting, [], [], min(remaining, WATCH_INTERVAL_S))
        for fd in readable:
            i = fds.index(fd)
            buffers[i] += os.read(fd, 4096)
            if b"\n" in buffers[i]:
                line = buffers[i].split(b"\n", 1)[0]
                try:
                    word, pid = line.split()
                    if word != b"ready":
                        raise ValueError
                    pids[i] = int(pid)
                except ValueError:
                    raise BenchError(f"a client said {line!r} instead of 'ready PID'") from None
    return pids


def stderr_tail(process):
    path = getattr(process, "stderr_path", None)
    try:
        with open(path) as f:
            text = f.read().strip()
    except (OSError, TypeError):
        return ""
    return ":\n" + "\n".join(text.splitlines()[-10:]) if text else ""


def throughput_cell(args, processes, workdir, loop, data_file, workers, clients):
    """Aggregate calls/s of `clients` concurrent write-1B loops on a fresh supervisor."""
    supervisor = Supervisor(processes, workdir, workers, args.worker_spin_us)
    started = []
    try:
        ms = max(1, round(args.scale_seconds * 1000))
        for i in range(clients):
            stats_file = os.path.join(workdir, f"scale-w{workers}-c{clients}-{i}.json")
            err_path = os.path.join(workdir, f"scale-w{workers}-c{clients}-{i}.err")
            command = [*lsca_cli(), "run", "--stats-file", stats_file, "--",
                       loop, "throughput", SCALING_OP.loop, data_file, str(ms)]
            with open(err_path, "wb") as err:
                process = processes.start_client(command, supervisor.client_env(), subprocess.PIPE, err)
            process.stats_file, process.stderr_path = stats_file, err_path
            started.append(process)
        pids = read_ready_lines(started, supervisor, READY_TIMEOUT_S + 5 * clients)
        for pid in pids:           # the barrier: every loop starts its timed part now
            os.kill(pid, signal.SIGUSR1)
        results = []
        for process in started:
            what = f"throughput client ({clients} client(s), {workers} worker(s))"
            status, out, _ = watch(process, supervisor, RUN_TIMEOUT_S + args.scale_seconds * 2, what)
            if status != 0:
                raise BenchError(f"{what} exited with status {status}{stderr_tail(process)}")
            try:
                calls, start, end, warmup = out.strip().splitlines()[-1].split()
                calls, start, end, warmup = int(calls), float(start), float(end), int(warmup)
            except (ValueError, IndexError):
                raise BenchError(f"{what} printed no counts: {out!r}") from None
            check_proxied(read_stats(process.stats_file, what), SCALING_OP, calls + warmup, what)
            results.append({"calls": calls, "start_ns": start, "end_ns": end, "warmup": warmup,
                            "calls_per_s": calls / (end - start) * 1e9})
    finally:
        for process in started:
            processes.end_client(process)
        supervisor.stop()
    span = max(r["end_ns"] for r in results) - min(r["start_ns"] for r in results)
    total = sum(r["calls"] for r in results)
    return {"workers": workers, "clients": clients, "calls": total, "span_s": span / 1e9,
            "calls_per_s": total / span * 1e9,
            "per_client_calls_per_s": [r["calls_per_s"] for r in results]}


def measure_scaling(args, processes, workdir, loop, data_file):
    matrix = []
    for workers in range(1, args.workers + 1):
        for clients in range(1, args.clients + 1):
            matrix.append(throughput_cell(args, processes, workdir, loop, data_file, workers, clients))
            say(f"throughput: {clients} client(s), {workers} worker(s): "
                f"{matrix[-1]['calls_per_s']:,.0f} calls/s")
    cell = {(c["workers"], c["clients"]): c["calls_per_s"] for c in matrix}
    speedup = ratio(cell.get((2, 2)), cell.get((1, 2)))
    return {"op": SCALING_OP.name, "seconds": args.scale_seconds, "max_workers": args.workers,
            "max_clients": args.clients, "matrix": matrix, "speedup_2_clients_1_to_2_workers": speedup}


# ---- idle CPU ----


def cpu_snapshot(procs):
    snapshot = {}
    for p in procs:
        try:
            t = p.cpu_times()
            snapshot[p.pid] = t.user + t.system
        except Exception:   # gone meanwhile: not counted
            pass
    return snapshot


def measure_idle(args, processes, workdir, loop, data_file):
    supervisor = Supervisor(processes, workdir, args.workers, args.worker_spin_us)
    client = None
    try:
        stats_file = os.path.join(workdir, "idle-stats.json")
        err_path = os.path.join(workdir, "idle.err")
        command = [*lsca_cli(), "run", "--stats-file", stats_file, "--", loop, "idle", data_file]
        with open(err_path, "wb") as err:
            client = processes.start_client(command, supervisor.client_env(), subprocess.PIPE, err)
        client.stderr_path = err_path
        (pid,) = read_ready_lines([client], supervisor, READY_TIMEOUT_S)
        time.sleep(IDLE_SETTLE_S)
        tree = supervisor.tree()
        before, t0 = cpu_snapshot(tree), time.monotonic()
        time.sleep(args.idle_seconds)
        after, t1 = cpu_snapshot(tree), time.monotonic()
        supervisor.check_alive()
        os.kill(pid, signal.SIGUSR1)
        status, _, _ = watch(client, supervisor, RUN_TIMEOUT_S, "the idle client")
        if status != 0:
            raise BenchError(f"the idle client exited with status {status}{stderr_tail(client)}")
        check_proxied(read_stats(stats_file, "the idle client"), OPS["fstat"], 1, "the idle client")
    finally:
        if client is not None:
            processes.end_client(client)
        supervisor.stop()
    wall = t1 - t0
    root = supervisor.process.pid
    used = {pid: after[pid] - before[pid] for pid in before if pid in after}
    sup_s = used.get(root, 0.0)
    workers_s = sum(v for pid, v in used.items() if pid != root)
    return {"workers": args.workers, "seconds": wall, "cpu_seconds": sup_s + workers_s,
            "cpu_percent": 100 * (sup_s + workers_s) / wall,
            "supervisor_percent": 100 * sup_s / wall, "workers_percent": 100 * workers_s / wall,
            "processes_measured": len(used), "processes_lost": len(before) - len(used)}


# ---- report ----


# ---- main ----


def benchmark(args, processes, workdir, report):
    from lsca import bench_sections
    notes = report["notes"]
    modes = list(args.modes) if {"ops", *bench_sections.WITH_MODES} & set(args.sections) else []
    strace = None
    if "strace" in modes:
        strace = find_strace(args, notes)
        if strace is None:
            modes.remove("strace")
    report["machine"] = machine_facts(args.workers, strace)
    load = report["machine"]["loadavg"][0]
    if load > report["machine"]["nproc"] * 0.75:
        notes.append(f"the load average is {load:.2f} on {report['machine']['nproc']} CPU(s): other programs "
                     "compete for the CPU, and LSCA's spinning clients and workers are sensitive to that")
    report["modes"] = modes
    loop = compile_loop(workdir)
    data_file = make_data_file(workdir)

    if "ops" in args.sections and not modes:
        notes.append("no mode left to measure: the per-call part is skipped")
    if "ops" in args.sections and modes:
        with serving(processes, workdir, args, modes) as supervisor:
            runner = Runner(args, processes, workdir, loop, data_file, supervisor, strace)
            report["ops"] = measure_ops(runner, args.ops, modes, args.repeats)
    if "scaling" in args.sections:
        report["scaling"] = measure_scaling(args, processes, workdir, loop, data_file)
    if "idle" in args.sections:
        report["idle_cpu"] = measure_idle(args, processes, workdir, loop, data_file)
        say("measured idle CPU")
    bench_sections.run_sections(args, processes, workdir, loop, data_file, strace, modes, report)


def raise_interrupted(signum, frame):
    raise Interrupted


def run(args):
    """lsca bench with parsed arguments; returns the exit code."""
    from lsca import bench_sections
    args = resolve(args)
    if args.plot:
        if "scaling" not in args.sections and not bench_sections.plotted(args.sections):
            say("error: --plot draws the throughput part and the sections process, loops, busy, workloads: "
                "add one of them to --sections")
            return 2
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            say("error: --plot needs matplotlib: install with pip install '.[bench]'")
            return 2
    report = {"lsca_version": __version__, "notes": [],
              "settings": {"ops": args.ops, "modes": args.modes, "repeats": args.repeats,
                           "iterations": args.iterations, "run_ms": args.run_ms, "workers": args.workers,
                           "clients": args.clients, "scale_seconds": args.scale_seconds,
                           "idle_seconds": args.idle_seconds, "worker_spin_us": args.worker_spin_us,
                           "sections": args.sections, "quick": args.quick,
                           **bench_sections.settings(args)}}
    from lsca.bench_report import print_report     # it imports this module
    from lsca.bench_plot import plot_scaling, plot_sections
    previous = {sig: signal.signal(sig, raise_interrupted) for sig in (signal.SIGTERM, signal.SIGHUP)}
    processes = Processes()
    workdir = tempfile.mkdtemp(prefix="lsca-bench-")
    code = 0
    try:
        benchmark(args, processes, workdir, report)
        print_report(args, report)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
                f.write("\n")
        if args.plot:
            if "scaling" in report:
                plot_scaling(report["scaling"], args.plot)
            plot_sections(report, args.plot)
        failures = bench_sections.failures(report)
        if failures:
            say(f"error: {len(failures)} workload run(s) failed:\n" + "\n".join(failures))
            code = 1
    except BenchError as e:
        say(f"error: {e}")
        code = 1
    except (KeyboardInterrupt, Interrupted):
        say("interrupted: stopping every client and supervisor")
        code = 130
    finally:
        # A second Ctrl-C or TERM must not cut the clean-up short.
        ignored = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            processes.stop_all()
            shutil.rmtree(workdir, ignore_errors=True)
        finally:
            for sig, handler in {**ignored, **previous}.items():
                signal.signal(sig, handler)
    return code


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lsca bench", description=format_description(), epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    # Through lsca.bench, not this __main__ copy: the section modules import lsca.bench, and its
    # BenchError must be the one caught here.
    from lsca.bench import main as bench_main
    sys.exit(bench_main())
