"""The supervisor: owns the IPC objects, the workers and the client registry.

Modelled on gunicorn's arbiter: the OS signal handler only queues the signal;
the main loop waits for events (with a timeout), dispatches queued signals to
handle_<name> methods, and keeps the worker count at its target.
"""
import errno
import json
import logging
import os
import secrets
import select
import selectors
import signal
import socket
import struct
import time

from lsca import ipc
from lsca.abi import (ABI_VERSION, HELLO_SIZE, MAGIC, OP_NAMES, SHARD_SIZE, SLOTS, ffi, lib,
                      pack_welcome, parse_hello, shard_header, shard_slot)
from lsca.policy import Policy, PolicyError
from lsca.settings import ConfigError, load_config
from lsca.stats import ExitedClients, snapshot, stats_allowed
from lsca.supervisor.registry import Registry, cleanup_dead
from lsca.supervisor.session import Session
from lsca.supervisor.systemd import Notifier
from lsca.workers.worker import Worker, ring

log = logging.getLogger("lsca.supervisor")

HELLO_PREFIX = struct.pack("=I", MAGIC)   # an agent's hello starts with the magic, native order
STOP_TIMEOUT_S = 5.0
TICK_S = 1.0
KILL_GRACE_S = 2.0          # between SIGABRT and SIGKILL for a worker that stopped heartbeating
PUBLISH_S = 1.0             # how often the main loop publishes a snapshot for --metrics-port

# Calls a replacement worker may run again when the one executing them died: running
# them twice gives the same result. Anything else that was executing fails with EIO.
IDEMPOTENT = {lib.LSCA_OP_PREAD, lib.LSCA_OP_PWRITE, lib.LSCA_OP_FSTAT, lib.LSCA_OP_FSTATAT,
              lib.LSCA_OP_STATX, lib.LSCA_OP_FACCESSAT, lib.LSCA_OP_READLINKAT, lib.LSCA_OP_GETCWD,
              lib.LSCA_OP_FSYNC, lib.LSCA_OP_FDATASYNC, lib.LSCA_OP_FTRUNCATE, lib.LSCA_OP_TRUNCATE,
              lib.LSCA_OP_FCHMOD, lib.LSCA_OP_FCHMODAT, lib.LSCA_OP_FCHOWN, lib.LSCA_OP_FCHOWNAT,
              lib.LSCA_OP_CLOSE, lib.LSCA_OP_CHDIR, lib.LSCA_OP_FCHDIR}
SEEK_SET, SEEK_END = 0, 2


def idempotent(slot):
    if slot.op == lib.LSCA_OP_LSEEK:
        return slot.args[2] in (SEEK_SET, SEEK_END)     # SEEK_CUR moves again
    return slot.op in IDEMPOTENT


class SupervisorError(Exception):
    """A reason the supervisor cannot start, meant for a one-line message."""


class ClientRecord:
    """A registered client process and the IPC objects of its shard."""

    def __init__(self, shard_id, pid, uid, shard, pidfd, worker, session):
        self.shard_id = shard_id
        self.pid = pid
        self.uid = uid
        self.shard = shard
        self.pidfd = pidfd
        self.worker = worker
        self.session = session
        self.releasing = False
        self.retried = set()            # seqs of calls already run again after a worker died


