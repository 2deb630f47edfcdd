#!/usr/bin/env python3
"""LSCA stress program: many client processes and threads under one supervisor while
a fault injector kills and stops workers, clients and the supervisor.

    python stress/run_stress.py [--duration 60] [--workers 2] [--clients 4] [--threads 3]

K client processes x T threads run generated operation mixes with the agent preloaded
(LD_PRELOAD, LSCA_SOCKET): O_APPEND writes (write, writev, through a dup) of unique,
self-identifying records to a per-thread log and to a file all clients share, pwrite
at record-aligned offsets and pread/lseek+read back, fstat/stat/lstat, truncate,
chmod, fsync, mkdir/open/rename/unlink/rmdir of scratch names, pipe round trips
(including a read that blocks until another thread writes, and a write larger than
PIPE_BUF), socketpair round trips, and now and then fork (the child writes records,
opens a file of its own and _exits). The mixes are drawn from a seeded
`random.Random` (--seed): per thread, each operation's weight and the record sizes.
Hypothesis is not used: outside a test, `strategy.example()` cannot be seeded, and
@given with one example draws the simplest value first, so a plain seeded generator
gives reproducible *and* varied mixes.

Meanwhile, at random moments (a fault every 3-8 s, --faults at most) the injector
picks one of: SIGKILL a worker; SIGSTOP a worker for longer than --worker-timeout,
then SIGCONT it (a stopped worker cannot run, so it is not stuck: it must be the same
worker afterwards); make a worker's main thread spin without heartbeats (SIGUSR1 with
LSCA_WORKER_FAULT=stall: stuck, it must be aborted and replaced); SIGKILL a client (a new client with a new id
takes its place); SIGKILL the supervisor (then `lsca cleanup`, check that every SysV
object of that instance is gone, start a new supervisor on the same socket: clients
that were running fall back to native, clients started afterwards are served). The
first faults cover every kind once when the duration allows. Clients are also
retired and replaced now and then, so that new ones register all along.

Every record is "R cid tid kind seq length payload crc\\n"; the payload derives from
the id, so any byte out of place is seen. Clients report the outcome of every write
(returned its length, failed with EIO, failed otherwise) and a heartbeat per thread
over a socketpair; send(2) may itself be proxied, so a report whose send fails with
EIO is sent again and the orchestrator drops copies by the report's id (and "stop" is
just that socket becoming readable). At the end the checker reads every data file:

  writes lost        a write that returned its length whose record is not there
  writes duplicated  a record found more than once (a write that failed, or whose
                     client was killed before it reported, may appear at most once)
  records torn       a line (or pwrite block) that is not a whole, valid record in
                     its right place, unless it is the cut-off prefix of a write
                     whose outcome is unknown or failed (counted, not an error)
  phantom writes     a record of a thread that reported all its writes, never issued
  hangs              a thread without a completed call for --hang-timeout seconds, or a
                     client that does not exit within --exit-timeout when told to
  leaked SysV        LSCA objects of this run left after the supervisor's stop and
                     `lsca cleanup` (and after each supervisor kill + cleanup)
  leftover processes supervisors, workers or clients of this run still alive at the end
plus: unexpected errors (a call failing with anything but EIO, EIO on an idempotent
call of a client that never lost its supervisor and for which the supervisor did not
log answering EIO, a short write), read mismatches
(a read that does not return what was written, a file size outside what the
writes allow), faults the supervisor did not recover from (its worker count), client
crashes (other than EIO while the interpreter loads), shards not freed once every
client is gone. The exit status is 0 only when calls were completed, LSCA served
clients, and every one of these is 0.

--signals R additionally sends each client thread R SIGUSR1/s (a handler without
SA_RESTART, like Python's own), interrupting calls in flight.

A summary table goes to stdout (--json FILE writes it as JSON), progress lines to
stderr every 10 s. A hang is reported with the thread's kernel state, its native stack
(gdb, when installed), its shard's slots and the supervisor's worker table. The run
uses a copy of the installed lsca package (and of this program) taken at its start,
so a `pip install .` meanwhile cannot mix versions. The working directory (data files,
supervisor and client logs) is removed after a passing run unless --keep; it is kept
and named after a failure.
"""
import argparse
import collections
import errno
import hashlib
import json
import os
import random
import select
import signal
import socket
import sys
import threading
import time
import zlib

PIPE_BUF = 4096
PW_BLOCK = 512
BIG_MIN, BIG_MAX = 65537, 90000
FAULT_KINDS = ("worker kill", "worker stop", "worker stall", "client kill", "supervisor kill")
FAULT_WEIGHTS = (3, 1, 2, 3, 1)
# Calls the design retries on a new worker when the one executing them died: they may
# fail with EIO only when the supervisor itself is lost.
IDEMPOTENT = {"pread", "pwrite", "fstat", "stat", "lstat", "fsync", "fdatasync", "ftruncate",
              "truncate", "chmod", "lseek_set"}
# Outcome codes of a write, as reported by a client.
OK, FAILED_EIO, FAILED_OTHER, SHORT = 1, 2, 3, 4

# ---------------------------------------------------------------------------------------
# records
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
    if kind in b"AVDB":
        return f"c{cid}-t{tid}.log"
    if kind in b"SF":
        return "shared.log"
    if kind == b"G":
        return f"c{cid}-t{tid}-g{seq}.log"
    if kind == b"P":
        return f"c{cid}-t{tid}.pw"
    return None

# ---------------------------------------------------------------------------------------
# client mode (runs with the agent preloaded)
# ---------------------------------------------------------------------------------------


OPS = {  # name: base weight
    "append": 20, "writev": 5, "dup_write": 3, "big_write": 0.3, "shared": 15,
    "pwrite": 10, "pread_verify": 5, "lseek_read": 3, "stat": 8, "readback": 3,
    "paths": 4, "pipe": 5, "pipe_blocking": 1, "pipe_big": 0.5, "socket": 4,
    "truncate": 3, "fsync": 2, "reopen": 1, "fork": 0.25,
}


