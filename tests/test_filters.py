"""The ``where`` filter language (issue 20 item 3) and the field index.

* semantics: dotted paths, lists (MongoDB rules), ``$contains``, ``$all``,
  ``$exists``, ``$not`` (on a field and on a whole filter), ``$ne``/``$nin`` on
  missing fields, bool vs int, numbers across int/float;
* errors: every ill-typed filter raises InvalidArgumentError naming the path;
* the field index equals the predicate, and both equal an independent oracle written
  here, on random metadata and filters, after random changes (hypothesis);
* through the database: find / count / search_vectors / delete(where=) against a
  model across commits, updates, deletes, rollbacks, compaction and reopening (a
  hypothesis state machine); the scan fallback for sparse ids; threads.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import sutradb
from sutradb.errors import InvalidArgumentError
from sutradb.index.fields import FieldIndex
from sutradb.index.filters import compile_where

CI = bool(os.environ.get("CI"))


# ---------------------------------------------------------------------- the oracle
# An independent statement of the semantics (docs/user-guide.md, "Filters").

def o_resolve(md, path):
    if path in md:
        return [md[path]]
    if "." not in path:
        return []
    cur = [md]
    for part in path.split("."):
        nxt = []
        for c in cur:
            if type(c) is dict:
                if part in c:
                    nxt.append(c[part])
            elif type(c) is list:
                nxt.extend(e[part] for e in c if type(e) is dict and part in e)
        cur = nxt
    return cur


def o_num(x):
    return type(x) in (int, float)


def o_eq(a, b):
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if o_num(a) and o_num(b):
        return a == b
    if type(a) in (list, tuple) and type(b) in (list, tuple):
        return len(a) == len(b) and all(o_eq(x, y) for x, y in zip(a, b))
    if type(a) is dict and type(b) is dict:
        return a.keys() == b.keys() and all(o_eq(a[k], b[k]) for k in a)
    return type(a) is type(b) and type(a) in (str, bytes, type(None)) and a == b


def o_op(vals, op, arg):
    flat = [x for v in vals for x in ([v] + (v if type(v) is list else []))]
    if op == "$eq":
        return any(o_eq(x, arg) for x in flat)
    if op == "$ne":
        return not o_op(vals, "$eq", arg)
    if op == "$in":
        return any(o_op(vals, "$eq", a) for a in arg)
    if op == "$nin":
        return not o_op(vals, "$in", arg)
    if op == "$all":
        return all(o_op(vals, "$eq", a) for a in arg)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        def ok(x):
            if not ((o_num(x) and o_num(arg)) or (type(x) is str and type(arg) is str)):
                return False
            return {"$gt": x > arg, "$gte": x >= arg, "$lt": x < arg, "$lte": x <= arg}[op]
        return any(ok(x) for x in flat)
    if op == "$contains":
        return any((type(v) is list and any(o_eq(x, arg) for x in v))
                   or (type(v) is str and type(arg) is str and arg in v) for v in vals)
    if op == "$exists":
        return bool(vals) == arg
    if op == "$not":
        return not all(o_op(vals, o, a) for o, a in arg.items())
    raise AssertionError(op)


def o_match(where, md, i=None, texts=None):
    for key, cond in where.items():
        if key == "$and":
            ok = all(o_match(w, md, i, texts) for w in cond)
        elif key == "$or":
            ok = any(o_match(w, md, i, texts) for w in cond)
        elif key == "$not":
            ok = not o_match(cond, md, i, texts)
        elif key == "$text":
            ok = i in texts[cond]
        else:
            vals = o_resolve(md, key)
            if type(cond) is dict and cond and all(k.startswith("$") for k in cond):
                ok = all(o_op(vals, op, a) for op, a in cond.items())
            else:
                ok = o_op(vals, "$eq", cond)
        if not ok:
            return False
    return True


# ---------------------------------------------------------------------- strategies

NAMES = ["a", "b", "c"]
PATHS = ["a", "a", "b", "b", "c", "a.b", "a.c", "b.a", "a.b.c", "c.a"]
scalars = st.sampled_from([0, 1, 2, 1.0, 1.5, -1, True, False, None, "x", "y", "xy", "", b"x"])


def md_values(depth=2):
    if depth == 0:
        return scalars
    inner = md_values(depth - 1)
    return st.one_of(scalars, scalars,
                     st.lists(inner, max_size=3),
                     st.dictionaries(st.sampled_from(NAMES), inner, max_size=3))


metadatas = st.one_of(
    st.just({}),
    st.dictionaries(st.sampled_from(NAMES + ["a.b"]), md_values(), min_size=1, max_size=3))

filter_values = st.one_of(scalars, scalars, st.lists(scalars, max_size=2),
                          st.dictionaries(st.sampled_from(NAMES), scalars, max_size=2))
cmp_values = st.sampled_from([0, 1, 1.5, 2, -1, "x", "xy", "y", ""])


def op_dicts(depth=1):
    single = st.one_of(
        filter_values.map(lambda v: {"$eq": v}),
        filter_values.map(lambda v: {"$ne": v}),
        st.lists(filter_values, max_size=3).map(lambda v: {"$in": v}),
        st.lists(filter_values, max_size=3).map(lambda v: {"$nin": v}),
        st.lists(filter_values, min_size=1, max_size=2).map(lambda v: {"$all": v}),
        st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), cmp_values)
        .map(lambda t: {t[0]: t[1]}),
        scalars.map(lambda v: {"$contains": v}),
        st.booleans().map(lambda v: {"$exists": v}))
    if depth:
        single = st.one_of(single, op_dicts(depth - 1).map(lambda d: {"$not": d}))
    return st.lists(single, min_size=1, max_size=2).map(lambda ds: {k: v for d in ds for k, v in d.items()})


conditions = st.tuples(st.sampled_from(PATHS), st.one_of(filter_values, op_dicts())).map(
    lambda t: {t[0]: t[1]})
filters = st.recursive(conditions, lambda inner: st.one_of(
    st.lists(inner, min_size=1, max_size=3).map(lambda fs: {"$and": fs}),
    st.lists(inner, min_size=1, max_size=3).map(lambda fs: {"$or": fs}),
    inner.map(lambda f: {"$not": f}),
    st.lists(inner, min_size=2, max_size=2).map(lambda fs: {**fs[0], **fs[1]})), max_leaves=5)


def plain(x):
    """NumPy scalars as Python values, inside dicts and lists."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [plain(v) for v in x]
    return x.item() if isinstance(x, np.generic) else x


