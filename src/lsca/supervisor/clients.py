"""The clients' side of the supervisor: a process's hello (who it is, its shard and
descriptor channel, its worker) and its end, and the requests of `lsca run` and `lsca
stats` on the control socket (sessions, counts). A base class of Supervisor (arbiter.py),
which keeps the signals, the workers and their heartbeats."""
import errno
import logging
import os
import secrets
import selectors
import socket

from lsca import ipc
from lsca.abi import ABI_VERSION, MAGIC, OP_NAMES, SHARD_SIZE, SLOTS, lib, pack_welcome, parse_hello, shard_header
from lsca.stats import snapshot, stats_allowed
from lsca.supervisor.admission import Refused, admit, exited, open_proc_dir
from lsca.supervisor.session import Session

log = logging.getLogger("lsca.supervisor")


class ClientRecord:
    """A registered client process and the IPC objects of its shard."""

    def __init__(self, shard_id, pid, identity, shard, pidfd, procfd, worker, session):
        self.shard_id = shard_id
        self.pid = pid
        self.identity = identity        # the authority captured at registration, never widened
        self.uid = identity.uid
        self.shard = shard
        self.pidfd = pidfd
        self.procfd = procfd            # /proc/PID bound to this process (not to its number)
        self.worker = worker
        self.session = session
        self.releasing = False
        self.retried = set()            # seqs of calls already run again after a worker died


