"""Differential tests for path calls and descriptor-creating calls: random sequences of
them, mixed with I/O calls, in a scratch tree (symlinks, nested dirs, permission bits,
renames over existing names, chdir and dirfd-relative names) natively and under LSCA
must give the same results, errno values, descriptor numbers, cwd and final tree, and
every call of the sequence must have been executed by a worker (seen in the trace,
in order) or, for the few that run natively by design, counted as passthrough.
Each sequence runs as the caller (root in CI: mode 000 means nothing to it) and, when the
caller is root, also as nobody against a root supervisor, where the permission bits and
ownership decide (EACCES, EPERM) and a root worker takes nobody's identity."""
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import (PROGRAMS, SupervisorProcess, clean_env, parse_trace, public_agent, run_in_traced_session,
                      run_native)
from test_differential_io import between_markers

PATH_OPS = os.path.join(PROGRAMS, "path_ops.py")

# Names relative to the cwd; "@" is the absolute path of the tree's root. No "..":
# nothing outside the tree can be named (see path_ops.py).
PATHS = ["f0", "f1", "f3", "locked", "a", "a/b", "a/b/c", "a/f2", "a/b/new", "d1", "a/b/c/d1",
         "l_file", "l_dangling", "l_dir", "l_dir/f2", "l_dir/x", "l_new", "ro", "ro/inner", "ro/new",
         "nope/x", "f0/x", "", ".", "@/f0", "@/a/b", "@/l_dir/f2", "@/nope", "d (deleted)"]
TARGETS = ["f0", "a", "a/b", "nope", "l_dir", "l_file", "l_new", "f0/x", ".", "", "@/f0", "@/a"]
CHDIRS = ["a", "a/b", "a/b/c", "l_dir", "l_dangling", "ro", "d1", "..", ".", "f0", "nope", "", "@", "@/a/b",
          "d (deleted)"]
FLAGS = [os.O_RDONLY, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, os.O_RDWR | os.O_CREAT | os.O_EXCL,
         os.O_WRONLY | os.O_APPEND, os.O_RDWR | os.O_APPEND | os.O_CREAT, os.O_RDONLY | os.O_DIRECTORY,
         os.O_RDONLY | os.O_NOFOLLOW, os.O_RDWR, os.O_WRONLY | os.O_CLOEXEC, os.O_PATH | os.O_NOFOLLOW,
         os.O_PATH | os.O_DIRECTORY, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, os.O_WRONLY | os.O_TRUNC,
         os.O_CREAT | os.O_DIRECTORY, os.O_TMPFILE | os.O_RDWR]
MODES = [0o644, 0o600, 0o755, 0o000, 0o4755, 0o1777]
# Trace names of the calls each op makes through a worker (chdir/fchdir add theirs below).
TRACE_NAMES = {"open": "openat", "close": "close", "dup": "fcntl", "dup2": "dup3", "pipe": "pipe2",
               "write": "write", "read": "read", "lseek": "lseek", "fstat": "fstat", "fchmod": "fchmod",
               "stat": "newfstatat", "access": "faccessat2", "mkdir": "mkdirat", "rmdir": "unlinkat",
               "unlink": "unlinkat", "rename": "renameat2", "replace": "renameat2", "link": "linkat",
               "symlink": "symlinkat", "readlink": "readlinkat", "chmod": "fchmodat", "chown": "fchownat",
               "truncate": "truncate", "utime": "utimensat", "getcwd": "getcwd"}

path = st.sampled_from(PATHS)
fd = st.integers(-1, 6)                      # an index in the program's list of descriptors
dir_fd = st.one_of(st.none(), fd)            # None: relative to the cwd
mode = st.sampled_from(MODES)


def fixed(name, **fields):
    return st.fixed_dictionaries({"op": st.just(name), **fields})


