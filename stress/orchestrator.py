"""The stress program's orchestrator: it starts the supervisor and the clients, pumps their
reports into the checker's ledgers, injects faults (faults.py), watches for hangs, and at
the end stops everything, checks the data files (checker.py) and prints the summary.

Imported by run_stress.py once the run's snapshot of lsca is first on sys.path: every lsca
module the run uses is that snapshot.
"""
import json
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time

import psutil

import diagnose
from checker import Checker, unexplained_eio
from faults import FAULT_KINDS, FaultInjector
from lsca import ipc
from lsca.abi import is_lsca_key
from lsca.launch import SupervisorStartError, clean_env, start_supervisor, stop_supervisor


def log(text):
    print(text, file=sys.stderr, flush=True)


class ThreadState:
    def __init__(self, now):
        self.calls = 0
        self.last_progress = now
        self.op = "start"
        self.ntid = None
        self.done = None
        self.hung = False
        self.resumed = None


class ClientProc:
    def __init__(self, cid, proc, sock, errpath, started):
        self.cid = cid
        self.proc = proc
        self.sock = sock
        self.errpath = errpath
        self.started = started
        self.ended = None
        self.state = "running"          # running, stopping, killed, exited
        self.deadline = None
        self.threads = {}
        self.rotate_at = None
        self.supervisor = None          # index of the supervisor it started under
        self.signals = 0
        self.send_eio = 0


class SupervisorProc:
    def __init__(self, index, proc, logpath):
        self.index = index
        self.proc = proc
        self.pid = proc.pid
        self.logpath = logpath
        self.killed = False

    def workers(self, include_stopped=False):
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        out = []
        for c in children:
            try:
                status = c.status()
            except psutil.NoSuchProcess:
                continue
            if status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                continue
            if status == psutil.STATUS_STOPPED and not include_stopped:
                continue
            out.append(c.pid)
        return sorted(out)