class Clients:
    # ---- registration ----

    def _on_peer_closed(self, peer):
        if peer.session is not None:
            peer.session.conn = None
            self._maybe_finish(peer.session)

    def _reply(self, peer, message):
        self.control.reply(peer, message)

    def _on_hello(self, peer, data):
        """An agent registers its process. Who it is comes from the kernel only: the connector
        (SO_PEERCRED), the sender of every byte of the hello (SCM_CREDENTIALS) and the
        process's credentials now (admission.admit); the hello itself only names a session."""
        try:
            pid, session_token = parse_hello(data)
        except ValueError as e:
            log.warning("refusing pid %d: %s", peer.pid, e)
            return self._send_welcome(peer, errno.EPROTO)
        if pid != peer.pid or peer.senders != {pid}:
            # Sent on a connection it inherited, for another process (a set-uid one, say).
            self.control.log_limited(("forged", peer.uid), "refusing a hello for pid %d sent by pid(s) %s "
                                     "on a connection of pid %d (uid %d)", pid, sorted(peer.senders),
                                     peer.pid, peer.uid)
            return self._send_welcome(peer, errno.EPERM)
        if peer.uid != 0 and self.per_uid_clients.get(peer.uid, 0) >= self.max_clients_per_uid:
            self.control.log_limited(("clients", peer.uid), "uid %d has %d processes registered (the limit, "
                                     "--max-clients-per-uid): pid %d runs natively", peer.uid,
                                     self.max_clients_per_uid, pid)
            return self._send_welcome(peer, errno.EAGAIN)
        if self._least_loaded() is None:
            self.control.log_limited("full", "every worker serves %d processes (the most it can): pid %d "
                                     "runs natively", lib.LSCA_WORKER_MAX_SHARDS, pid)
            return self._send_welcome(peer, errno.EAGAIN)
        pidfd = procfd = -1
        try:
            pidfd = os.pidfd_open(pid)
            procfd = open_proc_dir(pid, pidfd)
            identity = admit(os.geteuid(), peer.uid, peer.gid, procfd)
        except (OSError, Refused) as e:
            for fd in (pidfd, procfd):
                if fd >= 0:
                    os.close(fd)
            if e.errno in (errno.EPERM, errno.EACCES):
                self.control.log_limited(("refused", peer.uid), "refusing pid %d (uid %d): %s", pid, peer.uid, e)
            else:
                log.debug("cannot serve pid %d: %s", pid, e)   # it exited while registering: normal
            return self._send_welcome(peer, e.errno or errno.EIO)
        for record in list(self.clients.values()):
            if record.pid == pid and not record.releasing:
                self._release(record)   # the same pid again: the process exec'd
        session = self.sessions.get(session_token)
        if session is not None and not session.admits(identity.uid):
            log.warning("pid %d (uid %d) named the session of uid %d: not traced there", pid, identity.uid,
                        session.uid)
            session = None
        try:
            record = self._new_client(pid, identity, pidfd, procfd, session)
        except OSError as e:
            os.close(pidfd)
            os.close(procfd)
            # A process that exited while registering is normal; anything else is worth a line.
            (log.debug if e.errno == errno.ESRCH else log.warning)("cannot serve pid %d: %s", pid, e)
            return self._send_welcome(peer, e.errno or errno.EIO)
        if not self._send_welcome(peer, 0, record.shard.id, record.chan_client):
            self._release(record)       # the agent gave up waiting: it runs natively

    def _send_welcome(self, peer, status, shmid=-1, chan=None):
        return self.control.send_once(peer, pack_welcome(status, self.pid, shmid), [chan.fileno()] if chan else [])

    # Every SysV object is created and removed here. Semaphore sets are recorded in the registry;
    # segments are not (a rename per registration was the supervisor's largest cost): a cleanup
    # finds a dead instance's segments by their creator pid.

    def _new_segment(self, uid=None, gid=None, size=SHARD_SIZE):
        return ipc.Shard(uid, gid, size)

    def _drop_segment(self, segment):
        segment.remove()

    def _new_semaphores(self, nsems, uid=None, gid=None, mode=0o600):
        semid = ipc.create_semaphores(nsems, uid, gid, mode)
        self.registry.add("sem", semid)
        return semid

    def _drop_semaphores(self, semid):
        ipc.remove_semaphores(semid)
        self.registry.discard("sem", semid)

    def _new_client(self, pid, identity, pidfd, procfd, session):
        owner = (identity.uid, identity.gid) if os.geteuid() == 0 else (None, None)
        shard = self._new_segment(*owner)
        worker = self._least_loaded()
        header = shard_header(shard.address)
        header.magic = MAGIC
        header.abi_version = ABI_VERSION
        header.shard_size = SHARD_SIZE
        header.nslots = SLOTS
        header.client_pid = pid
        header.worker_sleeping = 1      # the first submit rings: the worker may be asleep
        record = ClientRecord(self.next_shard_id, pid, identity, shard, pidfd, procfd, worker, session)
        # The channel new descriptors travel on: worker end, client end (sent in the welcome).
        try:
            record.chan_worker, record.chan_client = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError:
            self._drop_segment(shard)
            raise
        self.next_shard_id += 1
        self.clients[record.shard_id] = record
        self.per_uid_clients[identity.uid] = self.per_uid_clients.get(identity.uid, 0) + 1
        self.selector.register(pidfd, selectors.EVENT_READ, lambda fd, mask, r=record: self._release(r))
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
        # The worker reaches the process only through these two, never by its pid number.
        fds = {"chan": record.chan_worker.fileno(), "peer": record.chan_client.fileno(),
               "pidfd": record.pidfd, "proc": record.procfd}
        if session is not None and session.trace_fd is not None:
            fds["trace"] = session.trace_fd
        message = {"op": "assign", "shard": record.shard_id, "shmid": record.shard.id,
                   "pid": record.pid, "fds": list(fds), "identity": record.identity.to_json(),
                   "trace_mask": session.trace_mask if session is not None else 0}
        self._tell(record.worker, message, fds.values())

    def _release(self, record):
        """The client is gone (or exec'd): its worker lets go, then we free the shard."""
        if record.releasing:
            return
        record.releasing = True
        self.selector.unregister(record.pidfd)
        if record.worker.pid in self.workers and self._tell(record.worker, {"op": "release", "shard": record.shard_id}):
            return
        self._free_client(record)

    def _free_client(self, record):
        header = shard_header(record.shard.address)
        if record.session is not None:
            per_op = lambda counts: {OP_NAMES[op]: counts[op] for op in OP_NAMES if counts[op]}
            record.session.account(record, per_op(header.proxied), per_op(header.passthrough),
                                   per_op(header.declined), per_op(header.worker_ns), per_op(header.failed),
                                   per_op(header.waited))
        self.exited.add(header)
        self._drop_segment(record.shard)
        record.chan_worker.close()
        record.chan_client.close()
        if not record.releasing:
            self.selector.unregister(record.pidfd)
        os.close(record.pidfd)
        os.close(record.procfd)
        del self.clients[record.shard_id]
        left = self.per_uid_clients.get(record.uid, 1) - 1
        if left:
            self.per_uid_clients[record.uid] = left
        else:
            self.per_uid_clients.pop(record.uid, None)
        if record.session is not None:
            self._maybe_finish(record.session)

    def _on_watched_exit(self, fd, mask=None):
        log.info("the process that started this supervisor exited: stopping")
        self.selector.unregister(fd)
        os.close(fd)
        self.stopping = True

    # ---- sessions (lsca run) ----

    def _on_request(self, peer, request):
        command = request["cmd"]
        if command == "stats":
            # The sender of this very message, not only the connector, must be allowed.
            if not stats_allowed(os.geteuid(), peer.sender_uid):
                who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()} and root"
                return self._reply(peer, {"error": f"permission denied: uid {peer.sender_uid} may not read "
                                                   f"this supervisor's statistics (only {who} may)"})
            return self._reply(peer, {"stats": snapshot(self)})
        if command == "session":
            if peer.session is not None:
                return self._reply(peer, {"error": "this connection has a session already"})
            trace_fd = None
            if request.get("trace"):
                if not peer.fds:
                    return self._reply(peer, {"error": "a traced session needs its trace socket"})
                trace_fd = peer.fds.pop(0)
                if not _is_trace_socket(trace_fd):
                    os.close(trace_fd)
                    return self._reply(peer, {"error": "the trace descriptor must be an AF_UNIX SOCK_SEQPACKET socket"})
            token = secrets.token_hex(16)
            peer.session = self.sessions[token] = Session(token, trace_fd, peer, _op_mask(request.get("trace_mask")),
                                                          uid=peer.uid)
            return self._reply(peer, {"session": token})
        if command == "end" and peer.session is not None:
            peer.session.ending = True
            for record in list(peer.session.records):
                if exited(record.pidfd):
                    self._release(record)
            return self._maybe_finish(peer.session)
        return self._reply(peer, {"error": f"unknown command {command[:64]!r}"})

    def _maybe_finish(self, session):
        if session.conn is None and not session.records:
            self.sessions.pop(session.token, None)
            session.close()
            return
        if session.ending and session.conn is not None and \
                not any(r.releasing or exited(r.pidfd) for r in session.records):
            self._reply(session.conn, {"stats": session.stats()})
            session.ending = False



def _op_mask(value):
    """A session's trace filter: a 64-bit op mask (anything else: every op)."""
    return value & ((1 << 64) - 1) if isinstance(value, int) and value >= 0 else (1 << 64) - 1


def admits(supervisor_uid, client_uid):
    """A root supervisor serves every uid (acting with their credentials); a user's only itself."""
    return supervisor_uid == 0 or client_uid == supervisor_uid


def _is_trace_socket(fd):
    """The trace end a session gives us: workers send to it without waiting, so it must be a
    Unix SOCK_SEQPACKET socket (not a pipe, a file or a tty that could hold a send)."""
    try:
        probe = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    try:
        return probe.family == socket.AF_UNIX and probe.type == socket.SOCK_SEQPACKET
    finally:
        probe.close()
