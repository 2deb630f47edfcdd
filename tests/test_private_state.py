"""Issue 9, point 6: state and sockets are private, and the agent checks whom it talks to.

A state directory another user planted (theirs, open to others, or a symbolic link) is
refused with one line by `lsca cleanup` and `lsca-supervisor`; a registry entry is
validated, and the cleanup removes only sockets of its own in its directory and SysV
objects it created; the agent refuses a supervisor of another user and a shard that is
not private to root or itself, and the program then runs natively (or exits 126 with
LSCA_REQUIRED=1).

Processes of other users: ATTACKER (nobody) runs the system python (a fake supervisor)
or ours; VICTIM is a third uid. Our python lives under /root (0700), so the ones that
need it keep only the capability to read and search (CAP_DAC_READ_SEARCH): every
write, and every owner a file gets, stays that of the uid.
"""
import atexit
import functools
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile

import pytest
import sysv_ipc

from lsca import ipc
from lsca.abi import ABI_VERSION, HELLO_SIZE, MAGIC, SHARD_SIZE, SLOTS, pack_welcome, shard_header
from lsca.runner import agent_path
from conftest import clean_env, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: directories and processes of other uids")

ATTACKER = 65534
VICTIM = 4242
SYSTEM_PYTHON = "/usr/bin/python3"
LSCA = [sys.executable, "-m", "lsca.cli"]
SUPERVISOR = [sys.executable, "-m", "lsca.supervisor", "--workers", "1"]
TIMEOUT_S = 30


def as_user(uid):
    """A command prefix that runs as uid (no groups), allowed to read any file (to load our
    python from /root) but to write, and to own what it makes, only as uid."""
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]


def run_briefly(cmd, env, timeout=TIMEOUT_S):
    """Run cmd in its own process group; on timeout the group (workers included) is killed."""
    child = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise
    return subprocess.CompletedProcess(cmd, child.returncode, out.decode(), err.decode())


def env_without_runtime_dir(**extra):
    env = {k: v for k, v in clean_env().items() if k != "XDG_RUNTIME_DIR"}
    env.update(extra)
    return env


def dead_pid():
    """The pid of a process that has exited (its registry entry is a dead instance's)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def write_entry(directory, name, socket_path, pid=None, shm=(), sem=()):
    entry = {"pid": pid or dead_pid(), "start_time": 1.0, "socket": socket_path, "shm": list(shm), "sem": list(sem)}
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        json.dump(entry, f)
    return path


def owned_file(path, uid, text="precious\n"):
    with open(path, "w") as f:
        f.write(text)
    os.chown(path, uid, uid)
    return path


def owned_dir(path, uid, mode=0o700):
    os.mkdir(path)
    os.chmod(path, mode)
    os.chown(path, uid, uid)
    return path


def bound_socket(path, uid):
    """A socket file at path owned by uid (nobody listens on it any more)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.close()
    os.chown(path, uid, uid, follow_symlinks=False)
    return path


def plant(path, kind, owner):
    """A state directory the way another user could leave it for owner to find: another uid's,
    open to everyone, or a symbolic link (to a directory of owner's that would pass). Returns the
    directory registry entries planted in it end up in."""
    if kind == "another user's":
        return owned_dir(path, ATTACKER)
    if kind == "open to all":
        return owned_dir(path, owner, 0o777)
    target = owned_dir(path + ".target", owner)
    os.symlink(target, path)
    return target


PLANTED = ["another user's", "open to all", "symlink"]


def assert_refused(result, prefix, path):
    lines = result.stderr.splitlines()
    assert result.returncode == 1, result
    assert len(lines) == 1 and lines[0].startswith(f"{prefix}: refusing the state directory {path}"), result.stderr


