"""`lsca bench` sections process, loops, busy and workloads, in their --quick form: they run
end to end, write every number they document to the JSON report, prove that their lsca
runs were proxied, draw FILE-sections.png, and leave no process (CPU hogs included) and
no SysV object behind, also when interrupted. No timing assertions."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import TEST_MARK, clean_env, lsca_processes, new_objects, remove_objects, wait_until
from lsca import ipc

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PROCESS_ITEMS = ["exec", "fork+wait", "spawn"]
LOOP_ITEMS = ["dup+close", "file-copy-1KiB", "pipe", "pipe-pingpong"]
BUSY_OPS = ["write-1B", "stat"]
WORKLOADS = ["tar", "compileall", "http"]


def bench(*options, timeout=120):
    return subprocess.run([sys.executable, "-m", "lsca.cli", "bench", *options], env=clean_env(),
                          capture_output=True, text=True, timeout=timeout)


def positive(value, where):
    assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r}"
    assert value > 0, f"{where} is not positive: {value!r}"


def bench_processes():
    """Processes of ours left by a bench: CPU hogs and loops (bench_loop), lsca run, strace."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmdline = p.info["cmdline"] or []
        if not any("bench_loop" in word or word == "lsca.cli" for word in cmdline[:3]) and \
                not (cmdline and os.path.basename(cmdline[0]) == "strace"):
            continue
        if p.pid == os.getpid():
            continue
        try:
            if p.environ().get(TEST_MARK) == os.environ[TEST_MARK]:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture
def nothing_left():
    """After the test: no supervisor, worker, hog or client of ours runs, no SysV object is new."""
    before = ipc.lsca_objects()
    yield
    left = [p for p in lsca_processes() + bench_processes() if p.is_running()]
    for p in left:
        p.kill()
    leaked = new_objects(before)
    remove_objects(leaked)
    assert not left, f"processes left running: {[(p.pid, p.cmdline()) for p in left]}"
    assert leaked == {"shm": [], "sem": []}, f"SysV objects left behind: {leaked}"


def check_rates(section, items, modes):
    assert list(section["items"]) == items
    assert section["modes"] == modes and section["repeats"] == 1
    assert len(section["loadavg_at_start"]) == 3
    for name, item in section["items"].items():
        for mode in modes:
            entry = item["modes"][mode]
            positive(entry["rate_per_s"], f"{name}/{mode} rate")
            positive(entry["median_ns"], f"{name}/{mode} median")
            positive(entry["percent_of_native"], f"{name}/{mode} % of native")
            assert len(entry["runs"]) == 1
            for run in entry["runs"]:
                positive(run["calls"], f"{name}/{mode} calls")
                if mode.startswith("lsca"):
                    assert run["proxied"], (name, mode, run)
                    for what, count in run["proxied"].items():
                        positive(count, f"{name}/{mode} proxied {what}")
        if item["target"] is not None:
            assert item["target"]["mode"] == "lsca"
            assert isinstance(item["target"]["met"], bool)


def test_quick_process_loops_busy(tmp_path, nothing_left):
    report_file, plot_file = tmp_path / "bench.json", tmp_path / "bench.png"
    proc = bench("--quick", "--sections", "process,loops,busy", "--json", str(report_file),
                 "--plot", str(plot_file))
    assert proc.returncode == 0, f"lsca bench failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    for heading in ("process start, per second", "UnixBench-style loops", "busy: per-call cost",
                    "lsca >= 70% of native", "lsca >= 80% of native", "load average"):
        assert heading in proc.stdout, heading

    report = json.loads(report_file.read_text())
    machine = report["machine"]
    assert machine["nproc"] >= 1 and len(machine["loadavg"]) == 3
    modes = report["modes"]
    assert {"native", "lsca", "lsca+trace"} <= set(modes)      # strace: when installed
    assert "ops" not in report and "scaling" not in report and "workloads" not in report

    check_rates(report["process"], PROCESS_ITEMS, modes)
    check_rates(report["loops"], LOOP_ITEMS, modes)
    for name in ("exec", "fork+wait"):
        assert report["process"]["items"][name]["target"] is not None
    for run in report["process"]["items"]["spawn"]["modes"]["lsca"]["runs"]:
        # every /bin/true started registered with the supervisor
        assert run["proxied"]["processes"] >= run["calls"] + run["warmup"]
    for name in LOOP_ITEMS:
        assert report["loops"]["items"][name]["target"] is not None
        for run in report["loops"]["items"][name]["modes"]["lsca"]["runs"]:
            assert min(run["proxied"].values()) >= run["calls"] + run["warmup"], (name, run)

    busy = report["busy"]
    assert busy["hogs"] == machine["nproc"] and list(busy["ops"]) == BUSY_OPS
    for op, entry in busy["ops"].items():
        for mode in modes:
            positive(entry["modes"][mode]["median_ns"], f"busy {op}/{mode}")
            if mode.startswith("lsca"):
                for run in entry["modes"][mode]["runs"]:
                    assert run["proxied"] and min(run["proxied"].values()) >= run["calls"] + run["warmup"]
        if "strace" in modes:
            assert isinstance(entry["lsca_below_strace"], bool)
            positive(entry["strace_over_lsca"], f"busy {op} strace/lsca")
    if "strace" in modes:
        assert isinstance(busy["ops"]["write-1B"]["lsca_10x_cheaper_than_strace"], bool)

    assert not plot_file.exists()            # no scaling section: only the sections' figure
    assert (tmp_path / "bench-sections.png").read_bytes()[:8] == PNG_MAGIC


