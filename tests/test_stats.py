"""Live statistics: snapshots of a supervisor's counters, their percentiles, rates and
rendering (pure, on synthetic data), the 'stats' control request, 'lsca stats', 'lsca top',
and the Prometheus endpoint of 'lsca-supervisor --metrics-port'.

The tests marked NEEDS_COUNTERS in their docstring check numbers the workers write into
their rows of the worker table and into the shard headers (calls, errors, latencies, busy
time, per-client proxied/failed counts)."""
import json
import math
import os
import pty
import pwd
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import time
import types
import urllib.request

import psutil
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import lsca.cli
from lsca import ipc, stats
from lsca.abi import HEADER_SIZE, OP_CODES, ffi, shard_header
from lsca.settings import ConfigError, load_config
from lsca.stats import BUCKETS, SHIFT, ExitedClients, percentile
from lsca.supervisor import metrics
from conftest import SupervisorProcess, clean_env, new_objects, remove_objects, wait_until

PY = sys.executable
WRITES, BAD_WRITES = 100, 5
# The client below: WRITES writes to a file, BAD_WRITES writes to a closed descriptor (EBADF),
# one "ready" line on stdout; then it waits for its stdin to close.
CLIENT = f"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
for i in range({WRITES}):
    os.write(fd, b"x")
for i in range({BAD_WRITES}):
    try:
        os.write(999, b"x")
    except OSError:
        pass
