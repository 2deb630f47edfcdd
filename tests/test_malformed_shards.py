"""Malformed shard content never crashes a worker.

A disposable fake client (programs/fake_client.py) registers with the module's supervisor
by itself, without the agent, so this test owns its shard and can write anything there:
random op codes, transfer modes, lengths, arguments, client addresses, slot states,
pending bits and header fields. Hypothesis drives it while well-formed clients keep
running under LSCA on the same supervisor (and on the same worker).

For every malformed request that is submitted, the answer must be exactly what the
handler code promises (an oracle below re-derives it: the argument checks of the
handlers, then the very same libc call made here on a descriptor of the same kind, or
in a mirror directory that receives the same path calls): an unknown op code is EINVAL,
an inline length beyond the slot is EINVAL, a bad client address is EFAULT, a descriptor
the client does not have is EBADF, a value a C argument cannot hold is EINVAL... or a
PASSTHROUGH where the worker legitimately declines. A slot whose state is not SUBMITTED
is never answered, whatever the pending mask says. Each example is a batch of requests
on distinct slots, random header fields and decoy slots, then a well-formed probe call on
the same shard, which must be answered exactly. After every example the worker processes
must be the very same ones, and at the end the well-formed clients (programs run under
'lsca run' the whole time, on the fuzzed shard's worker) must have produced correct output
with their calls proxied.

Failures are not shrunk: a request that kills a worker may leave the supervisor
crash-looping, after which every example would fail. The first failure is reported with
the request spelled out, and the explicit examples are minimal cases found that way.

Safety: workers act with the fake client's credentials (root) in its cwd, so only calls
that cannot reach outside a scratch directory are generated: fd calls on descriptors that
are not open or on /dev/null, /dev/zero and the client's stdin pipe (never chmod/chown on
an open one), and path calls whose every byte of the slot's data area is free of '/' and
'..' (checked before each submit), with dirfds that are AT_FDCWD, not open, or (for the
calls that change nothing) /dev/null.
"""
import errno
import hashlib
import json
import mmap
import os
import select
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

import psutil
import sysv_ipc
from hypothesis import HealthCheck, Phase, example as explicit, given, note, settings
from hypothesis import strategies as st

from conftest import PROGRAMS, START_TIMEOUT_S, clean_env, through_worker
from lsca import ops
from lsca.abi import INLINE_MAX, OP_COUNT, OP_NAMES, SLOTS, ffi, lib, shard_header, shard_slot

FAKE_CLIENT = os.path.join(PROGRAMS, "fake_client.py")
BUF_SIZE = 1 << 20                      # fake_client.BUF_SIZE: its valid buffer, between guard pages
PAGE = mmap.PAGESIZE

MASK64 = (1 << 64) - 1
FREE, SUBMITTED, RUNNING, DONE = (lib.LSCA_SLOT_FREE, lib.LSCA_SLOT_SUBMITTED, lib.LSCA_SLOT_RUNNING,
                                  lib.LSCA_SLOT_DONE)
ST_DONE, ST_PASS = lib.LSCA_STATUS_DONE, lib.LSCA_STATUS_PASSTHROUGH
INLINE, REMOTE, REPORTED = lib.LSCA_XFER_INLINE, lib.LSCA_XFER_REMOTE, lib.LSCA_XFER_REPORTED

# Limits the handlers document (lsca/workers/handlers*.py, creds.py).
REMOTE_MAX = 256 << 20                  # bytes moved by address in one call; more runs natively
IOV_MAX = 1024
IOVEC_SIZE = 16
TIMES_SIZE = 32                         # struct timespec[2]
STAT_SIZE = lib.lsca_stat_size()
STATX_SIZE = lib.lsca_statx_size()
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW, AT_REMOVEDIR, AT_EACCESS, AT_SYMLINK_FOLLOW, AT_EMPTY_PATH = 0x100, 0x200, 0x200, 0x400, 0x1000
F_DUPFD, F_DUPFD_CLOEXEC, F_SETFL, F_SETPIPE_SZ = 0, 1030, 4, 1031
FCNTL_ON_DESCRIPTION = {3, 4, 1031, 1032, 1033, 1034}
TTY_MAJORS = {4, 5} | set(range(136, 144))
FS_CAPS = sum(1 << c for c in (0, 1, 2, 3, 4, 27, 32))
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2

ANSWER_TIMEOUT_S = 5.0                  # > the worker's 1 s doorbell sleep (a fuzzed worker_sleeping
                                        # of 0 means our submit does not ring it)
QUIET_S = 0.03                          # after the probe: time for the worker to look at the rest

OP = {name: getattr(lib, "LSCA_OP_" + name.upper()) for name in OP_NAMES.values()}
READS = {OP["read"], OP["pread"], OP["readv"]}
WRITES = {OP["write"], OP["pwrite"], OP["writev"]}


def UNKNOWN(op):
    """An op code no handler has (0 is LSCA_OP_NONE): never a real call, whatever the ABI adds."""
    return op == 0 or op not in OP_NAMES


# Ops that carry paths and that a worker executes (reports only tell): the op table's.
PATH_OPS = ops.WITH_PATHS - ops.REPORTS

# Slot and header fields the test fills; every other field of the structs gets random bits.
SLOT_FIELDS = {n: f for n, f in ffi.typeof("struct lsca_slot").fields}
SLOT_PLAIN = [n for n, f in SLOT_FIELDS.items()
              if n not in ("state", "op", "xfer", "data_len", "args", "remote_addr", "owner_tid", "data")]
HEADER_FIELDS = {n: f for n, f in ffi.typeof("struct lsca_shard_header").fields}
# Never fuzzed: where our own submits ring (a wrong set could be any process's), and the
# client-side 'dead' flag, which tells clients that nobody answers any more.
HEADER_KEEP = {"doorbell_semid", "doorbell_semnum", "completion_semid", "dead"}


def set_field(struct_ptr, field, value):
    """Assign a plain integer field, or raw bytes to an array field."""
    if isinstance(value, bytes):
        ffi.memmove(ffi.addressof(struct_ptr[0], field), value, len(value))
    else:
        setattr(struct_ptr, field, value)


