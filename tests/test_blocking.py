"""Blocking calls block only the calling thread of the program: a call that would wait is
handed back by the worker and waits natively in that thread (its outcome reported for the
trace), so the worker keeps serving others, signals interrupt or restart it exactly as
natively, and a client killed in one costs the worker nothing."""
import json
import os
import signal
import subprocess
import sys

import psutil

from conftest import SupervisorProcess, parse_trace, run_native, wait_until, through_worker, through_workers, wchan

PY = sys.executable


def test_signal_interrupts_or_restarts_a_blocked_read_as_natively(lsca_run, c_program):
    binary = c_program("signals")
    for mode, expected in (("eintr", b"read=-1 errno=EINTR handled=1"), ("restart", b"read=1 errno=0 handled=1 data=x")):
        native = run_native([binary, mode])
        proc, stats, lines = lsca_run([binary, mode], trace=True)
        assert native.stdout.startswith(expected)
        assert proc.stdout == native.stdout, mode
        reads = [(args, result) for _, name, args, result in parse_trace(lines) if name == "read"]
        # The blocked read was the worker's: handed back to wait natively, its one trace line
        # carries the native outcome (a restart is the kernel's, inside that wait).
        assert len(reads) == 1, reads
        if mode == "eintr":
            assert "EINTR" in reads[0][1], reads
        else:
            assert reads[0][0].startswith('3, "x"') and reads[0][1] == "1", reads
        # Its pipe, the handler's write (the read waits natively, so the handler is not inside
        # a call of the agent's) and the read: each through a worker.
        assert through_workers(stats, ("pipe2", "write", "read")) == {"pipe2": 1, "write": 1, "read": 1}, stats
        assert stats["waited"].get("read") == 1, stats


def own_thread_waits_in_pipe_read(pid):
    """The program's (only) thread sleeps in a pipe read itself: the worker handed the read
    back, so no worker thread holds it."""
    return "pipe_read" in wchan(pid)


def run_under(sup, stats_file, script):
    """python -c script under lsca run on sup, its stdin and stdout pipes."""
    return subprocess.Popen([PY, "-m", "lsca.cli", "run", "--stats-file", str(stats_file), "--", PY, "-c", script],
                            env=sup.client_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def test_a_blocked_client_does_not_stall_the_worker(tmp_path):
    sup = SupervisorProcess(str(tmp_path), workers=1)
    blocked = None
    stats_file = tmp_path / "stats.json"
    try:
        blocked = run_under(sup, stats_file, "import os; os.write(1, b'go\\n'); os.write(1, b'%r\\n' % os.read(0, 5))")
        assert blocked.stdout.readline() == b"go\n"
        program = psutil.Process(blocked.pid).children()[0].pid
        # The worker tried the read, found it would wait and handed it back: it waits natively.
        assert wait_until(lambda: own_thread_waits_in_pipe_read(program), 60)
        # The supervisor's live view counts it while it waits (lsca stats, lsca top). ("go" may
        # have waited too: Debian 12's 6.1 kernel refuses RWF_NOWAIT on pipes.)
        live = [c for c in sup.stats()["clients"] if c["pid"] == program]
        assert len(live) == 1 and live[0]["waited"].get("read") == 1, live
        busy_stats = tmp_path / "busy.json"
        busy = subprocess.run([PY, "-m", "lsca.cli", "run", "--stats-file", str(busy_stats), "--", "dd",
                               "if=/dev/zero", "of=/dev/null", "bs=512", "count=2000", "status=none"],
                              env=sup.client_env(), timeout=300)
        assert busy.returncode == 0
        assert own_thread_waits_in_pipe_read(program)    # still waiting: dd was served beside it
        # Every one of dd's calls was the worker's (/dev/zero and /dev/null never make one wait).
        busy = json.loads(busy_stats.read_text())
        assert (busy["proxied"].get("read"), busy["proxied"].get("write")) == (2000, 2000), busy
        blocked.stdin.write(b"hello")
        blocked.stdin.flush()
        assert blocked.stdout.readline() == b"b'hello'\n"
        assert blocked.wait(60) == 0
        stats = json.loads(stats_file.read_text())
        assert stats["waited"].get("read") == 1 and through_worker(stats, "write") == 2, stats   # "go", the echo
    finally:
        if blocked:
            blocked.kill()
            blocked.wait()
        assert sup.stop() == 0


def test_client_killed_while_it_waits_leaves_the_worker_serving(tmp_path):
    sup = SupervisorProcess(str(tmp_path), workers=1)
    victim = None
    try:
        victim = run_under(sup, tmp_path / "victim.json", "import os; os.write(1, b'go\\n'); os.read(0, 5)")
        assert victim.stdout.readline() == b"go\n"
        program = psutil.Process(victim.pid).children()[0].pid
        assert wait_until(lambda: own_thread_waits_in_pipe_read(program), 60)
        os.kill(program, signal.SIGTERM)            # fatal: the program ends, as natively
        assert victim.wait(60) == -signal.SIGTERM
        # Its read was the worker's, handed back to wait natively; its write went through it too.
        stats = json.loads((tmp_path / "victim.json").read_text())
        assert stats["waited"].get("read") == 1 and through_worker(stats, "write") == 1, stats
        (worker,) = [p.pid for p in psutil.Process(sup.process.pid).children()]
        again = subprocess.run([PY, "-m", "lsca.cli", "run", "--stats-file", str(tmp_path / "again.json"), "--",
                                PY, "-c", "import os; os.write(1, b'still served\\n')"],
                               env=sup.client_env(), capture_output=True, timeout=300)
        assert again.stdout == b"still served\n"
        assert through_worker(json.loads((tmp_path / "again.json").read_text()), "write") == 1
        assert [p.pid for p in psutil.Process(sup.process.pid).children()] == [worker]
    finally:
        if victim:
            victim.kill()
            victim.wait()
        assert sup.stop() == 0
