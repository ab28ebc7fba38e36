"""Ranked full-text search (BM25 over the storage engine's term postings) and hybrid
search, against an independent implementation (``bm25s``, Lucene's formula) on the
bundled real sample, through commits, rollbacks, checkpoints, compaction and reopen."""

from __future__ import annotations

import numpy as np
import pytest

import sutradb
from sutradb.demo import load_sample
from sutradb.errors import EmbedderError, InvalidArgumentError
from sutradb.index.bm25 import rrf
from sutradb.storage.format import MANIFEST_NAME
from sutradb.storage.manifest import read_file, write_manifest
from sutradb.storage.format import decode_manifest

import bm25s  # the reference implementation (the test extra installs it)

SMALL = dict(durability="off")


@pytest.fixture(scope="module")
def sample():
    base, texts, _, qtexts, _ = load_sample()
    return base.astype(np.float32), texts, qtexts


def oracle(db, k1=1.2, b=0.75):
    """bm25s (method "lucene") over the live concepts' texts, tokenised by the
    database's own tokenizer; returns a function query -> {id: score}."""
    tok = db._store.tokenizer
    ids = db.ids().tolist()
    docs = db.get_many(ids)
    corpus = [tok.terms(c.text) for c in docs]
    r = bm25s.BM25(method="lucene", k1=k1, b=b)
    r.index(corpus, show_progress=False)

    def scores(query):
        q = [t for t in tok.terms(query) if t in r.vocab_dict]
        if not q:
            return {}
        s = r.get_scores(q)
        return {i: float(x) for i, x in zip(ids, s) if x > 0}
    return scores


def check_against_oracle(db, queries, k=10, where_ids=None, where=None, **kw):
    ref = oracle(db, **kw)
    n_checked = 0
    for q in queries:
        exp = ref(q)
        if where_ids is not None:
            exp = {i: s for i, s in exp.items() if i in where_ids}
        got = db.search_text(q, k, where=where, **kw)
        best = sorted(exp.items(), key=lambda x: (-x[1], x[0]))[:k]
        assert len(got) == len(best), q
        for h, (i, s) in zip(got, best):
            assert h.score == pytest.approx(s, rel=1e-5), q
            # ties aside, the same ids in the same order
            if h.id != i:
                assert exp[h.id] == pytest.approx(s, rel=1e-6), (q, h.id, i)
        n_checked += bool(best)
    return n_checked


def test_bm25_agrees_with_bm25s_on_the_sample(tmp_path, sample):
    base, texts, qtexts = sample
    with sutradb.open(tmp_path / "db", dim=base.shape[1], **SMALL) as db:
        db.add_vectors(base, texts=texts)
        assert check_against_oracle(db, qtexts[:60]) >= 40
        assert check_against_oracle(db, qtexts[:30], k1=0.9, b=0.4) >= 20
        # one word of a stored text finds it
        h = db.search_text(texts[7].split()[0] + " " + texts[7].split()[-1], k=50)
        assert 7 in [x.id for x in h]


