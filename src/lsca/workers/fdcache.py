"""A worker's duplicates of one client's descriptors, validated before every use.

glibc closes and reuses descriptors behind the agent's back (fclose -> __close),
so a cached "client fd N <-> my duplicate" is trusted only after kcmp(KCMP_FILE)
says both still name the same open file description. The cache itself is the
compiled one (lsca_fd_get in worker_fast.c) that the hot path uses: one cache,
one check, whichever route a call takes.
"""
from lsca.abi import ffi, lib


class Declined(Exception):
    """The worker cannot execute this call correctly: the agent runs it natively."""


class Blocking(Exception):
    """Raised by a handler: this call would wait. The program's own thread makes it natively
    (WAIT_NATIVE), where signals, restarts and its end act on it as on any native call; a
    worker never waits for a client's descriptor."""

    def __init__(self, entry):
        self.entry = entry


class FdEntry:
    """One descriptor as the C handlers see it (struct lsca_fd_entry)."""
    __slots__ = ("c",)

    def __init__(self, fd=-1, mode=0, dev_major=0, c=None):
        if c is None:
            c = ffi.new("struct lsca_fd_entry *")
            c.fd, c.mode, c.dev_major, c.client_fd = fd, mode, dev_major, -1
        self.c = c

    @property
    def fd(self):
        return self.c.fd

    @property
    def mode(self):
        return self.c.mode

    @property
    def dev_major(self):
        return self.c.dev_major

    @property
    def unix_socket(self):
        return bool(self.c.unix_socket)


# A client descriptor that is not open: calls run on fd -1, so the kernel itself picks
# between EBADF and an argument errno in its own order (ftruncate(bad, -1) is EINVAL).
NOT_OPEN = FdEntry(-1, 0, 0)


class FdCache:
    def __init__(self, fast):
        self.fast = fast                # struct lsca_client_fast *
        self.temporaries = []           # entries that did not fit the cache: closed after the call

    def get(self, client_fd):
        """The entry for the client's descriptor; fd -1 when it is not open."""
        out = ffi.new("struct lsca_fd_entry *")
        if lib.lsca_fd_get(self.fast, client_fd, out) < 0:
            raise Declined(f"descriptor {client_fd} is out of reach (errno {ffi.errno})")
        entry = FdEntry(c=out)
        if out.owned:
            self.temporaries.append(entry)
        return entry

    def release_temporaries(self):
        for entry in self.temporaries:
            lib.lsca_fd_put(entry.c)
        self.temporaries.clear()

    def drop(self, client_fd):
        lib.lsca_fd_drop(self.fast, client_fd)

    def clear(self):
        """Let go of every file: a worker must not keep a client's file open while idle."""
        lib.lsca_fd_clear(self.fast)
