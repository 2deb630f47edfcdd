"""Socket I/O through workers: the same outcomes as natively, including accept/recv that
would wait (handed back, they wait in the program's thread and are reported for the trace),
addresses, truncation flags and SIGPIPE."""
import json
import os
import sys

from conftest import PROGRAMS, parse_trace, run_native, through_worker, through_workers
from lsca.opclasses import CLASSES

SOCKET_OPS = os.path.join(PROGRAMS, "socket_ops.py")


def test_socket_traffic_matches_native_and_goes_through_workers(lsca_run):
    native = run_native([sys.executable, SOCKET_OPS])
    proc, stats, lines = lsca_run([sys.executable, SOCKET_OPS], trace=True)
    assert native.returncode == proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert json.loads(proc.stdout) == json.loads(native.stdout)
    assert json.loads(native.stdout)["echo_ok"] and json.loads(native.stdout)["sigpipe"]
    names = {name for _, name, _, _ in parse_trace(lines)}
    for op in CLASSES["network"]:
        assert op in names, op
    # Served by a worker, or tried by one and handed back because it would wait. One accept,
    # one shutdown, one sendmsg and one recvmsg; two connects (the second refused). How much
    # each TCP recv gets is the loopback's pace: at least 2 + 3 for 100 KiB in 64 KiB and
    # 70000-byte pieces (EOF included), then a recv after the shutdown, the datagram, the
    # peek and the MSG_DONTWAIT one. Sends: 2 sendalls (at least one send each), the
    # datagram, the 2 to a peer that is gone.
    exact = ("accept4", "connect", "shutdown", "sendmsg", "recvmsg")
    assert through_workers(stats, exact) == {"accept4": 1, "connect": 2, "shutdown": 1, "sendmsg": 1,
                                             "recvmsg": 1}, stats
    assert through_worker(stats, "recvfrom") >= 2 + 3 + 4 and through_worker(stats, "sendto") >= 2 + 1 + 2, stats


def test_a_send_that_must_wait_for_its_peer_waits_in_the_program(lsca_run):
    program = [sys.executable, os.path.join(PROGRAMS, "full_datagram_peer.py")]
    native = run_native(program)
    proc, stats, _ = lsca_run(program, timeout=60)
    assert native.returncode == proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout == native.stdout and native.stdout.startswith(b"sent ")
    assert stats["waited"].get("sendto", 0) >= 1        # tried by a worker, handed back to wait natively


def test_a_unix_datagram_carries_the_programs_credentials_and_cwd(lsca_run):
    program = [sys.executable, os.path.join(PROGRAMS, "unix_sender.py")]
    native = run_native(program)
    proc, stats, _ = lsca_run(program)
    assert json.loads(native.stdout) == {"data": "hi", "sender_is_me": True}
    assert proc.stdout == native.stdout, proc.stderr.decode()[-2000:]
    assert stats["waited"].get("sendto", 0) >= 1        # the program sent it itself
