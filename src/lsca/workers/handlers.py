"""The worker's system call table: one handler per op code, like sys_call_table.

A handler gets the client and its slot, executes the call on the client's open
file descriptions and returns the result; it raises OSError for the call's errno
and Declined when the call must run natively in the client instead. Nothing in the
slot is trusted: every length and mode is checked before use.
"""
import errno
import os

from lsca.workers.calls import as_int, check, client_fd
from lsca.abi import INLINE_MAX, OP_MAX, ffi, lib
from lsca.workers import handlers_path, handlers_socket, pool
from lsca.workers.fdcache import Declined

INLINE = lib.LSCA_XFER_INLINE
REMOTE = lib.LSCA_XFER_REMOTE
# Bytes moved by address in one call; a larger call runs natively (one kernel call either way).
REMOTE_MAX = 256 << 20
IOV_MAX = 1024
IOVEC_SIZE = ffi.sizeof("uint64_t") * 2
STAT_SIZE = lib.lsca_stat_size()




def _count(slot):
    count = slot.args[1]
    if slot.xfer == INLINE:
        if count > INLINE_MAX:
            raise OSError(errno.EINVAL, "inline length beyond the slot")
    elif slot.xfer == REMOTE:
        if count > REMOTE_MAX:
            raise Declined("too large to move by address")
    else:
        raise OSError(errno.EINVAL, "bad transfer mode")
    return count


def _never_block(entry, for_write, count):
    # A call that may block would stall every shard of this worker: a pool thread takes it.
    if not getattr(pool.local, "in_pool", False) and \
            lib.lsca_would_block(entry.fd, entry.mode, entry.dev_major, for_write, count):
        raise pool.Blocking(entry)


def _outgoing(client, slot, count):
    """Pointer to the bytes a write-like call sends."""
    if slot.xfer == INLINE:
        if slot.data_len != count:
            raise OSError(errno.EINVAL, "inline length mismatch")
        return slot.data
    ptr, pool.local.keep = client.scratch(count)
    if slot.op == lib.LSCA_OP_WRITEV:
        iov, iovcnt = _iovec_list(slot)
        check(lib.lsca_remote_gather(client.pid, ptr, count, iov, iovcnt))
    else:
        check(lib.lsca_remote_read(client.pid, ptr, slot.remote_addr, count))
    return ptr


def _iovec_list(slot):
    iovcnt = slot.args[2]
    if iovcnt > IOV_MAX or slot.data_len != iovcnt * IOVEC_SIZE:
        raise OSError(errno.EINVAL, "bad iovec list")
    return slot.data, iovcnt


def _incoming(client, slot, count, read_into):
    """Run read_into(pointer) and deliver the bytes read to the client; returns the count."""
    if slot.xfer == INLINE:
        n = check(read_into(slot.data))
        slot.data_len = n
        return n
    ptr, pool.local.keep = client.scratch(count)
    n = check(read_into(ptr))
    if n > 0:
        if slot.op == lib.LSCA_OP_READV:
            iov, iovcnt = _iovec_list(slot)
            check(lib.lsca_remote_scatter(client.pid, ptr, n, iov, iovcnt))
        else:
            check(lib.lsca_remote_write(client.pid, ptr, slot.remote_addr, n))
    return n


def h_write(client, slot):
    count = _count(slot)
    entry = client_fd(client, slot)
    _never_block(entry, True, count)
    return check(lib.lsca_do_write(entry.fd, _outgoing(client, slot, count), count))


def h_pwrite(client, slot):
    count = _count(slot)
    entry = client_fd(client, slot)
    return check(lib.lsca_do_pwrite(entry.fd, _outgoing(client, slot, count), count, as_int(slot.args[2])))


def h_read(client, slot):
    count = _count(slot)
    entry = client_fd(client, slot)
    _never_block(entry, False, count)
    return _incoming(client, slot, count, lambda ptr: lib.lsca_do_read(entry.fd, ptr, count))


def h_pread(client, slot):
    count = _count(slot)
    entry = client_fd(client, slot)
    offset = as_int(slot.args[2])
    return _incoming(client, slot, count, lambda ptr: lib.lsca_do_pread(entry.fd, ptr, count, offset))


def h_lseek(client, slot):
    entry = client_fd(client, slot)
    return check(lib.lsca_do_lseek(entry.fd, as_int(slot.args[1]), as_int(slot.args[2])))


def h_fsync(client, slot):
    return check(lib.lsca_do_fsync(client_fd(client, slot).fd))


def h_fdatasync(client, slot):
    return check(lib.lsca_do_fdatasync(client_fd(client, slot).fd))


def h_ftruncate(client, slot):
    entry = client_fd(client, slot)
    return check(lib.lsca_do_ftruncate(entry.fd, as_int(slot.args[1])))


def h_fstat(client, slot):
    entry = client_fd(client, slot)
    check(lib.lsca_fstat_into(entry.fd, slot.data))
    slot.data_len = STAT_SIZE
    return 0


def h_close(client, slot):
    # The agent closed natively already; drop our reference before its close() returns.
    if client.fds is not None:
        client.fds.drop(as_int(slot.args[0]))
    return reported(slot)


def reported(slot):
    """The outcome the agent reports for a call it ran natively (close, chdir, fchdir)."""
    result, err = as_int(slot.args[1]), as_int(slot.args[2])
    if result < 0:
        raise OSError(err if 0 < err < 4096 else errno.EINVAL, "reported error")
    return result


HANDLERS = [None] * OP_MAX
HANDLERS[lib.LSCA_OP_WRITE] = h_write
HANDLERS[lib.LSCA_OP_PWRITE] = h_pwrite
HANDLERS[lib.LSCA_OP_WRITEV] = h_write
HANDLERS[lib.LSCA_OP_READ] = h_read
HANDLERS[lib.LSCA_OP_PREAD] = h_pread
HANDLERS[lib.LSCA_OP_READV] = h_read
HANDLERS[lib.LSCA_OP_LSEEK] = h_lseek
HANDLERS[lib.LSCA_OP_FSYNC] = h_fsync
HANDLERS[lib.LSCA_OP_FDATASYNC] = h_fdatasync
HANDLERS[lib.LSCA_OP_FTRUNCATE] = h_ftruncate
HANDLERS[lib.LSCA_OP_FSTAT] = h_fstat
HANDLERS[lib.LSCA_OP_CLOSE] = h_close
handlers_path.register(HANDLERS)
handlers_socket.register(HANDLERS)

# Calls whose answer includes descriptors sent over the client's channel.
FD_CREATING = {lib.LSCA_OP_OPENAT, lib.LSCA_OP_DUP, lib.LSCA_OP_DUP3, lib.LSCA_OP_PIPE2, lib.LSCA_OP_ACCEPT4}
