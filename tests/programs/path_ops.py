"""Runs a list of path and descriptor-creating operations, mixed with I/O calls, in a
scratch tree and prints what each returned and the final tree, as JSON.

The same program runs natively and under LSCA; the tests compare the outputs.
Usage: path_ops.py SPEC.json WORKDIR   (SPEC: {"ops": [...]}; WORKDIR fresh and empty)

The tree lives in WORKDIR/t, which is also the starting cwd. Names in ops are
relative to the cwd, except those starting with "@", which stand for the absolute
path of t (different in the two runs, so "@" is what the output shows instead).
No name or symlink target contains "..", so nothing outside t is ever reached;
a chdir/fchdir that leaves t (".." from t) is followed by a chdir back to t.

Descriptors made by ops are kept in a list, in creation order; ops name one by
index (modulo the list's length), -1 or an empty list meaning the never-open 1000.
"""
import errno
import fcntl
import json
import os
import stat
import sys
import termios

MARK_BEGIN = b"LSCA-TEST-BEGIN"
MARK_END = b"LSCA-TEST-END"
BAD_FD = 1000
# Explicit times set by utime ops: a final mtime among these is shown, any other is "now".
TIMES = [(1_000_000_000, 2_000_000_000), (123_456_789, 987_654_321), (0, 0), (5, 3_000_000_007)]
EXPLICIT_MTIMES = {m for _a, m in TIMES}


def setup():
    """The starting tree, in the cwd (t)."""
    os.umask(0o022)
    for name, content, mode in (("f0", b"zero" * 10, 0o644), ("f1", b"one\n" * 3, 0o640),
                                ("locked", b"secret", 0o000)):
        with open(name, "wb") as f:
            f.write(content)
        os.chmod(name, mode)
    os.makedirs("a/b/c")
    with open("a/f2", "wb") as f:
        f.write(b"two" * 50)
    os.mkdir("ro")
    with open("ro/inner", "wb") as f:
        f.write(b"inner")
    os.chmod("ro", 0o500)
    os.symlink("f0", "l_file")
    os.symlink("nope", "l_dangling")
    os.symlink("a", "l_dir")


class State:
    def __init__(self, root):
        self.root = root
        self.fds = []           # descriptors the ops made, in creation order
        self.pipe_r = set()     # which of them are read ends of pipes (reads could block)

    def abs(self, name):
        return self.root + name[1:] if name.startswith("@") else name

    def fd(self, index):
        if index is None or index < 0 or not self.fds:
            return BAD_FD
        return self.fds[index % len(self.fds)]

    def dir_fd(self, index):
        return None if index is None else self.fd(index)

    def added(self, fd, pipe_r=False):
        if fd not in self.fds:
            self.fds.append(fd)
        self.pipe_r.discard(fd)
        if pipe_r:
            self.pipe_r.add(fd)

    def removed(self, fd):
        if fd in self.fds:
            self.fds.remove(fd)
        self.pipe_r.discard(fd)

    def norm(self, value):
        """Absolute names of t shown as "@", so both runs compare equal."""
        if isinstance(value, str):
            if value == self.root or value.startswith(self.root + "/"):
                return "@" + value[len(self.root):]
        return value

    def rel_cwd(self, cwd):
        if cwd == self.root:
            return "."
        if cwd.startswith(self.root + "/"):
            return cwd[len(self.root) + 1:]
        return "<outside>"


def outcome(call):
    try:
        return {"ret": call(), "errno": 0}
    except OSError as e:
        return {"ret": None, "errno": e.errno}


def stat_summary(st):
    return [stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
            None if stat.S_ISDIR(st.st_mode) else st.st_size, st.st_nlink, st.st_uid, st.st_gid]


def pipe_level(fd):
    try:
        return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), "little")
    except OSError:
        return None


def check_cwd(state, result):
    """After a chdir/fchdir: where the cwd is now (a getcwd), and back into t if outside."""
    where = outcome(os.getcwd)
    result["cwd"] = state.rel_cwd(where["ret"]) if where["errno"] == 0 else where["errno"]
    result["reset"] = result["cwd"] == "<outside>" or where["errno"] != 0
    if result["reset"]:
        os.chdir(state.root)
    return result


