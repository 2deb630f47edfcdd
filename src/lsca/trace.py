"""strace-like lines for proxied calls: write(1, "hello\\n", 6) = 6.

Workers record calls as binary records (struct lsca_trace_record, appended by
worker_fast.c on both of their routes) and send them in batches; the process that
asked for the trace (lsca run) decodes and formats them here, off the calls' path.
"""
import errno
import functools
import json
import os
import stat
import struct

from lsca.abi import OP_NAMES, ffi, lib
from lsca.opclasses import SYSCALL_NAMES
from lsca.ops import creates_fds

SHOWN_BYTES = 32
WHENCE = {0: "SEEK_SET", 1: "SEEK_CUR", 2: "SEEK_END", 3: "SEEK_DATA", 4: "SEEK_HOLE"}
# The names strace prints: the system calls glibc issues for these ops.
OPEN_FLAGS = [(os.O_WRONLY, "O_WRONLY"), (os.O_RDWR, "O_RDWR"), (os.O_CREAT, "O_CREAT"),
              (os.O_EXCL, "O_EXCL"), (os.O_NOCTTY, "O_NOCTTY"), (os.O_TRUNC, "O_TRUNC"),
              (os.O_APPEND, "O_APPEND"), (os.O_NONBLOCK, "O_NONBLOCK"), (os.O_DSYNC, "O_DSYNC"),
              (os.O_DIRECT, "O_DIRECT"), (os.O_DIRECTORY, "O_DIRECTORY"), (os.O_NOFOLLOW, "O_NOFOLLOW"),
              (os.O_NOATIME, "O_NOATIME"), (os.O_CLOEXEC, "O_CLOEXEC"), (os.O_PATH, "O_PATH"),
              (0o20000000, "O_TMPFILE")]
AT_FLAGS = [(0x100, "AT_SYMLINK_NOFOLLOW"), (0x200, "AT_REMOVEDIR"), (0x400, "AT_SYMLINK_FOLLOW"),
            (0x800, "AT_NO_AUTOMOUNT"), (0x1000, "AT_EMPTY_PATH")]
FCNTL_NAMES = {0: "F_DUPFD", 1030: "F_DUPFD_CLOEXEC", 3: "F_GETFL", 4: "F_SETFL", 1031: "F_SETPIPE_SZ",
               1032: "F_GETPIPE_SZ", 1033: "F_ADD_SEALS", 1034: "F_GET_SEALS"}
_ESCAPES = {ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r", ord("\v"): "\\v",
            ord("\f"): "\\f", ord('"'): '\\"', ord("\\"): "\\\\"}


def quote(data, total=None, limit=SHOWN_BYTES):
    """A C string literal of the first bytes, '...' when there were more."""
    total = len(data) if total is None else total
    out = []
    for i, b in enumerate(data[:limit]):
        if b in _ESCAPES:
            out.append(_ESCAPES[b])
        elif 32 <= b < 127:
            out.append(chr(b))
        else:
            nxt = data[i + 1] if i + 1 < len(data) else None
            # Octal like strace; three digits when a digit follows, so it stays unambiguous.
            out.append(f"\\{b:03o}" if nxt is not None and 48 <= nxt <= 57 else f"\\{b:o}")
    return '"' + "".join(out) + '"' + ("..." if total > limit else "")


def mode_string(mode):
    kinds = [(stat.S_ISREG, "S_IFREG"), (stat.S_ISDIR, "S_IFDIR"), (stat.S_ISCHR, "S_IFCHR"),
             (stat.S_ISBLK, "S_IFBLK"), (stat.S_ISFIFO, "S_IFIFO"), (stat.S_ISLNK, "S_IFLNK"),
             (stat.S_ISSOCK, "S_IFSOCK")]
    kind = next((name for test, name in kinds if test(mode)), "0")
    return f"{kind}|{stat.S_IMODE(mode):04o}"


def flag_names(value, table, zero):
    names, rest = [], value
    for bit, name in table:
        if bit and value & bit == bit:
            names.append(name)
            rest &= ~bit
    if rest:
        names.append(hex(rest))
    return "|".join(names) or zero


def open_flags(value):
    access = {0: "O_RDONLY", 1: "O_WRONLY", 2: "O_RDWR"}.get(value & 3, str(value & 3))
    rest = flag_names(value & ~3 & ~0o100000, OPEN_FLAGS[2:], "")   # O_LARGEFILE is noise
    return access + ("|" + rest if rest else "")


def dirfd(value):
    return "AT_FDCWD" if value == -100 else str(value)


def result_string(result, err):
    if result == -1:
        name = errno.errorcode.get(err, str(err))
        return f"-1 {name} ({os.strerror(err)})"
    return str(result)


RECORD = "struct lsca_trace_record *"
RECORD_SIZE = ffi.sizeof("struct lsca_trace_record")
NO_DATA = lib.LSCA_TRACE_NO_DATA
DROPPED = lib.LSCA_TRACE_DROPPED
READ_OPS = ("read", "pread", "readv", "readlinkat", "getcwd")
MAGIC = lib.LSCA_TRACE_MAGIC

