"""The op table (LSCA_OPS in lsca_abi.h) is the one source of every op fact, and what it
says agrees with what the handlers do."""
import inspect
import os
import re
from types import SimpleNamespace

import pytest

from lsca import ops
from lsca.abi import OP_NAMES, ffi, lib
from lsca.opclasses import CLASSES
from lsca.workers.gate import DESCRIPTOR_OPS, Gate, lexical_paths
from lsca.workers.handlers import HANDLERS
from lsca.policy import Policy

POLICY_PATH_OPS = sorted(code for code in ops.WITH_PATHS if code not in ops.REPORTS)


def test_the_enum_and_the_table_are_one_list():
    assert {code: op.name for code, op in ops.BY_CODE.items()} == OP_NAMES
    assert sorted(ops.BY_CODE) == list(range(1, lib.LSCA_OP_COUNT))
    assert lib.LSCA_OP_COUNT <= lib.LSCA_OP_MAX


def test_every_op_has_a_worker_handler_and_nothing_else_has_one():
    assert {code for code, h in enumerate(HANDLERS) if h is not None} == set(ops.BY_CODE)


def test_reports_are_answered_by_the_compiled_handler_and_decided_by_no_policy():
    assert ops.REPORTS and all(lib.lsca_is_io_op(code) for code in ops.REPORTS)
    assert not Gate(Policy.from_text('default = "deny"\n')).codes & ops.REPORTS


def _slot(code, names, times=False):
    """A slot of op code carrying names (bytes) the way the agent lays them out."""
    slot = ffi.new("struct lsca_slot *")
    slot.op = code
    data = b""
    if ops.BY_CODE[code].has(lib.LSCA_OPF_TIMES_FIRST):
        slot.args[2], slot.args[3] = int(times), 1
        data = bytes(ops.TIMES_SIZE) if times else b""
    data += b"".join(n + b"\0" for n in names)
    ffi.memmove(slot.data, data, len(data))
    slot.data_len = len(data)
    return slot


@pytest.mark.parametrize("times", [False, True])
@pytest.mark.parametrize("code", POLICY_PATH_OPS, ids=lambda c: ops.BY_CODE[c].name)
def test_the_policy_sees_the_paths_of_every_path_op(code, times):
    """A path op that runs natively is decided on its paths as the table places them."""
    line = ops.BY_CODE[code]
    names = [f"/lsca-table/{line.name}/{i}".encode() for i in range(line.npaths)]
    assert lexical_paths(None, _slot(code, names, times)) == names[line.first_checked:]


def test_path_ops_are_file_ops_and_descriptor_ops_are_desc_or_network():
    for code, line in ops.BY_CODE.items():
        if line.npaths:
            assert line.name in CLASSES["file"]
        if code in DESCRIPTOR_OPS:
            assert line.name in CLASSES["desc"] | CLASSES["network"]


@pytest.mark.parametrize("code", sorted(DESCRIPTOR_OPS | {lib.LSCA_OP_UTIMENSAT}),
                         ids=lambda c: ops.BY_CODE[c].name)
def test_descriptor_ops_are_decided_on_the_name_of_their_file(code, tmp_path):
    """args[0] is the client's descriptor (utimensat's without a path: futimens)."""
    target = tmp_path / "f"
    target.write_bytes(b"")
    fd = os.open(target, os.O_RDONLY)
    try:
        slot = _slot(code, [])
        slot.args[0] = fd
        if code == lib.LSCA_OP_UTIMENSAT:
            slot.args[3] = 0
        client = SimpleNamespace(proc="/proc/self")
        assert lexical_paths(client, slot) == [os.fsencode(target)]
    finally:
        os.close(fd)


def _sends_descriptors(handler, seen=()):
    """Whether the handler (or a handler it hands the call to) sends the client descriptors."""
    source = inspect.getsource(handler)
    if "send_new_fds(" in source or "send_fds(" in source:
        return True
    called = (handler.__globals__.get(name) for name in re.findall(r"\b(h_\w+)\(", source))
    return any(_sends_descriptors(h, seen + (handler,)) for h in called if h and h not in seen + (handler,))


def test_descriptor_creating_ops_are_the_handlers_that_send_descriptors():
    creating = {code for code in ops.BY_CODE
                if ops.BY_CODE[code].has(lib.LSCA_OPF_NEW_FDS | lib.LSCA_OPF_NEW_FDS_BY_CMD)}
    assert {code for code in ops.BY_CODE if _sends_descriptors(HANDLERS[code])} == creating
    assert all(ops.creates_fds(code, 0) for code in creating)
    assert not any(ops.creates_fds(code, 0) for code in set(ops.BY_CODE) - creating)
    assert not ops.creates_fds(lib.LSCA_OP_FCNTL, 3)          # F_GETFL makes nothing


def test_idempotent_ops_create_nothing_and_block_on_nothing():
    """A call run twice must not hand out descriptors twice or wait on another party."""
    for code in ops.IDEMPOTENT:
        line = ops.BY_CODE[code]
        assert not line.has(lib.LSCA_OPF_NEW_FDS | lib.LSCA_OPF_NEW_FDS_BY_CMD | lib.LSCA_OPF_MAY_BLOCK)
    assert ops.AT_OFFSET <= ops.IDEMPOTENT