def test_postings_follow_commits_rollbacks_checkpoints_compaction_and_reopen(tmp_path, sample):
    base, texts, qtexts = sample
    rng = np.random.default_rng(5)
    path = tmp_path / "db"
    db = sutradb.open(path, dim=base.shape[1], **SMALL)
    db._store._checkpoint_bytes = 40_000     # many checkpoints: several runs, merges
    db._store._compact_min_rows, db._store._compact_ratio = 50, 0.1
    gens = db._store.generation
    for lo in range(0, 1200, 100):
        db.add_vectors(base[lo:lo + 100], texts=texts[lo:lo + 100])
        live = db.ids()
        victims = rng.choice(live, 15, replace=False).tolist()
        db.delete(victims[:10])
        for i in victims[10:]:
            db.update(i, text=texts[(i * 7 + 3) % len(texts)])
        try:
            with db.transaction():              # rolled back: nothing of it shows
                db.add_vectors(base[1500:1510], texts=["zzyzx quixotic"] * 10)
                db.update(int(db.ids()[0]), text="zzyzx")
                raise RuntimeError
        except RuntimeError:
            pass
        if lo % 200 == 0:       # postings built by a search: the next checkpoint writes them
            db.search_text(qtexts[lo // 100])
        if lo == 600:           # the deferred upkeep: every row's postings written
            assert db._store.index_text() > 0 and db._store.text_uncovered == 0
    assert db._store.generation - gens >= 5
    runs = db._store._man["terms"]["runs"]
    assert 1 <= len(runs) <= 6, runs
    assert db.search_text("zzyzx quixotic") == []
    assert check_against_oracle(db, qtexts[:40]) >= 20
    db.compact()
    assert len(db._store._man["terms"]["runs"]) == 1
    assert check_against_oracle(db, qtexts[20:50]) >= 15
    before = [[(h.id, h.score) for h in db.search_text(q)] for q in qtexts[:20]]
    db.close()
    with sutradb.open(path, mode="r") as r:
        assert [[(h.id, h.score) for h in r.search_text(q)] for q in qtexts[:20]] == before
        # nothing was tokenised to open it: every row is in a stored run
        assert r._store._terms_tail.upto == r._store._terms_tail.start == r._store.n_rows


def test_memory_database_and_where_filter(sample):
    base, texts, qtexts = sample
    db = sutradb.open(":memory:", dim=base.shape[1])
    ids = db.add_vectors(base[:800], texts=texts[:800],
                         metadata=[{"even": i % 2 == 0} for i in range(800)])
    evens = {int(i) for i in ids if i % 2 == 0}
    assert check_against_oracle(db, qtexts[:30], where_ids=evens, where={"even": True}) >= 10
    for q in qtexts[:30]:
        got = db.search_text(q, 10, where={"even": True})
        assert all(h.id in evens for h in got)


def test_hybrid_is_rrf_of_the_vector_and_text_rankings(sample):
    base, texts, qtexts = sample
    _, _, queries, _, _ = load_sample()
    db = sutradb.open(":memory:", dim=base.shape[1], index="flat")
    db.add_vectors(base[:1000], texts=texts[:1000], metadata=[{"g": i % 3} for i in range(1000)])
    for j in range(10):
        q, v = qtexts[j], queries[j].astype(np.float32)
        for where in (None, {"g": 1}):
            vec = [h.id for h in db.search(v, 60, where=where)]
            txt = [h.id for h in db.search_text(q, 60, where=where)]
            for w in ((1.0, 1.0), (2.0, 0.5)):
                got = db.search(q, 10, mode="hybrid", vector=v, where=where, weights=w)
                exp = rrf([vec, txt], list(w), 10)
                assert [(h.id, pytest.approx(-h.distance)) for h in got] == [(i, s) for i, s in exp]
                if where:
                    assert all(h.concept.metadata["g"] == 1 for h in got)
        assert [h.id for h in db.search(q, 5, mode="text")] == [h.id for h in db.search_text(q, 5)]
        assert [h.id for h in db.search(v, 5, mode="vector")] == [h.id for h in db.search(v, 5)]


def test_bad_input():
    db = sutradb.open(":memory:", dim=2)
    db.add_vectors([[1, 0]], texts=["x"])
    for bad in (dict(k1=-1), dict(b=2), dict(k1=True), dict(k=0)):
        with pytest.raises(InvalidArgumentError):
            db.search_text("x", **bad)
    with pytest.raises(InvalidArgumentError):
        db.search_text(b"x")
    with pytest.raises(InvalidArgumentError):
        db.search([1, 0], mode="text")
    with pytest.raises(EmbedderError):
        db.search("x", mode="hybrid")               # no embedder, no vector=
    with pytest.raises(InvalidArgumentError):
        db.search("x", mode="bm25")
    with pytest.raises(InvalidArgumentError):
        db.search("x", mode="hybrid", vector=[1, 0], weights=(0, 0))
    assert db.search_text("") == [] and db.search_text("nothing here") == []
    with pytest.raises(InvalidArgumentError):
        sutradb.open(":memory:", dim=2, text_tokenizer={"stem": 3})
    with pytest.raises(InvalidArgumentError):
        sutradb.open(":memory:", dim=2, text_tokenizer={"lowercase": True})


def test_tokenizer_spec_is_stored_with_the_database(tmp_path):
    path = tmp_path / "db"
    spec = {"stopwords": "english", "stem": "english"}
    with sutradb.open(path, dim=2, text_tokenizer=spec) as db:
        db.add_vectors([[1, 0], [0, 1], [1, 1]], texts=["The cats are running", "a dog ran", "the the the"])
        assert [h.id for h in db.search_text("cat running")] == [0]
        assert db.search_text("the") == []                  # a stop word
    with sutradb.open(path) as db:                          # the stored spec applies
        assert [h.id for h in db.search_text("CATS run")] == [0]
        assert db._store.text_spec["stem"] == "english"
    with pytest.raises(InvalidArgumentError, match="text tokenizer"):
        sutradb.open(path, text_tokenizer={"stem": None})


def test_a_database_written_before_term_postings_gets_them(tmp_path, sample):
    """A format-1 manifest (no ``terms``): its texts are tokenised on first use and the
    next checkpoint writes the postings (the manifest moves to format 2)."""
    base, texts, qtexts = sample
    path = tmp_path / "db"
    with sutradb.open(path, dim=base.shape[1], **SMALL) as db:
        db.add_vectors(base[:300], texts=texts[:300])
        expect = [[h.id for h in db.search_text(q)] for q in qtexts[:10]]
    man = path / MANIFEST_NAME
    gen, body = decode_manifest(read_file(man), str(man))
    body = {k: v for k, v in body.items() if k != "terms"}
    body["format"] = 1
    write_manifest(str(path), gen, body, True)
    with sutradb.open(path, mode="r") as r:
        assert r._store._man["format"] == 1
        assert [[h.id for h in r.search_text(q)] for q in qtexts[:10]] == expect
    with sutradb.open(path, **SMALL) as db:
        db.add_vectors(base[300:310], texts=texts[300:310])
        db._store.checkpoint()          # a commit's checkpoint tokenises nothing
        assert db._store._man["format"] == 2 and db._store.text_uncovered == 310
        assert db._store.index_text() == 310
        assert db._store._man["format"] == 2
        assert sum(e["n"] for e in db._store._man["terms"]["runs"]) == 310
        assert [[h.id for h in db.search_text(q)] for q in qtexts[:10]] == [
            [h.id for h in db.search_text(q)] for q in qtexts[:10]]
        assert check_against_oracle(db, qtexts[:20]) >= 5


def check_postings(store):
    """The store's postings and text lengths are exactly those of its live texts."""
    from collections import Counter

    from sutradb.text import term_hash
    tok = store.tokenizer
    live, sid, dl = store.live, store.ids, store.doc_lengths()
    assert len(dl) == store.n_rows
    expect: dict[str, dict[int, int]] = {}
    for row in np.flatnonzero(live).tolist():
        terms = tok.terms(store.record_at(row).text)
        assert dl[row] == len(terms)
        for t, c in Counter(terms).items():
            expect.setdefault(t, {})[int(sid[row])] = c
    for t, per_id in expect.items():
        rows, tf = store.postings(term_hash(t))
        m = live[rows]
        assert dict(zip(sid[rows[m]].tolist(), tf[m].tolist())) == per_id, t


@pytest.mark.parametrize("where", ["disk", "memory"])
def test_postings_of_spilled_transactions_checkpoints_and_compactions(tmp_path, sample, where):
    """Store level: rows written straight into the row files by a spilled transaction,
    rows from the log, merges of runs, compaction (on disk and in memory) all leave the
    postings equal to those of the live texts."""
    from sutradb.storage import Store
    _, texts, _ = sample
    rng = np.random.default_rng(3)
    path = ":memory:" if where == "memory" else tmp_path / "db"
    s = Store.open(path, durability="off", checkpoint_bytes=20_000, spill_bytes=30_000,
                   compact_min_rows=10**9)
    spilled = [0]
    commit_spilled = s._commit_spilled

    def counted(txn):
        spilled[0] += 1
        return commit_spilled(txn)
    s._commit_spilled = counted
    nxt = 0
    for step in range(14):
        n = 800 if step % 5 == 0 else int(rng.integers(1, 40))       # 800 rows spill
        with s.begin() as t:
            ids = np.arange(nxt, nxt + n)
            t.put(ids, texts=[texts[(i * 13 + step) % len(texts)] for i in ids.tolist()])
            nxt += n
            if step % 3 == 2:
                t.delete(rng.choice(s.live_ids(), 10, replace=False))
        check_postings(s)
    if where == "disk":
        assert len(s._man["terms"]["runs"]) >= 1 and spilled[0] == 3
    s.compact()
    check_postings(s)
    if where == "disk":
        assert len(s._man["terms"]["runs"]) == 1 and s._terms_tail.upto == s.n_rows
        s.close()
        s = Store.open(path, "r")
        check_postings(s)
    s.close()


def test_commits_never_tokenise_upkeep_and_close_write_the_postings(tmp_path, sample):
    base, texts, qtexts = sample
    path = tmp_path / "db"
    db = sutradb.open(path, dim=base.shape[1], index="flat", **SMALL)
    db.add_vectors(base, texts=texts)                    # one spilled transaction
    db._store.checkpoint()
    assert db._store.text_uncovered == len(texts)        # nothing tokenised by the commits
    db.add_vectors(np.tile(base, (2, 1))[:2500], texts=(texts * 2)[:2500])
    assert db._store.text_uncovered == len(texts) + 2500 >= 4096
    expect = [h.id for h in db.search_text(qtexts[0])]   # the writer's search runs the upkeep
    assert db._store.text_uncovered == 0 and db._store._man["terms"]["runs"]
    db.add_vectors(base[:5], texts=texts[:5])
    assert db._store.text_uncovered == 5
    db.close()                                           # close writes the last ones
    with sutradb.open(path, mode="r") as r:
        assert r._store.text_uncovered == 0
        assert [h.id for h in r.search_text(qtexts[0])] == expect
        assert r.verify()["concepts"] == len(texts) + 2505


def test_ties_are_broken_by_id_and_k_extends():
    db = sutradb.open(":memory:", dim=2)
    db.add_vectors(np.ones((300, 2), np.float32), texts=["same words here"] * 300)
    for k in (1, 3, 10, 50):
        assert [h.id for h in db.search_text("words", k)] == list(range(k))


def test_colliding_term_hashes_give_one_posting_per_row(monkeypatch):
    import sutradb.text as text
    real = text.term_hash
    monkeypatch.setattr(text, "term_hash", lambda t: real("x") if t in ("cat", "dog") else real(t))
    db = sutradb.open(":memory:", dim=2)
    db.add_vectors(np.ones((3, 2), np.float32), texts=["cat dog", "cat", "bird"])
    hits = db.search_text("cat", 10)
    assert sorted(h.id for h in hits) == [0, 1]          # each once; "dog" counts as "cat"


def test_stemming_is_thread_safe():
    import threading

    from sutradb.text import Tokenizer
    words = ("running cats connection generously happiness organizational jumped "
             "relational conditional nationalism hopefully").split()
    tok = Tokenizer({"stem": "english"})
    expect = Tokenizer({"stem": "english"}).terms(" ".join(words))
    bad = []

    def work(seed):
        rng = np.random.default_rng(seed)
        for _ in range(300):
            ws = list(rng.permutation(words))
            got = tok.terms(" ".join(ws))
            if got != [expect[words.index(w)] for w in ws]:
                bad.append(ws)
            tok._stems.clear() if rng.random() < 0.2 else None

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


def test_damaged_postings_are_reported_then_rebuilt_by_compaction(tmp_path, sample):
    from sutradb.errors import CorruptDatabaseError
    base, texts, qtexts = sample
    path = tmp_path / "db"
    with sutradb.open(path, dim=base.shape[1], index="flat", **SMALL) as db:
        db.add_vectors(base[:500], texts=texts[:500])
        expect = [h.id for h in db.search_text(qtexts[1])]
        db.delete(list(range(0, 500, 3)))
        expect = [i for i in [h.id for h in db.search_text(qtexts[1], 50)]][:10]
    run = next(p for p in path.iterdir() if p.suffix == ".terms")
    b = bytearray(run.read_bytes())
    b[-20] ^= 0x55
    run.write_bytes(bytes(b))
    with sutradb.open(path, **SMALL) as db:
        with pytest.raises(CorruptDatabaseError):
            db.search_text(qtexts[1])
        db.compact()                                  # the postings derive from the texts
        assert db._store.text_uncovered == len(db)
        assert db._store.index_text() == len(db)
        assert [h.id for h in db.search_text(qtexts[1])] == expect
        assert check_against_oracle(db, qtexts[:10]) >= 3


def test_export_and_import_keep_the_tokenizer(tmp_path):
    spec = {"stopwords": "english", "stem": "english"}
    with sutradb.open(tmp_path / "db", dim=2, text_tokenizer=spec) as db:
        db.add_vectors([[1, 0], [0, 1]], texts=["The cats are running", "a dog ran"])
        db.export(tmp_path / "exp")
    with sutradb.from_export(tmp_path / "exp", tmp_path / "copy") as c:
        assert c._store.text_spec == sutradb.text.check_spec(spec)
        assert [h.id for h in c.search_text("cat run")] == [0]



@pytest.mark.parametrize("seed", range(40))
def test_bm25_top_against_brute_force(seed):
    """Random postings, both accumulation paths (few postings, or more than twice the
    rows), filters, ties (integer tfs, equal lengths), every k: the same top k, in
    order, as scoring every row."""
    import math

    from sutradb.index.bm25 import bm25_top
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    live = rng.random(n) < 0.8
    doclen = rng.integers(1, 4 if seed % 2 else 40, n).astype(np.uint32)
    n_terms = int(rng.integers(1, 6))
    dense = seed % 3 == 0
    post = []
    for _ in range(n_terms):
        rows = np.flatnonzero(rng.random(n) < (0.9 if dense else 0.05)).astype(np.int64)
        post.append((rows, rng.integers(1, 3, len(rows)).astype(np.uint16), int(rng.integers(1, 3))))
    mask = rng.random(n) < 0.5 if seed % 4 == 1 else None
    n_live = int(live.sum())
    avgdl = float(doclen[live].mean()) if n_live else 0.0
    ref = np.zeros(n)
    hit = np.zeros(n, bool)
    for rows, tf, c in post:
        r = rows[live[rows]]
        if not len(r):
            continue
        idf = math.log(1 + (n_live - len(r) + 0.5) / (len(r) + 0.5))
        t = tf[live[rows]].astype(float)
        ref[r] += c * idf * t / (t + 1.2 * (0.25 + 0.75 * doclen[r] / avgdl))
        hit[r] = True
    ok = hit & live & (mask if mask is not None else True)
    order = sorted(np.flatnonzero(ok).tolist(), key=lambda i: (-ref[i], i))
    for k in (1, 3, 10, 1000):
        rows, sc = bm25_top(post, doclen, live, n_live, avgdl, k, mask=mask)
        exp = order[:k]
        assert len(rows) == len(exp)
        assert np.allclose(sc, ref[exp])
        # ties aside (equal scores may swap within float rounding), the same rows
        assert all(r == e or abs(ref[r] - ref[e]) < 1e-9 for r, e in zip(rows.tolist(), exp))