def as_int(value):
    """A 64-bit argument as the signed value (how the handlers read it)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def bits(ctype):
    """A strategy for any value of a plain integer C type, or bytes for an array of uint8."""
    t = ffi.typeof(ctype) if isinstance(ctype, str) else ctype
    if t.kind == "array":
        return st.binary(min_size=t.length * ffi.sizeof(t.item), max_size=t.length * ffi.sizeof(t.item))
    size = ffi.sizeof(t) * 8
    signed = t.cname.startswith("int")
    lo, hi = (-(1 << (size - 1)), (1 << (size - 1)) - 1) if signed else (0, (1 << size) - 1)
    return st.one_of(st.integers(lo, hi), st.sampled_from([0, 1, hi]))


U32 = st.integers(0, (1 << 32) - 1)
U64 = st.integers(0, MASK64)
I32 = st.integers(-(1 << 31), (1 << 31) - 1)
# A 64-bit argument: anything, small signed values, values just beyond an int.
ARG = st.one_of(U64, st.integers(-(1 << 31), 1 << 31).map(lambda v: v & MASK64), st.integers(0, 64),
                st.sampled_from([1 << 31, (1 << 32) - 1, 1 << 32, 1 << 63, MASK64]))

# ---- descriptors the requests name (symbols, resolved against the fake client) ----

# Never open in the fake client (it has 0..5 and, briefly, what it drains from its channel).
NOT_OPEN = st.one_of(st.integers(100, 65535),
                     st.sampled_from([100, 4095, (1 << 31) - 1, (1 << 32) - 100, (1 << 32) + 7,
                                      1 << 63, MASK64, MASK64 - 1]))
FD_OPEN = st.sampled_from(["null", "zero"])
# "chan": the agent's descriptor channel, which a worker must treat as not open.
fd_any = st.one_of(FD_OPEN, FD_OPEN, st.just("pipe"), st.just("chan"), st.just("cwd"), NOT_OPEN)
fd_noread = st.one_of(FD_OPEN, FD_OPEN, st.just("chan"), NOT_OPEN)   # no blocking reads on the stdin pipe
fd_closed = st.one_of(st.just("chan"), st.just("cwd"), NOT_OPEN)  # for calls that would change a file
dir_change = st.one_of(st.just("cwd"), st.just("cwd"), st.just("chan"), NOT_OPEN)   # "cwd": AT_FDCWD
dir_look = st.one_of(dir_change, st.just("null"))            # ENOTDIR: for calls that change nothing


def fd_arg(sym):
    return ("fd", sym)


# ---- client addresses ----

address = st.one_of(
    st.just(("buf", 0)),
    st.tuples(st.just("buf"), st.integers(-PAGE, BUF_SIZE + PAGE - 1)),   # in the buffer or a guard page
    st.tuples(st.just("raw"), st.integers(0, 4095)),                      # below mmap_min_addr
    st.tuples(st.just("raw"), st.integers(1 << 57, MASK64)),             # never a user address
)
iov_len = st.one_of(st.integers(0, 4096), st.integers(0, BUF_SIZE + 2 * PAGE),
                    st.sampled_from([1 << 62, 1 << 63, MASK64]))
# Byte counts: the data's own length, small, around each limit, anything.
count_any = st.integers(0, 9).flatmap(lambda k: [
    st.just("auto"), st.just("auto"), st.integers(0, 4096), st.integers(0, 4096),
    st.sampled_from([0, INLINE_MAX, INLINE_MAX + 1, BUF_SIZE, BUF_SIZE + 1, REMOTE_MAX, REMOTE_MAX + 1,
                     1 << 63, MASK64]),
    st.integers(INLINE_MAX - 16, INLINE_MAX + 2 * PAGE), st.integers(INLINE_MAX - 16, INLINE_MAX + 2 * PAGE),
    st.integers(0, BUF_SIZE + PAGE), st.integers(REMOTE_MAX - 16, REMOTE_MAX + 16), U64][k])
data_len_any = st.one_of(st.just("auto"), st.integers(0, 600), U32,
                         st.sampled_from([0, INLINE_MAX, INLINE_MAX + 1]))
xfer_any = st.integers(0, 7).flatmap(lambda k: st.just(REMOTE) if k < 4 else st.just(INLINE) if k < 7 else U32)


NOT_SUBMITTED = st.one_of(st.sampled_from([FREE, RUNNING, DONE]), st.integers(4, (1 << 32) - 1))


@st.composite
def noise(draw, op):
    """A request with every field random; the families below override what they mean."""
    return {
        "op": op,
        "state": draw(NOT_SUBMITTED) if draw(st.integers(0, 7)) == 0 else SUBMITTED,   # one in eight
        "args": draw(st.lists(ARG, min_size=6, max_size=6)),
        "xfer": draw(xfer_any),
        "data": b"",
        "data_len": draw(data_len_any),
        "count": None,
        "iovcnt": None,
        "remote": draw(address),
        "owner_tid": draw(st.one_of(st.just(0), st.just("self"), I32)),
        "plain": {n: draw(bits(SLOT_FIELDS[n].type)) for n in SLOT_PLAIN},
    }


@st.composite
def fd_io(draw):
    op = draw(st.sampled_from(sorted(READS | WRITES)))
    r = draw(noise(op))
    # Mostly /dev/zero (its reads return bytes, which must then reach the client's memory).
    r["args"][0] = fd_arg(draw(st.integers(0, 5).flatmap(
        lambda k: st.just("zero") if k < 3 else st.just("null") if k == 3 else fd_noread if op in READS else fd_any)))
    if op in (OP["readv"], OP["writev"]) and draw(st.booleans()):
        r["data"] = ("iov", draw(st.lists(st.tuples(address, iov_len), max_size=6)))
    else:
        r["data"] = draw(st.binary(max_size=300))
    r["count"] = draw(count_any)
    if op in (OP["readv"], OP["writev"]):
        r["iovcnt"] = draw(st.one_of(st.just("auto"), st.just("auto"), st.integers(0, 1100), U64))
    if op in (OP["pread"], OP["pwrite"]):
        r["args"][2] = draw(st.one_of(st.integers(-5, 1 << 20), ARG)) & MASK64
    return r


@st.composite
def fd_other(draw):
    op = draw(st.sampled_from([OP["lseek"], OP["fsync"], OP["fdatasync"], OP["ftruncate"], OP["fstat"]]))
    r = draw(noise(op))
    r["args"][0] = fd_arg(draw(fd_any))
    r["args"][1] = draw(st.one_of(st.integers(-5, 1 << 20), ARG)) & MASK64
    if op == OP["lseek"]:
        r["args"][2] = draw(st.one_of(st.integers(-1, 5), ARG)) & MASK64
    return r


@st.composite
def fd_create(draw):
    op = draw(st.sampled_from([OP["dup"], OP["dup3"], OP["fcntl"], OP["pipe2"], OP["fchmod"], OP["fchown"]]))
    r = draw(noise(op))
    if op in (OP["dup"], OP["dup3"]):
        r["args"][0] = fd_arg(draw(fd_any))
    elif op == OP["fcntl"]:
        r["args"][0] = fd_arg(draw(fd_noread))
        r["args"][1] = draw(st.one_of(st.sampled_from([0, 1030, 3, 4, 1031, 1032, 1033, 1034, 1, 2, 5, 6, 7,
                                                       1024, 1025, 1026]), ARG))
    elif op == OP["pipe2"]:
        r["args"][0] = draw(st.one_of(st.sampled_from([0, os.O_CLOEXEC, os.O_NONBLOCK, os.O_DIRECT,
                                                       os.O_CLOEXEC | os.O_NONBLOCK, os.O_RDWR]), ARG))
    else:
        r["args"][0] = fd_arg(draw(fd_closed))
        r["args"][1] = draw(st.one_of(st.sampled_from([0o644, (1 << 32) - 1, MASK64]), ARG))
    return r


@st.composite
def notified(draw):
    """close/chdir/fchdir: the agent ran them natively and reports result and errno."""
    op = draw(st.sampled_from([OP["close"], OP["chdir"], OP["fchdir"]]))
    r = draw(noise(op))
    r["args"][0] = fd_arg(draw(fd_any))
    r["args"][1] = draw(st.one_of(st.integers(-3, 3), ARG)) & MASK64
    r["args"][2] = draw(st.one_of(st.integers(-2, 140), ARG,
                                  st.sampled_from([1 << 31, 1 << 32, (1 << 32) + 9, 1 << 40, 1 << 63]))) & MASK64
    return r


@st.composite
def unknown_op(draw):
    op = draw(st.one_of(st.just(0), st.integers(OP_COUNT, (1 << 32) - 1),
                        st.sampled_from([OP_COUNT, 63, 64, 65, 255, 1 << 31, (1 << 32) - 1])).filter(UNKNOWN))
    r = draw(noise(op))
    r["data"] = draw(st.binary(max_size=64))
    return r


@st.composite
def getcwd(draw):
    r = draw(noise(OP["getcwd"]))
    r["args"][0] = draw(st.one_of(st.integers(0, 300), ARG))
    return r


# Names in the scratch directory: no '/', never '..'.
NAMES = [b"a", b"b", b"d", b"l", b"m", b"nope", b"", b".", b"x" * 300]
name = st.one_of(st.sampled_from(NAMES), st.sampled_from(NAMES),
                 st.text("0123456789abcdef", min_size=1, max_size=6).map(str.encode))
# timespec[2] values: valid, UTIME_NOW/OMIT, out of range (none packs to '/' or '..').
TIMES = st.lists(st.sampled_from([0, 1, 10 ** 9 - 1, 10 ** 9, -1, UTIME_NOW, UTIME_OMIT, 1 << 40]),
                 min_size=4, max_size=4).map(lambda v: struct.pack("=4q", *v))
FLAGS = {
    "openat": [os.O_RDONLY, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, os.O_RDWR | os.O_CREAT | os.O_EXCL,
               os.O_RDONLY | os.O_DIRECTORY, os.O_PATH, os.O_TMPFILE | os.O_RDWR, os.O_CREAT | os.O_DIRECTORY,
               os.O_RDONLY | os.O_NOFOLLOW, os.O_WRONLY | os.O_APPEND, os.O_NONBLOCK | os.O_CREAT],
    "stat": [0, AT_SYMLINK_NOFOLLOW, AT_EMPTY_PATH, 0x800, 0x6000],
    "access_mode": [os.F_OK, os.R_OK, os.W_OK, os.X_OK, 7, 8],
    "access": [0, AT_EACCESS, AT_SYMLINK_NOFOLLOW, AT_EACCESS | AT_SYMLINK_NOFOLLOW],
    "mode": [0o755, 0o644, 0, 0o7777, 0o20000],
    "unlink": [0, AT_REMOVEDIR, 1],
    "rename": [0, 1, 2, 3, 4],
    "link": [0, AT_SYMLINK_FOLLOW, AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW],
    "id": [-1 & MASK64, 0, 1234, (1 << 32) - 1],
    "chmod": [0, AT_SYMLINK_NOFOLLOW, AT_EMPTY_PATH],
    "chown": [0, AT_SYMLINK_NOFOLLOW, AT_EMPTY_PATH],
    "length": [-1 & MASK64, 0, 5, 1 << 20, 1 << 40],
    "size": [0, 1, 2, 100, INLINE_MAX, INLINE_MAX + 1],
    "utime": [0, AT_SYMLINK_NOFOLLOW, AT_EMPTY_PATH],
    "has": [0, 1, 1 << 32],
}


def flag(kind):
    """Mostly a meaningful value, sometimes any 64 bits."""
    return st.integers(0, 4).flatmap(lambda k: ARG if k == 0 else st.sampled_from(FLAGS[kind]))


@st.composite
def path_call(draw):
    opname = draw(st.sampled_from([ops.BY_CODE[code].name for code in sorted(PATH_OPS)]))
    line = ops.BY_NAME[opname]
    r = draw(noise(OP[opname]))
    a = r["args"]
    npaths = line.npaths
    looks = opname in ("openat", "fstatat", "statx", "faccessat", "readlinkat")
    if opname != "truncate":
        a[0] = fd_arg(draw(dir_look if looks else dir_change))
    if opname == "openat":
        a[1], a[2] = draw(flag("openat")), draw(flag("mode"))
    elif opname in ("fstatat", "statx"):
        a[1], a[2] = draw(flag("stat")), draw(st.one_of(st.sampled_from([0, 0xFFF, 0xFFFFFFFF]), ARG))
    elif opname == "faccessat":
        a[1], a[2] = draw(flag("access_mode")), draw(flag("access"))
    elif opname == "mkdirat":
        a[1] = draw(flag("mode"))
    elif opname == "unlinkat":
        a[1] = draw(flag("unlink"))
    elif opname in ("renameat2", "linkat"):
        a[1] = fd_arg(draw(dir_change))
        a[2] = draw(flag("rename" if opname == "renameat2" else "link"))
    elif opname == "readlinkat":
        a[1] = draw(flag("size"))
    elif opname == "fchmodat":
        a[1], a[2] = draw(flag("mode")), draw(flag("chmod"))
    elif opname == "fchownat":
        a[1], a[2], a[3] = draw(flag("id")), draw(flag("id")), draw(flag("chown"))
    elif opname == "truncate":
        a[0] = draw(flag("length"))
    elif opname == "utimensat":
        a[1], a[2], a[3] = draw(flag("utime")), draw(flag("has")), draw(flag("has"))
    body = b"\0".join(draw(name) for _ in range(npaths)) + b"\0"
    head = draw(TIMES) if line.has(lib.LSCA_OPF_TIMES_FIRST) and draw(st.booleans()) else b""
    tail = draw(st.one_of(st.just(b""), st.text("0123456789abcdef\0", max_size=24).map(str.encode)))
    r["data"] = head + body + tail
    r["data_len"] = draw(st.integers(0, 5).flatmap(
        lambda k: st.just("auto") if k < 4 else st.just("cut") if k == 4 else data_len_any))
    if r["data_len"] == "auto":
        r["data_len"] = len(head + body)
    elif r["data_len"] == "cut":
        r["data_len"] = len(head + body) - 1
    r["xfer"] = draw(st.one_of(st.just(INLINE), U32))
    return r


request = st.one_of(fd_io(), fd_io(), fd_io(), fd_other(), fd_create(), notified(), unknown_op(), getcwd(),
                    path_call(), path_call(), path_call())

# Slots that are not submitted: any state but SUBMITTED, random bytes, an op code no handler has.
decoy = st.fixed_dictionaries({
    "state": NOT_SUBMITTED,
    "head": st.binary(min_size=128, max_size=128),
    "op": st.one_of(st.just(0), st.integers(OP_COUNT, (1 << 32) - 1)).filter(UNKNOWN),
})


@st.composite
def header_fuzz(draw):
    out = {}
    for field in sorted(set(HEADER_FIELDS) - HEADER_KEEP):
        # Each field fuzzed one time in four; worker_sleeping less often: at 0 our submits do
        # not ring a sleeping worker, which then answers only after its one-second nap.
        if draw(st.integers(0, 11 if field == "worker_sleeping" else 3)) != 0:
            continue
        t = HEADER_FIELDS[field].type
        if t.kind == "array":
            out[field] = draw(st.dictionaries(st.integers(0, t.length - 1), bits(t.item), max_size=4))
        else:
            out[field] = draw(bits(t))
    return out


probe = st.one_of(st.tuples(st.just("write"), st.binary(max_size=200)), st.just(("fstat",)),
                  st.just(("getcwd",)), st.just(("lseek",)))


@st.composite
def example(draw):
    """A few requests (each on its own slot), a probe slot, decoy slots, header fuzz."""
    # Distinct requests: Hypothesis likes to copy one part of an example over another.
    reqs = draw(st.lists(request, min_size=6, max_size=16, unique_by=repr))
    decoys = draw(st.lists(decoy, max_size=3))
    slots = draw(st.lists(st.integers(0, SLOTS - 1), min_size=len(reqs) + 1 + len(decoys),
                          max_size=len(reqs) + 1 + len(decoys), unique=True))
    return {"reqs": reqs, "slots": slots, "decoys": decoys, "header": draw(header_fuzz()), "probe": draw(probe)}


def minimal(unknown_op=None, notified_err=None):
    """A hand-written example: one request, everything else quiet."""
    if unknown_op is not None:
        req = {"op": unknown_op, "args": [0] * 6}
    else:
        req = {"op": OP["close"], "args": [("fd", 100), MASK64, notified_err, 0, 0, 0]}
    req.update({"state": SUBMITTED, "xfer": INLINE, "data": b"", "data_len": 0, "count": None, "iovcnt": None,
                "remote": ("buf", 0), "owner_tid": 0,
                "plain": {n: bytes(ffi.sizeof(f.type)) if f.type.kind == "array" else 0
                          for n, f in SLOT_FIELDS.items() if n in SLOT_PLAIN}})
    return {"reqs": [req], "slots": [0, 1], "decoys": [], "header": {}, "probe": ("fstat",)}


# ---- the fake client ----

class FakeClient:
    """programs/fake_client.py in a scratch cwd; this process attaches its shard."""

    def __init__(self, supervisor, parent):
        self.root = tempfile.mkdtemp(dir=parent, prefix="fake-")
        self.cwd = os.path.join(self.root, "cwd")
        self.mirror = os.path.join(self.root, "mirror")
        os.mkdir(self.cwd)
        os.mkdir(self.mirror)
        self.umask = os.umask(0o022)
        os.umask(self.umask)
        self.log_path = os.path.join(self.root, "stderr")
        self.shm = None
        self.local = {}
        self.dirty = False
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, FAKE_CLIENT, supervisor.socket, f"{self.umask:o}"],
                                         cwd=self.cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         env=clean_env())
        try:
            ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT_S)
            line = self.proc.stdout.readline() if ready else b""
            self.proc.stdout.close()
            if not line:
                with open(self.log_path, "rb") as f:
                    raise RuntimeError(f"fake client did not start: {f.read().decode(errors='replace')}")
            self.info = json.loads(line)
            assert self.info["buf_size"] == BUF_SIZE and self.info["page"] == PAGE
            self.pid = self.info["pid"]
            self.cwd_bytes = os.fsencode(self.info["cwd"])
            self.shm = sysv_ipc.attach(self.info["shmid"])
            self.address = self.shm.address
            self.shard = ffi.cast("void *", self.address)
            self.header = shard_header(self.address)
            self.slots = [shard_slot(self.address, i) for i in range(SLOTS)]
            # Descriptors of the same kinds as the client's, for the oracle's own calls.
            self.local["null"] = os.open("/dev/null", os.O_RDWR)
            self.local["zero"] = os.open("/dev/zero", os.O_RDWR)
            self.local["pipe"], self.local["pipe_w"] = os.pipe()
            self.caps = self._caps()
        except BaseException:
            self.close()
            raise

    def _caps(self):
        with open(f"/proc/{self.pid}/status", "rb") as f:
            status = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
        return {"eff": int(status[b"CapEff"], 16), "prm": int(status[b"CapPrm"], 16),
                "fsuid": int(status[b"Uid"].split()[3]), "ruid": int(status[b"Uid"].split()[0])}

    def client_value(self, sym):
        """The number the request carries for a descriptor symbol."""
        if isinstance(sym, int):
            return sym
        return {"null": self.info["null"], "zero": self.info["zero"], "pipe": 0, "chan": self.info["chan"],
                "cwd": MASK64 - 99}[sym]

    def local_fd(self, sym):
        """Our descriptor of the same kind, -1 for one the client does not have."""
        return self.local[sym] if sym in ("null", "zero", "pipe") else -1

    def local_dir(self, sym):
        """A dirfd for the oracle's path calls (AT_FDCWD inside the mirror directory)."""
        if sym == "cwd":
            return AT_FDCWD
        return self.local_fd(sym)

    def address_of(self, sym):
        kind, value = sym
        return (self.info["buf"] + value) & MASK64 if kind == "buf" else value

    def valid(self, addr, n):
        """Whether [addr, addr + n) is readable and writable in the client (n > 0)."""
        buf = self.info["buf"]
        return buf <= addr and addr + n <= buf + BUF_SIZE

    def reset_trees(self):
        """The same small tree in the client's cwd and in the mirror."""
        for top in (self.cwd, self.mirror):
            os.chown(top, 0, 0)
            os.chmod(top, 0o755)
            for entry in os.listdir(top):
                path = os.path.join(top, entry)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
            with open(os.path.join(top, "a"), "wb") as f:
                f.write(b"hello\n" * 10)
            os.mkdir(os.path.join(top, "d"))
            with open(os.path.join(top, "d", "f"), "wb") as f:
                f.write(b"f")
            os.symlink("a", os.path.join(top, "l"))
            os.symlink("nope", os.path.join(top, "m"))

    @contextmanager
    def in_mirror(self):
        here = os.getcwd()
        os.chdir(self.mirror)
        try:
            yield
        finally:
            os.chdir(here)

    def close(self):
        """End the client by pid (EOF first, then SIGKILL) and let go of its shard."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.shm is not None:
            self.shm.detach()
            self.shm = None
        for fd in self.local.values():
            os.close(fd)
        self.local = {}
        shutil.rmtree(self.root, ignore_errors=True)


def tree(top):
    """What the path calls left: type, mode, owner, size of files, link targets, link counts."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for entry in sorted(dirnames + filenames):
            path = os.path.join(dirpath, entry)
            st_ = os.lstat(path)
            out[os.path.relpath(path, top)] = (
                st_.st_mode, st_.st_uid, st_.st_gid, st_.st_nlink,
                st_.st_size if stat.S_ISREG(st_.st_mode) else None,
                os.readlink(path) if stat.S_ISLNK(st_.st_mode) else None,
                st_.st_rdev if stat.S_ISCHR(st_.st_mode) else None)
    return out


