"""One Database shared by threads: what a desktop application does (a UI thread that
searches and reads, a worker thread that adds, updates, deletes, links and commits).

Every read is checked against a model of the committed state that the worker
publishes after each commit returns (and marks as "committing" just before it calls
commit): a concept a reader sees must be a version that was committed (or was being
committed), not one staged in an open transaction, overwritten inside its
transaction or rolled back; not older than a version committed before the read began;
with its text, metadata and vector from that one version (no torn reads); and an id
deleted before the read began never comes back. The only exception a reader may see
is NotFoundError, and only for an id that a commit overlapping the read deleted.

Runs are bounded by operation counts; SUTRADB_THREADS_SEED changes the seeds
(``for s in 1 2 3 4 5; do SUTRADB_THREADS_SEED=$s pytest tests/test_threads.py; done``).
"""

from __future__ import annotations

import os
import threading
import traceback

import numpy as np
import pytest

import sutradb
from sutradb.database import indexing as _indexing
from sutradb.errors import ClosedError, InvalidArgumentError, LockedError, NotFoundError

SEED = int(os.environ.get("SUTRADB_THREADS_SEED", "0"))
DIM = 16
JOIN = 180.0            # seconds a thread may take before the test calls it a deadlock
FAR = 10 ** 9           # ids never allocated


def unit(rng):
    v = rng.standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def cos_dist(a16, b16):
    a = a16.astype(np.float64)
    b = b16.astype(np.float64)
    return 1.0 - float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))


class Rollback(Exception):
    """Raised inside a transaction to roll it back."""


def run_threads(targets, errors, abort):
    """Start one thread per target; join each with a timeout (alive = deadlock)."""
    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException:
                errors.append(traceback.format_exc())
                abort.set()
        return run

    ts = [threading.Thread(target=wrap(fn), daemon=True, name=getattr(fn, "__name__", "t"))
          for fn in targets]
    for t in ts:
        t.start()
    for t in ts:
        t.join(JOIN)
    alive = [t.name for t in ts if t.is_alive()]
    abort.set()
    assert not alive, f"threads still running after {JOIN} s (deadlock?): {alive}"
    assert not errors, "\n".join(errors[:3])


# --------------------------------------------------------------------------- the model

class Version:
    __slots__ = ("id", "key", "text", "md", "vec", "state", "superseded")

    def __init__(self, id_, key, text, md, vec):
        self.id, self.key, self.text, self.md, self.vec = id_, key, text, md, vec
        self.state = "staged"       # -> committing -> committed | overwritten | rolledback
        self.superseded = None      # seq of the published commit that replaced / deleted it


class LinkVersion:
    __slots__ = ("triple", "state", "superseded")

    def __init__(self, triple):
        self.triple = triple
        self.state = "staged"
        self.superseded = None


class Txn:
    """What one transaction stages, with the writer's view of the state it leads to."""

    def __init__(self, model, auto=False):
        self.auto = auto
        self.new = []                            # version tokens, in order
        self.links = []                          # link tokens
        self.live = dict(model.current)          # id -> token, staged state
        self.cur_links = dict(model.cur_links)   # (a, b, rel) -> token, staged state
        self.next_id = model.next_id
        self.committing = False
        self.deleting = set()
        self.touched = set()
        self.count = None

    def snapshot(self):
        return (len(self.new), len(self.links), dict(self.live), dict(self.cur_links),
                self.next_id)


