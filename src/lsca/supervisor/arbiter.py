"""The supervisor: its main loop, signals, the workers (spawn, reap, stuck ones) and their
heartbeats. What concerns clients (hello, shards, sessions, stats requests) is its base
class, lsca.supervisor.clients.

Modelled on gunicorn's arbiter: the OS signal handler only queues the signal;
the main loop waits for events (with a timeout), dispatches queued signals to
handle_<name> methods, and keeps the worker count at its target.
"""
import array
import collections
import errno
import fcntl
import json
import logging
import os
import resource
import selectors
import signal
import socket
import stat
import time

from lsca.abi import OP_NAMES, SLOTS, ffi, lib, shard_header, shard_slot
from lsca.ops import AT_OFFSET, IDEMPOTENT
from lsca.policy import Policy, PolicyError
from lsca.settings import ConfigError, load_config
from lsca.stats import ExitedClients, snapshot
from lsca.supervisor.admission import dump_owner, exited
from lsca.supervisor.clients import Clients
from lsca.supervisor.control import ControlServer
from lsca.supervisor.registry import Registry, cleanup_dead
from lsca.supervisor.systemd import Notifier
from lsca.supervisor.watchdog import Watchdog
from lsca.workers.worker import Worker, ring_doorbell

SERVING_CPUS = len(os.sched_getaffinity(0))   # the CPUs this supervisor and its workers may run on

log = logging.getLogger("lsca.supervisor")

STOP_TIMEOUT_S = 5.0
TICK_S = 1.0
KILL_GRACE_S = 2.0          # between SIGABRT and SIGKILL for a worker that stopped heartbeating
WATCH_S = 0.25              # how often the watchdog looks at the heartbeats
BOOT_ERROR_EXIT = 3         # a worker's exit status when it could not start
STABLE_S = 10.0             # a worker that lived this long did not die of a crash loop
RESPAWN_FIRST_S = 0.25      # the back-off after the second quick death in a row, doubled after each
RESPAWN_MAX_S = 30.0
PUBLISH_S = 1.0             # how often the main loop publishes a snapshot for --metrics-port

# Calls a replacement worker may run again when the one executing them died (running them
# twice gives the same result) are the op table's IDEMPOTENT lines; anything else that was
# executing fails with EIO. AT_OFFSET ones only where the offset is honoured: a device that
# ignores it (/dev/kmsg, a tty) reads or writes the next bytes again, an O_APPEND descriptor appends.
SEEK_SET, SEEK_END = 0, 2


def idempotent(slot, pidfd):
    """Whether running slot's call a second time gives the result of running it once.
    pidfd is the client's: the descriptor itself is looked at when its kind matters."""
    if slot.op == lib.LSCA_OP_LSEEK:
        return slot.args[2] in (SEEK_SET, SEEK_END)     # SEEK_CUR moves again
    if slot.op in AT_OFFSET:
        return honours_offset(pidfd, int(ffi.cast("int", slot.args[0])), slot.op == lib.LSCA_OP_PWRITE)
    return slot.op in IDEMPOTENT


def honours_offset(pidfd, fd, writing):
    """Whether client descriptor fd reads or writes exactly at the offset it is given; any
    doubt (the descriptor cannot be taken, say) is a no: the call then fails with EIO."""
    own = lib.lsca_pidfd_getfd(pidfd, fd)
    if own < 0:
        return False
    try:
        mode = os.fstat(own).st_mode
        flags = fcntl.fcntl(own, fcntl.F_GETFL)
    except OSError:
        return False
    finally:
        os.close(own)
    if writing and flags & os.O_APPEND:
        return False                    # Linux's pwrite appends there, whatever the offset
    return stat.S_ISREG(mode) or stat.S_ISBLK(mode)