# ---- the oracle: the answer the handlers must give ----

class _Errno(Exception):
    def __init__(self, err):
        super().__init__(err)
        self.err = err


class _Pass(Exception):
    pass


def _fail(err):
    raise _Errno(err)


def _call(fn, *args):
    """A libc call as the worker makes it: a value the C argument cannot hold is EINVAL."""
    try:
        result = fn(*args)
    except OverflowError:
        _fail(errno.EINVAL)
    if result < 0:
        _fail(ffi.errno)
    return result


class Scratch:
    """A zeroed buffer of n bytes (mapped lazily when large)."""

    def __init__(self, n):
        if n <= 1 << 20:
            self.keep = ffi.new("char[]", max(n, 1))
            self.ptr = self.keep
        else:
            self.keep = mmap.mmap(-1, n)
            self.ptr = ffi.from_buffer("char[]", self.keep, require_writable=True)

    def bytes(self, n):
        return bytes(ffi.buffer(self.ptr, n))


class Request:
    """A resolved request: the slot's fields as written, plus the descriptor symbols."""

    def __init__(self, fc, r):
        self.op = r["op"]
        self.state = r["state"]
        self.syms = {i: a[1] for i, a in enumerate(r["args"]) if isinstance(a, tuple)}
        args = [fc.client_value(a[1]) if isinstance(a, tuple) else a for a in r["args"]]
        data = r["data"]
        iov_total = None
        if isinstance(data, tuple):
            iovs = [(fc.address_of(a), n) for a, n in data[1]]
            data = b"".join(struct.pack("=QQ", base, n) for base, n in iovs)
            iov_total = sum(n for _, n in iovs)
        self.data_len = len(data) if r["data_len"] == "auto" else r["data_len"]
        if r["count"] is not None:
            args[1] = (iov_total if iov_total is not None else len(data)) if r["count"] == "auto" else r["count"]
            args[1] &= MASK64
        if r["iovcnt"] is not None:
            args[2] = len(data) // IOVEC_SIZE if r["iovcnt"] == "auto" else r["iovcnt"]
        self.args = args
        self.xfer = r["xfer"]
        self.remote_addr = fc.address_of(r["remote"])
        self.owner_tid = fc.pid if r["owner_tid"] == "self" else r["owner_tid"]
        self.plain = r["plain"]
        self.region = data + bytes(INLINE_MAX - len(data))
        # Set by the oracle when the answer carries more than result/err.
        self.want_data = None
        self.want_data_len = None
        self.want_stat = None

    def write(self, slot):
        ffi.memmove(slot.data, self.region, INLINE_MAX)
        for n, value in self.plain.items():
            set_field(slot, n, value)
        slot.op = self.op
        slot.xfer = self.xfer
        slot.data_len = self.data_len
        for i, value in enumerate(self.args):
            slot.args[i] = value
        slot.remote_addr = self.remote_addr
        slot.owner_tid = self.owner_tid
        # The answer fields hold garbage: the worker must write all three.
        slot.status, slot.err, slot.result = 0xA5A5A5A5, 0x5A5A5A5A, -0x5A5A5A5A5A5A5A5A

    def describe(self):
        name = OP_NAMES.get(self.op, f"op {self.op}")
        return (f"{name}(args={[hex(a) for a in self.args]}, syms={self.syms}, xfer={self.xfer:#x}, "
                f"data_len={self.data_len:#x}, remote_addr={self.remote_addr:#x}, owner_tid={self.owner_tid}, "
                f"data[:80]={self.region[:80]!r})")


