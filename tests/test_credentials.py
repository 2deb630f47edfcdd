"""A root supervisor acts with each client's credentials: an unprivileged program
gets exactly the EACCES/EPERM it gets natively, and what it creates is its own."""
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import pytest

from lsca.runner import SessionClient
from conftest import PROGRAMS, SupervisorProcess, clean_env, public_agent, run_in_traced_session, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a root supervisor and a client as nobody")

SCRIPT = r"""
cat secret; echo "cat secret: $?"
ls locked; echo "ls locked: $?"
cat locked/inner; echo "cat locked/inner: $?"
echo more >> secret; echo "append secret: $?"
echo new > open/mine; echo "create open/mine: $?"
stat -c '%u %g %a %s' open/mine
mkdir open/newdir; echo "mkdir open/newdir: $?"
stat -c '%u %a' open/newdir
touch locked/x; echo "touch locked/x: $?"
mkdir locked/d; echo "mkdir locked/d: $?"
rm -f secret; echo "rm secret: $?"
chmod 777 secret; echo "chmod secret: $?"
ln -s secret open/link; echo "symlink: $?"
cat open/link; echo "cat via symlink: $?"
mv open/mine open/moved; echo "mv: $?"
test -r secret; echo "test -r secret: $?"
test -w open/moved; echo "test -w moved: $?"
ln secret open/hard; echo "ln secret: $?"
ln open/moved open/hard2; echo "ln moved: $?"
mv open/hard2 locked/x2; echo "mv into locked: $?"
"$WHITEOUT" open/hard2 open/wh
python3 "$LIMITS"
"""


def build_tree(root):
    """Root-owned 0600 file, 0700 dir, and a world-writable dir (sticky, like /tmp)."""
    os.chmod(root, 0o755)
    with open(os.path.join(root, "secret"), "w") as f:
        f.write("top secret\n")
    os.chmod(os.path.join(root, "secret"), 0o600)
    os.mkdir(os.path.join(root, "locked"), 0o700)
    with open(os.path.join(root, "locked", "inner"), "w") as f:
        f.write("inner\n")
    os.mkdir(os.path.join(root, "open"))
    os.chmod(os.path.join(root, "open"), 0o1777)


def tree_state(root):
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            state[os.path.relpath(path, root)] = (st.st_uid, st.st_gid, oct(st.st_mode), st.st_size)
    return state


def test_unprivileged_client_gets_native_permission_errors():
    nobody = pwd.getpwnam("nobody")
    as_nobody = dict(user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[], capture_output=True, timeout=60)
    with tempfile.TemporaryDirectory(prefix="lsca-cred-") as base:
        os.chmod(base, 0o755)
        native_root, lsca_root = os.path.join(base, "native"), os.path.join(base, "lsca")
        for root in (native_root, lsca_root):
            os.mkdir(root)
            build_tree(root)
        agent = public_agent(base)
        whiteout = os.path.join(base, "rename_whiteout")
        subprocess.run(["cc", "-O2", "-o", whiteout, os.path.join(PROGRAMS, "rename_whiteout.c")], check=True)
        limits = shutil.copy(os.path.join(PROGRAMS, "beyond_limits.py"), base)
        os.chmod(limits, 0o644)
        native = subprocess.run(["/bin/sh", "-c", SCRIPT], cwd=native_root, env={**clean_env(), "WHITEOUT": whiteout, "LIMITS": limits},
                                **as_nobody)

        sup = SupervisorProcess(base, workers=2)
        try:
            under, stats, calls = run_in_traced_session(
                sup, agent, ["/bin/sh", "-c", SCRIPT], {**clean_env(), "WHITEOUT": whiteout, "LIMITS": limits},
                os.path.join(base, "trace"), cwd=lsca_root, **as_nobody)
        finally:
            assert sup.stop() == 0

        assert under.returncode == native.returncode
        assert under.stdout == native.stdout
        assert under.stderr == native.stderr
        assert b"Permission denied" in native.stderr and b"Operation not permitted" in native.stderr
        assert b"whiteout: " in native.stdout and b"ln moved: 0" in native.stdout
        assert b"pipe beyond pipe-max-size: Operation not permitted" in native.stdout
        assert b"O_NOATIME on root's file: Operation not permitted" in native.stdout
        assert b"pipe is mine: True" in native.stdout
        assert tree_state(lsca_root) == tree_state(native_root)
        assert tree_state(lsca_root)["open/moved"][:2] == (nobody.pw_uid, nobody.pw_gid)

        # The denials came from workers acting as nobody, not from native calls.
        assert any(name == "openat" and '"secret"' in args and "EACCES" in result for _, name, args, result in calls)
        assert any(name == "mkdirat" and '"locked/d"' in args and "EACCES" in result for _, name, args, result in calls)
        assert stats["proxied"].get("openat", 0) > 0 and stats["declined"].get("openat", 0) == 0


