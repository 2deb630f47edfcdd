"""Programs nobody here wrote give byte-identical output and the same exit status
under 'lsca run' as natively, with a non-zero count of proxied calls."""
import sys

import pytest

from conftest import run_native


@pytest.fixture
def tree(tmp_path):
    """A small tree with a file larger than the inline limit."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "big.bin").write_bytes(bytes((i * 131) % 256 for i in range(300_000)))
    (src / "small.txt").write_text("hello\nworld\n")
    (src / "sub" / "empty").write_bytes(b"")
    return tmp_path


def both(lsca_run, cmd, cwd, input=None):
    native = run_native(cmd, cwd=cwd, input=input)
    proc, stats, _ = lsca_run(cmd, cwd=cwd, input=input)
    assert proc.returncode == native.returncode, proc.stderr.decode()
    assert proc.stdout == native.stdout
    assert proc.stderr == native.stderr
    assert sum(stats["proxied"].values()) > 0, stats
    return native, proc, stats


@pytest.mark.parametrize("cmd", [
    ["cat", "src/big.bin", "src/small.txt"],
    ["cat", "src/missing"],                          # exit status 1 and its message
    ["sha256sum", "src/big.bin", "src/small.txt"],
    ["python3", "-c", "import sys; print(sys.version); sys.exit(3)"],
])
def test_program_output_matches_native(lsca_run, tree, cmd):
    both(lsca_run, cmd, tree)


def test_cat_reads_stdin_through_worker(lsca_run, tree):
    data = (tree / "src" / "big.bin").read_bytes()
    native, proc, stats = both(lsca_run, ["cat"], tree, input=data)
    assert proc.stdout == data
    assert stats["proxied"].get("read", 0) > 0


def test_dd_copies_identically(lsca_run, tree):
    cmd = ["dd", "if=src/big.bin", "bs=4096", "status=none"]
    native, proc, stats = both(lsca_run, cmd + ["of=native.bin"], tree)
    proc, stats, _ = lsca_run(cmd + ["of=lsca.bin"], cwd=tree)
    assert (tree / "lsca.bin").read_bytes() == (tree / "native.bin").read_bytes() == (tree / "src/big.bin").read_bytes()
    assert stats["proxied"]["read"] >= 300_000 // 4096 and stats["proxied"]["write"] >= 300_000 // 4096


def test_cp_copies_identically(lsca_run, tree):
    proc, stats, _ = lsca_run(["cp", "src/big.bin", "copy.bin"], cwd=tree)
    assert proc.returncode == 0
    assert (tree / "copy.bin").read_bytes() == (tree / "src/big.bin").read_bytes()
    assert sum(stats["proxied"].values()) > 0


def test_tar_archives_identically(lsca_run, tree):
    # Same member order and metadata: archive natively and under LSCA, byte-compare.
    cmd = ["tar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-cf"]
    run_native(cmd + ["native.tar", "src"], cwd=tree)
    proc, stats, _ = lsca_run(cmd + ["lsca.tar", "src"], cwd=tree)
    assert proc.returncode == 0, proc.stderr.decode()
    assert (tree / "lsca.tar").read_bytes() == (tree / "native.tar").read_bytes()
    assert stats["proxied"]["write"] > 0 and stats["proxied"]["read"] > 0
    out = tree / "out"
    out.mkdir()
    proc, stats, _ = lsca_run(["tar", "-xf", "../lsca.tar"], cwd=out)
    assert proc.returncode == 0
    assert (out / "src/big.bin").read_bytes() == (tree / "src/big.bin").read_bytes()
    assert stats["proxied"]["read"] > 0


def test_python_script_output_matches(lsca_run, tree):
    script = ("import hashlib, os\n"
              "data = open('src/big.bin', 'rb').read()\n"
              "with open('py.out', 'w') as f:\n"
              "    for i in range(200): f.write(f'{i} {hashlib.sha256(data[:i]).hexdigest()}\\n')\n"
              "print(hashlib.sha256(open('py.out','rb').read()).hexdigest(), os.path.getsize('py.out'))\n")
    native, proc, stats = both(lsca_run, [sys.executable, "-c", script], tree)
    assert stats["proxied"]["write"] > 0


def test_fclose_then_reopen_writes_every_byte_to_its_file(lsca_run, c_program, tmp_path):
    proc, stats, _ = lsca_run([c_program("fclose_reopen"), str(tmp_path)])
    assert proc.returncode == 0, proc.stderr.decode()
    for i in range(40):
        expected = "".join(f"file {i} line {j}\n" for j in range(3))
        assert (tmp_path / f"file{i:02d}").read_text() == expected
        if i % 3 == 0:
            assert (tmp_path / f"extra{i:02d}").read_text() == "xxx"
    assert stats["proxied"]["write"] >= 40 * 3


def test_signal_handler_write_during_proxied_write(lsca_run, c_program, tmp_path):
    out = tmp_path / "out"
    proc, stats, _ = lsca_run([c_program("reentrant"), str(out)])
    assert proc.returncode == 0, proc.stderr.decode()
    main_writes, handler_writes = map(int, proc.stdout.split())
    content = out.read_bytes()
    assert main_writes == 20000
    assert content.count(b"m") == main_writes and content.count(b"H") == handler_writes
    assert stats["proxied"]["write"] >= main_writes
