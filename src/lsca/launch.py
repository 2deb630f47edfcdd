"""Starting an lsca-supervisor as a child process and knowing that it listens: the one
helper for `lsca run`'s own supervisor, `lsca bench`, the stress program and the tests."""
import os
import socket
import subprocess
import sys
import time

READY_TIMEOUT_S = 20.0
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