op = st.one_of(
    fixed("open", path=path, flags=st.sampled_from(FLAGS), mode=mode, dir=dir_fd),
    fixed("open", path=path, flags=st.sampled_from(FLAGS), mode=mode, dir=dir_fd),
    fixed("close", fd=fd),
    fixed("dup", fd=fd),
    fixed("dup2", fd=fd, to=st.integers(10, 12), inheritable=st.booleans()),
    fixed("pipe"),
    fixed("write", fd=fd, data=st.binary(max_size=40).map(bytes.hex)),
    fixed("read", fd=fd, size=st.integers(0, 100)),
    fixed("lseek", fd=fd, offset=st.integers(-5, 60), whence=st.sampled_from([0, 1, 2])),
    fixed("fstat", fd=fd),
    fixed("fchmod", fd=fd, mode=mode),
    fixed("stat", path=path, follow=st.booleans(), dir=dir_fd),
    fixed("access", path=path, mode=st.sampled_from([os.F_OK, os.R_OK, os.W_OK, os.X_OK, os.R_OK | os.W_OK]),
          dir=dir_fd),
    fixed("mkdir", path=path, mode=st.sampled_from([0o755, 0o700, 0o500, 0o000]), dir=dir_fd),
    fixed("rmdir", path=path, dir=dir_fd),
    fixed("unlink", path=path, dir=dir_fd),
    fixed("rename", src=path, dst=path, dir=dir_fd),
    fixed("replace", src=path, dst=path, dir=dir_fd),
    fixed("link", src=path, dst=path, follow=st.booleans(), dir=dir_fd),
    fixed("symlink", target=st.sampled_from(TARGETS), path=path, dir=dir_fd),
    fixed("readlink", path=path, dir=dir_fd),
    fixed("chmod", path=path, mode=mode, dir=dir_fd),
    fixed("chown", path=path, uid=st.sampled_from([-1, 0, 1234]), gid=st.sampled_from([-1, 0, 4321]),
          follow=st.booleans(), dir=dir_fd),
    fixed("truncate", path=path, length=st.integers(-1, 50)),
    fixed("utime", path=path, times=st.integers(0, 3), follow=st.booleans(), dir=dir_fd),
    fixed("chdir", path=st.sampled_from(CHDIRS)),
    fixed("fchdir", fd=fd),
    fixed("getcwd"),
    fixed("umask", mask=st.sampled_from([0o022, 0o077, 0o002, 0o000])),
)

SETTINGS = settings(max_examples=int(os.environ.get("LSCA_DIFF_EXAMPLES", "25")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])

# Hand-picked sequences, so every run covers the cases the issue names.
RENAMES_OVER_EXISTING = [
    {"op": "rename", "src": "f1", "dst": "f0", "dir": None},                 # file over file
    {"op": "replace", "src": "a/b/c", "dst": "d1", "dir": None},            # dir to a new name
    {"op": "rename", "src": "ro", "dst": "a", "dir": None},                  # dir over non-empty dir
    {"op": "rename", "src": "a", "dst": "a/b/x", "dir": None},               # into itself
    {"op": "rename", "src": "d1", "dst": "f0", "dir": None},                 # dir over file
    {"op": "rename", "src": "f0", "dst": "a", "dir": None},                  # file over dir
    {"op": "link", "src": "l_file", "dst": "f3", "follow": True, "dir": None},
    {"op": "link", "src": "l_file", "dst": "l_new", "follow": False, "dir": None},
    {"op": "symlink", "target": "@/a", "path": "l_dir/abs", "dir": None},
    {"op": "readlink", "path": "a/abs", "dir": None},
    {"op": "stat", "path": "l_dangling", "follow": True, "dir": None},
    {"op": "stat", "path": "l_dangling", "follow": False, "dir": None},
    {"op": "open", "path": "l_dangling", "flags": os.O_WRONLY | os.O_CREAT, "mode": 0o600, "dir": None},
    {"op": "open", "path": "l_file", "flags": os.O_RDONLY | os.O_NOFOLLOW, "mode": 0, "dir": None},
    {"op": "chmod", "path": "locked", "mode": 0o4711, "dir": None},
    {"op": "access", "path": "locked", "mode": os.X_OK, "dir": None},
    {"op": "access", "path": "f1", "mode": os.X_OK, "dir": None},
    {"op": "utime", "path": "a/b", "times": 1, "follow": True, "dir": None},
    {"op": "truncate", "path": "l_file", "length": 7},
    {"op": "unlink", "path": "a", "dir": None},
    {"op": "rmdir", "path": "ro", "dir": None},
]
CWD_AND_DIRFDS = [
    {"op": "umask", "mask": 0o077},
    {"op": "open", "path": "a", "flags": os.O_RDONLY | os.O_DIRECTORY, "mode": 0, "dir": None},
    {"op": "chdir", "path": "a/b"},
    {"op": "open", "path": "new", "flags": os.O_RDWR | os.O_CREAT | os.O_EXCL, "mode": 0o666, "dir": None},
    {"op": "write", "fd": 1, "data": b"hello".hex()},
    {"op": "lseek", "fd": 1, "offset": 1, "whence": 0},
    {"op": "read", "fd": 1, "size": 10},
    {"op": "stat", "path": "f2", "follow": True, "dir": 0},
    {"op": "open", "path": "b/new", "flags": os.O_RDONLY, "mode": 0, "dir": 0},
    {"op": "dup2", "fd": 2, "to": 10, "inheritable": True},
    {"op": "dup2", "fd": 3, "to": 10, "inheritable": True},                  # same number: natively
    {"op": "dup2", "fd": 3, "to": 10, "inheritable": False},                 # dup3(10, 10): EINVAL
    {"op": "dup", "fd": 0},
    {"op": "pipe"},
    {"op": "write", "fd": 6, "data": b"through the pipe".hex()},
    {"op": "read", "fd": 5, "size": 7},
    {"op": "close", "fd": 1},
    {"op": "mkdir", "path": "sub", "mode": 0o777, "dir": None},
    {"op": "getcwd"},
    {"op": "chdir", "path": ".."},
    {"op": "chdir", "path": ".."},
    {"op": "chdir", "path": ".."},                                          # leaves the tree: reset
    {"op": "fchdir", "fd": 0},
    {"op": "getcwd"},
    {"op": "rmdir", "path": "b/c", "dir": None},
]

