"""Acting as the client: its thread's credentials, umask and cwd, read fresh for
every call (a program may drop privileges at any moment, by any means), and a
check that this worker can act with exactly those credentials.

A root worker switches its filesystem ids and groups for the call, in this
thread only; a worker running as a user can act only for clients whose
credentials equal its own, and hands every other call back to run natively.
"""
import os
from contextlib import contextmanager

from lsca.abi import ffi, lib
from lsca.workers.fdcache import Declined

# Capabilities the kernel raises or drops with the filesystem uid (CAP_FS_MASK).
FS_CAPS = sum(1 << c for c in (0, 1, 2, 3, 4, 27, 32))   # CHOWN DAC_OVERRIDE DAC_READ_SEARCH
#                                                          FOWNER FSETID MKNOD MAC_OVERRIDE
PROC = "/proc"


class Creds:
    __slots__ = ("uids", "gids", "groups", "umask", "cap_eff", "cap_prm")

    def __init__(self, uids, gids, groups, umask, cap_eff, cap_prm):
        self.uids = uids                # real, effective, saved, filesystem
        self.gids = gids
        self.groups = groups
        self.umask = umask
        self.cap_eff = cap_eff
        self.cap_prm = cap_prm


def task_dir(client, tid):
    """/proc/PID/task/TID of the client, through its bound /proc/PID descriptor (tid comes from
    the shard, so it is untrusted: a tid that is not a thread of the client has no entry there
    and read_creds falls back to the process)."""
    return f"{client.proc}/task/{int(tid)}" if tid > 0 else client.proc


def within_registration(creds, identity):
    """True when a thread's credentials are no more than the identity its process registered
    with. Root's registration covers anything (the thread's own credentials are taken per
    call); a user's covers exactly that user: every uid and gid the same, no group it did not
    have, no capability (a set-id or file-capability exec gives them, and ends the registration)."""
    if identity is None or identity.uid == 0:
        return True
    return set(creds.uids) == {identity.uid} and set(creds.gids) == {identity.gid} and \
        set(creds.groups) <= set(identity.groups) and creds.cap_eff == 0 and creds.cap_prm == 0


def _field(status, name):
    start = status.index(name) + len(name)
    return status[start:status.index(b"\n", start)]


def read_creds(task):
    fd = os.open(f"{task}/status", os.O_RDONLY)
    try:
        status = os.read(fd, 16384)
    finally:
        os.close(fd)
    return Creds(
        tuple(map(int, _field(status, b"\nUid:").split())),
        tuple(map(int, _field(status, b"\nGid:").split())),
        tuple(sorted(map(int, _field(status, b"\nGroups:").split()))),
        int(_field(status, b"\nUmask:"), 8),
        int(_field(status, b"\nCapEff:"), 16),
        int(_field(status, b"\nCapPrm:"), 16),
    )


class Identity:
    """How this worker acts for a client."""

    def __init__(self):
        self.root = os.geteuid() == 0
        self.own = read_creds(f"{PROC}/self")
        self.own_groups = os.getgroups()
        root_dir = os.stat("/")
        self.root_id = (root_dir.st_dev, root_dir.st_ino)
        # Between calls the worker's cwd is "/": it never holds (pins, or lends /proc/self/cwd
        # to) a client's directory.
        self.root_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def enter(self, creds, real_ids=False):
        """Take the client's filesystem identity; Declined when it cannot be taken exactly.
        real_ids: the access(2) rule, which checks with the real uid/gid."""
        if real_ids:
            fsuid, fsgid = creds.uids[0], creds.gids[0]
            fs_caps = (creds.cap_prm if fsuid == 0 else 0) & FS_CAPS
        else:
            fsuid, fsgid = creds.uids[3], creds.gids[3]
            fs_caps = creds.cap_eff & FS_CAPS
        if self.root:
            # After setfsuid the kernel holds all filesystem capabilities for fsuid 0, none otherwise.
            if fs_caps != (FS_CAPS if fsuid == 0 else 0):
                raise Declined("client's filesystem capabilities differ from what setfsuid gives")
            groups = ffi.new("unsigned[]", list(creds.groups) or [0])
            if lib.lsca_become(fsuid, fsgid, len(creds.groups), groups) < 0:
                raise Declined("cannot take the client's credentials")
        else:
            own = self.own
            mine = (own.uids[0], own.gids[0]) if real_ids else (own.uids[3], own.gids[3])
            if (fsuid, fsgid) != mine or creds.groups != own.groups or \
                    fs_caps != ((own.cap_prm if real_ids and own.uids[0] == 0 else own.cap_eff) & FS_CAPS):
                raise Declined("client credentials differ from this worker's")
        lib.lsca_use_umask(creds.umask)     # process-wide; set only when it differs

    def leave(self):
        if self.root:
            groups = ffi.new("unsigned[]", self.own_groups or [0])
            lib.lsca_become(0, 0, len(self.own_groups), groups)

    def same_root(self, task):
        """False for a chrooted client: its absolute paths are not ours."""
        st = os.stat(f"{task}/root")
        return (st.st_dev, st.st_ino) == self.root_id


_identity = None


def setup_compiled_route():
    """Tell the compiled path route (worker_path.c) who this worker is, as Identity knows it."""
    me = identity()
    own = me.own
    groups = list(me.own_groups) if me.root else list(own.groups)    # leave() / the exact match
    lib.lsca_path_setup(int(me.root), me.root_id[0], me.root_id[1], os.stat(PROC).st_dev, own.uids[3],
                        own.gids[3], own.cap_eff & FS_CAPS, len(groups), ffi.new("unsigned[]", groups or [0]))


def identity():
    global _identity
    if _identity is None:
        _identity = Identity()
    return _identity


@contextmanager
def acting_as(client, slot, in_cwd, real_ids=False):
    """Run the body as the client's calling thread: its cwd (when in_cwd), then its credentials."""
    me = identity()
    task = task_dir(client, slot.owner_tid)
    try:
        try:
            creds = read_creds(task)
        except FileNotFoundError:
            task = task_dir(client, 0)
            creds = read_creds(task)
        # After the read: the credentials read were the registered process's (not a reused pid's).
        if not within_registration(creds, client.identity) or not lib.lsca_client_authorized(client.fast):
            client.fast.revoked = 1
            raise Declined("the calling thread has more authority than its process registered with")
        if not me.same_root(task):
            raise Declined("chrooted client")
        if in_cwd:
            # As ourselves: entering is not a permission the program needs (it is already there).
            cwd = os.open(f"{task}/cwd", os.O_PATH | os.O_DIRECTORY)
            try:
                if os.fstat(cwd).st_dev == client.proc_dev:
                    raise Declined("cwd in /proc: names there refer to the calling process")
                os.fchdir(cwd)
            finally:
                os.close(cwd)
    except FileNotFoundError:
        raise Declined("client thread is gone")
    try:
        me.enter(creds, real_ids)
        try:
            yield creds
        finally:
            me.leave()
    finally:
        if in_cwd:
            os.fchdir(me.root_fd)