@pytest.fixture
def public_tmp():
    """A directory in /tmp that every uid can search (pytest's own tmp_path is root's, 0700)."""
    path = tempfile.mkdtemp(prefix="lsca-private-test-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def victim_tmp_fallback():
    """/tmp/lsca-VICTIM, absent before and after the test."""
    path = f"/tmp/lsca-{VICTIM}"

    def remove():
        for p in (path, path + ".target"):
            if os.path.islink(p) or os.path.isfile(p):
                os.unlink(p)
            else:
                shutil.rmtree(p, ignore_errors=True)
    remove()
    yield path
    remove()


# ---- the state directory ----

@pytest.mark.parametrize("kind", PLANTED)
def test_a_planted_state_dir_is_refused_by_cleanup_run_and_supervisor(tmp_path, kind):
    """Before: a registry entry in a directory another user made named any file of ours as its
    socket, and `lsca cleanup` (or the next supervisor) deleted it. Now: one line, status 1."""
    planted = str(tmp_path / "state")
    victim = owned_file(str(tmp_path / "victim"), 0)
    write_entry(plant(planted, kind, 0), "1.json", victim)
    env = {**clean_env(), "LSCA_STATE_DIR": planted}

    assert_refused(run_briefly(LSCA + ["cleanup"], env), "lsca", planted)
    assert_refused(run_briefly(LSCA + ["run", "--", "true"], env), "lsca", planted)
    sock = str(tmp_path / "s.sock")
    assert_refused(run_briefly(SUPERVISOR + ["--socket", sock], env), "lsca-supervisor", planted)
    assert open(victim).read() == "precious\n"
    assert not os.path.exists(sock)


@pytest.mark.parametrize("where", ["/tmp/lsca-UID", "$XDG_RUNTIME_DIR/lsca"])
@pytest.mark.parametrize("kind", PLANTED)
def test_a_planted_default_dir_is_refused_for_a_user(public_tmp, victim_tmp_fallback, where, kind):
    """A user's default directory (its sockets and instances), planted: both commands refuse it."""
    mine = owned_dir(os.path.join(public_tmp, "mine"), VICTIM)
    victim = owned_file(os.path.join(mine, "victim"), VICTIM)
    if where == "/tmp/lsca-UID":
        planted, env = victim_tmp_fallback, env_without_runtime_dir()
    else:
        runtime = owned_dir(os.path.join(public_tmp, "runtime"), VICTIM)
        planted, env = os.path.join(runtime, "lsca"), env_without_runtime_dir(XDG_RUNTIME_DIR=runtime)
    entries = plant(planted, kind, VICTIM)
    write_entry(owned_dir(os.path.join(entries, "instances"), VICTIM if kind != "another user's" else ATTACKER),
                "1.json", victim)

    assert_refused(run_briefly(as_user(VICTIM) + LSCA + ["cleanup"], env), "lsca", planted)
    assert_refused(run_briefly(as_user(VICTIM) + SUPERVISOR, env), "lsca-supervisor", planted)
    assert open(victim).read() == "precious\n"
    assert not os.path.exists(os.path.join(entries, "supervisor.sock"))


def test_a_user_default_dir_is_made_private(victim_tmp_fallback):
    result = run_briefly(as_user(VICTIM) + LSCA + ["cleanup"], env_without_runtime_dir())
    assert result.returncode == 0, result
    for path in (victim_tmp_fallback, os.path.join(victim_tmp_fallback, "instances")):
        st = os.lstat(path)
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == VICTIM and stat.S_IMODE(st.st_mode) == 0o700


def test_a_user_supervisor_serves_from_its_private_runtime_dir(public_tmp):
    """The default socket in $XDG_RUNTIME_DIR/lsca (made 0700); the agent of a program of the
    same user registers with it (LSCA_REQUIRED=1: it would exit 126 otherwise)."""
    runtime = owned_dir(os.path.join(public_tmp, "runtime"), VICTIM)
    work = owned_dir(os.path.join(public_tmp, "work"), VICTIM, 0o755)
    sock = os.path.join(runtime, "lsca", "supervisor.sock")
    sup = subprocess.Popen(as_user(VICTIM) + SUPERVISOR, env=env_without_runtime_dir(XDG_RUNTIME_DIR=runtime),
                           stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_until(lambda: os.path.exists(sock) or sup.poll() is not None)
        assert sup.poll() is None
        st = os.lstat(sock)
        assert stat.S_ISSOCK(st.st_mode) and st.st_uid == VICTIM and stat.S_IMODE(st.st_mode) == 0o600
        assert stat.S_IMODE(os.lstat(os.path.dirname(sock)).st_mode) == 0o700
        served = run_program(sock, work, VICTIM, LSCA_REQUIRED="1")
        assert (served.returncode, served.stdout, served.stderr) == (0, b"written\n", b"")
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(TIMEOUT_S) == 0
    finally:
        if sup.poll() is None:
            os.killpg(sup.pid, signal.SIGKILL)
            sup.wait()
    assert not os.path.exists(sock)
    assert not [row for kind in ("shm", "sem") for row in ipc._table(kind) if row["cuid"] == VICTIM]


# ---- registry entries ----

def test_cleanup_unlinks_only_its_own_sockets_in_its_directory(public_tmp):
    """Entries name, as their socket: a regular file, a symbolic link to a file, another user's
    socket (all in the directory), and our socket elsewhere: all stay. Our dead socket in the
    directory goes."""
    runtime = owned_dir(os.path.join(public_tmp, "runtime"), VICTIM)
    directory = owned_dir(os.path.join(runtime, "lsca"), VICTIM)
    instances = owned_dir(os.path.join(directory, "instances"), VICTIM)
    elsewhere = owned_dir(os.path.join(public_tmp, "elsewhere"), VICTIM)
    kept = {
        "regular": owned_file(os.path.join(directory, "regular.sock"), VICTIM),
        "link": os.path.join(directory, "link.sock"),
        "foreign": bound_socket(os.path.join(directory, "foreign.sock"), ATTACKER),
        "outside": bound_socket(os.path.join(elsewhere, "supervisor.sock"), VICTIM),
    }
    target = owned_file(os.path.join(elsewhere, "victim"), VICTIM)
    os.symlink(target, kept["link"])
    os.lchown(kept["link"], VICTIM, VICTIM)
    dead = bound_socket(os.path.join(directory, "dead.sock"), VICTIM)
    for i, path in enumerate(list(kept.values()) + [dead]):
        os.chown(write_entry(instances, f"{i}.json", path), VICTIM, VICTIM)

    result = run_briefly(as_user(VICTIM) + LSCA + ["cleanup"], env_without_runtime_dir(XDG_RUNTIME_DIR=runtime))
    assert result.returncode == 0, result
    assert "of 5 dead supervisor(s)" in result.stdout
    for name, path in kept.items():
        assert os.path.lexists(path), name
    assert open(target).read() == "precious\n"
    assert not os.path.lexists(dead)
    assert os.listdir(instances) == []


MAKE_OBJECTS = ("import json, os; from lsca import ipc; "
                "print(json.dumps({'pid': os.getpid(), 'shm': ipc.Shard().id, 'sem': ipc.create_semaphores(1)}))")


@pytest.fixture
def attackers_objects():
    """An LSCA-keyed segment and semaphore set created by ATTACKER (whose process has exited)."""
    made = subprocess.run(as_user(ATTACKER) + [sys.executable, "-c", MAKE_OBJECTS], env=clean_env(),
                          capture_output=True, check=True, timeout=TIMEOUT_S)
    objects = json.loads(made.stdout)
    yield objects
    ipc.remove_shm(objects["shm"])
    ipc.remove_semaphores(objects["sem"])


def test_root_cleanup_removes_only_objects_it_created(tmp_path, attackers_objects):
    """An entry (even with the creator's pid) naming another uid's objects leaves them; an entry
    naming root's own objects of a dead instance removes them."""
    state = owned_dir(str(tmp_path / "state"), 0)
    write_entry(state, "1.json", "/nonexistent", pid=attackers_objects["pid"],
                shm=[attackers_objects["shm"]], sem=[attackers_objects["sem"]])
    shard, semid = ipc.Shard(), ipc.create_semaphores(1)
    try:
        write_entry(state, "2.json", "/nonexistent", shm=[shard.id], sem=[semid])
        result = run_briefly(LSCA + ["cleanup"], {**clean_env(), "LSCA_STATE_DIR": state})
        assert result.returncode == 0, result
        assert "removed 1 shared-memory segment(s) and 1 semaphore set(s) of 2 dead" in result.stdout
        present = ipc.lsca_objects()
        assert attackers_objects["shm"] in present["shm"] and attackers_objects["sem"] in present["sem"]
        assert shard.id not in present["shm"] and semid not in present["sem"]
    finally:
        shard.remove()
        ipc.remove_semaphores(semid)


GARBAGE = {
    "not-json.json": "{not json",
    "a-list.json": "[]",
    "pid-text.json": {"pid": "1", "start_time": 1.0, "socket": "/x", "shm": [], "sem": []},
    "pid-bool.json": {"pid": True, "start_time": 1.0, "socket": "/x", "shm": [], "sem": []},
    "pid-negative.json": {"pid": -1, "start_time": 1.0, "socket": "/x", "shm": [], "sem": []},
    "no-start.json": {"pid": 1 << 30, "start_time": None, "socket": "/x", "shm": [], "sem": []},
    "shm-text.json": {"pid": 1 << 30, "start_time": 1.0, "socket": "/x", "shm": ["1"], "sem": []},
    "socket-list.json": {"pid": 1 << 30, "start_time": 1.0, "socket": ["/x"], "shm": [], "sem": []},
}


def test_garbage_registry_entries_are_skipped(tmp_path):
    """Malformed entries, a FIFO (never opened blocking), a directory and a symbolic link to a
    valid entry (never followed) are skipped and logged; nothing is removed."""
    state = owned_dir(str(tmp_path / "state"), 0)
    for name, content in GARBAGE.items():
        with open(os.path.join(state, name), "w") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
    os.mkfifo(os.path.join(state, "fifo.json"))
    os.mkdir(os.path.join(state, "dir.json"))
    shard = ipc.Shard()
    try:
        valid = write_entry(str(tmp_path), "elsewhere.json", "/nonexistent", shm=[shard.id])
        os.symlink(valid, os.path.join(state, "link.json"))
        names = sorted(os.listdir(state))
        result = run_briefly(LSCA + ["cleanup"], {**clean_env(), "LSCA_STATE_DIR": state})
        assert result.returncode == 0, result
        assert "of 0 dead supervisor(s)" in result.stdout
        assert result.stderr.count("registry: skipping") == len(names)
        assert sorted(os.listdir(state)) == names
        assert shard.id in ipc.lsca_objects()["shm"]
    finally:
        shard.remove()


# ---- whom the agent talks to ----

FAKE_SUPERVISOR = r'''
import os, socket, sys
path, welcome, hello_size = sys.argv[1], bytes.fromhex(sys.argv[2]), int(sys.argv[3])
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
os.chmod(path, 0o666)
listener.listen(16)
print("ready", flush=True)
channels = []
while True:
    conn, _ = listener.accept()
    conn.settimeout(5)
    try:
        hello = b""
        while len(hello) < hello_size:
            chunk = conn.recv(hello_size - len(hello))
            if not chunk:
                break
            hello += chunk
        if len(hello) == hello_size:
            print("hello", flush=True)
            mine, theirs = socket.socketpair()
            socket.send_fds(conn, [welcome], [theirs.fileno()])
            theirs.close()
            channels.append(mine)
    except OSError:
        pass
    finally:
        conn.close()
'''


class FakeSupervisor:
    """Answers every hello with a welcome naming shmid (and a descriptor channel), as uid user."""

    def __init__(self, directory, shmid, user=None):
        script = os.path.join(directory, "fake_supervisor.py")
        with open(script, "w") as f:
            f.write(FAKE_SUPERVISOR)
        os.chmod(script, 0o644)
        home = owned_dir(os.path.join(directory, "fake"), ATTACKER if user is not None else 0, 0o755)
        self.socket = os.path.join(home, "supervisor.sock")
        welcome = pack_welcome(0, supervisor_pid=os.getpid(), shmid=shmid)
        as_uid = dict(user=user, group=user, extra_groups=[]) if user is not None else {}
        self.process = subprocess.Popen([SYSTEM_PYTHON, script, self.socket, welcome.hex(), str(HELLO_SIZE)],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, **as_uid)
        if self.process.stdout.readline() != b"ready\n":
            self.stop()
            raise RuntimeError("the fake supervisor did not start")

    def stop(self):
        """Ends it; returns the number of hellos it received."""
        self.process.kill()
        self.process.wait()
        return self.process.stdout.read().count(b"hello")


PROGRAM = ["/bin/sh", "-c", "echo written > out && cat out"]


@functools.lru_cache(maxsize=None)
def public_agent():
    """The agent where every user can load it (an install under /root is not readable by others)."""
    directory = tempfile.mkdtemp(prefix="lsca-private-agent-")
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "liblsca_agent.so")
    shutil.copy(agent_path(), path)
    os.chmod(path, 0o755)
    atexit.register(shutil.rmtree, directory, True)
    return path


def run_program(sock, cwd, user=None, **extra):
    env = clean_env()
    env.update(LD_PRELOAD=public_agent(), LSCA_SOCKET=sock, **extra)
    as_uid = dict(user=user, group=user, extra_groups=[]) if user is not None else {}
    return subprocess.run(PROGRAM, cwd=cwd, env=env, capture_output=True, timeout=TIMEOUT_S, **as_uid)


def a_valid_shard(uid=None, mode=0o600):
    """A segment with a header the agent accepts: only its owner or mode can make it refuse."""
    shard = ipc.Shard(uid, uid)
    fill_header(shard.shm)
    shard.shm.mode = mode
    return shard


def fill_header(shm):
    header = shard_header(shm.address)
    header.magic, header.abi_version, header.shard_size, header.nslots = MAGIC, ABI_VERSION, SHARD_SIZE, SLOTS


def refusal_line(sock, reason):
    return (f"lsca: cannot register with the supervisor at {sock}: {reason} "
            f"(LSCA_REQUIRED=1, not starting the program)")


@pytest.mark.parametrize("user", [None, VICTIM], ids=["root", "third uid"])
def test_a_supervisor_of_another_user_is_refused(public_tmp, user):
    """Before: the agent registered with whoever listened on the socket and handed it its calls
    (here nobody answers them: the program hangs). Now it checks SO_PEERCRED before its hello."""
    uid = 0 if user is None else user
    work = owned_dir(os.path.join(public_tmp, "work"), uid, 0o755)
    shard, fake = a_valid_shard(user), None
    try:
        fake = FakeSupervisor(public_tmp, shard.id, user=ATTACKER)
        native = run_program(fake.socket, work, user)
        assert (native.returncode, native.stdout, native.stderr) == (0, b"written\n", b"")
        required = run_program(fake.socket, work, user, LSCA_REQUIRED="1")
        assert required.returncode == 126 and required.stdout == b""
        assert required.stderr.decode().splitlines() == [
            refusal_line(fake.socket, f"it runs as uid {ATTACKER}, not root or yours (uid {uid})")]
        closed = run_program(fake.socket, work, user, LSCA_FAIL_CLOSED="1")
        assert closed.returncode != 0 and b"written" not in closed.stdout
        assert b"LSCA_FAIL_CLOSED=1: proxied calls fail with EACCES" in closed.stderr
    finally:
        hellos = fake.stop() if fake else None
        shard.remove()
    assert hellos == 0          # not even our pid and session went to it


SHARDS = {
    "another user's": lambda: a_valid_shard(ATTACKER),
    "open to all": lambda: a_valid_shard(mode=0o666),
}


@pytest.mark.parametrize("kind", list(SHARDS) + ["made by another user"])
def test_a_shard_not_private_to_root_or_the_program_is_refused(public_tmp, attackers_objects, kind):
    """A supervisor we trust (root) names a segment someone else owns, made, or may attach."""
    if kind == "made by another user":
        shm = sysv_ipc.attach(attackers_objects["shm"])
        fill_header(shm)
        shm.uid = 0             # root's now, but ATTACKER created it
        shmid, owner, creator, mode = shm.id, 0, ATTACKER, 0o600
        shm.detach()
        shard = None
    else:
        shard = SHARDS[kind]()
        shmid, owner, creator, mode = shard.id, shard.shm.uid, 0, shard.shm.mode & 0o777
    fake = None
    try:
        work = owned_dir(os.path.join(public_tmp, "work"), 0, 0o755)
        fake = FakeSupervisor(public_tmp, shmid)
        native = run_program(fake.socket, work)
        assert (native.returncode, native.stdout, native.stderr) == (0, b"written\n", b"")
        required = run_program(fake.socket, work, LSCA_REQUIRED="1")
        assert required.returncode == 126
        assert required.stderr.decode().splitlines() == [refusal_line(
            fake.socket, f"its shard is owned by uid {owner} (created by uid {creator}, mode {mode:03o}): "
                         f"not private to root or you (uid 0)")]
    finally:
        if fake:
            fake.stop()
        if shard is not None:
            shard.remove()