def oracle(fc, q):
    """(status, result, err) the worker must answer q with; runs the oracle's own calls."""
    if q.xfer == REPORTED:
        # "A call that waited natively, here is its outcome": the worker only answers DONE with
        # what the slot says, kept within what an answer may hold (Request.write's garbage).
        return ST_DONE, -1, errno.EINVAL
    try:
        if q.op not in OP_NAMES:
            _fail(errno.EINVAL)                     # no handler: unknown op code
        result = ORACLES[OP_NAMES[q.op]](fc, q)
        return ST_DONE, result, 0
    except _Pass:
        return ST_PASS, 0, 0
    except _Errno as e:
        return ST_DONE, -1, e.err


def _count(q):
    count = q.args[1]
    if q.xfer == INLINE:
        if count > INLINE_MAX:
            _fail(errno.EINVAL)
    elif q.xfer == REMOTE:
        if count > REMOTE_MAX:
            raise _Pass
    else:
        _fail(errno.EINVAL)
    return count


def _iovecs(q):
    iovcnt = q.args[2]
    if iovcnt > IOV_MAX or q.data_len != iovcnt * IOVEC_SIZE:
        _fail(errno.EINVAL)
    return [struct.unpack_from("=QQ", q.region, IOVEC_SIZE * i) for i in range(iovcnt)]


