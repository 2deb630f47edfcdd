"""The blocking-call pool: every submitted call gets a thread of its own at once."""
import threading
import time

from lsca.abi import ffi
from lsca.workers.pool import BlockingPool


class FakeClient:
    """What a pool thread looks at: the shard id and the slot (for its cancel word)."""

    def __init__(self, shard_id, slots):
        self.shard_id = shard_id
        self.slots = [ffi.new("struct lsca_slot *") for _ in range(slots)]


def test_each_call_gets_its_own_thread_even_when_submitted_back_to_back():
    # Calls that block until all of them run: one queued behind another would never run.
    # Each round submits one call more than there are idle threads, back to back.
    client = FakeClient(1, 8)
    done = []
    lock = threading.Lock()
    barrier = None

    def run_call(client, i, entry):
        barrier.wait()
        with lock:
            done.append(i)

    pool = BlockingPool(run_call)
    try:
        for n in range(1, 9):
            done.clear()
            barrier = threading.Barrier(n, timeout=5)
            for i in range(n):
                pool.submit(client, i, None)
            deadline = time.monotonic() + 6
            while len(done) < n and time.monotonic() < deadline:
                time.sleep(0.001)
            assert sorted(done) == list(range(n)), f"{n} calls: only {sorted(done)} ran"
            while pool.idle < n and time.monotonic() < deadline:
                time.sleep(0.001)           # all free again before the next round
        assert len(pool.threads) == 8       # threads are reused: one per call in flight
    finally:
        pool.stop()
