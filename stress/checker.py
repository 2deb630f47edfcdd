"""The stress program's checker: every record found in the data files against the outcome
its client reported (lost, duplicated, torn, phantom writes), and the EIOs the clients saw
against the faults that explain them."""
import collections
import os
import re

from lsca import ops
from records import FAILED_EIO, FAILED_OTHER, OK, OUTCOME_NAMES, PW_BLOCK, SHORT, expected_file, parse_record, prefix_of

# The op each of a client's calls (its names in reports) reaches the worker as.
CALL_OPS = {"pread": "pread", "pwrite": "pwrite", "fstat": "fstat", "stat": "fstatat", "lstat": "fstatat",
            "fsync": "fsync", "fdatasync": "fdatasync", "ftruncate": "ftruncate", "truncate": "truncate",
            "chmod": "fchmodat", "close": "close", "write": "write", "writev": "writev", "read": "read",
            "lseek_set": "lseek", "mkdir": "mkdirat", "unlink": "unlinkat", "rmdir": "unlinkat",
            "rename": "renameat2", "open": "openat", "dup": "dup", "pipe": "pipe2", "send": "sendto",
            "recv": "recvfrom"}
# Calls the design retries on a new worker when the one executing them died (the table's
# idempotent ops): they may fail with EIO only when the supervisor itself is lost.
RETRIED = frozenset(call for call, op in CALL_OPS.items() if ops.BY_NAME[op].code in ops.IDEMPOTENT)


class Ledger:
    """Outcome and number of copies found of every record of one thread (one seq space)."""
    __slots__ = ("outcome", "found", "kind")

    def __init__(self):
        self.outcome = bytearray()
        self.found = bytearray()
        self.kind = bytearray()

    def _room(self, seq):
        if seq >= len(self.outcome):
            more = seq + 4096 - len(self.outcome)
            self.outcome.extend(bytes(more))
            self.found.extend(bytes(more))
            self.kind.extend(bytes(more))

    def report(self, kind, seq, code):
        self._room(seq)
        if self.outcome[seq] == 0:
            self.outcome[seq] = code
            self.kind[seq] = ord(kind)

    def saw(self, kind, seq):
        self._room(seq)
        if not self.kind[seq]:
            self.kind[seq] = ord(kind)
        if self.found[seq] < 255:
            self.found[seq] += 1


