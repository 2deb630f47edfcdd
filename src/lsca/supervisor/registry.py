"""What each running supervisor owns, kept on disk, so that the SysV objects of one
that died (kill -9 included) can be found and removed by the next start or by
`lsca cleanup`. One JSON file per instance: pid, start time, socket, semaphore set ids.
Its shared-memory segments (one per client) are not listed, which would rewrite the file
twice per registration: /proc/sysvipc/shm names each segment's creator pid.
"""
import errno
import json
import logging
import os
import stat

import psutil
import sysv_ipc

from lsca import ipc, statedir
from lsca.abi import MAGIC, SHARD_SIZE, ffi, lib, shard_header

log = logging.getLogger("lsca.supervisor")


def default_directory():
    """Per-user: a root supervisor's instances are not a user's to clean, and vice versa.
    Made when missing and verified private (StateDirError otherwise)."""
    return statedir.instances_directory()


def _start_time(pid):
    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


class Registry:
    """The record of this supervisor's objects, rewritten (atomically) on every change."""

    def __init__(self, socket_path, directory=None):
        self.directory = statedir.ensure_private(directory) if directory else default_directory()
        self.pid = os.getpid()
        self.path = os.path.join(self.directory, f"{self.pid}.json")
        self.state = {"pid": self.pid, "start_time": _start_time(self.pid), "socket": socket_path,
                      "shm": [], "sem": []}
        self._write()

    def add(self, kind, ident):
        self.state[kind].append(ident)
        self._write()

    def discard(self, kind, ident):
        if ident in self.state[kind]:
            self.state[kind].remove(ident)
            self._write()

    def _write(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state, f)
        os.replace(tmp, self.path)

    def close(self):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _alive(state):
    start = _start_time(state["pid"])
    return start is not None and abs(start - state["start_time"]) < 1.0


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_entry(state):
    """Whether a registry entry has the shape Registry writes; nothing else is acted on."""
    return (isinstance(state, dict)
            and _is_int(state.get("pid")) and state["pid"] > 0
            and isinstance(state.get("start_time"), (int, float)) and not isinstance(state["start_time"], bool)
            and all(isinstance(state.get(kind), list) and all(_is_int(i) and i >= 0 for i in state[kind])
                    for kind in ("shm", "sem"))
            and isinstance(state.get("socket"), str))


def _read_entry(path):
    """The entry at path, or None (logged) when it is not a regular file of ours holding a
    valid entry. Never follows a symbolic link nor blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno != errno.ENOENT:     # gone: an instance that stopped meanwhile
            log.warning("registry: skipping %s: %s", path, e.strerror)
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        log.warning("registry: skipping %s: not a regular file of uid %d", path, os.geteuid())
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            state = json.load(f)        # whole: Registry writes a temporary file and renames it
        except (OSError, ValueError) as e:
            log.warning("registry: skipping %s: %s", path, e)
            return None
    if not _valid_entry(state):
        log.warning("registry: skipping %s: not a registry entry", path)
        return None
    return state


def _own_objects(kind):
    """{id: row} of the LSCA objects (key prefix) this euid created: a cleanup never removes an
    object of someone else, whatever an entry names."""
    euid = os.geteuid()
    present = set(ipc.lsca_objects()[kind])
    return {row[f"{kind}id"]: row for row in ipc._table(kind)
            if row[f"{kind}id"] in present and row["cuid"] == euid}


def _remove_socket(path):
    """Unlink a dead instance's socket: only one directly in the private socket directory,
    and only if it is a socket of ours (lstat: a planted link or file is never touched)."""
    directory = statedir.existing_private_directory()
    if directory is None or os.path.dirname(os.path.abspath(path)) != directory:
        return
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISSOCK(st.st_mode) and st.st_uid == os.geteuid():
        try:
            os.unlink(path)
        except OSError:
            pass


def _fail_waiting_clients(shmid):
    """A client may sleep on a call nobody will answer now: fail it with EIO and wake it."""
    try:
        shm = sysv_ipc.attach(shmid)
    except sysv_ipc.Error:
        return
    try:
        if shm.size == SHARD_SIZE and shard_header(shm.address).magic == MAGIC:
            lib.lsca_shard_fail_all(ffi.cast("void *", shm.address))
    finally:
        shm.detach()


def cleanup_dead(directory=None):
    """Remove every object listed by instances whose process is gone. Returns
    (instances, segments, semaphore sets) removed."""
    directory = statedir.ensure_private(directory) if directory else default_directory()
    segments_ours, sets_ours = _own_objects("shm"), _own_objects("sem")
    instances = segments = sets = 0
    entries = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".json"):
            state = _read_entry(os.path.join(directory, name))
            if state is not None:
                entries[name] = state
    # A dead instance's pid may name a live instance now: the segments it creates are its own.
    live = {state["pid"] for state in entries.values() if _alive(state)}
    for name, state in entries.items():
        path = os.path.join(directory, name)
        if state["pid"] in live:
            continue
        # What it created (its creator pid), and what an older version listed.
        created = {shmid for shmid, row in segments_ours.items() if row["cpid"] == state["pid"]}
        for shmid in sorted(set(state["shm"]) | created):
            if segments_ours.pop(shmid, None):
                _fail_waiting_clients(shmid)
                ipc.remove_shm(shmid)
                segments += 1
        for semid in state["sem"]:
            if sets_ours.pop(semid, None):
                ipc.remove_semaphores(semid)
                sets += 1
        _remove_socket(state["socket"])
        os.unlink(path)
        instances += 1
    if instances:
        log.warning("removed %d shared-memory segment(s) and %d semaphore set(s) of %d dead supervisor(s)",
                    segments, sets, instances)
    return instances, segments, sets