STAT_LOOP = "import os, sys\nfor _ in range(int(sys.argv[2])): os.stat(sys.argv[1])\n"
WRITE_LOOP = ("import os, sys\nfd = os.open(sys.argv[1], os.O_WRONLY)\n"
              "for _ in range(int(sys.argv[2])): os.pwrite(fd, b'x', 0)\n"
              "print(oct(os.fstat(fd).st_mode))\n")


SETID_WRITES = ("import os, sys\n"
                "fds = {name: os.open(name, os.O_WRONLY) for name in ('suid', 'sgid', 'suid-trunc')}\n"
                "print('ready', flush=True)\n"
                "sys.stdin.readline()\n"
                "os.write(fds['suid'], b'x')\n"
                "os.pwrite(fds['sgid'], b'x', 0)\n"
                "os.ftruncate(fds['suid-trunc'], 1)\n"
                "print(sorted((name, oct(os.fstat(fd).st_mode)) for name, fd in fds.items()), flush=True)\n"
                "sys.stdin.readline()\n")
SETID_FILES = {"suid": 0o4777, "sgid": 0o2777, "suid-trunc": 0o4777}


def test_a_users_write_clears_set_id_bits_as_natively():
    """A write or truncate clears a file's set-uid and set-gid bits unless the writer has
    CAP_FSETID. A root worker has it for everyone: a user writing into a root-owned set-uid
    file it may write kept the bit (its bytes then ran as root) when the worker had served
    another client since the user's last path call. On a set-id file the worker acts with the
    caller's identity, and the bits go as natively."""
    nobody = pwd.getpwnam("nobody")
    as_nobody = dict(user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[])
    with tempfile.TemporaryDirectory(prefix="lsca-setid-") as base:
        os.chmod(base, 0o755)
        for how in ("native", "lsca"):
            d = os.path.join(base, how)
            os.mkdir(d)
            for name, mode in SETID_FILES.items():
                with open(os.path.join(d, name), "wb") as f:
                    f.write(b"#!/bin/sh\n")
                os.chmod(os.path.join(d, name), mode)               # root's, and anyone may write it
        native = subprocess.run(["/usr/bin/python3", "-c", SETID_WRITES], cwd=os.path.join(base, "native"),
                                input=b"go\nend\n", env=clean_env(), capture_output=True, timeout=60, **as_nobody)
        assert native.returncode == 0, native.stderr
        agent = public_agent(base)
        sup = SupervisorProcess(base, workers=1)     # one worker: root's stats and nobody's writes
        try:
            env = {**clean_env(), "LD_PRELOAD": agent, "LSCA_SOCKET": sup.socket, "LSCA_REQUIRED": "1"}
            stats_loop = subprocess.Popen([sys.executable, "-c", STAT_LOOP, base, "1000000000"], env=env)
            writer = subprocess.Popen(["/usr/bin/python3", "-c", SETID_WRITES], cwd=os.path.join(base, "lsca"),
                                      env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, **as_nobody)
            try:
                def roots_stats():
                    return sum(c["proxied"].get("fstatat", 0) for c in sup.stats()["clients"] if c["uid"] == 0)
                assert writer.stdout.readline() == b"ready\n"
                # The worker serves root's stats after nobody's last path call (its opens)...
                since = roots_stats()
                assert wait_until(lambda: roots_stats() > since + 100)
                # ...and then nobody's write, pwrite and ftruncate, with no path call before them.
                writer.stdin.write(b"go\n")
                writer.stdin.flush()
                out = writer.stdout.readline()
                writes = [c for c in sup.stats()["clients"] if c["pid"] == writer.pid]
                writer.communicate(b"end\n", timeout=60)
            finally:
                stats_loop.kill()
                stats_loop.wait()
                writer.kill()
                writer.wait()
        finally:
            assert sup.stop() == 0
        assert writer.returncode == 0
        assert b"ready\n" + out == native.stdout
        assert b"('suid', '0o100777')" in out and b"('sgid', '0o100777')" in out and b"('suid-trunc', '0o100777')" in out
        # A worker made them.
        assert len(writes) == 1 and (writes[0]["proxied"].get("pwrite"), writes[0]["proxied"].get("ftruncate")) == (1, 1)


