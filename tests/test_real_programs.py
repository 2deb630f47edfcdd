"""Programs nobody here wrote give byte-identical output and the same exit status
under 'lsca run' as natively, and every call they make through libc of the ops each test
counts reaches a worker: as many as a native run under strace makes, or as their input says."""
import sys

import pytest

from conftest import native_calls, run_native, through_worker, through_workers


@pytest.fixture
def tree(tmp_path):
    """A small tree with a file larger than the inline limit."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "big.bin").write_bytes(bytes((i * 131) % 256 for i in range(300_000)))
    (src / "small.txt").write_text("hello\nworld\n")
    (src / "sub" / "empty").write_bytes(b"")
    return tmp_path


def both(lsca_run, cmd, cwd, ops, input=None):
    """The same output and status natively and under LSCA, and each of ops (calls the program
    makes itself, through libc) as many times through a worker as natively on cwd's files and
    the program's pipes."""
    native = run_native(cmd, cwd=cwd, input=input)
    proc, stats, _ = lsca_run(cmd, cwd=cwd, input=input)
    assert proc.returncode == native.returncode, proc.stderr.decode()
    assert proc.stdout == native.stdout
    assert proc.stderr == native.stderr
    assert ops and through_workers(stats, ops) == native_calls(cmd, ops, cwd, cwd=cwd, input=input), stats
    return native, proc, stats


@pytest.mark.parametrize("cmd, ops, opens", [
    (["cat", "src/big.bin", "src/small.txt"], ("read", "write", "close"), 2),
    (["cat", "src/missing"], ("close",), 1),           # exit status 1; its message goes through stdio
    # fopen and fread are glibc's internals: only gnulib's fclose (lseek) and the closes are seen.
    (["sha256sum", "src/big.bin", "src/small.txt"], ("lseek", "close"), 0),
    # Its imports open what this Python's installation holds: no count known for openat.
    (["python3", "-c", "import sys; print(sys.version); sys.exit(3)"], ("write",), None),
])
def test_program_output_matches_native(lsca_run, tree, cmd, ops, opens):
    native, proc, stats = both(lsca_run, cmd, tree, ops)
    if opens is not None:                               # each file named, unless opened by fopen
        assert stats["proxied"].get("openat", 0) == opens, stats


