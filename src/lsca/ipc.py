"""SysV objects of LSCA: shards (shared memory) and semaphore sets.

Every object gets a key with LSCA's prefix, so what an instance left behind can be
found and removed. Shared memory goes through sysv_ipc; semaphore sets with more
than one semaphore through the cffi helpers (sysv_ipc's sets hold one).
"""
import errno
import os
import random

import sysv_ipc

from lsca.abi import IPC_KEY_PREFIX, SHARD_SIZE, is_lsca_key, lib, ffi

PROC_SYSVIPC = "/proc/sysvipc"


def _fresh_keys():
    while True:
        yield IPC_KEY_PREFIX | random.randrange(1, 0x10000)


class Shard:
    """A shared-memory segment (a client's shard by default), attached here. The kernel hands
    out a new segment zero-filled, page by page as it is touched: writing zeros over all of it
    would fault in every page of a 4 MiB shard (ms per registration) that a client never uses."""

    def __init__(self, uid=None, gid=None, size=SHARD_SIZE):
        owner = (-1, -1) if uid is None or uid == os.geteuid() else (uid, gid)
        for key in _fresh_keys():
            shmid = lib.lsca_shm_create(key, size, 0o600, *owner)
            if shmid >= 0:
                break
            if ffi.errno != errno.EEXIST:
                raise OSError(ffi.errno, f"shmget: {os.strerror(ffi.errno)}")
        try:
            self.shm = sysv_ipc.SharedMemory(key)       # attaches; only its creator initializes
        except BaseException:
            remove_shm(shmid)
            raise
        self.id = self.shm.id
        self.address = self.shm.address

    def remove(self):
        try:
            self.shm.detach()
        except sysv_ipc.Error:
            pass
        remove_shm(self.id)


def create_semaphores(nsems, uid=None, gid=None, mode=0o600):
    """A semaphore set of nsems semaphores, all 0, owned by uid/gid. Returns its id."""
    uid = os.geteuid() if uid is None else uid
    gid = os.getegid() if gid is None else gid
    for key in _fresh_keys():
        semid = lib.lsca_sem_create(key, nsems, mode, uid, gid)
        if semid >= 0:
            return semid
        if ffi.errno != errno.EEXIST:
            raise OSError(ffi.errno, f"semget: {os.strerror(ffi.errno)}")


def post(semid, num):
    if lib.lsca_sem_post(semid, num) < 0:
        raise OSError(ffi.errno, os.strerror(ffi.errno))


def remove_semaphores(semid):
    if lib.lsca_sem_remove(semid) < 0 and ffi.errno not in (errno.EINVAL, errno.EIDRM):
        raise OSError(ffi.errno, os.strerror(ffi.errno))


def remove_shm(shmid):
    try:
        sysv_ipc.remove_shared_memory(shmid)
    except sysv_ipc.ExistentialError:
        pass


def _table(name):
    """Rows of /proc/sysvipc/<name> as dicts (key, id, perms, cpid ...)."""
    try:
        with open(os.path.join(PROC_SYSVIPC, name)) as f:
            header, *lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    fields = header.split()
    return [dict(zip(fields, (int(v) for v in line.split()))) for line in lines]


def lsca_objects():
    """Every SysV object on this machine with LSCA's key prefix: {"shm": [ids], "sem": [ids]}."""
    return {
        "shm": [row["shmid"] for row in _table("shm") if is_lsca_key(row["key"] & 0xFFFFFFFF)],
        "sem": [row["semid"] for row in _table("sem") if is_lsca_key(row["key"] & 0xFFFFFFFF)],
    }
