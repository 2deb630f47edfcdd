"""Which workers are stuck: silent (no heartbeat) for the timeout while they could have run.

A worker's main thread writes a heartbeat at least once a second (after every call, and
when its sleep on the doorbell times out). Wall-clock silence alone is no proof: when the
whole machine stalls (a paused VM, a host that gives us no CPU) the supervisor and its
workers stop together, and afterwards every heartbeat looks old. So silence is counted
only over time the supervisor itself was awake (a gap of more than AWAKE_GAP_S between two
looks is time nobody here ran, and counts for nothing), and only while the worker's main
thread could have made progress:
  - running (R): the CPU time it got without one heartbeat (a busy loop; starved of CPU it
    gets none, and nothing counts);
  - sleeping (S): the wall time (a call that waits on something that will never come);
  - in uninterruptible I/O (D), stopped (T) or traced (t): nothing (the device or whoever
    stopped it holds it, and a signal would not reach it anyway).
"""
import os
import time

AWAKE_GAP_S = 3.0       # the main loop looks at least once a second (TICK_S)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def main_thread_state(pid):
    """(state letter, CPU seconds) of the main thread of pid; None when it is gone."""
    try:
        with open(f"/proc/{pid}/task/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    # The command name may hold anything, ')' included: the fields start after the last one.
    fields = text[text.rindex(b")") + 2:].split()
    return fields[0].decode(), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Watch:
    """What the watchdog knows of one worker."""

    def __init__(self, heartbeat, cpu):
        self.heartbeat = heartbeat
        self.cpu = cpu
        self.stuck_s = 0.0


class Watchdog:
    def __init__(self, timeout_s, clock=time.monotonic, read_state=main_thread_state):
        self.timeout_s = timeout_s
        self.clock = clock
        self.read_state = read_state
        self.watches = {}               # pid -> Watch
        self.last_look = None

    def forget(self, pid):
        self.watches.pop(pid, None)

    def look(self, heartbeats):
        """heartbeats: {pid: the worker's last heartbeat (any value that changes)}. Returns
        [(pid, seconds stuck)] of the workers stuck for the timeout or longer."""
        now = self.clock()
        awake = self.last_look is not None and now - self.last_look <= AWAKE_GAP_S
        elapsed = now - self.last_look if awake else 0.0
        self.last_look = now
        stuck = []
        for pid in list(self.watches):
            if pid not in heartbeats:
                del self.watches[pid]
        for pid, heartbeat in heartbeats.items():
            watch = self.watches.get(pid)
            if watch is None or watch.heartbeat != heartbeat:
                # Alive: nothing to read (the CPU time it starts from is read at the next look).
                self.watches[pid] = Watch(heartbeat, None)
                continue
            state = self.read_state(pid)
            if state is None:
                continue                # gone: reaping will say so
            letter, cpu = state
            ran = cpu - watch.cpu if watch.cpu is not None and awake else 0.0
            watch.cpu = cpu
            if letter == "R":
                watch.stuck_s += max(0.0, ran)
            elif letter == "S":
                watch.stuck_s += elapsed
            if watch.stuck_s >= self.timeout_s:
                stuck.append((pid, watch.stuck_s))
        return stuck
