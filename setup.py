"""Build steps pyproject.toml cannot declare: the cffi module and the LD_PRELOAD agent.

The agent is a plain shared library (not a Python extension) compiled with the
same compiler setuptools configured, into the package as lsca/liblsca_agent.so.
"""
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "agent_lib"))
import build_ffi  # noqa: E402  (the flags and sources of both C parts)

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
            [os.path.join("agent_lib", "src", name) for name in build_ffi.AGENT_SOURCES],
            output_dir=self.build_temp,
            include_dirs=["agent_lib/include"],
            macros=[("LSCA_AGENT", "1")],
            extra_postargs=build_ffi.AGENT_FLAGS,
        )
        self.compiler.link_shared_object(
            objects,
            self.agent_path(),
            libraries=["dl"],
            extra_postargs=build_ffi.AGENT_LINK_FLAGS,
        )

    def get_outputs(self):
        return super().get_outputs() + [self.agent_path()]


setup(
    cffi_modules=["agent_lib/build_ffi.py:ffibuilder"],
    cmdclass={"build_ext": BuildExtWithAgent},
)
