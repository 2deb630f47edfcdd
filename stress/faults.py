"""The stress program's fault injector: it kills, stops and stalls workers, kills clients
and the supervisor, and checks that the pool recovers from each fault in time."""
import collections
import os
import signal
import time

FAULT_KINDS = ("worker kill", "worker stop", "worker stall", "client kill", "supervisor kill")
FAULT_WEIGHTS = (3, 1, 2, 3, 1)


class FaultInjector:
    """Faults against one run (the orchestrator: its current supervisor, its clients and the
    --workers/--worker-timeout it started them with), and what each fault must lead to."""

    def __init__(self, run, rng, say):
        self.run = run
        self.rng = rng
        self.say = say                          # the run's progress log
        self.faults = collections.Counter()     # kind -> how many
        self.log = []                           # {"t", "kind", "target"}
        self.sup_kill_times = []
        self.pending_cont = []                  # (when, pid, supervisor index)
        self.recovery = []                      # (deadline, supervisor index, victim, fault number, kept)
        self.unrecovered = []

    @property
    def total(self):
        return sum(self.faults.values())

    def plan(self):
        """The first faults: every kind once, in random order."""
        kinds = list(FAULT_KINDS)
        self.rng.shuffle(kinds)
        return kinds

    def pick(self):
        return self.rng.choices(FAULT_KINDS, FAULT_WEIGHTS)[0]

    def inject(self, kind):
        """Inject one fault; the time it is over (a stopped worker: when it is continued), or
        None when it has no target now."""
        run = self.run
        now = time.monotonic()
        n = self.total + 1
        timeout = run.args.worker_timeout
        if kind in ("worker kill", "worker stop", "worker stall"):
            workers = run.sup.workers()
            if not workers:
                return None
            victim = self.rng.choice(workers)
            if kind == "worker kill":
                os.kill(victim, signal.SIGKILL)
                self.recovery.append((now + 15, run.sup.index, victim, n, False))
                end = now
            elif kind == "worker stall":
                os.kill(victim, signal.SIGUSR1)        # LSCA_WORKER_FAULT=stall: spins without heartbeats
                self.recovery.append((now + timeout + 15, run.sup.index, victim, n, False))
                end = now
            else:
                # Stopped, it cannot run, so it is not stuck: it must be the same worker afterwards.
                os.kill(victim, signal.SIGSTOP)
                cont = now + timeout + self.rng.uniform(1, 2)
                self.pending_cont.append((cont, victim, run.sup.index))
                self.recovery.append((cont, run.sup.index, victim, n, True))
                end = cont
            target = f"worker pid {victim}"
        elif kind == "client kill":
            candidates = [c for c in run.live_clients() if now - c.started > 1.0]
            if not candidates:
                return None
            c = self.rng.choice(candidates)
            c.proc.kill()
            c.state = "killed"
            c.ended = now
            run.launch_client()
            target = f"client {c.cid} pid {c.proc.pid}"
            end = now
        else:
            lost = run.sup
            target = f"supervisor pid {lost.pid}"
            self.sup_kill_times.append(now)
            run.kill_supervisor()
            # Its workers went with it: nothing of it is to recover.
            self.recovery = [r for r in self.recovery if r[1] != lost.index]
            end = time.monotonic()
        self.faults[kind] += 1
        self.log.append({"t": round(now - run.start, 2), "kind": kind, "target": target})
        self.say(f"[{now - run.start:6.1f}s] fault {n}: {kind} ({target})")
        return end

    def check_recovery(self, now):
        """A killed or stuck worker is replaced within its deadline; a stopped one is the same
        worker still when it is continued (its deadline)."""
        sup, want = self.run.sup, self.run.args.workers
        still = []
        for deadline, index, victim, n, kept in self.recovery:
            if sup is None or index != sup.index:
                continue
            workers = sup.workers()
            if kept:
                if now < deadline:
                    still.append((deadline, index, victim, n, kept))
                elif victim not in workers or len(workers) != want:
                    self.unrecovered.append(f"fault {n}: worker {victim}, stopped, was not left alone: the "
                                            f"supervisor has workers {workers}")
                continue
            if victim not in workers and len(workers) == want:
                continue
            if now > deadline:
                self.unrecovered.append(f"fault {n}: after losing worker {victim} the supervisor has "
                                        f"workers {workers} (expected {want}, without {victim})")
                continue
            still.append((deadline, index, victim, n, kept))
        self.recovery = still

    def continue_stopped(self, now, everything=False):
        """SIGCONT the stopped workers whose time has come (all of them at the end)."""
        keep = []
        for when, pid, index in self.pending_cont:
            if everything or now >= when:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            else:
                keep.append((when, pid, index))
        self.pending_cont = keep

    def last_before(self, t):
        """The last fault before monotonic time t (a hang report names it)."""
        before = [f for f in self.log if f["t"] <= t - self.run.start + 1.0]
        return f"{before[-1]['kind']} at t={before[-1]['t']} s ({before[-1]['target']})" if before else "none"
