"""The worker's system call table: one handler per op code, like sys_call_table.

A handler gets the client and its slot, executes the call on the client's open
file descriptions and returns the result; it raises OSError for the call's errno
and Declined when the call must run natively in the client instead. Nothing in the
slot is trusted: every length and mode is checked before use.
"""
import os

from lsca.workers.calls import client_fd
from lsca.abi import OP_MAX, ffi, lib
from lsca.ops import REPORTS
from lsca.workers import handlers_path, handlers_socket
from lsca.workers.fdcache import NOT_OPEN, Blocking, Declined

ANSWERED = lib.LSCA_ANSWERED
WOULD_BLOCK = lib.LSCA_WOULD_BLOCK


def h_io(client, slot):
    """read write pread pwrite readv writev lseek fsync fdatasync ftruncate fstat, and the
    reports of close chdir fchdir (run natively by the agent): the
    compiled handler (worker_fast.c) is their one definition; the worker's compiled loop
    calls it directly, this is the route of a descriptor's first use."""
    entry = NOT_OPEN if slot.op in REPORTS else client_fd(client, slot)
    result, err = ffi.new("int64_t *"), ffi.new("int32_t *")
    outcome = lib.lsca_handle_io(client.fast, slot, entry.c, result, err)
    if outcome == WOULD_BLOCK:
        raise Blocking(entry)
    if outcome != ANSWERED:
        raise Declined("too large to move by address")
    if result[0] < 0:
        raise OSError(err[0], os.strerror(err[0]))
    return result[0]


HANDLERS = [None] * OP_MAX
for _op in range(OP_MAX):
    if lib.lsca_is_io_op(_op):
        HANDLERS[_op] = h_io
handlers_path.register(HANDLERS)
handlers_socket.register(HANDLERS)
