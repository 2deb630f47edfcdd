"""Registration, process life (fork, exec, kill -9), lsca run's contract with its
caller (exit status, signals, trace, stats) and the supervisor's clean stop."""
import errno
import json
import os
import pwd
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from lsca import ipc
from lsca.abi import HELLO_SIZE, SHARD_SIZE
from lsca.supervisor.clients import admits
from lsca.supervisor.registry import cleanup_dead
from conftest import ended, wait_until, SupervisorProcess, clean_env, new_objects, run_native, through_worker, wchan

PY = sys.executable


def shards_of(supervisor_pid):
    """Client shards the supervisor created (its worker table is another size)."""
    return [row for row in ipc._table("shm") if row["cpid"] == supervisor_pid and row["size"] == SHARD_SIZE]


def assert_served(sup, pid):
    """pid is sup's client and workers answered its calls (how many, Python's imports on this
    installation say; with LSCA_REQUIRED=1 it could not have started without registering)."""
    rows = [c for c in sup.stats()["clients"] if c["pid"] == pid]
    assert len(rows) == 1 and sum(rows[0]["proxied"].values()) > 0, rows




# ---- agent without a supervisor ----

def test_unreachable_supervisor_runs_natively(tmp_path):
    env = clean_env()
    env.update(LD_PRELOAD=agent(), LSCA_SOCKET=str(tmp_path / "nobody-listens.sock"))
    proc = subprocess.run([PY, "-c", "import os; os.write(1, b'native\\n')"], env=env, capture_output=True)
    assert proc.returncode == 0 and proc.stdout == b"native\n"


def test_required_supervisor_missing_refuses_to_start(tmp_path):
    env = clean_env()
    env.update(LD_PRELOAD=agent(), LSCA_SOCKET=str(tmp_path / "nobody-listens.sock"), LSCA_REQUIRED="1")
    proc = subprocess.run([PY, "-c", "print('must not run')"], env=env, capture_output=True)
    assert proc.returncode == 126
    assert proc.stdout == b""
    assert b"lsca: cannot register with the supervisor at" in proc.stderr
    assert b"LSCA_REQUIRED=1" in proc.stderr


def agent():
    from lsca.runner import agent_path
    return agent_path()


# ---- lsca run's contract ----

def test_exit_status_passes_through(lsca_run):
    proc, stats, _ = lsca_run([PY, "-c", "import os, sys; os.write(1, b'x'); sys.exit(7)"])
    assert proc.returncode == 7
    assert through_worker(stats, "write") == 1          # Python itself writes nothing: its one write


def test_death_by_signal_passes_through(lsca_run):
    proc, stats, _ = lsca_run([PY, "-c", "import os, signal; os.write(1, b'x'); os.kill(os.getpid(), signal.SIGTERM)"])
    assert proc.returncode == -signal.SIGTERM and proc.stdout == b"x"
    assert through_worker(stats, "write") == 1


def test_sigpipe_reaches_the_writer_as_natively(lsca_run):
    # Writing to a pipe whose reader is gone: the kernel sends SIGPIPE to the writer.
    script = ("import os, signal\n"
              "signal.signal(signal.SIGPIPE, signal.SIG_DFL)\n"
              "r, w = os.pipe(); os.close(r)\n"
              "os.write(w, b'x')\n")
    native = run_native([PY, "-c", script])
    proc, stats, _ = lsca_run([PY, "-c", script])
    assert native.returncode == proc.returncode == -signal.SIGPIPE
    assert through_worker(stats, "write") == 1