def roundtrip(md):
    return msgpack.unpackb(msgpack.packb(md, use_bin_type=True), raw=False) if md else {}


def index_ids(where, model: dict, indexes: dict):
    """Ids the filter selects over ``indexes`` (path -> FieldIndex of ``model``)."""
    f = compile_where(where)
    n = max(model, default=-1) + 1

    def field(path):
        if path not in indexes:
            indexes[path] = FieldIndex(path, model).build()
        return indexes[path]

    m = f.mask(n + 3, field, {})
    return {i for i in model if m[i]}, f


# ---------------------------------------------------------------------- semantics

MD = {
    0: {"tags": ["a", "b"], "src": {"site": "x", "rank": 1}, "year": 1999, "title": "Deep nets"},
    1: {"tags": ["b"], "src": {"site": "y"}, "year": 2005, "title": "hello world", "ok": True},
    2: {"tags": "a", "src": [{"site": "x"}, {"site": "z", "rank": 3}], "year": [2001, 1990]},
    3: {},
    4: {"a.b": 1, "a": {"b": 2}, "ok": 1, "year": 2000.0},
    5: {"tags": [], "src": {"site": None}, "year": "2001", "nested": [["a"]]},
    6: {"tags": [["a", "b"], "c"], "ok": False, "n": 1.0},
}


@pytest.fixture(scope="module")
def mdb():
    db = sutradb.open(":memory:", dim=2)
    db.add_vectors(np.ones((len(MD), 2), np.float32), metadata=[MD[i] for i in range(len(MD))])
    yield db
    db.close()


