"""systemd integration: the sd_notify protocol and the service watchdog.

This module owns everything the supervisor says to systemd when it runs as a
``Type=notify`` service (``systemd/lsca-supervisor.service``): the notify
socket named by ``NOTIFY_SOCKET``, the watchdog settings ``WATCHDOG_USEC`` and
``WATCHDOG_PID``, and the messages themselves. It is the standard-library
equivalent of ``sd_notify(3)`` (after gunicorn's ``gunicorn/systemd.py``): one
datagram per message, ``KEY=VALUE`` lines, sent over an ``AF_UNIX``
``SOCK_DGRAM`` socket to a path, or to an abstract address when the name
starts with ``@``.

Contract with the supervisor's main loop (``arbiter.Supervisor``):

- ``notifier = Notifier.from_environment()`` once, at start, in the supervisor
  process and before any worker is forked. It reads and *removes*
  ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` from
  ``os.environ``, so neither workers nor anything they start inherit them.
- ``notifier.ready(f"serving on {socket} with {n} workers")`` once the
  registration socket listens and the workers are started.
- ``notifier.status(text)`` when something worth showing in
  ``systemctl status`` changes (worker count, ...).
- ``notifier.reloading()`` when a HUP reload begins and
  ``notifier.ready_again()`` when it is done.
- ``notifier.stopping()`` when the supervisor begins to stop.
- ``if notifier.watchdog_due(now): notifier.watchdog(now)`` on every loop
  iteration, ``now`` being ``time.monotonic()``. The loop wakes at least once a
  second, and a ping is due every ``WATCHDOG_USEC / 2``, so systemd hears from
  the supervisor well within its ``WatchdogSec``. Only the supervisor pings:
  a stuck main loop is what the watchdog is meant to catch.

Without ``NOTIFY_SOCKET`` (not started by systemd) every method is a no-op.
Sending never raises: a broken notify socket is logged at debug level and must
not stop the supervisor.
"""
import logging
import os
import socket
import time

log = logging.getLogger("lsca.supervisor.systemd")

# A notify socket that does not drain (a stalled manager) must not stall the main loop for long.
SEND_TIMEOUT_S = 1.0


class Notifier:
    """Messages from the supervisor to systemd over the ``NOTIFY_SOCKET`` datagram socket."""

    def __init__(self, address=None, watchdog_usec=None):
        """`address`: the notify socket's name as in ``NOTIFY_SOCKET`` (None: no systemd).
        `watchdog_usec`: the watchdog timeout in microseconds, when it applies to this process."""
        self.address = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec if self.address and watchdog_usec else None
        self._last_ping = None

    @classmethod
    def from_environment(cls, environ=None, pid=None):
        """Build from (and remove) NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID.

        The watchdog applies only when WATCHDOG_USEC is a positive integer and
        WATCHDOG_PID is unset or names this process (`pid`, default our pid)."""
        environ = os.environ if environ is None else environ
        pid = os.getpid() if pid is None else pid
        address = environ.pop("NOTIFY_SOCKET", None)
        usec = _positive_int(environ.pop("WATCHDOG_USEC", None))
        watchdog_pid = environ.pop("WATCHDOG_PID", None)
        if watchdog_pid is not None and _positive_int(watchdog_pid) != pid:
            usec = None     # the watchdog is some other process's business
        return cls(address, usec)

    @property
    def enabled(self):
        """True when there is a notify socket to talk to."""
        return self.address is not None

    @property
    def watchdog_interval(self):
        """Seconds between watchdog pings (half of WATCHDOG_USEC), or None without a watchdog."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    # ---- state changes ----

    def ready(self, status=None):
        """Startup is complete: the socket listens and the workers run."""
        self._send("READY=1", status=status)

    def status(self, text):
        """A one-line status for ``systemctl status``."""
        self._send(status=text)

    def reloading(self):
        """A reload (HUP) begins. MONOTONIC_USEC is what systemd >= 253 requires with
        Type=notify-reload; older managers and plain Type=notify ignore it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def ready_again(self, status=None):
        """A reload is done: ready again."""
        self._send("READY=1", status=status)

    def stopping(self):
        """The supervisor begins to stop (its workers, then itself)."""
        self._send("STOPPING=1")

    # ---- watchdog ----

    def watchdog_due(self, now):
        """Whether a watchdog ping is due at `now` (time.monotonic() seconds)."""
        interval = self.watchdog_interval
        if interval is None:
            return False
        return self._last_ping is None or now - self._last_ping >= interval

    def watchdog(self, now=None):
        """Ping the watchdog (WATCHDOG=1) if a ping is due at `now` (default: time.monotonic())."""
        now = time.monotonic() if now is None else now
        if not self.watchdog_due(now):
            return
        # Counted as sent even if sending fails: one debug line per interval, not per loop.
        self._last_ping = now
        self._send("WATCHDOG=1")

    # ---- the protocol ----

    def _send(self, *lines, status=None):
        if self.address is None:
            return
        if status is not None:
            # One message is KEY=VALUE lines: a newline in the text would end the value.
            lines += ("STATUS=" + " ".join(str(status).splitlines()),)
        message = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(SEND_TIMEOUT_S)
                sock.sendto(message, self.address)
        except OSError as e:
            log.debug("sd_notify %r to %r failed: %s", message, self.address, e)


def _socket_address(name):
    """NOTIFY_SOCKET as a socket address: '@name' is the abstract address '\\0name'."""
    address = os.fsencode(name)
    if address.startswith(b"@"):
        address = b"\0" + address[1:]
    return address


def _positive_int(text):
    try:
        value = int(text)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None
