"""Paths the agent will not carry (too long, NULL, faulting) still get the native
errno, and names that mean the calling process resolve to the program, not a worker."""
import sys

from conftest import parse_trace, run_native

PY = sys.executable

PROBE = r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(512)
out = {}
def call(name, fn):
    ctypes.set_errno(0)
    r = fn()
    out[name] = [r, ctypes.get_errno() if r == -1 else 0]
call("stat_too_long", lambda: libc.stat(b"a/" * 3000, buf))
call("open_too_long", lambda: libc.open(b"x" * 5000, 0))
call("stat_null", lambda: libc.stat(None, buf))
call("open_null", lambda: libc.open(None, 0))
call("mkdir_null", lambda: libc.mkdir(None, 0o755))
call("rename_null", lambda: libc.rename(b"a", None))
call("stat_fault", lambda: libc.stat(ctypes.c_char_p(16), buf))
call("stat_missing", lambda: libc.stat(b"/nonexistent/x", buf))
out["self_exe"] = os.readlink("/proc/self/exe")
out["self_pid"] = int(os.readlink("/proc/self")) == os.getpid()
out["stdin_is_null"] = os.stat("/dev/stdin").st_rdev == os.stat("/dev/null").st_rdev
with open("/proc/self/status") as f:
    out["status_pid"] = int(next(l for l in f if l.startswith("Pid:")).split()[1]) == os.getpid()
print(json.dumps(out, sort_keys=True))
"""


def test_unmarshallable_paths_get_native_errnos_and_self_names_mean_the_program(lsca_run):
    native = run_native([PY, "-c", PROBE], input=b"")
    proc, stats, lines = lsca_run([PY, "-c", PROBE], trace=True, input=b"")
    assert proc.returncode == native.returncode == 0, proc.stderr.decode()
    assert proc.stdout == native.stdout
    assert b'"stat_too_long": [-1, 36]' in proc.stdout          # ENAMETOOLONG
    assert b'"stat_null": [-1, 14]' in proc.stdout              # EFAULT
    assert b'"self_pid": true' in proc.stdout and b'"status_pid": true' in proc.stdout
    # The workers served the ordinary call and did not see the ones that ran natively.
    calls = parse_trace(lines)
    assert any(name == "newfstatat" and '"/nonexistent/x"' in args and "ENOENT" in res
               for _, name, args, res in calls)
    assert not any("/proc/self" in args for _, _, args, _ in calls)
    assert stats["passthrough"].get("fstatat", 0) >= 3 and stats["passthrough"].get("openat", 0) >= 2


def test_generic_syscall_entry_routes_proxied_numbers_to_workers(lsca_run, c_program, tmp_path):
    binary = c_program("raw_syscalls")
    (tmp_path / "native").mkdir()
    (tmp_path / "lsca").mkdir()
    native = run_native([binary], cwd=tmp_path / "native")
    proc, stats, lines = lsca_run([binary], cwd=tmp_path / "lsca", trace=True)
    assert proc.returncode == native.returncode == 0
    assert proc.stdout == native.stdout
    assert b"unlinkat missing = -1 errno=2" in proc.stdout and b"close again = -1 errno=9" in proc.stdout
    assert b"utimensat of the descriptor (NULL name) = 0" in proc.stdout
    names = [name for _, name, _, _ in parse_trace(lines)]
    for name in ("openat", "write", "lseek", "read", "fstat", "newfstatat", "mkdirat", "renameat2", "unlinkat"):
        assert name in names, name
    assert (tmp_path / "lsca" / "d" / "moved.txt").read_bytes() == b"raw syscall\n"


TRAILING_SLASH = """
mkdir -p d/sub d/sub2 && ln -s sub d/ln && ln -s sub2 d/ln2 && ln -s nowhere d/dang
rmdir d/ln/; echo "rmdir ln/: $?"
mv d/ln2/ d/moved; echo "mv ln2/: $?"
mkdir d/dang/; echo "mkdir dang/: $?"
rm d/ln/ 2>&1; echo "rm ln/: $?"
ls -F d
"""


def test_a_trailing_slash_never_reaches_a_links_target(lsca_run, tmp_path):
    """rmdir, mv, mkdir and rm of "link/": the kernel does not follow the last name of these calls
    (the slash only asks for a directory), so nothing happens to what the link names."""
    for where in ("native", "lsca"):
        (tmp_path / where).mkdir()
    native = run_native(["sh", "-c", TRAILING_SLASH], cwd=str(tmp_path / "native"))
    proc, stats, _ = lsca_run(["sh", "-c", TRAILING_SLASH], cwd=str(tmp_path / "lsca"))
    assert b"rmdir ln/: 1" in native.stdout and b"sub/" in native.stdout
    assert proc.stdout == native.stdout
    assert proc.stderr.replace(b"lsca", b"native") == native.stderr.replace(b"lsca", b"native")
    # A worker saw each of them and handed it back (the links themselves were made by workers).
    assert all(stats["declined"].get(op, 0) >= 1 for op in ("unlinkat", "renameat2", "mkdirat")), stats
    assert stats["proxied"].get("symlinkat", 0) == 3
