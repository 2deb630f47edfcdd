"""`lsca bench --quick`: it runs end to end, proxies what it claims to, writes the JSON
report it documents (every number positive) and the PNG plot. No timing assertions."""
import json
import os
import subprocess
import sys

from conftest import clean_env

# --plot needs matplotlib, which the `test` extra installs: without it lsca bench fails
# with its one-line "install with pip install '.[bench]'" and so does this test.

OPS = ["write-1B", "stat"]
MODES = ["native", "lsca", "lsca+trace"]
RATIOS = ["lsca/native", "lsca+trace/native"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def positive(value, where):
    assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r}"
    assert value > 0, f"{where} is not positive: {value!r}"


def test_quick_bench_writes_its_report(tmp_path):
    report_file, plot_file = tmp_path / "bench.json", tmp_path / "scaling.png"
    proc = subprocess.run(
        [sys.executable, "-m", "lsca.cli", "bench", "--quick", "--ops", ",".join(OPS), "--modes", ",".join(MODES),
         "--clients", "1", "--workers", "1", "--idle-seconds", "1", "--json", str(report_file),
         "--plot", str(plot_file)],
        env=clean_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"lsca bench failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    assert "proxy check passed" in proc.stdout
    assert "idle CPU" in proc.stdout

    report = json.loads(report_file.read_text())
    machine = report["machine"]
    for key in ("nproc", "kernel", "python", "workers"):
        assert machine[key], key
    assert machine["workers"] == 1
    assert report["settings"]["ops"] == OPS and report["settings"]["modes"] == MODES

    assert sorted(report["ops"]) == sorted(OPS)
    for op in OPS:
        result = report["ops"][op]
        assert sorted(result["modes"]) == sorted(MODES)
        for mode in MODES:
            entry = result["modes"][mode]
            positive(entry["median_ns"], f"{op}/{mode} median")
            assert len(entry["samples_ns"]) == len(entry["runs"]) == 1   # --quick: one repeat
            for run in entry["runs"]:
                positive(run["ns_per_call"], f"{op}/{mode} ns_per_call")
                positive(run["calls"], f"{op}/{mode} calls")
                positive(run["warmup"], f"{op}/{mode} warmup")
                if mode != "native":
                    # Every call of the loop was counted as proxied by the workers.
                    assert run["proxied"], (op, mode, run)
                    for name, count in run["proxied"].items():
                        assert count >= run["calls"] + run["warmup"], (op, mode, name, run)
                if mode == "lsca+trace":
                    assert run["trace_lines"] >= run["calls"] + run["warmup"]
        for name in RATIOS:
            positive(result["ratios"][name], f"{op} ratio {name}")
        # strace was not asked for: its ratios are null, not made up.
        assert result["ratios"]["strace/native"] is None

    scaling = report["scaling"]
    assert scaling["op"] == "write-1B"
    assert [(c["workers"], c["clients"]) for c in scaling["matrix"]] == [(1, 1)]
    for cell in scaling["matrix"]:
        positive(cell["calls_per_s"], "calls_per_s")
        positive(cell["calls"], "calls")
        positive(cell["span_s"], "span_s")
        for rate in cell["per_client_calls_per_s"]:
            positive(rate, "per-client calls_per_s")
    assert scaling["speedup_2_clients_1_to_2_workers"] is None   # needs 2 clients and 2 workers

    idle = report["idle_cpu"]
    assert idle["workers"] == 1
    positive(idle["seconds"], "idle seconds")
    assert idle["processes_measured"] >= 2     # the supervisor and its worker
    # An idle pool may well use no measurable CPU (psutil counts clock ticks): not negative.
    for key in ("cpu_seconds", "cpu_percent", "supervisor_percent", "workers_percent"):
        assert isinstance(idle[key], (int, float)) and idle[key] >= 0, (key, idle[key])

    assert plot_file.read_bytes()[:8] == PNG_MAGIC


def test_bench_rejects_unknown_ops():
    proc = subprocess.run([sys.executable, "-m", "lsca.cli", "bench", "--ops", "write-1B,nosuchop"],
                          env=clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "nosuchop" in proc.stderr


def test_stress_bench_wrapper_is_lsca_bench():
    wrapper = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "stress", "bench.py")
    proc = subprocess.run([sys.executable, wrapper, "--help"], env=clean_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    assert "--modes" in proc.stdout and "lsca+trace" in proc.stdout