class Connection:
    """A connection on the registration socket: an agent's hello or a session's JSON lines."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""
        self.fds = []
        self.session = None


class Supervisor:
    SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD,
               signal.SIGTTIN, signal.SIGTTOU]
    SIG_NAMES = {sig: sig.name[3:].lower() for sig in SIGNALS}

    def __init__(self, socket_path, workers, worker_spin_us=200, exit_with=None, sleep_ms=1000,
                 worker_timeout=30.0, config=None, metrics_port=None, policy_path=None):
        self.socket_path = socket_path
        self.config = config
        self.worker_timeout = worker_timeout
        self.target_workers = workers
        self.spin_ns = worker_spin_us * 1000
        self.sleep_ms = sleep_ms
        self.exit_with = exit_with
        self.workers = {}               # pid -> Worker
        self.clients = {}               # shard id -> ClientRecord
        self.sessions = {}              # token -> Session
        self.connections = {}           # socket -> Connection
        self.next_shard_id = 1
        self.sig_queue = []
        self.stopping = False
        self.fast_stop = False
        self.registry = None
        self.table = None
        self.listener = None
        self.doorbells = []
        self.selector = selectors.DefaultSelector()
        self.exited = ExitedClients()   # counts of clients that are gone (statistics)
        self.metrics_port = metrics_port
        self.policy_path = policy_path
        self.policy = None
        self.metrics = None
        self.published = None           # the latest snapshot, for the metrics thread
        self.next_publish = 0.0

    # ---- start / stop ----

    def start(self):
        self.pid = os.getpid()
        if self.policy_path:
            try:
                self.policy = Policy.load(self.policy_path)
            except PolicyError as e:
                raise SupervisorError(f"policy {e}")
            log.info("%s", self.policy.describe())
        if self.metrics_port:
            self._serve_metrics()
        self.notifier = Notifier.from_environment()     # before any fork: workers must not inherit it
        cleanup_dead()                  # what earlier instances that died left behind
        self._listen()
        self.registry = Registry(self.socket_path)
        # Heartbeats and in-flight calls of the workers: private to the supervisor.
        self.table = self._new_segment(size=lib.LSCA_MAX_WORKERS * ffi.sizeof("struct lsca_worker_status"))
        self.worker_rows = ffi.cast("struct lsca_worker_status *", self.table.address)
        self._install_signals()
        if self.exit_with:
            try:
                watched = os.pidfd_open(self.exit_with)
            except OSError as e:
                raise SupervisorError(f"cannot watch process {self.exit_with}: {e.strerror}")
            self.selector.register(watched, selectors.EVENT_READ, self._on_watched_exit)
        for _ in range(self.target_workers):
            self.spawn_worker()
        log.info("listening on %s with %d workers", self.socket_path, self.target_workers)
        self.notifier.ready(self.status_text())
        self.publish_snapshot()

    def status_text(self):
        return f"serving {len(self.clients)} client(s) on {self.socket_path} with {len(self.workers)} worker(s)"

    def _serve_metrics(self):
        from lsca.supervisor.metrics import ADDRESS, MetricsServer   # prometheus_client only when asked
        try:
            self.metrics = MetricsServer(self.metrics_port, lambda: self.published)
        except OSError as e:
            raise SupervisorError(f"cannot serve metrics on {ADDRESS}:{self.metrics_port}: {e.strerror or e}")
        log.info("metrics on http://%s:%d/metrics", ADDRESS, self.metrics_port)

    def publish_snapshot(self):
        # The metrics thread reads only self.published, a fresh dict this loop swaps in whole (atomic under
        # the GIL), so it never touches self.clients/self.workers or a shard this loop may detach: no lock.
        if self.metrics is None or time.monotonic() < self.next_publish:
            return
        self.published = snapshot(self, programs=False)
        self.next_publish = time.monotonic() + PUBLISH_S

    def _listen(self):
        directory = os.path.dirname(self.socket_path) or "."
        os.makedirs(directory, mode=0o755 if os.geteuid() == 0 else 0o700, exist_ok=True)
        if os.path.exists(self.socket_path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.socket_path)
                raise SupervisorError(f"a supervisor is already listening on {self.socket_path}")
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(self.socket_path)   # left by an instance that died
            finally:
                probe.close()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.listener.bind(self.socket_path)
        except OSError as e:
            raise SupervisorError(f"cannot listen on {self.socket_path}: {e.strerror}")
        # A root supervisor serves every uid (SO_PEERCRED decides); a user's serves only itself.
        os.chmod(self.socket_path, 0o666 if os.geteuid() == 0 else 0o600)
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, self._on_accept)

    def _install_signals(self):
        self.sig_r, self.sig_w = socket.socketpair()
        self.sig_r.setblocking(False)
        self.sig_w.setblocking(False)
        signal.set_wakeup_fd(self.sig_w.fileno(), warn_on_full_buffer=False)
        for sig in self.SIGNALS:
            signal.signal(sig, self._queue_signal)
        self.selector.register(self.sig_r, selectors.EVENT_READ, self._drain_wakeups)

    def _queue_signal(self, signum, frame):
        if len(self.sig_queue) < 16:
            self.sig_queue.append(signum)

    def stop(self):
        """Stop workers, free every client's shard and every IPC object; idempotent.
        Graceful (TERM): workers finish the call they are executing. Fast (INT, QUIT): killed."""
        self.stopping = True
        if getattr(self, "notifier", None) is not None:
            self.notifier.stopping()
        if self.fast_stop:
            for pid in list(self.workers):
                os.kill(pid, signal.SIGKILL)
        for worker in list(self.workers.values()):
            try:
                worker.sock.send(json.dumps({"op": "stop"}).encode())
            except OSError:
                pass
            ring(worker)
            try:
                os.kill(worker.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self.workers and time.monotonic() < deadline:
            self._reap_workers()
            time.sleep(0.01)
        for pid in list(self.workers):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self.workers.pop(pid).sock.close()
        for record in list(self.clients.values()):
            # Nobody will answer: calls in flight fail with EIO, later ones run natively.
            lib.lsca_shard_fail_all(ffi.cast("void *", record.shard.address))
            self._free_client(record)
        for semid in self.doorbells:
            self._drop_semaphores(semid)
        self.doorbells = []
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if self.table is not None:
            self._drop_segment(self.table)
            self.table = None
        if self.registry is not None:
            self.registry.close()
        for session in list(self.sessions.values()):
            session.close()
        self.sessions.clear()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass

    # ---- main loop ----

    def run(self):
        while not self.stopping:
            for key, _mask in self.selector.select(TICK_S):
                key.data(key.fileobj)
            while self.sig_queue and not self.stopping:
                sig = self.sig_queue.pop(0)
                getattr(self, "handle_" + self.SIG_NAMES[sig])()
            self.murder_silent_workers()
            self.publish_snapshot()
            now = time.monotonic()
            if self.notifier.watchdog_due(now):
                self.notifier.watchdog(now)

    def murder_silent_workers(self):
        """A worker whose heartbeat is older than the timeout: SIGABRT, then SIGKILL."""
        now = lib.lsca_now_ns()
        for worker in list(self.workers.values()):
            row = self.worker_rows[worker.index]
            silent = (now - row.heartbeat_ns) / 1e9
            if row.heartbeat_ns == 0 or silent < self.worker_timeout:
                continue
            sig = signal.SIGKILL if worker.aborted_at and time.monotonic() - worker.aborted_at > KILL_GRACE_S \
                else signal.SIGABRT
            if sig == signal.SIGABRT and worker.aborted_at:
                continue
            log.error("worker %d (pid %d) silent for %.1f s: %s", worker.index, worker.pid, silent, sig.name)
            worker.aborted_at = worker.aborted_at or time.monotonic()
            try:
                os.kill(worker.pid, sig)
            except ProcessLookupError:
                pass

    def _drain_wakeups(self, sock):
        try:
            while sock.recv(4096):
                pass
        except BlockingIOError:
            pass

    # ---- signals ----

    def handle_term(self):
        log.info("TERM: stopping after the calls in flight")
        self.stopping = True

    def handle_int(self):
        log.info("INT/QUIT: stopping now")
        self.fast_stop = True
        self.stopping = True

    handle_quit = handle_int

    def handle_hup(self):
        if not self.config and not self.policy_path:
            log.warning("HUP: no --config or --policy file: nothing to reload")
            return
        self.notifier.reloading()
        if self.policy_path:
            self.reload_policy()
        if not self.config:
            self.notifier.ready_again(self.status_text())
            return
        try:
            values = load_config(self.config)
        except ConfigError as e:
            log.error("HUP: %s; keeping the settings in force", e)
            self.notifier.ready_again(self.status_text())
            return
        if "log_level" in values:
            logging.getLogger().setLevel(values["log_level"])
        if "worker_timeout" in values:
            self.worker_timeout = values["worker_timeout"]
        if values.get("metrics_port", self.metrics_port) != self.metrics_port:
            log.warning("HUP: metrics_port changes at restart only; still serving on %s", self.metrics_port)
        if "worker_spin_us" in values:
            self.spin_ns = values["worker_spin_us"] * 1000     # for workers started from now on
        target = values.get("workers", self.target_workers)
        while self.target_workers < target:
            self.handle_ttin()
        while self.target_workers > max(target, 1):
            self.handle_ttou()
        log.warning("HUP: reloaded %s", self.config)
        self.notifier.ready_again(self.status_text())

    def reload_policy(self):
        """Read the policy file again; a bad one is refused and the policy in force stays."""
        try:
            policy = Policy.load(self.policy_path)
        except PolicyError as e:
            log.error("HUP: policy %s; keeping the policy in force", e)
            return
        self.policy = policy
        message = json.dumps({"op": "policy", "policy": policy.to_json()}).encode()
        for worker in self.workers.values():
            try:
                worker.sock.send(message)
                ring(worker)
            except OSError as e:
                log.error("cannot reach worker %d: %s", worker.index, e)
        log.warning("HUP: %s", policy.describe())

    def handle_ttin(self):
        self.target_workers += 1
        self.spawn_worker()
        self.notifier.status(self.status_text())

    def handle_ttou(self):
        if self.target_workers <= 1:
            log.info("TTOU: keeping the last worker")
            return
        self.target_workers -= 1
        worker = max((w for w in self.workers.values() if not w.retiring), key=lambda w: w.index)
        log.info("TTOU: retiring worker %d", worker.index)
        worker.retiring = True
        try:
            worker.sock.send(json.dumps({"op": "stop"}).encode())
        except OSError:
            pass
        ring(worker)

    def handle_chld(self):
        self._reap_workers()

    # ---- workers ----

    def spawn_worker(self, index=None, doorbell=None):
        if index is None:
            # The lowest row of the worker table no live worker holds (a retired one's is free).
            used = {w.index for w in self.workers.values()}
            index = next(i for i in range(lib.LSCA_MAX_WORKERS) if i not in used)
            if index == len(self.doorbells):
                # A root supervisor's clients have other uids and must be able to ring; a user's only itself.
                self.doorbells.append(self._new_semaphores(1, mode=0o666 if os.geteuid() == 0 else 0o600))
            doorbell = self.doorbells[index]
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        row = self.worker_rows[index]
        row.heartbeat_ns = lib.lsca_now_ns()     # a fresh worker gets a full timeout to start
        row.busy_shard = 0
        worker = Worker(index, doorbell, child_sock, self.spin_ns, self.sleep_ms, row)
        worker.policy_json = self.policy.to_json() if self.policy is not None else None
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                keep = child_sock.fileno()
                os.closerange(3, keep)
                os.closerange(keep + 1, 65536)
                worker.init_process(self.pid)
                worker.run()
                code = 0
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                os._exit(code)
        child_sock.close()
        worker.pid = pid
        row.pid = pid
        worker.sock = parent_sock
        self.workers[pid] = worker
        self.selector.register(parent_sock, selectors.EVENT_READ, self._on_worker_message)
        log.info("worker %d started, pid %d", index, pid)
        return worker

    def _reap_workers(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            self.selector.unregister(worker.sock)
            worker.sock.close()
            if self.stopping:
                continue
            orphans = [r for r in self.clients.values() if r.worker is worker]
            if getattr(worker, "retiring", False):
                log.info("worker %d retired; its %d client(s) move to the others", worker.index, len(orphans))
                targets = None
            else:
                log.error("worker %d (pid %d) died (status %#x): starting a new one", worker.index, pid, status)
                targets = self.spawn_worker(worker.index, worker.doorbell_semid)
            for record in orphans:
                if record.releasing:
                    # The client is gone; its release died with the worker: free it here.
                    lib.lsca_shard_fail_all(ffi.cast("void *", record.shard.address))
                    self._free_client(record)
                    continue
                record.worker = targets or self._least_loaded()
                self._resolve_in_flight(record)
                self._assign(record)

    def _resolve_in_flight(self, record):
        """Calls the dead worker had claimed: run again if idempotent, else fail with EIO."""
        shard = ffi.cast("void *", record.shard.address)
        for i in range(SLOTS):
            slot = shard_slot(record.shard.address, i)
            if slot.state != lib.LSCA_SLOT_RUNNING:
                continue
            # Once only: a call that also killed its second worker is answered EIO.
            if idempotent(slot) and slot.seq not in record.retried:
                record.retried.add(slot.seq)
                slot.state = lib.LSCA_SLOT_SUBMITTED
                log.warning("retrying %s of pid %d on the new worker", OP_NAMES.get(slot.op, slot.op), record.pid)
            else:
                slot.status, slot.result, slot.err = lib.LSCA_STATUS_DONE, -1, errno.EIO
                lib.lsca_worker_complete(shard, i)
                log.warning("%s of pid %d was executing when its worker died: EIO",
                            OP_NAMES.get(slot.op, slot.op), record.pid)
        # Submitted calls whose hints the dead worker had taken (and the retries above).
        lib.lsca_shard_republish(shard)

    def _on_worker_message(self, sock):
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            return                      # the worker exited; SIGCHLD handles it
        message = json.loads(data)
        if message.get("op") == "released":
            record = self.clients.get(message["shard"])
            if record is not None:
                self._free_client(record)

    def _least_loaded(self):
        load = {w: 0 for w in self.workers.values() if not getattr(w, "retiring", False)}
        for record in self.clients.values():
            if record.worker in load:
                load[record.worker] += 1
        return min(load, key=lambda w: (load[w], w.index))

    # ---- registration ----

    def _on_accept(self, listener):
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, self._on_readable)
        self.connections[sock] = Connection(sock)

    def _close_connection(self, conn):
        self.selector.unregister(conn.sock)
        self.connections.pop(conn.sock, None)
        for fd in conn.fds:
            os.close(fd)
        if conn.session is not None:
            conn.session.conn = None
            self._maybe_finish(conn.session)
        conn.sock.close()

    def _on_readable(self, sock):
        conn = self.connections[sock]
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, 65536, 4)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        conn.fds.extend(fds)
        if not data:
            self._close_connection(conn)
            return
        conn.buffer += data
        if conn.buffer[:1] != b"{" and len(conn.buffer) < 4:
            return
        if conn.buffer[:4] == HELLO_PREFIX:
            if len(conn.buffer) >= HELLO_SIZE:
                self._on_hello(conn, conn.buffer[:HELLO_SIZE])
                self._close_connection(conn)
            return
        if conn.buffer[:1] != b"{":
            log.warning("dropping a connection that speaks neither the agent nor the session protocol")
            self._close_connection(conn)
            return
        while b"\n" in conn.buffer and conn.sock.fileno() >= 0:
            line, conn.buffer = conn.buffer.split(b"\n", 1)
            self._on_request(conn, line)

    def _reply(self, conn, message):
        conn.sock.setblocking(True)
        try:
            conn.sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError:
            pass
        finally:
            conn.sock.setblocking(False)

    def _on_hello(self, conn, data):
        pid_cred, uid, gid = struct.unpack("3i", conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        try:
            pid, session_token = parse_hello(data)
        except ValueError as e:
            log.warning("refusing pid %d: %s", pid_cred, e)
            return self._send_welcome(conn, errno.EPROTO)
        if pid != pid_cred:
            return self._send_welcome(conn, errno.EPERM)
        if not admits(os.geteuid(), uid):
            log.warning("refusing pid %d: uid %d is not this supervisor's", pid, uid)
            return self._send_welcome(conn, errno.EACCES)
        for record in list(self.clients.values()):
            if record.pid == pid and not record.releasing:
                self._release(record)   # the same pid again: the process exec'd
        try:
            record = self._new_client(pid, uid, gid, self.sessions.get(session_token))
        except OSError as e:
            log.warning("cannot serve pid %d: %s", pid, e)
            return self._send_welcome(conn, e.errno or errno.EIO)
        self._send_welcome(conn, 0, record.shard.id, record.chan_client)

    def _send_welcome(self, conn, status, shmid=-1, chan=None):
        conn.sock.setblocking(True)
        try:
            socket.send_fds(conn.sock, [pack_welcome(status, self.pid, shmid)], [chan.fileno()] if chan else [])
        except OSError:
            pass

    # Every SysV object is created and removed here, so the registry always knows them.

    def _new_segment(self, uid=None, gid=None, size=SHARD_SIZE):
        segment = ipc.Shard(uid, gid, size)
        self.registry.add("shm", segment.id)
        return segment

    def _drop_segment(self, segment):
        segment.remove()
        self.registry.discard("shm", segment.id)

    def _new_semaphores(self, nsems, uid=None, gid=None, mode=0o600):
        semid = ipc.create_semaphores(nsems, uid, gid, mode)
        self.registry.add("sem", semid)
        return semid

    def _drop_semaphores(self, semid):
        ipc.remove_semaphores(semid)
        self.registry.discard("sem", semid)

    def _new_client(self, pid, uid, gid, session):
        owner = (uid, gid) if os.geteuid() == 0 else (None, None)
        shard = self._new_segment(*owner)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            self._drop_segment(shard)
            raise
        worker = self._least_loaded()
        header = shard_header(shard.address)
        header.magic = MAGIC
        header.abi_version = ABI_VERSION
        header.shard_size = SHARD_SIZE
        header.nslots = SLOTS
        header.client_pid = pid
        header.worker_sleeping = 1      # the first submit rings: the worker may be asleep
        record = ClientRecord(self.next_shard_id, pid, uid, shard, pidfd, worker, session)
        # The channel new descriptors travel on: worker end, client end (sent in the welcome).
        record.chan_worker, record.chan_client = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.next_shard_id += 1
        self.clients[record.shard_id] = record
        self.selector.register(pidfd, selectors.EVENT_READ, lambda fd, r=record: self._release(r))
        if session is not None:
            session.add(record)
        self._assign(record)
        return record

    def _assign(self, record):
        header = shard_header(record.shard.address)
        header.doorbell_semid = record.worker.doorbell_semid
        header.doorbell_semnum = 0
        header.worker_id = record.worker.index
        header.worker_sleeping = 1      # the new owner may be asleep: the next submit rings
        session = record.session
        fds = {"chan": record.chan_worker.fileno(), "peer": record.chan_client.fileno()}
        if session is not None and session.trace_fd is not None:
            fds["trace"] = session.trace_fd
        message = {"op": "assign", "shard": record.shard_id, "shmid": record.shard.id,
                   "pid": record.pid, "fds": list(fds),
                   "trace_mask": session.trace_mask if session is not None else 0}
        try:
            socket.send_fds(record.worker.sock, [json.dumps(message).encode()], list(fds.values()))
        except OSError as e:
            log.error("cannot reach worker %d: %s", record.worker.index, e)
        ring(record.worker)

    def _release(self, record):
        """The client is gone (or exec'd): its worker lets go, then we free the shard."""
        if record.releasing:
            return
        record.releasing = True
        self.selector.unregister(record.pidfd)
        if record.worker.pid in self.workers:
            try:
                record.worker.sock.send(json.dumps({"op": "release", "shard": record.shard_id}).encode())
                ring(record.worker)
                return
            except OSError:
                pass
        self._free_client(record)

    def _free_client(self, record):
        header = shard_header(record.shard.address)
        if record.session is not None:
            per_op = lambda counts: {OP_NAMES[op]: counts[op] for op in OP_NAMES if counts[op]}
            record.session.account(record, per_op(header.proxied), per_op(header.passthrough),
                                   per_op(header.declined), per_op(header.worker_ns), per_op(header.failed))
        self.exited.add(header)
        self._drop_segment(record.shard)
        record.chan_worker.close()
        record.chan_client.close()
        if not record.releasing:
            self.selector.unregister(record.pidfd)
        os.close(record.pidfd)
        del self.clients[record.shard_id]
        if record.session is not None:
            self._maybe_finish(record.session)

    def _on_watched_exit(self, fd):
        log.info("the process that started this supervisor exited: stopping")
        self.selector.unregister(fd)
        os.close(fd)
        self.stopping = True

    # ---- sessions (lsca run) ----

    def _on_request(self, conn, line):
        try:
            request = json.loads(line)
            command = request["cmd"]
        except (ValueError, KeyError, TypeError):
            return self._reply(conn, {"error": "malformed request"})
        if command == "stats":
            _pid, uid, _gid = struct.unpack("3i", conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if not stats_allowed(os.geteuid(), uid):
                who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()} and root"
                return self._reply(conn, {"error": f"permission denied: uid {uid} may not read this "
                                                   f"supervisor's statistics (only {who} may)"})
            return self._reply(conn, {"stats": snapshot(self)})
        if command == "session":
            if conn.session is not None:
                return self._reply(conn, {"error": "this connection has a session already"})
            token = secrets.token_hex(16)
            trace_fd = conn.fds.pop(0) if request.get("trace") and conn.fds else None
            conn.session = self.sessions[token] = Session(token, trace_fd, conn, _op_mask(request.get("trace_mask")))
            return self._reply(conn, {"session": token})
        if command == "end" and conn.session is not None:
            conn.session.ending = True
            for record in list(conn.session.records):
                if _exited(record.pidfd):
                    self._release(record)
            return self._maybe_finish(conn.session)
        return self._reply(conn, {"error": f"unknown command {command!r}"})

    def _maybe_finish(self, session):
        if session.conn is None and not session.records:
            self.sessions.pop(session.token, None)
            session.close()
            return
        if session.ending and session.conn is not None and \
                not any(r.releasing or _exited(r.pidfd) for r in session.records):
            self._reply(session.conn, {"stats": session.stats()})
            session.ending = False


def _op_mask(value):
    """A session's trace filter: a 64-bit op mask (anything else: every op)."""
    return value & ((1 << 64) - 1) if isinstance(value, int) and value >= 0 else (1 << 64) - 1


def admits(supervisor_uid, client_uid):
    """A root supervisor serves every uid (acting with their credentials); a user's only itself."""
    return supervisor_uid == 0 or client_uid == supervisor_uid


def _exited(pidfd):
    try:
        return bool(select.select([pidfd], [], [], 0)[0])
    except (OSError, ValueError):
        return True