def test_cat_reads_stdin_through_worker(lsca_run, tree):
    data = (tree / "src" / "big.bin").read_bytes()
    native, proc, stats = both(lsca_run, ["cat"], tree, ("close",), input=data)
    assert proc.stdout == data
    # What a read takes from the pipe depends on the writer's pace, but never more than the
    # pipe holds (64 KiB: 16 pages of 4 KiB), then one read sees EOF; each read's bytes go
    # out in one write.
    reads = through_worker(stats, "read")
    assert reads >= -(-len(data) // 65536) + 1 and through_worker(stats, "write") == reads - 1, stats


def test_dd_copies_identically(lsca_run, tree):
    cmd = ["dd", "if=src/big.bin", "bs=4096", "status=none"]
    native, proc, stats = both(lsca_run, cmd + ["of=native.bin"], tree, ("read", "write"))
    proc, stats, _ = lsca_run(cmd + ["of=lsca.bin"], cwd=tree)
    assert (tree / "lsca.bin").read_bytes() == (tree / "native.bin").read_bytes() == (tree / "src/big.bin").read_bytes()
    # A regular file gives whole blocks, the last one short, then EOF: one write per block.
    blocks = -(-300_000 // 4096)
    assert through_workers(stats, ("openat", "read", "write")) == {"openat": 2, "read": blocks + 1, "write": blocks}


def test_cp_copies_identically(lsca_run, tree):
    ops = ("read", "write")                     # none where it copies with copy_file_range
    expected = native_calls(["cp", "src/big.bin", "traced.bin"], ops, tree, cwd=tree)
    proc, stats, _ = lsca_run(["cp", "src/big.bin", "copy.bin"], cwd=tree)
    assert proc.returncode == 0
    assert (tree / "copy.bin").read_bytes() == (tree / "src/big.bin").read_bytes()
    assert through_workers(stats, ops) == expected, stats
    assert stats["proxied"].get("openat") == 3, stats    # a look at the target, the source, the copy


def test_tar_archives_identically(lsca_run, tree):
    # Same member order and metadata: archive natively and under LSCA, byte-compare.
    cmd = ["tar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-cf"]
    ops = ("read", "write", "close")
    run_native(cmd + ["native.tar", "src"], cwd=tree)
    expected = native_calls(cmd + ["traced.tar", "src"], ops, tree, cwd=tree)
    proc, stats, _ = lsca_run(cmd + ["lsca.tar", "src"], cwd=tree)
    assert proc.returncode == 0, proc.stderr.decode()
    assert (tree / "lsca.tar").read_bytes() == (tree / "native.tar").read_bytes()
    assert through_workers(stats, ops) == expected, stats
    # The archive, the 2 directories, the 2 files with content (tar does not open an empty file
    # everybody may read).
    assert stats["proxied"].get("openat") == 5, stats
    out, traced = tree / "out", tree / "out-traced"
    out.mkdir()
    traced.mkdir()
    expected = native_calls(["tar", "-xf", "../lsca.tar"], ("read", "write"), tree, cwd=traced)
    proc, stats, _ = lsca_run(["tar", "-xf", "../lsca.tar"], cwd=out)
    assert proc.returncode == 0
    assert (out / "src/big.bin").read_bytes() == (tree / "src/big.bin").read_bytes()
    assert through_workers(stats, ("read", "write")) == expected, stats
    # The archive and the 3 files it holds; its 2 directories are made.
    assert (stats["proxied"].get("openat"), stats["proxied"].get("mkdirat")) == (4, 2), stats


def test_python_script_output_matches(lsca_run, tree):
    script = ("import hashlib, os\n"
              "data = open('src/big.bin', 'rb').read()\n"
              "with open('py.out', 'w') as f:\n"
              "    for i in range(200): f.write(f'{i} {hashlib.sha256(data[:i]).hexdigest()}\\n')\n"
              "print(hashlib.sha256(open('py.out','rb').read()).hexdigest(), os.path.getsize('py.out'))\n")
    native, proc, stats = both(lsca_run, [sys.executable, "-c", script], tree, ("write",))
    assert stats["proxied"]["write"] >= 2                  # at least one for py.out, one for the print


def test_fclose_then_reopen_writes_every_byte_to_its_file(lsca_run, c_program, tmp_path):
    proc, stats, _ = lsca_run([c_program("fclose_reopen"), str(tmp_path)])
    assert proc.returncode == 0, proc.stderr.decode()
    for i in range(40):
        expected = "".join(f"file {i} line {j}\n" for j in range(3))
        assert (tmp_path / f"file{i:02d}").read_text() == expected
        if i % 3 == 0:
            assert (tmp_path / f"extra{i:02d}").read_text() == "xxx"
    # 3 lines to each of the 40 files, 3 bytes to each of the 14 extra ones (i % 3 == 0). Its
    # fopens are glibc's internal opens (unseen); its fcloses are reported: the 20 files of an
    # even i (the others it closes with a raw syscall) and the 14 extra ones.
    assert through_workers(stats, ("write", "close")) == {"write": 40 * 3 + 14 * 3, "close": 20 + 14}, stats


def test_signal_handler_write_during_proxied_write(lsca_run, c_program, tmp_path):
    out = tmp_path / "out"
    proc, stats, _ = lsca_run([c_program("reentrant"), str(out)])
    assert proc.returncode == 0, proc.stderr.decode()
    main_writes, handler_writes = map(int, proc.stdout.split())
    content = out.read_bytes()
    assert main_writes == 20000
    assert content.count(b"m") == main_writes and content.count(b"H") == handler_writes
    # Every write of the main loop is a worker's; a handler's write is one too when the signal
    # came between two calls, and runs natively when it came inside one (the slot is busy):
    # where each signal lands is the timer's choice, but every write is counted one way or the other.
    assert main_writes <= stats["proxied"]["write"] <= main_writes + handler_writes, (stats, handler_writes)
    assert stats["proxied"]["write"] + stats["passthrough"].get("write", 0) == main_writes + handler_writes, \
        (stats, handler_writes)