os.write(1, b"ready\\n")
os.read(0, 1)
"""
CLIENT_WRITES = WRITES + BAD_WRITES + 1
PROGRAM = os.path.basename(PY)[:15]      # what /proc/PID/comm says for the client


# ---- synthetic data ----

def hist(**buckets):
    """A histogram with counts at the named buckets: hist(b3=5, b10=1)."""
    h = [0] * BUCKETS
    for name, n in buckets.items():
        h[int(name[1:])] = n
    return h


def op_entry(calls, errors=0, total_ns=None, h=None):
    h = h if h is not None else hist(b3=calls)
    return {"calls": calls, "errors": errors, "total_ns": calls * 1000 if total_ns is None else total_ns,
            "hist": h}


def worker(index, pid, busy_ns, ops, shards=0, trace_dropped=0):
    return {"index": index, "pid": pid, "shards": shards, "busy_ns": busy_ns, "trace_dropped": trace_dropped,
            "heartbeat_age_s": 0.01, "ops": ops}


def client(pid, program="prog", worker=0, proxied=None, passthrough=None, failed=None, trace_dropped=0):
    return {"pid": pid, "uid": 1000, "program": program, "worker": worker, "proxied": proxied or {},
            "failed": failed or {}, "passthrough": passthrough or {}, "declined": {}, "waited": {}, "worker_ns": {},
            "trace_dropped": trace_dropped}


def snap(t, workers, clients=(), exited=None):
    return {"time": t, "pid": 4242, "workers": list(workers), "clients": list(clients),
            "exited": exited or {"clients": 0, "proxied": {}, "failed": {}, "passthrough": {}, "declined": {}, "waited": {},
                                 "worker_ns": {}, "trace_dropped": 0}}


PREV = snap(100.0, [worker(0, 11, 1_000_000_000, {"write": op_entry(100), "pread": op_entry(10)}),
                    worker(1, 12, 0, {})])
CUR = snap(102.0, [worker(0, 11, 1_500_000_000, {"write": op_entry(300, errors=7), "pread": op_entry(10)}, shards=1),
                   worker(1, 12, 200_000_000, {"write": op_entry(100, h=hist(b0=50, b5=49, b27=1),
                                                                 total_ns=9_000_000_000)})],
           [client(501, "dd", 0, {"write": 300, "pread": 10}, {"fcntl": 3}),
            client(502, "cat", 1, {"write": 100})],
           {"clients": 2, "proxied": {"write": 4}, "failed": {}, "passthrough": {"fcntl": 2},
            "declined": {}, "waited": {}, "worker_ns": {}, "trace_dropped": 0})


def check_schema(s, workers=None):
    """The JSON of 'lsca stats --json' (lsca.stats.summary with infinities as null)."""
    assert set(s) == {"time", "interval_s", "pid", "ops", "workers", "clients", "exited", "totals"}
    assert isinstance(s["time"], float) and isinstance(s["pid"], int)
    assert s["interval_s"] is None or s["interval_s"] > 0
    for name, op in s["ops"].items():
        assert name in OP_CODES
        assert set(op) == {"syscall", "calls", "errors", "total_ns", "calls_per_s", "p50_ns", "p99_ns",
                           "mean_ns", "hist"}
        assert len(op["hist"]) == BUCKETS and sum(op["hist"]) == op["calls"] > 0
        for key in ("p50_ns", "p99_ns"):
            assert op[key] is None or (isinstance(op[key], int) and op[key] >= 1 << SHIFT)
        assert op["errors"] <= op["calls"]
    if workers is not None:
        assert len(s["workers"]) == workers
    for w in s["workers"]:
        assert set(w) == {"index", "pid", "shards", "busy_ns", "trace_dropped", "heartbeat_age_s", "ops", "calls",
                          "calls_per_s", "load"}
        assert isinstance(w["pid"], int) and w["shards"] >= 0 and w["busy_ns"] >= 0
        assert w["heartbeat_age_s"] is None or w["heartbeat_age_s"] >= 0
        assert w["calls"] == sum(e["calls"] for e in w["ops"].values())
        for e in w["ops"].values():
            assert set(e) == {"calls", "errors", "total_ns", "hist"} and len(e["hist"]) == BUCKETS
    for c in s["clients"]:
        assert set(c) == {"pid", "uid", "program", "worker", "proxied", "failed", "passthrough", "declined",
                          "waited", "worker_ns", "trace_dropped"}
        for field in ("proxied", "failed", "passthrough", "declined", "waited", "worker_ns"):
            assert all(op in OP_CODES and n > 0 for op, n in c[field].items())
    assert set(s["totals"]) == {"calls", "errors", "calls_per_s", "proxied", "failed", "passthrough", "declined",
                                "waited", "clients", "exited_clients", "workers", "trace_dropped", "load"}
    assert s["totals"]["clients"] == len(s["clients"]) and s["totals"]["workers"] == len(s["workers"])


# ---- percentiles ----

def test_buckets_are_those_of_the_abi():
    assert stats.bucket_bounds_ns(0) == (0, 1 << SHIFT)
    for b in range(1, BUCKETS - 1):
        assert stats.bucket_bounds_ns(b) == (1 << (b - 1 + SHIFT), 1 << (b + SHIFT))
    assert stats.bucket_bounds_ns(BUCKETS - 1) == (1 << (BUCKETS - 2 + SHIFT), math.inf)


def test_percentile_is_the_upper_bound_of_the_bucket_holding_the_quantile():
    h = hist(b0=50, b5=49, b9=1)
    assert percentile(h, 0.5) == 1 << SHIFT            # the 50th of 100 is in bucket 0
    assert percentile(h, 0.51) == 1 << (5 + SHIFT)
    assert percentile(h, 0.99) == 1 << (5 + SHIFT)     # the 99th is the last of bucket 5
    assert percentile(h, 0.995) == 1 << (9 + SHIFT)
    assert percentile(h, 1.0) == 1 << (9 + SHIFT)
    assert percentile(h, 0.0) == 1 << SHIFT            # the smallest call
    assert percentile(hist(b12=3), 0.0) == percentile(hist(b12=3), 1.0) == 1 << (12 + SHIFT)


def test_percentile_nearest_rank_is_not_fooled_by_floating_point():
    # 0.07 * 100 is 7.000000000000001: the 7th call, not the 8th.
    h = hist(b1=7, b2=93)
    assert percentile(h, 0.07) == 1 << (1 + SHIFT)
    assert percentile(h, 0.0701) == 1 << (2 + SHIFT)


def test_percentile_of_the_open_last_bucket_and_of_nothing():
    assert percentile(hist(b3=98, b27=2), 0.99) == math.inf
    assert percentile([0] * BUCKETS, 0.5) is None
    assert percentile([], 0.5) is None
    assert percentile([0, 4], 0.5) == 1 << (1 + SHIFT)  # a shorter list is the first buckets
    with pytest.raises(ValueError):
        percentile(hist(b1=1), 1.5)
    with pytest.raises(ValueError):
        percentile([1] * (BUCKETS + 1), 0.5)


# ---- rates ----

def test_rates_per_op_and_per_worker_load():
    r = stats.rates(PREV, CUR)
    assert r["interval_s"] == 2.0
    assert r["ops"]["write"] == pytest.approx((200 + 100) / 2)
    assert r["ops"]["pread"] == 0
    assert r["workers"] == {0: pytest.approx(0.25), 1: pytest.approx(0.1)}
    assert r["worker_calls"] == {0: pytest.approx(100.0), 1: pytest.approx(50.0)}
    assert r["calls"] == pytest.approx(150.0)


def test_rates_after_a_counter_reset_and_for_a_new_worker():
    prev = snap(10.0, [worker(0, 11, 5_000_000_000, {"write": op_entry(1000)})])
    # Worker 0 was replaced by one that started its row from zero; worker 1 is new (no baseline).
    cur = snap(11.0, [worker(0, 99, 100_000_000, {"write": op_entry(40)}),
                      worker(1, 98, 900_000_000, {"write": op_entry(500)})])
    r = stats.rates(prev, cur)
    assert r["ops"] == {"write": 40.0}
    assert r["workers"] == {0: pytest.approx(0.1)}


def test_rates_without_an_interval():
    for prev in (None, CUR):
        r = stats.rates(prev, CUR)
        assert r["interval_s"] is None and r["ops"] == {} and r["workers"] == {} and r["calls"] is None


# ---- rendering ----

def test_format_json_schema_and_values():
    s = json.loads(stats.format_json(PREV, CUR))
    check_schema(s, workers=2)
    write, pread = s["ops"]["write"], s["ops"]["pread"]
    assert list(s["ops"]) == ["write", "pread"]            # most calls first
    assert (write["calls"], write["errors"], write["calls_per_s"]) == (400, 7, 150.0)
    assert write["total_ns"] == 300 * 1000 + 9_000_000_000
    assert write["mean_ns"] == pytest.approx(write["total_ns"] / 400)
    assert write["p50_ns"] == 1 << (3 + SHIFT) and write["p99_ns"] == 1 << (5 + SHIFT)
    assert pread["syscall"] == "pread64" and pread["calls_per_s"] == 0.0
    assert s["workers"][0]["load"] == pytest.approx(0.25) and s["workers"][0]["shards"] == 1
    t = s["totals"]
    assert (t["calls"], t["errors"], t["proxied"], t["passthrough"]) == (410, 7, 414, 5)
    assert (t["clients"], t["exited_clients"], t["workers"]) == (2, 2, 2)
    assert t["load"] == pytest.approx(0.35)
    # JSON has no infinity: the open bucket's percentile is null.
    only_slow = snap(1.0, [worker(0, 11, 0, {"read": op_entry(1, h=hist(b27=1))})])
    s = json.loads(stats.format_json(None, only_slow))
    assert s["ops"]["read"]["p50_ns"] is None and s["interval_s"] is None
    assert s["workers"][0]["load"] is None and s["totals"]["calls_per_s"] is None


def test_format_table_rows():
    text = stats.format_table(PREV, CUR)
    lines = text.splitlines()
    assert lines[0] == ("lsca supervisor 4242: 2 worker(s), 2 client(s); counts since start, "
                        "rates over 2.00 s")
    header = next(i for i, line in enumerate(lines) if line.split()[:7] ==
                  ["syscall", "calls", "calls/s", "errors", "p50", "p99", "mean"])
    assert lines[header + 1].split() == ["write", "400", "150.0", "7", "1.0us", "4.1us", "22.5ms"]
    assert lines[header + 2].split() == ["pread64", "10", "0.0", "0", "1.0us", "1.0us", "1.0us"]
    assert ["0", "11", "1", "25.0%", "310", "100.0"] in [line.split() for line in lines]
    assert ["1", "12", "0", "10.0%", "100", "50.0"] in [line.split() for line in lines]
    assert ["501", "dd", "0", "310", "3", "0"] in [line.split() for line in lines]
    assert ["502", "cat", "1", "100", "0", "0"] in [line.split() for line in lines]
    assert lines[-1] == ("total: 410 calls (150.0/s), 7 errors, load 35.0%; clients: 414 proxied, "
                         "5 passthrough (2 running, 2 exited)")


def test_dropped_trace_records_per_client_and_in_total():
    cur = snap(5.0, [worker(0, 11, 0, {}, trace_dropped=40), worker(1, 12, 0, {}, trace_dropped=2)],
               [client(7, "dd", trace_dropped=30)])
    s = stats.summary(None, cur)
    assert s["totals"]["trace_dropped"] == 42       # the workers count what released clients lost too
    lines = stats.format_table(None, cur).splitlines()
    assert ["7", "dd", "0", "0", "0", "30"] in [line.split() for line in lines]
    assert lines[-1].endswith("(1 running, 0 exited); 42 trace records dropped")
    check_schema(json.loads(stats.format_json(None, cur)))


def test_format_table_without_rates_or_calls_and_with_few_rows():
    empty = snap(5.0, [worker(0, 11, 0, {})], [client(7, "a"), client(8, "b"), client(9, "c")])
    text = stats.format_table(None, empty, max_clients=1)
    assert "no rates (one snapshot)" in text.splitlines()[0]
    assert "(no calls executed yet)" in text
    assert "... and 2 more client(s)" in text
    assert ["0", "11", "0", "-", "0", "-"] in [line.split() for line in text.splitlines()]
    assert text.splitlines()[-1].startswith("total: 0 calls (-/s), 0 errors, load -;")


def test_durations():
    fd = stats.format_duration
    assert [fd(None), fd(500), fd(1024), fd(2.5e6), fd(3e9)] == ["-", "500ns", "1.0us", "2.5ms", "3.00s"]
    assert fd(math.inf) == ">8.59s"


# ---- the supervisor's side, on real ABI structs filled by hand ----

def fake_supervisor():
    rows = ffi.new("struct lsca_worker_status[4]")
    write, pread = OP_CODES["write"], OP_CODES["pread"]
    rows[2].pid, rows[2].busy_ns, rows[2].heartbeat_ns = 777, 123456, time.monotonic_ns() - 500_000_000
    rows[2].ops[write].calls, rows[2].ops[write].errors, rows[2].ops[write].total_ns = 12, 2, 48000
    rows[2].ops[write].hist[3], rows[2].ops[write].hist[6] = 10, 2
    rows[2].ops[pread].calls, rows[2].ops[pread].hist[0], rows[2].ops[pread].total_ns = 1, 1, 90
    rows[2].trace_dropped = 7
    w2 = types.SimpleNamespace(index=2, pid=777)
    w0 = types.SimpleNamespace(index=0, pid=555)
    memory = ffi.new("char[]", HEADER_SIZE)
    address = int(ffi.cast("uintptr_t", memory))
    header = shard_header(address)
    header.proxied[write], header.failed[write], header.worker_ns[write] = 12, 2, 48000
    header.passthrough[OP_CODES["fcntl"]], header.declined[OP_CODES["openat"]] = 4, 1
    header.passthrough[OP_CODES["openat"]] = 1
    header.waited[OP_CODES["read"]] = 5
    header.proxied[60] = 9                                  # no such op: left out
    header.trace_dropped = 3
    procfd = os.open(f"/proc/{os.getpid()}", os.O_PATH | os.O_DIRECTORY)   # closed at exit
    record = types.SimpleNamespace(pid=os.getpid(), uid=0, shard_id=1, worker=w2, procfd=procfd,
                                   shard=types.SimpleNamespace(address=address))
    gone = types.SimpleNamespace(pid=2 ** 22 + 1, uid=1000, shard_id=2, worker=w2, procfd=-1,
                                 shard=types.SimpleNamespace(address=address))
    sup = types.SimpleNamespace(pid=4242, worker_rows=rows, workers={777: w2, 555: w0},
                                clients={1: record, 2: gone}, exited=ExitedClients())
    sup.exited.add(header)
    return sup, (rows, memory)


def test_snapshot_reads_worker_rows_and_shard_headers():
    sup, _keep = fake_supervisor()
    s = stats.snapshot(sup)
    json.dumps(s)
    assert s["pid"] == 4242 and abs(s["time"] - time.monotonic()) < 5
    assert [w["index"] for w in s["workers"]] == [0, 2]
    w0, w2 = s["workers"]
    assert w0 == {"index": 0, "pid": 555, "shards": 0, "busy_ns": 0, "trace_dropped": 0, "heartbeat_age_s": None,
                  "ops": {}}
    assert (w2["pid"], w2["shards"], w2["busy_ns"], w2["trace_dropped"]) == (777, 2, 123456, 7)
    assert 0.4 < w2["heartbeat_age_s"] < 5
    assert w2["ops"] == {"write": {"calls": 12, "errors": 2, "total_ns": 48000, "hist": hist(b3=10, b6=2)},
                         "pread": {"calls": 1, "errors": 0, "total_ns": 90, "hist": hist(b0=1)}}
    me, gone = s["clients"]
    assert me == {"pid": os.getpid(), "uid": 0, "program": open("/proc/self/comm").read().strip(), "worker": 2,
                  "proxied": {"write": 12}, "failed": {"write": 2}, "passthrough": {"fcntl": 4, "openat": 1},
                  "declined": {"openat": 1}, "waited": {"read": 5}, "worker_ns": {"write": 48000}, "trace_dropped": 3}
    assert gone["program"] == "?"
    assert s["exited"] == {"clients": 1, "proxied": {"write": 12}, "failed": {"write": 2},
                           "passthrough": {"fcntl": 4, "openat": 1}, "declined": {"openat": 1},
                           "waited": {"read": 5}, "worker_ns": {"write": 48000}, "trace_dropped": 3}
    assert stats.snapshot(sup, programs=False)["clients"][0]["program"] == "?"
    check_schema(json.loads(stats.format_json(s, s)), workers=2)


def test_who_may_read_the_statistics():
    assert stats.stats_allowed(1000, 1000) and stats.stats_allowed(1000, 0) and stats.stats_allowed(0, 0)
    assert not stats.stats_allowed(0, 1000) and not stats.stats_allowed(1000, 1001)


# ---- Prometheus, on synthetic data ----

def scrape_families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(families, sample_name):
    return {tuple(sorted(s.labels.items())): s.value for f in families.values() for s in f.samples
            if s.name == sample_name}


def test_metric_families_of_a_snapshot():
    text = generate_latest(metrics.registry_for(lambda: CUR)).decode()
    fams = scrape_families(text)
    assert {"lsca_calls", "lsca_call_errors", "lsca_call_seconds", "lsca_worker_busy_seconds",
            "lsca_worker_shards", "lsca_clients", "lsca_passthrough"} <= set(fams)
    assert fams["lsca_calls"].type == "counter" and fams["lsca_call_seconds"].type == "histogram"
    calls = samples(fams, "lsca_calls_total")
    assert calls[(("op", "write"), ("worker", "0"))] == 300 and calls[(("op", "write"), ("worker", "1"))] == 100
    assert samples(fams, "lsca_call_errors_total")[(("op", "write"), ("worker", "0"))] == 7
    buckets = {labels: v for labels, v in samples(fams, "lsca_call_seconds_bucket").items()
               if ("op", "write") in labels}
    le = {dict(labels)["le"]: v for labels, v in buckets.items()}
    assert len(le) == BUCKETS
    assert le["1.28e-07"] == 50                     # bucket 0 of worker 1: < 128 ns
    assert le["1.024e-06"] == 50 + 300              # through bucket 3 (< 1024 ns)
    assert le["+Inf"] == 400
    values = [le[k] for k in sorted(le, key=lambda k: float(k))]
    assert values == sorted(values)                 # cumulative
    assert samples(fams, "lsca_call_seconds_count")[(("op", "write"),)] == 400
    assert samples(fams, "lsca_call_seconds_sum")[(("op", "write"),)] == pytest.approx(9.0003)
    assert samples(fams, "lsca_worker_busy_seconds_total")[(("worker", "0"),)] == pytest.approx(1.5)
    assert samples(fams, "lsca_worker_shards")[(("worker", "0"),)] == 1
    assert samples(fams, "lsca_clients")[()] == 2
    assert samples(fams, "lsca_passthrough_total") == {(("op", "fcntl"),): 5}


def test_no_metrics_before_the_first_snapshot():
    assert generate_latest(metrics.registry_for(lambda: None)) == b""


def test_config_file_accepts_metrics_port(tmp_path):
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text("workers = 2\nmetrics_port = 9187\n")
    bad.write_text("metrics_port = 70000\n")
    assert load_config(good) == {"workers": 2, "metrics_port": 9187}
    with pytest.raises(ConfigError, match="metrics_port"):
        load_config(bad)


# ---- a real supervisor and a real client ----

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A supervisor and one client that made its calls and waits (ended at teardown)."""

    def __init__(self, tmpdir, extra=()):
        os.chmod(tmpdir, 0o755)                 # the socket must be reachable for another uid
        self.sup = SupervisorProcess(tmpdir, workers=2, extra=extra)
        # Its stdout is a TCP socket on loopback: a write there is answered by a worker on every
        # kernel (where pipes refuse RWF_NOWAIT, Linux 6.1 say, a pipe write is handed back and not
        # counted here; so is any write to a unix socket, whose receiver may ask who sent).
        with socket.create_server(("127.0.0.1", 0)) as listener:
            theirs = socket.create_connection(listener.getsockname())
            ours, _addr = listener.accept()
        self.client = subprocess.Popen([PY, "-B", "-c", CLIENT, os.path.join(tmpdir, "written")],
                                       env=self.sup.client_env(), stdin=subprocess.PIPE, stdout=theirs.fileno())
        theirs.close()
        self.out = ours.makefile("rb")
        ours.close()
        try:
            ready = self.out.readline()
        finally:
            if self.client.poll() is not None:
                self.close()
        assert ready == b"ready\n"

    def lsca(self, *args, env_extra=None, timeout=30):
        env = clean_env()
        env.update(env_extra or {})
        return subprocess.run([PY, "-m", "lsca.cli", *args], env=env, capture_output=True, timeout=timeout)

    def stats_json(self):
        proc = self.lsca("stats", "--socket", self.sup.socket, "--json", "--interval", "0.1")
        assert proc.returncode == 0, proc.stderr
        assert len(proc.stdout.splitlines()) == 1
        return json.loads(proc.stdout)

    def close(self):
        try:
            self.client.stdin.close()
            self.client.wait(15)
        except subprocess.TimeoutExpired:
            self.client.kill()
            self.client.wait()
        finally:
            self.out.close()
            status = self.sup.stop()
            left = new_objects(self.sup.objects_before)
            remove_objects(left)
        assert self.client.returncode == 0
        assert status == 0, f"supervisor exited with {status}"
        assert left == {"shm": [], "sem": []}, f"supervisor left SysV objects: {left}"


