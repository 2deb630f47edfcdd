"""The worker watchdog (lsca.supervisor.watchdog) and what the supervisor does with dying
workers: a worker is stuck only when it could have run; a stall of the whole machine, a
stopped worker or one in I/O is not; a worker that cannot start stops the supervisor, and
workers that die again and again are restarted ever more slowly."""
import os
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings, strategies as st

from lsca.supervisor.watchdog import AWAKE_GAP_S, Watchdog, main_thread_state
from conftest import SupervisorProcess, clean_env, new_objects, remove_objects
from lsca import ipc


class Machine:
    """A fake clock and /proc: what each worker's main thread is doing and its CPU time."""

    def __init__(self):
        self.now = 100.0
        self.threads = {}               # pid -> [state letter, cpu seconds]

    def clock(self):
        return self.now

    def read_state(self, pid):
        thread = self.threads.get(pid)
        return tuple(thread) if thread else None


def watchdog(timeout=30.0):
    machine = Machine()
    return machine, Watchdog(timeout, clock=machine.clock, read_state=machine.read_state)


def run(machine, dog, heartbeats, seconds, step=0.25, cpu_per_s=0.0):
    """Look every step for seconds; the threads get cpu_per_s of CPU per second."""
    found = []
    for _ in range(int(seconds / step)):
        machine.now += step
        for thread in machine.threads.values():
            thread[1] += cpu_per_s * step
        found = dog.look(heartbeats)
    return found


def test_a_thread_spinning_without_heartbeat_is_stuck_after_the_timeout_of_cpu():
    machine, dog = watchdog(timeout=30)
    machine.threads[7] = ["R", 0.0]
    assert run(machine, dog, {7: 1}, 29, cpu_per_s=1.0) == []
    assert [pid for pid, _ in run(machine, dog, {7: 1}, 2, cpu_per_s=1.0)] == [7]


def test_a_runnable_thread_that_gets_no_cpu_is_not_stuck():
    machine, dog = watchdog(timeout=30)
    machine.threads[7] = ["R", 0.0]
    assert run(machine, dog, {7: 1}, 120, cpu_per_s=0.0) == []
    # Half a CPU (hogs beside it): stuck after twice the time.
    assert run(machine, dog, {7: 1}, 59, cpu_per_s=0.5) == []
    assert [pid for pid, _ in run(machine, dog, {7: 1}, 2, cpu_per_s=0.5)] == [7]


def test_a_sleeping_thread_without_heartbeat_is_stuck_after_the_timeout():
    machine, dog = watchdog(timeout=30)
    machine.threads[7] = ["S", 0.0]
    assert run(machine, dog, {7: 1}, 29) == []
    assert [pid for pid, _ in run(machine, dog, {7: 1}, 2)] == [7]


@pytest.mark.parametrize("state", ["D", "T", "t"])
def test_a_thread_in_io_stopped_or_traced_is_not_stuck(state):
    machine, dog = watchdog(timeout=30)
    machine.threads[7] = [state, 0.0]
    assert run(machine, dog, {7: 1}, 300) == []


def test_a_stall_of_the_whole_machine_counts_for_nothing():
    machine, dog = watchdog(timeout=30)
    machine.threads[7] = ["S", 0.0]
    assert run(machine, dog, {7: 1}, 10) == []
    machine.now += 3600                 # nobody ran: not the supervisor, not the worker
    assert dog.look({7: 1}) == []
    assert [pid for pid, _ in run(machine, dog, {7: 1}, 21)] == [7]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 2 * AWAKE_GAP_S), st.sampled_from("RSDTt"), st.floats(0, 1),
                          st.booleans()), max_size=300))
def test_stuck_time_never_exceeds_what_could_have_run_since_the_last_heartbeat(steps):
    """Whatever the states and gaps: a worker is reported only after at least the timeout of
    (S: awake wall time, R: CPU time) since its last heartbeat, and a heartbeat clears it."""
    machine, dog = watchdog(timeout=5.0)
    machine.threads[7] = ["S", 0.0]
    heartbeat, could_run, last_state = 0, 0.0, "S"
    dog.look({7: heartbeat})
    for gap, state, cpu_share, beat in steps:
        machine.now += gap
        ran = cpu_share * gap
        machine.threads[7][1] += ran
        if gap <= AWAKE_GAP_S:
            could_run += gap if last_state == "S" else ran if last_state == "R" else 0.0
        machine.threads[7][0] = last_state
        if beat:
            heartbeat += 1
        found = dog.look({7: heartbeat})
        if beat:
            could_run = 0.0
            assert found == []
        elif found:
            assert could_run >= 5.0 - 1e-9
        last_state = state
        machine.threads[7][0] = state


def test_main_thread_state_reads_this_process():
    state, cpu = main_thread_state(os.getpid())
    assert state == "R" and cpu >= 0
    assert main_thread_state(2 ** 22 + 12345) is None


def test_a_worker_that_cannot_start_stops_the_supervisor_with_one_line(tmp_path):
    before = ipc.lsca_objects()
    sock = tmp_path / "sup.sock"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "lsca.supervisor", "--socket", str(sock), "--workers", "2"],
                          env={**clean_env(), "LSCA_WORKER_FAULT": "boot"}, capture_output=True, timeout=60)
    left = new_objects(before)
    remove_objects(left)
    assert proc.returncode == 3            # the boot-error status (the unit does not restart on it)
    last = proc.stderr.decode().strip().splitlines()[-1]
    assert last.startswith("lsca-supervisor: worker ") and "could not start" in last, proc.stderr.decode()
    assert proc.stderr.count(b" started, pid ") <= 2     # no respawn of a worker that cannot start
    assert time.monotonic() - started < 30
    assert left == {"shm": [], "sem": []}
    assert not sock.exists()


def test_workers_that_die_again_and_again_are_restarted_ever_more_slowly(tmp_path):
    log = tmp_path / "sup.log"
    with open(log, "wb") as err:
        sup = SupervisorProcess(str(tmp_path), workers=1, env_extra={"LSCA_WORKER_FAULT": "crash"}, stderr=err,
                                extra=["--log-level", "INFO"])
        try:
            deadline = time.monotonic() + 4.0
            while time.monotonic() < deadline and sup.process.poll() is None:
                time.sleep(0.1)         # the span over which starts are counted
            assert sup.process.poll() is None       # a crash loop does not stop it
        finally:
            assert sup.stop() == 0
    text = log.read_text()
    starts = text.count(" started, pid ")
    # Back-off 0, 0.25, 0.5, 1, 2 s: about 5 starts in 4 s (without it, hundreds).
    assert 3 <= starts <= 8, text[-3000:]
    assert "in a row within" in text and "the next one in" in text
