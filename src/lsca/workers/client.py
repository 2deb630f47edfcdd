"""What a worker knows of one client process: its shard, descriptors and counters."""
import errno
import mmap
import os
import socket
import struct

import sysv_ipc

from lsca.abi import SLOTS, ffi, lib, shard_slot
from lsca.workers import pool
from lsca.workers.fdcache import Declined, FdCache

# Scratch buffers for calls whose bytes travel by address; larger ones are mapped per call.
SCRATCH_KEEP = 16 << 20


def _program_name(pid):
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().rstrip(b"\n")[:15]
    except OSError:
        return b"?"


class Client:
    def __init__(self, shard_id, shmid, pid, session, chan=None, chan_peer=-1, worker=0):
        self.shard_id = shard_id
        self.pid = pid
        self.session = session
        self.shm = sysv_ipc.attach(shmid)
        self.address = self.shm.address
        self.shard = ffi.cast("void *", self.address)
        self.slots = [shard_slot(self.address, i) for i in range(SLOTS)]
        self.pidfd = lib.lsca_pidfd_open(pid)
        self.chan = chan                # our end of the channel new descriptors travel on
        self.chan_peer = chan_peer      # a duplicate of the client's end, to recognise it
        # What the compiled path knows of this client: descriptor cache, trace stream.
        self.fast = lib.lsca_fast_new(self.shard, shard_id, pid, self.pidfd, chan_peer, worker)
        if self.fast == ffi.NULL:
            raise MemoryError("no memory for a client")
        self.fast.comm = _program_name(pid)
        self.fds = FdCache(self.fast)
        self.proc_dev = os.stat("/proc").st_dev
        self.held_records = {}          # slot -> record of a call whose descriptor numbers come later
        self.gate = None                # the policy in force (lsca.workers.gate.Gate) or None
        self.closing = []               # descriptors the current call opened for itself
        self._scratch = None

    def trace_to(self, fd, mask):
        """Record the calls of the ops in mask (a 64-bit op mask) to the trace stream fd."""
        lib.lsca_fast_set_trace(self.fast, fd, mask)

    @property
    def tracing(self):
        return self.fast.trace_mask != 0

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
        if self.fast is not None:
            lib.lsca_fast_free(self.fast)   # its duplicates closed, its records sent
            self.fast = None
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        try:
            self.shm.detach()
        except sysv_ipc.Error:
            pass
