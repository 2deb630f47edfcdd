"""Settings, declared once: name, flag, type, default, validator and help text.
The command lines are generated from these declarations."""
import os
from dataclasses import dataclass
from typing import Any, Callable


def positive_int(text):
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def default_workers():
    return len(os.sched_getaffinity(0))


def default_socket():
    """Where a supervisor listens unless told otherwise."""
    if os.geteuid() == 0:
        return "/run/lsca/supervisor.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "lsca", "supervisor.sock")
    return f"/tmp/lsca-{os.geteuid()}/supervisor.sock"


@dataclass
class Setting:
    name: str
    flag: str
    type: Callable[[str], Any]
    default: Any
    help: str
    metavar: str = None
    hidden: bool = False


WORKERS = Setting("workers", "--workers", positive_int, default_workers,
                  "worker processes (default: one per CPU core available, here %(default)s)", "N")
SOCKET = Setting("socket", "--socket", str, default_socket,
                 "Unix socket the supervisor listens on (default: %(default)s)", "PATH")
WORKER_SPIN_US = Setting("worker_spin_us", "--worker-spin-us", non_negative_int, 200,
                         "how long an idle worker polls its shards before it sleeps, in "
                         "microseconds (default: %(default)s)", "US")
WORKER_TIMEOUT = Setting("worker_timeout", "--worker-timeout", positive_int, 30,
                         "seconds a worker may go without a heartbeat (a call that long included) "
                         "before it is aborted and replaced (default: %(default)s)", "S")
LOG_LEVEL = Setting("log_level", "--log-level", str.upper, "WARNING",
                    "log level: DEBUG, INFO, WARNING, ERROR (default: %(default)s)", "LEVEL")
EXIT_WITH = Setting("exit_with", "--exit-with", positive_int, None,
                    "stop when this process exits (used by 'lsca run')", "PID", hidden=True)

SUPERVISOR_SETTINGS = [WORKERS, SOCKET, WORKER_SPIN_US, WORKER_TIMEOUT, LOG_LEVEL, EXIT_WITH]


def add_arguments(parser, settings):
    import argparse

    for s in settings:
        default = s.default() if callable(s.default) else s.default

        def convert(text, s=s):
            try:
                return s.type(text)
            except ValueError as e:
                raise argparse.ArgumentTypeError(f"invalid value {text!r}: {e}")

        parser.add_argument(s.flag, dest=s.name, type=convert, default=default, metavar=s.metavar,
                            help=argparse.SUPPRESS if s.hidden else s.help)
