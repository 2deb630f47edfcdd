"""The reading end of a run's trace: workers send binary records (batches of struct
lsca_trace_record over a SOCK_SEQPACKET pair); a thread of lsca run formats them.
Formatting here, not in the workers, keeps it off the path of the calls."""
import os
import select
import socket
import threading

from lsca import trace
from lsca.abi import lib

RECV_SIZE = lib.LSCA_TRACE_BATCH + 65536
RCVBUF = 8 << 20            # room for bursts while this thread formats


class TraceReader:
    def __init__(self, out_fd, json_lines=False):
        self.out_fd = out_fd
        self.json_lines = json_lines
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            try:
                self.ours.setsockopt(socket.SOL_SOCKET, opt, RCVBUF)
                break
            except (OSError, TypeError):
                continue
        self.command_pid = None         # CMD's own lines are unlabelled, as with strace -f
        self.finishing = False
        self.until_closed = False
        self.lines = 0
        self.dropped = 0                # records the workers could not keep for us
        self.write_error = None
        self.thread = threading.Thread(target=self._run, name="lsca-trace", daemon=True)

    def sender_fd(self):
        """The end to hand the supervisor (lsca run closes its own copy once sent)."""
        return self.theirs.fileno()

    def start(self, command_pid=None):
        """Read from now on. command_pid: the process lsca run started; every other process's
        lines say [pid N] (None: no command to tell apart, no line is labelled)."""
        self.command_pid = command_pid
        self.thread.start()

    def close_sender(self):
        self.theirs.close()

    def finish(self, timeout=30.0, until_closed=False):
        """Take what is queued, then stop. until_closed: every sender closes its end once its
        records are sent (the session is over: the supervisor let go of it, and a worker lets
        go once a released client's last records went, which it sends only as fast as we take
        them): read to the end of the stream, up to timeout. Else stop once nothing comes."""
        self.until_closed = until_closed
        self.finishing = True
        if self.thread.ident is not None:       # never started when CMD could not be
            self.thread.join(timeout)
        self.ours.close()

    def _run(self):
        # At the program's own priority, not below it: workers never wait for us, and a backlog
        # we do not earn by reading is dropped, so a starved reader would lose records.
        while True:
            ready = select.select([self.ours], [], [], 0.05)[0]
            if not ready:
                if self.finishing and not self.until_closed:
                    return
                continue
            try:
                batch = self.ours.recv(RECV_SIZE)
            except OSError:
                return
            if not batch:
                return                  # every sender closed its end
            self._write(self.format_batch(batch))

    def format_batch(self, batch):
        out = []
        for call in trace.decode(batch):
            if "dropped" in call:
                self.dropped += call["dropped"]
                out.append(trace.format_dropped_json(call) if self.json_lines else trace.format_dropped(call))
                continue
            try:
                if self.json_lines:
                    line = trace.format_json(call, self.command_pid)
                else:
                    line = trace.format_call(call)
                    if self.command_pid is not None and call["pid"] != self.command_pid:
                        line = f"[pid {call['pid']:>6}] {line}"
            except Exception:           # a line we cannot format still says what it was
                line = f"{call.get('op', '?')}(...) = {call.get('result', '?')}"
            out.append(line)
        self.lines += len(out)
        return "".join(line + "\n" for line in out).encode()

    def _write(self, data):
        if self.write_error is not None:
            return
        try:
            for chunk in whole_line_chunks(data):
                while chunk:
                    chunk = chunk[os.write(self.out_fd, chunk):]
        except OSError as e:
            self.write_error = e        # said once at the end; the program goes on


def whole_line_chunks(data, limit=select.PIPE_BUF):
    """DATA cut at line ends into pieces of at most LIMIT bytes (a longer line is a piece alone):
    a pipe writes each such piece atomically, so the traced program's own writes to the same
    stderr land between trace lines, never inside one (as with strace)."""
    start = 0
    while start < len(data):
        end = start + limit
        if end < len(data):
            cut = data.rfind(b"\n", start, end)
            end = cut + 1 if cut >= start else data.find(b"\n", end) + 1 or len(data)
        yield data[start:end]
        start = end