def kw_dir(state, op, *names):
    index = op.get("dir")
    return {} if index is None else {name: state.fd(index) for name in names}


def run_op(op, state):
    kind = op["op"]
    if kind == "open":
        def do_open():
            fd = os.open(state.abs(op["path"]), op["flags"], op["mode"], **kw_dir(state, op, "dir_fd"))
            state.added(fd)
            return fd
        return outcome(do_open)
    if kind == "close":
        fd = state.fd(op["fd"])
        result = dict(outcome(lambda: os.close(fd)), fd=fd)
        if result["errno"] == 0:
            state.removed(fd)
        return result
    if kind == "dup":
        fd = state.fd(op["fd"])

        def do_dup():
            new = os.dup(fd)
            state.added(new, fd in state.pipe_r)
            return new
        return dict(outcome(do_dup), fd=fd)
    if kind == "dup2":
        fd = state.fd(op["fd"])

        def do_dup2():
            new = os.dup2(fd, op["to"], inheritable=op["inheritable"])
            state.added(new, fd in state.pipe_r)
            return new
        return dict(outcome(do_dup2), fd=fd)
    if kind == "pipe":
        def do_pipe():
            r, w = os.pipe()
            state.added(r, pipe_r=True)
            state.added(w)
            return [r, w]
        return outcome(do_pipe)
    if kind == "write":
        fd = state.fd(op["fd"])
        return dict(outcome(lambda: os.write(fd, bytes.fromhex(op["data"]))), fd=fd)
    if kind == "read":
        fd = state.fd(op["fd"])
        if fd in state.pipe_r and pipe_level(fd) == 0:
            return {"skipped": True, "fd": fd}      # would block natively
        return dict(outcome(lambda: os.read(fd, op["size"]).hex()), fd=fd)
    if kind == "lseek":
        fd = state.fd(op["fd"])
        return dict(outcome(lambda: os.lseek(fd, op["offset"], op["whence"])), fd=fd)
    if kind == "fstat":
        fd = state.fd(op["fd"])
        return dict(outcome(lambda: stat_summary(os.fstat(fd))), fd=fd)
    if kind == "fchmod":
        fd = state.fd(op["fd"])
        return dict(outcome(lambda: os.fchmod(fd, op["mode"])), fd=fd)
    if kind == "stat":
        return outcome(lambda: stat_summary(os.stat(state.abs(op["path"]), follow_symlinks=op["follow"],
                                                    **kw_dir(state, op, "dir_fd"))))
    if kind == "access":
        return outcome(lambda: os.access(state.abs(op["path"]), op["mode"], **kw_dir(state, op, "dir_fd")))
    if kind == "mkdir":
        return outcome(lambda: os.mkdir(state.abs(op["path"]), op["mode"], **kw_dir(state, op, "dir_fd")))
    if kind == "rmdir":
        return outcome(lambda: os.rmdir(state.abs(op["path"]), **kw_dir(state, op, "dir_fd")))
    if kind == "unlink":
        return outcome(lambda: os.unlink(state.abs(op["path"]), **kw_dir(state, op, "dir_fd")))
    if kind in ("rename", "replace"):
        call = os.rename if kind == "rename" else os.replace
        return outcome(lambda: call(state.abs(op["src"]), state.abs(op["dst"]),
                                    **kw_dir(state, op, "src_dir_fd", "dst_dir_fd")))
    if kind == "link":
        return outcome(lambda: os.link(state.abs(op["src"]), state.abs(op["dst"]), follow_symlinks=op["follow"],
                                       **kw_dir(state, op, "src_dir_fd", "dst_dir_fd")))
    if kind == "symlink":
        return outcome(lambda: os.symlink(state.abs(op["target"]), state.abs(op["path"]),
                                          **kw_dir(state, op, "dir_fd")))
    if kind == "readlink":
        return outcome(lambda: state.norm(os.readlink(state.abs(op["path"]), **kw_dir(state, op, "dir_fd"))))
    if kind == "chmod":
        return outcome(lambda: os.chmod(state.abs(op["path"]), op["mode"], **kw_dir(state, op, "dir_fd")))
    if kind == "chown":
        return outcome(lambda: os.chown(state.abs(op["path"]), op["uid"], op["gid"], follow_symlinks=op["follow"],
                                        **kw_dir(state, op, "dir_fd")))
    if kind == "truncate":
        return outcome(lambda: os.truncate(state.abs(op["path"]), op["length"]))
    if kind == "utime":
        return outcome(lambda: os.utime(state.abs(op["path"]), ns=tuple(TIMES[op["times"]]),
                                        follow_symlinks=op["follow"], **kw_dir(state, op, "dir_fd")))
    if kind == "chdir":
        return check_cwd(state, outcome(lambda: os.chdir(state.abs(op["path"]))))
    if kind == "fchdir":
        fd = state.fd(op["fd"])
        return check_cwd(state, dict(outcome(lambda: os.fchdir(fd)), fd=fd))
    if kind == "getcwd":
        result = outcome(os.getcwd)
        if result["errno"] == 0:
            result["ret"] = state.rel_cwd(result["ret"])
        return result
    if kind == "umask":
        return {"ret": os.umask(op["mask"]), "errno": 0}
    raise ValueError(f"unknown op {kind}")