# The record's fields in one unpack (cffi reads them one attribute at a time, which was most
# of a traced call's cost in the reader). Both targets are little-endian; the offsets are
# checked against the header's layout below.
_FIELDS = [("magic", "H"), ("op", "H"), ("size", "I"), ("time_ns", "Q"), ("latency_ns", "Q"), ("seq", "Q"),
           ("pid", "i"), ("tid", "i"), ("result", "q"), ("err", "i"), ("worker", "I"),
           ("args", f"{lib.LSCA_MAX_ARGS}q"), ("new_fds", "2i"), ("st_mode", "I"), ("path_len", "I"),
           ("st_size", "q"), ("data_len", "I"), ("data_total", "I"), ("comm", "16s")]
_LAYOUT = struct.Struct("<" + "".join(f for _, f in _FIELDS))
for _i, (_name, _) in enumerate(_FIELDS):
    if ffi.offsetof("struct lsca_trace_record", _name) != struct.calcsize("<" + "".join(f for _, f in _FIELDS[:_i])):
        raise ImportError(f"lsca_trace_record.{_name} is not where trace.py unpacks it")
if _LAYOUT.size != RECORD_SIZE:
    raise ImportError("lsca_trace_record's size is not what trace.py unpacks")
_ARGS = 11                                      # index of args[0] in an unpacked record
_NEW_FDS = _ARGS + lib.LSCA_MAX_ARGS
_TAIL = _NEW_FDS + 2                            # st_mode, path_len, st_size, data_len, data_total, comm


def decode(batch):
    """The calls in one message of a trace stream (records as workers append them), as
    dicts format_call() and format_json() take, and the workers' drop markers (dicts with
    "dropped", see format_dropped()). A damaged record ends the batch."""
    off, end = 0, len(batch)
    while off + RECORD_SIZE <= end:
        r = _LAYOUT.unpack_from(batch, off)
        size = r[2]
        if r[0] != MAGIC or size < RECORD_SIZE or off + size > end:
            return
        if r[1] == DROPPED:
            yield _dropped(r)
        else:
            yield _call(r, batch[off + RECORD_SIZE:off + size])
        off += size


@functools.lru_cache(maxsize=256)
def _program(comm):
    return comm.split(b"\0", 1)[0].decode(errors="replace")


def _dropped(r):
    return {"dropped": r[8], "pid": r[6], "worker": r[10], "time_ns": r[3], "program": _program(r[-1])}


def _call(r, payload):
    code = r[1]
    op = OP_NAMES.get(code, f"op{code}")
    st_mode, path_len, st_size, data_len = r[_TAIL:_TAIL + 4]
    paths = payload[:path_len].split(b"\0")[:-1] if path_len else []
    data = None
    if data_len != NO_DATA:
        data = payload[path_len:path_len + data_len]
    result = r[8]
    if result == 0 and (op == "fstat" or op == "fstatat"):
        data = (st_mode, st_size)
    args = list(r[_ARGS:_ARGS + 4])
    call = {"op": op, "args": args, "data": data, "paths": paths,
            "result": result, "err": r[9], "pid": r[6], "tid": r[7], "worker": r[10],
            "time_ns": r[3], "latency_ns": r[4], "seq": r[5], "program": _program(r[-1])}
    if result >= 0 and creates_fds(code, args[1]):
        call = with_fds(call, r[_NEW_FDS], r[_NEW_FDS + 1])
    return call


def with_fds(snap, fd0, fd1):
    """The line of a descriptor-creating call, with the numbers the client got."""
    snap["fds"] = (fd0, fd1)
    if snap["op"] in ("openat", "dup", "fcntl", "accept4"):
        snap["result"] = fd0
    elif snap["op"] == "dup3":
        snap["result"] = snap["args"][1]
    return snap


