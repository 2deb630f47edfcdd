#!/usr/bin/env python3
"""LSCA stress program: many client processes and threads under one supervisor while
a fault injector kills and stops workers, clients and the supervisor.

    python stress/run_stress.py [--duration 60] [--workers 2] [--clients 4] [--threads 3]

K client processes x T threads run generated operation mixes with the agent preloaded
(LD_PRELOAD, LSCA_SOCKET): O_APPEND writes (write, writev, through a dup) of unique,
self-identifying records to a per-thread log and to a file all clients share, pwrite
at record-aligned offsets and pread/lseek+read back, fstat/stat/lstat, truncate,
chmod, fsync, mkdir/open/rename/unlink/rmdir of scratch names, pipe round trips
(including a read that blocks until another thread writes, and a write larger than
PIPE_BUF), socketpair round trips, and now and then fork (the child writes records,
opens a file of its own and _exits). The mixes are drawn from a seeded
`random.Random` (--seed): per thread, each operation's weight and the record sizes.
Hypothesis is not used: outside a test, `strategy.example()` cannot be seeded, and
@given with one example draws the simplest value first, so a plain seeded generator
gives reproducible *and* varied mixes.

Meanwhile, at random moments (a fault every 3-8 s, --faults at most) the injector
picks one of: SIGKILL a worker; SIGSTOP a worker for longer than --worker-timeout,
then SIGCONT it (a stopped worker cannot run, so it is not stuck: it must be the same
worker afterwards); make a worker's main thread spin without heartbeats (SIGUSR1 with
LSCA_WORKER_FAULT=stall: stuck, it must be aborted and replaced); SIGKILL a client (a new client with a new id
takes its place); SIGKILL the supervisor (then `lsca cleanup`, check that every SysV
object of that instance is gone, start a new supervisor on the same socket: clients
that were running fall back to native, clients started afterwards are served). The
first faults cover every kind once when the duration allows. Clients are also
retired and replaced now and then, so that new ones register all along.

Every record is "R cid tid kind seq length payload crc\\n"; the payload derives from
the id, so any byte out of place is seen. Clients report the outcome of every write
(returned its length, failed with EIO, failed otherwise) and a heartbeat per thread
over a socketpair; send(2) may itself be proxied, so a report whose send fails with
EIO is sent again and the orchestrator drops copies by the report's id (and "stop" is
just that socket becoming readable). At the end the checker reads every data file:

  writes lost        a write that returned its length whose record is not there
  writes duplicated  a record found more than once (a write that failed, or whose
                     client was killed before it reported, may appear at most once)
  records torn       a line (or pwrite block) that is not a whole, valid record in
                     its right place, unless it is the cut-off prefix of a write
                     whose outcome is unknown or failed (counted, not an error)
  phantom writes     a record of a thread that reported all its writes, never issued
  hangs              a thread without a completed call for --hang-timeout seconds, or a
                     client that does not exit within --exit-timeout when told to
  leaked SysV        LSCA objects of this run left after the supervisor's stop and
                     `lsca cleanup` (and after each supervisor kill + cleanup)
  leftover processes supervisors, workers or clients of this run still alive at the end
plus: unexpected errors (a call failing with anything but EIO, EIO on an idempotent
call of a client that never lost its supervisor and for which the supervisor did not
log answering EIO, a short write), read mismatches
(a read that does not return what was written, a file size outside what the
writes allow), faults the supervisor did not recover from (its worker count), client
crashes (other than EIO while the interpreter loads), shards not freed once every
client is gone. The exit status is 0 only when calls were completed, LSCA served
clients, and every one of these is 0.

--signals R additionally sends each client thread R SIGUSR1/s (a handler without
SA_RESTART, like Python's own), interrupting calls in flight.

A summary table goes to stdout (--json FILE writes it as JSON), progress lines to
stderr every 10 s. A hang is reported with the thread's kernel state, its native stack
(gdb, when installed), its shard's slots and the supervisor's worker table. The run
uses a copy of the installed lsca package (and of this directory) taken at its start,
so a `pip install .` meanwhile cannot mix versions. The working directory (data files,
supervisor and client logs) is removed after a passing run unless --keep; it is kept
and named after a failure.

The program is seven modules, each with one job:

  run_stress.py    this entry point: options, the working directory, the snapshot
  orchestrator.py  the run: supervisors, clients, their reports, hangs, the summary
  workload.py      a client (run with the agent preloaded; imports nothing of lsca)
  faults.py        the fault injector and the recovery each fault must lead to
  checker.py       the data files against the reported outcomes; unexplained EIOs
  records.py       the record format, shared by the workload and the checker
  diagnose.py      what a hang or a leak report says (kernel state, stacks, shards)
"""
import argparse
import importlib.util
import os
import random
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def log(text):
    print(text, file=sys.stderr, flush=True)


