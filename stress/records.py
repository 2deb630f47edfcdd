"""The stress program's records: what a client writes and the checker reads back.

Every record is "R cid tid kind seq length payload crc\\n"; the payload derives from the
record's id, so any byte out of place is seen. Shared by the workload (which writes them)
and the checker (which finds them); imports nothing of lsca, as clients run it preloaded.
"""
import hashlib
import zlib

PIPE_BUF = 4096
PW_BLOCK = 512                          # pwrite records sit at multiples of this
BIG_MIN, BIG_MAX = 65537, 90000         # writes larger than a pipe
# Outcome codes of a write, as reported by a client.
OK, FAILED_EIO, FAILED_OTHER, SHORT = 1, 2, 3, 4
OUTCOME_NAMES = {OK: "ok", FAILED_EIO: "eio", FAILED_OTHER: "failed", SHORT: "short"}

# ---------------------------------------------------------------------------------------


def _payload(cid, tid, kind, seq, n):
    unit = hashlib.blake2b(b"%d.%d.%s.%d" % (cid, tid, kind, seq), digest_size=16).hexdigest().encode()
    return (unit * (n // len(unit) + 1))[:n]


def make_record(cid, tid, kind, seq, total):
    """A record of exactly `total` bytes ending in a newline; kind is one byte (b"A")."""
    head = b"R %d %d %s %d %d " % (cid, tid, kind, seq, total)
    plen = total - len(head) - 10          # " " + 8 hex digits + "\n"
    if plen < 1:
        raise ValueError("record too short")
    body = head + _payload(cid, tid, kind, seq, plen)
    return body + b" %08x\n" % zlib.crc32(body)


def _header(line):
    """(cid, tid, kind, seq, total) from the start of a line, or None."""
    parts = line.split(b" ", 6)
    if len(parts) < 6 or parts[0] != b"R" or len(parts[3]) != 1:
        return None
    try:
        return int(parts[1]), int(parts[2]), parts[3], int(parts[4]), int(parts[5])
    except ValueError:
        return None


def parse_record(line):
    """The id (cid, tid, kind, seq) of a whole valid record (line without its newline)."""
    h = _header(line)
    if h is None:
        return None
    cid, tid, kind, seq, total = h
    if total != len(line) + 1 or total > 1 << 20:
        return None
    try:
        if make_record(cid, tid, kind, seq, total)[:-1] != line:
            return None
    except ValueError:
        return None
    return cid, tid, kind, seq


def prefix_of(fragment):
    """If fragment is the beginning of a valid record, that record's id (else None)."""
    h = _header(fragment)
    if h is None:
        return None
    cid, tid, kind, seq, total = h
    if total > 1 << 20 or len(fragment) >= total:
        return None
    try:
        if make_record(cid, tid, kind, seq, total).startswith(fragment):
            return cid, tid, kind, seq
    except ValueError:
        pass
    return None


def expected_file(cid, tid, kind, seq):
    """The data file a record belongs in (by its kind: log, shared log, fork child, pwrite)."""
    if kind in b"AVDB":
        return f"c{cid}-t{tid}.log"
    if kind in b"SF":
        return "shared.log"
    if kind == b"G":
        return f"c{cid}-t{tid}-g{seq}.log"
    if kind == b"P":
        return f"c{cid}-t{tid}.pw"
    return None