class Stress:
    """One run: its supervisors and clients, the event pump of their reports, the faults
    (FaultInjector) and, at the end, the checks and the summary."""

    def __init__(self, args, workdir, snapshot):
        self.args = args
        self.rng = random.Random(f"{args.seed}/orchestrator")
        self.token = f"{os.getpid()}-{time.time_ns()}"
        self.workdir = workdir
        self.libdir, self.client_program, self.agent = snapshot
        self.data = os.path.join(self.workdir, "data")
        self.state_dir = os.path.join(self.workdir, "state")
        os.makedirs(os.path.join(self.data, "scratch"), exist_ok=True)
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)   # the registry refuses a directory others may read
        self.socket_path = os.path.join(self.workdir, "sup.sock")
        self.selector = None
        self.clients = {}
        self.next_cid = 1
        self.sup = None
        self.supervisors = []
        self.checker = Checker()
        self.seen_ids = set()
        self.resumed = []
        self.fork_pids = {}
        self.listed_by = {}             # (kind, id) -> pid of the supervisor whose registry listed it
        self.calls_done = 0             # of clients whose threads are done (and ended ones)
        self.eio = 0
        self.eio_events = []            # (cid, call, time)
        self.unexpected = []            # details
        self.mismatches = []
        self.faults = FaultInjector(self, self.rng, log)
        self.leaked_after_kill = []
        self.hangs = []
        self.crashes = []
        self.crashes_eio = []
        self.attrib_shm = set()
        self.attrib_sem = set()
        self.worker_pids = set()
        self.max_shards = 0
        self.shards_now = 0
        self.start = None

    def lsca_env(self, **extra):
        """Environment of our supervisors and of lsca cleanup: the snapshot, our registry."""
        env = clean_env()
        env["PYTHONPATH"] = os.pathsep.join([self.libdir] + [p for p in [env.get("PYTHONPATH")] if p])
        env["LSCA_STATE_DIR"] = self.state_dir
        env.update(extra)
        return env

    # ---- processes ----

    def start_supervisor(self):
        index = len(self.supervisors)
        logpath = os.path.join(self.workdir, f"supervisor-{index}.log")
        env = self.lsca_env(LSCA_STRESS_RUN=self.token, LSCA_WORKER_FAULT="stall")
        with open(logpath, "ab") as logf:
            try:
                proc = start_supervisor(self.socket_path, ["--workers", str(self.args.workers), "--worker-timeout",
                                                           str(self.args.worker_timeout), "--log-level", "INFO"],
                                        env=env, pause=self.pump, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
            except SupervisorStartError as e:
                raise RuntimeError(f"{e}; see {logpath}") from None
        sup = SupervisorProc(index, proc, logpath)
        self.supervisors.append(sup)
        deadline = time.monotonic() + 20
        # Its workers must be there before the clients come.
        while len(sup.workers()) < self.args.workers and time.monotonic() < deadline:
            self.pump(0.02)
        self.sup = sup
        self.poll_registry()
        return sup

    def launch_client(self):
        cid = self.next_cid
        self.next_cid += 1
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        env = clean_env()
        env.update(LD_PRELOAD=self.agent, LSCA_SOCKET=self.socket_path, LSCA_STRESS_RUN=self.token,
                   PYTHONDONTWRITEBYTECODE="1")
        errpath = os.path.join(self.workdir, f"client-{cid}.err")
        with open(errpath, "wb") as errf:
            proc = subprocess.Popen(
                [sys.executable, self.client_program, "--cid", str(cid),
                 "--threads", str(self.args.threads), "--seed", str(self.args.seed),
                 "--report-fd", str(theirs.fileno()), "--signals", str(self.args.signals)],
                cwd=self.data, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=errf, pass_fds=[theirs.fileno()])
        theirs.close()
        now = time.monotonic()
        c = ClientProc(cid, proc, ours, errpath, now)
        c.supervisor = self.sup.index if self.sup else None
        c.rotate_at = now + self.rng.uniform(15, 40)
        for t in range(self.args.threads):
            c.threads[t] = ThreadState(now)
        self.clients[cid] = c
        self.selector.register(ours, 1, c)
        return c

    def live_clients(self):
        return [c for c in self.clients.values() if c.state == "running"]

    # ---- the event pump ----

    def pump(self, timeout):
        for key, _ in self.selector.select(timeout):
            self.drain(key.data)
        self.reap()

    def drain(self, c):
        while True:
            try:
                data = c.sock.recv(1 << 18)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.selector.unregister(c.sock)
                return
            self.on_message(c, json.loads(data))

    def on_message(self, c, m):
        t = m.get("t")
        now = time.monotonic()
        if "id" in m:
            if m["id"] in self.seen_ids:
                return                  # a report sent again after its send said EIO
            self.seen_ids.add(m["id"])
        if m.get("seio", 0) > c.send_eio:
            self.eio += m["seio"] - c.send_eio
            c.send_eio = m["seio"]
        if t == "f":
            self.fork_pids[m.get("pid")] = (m["c"], m["th"])
        if t in ("r", "f"):
            key = (m["c"], m["th"])
            for kind, seq, code in m.get("res", ()):
                led = self.checker.ledger(m["c"], m["th"], kind)
                led.report(kind, seq, code)
            for call, when in m.get("eio", ()):
                self.eio += 1
                self.eio_events.append((m["c"], call, when))
            for what, err, text in m.get("err", ()):
                self.unexpected.append(f"client {key[0]} thread {key[1]}: {what}: errno {err} {text}")
            for text in m.get("mm", ()):
                self.mismatches.append(f"client {key[0]} thread {key[1]}: {text}")
            if t == "r":
                ts = c.threads.get(m["th"])
                if ts is not None:
                    if m["n"] > ts.calls:
                        ts.calls = m["n"]
                        ts.last_progress = now
                        if ts.hung and not ts.resumed:
                            ts.resumed = now
                            self.resumed.append(f"client {c.cid} thread {m['th']} resumed at "
                                                f"t={now - self.start:.1f} s (last fault before: "
                                                f"{self.faults.last_before(now)})")
                    ts.op = m["op"]
                    ts.ntid = m.get("ntid")
        elif t == "done":
            ts = c.threads.get(m["th"])
            if ts is not None:
                ts.done = m
                ts.calls = max(ts.calls, m["n"])
                if m.get("crashed"):
                    self.unexpected.append(f"client {c.cid} thread {m['th']} crashed: {m['crashed']}")
        elif t == "bye":
            c.signals = m.get("signals", 0)

    def reap(self):
        for c in list(self.clients.values()):
            if c.state == "exited" or c.proc.poll() is None:
                continue
            c.ended = time.monotonic()
            previous, c.state = c.state, "exited"
            if previous == "killed":
                continue
            if previous == "stopping" and c.proc.returncode == 0:
                continue
            try:
                with open(c.errpath, "rb") as f:
                    tail = f.read()[-3000:].decode(errors="replace")
            except OSError:
                tail = ""
            what = f"client {c.cid} (pid {c.proc.pid}) exited with {c.proc.returncode} while {previous}: {tail.strip()[-1500:]}"
            started_ok = any(ts.calls for ts in c.threads.values())
            if "[Errno 5]" in tail and not started_ok:
                self.crashes_eio.append(what)  # EIO while the interpreter loaded: a legitimate outcome
            else:
                self.crashes.append(what)
            if previous == "running" and not self.ending:
                self.launch_client()

    def total_calls(self):
        return sum(ts.calls for c in self.clients.values() for ts in c.threads.values())

    # ---- registry, attribution ----

    def poll_registry(self):
        """Remember every object our supervisors list (attributable to this run)."""
        shards = 0
        # Registries list semaphore sets; a supervisor's segments are found by their creator pid.
        segments_by_creator = {}
        for row in ipc._table("shm"):
            if is_lsca_key(row["key"] & 0xFFFFFFFF):
                segments_by_creator.setdefault(row["cpid"], []).append(row["shmid"])
        for name in os.listdir(self.state_dir):
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.state_dir, name)) as f:
                    state = json.load(f)
            except (OSError, ValueError):
                continue
            segments = segments_by_creator.get(state.get("pid"), [])
            listed = {"shm": state.get("shm", []) + segments, "sem": state.get("sem", [])}
            self.attrib_shm.update(listed["shm"])
            self.attrib_sem.update(listed["sem"])
            for kind in ("shm", "sem"):
                for ident in listed[kind]:
                    self.listed_by[(kind, ident)] = state.get("pid")
            if self.sup is not None and state.get("pid") == self.sup.pid:
                shards = max(0, len(listed["shm"]) - 1)     # less the worker table
        self.shards_now = shards
        self.max_shards = max(self.max_shards, shards)
        if self.sup is not None:
            self.worker_pids.update(self.sup.workers(include_stopped=True))

    def registry_of(self, sup):
        try:
            with open(os.path.join(self.state_dir, f"{sup.pid}.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def our_objects(self):
        """LSCA SysV objects present now that this run made (listed by our registries, or
        a segment created by one of our supervisors)."""
        present = ipc.lsca_objects()
        sup_pids = {s.pid for s in self.supervisors}
        cpid = {row["shmid"]: row.get("cpid") for row in ipc._table("shm")}
        shm = sorted(i for i in present["shm"] if i in self.attrib_shm or cpid.get(i) in sup_pids)
        sem = sorted(i for i in present["sem"] if i in self.attrib_sem)
        return {"shm": shm, "sem": sem}

    # ---- faults ----

    def kill_supervisor(self):
        sup = self.sup
        self.worker_pids.update(sup.workers(include_stopped=True))
        os.kill(sup.pid, signal.SIGKILL)
        sup.proc.wait()
        sup.killed = True
        state = self.registry_of(sup) or {"shm": [], "sem": []}
        self.attrib_shm.update(state["shm"])
        self.attrib_sem.update(state["sem"])
        for kind in ("shm", "sem"):
            for ident in state[kind]:
                self.listed_by[(kind, ident)] = sup.pid
        out = subprocess.run([sys.executable, "-m", "lsca.cli", "cleanup"], env=self.lsca_env(),
                             capture_output=True, timeout=60)
        if out.returncode != 0:
            self.unexpected.append(f"lsca cleanup after killing supervisor {sup.pid} exited with "
                                   f"{out.returncode}: {out.stderr.decode(errors='replace')[-500:]}")
        present = ipc.lsca_objects()
        left = {"shm": sorted(set(state["shm"]) & set(present["shm"])),
                "sem": sorted(set(state["sem"]) & set(present["sem"]))}
        if left["shm"] or left["sem"]:
            self.leaked_after_kill.append({"supervisor": sup.pid, "left": left,
                                           "cleanup": out.stdout.decode(errors="replace").strip()})
        self.start_supervisor()

    # ---- hangs ----

    def check_hangs(self, now):
        for c in self.clients.values():
            if c.state not in ("running", "stopping"):
                continue
            for tid, ts in c.threads.items():
                if ts.hung or ts.done or ts.op == "finished":
                    continue                # finished threads wait for their siblings
                if now - ts.last_progress > self.args.hang_timeout:
                    ts.hung = True
                    self.hangs.append(f"client {c.cid} (pid {c.proc.pid}) thread {tid}: no call completed "
                                      f"for {now - ts.last_progress:.0f} s (since t={ts.last_progress - self.start:.1f} s, "
                                      f"the last fault before: {self.faults.last_before(ts.last_progress)}), "
                                      f"last in {ts.op!r} [{self.diagnose(c, ts)}]")
                    log(f"HANG: {self.hangs[-1]}")

    def diagnose(self, c, ts):
        """What the thread is doing, as the kernel sees it (and, for the first hangs, as
        gdb and the shared memory see it)."""
        self.diagnosed = getattr(self, "diagnosed", 0) + 1
        if self.diagnosed > 3:
            return "no more diagnostics after 3 hangs"
        return "; ".join(diagnose.hung_thread(c.proc.pid, ts.ntid, self.sup, {s.pid for s in self.supervisors},
                                              self.args.workers))

    # ---- the run ----

    def run(self):
        args = self.args
        self.selector = selectors.DefaultSelector()
        self.ending = False
        self.objects_before = ipc.lsca_objects()
        self.start = time.monotonic()
        end = self.start + args.duration
        log(f"lsca stress: {args.duration:.0f} s, {args.workers} workers, {args.clients} clients x "
            f"{args.threads} threads, seed {args.seed}, working directory {self.workdir}")
        self.start_supervisor()
        for _ in range(args.clients):
            self.launch_client()
        max_faults = args.faults if args.faults is not None else int(args.duration // 3)
        plan = self.faults.plan()
        # Faults start after a few seconds; gaps shrink for short runs so that every kind fits.
        gap_max = min(args.fault_gap_max, max(args.fault_gap_min, (args.duration - 14) / len(FAULT_KINDS)))
        next_fault = self.start + self.rng.uniform(2, 4)
        next_progress = self.start + 10
        last_calls, last_t = 0, self.start
        while True:
            now = time.monotonic()
            if now >= end:
                break
            self.pump(0.1)
            now = time.monotonic()
            self.faults.continue_stopped(now)
            self.faults.check_recovery(now)
            self.check_hangs(now)
            self.poll_registry()
            if now >= next_fault and self.faults.total < max_faults and now < end - 6:
                kind = plan.pop(0) if plan else self.faults.pick()
                done = self.faults.inject(kind)
                if done is None:
                    plan.insert(0, kind)        # no target now: try again shortly
                    next_fault = now + 0.5
                else:
                    next_fault = done + self.rng.uniform(args.fault_gap_min, gap_max)
            for c in self.live_clients():
                if now >= c.rotate_at:
                    self.stop_client(c)
                    self.launch_client()
            self.check_stopping(now)
            if now >= next_progress:
                calls = self.total_calls()
                log(f"[{now - self.start:6.1f}s] calls {calls} ({(calls - last_calls) / (now - last_t):.0f}/s), "
                    f"faults {self.faults.total}, EIO {self.eio}, clients {len(self.live_clients())}, "
                    f"shards {self.shards_now}, workers {len(self.sup.workers())}")
                last_calls, last_t = calls, now
                next_progress += 10
        return self.finish()

    def check_stopping(self, now):
        """A client told to stop must exit in time; one that does not is hung (and killed)."""
        for c in self.clients.values():
            if c.state != "stopping" or now <= c.deadline:
                continue
            stuck = [tid for tid, ts in c.threads.items() if not ts.done]
            if not any(c.threads[t].hung for t in stuck):
                self.hangs.append(f"client {c.cid} (pid {c.proc.pid}) did not exit within "
                                  f"{self.args.exit_timeout:.0f} s of being told to stop; threads not done "
                                  f"{stuck}: {[c.threads[t].op for t in stuck]} "
                                  f"[{self.diagnose(c, ThreadState(0))}]")
                log(f"HANG: {self.hangs[-1]}")
            c.proc.kill()
            c.state = "killed"

    def stop_client(self, c):
        c.state = "stopping"
        c.deadline = time.monotonic() + self.args.exit_timeout
        try:
            c.sock.send(b'{"t":"stop"}')
        except OSError:
            pass

    def finish(self):
        self.ending = True
        t_end = time.monotonic()
        self.elapsed = t_end - self.start
        log(f"[{self.elapsed:6.1f}s] stopping: faults end, clients are told to stop")
        self.faults.continue_stopped(t_end, everything=True)
        # The pool recovers from the last fault before the clients stop.
        deadline = time.monotonic() + 20
        while self.faults.recovery and time.monotonic() < deadline:
            self.pump(0.1)
            self.faults.check_recovery(time.monotonic())
        self.faults.check_recovery(float("inf"))
        for c in self.live_clients():
            self.stop_client(c)
        while True:
            self.pump(0.1)
            now = time.monotonic()
            self.check_hangs(now)
            self.poll_registry()
            if not any(c.state == "stopping" for c in self.clients.values()):
                break
            self.check_stopping(now)
        # Last reports of fork children and the like.
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            self.pump(0.1)
        for c in self.clients.values():
            c.proc.wait()
        # Every client is gone: the supervisor must have freed every shard.
        deadline = time.monotonic() + 10
        while True:
            self.poll_registry()
            state = self.registry_of(self.sup)
            extra = max(0, len(state.get("shm", [])) - 1) if state else 0
            if extra == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.shards_not_freed = extra
        self.unfreed = diagnose.shard_owners(state.get("shm", []), self.known_as) if extra else []
        self.worker_pids.update(self.sup.workers(include_stopped=True))
        # A clean stop.
        # Its workers are left to leave on their own: one that stays is a leftover process.
        ignored = []
        status = stop_supervisor(self.sup.proc, grace=20, workers_too=False, on_kill=ignored.append)
        self.sup_status = "did not stop within 20 s of SIGTERM" if ignored else status
        cleanup = subprocess.run([sys.executable, "-m", "lsca.cli", "cleanup"], env=self.lsca_env(),
                                 capture_output=True, timeout=60)
        self.cleanup_status = cleanup.returncode
        self.leftover = self.leftover_processes()
        # Workers of killed supervisors leave on their own; give them a moment.
        deadline = time.monotonic() + 10
        while self.leftover and time.monotonic() < deadline:
            time.sleep(0.2)
            self.leftover = self.leftover_processes()
        for pid, _ in self.leftover:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        leaked = self.our_objects()
        self.leaked = leaked
        self.leaked_what = diagnose.describe_objects(leaked, {s.pid: s.index for s in self.supervisors},
                                                     self.listed_by)
        for shmid in leaked["shm"]:
            ipc.remove_shm(shmid)
        for semid in leaked["sem"]:
            ipc.remove_semaphores(semid)
        for c in self.clients.values():
            c.sock.close()
        log(f"checking the data files in {self.data}")
        finished = {(c.cid, tid): ts.done for c in self.clients.values() for tid, ts in c.threads.items()
                    if ts.done and not ts.done.get("crashed")}
        self.checker.check_files(self.data, finished)
        return self.report()

    def known_as(self, pid):
        """What the run knows a pid as: a client, a fork child of one."""
        known = [f"client {c.cid} ({c.state})" for c in self.clients.values() if c.proc.pid == pid]
        if pid in self.fork_pids:
            known.append("fork child of client %d thread %d" % self.fork_pids[pid])
        return ", ".join(known)

    def leftover_processes(self):
        out = []
        for p in psutil.process_iter(["pid", "cmdline", "status"]):
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            try:
                mine = p.environ().get("LSCA_STRESS_RUN") == self.token
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                mine = False
            try:
                cmd = " ".join(p.cmdline())[:120]
            except psutil.Error:
                continue
            # Every process of the run carries the token (workers inherit the supervisor's).
            if mine or (p.pid in self.worker_pids and "lsca" in cmd):
                out.append((p.pid, cmd))
        return out

    # ---- the summary ----

    def report(self):
        args = self.args
        unexpected_eio = unexplained_eio(self.eio_events, self.clients, [s.logpath for s in self.supervisors],
                                         self.faults.sup_kill_times)
        unexpected = self.unexpected + unexpected_eio
        leaked_n = len(self.leaked["shm"]) + len(self.leaked["sem"]) + sum(
            len(x["left"]["shm"]) + len(x["left"]["sem"]) for x in self.leaked_after_kill)
        calls = self.total_calls()
        faults_total = self.faults.total
        checked = self.checker
        checks = {
            "writes lost": len(checked.lost),
            "writes duplicated": len(checked.duplicated),
            "records torn": len(checked.torn),
            "phantom writes": len(checked.phantom),
            "hangs": len(self.hangs),
            "leaked SysV objects": leaked_n,
            "leftover processes": len(self.leftover),
            "unexpected errors": len(unexpected),
            "read mismatches": len(self.mismatches),
            "unrecovered faults": len(self.faults.unrecovered),
            "client crashes": len(self.crashes),
            "shards not freed": self.shards_not_freed,
        }
        problems = [k for k, v in checks.items() if v]
        if calls <= 0:
            problems.append("no call completed")
        if self.max_shards == 0:
            problems.append("no client was ever served by the supervisor")
        if self.sup_status != 0:
            problems.append(f"the supervisor's stop: {self.sup_status}")
        if self.cleanup_status != 0:
            problems.append(f"lsca cleanup exited with {self.cleanup_status}")
        passed = not problems
        kinds = ", ".join(f"{k} {self.faults.faults[k]}" for k in FAULT_KINDS)
        lines = [
            f"duration {self.elapsed:.1f} s, workers {args.workers}, clients {args.clients} x {args.threads} threads"
            f", seed {args.seed}",
            f"{'calls completed':<21}{calls}",
            f"{'faults injected':<21}{faults_total}  ({kinds})",
            f"{'calls failed EIO':<21}{self.eio}",
            f"{'writes checked':<21}{sum(checked.writes.values())}  (ok {checked.writes['ok']}, EIO {checked.writes['eio']}, "
            f"unknown {checked.writes['unknown']}; cut off, outcome unknown {checked.partial_unknown})",
        ]
        lines += [f"{k:<21}{v}" for k, v in checks.items()]
        lines.append(f"result: {'PASS' if passed else 'FAIL (' + ', '.join(problems) + ')'}")
        print("\n".join(lines), flush=True)
        details = {
            "lost": checked.lost[:50], "duplicated": checked.duplicated[:50], "torn": checked.torn[:50],
            "phantom": checked.phantom[:50], "hangs": self.hangs, "unexpected errors": unexpected[:50],
            "read mismatches": self.mismatches[:50], "unrecovered faults": self.faults.unrecovered,
            "client crashes": self.crashes[:20], "client crashes (EIO at start)": self.crashes_eio[:20],
            "leaked objects": self.leaked_what, "leaked after supervisor kill": self.leaked_after_kill,
            "leftover processes": self.leftover, "shards not freed": self.unfreed, "faults": self.faults.log,
            "hung threads that resumed": self.resumed,
            "clients": [{"cid": c.cid, "pid": c.proc.pid, "start": round(c.started - self.start, 2),
                         "end": round(c.ended - self.start, 2) if c.ended else None, "state": c.state,
                         "exit": c.proc.returncode} for c in self.clients.values()],
            "supervisor stop": self.sup_status, "lsca cleanup": self.cleanup_status,
        }
        if not passed:
            for name, items in details.items():
                if items and name not in ("faults", "clients") and isinstance(items, list):
                    print(f"\n{name}:", file=sys.stderr)
                    for item in items[:20]:
                        print(f"  {item}", file=sys.stderr)
            print(f"\nworking directory kept: {self.workdir} (supervisor logs: "
                  f"{', '.join(os.path.basename(s.logpath) for s in self.supervisors)})", file=sys.stderr)
        summary = {
            "duration": round(self.elapsed, 1), "workers": args.workers, "clients": args.clients,
            "threads": args.threads, "seed": args.seed, "calls_completed": calls,
            "faults_injected": faults_total, "faults": {k: self.faults.faults[k] for k in FAULT_KINDS},
            "calls_failed_eio": self.eio, "writes_checked": dict(checked.writes),
            "writes_cut_off_outcome_unknown": checked.partial_unknown,
            "clients_started": len(self.clients), "max_shards": self.max_shards,
            "signals_sent": sum(c.signals for c in self.clients.values()),
            **{k.replace(" ", "_").lower(): v for k, v in checks.items()},
            "result": "PASS" if passed else "FAIL", "problems": problems,
            "workdir": self.workdir, "details": details,
        }
        if args.json:
            with open(args.json, "w") as f:
                json.dump(summary, f, indent=2, default=str)
        if passed and not args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return 0 if passed else 1

    def emergency_stop(self):
        """Interrupted or failed: end every process of the run and remove its objects."""
        for c in self.clients.values():
            if c.proc.poll() is None:
                c.proc.kill()
        for s in self.supervisors:
            stop_supervisor(s.proc)
        for pid, _ in self.leftover_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run([sys.executable, "-m", "lsca.cli", "cleanup"], env=self.lsca_env(), capture_output=True,
                       timeout=60)
        log(f"working directory kept: {self.workdir}")
