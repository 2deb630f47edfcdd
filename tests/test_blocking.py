"""Blocking calls block only the calling thread of the program: a call that would wait is
handed back by the worker and waits natively in that thread (its outcome reported for the
trace), so the worker keeps serving others, signals interrupt or restart it exactly as
natively, and a client killed in one costs the worker nothing."""
import json
import signal
import subprocess
import sys

import psutil

from conftest import SupervisorProcess, parse_trace, run_native, wait_until, through_worker, wchan

PY = sys.executable


def test_signal_interrupts_or_restarts_a_blocked_read_as_natively(lsca_run, c_program):
    binary = c_program("signals")
    for mode, expected in (("eintr", b"read=-1 errno=EINTR handled=1"), ("restart", b"read=1 errno=0 handled=1 data=x")):
        native = run_native([binary, mode])
        proc, stats, lines = lsca_run([binary, mode], trace=True)
        assert native.stdout.startswith(expected)
        assert proc.stdout == native.stdout, mode
        reads = [(args, result) for _, name, args, result in parse_trace(lines) if name == "read"]
        # The blocked read was the worker's: its trace line carries the native outcome.
        if mode == "eintr":
            assert any("EINTR" in result for _, result in reads), reads
        else:
            assert any(args.startswith('3, "x"') and result == "1" for args, result in reads), reads


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
        blocked = run_under(sup, stats_file, "import os; os.write(1, b'go\\n'); print(os.read(0, 5))")
        assert blocked.stdout.readline() == b"go\n"
        program = psutil.Process(blocked.pid).children()[0].pid
        # The worker tried the read, found it would wait and handed it back: it waits natively.
        assert wait_until(lambda: own_thread_waits_in_pipe_read(program), 60)
        busy = subprocess.run(["dd", "if=/dev/zero", "of=/dev/null", "bs=512", "count=2000", "status=none"],
                              env=sup.client_env(), timeout=300)
        assert busy.returncode == 0
        assert own_thread_waits_in_pipe_read(program)    # still waiting: dd was served beside it
        blocked.stdin.write(b"hello")
        blocked.stdin.flush()
        assert blocked.stdout.readline() == b"b'hello'\n"
        assert blocked.wait(60) == 0
        stats = json.loads(stats_file.read_text())
        assert stats["waited"]["read"] == 1 and through_worker(stats, "write") >= 1
    finally:
        if blocked:
            blocked.kill()
            blocked.wait()
        assert sup.stop() == 0


def test_client_killed_while_it_waits_leaves_the_worker_serving(tmp_path):
    sup = SupervisorProcess(str(tmp_path), workers=1)
    try:
        victim = subprocess.Popen([PY, "-c", "import os; os.write(1, b'go\\n'); os.read(0, 5)"],
                                  env=sup.client_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert victim.stdout.readline() == b"go\n"
        assert wait_until(lambda: own_thread_waits_in_pipe_read(victim.pid), 60)
        victim.send_signal(signal.SIGTERM)          # fatal: the program ends, as natively
        assert victim.wait(60) == -signal.SIGTERM
        (worker,) = [p.pid for p in psutil.Process(sup.process.pid).children()]
        again = subprocess.run([PY, "-c", "print('still served')"], env=sup.client_env(), capture_output=True,
                               timeout=300)
        assert again.stdout == b"still served\n"
        assert [p.pid for p in psutil.Process(sup.process.pid).children()] == [worker]
        victim.stdin.close()
    finally:
        assert sup.stop() == 0
