"""A worker process: drains the shards the supervisor assigned to it.

The supervisor creates the Worker before forking; the child runs init_process()
and then run(). Messages from the supervisor (assign/release/stop) arrive as JSON
datagrams on a SOCK_SEQPACKET pair, each followed by a post on the doorbell.
"""
import errno
import json
import logging
import os
import signal
import socket
import time

from lsca import ipc
from lsca.abi import OP_MAX, ffi, lib, shard_header
from lsca.ops import creates_fds
from lsca.workers.calls import as_int
from lsca.workers.client import Client
from lsca.workers.creds import setup_compiled_route
from lsca.workers.fdcache import Blocking, Declined
from lsca.workers import faults
from lsca.policy import Policy
from lsca.identity import Identity
from lsca.workers.gate import DESCRIPTOR_OPS, Gate, descriptor_paths, lexical_paths
from lsca.workers.handlers import HANDLERS

log = logging.getLogger("lsca.worker")

MAX_SHARDS = lib.LSCA_WORKER_MAX_SHARDS
DONE = lib.LSCA_STATUS_DONE
PASSTHROUGH = lib.LSCA_STATUS_PASSTHROUGH
WAIT_NATIVE = lib.LSCA_STATUS_WAIT_NATIVE
REPORTED = lib.LSCA_XFER_REPORTED
CONTROL_EVERY_S = 0.01       # while busy, read the supervisor's messages this often
TURN_NS = 10_000_000         # the compiled loop hands back at least this often
# Records a trace reader has not taken are retried this soon while it takes some, backing
# off to the longest while it takes none (sends never wait for a reader).
TRACE_RETRY_MS = (1, 50)
EXIT_FLUSH_S = 1.0           # at exit, released clients' records get this long to go
ALL_OPS = (1 << OP_MAX) - 1
CPUS = os.cpu_count() or 1
CROWDED_SPIN_NS = 2_000      # our spin while the machine has more runnable tasks than CPUs
LOADAVG = "/proc/loadavg"


