#!/usr/bin/env python3
"""Benchmark: the per-call cost of proxied I/O under LSCA, next to native and strace.

Measures three calls made by a small C loop (stress/bench_loop.c, compiled at
run time with cc):

    write 1B     write() of 1 byte to /dev/null
    pread 4KiB   pread() of 4 KiB at offset 0 from a cached 64 KiB temp file
    fstat        fstat() of an open regular file

each in three modes: natively, under LSCA (the agent preloaded, served by one
lsca-supervisor started for the whole benchmark so its start-up is not
measured) and under `strace -f -o /dev/null` when strace is on PATH. Every
(op, mode) is run --repeats times and the median ns per call is reported.
strace runs use --iterations/20 calls: it is ~100x slower, and only the cost
per call is compared.

An extra short pass per op through `lsca run --stats-file` checks that the
calls were really proxied by the workers, not passed through to the kernel.

Usage: python3 stress/bench.py [--repeats N] [--iterations N] [--workers N] [--json FILE]
"""
import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOOP_SOURCE = Path(__file__).resolve().parent / "bench_loop.c"
OPS = [("write", "write 1B"), ("pread", "pread 4KiB"), ("fstat", "fstat")]
DATA_FILE_SIZE = 64 * 1024
STRACE_DIVISOR = 20
CHECK_ITERATIONS = 10000
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
WATCH_INTERVAL_S = 0.5


class BenchError(Exception):
    """Why the benchmark cannot go on: a one-line message."""


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Measure the cost of one write (1 byte to /dev/null), pread (4 KiB from a "
                    "cached file) and fstat call natively, under LSCA and under strace -f. "
                    "The timed loop is a C program compiled at run time; LSCA runs use one "
                    "supervisor started for the whole benchmark. Prints the median ns per call "
                    "of --repeats runs and the ratios between modes.",
        epilog="strace runs use ITERATIONS/%d calls; the strace column is skipped when strace "
               "is not on PATH." % STRACE_DIVISOR)
    parser.add_argument("--repeats", type=positive_int, default=5, metavar="N",
                        help="runs of each (op, mode); the median is reported (default: 5)")
    parser.add_argument("--iterations", type=positive_int, default=200000, metavar="N",
                        help="timed calls per native or LSCA run (default: 200000)")
    parser.add_argument("--workers", type=positive_int, default=2, metavar="N",
                        help="workers of the benchmark's lsca-supervisor (default: 2)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON to FILE")
    return parser.parse_args(argv)


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def clean_env():
    """Our environment without any LSCA or preload setting inherited from the caller."""
    return {k: v for k, v in os.environ.items()
            if k != "LD_PRELOAD" and not k.startswith("LSCA_")}


