"""What each running supervisor owns, kept on disk, so that the SysV objects of one
that died (kill -9 included) can be found and removed by the next start or by
`lsca cleanup`. One JSON file per instance: pid, start time, socket, object ids.
"""
import json
import logging
import os

import psutil
import sysv_ipc

from lsca import ipc
from lsca.abi import MAGIC, SHARD_SIZE, ffi, lib, shard_header

log = logging.getLogger("lsca.supervisor")


def default_directory():
    """Per-user: a root supervisor's instances are not a user's to clean, and vice versa."""
    if os.environ.get("LSCA_STATE_DIR"):
        return os.environ["LSCA_STATE_DIR"]
    if os.geteuid() == 0:
        return "/run/lsca/instances"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = os.path.join(runtime, "lsca") if runtime else f"/tmp/lsca-{os.geteuid()}"
    return os.path.join(base, "instances")


def _start_time(pid):
    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


class Registry:
    """The record of this supervisor's objects, rewritten (atomically) on every change."""

    def __init__(self, socket_path, directory=None):
        self.directory = directory or default_directory()
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
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
    start = _start_time(state.get("pid", -1))
    return start is not None and state.get("start_time") is not None and abs(start - state["start_time"]) < 1.0


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
    directory = directory or default_directory()
    if not os.path.isdir(directory):
        return 0, 0, 0
    present = ipc.lsca_objects()        # only objects that still carry LSCA's key prefix
    instances = segments = sets = 0
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path) as f:
                state = json.load(f)
        except (OSError, ValueError):
            continue                    # being written, or not ours to judge
        if _alive(state):
            continue
        # Also what it created but could not record before it was killed (its creator pid).
        created = {row["shmid"] for row in ipc._table("shm") if row["cpid"] == state.get("pid")}
        for shmid in sorted(set(state.get("shm", [])) | created):
            if shmid in present["shm"]:
                _fail_waiting_clients(shmid)
                ipc.remove_shm(shmid)
                segments += 1
        for semid in state.get("sem", []):
            if semid in present["sem"]:
                ipc.remove_semaphores(semid)
                sets += 1
        sock = state.get("socket")
        if sock and os.path.exists(sock):
            try:
                os.unlink(sock)
            except OSError:
                pass
        os.unlink(path)
        instances += 1
    if instances:
        log.warning("removed %d shared-memory segment(s) and %d semaphore set(s) of %d dead supervisor(s)",
                    segments, sets, instances)
    return instances, segments, sets
