"""Handlers for path calls and descriptor-creating calls.

Paths resolve as the client's thread would resolve them: relative ones against its
cwd (the worker enters it), dirfd against the client's descriptor, with its
credentials and umask. Names that mean "the calling process" (/proc, /dev/fd,
/dev/stdin, /dev/tty ...), FIFOs and terminals, which could block or would mean
the worker, are handed back to run natively.
"""
import errno
import os
import re
import stat

from lsca.workers.calls import as_int, check, open_nomagic, paths
from lsca.abi import INLINE_MAX, ffi, lib
from lsca.workers.creds import acting_as
from lsca.workers.fdcache import Declined
from lsca.workers.gate import fd_path, resolve

AT_FDCWD = -100
AT_EACCESS = 0x200
AT_SYMLINK_NOFOLLOW = 0x100
AT_SYMLINK_FOLLOW = 0x400
AT_EMPTY_PATH = 0x1000
O_CREAT, O_NONBLOCK, O_NOFOLLOW, O_TMPFILE = os.O_CREAT, os.O_NONBLOCK, os.O_NOFOLLOW, 0o20000000 | os.O_DIRECTORY
SELF_NAMES = (b"/proc", b"/dev/fd", b"/dev/stdin", b"/dev/stdout", b"/dev/stderr", b"/dev/tty")
TTY_MAJORS = {4, 5} | set(range(136, 144))
STAT_SIZE = lib.lsca_stat_size()
STATX_SIZE = lib.lsca_statx_size()
TIMES_SIZE = 2 * ffi.sizeof("uint64_t") * 2      # struct timespec[2] on 64-bit
UTIME_OMIT = (1 << 30) - 2


def refuse_self_names(*names):
    for name in names:
        normal = re.sub(rb"/+", b"/", name)
        if any(normal == p or normal.startswith(p + b"/") for p in SELF_NAMES):
            raise Declined("a name that means the calling process")


def dirfd_of(client, dirfd, path):
    """The worker's descriptor for a client dirfd (after entering the client's cwd)."""
    if dirfd == AT_FDCWD or path.startswith(b"/"):
        return AT_FDCWD
    entry = client.fds.get(dirfd)
    if entry.fd >= 0 and os.fstat(entry.fd).st_dev == client.proc_dev:
        raise Declined("dirfd in /proc")
    return entry.fd


def needs_cwd(*pairs):
    return any(dirfd == AT_FDCWD and not path.startswith(b"/") for dirfd, path in pairs)


class Unresolved(OSError):
    """The name's directory does not resolve: the call fails with this errno (unless the call
    checks its flags first, as an open does)."""


def place(client, slot, dirfd, path, follow, probe=None):
    """(descriptor, name) the *at call acts on: the name's directory, opened without ever
    crossing a magic link (a client's symlink to /proc/self/fd/N or /proc/self/cwd would
    name this worker's own files, another user's), final symlinks followed one at a time
    when the call follows them (lsca.workers.gate.resolve). Under a policy that decides
    this op, the place is checked too. probe: the call itself on a place that cannot
    exist (dirfd -1, name "x"), for the kernel's word on its flags, which it checks before
    any name: when the name does not resolve, an EINVAL there comes first."""
    base = dirfd_of(client, dirfd, path)
    gate = client.gate if client.gate is not None and client.gate.covers(slot.op) else None
    if not path:                        # AT_EMPTY_PATH: the descriptor itself
        if gate is not None:
            gate.check(client, slot, [fd_path(base)] if base >= 0 else [])
        return base, path
    try:
        where, name, full = resolve(client, base, path, follow, client.closing, named=gate is not None)
    except Declined:
        raise
    except OSError as e:
        if probe is not None and probe() < 0 and ffi.errno == errno.EINVAL:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL)) from e
        raise Unresolved(e.errno, e.strerror) from e
    if gate is not None:
        gate.check(client, slot, [full])
    return where, name


def send_new_fds(client, slot, fds):
    """Queue the descriptors for the client before the slot says DONE."""
    client.send_fds(slot.seq, fds)
    return 0


# ---- descriptor-creating calls ----