def runnable_tasks():
    """Tasks running or waiting for a CPU on the whole machine now (ourselves included)."""
    try:
        with open(LOADAVG, "rb") as f:
            return int(f.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return 0


class Worker:
    def __init__(self, index, doorbell_semid, control, spin_ns, sleep_ms, row=None):
        self.index = index
        self.row = row                  # our line of the supervisor's worker table (heartbeat)
        self.aborted_at = None          # supervisor side: when SIGABRT was sent
        self.retiring = False
        self.doorbell_semid = doorbell_semid
        self.control = control          # our end of the socketpair
        self.spin_ns = spin_ns
        self.sleep_ms = sleep_ms
        self.pid = None
        self.shards = 0                 # supervisor-side load count
        self.policy_json = None         # the supervisor's policy, compiled in the child

    # ---- in the child ----

    def init_process(self, supervisor_pid):
        self.supervisor_pid = supervisor_pid
        self.alive = True
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(sig, signal.SIG_IGN)      # the supervisor decides; TERM ends us
        signal.signal(signal.SIGTERM, self._handle_term)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        self.control.setblocking(False)
        self.orphaned = False
        self.ctx = ffi.new("struct lsca_worker_ctx *")
        self.fast = ffi.new("struct lsca_client_fast *[]", MAX_SHARDS)   # ctx.shards[i]'s compiled side
        self.ctx.doorbell_semid = self.doorbell_semid
        self.ctx.doorbell_semnum = 0
        self.gate = Gate(Policy.from_json(self.policy_json)) if self.policy_json else None
        setup_compiled_route()
        self.clients = {}               # ctx index -> Client
        self.by_shard = {}              # supervisor shard id -> ctx index
        self.trace_retry_ms = TRACE_RETRY_MS[0]
        self.crowded = False
        self.turn_spin_ns = self.spin_ns
        if self.row is None:
            self.row = ffi.new("struct lsca_worker_status *")
        elif ffi.typeof(self.row).kind == "struct":
            self.row = ffi.addressof(self.row)     # the C loop writes it through a pointer
        faults.at_boot()

    def _handle_term(self, signum, frame):
        self.alive = False

    def run(self):
        shard_index, slot_index = ffi.new("int *"), ffi.new("int *")
        next_control = 0.0
        faults.after_boot()
        try:
            while self.alive:
                self.row.heartbeat_ns = lib.lsca_now_ns()
                # The compiled loop answers hot calls itself and hands us the rest.
                got = lib.lsca_worker_run(self.ctx, self.fast, self.row, self.turn_spin_ns, 0, TURN_NS,
                                          shard_index, slot_index)
                if got:
                    self.dispatch(got, shard_index, slot_index)
                    now = time.monotonic()
                    if now >= next_control:
                        self.watch_load()
                        self.report_revoked()
                        self.send_records()
                        self.read_control()
                        next_control = now + CONTROL_EVERY_S
                    continue
                # Idle after spinning: send records, let go of client files, read messages, sleep.
                self.watch_load()
                self.report_revoked()
                for client in self.clients.values():
                    client.fds.clear()
                retry_ms = self.send_records()
                self.read_control()
                if os.getppid() != self.supervisor_pid:
                    log.warning("worker %d: supervisor is gone, exiting", self.index)
                    self.orphaned = True
                    break
                sleep_ms = self.sleep_ms
                if retry_ms:
                    sleep_ms = min(sleep_ms, retry_ms)
                if self.alive:
                    woke = self.dispatch(lib.lsca_worker_run(self.ctx, self.fast, self.row, self.turn_spin_ns,
                                                             sleep_ms, TURN_NS, shard_index, slot_index),
                                         shard_index, slot_index)
                    if not woke:
                        # Woken by a message (a new client's assign, say): read it now, not after a spin.
                        self.read_control()
        finally:
            if self.orphaned:
                # Nobody will reassign these clients: fail what is in flight (EIO) and wake them.
                for client in self.clients.values():
                    lib.lsca_shard_fail_all(client.shard)
            for client in list(self.clients.values()):
                client.close()
            self.last_records()

    def watch_load(self):
        """More runnable tasks than CPUs: spinning would take the CPU the other side (or another
        program) needs, so we spin briefly and tell our clients to sleep at once (slots.c)."""
        # Our client and ourselves count too: one spinner per CPU is what fits.
        crowded = runnable_tasks() > CPUS
        if crowded != self.crowded:
            self.crowded = crowded
            for client in self.clients.values():
                shard_header(client.address).crowded = int(crowded)
        self.turn_spin_ns = min(self.spin_ns, CROWDED_SPIN_NS) if crowded else self.spin_ns

    def serve(self, index, i):
        client = self.clients.get(index)
        if client is None:
            return
        lib.lsca_trace_release_held(client.fast, i)     # the client took the numbers: it calls again
        # What we execute, for the supervisor should we die in it (retry or EIO).
        self.row.busy_slot = i
        self.row.busy_shard = client.shard_id
        if client.slots[i].xfer == REPORTED:
            lib.lsca_answer_reported(client.fast, i)
        else:
            self.execute(client, i)
        self.row.busy_shard = 0

    def execute(self, client, i):
        """Run slot i's call and answer it (on the main thread)."""
        started = lib.lsca_now_ns()
        slot = client.slots[i]
        op = slot.op
        handler = HANDLERS[op] if op < OP_MAX else None
        record = lib.lsca_trace_begin(client.fast, slot)
        status, err = DONE, 0
        gate = client.gate if client.gate is not None and client.gate.covers(op) else None
        try:
            if handler is None:
                raise OSError(errno.EINVAL, "unknown op")
            if gate is not None and op in DESCRIPTOR_OPS:
                gate.check(client, slot, descriptor_paths(client, slot))
            result = handler(client, slot)
        except Blocking:
            # It would wait: the program's own thread waits for it natively (signals, restarts
            # and its end act on it as on any native call), and this loop goes on serving.
            status, result = WAIT_NATIVE, 0
        except Declined:
            status, result = PASSTHROUGH, 0
            if gate is not None and not gate.check_lexical(client, slot, lexical_paths(client, slot)):
                # It would run natively, out of the policy's reach: refuse it here instead.
                status, result, err = DONE, -1, gate.last_errno
        except OSError as e:
            result, err = -1, e.errno or errno.EIO
        except (ValueError, OverflowError, TypeError) as e:
            # A malformed request fails this call only.
            result, err = -1, errno.EINVAL
            log.debug("worker %d: malformed request op=%d: %s", self.index, op, e)
        except Exception:
            # A fault of ours fails this call (never guess), not the worker and its other clients.
            result, err = -1, errno.EIO
            log.exception("worker %d: op %d of pid %d failed", self.index, op, client.pid)
        finally:
            client.fds.release_temporaries()
            while client.closing:
                os.close(client.closing.pop())
        if not 0 <= err < 4096 or not -(1 << 63) <= result < (1 << 63):
            result, err = -1, errno.EINVAL          # whatever a malformed request made of them
        slot.status = status
        slot.err = err
        slot.result = result
        took = lib.lsca_now_ns() - started
        held = False
        if record != ffi.NULL and status == DONE:
            # Descriptor numbers are known once the client took them: hold the record till then.
            held = result >= 0 and creates_fds(op, as_int(slot.args[1]))
            lib.lsca_trace_end(client.fast, record, slot, took, not held)
            if held:
                lib.lsca_trace_hold(client.fast, i, record)
        lib.lsca_worker_complete(client.shard, i)
        if status == DONE:
            lib.lsca_account(self.row, client.shard, op, took, result == -1)

    def dispatch(self, got, shard_index, slot_index):
        # A cancel (the client's thread took a signal while it waited) needs nothing here: a
        # call this loop runs is never a waiting one (those are handed back, WAIT_NATIVE).
        if got == lib.LSCA_FOUND_CALL:
            self.serve(shard_index[0], slot_index[0])
        return got

    def send_records(self):
        """Send what the trace readers take now, never waiting for one. Returns the ms until
        the next try when records wait (sooner while the readers make progress), else 0."""
        before = lib.lsca_trace_progress()
        waiting = 0
        for client in self.clients.values():
            lib.lsca_trace_flush_held(client.fast, 0)
            waiting += lib.lsca_trace_flush(client.fast)
        waiting += lib.lsca_trace_leftovers(0)
        fastest, slowest = TRACE_RETRY_MS
        if not waiting:
            self.trace_retry_ms = fastest
            return 0
        progress = lib.lsca_trace_progress() != before
        self.trace_retry_ms = fastest if progress else min(slowest, 2 * self.trace_retry_ms)
        return self.trace_retry_ms

    def last_records(self):
        """At exit: released clients' records get a short, bounded chance; the rest are counted
        as dropped."""
        deadline = time.monotonic() + EXIT_FLUSH_S
        while lib.lsca_trace_leftovers(0) and time.monotonic() < deadline:
            time.sleep(0.005)
        lib.lsca_trace_leftovers(1)

    # ---- messages from the supervisor ----

    def read_control(self):
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.control, 65536, 8)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data:
                self.alive = False      # the supervisor closed its end (or died)
                self.orphaned = os.getppid() != self.supervisor_pid
                return
            message = json.loads(data)
            getattr(self, "on_" + message["op"])(message, fds)

    def on_assign(self, message, fds):
        index = next(i for i in range(MAX_SHARDS) if i not in self.clients)
        named = dict(zip(message.get("fds", []), fds))
        chan = socket.socket(fileno=named["chan"]) if "chan" in named else None
        identity = Identity.from_json(message["identity"]) if "identity" in message else None
        client = Client(message["shard"], message["shmid"], message["pid"],
                        message.get("session", ""), chan, named.get("peer", -1), self.index,
                        pidfd=named.get("pidfd", -1), procfd=named.get("proc", -1), identity=identity)
        client.fast.row = self.row      # counts the records its reader never gets
        if "trace" in named and not client.trace_to(named["trace"], int(message.get("trace_mask", -1)) & ALL_OPS):
            log.debug("worker %d: pid %d: the trace descriptor is not a Unix SOCK_SEQPACKET socket: not traced",
                      self.index, message["pid"])
        # Calls that waited natively come back for the record when their op is traced.
        shard_header(client.address).report_mask = client.fast.trace_mask
        self.clients[index] = client
        self.fast[index] = client.fast
        self.apply_gate(client)
        self.by_shard[message["shard"]] = index
        self.ctx.pending[index] = 0
        shard_header(client.address).crowded = int(self.crowded)
        self.ctx.shards[index] = client.shard
        self.ctx.limit = max(self.ctx.limit, index + 1)

    def on_release(self, message, fds):
        index = self.by_shard.pop(message["shard"], None)
        if index is not None:
            self.ctx.shards[index] = ffi.NULL
            self.fast[index] = ffi.NULL
            while self.ctx.limit and self.ctx.shards[self.ctx.limit - 1] == ffi.NULL:
                self.ctx.limit -= 1
            self.ctx.pending[index] = 0
            self.ctx.cancels[index] = 0
            client = self.clients.pop(index)
            lib.lsca_trace_flush_held(client.fast, 1)
            client.close()              # what its reader does not take now goes on from the leftovers
        self.send({"op": "released", "shard": message["shard"]})

    def report_revoked(self):
        """Clients that stopped being the user they registered as: the supervisor drops them."""
        for client in self.clients.values():
            if client.revoked and not getattr(client, "revoke_sent", False):
                client.revoke_sent = True
                log.warning("worker %d: pid %d is no longer uid %d: its calls are not served",
                            self.index, client.pid, client.identity.uid if client.identity else -1)
                self.send({"op": "revoked", "shard": client.shard_id})

    def on_policy(self, message, fds):
        """A reloaded policy (the supervisor validated it): in force from the next call."""
        self.gate = Gate(Policy.from_json(message["policy"])) if message.get("policy") else None
        for client in self.clients.values():
            self.apply_gate(client)

    def apply_gate(self, client):
        client.gate = self.gate
        # The ops the policy may decide leave the compiled path for execute().
        client.fast.slow_mask = self.gate.mask if self.gate is not None else 0

    def on_stop(self, message, fds):
        self.alive = False

    def send(self, message):
        self.control.setblocking(True)
        try:
            self.control.send(json.dumps(message).encode())
        finally:
            self.control.setblocking(False)
        self.orphaned = False


def ring_doorbell(worker):
    """Wake a worker that may sleep on its doorbell (after a message was sent)."""
    try:
        ipc.post(worker.doorbell_semid, 0)
    except OSError:
        pass