def test_a_users_identity_kept_after_its_path_call_is_given_back_before_another_client():
    """A worker keeps a user's filesystem identity after its path call (taking and giving it
    back costs two credential changes); root's writes served in between must still be made
    as root: root's write keeps a file's set-uid bit (CAP_FSETID), a user's removes it."""
    nobody = pwd.getpwnam("nobody")
    with tempfile.TemporaryDirectory(prefix="lsca-held-") as base:
        os.chmod(base, 0o755)
        target = os.path.join(base, "setuid-file")
        with open(target, "wb") as f:
            f.write(b"#!/bin/sh\n")
        os.chmod(target, 0o4755)
        native = subprocess.run([sys.executable, "-c", WRITE_LOOP, target, "50"], env=clean_env(),
                                capture_output=True, timeout=60, check=True)
        assert native.stdout.strip() == b"0o104755"
        agent = public_agent(base)
        sup = SupervisorProcess(base, workers=1)     # in base: nobody reaches its socket
        try:
            def session_env():
                session = SessionClient(sup.socket)
                env = {**clean_env(), "LD_PRELOAD": agent, "LSCA_SOCKET": sup.socket,
                       "LSCA_SESSION": session.token, "LSCA_REQUIRED": "1"}
                return session, env
            stat_env = {**clean_env(), "LD_PRELOAD": agent, "LSCA_SOCKET": sup.socket, "LSCA_REQUIRED": "1"}
            stats_loop = subprocess.Popen(["/usr/bin/python3", "-c", STAT_LOOP, base, "1000000000"], env=stat_env,
                                          user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[])
            try:
                def nobodys_stats():
                    return sum(c["proxied"].get("fstatat", 0) for c in sup.stats()["clients"]
                               if c["uid"] == nobody.pw_uid)
                # nobody's stats are being served by the one worker...
                assert wait_until(lambda: stats_loop.poll() is not None or nobodys_stats() > 1000)
                assert stats_loop.poll() is None, "nobody's stat loop ended"
                before = nobodys_stats()
                write_session, write_env = session_env()
                # ...while root's writes go to the same worker between them.
                under = subprocess.run([sys.executable, "-c", WRITE_LOOP, target, "20000"], env=write_env,
                                       capture_output=True, timeout=120)
                written = write_session.end()
                write_session.close()
                assert stats_loop.poll() is None
                stated = nobodys_stats() - before
            finally:
                stats_loop.kill()
                stats_loop.wait()
        finally:
            assert sup.stop() == 0
        assert under.returncode == 0, under.stderr
        assert written["proxied"].get("pwrite", 0) == 20000      # every one of root's pwrites
        assert stated > 1000, "nobody's stats did not go on beside root's writes"
        assert under.stdout.strip() == b"0o104755", "root's write was made without CAP_FSETID"
        assert oct(os.stat(target).st_mode) == "0o104755"