@pytest.mark.parametrize("where, want", [
    # the two silent non-matches
    ({"tags": "a"}, [0, 2]),
    ({"src.site": "x"}, [0, 2]),
    # dotted paths, lists of dicts, literal dotted keys
    ({"src.rank": {"$gte": 2}}, [2]),
    ({"src.site": None}, [5]),
    ({"src.site": {"$exists": True}}, [0, 1, 2, 5]),
    ({"a.b": 1}, [4]),                              # the literal top-level key wins
    ({"a.b": 2}, []),
    ({"src.site.deeper": {"$exists": False}}, [0, 1, 2, 3, 4, 5, 6]),
    # lists: membership, whole-list equality, elements that are lists
    ({"tags": ["a", "b"]}, [0, 6]),
    ({"tags": []}, [5]),
    ({"tags": {"$all": ["a", "b"]}}, [0]),
    ({"tags": {"$all": ["a"]}}, [0, 2]),             # a scalar equal to the value counts
    ({"tags": {"$in": ["c", "zzz"]}}, [6]),
    ({"tags": {"$ne": "a"}}, [1, 3, 4, 5, 6]),
    ({"tags": {"$nin": ["a", "b"]}}, [3, 4, 5, 6]),
    ({"nested": ["a"]}, [5]),
    # $contains: list element, or substring of a string
    ({"tags": {"$contains": "b"}}, [0, 1]),
    ({"title": {"$contains": "lo w"}}, [1]),
    ({"tags": {"$contains": "a"}}, [0, 2]),          # 2: "a" is a substring of "a"
    ({"year": {"$contains": 1990}}, [2]),
    # comparisons: any element; numbers with numbers, strings with strings
    ({"year": {"$gt": 2000}}, [1, 2]),
    ({"year": {"$gt": 1995, "$lt": 2000}}, [0, 2]),  # each operator on its own (Mongo)
    ({"year": {"$gte": "2000"}}, [5]),
    ({"year": 2000}, [4]),                           # 2000 == 2000.0
    ({"n": 1}, [6]),
    # bools are not numbers
    ({"ok": True}, [1]),
    ({"ok": 1}, [4]),
    ({"ok": {"$gte": 0}}, [4]),
    ({"ok": {"$in": [False]}}, [6]),
    # negations match missing fields
    ({"year": {"$not": {"$gt": 2000}}}, [0, 3, 4, 5, 6]),
    ({"year": {"$ne": 1999}}, [1, 2, 3, 4, 5, 6]),
    ({"year": {"$exists": False}}, [3, 6]),
    ({"$not": {"tags": "a"}}, [1, 3, 4, 5, 6]),
    ({"$not": {"tags": "b", "year": {"$lt": 2000}}}, [1, 2, 3, 4, 5, 6]),
    ({"year": {"$not": {"$not": {"$lt": 2000}}}}, [0, 2]),
    ({"$or": [{"src.site": "y"}, {"$not": {"year": {"$exists": True}}}]}, [1, 3, 6]),
    ({}, [0, 1, 2, 3, 4, 5, 6]),
    # NumPy scalars are their Python values
    ({"year": np.int64(1999)}, [0]),
    ({"year": {"$lt": np.float32(1995)}}, [2]),
])
def test_semantics(mdb, where, want):
    assert mdb.find_ids(where).tolist() == want
    assert mdb.count(where) == len(want)
    assert sorted(i for i in MD if o_match(plain(where), roundtrip(MD[i]))) == want
    f = compile_where(where)
    assert sorted(i for i in MD if f.match(i, roundtrip(MD[i]), {})) == want
    _, I = mdb.search_vectors(np.ones(2), k=10, where=where)
    assert sorted(I[0][I[0] >= 0].tolist()) == want


def test_text_inside_not_and_or():
    db = sutradb.open(":memory:", dim=2)
    db.add_vectors(np.ones((4, 2), np.float32), texts=["red apple", "green apple", "red car", None],
                   metadata=[{"k": 1}, {"k": 2}, {"k": 1}, {}])
    assert db.find_ids({"$not": {"$text": "apple"}}).tolist() == [2, 3]
    assert db.find_ids({"$text": "red", "k": {"$ne": 1}}).tolist() == []
    assert db.find_ids({"$or": [{"$text": "green"}, {"k": {"$exists": False}}]}).tolist() == [1, 3]
    assert db.count({"$not": {"$text": "red", "k": 1}}) == 2


