"""A trace nobody reads, a descriptor channel nobody reads: no worker waits for either.

Workers send trace records and new descriptors only without waiting. Records a reader does
not take in time are kept within bounds, then dropped and counted (lsca stats, and one line
in the trace where they would have been); descriptors a client does not take fail that
client's call. Meanwhile the same worker serves everyone else and is never replaced."""
import json
import os
import re
import select
import socket
import subprocess
import sys
import time
from importlib import resources

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lsca.abi import HEADER_SIZE, ffi, lib
from lsca.runner import SessionClient
from lsca.tracestream import TraceReader, whole_line_chunks
from conftest import PROGRAMS, clean_env, parse_trace, running_supervisor, wait_until, workers_of

PY = sys.executable
SERVED_WITHIN_S = 10            # a 2,000-call dd takes ~0.1 s; a stalled worker took a minute
WORKER_TIMEOUT_S = "5"          # a worker stuck this long would be replaced: the pids would change
FLOOD_WRITES = 20_000           # ~3 MiB of records: more than an unread trace may hold (LSCA_TRACE_UNEARNED)
READER_STALL_S = 3
ALL_OPS = (1 << 64) - 1
DROPPED_LINE = re.compile(r"^lsca: (\d+) trace records of pid (\d+) dropped \(the trace reader fell behind\)$", re.M)
RECORD_SIZE = ffi.sizeof("struct lsca_trace_record")
# status=none: dd's closing summary would share the trace's stream, and dd writes its last
# line and that line's newline apart: a trace line may then land inside it (as with strace).
DD = ["dd", "if=/dev/zero", "of=/dev/null", "bs=1", "status=none"]

# Writes to /dev/null, says ready, waits for its stdin to close.
FLOOD = """
import os, sys
fd = os.open("/dev/null", os.O_WRONLY)
for _ in range(int(sys.argv[1])):
    os.write(fd, b"x")
os.write(1, b"ready\\n")
os.read(0, 1)
"""

# Registers by hand (programs/fake_client.py), never reads its descriptor channel and opens
# /dev/null through its shard until a call fails; prints how many succeeded and the errno.
UNREAD_CHANNEL = """
import importlib.util, json, sys
from lsca.abi import lib
spec = importlib.util.spec_from_file_location("fake_client", sys.argv[2])
fake = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fake)
shm, shard, header, chan = fake.attach(sys.argv[1])
for n in range(100000):
    _status, result, err = fake.call(shm, 0, lib.LSCA_OP_OPENAT, [(1 << 64) - 100, 0, 0], b"/dev/null\\0")
    if result < 0:
        break
print(json.dumps({"opened": n, "result": result, "errno": err}), flush=True)
"""


@pytest.fixture(scope="module")
def lone():
    """A supervisor with one worker: the stalled client and the others share it."""
    with running_supervisor(workers=1, extra=["--worker-timeout", WORKER_TIMEOUT_S]) as sup:
        assert wait_until(lambda: len(workers_of(sup)) == 1)
        yield sup


def lsca(sup, *args, timeout=60):
    env = clean_env()
    env["LSCA_SOCKET"] = sup.socket
    return subprocess.run([PY, "-m", "lsca.cli", *args], env=env, capture_output=True, timeout=timeout)


def assert_served(sup, tmp_path):
    """Another user's 2,000-call dd completes at once and the worker counted its calls."""
    stats_file = tmp_path / f"dd-{os.urandom(4).hex()}.json"
    proc = lsca(sup, "run", "--stats-file", str(stats_file), "--", *DD, "count=2000", timeout=SERVED_WITHIN_S)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(stats_file.read_text())
    # count=2000 bs=1 from /dev/zero to /dev/null: 2000 reads and writes, none of which waits.
    assert (stats["proxied"].get("read"), stats["proxied"].get("write")) == (2000, 2000), stats


def read_line(proc, timeout=120):
    assert select.select([proc.stdout], [], [], timeout)[0], "the client said nothing"
    return proc.stdout.readline()