def _remote_list(fc, iovs, length):
    """process_vm_readv/writev over the client's list until length bytes moved."""
    if length == 0:
        return
    rest = [(base, n) for base, n in iovs if n > 0]
    if any(n >= 1 << 63 for _, n in rest):
        _fail(errno.EINVAL)                         # the kernel refuses a negative ssize_t length
    for base, n in rest:
        take = min(n, length)
        if not fc.valid(base, take):
            _fail(errno.EFAULT)
        length -= take
        if length == 0:
            return
    _fail(errno.EFAULT)                             # the list ends before the bytes do


def _remote_range(fc, addr, n):
    if n > 0 and not fc.valid(addr, n):
        _fail(errno.EFAULT)


def o_read(fc, q):
    count = _count(q)
    local = fc.local_fd(q.syms[0])
    buf = Scratch(count)
    if q.op == OP["pread"]:
        n = _call(lib.lsca_do_pread, local, buf.ptr, count, as_int(q.args[2]))
    else:
        n = _call(lib.lsca_do_read, local, buf.ptr, count)
    if q.xfer == INLINE:
        q.want_data, q.want_data_len = buf.bytes(n), n
        return n
    if n > 0:
        if q.op == OP["readv"]:
            _remote_list(fc, _iovecs(q), n)
        else:
            _remote_range(fc, q.remote_addr, n)
    return n


def o_write(fc, q):
    count = _count(q)
    local = fc.local_fd(q.syms[0])
    if q.xfer == INLINE:
        if q.data_len != count:
            _fail(errno.EINVAL)
    elif q.op == OP["writev"]:
        _remote_list(fc, _iovecs(q), count)
    else:
        _remote_range(fc, q.remote_addr, count)
    buf = Scratch(count)          # /dev/null, /dev/zero, a pipe's read end, -1: never look at the bytes
    if q.op == OP["pwrite"]:
        return _call(lib.lsca_do_pwrite, local, buf.ptr, count, as_int(q.args[2]))
    return _call(lib.lsca_do_write, local, buf.ptr, count)


def o_fstat(fc, q):
    out = ffi.new("char[]", STAT_SIZE)
    _call(lib.lsca_fstat_into, fc.local_fd(q.syms[0]), out)
    q.want_data_len, q.want_stat = STAT_SIZE, out
    return 0


