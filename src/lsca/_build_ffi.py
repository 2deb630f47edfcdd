"""cffi build script (out-of-line API mode): the lsca._lsca_ffi module.

cffi runs this file standalone, so it never imports the lsca package and finds
the C sources from its own location. The struct and constant definitions are
read from the project's ABI headers: C and Python share one definition.
"""
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
AGENT_LIB = os.path.normpath(os.path.join(HERE, "..", "..", "agent_lib"))
INCLUDE = os.path.join(AGENT_LIB, "include")
HEADERS = ["lsca_abi.h", "lsca_ring.h", "lsca_worker_sys.h", "lsca_worker_fast.h"]
SOURCES = ["ring.c", "worker_sys.c", "worker_fast.c"]


def cdef_region(path):
    """The text between LSCA_CDEF_BEGIN and LSCA_CDEF_END, without comments."""
    with open(path) as f:
        text = f.read()
    match = re.search(r"/\* LSCA_CDEF_BEGIN \*/(.*?)/\* LSCA_CDEF_END \*/", text, re.S)
    if not match:
        raise SystemExit(f"{path}: no LSCA_CDEF_BEGIN/END region")
    return re.sub(r"/\*.*?\*/", "", match.group(1), flags=re.S)


ffibuilder = FFI()
ffibuilder.cdef("\n".join(cdef_region(os.path.join(INCLUDE, h)) for h in HEADERS))
ffibuilder.set_source(
    "lsca._lsca_ffi",
    "\n".join(f'#include "{h}"' for h in HEADERS),
    sources=[os.path.relpath(os.path.join(AGENT_LIB, "src", s)) for s in SOURCES],
    include_dirs=[INCLUDE],
    extra_compile_args=["-std=gnu11", "-O2", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