class SupervisorError(Exception):
    """A reason the supervisor cannot start or go on, meant for a one-line message; status is
    its exit status (BOOT_ERROR_EXIT: a worker could not start, restarting will not help)."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


class Supervisor(Clients):
    SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD,
               signal.SIGTTIN, signal.SIGTTOU]
    SIG_NAMES = {sig: sig.name[3:].lower() for sig in SIGNALS}

    def __init__(self, socket_path, workers, worker_spin_us=200, exit_with=None, sleep_ms=1000,
                 worker_timeout=30.0, config=None, metrics_port=None, policy_path=None,
                 max_clients_per_uid=1024, max_connections_per_uid=256):
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
        self.per_uid_clients = {}       # uid -> registered processes
        self.max_clients_per_uid = max_clients_per_uid    # each holds a shard and 4 descriptors here
        self.next_shard_id = 1
        self.sig_queue = []
        self.stopping = False
        self.fast_stop = False
        self.registry = None
        self.table = None
        self.listener = None
        self.doorbells = []
        self.selector = selectors.DefaultSelector()
        self.control = ControlServer(self.selector, self._on_hello, self._on_request, self._on_peer_closed)
        self.control.max_peers_per_uid = max_connections_per_uid
        self.exited = ExitedClients()   # counts of clients that are gone (statistics)
        self.metrics_port = metrics_port
        self.policy_path = policy_path
        self.policy = None
        self.metrics = None
        self.published = None           # the latest snapshot, for the metrics thread
        self.next_publish = 0.0
        self.next_sweep = 0.0
        self.watchdog = Watchdog(worker_timeout)
        self.next_watch = 0.0
        self.quick_deaths = 0           # workers in a row that died within STABLE_S of starting
        self.respawn_at = 0.0           # no new worker before this (a crash loop's back-off)
        self.halt_reason = None         # why the supervisor stops on its own

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
        self.reconcile_workers()
        log.info("listening on %s with %d workers", self.socket_path, self.target_workers)
        self.notifier.ready(self.status_text())
        self.publish_snapshot()

    def status_text(self):
        return f"serving {len(self.clients)} client(s) on {self.socket_path} with {len(self.workers)} worker(s)"

    def _serve_metrics(self):
        try:
            from lsca.supervisor.metrics import ADDRESS, MetricsServer   # prometheus_client only when asked
        except ImportError as e:
            raise SupervisorError(f"--metrics-port needs {e.name}: pip install 'lsca[metrics]'") from None
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
        if os.path.lexists(self.socket_path):
            if not stat.S_ISSOCK(os.lstat(self.socket_path).st_mode):
                raise SupervisorError(f"{self.socket_path} exists and is not a socket: not replacing it")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.socket_path)
                raise SupervisorError(f"a supervisor is already listening on {self.socket_path}")
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(self.socket_path)   # left by an instance that died
            finally:
                probe.close()
        _raise_nofile_limit()
        try:
            self.control.listen(self.socket_path)
        except OSError as e:
            raise SupervisorError(f"cannot listen on {self.socket_path}: {e.strerror}")
        # A root supervisor serves every uid (SO_PEERCRED decides); a user's serves only itself.
        os.chmod(self.socket_path, 0o666 if os.geteuid() == 0 else 0o600)
        self.listener = self.control.listener

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
            self._tell(worker, {"op": "stop"})
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
            worker = self.workers.pop(pid)
            worker.sock.close()
            self._drop_outbox(worker)
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
        self.control.close()
        for session in list(self.sessions.values()):
            session.close()
        self.sessions.clear()
        if self.listener is not None:
            self.listener = None
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass

    # ---- main loop ----

    def run(self):
        while not self.stopping:
            for key, mask in self.selector.select(self._tick()):
                try:
                    key.data(key.fileobj, mask)
                except Exception:
                    # A fault of ours on one event must not end the pool every program relies on.
                    log.exception("handling an event on %r failed", key.fileobj)
            while self.sig_queue and not self.stopping:
                sig = self.sig_queue.pop(0)
                getattr(self, "handle_" + self.SIG_NAMES[sig])()
            self.murder_stuck_workers()
            self.reconcile_workers()
            now = time.monotonic()
            if now >= self.next_sweep:
                # Once a tick, not once an event: both walk every client / connection.
                self.revoke_changed_clients()
                self.control.expire(now)
                self.next_sweep = now + TICK_S
            self.publish_snapshot()
            now = time.monotonic()
            if self.notifier.watchdog_due(now):
                self.notifier.watchdog(now)
        if self.halt_reason:
            raise SupervisorError(self.halt_reason, status=BOOT_ERROR_EXIT)

    def _tick(self):
        """How long the main loop may wait for events: a tick, or until a worker is due."""
        serving = sum(1 for w in self.workers.values() if not w.retiring)
        if serving < self.target_workers:
            return min(TICK_S, max(0.0, self.respawn_at - time.monotonic()))
        return TICK_S

    def murder_stuck_workers(self):
        """A worker stuck for the timeout (lsca.supervisor.watchdog: silent while it could
        have run, the supervisor awake): SIGABRT, then SIGKILL if it is still there."""
        now = time.monotonic()
        for worker in self.workers.values():
            if worker.aborted_at and not worker.killed and now - worker.aborted_at > KILL_GRACE_S:
                log.error("worker %d (pid %d) still there %.0f s after SIGABRT: SIGKILL",
                          worker.index, worker.pid, KILL_GRACE_S)
                worker.killed = True
                self._signal_worker(worker, signal.SIGKILL)
        if now < self.next_watch:
            return
        self.next_watch = now + WATCH_S
        self.watchdog.timeout_s = self.worker_timeout
        heartbeats = {w.pid: self.worker_rows[w.index].heartbeat_ns for w in self.workers.values()
                      if not w.aborted_at}
        for pid, stuck_s in self.watchdog.look(heartbeats):
            worker = self.workers[pid]
            log.error("worker %d (pid %d) made no progress for %.1f s while it could run: SIGABRT",
                      worker.index, worker.pid, stuck_s)
            worker.aborted_at = now
            self._signal_worker(worker, signal.SIGABRT)

    @staticmethod
    def _signal_worker(worker, sig):
        try:
            os.kill(worker.pid, sig)
        except ProcessLookupError:
            pass

    def revoke_changed_clients(self):
        """A non-root client that exec'd a set-uid/set-gid/file-capability image (or became
        undumpable) is no longer the user who registered: its registration goes. Workers
        check the same before every call; this frees the shard without waiting for one."""
        for record in list(self.clients.values()):
            if record.identity.root or record.releasing:
                continue
            try:
                owner = dump_owner(record.procfd)
            except OSError:
                owner = None
            if owner != (record.identity.uid, record.identity.gid) and not exited(record.pidfd):
                log.warning("pid %d is no longer uid %d (exec of a set-id image?): registration dropped",
                            record.pid, record.identity.uid)
                self._revoke(record)

    def _revoke(self, record):
        """Drop a registration now: later submits go unanswered by any worker (the shard is
        marked dead, so the agent runs natively), then the worker lets go as at exit."""
        shard_header(record.shard.address).dead = 1
        self._release(record)

    def _drain_wakeups(self, sock, mask=None):
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
        self.max_clients_per_uid = values.get("max_clients_per_uid", self.max_clients_per_uid)
        self.control.max_peers_per_uid = values.get("max_connections_per_uid", self.control.max_peers_per_uid)
        if values.get("metrics_port", self.metrics_port) != self.metrics_port:
            log.warning("HUP: metrics_port changes at restart only; still serving on %s", self.metrics_port)
        if "worker_spin_us" in values:
            self.spin_ns = values["worker_spin_us"] * 1000     # for workers started from now on
        self.target_workers = max(values.get("workers", self.target_workers), 1)
        self.reconcile_workers()
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
        for worker in self.workers.values():
            if not self._tell(worker, {"op": "policy", "policy": policy.to_json()}):
                log.error("cannot reach worker %d", worker.index)
        log.warning("HUP: %s", policy.describe())

    def handle_ttin(self):
        self.target_workers += 1
        self.reconcile_workers()
        self.notifier.status(self.status_text())

    def handle_ttou(self):
        if self.target_workers <= 1:
            log.info("TTOU: keeping the last worker")
            return
        self.target_workers -= 1
        self.reconcile_workers()

    def reconcile_workers(self):
        """The one place the pool meets its target (TTIN, TTOU, HUP and a death only change
        the target or the pool): retire the extra workers, start the missing ones, no sooner
        than the back-off of a crash loop allows."""
        if self.stopping:
            return
        serving = [w for w in self.workers.values() if not w.retiring]
        for worker in sorted(serving, key=lambda w: w.index)[self.target_workers:]:
            log.info("retiring worker %d", worker.index)
            worker.retiring = True
            self._tell(worker, {"op": "stop"})
        missing = self.target_workers - len(serving)
        if missing > 0 and time.monotonic() >= self.respawn_at:
            for _ in range(missing):
                self.spawn_worker()

    def handle_chld(self):
        self._reap_workers()

    # ---- workers ----

    def spawn_worker(self):
        # The lowest row of the worker table no live worker holds (a retired or dead one's is free).
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
            code = BOOT_ERROR_EXIT
            try:
                keep = child_sock.fileno()
                os.closerange(3, keep)
                os.closerange(keep + 1, 65536)
                worker.init_process(self.pid)
                code = 1
                worker.run()
                code = 0
            except BaseException:
                log.exception("worker %d %s", index, "could not start" if code == BOOT_ERROR_EXIT else "failed")
            finally:
                os._exit(code)
        child_sock.close()
        worker.pid = pid
        worker.started_at = time.monotonic()
        worker.killed = False
        row.pid = pid
        worker.sock = parent_sock
        worker.outbox = collections.deque()     # messages the worker's socket did not take yet
        parent_sock.setblocking(False)
        self.workers[pid] = worker
        self.selector.register(parent_sock, selectors.EVENT_READ, self._on_worker_event)
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
            self._drop_outbox(worker)
            if self.stopping:
                continue
            self.watchdog.forget(pid)
            orphans = [r for r in self.clients.values() if r.worker is worker]
            if worker.retiring:
                log.info("worker %d retired; its %d client(s) move to the others", worker.index, len(orphans))
            else:
                self._count_death(worker, status)
            self.reconcile_workers()
            for record in orphans:
                if record.releasing:
                    # The client is gone; its release died with the worker: free it here.
                    lib.lsca_shard_fail_all(ffi.cast("void *", record.shard.address))
                    self._free_client(record)
                    continue
                record.worker = self._least_loaded()
                if record.worker is None:
                    # No worker has room left (or none runs during a back-off): natively from now on.
                    lib.lsca_shard_fail_all(ffi.cast("void *", record.shard.address))
                    self._free_client(record)
                    continue
                self._resolve_in_flight(record)
                self._assign(record)

    def _count_death(self, worker, status):
        """A worker died: a boot error stops the supervisor (every new worker would fail the
        same way); deaths in a row soon after start (a crash loop) space out the respawns."""
        now = time.monotonic()
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == BOOT_ERROR_EXIT:
            log.critical("worker %d could not start (see above): stopping", worker.index)
            self.halt_reason = f"worker {worker.index} could not start (see the log above)"
            self.stopping = True
            return
        self.quick_deaths = self.quick_deaths + 1 if now - worker.started_at < STABLE_S else 1
        delay = 0.0 if self.quick_deaths < 2 else min(RESPAWN_FIRST_S * 2 ** (self.quick_deaths - 2),
                                                       RESPAWN_MAX_S)
        self.respawn_at = now + delay
        if delay:
            log.error("worker %d (pid %d) died (status %#x), the %d%s in a row within %.0f s of its start: "
                      "the next one in %.2f s", worker.index, worker.pid, status, self.quick_deaths,
                      _ordinal(self.quick_deaths), STABLE_S, delay)
        else:
            log.error("worker %d (pid %d) died (status %#x): starting a new one", worker.index, worker.pid, status)

    def _resolve_in_flight(self, record):
        """Calls the dead worker had claimed: run again if idempotent, else fail with EIO."""
        shard = ffi.cast("void *", record.shard.address)
        for i in range(SLOTS):
            slot = shard_slot(record.shard.address, i)
            if slot.state != lib.LSCA_SLOT_RUNNING:
                continue
            # Once only: a call that also killed its second worker is answered EIO.
            if slot.seq not in record.retried and idempotent(slot, record.pidfd):
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

    def _tell(self, worker, message, fds=()):
        """Send a worker a message and ring it, never waiting: a worker stuck in a call (a file
        system that hangs, say) must not stop this loop. What its socket does not take now waits,
        in order, in its outbox. False when the worker cannot be reached any more."""
        if worker.sock.fileno() < 0:
            return False
        worker.outbox.append((json.dumps(message).encode(), [os.dup(fd) for fd in fds]))
        reachable = self._flush_outbox(worker)
        ring_doorbell(worker)
        return reachable

    def _flush_outbox(self, worker):
        while worker.outbox:
            data, fds = worker.outbox[0]
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            try:
                worker.sock.sendmsg([data], ancillary, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                # A worker that died is reaped and reported there; stopping, it is no news.
                (log.debug if self.stopping else log.error)("cannot reach worker %d: %s", worker.index, e.strerror)
                self._drop_outbox(worker)
                return False
            worker.outbox.popleft()
            for fd in fds:
                os.close(fd)
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if worker.outbox else 0)
        if self.selector.get_key(worker.sock).events != events:
            self.selector.modify(worker.sock, events, self._on_worker_event)
        return True

    def _drop_outbox(self, worker):
        while worker.outbox:
            for fd in worker.outbox.popleft()[1]:
                os.close(fd)

    def _on_worker_event(self, sock, mask=selectors.EVENT_READ):
        worker = next((w for w in self.workers.values() if w.sock is sock), None)
        if worker is not None and mask & selectors.EVENT_WRITE:
            self._flush_outbox(worker)
        if mask & selectors.EVENT_READ:
            self._on_worker_message(sock)

    def _on_worker_message(self, sock):
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            return                      # the worker exited; SIGCHLD handles it
        message = json.loads(data)
        record = self.clients.get(message.get("shard"))
        if record is None:
            return
        if message.get("op") == "released":
            self._free_client(record)
        elif message.get("op") == "revoked" and not record.releasing:
            log.warning("pid %d is no longer uid %d (exec of a set-id image?): registration dropped",
                        record.pid, record.uid)
            self._revoke(record)

    def _least_loaded(self):
        """The worker a new client gets: the least loaded of those serving clients already while
        they number CPUs/2 or more, else the least loaded of all. A client calling and the worker
        answering each want a CPU: more serving workers than that only add spinners that take
        turns on too few CPUs (2 clients on 2 workers on 2 CPUs ran at 0.65x of one worker)."""
        load = {w: 0 for w in self.workers.values() if not getattr(w, "retiring", False)}
        for record in self.clients.values():
            if record.worker in load:
                load[record.worker] += 1
        room = [w for w in load if load[w] < lib.LSCA_WORKER_MAX_SHARDS]
        serving = [w for w in room if load[w] > 0]
        if len(serving) >= max(1, SERVING_CPUS // 2):
            room = serving
        return min(room, key=lambda w: (load[w], w.index)) if room else None


def _ordinal(n):
    return "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _raise_nofile_limit():
    """Every connection and client holds descriptors: take the hard limit as the soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