def o_notified(fc, q):
    result, err = as_int(q.args[1]), as_int(q.args[2])
    if result < 0:
        if not 0 < err < 4096:
            _fail(errno.EINVAL)                     # no such errno (the kernel's stop at 4095): malformed
        _fail(err)
    return result


def o_dup(fc, q):
    if fc.local_fd(q.syms[0]) < 0:
        _fail(errno.EBADF)
    return 0                                        # the descriptor goes over the channel


def o_fcntl(fc, q):
    cmd = as_int(q.args[1])
    if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
        return o_dup(fc, q)
    if cmd not in FCNTL_ON_DESCRIPTION:
        raise _Pass                                 # commands on the calling process run natively
    local = fc.local_fd(q.syms[0])
    if cmd == F_SETPIPE_SZ and local >= 0 and stat.S_ISFIFO(os.fstat(local).st_mode):
        raise _Pass                                 # a pipe's size is the calling user's limit
    if cmd == F_SETFL:
        _acting_as(fc)                              # O_NOATIME: the owner's, by filesystem ids
    return _call(lib.lsca_do_fcntl, local, cmd, as_int(q.args[2]))


def o_pipe2(fc, q):
    fds = ffi.new("int[2]")
    _acting_as(fc)                                  # a pipe is its maker's (filesystem uid)
    _call(lib.lsca_do_pipe2, fds, as_int(q.args[0]))
    os.close(fds[0])
    os.close(fds[1])
    return 0


def _acting_as(fc, real_ids=False):
    """creds.acting_as: a root worker declines when setfsuid cannot give the client's capabilities."""
    caps = fc.caps
    fsuid = caps["ruid"] if real_ids else caps["fsuid"]
    fs_caps = ((caps["prm"] if fsuid == 0 else 0) if real_ids else caps["eff"]) & FS_CAPS
    if os.geteuid() == 0 and fs_caps != (FS_CAPS if fsuid == 0 else 0):
        raise _Pass


def _paths(q, count, start=0):
    if q.data_len > INLINE_MAX or start > q.data_len:
        _fail(errno.EINVAL)
    parts = q.region[start:q.data_len].split(b"\0")
    if len(parts) < count + 1:
        _fail(errno.EINVAL)
    return parts[:count]


def o_fchmod(fc, q):
    _acting_as(fc)
    return _call(lib.lsca_do_fchmod, fc.local_fd(q.syms[0]), q.args[1] & 0o7777)


def o_fchown(fc, q):
    _acting_as(fc)
    return _call(lib.lsca_do_fchown, fc.local_fd(q.syms[0]), as_int(q.args[1]), as_int(q.args[2]))


def o_getcwd(fc, q):
    size = q.args[0]
    if size == 0:
        _fail(errno.EINVAL)
    _acting_as(fc)
    if len(fc.cwd_bytes) + 1 > size:
        _fail(errno.ERANGE)
    q.want_data, q.want_data_len = fc.cwd_bytes + b"\0", len(fc.cwd_bytes) + 1
    return len(fc.cwd_bytes) + 1


def o_openat(fc, q):
    flags, mode = as_int(q.args[1]), q.args[2] & 0o7777
    (path,) = _paths(q, 1)
    _acting_as(fc)
    with fc.in_mirror():
        base = fc.local_dir(q.syms[0])
        st_ = ffi.new("char[]", STAT_SIZE)
        if lib.lsca_do_fstatat(base, path, st_, AT_SYMLINK_NOFOLLOW if flags & os.O_NOFOLLOW else 0) == 0:
            kind, size = ffi.new("uint32_t *"), ffi.new("int64_t *")
            lib.lsca_stat_summary(st_, kind, size)
            if stat.S_ISFIFO(kind[0]) and not flags & os.O_NONBLOCK:
                raise _Pass
            if stat.S_ISCHR(kind[0]):
                try:
                    st2 = os.stat(path, dir_fd=None if base == AT_FDCWD else base,
                                  follow_symlinks=not flags & os.O_NOFOLLOW)
                except OSError as e:
                    _fail(e.errno)
                if os.major(st2.st_rdev) in TTY_MAJORS:
                    raise _Pass
        fd = _call(lib.lsca_do_openat, base, path, flags, mode)
        os.close(fd)
    return 0


def _stat_like(fc, q, size, call):
    flags = as_int(q.args[1])
    (path,) = _paths(q, 1)
    out = ffi.new("char[]", size)
    _acting_as(fc)
    with fc.in_mirror():
        _call(call, fc.local_dir(q.syms[0]), path, flags, out)
    q.want_data_len = size
    if size == STAT_SIZE:
        q.want_stat = out
    return 0


def o_fstatat(fc, q):
    return _stat_like(fc, q, STAT_SIZE, lambda d, p, f, out: lib.lsca_do_fstatat(d, p, out, f))


def o_statx(fc, q):
    mask = q.args[2] & 0xFFFFFFFF
    return _stat_like(fc, q, STATX_SIZE, lambda d, p, f, out: lib.lsca_do_statx(d, p, f, mask, out))


def o_faccessat(fc, q):
    mode, flags = as_int(q.args[1]), as_int(q.args[2])
    (path,) = _paths(q, 1)
    _acting_as(fc, real_ids=not flags & AT_EACCESS)
    with fc.in_mirror():
        return _call(lib.lsca_do_faccessat, fc.local_dir(q.syms[0]), path, mode, flags | AT_EACCESS)


def _one_path(call, *extra):
    def o(fc, q):
        (path,) = _paths(q, 1)
        values = [as_int(q.args[i]) for i in extra]
        _acting_as(fc)
        with fc.in_mirror():
            return _call(call, fc.local_dir(q.syms[0]), path, *values)
    return o


def _two_paths(call):
    def o(fc, q):
        old, new = _paths(q, 2)
        if q.op == OP["linkat"] and as_int(q.args[2]) & AT_EMPTY_PATH and not old:
            raise _Pass                             # the descriptor itself: its opener's to link
        _acting_as(fc)
        with fc.in_mirror():
            return _call(call, fc.local_dir(q.syms[0]), old, fc.local_dir(q.syms[1]), new,
                         as_int(q.args[2]) & 0xFFFFFFFF)
    return o


def o_symlinkat(fc, q):
    target, linkpath = _paths(q, 2)
    _acting_as(fc)
    with fc.in_mirror():
        return _call(lib.lsca_do_symlinkat, target, fc.local_dir(q.syms[0]), linkpath)


def o_readlinkat(fc, q):
    size = q.args[1]
    (path,) = _paths(q, 1)
    if size > INLINE_MAX:
        raise _Pass                                 # too large for the slot
    out = ffi.new("char[]", max(size, 1))
    _acting_as(fc)
    with fc.in_mirror():
        n = _call(lib.lsca_do_readlinkat, fc.local_dir(q.syms[0]), path, out, size)
    q.want_data, q.want_data_len = bytes(ffi.buffer(out, n)), n
    return n


def o_truncate(fc, q):
    (path,) = _paths(q, 1)
    _acting_as(fc)
    with fc.in_mirror():
        return _call(lib.lsca_do_truncate, path, as_int(q.args[0]))