@pytest.fixture(scope="module")
def served():
    with tempfile.TemporaryDirectory(prefix="lsca-test-") as tmpdir:
        s = Served(tmpdir)
        try:
            yield s
        finally:
            s.close()


@pytest.fixture(scope="module")
def served_metrics():
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="lsca-test-") as tmpdir:
        s = Served(tmpdir, extra=["--metrics-port", str(port)])
        s.port = port
        try:
            yield s
        finally:
            s.close()


def test_stats_json_schema(served):
    s = served.stats_json()
    check_schema(s, workers=2)
    assert s["pid"] == served.sup.process.pid
    assert 0.1 <= s["interval_s"] < 5
    mine = [c for c in s["clients"] if c["pid"] == served.client.pid]
    assert len(mine) == 1 and mine[0]["program"] == PROGRAM and mine[0]["uid"] == os.getuid()
    assert sum(w["shards"] for w in s["workers"]) == len(s["clients"]) == 1
    assert s["workers"][mine[0]["worker"]]["shards"] == 1
    assert {w["pid"] for w in s["workers"]} == {c.pid for c in psutil.Process(served.sup.process.pid).children()}
    assert all(w["heartbeat_age_s"] is not None and w["heartbeat_age_s"] < 30 for w in s["workers"])


def test_stats_table(served):
    proc = served.lsca("stats", "--socket", served.sup.socket, "--interval", "0.1")
    assert proc.returncode == 0 and proc.stderr == b""
    lines = proc.stdout.decode().splitlines()
    assert re.match(rf"lsca supervisor {served.sup.process.pid}: 2 worker\(s\), 1 client\(s\); counts since "
                    rf"start, rates over 0\.\d\d s$", lines[0])
    assert lines[2].split() == ["syscall", "calls", "calls/s", "errors", "p50", "p99", "mean"]
    assert ["worker", "pid", "shards", "load", "calls", "calls/s"] in [line.split() for line in lines]
    row = next(line.split() for line in lines if line.startswith(str(served.client.pid)))
    assert row[1] == PROGRAM
    assert lines[-1].startswith("total: ") and "(1 running, 0 exited)" in lines[-1]


