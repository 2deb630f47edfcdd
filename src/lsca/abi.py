"""The shared-memory ABI as Python sees it: everything comes from agent_lib/include
through the cffi module, nothing is restated here by hand."""
from lsca._lsca_ffi import ffi, lib

MAGIC = lib.LSCA_MAGIC
ABI_VERSION = lib.LSCA_ABI_VERSION
SLOTS = lib.LSCA_SLOTS
INLINE_MAX = lib.LSCA_INLINE_MAX
HEADER_SIZE = lib.LSCA_HEADER_SIZE
SESSION_LEN = lib.LSCA_SESSION_LEN
OP_MAX = lib.LSCA_OP_MAX
OP_COUNT = lib.LSCA_OP_COUNT
SLOT_SIZE = ffi.sizeof("struct lsca_slot")
SHARD_SIZE = HEADER_SIZE + SLOTS * SLOT_SIZE
HELLO_SIZE = ffi.sizeof("struct lsca_hello")
WELCOME_SIZE = ffi.sizeof("struct lsca_welcome")
IPC_KEY_PREFIX = lib.LSCA_IPC_KEY_PREFIX
IPC_KEY_MASK = lib.LSCA_IPC_KEY_MASK

# op code -> name ("write"), from the C enum itself.
OP_NAMES = {value: name[len("LSCA_OP_"):].lower()
            for value, name in ffi.typeof("enum lsca_op").elements.items()
            if name not in ("LSCA_OP_NONE", "LSCA_OP_COUNT")}
OP_CODES = {name: value for value, name in OP_NAMES.items()}


def shard_header(address):
    """The header of the shard attached at address."""
    return ffi.cast("struct lsca_shard_header *", address)


def shard_slot(address, index):
    """Slot index of the shard attached at address."""
    return ffi.cast("struct lsca_slot *", address + HEADER_SIZE + index * SLOT_SIZE)


def is_lsca_key(key):
    return key is not None and (key & IPC_KEY_MASK) == IPC_KEY_PREFIX


def parse_hello(data):
    """A registration hello from raw bytes -> (pid, session) or raise ValueError."""
    if len(data) != HELLO_SIZE:
        raise ValueError(f"hello has {len(data)} bytes, expected {HELLO_SIZE}")
    hello = ffi.new("struct lsca_hello *")
    ffi.memmove(hello, data, HELLO_SIZE)
    if hello.magic != MAGIC:
        raise ValueError("bad magic")
    if hello.abi_version != ABI_VERSION:
        raise ValueError(f"agent speaks ABI {hello.abi_version}, supervisor {ABI_VERSION}")
    session = ffi.string(hello.session, SESSION_LEN).decode("ascii", "replace")
    return hello.pid, session


def pack_welcome(status, supervisor_pid=0, shmid=-1):
    welcome = ffi.new("struct lsca_welcome *")
    welcome.magic = MAGIC
    welcome.abi_version = ABI_VERSION
    welcome.status = status
    welcome.supervisor_pid = supervisor_pid
    welcome.shmid = shmid
    welcome.shard_size = SHARD_SIZE
    welcome.nslots = SLOTS
    return bytes(ffi.buffer(welcome))