class Model:
    """Committed state as the worker publishes it (all fields under ``lock``)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seq = 0
        self.token = 0
        self.versions: dict[int, Version] = {}
        self.by_id: dict[int, list[int]] = {}
        self.links: dict[int, LinkVersion] = {}
        self.current: dict[int, int] = {}        # id -> token of the committed version
        self.cur_links: dict[tuple, int] = {}
        self.deleted: dict[int, int] = {}        # id -> seq of the commit that deleted it
        self.keys: dict[str, int] = {}           # key -> token of the version that took it
        self.ever: set[int] = set()              # ids of committing / committed versions
        self.counts = [0]                        # live concepts after each published commit
        self.next_id = 0
        self.pending: Txn | None = None
        self.all_ids: list[int] = []
        self.all_keys: list[str] = []
        self.stats = {"commits": 0, "rollbacks": 0, "savepoint_rollbacks": 0, "ops": 0}

    # --- the writer's side

    def new_version(self, txn, id_, key, rng, vec=None):
        with self.lock:
            self.token += 1
            tok = self.token
            md = {"tok": tok, "par": tok % 2}
            v = Version(id_, key, f"t{tok}", md,
                        (unit(rng) if vec is None else vec).astype(np.float16))
            self.versions[tok] = v
            self.by_id.setdefault(id_, []).append(tok)
            if len(self.by_id[id_]) == 1:
                self.all_ids.append(id_)
            if key is not None:
                self.keys[key] = tok
                self.all_keys.append(key)
        txn.new.append(tok)
        txn.live[id_] = tok
        txn.touched.add(id_)
        return tok, v

    def new_link(self, txn, triple):
        with self.lock:
            self.token += 1
            tok = self.token
            self.links[tok] = LinkVersion(triple)
        txn.links.append(tok)
        txn.cur_links[triple] = tok
        return tok

    @staticmethod
    def stage_delete(txn, id_):
        del txn.live[id_]
        txn.touched.add(id_)
        for t in [t for t in txn.cur_links if id_ in t[:2]]:
            del txn.cur_links[t]

    def restore(self, txn, snap):
        """A savepoint rolled back: what it staged was never visible."""
        nn, nl, live, cur_links, next_id = snap
        with self.lock:
            for tok in txn.new[nn:]:
                self.versions[tok].state = "rolledback"
            for tok in txn.links[nl:]:
                self.links[tok].state = "rolledback"
        del txn.new[nn:]
        del txn.links[nl:]
        txn.live, txn.cur_links, txn.next_id = live, cur_links, next_id

    def committing(self, txn):
        with self.lock:
            for tok in txn.new:
                if txn.live.get(self.versions[tok].id) == tok:
                    self.versions[tok].state = "committing"
                    self.ever.add(self.versions[tok].id)
            for tok in txn.links:
                if txn.cur_links.get(self.links[tok].triple) == tok:
                    self.links[tok].state = "committing"
            txn.deleting = set(self.current) - set(txn.live)
            txn.count = len(txn.live)
            txn.committing = True
            self.pending = txn

    def publish(self, txn):
        with self.lock:
            seq = self.seq + 1
            for tok in txn.new:
                v = self.versions[tok]
                v.state = "committed" if v.state == "committing" else "overwritten"
            for tok in txn.links:
                lv = self.links[tok]
                lv.state = "committed" if lv.state == "committing" else "overwritten"
            for id_, tok in self.current.items():
                if txn.live.get(id_) != tok:
                    self.versions[tok].superseded = seq
            for id_ in set(self.current) - set(txn.live):
                self.deleted[id_] = seq
            for triple, tok in self.cur_links.items():
                if txn.cur_links.get(triple) != tok:
                    self.links[tok].superseded = seq
            self.current = dict(txn.live)
            self.cur_links = dict(txn.cur_links)
            self.counts.append(len(self.current))
            self.next_id = txn.next_id
            self.pending = None
            self.seq = seq
            self.stats["commits"] += 1

    def rolled_back(self, txn):
        with self.lock:
            for tok in txn.new:
                self.versions[tok].state = "rolledback"
            for tok in txn.links:
                self.links[tok].state = "rolledback"
            self.pending = None
            self.stats["rollbacks"] += 1

    # --- the readers' side (all under the lock)

    def ok_version(self, tok, start):
        v = self.versions.get(tok)
        return (v is not None and v.state in ("committing", "committed")
                and not (v.superseded is not None and v.superseded <= start))

    def allowed(self, id_, start):
        return [self.versions[t] for t in self.by_id.get(id_, ()) if self.ok_version(t, start)]

    def deleted_before(self, id_, start):
        d = self.deleted.get(id_)
        return d is not None and d <= start

    def gone(self, id_):
        """Deleted by a published commit or by the one being committed."""
        p = self.pending
        return id_ in self.deleted or (p is not None and p.committing and id_ in p.deleting)

    def stable(self, id_, tok):
        """Still ``tok``, and no commit in flight touches it."""
        p = self.pending
        return self.current.get(id_) == tok and not (p is not None and p.committing
                                                     and id_ in p.touched)


# --------------------------------------------------------------------------- the writer

class Writer:
    """Writes through auto-commit calls and explicit transactions (some rolled back,
    some with a rolled-back savepoint) and publishes each commit to the model."""

    def __init__(self, db, model, rng):
        self.db, self.m, self.rng = db, model, rng

    # staging of single operations into ``txn`` (the caller commits)

    def add(self, txn, n):
        rng = self.rng
        ids = list(range(txn.next_id, txn.next_id + n))
        keys = [None] * n
        vs = []
        for j, i in enumerate(ids):
            with self.m.lock:
                nxt = self.m.token + 1
            key = f"k{nxt}" if rng.random() < 0.5 else None
            tok, v = self.m.new_version(txn, i, key, rng)
            keys[j] = key
            vs.append(v)
        txn.next_id += n
        if txn.auto:
            self.m.committing(txn)
        got = self.db.add_vectors(np.stack([v.vec.astype(np.float32) for v in vs]),
                                  texts=[v.text for v in vs], metadata=[v.md for v in vs],
                                  keys=keys if any(k is not None for k in keys) else None)
        assert got.tolist() == ids, (got, ids)
        return ids

    def pick(self, txn):
        return int(self.rng.choice(list(txn.live))) if txn.live else None

    def update(self, txn):
        i = self.pick(txn)
        if i is None:
            return
        old = self.m.versions[txn.live[i]]
        same_vec = self.rng.random() < 0.5
        tok, v = self.m.new_version(txn, i, old.key, self.rng,
                                    vec=old.vec.astype(np.float32) if same_vec else None)
        if txn.auto:
            self.m.committing(txn)
        kw = {} if same_vec else {"vector": v.vec.astype(np.float32)}
        self.db.update(i, text=v.text, metadata=v.md, **kw)

    def delete(self, txn):
        if len(txn.live) < 40:
            return
        i = self.pick(txn)
        self.m.stage_delete(txn, i)
        if txn.auto:
            self.m.committing(txn)
        self.db.delete([i] if self.rng.random() < 0.5 else i)

    def link(self, txn):
        a, b = self.pick(txn), self.pick(txn)
        if a is None:
            return
        rel = "r0" if self.rng.random() < 0.5 else "r1"
        tok = self.m.new_link(txn, (a, b, rel))
        if txn.auto:
            self.m.committing(txn)
        self.db.link(a, b, rel, weight=float(tok))

    def one(self, txn):
        r = self.rng.random()
        if r < 0.3:
            self.add(txn, int(self.rng.integers(1, 5)))
        elif r < 0.6:
            self.update(txn)
        elif r < 0.75:
            self.delete(txn)
        else:
            self.link(txn)
        self.m.stats["ops"] += 1

    # one step: an auto-committed write or an explicit transaction

    def step(self):
        m, rng = self.m, self.rng
        if rng.random() < 0.6:
            txn = Txn(m, auto=True)
            self.one(txn)
            if txn.committing:
                m.publish(txn)
            return
        txn = Txn(m)
        roll = rng.random() < 0.4
        try:
            with self.db.transaction():
                for _ in range(int(rng.integers(1, 6))):
                    self.one(txn)
                if rng.random() < 0.25:
                    snap = txn.snapshot()
                    try:
                        with self.db.transaction():          # a savepoint
                            for _ in range(int(rng.integers(1, 3))):
                                self.one(txn)
                            raise Rollback
                    except Rollback:
                        m.restore(txn, snap)
                        m.stats["savepoint_rollbacks"] += 1
                if roll:
                    raise Rollback
                m.committing(txn)
        except Rollback:
            m.rolled_back(txn)
            return
        m.publish(txn)

    def populate(self, n):
        txn = Txn(self.m)
        with self.db.transaction():
            self.add(txn, n)
            self.m.committing(txn)
        self.m.publish(txn)


# --------------------------------------------------------------------------- the readers

class Reader:
    """The UI thread: a seeded mix of reads, each checked against the model."""

    def __init__(self, db, model, rng, name, filters=True):
        self.db, self.m, self.rng, self.name, self.filters = db, model, rng, name, filters
        self.counts: dict[str, int] = {}

    def fail(self, what):
        raise AssertionError(f"{self.name}: {what}")

    def check_concept(self, c, start):
        m = self.m
        tok = int(c.text[1:]) if isinstance(c.text, str) and c.text[:1] == "t" else None
        with m.lock:
            v = m.versions.get(tok)
            if v is None:
                self.fail(f"id {c.id}: text {c.text!r} of no version the writer made")
            if v.id != c.id or v.key != c.key or v.md != c.metadata:
                self.fail(f"id {c.id}: ({c.key!r}, {c.metadata}) is not version {tok} "
                          f"(id {v.id}, {v.key!r}, {v.md})")
            if c.vector is not None and not np.array_equal(c.vector, v.vec):
                self.fail(f"id {c.id}: vector of another version than its text {c.text!r} (torn read)")
            if v.state not in ("committing", "committed"):
                self.fail(f"id {c.id}: saw version {tok}, which is {v.state}")
            if v.superseded is not None and v.superseded <= start:
                self.fail(f"id {c.id}: saw version {tok}, replaced by commit {v.superseded} "
                          f"before the read began (after commit {start})")
            if m.deleted_before(c.id, start):
                self.fail(f"id {c.id} deleted by commit {m.deleted[c.id]} came back")

    def check_id(self, i, start):
        m = self.m
        with m.lock:
            if i not in m.ever:
                self.fail(f"search returned id {i}, never committed")
            if m.deleted_before(i, start):
                self.fail(f"search returned id {i}, deleted by commit {m.deleted[i]} before the read")

    def not_found_ok(self, i, live_at_start):
        with self.m.lock:
            if live_at_start and not self.m.gone(i):
                self.fail(f"NotFoundError for id {i}, live before the read and not deleted since")

    def begin(self):
        m = self.m
        with m.lock:
            return m.seq, dict(m.current)

    def some_id(self, live):
        r = self.rng.random()
        if r < 0.05:
            return FAR + int(self.rng.integers(1000))
        with self.m.lock:
            if r < 0.75 and live:
                return list(live)[int(self.rng.integers(len(live)))]
            ids = self.m.all_ids
            return ids[int(self.rng.integers(len(ids)))]

    def step(self):
        db, m, rng = self.db, self.m, self.rng
        start, live = self.begin()
        r = rng.random()
        if r < 0.12:
            op = "search_vectors"
            q = rng.standard_normal((int(rng.integers(1, 4)), DIM)).astype(np.float32)
            D, I = db.search_vectors(q, k=10)
            for i in I[I >= 0].tolist():
                self.check_id(i, start)
        elif r < 0.24:
            op = "search"
            where = None
            if self.filters and rng.random() < 0.4:
                where = {"par": int(rng.integers(2))}
            hits = db.search(unit(rng), k=8, where=where)
            for h in hits:
                if h.id != h.concept.id:
                    self.fail(f"hit {h.id} carries concept {h.concept.id}")
                self.check_concept(h.concept, start)
                if where is not None and h.concept.metadata.get("par") != where["par"]:
                    self.fail(f"hit {h.id} {h.concept.metadata} does not match {where}")
        elif r < 0.31:
            op = "search_exact_self"
            if not live:
                return
            i = list(live)[int(rng.integers(len(live)))]
            tok = live[i]
            with m.lock:
                q = m.versions[tok].vec.astype(np.float32)
            D, I = db.search_vectors(q, k=3, exact=True)
            for j in I[I >= 0].tolist():
                self.check_id(j, start)
            with m.lock:
                stable = m.stable(i, tok)
            if stable and int(I[0, 0]) != i:
                self.fail(f"exact search for the vector of id {i} (unchanged through the read) "
                          f"returned {I[0].tolist()}")
        elif r < 0.47:
            op = "get"
            i = self.some_id(live)
            try:
                c = db.get(i)
            except NotFoundError:
                self.not_found_ok(i, i in live)
            else:
                self.check_concept(c, start)
        elif r < 0.53:
            op = "get_key"
            with m.lock:
                if not m.all_keys:
                    return
                key = m.all_keys[int(rng.integers(len(m.all_keys)))]
                v = m.versions[m.keys[key]]
            try:
                c = db.get(key)
            except NotFoundError:
                self.not_found_ok(v.id, live.get(v.id) is not None
                                  and m.versions[live[v.id]].key == key)
            else:
                if c.key != key:
                    self.fail(f"get({key!r}) returned a concept with key {c.key!r}")
                self.check_concept(c, start)
        elif r < 0.59:
            op = "get_many"
            ids = [self.some_id(live) for _ in range(int(rng.integers(1, 6)))]
            try:
                cs = db.get_many(ids)
            except NotFoundError:
                with m.lock:
                    if all(i in live and not m.gone(i) for i in ids):
                        self.fail(f"get_many({ids}): NotFoundError, all live and not deleted")
            else:
                if [c.id for c in cs] != ids:
                    self.fail(f"get_many({ids}) returned {[c.id for c in cs]}")
                for c in cs:
                    self.check_concept(c, start)
        elif r < 0.65:
            op = "get_vectors"
            ids = [self.some_id(live) for _ in range(int(rng.integers(1, 6)))]
            try:
                V = db.get_vectors(ids)
            except NotFoundError:
                with m.lock:
                    if all(i in live and not m.gone(i) for i in ids):
                        self.fail(f"get_vectors({ids}): NotFoundError, all live and not deleted")
            else:
                with m.lock:
                    for i, row in zip(ids, V):
                        if not any(np.array_equal(row, v.vec) for v in m.allowed(i, start)):
                            self.fail(f"get_vectors: the vector of id {i} is no committed version")
        elif r < 0.71:
            op = "distance"
            a, b = self.some_id(live), self.some_id(live)
            try:
                d = db.distance(a, b)
            except NotFoundError:
                with m.lock:
                    if a in live and b in live and not m.gone(a) and not m.gone(b):
                        self.fail(f"distance({a}, {b}): NotFoundError, both live")
            else:
                with m.lock:
                    va, vb = m.allowed(a, start), m.allowed(b, start)
                exp = [cos_dist(x.vec, y.vec) for x in va for y in vb]
                if not exp or min(abs(d - e) for e in exp) > 5e-3:
                    self.fail(f"distance({a}, {b}) = {d}, committed versions give {exp[:6]}")
        elif r < 0.75:
            op = "distances"
            P = [[self.some_id(live), self.some_id(live)] for _ in range(int(rng.integers(1, 5)))]
            try:
                d = db.distances(P)
            except NotFoundError:
                with m.lock:
                    if all(i in live and not m.gone(i) for pr in P for i in pr):
                        self.fail(f"distances({P}): NotFoundError, all live")
            else:
                with m.lock:
                    for (a, b), x in zip(P, d.tolist()):
                        exp = [cos_dist(u.vec, w.vec) for u in m.allowed(a, start)
                               for w in m.allowed(b, start)]
                        if not exp or min(abs(x - e) for e in exp) > 5e-3:
                            self.fail(f"distances: ({a}, {b}) = {x}, committed versions give {exp[:6]}")
        elif r < 0.80:
            op = "find_words"
            with m.lock:
                tok = int(rng.integers(1, m.token + 1))
                v = m.versions.get(tok)
            if v is None:                          # a link's token
                return
            found = db.find_words(f"t{tok}")
            with m.lock:
                if found and (found != [v.id] or not m.ok_version(tok, start)):
                    self.fail(f"find_words('t{tok}') = {found}: version {tok} of id {v.id} is "
                              f"{v.state}, superseded by {v.superseded} (read after {start})")
                if not found and live.get(v.id) == tok and m.stable(v.id, tok):
                    self.fail(f"find_words('t{tok}') missed id {v.id}, unchanged through the read")
        elif r < 0.84:
            op = "ids"
            got = db.ids().tolist() if rng.random() < 0.5 else sorted(db)
            with m.lock:
                for i in got:
                    if i not in m.ever or m.deleted_before(i, start):
                        self.fail(f"ids(): {i} never committed or deleted before the read")
                gs = set(got)
                missing = [i for i in live if not m.gone(i) and i not in gs]
            if missing:
                self.fail(f"ids() misses {missing[:5]}, live through the read")
        elif r < 0.87:
            op = "links"
            for a, b, rel, w in db.links():
                with m.lock:
                    lv = m.links.get(int(round(w)))
                    if lv is None or lv.triple != (a, b, rel):
                        self.fail(f"links(): {(a, b, rel, w)} is no link the writer made")
                    if lv.state not in ("committing", "committed") or (
                            lv.superseded is not None and lv.superseded <= start):
                        self.fail(f"links(): {(a, b, rel, w)} is {lv.state}, superseded by "
                                  f"{lv.superseded} (read after {start})")
        elif r < 0.95:
            op = "neighbors"
            a = self.some_id(live)
            direction = "out" if rng.random() < 0.7 else "in"
            try:
                links = db.neighbors(a, direction=direction)
            except NotFoundError:
                self.not_found_ok(a, a in live)
            else:
                with m.lock:
                    for ln in links:
                        tok = int(round(ln.weight))
                        lv = m.links.get(tok)
                        t = (a, ln.id, ln.relation) if direction == "out" else (ln.id, a, ln.relation)
                        if lv is None or lv.triple != t:
                            self.fail(f"neighbors({a}): {ln} is no link the writer made")
                        if lv.state not in ("committing", "committed"):
                            self.fail(f"neighbors({a}): {ln} is {lv.state}")
                        if lv.superseded is not None and lv.superseded <= start:
                            self.fail(f"neighbors({a}): {ln} was replaced or deleted by commit "
                                      f"{lv.superseded} before the read")
        else:
            op = "len"
            n = len(db)
            i = self.some_id(live)
            inside = i in db
            with m.lock:
                ok = set(m.counts[start:])
                if m.pending is not None and m.pending.committing:
                    ok.add(m.pending.count)
                if n not in ok:
                    self.fail(f"len(db) = {n}, committed states since the read began: {sorted(ok)}")
                if inside and i not in m.ever:
                    self.fail(f"{i} in db, never committed")
                if not inside and i in live and not m.gone(i):
                    self.fail(f"{i} not in db, live and not deleted")
        self.counts[op] = self.counts.get(op, 0) + 1


# --------------------------------------------------------------------------- UI + worker

VARIANTS = {
    # name: (memory, initial rows, index, reader threads, worker steps)
    "flat": (False, 300, "flat", 1, 700),
    "pq": (False, 600, "pq", 1, 700),
    "ivf": (False, 600, "ivf", 2, 700),
    "memory-trains": (True, 300, "auto", 1, 600),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ui_thread_reads_while_worker_writes(variant, tmp_path, monkeypatch):
    memory, n0, kind, n_readers, steps = VARIANTS[variant]
    seed = SEED * 100 + list(VARIANTS).index(variant)
    opts = dict(durability="off", seed=seed)
    if kind == "flat":
        opts["index_threshold"] = 0               # never trains: exact search
    elif kind == "auto":
        opts.update(index="ivf", index_threshold=n0 + 60)   # trains during the run
    else:
        opts["index_threshold"] = 0
    db = sutradb.open(":memory:" if memory else os.fspath(tmp_path / "db"), dim=DIM, **opts)
    try:
        model = Model()
        writer = Writer(db, model, np.random.default_rng(seed))
        writer.populate(n0)
        folds = [0]
        if kind in ("pq", "ivf"):
            db.build_index(kind=kind, **({"nlist": 8} if kind == "ivf" else {}))
        if kind == "ivf":
            # fold the tail into the lists during the run (index swaps under readers)
            monkeypatch.setattr(_indexing, "_FOLD_MIN", 48)
            fold = db._fold

            def counted_fold():
                folds[0] += 1
                fold()
            db._fold = counted_fold
        gen0 = None
        if not memory:
            # checkpoints and compactions (renumbered rows) during the run
            s = db._store
            s._checkpoint_bytes, s._compact_min_rows, s._compact_ratio = 24_000, 48, 0.2
            gen0 = s.generation
        info0 = db.index_info["kind"]

        abort = threading.Event()
        worker_done = threading.Event()
        errors: list[str] = []

        compactions = [0]

        def worker():
            try:
                rows = db._store.n_rows
                for _ in range(steps):
                    if abort.is_set():
                        return
                    writer.step()
                    n, rows = rows, db._store.n_rows
                    compactions[0] += rows < n          # dead rows dropped, rows renumbered
            finally:
                worker_done.set()

        readers = [Reader(db, model, np.random.default_rng([seed, j]), f"reader{j}")
                   for j in range(n_readers)]

        def ui(rd):
            def run():
                # at least 600 reads, then on while the worker runs (at most 6,000)
                for n in range(6000):
                    if abort.is_set() or (n >= 600 and worker_done.is_set()):
                        return
                    rd.step()
            run.__name__ = rd.name
            return run

        run_threads([worker] + [ui(rd) for rd in readers], errors, abort)

        # the run did what it says
        st = model.stats
        reads = sum(sum(rd.counts.values()) for rd in readers)
        print(f"\n{variant} seed {seed}: {st}, {reads} reads {readers[0].counts}, "
              f"index {info0} -> {db.index_info['kind']}, folds {folds[0]}, "
              f"generations {None if gen0 is None else db._store.generation - gen0}, "
              f"compactions {compactions[0]}")
        assert st["commits"] > 200 and st["rollbacks"] > 30 and st["savepoint_rollbacks"] > 5
        assert st["ops"] > 1000 and reads >= 500 * n_readers
        assert all(len(rd.counts) == 14 for rd in readers), [rd.counts for rd in readers]
        if kind == "auto":
            assert info0 == "flat" and db.index_info["kind"] == "ivf"
        else:
            assert db.index_info["kind"] == kind
        if kind == "ivf":
            assert folds[0] >= 1
        if gen0 is not None:
            assert db._store.generation > gen0 and compactions[0] >= 1

        # and the final state is the model's
        check_final(db, model.current, model.versions, model.cur_links, model.links)
        assert db.verify()["concepts"] == len(model.current)
    finally:
        db.close()


def check_final(db, current, versions, cur_links, links):
    assert db.ids().tolist() == sorted(current)
    for i, tok in current.items():
        c = db.get(i)
        v = versions[tok]
        assert (c.text, c.key, c.metadata) == (v.text, v.key, v.md), i
        np.testing.assert_array_equal(c.vector, v.vec)
    want = sorted((a, b, rel, float(tok)) for (a, b, rel), tok in cur_links.items())
    assert db.links() == want


# --------------------------------------------------------------------------- two writers

def test_two_writer_threads_serialise(tmp_path):
    """Two threads write at once, each in its own auto-commits and transactions (some
    rolled back, some with a rolled-back savepoint), on its own concepts, with a third
    thread reading: the result is both writers' committed work, nothing else."""
    db = sutradb.open(os.fspath(tmp_path / "db"), dim=DIM, durability="off", index_threshold=0)
    try:
        db._store._checkpoint_bytes = 24_000
        abort = threading.Event()
        errors: list[str] = []
        models = []

        def make_writer(w):
            rng = np.random.default_rng([SEED, 7, w])
            live: dict[int, tuple] = {}           # id -> (text, md, vec16)
            lk: dict[tuple, float] = {}
            models.append((live, lk))
            counter = [0]

            def rec():
                counter[0] += 1
                t = f"w{w}-{counter[0]}"
                return t, {"w": w, "n": counter[0]}, unit(rng).astype(np.float16)

            def ops(view, links, n):
                for _ in range(n):
                    r = rng.random()
                    if r < 0.35 or len(view) < 5:
                        rs = [rec() for _ in range(int(rng.integers(1, 4)))]
                        ids = db.add_vectors(np.stack([x[2].astype(np.float32) for x in rs]),
                                             texts=[x[0] for x in rs],
                                             metadata=[x[1] for x in rs])
                        for i, x in zip(ids.tolist(), rs):
                            assert i not in view
                            view[i] = x
                    elif r < 0.65:
                        i = int(rng.choice(list(view)))
                        t, md, v = rec()
                        db.update(i, text=t, metadata=md, vector=v.astype(np.float32))
                        view[i] = (t, md, v)
                    elif r < 0.8:
                        i = int(rng.choice(list(view)))
                        db.delete(i)
                        del view[i]
                        for k in [k for k in links if i in k[:2]]:
                            del links[k]
                    else:
                        a, b = (int(x) for x in rng.choice(list(view), 2))
                        wgt = float(rng.integers(1, 1000))
                        db.link(a, b, f"w{w}", weight=wgt)
                        links[(a, b, f"w{w}")] = wgt

            def run():
                for _ in range(300):
                    if abort.is_set():
                        return
                    if rng.random() < 0.5:
                        ops(live, lk, 1)
                        continue
                    view, links = dict(live), dict(lk)
                    try:
                        with db.transaction():
                            ops(view, links, int(rng.integers(1, 5)))
                            if rng.random() < 0.3:
                                v2, l2 = dict(view), dict(links)
                                try:
                                    with db.transaction():
                                        ops(v2, l2, 2)
                                        raise Rollback
                                except Rollback:
                                    pass
                            if rng.random() < 0.35:
                                raise Rollback
                    except Rollback:
                        continue
                    live.clear(); live.update(view)
                    lk.clear(); lk.update(links)
            run.__name__ = f"writer{w}"
            return run

        done = threading.Event()
        seen = [0]

        def reader():
            rng = np.random.default_rng([SEED, 9])
            while not done.is_set() and not abort.is_set() and seen[0] < 20_000:
                D, I = db.search_vectors(rng.standard_normal(DIM).astype(np.float32), k=5)
                for i in I[I >= 0].tolist():
                    try:
                        c = db.get(i)
                    except NotFoundError:           # deleted since the search
                        continue
                    assert c.text == f"w{c.metadata['w']}-{c.metadata['n']}", c
                seen[0] += 1

        w0, w1 = make_writer(0), make_writer(1)

        def writers():
            try:
                run_threads([w0, w1], errors, abort)
            finally:
                done.set()

        run_threads([writers, reader], errors, abort)
        (l0, k0), (l1, k1) = models
        assert not set(l0) & set(l1)
        assert len(l0) > 20 and len(l1) > 20
        assert db.ids().tolist() == sorted(set(l0) | set(l1))
        for i, (t, md, v) in {**l0, **l1}.items():
            c = db.get(i)
            assert (c.text, c.metadata) == (t, md)
            np.testing.assert_array_equal(c.vector, v)
        want = sorted((a, b, r, w) for (a, b, r), w in {**k0, **k1}.items())
        assert db.links() == want
        db.verify()
    finally:
        db.close()


