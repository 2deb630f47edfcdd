"""strace-like lines for proxied calls: write(1, "hello\\n", 6) = 6.

Workers record calls as binary records (struct lsca_trace_record, filled by
worker_trace.c on both of their routes) and send them in batches; the process that
asked for the trace (lsca run) decodes and formats them here, off the calls' path.
"""
import errno
import functools
import json
import os
import socket
import stat
import struct

from lsca.abi import OP_NAMES, ffi, lib
from lsca.opclasses import SYSCALL_NAMES
from lsca.ops import creates_fds

SHOWN_BYTES = 32
WHENCE = {0: "SEEK_SET", 1: "SEEK_CUR", 2: "SEEK_END", 3: "SEEK_DATA", 4: "SEEK_HOLE"}
O_TMPFILE = 0o20000000
OPEN_FLAGS = [(os.O_WRONLY, "O_WRONLY"), (os.O_RDWR, "O_RDWR"), (os.O_CREAT, "O_CREAT"),
              (os.O_EXCL, "O_EXCL"), (os.O_NOCTTY, "O_NOCTTY"), (os.O_TRUNC, "O_TRUNC"),
              (os.O_APPEND, "O_APPEND"), (os.O_NONBLOCK, "O_NONBLOCK"), (os.O_DSYNC, "O_DSYNC"),
              (os.O_DIRECT, "O_DIRECT"), (os.O_DIRECTORY, "O_DIRECTORY"), (os.O_NOFOLLOW, "O_NOFOLLOW"),
              (os.O_NOATIME, "O_NOATIME"), (os.O_CLOEXEC, "O_CLOEXEC"), (os.O_PATH, "O_PATH"),
              (O_TMPFILE, "O_TMPFILE")]
AT_FLAGS = [(0x100, "AT_SYMLINK_NOFOLLOW"), (0x200, "AT_REMOVEDIR"), (0x400, "AT_SYMLINK_FOLLOW"),
            (0x800, "AT_NO_AUTOMOUNT"), (0x1000, "AT_EMPTY_PATH")]
ACCESS_MODES = [(os.R_OK, "R_OK"), (os.W_OK, "W_OK"), (os.X_OK, "X_OK")]
# faccessat's flags: there 0x200 is AT_EACCESS, not AT_REMOVEDIR.
ACCESS_FLAGS = [(0x100, "AT_SYMLINK_NOFOLLOW"), (0x200, "AT_EACCESS"), (0x1000, "AT_EMPTY_PATH")]
RENAME_FLAGS = [(1, "RENAME_NOREPLACE"), (2, "RENAME_EXCHANGE"), (4, "RENAME_WHITEOUT")]
F_GETFL, F_SETFL, F_GETPIPE_SZ, F_ADD_SEALS, F_GET_SEALS = 3, 4, 1032, 1033, 1034
FCNTL_NAMES = {0: "F_DUPFD", 1030: "F_DUPFD_CLOEXEC", F_GETFL: "F_GETFL", F_SETFL: "F_SETFL",
               1031: "F_SETPIPE_SZ", F_GETPIPE_SZ: "F_GETPIPE_SZ", F_ADD_SEALS: "F_ADD_SEALS",
               F_GET_SEALS: "F_GET_SEALS"}
SEALS = [(1, "F_SEAL_SEAL"), (2, "F_SEAL_SHRINK"), (4, "F_SEAL_GROW"), (8, "F_SEAL_WRITE"),
         (16, "F_SEAL_FUTURE_WRITE")]
MSG_FLAGS = [(getattr(socket, name), name) for name in (
    "MSG_OOB", "MSG_PEEK", "MSG_DONTROUTE", "MSG_CTRUNC", "MSG_TRUNC", "MSG_DONTWAIT", "MSG_EOR", "MSG_WAITALL",
    "MSG_CONFIRM", "MSG_ERRQUEUE", "MSG_NOSIGNAL", "MSG_MORE", "MSG_FASTOPEN", "MSG_CMSG_CLOEXEC")]
