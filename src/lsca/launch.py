"""Starting an lsca-supervisor as a child process and knowing that it listens, and
stopping it: the one helper for `lsca run`'s own supervisor, `lsca bench`, the stress
program and the tests."""
import os
import socket
import subprocess
import sys
import time

import psutil

READY_TIMEOUT_S = 20.0
STOP_GRACE_S = 15.0
PROBE_EVERY_S = 0.02


class SupervisorStartError(Exception):
    """The supervisor exited at start, or did not listen in time (it is stopped then)."""


def clean_env():
    """This environment less anything of LSCA's and any preload: what a supervisor, or a
    program meant to run natively, is started with."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LSCA_") and k != "LD_PRELOAD"}


def listening(socket_path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(socket_path)
            return True
        except OSError:
            return False


def start_supervisor(socket_path, args=(), env=None, timeout=READY_TIMEOUT_S, pause=None, **popen):
    """`python -m lsca.supervisor --socket SOCKET_PATH *args` (env: clean_env() unless given;
    popen: more subprocess.Popen arguments), returned once it accepts connections. pause(s)
    is called between probes (time.sleep unless given: the stress program serves its clients
    meanwhile)."""
    process = subprocess.Popen([sys.executable, "-m", "lsca.supervisor", "--socket", socket_path, *args],
                               env=clean_env() if env is None else env, **popen)
    deadline = time.monotonic() + timeout
    while not listening(socket_path):
        if process.poll() is not None:
            raise SupervisorStartError(f"the supervisor exited with status {process.returncode} at start")
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise SupervisorStartError(f"the supervisor did not start listening within {timeout:.0f} s")
        (pause or time.sleep)(PROBE_EVERY_S)
    return process


def stop_supervisor(process, grace=STOP_GRACE_S, workers_too=True, on_kill=None):
    """SIGTERM, then SIGKILL when it has not exited within grace seconds (on_kill(process) is
    called first, to say so); with workers_too, its workers still there afterwards are killed
    by pid (psutil checks a pid was not reused). Returns its exit status."""
    try:
        workers = psutil.Process(process.pid).children() if workers_too else []
    except psutil.Error:
        workers = []
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            if on_kill is not None:
                on_kill(process)
            process.kill()
            process.wait()
    for worker in workers:
        try:
            worker.kill()
        except psutil.Error:
            pass
    return process.returncode
