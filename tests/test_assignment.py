"""Which worker a new client gets. A client calling and the worker answering each want a CPU:
clients share the workers already serving once those number half the CPUs (more would only
add spinners taking turns on too few CPUs), and spread over the others below that."""
import json
import os
import subprocess
import sys

from conftest import clean_env, running_supervisor

PY = sys.executable
# Makes a call through its worker, says ready, waits for its stdin to close.
HOLD = "import os; os.write(1, b'ready\\n'); os.read(0, 1)"


def test_two_clients_share_a_worker_below_four_cpus_and_spread_from_four():
    cpus = len(os.sched_getaffinity(0))
    with running_supervisor(workers=2) as sup:
        env = {**clean_env(), "LSCA_SOCKET": sup.socket}
        clients = [subprocess.Popen([PY, "-m", "lsca.cli", "run", "--", PY, "-c", HOLD], env=env,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(2)]
        try:
            for client in clients:
                assert client.stdout.readline() == b"ready\n"     # registered, and served
            stats = json.loads(subprocess.run([PY, "-m", "lsca.cli", "stats", "--json", "--interval", "0"],
                                              env=env, capture_output=True, check=True, timeout=60).stdout)
        finally:
            for client in clients:
                client.stdin.close()
                try:
                    client.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    client.kill()
                    client.wait()
                client.stdout.close()
        shards = sorted(w["shards"] for w in stats["workers"])
        assert shards == ([0, 2] if cpus < 4 else [1, 1]), (cpus, stats["workers"])
