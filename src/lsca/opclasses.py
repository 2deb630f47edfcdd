"""Names for sets of proxied calls, as strace's -e trace= knows them.

An op is named by its LSCA name ("pread", "fstatat") or by the system call strace
shows for it ("pread64", "newfstatat"); a class by %file (calls that take a path),
%desc (calls on a descriptor) or %network (socket calls). Used by trace filters
and by the policy.
"""
from lsca import ops
from lsca.abi import OP_CODES, OP_NAMES

# The names strace prints: the system calls glibc issues for these ops.
SYSCALL_NAMES = {"pread": "pread64", "pwrite": "pwrite64", "fstatat": "newfstatat",
                 "faccessat": "faccessat2"}

# The classes of each op are bits on its line of the op table (lsca.ops).
CLASSES = {name: {op.name for op in ops.BY_CODE.values() if op.classes & bit}
           for name, bit in ops.CLASS_BITS.items()}
ALL = set(OP_CODES)
# Everything a user may write for one op: LSCA's name, strace's, and the libc names people know.
ALIASES = {**{name: name for name in ALL}, **{v: k for k, v in SYSCALL_NAMES.items()},
           "open": "openat", "stat": "fstatat", "lstat": "fstatat", "access": "faccessat",
           "mkdir": "mkdirat", "unlink": "unlinkat", "rmdir": "unlinkat", "rename": "renameat2",
           "renameat": "renameat2", "link": "linkat", "symlink": "symlinkat",
           "readlink": "readlinkat", "chmod": "fchmodat", "chown": "fchownat", "lchown": "fchownat",
           "dup2": "dup3", "pipe": "pipe2", "send": "sendto", "recv": "recvfrom",
           "accept": "accept4", "creat": "openat", "utimes": "utimensat", "futimens": "utimensat"}

assert all(ops <= ALL for ops in CLASSES.values()), "a class names an op the ABI lacks"


def syscall_name(op):
    """The name strace shows for an op."""
    return SYSCALL_NAMES.get(op, op)


def resolve(word):
    """The set of op names one word stands for: an op, a %class (or bare class name), 'all'.
    Raises ValueError with a message that names the word."""
    word = word.strip()
    if word in ("all", "*", "%all"):
        return set(ALL)
    name = word[1:] if word.startswith("%") else word
    if name in CLASSES and (word.startswith("%") or name not in ALIASES):
        return set(CLASSES[name])
    if word in ALIASES:
        return {ALIASES[word]}
    raise ValueError(f"unknown call or class {word!r} (classes: %file, %desc, %network; "
                     f"calls: {', '.join(sorted(ALL))})")


def parse_filter(spec):
    """strace's trace= expression: comma-separated ops/classes, a leading '!' negates the
    whole list. Returns the set of op names selected."""
    spec = spec.strip()
    negate = spec.startswith("!")
    if negate:
        spec = spec[1:]
    words = [w for w in spec.split(",") if w.strip()]
    if not words:
        raise ValueError("an empty trace filter selects nothing")
    chosen = set().union(*(resolve(w) for w in words))
    return ALL - chosen if negate else chosen


def op_mask(names):
    """The 64-bit mask (bit = op code) of a set of op names."""
    mask = 0
    for name in names:
        mask |= 1 << OP_CODES[name]
    return mask


def op_name(code):
    return OP_NAMES.get(code, f"op{code}")