def snapshot(workdir):
    """Copy the installed lsca package (Python, cffi module, agent library) and this
    directory into the working directory and put the copy first on sys.path: a `pip install .`
    (or an edit) during the run must neither mix versions (ABI) nor rewrite a library that
    running clients have mapped. (lib dir, the clients' program, the agent library)."""
    spec = importlib.util.find_spec("lsca")
    if spec is None or not spec.origin:
        raise SystemExit("run_stress.py: the lsca package is not installed (pip install . in the repository)")
    libdir = os.path.join(workdir, "lib")
    shutil.copytree(os.path.dirname(spec.origin), os.path.join(libdir, "lsca"),
                    ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    # Clients run the copy's workload.py: all of a run's clients are the same code.
    shutil.copytree(HERE, os.path.join(libdir, "stress"), ignore=shutil.ignore_patterns("__pycache__", "bench.py"),
                    dirs_exist_ok=True)
    agent = os.path.join(libdir, "lsca", "liblsca_agent.so")
    if not os.path.isfile(agent):
        raise SystemExit(f"run_stress.py: no agent library in the installed package ({spec.origin})")
    sys.path.insert(0, libdir)
    return libdir, os.path.join(libdir, "stress", "workload.py"), agent


def build_parser():
    p = argparse.ArgumentParser(
        prog="run_stress.py",
        description="Stress LSCA: K client processes x T threads run generated mixes of file, pipe, "
                    "socket and path calls and fork under one supervisor with N workers, while faults "
                    "kill or stop workers, clients and the supervisor. Checks that no write is lost or "
                    "duplicated, no record torn, nothing hangs and no SysV object leaks; exits non-zero "
                    "if a check fails.",
        epilog="example: python stress/run_stress.py --duration 300 --workers 2 --clients 4")
    p.add_argument("--duration", type=float, default=60, metavar="SECONDS",
                   help="how long the clients run and faults are injected (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="supervisor workers (default: %(default)s)")
    p.add_argument("--clients", type=int, default=4, metavar="K",
                   help="client processes running at any time (default: %(default)s)")
    p.add_argument("--threads", type=int, default=3, metavar="T", help="threads per client (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="seed of every random choice (default: random)")
    p.add_argument("--faults", type=int, default=None, metavar="N",
                   help="inject at most N faults (default: one per 3 s of duration at most; 0: none)")
    p.add_argument("--fault-gap-min", type=float, default=3.0, metavar="S",
                   help="least time between faults (default: %(default)s)")
    p.add_argument("--fault-gap-max", type=float, default=8.0, metavar="S",
                   help="most time between faults (default: %(default)s)")
    p.add_argument("--worker-timeout", type=int, default=2, metavar="S",
                   help="the supervisor's --worker-timeout; stopped workers stay stopped longer "
                        "(default: %(default)s)")
    p.add_argument("--hang-timeout", type=float, default=30, metavar="S",
                   help="a thread without a completed call this long is hung (default: %(default)s)")
    p.add_argument("--exit-timeout", type=float, default=20, metavar="S",
                   help="a client told to stop must exit within this (default: %(default)s)")
    p.add_argument("--signals", type=float, default=0, metavar="RATE",
                   help="SIGUSR1 per second sent to every client thread, interrupting calls in "
                        "flight (default: %(default)s, none)")
    p.add_argument("--json", metavar="FILE", help="write the summary as JSON to FILE")
    p.add_argument("--workdir", metavar="DIR", help="working directory (default: a new one in /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the working directory after a passing run")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(1 << 31)
    for name in ("workers", "clients", "threads"):
        if getattr(args, name) < 1:
            build_parser().error(f"--{name} must be at least 1")
    if args.workdir:
        workdir = os.path.abspath(args.workdir)
        os.makedirs(workdir, exist_ok=True)
    else:
        workdir = tempfile.mkdtemp(prefix="lsca-stress-")
    copied = snapshot(workdir)
    from orchestrator import Stress     # after the snapshot: every lsca module of the run is the copy
    stress = Stress(args, workdir, copied)
    try:
        return stress.run()
    except KeyboardInterrupt:
        log("interrupted")
        stress.emergency_stop()
        return 130
    except Exception:
        import traceback
        log(f"the stress program failed:\n{traceback.format_exc()}")
        stress.emergency_stop()
        return 2


if __name__ == "__main__":
    sys.exit(main())