def h_openat(client, slot):
    dirfd, flags, mode = as_int(slot.args[0]), as_int(slot.args[1]), slot.args[2] & 0o7777
    (path,) = paths(slot, 1)
    refuse_self_names(path)
    with acting_as(client, slot, needs_cwd((dirfd, path))):
        base, path = place(client, slot, dirfd, path, not flags & O_NOFOLLOW and
                           not (flags & O_CREAT and flags & os.O_EXCL),
                           probe=lambda: lib.lsca_do_openat(-1, b"x", flags, mode))
        st = ffi.new("char[]", STAT_SIZE)
        # Look before opening: what open would wait on or misname runs natively.
        if lib.lsca_do_fstatat(base, path, st, AT_SYMLINK_NOFOLLOW if flags & O_NOFOLLOW else 0) == 0:
            kind = ffi.new("uint32_t *")
            size = ffi.new("int64_t *")
            lib.lsca_stat_summary(st, kind, size)
            mode_bits = kind[0]
            if lib.lsca_stat_dev(st) == client.proc_dev:
                raise Declined("a /proc name")
            if stat.S_ISFIFO(mode_bits) and not flags & O_NONBLOCK:
                raise Declined("opening a FIFO waits for its other end")
            if stat.S_ISCHR(mode_bits) and _char_major(base, path, flags) in TTY_MAJORS:
                raise Declined("a terminal: controlling-tty rules are the program's")
        fd = _open_without_waiting(base, path, flags, mode)
    try:
        if client.gate is not None and client.gate.covers(slot.op) and not flags & os.O_PATH:
            client.gate.check(client, slot, [fd_path(fd)], again=True)   # what it opened, once more
        return send_new_fds(client, slot, [fd])
    finally:
        os.close(fd)


def _open_without_waiting(base, path, flags, mode):
    """The open, never waiting in this worker: the name may have been swapped for a FIFO or a
    terminal since it was looked at (a client can race that), so open non-blocking and without
    taking a controlling tty, look at what was opened, and hand back what would wait."""
    fd = open_nomagic(base, path, flags | O_NONBLOCK | os.O_NOCTTY, mode)
    if fd < 0:
        if ffi.errno in (errno.EAGAIN, errno.EWOULDBLOCK) and not flags & O_NONBLOCK:
            raise Declined("the open would wait (a lease)")
        check(fd)
    try:
        st = os.fstat(fd)
        if stat.S_ISFIFO(st.st_mode) and not flags & O_NONBLOCK:
            raise Declined("opening a FIFO waits for its other end")
        if stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in TTY_MAJORS:
            raise Declined("a terminal: controlling-tty rules are the program's")
        if not flags & O_NONBLOCK and not flags & os.O_PATH:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _char_major(base, path, flags):
    st = os.stat(path, dir_fd=None if base == AT_FDCWD else base,
                 follow_symlinks=not flags & O_NOFOLLOW)
    return os.major(st.st_rdev)


def h_dup(client, slot):
    entry = client.fds.get(as_int(slot.args[0]))
    if entry.fd < 0:
        raise OSError(errno.EBADF, "bad descriptor")
    if slot.op == lib.LSCA_OP_DUP3:
        # The agent puts the duplicate on newfd, which closes the file there: let go of ours,
        # or it outlives the program's (a umount right after would be EBUSY).
        client.fds.drop(as_int(slot.args[1]))
    return send_new_fds(client, slot, [entry.fd])


def h_pipe2(client, slot):
    fds = ffi.new("int[2]")
    with acting_as(client, slot, False):        # a pipe belongs to its maker's filesystem ids
        check(lib.lsca_do_pipe2(fds, as_int(slot.args[0])))
    try:
        return send_new_fds(client, slot, [fds[0], fds[1]])
    finally:
        os.close(fds[0])
        os.close(fds[1])


F_DUPFD, F_DUPFD_CLOEXEC = 0, 1030
FCNTL_ON_DESCRIPTION = {3, 4, 1031, 1032, 1033, 1034}   # GETFL SETFL SETPIPE_SZ GETPIPE_SZ ADD/GET_SEALS


F_SETFL, F_SETPIPE_SZ = 4, 1031


