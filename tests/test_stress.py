"""A short run of the stress program (stress/run_stress.py): clients and threads under
one supervisor while workers, clients and the supervisor are killed or stopped. No
write lost or duplicated, no record torn, no hang, no SysV object left; and the run
did inject every kind of fault."""
import json
import os
import subprocess
import sys

from conftest import clean_env

STRESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "stress", "run_stress.py")
FAULT_KINDS = ("worker kill", "worker stop", "worker stall", "client kill", "supervisor kill")
MUST_BE_ZERO = ("writes lost", "writes duplicated", "records torn", "phantom writes", "hangs",
                "leaked SysV objects", "leftover processes", "unexpected errors", "read mismatches",
                "unrecovered faults", "client crashes", "shards not freed")


def test_short_stress_run_with_every_kind_of_fault(tmp_path):
    summary_file = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, STRESS, "--duration", "45", "--workers", "2", "--clients", "2", "--threads", "2",
         "--seed", "20240601", "--json", str(summary_file), "--workdir", str(tmp_path / "work")],
        env=clean_env(), capture_output=True, timeout=150)
    out = proc.stdout.decode(errors="replace")
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"stress run failed ({proc.returncode}):\n{out}\n{err[-6000:]}"
    lines = {line[:21].strip(): line[21:].strip() for line in out.splitlines() if len(line) > 21}
    for name in MUST_BE_ZERO:
        assert lines.get(name) == "0", f"{name}: {lines.get(name)}\n{out}"
    assert int(lines["calls completed"]) > 0
    assert out.rstrip().endswith("result: PASS")

    summary = json.loads(summary_file.read_text())
    assert summary["result"] == "PASS"
    for name in MUST_BE_ZERO:
        assert summary[name.replace(" ", "_").lower()] == 0, name
    for kind in FAULT_KINDS:
        assert summary["faults"][kind] >= 1, f"no {kind} fault was injected: {summary['faults']}"
    assert summary["max_shards"] >= 1, "no client was served by the supervisor"
    assert summary["writes_checked"].get("ok", 0) > 0
