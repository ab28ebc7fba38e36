"""The record codec and row chunks (sutradb.storage.records) on their own."""

from __future__ import annotations

import numpy as np
import pytest

from sutradb.errors import CorruptDatabaseError, DimensionError, InvalidArgumentError
from sutradb.storage import Record
from sutradb.storage.format import MAX_RECORD, crc32, packb
from sutradb.storage.records import Chunk, as_ids, decode_record, encode_record


@pytest.mark.parametrize("key, text, meta", [
    ("k", "some text", {"a": 1, "b": [1, 2.5, "x"], "c": {"d": b"\x00\xff"}}),
    (None, "only text", None),
    ("only key", None, {}),
    ("clé", "ünïcødé ✓", {"nested": {"list": [None, True, -3]}}),
])
def test_round_trip(key, text, meta):
    raw = encode_record(key, text, meta)
    assert raw[:4] == crc32(raw[4:]).to_bytes(4, "little")
    assert decode_record(7, raw, "f") == Record(7, key, text, meta or {})


def test_empty_record_is_no_bytes():
    assert encode_record(None, None, None) == b"" == encode_record(None, None, {})
    assert decode_record(3, b"", "f") == Record(3, None, None, {})


def test_layout_is_crc_then_msgpack_list():
    raw = encode_record("k", None, {"x": 1})
    assert raw[4:] == packb(["k", None, {"x": 1}])


@pytest.mark.parametrize("args", [(1, None, None), (None, b"bytes", None), (None, None, [1]),
                                  ("k", None, {"f": object()})])
def test_bad_fields_are_rejected(args):
    with pytest.raises(InvalidArgumentError):
        encode_record(*args)


def test_too_large_record_is_rejected(monkeypatch):
    from sutradb.storage import records
    monkeypatch.setattr(records, "MAX_RECORD", 16)
    with pytest.raises(InvalidArgumentError, match="exceeds"):
        encode_record("k", "x" * 32, None)
    assert MAX_RECORD > 16


def test_damage_is_reported_with_the_file_name():
    raw = bytearray(encode_record("k", "text", {"a": 1}))
    with pytest.raises(CorruptDatabaseError, match="the-file: record of id 5 is 3 bytes"):
        decode_record(5, bytes(raw[:3]), "the-file")
    raw[-1] ^= 1
    with pytest.raises(CorruptDatabaseError, match="the-file: record of id 5: checksum"):
        decode_record(5, bytes(raw), "the-file")
    body = packb(["k", 3, None])                 # a text that is not a str
    with pytest.raises(CorruptDatabaseError, match="bad structure"):
        decode_record(5, crc32(body).to_bytes(4, "little") + body, "the-file")


def test_chunk_nbytes():
    ids = np.arange(3, dtype=np.int64)
    ends = np.array([2, 4, 6], np.uint64)
    ch = Chunk(ids, np.zeros((3, 8), np.uint8), None, b"x" * 6, ends, [None] * 3)
    assert ch.row0 == -1
    assert ch.nbytes == 24 + 24 + 6 + 24


def test_as_ids():
    assert as_ids(5).tolist() == [5]
    assert as_ids([]).dtype == np.int64
    a = as_ids(np.array([1, 2], np.uint32))
    assert a.dtype == np.int64 and a.flags.c_contiguous
    with pytest.raises(DimensionError):
        as_ids([[1]])
    with pytest.raises(InvalidArgumentError, match="integers"):
        as_ids([1.5])
    with pytest.raises(InvalidArgumentError, match="int64 range"):
        as_ids(np.array([2 ** 63], np.uint64))
    with pytest.raises(InvalidArgumentError, match="src"):
        as_ids(["a"], "src")


def test_records_at_is_record_at_of_each_row(tmp_path):
    """Store.records_at (the bulk read of to_arrow / export): checkpointed rows and
    the log's rows, in any order, repeats allowed."""
    from sutradb.storage import Store
    s = Store.open(str(tmp_path / "s"))
    with s.begin() as t:
        t.put(np.arange(5), keys=[f"k{i}" for i in range(5)], texts=["a", None, "c", "d", "e"],
              metadata=[{"i": i} for i in range(5)])
    s.checkpoint()
    with s.begin() as t:
        t.put([5, 6, 2], texts=["f", "g", "c2"], metadata=[None, {"x": [1]}, {"i": 22}])
    rows = [7, 0, 3, 3, 5, 1]
    assert s.records_at(rows) == [s.record_at(r) for r in rows]
    assert s.records_at(np.zeros(0, np.int64)) == []
    with pytest.raises(InvalidArgumentError, match="out of range"):
        s.records_at([0, 8])
    s.close()
