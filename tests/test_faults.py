"""Faults: workers that die or hang are replaced and their clients keep being
served; a supervisor killed with -9 leaves nothing `lsca cleanup` (or the next
start) does not remove; TTIN/TTOU grow and shrink the pool under load."""
import json
import os
import signal
import subprocess
import sys
import time


from lsca import ipc
from lsca.supervisor.watchdog import main_thread_state
from conftest import (ended, wait_until, SupervisorProcess, asleep_on_doorbell, clean_env, new_objects,
                      remove_objects, workers_of)

PY = sys.executable

# A client that serves requests from stdin: each line "N" makes it write N lines to a
# file through write() and answer with the file's size, so the test drives it at will.
ECHO_CLIENT = r"""
import errno, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
def next_line():
    # A read blocked in a worker that dies fails with EIO (not idempotent): ask again.
    line = b""
    while not line.endswith(b"\n"):
        try:
            chunk = os.read(0, 1)
        except OSError as e:
            if e.errno != errno.EIO:
                raise
            sys.stderr.write("read: EIO\n")
            continue
        if not chunk:
            return None
        line += chunk
    return line
while (line := next_line()) is not None:
    for i in range(int(line)):
        os.write(fd, b"x" * 10 + b"\n")
    os.write(1, (str(os.fstat(fd).st_size) + "\n").encode())
"""



class Driven:
    """A served client we can ask for more work, line by line."""

    def __init__(self, sup, path, stats_dir=None):
        self.sup = sup
        self.errors = open(f"{path}.stderr", "w+b")
        # LSCA_REQUIRED: a client that cannot register fails instead of running natively.
        self.proc = subprocess.Popen([PY, "-c", ECHO_CLIENT, str(path)], env=sup.client_env(LSCA_REQUIRED="1"),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors)
        self.total = 0
        self.asks = 0

    def ask(self, n, timeout=20):
        try:
            self.proc.stdin.write(f"{n}\n".encode())
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = b""
        self.total += n
        self.asks += 1
        if not line:
            self.errors.seek(0)
            raise AssertionError(f"the client died ({self.proc.poll()}): {self.errors.read().decode()}")
        # Every line it wrote to its file went through a worker (none fell back to native); so
        # did each answer, counted here where a pipe takes a write without a wait (not Linux 6.1).
        proxied = self.file_writes_proxied()
        assert self.total <= proxied <= self.total + self.asks, (proxied, self.total, self.asks)
        return int(line)

    def file_writes_proxied(self):
        """Writes of this client the workers answered (its shard's counts: they outlive a worker)."""
        mine = [c for c in self.sup.stats()["clients"] if c["pid"] == self.proc.pid]
        return mine[0]["proxied"].get("write", 0) if mine else 0

    def close(self):
        self.proc.kill()
        self.proc.wait()


def test_killed_worker_is_replaced_and_clients_keep_being_served(tmp_path):
    sup = SupervisorProcess(str(tmp_path), workers=2)
    clients = []
    try:
        clients = [Driven(sup, tmp_path / f"out{i}") for i in range(3)]
        for c in clients:
            assert c.ask(5) == 55
        # Kill only while no worker executes a call on its main thread (each sleeps on its
        # doorbell; the stdin reads wait in the clients themselves): an answer a worker wrote but had
        # not yet marked done would be (rightly) EIO, its outcome being unknown to the client.
        assert wait_until(lambda: all(asleep_on_doorbell(pid) for pid in workers_of(sup)))
        before = workers_of(sup)
        os.kill(before[0], signal.SIGKILL)
        assert wait_until(lambda: len(workers_of(sup)) == 2 and workers_of(sup) != before)
        for c in clients:                       # every client, whichever worker it had
            assert c.ask(100) == 11 * c.total
    finally:
        for c in clients:
            c.close()
        assert sup.stop() == 0


