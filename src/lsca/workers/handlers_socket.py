"""Handlers for socket I/O. Addresses are in data[0:ADDR_MAX], payloads after them.
Calls that would wait (a recv with nothing queued, an accept with nobody waiting, a
connect still in progress) are handed back: the program's own thread makes them natively."""
import errno
import os

from lsca.workers.calls import as_int, check, client_fd
from lsca.abi import INLINE_MAX, ffi, lib
from lsca.workers.fdcache import NOT_OPEN, Blocking, Declined

ADDR_MAX = lib.LSCA_ADDR_MAX
PAYLOAD_MAX = INLINE_MAX - ADDR_MAX
REMOTE_MAX = 256 << 20
MSG_DONTWAIT = 0x40
MSG_WAITALL = 0x100
F_GETFL = 3
AF_UNIX = 1
SOCK_NONBLOCK = os.O_NONBLOCK


def _may_block(entry, flags, for_write, count):
    if flags & MSG_DONTWAIT:
        return
    if lib.lsca_would_block(entry.fd, entry.mode, entry.dev_major, for_write, count):
        raise Blocking(entry)


def _waits_natively(entry):
    """The socket itself is blocking (another process sharing it may have changed that since)."""
    return entry.fd >= 0 and not lib.lsca_do_fcntl(entry.fd, F_GETFL, 0) & os.O_NONBLOCK


def _addr(slot):
    addrlen = slot.args[3]
    if addrlen > ADDR_MAX:
        raise OSError(errno.EINVAL, "address too long")
    return (slot.data if addrlen else ffi.NULL), addrlen


def _payload_out(client, slot, length):
    """(pointer to the bytes a send carries, what keeps them alive): inline after the
    address, or moved from the client by address into a scratch buffer."""
    if slot.xfer == lib.LSCA_XFER_INLINE:
        if length > PAYLOAD_MAX or slot.data_len != ADDR_MAX + length:
            raise OSError(errno.EINVAL, "inline length mismatch")
        return slot.data + ADDR_MAX, None
    if slot.xfer != lib.LSCA_XFER_REMOTE or length > REMOTE_MAX:
        raise Declined("too large to move") if length > REMOTE_MAX else OSError(errno.EINVAL, "bad transfer mode")
    ptr, keep = client.scratch(length)
    check(lib.lsca_client_read(client.fast, ptr, slot.remote_addr, length))
    return ptr, keep


def _send_without_waiting(entry, flags, call):
    """call(flags), never waiting: a socket that polled writable can still
    wait (a datagram's full peer, another writer). Nothing sent: the program's own call waits.
    On a unix socket the program always sends itself: its receiver may ask who sent
    (SO_PASSCRED), and an address names a file looked up with the sender's cwd and rights."""
    if entry.unix_socket:
        raise Blocking(entry)
    if flags & MSG_DONTWAIT:
        return check(call(flags))
    r = call(flags | MSG_DONTWAIT)
    if r < 0 and ffi.errno in (errno.EAGAIN, errno.EWOULDBLOCK) and _waits_natively(entry):
        raise Blocking(entry)
    return check(r)


def h_sendto(client, slot):
    length, flags = slot.args[1], as_int(slot.args[2])
    entry = client_fd(client, slot)
    _may_block(entry, flags, True, length)
    addr, addrlen = _addr(slot)
    payload, _keep = _payload_out(client, slot, length)
    return _send_without_waiting(entry, flags, lambda f: lib.lsca_do_sendto(entry.fd, payload, length, f, addr,
                                                                             addrlen))


def h_sendmsg(client, slot):
    length, flags = slot.args[1], as_int(slot.args[2])
    entry = client_fd(client, slot)
    _may_block(entry, flags, True, length)
    addr, addrlen = _addr(slot)
    payload, _keep = _payload_out(client, slot, length)
    return _send_without_waiting(entry, flags, lambda f: lib.lsca_do_sendmsg(entry.fd, payload, length, addr,
                                                                              addrlen, f))


