"""Build definitions of the C parts (used by setup.py; not part of the installed package):
the compile flags of both, and the cffi build (out-of-line API mode) of the workers'
module lsca._lsca_ffi.

cffi runs this file standalone, so it never imports the lsca package and finds
the C sources from its own location. The struct and constant definitions are
read from the project's ABI headers: C and Python share one definition.
"""
import os
import re

from cffi import FFI

AGENT_LIB = os.path.dirname(os.path.abspath(__file__))
INCLUDE = os.path.join(AGENT_LIB, "include")

# The one list of compile flags: what both C parts are built with...
C_FLAGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-attributes"]
# ...the workers' module adds hardening: a root worker reads what any user writes into a
# shard, so an overflow must end the worker, not worse...
WORKER_FLAGS = C_FLAGS + ["-fstack-protector-strong", "-U_FORTIFY_SOURCE", "-D_FORTIFY_SOURCE=2"]
# ...and the agent is a plain shared library loaded into every program (no fortify: it
# defines read(), write() and the rest, which glibc's fortify wrappers would redefine).
AGENT_FLAGS = C_FLAGS + ["-fPIC", "-pthread"]
AGENT_LINK_FLAGS = ["-pthread", "-Wl,--version-script=" + os.path.join(AGENT_LIB, "lsca_agent.map"), "-Wl,-z,now"]
AGENT_SOURCES = ["agent.c", "slots.c", "interpose_io.c", "interpose_fd.c", "interpose_path.c", "interpose_syscall.c",
                 "interpose_signal.c", "interpose_socket.c", "interpose_exec.c", "user_memory.c", "ops.c"]
HEADERS = ["lsca_abi.h", "lsca_slots.h", "lsca_worker_sys.h", "lsca_worker_fast.h"]
SOURCES = ["slots.c", "worker_sys.c", "worker_fast.c", "worker_trace.c", "worker_path.c", "ops.c"]


def cdef_region(path):
    """The text between LSCA_CDEF_BEGIN and LSCA_CDEF_END, without comments."""
    with open(path) as f:
        text = f.read()
    match = re.search(r"/\* LSCA_CDEF_BEGIN \*/(.*?)/\* LSCA_CDEF_END \*/", text, re.S)
    if not match:
        raise SystemExit(f"{path}: no LSCA_CDEF_BEGIN/END region")
    return re.sub(r"/\*.*?\*/", "", match.group(1), flags=re.S)


def op_enum(path):
    """enum lsca_op for cdef (which cannot expand macros), from the lines of the header's op
    table LSCA_OPS, as the C compiler expands them: one list of ops for both."""
    with open(path) as f:
        text = f.read()
    table = re.search(r"#define LSCA_OPS\(X\)(.*?)(?<!\\)\n", text, re.S)
    if not table:
        raise SystemExit(f"{path}: no LSCA_OPS table")
    ops = re.findall(r"\bX\(\s*(\w+)\s*,\s*\w+\s*,\s*(\d+)\s*,", table.group(1))
    lines = [f"LSCA_OP_{name} = {code}," for name, code in ops]
    count = max(int(code) for _, code in ops) + 1     # cffi checks it against the compiler's
    return "enum lsca_op {\n    LSCA_OP_NONE = 0,\n    " + "\n    ".join(lines) + \
           f"\n    LSCA_OP_COUNT = {count}\n}};\n"


ffibuilder = FFI()
ABI_HEADER = os.path.join(INCLUDE, HEADERS[0])
ffibuilder.cdef("\n".join([cdef_region(ABI_HEADER), op_enum(ABI_HEADER)] +
                          [cdef_region(os.path.join(INCLUDE, h)) for h in HEADERS[1:]]))
ffibuilder.set_source(
    "lsca._lsca_ffi",
    "\n".join(f'#include "{h}"' for h in HEADERS),
    sources=[os.path.relpath(os.path.join(AGENT_LIB, "src", s)) for s in SOURCES],
    include_dirs=[INCLUDE],
    extra_compile_args=WORKER_FLAGS,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
