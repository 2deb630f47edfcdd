"""strace-like lines for proxied calls: write(1, "hello\\n", 6) = 6."""
import errno
import os
import stat

from lsca.abi import ffi, lib

SHOWN_BYTES = 32
WHENCE = {0: "SEEK_SET", 1: "SEEK_CUR", 2: "SEEK_END", 3: "SEEK_DATA", 4: "SEEK_HOLE"}
# The names strace prints for these ops (the syscalls glibc issues).
SYSCALL_NAMES = {"pread": "pread64", "pwrite": "pwrite64"}
_ESCAPES = {ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r", ord("\v"): "\\v",
            ord("\f"): "\\f", ord('"'): '\\"', ord("\\"): "\\\\"}


def quote(data, total):
    """A C string literal of the first bytes, '...' when there were more."""
    out = []
    for i, b in enumerate(data[:SHOWN_BYTES]):
        if b in _ESCAPES:
            out.append(_ESCAPES[b])
        elif 32 <= b < 127:
            out.append(chr(b))
        else:
            nxt = data[i + 1] if i + 1 < len(data) else None
            # Octal like strace; three digits when a digit follows, so it stays unambiguous.
            out.append(f"\\{b:03o}" if nxt is not None and 48 <= nxt <= 57 else f"\\{b:o}")
    return '"' + "".join(out) + '"' + ("..." if total > SHOWN_BYTES else "")


def mode_string(mode):
    kinds = [(stat.S_ISREG, "S_IFREG"), (stat.S_ISDIR, "S_IFDIR"), (stat.S_ISCHR, "S_IFCHR"),
             (stat.S_ISBLK, "S_IFBLK"), (stat.S_ISFIFO, "S_IFIFO"), (stat.S_ISLNK, "S_IFLNK"),
             (stat.S_ISSOCK, "S_IFSOCK")]
    kind = next((name for test, name in kinds if test(mode)), "0")
    return f"{kind}|{stat.S_IMODE(mode):04o}"


def result_string(result, err):
    if result == -1:
        name = errno.errorcode.get(err, str(err))
        return f"-1 {name} ({os.strerror(err)})"
    return str(result)


def snapshot(op_name, slot, xfer_inline):
    """What the trace line needs from the slot, taken before the slot is handed back."""
    data = None
    if op_name in ("write", "pwrite", "writev"):
        if xfer_inline:
            data = bytes(ffi.buffer(slot.data, min(slot.data_len, SHOWN_BYTES + 1)))
    elif op_name in ("read", "pread", "readv"):
        if xfer_inline and slot.result >= 0:
            data = bytes(ffi.buffer(slot.data, min(slot.result, SHOWN_BYTES + 1)))
    elif op_name == "fstat" and slot.result == 0:
        mode, size = ffi.new("uint32_t *"), ffi.new("int64_t *")
        lib.lsca_stat_summary(slot.data, mode, size)
        data = (mode[0], size[0])
    return (op_name, [slot.args[i] for i in range(3)], slot.result, slot.err, data)


def _signed(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def format_call(snap):
    op, args, result, err, data = snap
    fd, a1, a2 = _signed(args[0]), args[1], _signed(args[2])
    name = SYSCALL_NAMES.get(op, op)
    buf = (quote(data, a1 if result == -1 or op.startswith("write") or op.startswith("pwrite")
                 else result) if data is not None else "...")
    if op in ("write", "read"):
        text = f"{name}({fd}, {buf}, {a1})"
    elif op in ("pwrite", "pread"):
        text = f"{name}({fd}, {buf}, {a1}, {a2})"
    elif op in ("writev", "readv"):
        text = f"{name}({fd}, [{{iov_base={buf}, iov_len={a1}}}], {a2})"
    elif op == "lseek":
        text = f"lseek({fd}, {_signed(a1)}, {WHENCE.get(a2, a2)})"
    elif op == "ftruncate":
        text = f"ftruncate({fd}, {_signed(a1)})"
    elif op == "fstat":
        shown = f"{{st_mode={mode_string(data[0])}, st_size={data[1]}, ...}}" if data else "0x..."
        text = f"fstat({fd}, {shown})"
    else:
        text = f"{name}({fd})"
    return f"{text} = {result_string(result, err)}"
