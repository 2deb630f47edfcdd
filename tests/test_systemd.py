"""sd_notify against real datagram sockets, and the unit file against systemd-analyze."""
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from lsca.supervisor.systemd import Notifier

UNIT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "systemd", "lsca-supervisor.service")
ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@pytest.fixture(autouse=True)
def no_systemd_env(monkeypatch):
    """Tests start without any systemd variable, whoever runs them."""
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def receiver(tmp_path, monkeypatch):
    """A bound AF_UNIX datagram socket named by NOTIFY_SOCKET: what systemd listens on."""
    path = str(tmp_path / "notify")
    assert len(path) < 108, "socket path too long for AF_UNIX"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def nothing_pending(sock):
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        data = sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(timeout)
    raise AssertionError(f"unexpected datagram {data!r}")


def monotonic_usec():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_from_environment_removes_the_variables(receiver, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier.from_environment()
    assert notifier.enabled
    for key in ENV_KEYS:
        assert key not in os.environ
    # So a process started afterwards (a worker, a client) does not see them either.
    out = subprocess.run([sys.executable, "-c",
                          "import os; print(sorted(k for k in os.environ "
                          "if k in ('NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID')))"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_ready(receiver):
    notifier = Notifier.from_environment()
    notifier.ready()
    assert receiver.recv(4096) == b"READY=1"
    notifier.ready("serving on /run/lsca/supervisor.sock with 4 workers")
    assert receiver.recv(4096) == b"READY=1\nSTATUS=serving on /run/lsca/supervisor.sock with 4 workers"
    assert nothing_pending(receiver)


def test_status(receiver):
    notifier = Notifier.from_environment()
    notifier.status("3 workers, 2 clients")
    assert receiver.recv(4096) == b"STATUS=3 workers, 2 clients"
    # A newline would end the value: the text stays on one line.
    notifier.status("first\nsecond")
    assert receiver.recv(4096) == b"STATUS=first second"
    assert nothing_pending(receiver)


def test_reloading_then_ready_again(receiver):
    notifier = Notifier.from_environment()
    before = monotonic_usec()
    notifier.reloading()
    after = monotonic_usec()
    message = receiver.recv(4096)
    match = re.fullmatch(rb"RELOADING=1\nMONOTONIC_USEC=(\d+)", message)
    assert match, message
    assert before <= int(match.group(1)) <= after
    notifier.ready_again()
    assert receiver.recv(4096) == b"READY=1"
    notifier.ready_again("serving on /s with 2 workers")
    assert receiver.recv(4096) == b"READY=1\nSTATUS=serving on /s with 2 workers"
    assert nothing_pending(receiver)


def test_stopping(receiver):
    notifier = Notifier.from_environment()
    notifier.stopping()
    assert receiver.recv(4096) == b"STOPPING=1"
    assert nothing_pending(receiver)


def test_lifecycle_in_order(receiver, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    notifier = Notifier.from_environment()
    notifier.ready("serving")
    notifier.watchdog(10.0)
    notifier.reloading()
    notifier.ready_again()
    notifier.stopping()
    received = [receiver.recv(4096) for _ in range(5)]
    assert received[0] == b"READY=1\nSTATUS=serving"
    assert received[1] == b"WATCHDOG=1"
    assert received[2].startswith(b"RELOADING=1\nMONOTONIC_USEC=")
    assert received[3:] == [b"READY=1", b"STOPPING=1"]
    assert nothing_pending(receiver)


def test_watchdog_every_half_of_watchdog_usec(receiver, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    notifier = Notifier.from_environment()
    assert notifier.watchdog_interval == 2.0
    assert notifier.watchdog_due(100.0)            # the first ping is due at once
    notifier.watchdog(100.0)
    assert receiver.recv(4096) == b"WATCHDOG=1"
    assert not notifier.watchdog_due(101.0)
    assert not notifier.watchdog_due(101.999)
    notifier.watchdog(101.0)                       # not due: nothing sent
    assert nothing_pending(receiver)
    assert notifier.watchdog_due(102.0)
    notifier.watchdog(102.5)
    assert receiver.recv(4096) == b"WATCHDOG=1"
    assert not notifier.watchdog_due(104.0)
    assert notifier.watchdog_due(104.5)
    assert nothing_pending(receiver)


def test_watchdog_now_defaults_to_the_monotonic_clock(receiver, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    notifier = Notifier.from_environment()
    notifier.watchdog()
    assert receiver.recv(4096) == b"WATCHDOG=1"
    assert not notifier.watchdog_due(time.monotonic())
    assert notifier.watchdog_due(time.monotonic() + 30)


def test_watchdog_for_our_pid(receiver, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier.from_environment()
    assert notifier.watchdog_interval == 0.5
    assert notifier.watchdog_due(1.0)
    notifier.watchdog(1.0)
    assert receiver.recv(4096) == b"WATCHDOG=1"


def test_watchdog_for_another_pid(receiver, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getppid()))
    notifier = Notifier.from_environment()
    assert notifier.watchdog_interval is None
    assert not notifier.watchdog_due(1.0)
    notifier.watchdog(1.0)
    assert nothing_pending(receiver)
    for key in ENV_KEYS:
        assert key not in os.environ
    # The watchdog is not ours, but the notify socket still is.
    notifier.ready()
    assert receiver.recv(4096) == b"READY=1"


@pytest.mark.parametrize("usec", [None, "0", "-5", "soon"])
def test_no_watchdog_without_a_valid_watchdog_usec(receiver, monkeypatch, usec):
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    notifier = Notifier.from_environment()
    assert notifier.watchdog_interval is None
    assert not notifier.watchdog_due(0.0)
    notifier.watchdog(0.0)
    assert nothing_pending(receiver)
    assert "WATCHDOG_USEC" not in os.environ


def test_abstract_address(monkeypatch):
    name = f"lsca-test-notify-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = Notifier.from_environment()
        assert notifier.enabled
        notifier.ready("abstract")
        assert sock.recv(4096) == b"READY=1\nSTATUS=abstract"
        notifier.stopping()
        assert sock.recv(4096) == b"STOPPING=1"
    assert "NOTIFY_SOCKET" not in os.environ


def exercise(notifier):
    notifier.ready("status")
    notifier.status("status")
    notifier.reloading()
    notifier.ready_again()
    notifier.watchdog(0.0)
    notifier.watchdog(1000.0)
    notifier.watchdog()
    notifier.stopping()


def test_without_notify_socket_everything_is_a_no_op(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    notifier = Notifier.from_environment()
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert not notifier.watchdog_due(0.0)
    exercise(notifier)
    assert "WATCHDOG_USEC" not in os.environ


def test_missing_notify_socket_does_not_raise(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "no-such-socket"))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    notifier = Notifier.from_environment()
    assert notifier.enabled
    with caplog.at_level("DEBUG", logger="lsca.supervisor.systemd"):
        exercise(notifier)
    failures = [r for r in caplog.records if r.name == "lsca.supervisor.systemd"]
    assert failures and all(r.levelname == "DEBUG" for r in failures)
    assert "No such file or directory" in failures[0].getMessage()


def test_notify_socket_nobody_listens_on_does_not_raise(tmp_path, monkeypatch):
    path = str(tmp_path / "dead")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.close()            # the name stays, nobody receives: ECONNREFUSED
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    exercise(Notifier.from_environment())


def test_unit_file_verifies():
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    result = subprocess.run([analyze, "verify", UNIT], capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # verify exits 0 after mere warnings (unknown key, bad value: "ignoring"); none may concern our unit.
    ours = [line for line in output.splitlines() if "lsca-supervisor" in line]
    assert ours == [], output


def test_unit_file_settings():
    """The choices the supervisor relies on, in case an edit drops one."""
    with open(UNIT) as f:
        settings = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    for expected in ("Type=notify", "NotifyAccess=main", "WatchdogSec=30",
                     "ExecStart=/usr/bin/env lsca-supervisor --socket /run/lsca/supervisor.sock",
                     "ExecReload=/bin/kill -HUP $MAINPID", "KillMode=mixed", "KillSignal=SIGTERM",
                     "TimeoutStopSec=30", "Restart=on-failure", "RuntimeDirectory=lsca",
                     "RuntimeDirectoryMode=0755", "WantedBy=multi-user.target"):
        assert expected in settings
    keys = {line.split("=", 1)[0] for line in settings if "=" in line}
    for forbidden in ("ProtectProc", "ProcSubset", "CapabilityBoundingSet", "NoNewPrivileges",
                      "SystemCallFilter", "PrivateUsers", "ProtectSystem", "ProtectHome",
                      "PrivateTmp", "PrivateIPC", "RemoveIPC"):
        assert forbidden not in keys