def test_a_stuck_worker_is_aborted_and_replaced(tmp_path):
    """A worker whose main thread spins without a heartbeat (LSCA_WORKER_FAULT=stall, then
    SIGUSR1) is running and makes no progress: aborted after the timeout, replaced, and its
    client served by the new one."""
    sup = SupervisorProcess(str(tmp_path), workers=1, extra=["--worker-timeout", "2"],
                            env_extra={"LSCA_WORKER_FAULT": "stall"})
    client = None
    try:
        client = Driven(sup, tmp_path / "out")
        assert client.ask(3) == 33
        (worker,) = workers_of(sup)
        os.kill(worker, signal.SIGUSR1)         # its main thread spins from its next Python step
        assert wait_until(lambda: workers_of(sup) and workers_of(sup) != [worker], timeout=20)
        assert ended(worker)
        assert client.ask(10) == 11 * client.total
    finally:
        if client:
            client.close()
        assert sup.stop() == 0


def test_a_stopped_worker_is_left_alone_and_serves_again_when_continued(tmp_path):
    """A worker stopped (SIGSTOP) past the timeout is not stuck, it cannot run: the watchdog
    leaves it, and once continued it serves its client again, the same process."""
    sup = SupervisorProcess(str(tmp_path), workers=1, extra=["--worker-timeout", "2"])
    client = None
    try:
        client = Driven(sup, tmp_path / "out")
        assert client.ask(3) == 33
        (worker,) = workers_of(sup)
        os.kill(worker, signal.SIGSTOP)
        try:
            assert wait_until(lambda: task_state(worker) == "T")
            time.sleep(4.5)                     # the time to judge: twice the timeout and more
            assert workers_of(sup) == [worker] and task_state(worker) == "T"
        finally:
            os.kill(worker, signal.SIGCONT)
        assert client.ask(10) == 11 * client.total
        assert workers_of(sup) == [worker]
    finally:
        if client:
            client.close()
        assert sup.stop() == 0


