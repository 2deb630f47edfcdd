"""Fixtures: a real supervisor, clients run natively and under LSCA, and guards
that every process a test starts is ended and every SysV object removed."""
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest
from hypothesis import HealthCheck, settings

# Examples are timed by the machine, not by the code: a busy host or an emulated arm64 VM
# (tools/aarch64) runs them many times slower. No per-example deadline, no "too slow" check.
settings.register_profile("lsca", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("lsca")

from lsca.launch import clean_env, start_supervisor, stop_supervisor
from lsca import ipc
from lsca.runner import SessionClient, agent_path
from lsca.tracestream import TraceReader

PROGRAMS = os.path.join(os.path.dirname(__file__), "programs")
START_TIMEOUT_S = 15


# Every process a test starts carries this marker, so the guards never touch
# LSCA processes or objects that something else on the machine owns.
TEST_MARK = "LSCATEST_SESSION"
os.environ[TEST_MARK] = f"{os.getpid()}-{time.time_ns()}"


def lsca_processes(ours=True):
    """Supervisors and workers (workers share their supervisor's command line)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if "lsca-supervisor" not in cmdline and "lsca.supervisor" not in cmdline:
            continue
        try:
            mine = p.environ().get(TEST_MARK) == os.environ[TEST_MARK]
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if mine == ours:
            found.append(p)
    return found


def new_objects(before):
    """LSCA SysV objects created since `before`, less shards of LSCA processes not ours."""
    foreign = {p.pid for p in lsca_processes(ours=False)}
    now = ipc.lsca_objects()
    shm_creator = {row["shmid"]: row["cpid"] for row in ipc._table("shm")}
    return {
        "shm": sorted(i for i in set(now["shm"]) - set(before["shm"]) if shm_creator.get(i) not in foreign),
        # Semaphore sets do not record their creator: attributable only when nobody else runs LSCA.
        "sem": sorted(set(now["sem"]) - set(before["sem"])) if not foreign else [],
    }


def remove_objects(objects):
    for shmid in objects["shm"]:
        ipc.remove_shm(shmid)
    for semid in objects["sem"]:
        ipc.remove_semaphores(semid)


@pytest.fixture(scope="session", autouse=True)
def no_leaks_after_suite():
    """After the whole suite: no LSCA SysV object and no LSCA process of ours is left."""
    before = ipc.lsca_objects()
    yield
    leaked_procs = lsca_processes()
    for p in leaked_procs:
        p.kill()
    time.sleep(0.2)
    leaked = new_objects(before)
    remove_objects(leaked)
    assert not leaked_procs, f"LSCA processes left running: {[p.pid for p in leaked_procs]}"
    assert leaked == {"shm": [], "sem": []}, f"SysV objects left behind: {leaked}"


class SupervisorProcess:
    """A real lsca-supervisor on a temporary socket, ended by pid."""

    def __init__(self, tmpdir, workers=2, extra=(), env_extra=None, stderr=None):
        self.socket = os.path.join(tmpdir, "supervisor.sock")
        self.objects_before = ipc.lsca_objects()
        self.process = start_supervisor(self.socket, ["--workers", str(workers), *extra],
                                        env={**clean_env(), **(env_extra or {})}, timeout=START_TIMEOUT_S,
                                        stdin=subprocess.DEVNULL, stderr=stderr)

    def stats(self):
        """The supervisor's counters now (lsca.stats.snapshot over its socket)."""
        from lsca.stats import StatsClient
        client = StatsClient(self.socket)
        try:
            return client.snapshot()
        finally:
            client.close()

    def settled(self):
        """The supervisor's counters once its main loop has handled every signal sent to it
        before this call: the loop takes queued signals after each turn's events, so the
        answer to a second request comes after a turn that began after the signals."""
        self.stats()
        return self.stats()

    def client_env(self, **extra):
        env = clean_env()
        env.update(LD_PRELOAD=agent_path(), LSCA_SOCKET=self.socket, **extra)
        return env

    def stop(self):
        """TERM, then KILL after a grace period, and its workers by pid; returns the
        supervisor's exit status."""
        return stop_supervisor(self.process)


def public_agent(directory):
    """A copy of the agent any user may load (the installed one may sit under a private home)."""
    agent = shutil.copy(agent_path(), os.path.join(directory, "agent.so"))
    os.chmod(agent, 0o755)
    return agent


def run_in_traced_session(sup, agent, cmd, env, trace_path, **run):
    """cmd (subprocess.run(**run): as another user, say) with the agent on sup's socket, in a
    session of its own whose trace goes to trace_path (LSCA_REQUIRED: it cannot run
    natively). Returns (CompletedProcess, the session's counts, the trace's parsed calls)."""
    trace_fd = os.open(trace_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    reader = TraceReader(trace_fd)
    try:
        session = SessionClient(sup.socket, trace_fd=reader.sender_fd())
        reader.close_sender()
        reader.start()
        env = {**env, "LD_PRELOAD": agent, "LSCA_SOCKET": sup.socket, "LSCA_SESSION": session.token,
               "LSCA_REQUIRED": "1"}
        proc = subprocess.run(cmd, env=env, **run)
        stats = session.end()
        session.close()
    finally:
        reader.finish()
        os.close(trace_fd)
    with open(trace_path) as f:
        return proc, stats, parse_trace(f.read().splitlines())


def workers_of(sup):
    return sorted(p.pid for p in psutil.Process(sup.process.pid).children())


def asleep_on_doorbell(worker_pid):
    """The worker's main thread waits on its doorbell semaphore: it executes no call (a
    worker killed between writing an answer and marking it done rightly says EIO)."""
    try:
        with open(f"/proc/{worker_pid}/wchan") as f:
            return "semtimedop" in f.read()
    except OSError:
        return False


@contextlib.contextmanager
def running_supervisor(**options):
    """A SupervisorProcess(**options) in a fresh directory; stopped (status 0) with every
    SysV object it made removed, whatever the body did."""
    with tempfile.TemporaryDirectory(prefix="lsca-test-") as tmpdir:
        sup = SupervisorProcess(tmpdir, **options)
        try:
            yield sup
        finally:
            status = sup.stop()
            left = new_objects(sup.objects_before)
            remove_objects(left)
            assert status == 0, f"supervisor exited with {status}"
            assert left == {"shm": [], "sem": []}, f"supervisor left SysV objects: {left}"


@pytest.fixture(scope="module")
def supervisor():
    with running_supervisor() as sup:
        yield sup


@pytest.fixture
def lsca_run(supervisor, tmp_path):
    """Run a command under 'lsca run' served by the module's supervisor.
    Returns (CompletedProcess, stats dict, trace lines)."""

    def run(cmd, trace=False, cwd=None, input=None, timeout=120, env_extra=None):
        stats_file = tmp_path / f"stats-{time.monotonic_ns()}.json"
        env = clean_env()
        env["LSCA_SOCKET"] = supervisor.socket
        env.update(env_extra or {})
        lsca_cmd = [sys.executable, "-m", "lsca.cli", "run", "--stats-file", str(stats_file)]
        if trace:
            lsca_cmd.append("--trace")
        # Its own process group, so that a timeout ends the program under test too, not only lsca run.
        child = subprocess.Popen(lsca_cmd + ["--"] + list(cmd), cwd=cwd, env=env, start_new_session=True,
                                 stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = child.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            raise
        proc = subprocess.CompletedProcess(child.args, child.returncode, out, err)
        stats = json.loads(stats_file.read_text()) if stats_file.exists() else None
        trace_lines = proc.stderr.decode(errors="replace").splitlines() if trace else []
        return proc, stats, trace_lines

    return run


def wait_until(predicate, timeout=15.0):
    """Poll predicate until it holds or the timeout passes; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def ended(pid):
    """Exited (a zombie, or reaped: it may go between any two looks at it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wchan(pid):
    """Where the process's (first) thread sleeps in the kernel ("" once it is gone)."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read()
    except OSError:
        return ""


def through_worker(stats, op):
    """Calls of op that went to a worker: answered by it, or tried by it and handed back to
    wait natively (where pipes refuse RWF_NOWAIT, Linux 6.1 say, every write to a pipe)."""
    return stats["proxied"].get(op, 0) + stats.get("waited", {}).get(op, 0)


def run_native(cmd, cwd=None, input=None, timeout=120):
    return subprocess.run(list(cmd), cwd=cwd, input=input, env=clean_env(), capture_output=True,
                          timeout=timeout)


# strace's names, the same on x86_64 and arm64, of the descriptor calls native_calls counts →
# LSCA's ops. Path calls are left out: their syscall differs by arch (creat, open, unlink on
# x86_64 are openat and unlinkat on arm64).
STRACE_OPS = {"read": "read", "write": "write", "pread64": "pread", "pwrite64": "pwrite", "lseek": "lseek",
              "close": "close", "fsync": "fsync", "fdatasync": "fdatasync", "fchown": "fchown", "fchmod": "fchmod"}
# A call as strace -y prints it: its name, then its first descriptor and the path it names.
STRACE_CALL = re.compile(r"^([a-z0-9_]+)\((?:-?\d+)<([^>]*)>")


def native_calls(cmd, ops, root, cwd=None, input=None, env_extra=None, timeout=120):
    """How many calls of each of ops (LSCA names of STRACE_OPS) a native run of cmd under
    strace -f makes on files under root and on its own stdin, stdout and stderr pipes. Where
    the program makes them through libc's exported functions, the same run under LSCA sends
    exactly these to workers; calls glibc makes to its own internals (stdio's read and write,
    fopen, opendir) never reach the agent, so a test compares only ops its program calls itself."""
    names = [name for name, op in STRACE_OPS.items() if op in ops]
    assert len(names) == len(ops), f"not descriptor calls strace names alike on every arch: {ops}"
    root = os.path.realpath(root)
    counts = dict.fromkeys(ops, 0)
    with tempfile.TemporaryDirectory(prefix="lsca-strace-") as outdir:
        # -ff: one file per process, so no call is split into "unfinished" and "resumed" lines.
        child = subprocess.Popen(["strace", "-f", "-ff", "-qq", "-y", "-e", "signal=none", "-e",
                                  "trace=" + ",".join(names), "-o", os.path.join(outdir, "t"), *cmd],
                                 cwd=cwd, env={**clean_env(), **(env_extra or {})},
                                 stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # The pipes given to the program: strace -y names them pipe:[inode].
        stdio = {f"pipe:[{os.fstat(f.fileno()).st_ino}]" for f in (child.stdin, child.stdout, child.stderr) if f}
        try:
            _, err = child.communicate(input, timeout=timeout)
        finally:
            child.kill()
            child.wait()
        assert os.listdir(outdir), f"strace traced nothing: {err.decode(errors='replace')}"
        for name in os.listdir(outdir):
            with open(os.path.join(outdir, name)) as f:
                for m in filter(None, map(STRACE_CALL.match, f)):
                    where = m.group(2)
                    if m.group(1) in names and (where in stdio or where.startswith(root + "/")):
                        counts[STRACE_OPS[m.group(1)]] += 1
    return counts


def through_workers(stats, ops):
    """{op: through_worker(stats, op)} for each of ops: what native_calls is compared with."""
    return {op: through_worker(stats, op) for op in ops}


TRACE_LINE = re.compile(r"^(?:\[pid\s+(\d+)\] )?([a-z0-9_]+)\((.*)\) = (.*)$")


def parse_trace(lines):
    """(pid or None, syscall name, args text, result text) for each trace line."""
    out = []
    for line in lines:
        m = TRACE_LINE.match(line)
        if m:
            out.append((int(m.group(1)) if m.group(1) else None, m.group(2), m.group(3), m.group(4)))
    return out


@pytest.fixture(scope="session")
def c_program(tmp_path_factory):
    """Compile tests/programs/NAME.c once per session; returns the binary's path."""
    built = {}
    outdir = tmp_path_factory.mktemp("bin")

    def build(name):
        if name not in built:
            binary = str(outdir / name)
            subprocess.run(["cc", "-O2", "-Wall", "-o", binary, os.path.join(PROGRAMS, name + ".c")], check=True)
            built[name] = binary
        return built[name]

    return build
