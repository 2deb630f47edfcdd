"""Blocking calls block only the calling thread of the program: the worker keeps
serving others, signals interrupt or restart them as natively, and a client
killed in one is abandoned without waiting."""
import signal
import subprocess
import sys

import psutil

from conftest import SupervisorProcess, parse_trace, run_native, wait_until, waits_for_its_worker

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


def test_a_blocked_client_does_not_stall_the_worker(tmp_path):
    sup = SupervisorProcess(str(tmp_path), workers=1)
    blocked = None
    try:
        blocked = subprocess.Popen([PY, "-c", "import os; os.write(1, b'go\\n'); print(os.read(0, 5))"],
                                   env=sup.client_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert blocked.stdout.readline() == b"go\n"
        assert wait_until(lambda: waits_for_its_worker(blocked.pid, sup.process.pid), 60)   # its read waits in the only worker
        # A stalled worker would never serve dd: the time-out only bounds that failure.
        busy = subprocess.run(["dd", "if=/dev/zero", "of=/dev/null", "bs=512", "count=2000", "status=none"],
                              env=sup.client_env(), timeout=300)
        assert busy.returncode == 0
        assert waits_for_its_worker(blocked.pid, sup.process.pid)    # still waiting: dd was served beside it
        blocked.stdin.write(b"hello")
        blocked.stdin.flush()
        assert blocked.stdout.readline() == b"b'hello'\n"
        assert blocked.wait(60) == 0
    finally:
        if blocked:
            blocked.kill()
            blocked.wait()
        assert sup.stop() == 0


def test_client_killed_in_a_blocked_call_is_abandoned(tmp_path):
    sup = SupervisorProcess(str(tmp_path), workers=1)
    try:
        victim = subprocess.Popen([PY, "-c", "import os; os.write(1, b'go\\n'); os.read(0, 5)"],
                                  env=sup.client_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert victim.stdout.readline() == b"go\n"
        assert wait_until(lambda: waits_for_its_worker(victim.pid, sup.process.pid), 60)    # its read is the worker's
        victim.send_signal(signal.SIGTERM)          # fatal: the program ends, as natively
        assert victim.wait(60) == -signal.SIGTERM
        (worker,) = [p.pid for p in psutil.Process(sup.process.pid).children()]
        # The worker let go of the call and still serves.
        again = subprocess.run([PY, "-c", "print('still served')"], env=sup.client_env(), capture_output=True,
                               timeout=300)
        assert again.stdout == b"still served\n"
        assert [p.pid for p in psutil.Process(sup.process.pid).children()] == [worker]
        victim.stdin.close()
    finally:
        assert sup.stop() == 0
