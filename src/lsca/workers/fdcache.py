"""A worker's duplicates of one client's descriptors, validated before every use.

glibc closes and reuses descriptors behind the agent's back (fclose -> __close),
so a cached "client fd N <-> my duplicate" is trusted only after kcmp(KCMP_FILE)
says both still name the same open file description.
"""
import errno
import os
from collections import OrderedDict

from lsca.abi import ffi, lib

MAX_ENTRIES = 256


class Declined(Exception):
    """The worker cannot execute this call correctly: the agent runs it natively."""


class FdEntry:
    __slots__ = ("fd", "mode", "dev_major")

    def __init__(self, fd, mode, dev_major):
        self.fd = fd
        self.mode = mode
        self.dev_major = dev_major


# A client descriptor that is not open: calls run on fd -1, so the kernel itself picks
# between EBADF and an argument errno in its own order (ftruncate(bad, -1) is EINVAL).
NOT_OPEN = FdEntry(-1, 0, 0)


class FdCache:
    def __init__(self, client_pid, pidfd, agent_fd=-1):
        self.client_pid = client_pid
        self.pidfd = pidfd
        self.agent_fd = agent_fd        # the agent's own channel end: not the program's
        self.my_pid = os.getpid()
        self.entries = OrderedDict()

    def get(self, client_fd):
        """The entry for the client's descriptor; NOT_OPEN when it is not open."""
        if client_fd < 0 or client_fd > 0x7FFFFFFF:
            return NOT_OPEN
        entry = self.entries.get(client_fd)
        if entry is not None:
            if lib.lsca_kcmp_file(self.client_pid, self.my_pid, client_fd, entry.fd) == 0:
                return entry
            self.drop(client_fd)        # closed and reused behind the agent's back
        return self._fetch(client_fd)

    def _fetch(self, client_fd):
        fd = lib.lsca_pidfd_getfd(self.pidfd, client_fd)
        if fd < 0:
            err = ffi.errno
            if err == errno.EBADF:
                return NOT_OPEN
            raise Declined(f"pidfd_getfd({client_fd}): {os.strerror(err)}")
        if self.agent_fd >= 0 and lib.lsca_kcmp_file(self.my_pid, self.my_pid, fd, self.agent_fd) == 0:
            os.close(fd)
            return NOT_OPEN             # the program never opened it
        kind = ffi.new("unsigned[2]")
        if lib.lsca_fd_kind(fd, kind, kind + 1) < 0:
            os.close(fd)
            raise Declined("fstat of duplicate failed")
        entry = FdEntry(fd, kind[0], kind[1])
        self.entries[client_fd] = entry
        if len(self.entries) > MAX_ENTRIES:
            _, oldest = self.entries.popitem(last=False)
            os.close(oldest.fd)
        return entry

    def drop(self, client_fd):
        entry = self.entries.pop(client_fd, None)
        if entry is not None:
            os.close(entry.fd)

    def clear(self):
        """Let go of every file: a worker must not keep a client's file open while idle."""
        for entry in self.entries.values():
            os.close(entry.fd)
        self.entries.clear()
