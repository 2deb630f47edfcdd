"""Faults a worker can be told to have, for the tests and the stress program (nothing
else sets them): LSCA_WORKER_FAULT in the supervisor's environment, one of
  boot    the worker fails while starting (the supervisor must stop, not respawn forever);
  crash   the worker exits as soon as it started (a crash loop: respawns must back off);
  stall   SIGUSR1 makes the worker's main thread spin forever without a heartbeat (a
          stuck worker, which the watchdog must abort; a stopped one it must leave alone).
"""
import os
import signal

FAULT = os.environ.get("LSCA_WORKER_FAULT", "")


class InjectedFault(Exception):
    """The failure LSCA_WORKER_FAULT asked for."""


def at_boot():
    if FAULT == "boot":
        raise InjectedFault("LSCA_WORKER_FAULT=boot")
    if FAULT == "stall":
        signal.signal(signal.SIGUSR1, _spin_forever)


def after_boot():
    if FAULT == "crash":
        os._exit(1)


def _spin_forever(signum, frame):
    while True:
        pass
