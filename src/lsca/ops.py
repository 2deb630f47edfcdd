"""The op table (LSCA_OPS in agent_lib/include/lsca_abi.h), read once through the cffi
module: every fact about an op — its classes, its paths and their dirfds, whether it
creates descriptors, only reports, may be run twice, may block — comes from that one
table, shared with the agent and the compiled worker. Nothing here restates a fact."""
from dataclasses import dataclass

from lsca._lsca_ffi import ffi, lib

F_DUPFD, F_DUPFD_CLOEXEC = 0, 1030
TIMES_SIZE = 2 * 2 * ffi.sizeof("int64_t")        # struct timespec[2] on 64-bit


@dataclass(frozen=True)
class Op:
    code: int
    name: str
    classes: int
    facts: int
    npaths: int
    first_checked: int
    dirfd_args: tuple               # per path: the arg holding its dirfd, None: the thread's cwd

    def has(self, fact):
        return bool(self.facts & fact)

    @property
    def class_names(self):
        return {name for name, bit in CLASS_BITS.items() if self.classes & bit}

    def path_layout(self, args):
        """(offset in data[] of the first path, how many paths) for a call with these args."""
        if self.has(lib.LSCA_OPF_TIMES_FIRST):
            return (TIMES_SIZE if args[2] else 0), (self.npaths if args[3] else 0)
        return 0, self.npaths


CLASS_BITS = {"file": lib.LSCA_OPC_FILE, "desc": lib.LSCA_OPC_DESC, "network": lib.LSCA_OPC_NETWORK}


def _read_table():
    table = lib.lsca_op_table()
    ops = {}
    for code in range(lib.LSCA_OP_MAX):
        line = table[code]
        if line.name == ffi.NULL:
            continue
        ops[code] = Op(code, ffi.string(line.name).decode(), line.classes, line.facts, line.npaths,
                       line.first_checked,
                       tuple(None if line.dirfd_arg[i] < 0 else line.dirfd_arg[i] for i in range(line.npaths)))
    return ops


BY_CODE = _read_table()
BY_NAME = {op.name: op for op in BY_CODE.values()}


def codes_with(fact):
    """The op codes whose line has fact (an LSCA_OPF_* bit)."""
    return frozenset(code for code, op in BY_CODE.items() if op.has(fact))


REPORTS = codes_with(lib.LSCA_OPF_REPORT)
FD_ARG = codes_with(lib.LSCA_OPF_FD_ARG)
IDEMPOTENT = codes_with(lib.LSCA_OPF_IDEMPOTENT)
AT_OFFSET = codes_with(lib.LSCA_OPF_AT_OFFSET)
MAY_BLOCK = codes_with(lib.LSCA_OPF_MAY_BLOCK)
WITH_PATHS = frozenset(code for code, op in BY_CODE.items() if op.npaths)


NEW_FDS = codes_with(lib.LSCA_OPF_NEW_FDS)
NEW_FDS_BY_CMD = codes_with(lib.LSCA_OPF_NEW_FDS_BY_CMD)


def creates_fds(op, cmd):
    """Whether a successful call of op (code) hands the client new descriptors; cmd is its
    args[1] (fcntl's command)."""
    return op in NEW_FDS or (op in NEW_FDS_BY_CMD and cmd in (F_DUPFD, F_DUPFD_CLOEXEC))