def o_utimensat(fc, q):
    flags, has_times, has_path = as_int(q.args[1]), as_int(q.args[2]), as_int(q.args[3])
    times, start = ffi.NULL, 0
    if has_times:
        if q.data_len < TIMES_SIZE:
            _fail(errno.EINVAL)
        times, start = ffi.new("char[]", q.region[:TIMES_SIZE]), TIMES_SIZE
    path = _paths(q, 1, start)[0] if has_path else None
    _acting_as(fc)
    with fc.in_mirror():
        # Without a path, args[0] is a descriptor (AT_FDCWD is then just not open).
        base = fc.local_dir(q.syms[0]) if path is not None else fc.local_fd(q.syms[0])
        return _call(lib.lsca_do_utimensat, base, path if path is not None else ffi.NULL, times, flags)


ORACLES = {
    "read": o_read, "pread": o_read, "readv": o_read,
    "write": o_write, "pwrite": o_write, "writev": o_write,
    "lseek": lambda fc, q: _call(lib.lsca_do_lseek, fc.local_fd(q.syms[0]), as_int(q.args[1]),
                                 as_int(q.args[2])),
    "fsync": lambda fc, q: _call(lib.lsca_do_fsync, fc.local_fd(q.syms[0])),
    "fdatasync": lambda fc, q: _call(lib.lsca_do_fdatasync, fc.local_fd(q.syms[0])),
    "ftruncate": lambda fc, q: _call(lib.lsca_do_ftruncate, fc.local_fd(q.syms[0]), as_int(q.args[1])),
    "fstat": o_fstat,
    "close": o_notified, "chdir": o_notified, "fchdir": o_notified,
    "dup": o_dup, "dup3": o_dup, "fcntl": o_fcntl, "pipe2": o_pipe2,
    "fchmod": o_fchmod, "fchown": o_fchown, "getcwd": o_getcwd,
    "openat": o_openat, "fstatat": o_fstatat, "statx": o_statx, "faccessat": o_faccessat,
    "mkdirat": _one_path(lambda d, p, mode: lib.lsca_do_mkdirat(d, p, mode & 0o7777), 1),
    "unlinkat": _one_path(lib.lsca_do_unlinkat, 1),
    "fchmodat": _one_path(lambda d, p, mode, f: lib.lsca_do_fchmodat(d, p, mode & 0o7777, f), 1, 2),
    "fchownat": _one_path(lib.lsca_do_fchownat, 1, 2, 3),
    "renameat2": _two_paths(lib.lsca_do_renameat2),
    "linkat": _two_paths(lib.lsca_do_linkat),
    "symlinkat": o_symlinkat, "readlinkat": o_readlinkat, "truncate": o_truncate, "utimensat": o_utimensat,
}


def _stat_summary(ptr):
    kind, size = ffi.new("uint32_t *"), ffi.new("int64_t *")
    lib.lsca_stat_summary(ptr, kind, size)
    return kind[0], size[0]


# ---- running one example ----

def worker_pids(sup):
    return sorted(c.pid for c in sup.children())


def wait_state(slot, want, timeout, workers_changed):
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + 0.05
    while slot.state != want:
        now = time.monotonic()
        if now >= deadline:
            return False
        if now >= next_check:
            if workers_changed():
                return slot.state == want
            next_check = now + 0.05
        time.sleep(0.0002)
    return True


def fill_probe(fc, slot, kind):
    """A well-formed call (what the agent would write) and its exact expected answer."""
    ffi.memmove(slot, bytes(128), 128)
    slot.owner_tid = fc.pid
    if kind[0] == "write":
        slot.op, slot.args[0], slot.args[1] = OP["write"], fc.info["null"], len(kind[1])
        ffi.memmove(slot.data, kind[1], len(kind[1]))
        slot.data_len = len(kind[1])
        return len(kind[1]), None
    if kind[0] == "fstat":
        slot.op, slot.args[0] = OP["fstat"], fc.info["zero"]
        return 0, lambda s: s.data_len == STAT_SIZE and stat.S_ISCHR(_stat_summary(s.data)[0])
    if kind[0] == "getcwd":
        slot.op, slot.args[0] = OP["getcwd"], 4096
        want = fc.cwd_bytes + b"\0"
        return len(want), lambda s: s.data_len == len(want) and bytes(ffi.buffer(s.data, len(want))) == want
    slot.op, slot.args[0], slot.args[1], slot.args[2] = OP["lseek"], fc.info["null"], 0, os.SEEK_SET
    return 0, None


class Pool:
    """The fuzzed fake client (replaced after an example that broke it) and a companion
    that only holds the other worker, so well-formed clients land on the fuzzed one's."""

    def __init__(self, supervisor, parent):
        self.supervisor = supervisor
        self.parent = parent
        self.fuzzed = None
        self.companion = None

    def get(self):
        if self.fuzzed is not None and (self.fuzzed.dirty or self.fuzzed.proc.poll() is not None):
            self.fuzzed.close()
            self.fuzzed = None
            self.settle()
        if self.fuzzed is None:
            self.fuzzed = FakeClient(self.supervisor, self.parent)
        if self.companion is None:
            self.companion = FakeClient(self.supervisor, self.parent)
        return self.fuzzed

    def settle(self, stable_s=0.3, timeout=20.0):
        """After a broken example: wait until the supervisor's workers stay the same (a worker
        that died on a call may be dying again on its retry until the shard is released)."""
        sup = psutil.Process(self.supervisor.process.pid)
        deadline = time.monotonic() + timeout
        last, since = worker_pids(sup), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = worker_pids(sup)
            if now != last or not now:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= stable_s:
                return

    def close(self):
        for fc in (self.fuzzed, self.companion):
            if fc is not None:
                fc.close()
        self.fuzzed = self.companion = None


