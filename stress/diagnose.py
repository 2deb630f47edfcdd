"""What the stress program says about a hang or a leak: a thread's kernel state and native
stack, a client's shards and the supervisor's worker table as the shared memory holds them,
and what leaked objects were before they are removed."""
import os
import shutil
import subprocess

import psutil
import sysv_ipc

from lsca import ipc
from lsca.abi import MAGIC, OP_NAMES, SHARD_SIZE, SLOTS, ffi, lib, shard_header, shard_slot

SLOT_STATES = {0: "FREE", 1: "SUBMITTED", 2: "RUNNING", 3: "DONE"}


def describe_shard(address):
    """A shard's header and its slots in use, from the shared memory itself."""
    h = shard_header(address)
    slots = []
    for i in range(SLOTS):
        s = shard_slot(address, i)
        if s.owner_tid or s.state:
            slots.append(f"slot {i} tid {s.owner_tid} {SLOT_STATES.get(s.state, s.state)} {OP_NAMES.get(s.op, s.op)} "
                         f"sleeping {s.client_sleeping} cancel {s.cancel} status {s.status} result {s.result} "
                         f"err {s.err} seq {s.seq}")
    return (f"client pid {h.client_pid} dead {h.dead} worker {h.worker_id} worker_sleeping {h.worker_sleeping} "
            f"pending_mask {h.pending_mask:#x} cancel_mask {h.cancel_mask:#x} next_seq {h.next_seq}: "
            + (", ".join(slots) or "no slot in use"))


def hung_thread(pid, ntid, supervisor, supervisor_pids, nworkers):
    """Everything known of a hung thread ntid (None: every thread) of client pid, its fork
    children, and the supervisor serving it (None when there is none)."""
    out = task_states(pid, ntid)
    if supervisor is not None:
        out.append(f"supervisor {supervisor.pid} workers {supervisor.workers(include_stopped=True)}")
        out += worker_table(supervisor.pid, nworkers)
    out += shards_of(pid, supervisor_pids)
    out += backtrace(pid, ntid)
    try:
        children = [p.pid for p in psutil.Process(pid).children()]
    except psutil.Error:
        children = []
    for child in children:              # a fork child the thread waits for
        out.append(f"child {child}")
        out += shards_of(child, supervisor_pids)
        out += backtrace(child, child)
    return out


def task_states(pid, ntid):
    """State, wait channel and system call of thread ntid of pid (every thread: None)."""
    out = []
    tasks = f"/proc/{pid}/task"
    for tid in sorted(os.listdir(tasks)) if os.path.isdir(tasks) else []:
        if ntid is not None and int(tid) != ntid:
            continue
        try:
            with open(f"{tasks}/{tid}/wchan") as f:
                wchan = f.read().strip()
            with open(f"{tasks}/{tid}/syscall") as f:
                sysc = f.read().split()[0]
            with open(f"{tasks}/{tid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            out.append(f"task {tid} state {state} wchan {wchan} syscall {sysc}")
        except OSError:
            pass
    return out


def segments(size, creators):
    """(row, attached segment) for each segment of this size some pid in creators made,
    attached read-only for the body of the loop (also a removed one, while someone has it)."""
    for row in ipc._table("shm"):
        if row.get("size") != size or row.get("cpid") not in creators:
            continue
        try:
            shm = sysv_ipc.attach(row["shmid"], flags=sysv_ipc.SHM_RDONLY)
        except sysv_ipc.Error:
            continue
        try:
            yield row, shm
        finally:
            shm.detach()


def worker_table(supervisor_pid, nworkers):
    """A supervisor's worker table: heartbeat age and the call each worker executes."""
    size = lib.LSCA_MAX_WORKERS * ffi.sizeof("struct lsca_worker_status")
    out = []
    for _, shm in segments(size, {supervisor_pid}):
        rows = ffi.cast("struct lsca_worker_status *", shm.address)
        now = lib.lsca_now_ns()
        for i in range(nworkers + 2):
            r = rows[i]
            if r.pid:
                out.append(f"worker {i} pid {r.pid} heartbeat {(now - r.heartbeat_ns) / 1e9:.1f} s ago "
                           f"busy shard {r.busy_shard} slot {r.busy_slot}")
                if i < nworkers:
                    out += [f"worker {i} " + b for b in backtrace(r.pid, None, frames=5)]
    return out


def shards_of(pid, supervisor_pids):
    """The shard(s) of a client, as the supervisors' workers see them (also after a cleanup
    removed them: a removed segment can be attached while someone has it)."""
    out = [f"shard shmid {row['shmid']} (key {row['key'] & 0xffffffff:#x}, created by supervisor "
           f"{row['cpid']}, {row.get('nattch')} attached): " + describe_shard(shm.address)
           for row, shm in segments(SHARD_SIZE, supervisor_pids) if shard_header(shm.address).client_pid == pid]
    return out or [f"no shard of pid {pid} found"]


def backtrace(pid, ntid, frames=12):
    """The native stack of thread ntid of pid, or of all its threads when ntid is None
    (gdb, when there is one)."""
    if not shutil.which("gdb"):
        return []
    try:
        out = subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx", "-ex", "set pagination off",
                              "-ex", "thread apply all bt 12"], capture_output=True, timeout=60).stdout
    except (subprocess.TimeoutExpired, OSError):
        return ["gdb timed out"]
    text = out.decode(errors="replace")
    # Only the block of the stuck thread ("Thread N (Thread 0x... (LWP tid) ...").
    found = []
    for block in text.split("\nThread ")[1:]:
        head = block.split("\n", 1)[0]
        if ntid is None or f"LWP {ntid})" in head:
            lines = [line.strip() for line in block.splitlines()[1:] if line.startswith("#")]
            lwp = head.split("LWP ")[1].split(")")[0] if "LWP " in head else "?"
            found.append(f"backtrace of LWP {lwp}: " + " | ".join(f[:160] for f in lines[:frames]))
    return found or ["backtrace: thread not found in gdb's output"]


