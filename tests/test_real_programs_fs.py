"""Programs that live in the file system (copy trees, archive, commit, query a
database, compile) give identical output, exit status and resulting trees under
'lsca run' as natively, with their calls executed by workers: as many as a native run
under strace makes, or as the tree they work on says."""
import hashlib
import os
import shutil
import sys

import pytest

from conftest import native_calls, run_native, through_workers

STAT_OPS = ("fstatat", "statx", "fstat")
FIXED_TIME = 1_700_000_000
# What make_tree makes below its root: regular files, directories, symlinks.
FILES, DIRS, LINKS = 5, 2, 3
ENTRIES = FILES + DIRS + LINKS
SIDES = ("native", "lsca", "traced")      # traced: the native run strace counts calls of


def make_tree(root):
    """Files, nested dirs, symlinks (file, dir, dangling) and unusual modes, fixed times."""
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n" * 100)
    (root / "dir" / "b.bin").write_bytes(bytes(range(256)) * 400)
    (root / "dir" / "sub" / "c.py").write_text("def f(x):\n    return x * 2\n\nprint(f(21))\n")
    (root / "dir" / "sub" / "empty").write_bytes(b"")
    (root / "exec.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "exec.sh", 0o750)
    os.chmod(root / "dir" / "sub" / "empty", 0o600)
    os.symlink("a.txt", root / "link_file")
    os.symlink("dir/sub", root / "link_dir")
    os.symlink("missing", root / "link_dangling")
    for path in sorted(root.rglob("*"), reverse=True):
        os.utime(path, ns=(FIXED_TIME * 10**9, FIXED_TIME * 10**9), follow_symlinks=False)
    os.utime(root, ns=(FIXED_TIME * 10**9, FIXED_TIME * 10**9))


def snapshot(root, times=False):
    """Everything about a tree that must match: type, mode, size, content, link target."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        entry = {"mode": oct(st.st_mode), "size": st.st_size if not path.is_dir() else None}
        if path.is_symlink():
            entry["target"] = os.readlink(path)
        elif path.is_file():
            entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        if times and not path.is_symlink():
            entry["mtime_ns"] = st.st_mtime_ns
        out[str(path.relative_to(root))] = entry
    return out


def statted(stats):
    return sum(stats["proxied"].get(op, 0) for op in STAT_OPS)


def proxied(stats, *ops):
    return {op: stats["proxied"].get(op, 0) for op in ops}


@pytest.fixture
def work(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    for side in SIDES:
        (tmp_path / side).mkdir()
    return tmp_path


def run_both(lsca_run, cmd_for, work, ops=(), env_extra=None):
    """cmd_for(side) is the command for that side's directory; returns (native, lsca, stats).
    ops: descriptor calls the program makes itself, as many through a worker as the traced
    native run makes on the work tree and its pipes."""
    native = run_native(cmd_for("native"), cwd=work / "native")
    proc, stats, _ = lsca_run(cmd_for("lsca"), cwd=work / "lsca", env_extra=env_extra)
    assert proc.returncode == native.returncode, proc.stderr.decode()
    if ops:
        expected = native_calls(cmd_for("traced"), ops, work, cwd=work / "traced", env_extra=env_extra)
        assert through_workers(stats, ops) == expected, stats
    return native, proc, stats


def test_cp_a_copies_tree_with_symlinks_modes_and_times(lsca_run, work):
    _, _, stats = run_both(lsca_run, lambda side: ["cp", "-a", "../src", "copy"], work, ("read", "write"))
    assert snapshot(work / "lsca" / "copy", times=True) == snapshot(work / "native" / "copy", times=True) \
        == snapshot(work / "src", times=True)
    # A look at the target, then each file opened and its copy created; the copy and its
    # directories made, each symlink read and made again, the times of every entry set.
    assert proxied(stats, "openat", "mkdirat", "readlinkat", "symlinkat", "utimensat") == \
        {"openat": 1 + 2 * FILES, "mkdirat": 1 + DIRS, "readlinkat": LINKS, "symlinkat": LINKS,
         "utimensat": 1 + ENTRIES}, stats
    assert statted(stats) >= 1 + ENTRIES, stats         # each entry of the source looked at


def test_tar_create_and_extract(lsca_run, work):
    create = ["tar", "--sort=name", "--owner=0", "--group=0", "-C", "../src", "-cf", "t.tar", "."]
    _, _, stats = run_both(lsca_run, lambda side: create, work, ("read", "write", "close"))
    assert (work / "lsca" / "t.tar").read_bytes() == (work / "native" / "t.tar").read_bytes()
    # The archive, ../src and its ".", each directory and each file (the empty one too: not
    # everybody may read it); each symlink read.
    assert proxied(stats, "openat", "readlinkat") == {"openat": 1 + 2 + DIRS + FILES, "readlinkat": LINKS}, stats
    assert statted(stats) >= 1 + ENTRIES, stats         # each member looked at
    for side in SIDES:
        (work / side / "x").mkdir()
    _, _, stats = run_both(lsca_run, lambda side: ["tar", "-C", "x", "-xf", "t.tar"], work, ("read", "write"))
    assert snapshot(work / "lsca" / "x", times=True) == snapshot(work / "native" / "x", times=True)
    # The archive, x and each file created; each symlink made; the times of every member
    # (x's "." included) set.
    assert proxied(stats, "openat", "symlinkat", "utimensat") == \
        {"openat": 2 + FILES, "symlinkat": LINKS, "utimensat": 1 + ENTRIES}, stats


GIT_ENV = {"GIT_AUTHOR_NAME": "LSCA", "GIT_AUTHOR_EMAIL": "lsca@example.invalid",
           "GIT_COMMITTER_NAME": "LSCA", "GIT_COMMITTER_EMAIL": "lsca@example.invalid",
           "GIT_AUTHOR_DATE": "2023-11-14T22:13:20Z", "GIT_COMMITTER_DATE": "2023-11-14T22:13:20Z",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}


@pytest.mark.skipif(not shutil.which("git"), reason="git is not installed")
def test_git_init_add_commit_gives_the_same_commit(lsca_run, work, monkeypatch):
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    script = ("set -e; cp -a ../src repo; cd repo; git init -q -b main; git add -A; "
              "git commit -q -m 'first commit'; git rev-parse HEAD; git status --porcelain; git log --stat")
    native, proc, stats = run_both(lsca_run, lambda side: ["sh", "-c", script], work, env_extra=GIT_ENV)
    assert proc.stdout == native.stdout
    assert len(proc.stdout.split(b"\n", 1)[0]) == 40         # the same commit id, content and dates
    assert stats["processes"] >= 4                          # sh, cp, git and its helpers
    # Objects: a blob per file and per symlink (8 contents differ), a tree per directory (3), the
    # commit; git links each one in from its temporary file. Symlinks: cp's 3 and git init's probe.
    objects = FILES + LINKS + 1 + DIRS + 1
    assert proxied(stats, "linkat", "symlinkat") == {"linkat": objects, "symlinkat": LINKS + 1}, stats
    # cp's opens (as in the cp -a test), git add's of each file, a temporary file per object.
    assert stats["proxied"].get("openat", 0) >= 1 + 2 * FILES + FILES + objects, stats
    assert statted(stats) >= 1 + ENTRIES, stats


@pytest.mark.skipif(not shutil.which("sqlite3"), reason="sqlite3 is not installed")
def test_sqlite3_database_created_filled_and_queried(lsca_run, work):
    sql = ("create table t(id integer primary key, name text, v real);"
           "begin; " + " ".join(f"insert into t(name, v) values ('n{i}', {i * 1.5});" for i in range(300)) +
           " commit; create index t_name on t(name);"
           "select count(*), sum(v), min(name), max(name) from t where id % 7 = 3;"
           "update t set v = v * 2 where id < 50; delete from t where id > 250;"
           "select id, name, v from t order by v desc limit 5; pragma integrity_check;")
    # Its pages are read and written at offsets and synced; the journal's owner set (as root).
    ops = ("pread", "pwrite", "fdatasync", "fchown")
    native, proc, stats = run_both(lsca_run, lambda side: ["sqlite3", "db.sqlite", sql], work, ops)
    assert proc.stdout == native.stdout and proc.stdout
    dump = [run_native(["sqlite3", str(work / side / "db.sqlite"), ".dump"]).stdout for side in ("native", "lsca")]
    assert dump[0] == dump[1]
    assert stats["proxied"]["pwrite"] > 0 and stats["proxied"]["fdatasync"] > 0   # never vacuous
    assert stats["proxied"].get("openat", 0) >= 2 and statted(stats) > 0, stats   # the database, its journal


def test_python_compileall(lsca_run, work):
    for side in SIDES:
        shutil.copytree(work / "src", work / side / "code", symlinks=True)
    cmd = [sys.executable, "-m", "compileall", "-q", "code"]
    native, proc, stats = run_both(lsca_run, lambda side: cmd, work, ("write",))
    assert proc.stdout == native.stdout
    assert snapshot(work / "lsca" / "code") == snapshot(work / "native" / "code")
    assert len(list((work / "lsca" / "code").rglob("*.pyc"))) == 1
    # The tree's one .py file: its __pycache__ made, its .pyc written (one write) and renamed
    # into place; the source read and the temporary .pyc created at least.
    assert proxied(stats, "mkdirat", "renameat2", "write") == {"mkdirat": 1, "renameat2": 1, "write": 1}, stats
    assert stats["proxied"].get("openat", 0) >= 2 and statted(stats) > 0, stats


def test_find_sort_xargs_sha256sum(lsca_run, work):
    pipeline = "cd ../src && find . -type f | sort | xargs sha256sum"
    native, proc, stats = run_both(lsca_run, lambda side: ["sh", "-c", pipeline], work)
    assert proc.stdout == native.stdout and proc.stdout.count(b"\n") == 5
    assert proc.stderr == native.stderr
    assert stats["processes"] >= 4                          # sh, find, sort, xargs, sha256sum
    # sh: its cd and the pipeline's 2 pipes; xargs: a pipe to learn whether its child's exec
    # failed. lseek: sha256sum's (gnulib) fclose of each file it hashed (it reads through
    # stdio, unseen), sort's and xargs' of their stdin. find opens "." twice (fts, and its
    # way back) and each directory below; xargs gives its child /dev/null as stdin.
    assert proxied(stats, "chdir", "pipe2", "lseek", "openat") == \
        {"chdir": 1, "pipe2": 2 + 1, "lseek": FILES + 2, "openat": 2 + DIRS + 1}, stats
    assert statted(stats) >= ENTRIES, stats                 # find looks at each entry
