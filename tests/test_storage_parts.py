"""The collaborators of the store on their own: the log (wal.Log), the manifest
functions, the key index and the link table, without a Store around them."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

from sutradb.errors import CorruptDatabaseError
from sutradb.storage import osio
from sutradb.storage.format import (HEADER_SIZE, MANIFEST_NAME, OP_COMMIT, COMMIT_TRAILER,
                                    decode_manifest, frame, packb, wal_name)
from sutradb.storage.keys import KeyIndex, key_hash, sort_keys
from sutradb.storage.links import LinkTable, sorted_ranges
from sutradb.storage.manifest import (check_create_params, check_manifest, create_generation,
                                      fresh_body, map_files, read_file, sweep, write_manifest)
from sutradb.storage.records import Chunk, encode_record
from sutradb.storage.wal import Log, create_log, decode_op, encode_transaction

UID = uuid.UUID(int=12345).bytes


# --------------------------------------------------------------------------- the log

def _open_log(d, gen=1, full=False):
    fd = osio.open_file(os.path.join(d, wal_name(gen)), os.O_RDWR)
    log = Log(fd, os.path.join(d, wal_name(gen)), d, full)
    log.open_existing(UID, gen)
    return log


def _chunk(ids, key="k"):
    ids = np.array(ids, np.int64)
    recs = [encode_record(f"{key}{i}", f"text {i}", None) for i in ids.tolist()]
    ends = np.cumsum([len(r) for r in recs]).astype(np.uint64)
    return Chunk(ids, np.full((len(ids), 4), 7, np.uint8), None, b"".join(recs), ends,
                 [f"{key}{i}" for i in ids.tolist()])


def _replay(log, txn=0, strict=True):
    got = []
    changed = log.replay(got.append, txn, strict)
    return changed, got


@pytest.mark.parametrize("full", [False, True])
def test_log_append_and_replay_round_trip(tmp_path, full):
    d = str(tmp_path)
    create_log(d, 1, UID, full, False)
    w = _open_log(d, full=full)
    assert w.salt and w.pos == HEADER_SIZE
    w.drop_torn_tail()
    t1 = [("put", _chunk([1, 2])), ("meta", {"m": 1})]
    t2 = [("link", np.array([1], np.int64), np.array([2], np.int64), ["r"], np.array([0.5])),
          ("del", np.array([1], np.int64))]
    w.append(encode_transaction(t1, 1, w.salt), 1 << 20)
    end1 = w.pos
    w.append(encode_transaction(t2, 2, w.salt), 1 << 20)
    if full:
        assert os.path.getsize(w.where) > w.pos          # preallocated zeros follow
    r = _open_log(d)
    changed, got = _replay(r)
    assert changed and r.pos == w.pos and r.txn == 2 and len(got) == 2
    (put, meta), (link, dele) = got
    assert put[0] == "put" and put[1].ids.tolist() == [1, 2] and put[1].keys == ["k1", "k2"]
    assert put[1].rec == t1[0][1].rec and meta == ("meta", {"m": 1})
    assert link[0] == "link" and link[3] == ["r"] and link[4].tolist() == [0.5]
    assert dele[0] == "del" and dele[1].tolist() == [1]
    r.close()
    # a reader that replayed up to the first transaction sees only the second next time
    r = _open_log(d)
    r.pos = end1
    changed, got = _replay(r, txn=1, strict=False)
    assert changed and len(got) == 1 and r.pos == w.pos
    assert not _replay(r, txn=2, strict=False)[0]        # nothing new
    r.check(UID, 1)
    r.close()
    w.close()


def test_log_torn_tail_is_not_applied_and_dropped(tmp_path):
    d = str(tmp_path)
    create_log(d, 1, UID, False, False)
    w = _open_log(d)
    w.append(encode_transaction([("meta", {"a": 1})], 1, w.salt), 1 << 20)
    good = w.pos
    buf = encode_transaction([("meta", {"a": 2})], 2, w.salt)
    for cut in (1, len(buf) // 2, len(buf) - 1):            # a write cut short
        osio.io.pwrite(w.fd, buf[:cut], good)
        r = _open_log(d)
        changed, got = _replay(r)
        assert changed and got == [[("meta", {"a": 1})]] and r.pos == good
        r.drop_torn_tail()                                  # the writer's open
        assert os.path.getsize(r.where) == good
        r.close()
    # ops without their commit record never happened
    osio.io.pwrite(w.fd, buf[:-len(frame(packb([OP_COMMIT, 2, 1, COMMIT_TRAILER]), w.salt))], good)
    r = _open_log(d)
    assert _replay(r)[1] == [[("meta", {"a": 1})]] and r.pos == good
    r.close()
    w.close()


def test_log_commit_out_of_sequence_is_damage(tmp_path):
    d = str(tmp_path)
    create_log(d, 1, UID, False, False)
    w = _open_log(d)
    w.append(encode_transaction([("meta", {})], 5, w.salt), 1 << 20)      # expected 1
    r = _open_log(d)
    with pytest.raises(CorruptDatabaseError, match="out of sequence"):
        _replay(r)
    assert r.pos == HEADER_SIZE
    r.close()
    w.close()


def test_log_of_another_store_or_generation_is_refused(tmp_path):
    d = str(tmp_path)
    create_log(d, 3, UID, False, False)
    fd = osio.open_file(os.path.join(d, wal_name(3)), os.O_RDONLY)
    try:
        with pytest.raises(CorruptDatabaseError):
            Log(fd, "x", d, False).open_existing(uuid.uuid4().bytes, 3)
        with pytest.raises(CorruptDatabaseError):
            Log(fd, "x", d, False).open_existing(UID, 4)
    finally:
        os.close(fd)


def test_decode_op_rejects_malformed_records():
    ch = _chunk([1, 2])
    rec = [1, ch.ids.tobytes(), ch.codes.tobytes(), 4, None, 0, 0, ch.rec, ch.ends.tobytes(),
           ch.keys]
    op = decode_op(rec, "log")
    assert op[0] == "put" and op[1].codes.shape == (2, 4)
    for i, bad in ((3, 5), (1, b"\x00" * 7), (9, ["only one key"]), (7, b"short")):
        broken = list(rec)
        broken[i] = bad
        with pytest.raises(CorruptDatabaseError, match="malformed log record"):
            decode_op(broken, "log")


# --------------------------------------------------------------------------- the manifest

def test_manifest_create_map_round_trip(tmp_path):
    d = str(tmp_path)
    params = check_create_params({"code_size": 8, "dim": 4, "vector_dtype": "float16"})
    create_generation(d, 1, UID, params, "normal")
    gen, body = decode_manifest(read_file(os.path.join(d, MANIFEST_NAME)), "m")
    check_manifest(body, "m")
    assert gen == 1 and body["uuid"] == UID and body["m"] == 8 and body["d"] == 4
    assert set(body["files"]) == {"ids", "ends", "rec", "dead", "codes", "vec"}
    assert body["wal"] == wal_name(1) and os.path.exists(os.path.join(d, wal_name(1)))
    maps = map_files(d, body)
    assert set(maps) == set(body["files"]) and maps["ids"].length == 0
    # a new generation replaces the old atomically; sweep removes what it no longer names
    body2 = dict(body, wal=wal_name(2))
    create_log(d, 2, UID, False, False)
    write_manifest(d, 2, body2, True)
    assert decode_manifest(read_file(os.path.join(d, MANIFEST_NAME)), "m") == (2, body2)
    sweep(d, body2)
    assert not os.path.exists(os.path.join(d, wal_name(1)))
    assert os.path.exists(os.path.join(d, wal_name(2)))


def test_check_manifest_reports_damage():
    good = fresh_body(UID, 1, {}, 1)
    check_manifest(good, "m")
    for change in ({"format": 3}, {"uuid": b"short"}, {"wal": "x.log"}, {"n": -1},
                   {"files": {"bogus": {}}}, {"n": 3}, {"vdtype": 2},
                   {"sorted": 1}, {"meta": []}):
        with pytest.raises(CorruptDatabaseError, match="^m: "):
            check_manifest(dict(good, **change), "m")
    run = {"name": "000001.terms", "len": 64, "crc": 0, "r0": 0, "n": 0}
    for terms in ({"spec": good["terms"]["spec"]}, {"spec": {"v": 2}, "runs": []},
                  {"spec": good["terms"]["spec"], "runs": [dict(run, r0=1)]},
                  {"spec": good["terms"]["spec"], "runs": [dict(run, n=1)]}):   # rows past n
        with pytest.raises(CorruptDatabaseError, match="^m: "):
            check_manifest(dict(good, terms=terms, next_file=2), "m")
    check_manifest(dict(good, terms=dict(good["terms"], runs=[run]), next_file=2), "m")
    old = {k: v for k, v in good.items() if k != "terms"}       # format 1: no postings
    check_manifest(dict(old, format=1), "m")
    with pytest.raises(CorruptDatabaseError, match="unexpected fields"):
        check_manifest(dict(old, format=2), "m")
    extra = dict(good, extra=1)
    with pytest.raises(CorruptDatabaseError, match="unexpected fields"):
        check_manifest(extra, "m")


def test_write_manifest_reports_a_swap_that_may_not_be_durable(tmp_path, monkeypatch):
    d = str(tmp_path)
    body = fresh_body(UID, 1, {}, 1)
    calls = []

    def fsync_dir(path):
        calls.append(path)
        if len(calls) == 2:                         # the one after the rename
            raise OSError(5, "injected")
    monkeypatch.setattr(osio.io, "fsync_dir", fsync_dir)
    seen = []
    with pytest.raises(OSError, match="injected"):
        write_manifest(d, 1, body, True, seen.append)
    assert len(seen) == 1 and seen[0].strerror == "injected"
    assert decode_manifest(read_file(os.path.join(d, MANIFEST_NAME)), "m")[0] == 1   # in place


# --------------------------------------------------------------------------- keys

def test_key_index_alone():
    keys_of = {1: "a", 2: "b", 3: None}                # the live rows' keys
    seg = sort_keys(np.array([key_hash("a"), key_hash("b")], np.uint64), np.array([1, 2]))
    ki = KeyIndex(None, "k", lambda: ([1, 2], ["a", "b"]), keys_of.get)
    assert ki.checkpointed()[0].tolist() == seg[0].tolist()
    assert ki.owner("a") == 1 and ki.owner("b") == 2 and ki.owner("c") is None
    ki.note(10, np.array([4, 5]), ["c", None])
    keys_of[4] = "c"
    assert ki.owner("c") == 4 and ki.has_keys()
    del keys_of[1]                                     # id 1 deleted: its key is free
    assert ki.owner("a") is None
    live = np.ones(16, bool)
    hs, ids = ki.rebuild(True, [np.array([0])], 2, np.array([1, 2]), live)
    assert sorted(ids.tolist()) == [2, 4] and (np.diff(hs.astype(np.float64)) >= 0).all()
    assert KeyIndex(None, "k", None, keys_of.get).rebuild(True, [], 0, np.zeros(0), live) is None
    assert not KeyIndex(None, "k", None, keys_of.get).has_keys()


# --------------------------------------------------------------------------- links

def test_sorted_ranges():
    keys = np.array([1, 1, 2, 5, 5, 5, 9])
    assert sorted_ranges(keys, np.array([5, 1, 7])).tolist() == [3, 4, 5, 0, 1]
    assert sorted_ranges(keys, np.array([], np.int64)).tolist() == []


def test_link_table_alone_and_its_segment(tmp_path):
    t = LinkTable(None, None, "")
    assert not t.changed
    t.set((1, 2, "r"), 1.0)
    t.set((1, 3, "s"), 2.0)
    t.set((4, 1, "r"), 3.0)
    assert t.changed and t.query(1, True, None) == [(2, "r", 1.0), (3, "s", 2.0)]
    assert t.query(1, False, None) == [(4, "r", 3.0)] and t.query(1, True, "s") == [(3, "s", 2.0)]
    numbers = iter(range(1, 100))
    entry = t.write(str(tmp_path), UID, lambda: next(numbers), False)
    assert entry["count"] == 3
    from sutradb.storage.format import KIND_LINKS
    from sutradb.storage.segments import MappedFile
    t2 = LinkTable(MappedFile(str(tmp_path), entry, KIND_LINKS, UID, 0, 0), entry, "x")
    assert t2.all() == t.all() == [(1, 2, "r", 1.0), (1, 3, "s", 2.0), (4, 1, "r", 3.0)]
    t2.drop_ids(np.array([1]))
    assert t2.all() == [] and t2.query(4, True, None) == []
    assert t2.write(str(tmp_path), UID, lambda: next(numbers), False) is None   # no link left
