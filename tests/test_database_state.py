"""A hypothesis state machine drives the Database against a plain-Python model.

Rules add, update, delete, link, unlink, open / commit / roll back (nested)
transactions, close and reopen; bad writes (unknown ids, taken keys) must raise and
change nothing. After every step the database must equal the *committed* model (reads
inside a transaction see the committed state), and search must agree with exact search
on the model (with a PQ index trained on the way, searched with a re-ranking depth that
covers every row, so results are exact; default searches must return true distances).
"""

import os
import shutil
import tempfile

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

import sutradb
from sutradb import errors
from sutradb import testing as sutra_st

DIM = 8
CI = bool(os.environ.get("CI"))


def roundtrip(md):
    return msgpack.unpackb(msgpack.packb(md, use_bin_type=True), raw=False) if md else {}


def words(text):
    import re
    return set(re.findall(r"\w+", (text or "").casefold()))


def model_match(where, md, text):
    """An independent evaluator of ``where`` filters over the model."""
    missing = object()

    def eq(a, b):
        if isinstance(a, bool) or isinstance(b, bool):
            return type(a) is type(b) and a == b
        return a == b

    def cmp(a, b):
        num = (int, float)
        return ((isinstance(a, num) and not isinstance(a, bool) and isinstance(b, num)
                 and not isinstance(b, bool)) or (isinstance(a, str) and isinstance(b, str)))

    for key, cond in where.items():
        if key == "$and":
            if not all(model_match(w, md, text) for w in cond):
                return False
        elif key == "$or":
            if not any(model_match(w, md, text) for w in cond):
                return False
        elif key == "$text":
            ws = words(cond)
            if not ws or not ws <= words(text):
                return False
        else:
            x = md.get(key, missing)
            ops = cond if isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond) \
                else {"$eq": cond}
            for op, v in ops.items():
                ok = {
                    "$eq": lambda: x is not missing and eq(x, v),
                    "$ne": lambda: x is missing or not eq(x, v),
                    "$in": lambda: x is not missing and any(eq(x, y) for y in v),
                    "$nin": lambda: x is missing or not any(eq(x, y) for y in v),
                    "$gt": lambda: cmp(x, v) and x > v,
                    "$gte": lambda: cmp(x, v) and x >= v,
                    "$lt": lambda: cmp(x, v) and x < v,
                    "$lte": lambda: cmp(x, v) and x <= v,
                }[op]()
                if not ok:
                    return False
    return True


class Model:
    def __init__(self):
        self.concepts = {}          # id -> (key, text, md, vector float16)
        self.links = {}             # (src, dst, rel) -> weight
        self.next_id = 0

    def copy(self):
        m = Model()
        m.concepts = dict(self.concepts)
        m.links = dict(self.links)
        m.next_id = self.next_id
        return m

    def key_owner(self, key):
        for i, c in self.concepts.items():
            if c[0] == key:
                return i
        return None