def test_socket_defaults_to_lsca_socket(served):
    proc = served.lsca("stats", "--interval", "0", env_extra={"LSCA_SOCKET": served.sup.socket})
    assert proc.returncode == 0, proc.stderr
    assert "no rates (one snapshot)" in proc.stdout.decode().splitlines()[0]


def test_top_plain_frames_when_not_a_tty(served):
    started = time.monotonic()
    proc = served.lsca("top", "--socket", served.sup.socket, "--interval", "0.2", "--iterations", "2")
    assert proc.returncode == 0 and proc.stderr == b""
    assert time.monotonic() - started >= 0.4
    out = proc.stdout.decode()
    assert "\x1b" not in out
    frames = [line for line in out.splitlines() if line.startswith("lsca supervisor ")]
    assert len(frames) == 2 and all(re.search(r"rates over 0\.\d\d s$", f) for f in frames)
    assert out.count("\ntotal: ") == 2


def test_unreachable_supervisor_is_one_line(tmp_path):
    path = tmp_path / "nobody.sock"
    for command in ("stats", "top"):
        proc = subprocess.run([PY, "-m", "lsca.cli", command, "--socket", str(path)], env=clean_env(),
                              capture_output=True, timeout=30)
        assert proc.returncode == 1 and proc.stdout == b""
        assert proc.stderr.decode() == f"lsca: cannot reach the supervisor at {path}: No such file or directory\n"


