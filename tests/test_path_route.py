"""The compiled route of path calls (worker_path.c: stat, open) reads the calling thread's credentials for
every call: a program that drops privileges by any means, here a raw system call no wrapper
sees, gets the native EACCES from its very next call, and the calls went through a worker."""
import os

import pytest

from conftest import run_native

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the program drops root's privileges")


@pytest.mark.parametrize("how", ["setresuid", "setfsuid", "capdrop"])
def test_privileges_dropped_by_a_raw_call_hold_from_the_next_stat_and_open(lsca_run, c_program, tmp_path, how):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    (locked / "f").write_text("x")
    os.chown(locked, 4242, 4242)                # not ours, not nobody's: only root's capabilities open it
    target = str(locked / "f")
    binary = c_program("drop_then_stat")
    native = run_native([binary, how, target])
    proc, stats, _ = lsca_run([binary, how, target])
    assert native.stdout == (b"before: stat=0 errno=0\nbefore: open=ok errno=0\n"
                             b"after: stat=-1 errno=Permission denied\nafter: open=-1 errno=Permission denied\n")
    assert proc.stdout == native.stdout, proc.stderr
    # Both went to a worker: answered by it, or (root without the filesystem capabilities that
    # setfsuid would give it, which no worker can take exactly) handed back and run natively.
    for op in ("fstatat", "openat"):
        assert stats["proxied"].get(op, 0) >= 1
        assert stats["proxied"].get(op, 0) + stats["declined"].get(op, 0) >= 2
