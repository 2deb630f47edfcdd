"""A worker holds nothing of a client's between calls that the client could observe: after
relative-path calls inside a mounted filesystem, and after every way a program lets go of a
file a worker had in hand (close, fclose, freopen, closedir, dup2 over it, close_range, a raw
close), that
filesystem unmounts at once, as natively; a removed cwd is referenced by no worker (neither
as its cwd nor by a descriptor). The same program runs natively and under LSCA."""
import os
import subprocess

import pytest

from conftest import clean_env, running_supervisor, workers_of, asleep_on_doorbell, wait_until


pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root")


@pytest.fixture(scope="module")
def slow_to_idle():
    """A supervisor whose one worker spins 0.2 s after each call before it idles (and lets go of
    the descriptors it cached): whatever it still holds after a call shows."""
    with running_supervisor(workers=1, extra=["--worker-spin-us", "200000"]) as sup:
        yield sup


def run_under(sup, cmd, **kwargs):
    env = sup.client_env(LSCA_REQUIRED="1")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def proxied(sup):
    """Calls the workers answered, per op, for clients that exited and clients that run."""
    stats = sup.stats()
    counts = dict(stats["exited"]["proxied"])
    for client in stats["clients"]:
        for op, n in client["proxied"].items():
            counts[op] = counts.get(op, 0) + n
    return counts


def native_or_skip(binary, where):
    native = subprocess.run([binary, str(where)], env=clean_env(), capture_output=True, timeout=60)
    if native.returncode == 2 and b"mount" in native.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {native.stderr.decode().strip()}")
    return native


def test_a_mount_the_program_used_and_let_go_of_unmounts_at_once(slow_to_idle, c_program, tmp_path):
    binary = c_program("cwd_mounts")
    (tmp_path / "native").mkdir()
    (tmp_path / "lsca").mkdir()
    native = native_or_skip(binary, tmp_path / "native")
    before = proxied(slow_to_idle)
    proc = run_under(slow_to_idle, [binary, str(tmp_path / "lsca")])
    out, err = proc.communicate(timeout=60)
    after = proxied(slow_to_idle)
    # The relative calls inside the mount and the closes went through the worker (not native),
    # each of them (cwd_mounts.c): stats of ".", f, sub, the directory's descriptor, then in the
    # removed cwd of sub and "."; opens of f, the 6 touched files, /dev/null, then f and g; mkdirs
    # of mnt, sub, gone, its sub, h; unlinks and rmdirs of f, sub, mnt, then f, sub and gone.
    made = {op: after.get(op, 0) - before.get(op, 0) for op in ("fstatat", "openat", "mkdirat", "unlinkat")}
    assert made == {"fstatat": 6, "openat": 10, "mkdirat": 5, "unlinkat": 6}, (before, after)
    assert after.get("close", 0) > before.get("close", 0), (before, after)
    assert proc.returncode == native.returncode == 0, err.decode()
    assert out == native.stdout
    for how in (b"relative calls inside it", b"close", b"fclose", b"freopen", b"closedir", b"dup2 over it",
                b"close_range", b"syscall(SYS_close)"):
        assert b"umount after " + how + b": 0\n" in out
    assert b"gone: open g: -1 ENOENT" in out          # a removed cwd, as natively


def worker_references(worker, under):
    """What of `under` the worker holds: its cwd, or descriptors of files there."""
    held = []
    cwd = os.readlink(f"/proc/{worker}/cwd")
    if cwd.startswith(under):
        held.append(f"cwd {cwd}")
    for fd in os.listdir(f"/proc/{worker}/fd"):
        try:
            target = os.readlink(f"/proc/{worker}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith(under):
            held.append(f"fd {fd} -> {target}")
    return held


def test_no_worker_references_a_removed_cwd_after_the_calls_made_in_it(slow_to_idle, c_program, tmp_path):
    binary = c_program("cwd_mounts")
    proc = run_under(slow_to_idle, [binary, str(tmp_path), "wait"], stdin=subprocess.PIPE)
    try:
        lines = []
        while (line := proc.stdout.readline()) not in (b"ready\n", b""):
            lines.append(line)
        assert line == b"ready\n", proc.stderr.read().decode()
        assert b"gone: rmdir cwd: 0\n" in lines and b"gone: fstat f: 0\n" in lines
        mine = next(c for c in slow_to_idle.stats()["clients"] if c["pid"] == proc.pid)
        # Its opens (f, the 6 touched files, /dev/null, then f and g) and fstats (each touched
        # file, then f) were the worker's, each of them.
        assert (mine["proxied"].get("openat"), mine["proxied"].get("fstat")) == (10, 7), mine
        (worker,) = workers_of(slow_to_idle)
        gone = str(tmp_path / "gone")
        # Right after the calls (the worker still spinning, its cache as the calls left it)...
        assert worker_references(worker, gone) == []
        # ...and once it has gone idle.
        assert wait_until(lambda: asleep_on_doorbell(worker))
        assert worker_references(worker, gone) == []
        assert os.readlink(f"/proc/{worker}/cwd") == "/"
        proc.stdin.write(b"done\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