def test_a_whole_pool_stopped_past_the_timeout_loses_no_worker_and_no_call(tmp_path):
    """The machine, not a worker, stalled: the supervisor and its workers stopped together
    (SIGSTOP to each) for longer than the timeout while a client was calling. After SIGCONT
    nothing is killed and every call of the client completes."""
    sup = SupervisorProcess(str(tmp_path), workers=2, extra=["--worker-timeout", "2"])
    out = tmp_path / "out"
    writer = None
    try:
        stats_file = tmp_path / "stats.json"
        writer = subprocess.Popen([PY, "-m", "lsca.cli", "run", "--stats-file", str(stats_file), "--",
                                   "dd", "if=/dev/zero", f"of={out}", "bs=1", "count=200000"],
                                  env={**clean_env(), "LSCA_SOCKET": sup.socket, "LSCA_REQUIRED": "1"},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert wait_until(lambda: out.exists() and out.stat().st_size > 1000)
        pool = [sup.process.pid] + workers_of(sup)
        for pid in pool:
            os.kill(pid, signal.SIGSTOP)
        try:
            assert wait_until(lambda: all(task_state(pid) == "T" for pid in pool))
            stalled_at = out.stat().st_size
            time.sleep(4.5)                     # the stall: twice the timeout and more
            assert out.stat().st_size == stalled_at      # dd's writes waited for the pool
        finally:
            for pid in pool:
                os.kill(pid, signal.SIGCONT)
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err.decode()
        assert out.stat().st_size == 200000
        assert [sup.process.pid] + workers_of(sup) == pool
        stats = json.loads(stats_file.read_text())
        # bs=1 count=200000 from /dev/zero: each byte one read and one write, all the workers'.
        assert (stats["proxied"].get("read"), stats["proxied"].get("write")) == (200000, 200000), stats
    finally:
        if writer and writer.poll() is None:
            writer.kill()
            writer.wait()
        assert sup.stop() == 0


def task_state(pid):
    """The state letter of pid's main thread (R, S, D, T, ...); None once it is gone."""
    state = main_thread_state(pid)
    return state[0] if state else None


def test_ttin_and_ttou_grow_and_shrink_the_pool_without_losing_clients(tmp_path):
    sup = SupervisorProcess(str(tmp_path), workers=2)
    clients = []
    try:
        clients = [Driven(sup, tmp_path / f"out{i}") for i in range(4)]
        for c in clients:
            c.ask(1)
        sup.process.send_signal(signal.SIGTTIN)
        assert wait_until(lambda: len(workers_of(sup)) == 3)
        for expected in (2, 1):                 # one at a time: two pending TTOUs would be one signal
            sup.process.send_signal(signal.SIGTTOU)
            assert wait_until(lambda: len(workers_of(sup)) == expected)
        for c in clients:                       # all moved to the last worker
            assert c.ask(20) == 11 * c.total
        sup.process.send_signal(signal.SIGTTOU)  # the last one stays
        assert len(sup.settled()["workers"]) == 1
        assert len(workers_of(sup)) == 1
    finally:
        for c in clients:
            c.close()
        assert sup.stop() == 0


def test_supervisor_killed_with_sigkill_is_cleaned_by_lsca_cleanup_and_next_start(tmp_path):
    state_dir = tmp_path / "state"
    env = {"LSCA_STATE_DIR": str(state_dir)}
    sup = SupervisorProcess(str(tmp_path), workers=2, env_extra=env)
    client = Driven(sup, tmp_path / "out")
    try:
        assert client.ask(2) == 22
        objects = new_objects(sup.objects_before)
        ids = json.loads(next(state_dir.iterdir()).read_text())
        # The registry lists the semaphore sets; the segments are found by their creator pid.
        segments = set(objects["shm"])
        assert segments and set(ids["sem"]) and ids["shm"] == []
        for pid in [sup.process.pid] + workers_of(sup):
            os.kill(pid, signal.SIGKILL)
        sup.process.wait()
        present = ipc.lsca_objects()
        assert segments <= set(present["shm"]) and set(ids["sem"]) <= set(present["sem"])
        out = subprocess.run([PY, "-m", "lsca.cli", "cleanup"], env={**clean_env(), **env},
                             capture_output=True, timeout=30)
        assert out.returncode == 0
        assert b"of 1 dead supervisor(s)" in out.stdout
        present = ipc.lsca_objects()
        assert not segments & set(present["shm"]) and not set(ids["sem"]) & set(present["sem"])
        assert list(state_dir.iterdir()) == []
    finally:
        client.close()
        remove_objects(objects)


def test_hup_reloads_the_config_file_and_a_bad_one_changes_nothing(tmp_path):
    config = tmp_path / "lsca.toml"
    config.write_text("workers = 1\nworker_timeout = 30\n")
    sup = SupervisorProcess(str(tmp_path), workers=5, extra=["--config", str(config), "--workers", "2"])
    client = None
    try:
        assert wait_until(lambda: len(workers_of(sup)) == 2)        # the flag wins over the file
        client = Driven(sup, tmp_path / "out")
        assert client.ask(3) == 33
        config.write_text("workers = 3\nlog_level = 'info'\n")
        sup.process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: len(workers_of(sup)) == 3)
        config.write_text("workers = [\n")                          # not TOML
        sup.process.send_signal(signal.SIGHUP)
        assert len(sup.settled()["workers"]) == 3
        config.write_text("workers = 0\n")                           # TOML, but not a valid value
        sup.process.send_signal(signal.SIGHUP)
        assert len(sup.settled()["workers"]) == 3
        assert len(workers_of(sup)) == 3 and sup.process.poll() is None
        config.write_text("workers = 1\n")
        sup.process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: len(workers_of(sup)) == 1)
        assert client.ask(5) == 11 * client.total                   # its worker may have been retired
    finally:
        if client:
            client.close()
        assert sup.stop() == 0


