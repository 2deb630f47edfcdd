"""What a worker knows of one client process: its shard, descriptors and counters."""
import errno
import mmap
import os
import socket
import struct

import sysv_ipc

from lsca.abi import OP_MAX, SLOTS, ffi, lib, shard_slot
from lsca.workers import pool
from lsca.workers.fdcache import Declined, FdCache

# Scratch buffers for calls whose bytes travel by address; larger ones are mapped per call.
SCRATCH_KEEP = 16 << 20


class Client:
    def __init__(self, shard_id, shmid, pid, session, trace_fd, chan=None, chan_peer=-1):
        self.shard_id = shard_id
        self.pid = pid
        self.session = session
        self.trace_fd = trace_fd
        self.shm = sysv_ipc.attach(shmid)
        self.address = self.shm.address
        self.shard = ffi.cast("void *", self.address)
        self.slots = [shard_slot(self.address, i) for i in range(SLOTS)]
        self.pidfd = lib.lsca_pidfd_open(pid)
        self.chan = chan                # our end of the channel new descriptors travel on
        self.chan_peer = chan_peer      # a duplicate of the client's end, to recognise it
        self.fds = FdCache(pid, self.pidfd, chan_peer) if self.pidfd >= 0 else None
        self.proc_dev = os.stat("/proc").st_dev
        self.pending_trace = {}         # slot -> trace of a call whose descriptor numbers come later
        self.trace_prefix = False
        self.trace_json = False
        self.proxied = [0] * OP_MAX
        self.latency_ns = [0] * OP_MAX  # worker time per op, claim to answer
        self.errors = [0] * OP_MAX
        self._scratch = None

    def scratch(self, size):
        """A writable buffer of at least size bytes (cdata pointer, keep-alive object)."""
        if size > SCRATCH_KEEP or getattr(pool.local, "in_pool", False):
            # Pool threads get their own: the shared one may be in use on the main thread.
            buf = mmap.mmap(-1, max(size, 1))
            return ffi.from_buffer(buf), buf
        if self._scratch is None:
            self._scratch = mmap.mmap(-1, SCRATCH_KEEP)
        return ffi.from_buffer(self._scratch), self._scratch

    def send_fds(self, seq, fds):
        if self.chan is None:
            raise Declined("no descriptor channel")
        try:
            socket.send_fds(self.chan, [struct.pack("=Q", seq)], fds)
        except OSError as e:
            raise OSError(errno.EIO, f"descriptor channel: {e.strerror}")

    def close(self):
        if self.chan is not None:
            self.chan.close()
            self.chan = None
        if self.chan_peer >= 0:
            os.close(self.chan_peer)
            self.chan_peer = -1
        if self.fds is not None:
            self.fds.clear()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        if self.trace_fd is not None:
            os.close(self.trace_fd)
            self.trace_fd = None
        try:
            self.shm.detach()
        except sysv_ipc.Error:
            pass
