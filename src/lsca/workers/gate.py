"""The policy, where a worker applies it: on the place a call actually acts on.

A path is resolved the way the kernel resolves it, but in steps the worker can see:
the directories of the path in one openat(O_PATH|O_DIRECTORY) (the kernel follows
their symlinks atomically and the worker then holds the directory itself), and a
final symlink, for calls that follow one, one link at a time. The policy is decided
on the absolute name of that place, and the call then acts on (directory fd, last
name), so a directory swapped for a symlink after the check cannot redirect it.
An open is checked once more on the file it opened (the descriptor's own name).
"""
import errno
import logging
import os

from lsca import ops
from lsca.abi import OP_NAMES, ffi
from lsca.opclasses import op_mask
from lsca.workers.calls import as_int, check, open_nomagic, paths
from lsca.workers.creds import read_creds, task_dir
from lsca.workers.fdcache import Declined

log = logging.getLogger("lsca.policy")

AT_FDCWD = -100
MAX_HOPS = 40               # the kernel's ELOOP limit for one resolution
O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


# Calls that ran natively in the program already and only report: no policy.
REPORTS = {ops.BY_CODE[code].name for code in ops.REPORTS}
# Ops whose first argument is the client's descriptor: decided on the name of its file.
DESCRIPTOR_OPS = ops.FD_ARG


class Gate:
    def __init__(self, policy):
        self.policy = policy
        self.ops = policy.ops_with_rules() - REPORTS
        self.codes = {code for code, name in OP_NAMES.items() if name in self.ops}
        self.mask = op_mask(self.ops)           # ops the compiled path must leave to us
        self.needs_uid = any(rule.uids is not None for rule in policy.rules)
        self.last_errno = errno.EACCES

    def covers(self, op):
        return op in self.codes

    def check(self, client, slot, paths, again=False):
        """Decide the call on its resolved paths; raises OSError(errno) when denied.
        again: a second look at the same call (an open's result): say only a denial."""
        op = OP_NAMES.get(slot.op, "?")
        uid = self._uid(client, slot) if self.needs_uid else -1
        program = bytes(ffi.string(client.fast.comm)).decode(errors="replace")
        decision = self.policy.decide(op, [os.fsdecode(p) for p in paths], uid, program)
        if decision.action == "deny" or (decision.log and not again):
            log.warning("policy: %s %s %s by pid %d (%s)%s: %s", decision.action, op,
                        " ".join(os.fsdecode(p) for p in paths) or "-", client.pid, program,
                        f" uid {uid}" if uid >= 0 else "", decision.rule)
        if decision.action == "deny":
            self.last_errno = decision.errno
            raise OSError(decision.errno, os.strerror(decision.errno))

    def check_lexical(self, client, slot, paths):
        """For a call that will run natively (declined): decide on the names as given,
        made absolute; True when it may run."""
        try:
            self.check(client, slot, paths)
            return True
        except OSError:
            return False

    def _uid(self, client, slot):
        try:
            return read_creds(task_dir(client, slot.owner_tid)).uids[0]
        except (OSError, ValueError):
            return -1


def _split(path):
    """(directory part, last name, had a trailing slash) of a non-empty path."""
    stripped = path.rstrip(b"/")
    if not stripped:
        return b"/", b".", False
    trailing = len(stripped) != len(path)
    head, sep, name = stripped.rpartition(b"/")
    if not sep:
        return b".", name, trailing
    return head or b"/", name, trailing


def fd_path(fd):
    """The absolute name of what fd is open on (as bytes)."""
    return os.fsencode(os.readlink(f"/proc/self/fd/{fd}"))


def resolve(client, base, path, follow, keep, named=True):
    """The place path names from base (a directory fd or AT_FDCWD, the client's cwd being
    entered): (directory fd, last name, absolute name; None unless named: only a policy needs
    it). The directory fd goes to keep (closed after the call). OSError as the kernel would
    fail the call's resolution."""
    if not follow and (path.endswith(b"/") or not path.strip(b"/")):
        # A last name the call does not follow, yet must be a directory ("ln/"), or "/" itself:
        # the kernel's own rules (ENOTDIR, EEXIST, EBUSY, ...), never the link's target.
        raise Declined("a trailing slash on a name the call does not follow")
    hops = 0
    while True:
        head, name, trailing = _split(path)
        dfd = check(open_nomagic(base, head, O_PATH_DIR))
        keep.append(dfd)
        if os.fstat(dfd).st_dev == client.proc_dev:
            raise Declined("a /proc place describes the calling process")
        if not (follow or trailing) or name in (b".", b".."):
            break
        try:
            target = os.readlink(name, dir_fd=dfd)
        except OSError:
            break                       # not a symlink (or missing): the place is this name
        hops += 1
        if hops > MAX_HOPS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
        path, base = target + (b"/" if trailing else b""), dfd
    full = os.path.normpath(os.path.join(fd_path(dfd), name)) if named else None
    return dfd, name + (b"/" if trailing else b""), full


def descriptor_paths(client, slot):
    """The name of the file the call's descriptor is open on (none when it is not open)."""
    entry = client.fds.get(as_int(slot.args[0]))
    return [fd_path(entry.fd)] if entry.fd >= 0 else []


def lexical_paths(client, slot):
    """The names of a call as given, made absolute against the client's cwd or dirfd (for
    a call that will run natively: the worker cannot hold what it will act on)."""
    line = ops.BY_CODE.get(slot.op)
    try:
        if line is None:
            return []
        start, count = line.path_layout(slot.args)
        if slot.op in DESCRIPTOR_OPS or (line.npaths and not count):
            # A descriptor call, or a path call without its path (futimens): the descriptor.
            fd = as_int(slot.args[0] if slot.op in DESCRIPTOR_OPS else slot.args[line.dirfd_args[0]])
            return [os.fsencode(os.readlink(f"{client.proc}/fd/{fd}"))]
        names = paths(slot, count, start)
        out = []
        for i in range(line.first_checked, count):
            name, arg = names[i], line.dirfd_args[i]
            dirfd = AT_FDCWD if arg is None else as_int(slot.args[arg])
            if not name.startswith(b"/"):
                base = f"{task_dir(client, slot.owner_tid)}/cwd" if dirfd == AT_FDCWD else \
                       f"{client.proc}/fd/{dirfd}"
                name = os.path.join(os.fsencode(os.readlink(base)), name)
            out.append(os.path.normpath(name))
        return out
    except (OSError, ValueError):
        return []