class DatabaseMachine(RuleBasedStateMachine):
    memory = False

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="sutradb-state-")
        self.path = ":memory:" if self.memory else os.path.join(self.dir, "db")
        self.committed = Model()
        self.stack = []             # models at each open transaction level
        self.txns = []
        self.db = None

    @initialize(metric=st.sampled_from(["cosine", "l2", "ip"]))
    def open_db(self, metric):
        self.metric = metric
        self.db = sutradb.open(self.path, dim=DIM, metric=metric, durability="off",
                               index_threshold=16, pq_nbits=4, pq_m=2)

    def teardown(self):
        if self.db is not None:
            self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def current(self):
        return self.stack[-1] if self.stack else self.committed

    def ids(self):
        return sorted(self.current.concepts)

    # ------------------------------------------------------------------ writes

    @rule(V=sutra_st.vectors(DIM, max_rows=6), data=st.data())
    def add(self, V, data):
        n = len(V)
        texts = data.draw(st.lists(st.none() | sutra_st.texts(), min_size=n, max_size=n))
        mds = data.draw(st.lists(sutra_st.metadata(fields=sutra_st.FIELDS), min_size=n, max_size=n))
        keys = data.draw(st.lists(st.none() | sutra_st.keys(), min_size=n, max_size=n))
        cur = self.current
        taken = {c[0] for c in cur.concepts.values() if c[0] is not None}
        given = [k for k in keys if k is not None]
        if len(set(given)) != len(given) or set(given) & taken:
            with pytest.raises(errors.DuplicateKeyError):
                self.db.add_vectors(V, texts=texts, metadata=mds, keys=keys)
            return
        ids = self.db.add_vectors(V, texts=texts, metadata=mds, keys=keys)
        assert ids.tolist() == list(range(cur.next_id, cur.next_id + n))
        for j, i in enumerate(ids.tolist()):
            cur.concepts[i] = (keys[j], texts[j], roundtrip(mds[j]), V[j].astype(np.float16))
        cur.next_id += n

    @rule(V=sutra_st.vectors(DIM, min_rows=8, max_rows=20), data=st.data())
    def add_many(self, V, data):
        mds = data.draw(st.lists(sutra_st.metadata(fields=sutra_st.FIELDS), min_size=len(V),
                                 max_size=len(V)))
        cur = self.current
        ids = self.db.add_vectors(V, metadata=mds)
        assert ids.tolist() == list(range(cur.next_id, cur.next_id + len(V)))
        for j, i in enumerate(ids.tolist()):
            cur.concepts[i] = (None, None, roundtrip(mds[j]), V[j].astype(np.float16))
        cur.next_id += len(V)

    @precondition(lambda self: self.current.concepts)
    @rule(data=st.data())
    def update(self, data):
        cur = self.current
        i = data.draw(st.sampled_from(self.ids()))
        kw = {}
        if data.draw(st.booleans()):
            kw["text"] = data.draw(st.none() | sutra_st.texts())
        if data.draw(st.booleans()):
            kw["metadata"] = data.draw(sutra_st.metadata(fields=sutra_st.FIELDS))
        if data.draw(st.booleans()):
            kw["vector"] = data.draw(sutra_st.vector(DIM))
        if data.draw(st.booleans()):
            kw["key"] = data.draw(st.none() | sutra_st.keys())
        k, t, m, v = cur.concepts[i]
        if "key" in kw and kw["key"] is not None:
            owner = cur.key_owner(kw["key"])
            if owner is not None and owner != i:
                with pytest.raises(errors.DuplicateKeyError):
                    self.db.update(i, **kw)
                return
        ref = k if (k is not None and data.draw(st.booleans())) else i
        self.db.update(ref, **kw)
        cur.concepts[i] = (kw.get("key", k), kw.get("text", t),
                           roundtrip(kw["metadata"]) if "metadata" in kw else m,
                           kw["vector"].astype(np.float16) if "vector" in kw else v)

    @precondition(lambda self: self.current.concepts)
    @rule(data=st.data())
    def delete(self, data):
        cur = self.current
        ids = data.draw(st.lists(st.sampled_from(self.ids()), min_size=1, max_size=3, unique=True))
        self.db.delete(ids)
        for i in ids:
            del cur.concepts[i]
        cur.links = {k: w for k, w in cur.links.items() if k[0] not in ids and k[1] not in ids}

    @rule(bad=st.integers(1000, 2000))
    def bad_writes(self, bad):
        with pytest.raises(errors.NotFoundError):
            self.db.delete([bad])
        with pytest.raises(errors.NotFoundError):
            self.db.update(bad, text="x")
        if self.current.concepts:
            with pytest.raises(errors.NotFoundError):
                self.db.link(self.ids()[0], bad, "r")
            with pytest.raises(errors.NotFoundError):
                self.db.delete([self.ids()[0], bad])     # nothing deleted

    @precondition(lambda self: self.current.concepts)
    @rule(data=st.data(), rel=st.sampled_from(["is_a", "part_of"]),
          w=st.floats(-5, 5, allow_nan=False))
    def link(self, data, rel, w):
        a = data.draw(st.sampled_from(self.ids()))
        b = data.draw(st.sampled_from(self.ids()))
        self.db.link(a, b, rel, weight=w)
        self.current.links[(a, b, rel)] = w

    @precondition(lambda self: self.current.links)
    @rule(data=st.data(), all_rels=st.booleans())
    def unlink(self, data, all_rels):
        a, b, rel = data.draw(st.sampled_from(sorted(self.current.links)))
        self.db.unlink(a, b, None if all_rels else rel)
        self.current.links = {k: w for k, w in self.current.links.items()
                              if not (k[0] == a and k[1] == b and (all_rels or k[2] == rel))}

    # ------------------------------------------------------------------ transactions

    @precondition(lambda self: len(self.txns) < 3)
    @rule()
    def begin(self):
        self.txns.append(self.db.transaction())
        self.stack.append(self.current.copy())

    @precondition(lambda self: self.txns)
    @rule()
    def commit(self):
        self.txns.pop().commit()
        m = self.stack.pop()
        if self.stack:
            self.stack[-1] = m
        else:
            self.committed = m

    @precondition(lambda self: self.txns)
    @rule()
    def rollback(self):
        self.txns.pop().rollback()
        self.stack.pop()           # ids allocated there are not committed: reused

    @precondition(lambda self: not self.txns and not self.memory)
    @rule()
    def reopen(self):
        self.db.close()
        self.db = sutradb.open(self.path, durability="off")

    @precondition(lambda self: not self.txns)
    @rule()
    def compact(self):
        if not self.memory:
            self.db.compact()

    # ------------------------------------------------------------------ the invariant

    @invariant()
    def matches_committed_model(self):
        if self.db is None:
            return
        db, m = self.db, self.committed
        assert len(db) == len(m.concepts)
        assert sorted(db) == sorted(m.concepts)
        for i, (k, t, md, v) in m.concepts.items():
            c = db.get(i)
            assert (c.id, c.key, c.text, c.metadata) == (i, k, t, md)
            np.testing.assert_array_equal(np.asarray(c.vector, np.float16), v)
            if k is not None:
                assert db.get(k).id == i
        assert db.links() == sorted((a, b, r, w) for (a, b, r), w in m.links.items())
        for i in list(m.concepts)[:3]:
            want = sorted((b, r, w) for (a, b, r), w in m.links.items() if a == i)
            assert sorted(db.neighbors(i)) == want

    @invariant()
    def search_agrees_with_exact_search(self):
        if self.db is None:
            return
        m = self.committed
        rng = np.random.default_rng(len(m.concepts))
        q = rng.standard_normal(DIM).astype(np.float32)
        k = 5
        # rerank=1000 re-ranks every row of these small databases: exact results with a
        # PQ index too (the default, max(8k, 100), is approximate past 100 rows)
        D, I = self.db.search_vectors(q, k=k, rerank=1000)
        D0, I0 = self.db.search_vectors(q, k=k)       # default: valid ids and distances
        ids = sorted(m.concepts)
        n = len(ids)
        assert (I[0] >= 0).sum() == min(k, n)
        if n:
            V = np.array([m.concepts[i][3] for i in ids], np.float64)
            qq = q.astype(np.float64)
            if self.metric == "cosine":
                nv = np.linalg.norm(V, axis=1)
                nv[nv == 0] = 1
                d = 1 - V @ qq / nv / np.linalg.norm(qq)
            elif self.metric == "ip":
                d = -(V @ qq)
            else:
                d = ((V - qq) ** 2).sum(1)
            want = np.sort(d)[:k]
            scale = max(1.0, float(np.abs(want).max()))
            np.testing.assert_allclose(D[0, :len(want)], want, rtol=1e-3, atol=1e-3 * scale)
            got = dict(zip(ids, d))
            assert (I0[0] >= 0).sum() == min(k, n)
            for i, di in list(zip(I[0], D[0])) + list(zip(I0[0], D0[0])):
                if i >= 0:
                    assert abs(got[int(i)] - di) <= 1e-3 * scale

    @invariant()
    def filters_agree_with_the_model(self):
        if self.db is None or not self.committed.concepts:
            return
        m = self.committed
        wheres = [{"n": 1}, {"tag": {"$in": ["x", "y"]}, "n": {"$gte": 2}},
                  {"$or": [{"ok": True}, {"$text": "paris"}]}, {"score": {"$lt": 0}},
                  {"$text": "alpha beta"}]
        w = wheres[len(m.concepts) % len(wheres)]
        want = {i for i, (k, t, md, v) in m.concepts.items() if model_match(w, md, t)}
        _, I = self.db.search_vectors(np.ones(DIM), k=len(m.concepts), where=w)
        assert set(I[0][I[0] >= 0].tolist()) == want
        word = ["alpha", "paris", "river"][len(m.concepts) % 3]
        assert self.db.find_words(word) == sorted(
            i for i, c in m.concepts.items() if word in words(c[1]))


class MemoryDatabaseMachine(DatabaseMachine):
    memory = True


_SETTINGS = settings(max_examples=25 if CI else 40, stateful_step_count=40, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

TestDatabaseStateMachine = DatabaseMachine.TestCase
TestDatabaseStateMachine.settings = _SETTINGS
TestMemoryDatabaseStateMachine = MemoryDatabaseMachine.TestCase
TestMemoryDatabaseStateMachine.settings = settings(_SETTINGS, max_examples=15 if CI else 25)


@pytest.mark.parametrize("where", [None])
def test_where_strategy_compiles(where):
    """Every filter the public strategy makes is accepted."""
    from hypothesis import given

    @given(sutra_st.where_filters())
    @settings(max_examples=50, deadline=None)
    def inner(w):
        from sutradb.index.filters import compile_where
        compile_where(w)

    inner()
