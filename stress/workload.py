#!/usr/bin/env python3
"""The stress program's client: one process, with the agent preloaded, whose threads run
generated operation mixes and report every write's outcome to the orchestrator.

    python workload.py --cid N --threads T --seed S --report-fd FD [--signals RATE]

run_stress.py starts it (from its snapshot of this directory). Each thread draws its mix
from a seeded random.Random: per thread, each operation's weight and the record sizes.
Operations: O_APPEND writes (write, writev, through a dup) of records to a per-thread log
and to a file all clients share, pwrite at record-aligned offsets and pread/lseek+read
back, fstat/stat/lstat, truncate, chmod, fsync, mkdir/open/rename/unlink/rmdir of scratch
names, pipe round trips (a read that blocks until another thread writes, a write larger
than PIPE_BUF), socketpair round trips, and fork (the child writes records and _exits).
Reports travel as JSON datagrams on the --report-fd socket. Imports nothing of lsca: the
program under test is the agent, not this code.
"""
import argparse
import collections
import errno
import json
import os
import random
import select
import signal
import socket
import sys
import threading
import time

from records import BIG_MAX, BIG_MIN, FAILED_EIO, FAILED_OTHER, OK, PIPE_BUF, PW_BLOCK, SHORT, make_record, parse_record

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


def build_parser():
    p = argparse.ArgumentParser(prog="workload.py", description="One client of the LSCA stress program "
                                "(started by run_stress.py with the agent preloaded).")
    p.add_argument("--cid", type=int, required=True, help="this client's id in the run")
    p.add_argument("--threads", type=int, default=3, metavar="T", help="threads (default: %(default)s)")
    p.add_argument("--seed", type=int, required=True, help="the run's seed")
    p.add_argument("--report-fd", type=int, required=True, metavar="FD",
                   help="the orchestrator's socket (SOCK_SEQPACKET) for reports")
    p.add_argument("--signals", type=float, default=0, metavar="RATE",
                   help="SIGUSR1 per second to every thread (default: %(default)s)")
    return p


if __name__ == "__main__":
    sys.exit(Client(build_parser().parse_args()).run())
