"""The C record codec (sutradb.storage._codec) against the reference decoder,
``sutradb.storage.records.decode_record``: the same records from intact files, a
CorruptDatabaseError (never a crash, never a neighbour's bytes) from damaged ones."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sutradb.errors import CorruptDatabaseError
from sutradb.storage.format import crc32 as zcrc, packb
from sutradb.storage._codec import RecordFile, crc32
from sutradb.storage.records import decode_record, encode_record

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 63, 2 ** 64 - 1),
                     st.floats(allow_nan=False), st.text(max_size=20), st.binary(max_size=20))
_values = st.recursive(_scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                     st.dictionaries(st.text(max_size=6), c, max_size=4)),
                       max_leaves=10)
_records = st.tuples(st.one_of(st.none(), st.text(max_size=12)),
                     st.one_of(st.none(), st.text(max_size=60)),
                     st.one_of(st.none(), st.dictionaries(st.text(max_size=8), _values, max_size=5)))


def _file(raws: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    rec = np.frombuffer(b"".join(raws) or b"\0", np.uint8)[:sum(map(len, raws))]
    ends = np.cumsum([len(r) for r in raws], dtype=np.uint64) if raws else np.zeros(0, np.uint64)
    return np.ascontiguousarray(rec), ends


def _rf(raws: list[bytes], ids=None) -> RecordFile:
    rec, ends = _file(raws)
    ids = np.arange(100, 100 + len(raws), dtype=np.int64) if ids is None else ids
    return RecordFile(rec, ends, ids, "f.rec", "f.ends")


def _ref(raws, row):
    return decode_record(100 + row, raws[row], "f.rec")


@given(st.binary(max_size=300))
def test_crc32_is_zlib_crc32(data):
    assert crc32(np.frombuffer(data, np.uint8)) == zlib.crc32(data)


def test_crc32_at_every_length_and_alignment():
    buf = np.random.default_rng(0).integers(0, 256, 4100, dtype=np.uint8)
    for start in range(9):
        for n in list(range(40)) + [63, 64, 65, 1000, 4091]:
            assert crc32(buf[start:start + n]) == zlib.crc32(buf[start:start + n].tobytes())


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_records, max_size=12), st.data())
def test_records_equal_the_reference_decoder(recs, data):
    raws = [encode_record(*r) for r in recs]
    rf = _rf(raws)
    for row in range(len(raws)):
        assert rf.at(row) == _ref(raws, row)
    rows = data.draw(st.lists(st.integers(0, max(len(raws) - 1, 0)), max_size=20)) if raws else []
    R = np.array(rows, np.int64)
    want = [_ref(raws, r) for r in rows]
    assert rf.many(R) == want
    keys, texts, metas = rf.columns(R)
    assert [(k, t, m) for k, t, m in zip(keys, texts, metas)] == [(w.key, w.text, w.metadata) for w in want]


def test_each_decoded_record_has_its_own_metadata_dict():
    raws = [b"", encode_record("k", None, None), encode_record(None, "t", {"a": 1})] * 2
    rf = _rf(raws)
    keys, texts, metas = rf.columns(np.arange(6, dtype=np.int64))
    assert metas == [{}, {}, {"a": 1}] * 2
    assert len({id(m) for m in metas}) == 6


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_records, min_size=1, max_size=6), st.data())
def test_damage_raises_exactly_when_the_reference_raises(recs, data):
    raws = [encode_record(*r) for r in recs]
    row = data.draw(st.integers(0, len(raws) - 1))
    raw = bytearray(raws[row])
    if not raw:
        return
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    raws[row] = bytes(raw)
    rf = _rf(raws)
    try:
        want = _ref(raws, row)
    except CorruptDatabaseError:
        with pytest.raises(CorruptDatabaseError, match="f.rec"):
            rf.at(row)
        with pytest.raises(CorruptDatabaseError, match="f.rec"):
            rf.columns(np.arange(len(raws), dtype=np.int64))
    else:
        assert rf.at(row) == want


def _with_crc(body: bytes) -> bytes:
    return zcrc(body).to_bytes(4, "little") + body


@pytest.mark.parametrize("body, what", [
    (packb(["k", None, None]) + b"\xc0", "trailing bytes"),
    (packb(["k", "a long enough text", None])[:-3], "truncated text"),
    (b"\x93\xa1k\xc0", "list of 3 with 2 items"),
    (packb(["k", None]), "list of 2"),
    (packb([1, None, None]), "int key"),
    (packb(["k", None, [1]]), "list metadata"),
    (packb({"k": 1}), "a map"),
    (b"\xd4\x01\x02", "an ext type"),
])
def test_a_body_with_a_valid_checksum_but_a_bad_structure(body, what):
    """Damage that keeps a valid CRC (or a crafted file): the single and the batch path
    both raise, and the batch path never reads into the next record's bytes."""
    good = encode_record("next", "record", {"n": 1})
    raws = [_with_crc(body), good]
    rf = _rf(raws)
    with pytest.raises(CorruptDatabaseError):
        decode_record(100, raws[0], "f.rec")
    with pytest.raises(CorruptDatabaseError, match="f.rec"):
        rf.at(0)
    with pytest.raises(CorruptDatabaseError, match="f.rec"):
        rf.columns(np.array([0, 1], np.int64))
    assert rf.at(1) == _ref(raws, 1)


def test_bad_offsets_name_the_offsets_file():
    raws = [encode_record("a", None, None), encode_record("b", None, None)]
    rec, ends = _file(raws)
    ids = np.arange(2, dtype=np.int64)
    for bad in ([5, 3], [len(rec) + 1, len(rec) + 2], [2, len(rec)], [0, 2 ** 63]):
        rf = RecordFile(rec, np.array(bad, np.uint64), ids, "f.rec", "f.ends")
        with pytest.raises(CorruptDatabaseError):
            [rf.at(r) for r in range(2)]
        with pytest.raises(CorruptDatabaseError):
            rf.columns(np.arange(2, dtype=np.int64))
    rf = RecordFile(rec, np.array([5, 3], np.uint64), ids, "f.rec", "f.ends")
    with pytest.raises(CorruptDatabaseError, match="f.ends: bad record offsets for row 1"):
        rf.at(1)
    with pytest.raises(IndexError):
        _rf(raws).at(2)
    with pytest.raises(ValueError):
        RecordFile(rec, ends, np.arange(3, dtype=np.int64), "f.rec", "f.ends")


def test_records_of_a_real_store_through_both_paths(tmp_path):
    """Store.record_at / records_at / record_columns (the codec's users) agree with
    the reference decoder on a checkpointed store with a log tail."""
    from sutradb.storage import Store
    s = Store.open(str(tmp_path / "s"))
    n = 300
    with s.begin() as t:
        t.put(np.arange(n), keys=[f"k{i}" if i % 3 else None for i in range(n)],
              texts=[f"text {i}" if i % 5 else None for i in range(n)],
              metadata=[{"i": i, "l": [i, {"x": i}]} if i % 2 else None for i in range(n)])
    s.checkpoint()
    with s.begin() as t:
        t.put([n, 7], texts=["tail", "updated"], metadata=[None, {"u": 1}])
    rows = np.random.default_rng(1).integers(0, s.n_rows, 500)
    want = [s.record_at(int(r)) for r in rows]
    assert s.records_at(rows) == want
    keys, texts, metas = s.record_columns(rows)
    assert list(zip(keys, texts, metas)) == [(w.key, w.text, w.metadata) for w in want]
    seg = rows[rows < 300]
    assert s.records_at(seg) == [w for w, r in zip(want, rows) if r < 300]
    s.close()
