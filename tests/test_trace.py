"""The trace: exact lines for fixed programs, a line for every op of the table, the JSON
lines' schema, filters."""
import json
import re
import subprocess
import sys
from importlib import resources

import jsonschema
import pytest

from conftest import clean_env
from lsca import ops, trace
from lsca.abi import ffi, lib
from lsca.opclasses import CLASSES, syscall_name

PY = sys.executable

GOLDEN = [
    'openat(AT_FDCWD, "golden.txt", O_WRONLY|O_CREAT|O_TRUNC, 0644) = 3',
    'write(3, "hello\\n", 6) = 6',
    'write(3, "0123456789abcdefghijklmnopqrstuv"..., 36) = 36',
    'lseek(3, 0, SEEK_SET) = 0',
    'fstat(3, {st_mode=S_IFREG|0644, st_size=42, ...}) = 0',
    'close(3) = 0',
    'openat(AT_FDCWD, "golden.txt", O_RDONLY|O_CLOEXEC) = 3',
    'pread64(3, "hello", 5, 0) = 5',
    'close(3) = 0',
    'newfstatat(AT_FDCWD, "missing", 0x..., 0) = -1 ENOENT (No such file or directory)',
    'mkdirat(AT_FDCWD, "dir", 0755) = 0',
    'renameat2(AT_FDCWD, "golden.txt", AT_FDCWD, "dir/moved.txt", 0) = 0',
    'symlinkat("dir/moved.txt", AT_FDCWD, "link") = 0',
    'readlinkat(AT_FDCWD, "link", "dir/moved.txt", 64) = 13',
    'unlinkat(AT_FDCWD, "link", 0) = 0',
    'write(999, "x", 1) = -1 EBADF (Bad file descriptor)',
]
# socket_lines.c: a socketpair's sends run in the program (reported, with their first bytes;
# sendmsg's not), its receives in a worker; TCP's connect and accept wait in the program.
SOCKET_LINES = [
    'sendto(3, "abc", 3, MSG_DONTWAIT, NULL, 0) = 3',
    'recvfrom(4, "abc", 4096, 0, NULL, NULL) = 3',
    'sendmsg(3, {msg_name=NULL, msg_namelen=0, msg_iov=[{iov_base=..., iov_len=5}], ...}, 0) = 5',
    'recvmsg(4, {msg_name=NULL, msg_iov=[{iov_base="hello", iov_len=64}], ...}, 0) = 5',
    'shutdown(3, SHUT_WR) = 0',
    'recvfrom(4, "", 16, 0, NULL, NULL) = 0',
    'connect(6, {...}, 16) = 0',
    'accept4(5, NULL, NULL, SOCK_CLOEXEC) = 7',
    'sendto(6, "tcp", 3, 0, NULL, 0) = 3',
    'recvfrom(7, "tcp", 4096, 0, NULL, NULL) = 3',
    'dup3(3, 10, O_CLOEXEC) = 10',
    'fcntl(4, F_DUPFD_CLOEXEC, 20) = 20',
    'pipe2([8, 9], O_CLOEXEC) = 0',
]


def lsca_run(supervisor, cwd, *args):
    env = clean_env()
    env["LSCA_SOCKET"] = supervisor.socket
    return subprocess.run([PY, "-m", "lsca.cli", "run", *args], cwd=cwd, env=env, capture_output=True,
                          timeout=120)


def test_trace_lines_of_a_fixed_program(supervisor, tmp_path, c_program):
    golden = c_program("golden")
    proc = lsca_run(supervisor, tmp_path, "--trace", "-o", str(tmp_path / "t"), "--", golden)
    assert proc.returncode == 0, proc.stderr
    # The umask decides the mode of what the program creates: the lines expect 022.
    assert (tmp_path / "t").read_text().splitlines() == GOLDEN


def test_trace_lines_of_socket_calls_and_placed_descriptors(supervisor, tmp_path, c_program):
    proc = lsca_run(supervisor, tmp_path, "--trace", "--", c_program("socket_lines"))
    assert proc.returncode == 0 and proc.stderr.decode().splitlines() == SOCKET_LINES, proc.stderr.decode()


def _record(line, fd, paths, result, new_fds):
    """A trace stream message of one call of op line as a worker records it: args[0] is its
    descriptor (or dirfd), its paths where the table puts them, its data not carried."""
    r = ffi.new("struct lsca_trace_record *")
    r.magic, r.op, r.result, r.data_len = lib.LSCA_TRACE_MAGIC, line.code, result, lib.LSCA_TRACE_NO_DATA
    r.args[0] = fd
    if line.has(lib.LSCA_OPF_NEW_FDS_BY_CMD):
        r.args[1] = ops.F_DUPFD_CLOEXEC                 # the command that creates one
    if line.has(lib.LSCA_OPF_TIMES_FIRST):
        r.args[3] = 1                                   # its path is there
    r.new_fds[0], r.new_fds[1] = new_fds
    payload = b"".join(p + b"\0" for p in paths)
    r.path_len = len(payload)
    r.size = ffi.sizeof(r[0]) + len(payload)
    return bytes(ffi.buffer(r)) + payload


