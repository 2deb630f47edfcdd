"""What every handler module needs: slot arguments as the C values they were, and
C results turned into the errno the client gets."""
import os

from lsca.abi import ffi
from lsca.workers import pool


def as_int(value):
    """A 64-bit argument as the signed C value it was marshalled from."""
    return value - (1 << 64) if value >= 1 << 63 else value


def check(result):
    """A C call's result, or its errno as OSError (read right after the call)."""
    if result < 0:
        raise OSError(ffi.errno, os.strerror(ffi.errno))
    return result


def client_fd(client, slot):
    """The worker's entry for the client descriptor in args[0] (a pool thread's own duplicate)."""
    pinned = getattr(pool.local, "pinned", None)
    if pinned is not None:
        return pinned
    return client.fds.get(as_int(slot.args[0]))