class Checker:
    """The ledgers of every thread's writes, filled from the clients' reports and then from
    the data files."""

    def __init__(self):
        self.ledgers = {}

    def ledger(self, cid, tid, kind):
        key = (cid, tid, kind == "P" or kind == b"P")     # pwrite records have a seq space of their own
        led = self.ledgers.get(key)
        if led is None:
            led = self.ledgers[key] = Ledger()
        return led

    def check_files(self, data_dir, finished):
        """Read every data file; finished: {(cid, tid): its done report} of the threads that
        reported all their writes."""
        self.torn = []
        self.partial_unknown = 0
        found_any = 0

        def identify(fragment, where):
            rid = prefix_of(fragment)
            if rid is not None:
                cid, tid, kind, seq = rid
                led = self.ledger(cid, tid, kind)
                led._room(seq)
                if led.outcome[seq] != OK:
                    self.partial_unknown += 1      # a write cut off in a killed process, outcome not success
                    return
            self.torn.append(f"{where}: {fragment[:100]!r}{'...' if len(fragment) > 100 else ''} "
                             f"({len(fragment)} bytes)")

        def saw(rid, fname, where):
            nonlocal found_any
            cid, tid, kind, seq = rid
            if expected_file(cid, tid, kind, seq) != fname:
                self.torn.append(f"{where}: record {rid} in the wrong file")
                return
            self.ledger(cid, tid, kind).saw(kind, seq)
            found_any += 1

        for fname in sorted(os.listdir(data_dir)):
            path = os.path.join(data_dir, fname)
            if fname.endswith(".pw"):
                with open(path, "rb") as f:
                    data = f.read()
                for idx in range(0, len(data) // PW_BLOCK + (1 if len(data) % PW_BLOCK else 0)):
                    block = data[idx * PW_BLOCK:(idx + 1) * PW_BLOCK]
                    if not block.strip(b"\0"):
                        continue
                    where = f"{fname} block {idx}"
                    rid = parse_record(block[:-1]) if block.endswith(b"\n") else None
                    if rid is None:
                        identify(block.rstrip(b"\0"), where)
                    elif rid[2] != b"P" or rid[3] != idx:
                        self.torn.append(f"{where}: record {rid} at the wrong offset")
                    else:
                        saw(rid, fname, where)
            elif fname.endswith(".log"):
                offset = 0
                with open(path, "rb") as f:
                    rest = b""
                    while True:
                        chunk = f.read(1 << 24)
                        if not chunk:
                            break
                        lines = (rest + chunk).split(b"\n")
                        rest = lines.pop()
                        for line in lines:
                            where = f"{fname} offset {offset}"
                            offset += len(line) + 1
                            rid = parse_record(line)
                            if rid is not None:
                                saw(rid, fname, where)
                                continue
                            # A cut-off record glued to the next one: find the whole record at the end.
                            pos = line.rfind(b"R ")
                            while pos > 0:
                                rid = parse_record(line[pos:])
                                if rid is not None:
                                    break
                                pos = line.rfind(b"R ", 0, pos)
                            if pos > 0 and rid is not None:
                                saw(rid, fname, where)
                                identify(line[:pos], where)
                            else:
                                identify(line, where)
                    if rest:
                        identify(rest, f"{fname} offset {offset} (end of file)")
        self.records_found = found_any
        # Outcomes against copies.
        self.lost, self.duplicated, self.phantom = [], [], []
        self.writes = collections.Counter()
        for (cid, tid, is_pw), led in self.ledgers.items():
            fin = finished.get((cid, tid))
            for seq in range(len(led.outcome)):
                code, copies = led.outcome[seq], led.found[seq]
                if code == 0 and copies == 0:
                    continue
                kind = chr(led.kind[seq]) if led.kind[seq] else "?"
                self.writes[OUTCOME_NAMES.get(code, "unknown")] += 1
                rid = (cid, tid, "P" if is_pw else kind, seq)
                if code == OK and copies == 0:
                    self.lost.append(f"record {rid} (write returned success) not found")
                elif copies > 1:
                    outcome = {OK: "success", FAILED_EIO: "EIO", FAILED_OTHER: "an error", SHORT: "a short count"}.get(code, "no report")
                    self.duplicated.append(f"record {rid} found {copies} times (its write returned {outcome})")
                elif code == 0 and copies and fin is not None and kind not in "FG":
                    # The thread reported every write it issued (fork children report their own,
                    # and may have lost their report with their parent).
                    self.phantom.append(f"record {rid} found but its thread never issued that write")



def unexplained_eio(eio_events, clients, supervisor_logs, sup_kill_times):
    """EIOs of retried calls that no fault explains: eio_events are (cid, call, time); a
    supervisor's log says each EIO it answered (a call running when its worker died, a
    retried one when its retry's worker died as well)."""
    said_eio = collections.Counter()
    for path in supervisor_logs:
        try:
            with open(path, errors="replace") as f:
                for m in re.finditer(r"of pid (\d+) was executing when its worker died: EIO", f.read()):
                    said_eio[int(m.group(1))] += 1
        except OSError:
            pass
    out = []
    for cid, call, when in eio_events:
        if call.split(".")[0] not in RETRIED:
            continue
        c = clients.get(cid)
        started = c.started if c else 0
        if any(k >= started for k in sup_kill_times):
            continue                # its supervisor was lost: any call in flight fails with EIO
        if c is not None and said_eio[c.proc.pid] > 0:
            said_eio[c.proc.pid] -= 1
            continue
        out.append(f"client {cid}: {call} failed with EIO at {when}, its supervisor was never "
                   f"lost and did not report answering EIO (an idempotent call is retried)")
    return out
