"""Prometheus metrics of a supervisor (lsca-supervisor --metrics-port PORT): /metrics on
127.0.0.1 only, served by prometheus_client's HTTP server in a thread.

The collector never touches the supervisor's live state: it renders the latest snapshot the
supervisor's main loop published (see Supervisor.publish_snapshot).
"""
from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from lsca.stats import BUCKETS, SHIFT

ADDRESS = "127.0.0.1"
# "le" of every bucket but the last (open) one: its upper bound, in seconds.
BUCKET_BOUNDS = [floatToGoString((1 << (b + SHIFT)) / 1e9) for b in range(BUCKETS - 1)]


def families(snap):
    """The metric families of a snapshot (lsca.stats.snapshot)."""
    calls = CounterMetricFamily("lsca_calls", "Calls executed by a worker, per op", labels=["op", "worker"])
    errors = CounterMetricFamily("lsca_call_errors", "Calls a worker answered with -1, per op",
                                 labels=["op", "worker"])
    seconds = HistogramMetricFamily("lsca_call_seconds", "Worker time per call, claim to answer",
                                    labels=["op"])
    busy = CounterMetricFamily("lsca_worker_busy_seconds", "Time a worker spent executing calls",
                               labels=["worker"])
    shards = GaugeMetricFamily("lsca_worker_shards", "Clients assigned to a worker", labels=["worker"])
    clients = GaugeMetricFamily("lsca_clients", "Clients (processes) registered now", value=len(snap["clients"]))
    passthrough = CounterMetricFamily("lsca_passthrough_total", "Calls clients ran natively, per op "
                                      "(clients running and exited)", labels=["op"])
    hists = {}
    for w in snap["workers"]:
        worker = str(w["index"])
        busy.add_metric([worker], w["busy_ns"] / 1e9)
        shards.add_metric([worker], w["shards"])
        for op, entry in sorted(w["ops"].items()):
            calls.add_metric([op, worker], entry["calls"])
            errors.add_metric([op, worker], entry["errors"])
            h = hists.setdefault(op, [[0] * BUCKETS, 0])
            for b, n in enumerate(entry["hist"][:BUCKETS]):
                h[0][b] += n
            h[1] += entry["total_ns"]
    for op, (hist, total_ns) in sorted(hists.items()):
        cumulative, buckets = 0, []
        for b, n in enumerate(hist):
            cumulative += n
            buckets.append((BUCKET_BOUNDS[b] if b < BUCKETS - 1 else "+Inf", cumulative))
        seconds.add_metric([op], buckets, total_ns / 1e9)
    natively = {}
    for source in [c["passthrough"] for c in snap["clients"]] + [(snap.get("exited") or {}).get("passthrough", {})]:
        for op, n in source.items():
            natively[op] = natively.get(op, 0) + n
    for op, n in sorted(natively.items()):
        passthrough.add_metric([op], n)
    return [calls, errors, seconds, busy, shards, clients, passthrough]


class SnapshotCollector(Collector):
    def __init__(self, latest):
        self.latest = latest            # () -> the latest published snapshot, or None

    def collect(self):
        snap = self.latest()
        if snap is not None:
            yield from families(snap)


def registry_for(latest):
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(latest))
    return registry


class MetricsServer:
    """/metrics on 127.0.0.1:port; OSError (the port is taken) when it cannot listen."""

    def __init__(self, port, latest):
        self.port = port
        result = start_http_server(port, addr=ADDRESS, registry=registry_for(latest))
        self.httpd = result[0] if isinstance(result, tuple) else None

    def close(self):
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
