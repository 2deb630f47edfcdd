"""Differential tests: the same I/O sequence natively and under LSCA must give the
same results, errno values, offsets and file contents, and every call of the
sequence must have been executed by a worker (seen in the trace)."""
import json
import os
import sys
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PROGRAMS, parse_trace, run_native
from lsca.opclasses import syscall_name

IO_OPS = os.path.join(PROGRAMS, "io_ops.py")
ROLES = ["rw", "append", "ronly", "wonly", "null", "bad", "pipe_r", "pipe_w", "nb_r", "nb_w"]
CLOSABLE = [r for r in ROLES if r != "null"]      # null carries the trace markers
# Sizes around the inline limit exercise both ways bytes travel (slot, process_vm_*).
SIZES = st.one_of(st.integers(0, 300), st.sampled_from([4096, 65535, 65536, 65537, 150000]))


def pattern(seed, size):
    return bytes((seed + i * 7) % 251 for i in range(size)).hex()


data = st.builds(pattern, st.integers(0, 250), SIZES)
small_data = st.builds(pattern, st.integers(0, 250), st.integers(0, 64))
fd = st.sampled_from(ROLES)
offset = st.integers(-1, 400)

op = st.one_of(
    st.fixed_dictionaries({"op": st.just("write"), "fd": fd, "data": data}),
    st.fixed_dictionaries({"op": st.just("pwrite"), "fd": fd, "data": data, "offset": offset}),
    st.fixed_dictionaries({"op": st.just("writev"), "fd": fd, "chunks": st.lists(small_data, max_size=4)}),
    st.fixed_dictionaries({"op": st.just("read"), "fd": fd, "size": SIZES}),
    st.fixed_dictionaries({"op": st.just("pread"), "fd": fd, "size": SIZES, "offset": offset}),
    st.fixed_dictionaries({"op": st.just("readv"), "fd": fd,
                           "sizes": st.lists(st.one_of(st.integers(0, 50), st.just(70000)), max_size=4)}),
    st.fixed_dictionaries({"op": st.just("lseek"), "fd": fd, "offset": st.integers(-10, 400),
                           "whence": st.sampled_from([0, 1, 2, 3, 4, 9])}),
    st.fixed_dictionaries({"op": st.just("ftruncate"), "fd": fd, "length": st.integers(-1, 400)}),
    st.fixed_dictionaries({"op": st.sampled_from(["fsync", "fdatasync", "fstat"]), "fd": fd}),
    st.fixed_dictionaries({"op": st.just("close"), "fd": st.sampled_from(CLOSABLE)}),
)

SETTINGS = settings(max_examples=int(os.environ.get("LSCA_DIFF_EXAMPLES", "25")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


def run_both(lsca_run, tmp_path, spec):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    outputs = []
    native_dir, lsca_dir = tmp_path / "native", tmp_path / "lsca"
    for d in (native_dir, lsca_dir):
        d.mkdir(exist_ok=True)
        for f in d.iterdir():
            f.unlink()
    native = run_native([sys.executable, IO_OPS, str(spec_file), str(native_dir)])
    assert native.returncode == 0, native.stderr.decode()
    proc, stats, trace = lsca_run([sys.executable, IO_OPS, str(spec_file), str(lsca_dir)], trace=True)
    assert proc.returncode == 0, proc.stderr.decode()
    outputs = json.loads(native.stdout), json.loads(proc.stdout)
    return outputs, stats, parse_trace(trace)


def executed(spec, result):
    """Trace names of the ops that ran (skipped ones made no proxied call)."""
    return [syscall_name(o["op"]) for o, r in zip(spec["ops"], result["results"])
            if not r.get("skipped")]


def between_markers(calls, pid=None):
    names, inside = [], False
    for call_pid, name, args, _result in calls:
        if call_pid != pid:
            continue
        if "LSCA-TEST-BEGIN" in args:
            inside = True
        elif "LSCA-TEST-END" in args:
            return names
        elif inside:
            names.append(name)
    raise AssertionError("trace markers not found")


@SETTINGS
@given(ops=st.lists(op, max_size=25))
def test_single_thread_sequences_match_native(lsca_run, tmp_path, ops):
    spec = {"mode": "seq", "ops": ops}
    (native, lsca), stats, calls = run_both(lsca_run, tmp_path, spec)
    assert lsca == native
    # Every call of the sequence went through a worker, in order.
    assert between_markers(calls) == executed(spec, native)


@SETTINGS
@given(ops=st.lists(st.tuples(op, st.integers(0, 3)), max_size=25))
def test_multi_thread_sequences_match_native(lsca_run, tmp_path, ops):
    spec = {"mode": "threads", "ops": [dict(o, thread=t) for o, t in ops]}
    (native, lsca), stats, calls = run_both(lsca_run, tmp_path, spec)
    assert lsca == native
    assert between_markers(calls) == executed(spec, native)


@SETTINGS
@given(ops=st.lists(st.tuples(op, st.booleans()), max_size=20))
def test_forked_children_match_native(lsca_run, tmp_path, ops):
    spec = {"mode": "fork", "ops": [dict(o, child=c) for o, c in ops]}
    (native, lsca), stats, calls = run_both(lsca_run, tmp_path, spec)
    assert lsca == native
    # Children registered on their own (their trace lines carry their pid) and were served.
    child_ops = Counter(name for o, r in zip(spec["ops"], native["results"]) if o["child"] and not r.get("skipped")
                        for name in [syscall_name(o["op"])])
    served = Counter(name for pid, name, _a, _r in calls if pid is not None)
    assert not child_ops - served
    assert stats["processes"] >= 1 + (1 if child_ops else 0)