def compile_loop(workdir):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise BenchError("no C compiler (cc or gcc) on PATH")
    binary = os.path.join(workdir, "bench_loop")
    result = subprocess.run([compiler, "-O2", "-Wall", "-o", binary, str(LOOP_SOURCE)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(f"compiling {LOOP_SOURCE} failed:\n{result.stderr.strip()}")
    return binary


def make_data_file(workdir):
    """A 64 KiB regular file, read once so that it is in the page cache."""
    path = os.path.join(workdir, "data.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(DATA_FILE_SIZE))
    with open(path, "rb") as f:
        f.read()
    return path


def lsca_command(*args):
    """Run the lsca CLI that belongs to this Python, found on PATH or as a module."""
    exe = shutil.which("lsca")
    return [exe, *args] if exe else [sys.executable, "-m", "lsca.cli", *args]


def agent_path():
    result = subprocess.run(lsca_command("agent-path"), capture_output=True, text=True,
                            env=clean_env())
    path = result.stdout.strip()
    if result.returncode != 0 or not os.path.isfile(path):
        raise BenchError(f"lsca agent-path failed: {result.stderr.strip() or path!r}")
    return path


class Supervisor:
    """One lsca-supervisor for the whole benchmark, in its own session (Ctrl-C does not
    reach it: it is stopped by stop(), with SIGTERM)."""

    def __init__(self, workdir, workers):
        self.socket_path = os.path.join(workdir, "supervisor.sock")
        exe = shutil.which("lsca-supervisor")
        command = [exe] if exe else [sys.executable, "-m", "lsca.supervisor"]
        # --exit-with: the supervisor also stops if this benchmark is killed with SIGKILL.
        command += ["--socket", self.socket_path, "--workers", str(workers),
                    "--exit-with", str(os.getpid())]
        self.process = subprocess.Popen(command, env=clean_env(), stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        self._wait_ready()

    def _wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"lsca-supervisor exited with status {self.process.returncode} "
                                 "at start")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(self.socket_path)
                    return
                except (FileNotFoundError, ConnectionRefusedError):
                    time.sleep(0.02)
        raise BenchError(f"lsca-supervisor did not listen within {READY_TIMEOUT_S:.0f} s")

    def check_alive(self, grace=0.0):
        """Raise BenchError if the supervisor has died, waiting up to grace seconds for it
        (whoever kills it may take its workers first, failing a run just before)."""
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            return
        raise BenchError(f"lsca-supervisor died during the benchmark (status "
                         f"{self.process.returncode}); was it killed by another program?")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                print("bench: lsca-supervisor ignored SIGTERM; killing it (its SysV IPC objects "
                      "may be left: check ipcs)", file=sys.stderr)
                self.process.kill()
                self.process.wait()
        if self.process.returncode not in (0, -signal.SIGTERM):
            print(f"bench: lsca-supervisor ended with status {self.process.returncode}; "
                  "check `ipcs -m -s` for SysV objects it left", file=sys.stderr)


def run_watched(command, env, supervisor):
    """Run command to its end; returns (status, stdout, stderr). Gives up if the supervisor
    dies meanwhile: an LSCA client whose supervisor is gone may wait forever."""
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while True:
            try:
                out, err = process.communicate(timeout=WATCH_INTERVAL_S)
                return process.returncode, out, err
            except subprocess.TimeoutExpired:
                supervisor.check_alive()
    finally:
        if process.poll() is None:   # interrupted or given up: end it, by its pid
            process.kill()
            process.communicate()


def run_loop(command, env, supervisor):
    """One run of the C loop (command may start with e.g. strace); returns its ns per call."""
    status, out, err = run_watched(command, env, supervisor)
    if status != 0:
        raise BenchError(f"{' '.join(command)} exited with status {status}:\n{err.strip()}")
    try:
        return float(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError(f"{' '.join(command)} printed no timing: {out!r}") from None


def check_iterations(args):
    return min(args.iterations, CHECK_ITERATIONS)


def check_proxied(loop, data_file, supervisor, workdir, n):
    """Run each op once through `lsca run --stats-file` on our supervisor; every call
    of the loop must have been proxied."""
    env = clean_env()
    env["LSCA_SOCKET"] = supervisor.socket_path
    for op, label in OPS:
        stats_file = os.path.join(workdir, f"stats-{op}.json")
        command = lsca_command("run", "--stats-file", stats_file, "--",
                               loop, op, str(n), data_file)
        status, _, err = run_watched(command, env, supervisor)
        if status != 0:
            raise BenchError(f"the proxy check of {label} failed: lsca run exited with status "
                             f"{status}:\n{err.strip()}")
        with open(stats_file) as f:
            stats = json.load(f)
        proxied = stats.get("proxied", {}).get(op, 0)
        if proxied < n:
            raise BenchError(f"{label} was NOT proxied by LSCA: {proxied} of {n} "
                             f"calls proxied (stats: {json.dumps(stats)}); the LSCA column "
                             "would measure passthrough, not the proxy")


def measure(loop, data_file, modes, iterations, repeats, supervisor):
    """Median ns per call of each (op, mode). Modes alternate within each repeat so that
    drift of the machine (frequency, load) affects them alike."""
    samples = {op: {mode: [] for mode in modes} for op, _ in OPS}
    for op, label in OPS:
        for _ in range(repeats):
            for mode, (prefix, env) in modes.items():
                command = [*prefix, loop, op, str(iterations[mode]), data_file]
                samples[op][mode].append(run_loop(command, env, supervisor))
        print(f"bench: measured {label}", file=sys.stderr)
    medians = {op: {mode: statistics.median(values) for mode, values in per_mode.items()}
               for op, per_mode in samples.items()}
    return medians, samples


def ratio(a, b):
    return a / b if a is not None and b else None


def results_table(medians):
    """Per op: the medians and their ratios (None where strace was not run)."""
    rows = {}
    for op, _ in OPS:
        m = medians[op]
        native, lsca, strace = m["native"], m["lsca"], m.get("strace")
        rows[op] = {"native_ns": native, "lsca_ns": lsca, "lsca_per_native": ratio(lsca, native),
                    "strace_ns": strace, "strace_per_native": ratio(strace, native),
                    "strace_per_lsca": ratio(strace, lsca)}
    return rows


def fmt(value, digits):
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(rows):
    columns = [("native ns", "native_ns", 1), ("lsca ns", "lsca_ns", 1),
               ("lsca/native", "lsca_per_native", 2), ("strace ns", "strace_ns", 1),
               ("strace/native", "strace_per_native", 2), ("strace/lsca", "strace_per_lsca", 2)]
    lines = [f"{'op':<12}" + "".join(f"{title:>15}" for title, _, _ in columns)]
    for op, label in OPS:
        row = rows[op]
        lines.append(f"{label:<12}" + "".join(f"{fmt(row[key], d):>15}" for _, key, d in columns))
    return "\n".join(lines)


def machine_facts(workers):
    return {"nproc": len(os.sched_getaffinity(0)), "kernel": platform.release(),
            "python": platform.python_version(), "workers": workers}


def run_benchmark(args, workdir):
    loop = compile_loop(workdir)
    data_file = make_data_file(workdir)
    agent = agent_path()
    strace = shutil.which("strace")

    supervisor = Supervisor(workdir, args.workers)
    try:
        lsca_env = clean_env()
        lsca_env.update(LD_PRELOAD=agent, LSCA_SOCKET=supervisor.socket_path,
                        LSCA_REQUIRED="1")   # fail instead of running unproxied
        modes = {"native": ([], clean_env()), "lsca": ([], lsca_env)}
        iterations = {"native": args.iterations, "lsca": args.iterations}
        if strace:
            modes["strace"] = ([strace, "-f", "-o", "/dev/null"], clean_env())
            iterations["strace"] = max(1, args.iterations // STRACE_DIVISOR)

        check_proxied(loop, data_file, supervisor, workdir, check_iterations(args))
        medians, samples = measure(loop, data_file, modes, iterations, args.repeats, supervisor)
    except BenchError:
        supervisor.check_alive(grace=0.5)
        raise
    finally:
        supervisor.stop()
    return medians, samples, iterations, strace


def report(args, medians, samples, iterations, strace):
    facts = machine_facts(args.workers)
    rows = results_table(medians)
    print(f"machine: nproc {facts['nproc']}, kernel {facts['kernel']}, "
          f"python {facts['python']}, lsca workers {facts['workers']}")
    counts = ", ".join(f"{mode} {n}" for mode, n in iterations.items())
    print(f"medians of {args.repeats} repeats, ns per call; iterations per run: {counts}")
    if not strace:
        print("note: strace is not on PATH: the strace columns are skipped")
    print(f"proxy check passed: an `lsca run --stats-file` pass of each op on the same "
          f"supervisor counted all {check_iterations(args)} timed calls as proxied")
    print()
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": facts, "repeats": args.repeats, "iterations": iterations,
                       "strace": bool(strace), "results": rows, "samples_ns": samples},
                      f, indent=2)
            f.write("\n")


def raise_on_sigterm(signum, frame):
    raise KeyboardInterrupt   # so the finally blocks stop the supervisor and clean up


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    workdir = tempfile.mkdtemp(prefix="lsca-bench-")
    try:
        medians, samples, iterations, strace = run_benchmark(args, workdir)
        report(args, medians, samples, iterations, strace)
        return 0
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
