"""Requests a client writes by hand into its shard (programs/fake_client.py registers without the
agent) that once reached past a buffer of the worker's compiled route: a rename whose
directory part is longer than a path may be, and a recvfrom that fails while asking for the
sender's address. Each fails or runs natively; the worker lives on, and nothing of its
memory reaches the client."""
import json
import os
import subprocess
import sys

from conftest import PROGRAMS, clean_env, running_supervisor, wait_until, workers_of

PY = sys.executable

REQUESTS = r"""
import importlib.util, json, sys
from lsca.abi import ffi, lib, shard_slot
spec = importlib.util.spec_from_file_location("fake_client", sys.argv[2])
fake = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fake)
shm, shard, header, chan = fake.attach(sys.argv[1])
slot = shard_slot(shm.address, 0)
call = lambda op, args, data: fake.call(shm, 0, op, args, data)

out = {}
# A directory part of 8,000 bytes (each name of a rename may be up to a path's length only).
out["rename"] = call(lib.LSCA_OP_RENAMEAT2, [-100, -100, 0], b"/" + b"a" * 8000 + b"/b\0c\0")
out["link"] = call(lib.LSCA_OP_LINKAT, [-100, -100, 0], b"c\0/" + b"a" * 8000 + b"/b\0")
# recvfrom on a descriptor it does not have, asking for the address: the slot's first bytes stay ours.
ffi.memmove(slot.data, bytes(lib.LSCA_ADDR_MAX), lib.LSCA_ADDR_MAX)
out["recvfrom"] = call(lib.LSCA_OP_RECVFROM, [999, 16, 0, 1], b"")
out["address_bytes"] = bytes(ffi.buffer(slot.data, lib.LSCA_ADDR_MAX)).hex()
out["addrlen"] = slot.new_fds[0]
print(json.dumps(out), flush=True)
"""


def test_overlong_names_and_a_failed_recvfrom_fail_that_call_only():
    with running_supervisor(workers=1) as sup:
        assert wait_until(lambda: len(workers_of(sup)) == 1)     # forked: the pid to compare
        before = workers_of(sup)
        run = subprocess.run([PY, "-c", REQUESTS, sup.socket, os.path.join(PROGRAMS, "fake_client.py")],
                             env=clean_env(), capture_output=True, timeout=60)
        assert run.returncode == 0, run.stderr.decode()[-2000:]
        out = json.loads(run.stdout)
        assert workers_of(sup) == before                   # no worker died on them
        for name in ("rename", "link"):
            status, result, err = out[name]
            # Handed back to run natively, or failed (ENAMETOOLONG, as the kernel says).
            assert status == 1 or (status == 0 and result == -1 and err != 0), (name, out[name])
        assert out["recvfrom"][:3] == [0, -1, 9]                # EBADF
        assert out["address_bytes"] == "00" * 128 and out["addrlen"] == 0