# --------------------------------------------------------------------------- transactions across threads

@pytest.fixture
def db3(tmp_path):
    db = sutradb.open(os.fspath(tmp_path / "db"), dim=4, durability="off")
    db.add_vectors(np.eye(3, 4, dtype=np.float32), texts=["a", "b", "c"])
    yield db
    db.close()


def start(fn):
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:
            out["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_a_write_from_another_thread_waits_for_the_open_transaction(db3, end):
    db = db3
    t = db.transaction()
    a = int(db.add_vectors(np.ones((1, 4), np.float32), texts=["in-txn"])[0])
    assert a == 3
    started = threading.Event()

    def other():
        started.set()
        return int(db.add_vectors(np.full((1, 4), 0.5, np.float32), texts=["other"])[0])

    th, out = start(other)
    started.wait(JOIN)
    th.join(0.5)
    assert th.is_alive() and not out, out         # waits (no error, not joined in)

    # reads from a third thread do not wait, and see the committed state only
    def read():
        assert db.in_transaction                   # open in some thread
        assert len(db) == 3 and 3 not in db
        with pytest.raises(NotFoundError):
            db.get(a)
        D, I = db.search_vectors(np.ones(4, np.float32), k=10)
        assert sorted(I[I >= 0].tolist()) == [0, 1, 2]
        return True
    rt, rout = start(read)
    rt.join(JOIN)
    assert not rt.is_alive() and rout == {"value": True}, rout
    assert th.is_alive()

    getattr(t, end)()
    th.join(JOIN)
    assert not th.is_alive() and "error" not in out, out
    b = out["value"]
    assert db.get(b).text == "other"              # its own commit, whatever ours did
    if end == "commit":
        assert b == 4 and db.get(a).text == "in-txn" and len(db) == 5
    else:
        assert b == 3 and len(db) == 4             # the rolled-back id is reused


def test_a_transaction_is_finished_only_by_its_thread(db3):
    db = db3
    t = db.transaction()
    db.update(0, text="A")
    th, out = start(t.commit)
    th.join(JOIN)
    assert isinstance(out.get("error"), InvalidArgumentError), out
    th, out = start(t.rollback)
    th.join(JOIN)
    assert isinstance(out.get("error"), InvalidArgumentError), out
    assert t.active and db.get(0).text == "a"
    t.commit()
    assert db.get(0).text == "A" and not db.in_transaction


def test_another_threads_transaction_is_its_own_not_a_savepoint(db3):
    db = db3
    t = db.transaction()
    db.update(0, text="A")
    began = {}

    def other():
        with db.transaction() as tb:              # waits for ours to finish
            began["repr"] = repr(tb)
            began["sees"] = db.get(0).text
            db.update(1, text="B")
            raise Rollback
    th, out = start(other)
    th.join(0.5)
    assert th.is_alive() and not began
    t.commit()
    th.join(JOIN)
    assert isinstance(out.get("error"), Rollback), out
    # an outer transaction that began after our commit
    assert began == {"repr": "<sutradb.Transaction depth=1 open>", "sees": "A"}
    # its rollback undid its own write only
    assert db.get(0).text == "A" and db.get(1).text == "b" and not db.in_transaction


def test_close_in_the_transactions_thread_releases_a_waiting_writer(db3):
    db = db3
    db.transaction()
    db.update(0, text="never")
    th, out = start(lambda: db.update(1, text="B"))
    th.join(0.5)
    assert th.is_alive()
    db.close()                                     # rolls back, frees the writer lock
    th.join(JOIN)
    assert not th.is_alive() and isinstance(out.get("error"), ClosedError), out


def test_close_from_another_thread_waits_for_the_transaction(db3):
    db = db3
    t = db.transaction()
    db.update(0, text="A")
    th, out = start(db.close)
    th.join(0.5)
    assert th.is_alive() and not db.closed
    t.commit()
    th.join(JOIN)
    assert not th.is_alive() and out == {"value": None}, out
    assert db.closed


def test_build_index_and_compact_from_another_thread_wait_for_the_transaction(tmp_path):
    db = sutradb.open(os.fspath(tmp_path / "db"), dim=DIM, durability="off", index_threshold=0)
    try:
        rng = np.random.default_rng([SEED, 3])
        db.add_vectors(rng.standard_normal((300, DIM)).astype(np.float32))
        t = db.transaction()
        db.add_vectors(rng.standard_normal((5, DIM)).astype(np.float32))
        th, out = start(lambda: db.build_index(kind="pq"))
        th.join(0.5)
        assert th.is_alive()
        with pytest.raises(InvalidArgumentError):     # in the transaction's own thread
            db.build_index(kind="pq")
        t.commit()
        th.join(JOIN)
        assert not th.is_alive() and out.get("value", {}).get("kind") == "pq", out
        assert len(db) == 305 and db.verify()["index"] == "pq"
        db.delete(list(range(100)))
        t = db.transaction()
        db.delete(100)
        th, out = start(db.compact)
        th.join(0.5)
        assert th.is_alive()
        t.commit()
        th.join(JOIN)
        assert not th.is_alive() and out == {"value": None}, out
        assert db._store.n_rows == len(db) == 204 and db.verify()["index"] == "pq"
    finally:
        db.close()


def test_one_writer_per_database_directory(tmp_path):
    path = os.fspath(tmp_path / "db")
    db = sutradb.open(path, dim=4, durability="off")
    try:
        db.add_vectors(np.eye(4, dtype=np.float32), texts=list("abcd"))
        with pytest.raises(LockedError):
            sutradb.open(path)                     # another writer (in any process)
        with sutradb.open(path, "r") as ro:        # readers take no lock
            assert len(ro) == 4
            db.delete(0)
            assert len(ro) == 4 and ro.refresh() and len(ro) == 3
    finally:
        db.close()


# --------------------------------------------------------------------------- regressions

def test_get_does_not_cache_a_record_a_commit_replaced(tmp_path):
    """Regression: get() put the record it read into its cache after leaving the read
    lock; a commit in between found nothing to drop, and later gets returned the old
    text and metadata with the new vector, until the concept changed again."""
    db = sutradb.open(os.fspath(tmp_path / "db"), dim=4, durability="off")
    try:
        a, b = (int(x) for x in db.add_vectors(np.eye(2, 4, dtype=np.float32),
                                               texts=["a", "b"], metadata=[{"v": 1}, None]))
        orig = db._read
        fired = []

        class CommitAfterRead:
            """The read lock; on the first release a commit runs in another thread."""

            def __enter__(self):
                return orig.__enter__()

            def __exit__(self, *exc):
                r = orig.__exit__(*exc)
                if not fired:
                    fired.append(1)
                    th, out = start(lambda: db.update(a, text="a2", metadata={"v": 2},
                                                      vector=[0, 0, 1, 0]))
                    th.join(JOIN)
                    assert "error" not in out, out
                return r

        db._ccache.clear()
        db._read = CommitAfterRead()
        first = db.get(a)                           # read before the commit: old version
        db._read = orig
        assert fired and (first.text, first.metadata) == ("a", {"v": 1})
        db._ccache.pop(b, None)
        db.get(b)                                   # rebuilds the lock-free read state
        c = db.get(a)
        assert (c.text, c.metadata) == ("a2", {"v": 2})
        np.testing.assert_array_equal(c.vector, [0, 0, 1, 0])
    finally:
        db.close()


def test_a_reading_loop_does_not_starve_the_writer(tmp_path):
    """Regression: a reader that arrived while a writer waited got in before it, so a
    thread searching in a loop kept the writer out (0 of 50 commits in 5,000 searches).
    Now a waiting writer goes first."""
    db = sutradb.open(os.fspath(tmp_path / "db"), dim=DIM, durability="off", index_threshold=0)
    try:
        rng = np.random.default_rng([SEED, 5])
        db.add_vectors(rng.standard_normal((5000, DIM)).astype(np.float32))
        q = rng.standard_normal((1, DIM)).astype(np.float32)
        writes = 50
        done = threading.Event()
        reads = [0]
        abort = threading.Event()

        def ui():
            while reads[0] < 5000 and not done.is_set():
                db.search_vectors(q, k=10)
                reads[0] += 1

        def worker():
            for _ in range(writes):
                db.add_vectors(rng.standard_normal((1, DIM)).astype(np.float32))
            done.set()

        run_threads([ui, worker], [], abort)
        assert reads[0] < 5000, f"{writes} commits did not get in during {reads[0]} searches"
        assert len(db) == 5000 + writes
    finally:
        db.close()


def test_index_commit_that_compacts_resets_the_row_map(tmp_path):
    """Regression (found by the ivf run above): a commit of the index alone (IVF
    lists laid out or folded, tune(save=True)) can checkpoint and compact the store,
    which renumbers the rows; the id -> row map was kept, so get() read another row
    or failed ("row 250 out of range") and distance() recursed without end."""
    db = sutradb.open(os.fspath(tmp_path / "db"), dim=DIM, durability="off", index_threshold=0)
    try:
        rng = np.random.default_rng([SEED, 11])
        V = rng.standard_normal((300, DIM)).astype(np.float32)
        db.add_vectors(V, texts=[f"t{i}" for i in range(300)])
        db.build_index(kind="ivf", nlist=4)
        db.delete(list(range(200)))
        assert db.get(250).text == "t250"               # the row map is built
        d = db.distance(250, 251)
        db._store._checkpoint_bytes, db._store._compact_min_rows = 1, 1
        gen, rows = db._store.generation, db._store.n_rows
        db.build_index(kind="ivf", nlist=4)            # commits the lists: compacts
        assert db._store.generation > gen and db._store.n_rows == 100 < rows
        assert db.get(250).text == "t250" and 250 in db and db.neighbors(250) == []
        assert db.distance(250, 251) == pytest.approx(d, abs=1e-6)
        np.testing.assert_array_equal(db.get_vectors([250])[0], V[250].astype(np.float16))
        D, I = db.search_vectors(V[250], k=1, exact=True)
        assert I[0, 0] == 250
    finally:
        db.close()


def test_changing_a_concepts_metadata_changes_no_other_get():
    """Regression: get() returned a shallow copy of the cached metadata, so changing a
    list or dict inside one Concept's metadata changed what every later get() of that
    concept returned, in every thread (the user guide says a Concept is a snapshot)."""
    db = sutradb.open(":memory:", dim=2)
    try:
        db.add_vectors(np.eye(2, dtype=np.float32),
                       metadata=[{"tags": ["x"], "d": {"a": [1]}, "n": 1}, {"n": 2}])
        want = {"tags": ["x"], "d": {"a": [1]}, "n": 1}
        for _ in range(2):                      # the decoding read, then the cached one
            c = db.get(0)
            c.metadata["tags"].append("changed")
            c.metadata["d"]["a"].append(2)
            c.metadata["n"] = 0
            assert db.get(0).metadata == want
        th, out = start(lambda: db.get(0).metadata["tags"].append("other thread"))
        th.join(JOIN)
        assert out == {"value": None}, out
        assert db.get(0).metadata == want and db.get(1).metadata == {"n": 2}
    finally:
        db.close()


def test_close_while_other_threads_read(tmp_path):
    """close() waits for the reads in progress; every later call, from any thread,
    raises ClosedError (and nothing else)."""
    db = sutradb.open(os.fspath(tmp_path / "db"), dim=DIM, durability="off", index_threshold=0)
    rng = np.random.default_rng([SEED, 13])
    db.add_vectors(rng.standard_normal((400, DIM)).astype(np.float32),
                   texts=[f"t{i}" for i in range(400)])
    db.link(0, 1, "r")
    warm = threading.Barrier(3)
    ends = []

    def reader(j):
        def run():
            r = np.random.default_rng([SEED, 13, j])
            for n in range(100_000):
                if n == 200:
                    warm.wait(JOIN)
                try:
                    op = n % 5
                    if op == 0:
                        db.search_vectors(r.standard_normal(DIM).astype(np.float32), k=5)
                    elif op == 1:
                        assert db.get(int(r.integers(400))).text.startswith("t")
                    elif op == 2:
                        db.distance(int(r.integers(400)), int(r.integers(400)))
                    elif op == 3:
                        db.neighbors(0)
                    else:
                        assert len(db) == 400
                except ClosedError:
                    ends.append(n)
                    return
            raise AssertionError("the reader never saw the database closed")
        run.__name__ = f"reader{j}"
        return run

    def closer():
        warm.wait(JOIN)
        db.close()

    run_threads([reader(0), reader(1), closer], [], threading.Event())
    assert len(ends) == 2 and min(ends) >= 200 and db.closed


def test_refresh_of_a_reader_while_its_threads_read(tmp_path):
    """A mode="r" Database shared by threads while one of them refreshes it after each
    commit of the writer: every read sees a state at least as new as the last one."""
    path = os.fspath(tmp_path / "db")
    db = sutradb.open(path, dim=DIM, durability="off", index_threshold=0)
    rng = np.random.default_rng([SEED, 17])
    db.add_vectors(rng.standard_normal((50, DIM)).astype(np.float32),
                   texts=[f"t{i}" for i in range(50)])
    ro = sutradb.open(path, "r")
    try:
        done = threading.Event()
        abort = threading.Event()
        errors: list[str] = []
        seen = []

        def reader():
            r = np.random.default_rng([SEED, 19])
            last = 50
            n = 0
            while not done.is_set() and not abort.is_set() and n < 50_000:
                n += 1
                k = len(ro)
                assert k >= last, (k, last)            # never goes back
                last = k
                i = int(r.integers(k))
                assert ro.get(i).text == f"t{i}"
                D, I = ro.search_vectors(r.standard_normal(DIM).astype(np.float32), k=3)
                assert ((I >= 0) & (I < 1000)).all()
            seen.append(last)

        def writer():
            try:
                for i in range(50, 250):
                    db.add_vectors(rng.standard_normal((1, DIM)).astype(np.float32),
                                   texts=[f"t{i}"])
                    ro.refresh()
            finally:
                done.set()

        run_threads([reader, reader, writer], errors, abort)
        assert len(ro) == 250 and len(seen) == 2
    finally:
        ro.close()
        db.close()