class ThreadWork:
    """One client thread: its files, its generated mix and what it reports."""

    def __init__(self, client, tid):
        self.client = client
        self.cid = client.cid
        self.tid = tid
        self.rng = random.Random(f"{client.seed}/{client.cid}/{tid}")
        names = list(OPS)
        # The generated mix: every operation's weight scaled by a factor of 0.2 .. 2.
        self.ops = [getattr(self, "op_" + n) for n in names]
        self.weights = [OPS[n] * self.rng.uniform(0.2, 2.0) for n in names]
        self.large_share = self.rng.uniform(0.05, 0.4)     # records of 300..4096 bytes
        self.calls = 0
        self.op = "start"
        self.native_tid = None
        self.results = collections.deque()  # (kind, seq, code)
        self.eio = collections.deque()      # (call, time)
        self.errors = collections.deque()   # (what, errno, text)
        self.mismatches = collections.deque()
        self.seq = 0
        self.pw = 0
        self.pw_ok = []
        self.scratch_n = 0
        self.finished = False
        self.crashed = None
        self.log_path = f"c{self.cid}-t{tid}.log"
        self.pw_path = f"c{self.cid}-t{tid}.pw"
        self.tr_path = f"c{self.cid}-t{tid}.tr"
        self.scratch = f"scratch/c{self.cid}-t{tid}"
        self.size_min = self.size_max = 0   # what the log's size may be, given the outcomes

    # ---- helpers ----

    def sys(self, name, fn, *args):
        """One call: counted when it returns, EIO noted with its time."""
        self.op = name
        try:
            return fn(*args)
        except OSError as e:
            if e.errno == errno.EIO:
                self.eio.append((name, round(time.time(), 3)))
            raise
        finally:
            self.calls += 1

    def unexpected(self, what, e):
        self.errors.append((what, getattr(e, "errno", 0) or 0, str(e)[:300]))

    def unless_eio(self, what, e):
        """EIO is a legitimate answer under faults (outcome unknown); any other errno is not."""
        if e.errno != errno.EIO:
            self.unexpected(what, e)

    def mismatch(self, text):
        self.mismatches.append(f"{time.time():.3f} {text}"[:400])

    def next_seq(self):
        self.seq += 1
        return self.seq

    def size(self):
        if self.rng.random() < self.large_share:
            return self.rng.randint(300, PIPE_BUF)
        return self.rng.randint(64, 300)

    def open_retry(self, path, flags, mode=0o644):
        """An open the thread cannot do without: EIO (the call in flight when a worker or
        the supervisor died) is retried."""
        for _ in range(20):
            try:
                return self.sys("open", os.open, path, flags, mode)
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
        raise OSError(errno.EIO, f"open {path}: EIO 20 times")

    def write_record(self, kind, fd, total, how="write", log=False):
        """Write one record; report its outcome. Returns the record if it was written whole."""
        seq = self.next_seq()
        rec = make_record(self.cid, self.tid, kind, seq, total)
        try:
            if how == "writev":
                cut1 = self.rng.randint(1, len(rec) - 1)
                cut2 = self.rng.randint(cut1, len(rec))
                n = self.sys("writev", os.writev, fd, [rec[:cut1], rec[cut1:cut2], rec[cut2:]])
            else:
                n = self.sys(how, os.write, fd, rec)
        except OSError as e:
            eio = e.errno == errno.EIO
            self.results.append((kind.decode(), seq, FAILED_EIO if eio else FAILED_OTHER))
            if log and eio:
                self.size_max += len(rec)
            if not eio:
                self.unexpected(f"{how} {kind.decode()}", e)
            return None
        if n != len(rec):
            self.results.append((kind.decode(), seq, SHORT))
            self.unexpected(f"short {how} {kind.decode()}", OSError(0, f"{n} of {len(rec)} bytes"))
        else:
            self.results.append((kind.decode(), seq, OK))
        if log:
            self.size_min += n
            self.size_max += n
        return rec if n == len(rec) else None

    # ---- the loop ----

    def setup(self):
        for _ in range(20):
            try:
                self.sys("mkdir", os.makedirs, self.scratch, 0o755, True)
                break
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
        self.log_fd = self.open_retry(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self.shared_fd = self.open_retry("shared.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self.pw_fd = self.open_retry(self.pw_path, os.O_RDWR | os.O_CREAT)
        self.tr_fd = self.open_retry(self.tr_path, os.O_RDWR | os.O_CREAT)

    def main(self):
        self.native_tid = threading.get_native_id()
        try:
            self.setup()
            stop = self.client.stop_work
            ops, weights, rng = self.ops, self.weights, self.rng
            while not stop.is_set():
                for op in rng.choices(ops, weights, k=16):
                    op()
                    if stop.is_set():
                        break
            for fd in (self.log_fd, self.shared_fd, self.pw_fd, self.tr_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass
        except BaseException as e:
            import traceback
            self.crashed = f"{type(e).__name__}: {e} in {self.op}\n{traceback.format_exc()[-1500:]}"
        finally:
            self.op = "finished"
            self.finished = True
            # Exit only once nobody signals this thread any more (pthread_kill needs it alive).
            self.client.signals_stopped.wait()

    # ---- operations ----

    def op_append(self):
        self.write_record(b"A", self.log_fd, self.size(), log=True)

    def op_writev(self):
        self.write_record(b"V", self.log_fd, self.size(), how="writev", log=True)

    def op_dup_write(self):
        try:
            fd = self.sys("dup", os.dup, self.log_fd)
        except OSError as e:
            self.unless_eio("dup", e)
            return
        try:
            self.write_record(b"D", fd, self.size(), log=True)
        finally:
            self.sys("close", os.close, fd)

    def op_big_write(self):
        # Larger than a slot's inline data: the worker moves it by address.
        self.write_record(b"B", self.log_fd, self.rng.randint(BIG_MIN, BIG_MAX), log=True)

    def op_shared(self):
        self.write_record(b"S", self.shared_fd, self.size())

    def op_pwrite(self):
        idx = self.pw
        self.pw += 1
        rec = make_record(self.cid, self.tid, b"P", idx, PW_BLOCK)
        try:
            n = self.sys("pwrite", os.pwrite, self.pw_fd, rec, idx * PW_BLOCK)
        except OSError as e:
            self.results.append(("P", idx, FAILED_EIO if e.errno == errno.EIO else FAILED_OTHER))
            self.unless_eio("pwrite", e)
            return
        self.results.append(("P", idx, OK if n == PW_BLOCK else SHORT))
        if n != PW_BLOCK:
            self.unexpected("short pwrite", OSError(0, f"{n} of {PW_BLOCK}"))
            return
        self.pw_ok.append(idx)
        self.verify_block(idx, "pread")

    def verify_block(self, idx, how):
        rec = make_record(self.cid, self.tid, b"P", idx, PW_BLOCK)
        try:
            if how == "pread":
                got = self.sys("pread", os.pread, self.pw_fd, PW_BLOCK, idx * PW_BLOCK)
            else:
                self.sys("lseek_set", os.lseek, self.pw_fd, idx * PW_BLOCK, os.SEEK_SET)
                got = self.sys("read", os.read, self.pw_fd, PW_BLOCK)
        except OSError as e:
            self.unless_eio(how, e)
            return
        if got != rec:
            self.mismatch(f"{how} of block {idx} of {self.pw_path}: got {got[:60]!r}... ({len(got)} bytes)")

    def op_pread_verify(self):
        if self.pw_ok:
            self.verify_block(self.rng.choice(self.pw_ok), "pread")

    def op_lseek_read(self):
        if self.pw_ok:
            self.verify_block(self.rng.choice(self.pw_ok), "lseek_read")

    def op_stat(self):
        try:
            st1 = self.sys("fstat", os.fstat, self.log_fd)
            st2 = self.sys("stat", os.stat, self.log_path)
            st3 = self.sys("lstat", os.lstat, os.path.abspath(self.log_path))
        except OSError as e:
            self.unless_eio("stat", e)
            return
        if not st1.st_ino == st2.st_ino == st3.st_ino:
            self.mismatch(f"fstat/stat/lstat of {self.log_path}: inodes {st1.st_ino} {st2.st_ino} {st3.st_ino}")
        for how, st in (("fstat", st1), ("stat", st2), ("lstat", st3)):
            if not self.size_min <= st.st_size <= self.size_max:
                self.mismatch(f"{how} {self.log_path}: size {st.st_size} outside [{self.size_min}, "
                              f"{self.size_max}] allowed by the writes' outcomes")
                break
        absent = f"{self.scratch}/absent-{self.rng.randrange(1 << 30)}"
        try:
            self.sys("stat", os.stat, absent)
            self.mismatch(f"stat {absent}: exists")
        except FileNotFoundError:
            pass
        except OSError as e:
            self.unless_eio("stat absent", e)

    def op_readback(self):
        """Open the log anew, read its tail: every whole line is a valid record of ours."""
        try:
            fd = self.sys("open", os.open, self.log_path, os.O_RDONLY)
        except OSError as e:
            self.unless_eio("open log O_RDONLY", e)
            return
        try:
            size = self.sys("fstat", os.fstat, fd).st_size
            start = max(0, size - 8192)
            self.sys("lseek_set", os.lseek, fd, start, os.SEEK_SET)
            data = self.sys("read", os.read, fd, 8192)
        except OSError as e:
            self.unless_eio("readback", e)
            return
        finally:
            self.sys("close", os.close, fd)
        if len(data) < min(8192, size - start):
            self.mismatch(f"read {self.log_path} at {start}: {len(data)} bytes, size {size}")
            return
        lines = data.split(b"\n")
        lines.pop()                         # after the last newline: nothing, or a partial line
        if start > 0 and lines:
            lines.pop(0)                    # may start mid-record
        for line in lines:
            rid = parse_record(line)
            if rid is None or rid[:2] != (self.cid, self.tid) or rid[2] not in b"AVDB":
                self.mismatch(f"read {self.log_path} at {start}: not our record: {line[:80]!r}")
                return

    def op_paths(self):
        n = self.scratch_n
        self.scratch_n += 1
        d = f"{self.scratch}/d{n}"
        f, g = f"{d}/f", f"{d}/g"
        data = os.urandom(self.rng.randint(1, 3000))
        fd = -1
        step = "mkdir"
        try:
            self.sys("mkdir", os.mkdir, d, 0o755)
            step = "mkdir again"
            try:
                self.sys("mkdir", os.mkdir, d, 0o755)
                self.mismatch(f"mkdir {d} twice succeeded")
            except FileExistsError:
                pass
            step = "open O_EXCL"
            fd = self.sys("open", os.open, f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            step = "write"
            n_written = self.sys("write", os.write, fd, data)
            step = "close"
            self.sys("close", os.close, fd)
            fd = -1
            step = "rename"
            self.sys("rename", os.rename, f, g)
            step = "stat"
            st = self.sys("stat", os.stat, g)
            if st.st_size != n_written:
                self.mismatch(f"stat {g}: size {st.st_size}, wrote {n_written}")
            try:
                self.sys("stat", os.stat, f)
                self.mismatch(f"stat {f}: still there after rename")
            except FileNotFoundError:
                pass
            step = "unlink"
            self.sys("unlink", os.unlink, g)
            step = "rmdir"
            self.sys("rmdir", os.rmdir, d)
            return
        except OSError as e:
            self.unless_eio(f"paths: {step}", e)
        # After a failure the names are in an unknown state: clean what is there.
        for fn, arg in ((os.close, fd), (os.unlink, f), (os.unlink, g), (os.rmdir, d)):
            if arg == -1:
                continue
            try:
                self.sys("cleanup", fn, arg)
            except OSError:
                pass

    def op_pipe(self):
        try:
            r, w = self.sys("pipe", os.pipe)
        except OSError as e:
            self.unless_eio("pipe", e)
            return
        try:
            data = os.urandom(self.rng.randint(1, PIPE_BUF))
            try:
                n = self.sys("write", os.write, w, data)
                got = self.sys("read", os.read, r, len(data))
            except OSError as e:
                self.unless_eio("pipe write/read", e)
                return
            if n != len(data) or got != data:
                self.mismatch(f"pipe: wrote {n} of {len(data)}, read back {len(got)} bytes, equal {got == data}")
        finally:
            self.sys("close", os.close, r)
            self.sys("close", os.close, w)

    def op_pipe_blocking(self):
        """A read of an empty pipe that blocks until another thread writes."""
        try:
            r, w = self.sys("pipe", os.pipe)
        except OSError as e:
            self.unless_eio("pipe", e)
            return
        data = os.urandom(self.rng.randint(1, 512))
        delay = self.rng.uniform(0.001, 0.02)
        outcome = []

        def writer():
            try:
                time.sleep(delay)
                outcome.append(os.write(w, data))
            except OSError as e:
                outcome.append(e)
            finally:
                os.close(w)             # a failed write: the reader sees end of file

        t = threading.Thread(target=writer)
        t.start()
        try:
            got = self.sys("read", os.read, r, len(data))
        except OSError as e:
            got = None
            self.unless_eio("blocking pipe read", e)
        t.join()
        self.calls += 1
        self.sys("close", os.close, r)
        wrote = outcome[0] if outcome else None
        if isinstance(wrote, OSError):
            if wrote.errno != errno.EIO:
                self.unexpected("pipe write (other thread)", wrote)
            return
        if got is not None and got != data:
            self.mismatch(f"blocking pipe read: {len(got)} bytes, expected {len(data)}, equal {got == data}")

    def op_pipe_big(self):
        """A write larger than PIPE_BUF to a pipe (it blocks until a reader drains it)."""
        try:
            r, w = self.sys("pipe", os.pipe)
        except OSError as e:
            self.unless_eio("pipe", e)
            return
        data = os.urandom(self.rng.randint(70000, 200000))
        got = []
        failed = []

        def reader():
            try:
                while True:
                    chunk = os.read(r, 65536)
                    if not chunk:
                        return
                    got.append(chunk)
            except OSError as e:
                failed.append(e)
            finally:
                os.close(r)

        t = threading.Thread(target=reader)
        t.start()
        sent, write_error = 0, None
        try:
            while sent < len(data):
                sent += self.sys("write", os.write, w, data[sent:])
        except OSError as e:
            sent, write_error = None, e
        finally:
            self.sys("close", os.close, w)
        t.join()
        if failed:
            # The reader failed (EIO) and closed its end: the writer's EPIPE follows from it.
            if failed[0].errno != errno.EIO:
                self.unexpected("big pipe read (other thread)", failed[0])
            if write_error is not None and write_error.errno not in (errno.EIO, errno.EPIPE):
                self.unexpected("big pipe write", write_error)
            return
        if write_error is not None and write_error.errno != errno.EIO:
            self.unexpected("big pipe write", write_error)
        if sent is not None and b"".join(got) != data:
            self.mismatch(f"big pipe: read {sum(map(len, got))} bytes of {len(data)}, equal {b''.join(got) == data}")

    def op_socket(self):
        try:
            a, b = self.sys("socketpair", socket.socketpair)
        except OSError as e:
            self.unless_eio("socketpair", e)
            return
        try:
            data = os.urandom(self.rng.randint(1, 2048))
            n = self.sys("write", os.write, a.fileno(), data)
            got = self.sys("read", os.read, b.fileno(), len(data))
            if n != len(data) or got != data:
                self.mismatch(f"socketpair: wrote {n} of {len(data)}, read {len(got)}, equal {got == data}")
                return
            n = self.sys("send", b.send, data)
            got = self.sys("recv", a.recv, len(data))
            if n != len(data) or got != data:
                self.mismatch(f"socketpair: sent {n} of {len(data)}, received {len(got)}, equal {got == data}")
        except OSError as e:
            self.unless_eio("socket write/read/send/recv", e)
        finally:
            a.close()
            b.close()

    def op_truncate(self):
        try:
            size = self.rng.randrange(0, 1 << 20)
            self.sys("ftruncate", os.ftruncate, self.tr_fd, size)
            st = self.sys("fstat", os.fstat, self.tr_fd)
            if st.st_size != size:
                self.mismatch(f"ftruncate {self.tr_path} to {size}: fstat says {st.st_size}")
            size = self.rng.randrange(0, 1 << 16)
            self.sys("truncate", os.truncate, self.tr_path, size)
            mode = self.rng.choice((0o600, 0o640, 0o644))
            self.sys("chmod", os.chmod, self.tr_path, mode)
            st = self.sys("stat", os.stat, self.tr_path)
            if st.st_size != size or st.st_mode & 0o777 != mode:
                self.mismatch(f"truncate/chmod {self.tr_path} to {size}/{mode:o}: stat says "
                              f"{st.st_size}/{st.st_mode & 0o777:o}")
            self.sys("fdatasync", os.fdatasync, self.tr_fd)
        except OSError as e:
            self.unless_eio("truncate", e)

    def op_fsync(self):
        try:
            self.sys("fsync", os.fsync, self.log_fd)
        except OSError as e:
            self.unless_eio("fsync", e)

    def op_reopen(self):
        self.sys("close", os.close, self.log_fd)
        self.log_fd = self.open_retry(self.log_path, os.O_WRONLY | os.O_APPEND)

    def op_fork(self):
        seqs = [self.next_seq() for _ in range(3)]
        gseq = self.next_seq()
        try:
            pid = self.sys("fork", os.fork)
        except OSError as e:
            self.unexpected("fork", e)
            return
        if pid == 0:
            self.fork_child(seqs, gseq)     # never returns
        self.op = "waitpid"
        _, status = os.waitpid(pid, 0)
        self.calls += 1
        if status != 0:
            self.unexpected("fork child", OSError(0, f"child {pid} ended with status {status:#x}"))

    def fork_child(self, seqs, gseq):
        """In the child: a few writes, a file of its own, one report, _exit. No locks
        (another thread may have held one at the fork)."""
        code = 0
        try:
            res, eio, errs = [], [], []

            def outcome(kind, seq, fn, *args):
                try:
                    fn(*args)
                    res.append((kind, seq, OK))
                except OSError as e:
                    res.append((kind, seq, FAILED_EIO if e.errno == errno.EIO else FAILED_OTHER))
                    (eio if e.errno == errno.EIO else errs).append(("fork child write", e.errno))

            for s in seqs:
                rec = make_record(self.cid, self.tid, b"F", s, 100 + s % 900)
                outcome("F", s, os.write, self.shared_fd, rec)
            path = f"c{self.cid}-t{self.tid}-g{gseq}.log"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            except OSError as e:
                res.append(("G", gseq, FAILED_EIO if e.errno == errno.EIO else FAILED_OTHER))
                (eio if e.errno == errno.EIO else errs).append(("fork child open", e.errno))
                fd = -1
            if fd >= 0:
                outcome("G", gseq, os.write, fd, make_record(self.cid, self.tid, b"G", gseq, 200))
                os.close(fd)
            now = round(time.time(), 3)
            data = json.dumps({
                "t": "f", "id": f"{self.cid}/{self.tid}/f{gseq}", "c": self.cid, "th": self.tid, "pid": os.getpid(),
                "res": res, "eio": [(what, now) for what, _ in eio],
                "err": [(what, e, os.strerror(e)) for what, e in errs]}).encode()
            for _ in range(50):
                try:
                    self.client.sock.send(data)     # may be proxied: EIO is retried, the id dedups
                    break
                except OSError as e:
                    if e.errno != errno.EIO:
                        raise
        except BaseException:
            code = 3
        os._exit(code)


class Client:
    def __init__(self, args):
        self.cid = args.cid
        self.seed = args.seed
        self.sock = socket.socket(fileno=args.report_fd)
        self.stop_work = threading.Event()
        self.signals_stopped = threading.Event()
        self.threads = [ThreadWork(self, t) for t in range(args.threads)]
        self.signal_rate = args.signals
        self.signals_sent = 0
        self.sent = 0
        self.send_eio = 0

    def send(self, message):
        """Reports travel on a socket whose send(2) may itself be proxied: a send that fails
        with EIO may or may not have happened, so it is sent again and the orchestrator
        drops a second copy (by the message's id)."""
        self.sent += 1
        message["id"] = f"{self.cid}/{self.sent}"
        message["seio"] = self.send_eio
        data = json.dumps(message, separators=(",", ":")).encode()
        for _ in range(50):
            try:
                self.sock.send(data)
                return
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
                self.send_eio += 1
        raise OSError(errno.EIO, "report: send failed with EIO 50 times")

    def flush(self, tw, final=False):
        """One report per thread: its outcomes since the last one, and a heartbeat."""
        res = []
        while tw.results:
            res.append(tw.results.popleft())
        eio = [tw.eio.popleft() for _ in range(len(tw.eio))]
        err = [tw.errors.popleft() for _ in range(len(tw.errors))]
        mm = [tw.mismatches.popleft() for _ in range(len(tw.mismatches))]
        chunks = [res[i:i + 2000] for i in range(0, len(res), 2000)] or [[]]
        for i, chunk in enumerate(chunks):
            msg = {"t": "r", "c": self.cid, "th": tw.tid, "n": tw.calls, "op": tw.op,
                   "ntid": tw.native_tid, "res": chunk}
            if i == 0:
                msg.update(eio=eio, err=err, mm=mm)
            self.send(msg)
        if final:
            self.send({"t": "done", "c": self.cid, "th": tw.tid, "n": tw.calls, "seq": tw.seq,
                       "pw": tw.pw, "crashed": tw.crashed})

    def signaller(self):
        rng = random.Random(f"{self.seed}/{self.cid}/signals")
        rate = self.signal_rate * len(self.threads)
        while not self.stop_work.is_set():
            time.sleep(rng.expovariate(rate))
            tw = rng.choice(self.threads)
            if not tw.finished and tw.thread.ident:
                signal.pthread_kill(tw.thread.ident, signal.SIGUSR1)
                self.signals_sent += 1

    def run(self):
        if self.signal_rate > 0:
            signal.signal(signal.SIGUSR1, lambda signum, frame: None)   # no SA_RESTART
        for tw in self.threads:
            tw.thread = threading.Thread(target=tw.main, name=f"t{tw.tid}", daemon=True)
            tw.thread.start()
        sig_thread = None
        if self.signal_rate > 0:
            sig_thread = threading.Thread(target=self.signaller, daemon=True)
            sig_thread.start()
        else:
            self.signals_stopped.set()
        self.send({"t": "hello", "c": self.cid, "pid": os.getpid()})
        while not all(tw.finished for tw in self.threads):
            if self.stop_work.is_set():
                time.sleep(0.2)
            # Only the orchestrator writes to us, and only to say stop (or it closed its end):
            # readable means stop, nothing needs to be read (a proxied recv could fail).
            elif select.select([self.sock], [], [], 0.5)[0]:
                self.stop_work.set()
            for tw in self.threads:
                self.flush(tw)
            if self.stop_work.is_set() and sig_thread is not None and not self.signals_stopped.is_set():
                sig_thread.join()
                self.signals_stopped.set()
        self.stop_work.set()
        if sig_thread is not None:
            sig_thread.join()
        self.signals_stopped.set()
        for tw in self.threads:
            tw.thread.join()
            self.flush(tw, final=True)
        self.send({"t": "bye", "c": self.cid, "signals": self.signals_sent})
        return 0


def client_main(args):
    return Client(args).run()

# ---------------------------------------------------------------------------------------
# the orchestrator
# ---------------------------------------------------------------------------------------


def describe_shard(address):
    """A shard's header and its slots in use, from the shared memory itself."""
    from lsca.abi import OP_NAMES, SLOTS, shard_header, shard_slot
    states = {0: "FREE", 1: "SUBMITTED", 2: "RUNNING", 3: "DONE"}
    h = shard_header(address)
    slots = []
    for i in range(SLOTS):
        s = shard_slot(address, i)
        if s.owner_tid or s.state:
            slots.append(f"slot {i} tid {s.owner_tid} {states.get(s.state, s.state)} {OP_NAMES.get(s.op, s.op)} "
                         f"sleeping {s.client_sleeping} cancel {s.cancel} status {s.status} result {s.result} "
                         f"err {s.err} seq {s.seq}")
    return (f"client pid {h.client_pid} dead {h.dead} worker {h.worker_id} worker_sleeping {h.worker_sleeping} "
            f"pending_mask {h.pending_mask:#x} cancel_mask {h.cancel_mask:#x} next_seq {h.next_seq}: "
            + (", ".join(slots) or "no slot in use"))


def log(text):
    print(text, file=sys.stderr, flush=True)


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


class ThreadState:
    def __init__(self, now):
        self.calls = 0
        self.last_progress = now
        self.op = "start"
        self.ntid = None
        self.done = None
        self.hung = False
        self.resumed = None


class ClientProc:
    def __init__(self, cid, proc, sock, errpath, started):
        self.cid = cid
        self.proc = proc
        self.sock = sock
        self.errpath = errpath
        self.started = started
        self.ended = None
        self.state = "running"          # running, stopping, killed, exited
        self.deadline = None
        self.threads = {}
        self.rotate_at = None
        self.supervisor = None          # index of the supervisor it started under
        self.signals = 0
        self.send_eio = 0


class SupervisorProc:
    def __init__(self, index, proc, logpath):
        self.index = index
        self.proc = proc
        self.pid = proc.pid
        self.logpath = logpath
        self.killed = False

    def workers(self, include_stopped=False):
        import psutil
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        out = []
        for c in children:
            try:
                status = c.status()
            except psutil.NoSuchProcess:
                continue
            if status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                continue
            if status == psutil.STATUS_STOPPED and not include_stopped:
                continue
            out.append(c.pid)
        return sorted(out)


class Stress:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(f"{args.seed}/orchestrator")
        self.token = f"{os.getpid()}-{time.time_ns()}"
        if args.workdir:
            self.workdir = os.path.abspath(args.workdir)
            os.makedirs(self.workdir, exist_ok=True)
        else:
            import tempfile
            self.workdir = tempfile.mkdtemp(prefix="lsca-stress-")
        self.data = os.path.join(self.workdir, "data")
        self.state_dir = os.path.join(self.workdir, "state")
        os.makedirs(os.path.join(self.data, "scratch"), exist_ok=True)
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)   # the registry refuses a directory others may read
        self.socket_path = os.path.join(self.workdir, "sup.sock")
        self.snapshot_lsca()
        self.selector = None
        self.clients = {}
        self.next_cid = 1
        self.sup = None
        self.supervisors = []
        self.ledgers = {}
        self.seen_ids = set()
        self.resumed = []
        self.fork_pids = {}
        self.listed_by = {}             # (kind, id) -> pid of the supervisor whose registry listed it
        self.calls_done = 0             # of clients whose threads are done (and ended ones)
        self.eio = 0
        self.eio_events = []            # (cid, call, time)
        self.unexpected = []            # details
        self.mismatches = []
        self.faults = collections.Counter()
        self.fault_log = []
        self.sup_kill_times = []
        self.pending_cont = []          # (when, pid, supervisor index)
        self.recovery = []              # (deadline, supervisor index, victim, fault number, kept)
        self.unrecovered = []
        self.leaked_after_kill = []
        self.hangs = []
        self.crashes = []
        self.crashes_eio = []
        self.attrib_shm = set()
        self.attrib_sem = set()
        self.worker_pids = set()
        self.max_shards = 0
        self.shards_now = 0
        self.start = None

    def snapshot_lsca(self):
        """Copy the installed lsca package (Python, cffi module, agent library) and this
        program into the working directory and use those copies for the whole run: a
        `pip install .` (or an edit) meanwhile must neither mix versions (ABI) nor rewrite
        a library that running clients have mapped."""
        import importlib.util
        import shutil
        spec = importlib.util.find_spec("lsca")
        if spec is None or not spec.origin:
            raise RuntimeError("the lsca package is not installed (pip install . in the repository)")
        self.libdir = os.path.join(self.workdir, "lib")
        shutil.copytree(os.path.dirname(spec.origin), os.path.join(self.libdir, "lsca"),
                        ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        sys.path.insert(0, self.libdir)
        # Clients run this program's copy: all of a run's clients are the same code.
        self.client_program = os.path.join(self.libdir, "run_stress.py")
        shutil.copyfile(os.path.abspath(__file__), self.client_program)
        self.agent = os.path.join(self.libdir, "lsca", "liblsca_agent.so")
        if not os.path.isfile(self.agent):
            raise RuntimeError(f"no agent library in the installed package ({spec.origin})")

    def lsca_env(self, **extra):
        """Environment of our supervisors and of lsca cleanup: the snapshot, our registry."""
        from lsca.launch import clean_env      # the orchestrator's own imports: clients import no lsca
        env = clean_env()
        env["PYTHONPATH"] = os.pathsep.join([self.libdir] + [p for p in [env.get("PYTHONPATH")] if p])
        env["LSCA_STATE_DIR"] = self.state_dir
        env.update(extra)
        return env

    # ---- processes ----

    def start_supervisor(self):
        import subprocess
        index = len(self.supervisors)
        logpath = os.path.join(self.workdir, f"supervisor-{index}.log")
        env = self.lsca_env(LSCA_STRESS_RUN=self.token, LSCA_WORKER_FAULT="stall")
        from lsca.launch import SupervisorStartError, start_supervisor
        with open(logpath, "ab") as logf:
            try:
                proc = start_supervisor(self.socket_path, ["--workers", str(self.args.workers), "--worker-timeout",
                                                           str(self.args.worker_timeout), "--log-level", "INFO"],
                                        env=env, pause=self.pump, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
            except SupervisorStartError as e:
                raise RuntimeError(f"{e}; see {logpath}") from None
        sup = SupervisorProc(index, proc, logpath)
        self.supervisors.append(sup)
        deadline = time.monotonic() + 20
        # Its workers must be there before the clients come.
        while len(sup.workers()) < self.args.workers and time.monotonic() < deadline:
            self.pump(0.02)
        self.sup = sup
        self.poll_registry()
        return sup

    def launch_client(self):
        import subprocess
        cid = self.next_cid
        self.next_cid += 1
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        from lsca.launch import clean_env
        env = clean_env()
        env.update(LD_PRELOAD=self.agent, LSCA_SOCKET=self.socket_path, LSCA_STRESS_RUN=self.token,
                   PYTHONDONTWRITEBYTECODE="1")
        errpath = os.path.join(self.workdir, f"client-{cid}.err")
        with open(errpath, "wb") as errf:
            proc = subprocess.Popen(
                [sys.executable, self.client_program, "--client", "--cid", str(cid),
                 "--threads", str(self.args.threads), "--seed", str(self.args.seed),
                 "--report-fd", str(theirs.fileno()), "--signals", str(self.args.signals)],
                cwd=self.data, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=errf, pass_fds=[theirs.fileno()])
        theirs.close()
        now = time.monotonic()
        c = ClientProc(cid, proc, ours, errpath, now)
        c.supervisor = self.sup.index if self.sup else None
        c.rotate_at = now + self.rng.uniform(15, 40)
        for t in range(self.args.threads):
            c.threads[t] = ThreadState(now)
        self.clients[cid] = c
        self.selector.register(ours, 1, c)
        return c

    def live_clients(self):
        return [c for c in self.clients.values() if c.state == "running"]

    # ---- the event pump ----

    def pump(self, timeout):
        for key, _ in self.selector.select(timeout):
            self.drain(key.data)
        self.reap()

    def drain(self, c):
        while True:
            try:
                data = c.sock.recv(1 << 18)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.selector.unregister(c.sock)
                return
            self.on_message(c, json.loads(data))

    def on_message(self, c, m):
        t = m.get("t")
        now = time.monotonic()
        if "id" in m:
            if m["id"] in self.seen_ids:
                return                  # a report sent again after its send said EIO
            self.seen_ids.add(m["id"])
        if m.get("seio", 0) > c.send_eio:
            self.eio += m["seio"] - c.send_eio
            c.send_eio = m["seio"]
        if t == "f":
            self.fork_pids[m.get("pid")] = (m["c"], m["th"])
        if t in ("r", "f"):
            key = (m["c"], m["th"])
            for kind, seq, code in m.get("res", ()):
                led = self.ledger(m["c"], m["th"], kind)
                led.report(kind, seq, code)
            for call, when in m.get("eio", ()):
                self.eio += 1
                self.eio_events.append((m["c"], call, when))
            for what, err, text in m.get("err", ()):
                self.unexpected.append(f"client {key[0]} thread {key[1]}: {what}: errno {err} {text}")
            for text in m.get("mm", ()):
                self.mismatches.append(f"client {key[0]} thread {key[1]}: {text}")
            if t == "r":
                ts = c.threads.get(m["th"])
                if ts is not None:
                    if m["n"] > ts.calls:
                        ts.calls = m["n"]
                        ts.last_progress = now
                        if ts.hung and not ts.resumed:
                            ts.resumed = now
                            self.resumed.append(f"client {c.cid} thread {m['th']} resumed at "
                                                f"t={now - self.start:.1f} s (last fault before: "
                                                f"{self.last_fault_before(now)})")
                    ts.op = m["op"]
                    ts.ntid = m.get("ntid")
        elif t == "done":
            ts = c.threads.get(m["th"])
            if ts is not None:
                ts.done = m
                ts.calls = max(ts.calls, m["n"])
                if m.get("crashed"):
                    self.unexpected.append(f"client {c.cid} thread {m['th']} crashed: {m['crashed']}")
        elif t == "bye":
            c.signals = m.get("signals", 0)

    def ledger(self, cid, tid, kind):
        key = (cid, tid, kind == "P" or kind == b"P")
        led = self.ledgers.get(key)
        if led is None:
            led = self.ledgers[key] = Ledger()
        return led

    def reap(self):
        for c in list(self.clients.values()):
            if c.state == "exited" or c.proc.poll() is None:
                continue
            c.ended = time.monotonic()
            previous, c.state = c.state, "exited"
            if previous == "killed":
                continue
            if previous == "stopping" and c.proc.returncode == 0:
                continue
            try:
                with open(c.errpath, "rb") as f:
                    tail = f.read()[-3000:].decode(errors="replace")
            except OSError:
                tail = ""
            what = f"client {c.cid} (pid {c.proc.pid}) exited with {c.proc.returncode} while {previous}: {tail.strip()[-1500:]}"
            started_ok = any(ts.calls for ts in c.threads.values())
            if "[Errno 5]" in tail and not started_ok:
                self.crashes_eio.append(what)  # EIO while the interpreter loaded: a legitimate outcome
            else:
                self.crashes.append(what)
            if previous == "running" and not self.ending:
                self.launch_client()

    def total_calls(self):
        return sum(ts.calls for c in self.clients.values() for ts in c.threads.values())

    # ---- registry, attribution ----

    def poll_registry(self):
        """Remember every object our supervisors list (attributable to this run)."""
        from lsca import ipc
        from lsca.abi import is_lsca_key
        shards = 0
        # Registries list semaphore sets; a supervisor's segments are found by their creator pid.
        segments_by_creator = {}
        for row in ipc._table("shm"):
            if is_lsca_key(row["key"] & 0xFFFFFFFF):
                segments_by_creator.setdefault(row["cpid"], []).append(row["shmid"])
        for name in os.listdir(self.state_dir):
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.state_dir, name)) as f:
                    state = json.load(f)
            except (OSError, ValueError):
                continue
            segments = segments_by_creator.get(state.get("pid"), [])
            listed = {"shm": state.get("shm", []) + segments, "sem": state.get("sem", [])}
            self.attrib_shm.update(listed["shm"])
            self.attrib_sem.update(listed["sem"])
            for kind in ("shm", "sem"):
                for ident in listed[kind]:
                    self.listed_by[(kind, ident)] = state.get("pid")
            if self.sup is not None and state.get("pid") == self.sup.pid:
                shards = max(0, len(listed["shm"]) - 1)     # less the worker table
        self.shards_now = shards
        self.max_shards = max(self.max_shards, shards)
        if self.sup is not None:
            self.worker_pids.update(self.sup.workers(include_stopped=True))

    def registry_of(self, sup):
        try:
            with open(os.path.join(self.state_dir, f"{sup.pid}.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def our_objects(self):
        """LSCA SysV objects present now that this run made (listed by our registries, or
        a segment created by one of our supervisors)."""
        from lsca import ipc
        present = ipc.lsca_objects()
        sup_pids = {s.pid for s in self.supervisors}
        cpid = {row["shmid"]: row.get("cpid") for row in ipc._table("shm")}
        shm = sorted(i for i in present["shm"] if i in self.attrib_shm or cpid.get(i) in sup_pids)
        sem = sorted(i for i in present["sem"] if i in self.attrib_sem)
        return {"shm": shm, "sem": sem}

    # ---- faults ----

    def inject(self, kind):
        now = time.monotonic()
        n = sum(self.faults.values()) + 1
        if kind in ("worker kill", "worker stop", "worker stall"):
            workers = self.sup.workers()
            if not workers:
                return None
            victim = self.rng.choice(workers)
            if kind == "worker kill":
                os.kill(victim, signal.SIGKILL)
                self.recovery.append((now + 15, self.sup.index, victim, n, False))
                end = now
            elif kind == "worker stall":
                os.kill(victim, signal.SIGUSR1)
                self.recovery.append((now + self.args.worker_timeout + 15, self.sup.index, victim, n, False))
                end = now
            else:
                os.kill(victim, signal.SIGSTOP)
                cont = now + self.args.worker_timeout + self.rng.uniform(1, 2)
                self.pending_cont.append((cont, victim, self.sup.index))
                self.recovery.append((cont, self.sup.index, victim, n, True))
                end = cont
            target = f"worker pid {victim}"
        elif kind == "client kill":
            candidates = [c for c in self.live_clients() if now - c.started > 1.0]
            if not candidates:
                return None
            c = self.rng.choice(candidates)
            c.proc.kill()
            c.state = "killed"
            c.ended = now
            self.launch_client()
            target = f"client {c.cid} pid {c.proc.pid}"
            end = now
        else:
            target = f"supervisor pid {self.sup.pid}"
            self.kill_supervisor()
            end = time.monotonic()
        self.faults[kind] += 1
        self.fault_log.append({"t": round(now - self.start, 2), "kind": kind, "target": target})
        log(f"[{now - self.start:6.1f}s] fault {n}: {kind} ({target})")
        return end

    def kill_supervisor(self):
        import subprocess
        from lsca import ipc
        sup = self.sup
        self.worker_pids.update(sup.workers(include_stopped=True))
        os.kill(sup.pid, signal.SIGKILL)
        sup.proc.wait()
        sup.killed = True
        self.sup_kill_times.append(time.monotonic())
        state = self.registry_of(sup) or {"shm": [], "sem": []}
        self.attrib_shm.update(state["shm"])
        self.attrib_sem.update(state["sem"])
        for kind in ("shm", "sem"):
            for ident in state[kind]:
                self.listed_by[(kind, ident)] = sup.pid
        out = subprocess.run([sys.executable, "-m", "lsca.cli", "cleanup"], env=self.lsca_env(),
                             capture_output=True, timeout=60)
        if out.returncode != 0:
            self.unexpected.append(f"lsca cleanup after killing supervisor {sup.pid} exited with "
                                   f"{out.returncode}: {out.stderr.decode(errors='replace')[-500:]}")
        present = ipc.lsca_objects()
        left = {"shm": sorted(set(state["shm"]) & set(present["shm"])),
                "sem": sorted(set(state["sem"]) & set(present["sem"]))}
        if left["shm"] or left["sem"]:
            self.leaked_after_kill.append({"supervisor": sup.pid, "left": left,
                                           "cleanup": out.stdout.decode(errors="replace").strip()})
        self.recovery = [r for r in self.recovery if r[1] != sup.index]
        self.start_supervisor()

    def check_recovery(self, now):
        """A killed or stuck worker is replaced within its deadline; a stopped one is the same
        worker still when it is continued (its deadline)."""
        still = []
        for deadline, index, victim, n, kept in self.recovery:
            if self.sup is None or index != self.sup.index:
                continue
            workers = self.sup.workers()
            if kept:
                if now < deadline:
                    still.append((deadline, index, victim, n, kept))
                elif victim not in workers or len(workers) != self.args.workers:
                    self.unrecovered.append(f"fault {n}: worker {victim}, stopped, was not left alone: the "
                                            f"supervisor has workers {workers}")
                continue
            if victim not in workers and len(workers) == self.args.workers:
                continue
            if now > deadline:
                self.unrecovered.append(f"fault {n}: after losing worker {victim} the supervisor has "
                                        f"workers {workers} (expected {self.args.workers}, without {victim})")
                continue
            still.append((deadline, index, victim, n, kept))
        self.recovery = still

    def continue_stopped(self, now, everything=False):
        keep = []
        for when, pid, index in self.pending_cont:
            if everything or now >= when:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            else:
                keep.append((when, pid, index))
        self.pending_cont = keep

    def fault_plan(self):
        kinds = list(FAULT_KINDS)
        self.rng.shuffle(kinds)
        return kinds

    # ---- hangs ----

    def check_hangs(self, now):
        for c in self.clients.values():
            if c.state not in ("running", "stopping"):
                continue
            for tid, ts in c.threads.items():
                if ts.hung or ts.done or ts.op == "finished":
                    continue                # finished threads wait for their siblings
                if now - ts.last_progress > self.args.hang_timeout:
                    ts.hung = True
                    self.hangs.append(f"client {c.cid} (pid {c.proc.pid}) thread {tid}: no call completed "
                                      f"for {now - ts.last_progress:.0f} s (since t={ts.last_progress - self.start:.1f} s, "
                                      f"the last fault before: {self.last_fault_before(ts.last_progress)}), "
                                      f"last in {ts.op!r} [{self.diagnose(c, ts)}]")
                    log(f"HANG: {self.hangs[-1]}")

    def last_fault_before(self, t):
        before = [f for f in self.fault_log if f["t"] <= t - self.start + 1.0]
        return f"{before[-1]['kind']} at t={before[-1]['t']} s ({before[-1]['target']})" if before else "none"

    def diagnose(self, c, ts):
        """What the thread is doing, as the kernel sees it (and, for the first hangs, as
        gdb and the shared memory see it)."""
        self.diagnosed = getattr(self, "diagnosed", 0) + 1
        if self.diagnosed > 3:
            return "no more diagnostics after 3 hangs"
        out = []
        for tid in sorted(os.listdir(f"/proc/{c.proc.pid}/task")) if os.path.isdir(f"/proc/{c.proc.pid}/task") else []:
            if ts.ntid is not None and int(tid) != ts.ntid:
                continue
            try:
                with open(f"/proc/{c.proc.pid}/task/{tid}/wchan") as f:
                    wchan = f.read().strip()
                with open(f"/proc/{c.proc.pid}/task/{tid}/syscall") as f:
                    sysc = f.read().split()[0]
                with open(f"/proc/{c.proc.pid}/task/{tid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                out.append(f"task {tid} state {state} wchan {wchan} syscall {sysc}")
            except OSError:
                pass
        if self.sup is not None:
            out.append(f"supervisor {self.sup.pid} workers {self.sup.workers(include_stopped=True)}")
            out += self.dump_worker_table()
        out += self.dump_shards(c.proc.pid)
        out += self.backtrace(c.proc.pid, ts.ntid)
        try:
            import psutil
            children = [p.pid for p in psutil.Process(c.proc.pid).children()]
        except Exception:
            children = []
        for pid in children:                # a fork child the thread waits for
            out.append(f"child {pid}")
            out += self.dump_shards(pid)
            out += self.backtrace(pid, pid)
        return "; ".join(out)

    def dump_worker_table(self):
        """The supervisor's worker table: heartbeat age and the call each worker executes."""
        try:
            import sysv_ipc
            from lsca import ipc
            from lsca.abi import ffi, lib
            size = lib.LSCA_MAX_WORKERS * ffi.sizeof("struct lsca_worker_status")
        except (ImportError, AttributeError) as e:
            return [f"no worker table: {e}"]
        out = []
        for row in ipc._table("shm"):
            if row.get("size") != size or row.get("cpid") != self.sup.pid:
                continue
            try:
                shm = sysv_ipc.attach(row["shmid"], flags=sysv_ipc.SHM_RDONLY)
            except sysv_ipc.Error:
                continue
            try:
                rows = ffi.cast("struct lsca_worker_status *", shm.address)
                now = lib.lsca_now_ns()
                for i in range(self.args.workers + 2):
                    r = rows[i]
                    if r.pid:
                        out.append(f"worker {i} pid {r.pid} heartbeat {(now - r.heartbeat_ns) / 1e9:.1f} s ago "
                                   f"busy shard {r.busy_shard} slot {r.busy_slot}")
                        if i < self.args.workers:
                            out += [f"worker {i} " + b for b in self.backtrace(r.pid, None, frames=5)]
            finally:
                shm.detach()
        return out

    def dump_shards(self, pid):
        """The shard(s) of a client, as the supervisor's workers see them (also after a
        cleanup removed them: a removed segment can be attached while someone has it)."""
        try:
            import sysv_ipc
            from lsca import ipc
            from lsca.abi import SHARD_SIZE, shard_header
        except ImportError as e:
            return [f"no shard dump: {e}"]
        sup_pids = {s.pid for s in self.supervisors}
        out = []
        for row in ipc._table("shm"):
            if row.get("size") != SHARD_SIZE or row.get("cpid") not in sup_pids:
                continue
            try:
                shm = sysv_ipc.attach(row["shmid"], flags=sysv_ipc.SHM_RDONLY)
            except sysv_ipc.Error:
                continue
            try:
                if shard_header(shm.address).client_pid != pid:
                    continue
                out.append(f"shard shmid {row['shmid']} (key {row['key'] & 0xffffffff:#x}, created by "
                           f"supervisor {row['cpid']}, {row.get('nattch')} attached): "
                           + describe_shard(shm.address))
            finally:
                shm.detach()
        return out or [f"no shard of pid {pid} found"]

    def backtrace(self, pid, ntid, frames=12):
        """The native stack of thread ntid of pid, or of all its threads when ntid is None
        (gdb, when there is one)."""
        import shutil
        import subprocess
        if not shutil.which("gdb"):
            return []
        try:
            out = subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx", "-ex", "set pagination off",
                                  "-ex", "thread apply all bt 12"], capture_output=True, timeout=60).stdout
        except (subprocess.TimeoutExpired, OSError):
            return ["gdb timed out"]
        text = out.decode(errors="replace")
        # Only the block of the stuck thread ("Thread N (Thread 0x... (LWP tid) ...").
        found = []
        for block in text.split("\nThread ")[1:]:
            head = block.split("\n", 1)[0]
            if ntid is None or f"LWP {ntid})" in head:
                lines = [line.strip() for line in block.splitlines()[1:] if line.startswith("#")]
                lwp = head.split("LWP ")[1].split(")")[0] if "LWP " in head else "?"
                found.append(f"backtrace of LWP {lwp}: " + " | ".join(f[:160] for f in lines[:frames]))
        return found or ["backtrace: thread not found in gdb's output"]

    # ---- the run ----

    def run(self):
        import selectors
        from lsca import ipc
        args = self.args
        self.selector = selectors.DefaultSelector()
        self.ending = False
        self.objects_before = ipc.lsca_objects()
        self.start = time.monotonic()
        end = self.start + args.duration
        log(f"lsca stress: {args.duration:.0f} s, {args.workers} workers, {args.clients} clients x "
            f"{args.threads} threads, seed {args.seed}, working directory {self.workdir}")
        self.start_supervisor()
        for _ in range(args.clients):
            self.launch_client()
        max_faults = args.faults if args.faults is not None else int(args.duration // 3)
        plan = self.fault_plan()
        # Faults start after a few seconds; gaps shrink for short runs so that every kind fits.
        gap_max = min(args.fault_gap_max, max(args.fault_gap_min, (args.duration - 14) / len(FAULT_KINDS)))
        next_fault = self.start + self.rng.uniform(2, 4)
        next_progress = self.start + 10
        last_calls, last_t = 0, self.start
        while True:
            now = time.monotonic()
            if now >= end:
                break
            self.pump(0.1)
            now = time.monotonic()
            self.continue_stopped(now)
            self.check_recovery(now)
            self.check_hangs(now)
            self.poll_registry()
            if now >= next_fault and sum(self.faults.values()) < max_faults and now < end - 6:
                kind = plan.pop(0) if plan else self.rng.choices(FAULT_KINDS, FAULT_WEIGHTS)[0]
                done = self.inject(kind)
                if done is None:
                    plan.insert(0, kind)        # no target now: try again shortly
                    next_fault = now + 0.5
                else:
                    next_fault = done + self.rng.uniform(args.fault_gap_min, gap_max)
            for c in self.live_clients():
                if now >= c.rotate_at:
                    self.stop_client(c)
                    self.launch_client()
            self.check_stopping(now)
            if now >= next_progress:
                calls = self.total_calls()
                log(f"[{now - self.start:6.1f}s] calls {calls} ({(calls - last_calls) / (now - last_t):.0f}/s), "
                    f"faults {sum(self.faults.values())}, EIO {self.eio}, clients {len(self.live_clients())}, "
                    f"shards {self.shards_now}, workers {len(self.sup.workers())}")
                last_calls, last_t = calls, now
                next_progress += 10
        return self.finish()

    def check_stopping(self, now):
        """A client told to stop must exit in time; one that does not is hung (and killed)."""
        for c in self.clients.values():
            if c.state != "stopping" or now <= c.deadline:
                continue
            stuck = [tid for tid, ts in c.threads.items() if not ts.done]
            if not any(c.threads[t].hung for t in stuck):
                self.hangs.append(f"client {c.cid} (pid {c.proc.pid}) did not exit within "
                                  f"{self.args.exit_timeout:.0f} s of being told to stop; threads not done "
                                  f"{stuck}: {[c.threads[t].op for t in stuck]} "
                                  f"[{self.diagnose(c, ThreadState(0))}]")
                log(f"HANG: {self.hangs[-1]}")
            c.proc.kill()
            c.state = "killed"

    def stop_client(self, c):
        c.state = "stopping"
        c.deadline = time.monotonic() + self.args.exit_timeout
        try:
            c.sock.send(b'{"t":"stop"}')
        except OSError:
            pass

    def finish(self):
        import subprocess
        from lsca import ipc
        args = self.args
        self.ending = True
        t_end = time.monotonic()
        self.elapsed = t_end - self.start
        log(f"[{self.elapsed:6.1f}s] stopping: faults end, clients are told to stop")
        self.continue_stopped(t_end, everything=True)
        # The pool recovers from the last fault before the clients stop.
        deadline = time.monotonic() + 20
        while self.recovery and time.monotonic() < deadline:
            self.pump(0.1)
            self.check_recovery(time.monotonic())
        self.check_recovery(float("inf"))
        for c in self.live_clients():
            self.stop_client(c)
        while True:
            self.pump(0.1)
            now = time.monotonic()
            self.check_hangs(now)
            self.poll_registry()
            if not any(c.state == "stopping" for c in self.clients.values()):
                break
            self.check_stopping(now)
        # Last reports of fork children and the like.
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            self.pump(0.1)
        for c in self.clients.values():
            c.proc.wait()
        # Every client is gone: the supervisor must have freed every shard.
        deadline = time.monotonic() + 10
        while True:
            self.poll_registry()
            state = self.registry_of(self.sup)
            extra = max(0, len(state.get("shm", [])) - 1) if state else 0
            if extra == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.shards_not_freed = extra
        self.unfreed = self.shard_owners(state) if extra else []
        self.worker_pids.update(self.sup.workers(include_stopped=True))
        # A clean stop.
        self.sup.proc.send_signal(signal.SIGTERM)
        try:
            self.sup_status = self.sup.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.sup_status = "did not stop within 20 s of SIGTERM"
            self.sup.proc.kill()
            self.sup.proc.wait()
        cleanup = subprocess.run([sys.executable, "-m", "lsca.cli", "cleanup"], env=self.lsca_env(),
                                 capture_output=True, timeout=60)
        self.cleanup_status = cleanup.returncode
        self.leftover = self.leftover_processes()
        # Workers of killed supervisors leave on their own; give them a moment.
        deadline = time.monotonic() + 10
        while self.leftover and time.monotonic() < deadline:
            time.sleep(0.2)
            self.leftover = self.leftover_processes()
        for pid, _ in self.leftover:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        leaked = self.our_objects()
        self.leaked = leaked
        self.leaked_what = self.describe_objects(leaked)
        for shmid in leaked["shm"]:
            ipc.remove_shm(shmid)
        for semid in leaked["sem"]:
            ipc.remove_semaphores(semid)
        for c in self.clients.values():
            c.sock.close()
        log(f"checking the data files in {self.data}")
        self.check_files()
        return self.report()

    def describe_objects(self, objects):
        """What leaked objects were, before they are removed: creator, users, contents."""
        import sysv_ipc
        from lsca import ipc
        from lsca.abi import MAGIC, SHARD_SIZE, shard_header
        rows = {row["shmid"]: row for row in ipc._table("shm")}
        sup_pids = {s.pid: s.index for s in self.supervisors}
        out = []
        for shmid in objects["shm"]:
            row = rows.get(shmid, {})
            text = (f"shm {shmid}: size {row.get('size')}, created by pid {row.get('cpid')}"
                    f"{' (supervisor %d)' % sup_pids[row.get('cpid')] if row.get('cpid') in sup_pids else ''}, "
                    f"last used by pid {row.get('lpid')}, {row.get('nattch')} attached, listed by the registry "
                    f"of {self.listed_by.get(('shm', shmid), 'no supervisor of ours')}")
            try:
                shm = sysv_ipc.attach(shmid, flags=sysv_ipc.SHM_RDONLY)
                try:
                    if shm.size == SHARD_SIZE and shard_header(shm.address).magic == MAGIC:
                        text += "; " + describe_shard(shm.address)
                finally:
                    shm.detach()
            except sysv_ipc.Error as e:
                text += f"; cannot attach: {e}"
            out.append(text)
        for semid in objects["sem"]:
            out.append(f"sem {semid}: listed by the registry of "
                       f"{self.listed_by.get(('sem', semid), 'no supervisor of ours')}")
        return out

    def shard_owners(self, state):
        """Who the shards a supervisor still lists belong to, and whether they live."""
        import psutil
        import sysv_ipc
        from lsca.abi import MAGIC, SHARD_SIZE, shard_header
        out = []
        for shmid in state.get("shm", []):
            try:
                shm = sysv_ipc.attach(shmid, flags=sysv_ipc.SHM_RDONLY)
            except sysv_ipc.Error as e:
                out.append(f"shmid {shmid}: cannot attach: {e}")
                continue
            try:
                if shm.size != SHARD_SIZE or shard_header(shm.address).magic != MAGIC:
                    continue                # the worker table
                pid = shard_header(shm.address).client_pid
                text = describe_shard(shm.address)
            finally:
                shm.detach()
            try:
                p = psutil.Process(pid)
                who = f"alive ({p.status()}): {' '.join(p.cmdline())[:100]}"
            except psutil.Error:
                who = "gone"
            known = [f"client {c.cid} ({c.state})" for c in self.clients.values() if c.proc.pid == pid]
            if pid in self.fork_pids:
                known.append("fork child of client %d thread %d" % self.fork_pids[pid])
            out.append(f"shmid {shmid}: shard of pid {pid} ({', '.join(known) or 'not a client: a fork child?'}), "
                       f"{who}; {text}")
        return out

    def leftover_processes(self):
        import psutil
        out = []
        for p in psutil.process_iter(["pid", "cmdline", "status"]):
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            try:
                mine = p.environ().get("LSCA_STRESS_RUN") == self.token
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                mine = False
            try:
                cmd = " ".join(p.cmdline())[:120]
            except psutil.Error:
                continue
            # Every process of the run carries the token (workers inherit the supervisor's).
            if mine or (p.pid in self.worker_pids and "lsca" in cmd):
                out.append((p.pid, cmd))
        return out

    # ---- the checker ----

    def check_files(self):
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

        for fname in sorted(os.listdir(self.data)):
            path = os.path.join(self.data, fname)
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
        done = {}
        for c in self.clients.values():
            for tid, ts in c.threads.items():
                if ts.done and not ts.done.get("crashed"):
                    done[(c.cid, tid)] = ts.done
        self.lost, self.duplicated, self.phantom = [], [], []
        self.writes = collections.Counter()
        for (cid, tid, is_pw), led in self.ledgers.items():
            fin = done.get((cid, tid))
            for seq in range(len(led.outcome)):
                code, copies = led.outcome[seq], led.found[seq]
                if code == 0 and copies == 0:
                    continue
                kind = chr(led.kind[seq]) if led.kind[seq] else "?"
                self.writes[{OK: "ok", FAILED_EIO: "eio", FAILED_OTHER: "failed", SHORT: "short"}.get(code, "unknown")] += 1
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

    # ---- the summary ----

    def report(self):
        args = self.args
        # EIOs the supervisors say they gave (a call running when its worker died, an
        # idempotent one when its retry's worker died as well), per client pid.
        import re
        said_eio = collections.Counter()
        for sup in self.supervisors:
            try:
                with open(sup.logpath, errors="replace") as f:
                    for m in re.finditer(r"of pid (\d+) was executing when its worker died: EIO", f.read()):
                        said_eio[int(m.group(1))] += 1
            except OSError:
                pass
        unexpected_eio = []
        for cid, call, when in self.eio_events:
            if call.split(".")[0] not in IDEMPOTENT:
                continue
            c = self.clients.get(cid)
            started = c.started if c else 0
            if any(k >= started for k in self.sup_kill_times):
                continue                # its supervisor was lost: any call in flight fails with EIO
            if c is not None and said_eio[c.proc.pid] > 0:
                said_eio[c.proc.pid] -= 1
                continue
            unexpected_eio.append(f"client {cid}: {call} failed with EIO at {when}, its supervisor was never "
                                  f"lost and did not report answering EIO (an idempotent call is retried)")
        unexpected = self.unexpected + unexpected_eio
        leaked_n = len(self.leaked["shm"]) + len(self.leaked["sem"]) + sum(
            len(x["left"]["shm"]) + len(x["left"]["sem"]) for x in self.leaked_after_kill)
        calls = self.total_calls()
        faults_total = sum(self.faults.values())
        checks = {
            "writes lost": len(self.lost),
            "writes duplicated": len(self.duplicated),
            "records torn": len(self.torn),
            "phantom writes": len(self.phantom),
            "hangs": len(self.hangs),
            "leaked SysV objects": leaked_n,
            "leftover processes": len(self.leftover),
            "unexpected errors": len(unexpected),
            "read mismatches": len(self.mismatches),
            "unrecovered faults": len(self.unrecovered),
            "client crashes": len(self.crashes),
            "shards not freed": self.shards_not_freed,
        }
        problems = [k for k, v in checks.items() if v]
        if calls <= 0:
            problems.append("no call completed")
        if self.max_shards == 0:
            problems.append("no client was ever served by the supervisor")
        if self.sup_status != 0:
            problems.append(f"the supervisor's stop: {self.sup_status}")
        if self.cleanup_status != 0:
            problems.append(f"lsca cleanup exited with {self.cleanup_status}")
        passed = not problems
        kinds = ", ".join(f"{k} {self.faults[k]}" for k in FAULT_KINDS)
        lines = [
            f"duration {self.elapsed:.1f} s, workers {args.workers}, clients {args.clients} x {args.threads} threads"
            f", seed {args.seed}",
            f"{'calls completed':<21}{calls}",
            f"{'faults injected':<21}{faults_total}  ({kinds})",
            f"{'calls failed EIO':<21}{self.eio}",
            f"{'writes checked':<21}{sum(self.writes.values())}  (ok {self.writes['ok']}, EIO {self.writes['eio']}, "
            f"unknown {self.writes['unknown']}; cut off, outcome unknown {self.partial_unknown})",
        ]
        lines += [f"{k:<21}{v}" for k, v in checks.items()]
        lines.append(f"result: {'PASS' if passed else 'FAIL (' + ', '.join(problems) + ')'}")
        print("\n".join(lines), flush=True)
        details = {
            "lost": self.lost[:50], "duplicated": self.duplicated[:50], "torn": self.torn[:50],
            "phantom": self.phantom[:50], "hangs": self.hangs, "unexpected errors": unexpected[:50],
            "read mismatches": self.mismatches[:50], "unrecovered faults": self.unrecovered,
            "client crashes": self.crashes[:20], "client crashes (EIO at start)": self.crashes_eio[:20],
            "leaked objects": self.leaked_what, "leaked after supervisor kill": self.leaked_after_kill,
            "leftover processes": self.leftover, "shards not freed": self.unfreed, "faults": self.fault_log,
            "hung threads that resumed": self.resumed,
            "clients": [{"cid": c.cid, "pid": c.proc.pid, "start": round(c.started - self.start, 2),
                         "end": round(c.ended - self.start, 2) if c.ended else None, "state": c.state,
                         "exit": c.proc.returncode} for c in self.clients.values()],
            "supervisor stop": self.sup_status, "lsca cleanup": self.cleanup_status,
        }
        if not passed:
            for name, items in details.items():
                if items and name not in ("faults", "clients") and isinstance(items, list):
                    print(f"\n{name}:", file=sys.stderr)
                    for item in items[:20]:
                        print(f"  {item}", file=sys.stderr)
            print(f"\nworking directory kept: {self.workdir} (supervisor logs: "
                  f"{', '.join(os.path.basename(s.logpath) for s in self.supervisors)})", file=sys.stderr)
        summary = {
            "duration": round(self.elapsed, 1), "workers": args.workers, "clients": args.clients,
            "threads": args.threads, "seed": args.seed, "calls_completed": calls,
            "faults_injected": faults_total, "faults": {k: self.faults[k] for k in FAULT_KINDS},
            "calls_failed_eio": self.eio, "writes_checked": dict(self.writes),
            "writes_cut_off_outcome_unknown": self.partial_unknown,
            "clients_started": len(self.clients), "max_shards": self.max_shards,
            "signals_sent": sum(c.signals for c in self.clients.values()),
            **{k.replace(" ", "_").lower(): v for k, v in checks.items()},
            "result": "PASS" if passed else "FAIL", "problems": problems,
            "workdir": self.workdir, "details": details,
        }
        if args.json:
            with open(args.json, "w") as f:
                json.dump(summary, f, indent=2, default=str)
        if passed and not args.keep:
            import shutil
            shutil.rmtree(self.workdir, ignore_errors=True)
        return 0 if passed else 1


def build_parser():
    p = argparse.ArgumentParser(
        prog="run_stress.py",
        description="Stress LSCA: K client processes x T threads run generated mixes of file, pipe, "
                    "socket and path calls and fork under one supervisor with N workers, while faults "
                    "kill or stop workers, clients and the supervisor. Checks that no write is lost or "
                    "duplicated, no record torn, nothing hangs and no SysV object leaks; exits non-zero "
                    "if a check fails.",
        epilog="example: python stress/run_stress.py --duration 300 --workers 2 --clients 4")
    p.add_argument("--duration", type=float, default=60, metavar="SECONDS",
                   help="how long the clients run and faults are injected (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="supervisor workers (default: %(default)s)")
    p.add_argument("--clients", type=int, default=4, metavar="K",
                   help="client processes running at any time (default: %(default)s)")
    p.add_argument("--threads", type=int, default=3, metavar="T", help="threads per client (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="seed of every random choice (default: random)")
    p.add_argument("--faults", type=int, default=None, metavar="N",
                   help="inject at most N faults (default: one per 3 s of duration at most; 0: none)")
    p.add_argument("--fault-gap-min", type=float, default=3.0, metavar="S",
                   help="least time between faults (default: %(default)s)")
    p.add_argument("--fault-gap-max", type=float, default=8.0, metavar="S",
                   help="most time between faults (default: %(default)s)")
    p.add_argument("--worker-timeout", type=int, default=2, metavar="S",
                   help="the supervisor's --worker-timeout; stopped workers stay stopped longer "
                        "(default: %(default)s)")
    p.add_argument("--hang-timeout", type=float, default=30, metavar="S",
                   help="a thread without a completed call this long is hung (default: %(default)s)")
    p.add_argument("--exit-timeout", type=float, default=20, metavar="S",
                   help="a client told to stop must exit within this (default: %(default)s)")
    p.add_argument("--signals", type=float, default=0, metavar="RATE",
                   help="SIGUSR1 per second sent to every client thread, interrupting calls in "
                        "flight (default: %(default)s, none)")
    p.add_argument("--json", metavar="FILE", help="write the summary as JSON to FILE")
    p.add_argument("--workdir", metavar="DIR", help="working directory (default: a new one in /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the working directory after a passing run")
    # The client mode, run by the stress program itself with the agent preloaded.
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cid", type=int, help=argparse.SUPPRESS)
    p.add_argument("--report-fd", type=int, help=argparse.SUPPRESS)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.client:
        return client_main(args)
    if args.seed is None:
        args.seed = random.randrange(1 << 31)
    for name in ("workers", "clients", "threads"):
        if getattr(args, name) < 1:
            build_parser().error(f"--{name} must be at least 1")
    stress = Stress(args)
    try:
        return stress.run()
    except KeyboardInterrupt:
        log("interrupted")
        stress.emergency_stop()
        return 130
    except Exception:
        import traceback
        log(f"the stress program failed:\n{traceback.format_exc()}")
        stress.emergency_stop()
        return 2


def _emergency_stop(self):
    """Interrupted or failed: end every process of the run and remove its objects."""
    for c in self.clients.values():
        if c.proc.poll() is None:
            c.proc.kill()
    for s in self.supervisors:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)
            try:
                s.proc.wait(15)
            except Exception:
                s.proc.kill()
    for pid, _ in self.leftover_processes():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    import subprocess
    subprocess.run([sys.executable, "-m", "lsca.cli", "cleanup"], env=self.lsca_env(), capture_output=True,
                   timeout=60)
    log(f"working directory kept: {self.workdir}")


Stress.emergency_stop = _emergency_stop

if __name__ == "__main__":
    sys.exit(main())
