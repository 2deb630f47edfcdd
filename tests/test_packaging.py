"""The source distribution carries what a build from it needs (the agent's and the workers'
C sources, headers, link map and build definitions), the build definitions stay out of
the installed package, and there is one version."""
import os
import subprocess
import sys
import tarfile

import lsca

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


def test_the_sdist_holds_every_c_source_header_and_build_file(tmp_path):
    # setuptools' PEP 517 hook, as `python -m build --sdist` calls it (no network, no venv).
    subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; "
                                          f"print(build_meta.build_sdist({str(tmp_path)!r}))"],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    (archive,) = [p for p in os.listdir(tmp_path) if p.endswith(".tar.gz")]
    assert archive == f"lsca-{lsca.__version__}.tar.gz"
    with tarfile.open(tmp_path / archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    needed = {os.path.relpath(os.path.join(d, f), ROOT)
              for d, _, files in os.walk(os.path.join(ROOT, "agent_lib")) for f in files
              if f.endswith((".c", ".h", ".map", ".py"))}
    assert needed and needed <= names, sorted(needed - names)
    assert {"setup.py", "pyproject.toml", "systemd/lsca-supervisor.service", "src/lsca/bench_loop.c"} <= names
    assert not any(name.startswith("src/lsca/") and "build_ffi" in name for name in names)
