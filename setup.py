"""Build steps pyproject.toml cannot declare: the cffi module and the LD_PRELOAD agent.

The agent is a plain shared library (not a Python extension) compiled with the
same compiler setuptools configured, into the package as lsca/liblsca_agent.so.
"""
import os

from setuptools import setup
from setuptools.command.build_ext import build_ext

AGENT_SOURCES = ["agent_lib/src/agent.c", "agent_lib/src/ring.c", "agent_lib/src/interpose_io.c",
                 "agent_lib/src/interpose_fd.c", "agent_lib/src/interpose_path.c",
                 "agent_lib/src/interpose_syscall.c", "agent_lib/src/interpose_signal.c",
                 "agent_lib/src/interpose_socket.c", "agent_lib/src/interpose_exec.c", "agent_lib/src/user_memory.c",
                 "agent_lib/src/ops.c"]
AGENT_NAME = "liblsca_agent.so"


class BuildExtWithAgent(build_ext):
    def run(self):
        super().run()
        self.build_agent()

    def agent_path(self):
        base = os.path.join("src") if self.inplace else self.build_lib
        return os.path.join(base, "lsca", AGENT_NAME)

    def build_agent(self):
        objects = self.compiler.compile(
            AGENT_SOURCES,
            output_dir=self.build_temp,
            include_dirs=["agent_lib/include"],
            macros=[("LSCA_AGENT", "1")],
            extra_postargs=["-std=gnu11", "-O2", "-fPIC", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-attributes",
                            "-pthread"],
        )
        self.compiler.link_shared_object(
            objects,
            self.agent_path(),
            libraries=["dl"],
            extra_postargs=["-pthread", "-Wl,--version-script=agent_lib/lsca_agent.map", "-Wl,-z,now"],
        )

    def get_outputs(self):
        return super().get_outputs() + [self.agent_path()]


setup(
    cffi_modules=["src/lsca/_build_ffi.py:ffibuilder"],
    cmdclass={"build_ext": BuildExtWithAgent},
)
