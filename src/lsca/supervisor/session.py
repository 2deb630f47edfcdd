"""A session: the processes of one 'lsca run', their trace sink and their counts."""
import os
from collections import Counter


class Session:
    def __init__(self, token, trace_fd, conn, trace_mask=0, uid=0):
        self.token = token
        self.uid = uid                  # who opened it: only their processes (or root's) join
        self.trace_fd = trace_fd        # the stream workers send this session's records to
        self.trace_mask = trace_mask    # bit op: record that op's calls
        self.conn = conn                # the lsca run connection; None once it closed
        self.records = set()            # live clients of the session
        self.first_pid = None
        self.ending = False
        self.processes = 0
        self.proxied = Counter()
        self.passthrough = Counter()
        self.declined = Counter()
        self.waited = Counter()
        self.latency_ns = Counter()
        self.errors = Counter()

    def admits(self, client_uid):
        """A process's calls go only to its own user's sessions, or to root's."""
        return self.uid == 0 or self.uid == client_uid

    def add(self, record):
        if self.first_pid is None:
            self.first_pid = record.pid
        self.records.add(record)

    def account(self, record, proxied, passthrough, declined, latency_ns, errors, waited=None):
        """Fold a freed client's counts into the session."""
        self.records.discard(record)
        self.processes += 1
        self.proxied.update(proxied)
        self.passthrough.update(passthrough)
        self.declined.update(declined)
        self.waited.update(waited or {})
        self.latency_ns.update(latency_ns)
        self.errors.update(errors)

    def stats(self):
        return {"processes": self.processes, "running": len(self.records),
                "proxied": dict(self.proxied), "passthrough": dict(self.passthrough),
                "declined": dict(self.declined), "waited": dict(self.waited), "latency_ns": dict(self.latency_ns),
                "errors": dict(self.errors)}

    def close(self):
        if self.trace_fd is not None:
            os.close(self.trace_fd)
            self.trace_fd = None
