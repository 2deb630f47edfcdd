"""The supervisor's Unix socket: connections, their limits, framing and replies.

Every peer is hostile until proven otherwise (OpenSSH's monitor is the model):
- who sent each message comes from the kernel (SCM_CREDENTIALS), not from the peer;
- lines, buffers, held descriptors and queued replies are bounded; a peer past a
  bound, or whose message makes a handler fail, is closed — never the loop;
- replies never block: a peer that does not read is dropped once its queue is full;
- per-uid caps keep one user from taking the descriptors and clients everyone needs,
  and EMFILE/ENFILE at accept() are survived;
- idle or half-finished connections are closed after a timeout.
The arbiter supplies what a hello and a request mean (on_hello, on_request).
"""
import array
import errno
import json
import logging
import os
import selectors
import socket
import struct
import time

from lsca.abi import HELLO_SIZE, MAGIC

log = logging.getLogger("lsca.supervisor")

HELLO_PREFIX = struct.pack("=I", MAGIC)   # an agent's hello starts with the magic, native order
UCRED = struct.Struct("=iII")           # struct ucred: pid, uid, gid
MAX_LINE = 64 * 1024                    # a request line; longer: the peer is closed
MAX_OUT = 4 << 20                       # replies queued for a peer that is slow to read
MAX_HELD_FDS = 1                        # descriptors kept per connection (a session's trace end)
MAX_PEERS_PER_UID = 256                 # open connections of one non-root uid, unless told otherwise
HANDSHAKE_S = 10.0                      # to send a first complete message
IDLE_S = 300.0                          # a connection without a session, between requests
LOG_EVERY_S = 10.0                      # the same refusal is logged at most this often
RECV_SIZE = 65536
ANCILLARY_SIZE = socket.CMSG_SPACE(UCRED.size) + socket.CMSG_SPACE(4 * 16)


class PeerError(Exception):
    """What a peer did wrong; closes that peer (logged at debug level)."""


class Peer:
    """One connection: an agent's hello, or a session's / a stats client's JSON lines."""

    def __init__(self, sock, pid, uid, gid):
        self.sock = sock
        self.pid, self.uid, self.gid = pid, uid, gid     # SO_PEERCRED: the connector, at connect
        self.buffer = b""
        self.senders = set()            # pids that sent the bytes now in buffer (SCM_CREDENTIALS)
        self.sender_uid = uid           # uid of the sender of the last message
        self.fds = []
        self.out = bytearray()
        self.session = None
        self.opened = self.active = time.monotonic()
        self.answered = False           # a first complete message arrived
        self.closed = False

    def fileno(self):
        return self.sock.fileno()


