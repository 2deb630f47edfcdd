"""Threads for calls that may block (a read of an empty pipe, a write to a full one),
so that a worker keeps serving its other shards meanwhile — as FlexSC runs several
syscall threads per core. A blocked call is interrupted when its client asks
(a signal handler ran in the program): the thread gets SIGUSR2, whose handler does
nothing and is installed without SA_RESTART, so the system call returns EINTR.
"""
import queue
import signal
import threading
import time

from lsca.abi import ffi, lib

INTERRUPT = signal.SIGUSR2
RESIGNAL_S = 0.005          # until the thread leaves the call: a signal may land just before it


class Blocking(Exception):
    """Raised by a handler: this call may block; run it on a pool thread."""

    def __init__(self, entry):
        self.entry = entry


local = threading.local()   # .pinned: the FdEntry a pool thread works on; .in_pool


def install_interrupt_handler():
    """In the worker's main thread: make INTERRUPT interrupt system calls (no SA_RESTART)."""
    signal.signal(INTERRUPT, lambda signum, frame: None)
    signal.siginterrupt(INTERRUPT, True)


class BlockingPool:
    def __init__(self, run_call, max_threads=32):
        self.run_call = run_call    # run_call(client, i, entry): executes and completes the slot
        self.max_threads = max_threads
        self.tasks = queue.SimpleQueue()
        self.threads = []
        self.idle = 0
        self.busy = {}              # (shard id, slot) -> thread ident
        self.cancelling = {}        # (shard id, slot) -> when we last signalled
        self.lock = threading.Lock()

    def has_room(self):
        return self.idle > 0 or len(self.threads) < self.max_threads

    def submit(self, client, i, entry):
        with self.lock:
            # Each task gets a thread of its own: an idle one is taken for it here, under the
            # lock (counted when it took the task, two quick submits could share one thread
            # and the second wait behind a call that may block for ever), else a new one.
            if self.idle > 0:
                self.idle -= 1
            elif len(self.threads) < self.max_threads:
                thread = threading.Thread(target=self._thread_main, daemon=True,
                                          name=f"lsca-blocking-{len(self.threads)}")
                self.threads.append(thread)
                thread.start()
            self.busy[(client.shard_id, i)] = None     # queued, not yet on a thread
        self.tasks.put((client, i, entry))

    def _thread_main(self):
        local.in_pool = True
        while True:
            task = self.tasks.get()
            if task is None:
                return
            client, i, entry = task
            key = (client.shard_id, i)
            slot = client.slots[i]
            with self.lock:
                self.busy[key] = threading.get_ident()
            lib.lsca_set_cancel_word(ffi.addressof(slot[0], "cancel"))
            local.pinned = entry
            try:
                self.run_call(client, i, entry)
            finally:
                local.pinned = None
                lib.lsca_set_cancel_word(ffi.NULL)
                with self.lock:
                    self.busy.pop(key, None)
                    self.cancelling.pop(key, None)
                    self.idle += 1          # free for the next task

    def cancel(self, key):
        """Interrupt the call of that slot if a thread is in it (again and again until it is out)."""
        with self.lock:
            if key not in self.busy:
                return False
            self.cancelling[key] = 0.0
        self.resignal()
        return True

    def resignal(self):
        now = time.monotonic()
        with self.lock:
            due = [(key, self.busy.get(key)) for key, last in self.cancelling.items() if now - last >= RESIGNAL_S]
            for key, _ in due:
                self.cancelling[key] = now
        for key, ident in due:
            if ident is not None:
                try:
                    signal.pthread_kill(ident, INTERRUPT)
                except (ProcessLookupError, OSError):
                    pass

    def calls_of(self, shard_id):
        with self.lock:
            return [key for key in self.busy if key[0] == shard_id]

    def drain(self, shard_id, timeout=2.0):
        """Interrupt every call of a client that is going away and wait until none is left."""
        deadline = time.monotonic() + timeout
        for key in self.calls_of(shard_id):
            self.cancel(key)
        while self.calls_of(shard_id) and time.monotonic() < deadline:
            self.resignal()
            time.sleep(0.001)
        return not self.calls_of(shard_id)

    def stop(self):
        for key in list(self.busy):
            self.cancel(key)
        for _ in self.threads:
            self.tasks.put(None)
        deadline = time.monotonic() + 2.0
        for thread in self.threads:
            while thread.is_alive() and time.monotonic() < deadline:
                self.resignal()
                thread.join(0.01)
