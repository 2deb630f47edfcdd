"""A program's bad pointers and SIGPIPE under LSCA: the same results as natively.

A buffer, path, iovec array, out-struct or socket address the kernel cannot follow gives
the native EFAULT (or partial count) and never a fault inside the program, with or without
a SIGSEGV handler; a write to a pipe or socket without reader delivers SIGPIPE to the
writing thread as the kernel does (default: death, handler: before the call returns,
ignored: EPIPE only, blocked: pending)."""
import signal
import sys

import pytest

from conftest import run_native, through_worker, through_workers

PY = sys.executable


@pytest.mark.parametrize("mode", ["plain", "handler"])
def test_bad_pointers_get_the_native_answer_without_faulting(lsca_run, c_program, tmp_path, mode):
    binary = c_program("bad_pointers")
    (tmp_path / "native").mkdir()
    (tmp_path / "lsca").mkdir()
    native = run_native(["env", f"TMPDIR={tmp_path / 'native'}", binary, mode])
    proc, stats, _ = lsca_run(["env", f"TMPDIR={tmp_path / 'lsca'}", binary, mode])
    assert native.returncode == 0, native.stderr.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == native.stdout
    assert b"faults 0\n" in proc.stdout
    assert b"write edge             r=100 errno=0" in proc.stdout      # a partial count, as natively
    assert b"read edge              r=5 errno=0" in proc.stdout
    assert b"stat path edge         r=-1 errno=14" in proc.stdout
    # Every call with good memory went through a worker: the writes that fill the scratch files
    # and a pipe (3) and the "good:" ones (3); the reads of what a pipe or socket has left (3)
    # and "good: read"; "good: pread heap"; the two "good: stat". The bad ones ran natively
    # (counted).
    assert through_workers(stats, ("write", "read", "pread")) == {"write": 6, "read": 4, "pread": 1}, stats
    assert stats["proxied"].get("fstatat", 0) == 2, stats
    for op in ("write", "writev", "read", "readv", "fstatat", "readlinkat", "recvmsg", "sendmsg"):
        assert stats["passthrough"].get(op, 0) >= 1, op


def outcome(proc):
    return proc.returncode, proc.stdout


@pytest.mark.parametrize("mode", ["write", "writev", "send", "sendto", "sendmsg"])
def test_writer_without_reader_dies_of_sigpipe(lsca_run, c_program, mode):
    binary = c_program("sigpipe_writer")
    native = run_native([binary, mode])
    proc, stats, _ = lsca_run([binary, mode])
    assert native.returncode == -signal.SIGPIPE
    assert outcome(proc) == outcome(native), proc.stderr.decode()
    op = {"send": "sendto"}.get(mode, mode)
    assert through_worker(stats, op) == 1                   # its one write, the fatal one


@pytest.mark.parametrize("mode", ["handler", "ignored", "blocked", "nosignal", "dgram", "thread"])
def test_sigpipe_disposition_mask_and_thread_are_native(lsca_run, c_program, mode):
    binary = c_program("sigpipe_writer")
    native = run_native([binary, mode])
    proc, stats, _ = lsca_run([binary, mode])
    assert native.returncode == 0 and native.stdout.endswith(b"end\n")
    assert outcome(proc) == outcome(native), proc.stderr.decode()
    # One write or send each; the handler mode makes both.
    assert sum(through_worker(stats, op) for op in ("write", "sendto")) == (2 if mode == "handler" else 1), stats


SHELL = 'yes | head -1; echo "status ${PIPESTATUS[*]}"'


def test_yes_into_head_in_a_shell_pipeline(lsca_run):
    native = run_native(["bash", "-c", SHELL])
    proc, stats, _ = lsca_run(["bash", "-c", SHELL])
    assert native.stdout == b"y\nstatus 141 0\n"
    assert proc.stdout == native.stdout and proc.returncode == native.returncode
    assert b"Broken pipe" not in proc.stderr
    # yes's 8 KiB writes may wait for head: a worker tried each and handed it back (then its
    # SIGPIPE is the kernel's own, as natively). How many head's exit leaves room for is its
    # timing; at least the one head read and the one that met no reader (status 141). head
    # and bash write through stdio (unseen).
    assert through_worker(stats, "write") >= 2, stats


CLOSED_READER = r"""
import subprocess
p = subprocess.Popen(["yes"], stdout=subprocess.PIPE)
print(p.stdout.readline().decode().strip())
p.stdout.close()
print("yes ended by", p.wait())
"""


def test_python_subprocess_with_closed_reader(lsca_run):
    native = run_native([PY, "-c", CLOSED_READER])
    proc, stats, _ = lsca_run([PY, "-c", CLOSED_READER])
    assert native.stdout == b"y\nyes ended by -13\n"
    assert outcome(proc) == outcome(native), proc.stderr.decode()
    assert through_worker(stats, "write") >= 2, stats      # yes's: the line read, the one that met no reader