def _receive(client, slot, call):
    """call(fd, buffer, length, addrlen_ptr) for recvfrom/recvmsg; delivers bytes and address."""
    length, flags, want_addr = slot.args[1], as_int(slot.args[2]), slot.args[3]
    entry = client_fd(client, slot)
    if flags & MSG_WAITALL and not flags & MSG_DONTWAIT and entry.fd >= 0:
        raise Blocking(entry)           # waits for all of it
    _may_block(entry, flags, False, length)
    # Never wait, even if what poll saw is gone (another reader of a shared socket took it):
    # without waiting, and on EAGAIN the call is handed back untouched.
    try_flags = flags | MSG_DONTWAIT
    call = _handed_back_on_eagain(call, entry, flags, try_flags)
    flags = try_flags
    addrlen = ffi.new("uint32_t *", ADDR_MAX if want_addr else 0)
    if slot.xfer == lib.LSCA_XFER_INLINE:
        if length > PAYLOAD_MAX:
            raise OSError(errno.EINVAL, "inline length beyond the slot")
        addr = ffi.new("char[]", ADDR_MAX)
        n = check(call(entry.fd, slot.data + ADDR_MAX, length, addr, addrlen, flags))
    else:
        if slot.xfer != lib.LSCA_XFER_REMOTE:
            raise OSError(errno.EINVAL, "bad transfer mode")
        if length > REMOTE_MAX:
            raise Declined("too large to move")
        ptr, _keep = client.scratch(length)
        addr = ffi.new("char[]", ADDR_MAX)
        n = check(call(entry.fd, ptr, length, addr, addrlen, flags))
        if n > 0:
            check(lib.lsca_client_write(client.fast, ptr, slot.remote_addr, min(n, length)))
    if want_addr:
        ffi.memmove(slot.data, addr, min(addrlen[0], ADDR_MAX))
    slot.new_fds[0] = addrlen[0]
    return n


def _handed_back_on_eagain(call, entry, flags, try_flags):
    """call, but an EAGAIN that only our MSG_DONTWAIT caused raises Blocking (nothing was
    received: the program's own call is the native one)."""
    def tried(fd, buf, n, addr, alen, flags_used):
        r = call(fd, buf, n, addr, alen, flags_used)
        if r < 0 and ffi.errno in (errno.EAGAIN, errno.EWOULDBLOCK) and try_flags != flags and \
                _waits_natively(entry):
            raise Blocking(entry)
        return r
    return tried


def h_recvfrom(client, slot):
    return _receive(client, slot, lambda fd, buf, n, addr, alen, flags: lib.lsca_do_recvfrom(fd, buf, n, flags, addr, alen))


def h_recvmsg(client, slot):
    msg_flags = ffi.new("int *")

    def call(fd, buf, n, addr, alen, flags):
        r = lib.lsca_do_recvmsg(fd, buf, n, addr, alen, flags, msg_flags)
        slot.new_fds[1] = msg_flags[0]
        return r
    return _receive(client, slot, call)


def h_accept4(client, slot):
    flags, want_addr = as_int(slot.args[1]), slot.args[2]
    entry = client_fd(client, slot)
    if entry.fd >= 0:
        # No accept flag says "do not wait", and another process sharing the listener can take
        # the connection (or clear O_NONBLOCK) after any check: always the program's own call.
        raise Blocking(entry)
    addr = ffi.new("char[]", ADDR_MAX)
    addrlen = ffi.new("uint32_t *", ADDR_MAX if want_addr else 0)
    fd = check(lib.lsca_do_accept4(entry.fd, addr, addrlen, flags))
    try:
        if want_addr:
            ffi.memmove(slot.data, addr, min(addrlen[0], ADDR_MAX))
        slot.data_len = addrlen[0]
        client.send_fds(slot.seq, [fd])
    finally:
        os.close(fd)
    return 0


def h_connect(client, slot):
    entry = client_fd(client, slot)
    addrlen = slot.args[1]
    if addrlen > ADDR_MAX or slot.data_len != addrlen:
        raise OSError(errno.EINVAL, "bad address length")
    family = int.from_bytes(bytes(ffi.buffer(slot.data, 2)), "little") if addrlen >= 2 else 0
    if family == AF_UNIX and addrlen > 2 and slot.data[2] != b"\0":
        # A socket file: a stream connect waits while the listener's backlog is full, and only
        # the main thread may enter the client's cwd and identity (cwd and umask are the whole
        # worker's): run natively.
        raise Declined("a connect to a socket file may wait for its listener")
    if entry is not NOT_OPEN:
        # Even on a non-blocking socket: another process sharing it may clear O_NONBLOCK
        # between our look and the connect, which would then wait here.
        raise Blocking(entry)               # a connection may take long to establish
    return check(lib.lsca_do_connect(entry.fd, slot.data, addrlen))


def h_shutdown(client, slot):
    return check(lib.lsca_do_shutdown(client_fd(client, slot).fd, as_int(slot.args[1])))


def register(handlers):
    handlers[lib.LSCA_OP_SENDTO] = h_sendto
    handlers[lib.LSCA_OP_SENDMSG] = h_sendmsg
    handlers[lib.LSCA_OP_RECVFROM] = h_recvfrom
    handlers[lib.LSCA_OP_RECVMSG] = h_recvmsg
    handlers[lib.LSCA_OP_ACCEPT4] = h_accept4
    handlers[lib.LSCA_OP_CONNECT] = h_connect
    handlers[lib.LSCA_OP_SHUTDOWN] = h_shutdown
