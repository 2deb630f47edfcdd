"""Live statistics of a running supervisor: what its workers executed and what its clients asked.

The supervisor builds a `snapshot` (a plain, JSON-able dict) of its worker table and of the
headers of its clients' shards, on its main loop: for the control request {"cmd": "stats"} on
its socket (``lsca stats``, ``lsca top``) and for its Prometheus collector (--metrics-port).
Everything else here is pure: percentiles of the latency histograms, rates between two
snapshots, and their rendering as a table or as JSON.

Counters are cumulative since the supervisor started (a worker keeps its row of the table
when it is replaced); rates (calls/s, load) are over the interval between two snapshots.
"""
import json
import math
import os
import select
import socket
import sys
import time
from collections import Counter

from lsca.abi import OP_MAX, OP_NAMES, ffi, lib, shard_header
from lsca.opclasses import syscall_name

BUCKETS = lib.LSCA_LAT_BUCKETS
SHIFT = lib.LSCA_LAT_SHIFT
# Per op, of each client's shard: "waited" are calls a worker handed back to wait in the program.
CLIENT_FIELDS = ("proxied", "failed", "passthrough", "declined", "waited", "worker_ns")
REQUEST_TIMEOUT_S = 10.0


class StatsError(Exception):
    """Why the statistics cannot be had: a one-line message."""


# ---- the supervisor's side ----

def stats_allowed(supervisor_uid, peer_uid):
    """Who may read the statistics: the supervisor's own user, and root. A root supervisor
    serves every user's programs; their pids and names are not for everyone."""
    return peer_uid == supervisor_uid or peer_uid == 0


class ExitedClients:
    """The counts of clients that are gone, so that totals since start never go down."""

    def __init__(self):
        self.clients = 0
        self.counts = {field: Counter() for field in CLIENT_FIELDS}
        self.trace_dropped = 0

    def add(self, header):
        """Fold the counters of a client's shard header in, before the shard is dropped."""
        self.clients += 1
        for field, counts in self.counts.items():
            counts.update(_per_op(getattr(header, field)))
        self.trace_dropped += header.trace_dropped

    def as_dict(self):
        return {"clients": self.clients, **{field: dict(c) for field, c in self.counts.items()},
                "trace_dropped": self.trace_dropped}


def _per_op(table):
    """{op name: n} of a per-op uint64 table, non-zero entries of known ops only."""
    values = ffi.unpack(table, OP_MAX)
    return {OP_NAMES[op]: values[op] for op in OP_NAMES if values[op]}


def _program(record):
    # Through the /proc directory bound to the process: a reused pid's name is never shown.
    try:
        with open(f"/proc/self/fd/{record.procfd}/comm") as f:
            return f.read().rstrip("\n")
    except OSError:
        return "?"


def snapshot(supervisor, programs=True):
    """The supervisor's counters now, as a plain dict. Call it from the supervisor's main loop
    (it reads the shards of live clients, which the main loop detaches when they go)."""
    now_ns = time.monotonic_ns()            # the clock of the heartbeats (CLOCK_MONOTONIC)
    shards = Counter(record.worker.index for record in supervisor.clients.values())
    workers = []
    for worker in sorted(supervisor.workers.values(), key=lambda w: w.index):
        row = supervisor.worker_rows[worker.index]
        ops = {}
        for op, name in OP_NAMES.items():
            entry = row.ops[op]
            calls, errors, total_ns = entry.calls, entry.errors, entry.total_ns
            if calls or errors or total_ns:
                ops[name] = {"calls": calls, "errors": errors, "total_ns": total_ns,
                             "hist": ffi.unpack(entry.hist, BUCKETS)}
        heartbeat = row.heartbeat_ns
        workers.append({"index": worker.index, "pid": worker.pid, "shards": shards[worker.index],
                        "busy_ns": row.busy_ns, "trace_dropped": row.trace_dropped,
                        "heartbeat_age_s": max(0.0, (now_ns - heartbeat) / 1e9) if heartbeat else None,
                        "ops": ops})
    clients = []
    for record in sorted(supervisor.clients.values(), key=lambda r: (r.pid, r.shard_id)):
        header = shard_header(record.shard.address)
        clients.append({"pid": record.pid, "uid": record.uid,
                        "program": _program(record) if programs else "?",
                        "worker": record.worker.index,
                        **{field: _per_op(getattr(header, field)) for field in CLIENT_FIELDS},
                        "trace_dropped": header.trace_dropped})
    exited = getattr(supervisor, "exited", None)
    return {"time": now_ns / 1e9, "pid": supervisor.pid, "workers": workers, "clients": clients,
            "exited": exited.as_dict() if exited is not None else ExitedClients().as_dict()}