SOCK_FLAGS = [(socket.SOCK_NONBLOCK, "SOCK_NONBLOCK"), (socket.SOCK_CLOEXEC, "SOCK_CLOEXEC")]
SHUT = {socket.SHUT_RD: "SHUT_RD", socket.SHUT_WR: "SHUT_WR", socket.SHUT_RDWR: "SHUT_RDWR"}
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
    # The result of a creating call is already the number the program got (worker_trace.c);
    # pipe2's line shows both of its numbers.
    if result >= 0 and creates_fds(code, args[1]):
        call["fds"] = (r[_NEW_FDS], r[_NEW_FDS + 1])
    return call


def _path(snap, i):
    """Path i of the call, quoted; '...' when its record does not carry it."""
    paths = snap["paths"]
    return quote(paths[i], limit=4096) if i < len(paths) else "..."


def _sent(snap):
    """The first bytes a call sends (args[1] of them): '...' where its record has none."""
    return quote(snap["data"], snap["args"][1]) if snap["data"] is not None else "..."


def _received(snap):
    """The first bytes a call received; its buffer (args[1]) holds no more than it asked for."""
    if snap["data"] is None or snap["result"] < 0:
        return "..."
    return quote(snap["data"], min(snap["result"], snap["args"][1]))


def _stat(snap):
    data = snap["data"]
    return f"{{st_mode={mode_string(data[0])}, st_size={data[1]}, ...}}" if data else "0x..."


def _at(flags):
    return flag_names(flags, AT_FLAGS, "0")


def _openat(s, a):
    mode = f", {a[2]:04o}" if a[1] & (os.O_CREAT | O_TMPFILE) else ""
    return f"{dirfd(a[0])}, {_path(s, 0)}, {open_flags(a[1])}{mode}"


def _fcntl(s, a):
    cmd = FCNTL_NAMES.get(a[1], a[1])
    if a[1] in (F_GETFL, F_GETPIPE_SZ, F_GET_SEALS):
        return f"{a[0]}, {cmd}"                 # no third argument
    arg = open_flags(a[2]) if a[1] == F_SETFL else flag_names(a[2], SEALS, "0") if a[1] == F_ADD_SEALS else a[2]
    return f"{a[0]}, {cmd}, {arg}"


def _pipe2(s, a):
    fds = s.get("fds")
    shown = f"[{fds[0]}, {fds[1]}]" if fds and s["result"] == 0 else "..."
    return f"{shown}, {flag_names(a[0], OPEN_FLAGS[2:], '0')}"


def _getcwd(s, a):
    ok = s["data"] is not None and s["result"] > 0
    return f"{quote(s['data'].rstrip(bytes(1)), limit=4096) if ok else '...'}, {a[0]}"


def _utimensat(s, a):
    return f"{dirfd(a[0])}, {_path(s, 0) if a[3] else 'NULL'}, {'[...]' if a[2] else 'NULL'}, {_at(a[1])}"


# Sockets: the record carries no address, only whether there was one (and its length).
def _sockaddr(addrlen):
    return "{...}" if addrlen else "NULL"


def _msg(flags):
    return flag_names(flags, MSG_FLAGS, "0")


def _sendto(s, a):
    return f"{a[0]}, {_sent(s)}, {a[1]}, {_msg(a[2])}, {_sockaddr(a[3])}, {a[3]}"


def _recvfrom(s, a):
    return f"{a[0]}, {_received(s)}, {a[1]}, {_msg(a[2])}, {'{...}, [...]' if a[3] else 'NULL, NULL'}"


def _sendmsg(s, a):
    return (f"{a[0]}, {{msg_name={_sockaddr(a[3])}, msg_namelen={a[3]}, msg_iov=[{{iov_base={_sent(s)}, "
            f"iov_len={a[1]}}}], ...}}, {_msg(a[2])}")


def _recvmsg(s, a):
    return (f"{a[0]}, {{msg_name={_sockaddr(a[3])}, msg_iov=[{{iov_base={_received(s)}, iov_len={a[1]}}}], ...}}, "
            f"{_msg(a[2])}")


def _accept4(s, a):
    return f"{a[0]}, {'{...}, [...]' if a[2] else 'NULL, NULL'}, {flag_names(a[1], SOCK_FLAGS, '0')}"


def _fd(s, a):
    return str(a[0])


