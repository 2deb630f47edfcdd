"""What a worker knows of one client process: its shard, descriptors and counters."""
import array
import errno
import logging
import mmap
import os
import socket
import struct

import sysv_ipc

from lsca.abi import SLOTS, ffi, lib, shard_slot
from lsca.workers.fdcache import Declined, FdCache

log = logging.getLogger("lsca.worker")

# Scratch buffers for calls whose bytes travel by address; larger ones are mapped per call.
SCRATCH_KEEP = 16 << 20


def _program_name(proc):
    try:
        with open(f"{proc}/comm", "rb") as f:
            return f.read().rstrip(b"\n")[:15]
    except OSError:
        return b"?"


class Client:
    def __init__(self, shard_id, shmid, pid, session, chan=None, chan_peer=-1, worker=0,
                 pidfd=-1, procfd=-1, identity=None):
        self.shard_id = shard_id
        self.pid = pid                  # for logs and records only: the process is reached by pidfd/procfd
        self.session = session
        self.shm = sysv_ipc.attach(shmid)
        self.address = self.shm.address
        self.shard = ffi.cast("void *", self.address)
        self.slots = [shard_slot(self.address, i) for i in range(SLOTS)]
        self.pidfd = pidfd              # from the supervisor, opened when the process registered
        self.procfd = procfd            # /proc/PID of that very process (a reused pid is not it)
        # "/proc/PID" for path lookups, through the bound descriptor's magic link.
        self.proc = f"/proc/self/fd/{procfd}" if procfd >= 0 else "/nonexistent"
        self.identity = identity        # lsca.identity.Identity: never acted beyond
        self.chan = chan                # our end of the channel new descriptors travel on
        self.chan_peer = chan_peer      # a duplicate of the client's end, to recognise it
        # What the compiled path knows of this client: descriptor cache, trace stream.
        self.fast = lib.lsca_fast_new(self.shard, shard_id, pid, self.pidfd, chan_peer, worker)
        if self.fast == ffi.NULL:
            raise MemoryError("no memory for a client")
        if identity is not None and not identity.root and os.geteuid() == 0 and procfd >= 0:
            # A root worker for a user's process: stop the moment it is no longer that user.
            lib.lsca_fast_watch(self.fast, procfd, identity.uid, identity.gid)
        self.fast.comm = _program_name(self.proc)
        if procfd >= 0:
            lib.lsca_fast_set_proc(self.fast, procfd)
        if chan is not None:
            self.fast.chan_fd = chan.fileno()
        if identity is not None:
            groups = list(identity.groups)
            lib.lsca_fast_set_identity(self.fast, int(identity.root), identity.uid, identity.gid, len(groups),
                                       ffi.new("unsigned[]", groups or [0]))
        self.fds = FdCache(self.fast)
        self.proc_dev = os.stat("/proc").st_dev
        self.gate = None                # the policy in force (lsca.workers.gate.Gate) or None
        # Descriptors the current call opened for itself (closed after it). Every call runs on the
        # worker's main thread (one that would wait is handed back to the program).
        self.closing = []
        self._scratch = None


    @property
    def revoked(self):
        """The process stopped being the user who registered (see lsca_client_authorized)."""
        return self.fast is not None and self.fast.revoked != 0

    def trace_to(self, fd, mask):
        """Record the calls of the ops in mask (a 64-bit op mask) to the trace stream fd (ours
        from now on). False when fd is not a Unix SOCK_SEQPACKET socket: closed, not traced."""
        return lib.lsca_fast_set_trace(self.fast, fd, mask) == 0

    @property
    def tracing(self):
        return self.fast.trace_mask != 0

    def scratch(self, size):
        """A writable buffer of at least size bytes (cdata pointer, keep-alive object)."""
        if size > SCRATCH_KEEP:
            buf = mmap.mmap(-1, max(size, 1))
            return ffi.from_buffer(buf), buf
        if self._scratch is None:
            self._scratch = mmap.mmap(-1, SCRATCH_KEEP)
        return ffi.from_buffer(self._scratch), self._scratch

    def send_fds(self, seq, fds):
        """Queue new descriptors for the client, never waiting: a client that does not read its
        channel fails its own call with EIO (the caller closes what it created). EIO, not
        EMFILE: the call may have had its effect (a file created, a connection accepted), which
        EMFILE would deny."""
        if self.chan is None:
            raise Declined("no descriptor channel")
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        try:
            # sendmsg itself: socket.send_fds() takes flags but ignores them (CPython 3.11).
            self.chan.sendmsg([struct.pack("=Q", seq)], rights, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except BlockingIOError:
            log.debug("pid %d does not read its descriptor channel: call %d fails with EIO", self.pid, seq)
            raise OSError(errno.EIO, "descriptor channel full") from None
        except OSError as e:
            raise OSError(errno.EIO, f"descriptor channel: {e.strerror}") from None

    def close(self):
        if self.chan is not None:
            self.chan.close()
            self.chan = None
        if self.chan_peer >= 0:
            os.close(self.chan_peer)
            self.chan_peer = -1
        if self.fast is not None:
            lib.lsca_fast_free(self.fast)   # its duplicates closed, its records sent
            self.fast = None
        for name in ("pidfd", "procfd"):
            if getattr(self, name) >= 0:
                os.close(getattr(self, name))
                setattr(self, name, -1)
        try:
            self.shm.detach()
        except sysv_ipc.Error:
            pass