def test_a_bad_config_file_at_start_is_one_line_and_exit_2(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("workers = 2\nunknown_thing = 1\n")
    proc = subprocess.run([PY, "-m", "lsca.supervisor", "--socket", str(tmp_path / "s.sock"), "--config", str(config)],
                          env=clean_env(), capture_output=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.decode().strip().count("\n") == 0
    assert "unknown setting 'unknown_thing'" in proc.stderr.decode()
    config.write_text("workers = 2\nworker_timeout = = 3\n")
    proc = subprocess.run([PY, "-m", "lsca.supervisor", "--socket", str(tmp_path / "s.sock"), "--config", str(config)],
                          env=clean_env(), capture_output=True, timeout=30)
    assert proc.returncode == 2 and "line 2" in proc.stderr.decode()


def claim_and_kill_worker(sup, shm_address, calls):
    """Write calls (op, args, inline data) into a shard's first slots as claimed (RUNNING)
    by the worker, then kill that worker: as if it died while executing them. The slots."""
    from lsca.abi import ffi, lib, shard_slot

    slots = []
    for i, (op, args, data) in enumerate(calls):
        slot = shard_slot(shm_address, i)
        slot.op = op
        for j, arg in enumerate(args):
            slot.args[j] = arg
        ffi.memmove(slot.data, data, len(data))
        slot.data_len = len(data)
        slot.xfer, slot.seq, slot.result, slot.state = lib.LSCA_XFER_INLINE, 1000 + i, 12345, lib.LSCA_SLOT_RUNNING
        slots.append(slot)
    (worker,) = workers_of(sup)
    os.kill(worker, signal.SIGKILL)
    assert wait_until(lambda: all(slot.state == lib.LSCA_SLOT_DONE for slot in slots))
    return slots


def fake_client(sup, *files):
    from conftest import PROGRAMS

    fake = subprocess.Popen([PY, os.path.join(PROGRAMS, "fake_client.py"), sup.socket, "022", *files],
                            env=clean_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    return fake, json.loads(fake.stdout.readline())


def test_calls_a_dead_worker_was_executing_run_again_only_if_idempotent(tmp_path):
    """Calls claimed (RUNNING) by a worker that is then killed: the pread of a file
    (idempotent) is executed by the replacement; the write (not idempotent) and the pread of a
    device (which may ignore the offset and read the next bytes) are answered EIO."""
    import errno
    import sysv_ipc
    from lsca.abi import ffi, lib

    data = tmp_path / "data"
    data.write_bytes(bytes(range(64)))
    sup = SupervisorProcess(str(tmp_path), workers=1)
    fake, info = fake_client(sup, f"{data}:read")
    try:
        shm = sysv_ipc.attach(info["shmid"])
        (file_fd,) = info["files"]
        pread, write, pread_device = claim_and_kill_worker(sup, shm.address, [
            (lib.LSCA_OP_PREAD, (file_fd, 16, 8), b""),
            (lib.LSCA_OP_WRITE, (info["null"], 3), b"abc"),
            (lib.LSCA_OP_PREAD, (info["zero"], 16, 0), b"")])
        assert (pread.status, pread.result, bytes(ffi.buffer(pread.data, 16))) == (0, 16, bytes(range(8, 24)))
        assert (write.status, write.result, write.err) == (0, -1, errno.EIO)
        assert (pread_device.status, pread_device.result, pread_device.err) == (0, -1, errno.EIO)
        shm.detach()
    finally:
        fake.kill()
        fake.wait()
        assert sup.stop() == 0


def test_a_pwrite_a_dead_worker_was_executing_is_eio_on_o_append_and_run_again_otherwise(tmp_path):
    """pwrite on an O_APPEND descriptor appends whatever its offset (Linux): running it again
    would write the bytes twice, so it is answered EIO; on a plain descriptor it writes the
    same bytes at the same offset again, so the replacement worker runs it."""
    import errno
    import sysv_ipc
    from lsca.abi import lib

    appended, plain = tmp_path / "appended", tmp_path / "plain"
    appended.write_bytes(b"head\n")
    plain.write_bytes(b"." * 16)
    sup = SupervisorProcess(str(tmp_path), workers=1)
    fake, info = fake_client(sup, f"{appended}:append", f"{plain}:write")
    try:
        shm = sysv_ipc.attach(info["shmid"])
        append_fd, plain_fd = info["files"]
        # What the dead worker had done before it died: both pwrites reached the files.
        with open(appended, "ab") as f:
            f.write(b"once\n")
        with open(plain, "r+b") as f:
            f.seek(4)
            f.write(b"once")
        on_append, on_plain = claim_and_kill_worker(sup, shm.address, [
            (lib.LSCA_OP_PWRITE, (append_fd, 5, 0), b"once\n"),
            (lib.LSCA_OP_PWRITE, (plain_fd, 4, 4), b"once")])
        assert (on_append.status, on_append.result, on_append.err) == (0, -1, errno.EIO)
        assert appended.read_bytes() == b"head\nonce\n"
        assert (on_plain.status, on_plain.result) == (0, 4)
        assert plain.read_bytes() == b"...." + b"once" + b"." * 8
        shm.detach()
    finally:
        fake.kill()
        fake.wait()
        assert sup.stop() == 0
