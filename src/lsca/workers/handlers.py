"""The worker's system call table: one handler per op code, like sys_call_table.

A handler gets the client and its slot, executes the call on the client's open
file descriptions and returns the result; it raises OSError for the call's errno
and Declined when the call must run natively in the client instead. Nothing in the
slot is trusted: every length and mode is checked before use.
"""
import errno
import os

from lsca.workers.calls import as_int, client_fd
from lsca.abi import OP_MAX, ffi, lib
from lsca.workers import handlers_path, handlers_socket, pool
from lsca.workers.fdcache import NOT_OPEN, Declined

ANSWERED = lib.LSCA_ANSWERED
WOULD_BLOCK = lib.LSCA_WOULD_BLOCK


def h_io(client, slot):
    """read write pread pwrite readv writev lseek fsync fdatasync ftruncate fstat close: the
    compiled handler (worker_fast.c) is their one definition; the worker's compiled loop
    calls it directly, this is the route of pool threads and first uses of a descriptor."""
    entry = NOT_OPEN if slot.op == lib.LSCA_OP_CLOSE else client_fd(client, slot)
    result, err = ffi.new("int64_t *"), ffi.new("int32_t *")
    outcome = lib.lsca_handle_io(client.fast, slot, entry.c, getattr(pool.local, "in_pool", False), result, err)
    if outcome == WOULD_BLOCK:
        raise pool.Blocking(entry)
    if outcome != ANSWERED:
        raise Declined("too large to move by address")
    if result[0] < 0:
        raise OSError(err[0], os.strerror(err[0]))
    return result[0]


def reported(slot):
    """The outcome the agent reports for a call it ran natively (close, chdir, fchdir)."""
    result, err = as_int(slot.args[1]), as_int(slot.args[2])
    if result < 0:
        raise OSError(err if 0 < err < 4096 else errno.EINVAL, "reported error")
    return result


HANDLERS = [None] * OP_MAX
for _op in range(OP_MAX):
    if lib.lsca_is_io_op(_op):
        HANDLERS[_op] = h_io
handlers_path.register(HANDLERS)
handlers_socket.register(HANDLERS)

# Calls whose answer includes descriptors sent over the client's channel.
FD_CREATING = {lib.LSCA_OP_OPENAT, lib.LSCA_OP_DUP, lib.LSCA_OP_DUP3, lib.LSCA_OP_PIPE2, lib.LSCA_OP_ACCEPT4}