def h_fcntl(client, slot):
    cmd = as_int(slot.args[1])
    if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
        return h_dup(client, slot)
    if cmd not in FCNTL_ON_DESCRIPTION:
        raise Declined("fcntl command that belongs to the calling process")
    entry = client.fds.get(as_int(slot.args[0]))
    if cmd == F_SETPIPE_SZ and stat.S_ISFIFO(entry.mode):
        # Past pipe-max-size or the user's pipe pages the kernel asks for CAP_SYS_RESOURCE, which
        # a root worker keeps whoever it acts for: the program's own call decides.
        raise Declined("a pipe's size is the calling user's limit")
    if cmd == F_SETFL:
        # O_NOATIME: only the file's owner (or CAP_FOWNER), checked with the filesystem ids.
        with acting_as(client, slot, False):
            return check(lib.lsca_do_fcntl(entry.fd, cmd, as_int(slot.args[2])))
    return check(lib.lsca_do_fcntl(entry.fd, cmd, as_int(slot.args[2])))


# ---- path calls ----

def _stat_like(client, slot, call, size, dev_of):
    dirfd, flags = as_int(slot.args[0]), as_int(slot.args[1])
    (path,) = paths(slot, 1)
    refuse_self_names(path)
    out = ffi.new("char[]", size)
    with acting_as(client, slot, needs_cwd((dirfd, path))):
        check(call(*place(client, slot, dirfd, path, not flags & AT_SYMLINK_NOFOLLOW,
                          probe=lambda: call(-1, b"x", flags, out)), flags, out))
    if dev_of(out) == client.proc_dev:
        raise Declined("a /proc object describes the calling process")
    ffi.memmove(slot.data, out, size)
    slot.data_len = size
    return 0


def h_fstatat(client, slot):
    return _stat_like(client, slot, lambda d, p, f, out: lib.lsca_do_fstatat(d, p, out, f),
                      STAT_SIZE, lib.lsca_stat_dev)


def h_statx(client, slot):
    mask = slot.args[2] & 0xFFFFFFFF
    return _stat_like(client, slot, lambda d, p, f, out: lib.lsca_do_statx(d, p, f, mask, out),
                      STATX_SIZE, lib.lsca_statx_dev)


def h_faccessat(client, slot):
    dirfd, mode, flags = as_int(slot.args[0]), as_int(slot.args[1]), as_int(slot.args[2])
    (path,) = paths(slot, 1)
    refuse_self_names(path)
    # access(2) checks with the real ids: take those as the filesystem ids, then ask with AT_EACCESS.
    real_ids = not flags & AT_EACCESS
    with acting_as(client, slot, needs_cwd((dirfd, path)), real_ids=real_ids):
        probe = lambda: lib.lsca_do_faccessat(-1, b"x", mode, flags | AT_EACCESS)
        return check(lib.lsca_do_faccessat(*place(client, slot, dirfd, path, not flags & AT_SYMLINK_NOFOLLOW, probe),
                                           mode, flags | AT_EACCESS))


def _one_path(call, *extra_args, flags_arg=None):
    """A handler for calls of the form call(dirfd, path, *scalar args); flags_arg: the arg
    with AT_SYMLINK_NOFOLLOW for a call that follows a final symlink, None when it never does."""
    def handler(client, slot):
        dirfd = as_int(slot.args[0])
        (path,) = paths(slot, 1)
        refuse_self_names(path)
        values = [as_int(slot.args[i]) for i in extra_args]
        follow = flags_arg is not None and not as_int(slot.args[flags_arg]) & AT_SYMLINK_NOFOLLOW
        with acting_as(client, slot, needs_cwd((dirfd, path))):
            return check(call(*place(client, slot, dirfd, path, follow, probe=lambda: call(-1, b"x", *values)),
                              *values))
    return handler


