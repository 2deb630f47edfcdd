"""The compiled route of path calls (worker_path.c: stat, statx, open, access, mkdir, unlink,
utimensat, fchmod, fchown) reads the calling thread's credentials for every call: a program that
drops privileges by any means, here a raw system call no wrapper sees, gets the native EACCES
(or success, where the kernel still says yes) from its very next call, and the calls went
through a worker."""
import os

import pytest

from conftest import run_native

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the program drops root's privileges")


@pytest.mark.parametrize("how", ["setresuid", "setfsuid", "capdrop"])
def test_privileges_dropped_by_a_raw_call_hold_from_the_next_path_call(lsca_run, c_program, tmp_path, how):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    (locked / "f").write_text("x")
    os.chown(locked, 4242, 4242)                # not ours, not nobody's: only root's capabilities open it
    target = str(locked / "f")
    binary = c_program("drop_then_stat")
    native = run_native([binary, how, target])
    (locked / "made-before").rmdir()            # the same start for the run under LSCA
    proc, stats, _ = lsca_run([binary, how, target])
    denied = "-1 errno=Permission denied"
    # access(2) checks with the real uid: setfsuid keeps root's (0) and its permitted capabilities.
    access_after = "0 errno=0" if how == "setfsuid" else denied
    missing_after = "-1 errno=No such file or directory" if how == "setfsuid" else denied
    # The descriptor's file is root's: its owner (uid 0, even without capabilities) may change it.
    owner = "0 errno=0" if how == "capdrop" else "-1 errno=Operation not permitted"
    futimens = "0 errno=0" if how == "capdrop" else denied
    chown_after = owner                         # to its own owner: no change the owner may not make
    assert native.stdout.decode() == (
        "before: stat=0 errno=0\nbefore: statx=0 errno=0\nbefore: open=ok errno=0\nbefore: access=0 errno=0\nbefore: eaccess=0 errno=0\n"
        "before: mkdir=0 errno=0\nbefore: unlink=-1 errno=No such file or directory\n"
        "before: access in a missing dir=-1 errno=No such file or directory\nbefore: utimensat=0 errno=0\n"
        "before: dirfd stat=0 errno=0\nbefore: fchmod=0 errno=0\nbefore: futimens=0 errno=0\nbefore: fchown=0 errno=0\n"
        f"after: stat={denied}\nafter: statx={denied}\nafter: open={denied}\nafter: access={access_after}\nafter: eaccess={denied}\n"
        f"after: mkdir={denied}\nafter: unlink={denied}\n"
        f"after: access in a missing dir={missing_after}\nafter: utimensat={denied}\n"
        f"after: dirfd stat={denied}\nafter: fchmod={owner}\nafter: futimens={futimens}\nafter: fchown={chown_after}\n")
    assert proc.stdout == native.stdout, proc.stderr
    # All went to a worker: answered by it, or (root without the filesystem capabilities that
    # setfsuid would give it, which no worker can take exactly) handed back and run natively.
    # Each is made once before the drop and once after (opens: 3 at the start, 1 in each turn).
    for op, calls in (("fstatat", 4), ("openat", 3 + 2), ("faccessat", 6), ("mkdirat", 2), ("unlinkat", 2),
                      ("utimensat", 4), ("fchmod", 2), ("fchown", 2), ("statx", 2)):
        assert stats["proxied"].get(op, 0) >= 1
        assert stats["proxied"].get(op, 0) + stats["declined"].get(op, 0) == calls, (op, stats)


def test_names_the_kernel_answers_before_or_beside_the_route(lsca_run, c_program, tmp_path):
    """Both times UTIME_OMIT: 0 whatever the name (the kernel looks at none). A magic link on the
    way (/./proc/self/cwd/...): the program's own call follows it, as natively."""
    binary = c_program("utime_omit")
    missing = str(tmp_path / "no" / "such")
    native = run_native([binary, missing])
    proc, stats, _ = lsca_run([binary, missing])
    assert native.stdout == b"omit: 0 ok\nnow: -1 No such file or directory\n"
    assert proc.stdout == native.stdout
    assert stats["proxied"].get("utimensat", 0) == 2
    (tmp_path / "f").write_text("12345")
    magic = ["stat", "-c", "%s", "/./proc/self/cwd/f"]
    native = run_native(magic, cwd=str(tmp_path))
    proc, stats, _ = lsca_run(magic, cwd=str(tmp_path))
    assert native.stdout == b"5\n" and proc.stdout == native.stdout, proc.stderr
    assert stats["declined"].get("statx", 0) >= 1, stats       # a worker saw it and handed it back