def format_call(snap):
    op, a, data, p = snap["op"], snap["args"], snap["data"], snap["paths"]
    name = SYSCALL_NAMES.get(op, op)
    path = [quote(x, limit=4096) for x in p] + ["NULL"] * 2
    result = snap["result"]
    if op in ("write", "pwrite", "writev"):
        buf = quote(data, a[1]) if data is not None else "..."
    elif op in ("read", "pread", "readv", "readlinkat"):
        buf = quote(data, result) if data is not None and result >= 0 else "..."
    if op in ("write", "read"):
        text = f"{name}({a[0]}, {buf}, {a[1]})"
    elif op in ("pwrite", "pread"):
        text = f"{name}({a[0]}, {buf}, {a[1]}, {a[2]})"
    elif op in ("writev", "readv"):
        text = f"{name}({a[0]}, [{{iov_base={buf}, iov_len={a[1]}}}], {a[2]})"
    elif op == "lseek":
        text = f"lseek({a[0]}, {a[1]}, {WHENCE.get(a[2], a[2])})"
    elif op == "ftruncate":
        text = f"ftruncate({a[0]}, {a[1]})"
    elif op in ("fstat", "fstatat"):
        shown = f"{{st_mode={mode_string(data[0])}, st_size={data[1]}, ...}}" if data else "0x..."
        text = (f"fstat({a[0]}, {shown})" if op == "fstat" else
                f"newfstatat({dirfd(a[0])}, {path[0]}, {shown}, {flag_names(a[1], AT_FLAGS, '0')})")
    elif op == "openat":
        mode = f", {a[2]:04o}" if a[1] & (os.O_CREAT | 0o20000000) else ""
        text = f"openat({dirfd(a[0])}, {path[0]}, {open_flags(a[1])}{mode})"
    elif op == "statx":
        text = f"statx({dirfd(a[0])}, {path[0]}, {flag_names(a[1], AT_FLAGS, '0')}, {a[2]:#x}, {{...}})"
    elif op == "faccessat":
        text = f"faccessat2({dirfd(a[0])}, {path[0]}, {a[1]}, {flag_names(a[2], AT_FLAGS, '0')})"
    elif op == "mkdirat":
        text = f"mkdirat({dirfd(a[0])}, {path[0]}, {a[1]:04o})"
    elif op == "unlinkat":
        text = f"unlinkat({dirfd(a[0])}, {path[0]}, {flag_names(a[1], AT_FLAGS, '0')})"
    elif op in ("renameat2", "linkat"):
        text = f"{op}({dirfd(a[0])}, {path[0]}, {dirfd(a[1])}, {path[1]}, {a[2]})"
    elif op == "symlinkat":
        text = f"symlinkat({path[0]}, {dirfd(a[0])}, {path[1]})"
    elif op == "readlinkat":
        text = f"readlinkat({dirfd(a[0])}, {path[0]}, {buf}, {a[1]})"
    elif op == "fchmodat":
        text = f"fchmodat({dirfd(a[0])}, {path[0]}, {a[1]:04o})"
    elif op == "fchownat":
        text = f"fchownat({dirfd(a[0])}, {path[0]}, {a[1]}, {a[2]}, {flag_names(a[3], AT_FLAGS, '0')})"
    elif op == "fchmod":
        text = f"fchmod({a[0]}, {a[1]:04o})"
    elif op == "fchown":
        text = f"fchown({a[0]}, {a[1]}, {a[2]})"
    elif op == "truncate":
        text = f"truncate({path[0]}, {a[0]})"
    elif op == "utimensat":
        text = f"utimensat({dirfd(a[0])}, {path[0] if a[3] else 'NULL'}, {'[...]' if a[2] else 'NULL'}, " \
               f"{flag_names(a[1], AT_FLAGS, '0')})"
    elif op == "chdir":
        text = f"chdir({path[0]})"
    elif op == "getcwd":
        text = f"getcwd({quote(data.rstrip(bytes(1)), limit=4096) if data is not None and result > 0 else '...'}, {a[0]})"
    elif op == "dup3":
        text = f"dup3({a[0]}, {a[1]}, {open_flags(a[2]) if a[2] else 0})"
    elif op == "fcntl":
        text = f"fcntl({a[0]}, {FCNTL_NAMES.get(a[1], a[1])}, {a[2]})"
    elif op == "pipe2":
        fds = snap.get("fds")
        shown = f"[{fds[0]}, {fds[1]}]" if fds and result == 0 else "..."
        text = f"pipe2({shown}, {flag_names(a[0], OPEN_FLAGS[2:], '0')})"
    else:                               # close, fsync, fdatasync, dup, fchdir
        text = f"{name}({a[0]})"
    return f"{text} = {result_string(result, snap['err'])}"


def format_dropped(event):
    """The line that says records were lost where they would have been."""
    return (f"lsca: {event['dropped']} trace records of pid {event['pid']} dropped "
            f"(the trace reader fell behind)")


def format_dropped_json(event):
    return json.dumps({"time": round(event["time_ns"] / 1e9, 6), "pid": event["pid"], "program": event["program"],
                       "worker": event["worker"], "dropped": event["dropped"]})


def format_json(snap, command_pid=None):
    """One JSON line: when, who (and whether it is CMD itself, the process lsca run started),
    the call as strace would show it, its outcome and cost."""
    text = format_call(snap)
    call, _, _ = text.rpartition(" = ")
    result, err = snap["result"], snap["err"]
    return json.dumps({"time": round(snap["time_ns"] / 1e9, 6), "pid": snap["pid"], "tid": snap["tid"],
                       "program": snap["program"], "command": snap["pid"] == command_pid,
                       "worker": snap["worker"], "op": snap["op"],
                       "syscall": call.split("(", 1)[0], "call": call,
                       "paths": [p.decode(errors="surrogateescape") for p in snap["paths"]],
                       "result": result,
                       "errno": errno.errorcode.get(err, str(err)) if result == -1 else None,
                       "latency_us": round(snap["latency_ns"] / 1000, 3)})