def _two_paths(call):
    def handler(client, slot):
        olddirfd, newdirfd, flags = as_int(slot.args[0]), as_int(slot.args[1]), as_int(slot.args[2])
        old, new = paths(slot, 2)
        refuse_self_names(old, new)
        if slot.op == lib.LSCA_OP_LINKAT and flags & AT_EMPTY_PATH and not old:
            # The kernel lets a descriptor's opener link it: the worker's copy was not opened by them.
            raise Declined("linkat of a descriptor itself")
        follow_old = slot.op == lib.LSCA_OP_LINKAT and flags & AT_SYMLINK_FOLLOW
        probe = lambda: call(-1, b"x", -1, b"x", flags & 0xFFFFFFFF)
        if not old and not (slot.op == lib.LSCA_OP_LINKAT and flags & AT_EMPTY_PATH):
            # The kernel checks the flags, then the old name: empty, it is ENOENT whatever the new one is.
            if probe() < 0 and ffi.errno == errno.EINVAL:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
        with acting_as(client, slot, needs_cwd((olddirfd, old), (newdirfd, new))):
            old_place = place(client, slot, olddirfd, old, follow_old, probe)
            try:
                new_place = place(client, slot, newdirfd, new, False, probe)
            except Unresolved:
                if slot.op == lib.LSCA_OP_LINKAT and old:
                    # linkat looks its old name up whole before the new one: a missing one comes first.
                    st = ffi.new("char[]", STAT_SIZE)
                    check(lib.lsca_do_fstatat(*old_place, st, 0 if follow_old else AT_SYMLINK_NOFOLLOW))
                raise
            return check(call(*old_place, *new_place, flags & 0xFFFFFFFF))
    return handler


def h_symlinkat(client, slot):
    newdirfd = as_int(slot.args[0])
    target, linkpath = paths(slot, 2)
    if not target:
        raise OSError(errno.ENOENT, "empty target")    # the kernel's first check, before the name
    refuse_self_names(linkpath)                  # the target is only text
    with acting_as(client, slot, needs_cwd((newdirfd, linkpath))):
        return check(lib.lsca_do_symlinkat(target, *place(client, slot, newdirfd, linkpath, False)))


def h_readlinkat(client, slot):
    dirfd, size = as_int(slot.args[0]), slot.args[1]
    (path,) = paths(slot, 1)
    refuse_self_names(path)
    if size > INLINE_MAX:
        raise Declined("too large for the slot")
    out = ffi.new("char[]", max(size, 1))
    with acting_as(client, slot, needs_cwd((dirfd, path))):
        base, path = place(client, slot, dirfd, path, False,
                           probe=lambda: lib.lsca_do_readlinkat(-1, b"x", out, size))
        st = ffi.new("char[]", STAT_SIZE)
        if lib.lsca_do_fstatat(base, path, st, AT_SYMLINK_NOFOLLOW) == 0 and lib.lsca_stat_dev(st) == client.proc_dev:
            raise Declined("a /proc link names the calling process")
        n = check(lib.lsca_do_readlinkat(base, path, out, size))
    ffi.memmove(slot.data, out, n)
    slot.data_len = n
    return n


def h_fchmod(client, slot):
    with acting_as(client, slot, False):
        return check(lib.lsca_do_fchmod(_fd_or_closed(client, slot), slot.args[1] & 0o7777))


def h_fchown(client, slot):
    with acting_as(client, slot, False):
        return check(lib.lsca_do_fchown(_fd_or_closed(client, slot), as_int(slot.args[1]), as_int(slot.args[2])))


def _fd_or_closed(client, slot):
    return (client.fds.get(as_int(slot.args[0]))).fd


def h_truncate(client, slot):
    (path,) = paths(slot, 1)
    if as_int(slot.args[0]) < 0:
        raise OSError(errno.EINVAL, "negative length")     # the kernel's first check, before the name
    refuse_self_names(path)
    with acting_as(client, slot, not path.startswith(b"/")):
        base = AT_FDCWD
        if client.gate is not None and client.gate.covers(slot.op):
            # truncate has no *at form: the checked place, through its directory's descriptor.
            base, path = place(client, slot, AT_FDCWD, path, True)
        return _truncate_without_waiting(base, path, as_int(slot.args[0]))


def _truncate_without_waiting(base, path, length):
    """truncate(2) waits for a lease on the file to break (up to lease-break-time, 45 s), which a
    client can set: open it non-blocking first (the open then says EWOULDBLOCK instead, and the
    call runs natively), truncate a regular file through that descriptor, and leave every other
    case to truncate itself, which fails before any lease is looked at. The file is reached once,
    without magic links (O_PATH), and every later step acts on that very file."""
    held = check(open_nomagic(base, path, os.O_PATH | os.O_CLOEXEC))
    try:
        # Our own descriptor's link: the file just resolved, whatever the name names by now.
        target = f"/proc/self/fd/{held}".encode()
        fd = lib.lsca_do_openat(AT_FDCWD, target, os.O_WRONLY | O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, 0)
        if fd < 0:
            if ffi.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise Declined("truncate would wait for a lease to break")
            return check(lib.lsca_do_truncate(target, length))
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return check(lib.lsca_do_ftruncate(fd, length))
        finally:
            os.close(fd)
        return check(lib.lsca_do_truncate(target, length))
    finally:
        os.close(held)


