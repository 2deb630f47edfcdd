"""The user's private LSCA directory: supervisor sockets and the registry of instances.

Its default path is predictable (/tmp/lsca-UID without XDG_RUNTIME_DIR), so another
user may have made it first: it is used only once verified to be a real directory
(not a symbolic link) owned by this user and closed to everyone else.
"""
import os
import stat

ROOT_DIRECTORY = "/run/lsca"


class StateDirError(Exception):
    """A state directory that cannot be made or trusted: one line saying which and why."""


def location():
    """Where the directory is, without touching it: /run/lsca as root, else
    $XDG_RUNTIME_DIR/lsca, else /tmp/lsca-UID."""
    if os.geteuid() == 0:
        return ROOT_DIRECTORY
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "lsca")
    return f"/tmp/lsca-{os.geteuid()}"


def private_directory():
    """The user's LSCA directory (default sockets live here), made when missing and verified."""
    path = location()
    return ensure_private(path, public_ok=_searched_by_all(path))


def existing_private_directory():
    """The user's LSCA directory if it exists and verifies (nothing is made), else None."""
    path = location()
    return path if is_private(path, public_ok=_searched_by_all(path)) else None


def _searched_by_all(path):
    # A root supervisor's socket must be reachable by every user: /run/lsca may be searched by all.
    return path == ROOT_DIRECTORY


def instances_directory():
    """Where each running supervisor records its SysV objects: LSCA_STATE_DIR, else
    instances/ in the private directory; always 0700."""
    override = os.environ.get("LSCA_STATE_DIR")
    if override:
        return ensure_private(override)
    return ensure_private(os.path.join(private_directory(), "instances"))


def ensure_private(path, public_ok=False):
    """path, made (0700, or 0755 when public_ok) when missing, and verified: a directory
    of this user's that others may not write (nor read or search unless public_ok)."""
    _check_parent(path)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise StateDirError(f"cannot create the state directory {path}: {e.strerror}") from None
    else:
        if public_ok:
            os.chmod(path, 0o755)   # mkdir's mode went through the umask; this one is exact
    _check_ours(path, public_ok)
    return path


def is_private(path, public_ok=False):
    """Whether path is already a directory ensure_private would accept (nothing is made)."""
    try:
        _check_parent(path)
        _check_ours(path, public_ok)
        return True
    except StateDirError:
        return False


def _check_ours(path, public_ok):
    # lstat: a symbolic link planted in the directory's place is never followed.
    try:
        st = os.lstat(path)
    except OSError as e:
        raise StateDirError(f"cannot use the state directory {path}: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise StateDirError(f"refusing the state directory {path}: it is a symbolic link")
    if not stat.S_ISDIR(st.st_mode):
        raise StateDirError(f"refusing the state directory {path}: it is not a directory")
    euid = os.geteuid()
    if st.st_uid != euid:
        raise StateDirError(f"refusing the state directory {path}: it belongs to uid {st.st_uid}, "
                            f"not to you (uid {euid})")
    forbidden = 0o022 if public_ok else 0o077
    mode = stat.S_IMODE(st.st_mode)
    if mode & forbidden:
        raise StateDirError(f"refusing the state directory {path}: its mode is {mode:04o}, open to other "
                            f"users (chmod {0o755 if public_ok else 0o700:o} it, or remove it)")


def _check_parent(path):
    """Whoever may rename entries of the parent could swap the directory after it was verified:
    the parent must be root's or this user's, and sticky when others may write it."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(parent)
    except OSError as e:
        raise StateDirError(f"cannot use the state directory {path}: {parent}: {e.strerror}") from None
    if st.st_uid not in (0, os.geteuid()):
        raise StateDirError(f"refusing the state directory {path}: its parent {parent} belongs to "
                            f"uid {st.st_uid}")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise StateDirError(f"refusing the state directory {path}: its parent {parent} may be written "
                            f"by other users and is not sticky")