ERRORS = [
    ({"tags": {"$all": "a"}}, "where.tags.$all"),
    ({"tags": {"$all": []}}, "where.tags.$all"),
    ({"x": {"$exists": 1}}, "where.x.$exists"),
    ({"x": {"$exists": "yes"}}, "where.x.$exists"),
    ({"x": {"$contains": {"a": 1}}}, "where.x.$contains"),
    ({"x": {"$contains": ["a"]}}, "where.x.$contains"),
    ({"x": {"$gt": [1]}}, "where.x.$gt"),
    ({"x": {"$lte": True}}, "where.x.$lte"),
    ({"x": {"$lt": None}}, "where.x.$lt"),
    ({"x": {"$gte": {"a": 1}}}, "where.x.$gte"),
    ({"x": {"$in": 3}}, "where.x.$in"),
    ({"x": {"$nin": "ab"}}, "where.x.$nin"),
    ({"x": {"$not": 3}}, "where.x.$not"),
    ({"x": {"$not": {}}}, "where.x.$not"),
    ({"x": {"$not": {"a": 1}}}, "where.x.$not"),
    ({"x": {"$regex": "a"}}, "where.x.$regex"),
    ({"x": {"$gt": 1, "y": 2}}, "where.x"),
    ({"x": float("nan")}, "where.x"),
    ({"x": {"$in": [1, float("nan")]}}, "where.x.$in[1]"),
    ({"x": {"$gt": float("nan")}}, "where.x.$gt"),
    ({"x": [1, {"y": float("nan")}]}, "where.x[1].y"),
    ({"x": object()}, "where.x"),
    ({"x": {"$eq": {1: 2}}}, "where.x.$eq"),
    ({"$or": [{"a": 1}, {"y": {"$not": 3}}]}, "where.$or[1].y.$not"),
    ({"$and": [{"a": {"$all": 1}}]}, "where.$and[0].a.$all"),
    ({"$not": {"b": {"$exists": None}}}, "where.$not.b.$exists"),
    ({"$not": {}}, "where.$not"),
    ({"$not": [{"a": 1}]}, "where.$not"),
    ({"$or": []}, "where.$or"),
    ({"$nor": [{"a": 1}]}, "where"),
    ({"$text": 3}, "where.$text"),
    ({1: 2}, "where"),
    ("a = 1", "where"),
]


@pytest.mark.parametrize("where, path", ERRORS)
def test_errors_name_the_path(mdb, where, path):
    with pytest.raises(InvalidArgumentError) as e:
        compile_where(where)
    assert str(e.value).startswith(path), str(e.value)
    for call in (lambda: mdb.count(where), lambda: mdb.find_ids(where),
                 lambda: mdb.search_vectors(np.ones(2), k=2, where=where)):
        with pytest.raises(InvalidArgumentError):
            call()


def test_errors_are_raised_on_an_empty_database():
    db = sutradb.open(":memory:", dim=2)
    with pytest.raises(InvalidArgumentError, match="where.t.\\$all"):
        db.count({"t": {"$all": 1}})
    with pytest.raises(InvalidArgumentError, match="where.t.\\$exists"):
        db.delete(where={"t": {"$exists": 0}})


# ---------------------------------------------------------------------- index == predicate == oracle