# ---- pure helpers ----

def bucket_bounds_ns(b):
    """[low, high) of histogram bucket b in ns; the last bucket is open (high = inf)."""
    low = 0 if b == 0 else 1 << (b - 1 + SHIFT)
    high = math.inf if b >= BUCKETS - 1 else 1 << (b + SHIFT)
    return low, high


def percentile(hist, q):
    """Upper bound (ns) of the bucket holding the q-quantile (0 <= q <= 1, nearest rank) of a
    latency histogram; math.inf when it is the open last bucket, None for an empty one."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile {q} is not between 0 and 1")
    if len(hist) > BUCKETS:
        raise ValueError(f"a histogram has at most {BUCKETS} buckets, not {len(hist)}")
    total = sum(hist)
    if total == 0:
        return None
    rank = max(1, math.ceil(round(q * total, 9)))
    seen = 0
    for b, n in enumerate(hist):
        seen += n
        if seen >= rank:
            return bucket_bounds_ns(b)[1]
    raise AssertionError("unreachable: rank <= total")


def _delta(cur, prev):
    """Growth of a counter; a counter that went down was reset (a replaced worker)."""
    return cur - prev if cur >= prev else cur


def _op_totals(snap):
    """{op: {calls, errors, total_ns, hist}} summed over the workers."""
    totals = {}
    for worker in snap["workers"]:
        for op, entry in worker["ops"].items():
            t = totals.setdefault(op, {"calls": 0, "errors": 0, "total_ns": 0, "hist": [0] * BUCKETS})
            t["calls"] += entry["calls"]
            t["errors"] += entry["errors"]
            t["total_ns"] += entry["total_ns"]
            for b, n in enumerate(entry["hist"][:BUCKETS]):
                t["hist"][b] += n
    return totals


def rates(prev, cur):
    """Rates over the interval between two snapshots: {"interval_s", "ops": {op: calls/s},
    "workers": {index: load}, "worker_calls": {index: calls/s}, "calls": total calls/s}. Load
    is the share of the interval a worker spent executing calls (delta busy_ns / delta time:
    1.0 = one core's worth). A worker not in prev has no baseline and is left out. Without an
    interval (prev None, or no time between them) every rate is absent and interval_s None."""
    out = {"interval_s": None, "ops": {}, "workers": {}, "worker_calls": {}, "calls": None}
    if prev is None or cur["time"] <= prev["time"]:
        return out
    dt = cur["time"] - prev["time"]
    out["interval_s"] = dt
    before = {w["index"]: w for w in prev["workers"]}
    calls = Counter()
    for worker in cur["workers"]:
        old = before.get(worker["index"])
        if old is None:
            continue
        out["workers"][worker["index"]] = _delta(worker["busy_ns"], old["busy_ns"]) / (dt * 1e9)
        mine = 0
        for op, entry in worker["ops"].items():
            n = _delta(entry["calls"], old["ops"].get(op, {}).get("calls", 0))
            calls[op] += n
            mine += n
        out["worker_calls"][worker["index"]] = mine / dt
    out["ops"] = {op: n / dt for op, n in calls.items()}
    out["calls"] = sum(calls.values()) / dt
    return out


def _totals(cur, rate):
    ops = _op_totals(cur)
    live = {field: sum(sum((c.get(field) or {}).values()) for c in cur["clients"]) for field in CLIENT_FIELDS}
    exited = cur.get("exited") or {}
    since_start = {field: live[field] + sum((exited.get(field) or {}).values()) for field in CLIENT_FIELDS}
    return {"calls": sum(t["calls"] for t in ops.values()), "errors": sum(t["errors"] for t in ops.values()),
            "calls_per_s": rate["calls"],
            "proxied": since_start["proxied"], "failed": since_start["failed"],
            "passthrough": since_start["passthrough"], "declined": since_start["declined"],
            "waited": since_start["waited"],
            "clients": len(cur["clients"]), "exited_clients": exited.get("clients", 0),
            "workers": len(cur["workers"]),
            # The workers' count: it also has what released clients' readers never took.
            "trace_dropped": sum(w.get("trace_dropped", 0) for w in cur["workers"]),
            "load": sum(rate["workers"].values()) if rate["interval_s"] else None}


def summary(prev, cur):
    """The derived view of cur (and of the interval since prev, which may be None): per op
    (summed over workers) calls, errors, calls/s, p50/p99/mean; per worker load and calls;
    the clients; totals. Percentiles and means are over all calls since start."""
    rate = rates(prev, cur)
    ops = {}
    for op, t in sorted(_op_totals(cur).items(), key=lambda kv: (-kv[1]["calls"], kv[0])):
        p50, p99 = percentile(t["hist"], 0.5), percentile(t["hist"], 0.99)
        ops[op] = {"syscall": syscall_name(op), "calls": t["calls"], "errors": t["errors"],
                   "total_ns": t["total_ns"], "calls_per_s": rate["ops"].get(op, 0.0) if rate["interval_s"] else None,
                   "p50_ns": p50, "p99_ns": p99,
                   "mean_ns": t["total_ns"] / t["calls"] if t["calls"] else None, "hist": t["hist"]}
    workers = []
    for w in cur["workers"]:
        workers.append({**w, "calls": sum(e["calls"] for e in w["ops"].values()),
                        "calls_per_s": rate["worker_calls"].get(w["index"]),
                        "load": rate["workers"].get(w["index"])})
    return {"time": cur["time"], "interval_s": rate["interval_s"], "pid": cur["pid"], "ops": ops,
            "workers": workers, "clients": cur["clients"], "exited": cur.get("exited"),
            "totals": _totals(cur, rate)}


def _json_safe(value):
    """JSON has no infinity: a percentile in the open last bucket becomes null."""
    if isinstance(value, float) and math.isinf(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def format_json(prev, cur):
    """One line of JSON: the summary (see `summary`). p50_ns/p99_ns are bucket upper bounds,
    null when above the histogram's range; rates are null without an interval."""
    return json.dumps(_json_safe(summary(prev, cur)))


def format_duration(ns):
    if ns is None:
        return "-"
    if math.isinf(ns):
        return ">" + format_duration(bucket_bounds_ns(BUCKETS - 1)[0])
    if ns < 1000:
        return f"{ns:.0f}ns"
    if ns < 1e6:
        return f"{ns / 1e3:.1f}us"
    if ns < 1e9:
        return f"{ns / 1e6:.1f}ms"
    return f"{ns / 1e9:.2f}s"


def _rate(value):
    return "-" if value is None else f"{value:.1f}"


def _load(value):
    return "-" if value is None else f"{100 * value:.1f}%"


def format_table(prev, cur, max_clients=None):
    """Tables of calls per op, load per worker, calls per client, and a totals line."""
    s = summary(prev, cur)
    interval = f"rates over {s['interval_s']:.2f} s" if s["interval_s"] else "no rates (one snapshot)"
    lines = [f"lsca supervisor {s['pid']}: {len(s['workers'])} worker(s), {len(s['clients'])} client(s); "
             f"counts since start, {interval}", ""]
    lines.append(f"{'syscall':<14}{'calls':>10}{'calls/s':>10}{'errors':>9}{'p50':>10}{'p99':>10}{'mean':>10}")
    for op in s["ops"].values():
        lines.append(f"{op['syscall']:<14}{op['calls']:>10}{_rate(op['calls_per_s']):>10}{op['errors']:>9}"
                     f"{format_duration(op['p50_ns']):>10}{format_duration(op['p99_ns']):>10}"
                     f"{format_duration(op['mean_ns']):>10}")
    if not s["ops"]:
        lines.append("(no calls executed yet)")
    lines.append("")
    lines.append(f"{'worker':<8}{'pid':>8}{'shards':>8}{'load':>8}{'calls':>10}{'calls/s':>10}")
    for w in s["workers"]:
        lines.append(f"{w['index']:<8}{w['pid']:>8}{w['shards']:>8}{_load(w['load']):>8}{w['calls']:>10}"
                     f"{_rate(w['calls_per_s']):>10}")
    lines.append("")
    lines.append(f"{'client':<8}{'program':<18}{'worker':>7}{'proxied':>10}{'passthrough':>13}{'dropped':>9}")
    clients = sorted(s["clients"], key=lambda c: (-sum(c["proxied"].values()), c["pid"]))
    shown = clients if max_clients is None else clients[:max_clients]
    for c in shown:
        lines.append(f"{c['pid']:<8}{c['program'][:17]:<18}{c['worker']:>7}{sum(c['proxied'].values()):>10}"
                     f"{sum(c['passthrough'].values()):>13}{c.get('trace_dropped', 0):>9}")
    if len(shown) < len(clients):
        lines.append(f"... and {len(clients) - len(shown)} more client(s)")
    if not clients:
        lines.append("(no clients)")
    t = s["totals"]
    lines.append("")
    lines.append(f"total: {t['calls']} calls ({_rate(t['calls_per_s'])}/s), {t['errors']} errors, "
                 f"load {_load(t['load'])}; clients: {t['proxied']} proxied, {t['passthrough']} passthrough "
                 f"({t['clients']} running, {t['exited_clients']} exited)"
                 + (f"; {t['trace_dropped']} trace records dropped" if t["trace_dropped"] else ""))
    return "\n".join(lines)


# ---- the command line's side: lsca stats, lsca top ----

class StatsClient:
    """A control connection to a supervisor that asks it for snapshots."""

    def __init__(self, path, timeout=REQUEST_TIMEOUT_S):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise StatsError(f"cannot reach the supervisor at {path}: {_reason(e)}") from None
        self.reader = self.sock.makefile("rb")

    def snapshot(self):
        try:
            self.sock.sendall(b'{"cmd": "stats"}\n')
            line = self.reader.readline()
        except OSError as e:
            raise StatsError(f"lost the supervisor at {self.path}: {_reason(e)}") from None
        if not line:
            raise StatsError(f"the supervisor at {self.path} closed the connection")
        try:
            answer = json.loads(line)
        except ValueError:
            raise StatsError(f"the supervisor at {self.path} sent a malformed answer") from None
        if "error" in answer:
            raise StatsError(f"the supervisor at {self.path} refused: {answer['error']}")
        if not isinstance(answer.get("stats"), dict):
            raise StatsError(f"the supervisor at {self.path} sent no statistics")
        return answer["stats"]

    def close(self):
        self.reader.close()
        self.sock.close()


def _reason(error):
    return error.strerror or str(error) or type(error).__name__


def stats_command(path, interval, as_json, out=None):
    """lsca stats: two snapshots `interval` apart (one when it is 0), printed once."""
    out = out or sys.stdout
    client = StatsClient(path)
    try:
        prev = client.snapshot() if interval > 0 else None
        if prev is not None:
            time.sleep(interval)
        cur = client.snapshot()
    finally:
        client.close()
    out.write((format_json(prev, cur) if as_json else format_table(prev, cur)) + "\n")
    out.flush()
    return 0


class _Keys:
    """Single keys from a terminal (cbreak mode, restored at the end); Ctrl-C still signals."""

    def __init__(self, stream):
        import termios
        import tty

        self.fd = stream.fileno()
        self.saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)

    def quit_within(self, timeout):
        """Wait up to timeout; True as soon as q is pressed."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if select.select([self.fd], [], [], left)[0]:
                key = os.read(self.fd, 1)
                if key in (b"q", b"Q") or not key:
                    return True

    def restore(self):
        import termios

        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


CLEAR = "\x1b[H\x1b[2J"


def top_command(path, interval, iterations=None, out=None, keys_from=None):
    """lsca top: a table refreshed every interval, in place on a terminal (plain frames
    separated by a blank line otherwise); q or Ctrl-C quits; `iterations` frames at most."""
    import shutil

    out = out or sys.stdout
    keys_from = keys_from or sys.stdin
    tty = out.isatty()
    keys = None
    client = StatsClient(path)
    try:
        if tty and keys_from.isatty():
            keys = _Keys(keys_from)
        prev = client.snapshot()
        shown = 0
        while iterations is None or shown < iterations:
            if keys is not None:
                if keys.quit_within(interval):
                    break
            else:
                time.sleep(interval)
            cur = client.snapshot()
            if tty:
                rows = shutil.get_terminal_size().lines
                ops = len({op for w in cur["workers"] for op in w["ops"]})
                # Room left for the client table: header, op table, worker table, totals, hint.
                room = max(1, rows - ops - len(cur["workers"]) - 14)
                out.write(CLEAR + format_table(prev, cur, max_clients=room) + "\n(q quits)\n")
            else:
                out.write(format_table(prev, cur) + "\n\n")
            out.flush()
            prev = cur
            shown += 1
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # The reader (head, less) went away: quietly, without a second error at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
    finally:
        if keys is not None:
            keys.restore()
        client.close()
    return 0