# A cwd that was removed: relative names fail, getcwd says ENOENT.
REMOVED_CWD = [
    {"op": "mkdir", "path": "d1", "mode": 0o755, "dir": None},
    {"op": "open", "path": "d1", "flags": os.O_RDONLY | os.O_DIRECTORY, "mode": 0, "dir": None},
    {"op": "chdir", "path": "d1"},
    {"op": "rmdir", "path": "@/d1", "dir": None},
    {"op": "getcwd"},
    {"op": "open", "path": "f3", "flags": os.O_WRONLY | os.O_CREAT, "mode": 0o644, "dir": None},
    {"op": "mkdir", "path": "x", "mode": 0o755, "dir": 0},
    {"op": "stat", "path": ".", "follow": True, "dir": None},
    {"op": "fchdir", "fd": 0},
    {"op": "stat", "path": "@/f0", "follow": True, "dir": None},
    {"op": "open", "path": "f3", "flags": os.O_WRONLY | os.O_CREAT, "mode": 0o644, "dir": None},
]
# A directory whose name merely ends like /proc's mark of a removed one: still a cwd.
NAMED_LIKE_REMOVED = [
    {"op": "mkdir", "path": "d (deleted)", "mode": 0o755, "dir": None},
    {"op": "chdir", "path": "d (deleted)"},
    {"op": "getcwd"},
]


def _make_writable(func, path, _exc):
    os.chmod(os.path.dirname(path), 0o700)
    func(path)


def fresh_dir(d):
    if d.exists():
        shutil.rmtree(d, onerror=_make_writable)
    d.mkdir()


def run_both(lsca_run, tmp_path, spec):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    native_dir, lsca_dir = tmp_path / "native", tmp_path / "lsca"
    for d in (native_dir, lsca_dir):
        fresh_dir(d)
    native = run_native([sys.executable, PATH_OPS, str(spec_file), str(native_dir)])
    assert native.returncode == 0, native.stderr.decode()
    proc, stats, trace = lsca_run([sys.executable, PATH_OPS, str(spec_file), str(lsca_dir)], trace=True)
    assert proc.returncode == 0, proc.stderr.decode()
    return (json.loads(native.stdout), json.loads(proc.stdout)), stats, parse_trace(trace)


class AsNobody:
    """Runs a spec natively and under LSCA as nobody (no supplementary groups), against a
    root supervisor of its own; everything nobody needs lives in a world-readable directory
    (the system's python3: the test's own may sit under a private home)."""
    PYTHON = "/usr/bin/python3"

    def __init__(self):
        self.user = pwd.getpwnam("nobody")
        self.base = tempfile.mkdtemp(prefix="lsca-diff-nobody-")
        os.chmod(self.base, 0o755)
        self.agent = public_agent(self.base)
        self.program = shutil.copy(PATH_OPS, os.path.join(self.base, "path_ops.py"))
        os.chmod(self.program, 0o755)
        self.sup = SupervisorProcess(self.base, workers=2)

    def close(self):
        try:
            assert self.sup.stop() == 0
        finally:
            shutil.rmtree(self.base, onerror=_make_writable)

    def as_nobody(self):
        return dict(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[], cwd=self.base,
                    capture_output=True, timeout=120)

    def __call__(self, spec):
        work = os.path.join(self.base, "work")
        if os.path.exists(work):
            shutil.rmtree(work, onerror=_make_writable)
        os.mkdir(work, 0o755)
        spec_file = os.path.join(work, "spec.json")
        with open(spec_file, "w") as f:
            json.dump(spec, f)
        dirs = {}
        for side in ("native", "lsca"):
            dirs[side] = os.path.join(work, side)
            os.mkdir(dirs[side], 0o755)
            os.chown(dirs[side], self.user.pw_uid, self.user.pw_gid)
        native = subprocess.run([self.PYTHON, self.program, spec_file, dirs["native"]], env=clean_env(),
                                **self.as_nobody())
        assert native.returncode == 0, native.stderr.decode()
        under, stats, calls = run_in_traced_session(self.sup, self.agent, [self.PYTHON, self.program, spec_file,
                                                                          dirs["lsca"]], clean_env(),
                                                    os.path.join(work, "trace"), **self.as_nobody())
        assert under.returncode == 0, under.stderr.decode()
        return (json.loads(native.stdout), json.loads(under.stdout)), stats, calls


