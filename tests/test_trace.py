"""The trace: exact lines for a fixed program, the JSON lines' schema, filters."""
import json
import subprocess
import sys
from importlib import resources

import jsonschema

from conftest import clean_env

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
    file_calls = ("openat", "newfstatat", "mkdirat", "renameat2", "symlinkat", "readlinkat", "unlinkat")
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