def run_as_nobody(argv):
    """lsca's main(argv) in a child that has become nobody; (exit code, its output)."""
    nobody = pwd.getpwnam("nobody")
    lsca.cli.build_parser()                 # imports what it imports while we may still read them
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            sys.stdout = sys.stderr = os.fdopen(w, "w")
            code = lsca.cli.main(argv)
            sys.stdout.flush()
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        output = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a root supervisor and a client as nobody")
def test_other_users_may_not_read_the_statistics(served):
    code, output = run_as_nobody(["stats", "--socket", served.sup.socket, "--interval", "0"])
    uid = pwd.getpwnam("nobody").pw_uid
    assert code == 1
    assert output == (f"lsca: the supervisor at {served.sup.socket} refused: permission denied: uid {uid} may "
                      f"not read this supervisor's statistics (only root may)\n")
    # The supervisor goes on serving its own user.
    assert served.stats_json()["pid"] == served.sup.process.pid


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        return scrape_families(response.read().decode())


def test_metrics_endpoint(served_metrics):
    port = served_metrics.port
    listening = [c for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    assert [c.laddr.ip for c in listening] == ["127.0.0.1"]
    # The supervisor publishes a snapshot about every second: wait for the client in it.
    assert wait_until(lambda: samples(scrape(port), "lsca_clients") == {(): 1}, timeout=10)
    fams = scrape(port)
    assert {"lsca_calls", "lsca_call_errors", "lsca_call_seconds", "lsca_worker_busy_seconds",
            "lsca_worker_shards", "lsca_clients", "lsca_passthrough"} <= set(fams)
    assert set(samples(fams, "lsca_worker_shards")) == {(("worker", "0"),), (("worker", "1"),)}
    assert sum(samples(fams, "lsca_worker_shards").values()) == 1
    assert set(samples(fams, "lsca_worker_busy_seconds_total")) == {(("worker", "0"),), (("worker", "1"),)}


def test_metrics_port_in_use_is_one_line(tmp_path):
    before_processes = {p.pid for p in psutil.process_iter()}
    before_objects = ipc.lsca_objects()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sock = tmp_path / "supervisor.sock"
        proc = subprocess.run([PY, "-m", "lsca.supervisor", "--socket", str(sock), "--workers", "1",
                               "--metrics-port", str(port)], env=clean_env(), capture_output=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"lsca-supervisor: cannot serve metrics on 127.0.0.1:{port}: Address already in use\n"
    assert not sock.exists()
    from conftest import lsca_processes
    assert not [p for p in lsca_processes() if p.pid not in before_processes]
    assert new_objects(before_objects) == {"shm": [], "sem": []}


def test_metrics_port_must_be_a_port(tmp_path):
    proc = subprocess.run([PY, "-m", "lsca.supervisor", "--socket", str(tmp_path / "s.sock"), "--metrics-port",
                           "70000"], env=clean_env(), capture_output=True, timeout=30)
    assert proc.returncode == 2 and b"--metrics-port" in proc.stderr and b"1 to 65535" in proc.stderr


# ---- NEEDS_COUNTERS: numbers the workers count ----

def test_stats_count_the_calls_of_a_client(served):
    """NEEDS_COUNTERS: worker rows (calls, errors, total_ns, hist, busy_ns) and the client's
    shard header (proxied, failed, worker_ns)."""
    s = served.stats_json()
    write = s["ops"]["write"]
    assert (write["calls"], write["errors"]) == (CLIENT_WRITES, BAD_WRITES)
    assert sum(write["hist"]) == CLIENT_WRITES and write["total_ns"] > 0
    assert 1 << SHIFT <= write["p50_ns"] <= write["p99_ns"]
    assert write["mean_ns"] == pytest.approx(write["total_ns"] / CLIENT_WRITES)
    assert write["syscall"] == "write"
    mine = next(c for c in s["clients"] if c["pid"] == served.client.pid)
    assert mine["proxied"]["write"] == CLIENT_WRITES and mine["failed"]["write"] == BAD_WRITES
    assert mine["worker_ns"]["write"] > 0
    serving = s["workers"][mine["worker"]]
    assert serving["ops"]["write"]["calls"] == CLIENT_WRITES and serving["busy_ns"] > 0
    assert s["totals"]["calls"] >= CLIENT_WRITES and s["totals"]["proxied"] >= CLIENT_WRITES


def test_stats_table_shows_the_counts(served):
    """NEEDS_COUNTERS: as above, in the table."""
    proc = served.lsca("stats", "--socket", served.sup.socket, "--interval", "0.1")
    lines = proc.stdout.decode().splitlines()
    row = next(line.split() for line in lines if line.startswith("write "))
    assert row[1] == str(CLIENT_WRITES) and row[3] == str(BAD_WRITES)
    assert all(value.endswith(("ns", "us", "ms", "s")) for value in row[4:7])
    client_row = next(line.split() for line in lines if line.startswith(str(served.client.pid)))
    assert int(client_row[3]) >= CLIENT_WRITES


def test_metrics_count_the_calls_of_a_client(served_metrics):
    """NEEDS_COUNTERS: lsca_calls_total, lsca_call_errors_total, lsca_call_seconds,
    lsca_worker_busy_seconds_total from the worker rows."""
    port = served_metrics.port

    def write_calls():
        return sum(v for labels, v in samples(scrape(port), "lsca_calls_total").items() if ("op", "write") in labels)

    assert wait_until(lambda: write_calls() == CLIENT_WRITES, timeout=10)
    fams = scrape(port)
    errors = samples(fams, "lsca_call_errors_total")
    assert sum(v for labels, v in errors.items() if ("op", "write") in labels) == BAD_WRITES
    assert samples(fams, "lsca_call_seconds_count")[(("op", "write"),)] == CLIENT_WRITES
    assert samples(fams, "lsca_call_seconds_sum")[(("op", "write"),)] > 0
    assert sum(samples(fams, "lsca_worker_busy_seconds_total").values()) > 0


def read_until(fd, needle, timeout=10.0):
    """Output of a pty's master until needle appears (or the timeout passes)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


@pytest.mark.parametrize("how", ["q", "ctrl-c"])
def test_top_on_a_terminal_redraws_in_place_and_quits(served, how):
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen([PY, "-m", "lsca.cli", "top", "--socket", served.sup.socket, "--interval", "0.2"],
                            stdin=slave, stdout=slave, stderr=subprocess.PIPE, env=clean_env())
    try:
        seen = read_until(master, b"(q quits)")
        assert seen.startswith(stats.CLEAR.encode()) and b"lsca supervisor " in seen
        assert not termios.tcgetattr(slave)[3] & termios.ICANON      # keys come one by one
        if how == "q":
            os.write(master, b"q")
        else:
            proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert proc.stderr.read() == b""
        assert termios.tcgetattr(slave) == before                    # the terminal as it was
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        os.close(master)
        os.close(slave)
