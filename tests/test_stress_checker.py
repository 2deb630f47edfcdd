"""The stress program's checker (stress/checker.py) on data files made by hand: each kind of
damage it must report is reported, and what it must let pass is let pass. A checker that
found nothing would make every stress run pass."""
import os
import sys

from hypothesis import given, strategies as st

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "stress"))

from checker import RETRIED, Checker  # noqa: E402
from records import FAILED_EIO, OK, PW_BLOCK, make_record, parse_record, prefix_of  # noqa: E402


def write(path, *parts):
    with open(path, "ab") as f:
        for p in parts:
            f.write(p)


def check(tmp_path, reports, finished=()):
    checker = Checker()
    for cid, tid, kind, seq, code in reports:
        checker.ledger(cid, tid, kind).report(kind, seq, code)
    checker.check_files(str(tmp_path), {key: {"seq": 0} for key in finished})
    return checker


def test_whole_reported_records_pass(tmp_path):
    write(tmp_path / "c1-t0.log", make_record(1, 0, b"A", 1, 100), make_record(1, 0, b"V", 2, 300))
    write(tmp_path / "shared.log", make_record(1, 0, b"S", 3, 80))
    c = check(tmp_path, [(1, 0, "A", 1, OK), (1, 0, "V", 2, OK), (1, 0, "S", 3, OK)], finished=[(1, 0)])
    assert (c.lost, c.duplicated, c.torn, c.phantom) == ([], [], [], [])
    assert c.records_found == 3 and c.writes["ok"] == 3


def test_a_successful_write_whose_record_is_missing_is_lost(tmp_path):
    write(tmp_path / "c1-t0.log", make_record(1, 0, b"A", 1, 100))
    c = check(tmp_path, [(1, 0, "A", 1, OK), (1, 0, "A", 2, OK)])
    assert len(c.lost) == 1 and "(1, 0, 'A', 2)" in c.lost[0]


def test_a_record_found_twice_is_duplicated_even_when_its_write_failed(tmp_path):
    rec = make_record(1, 0, b"A", 1, 100)
    write(tmp_path / "c1-t0.log", rec, rec)
    c = check(tmp_path, [(1, 0, "A", 1, FAILED_EIO)])
    assert len(c.duplicated) == 1 and "EIO" in c.duplicated[0]


def test_a_cut_off_record_is_torn_unless_its_write_did_not_succeed(tmp_path):
    ok, failed = make_record(1, 0, b"A", 1, 200), make_record(1, 0, b"A", 2, 200)
    write(tmp_path / "c1-t0.log", ok[:150] + b"\n", failed[:120] + b"\n")
    c = check(tmp_path, [(1, 0, "A", 1, OK), (1, 0, "A", 2, FAILED_EIO)])
    assert c.partial_unknown == 1
    assert len(c.torn) == 1 and "offset 0" in c.torn[0]


def test_a_flipped_byte_and_a_record_in_the_wrong_file_are_torn(tmp_path):
    rec = bytearray(make_record(1, 0, b"A", 1, 100))
    rec[50] ^= 1
    write(tmp_path / "c1-t0.log", bytes(rec))
    write(tmp_path / "c2-t0.log", make_record(1, 0, b"A", 2, 100))
    c = check(tmp_path, [(1, 0, "A", 1, OK), (1, 0, "A", 2, OK)])
    assert len(c.torn) == 2 and any("wrong file" in t for t in c.torn)


def test_pwrite_blocks_must_sit_at_their_own_offset(tmp_path):
    block = make_record(1, 0, b"P", 3, PW_BLOCK)
    write(tmp_path / "c1-t0.pw", bytes(PW_BLOCK), block)          # seq 3 at block 1
    c = check(tmp_path, [(1, 0, "P", 3, OK)])
    assert any("wrong offset" in t for t in c.torn)


def test_a_record_of_a_thread_that_reported_everything_but_never_issued_it_is_phantom(tmp_path):
    write(tmp_path / "c1-t0.log", make_record(1, 0, b"A", 1, 100), make_record(1, 0, b"A", 2, 100))
    c = check(tmp_path, [(1, 0, "A", 1, OK)], finished=[(1, 0)])
    assert len(c.phantom) == 1 and "(1, 0, 'A', 2)" in c.phantom[0]


def test_retried_calls_are_the_tables_idempotent_ops():
    assert {"pread", "pwrite", "fstat", "stat", "fsync", "truncate", "chmod"} <= RETRIED
    assert not {"write", "read", "open", "mkdir", "rename"} & RETRIED


@given(cid=st.integers(0, 999), tid=st.integers(0, 99), kind=st.sampled_from([b"A", b"S", b"P", b"G"]),
       seq=st.integers(0, 10**6), total=st.integers(64, 5000), data=st.data())
def test_records_parse_back_and_their_prefixes_name_them(cid, tid, kind, seq, total, data):
    rec = make_record(cid, tid, kind, seq, total)
    assert len(rec) == total and rec.endswith(b"\n")
    assert parse_record(rec[:-1]) == (cid, tid, kind, seq)
    head = len(b"R %d %d %s %d %d " % (cid, tid, kind, seq, total))
    cut = data.draw(st.integers(head, total - 2))      # less than the line without its newline
    assert prefix_of(rec[:cut]) == (cid, tid, kind, seq)
    assert parse_record(rec[:cut]) is None
