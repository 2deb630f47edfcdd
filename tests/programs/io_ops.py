"""Runs a list of I/O operations and prints what each returned, as JSON.

The same program runs natively and under LSCA; the tests compare the outputs.
Usage: io_ops.py SPEC.json WORKDIR   (SPEC: {"mode": ..., "ops": [...]})

Descriptors are set up natively (open/pipe are not proxied calls yet), then
named by role. Operations run in the order given; in "threads" mode each op
runs on the thread named in it, in that same global order (turn-taking), and in
"fork" mode ops marked "child" run in a forked child that inherits every
descriptor while the parent waits.
"""
import fcntl
import json
import os
import re
import sys
import termios
import threading

PIPE_DATA = bytes(range(256)) * 16          # 4096 bytes waiting in the blocking pipe
PIPE_LIMIT = 32768                          # writes keep the pipe below its capacity
MARK_BEGIN = b"LSCA-TEST-BEGIN"
MARK_END = b"LSCA-TEST-END"


def setup(workdir):
    for name, content in (("f0", b"zero" * 10), ("f1", b"one\n" * 3), ("f2", b"two" * 100)):
        with open(os.path.join(workdir, name), "wb") as f:
            f.write(content)
    path = lambda name: os.path.join(workdir, name)
    fds = {
        "rw": os.open(path("f0"), os.O_RDWR),
        "append": os.open(path("f1"), os.O_RDWR | os.O_APPEND),
        "ronly": os.open(path("f2"), os.O_RDONLY),
        "wonly": os.open(path("f0"), os.O_WRONLY),     # a second description of f0
        "null": os.open("/dev/null", os.O_RDWR),
        "bad": 1000,                                    # never open
    }
    fds["pipe_r"], fds["pipe_w"] = os.pipe()
    os.write(fds["pipe_w"], PIPE_DATA)
    fds["nb_r"], fds["nb_w"] = os.pipe2(os.O_NONBLOCK)  # empty: reads say EAGAIN
    return fds


def pipe_level(fd):
    """Bytes waiting in the pipe, None once its read end is closed (nothing can block then)."""
    try:
        return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), "little")
    except OSError:
        return None


def outcome(call):
    try:
        return {"ret": call(), "errno": 0}
    except OSError as e:
        return {"ret": None, "errno": e.errno}


def run_op(op, fds):
    kind, fd = op["op"], fds[op["fd"]]
    # A blocking pipe read with nothing in it, or a write that would fill it, would hang natively.
    if op["fd"] == "pipe_r" and kind in ("read", "readv") and pipe_level(fd) == 0:
        return {"skipped": True}
    if op["fd"] == "pipe_w" and kind in ("write", "writev"):
        size = len(op["data"]) if kind == "write" else sum(map(len, op["chunks"]))
        level = pipe_level(fds["pipe_r"])
        if level is not None and level + size > PIPE_LIMIT:
            return {"skipped": True}
    if kind == "write":
        return outcome(lambda: os.write(fd, bytes.fromhex(op["data"])))
    if kind == "pwrite":
        return outcome(lambda: os.pwrite(fd, bytes.fromhex(op["data"]), op["offset"]))
    if kind == "writev":
        return outcome(lambda: os.writev(fd, [bytes.fromhex(c) for c in op["chunks"]]))
    if kind == "read":
        return outcome(lambda: os.read(fd, op["size"]).hex())
    if kind == "pread":
        return outcome(lambda: os.pread(fd, op["size"], op["offset"]).hex())
    if kind == "readv":
        buffers = [bytearray(n) for n in op["sizes"]]

        def readv():
            n = os.readv(fd, buffers)
            return [n] + [b.hex() for b in buffers]
        return outcome(readv)
    if kind == "lseek":
        return outcome(lambda: os.lseek(fd, op["offset"], op["whence"]))
    if kind == "ftruncate":
        return outcome(lambda: os.ftruncate(fd, op["length"]))
    if kind == "fsync":
        return outcome(lambda: os.fsync(fd))
    if kind == "fdatasync":
        return outcome(lambda: os.fdatasync(fd))
    if kind == "fstat":
        def fstat():
            st = os.fstat(fd)
            return [st.st_size, st.st_mode, st.st_nlink]
        return outcome(fstat)
    if kind == "close":
        return outcome(lambda: os.close(fd))
    raise ValueError(f"unknown op {kind}")


def run_sequential(ops, fds):
    return [run_op(op, fds) for op in ops]


def run_threads(ops, fds):
    """Each op on its own named thread, in the given global order."""
    results = [None] * len(ops)
    turn = [0]
    cond = threading.Condition()

    def thread_main(name):
        for i, op in enumerate(ops):
            if op.get("thread", 0) != name:
                continue
            with cond:
                cond.wait_for(lambda: turn[0] == i)
            results[i] = run_op(op, fds)
            with cond:
                turn[0] += 1
                cond.notify_all()

    threads = [threading.Thread(target=thread_main, args=(n,)) for n in sorted({op.get("thread", 0) for op in ops})]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def high_pipe():
    """A pipe far above the roles' numbers, so a closed role's number is never reused."""
    r, w = os.pipe()
    os.dup2(r, 900)
    os.dup2(w, 901)
    os.close(r)
    os.close(w)
    return 900, 901


def run_fork(ops, fds):
    """Runs of consecutive "child" ops execute in a forked child; results come back by pipe."""
    results = []
    i = 0
    while i < len(ops):
        if not ops[i].get("child"):
            results.append(run_op(ops[i], fds))
            i += 1
            continue
        j = i
        while j < len(ops) and ops[j].get("child"):
            j += 1
        r, w = high_pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            data = json.dumps([run_op(op, fds) for op in ops[i:j]]).encode()
            with os.fdopen(w, "wb") as out:     # transport, not part of the checked calls
                out.write(data)
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as inp:
            results.extend(json.loads(inp.read()))
        os.waitpid(pid, 0)
        i = j
    return results


def final_state(workdir, fds):
    files = {}
    for name in ("f0", "f1", "f2"):
        with open(os.path.join(workdir, name), "rb") as f:
            files[name] = f.read().hex()
    return files


def open_descriptors(workdir):
    """What the process has open from 3 to 99 (the agent's channel sits far above): the same
    natively and under LSCA, so that a descriptor the agent left behind shows by name."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        if 3 <= int(name) < 100:
            try:
                target = os.readlink(f"/proc/self/fd/{name}")
            except OSError:
                continue                # listdir's own descriptor, gone by now
            target = re.sub(r"^/proc/\d+/", "/proc/PID/", target.replace(workdir, "WORKDIR"))
            out[name] = re.sub(r"^pipe:\[\d+\]$", "pipe", target)
    return out


def main():
    spec = json.load(open(sys.argv[1]))
    workdir = sys.argv[2]
    fds = setup(workdir)
    run = {"seq": run_sequential, "threads": run_threads, "fork": run_fork}[spec["mode"]]
    os.write(fds["null"], MARK_BEGIN)
    results = run(spec["ops"], fds)
    os.write(fds["null"], MARK_END)
    offsets = {role: outcome(lambda fd=fd: os.lseek(fd, 0, os.SEEK_CUR))
               for role, fd in sorted(fds.items()) if role not in ("bad",)}
    json.dump({"results": results, "offsets": offsets, "open": open_descriptors(os.path.abspath(workdir)),
               "files": final_state(workdir, fds)}, sys.stdout)


if __name__ == "__main__":
    main()
