"""lsca-supervisor: run the supervisor in the foreground until TERM/INT/QUIT."""
import argparse
import logging
import os
import signal
import sys

from lsca.settings import SUPERVISOR_SETTINGS, ConfigError, add_arguments, default_socket, load_config
from lsca.statedir import StateDirError, private_directory
from lsca.supervisor.arbiter import Supervisor, SupervisorError


def build_parser():
    parser = argparse.ArgumentParser(
        prog="lsca-supervisor",
        description="Supervise a pool of LSCA worker processes that execute the system calls of "
                    "programs started with the LSCA agent (LD_PRELOAD). Clients find it through "
                    "LSCA_SOCKET. Stops on TERM, INT or QUIT and removes every SysV object it made.")
    add_arguments(parser, SUPERVISOR_SETTINGS)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config:
        # The file's values become defaults: flags given on the command line win.
        try:
            parser.set_defaults(**load_config(args.config))
        except ConfigError as e:
            print(f"lsca-supervisor: {e}", file=sys.stderr)
            return 2
        args = parser.parse_args(argv)
    level = getattr(logging, args.log_level, None)
    if not isinstance(level, int):
        print(f"lsca-supervisor: unknown log level {args.log_level!r}", file=sys.stderr)
        return 2
    logging.basicConfig(level=level, format="lsca-supervisor[%(process)d]: %(message)s")
    # The agent must never act inside the supervisor or its workers.
    os.environ.pop("LD_PRELOAD", None)
    os.environ["LSCA_AGENT_DISABLE"] = "1"
    # A blocked TERM inherited from whoever started us would make us unstoppable.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    supervisor = Supervisor(args.socket, args.workers, args.worker_spin_us, args.exit_with,
                            worker_timeout=args.worker_timeout, config=args.config,
                            metrics_port=args.metrics_port, policy_path=args.policy,
                            max_clients_per_uid=args.max_clients_per_uid,
                            max_connections_per_uid=args.max_connections_per_uid)
    error = None
    try:
        if args.socket == default_socket():
            private_directory()     # the default socket's directory: made, or refused unless ours
        supervisor.start()
        supervisor.run()
    except (SupervisorError, StateDirError) as e:
        error = e
    finally:
        supervisor.stop()
    if error:
        print(f"lsca-supervisor: {error}", file=sys.stderr)     # the last line, after the stop's
        return getattr(error, "status", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