def h_utimensat(client, slot):
    dirfd, flags, has_times, has_path = (as_int(slot.args[i]) for i in range(4))
    times = ffi.NULL
    start = 0
    if has_times:
        if slot.data_len < TIMES_SIZE:
            raise OSError(errno.EINVAL, "times missing")
        times = ffi.new("char[]", bytes(ffi.buffer(slot.data, TIMES_SIZE)))
        start = TIMES_SIZE
        spec = ffi.cast("int64_t *", times)
        if spec[1] == UTIME_OMIT and spec[3] == UTIME_OMIT:
            return 0                    # the kernel's first check: nothing to do, no name looked at
    path = paths(slot, 1, start)[0] if has_path else None
    if path is not None:
        refuse_self_names(path)
    with acting_as(client, slot, path is not None and needs_cwd((dirfd, path))):
        if path is not None:
            base, path = place(client, slot, dirfd, path, not flags & AT_SYMLINK_NOFOLLOW,
                               probe=lambda: lib.lsca_do_utimensat(-1, b"x", times, flags))
        else:
            base = _fd_or_closed(client, slot)
            if client.gate is not None and client.gate.covers(slot.op) and base >= 0:
                client.gate.check(client, slot, [fd_path(base)])
        return check(lib.lsca_do_utimensat(base, path if path is not None else ffi.NULL, times, flags))


def h_getcwd(client, slot):
    size = slot.args[0]
    if size == 0:
        raise OSError(errno.EINVAL, "size 0")
    # The kernel's own answer from inside the client's cwd: ENOENT only for a removed one.
    with acting_as(client, slot, True):
        cwd = os.getcwdb()
    if len(cwd) + 1 > size:
        raise OSError(errno.ERANGE, "buffer too small")
    ffi.memmove(slot.data, cwd + b"\0", len(cwd) + 1)
    slot.data_len = len(cwd) + 1
    return len(cwd) + 1


def register(handlers):
    handlers[lib.LSCA_OP_OPENAT] = h_openat
    handlers[lib.LSCA_OP_DUP] = h_dup
    handlers[lib.LSCA_OP_DUP3] = h_dup
    handlers[lib.LSCA_OP_FCNTL] = h_fcntl
    handlers[lib.LSCA_OP_PIPE2] = h_pipe2
    handlers[lib.LSCA_OP_FSTATAT] = h_fstatat
    handlers[lib.LSCA_OP_STATX] = h_statx
    handlers[lib.LSCA_OP_FACCESSAT] = h_faccessat
    handlers[lib.LSCA_OP_MKDIRAT] = _one_path(lambda d, p, mode: lib.lsca_do_mkdirat(d, p, mode & 0o7777), 1)
    handlers[lib.LSCA_OP_UNLINKAT] = _one_path(lib.lsca_do_unlinkat, 1)
    handlers[lib.LSCA_OP_RENAMEAT2] = _two_paths(lib.lsca_do_renameat2)
    handlers[lib.LSCA_OP_LINKAT] = _two_paths(lambda od, op, nd, np, f: lib.lsca_do_linkat(od, op, nd, np, f))
    handlers[lib.LSCA_OP_SYMLINKAT] = h_symlinkat
    handlers[lib.LSCA_OP_READLINKAT] = h_readlinkat
    handlers[lib.LSCA_OP_FCHMODAT] = _one_path(lambda d, p, mode, f: lib.lsca_do_fchmodat(d, p, mode & 0o7777, f),
                                               1, 2, flags_arg=2)
    handlers[lib.LSCA_OP_FCHMOD] = h_fchmod
    handlers[lib.LSCA_OP_FCHOWNAT] = _one_path(lib.lsca_do_fchownat, 1, 2, 3, flags_arg=3)
    handlers[lib.LSCA_OP_FCHOWN] = h_fchown
    handlers[lib.LSCA_OP_TRUNCATE] = h_truncate
    handlers[lib.LSCA_OP_UTIMENSAT] = h_utimensat
    handlers[lib.LSCA_OP_GETCWD] = h_getcwd
