"""Unique keys: ``Store.id_for_key`` and ``DuplicateKeyError`` from ``Transaction.put``;
the ``.keys`` segment written at checkpoints; and the open-mode errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sutradb.errors import (DatabaseExistsError, DatabaseNotFoundError, DuplicateKeyError,
                            InvalidArgumentError, SutraError)
from sutradb.storage import Store
from sutradb.storage import keys as keys_mod

SMALL = dict(checkpoint_bytes=3000, spill_bytes=2000, compact_min_rows=8, compact_ratio=0.3)


def put(txn, ids, keys):
    ids = list(ids)
    txn.put(ids, keys=keys, texts=[f"t{i}" for i in ids],
            codes=np.array([[i % 256] * 4 for i in ids], np.uint8))


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_id_for_key_and_uniqueness(tmp_path, where):
    s = Store.open(None if where == "memory" else tmp_path / "db")
    with s.begin() as t:
        put(t, [1, 2, 3], ["a", "b", None])
    assert (s.id_for_key("a"), s.id_for_key("b"), s.id_for_key("c")) == (1, 2, None)
    with pytest.raises(InvalidArgumentError):
        s.id_for_key(3)
    # another id with a used key: rejected, nothing of the call staged
    t = s.begin()
    with pytest.raises(DuplicateKeyError):
        put(t, [7, 4], ["z", "a"])
    put(t, [7], ["z"])                        # "z" was not staged by the failed call
    t.commit()
    assert s.id_for_key("z") == 7 and s.n_live == 4
    # twice in one call, twice in one transaction
    with s.begin() as t:
        with pytest.raises(DuplicateKeyError):
            put(t, [8, 9], ["q", "q"])
        put(t, [8], ["q"])
        with pytest.raises(DuplicateKeyError):
            put(t, [9], ["q"])
        put(t, [8], ["q"])                    # same id, same key: fine
    assert s.id_for_key("q") == 8
    # update with the same key, then with another key (frees the old one)
    with s.begin() as t:
        put(t, [1], ["a"])
    assert s.id_for_key("a") == 1
    with s.begin() as t:
        put(t, [1], ["a2"])
        put(t, [5], ["a"])                    # freed by the re-put in this transaction
    assert (s.id_for_key("a"), s.id_for_key("a2")) == (5, 1)
    # deleting frees the key, in the same transaction too
    with s.begin() as t:
        t.delete([2])
        put(t, [6], ["b"])
    assert s.id_for_key("b") == 6
    with s.begin() as t:
        t.delete([6])
    assert s.id_for_key("b") is None
    with s.begin() as t:
        put(t, [2], ["b"])
    assert s.id_for_key("b") == 2
    # a rolled back transaction leaves no trace
    t = s.begin()
    put(t, [10], ["r"])
    t.rollback()
    assert s.id_for_key("r") is None
    with s.begin() as t:
        put(t, [11], ["r"])
    expect = {"a": 5, "a2": 1, "b": 2, "z": 7, "q": 8, "r": 11}
    assert {k: s.id_for_key(k) for k in expect} == expect
    if where == "disk":
        s.checkpoint()
        assert {k: s.id_for_key(k) for k in expect} == expect
        assert s.verify()["keys"] == len(expect)
        with pytest.raises(DuplicateKeyError):
            with s.begin() as t:
                put(t, [12], ["q"])
        s.close()
        for mode in ("r", "a"):
            with Store.open(tmp_path / "db", mode) as s2:
                assert {k: s2.id_for_key(k) for k in expect} == expect
                assert s2.id_for_key("nope") is None
    else:
        s.compact()
        assert {k: s.id_for_key(k) for k in expect} == expect


def test_keys_survive_checkpoints_compaction_spill_and_replay(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "db"
    s = Store.open(path, **SMALL)
    model = {}                                  # id -> key
    for step in range(60):
        with s.begin() as t:
            ids = rng.choice(40, 3, replace=False).tolist()
            used = {k for i, k in model.items() if i not in ids}
            keys = []
            for i in ids:
                k = f"k{rng.integers(60)}"
                keys.append(None if k in used or k in keys or rng.random() < 0.2 else k)
            put(t, ids, keys)
            for i, k in zip(ids, keys):
                model[i] = k
            if step % 3 == 0:
                d = int(rng.integers(40))
                t.delete([d])
                model.pop(d, None)
        if step % 7 == 0:
            s.checkpoint()
        if step == 30:
            s.compact()
        want = {k: i for i, k in model.items() if k is not None}
        assert {k: s.id_for_key(k) for k in want} == want
        assert all(s.id_for_key(f"k{j}") is None for j in range(60) if f"k{j}" not in want)
    # a big (spilled) transaction with keys
    with s.begin() as t:
        ids = list(range(1000, 1400))
        put(t, ids, [f"big{i}" for i in ids])
        with pytest.raises(DuplicateKeyError):
            put(t, [2000], ["big1000"])
    assert s.id_for_key("big1399") == 1399
    s.verify()
    with s.begin() as t:                         # leave something in the log
        put(t, [5000], ["tail"])
    s._release()                                 # crash: the log is replayed at open
    with Store.open(path, "r") as r:
        assert r.id_for_key("tail") == 5000 and r.id_for_key("big1200") == 1200
        want = {k: i for i, k in model.items() if k is not None}
        assert {k: r.id_for_key(k) for k in want} == want
        r.verify()


def test_hash_collisions_are_resolved_by_the_record(tmp_path, monkeypatch):
    monkeypatch.setattr(keys_mod, "key_hash", lambda key: 42)   # every key collides
    s = Store.open(tmp_path / "db")
    with s.begin() as t:
        put(t, [1, 2, 3], ["x", "y", "z"])
    s.checkpoint()
    assert [s.id_for_key(k) for k in "xyzw"] == [1, 2, 3, None]
    with pytest.raises(DuplicateKeyError):
        with s.begin() as t:
            put(t, [4], ["y"])
    s.verify()
    s.close()


def test_store_without_key_index_is_scanned(tmp_path):
    """A store whose manifest names no ``.keys`` file (written before key indexes)
    builds the index from its records on first use."""
    path = tmp_path / "db"
    s = Store.open(path)
    with s.begin() as t:
        put(t, [1, 2], ["a", "b"])
    s.checkpoint()
    s._keys.segment = None
    s._keys.mapped = None
    s._man["files"].pop("keys")
    s._maps.pop("keys")
    assert s.id_for_key("b") == 2
    with pytest.raises(DuplicateKeyError):
        with s.begin() as t:
            put(t, [3], ["a"])
    s.close()


def test_open_mode_errors(tmp_path):
    with pytest.raises(DatabaseNotFoundError) as e:
        Store.open(tmp_path / "missing", "r")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, SutraError)
    os.mkdir(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        Store.open(tmp_path / "empty", "r")
    Store.open(tmp_path / "db").close()
    with pytest.raises(DatabaseExistsError) as e:
        Store.open(tmp_path / "db", "x")
    assert isinstance(e.value, FileExistsError) and isinstance(e.value, SutraError)
    Store.open(tmp_path / "new", "x").close()


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps")
def test_close_unmaps_the_key_index(tmp_path):
    """The key index holds its mapped .keys segment: close() lets it go with the rest."""
    path = tmp_path / "db"
    with Store.open(path) as s:
        with s.begin() as t:
            put(t, [1, 2], ["a", "b"])
    s = Store.open(path, "r")
    assert s.id_for_key("b") == 2                # the .keys segment is mapped and read

    def mapped():
        return [line for line in open("/proc/self/maps") if str(tmp_path) in line]
    assert any(".keys" in line for line in mapped())
    s.close()
    assert mapped() == []
