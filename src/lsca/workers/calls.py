"""What every handler module needs: slot arguments as the C values they were, and
C results turned into the errno the client gets."""
import errno
import os
import stat

from lsca.abi import INLINE_MAX, ffi, lib
from lsca.workers.fdcache import Declined


def as_int(value):
    """A 64-bit argument as the signed C value it was marshalled from."""
    return value - (1 << 64) if value >= 1 << 63 else value


def check(result):
    """A C call's result, or its errno as OSError (read right after the call)."""
    if result < 0:
        raise OSError(ffi.errno, os.strerror(ffi.errno))
    return result


def paths(slot, count, start=0):
    """The count NUL-terminated paths of data[] from byte start; EINVAL if malformed."""
    if slot.data_len > INLINE_MAX or start > slot.data_len:
        raise OSError(errno.EINVAL, "bad data length")
    raw = bytes(ffi.buffer(slot.data + start, slot.data_len - start))
    parts = raw.split(b"\0")
    if len(parts) < count + 1:
        raise OSError(errno.EINVAL, "path not NUL-terminated")
    return parts[:count]


def client_fd(client, slot):
    """The worker's entry for the client descriptor in args[0]."""
    return client.fds.get(as_int(slot.args[0]))


def open_nomagic(base, path, flags, mode=0):
    """openat for a client's name, never through a magic link: /proc/self/fd/N or
    /proc/self/cwd reached through the client's symlinks would be this worker's own files
    and cwd (another user's). Such a name runs natively, where it is the program's own."""
    fd = lib.lsca_do_open_nomagic(base, path, flags, mode)
    if fd < 0 and ffi.errno == errno.ELOOP and not _loops(base, path, flags):
        raise Declined("a magic link: the name is the program's to resolve")
    return fd


def _loops(base, path, flags):
    """Whether openat itself would say ELOOP (a symlink loop, O_NOFOLLOW on a symlink), not only
    the refusal of a magic link: a look with O_PATH, which opens nothing for use."""
    fd = lib.lsca_do_openat(base, path, os.O_PATH | os.O_CLOEXEC | (flags & (os.O_NOFOLLOW | os.O_DIRECTORY)), 0)
    if fd < 0:
        return ffi.errno == errno.ELOOP
    try:
        # O_PATH|O_NOFOLLOW opens a final symlink itself, where the open asked for says ELOOP.
        return bool(flags & os.O_NOFOLLOW) and not flags & os.O_PATH and stat.S_ISLNK(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