def stop_reader(reader):
    if reader.finishing:
        return
    if reader.thread.ident is None:
        reader.ours.close()                     # never started
    else:
        reader.finish(timeout=1.0)


def end_process(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def test_a_trace_nobody_reads_stalls_nobody(lone, tmp_path):
    workers = workers_of(lone)
    out_fd = os.open(tmp_path / "trace", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    reader = TraceReader(out_fd)                # not started: nobody reads the session's trace
    session = SessionClient(lone.socket, trace_fd=reader.sender_fd(), trace_mask=ALL_OPS)
    reader.close_sender()
    flood = subprocess.Popen([PY, "-c", FLOOD, str(FLOOD_WRITES)], env=lone.client_env(LSCA_SESSION=session.token),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert read_line(flood) == b"ready\n"
        mine = next(c for c in lone.stats()["clients"] if c["pid"] == flood.pid)
        assert mine["trace_dropped"] > 0        # past its backlog, the worker dropped instead of waiting

        assert_served(lone, tmp_path)           # while the flood's records are stuck
        flood.stdin.close()
        assert flood.wait(SERVED_WITHIN_S) == 0
        # Released without waiting for the reader: its records wait among the worker's leftovers.
        assert wait_until(lambda: all(c["pid"] != flood.pid for c in lone.stats()["clients"]))
        assert_served(lone, tmp_path)
        assert workers_of(lone) == workers      # nobody stalled the worker long enough to be replaced

        proc = lsca(lone, "stats", "--socket", lone.socket, "--interval", "0", "--json")
        assert proc.returncode == 0, proc.stderr
        dropped = json.loads(proc.stdout)["totals"]["trace_dropped"]
        assert dropped >= mine["trace_dropped"]
        table = lsca(lone, "stats", "--socket", lone.socket, "--interval", "0").stdout.decode()
        assert table.splitlines()[-1].endswith(f"; {dropped} trace records dropped")

        # The reader starts late: what was kept reaches it, and a line says how much did not.
        reader.start()
        session.close()                         # the supervisor lets go of the trace end
        reader.finish(timeout=120, until_closed=True)
        assert not reader.thread.is_alive()     # the worker let go too once it had sent the rest
        text = (tmp_path / "trace").read_text()
        lines = DROPPED_LINE.findall(text)
        assert lines and {int(pid) for _n, pid in lines} == {flood.pid}
        assert sum(int(n) for n, _pid in lines) == reader.dropped == dropped
        writes = len(re.findall(r'^write\(\d+, "x", 1\) = 1$', text, re.M))
        assert 0 < writes < FLOOD_WRITES and writes + dropped >= FLOOD_WRITES
    finally:
        end_process(flood)
        session.close()
        stop_reader(reader)
        os.close(out_fd)


@pytest.mark.parametrize("count, stall_s", [(2_500, READER_STALL_S), (100_000, READER_STALL_S), (100_000, 0)])
def test_a_slow_reader_gets_every_record_or_a_line_saying_how_many_not(supervisor, tmp_path, count, stall_s):
    stats_file = tmp_path / "stats.json"
    env = clean_env()
    env["LSCA_SOCKET"] = supervisor.socket
    run = subprocess.Popen([PY, "-m", "lsca.cli", "run", "--trace", "--stats-file", str(stats_file), "--", *DD,
                            f"count={count}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(stall_s)                     # the reader cannot write its lines: it falls behind
        _out, err = run.communicate(timeout=120)
    finally:
        end_process(run)
    assert run.returncode == 0, err[-2000:]
    text = err.decode()
    calls = parse_trace(text.splitlines())
    dropped = sum(int(n) for n, _pid in DROPPED_LINE.findall(text))
    proxied = sum(json.loads(stats_file.read_text())["proxied"].values())
    assert len(calls) + dropped == proxied      # every call is a line, or counted on one
    if count == 2_500:                          # a backlog this small is kept whole, even past exit
        assert dropped == 0
        assert sum(1 for c in calls if c[1] == "write" and c[2].startswith("1,")) == count


def test_a_descriptor_channel_nobody_reads_fails_only_its_own_calls(lone, tmp_path):
    workers = workers_of(lone)
    script = subprocess.Popen([PY, "-c", UNREAD_CHANNEL, lone.socket, os.path.join(PROGRAMS, "fake_client.py")],
                              env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        outcome = json.loads(read_line(script, timeout=60))
        assert outcome["opened"] > 0 and outcome["result"] == -1 and outcome["errno"] == 5   # EIO
        assert script.wait(SERVED_WITHIN_S) == 0
    finally:
        end_process(script)
    assert_served(lone, tmp_path)
    assert workers_of(lone) == workers


# ---- the compiled streams, in this process ----

def append_records(c, n):
    """n bare write records, seq 0..n-1."""
    r = ffi.new("struct lsca_trace_record *")
    r.magic, r.op, r.size, r.pid = lib.LSCA_TRACE_MAGIC, lib.LSCA_OP_WRITE, RECORD_SIZE, os.getpid()
    r.data_len = lib.LSCA_TRACE_NO_DATA
    for seq in range(n):
        r.seq = seq
        lib.lsca_trace_append(c, r, RECORD_SIZE)


def traced_client(header=ffi.NULL, row=ffi.NULL):
    """A compiled client recording to a socketpair; ours is the reading end."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    c = lib.lsca_fast_new(header, 1, os.getpid(), -1, -1, 0)
    c.row = row
    assert lib.lsca_fast_set_trace(c, theirs.detach(), ALL_OPS) == 0
    ours.setblocking(False)
    return c, ours


def receive(sock, seen):
    """Records and markers waiting on sock, into seen {"seqs": [...], "dropped": n}; False at EOF."""
    while True:
        try:
            batch = sock.recv(lib.LSCA_TRACE_BATCH + 65536)
        except BlockingIOError:
            return True
        if not batch:
            return False
        buf = ffi.from_buffer(batch)
        for off in range(0, len(batch), RECORD_SIZE):
            r = ffi.cast("struct lsca_trace_record *", buf + off)
            if r.op == lib.LSCA_TRACE_DROPPED:
                seen["dropped"] += r.result
            else:
                seen["seqs"].append(r.seq)


def test_the_trace_descriptor_must_be_a_unix_seqpacket_socket():
    c = lib.lsca_fast_new(ffi.NULL, 1, os.getpid(), -1, -1, 0)
    try:
        r, w = os.pipe()
        assert lib.lsca_fast_set_trace(c, w, ALL_OPS) == -1 and c.trace_mask == 0
        with pytest.raises(OSError):
            os.fstat(w)                         # closed: a pipe could hold a send
        os.close(r)
        stream, _peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        assert lib.lsca_fast_set_trace(c, stream.detach(), ALL_OPS) == -1 and c.trace_mask == 0
        _peer.close()
    finally:
        lib.lsca_fast_free(c)


def test_a_full_stream_drops_counts_and_says_so_in_place():
    memory = ffi.new("char[]", HEADER_SIZE)
    header = ffi.cast("struct lsca_shard_header *", memory)
    row = ffi.new("struct lsca_worker_status *")
    c, ours = traced_client(memory, row)
    n = lib.LSCA_TRACE_BACKLOG // RECORD_SIZE + 20_000
    try:
        append_records(c, n)
        assert header.trace_dropped == row.trace_dropped > 0
        seen = {"seqs": [], "dropped": 0}
        while lib.lsca_trace_flush(c):
            assert receive(ours, seen)
        receive(ours, seen)
        assert seen["dropped"] == header.trace_dropped
        assert len(seen["seqs"]) + seen["dropped"] == n
        assert seen["seqs"] == sorted(seen["seqs"]) and seen["seqs"][0] == 0
    finally:
        lib.lsca_fast_free(c)
        assert lib.lsca_trace_leftovers(1) == 0
        ours.close()


def test_a_released_clients_records_go_on_as_the_reader_takes_them():
    c, ours = traced_client()
    n = 10_000                                  # far more than the socket holds, less than the backlog
    append_records(c, n)
    lib.lsca_fast_free(c)                       # returns at once: nobody read yet
    seen = {"seqs": [], "dropped": 0}
    try:
        assert lib.lsca_trace_leftovers(0) == 1
        while lib.lsca_trace_leftovers(0):
            assert receive(ours, seen)
        assert not receive(ours, seen)          # the end of the stream: the worker let go of it
        assert seen == {"seqs": list(range(n)), "dropped": 0}
    finally:
        lib.lsca_trace_leftovers(1)
        ours.close()


def test_a_released_stream_nobody_reads_is_dropped_and_counted():
    row = ffi.new("struct lsca_worker_status *")
    c, ours = traced_client(row=row)
    append_records(c, 20_000)
    lib.lsca_fast_free(c)
    try:
        assert lib.lsca_trace_leftovers(0) == 1
        assert lib.lsca_trace_leftovers(1) == 0   # given up (at exit, or after LSCA_TRACE_LEFTOVER_MS)
        seen = {"seqs": [], "dropped": 0}
        receive(ours, seen)
        assert len(seen["seqs"]) + row.trace_dropped == 20_000 and row.trace_dropped > 0
    finally:
        ours.close()


def test_the_reader_says_what_was_dropped_in_text_and_json():
    marker = ffi.new("struct lsca_trace_record *")
    marker.magic, marker.op, marker.size, marker.pid, marker.worker = (lib.LSCA_TRACE_MAGIC, lib.LSCA_TRACE_DROPPED,
                                                                        RECORD_SIZE, 4321, 1)
    marker.result, marker.time_ns, marker.comm = 1234, 1_700_000_000_000_000_000, b"dd"
    batch = bytes(ffi.buffer(marker))
    schema = json.loads(resources.files("lsca").joinpath("trace.schema.json").read_text())
    for json_lines in (False, True):
        reader = TraceReader(os.open(os.devnull, os.O_WRONLY), json_lines)
        try:
            line = reader.format_batch(batch).decode()
        finally:
            os.close(reader.out_fd)
            reader.ours.close()
            reader.close_sender()
        assert reader.dropped == 1234
        if json_lines:
            event = json.loads(line)
            jsonschema.validate(event, schema)
            assert event == {"time": 1_700_000_000.0, "pid": 4321, "program": "dd", "worker": 1, "dropped": 1234}
        else:
            assert line == "lsca: 1234 trace records of pid 4321 dropped (the trace reader fell behind)\n"


# Writes /dev/null and its own stderr in turn: its lines and the trace share one pipe.
NOISY = "for i in $(seq 3000); do echo program-line-$i >&2; : > /dev/null; done"


def test_the_programs_own_stderr_lands_between_trace_lines_never_inside_one(supervisor):
    env = clean_env()
    env["LSCA_SOCKET"] = supervisor.socket
    run = subprocess.Popen([PY, "-m", "lsca.cli", "run", "--trace", "--", "sh", "-c", NOISY], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(READER_STALL_S)              # the pipe fills: both writers block and resume together
        _out, err = run.communicate(timeout=120)
    finally:
        end_process(run)
    assert run.returncode == 0, err[-2000:]
    lines = err.decode().splitlines()
    program_lines = [line for line in lines if re.fullmatch(r"program-line-\d+", line)]
    calls = parse_trace(lines)
    assert len(program_lines) == 3000
    assert len(calls) + len(program_lines) == len(lines), [line for line in lines if "program-line" in line
                                                             and line not in program_lines][:3]
    assert sum(1 for c in calls if c[1] == "write" and "program-line-" in c[2]) == 3000   # through a worker


@given(st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"") + b"\n"), max_size=60),
       st.integers(min_value=1, max_value=512))
def test_trace_output_is_cut_only_at_line_ends_and_within_an_atomic_pipe_write(lines, limit):
    data = b"".join(lines)
    chunks = list(whole_line_chunks(data, limit))
    assert b"".join(chunks) == data
    for chunk in chunks:
        assert chunk.endswith(b"\n")
        assert len(chunk) <= limit or chunk.count(b"\n") == 1     # a longer line goes alone
