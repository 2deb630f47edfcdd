"""Who a registering process is, decided from the kernel alone, once.

The identity a client is served with is captured here at registration: the
connector's credentials (SO_PEERCRED), the sender of the hello (SCM_CREDENTIALS,
checked per message by the control socket) and the process's credentials now,
read through a /proc directory bound to its pidfd. A worker never acts with more
than this identity (see lsca.workers.authority), whatever the shard says later.
"""
import errno
import os
import select

from lsca.identity import Identity

PROC = "/proc"


class Refused(Exception):
    """A registration this supervisor will not serve: errno for the agent, reason for the log."""

    def __init__(self, errno_value, reason):
        super().__init__(reason)
        self.errno = errno_value


def exited(pidfd):
    """True once the process behind pidfd has exited (its pid may be reused after that)."""
    try:
        return bool(select.select([pidfd], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def open_proc_dir(pid, pidfd):
    """/proc/PID as an O_PATH descriptor that is known to be the process behind pidfd: the
    directory is bound to the pid it was opened for, so a reused number never reaches it."""
    try:
        procfd = os.open(f"{PROC}/{pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Refused(errno.ESRCH, "the process is gone")
    if exited(pidfd):
        # Opened after the process exited: the number may already name another process.
        os.close(procfd)
        raise Refused(errno.ESRCH, "the process is gone")
    return procfd


def _status_field(status, name):
    start = status.index(name) + len(name)
    return status[start:status.index(b"\n", start)].split()


def read_status(procfd):
    """Uid:, Gid: (real, effective, saved, fs), Groups:, CapEff/CapPrm/CapAmb of the process."""
    fd = os.open("status", os.O_RDONLY | os.O_CLOEXEC, dir_fd=procfd)
    try:
        status = os.read(fd, 16384)
    finally:
        os.close(fd)
    return {
        "uids": tuple(map(int, _status_field(status, b"\nUid:"))),
        "gids": tuple(map(int, _status_field(status, b"\nGid:"))),
        "groups": tuple(map(int, _status_field(status, b"\nGroups:"))),
        "caps": tuple(int(_status_field(status, name)[0], 16)
                      for name in (b"\nCapEff:", b"\nCapPrm:", b"\nCapAmb:")),
    }


def dump_owner(procfd):
    """(uid, gid) the kernel shows as the owner of /proc/PID/status: the process's euid/egid
    while it is dumpable, root once it exec'd a set-uid/set-gid/file-capability image or made
    itself undumpable (the directory itself always shows euid/egid); (0, 0) once it is gone."""
    try:
        st = os.stat("status", dir_fd=procfd, follow_symlinks=False)
    except (FileNotFoundError, ProcessLookupError):
        return 0, 0
    return st.st_uid, st.st_gid


def admit(supervisor_euid, peer_uid, peer_gid, procfd):
    """The identity to serve the process behind procfd with, or Refused.

    peer_uid/peer_gid: SO_PEERCRED of the connection (effective ids at connect). The process
    must still be exactly that user now: all of its uids and gids equal to those, dumpable,
    and, unless it is root, without capabilities (a user could not ptrace such a process
    natively, so neither may a worker on that user's behalf)."""
    if supervisor_euid != 0 and peer_uid != supervisor_euid:
        raise Refused(errno.EACCES, f"uid {peer_uid} is not this supervisor's")
    try:
        status = read_status(procfd)
    except (OSError, ValueError) as e:
        raise Refused(errno.ESRCH, f"cannot read its credentials: {e}")
    if peer_uid == 0:
        # Root may act as root; the worker still takes the calling thread's credentials per call.
        return Identity(0, peer_gid, status["groups"])
    if set(status["uids"]) != {peer_uid} or set(status["gids"]) != {peer_gid}:
        raise Refused(errno.EPERM, f"credentials changed since it connected (uids {status['uids']}, "
                                   f"gids {status['gids']}; connected as {peer_uid}/{peer_gid})")
    if any(status["caps"]):
        raise Refused(errno.EPERM, "a process of a non-root user with capabilities runs natively")
    if dump_owner(procfd) != (peer_uid, peer_gid):
        raise Refused(errno.EPERM, "the process is not dumpable (a set-id image, or it asked so)")
    return Identity(peer_uid, peer_gid, status["groups"])