def run_example(pool, sup, ex):
    fc = pool.get()
    reqs = ex["reqs"]
    req_indexes = ex["slots"][:len(reqs)]
    probe_index = ex["slots"][len(reqs)]
    decoy_indexes = ex["slots"][len(reqs) + 1:]
    for slot in fc.slots:
        slot.state = FREE
    before = worker_pids(sup)
    q = None

    def workers_changed():
        return worker_pids(sup) != before

    def broken(message):
        """The error to raise (raised by the caller, so each kind of failure has its own line)."""
        fc.dirty = True             # its shard may hold a call a worker still chews on:
        after = worker_pids(sup)
        fc.close()                  # end it now, so the supervisor releases that shard
        died = sorted(set(before) - set(after))
        return AssertionError(f"{message}\n  last request: {q.describe() if q else None}\n"
                              f"  workers before {before}, after {after}" + (f" (died: {died})" if died else ""))

    # Header fields, then slots that are not submitted (their pending bits set).
    for field, value in ex["header"].items():
        if isinstance(value, dict):
            for i, v in value.items():
                getattr(fc.header, field)[i] = v
        else:
            setattr(fc.header, field, value)
    quiet = {}
    for i, d in zip(decoy_indexes, ex["decoys"]):
        slot = fc.slots[i]
        ffi.memmove(slot.data, bytes(64), 64)
        ffi.memmove(slot, d["head"], 128)
        slot.op = d["op"]
        slot.state = d["state"]
        fc.header.pending_mask |= 1 << i
        quiet[i] = bytes(ffi.buffer(slot, 128))

    for index, r in zip(req_indexes, reqs):
        is_path = r["op"] in PATH_OPS
        if is_path:
            fc.reset_trees()
        q = Request(fc, r)
        note(f"request slot {index}: {q.describe()}")
        if is_path:
            assert b"/" not in q.region and b".." not in q.region, "unsafe path data generated"
        slot = fc.slots[index]
        q.write(slot)
        if q.state != SUBMITTED:
            slot.state = q.state
            fc.header.pending_mask |= 1 << index
            quiet[index] = bytes(ffi.buffer(slot, 128))
            continue
        lib.lsca_slot_submit(fc.shard, index)
        if not wait_state(slot, DONE, ANSWER_TIMEOUT_S, workers_changed):
            if workers_changed():
                raise broken(f"a worker died on this request (slot state {slot.state}: never answered)")
            raise broken(f"no answer (slot state {slot.state}) within {ANSWER_TIMEOUT_S} s")
        got = (slot.status, slot.result, slot.err)
        want = oracle(fc, q)
        if got != want:
            fc.dirty = True
        assert got == want, (f"answer (status, result, err) {got} != {want} "
                             f"({errno.errorcode.get(got[2], got[2])} vs {errno.errorcode.get(want[2], want[2])})"
                             f"\n  request: {q.describe()}")
        if want[0] == ST_DONE and want[1] >= 0:
            if q.want_data_len is not None:
                assert slot.data_len == q.want_data_len, q.describe()
            if q.want_data is not None:
                assert bytes(ffi.buffer(slot.data, len(q.want_data))) == q.want_data, q.describe()
            if q.want_stat is not None:
                assert _stat_summary(slot.data) == _stat_summary(q.want_stat), q.describe()
        slot.state = FREE
        if is_path:
            assert tree(fc.cwd) == tree(fc.mirror), \
                f"the worker's path call did not do what the mirror did: {q.describe()}"

    # A well-formed call on another slot of the same shard: answered exactly, and by then
    # the worker has taken every pending bit set above.
    pslot = fc.slots[probe_index]
    want_result, check = fill_probe(fc, pslot, ex["probe"])
    lib.lsca_slot_submit(fc.shard, probe_index)
    if not wait_state(pslot, DONE, ANSWER_TIMEOUT_S, workers_changed):
        if workers_changed():
            raise broken("a worker died (seen while waiting for the well-formed probe call)")
        raise broken("the well-formed probe call was not answered")
    assert (pslot.status, pslot.result, pslot.err) == (ST_DONE, want_result, 0), \
        f"probe {ex['probe'][0]} answered {(pslot.status, pslot.result, pslot.err)}"
    assert check is None or check(pslot), f"probe {ex['probe'][0]}: wrong data"
    pslot.state = FREE
    time.sleep(QUIET_S)
    for i, head in quiet.items():
        if bytes(ffi.buffer(fc.slots[i], 128)) != head:
            fc.dirty = True
            raise AssertionError(f"slot {i} (state {struct.unpack_from('=I', head)[0]}, not submitted) was "
                                 f"touched: state now {fc.slots[i].state}, status {fc.slots[i].status}")
    if workers_changed():
        raise broken("a worker process was replaced during this example (it died after answering)")


# ---- well-formed clients meanwhile ----

GOOD = r"""
import hashlib, os, sys
path, rounds = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
for i in range(rounds):
    assert os.write(fd, bytes([i % 256]) * 4096) == 4096
assert os.lseek(fd, 0, os.SEEK_SET) == 0
h = hashlib.sha256()
while True:
    chunk = os.read(fd, 8192)
    if not chunk:
        break
    h.update(chunk)
size = os.fstat(fd).st_size
os.close(fd)
print(h.hexdigest(), size)
"""


class GoodClients:
    """Runs a well-formed program under 'lsca run' again and again until stopped."""

    ROUNDS = 40

    def __init__(self, lsca_run, workdir):
        self.lsca_run = lsca_run
        self.workdir = workdir
        self.failures = []
        self.runs = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        expected = hashlib.sha256(b"".join(bytes([i % 256]) * 4096 for i in range(self.ROUNDS))).hexdigest()
        self.expected = f"{expected} {self.ROUNDS * 4096}"

    def once(self):
        path = os.path.join(self.workdir, f"good-{self.runs}")
        proc, stats, _ = self.lsca_run([sys.executable, "-c", GOOD, path, str(self.ROUNDS)], cwd=self.workdir,
                                       timeout=60)
        out = proc.stdout.decode().strip()
        problem = None
        if proc.returncode != 0 or out != self.expected:
            problem = f"exit {proc.returncode}, output {out!r}, stderr {proc.stderr.decode()[-500:]!r}"
        elif stats is None or through_worker(stats, "write") < self.ROUNDS or \
                through_worker(stats, "read") < self.ROUNDS // 2:
            problem = f"calls not proxied: {stats}"
        if os.path.exists(path):
            os.unlink(path)
        self.runs += 1
        return problem

    def _loop(self):
        while not self.stopping.is_set():
            try:
                problem = self.once()
            except Exception as e:          # a timeout, a crash of lsca run: all failures
                problem = repr(e)
            if problem:
                self.failures.append(problem)
            self.stopping.wait(0.05)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(120)


def test_malformed_shard_content_never_crashes_a_worker(supervisor, lsca_run, tmp_path):
    sup = psutil.Process(supervisor.process.pid)
    good_dir = tmp_path / "good"
    good_dir.mkdir()
    pool = Pool(supervisor, str(tmp_path))
    pool.settle()                       # the supervisor listens before it has forked its workers
    workers_at_start = worker_pids(sup)
    assert workers_at_start, "the supervisor has no workers"
    good = GoodClients(lsca_run, str(good_dir))
    try:
        pool.get()
        good.start()

        # No shrinking and no example database: a request that crashes a worker may leave the
        # supervisor crash-looping, and every later example would then fail too (shrinking would
        # wander off to a harmless example). The failure reported is the first one, with the
        # request spelled out; the explicit examples are minimal cases found that way.
        @settings(max_examples=100, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                         HealthCheck.data_too_large, HealthCheck.large_base_example,
                                         HealthCheck.filter_too_much])
        @given(ex=example())
        @explicit(ex=minimal(unknown_op=64))
        @explicit(ex=minimal(notified_err=1 << 31))
        def fuzz(ex):
            run_example(pool, sup, ex)

        fuzz()
        good.stop()
        assert good.failures == [], f"well-formed clients failed: {good.failures[:5]}"
        assert good.runs >= 1
        # Once more, alone: output right, calls proxied.
        assert good.once() is None
        assert supervisor.process.poll() is None, "the supervisor exited"
        assert worker_pids(sup) == workers_at_start, "worker processes were replaced"
    finally:
        good.stop()
        pool.close()