@given(mds=st.lists(metadatas, max_size=25), where=filters)
@settings(max_examples=600 if CI else 400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
def test_index_equals_predicate_equals_oracle(mds, where):
    model = {i: roundtrip(md) for i, md in enumerate(mds)}
    want = {i for i, md in model.items() if o_match(where, md)}
    got, f = index_ids(where, model, {})
    assert got == want
    assert {i for i, md in model.items() if f.match(i, md, {})} == want


@given(mds=st.lists(metadatas, max_size=20),
       changes=st.lists(st.tuples(st.integers(0, 24), st.none() | metadatas), max_size=12),
       wheres=st.lists(filters, min_size=1, max_size=3), rebuild=st.booleans())
@settings(max_examples=150 if CI else 100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
def test_index_after_changes(mds, changes, wheres, rebuild):
    """Changes after the build (set()): the dirty ids are re-checked, or the tables
    rebuilt (SLACK -1 makes the first query rebuild), and the answer stays the model's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FieldIndex, "SLACK", -1 if rebuild else 1 << 30)
        _changes(mds, changes, wheres)


def _changes(mds, changes, wheres):
    model = {i: roundtrip(md) for i, md in enumerate(mds)}
    indexes = {}
    for w in wheres:                       # build the indexes the filters use
        index_ids(w, model, indexes)
    for i, md in changes:
        if md is None:
            model.pop(i, None)
        else:
            model[i] = roundtrip(md)
        for fi in indexes.values():
            fi.changed(i)
    for w in wheres * 2:
        got, _ = index_ids(w, model, indexes)
        assert got == {i for i, md in model.items() if o_match(w, md)}, w


def _fixed_model():
    rnd = np.random.default_rng(7)
    pool = [0, 1, 2, 1.0, 1.5, -1, True, False, None, "x", "y", "xy", "", b"x"]

    def value(depth):
        r = rnd.random()
        if depth == 0 or r < 0.5:
            return pool[rnd.integers(len(pool))]
        if r < 0.75:
            return [value(depth - 1) for _ in range(rnd.integers(0, 4))]
        return {NAMES[j]: value(depth - 1) for j in rnd.permutation(3)[:rnd.integers(0, 3)]}

    model = {}
    for i in range(300):
        keys = rnd.permutation(NAMES + ["a.b"])[:rnd.integers(0, 4)]
        model[i] = roundtrip({str(k): value(2) for k in keys})
    return model, pool


def test_every_operator_on_a_fixed_model():
    """Every operator with every value of the pools on every path, deterministically."""
    model, pool = _fixed_model()
    indexes = {}
    conds = []
    for v in pool + [[1, "x"], [], {"a": 1}, [[0]]]:
        conds += [v, {"$eq": v}, {"$ne": v}, {"$in": [v, 2]}, {"$nin": [v]}, {"$all": [v, 1]},
                  {"$not": {"$eq": v}}]
        if not isinstance(v, (list, dict)):
            conds.append({"$contains": v})
    for v in [0, 1, 1.5, 2, -1, -2, 3, "x", "xy", "y", "", "z"]:
        for op in ("$gt", "$gte", "$lt", "$lte"):
            conds += [{op: v}, {"$not": {op: v}}]
    conds += [{"$exists": True}, {"$exists": False}, {"$gt": 0, "$lt": 2}]
    checked = 0
    for path in sorted(set(PATHS)) + ["a.b.c.a", "zzz"]:
        for c in conds:
            where = {path: c}
            want = {i for i, md in model.items() if o_match(where, md)}
            got, _ = index_ids(where, model, indexes)
            assert got == want, where
            checked += bool(want) and len(want) < len(model)
    assert checked > 300            # the model makes the conditions discriminate


def test_rebuild_after_enough_rechecks():
    """With the default slack the tables are rebuilt once re-checking the dirty ids
    has cost about a rebuild; the answers never change."""
    model = {i: {"k": i % 3} for i in range(100)}
    fi = FieldIndex("k", model).build()
    f = compile_where({"k": 1})
    for i in range(0, 100, 2):
        model[i] = {"k": 1}
        fi.changed(i)
    want = {i for i in range(100) if i % 2 == 0 or i % 3 == 1}
    for _ in range(30):
        m = f.mask(100, lambda p: fi, {})
        assert set(np.flatnonzero(m).tolist()) == want
    assert fi.dirty_count == 0


def test_big_ints_and_floats_compare_exactly():
    big = 2 ** 63 - 1
    model = {0: {"v": big}, 1: {"v": float(2 ** 63)}, 2: {"v": 2 ** 53 + 1}, 3: {"v": float(2 ** 53)}}
    for where in ({"v": {"$gt": 2 ** 63 - 2}}, {"v": float(2 ** 63)}, {"v": 2 ** 53},
                  {"v": {"$lt": 2 ** 53 + 1}}, {"v": {"$gte": float(2 ** 53)}}):
        got, _ = index_ids(where, model, {})
        assert got == {i for i, md in model.items() if o_match(where, md)}, where


def test_nan_in_metadata_equals_nothing():
    db = sutradb.open(":memory:", dim=2)
    db.add_vectors(np.ones((3, 2), np.float32),
                   metadata=[{"v": float("nan")}, {"v": [1, float("nan")]}, {"v": 1}])
    assert db.find_ids({"v": 1}).tolist() == [1, 2]
    assert db.find_ids({"v": {"$gte": 0}}).tolist() == [1, 2]
    assert db.find_ids({"v": {"$exists": True}}).tolist() == [0, 1, 2]
    assert db.find_ids({"v": {"$ne": 1}}).tolist() == [0]


# ---------------------------------------------------------------------- through the database

class FilterMachine(RuleBasedStateMachine):
    """Writes with rich metadata against a dict model; every check compares find_ids,
    count, search_vectors and delete(where=) with the oracle."""

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="sutradb-filters-")
        self.path = os.path.join(self.dir, "db")
        self.model = {}
        self.db = None

    @initialize(memory=st.booleans())
    def open_db(self, memory):
        self.memory = memory
        self.db = sutradb.open(":memory:" if memory else self.path, dim=2, durability="off",
                               vector_dtype="float32")

    def teardown(self):
        if self.db is not None:
            self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(mds=st.lists(metadatas, min_size=1, max_size=6))
    def add(self, mds):
        ids = self.db.add_vectors(np.ones((len(mds), 2), np.float32), metadata=mds)
        for i, md in zip(ids.tolist(), mds):
            self.model[i] = roundtrip(md)

    @rule(data=st.data(), md=metadatas)
    def update(self, data, md):
        if self.model:
            i = data.draw(st.sampled_from(sorted(self.model)))
            self.db.update(i, metadata=md)
            self.model[i] = roundtrip(md)

    @rule(data=st.data())
    def delete(self, data):
        if self.model:
            ids = data.draw(st.lists(st.sampled_from(sorted(self.model)), max_size=3, unique=True))
            self.db.delete(ids)
            for i in ids:
                del self.model[i]

    @rule(where=filters)
    def delete_where(self, where):
        want = {i for i, md in self.model.items() if o_match(where, md)}
        assert self.db.delete(where=where) == len(want)
        for i in want:
            del self.model[i]

    @rule(mds=st.lists(metadatas, min_size=1, max_size=3), data=st.data())
    def rolled_back(self, mds, data):
        with pytest.raises(RuntimeError):
            with self.db.transaction():
                self.db.add_vectors(np.ones((len(mds), 2), np.float32), metadata=mds)
                if self.model:
                    i = data.draw(st.sampled_from(sorted(self.model)))
                    self.db.update(i, metadata=mds[0])
                    self.db.delete(i)
                raise RuntimeError("roll back")

    @rule()
    def compact(self):
        self.db.compact()

    @rule()
    def reopen(self):
        if not self.memory:
            self.db.close()
            self.db = sutradb.open(self.path, durability="off")

    @rule(where=filters)
    def check(self, where):
        want = sorted(i for i, md in self.model.items() if o_match(where, md))
        assert self.db.find_ids(where).tolist() == want
        assert self.db.count(where) == len(want)
        if self.model:
            _, I = self.db.search_vectors(np.ones(2), k=len(self.model), where=where)
            assert sorted(I[0][I[0] >= 0].tolist()) == want

    @invariant()
    def fixed_filters(self):
        if self.db is None:
            return
        for where in ({"a": 1}, {"a.b": {"$exists": True}}, {"b": {"$contains": "x"}}):
            want = sorted(i for i, md in self.model.items() if o_match(where, md))
            assert self.db.find_ids(where).tolist() == want


TestFilterMachine = FilterMachine.TestCase
TestFilterMachine.settings = settings(max_examples=100 if CI else 60, stateful_step_count=30,
                                      deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])


def test_reopen_and_compaction_keep_answers(tmp_path):
    path = str(tmp_path / "db")
    rng = np.random.default_rng(0)
    mds = [{"cat": f"c{i % 10}", "tags": [f"t{i % 7}", f"t{i % 3}"], "src": {"year": 1990 + i % 30}}
           for i in range(500)]
    wheres = [{"cat": "c3"}, {"tags": "t2"}, {"src.year": {"$gte": 2010}},
              {"tags": {"$all": ["t1", "t4"]}}, {"$not": {"cat": {"$in": ["c1", "c2"]}}}]
    with sutradb.open(path, dim=4, durability="off") as db:
        db.add_vectors(rng.standard_normal((500, 4)).astype(np.float32), metadata=mds)
        before = [db.find_ids(w).tolist() for w in wheres]
        db.delete(list(range(0, 500, 5)))
        db.compact()
        after = [db.find_ids(w).tolist() for w in wheres]
    for w, b, a in zip(wheres, before, after):
        assert a == [i for i in b if i % 5], w
        assert b == [i for i, md in enumerate(mds) if o_match(w, roundtrip(md))]
    with sutradb.open(path, "r") as db:
        assert [db.find_ids(w).tolist() for w in wheres] == after


def test_sparse_ids_use_the_scan_and_agree():
    """When almost every id is deleted the mask over ids would cost more than the
    predicate over the few live concepts: the scan answers, the same way."""
    n = 70_000
    db = sutradb.open(":memory:", dim=2, vector_dtype="float32", index_threshold=10 ** 9)
    db.add_vectors(np.ones((n, 2), np.float32), metadata=[{"k": i % 4, "t": [i % 3]} for i in range(n)])
    db.delete(np.arange(n - 20))
    model = {i: {"k": i % 4, "t": [i % 3]} for i in range(n - 20, n)}
    for where in ({"k": 1}, {"t": 2}, {"$not": {"k": {"$in": [0, 1]}}}, {"t": {"$exists": False}}):
        want = [i for i, md in model.items() if o_match(where, md)]
        assert db.find_ids(where).tolist() == want
        assert db.count(where) == len(want)
    db.close()


def test_field_index_follows_commits_while_threads_search():
    db = sutradb.open(":memory:", dim=2, vector_dtype="float32")
    db.add_vectors(np.ones((200, 2), np.float32), metadata=[{"k": i % 5} for i in range(200)])
    stop = threading.Event()
    bad = []

    def reader():
        while not stop.is_set():
            ids = db.find_ids({"k": {"$in": [1, 2]}})
            # every id that matches at that commit: k of the first 200 never changes
            if any(i < 200 and i % 5 not in (1, 2) for i in ids.tolist()):
                bad.append(ids)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for j in range(60):
            db.add_vectors(np.ones((3, 2), np.float32), metadata=[{"k": j % 5}] * 3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not bad
    assert db.count({"k": {"$in": [1, 2]}}) == 80 + 3 * 24
    db.close()


def test_selective_filter_searches_exactly(monkeypatch):
    """A filter that keeps at most FILTERED_EXACT_ROWS rows is searched exactly over
    them (an IVF or PQ scan would see few of them); rerank=0 still means ADC."""
    from sutradb.index import vector
    rng = np.random.default_rng(3)
    X = rng.standard_normal((3000, 16)).astype(np.float32)
    Q = rng.standard_normal((20, 16)).astype(np.float32)
    db = sutradb.open(":memory:", dim=16, index_threshold=1000, vector_dtype="float32")
    db.add_vectors(X, metadata=[{"g": i % 50} for i in range(3000)])
    assert db.index_info["kind"] in ("pq", "ivf")
    where = {"g": {"$in": [3, 7]}}                      # 120 rows
    De, Ie = db.search_vectors(Q, k=10, where=where, exact=True)
    D, I = db.search_vectors(Q, k=10, where=where)
    np.testing.assert_array_equal(I, Ie)
    np.testing.assert_allclose(D, De, rtol=1e-5, atol=1e-5)
    for q, row in zip(Q[:3], Ie[:3]):                  # one query per call too
        assert db.search_vectors(q, k=10, where=where)[1][0].tolist() == row.tolist()
    Da, Ia = db.search_vectors(Q, k=10, where=where, rerank=0)   # ADC distances
    assert set(Ia.ravel().tolist()) <= set(db.find_ids(where).tolist())
    assert not np.allclose(Da, De)
    monkeypatch.setattr(vector, "FILTERED_EXACT_ROWS", 0)          # the scan, same filter
    _, Is = db.search_vectors(Q, k=10, where=where)
    assert set(Is.ravel().tolist()) <= set(db.find_ids(where).tolist())
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(Is.tolist(), Ie.tolist())]) > 0.5
    assert db.search_vectors(Q, k=10, where={"g": 99})[1].max() == -1     # nothing matches
    db.close()