def describe_objects(objects, supervisor_index, listed_by):
    """What leaked objects were, before they are removed: creator, users, contents.
    supervisor_index: {pid: index} of the run's supervisors; listed_by: {(kind, id): pid of
    the supervisor whose registry listed it}."""
    rows = {row["shmid"]: row for row in ipc._table("shm")}
    out = []
    for shmid in objects["shm"]:
        row = rows.get(shmid, {})
        cpid = row.get("cpid")
        text = (f"shm {shmid}: size {row.get('size')}, created by pid {cpid}"
                f"{' (supervisor %d)' % supervisor_index[cpid] if cpid in supervisor_index else ''}, "
                f"last used by pid {row.get('lpid')}, {row.get('nattch')} attached, listed by the registry "
                f"of {listed_by.get(('shm', shmid), 'no supervisor of ours')}")
        try:
            shm = sysv_ipc.attach(shmid, flags=sysv_ipc.SHM_RDONLY)
            try:
                if shm.size == SHARD_SIZE and shard_header(shm.address).magic == MAGIC:
                    text += "; " + describe_shard(shm.address)
            finally:
                shm.detach()
        except sysv_ipc.Error as e:
            text += f"; cannot attach: {e}"
        out.append(text)
    for semid in objects["sem"]:
        out.append(f"sem {semid}: listed by the registry of "
                   f"{listed_by.get(('sem', semid), 'no supervisor of ours')}")
    return out


def shard_owners(shmids, known):
    """Who the shards a supervisor still lists belong to, and whether they live; known(pid)
    says what the run knows of a pid (a client, a fork child), or ''."""
    out = []
    for shmid in shmids:
        try:
            shm = sysv_ipc.attach(shmid, flags=sysv_ipc.SHM_RDONLY)
        except sysv_ipc.Error as e:
            out.append(f"shmid {shmid}: cannot attach: {e}")
            continue
        try:
            if shm.size != SHARD_SIZE or shard_header(shm.address).magic != MAGIC:
                continue                # the worker table
            pid = shard_header(shm.address).client_pid
            text = describe_shard(shm.address)
        finally:
            shm.detach()
        try:
            p = psutil.Process(pid)
            who = f"alive ({p.status()}): {' '.join(p.cmdline())[:100]}"
        except psutil.Error:
            who = "gone"
        out.append(f"shmid {shmid}: shard of pid {pid} ({known(pid) or 'not a client: a fork child?'}), "
                   f"{who}; {text}")
    return out
