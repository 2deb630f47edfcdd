"""A disposable LSCA client for tests that write a shard by hand (test_malformed_shards.py).

It performs the registration protocol itself (no agent, no LD_PRELOAD): hello with its
own pid, welcome plus the descriptor channel. It attaches its shard, opens /dev/null and
/dev/zero, maps a buffer between two PROT_NONE guard pages (so the test knows exactly
which client addresses are valid), prints what the test needs as one JSON line, points
its stdout and stderr at /dev/null (garbage a worker writes goes nowhere) and sleeps
reading stdin until EOF. A thread drains the descriptor channel (closing what arrives),
as the agent would. It never submits a call itself: the test writes its shard.

Usage: fake_client.py SOCKET UMASK_OCTAL [PATH:FLAGS ...]
Each PATH:FLAGS opens PATH with FLAGS ("append": O_WRONLY|O_APPEND, "write": O_WRONLY,
"read": O_RDONLY); the descriptors are listed, in order, as "files" in the JSON line.
"""
import ctypes
import json
import mmap
import os
import socket
import sys
import threading

import sysv_ipc

from lsca.abi import ABI_VERSION, MAGIC, WELCOME_SIZE, ffi, lib, shard_header, shard_slot

BUF_SIZE = 1 << 20
OPEN_FLAGS = {"append": os.O_WRONLY | os.O_APPEND, "write": os.O_WRONLY, "read": os.O_RDONLY}
PROT_NONE = 0


def register(socket_path):
    hello = ffi.new("struct lsca_hello *")
    hello.magic = MAGIC
    hello.abi_version = ABI_VERSION
    hello.pid = os.getpid()
    hello.flags = 0
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(socket_path)
    sock.sendall(bytes(ffi.buffer(hello)))
    data, fds = b"", []
    while len(data) < WELCOME_SIZE:
        chunk, got, _flags, _addr = socket.recv_fds(sock, WELCOME_SIZE - len(data), 4)
        fds += got
        if not chunk:
            raise SystemExit("fake_client: the supervisor closed the connection before the welcome")
        data += chunk
    sock.close()
    welcome = ffi.new("struct lsca_welcome *")
    ffi.memmove(welcome, data, WELCOME_SIZE)
    if welcome.magic != MAGIC or welcome.abi_version != ABI_VERSION or welcome.status != 0:
        raise SystemExit(f"fake_client: refused (status {welcome.status})")
    if len(fds) != 1:
        raise SystemExit(f"fake_client: expected one descriptor in the welcome, got {len(fds)}")
    return welcome, fds[0]


def attach(socket_path):
    """Register and attach the shard, for a script that writes its calls by hand:
    (shm, shard pointer, header, channel descriptor)."""
    welcome, chan = register(socket_path)
    shm = sysv_ipc.attach(welcome.shmid)
    return shm, ffi.cast("void *", shm.address), shard_header(shm.address), chan


def call(shm, index, op, args, data):
    """One inline call through slot index, written by hand: [status, result, err] (the slot's
    answer stays readable until its next call)."""
    shard, header, slot = ffi.cast("void *", shm.address), shard_header(shm.address), shard_slot(shm.address, index)
    slot.owner_tid = os.getpid()
    slot.op = op
    slot.xfer = lib.LSCA_XFER_INLINE
    for i, a in enumerate(args):
        slot.args[i] = a & ((1 << 64) - 1)
    ffi.memmove(slot.data, data, len(data))
    slot.data_len = len(data)
    slot.seq = header.next_seq
    header.next_seq += 1
    lib.lsca_slot_submit(shard, index)
    lib.lsca_slot_wait(shard, index, 50000, 0)
    answer = [slot.status, slot.result, slot.err]
    slot.state = lib.LSCA_SLOT_FREE
    return answer


def drain(chan):
    """Take the descriptors workers send (openat, dup, pipe2 answers) and close them."""
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(chan, 64, 16)
        except OSError:
            return
        for fd in fds:
            os.close(fd)
        if not data and not fds:
            return


def guarded_buffer(size):
    """(mapping, address of the usable bytes): size bytes between two PROT_NONE pages."""
    page = mmap.PAGESIZE
    mapping = mmap.mmap(-1, size + 2 * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    for start in (base, base + page + size):
        if libc.mprotect(start, page, PROT_NONE) != 0:
            raise OSError(ctypes.get_errno(), "mprotect")
    return mapping, base + page


def main():
    socket_path, mask = sys.argv[1], int(sys.argv[2], 8)
    os.umask(mask)
    welcome, chan_fd = register(socket_path)
    shm = sysv_ipc.attach(welcome.shmid)
    header = shard_header(shm.address)
    if header.magic != MAGIC or header.client_pid != os.getpid():
        raise SystemExit("fake_client: the shard is not ours")
    null_fd = os.open("/dev/null", os.O_RDWR)
    zero_fd = os.open("/dev/zero", os.O_RDWR)
    files = [os.open(path, OPEN_FLAGS[how]) for path, how in (a.rsplit(":", 1) for a in sys.argv[3:])]
    mapping, buf = guarded_buffer(BUF_SIZE)
    mapping[mmap.PAGESIZE:mmap.PAGESIZE + BUF_SIZE] = bytes(range(256)) * (BUF_SIZE // 256)
    chan = socket.socket(fileno=chan_fd)
    threading.Thread(target=drain, args=(chan,), daemon=True).start()
    info = {
        "pid": os.getpid(),
        "shmid": welcome.shmid,
        "semid": getattr(header, "completion_semid", None),   # older ABIs: completion semaphores
        "doorbell_semid": header.doorbell_semid,
        "supervisor_pid": welcome.supervisor_pid,
        "worker_id": header.worker_id,
        "null": null_fd,
        "zero": zero_fd,
        "files": files,
        "chan": chan_fd,
        "buf": buf,
        "buf_size": BUF_SIZE,
        "page": mmap.PAGESIZE,
        "cwd": os.getcwd(),
    }
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()
    os.dup2(null_fd, 1)
    os.dup2(null_fd, 2)
    while os.read(0, 4096):             # the mapping stays until we return: the test uses its addresses
        pass
    shm.detach()
    mapping.close()


if __name__ == "__main__":
    main()
