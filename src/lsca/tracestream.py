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
        self.first_pid = None
        self.finishing = False
        self.lines = 0
        self.write_error = None
        self.thread = threading.Thread(target=self._run, name="lsca-trace", daemon=True)

    def sender_fd(self):
        """The end to hand the supervisor (lsca run closes its own copy once sent)."""
        return self.theirs.fileno()

    def start(self):
        self.thread.start()

    def close_sender(self):
        self.theirs.close()

    def finish(self, timeout=30.0):
        """Everything the workers recorded was sent (they flush before releasing a client):
        take what is queued, then stop."""
        self.finishing = True
        self.thread.join(timeout)
        self.ours.close()

    def _run(self):
        # Formatting takes only CPU nobody else wants: while the program is busy its records
        # wait in memory (the workers' buffers, this socket), and the lines follow after.
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass
        while True:
            ready = select.select([self.ours], [], [], 0.05)[0]
            if not ready:
                if self.finishing:
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
            if self.first_pid is None:
                self.first_pid = call["pid"]
            try:
                if self.json_lines:
                    line = trace.format_json(call)
                else:
                    line = trace.format_call(call)
                    if call["pid"] != self.first_pid:
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
            while data:
                data = data[os.write(self.out_fd, data):]
        except OSError as e:
            self.write_error = e        # said once at the end; the program goes on
