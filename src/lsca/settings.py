"""Settings, declared once: name, flag, type, default, validator and help text.
The command lines are generated from these declarations."""
import os
from dataclasses import dataclass
from typing import Any, Callable

from lsca import statedir


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


def positive_float(text):
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a number above 0")
    return value


def port_number(text):
    value = int(text)
    if not 1 <= value <= 65535:
        raise ValueError("must be a TCP port, 1 to 65535")
    return value


def default_workers():
    return len(os.sched_getaffinity(0))


def default_socket():
    """Where a supervisor listens unless told otherwise (its directory is verified when the
    supervisor starts, not here: this also fills help texts)."""
    return os.path.join(statedir.location(), "supervisor.sock")


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
METRICS_PORT = Setting("metrics_port", "--metrics-port", port_number, None,
                       "serve Prometheus metrics at http://127.0.0.1:PORT/metrics (default: off)", "PORT")
POLICY = Setting("policy", "--policy", str, None,
                 "TOML policy file: which proxied calls are allowed, denied (with an errno) or "
                 "logged; HUP reads it again, a bad file is refused and the old policy stays", "FILE")
MAX_CLIENTS_PER_UID = Setting("max_clients_per_uid", "--max-clients-per-uid", positive_int, 1024,
                              "processes of one non-root user registered at once; more run natively "
                              "(or exit 126 with LSCA_REQUIRED=1), and the refusal is logged (default: "
                              "%(default)s)", "N")
MAX_CONNECTIONS_PER_UID = Setting("max_connections_per_uid", "--max-connections-per-uid", positive_int, 256,
                                  "connections of one non-root user open at once on the socket; more are "
                                  "closed at once, and that is logged (default: %(default)s)", "N")
EXIT_WITH = Setting("exit_with", "--exit-with", positive_int, None,
                    "stop when this process exits (used by 'lsca run')", "PID", hidden=True)

CONFIG = Setting("config", "--config", str, None,
                 "TOML file of settings (workers, worker_spin_us, worker_timeout, log_level, "
                 "max_clients_per_uid, max_connections_per_uid, metrics_port); command-line flags win over it; HUP reads it again (metrics_port "
                 "changes at restart only)", "FILE")

SUPERVISOR_SETTINGS = [WORKERS, SOCKET, WORKER_SPIN_US, WORKER_TIMEOUT, LOG_LEVEL, METRICS_PORT, POLICY,
                       MAX_CLIENTS_PER_UID, MAX_CONNECTIONS_PER_UID, CONFIG, EXIT_WITH]
# What a configuration file may set (and a HUP may change).
RELOADABLE = [WORKERS, WORKER_SPIN_US, WORKER_TIMEOUT, LOG_LEVEL, MAX_CLIENTS_PER_UID, MAX_CONNECTIONS_PER_UID]
# What a configuration file may set: the reloadable ones, and those read at start only.
CONFIG_FILE_SETTINGS = RELOADABLE + [METRICS_PORT]


class ConfigError(Exception):
    """A configuration file that cannot be used: one line saying where and why."""


def load_config(path):
    """The settings of a TOML file as {name: value}, each checked by its declaration."""
    import tomllib

    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}")
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}")
    known = {s.name: s for s in CONFIG_FILE_SETTINGS}
    values = {}
    for key, value in raw.items():
        setting = known.get(key.replace("-", "_"))
        if setting is None:
            raise ConfigError(f"{path}: unknown setting {key!r} (known: {', '.join(sorted(known))})")
        try:
            values[setting.name] = setting.type(str(value))
        except ValueError as e:
            raise ConfigError(f"{path}: {key} = {value!r}: {e}")
    return values


def argument_type(convert):
    """convert as an argparse type: its ValueError becomes the one-line usage error."""
    import argparse

    def checked(text):
        try:
            return convert(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: {e}")
    return checked


def add_arguments(parser, settings):
    import argparse

    for s in settings:
        default = s.default() if callable(s.default) else s.default
        parser.add_argument(s.flag, dest=s.name, type=argument_type(s.type), default=default, metavar=s.metavar,
                            help=argparse.SUPPRESS if s.hidden else s.help)