def test_quick_workloads(tmp_path, nothing_left):
    report_file = tmp_path / "workloads.json"
    proc = bench("--quick", "--workloads-only", ",".join(WORKLOADS), "--json", str(report_file), timeout=180)
    assert proc.returncode == 0, f"lsca bench failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    assert "workloads: wall time" in proc.stdout and "proxy check passed" in proc.stdout

    report = json.loads(report_file.read_text())
    assert report["settings"]["sections"] == ["workloads"]      # --workloads-only alone: only workloads
    section = report["workloads"]
    assert section["failures"] == []
    assert section["repeats"] == 1 and section["size"] == "quick"
    modes = section["modes"]
    assert modes[:2] == ["native", "lsca"]
    assert sorted(list(section["workloads"]) + list(section["skipped"])) == sorted(WORKLOADS)
    assert "compileall" in section["workloads"] and "http" in section["workloads"]   # need only Python
    for name, entry in section["workloads"].items():
        for mode in modes:
            positive(entry["modes"][mode]["median_s"], f"{name}/{mode} seconds")
            positive(entry["x_native"][mode], f"{name}/{mode} x native")
        assert entry["modes"]["lsca"]["runs"], name
        for run in entry["modes"]["lsca"]["runs"]:
            positive(run["proxied_total"], f"{name} proxied calls")
            positive(run["processes"], f"{name} processes")
        assert isinstance(entry["lsca_within_limit"], bool)
    http = section["workloads"]["http"]
    assert http["requests"] == 40
    for mode in modes:
        positive(http["requests_per_s"][mode], f"http/{mode} requests/s")
    # the server is what runs under lsca: it made the socket calls, at least one send per answer
    proxied = http["modes"]["lsca"]["runs"][0]["proxied"]
    assert proxied.get("sendto", 0) + proxied.get("sendmsg", 0) + proxied.get("writev", 0) >= http["requests"], proxied


def test_interrupted_busy_section_kills_its_hogs(nothing_left):
    """Ctrl-C while the hogs spin: lsca bench exits 130 and every hog is gone (killed by pid)."""
    proc = subprocess.Popen([sys.executable, "-m", "lsca.cli", "bench", "--sections", "busy", "--modes",
                             "native,lsca", "--repeats", "50", "--run-ms", "200"],
                            env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        hogs = None
        deadline = time.monotonic() + 60
        while hogs is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            m = re.search(r"CPU hog\(s\) running \(pids ([\d, ]+)\)", line)
            if m:
                hogs = [int(p) for p in m.group(1).split(",")]
        assert hogs, "lsca bench never said that its hogs run"
        assert all(psutil.pid_exists(pid) for pid in hogs)
        proc.send_signal(signal.SIGINT)
        proc.stderr.read()
        assert proc.wait(60) == 130
        assert wait_until(lambda: not any(psutil.pid_exists(pid) and
                                          psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                                          for pid in hogs), timeout=5), f"hogs left: {hogs}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()


def test_help_explains_the_sections():
    proc = bench("--help")
    assert proc.returncode == 0
    for word in ("process (UnixBench style)", "loops (UnixBench style)", "busy:", "workloads (not in the default",
                 "--workloads-only", "--workload-repeats", "--hogs", "--busy-ops", "--http-requests",
                 "FILE-sections.png", "Execl Throughput", "Pipe-based Context Switching"):
        assert word in proc.stdout, word