def tree(state):
    """Every name under t, lstat-based: no inode numbers, no times but explicitly set mtimes."""
    out = {}

    def walk(rel):
        path = os.path.join(state.root, rel) if rel else state.root
        try:
            st = os.lstat(path)
        except OSError as e:            # not root: in a directory it may not search
            out[rel or "."] = {"lstat": errno.errorcode[e.errno]}
            return
        entry = {"mode": stat.S_IMODE(st.st_mode), "nlink": st.st_nlink, "uid": st.st_uid, "gid": st.st_gid,
                 "mtime": st.st_mtime_ns if st.st_mtime_ns in EXPLICIT_MTIMES else "other"}
        if stat.S_ISDIR(st.st_mode):
            entry["type"] = "dir"
            out[rel or "."] = entry
            try:
                names = sorted(os.listdir(path))
            except OSError as e:        # not root: a directory it may not read
                entry["listing"] = errno.errorcode[e.errno]
                return
            for name in names:
                walk(os.path.join(rel, name))
            return
        if stat.S_ISLNK(st.st_mode):
            entry.update(type="symlink", target=state.norm(os.readlink(path)))
            entry.pop("mode")            # a symlink's own bits are always 0777
        elif stat.S_ISREG(st.st_mode):
            entry.update(type="file", size=st.st_size)
            try:
                with open(path, "rb") as f:
                    entry["content"] = f.read().hex()
            except OSError as e:        # not root: a file it may not read
                entry["content"] = errno.errorcode[e.errno]
        else:
            entry["type"] = stat.S_IFMT(st.st_mode)
        out[rel] = entry

    walk("")
    return out


def fd_state(state):
    out = {}
    for fd in state.fds:
        def summary(fd=fd):
            st = os.fstat(fd)
            return [stat.S_IFMT(st.st_mode), None if stat.S_ISDIR(st.st_mode) else st.st_size]
        out[str(fd)] = {"offset": outcome(lambda fd=fd: os.lseek(fd, 0, os.SEEK_CUR)),
                        "fstat": outcome(summary),
                        "inheritable": outcome(lambda fd=fd: os.get_inheritable(fd))}
    return out


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    workdir = os.path.abspath(sys.argv[2])
    os.mkdir(os.path.join(workdir, "t"))
    os.chdir(os.path.join(workdir, "t"))
    state = State(os.getcwd())
    setup()
    null = os.open("/dev/null", os.O_WRONLY)
    os.write(null, MARK_BEGIN)
    results = [run_op(op, state) for op in spec["ops"]]
    os.write(null, MARK_END)
    cwd = outcome(os.getcwd)
    json.dump({"results": results, "fds": fd_state(state), "umask": os.umask(0o022),
               "cwd": state.rel_cwd(cwd["ret"]) if cwd["errno"] == 0 else cwd["errno"],
               "tree": tree(state)}, sys.stdout)


if __name__ == "__main__":
    main()