@pytest.mark.parametrize("code", sorted(ops.BY_CODE), ids=lambda c: ops.BY_CODE[c].name)
def test_every_op_of_the_table_has_a_line_of_its_own(code):
    """Its strace name, its descriptor, each of its paths and the number it made: no op falls
    through to a line of raw numbers."""
    line = ops.BY_CODE[code]
    name = syscall_name(line.name)
    paths = [f"/t/{line.name}/{i}".encode() for i in range(line.npaths)]
    creates = ops.creates_fds(code, ops.F_DUPFD_CLOEXEC)
    # The program's result: the number it got (pipe2 returns 0, its numbers are its array).
    result = 0 if line.name == "pipe2" or not creates else 11
    (call,) = trace.decode(_record(line, 7, paths, result, (11, 12) if creates else (0, 0)))
    text = trace.format_call(call)
    assert text.startswith(name + "(") and text.endswith(f" = {result}"), text
    for p in paths:
        assert trace.quote(p) in text, (p, text)
    if code in ops.FD_ARG:
        assert re.match(rf"{name}\(7[,)]", text), text
    if creates:
        assert text.endswith(" = 11") or "[11, 12]" in text, text
    record = json.loads(trace.format_json(call))
    assert record["syscall"] == name and record["paths"] == [p.decode() for p in paths]
    assert line.name in trace.LINES, f"{line.name} has no line of its own: {text}"


def test_lines_are_for_ops_of_the_table_only():
    assert set(trace.LINES) == set(ops.BY_NAME)


def test_trace_to_stderr_is_the_same_lines(supervisor, tmp_path, c_program):
    proc = lsca_run(supervisor, tmp_path, "--trace", "--", c_program("golden"))
    assert proc.returncode == 0 and proc.stderr.decode().splitlines() == GOLDEN


def test_json_lines_follow_the_schema(supervisor, tmp_path, c_program):
    schema = json.loads(resources.files("lsca").joinpath("trace.schema.json").read_text())
    proc = lsca_run(supervisor, tmp_path, "--json", "-o", str(tmp_path / "t.jsonl"), "--", c_program("golden"))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    for record in records:
        jsonschema.validate(record, schema)
    assert [r["call"] + " = " + (str(r["result"]) if r["errno"] is None else f'-1 {r["errno"]}')
            for r in records][-1] == 'write(999, "x", 1) = -1 EBADF'
    assert {r["program"] for r in records} == {"golden"}
    assert records[0]["paths"] == ["golden.txt"] and records[0]["op"] == "openat"
    assert len({r["pid"] for r in records}) == 1 and all(r["latency_us"] >= 0 for r in records)
    assert [r["call"] for r in records] == [line.rpartition(" = ")[0] for line in GOLDEN]


def test_filter_by_class_and_call(supervisor, tmp_path, c_program):
    golden = c_program("golden")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    proc = lsca_run(supervisor, tmp_path / "a", "--trace=%file", "--", golden)
    assert proc.returncode == 0
    file_calls = {syscall_name(name) for name in CLASSES["file"]}
    assert proc.stderr.decode().splitlines() == [line for line in GOLDEN if line.split("(")[0] in file_calls]

    proc = lsca_run(supervisor, tmp_path / "b", "-e", "trace=!write,lseek", "--", golden)
    assert proc.returncode == 0
    assert proc.stderr.decode().splitlines() == [line for line in GOLDEN if not line.startswith(("write(", "lseek("))]


def test_filter_by_strace_names(supervisor, tmp_path, c_program):
    proc = lsca_run(supervisor, tmp_path, "-e", "trace=pread64,stat", "--", c_program("golden"))
    assert proc.stderr.decode().splitlines() == [GOLDEN[7], GOLDEN[9]]


def test_unknown_call_in_a_filter_is_one_line(supervisor, tmp_path):
    proc = lsca_run(supervisor, tmp_path, "--trace=bogus", "--", "true")
    assert proc.returncode == 2
    err = [line for line in proc.stderr.decode().strip().splitlines() if not line.startswith("usage")]
    assert len(err) == 1 and err[0].startswith("lsca: error: run: -e trace=bogus: unknown call or class 'bogus'")


def test_trace_option_does_not_touch_the_commands_arguments(supervisor, tmp_path):
    proc = lsca_run(supervisor, tmp_path, "--", "echo", "--trace=x")
    assert proc.returncode == 0 and proc.stdout == b"--trace=x\n"
    proc = lsca_run(supervisor, tmp_path, "echo", "--trace=y")
    assert proc.returncode == 0 and proc.stdout == b"--trace=y\n"