class ControlServer:
    def __init__(self, selector, on_hello, on_request, on_close):
        self.selector = selector
        self.on_hello = on_hello        # (peer, hello bytes) -> None; the peer is closed afterwards
        self.on_request = on_request    # (peer, dict) -> None
        self.on_close = on_close        # (peer) -> None
        self.peers = {}                 # socket -> Peer
        self.per_uid = {}               # uid -> open connections
        self.max_peers_per_uid = MAX_PEERS_PER_UID
        self.listener = None
        self.spare_fd = -1              # given up at EMFILE to accept and shed one connection
        self.logged = {}                # refusal key -> when last logged

    # ---- listening ----

    def listen(self, path):
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.listener.bind(path)
        except OSError:
            self.listener.close()
            self.listener = None
            raise
        # Accepted sockets inherit it: every message then carries its sender's credentials.
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, self._on_accept)
        self.spare_fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)

    def close(self):
        for peer in list(self.peers.values()):
            self.close_peer(peer)
        if self.listener is not None:
            self.selector.unregister(self.listener)
            self.listener.close()
            self.listener = None
        if self.spare_fd >= 0:
            os.close(self.spare_fd)
            self.spare_fd = -1

    def log_limited(self, key, message, *args):
        now = time.monotonic()
        if now - self.logged.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            self.logged[key] = now
            log.warning(message, *args)

    def _on_accept(self, listener, mask=None):
        for _ in range(64):             # a burst of connections without a select() each
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    self._shed_one(e)
                elif e.errno not in (errno.ECONNABORTED, errno.EINTR, errno.EPROTO):
                    self.log_limited("accept", "accept: %s", e.strerror)
                return
            self._admit(sock)

    def _shed_one(self, e):
        """Out of descriptors: use the spare one to take the oldest pending connection and close
        it, so the listener does not stay readable for ever (and the loop does not spin)."""
        self.log_limited("emfile", "out of descriptors (%s) with %d connections: refusing new ones",
                         e.strerror, len(self.peers))
        if self.spare_fd >= 0:
            os.close(self.spare_fd)
            self.spare_fd = -1
        try:
            sock, _ = self.listener.accept()
            sock.close()
        except OSError:
            pass
        try:
            self.spare_fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            pass

    def _admit(self, sock):
        try:
            pid, uid, gid = UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size))
        except OSError:
            sock.close()
            return
        if uid != 0 and self.per_uid.get(uid, 0) >= self.max_peers_per_uid:
            self.log_limited(("peers", uid), "uid %d has %d connections open (the limit, "
                             "--max-connections-per-uid): refusing more", uid, self.max_peers_per_uid)
            sock.close()
            return
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        peer = Peer(sock, pid, uid, gid)
        self.peers[sock] = peer
        self.per_uid[uid] = self.per_uid.get(uid, 0) + 1
        self.selector.register(sock, selectors.EVENT_READ, self._on_event)

    def close_peer(self, peer):
        if peer.closed:
            return
        peer.closed = True
        try:
            self.selector.unregister(peer.sock)
        except (KeyError, ValueError):
            pass
        self.peers.pop(peer.sock, None)
        left = self.per_uid.get(peer.uid, 1) - 1
        if left:
            self.per_uid[peer.uid] = left
        else:
            self.per_uid.pop(peer.uid, None)
        for fd in peer.fds:
            os.close(fd)
        peer.fds = []
        try:
            self.on_close(peer)
        finally:
            peer.sock.close()

    def expire(self, now):
        """Close connections that never finished a message, and idle ones without a session."""
        for peer in list(self.peers.values()):
            if not peer.answered and now - peer.opened > HANDSHAKE_S:
                log.debug("closing the connection of pid %d: no complete message in %.0f s", peer.pid, HANDSHAKE_S)
                self.close_peer(peer)
            elif peer.session is None and now - peer.active > IDLE_S:
                self.close_peer(peer)

    # ---- reading ----

    def _on_event(self, sock, mask=selectors.EVENT_READ):
        peer = self.peers.get(sock)
        if peer is None:
            return
        try:
            if mask & selectors.EVENT_WRITE:
                self._flush(peer)
            if mask & selectors.EVENT_READ and not peer.closed:
                self._read(peer)
        except PeerError as e:
            log.debug("closing the connection of pid %d (uid %d): %s", peer.pid, peer.uid, e)
            self.close_peer(peer)
        except Exception as e:           # whatever a peer's message made us do: that peer only
            log.warning("closing the connection of pid %d (uid %d): %s: %s",
                        peer.pid, peer.uid, type(e).__name__, str(e)[:200])
            self.close_peer(peer)

    def _read(self, peer):
        try:
            data, ancillary, flags, _ = peer.sock.recvmsg(RECV_SIZE, ANCILLARY_SIZE, socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            raise PeerError(e.strerror)
        sender = self._take_ancillary(peer, ancillary, flags)
        if not data:
            self.close_peer(peer)
            return
        if sender is None:
            raise PeerError("a message without its sender's credentials")
        pid, uid, _gid = sender
        if uid != peer.uid:
            raise PeerError(f"a message from uid {uid} on a connection of uid {peer.uid}")
        peer.senders.add(pid)
        peer.sender_uid = uid
        peer.buffer += data
        peer.active = time.monotonic()
        self._frames(peer)

    def _take_ancillary(self, peer, ancillary, flags):
        sender = None
        for level, kind, payload in ancillary:
            if level != socket.SOL_SOCKET:
                continue
            if kind == socket.SCM_CREDENTIALS and len(payload) >= UCRED.size:
                sender = UCRED.unpack(payload[:UCRED.size])
            elif kind == socket.SCM_RIGHTS:
                fds = list(struct.unpack(f"{len(payload) // 4}i", payload[:len(payload) // 4 * 4]))
                for fd in fds:
                    if len(peer.fds) < MAX_HELD_FDS:
                        peer.fds.append(fd)
                    else:
                        os.close(fd)     # more than a request needs: never held
        if flags & socket.MSG_CTRUNC:
            raise PeerError("more ancillary data than any request carries")
        return sender

    def _frames(self, peer):
        if peer.buffer[:1] != b"{" and len(peer.buffer) < len(HELLO_PREFIX):
            return
        if peer.buffer.startswith(HELLO_PREFIX):
            if len(peer.buffer) < HELLO_SIZE:
                return
            if len(peer.buffer) > HELLO_SIZE:
                raise PeerError("bytes after the hello")
            peer.answered = True
            try:
                self.on_hello(peer, peer.buffer)
            finally:
                self.close_peer(peer)
            return
        if peer.buffer[:1] != b"{":
            raise PeerError("speaks neither the agent nor the session protocol")
        while not peer.closed:
            line, newline, rest = peer.buffer.partition(b"\n")
            if not newline:
                if len(peer.buffer) > MAX_LINE:
                    raise PeerError(f"a request line longer than {MAX_LINE} bytes")
                return
            peer.buffer = rest
            if len(line) > MAX_LINE:
                raise PeerError(f"a request line longer than {MAX_LINE} bytes")
            peer.answered = True
            try:
                request = json.loads(line)
            except (ValueError, RecursionError):
                self.reply(peer, {"error": "malformed request"})
                continue
            if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                self.reply(peer, {"error": "malformed request"})
                continue
            self.on_request(peer, request)

    # ---- writing ----

    def reply(self, peer, message):
        """Queue one JSON line for peer and send what the socket takes now."""
        if peer.closed:
            return
        peer.out += json.dumps(message).encode() + b"\n"
        if len(peer.out) > MAX_OUT:
            log.debug("closing the connection of pid %d: it does not read its replies", peer.pid)
            self.close_peer(peer)
            return
        try:
            self._flush(peer)
        except PeerError as e:
            log.debug("closing the connection of pid %d: %s", peer.pid, e)
            self.close_peer(peer)

    def _flush(self, peer):
        while peer.out:
            try:
                sent = peer.sock.send(peer.out, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                raise PeerError(e.strerror)
            del peer.out[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if peer.out else 0)
        if self.selector.get_key(peer.sock).events != events:
            self.selector.modify(peer.sock, events, self._on_event)

    def send_once(self, peer, data, fds=()):
        """One message with descriptors, without waiting (an agent's welcome); False if not sent whole."""
        # sendmsg itself: socket.send_fds ignores its flags argument (CPython 3.11).
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        try:
            return peer.sock.sendmsg([data], ancillary, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL) == len(data)
        except OSError:
            return False