@pytest.fixture(scope="module")
def as_nobody():
    if os.geteuid() != 0:
        pytest.skip("the unprivileged variant runs when the tests run as root (as CI does)")
    runner = AsNobody()
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture(params=["caller", "nobody"])
def run_spec(request, lsca_run, tmp_path):
    """run(spec) -> ((native output, LSCA output), stats, trace calls), as the caller or as nobody."""
    if request.param == "nobody":
        return request.getfixturevalue("as_nobody")
    return lambda spec: run_both(lsca_run, tmp_path, spec)


def same_number_dup2(o, r):
    return o["op"] == "dup2" and r.get("fd") == o["to"]


def executed(spec, output):
    """Trace names of the calls the ops made, in order; skipped ops made none."""
    names = []
    for o, r in zip(spec["ops"], output["results"]):
        if r.get("skipped") or o["op"] == "umask" or same_number_dup2(o, r):
            continue        # umask is the process's own; dup2(fd, fd) asks the kernel natively
        if o["op"] in ("chdir", "fchdir"):
            # Run natively and reported to the worker; then the program's getcwd, and its
            # chdir back into the tree when it left it.
            names += [o["op"], "getcwd"] + (["chdir"] if r["reset"] else [])
        else:
            names.append(TRACE_NAMES[o["op"]])
    return names


def check(run_spec, ops):
    spec = {"ops": ops}
    (native, lsca), stats, calls = run_spec(spec)
    assert lsca == native
    # Every call of the sequence went through a worker, in order.
    assert between_markers(calls) == executed(spec, native)
    # dup2(fd, fd) with inheritable=True is dup2's own validity check, natively: counted as
    # passthrough; dup3(fd, fd, O_CLOEXEC) is the kernel's EINVAL, natively, and not counted.
    same = [o for o, r in zip(ops, native["results"]) if same_number_dup2(o, r)]
    assert stats["passthrough"].get("dup3", 0) == sum(o["inheritable"] for o in same)
    assert all(r["errno"] == 22 for o, r in zip(ops, native["results"])
               if same_number_dup2(o, r) and not o["inheritable"])
    # umask ran natively, yet whatever the worker created afterwards obeyed it: the modes
    # of the final tree are compared above.
    assert not stats["declined"]
    return native


@SETTINGS
@given(ops=st.lists(op, max_size=25))
@example(ops=RENAMES_OVER_EXISTING)
@example(ops=CWD_AND_DIRFDS)
@example(ops=REMOVED_CWD)
def test_path_sequences_match_native(run_spec, ops):
    check(run_spec, ops)


def test_hand_picked_sequences_cover_the_cases(lsca_run, tmp_path):
    """The examples above do what they are meant to (so the cases stay covered)."""
    native = check(lambda spec: run_both(lsca_run, tmp_path, spec), RENAMES_OVER_EXISTING)
    errnos = [r["errno"] for r in native["results"]]
    assert errnos[:6] == [0, 0, 39, 22, 20, 21]       # ENOTEMPTY, EINVAL, ENOTDIR, EISDIR
    assert native["tree"]["f0"]["content"] == (b"one\n" * 3)[:7].hex()   # renamed, then truncated
    assert native["tree"]["l_new"]["type"] == "symlink"
    assert native["results"][9]["ret"] == "@/a"
    assert native["tree"]["locked"]["mode"] == 0o4711
    native = check(lambda spec: run_both(lsca_run, tmp_path, spec), CWD_AND_DIRFDS)
    results = native["results"]
    assert results[2]["cwd"] == "a/b" and results[18]["ret"] == "a/b"
    assert [r["reset"] for r in results[19:22]] == [False, False, True]
    assert results[22]["cwd"] == "a" and results[23]["ret"] == "a"
    assert native["tree"]["a/b/new"]["mode"] == 0o600
    assert native["tree"]["a/b/sub"]["mode"] == 0o700
    assert stat.S_ISREG(results[7]["ret"][0]) and results[15]["ret"] == b"through".hex()
    assert results[10]["ret"] == 10 and results[11]["errno"] == 22
    native = check(lambda spec: run_both(lsca_run, tmp_path, spec), REMOVED_CWD)
    assert [r["errno"] for r in native["results"][3:7]] == [0, 2, 2, 2]
    assert native["results"][8]["reset"] and native["tree"]["f3"]["type"] == "file"


def test_cwd_named_like_a_removed_directory(lsca_run, tmp_path):
    """/proc shows a removed cwd as "NAME (deleted)": a live directory may be called that."""
    native = check(lambda spec: run_both(lsca_run, tmp_path, spec), NAMED_LIKE_REMOVED)
    assert native["results"][2] == {"ret": "d (deleted)", "errno": 0}