# The arguments of each op's line as strace shows its system call, from the decoded call s
# and its args a. Every op of the table has one (tests/test_trace.py).
LINES = {
    "read": lambda s, a: f"{a[0]}, {_received(s)}, {a[1]}",
    "write": lambda s, a: f"{a[0]}, {_sent(s)}, {a[1]}",
    "pread": lambda s, a: f"{a[0]}, {_received(s)}, {a[1]}, {a[2]}",
    "pwrite": lambda s, a: f"{a[0]}, {_sent(s)}, {a[1]}, {a[2]}",
    "readv": lambda s, a: f"{a[0]}, [{{iov_base={_received(s)}, iov_len={a[1]}}}], {a[2]}",
    "writev": lambda s, a: f"{a[0]}, [{{iov_base={_sent(s)}, iov_len={a[1]}}}], {a[2]}",
    "lseek": lambda s, a: f"{a[0]}, {a[1]}, {WHENCE.get(a[2], a[2])}",
    "fsync": _fd,
    "fdatasync": _fd,
    "ftruncate": lambda s, a: f"{a[0]}, {a[1]}",
    "fstat": lambda s, a: f"{a[0]}, {_stat(s)}",
    "close": _fd,
    "openat": _openat,
    "dup": _fd,
    "dup3": lambda s, a: f"{a[0]}, {a[1]}, {flag_names(a[2], OPEN_FLAGS[2:], '0')}",
    "fcntl": _fcntl,
    "pipe2": _pipe2,
    "fstatat": lambda s, a: f"{dirfd(a[0])}, {_path(s, 0)}, {_stat(s)}, {_at(a[1])}",
    "statx": lambda s, a: f"{dirfd(a[0])}, {_path(s, 0)}, {_at(a[1])}, {a[2]:#x}, {{...}}",
    "faccessat": lambda s, a: (f"{dirfd(a[0])}, {_path(s, 0)}, {flag_names(a[1], ACCESS_MODES, 'F_OK')}, "
                               f"{flag_names(a[2], ACCESS_FLAGS, '0')}"),
    "mkdirat": lambda s, a: f"{dirfd(a[0])}, {_path(s, 0)}, {a[1]:04o}",
    "unlinkat": lambda s, a: f"{dirfd(a[0])}, {_path(s, 0)}, {_at(a[1])}",
    "renameat2": lambda s, a: (f"{dirfd(a[0])}, {_path(s, 0)}, {dirfd(a[1])}, {_path(s, 1)}, "
                               f"{flag_names(a[2], RENAME_FLAGS, '0')}"),
    "linkat": lambda s, a: f"{dirfd(a[0])}, {_path(s, 0)}, {dirfd(a[1])}, {_path(s, 1)}, {_at(a[2])}",
    "symlinkat": lambda s, a: f"{_path(s, 0)}, {dirfd(a[0])}, {_path(s, 1)}",
    "readlinkat": lambda s, a: f"{dirfd(a[0])}, {_path(s, 0)}, {_received(s)}, {a[1]}",
    "fchmodat": lambda s, a: f"{dirfd(a[0])}, {_path(s, 0)}, {a[1]:04o}",
    "fchmod": lambda s, a: f"{a[0]}, {a[1]:04o}",
    "fchownat": lambda s, a: f"{dirfd(a[0])}, {_path(s, 0)}, {a[1]}, {a[2]}, {_at(a[3])}",
    "fchown": lambda s, a: f"{a[0]}, {a[1]}, {a[2]}",
    "truncate": lambda s, a: f"{_path(s, 0)}, {a[0]}",
    "utimensat": _utimensat,
    "chdir": lambda s, a: _path(s, 0),
    "fchdir": _fd,
    "getcwd": _getcwd,
    "sendto": _sendto,
    "recvfrom": _recvfrom,
    "sendmsg": _sendmsg,
    "recvmsg": _recvmsg,
    "accept4": _accept4,
    "connect": lambda s, a: f"{a[0]}, {{...}}, {a[1]}",
    "shutdown": lambda s, a: f"{a[0]}, {SHUT.get(a[1], a[1])}",
}


def format_call(snap):
    op, a = snap["op"], snap["args"]
    line = LINES.get(op)
    # An op this reader has no line for (a newer worker's): its raw arguments.
    shown = line(snap, a) if line else ", ".join(map(str, a))
    return f"{SYSCALL_NAMES.get(op, op)}({shown}) = {result_string(snap['result'], snap['err'])}"


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