def test_signals_to_lsca_run_reach_the_program(supervisor, tmp_path):
    marker = tmp_path / "got-usr1"
    script = ("import os, signal, time\n"
              f"signal.signal(signal.SIGUSR1, lambda *a: open({str(marker)!r}, 'w').close())\n"
              "os.write(1, b'ready\\n')\n"
              f"while not os.path.exists({str(marker)!r}): time.sleep(0.01)\n")
    env = clean_env()
    env["LSCA_SOCKET"] = supervisor.socket
    stats_file = tmp_path / "stats.json"
    proc = subprocess.Popen([PY, "-m", "lsca.cli", "run", "--stats-file", str(stats_file), "--", PY, "-c", script],
                            env=env, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(20) == 0
        assert through_worker(json.loads(stats_file.read_text()), "write") == 1
    finally:
        proc.kill()
        proc.wait()


def test_trace_prints_strace_like_lines(lsca_run):
    proc, _, lines = lsca_run([PY, "-c", "import os; os.write(1, b'hello\\n')"], trace=True)
    assert proc.stdout == b"hello\n"
    assert 'write(1, "hello\\n", 6) = 6' in lines


def test_trace_shows_errors_with_errno_names(lsca_run):
    proc, _, lines = lsca_run([PY, "-c", "import os\ntry: os.write(999, b'x')\nexcept OSError: pass"], trace=True)
    assert 'write(999, "x", 1) = -1 EBADF (Bad file descriptor)' in lines


def test_stats_table_counts_calls(supervisor, tmp_path):
    env = clean_env()
    env["LSCA_SOCKET"] = supervisor.socket
    script = "import os\nfor i in range(50): os.write(1, b'.')"
    proc = subprocess.run([PY, "-m", "lsca.cli", "run", "--stats", "--", PY, "-c", script], env=env,
                          capture_output=True)
    assert proc.returncode == 0
    text = proc.stderr.decode()
    summary = re.search(r"lsca: 1 process\(es\), (\d+) calls proxied, \d+ passthrough \(\d+ handed back by "
                        r"workers\)(?:, (\d+) handed back to wait natively)?", text)
    assert summary
    # The 50 writes to the stdout pipe went to a worker (answered, or handed back to wait).
    write_row = re.search(r"^write\s+(\d+)\s+(\d+)$", text, re.M)
    assert (int(write_row.group(1)) if write_row else 0) + int(summary.group(2) or 0) == 50


def test_exec_keeps_the_shard_and_the_new_image_is_served(lsca_run, supervisor):
    script = "import os; os.write(1, b'before exec\\n'); os.execv('/bin/cat', ['cat', '/dev/null'])"
    proc, stats, _ = lsca_run([PY, "-c", script])
    assert proc.returncode == 0 and proc.stdout == b"before exec\n"
    assert stats["processes"] == 1          # cat resumed the python image's registration
    # Python's one write; cat's closes of /dev/null, stdout and stderr at least (Python's own
    # closes of what it imported come before).
    assert through_worker(stats, "write") == 1 and stats["proxied"]["close"] >= 3, stats


def test_large_write_is_one_call(lsca_run, tmp_path):
    out = tmp_path / "big"
    script = f"import os; fd = os.open({str(out)!r}, os.O_WRONLY | os.O_CREAT); print(os.write(fd, b'a' * (1 << 20)))"
    proc, _, lines = lsca_run([PY, "-c", script], trace=True)
    assert proc.stdout == b"1048576\n"
    assert any(re.match(r"write\(\d+, \.\.\., 1048576\) = 1048576$", line) for line in lines), lines[-5:]
    assert out.stat().st_size == 1 << 20


def test_embedded_supervisor_serves_and_cleans_up(tmp_path):
    before = ipc.lsca_objects()
    stats_file = tmp_path / "stats.json"
    proc = subprocess.run([PY, "-m", "lsca.cli", "run", "--workers", "1", "--stats-file", str(stats_file),
                           "--", PY, "-c", "import os; os.write(1, b'hi\\n')"], env=clean_env(), capture_output=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout == b"hi\n"
    assert through_worker(json.loads(stats_file.read_text()), "write") == 1
    assert new_objects(before) == {"shm": [], "sem": []}


def test_run_without_command_is_a_usage_error():
    proc = subprocess.run([PY, "-m", "lsca.cli", "run"], env=clean_env(), capture_output=True)
    assert proc.returncode == 2 and b"no command given" in proc.stderr


def test_run_of_missing_command_says_not_found(supervisor):
    env = clean_env()
    env["LSCA_SOCKET"] = supervisor.socket
    proc = subprocess.run([PY, "-m", "lsca.cli", "run", "--", "no-such-command-lsca"], env=env, capture_output=True)
    assert proc.returncode == 127
    assert proc.stderr.decode().strip() == "lsca: no-such-command-lsca: No such file or directory"


def test_supervisor_rejects_bad_arguments_in_one_line():
    proc = subprocess.run([PY, "-m", "lsca.supervisor", "--workers", "0"], env=clean_env(), capture_output=True)
    assert proc.returncode == 2
    assert b"--workers: invalid value '0': must be at least 1" in proc.stderr


# ---- registration and shards ----

def test_shard_is_private_to_its_client(supervisor):
    script = "import os, sys; os.write(1, b'x'); sys.stdin.read()"
    proc = subprocess.Popen([PY, "-c", script], env=supervisor.client_env(LSCA_REQUIRED="1"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout.read(1) == b"x"
        assert_served(supervisor, proc.pid)
        rows = [r for r in shards_of(supervisor.process.pid) if r["lpid"] in (proc.pid, supervisor.process.pid)
                or r["nattch"] >= 2]
        assert rows, "no shard for the client"
        for row in rows:
            assert row["perms"] == 600          # /proc prints the mode in octal digits
            assert row["uid"] == os.geteuid()
    finally:
        proc.kill()
        proc.wait()


def test_shard_of_killed_client_is_freed(supervisor):
    ids = lambda: {row["shmid"] for row in shards_of(supervisor.process.pid)}
    before = ids()
    script = "import os, time; os.write(1, b'x'); time.sleep(60)"
    proc = subprocess.Popen([PY, "-c", script], env=supervisor.client_env(LSCA_REQUIRED="1"), stdout=subprocess.PIPE)
    try:
        assert proc.stdout.read(1) == b"x"
        assert_served(supervisor, proc.pid)
        (shard,) = ids() - before               # the client's own shard
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert wait_until(lambda: shard not in ids())
    finally:
        proc.kill()
        proc.wait()


def test_malformed_registration_does_not_hurt_the_supervisor(supervisor, lsca_run):
    for garbage in (b"\x00" * HELLO_SIZE, b"ACSL" + b"\xff" * (HELLO_SIZE - 4), b"{not json\n", b"x"):
        s = socket.socket(socket.AF_UNIX)
        s.connect(supervisor.socket)
        s.sendall(garbage)
        s.close()
    proc, stats, _ = lsca_run([PY, "-c", "import os; os.write(1, b'still served')"])
    assert proc.stdout == b"still served" and through_worker(stats, "write") == 1


def test_user_supervisor_admits_only_its_own_uid():
    assert admits(1000, 1000)
    assert not admits(1000, 1001)
    assert not admits(1000, 0)
    assert admits(0, 1000) and admits(0, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_root_supervisor_serves_another_uid_with_a_shard_only_it_can_attach():
    nobody = pwd.getpwnam("nobody")
    with tempfile.TemporaryDirectory(prefix="lsca-test-") as tmpdir:
        os.chmod(tmpdir, 0o755)             # nobody must reach the socket and the agent copy
        shutil.copy(agent(), os.path.join(tmpdir, "agent.so"))
        sup = SupervisorProcess(tmpdir, workers=1)
        try:
            env = clean_env()
            env.update(LD_PRELOAD=os.path.join(tmpdir, "agent.so"), LSCA_SOCKET=sup.socket, LSCA_REQUIRED="1")
            client = subprocess.Popen(["/bin/cat"], env=env, user=nobody.pw_uid, group=nobody.pw_gid,
                                      extra_groups=[], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            try:
                client.stdin.write(b"ping\n")
                client.stdin.flush()
                assert client.stdout.readline() == b"ping\n"
                assert_served(sup, client.pid)
                rows = shards_of(sup.process.pid)
                assert len(rows) == 1
                assert rows[0]["uid"] == nobody.pw_uid and rows[0]["perms"] == 600
            finally:
                client.kill()
                client.wait()
        finally:
            assert sup.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
def test_supervisor_stop_removes_every_object(sig):
    with tempfile.TemporaryDirectory(prefix="lsca-test-") as tmpdir:
        sup = SupervisorProcess(tmpdir, workers=2)
        client = subprocess.Popen([PY, "-c", "import os, time; os.write(1, b'x'); time.sleep(60)"],
                                  env=sup.client_env(LSCA_REQUIRED="1"), stdout=subprocess.PIPE)
        try:
            assert client.stdout.read(1) == b"x"
            assert_served(sup, client.pid)
            assert len(shards_of(sup.process.pid)) == 1
            sup.process.send_signal(sig)
            assert sup.process.wait(15) == 0
            assert new_objects(sup.objects_before) == {"shm": [], "sem": []}
            assert not os.path.exists(sup.socket)
        finally:
            client.kill()
            client.wait()
            sup.stop()


def read_lines(proc, n, timeout=20):
    """n lines of the process's output."""
    lines = []
    deadline = time.monotonic() + timeout
    while len(lines) < n and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.1)[0]:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip(b"\n"))
    return lines


def stopped(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def start_waiting_client(tmp_path, c_program):
    """A client whose first proxied call waits for a worker that is stopped (SIGSTOP before the
    client registered): a call in flight nobody has taken, whatever the machine's speed."""
    state_dir = tmp_path / "state"
    sup = SupervisorProcess(str(tmp_path), workers=1, env_extra={"LSCA_STATE_DIR": str(state_dir)})
    try:
        # The supervisor listens before it has forked its worker.
        assert wait_until(lambda: len(psutil.Process(sup.process.pid).children()) == 1)
        (worker,) = [p.pid for p in psutil.Process(sup.process.pid).children()]
        os.kill(worker, signal.SIGSTOP)
        assert wait_until(lambda: stopped(worker))
        client = subprocess.Popen([c_program("call_in_flight")], env=sup.client_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        # Registered (the supervisor answers that), then asleep on its slot: the write waits.
        assert wait_until(lambda: "futex" in wchan(client.pid), 60)
    except BaseException:
        for p in psutil.Process(sup.process.pid).children():
            p.send_signal(signal.SIGCONT)
        sup.stop()
        raise
    return sup, client, state_dir, worker


def test_killed_supervisor_workers_fail_the_waiting_call_and_exit(tmp_path, c_program):
    """kill -9 of the supervisor alone: its workers notice, fail the call in flight with
    EIO (its outcome is unknown), wake the program and exit; the program goes on natively."""
    sup, client, state_dir, worker = start_waiting_client(tmp_path, c_program)
    try:
        os.kill(sup.process.pid, signal.SIGKILL)
        sup.process.wait()
        os.kill(worker, signal.SIGCONT)     # it finds its supervisor gone before it serves anyone
        assert read_lines(client, 2) == [str(errno.EIO).encode(), b"native afterwards"]
        assert wait_until(lambda: ended(worker))
    finally:
        client.kill()
        client.wait()
        sup.process.wait()
        assert cleanup_dead(str(state_dir))[0] == 1      # what the dead instance owned, exactly


def test_cleanup_after_everything_was_killed_fails_the_waiting_call(tmp_path, c_program):
    """kill -9 of the supervisor and its workers: nobody is left to answer; the cleanup
    (lsca cleanup, or the next supervisor's start) fails the call with EIO and wakes it."""
    sup, client, state_dir, worker = start_waiting_client(tmp_path, c_program)
    try:
        for pid in (sup.process.pid, worker):
            os.kill(pid, signal.SIGKILL)
        sup.process.wait()
        assert cleanup_dead(str(state_dir))[0] == 1
        assert read_lines(client, 2) == [str(errno.EIO).encode(), b"native afterwards"]
    finally:
        client.kill()
        client.wait()


def test_trace_to_a_file_as_json_lines(supervisor, tmp_path):
    out = tmp_path / "trace.jsonl"
    env = clean_env()
    env["LSCA_SOCKET"] = supervisor.socket
    script = "import os\ntry: os.write(999, b'x')\nexcept OSError: pass\nos.write(1, b'hi')"
    proc = subprocess.run([PY, "-m", "lsca.cli", "run", "--json", "-o", str(out), "--", PY, "-c", script],
                          env=env, capture_output=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == b"hi" and proc.stderr == b""
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {"time", "pid", "worker", "syscall", "call", "result", "errno"} <= set(records[0])
    assert {"syscall": "write", "call": 'write(999, "x", 1)', "result": -1, "errno": "EBADF"}.items() <= \
        next(r for r in records if r["call"].startswith("write(999")).items()
    assert any(r["call"] == 'write(1, "hi", 2)' and r["result"] == 2 and r["errno"] is None for r in records)


def test_trace_file_that_cannot_be_written_is_one_line(supervisor):
    env = clean_env()
    env["LSCA_SOCKET"] = supervisor.socket
    proc = subprocess.run([PY, "-m", "lsca.cli", "run", "-o", "/nonexistent/dir/t", "--", "true"], env=env,
                          capture_output=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.decode().strip() == "lsca: cannot write the trace to /nonexistent/dir/t: No such file or directory"


def test_summary_table_counts_calls_errors_and_time(supervisor):
    env = clean_env()
    env["LSCA_SOCKET"] = supervisor.socket
    script = ("import os\nfd = os.open('/dev/null', os.O_WRONLY)\nfor i in range(100): os.write(fd, b'')\n"
              "for i in range(7):\n    try: os.stat('/nonexistent/x')\n    except OSError: pass\n")
    proc = subprocess.run([PY, "-m", "lsca.cli", "run", "--summary", "--", PY, "-c", script], env=env,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0
    rows = {}
    for line in proc.stderr.decode().splitlines():
        m = re.match(r"^\s*([\d.]+)\s+([\d.]+)\s+(\d*)\s+(\d+)\s+(\d*)\s+(\S+)$", line)
        if m:
            rows[m.group(6)] = (float(m.group(1)), int(m.group(4)), int(m.group(5) or 0))
    assert rows["write"][1] == 100 and rows["write"][2] == 0  # Python itself writes nothing
    assert rows["newfstatat"][2] >= 7                       # the failed stats are errors (Python's own too)
    assert rows["total"][0] == 100.0 and rows["total"][1] == sum(v[1] for k, v in rows.items() if k != "total")
