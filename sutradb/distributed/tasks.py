"""The work of a distributed job, as plain functions of plain arguments.

Every function here runs wherever the engine puts it (a Dask worker process, or the
calling process for an in-process job or a client-side writer) and imports no engine:
arguments and results are NumPy arrays, lists, dicts and bytes. Shards are opened and
closed inside each call through the public :func:`sutradb.open` (the store's file lock
makes a shard's writers take turns, across processes and machines sharing the files).

Worker state: :func:`install_embedder` loads an embedder once per process (the Dask
worker plugin calls it at worker start-up; later tasks find it by key), and
:func:`shard_op` keeps read-only shards open per process for searches on the engine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import threading
from pathlib import Path

import msgpack
import numpy as np

import sutradb
from .. import embedders as _embedders
from ..errors import (CorruptDatabaseError, DatabaseExistsError, DatabaseNotFoundError, EmbedderError,
                      InvalidArgumentError, SutraError)
from ..index.pq import ProductQuantizer
from ..index.vector import default_pq_shape
from . import manifest as _manifest
from .sources import partition_digest

__all__ = ["install_embedder", "embedder_info", "embed_like_add", "embed_partition",
           "open_shard", "shard_status", "write_partition", "check_partitions", "read_rows",
           "train_codebook_part", "assemble_codebook", "codebook_subspaces",
           "index_shard", "verify_shard", "finalize", "prepare_directory", "shard_op"]

F16_MAX = 65504.0

# embedders loaded in this process, by key (a spec string, or "object:<name>:<id>")
_EMBEDDERS: dict = {}
_EMB_LOCK = threading.Lock()
# one model call at a time in a process: a worker running several partitions at once
# (threads_per_worker > 1) would otherwise run several calls that each use all the
# model's threads, oversubscribing the cores; the rest of a partition's work (encoding,
# writing) still overlaps with the next call
_MODEL_LOCK = threading.Lock()
# read-only shards opened in this process for searches on the engine, by path
_SHARDS: dict = {}
_SHARDS_LOCK = threading.Lock()


# --------------------------------------------------------------------------- embedders

def set_threads(threads: int | None) -> None:
    """Run this process's model and kernels on ``threads`` threads (torch intra-op
    threads when torch is loaded; sutradb kernels through ``SUTRADB_NUM_THREADS``
    unless it is set)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if not threads:
        return
    os.environ.setdefault("SUTRADB_NUM_THREADS", str(int(threads)))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(threads))


def install_embedder(key: str, embedder, threads: int | None = None, quiet: bool = False) -> dict:
    """Load ``embedder`` (a spec string or an embedder object) into this process under
    ``key``, once; set the thread count. ``quiet``: no model-loading progress bars
    (workers: N of them would clutter the terminal). Returns ``{"name", "dim"}``."""
    with _EMB_LOCK:
        emb = _EMBEDDERS.get(key)
        if emb is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            if quiet:
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            emb = (_embedders.get_embedder(embedder) if isinstance(embedder, str)
                   else _embedders.check_embedder(embedder))
            _EMBEDDERS[key] = emb
        set_threads(threads)
    return {"name": str(emb.name), "dim": int(emb.dim)}


def _embedder(key: str):
    emb = _EMBEDDERS.get(key)
    if emb is None:
        if key.startswith("object:"):
            raise EmbedderError(f"the embedder {key!r} is not installed in this worker "
                                "(the worker plugin did not run here)")
        install_embedder(key, key, quiet=True)   # a spec: load it now (once per process)
        emb = _EMBEDDERS[key]
    return emb


def embedder_info(key: str) -> dict:
    """``{"name", "dim", "pid"}`` of the embedder installed under ``key``."""
    emb = _embedder(key)
    return {"name": str(emb.name), "dim": int(emb.dim), "pid": os.getpid()}


def embed_like_add(emb, texts, batch_size: int) -> np.ndarray:
    """Embed ``texts`` exactly as :meth:`sutradb.Database.add` does without a progress
    bar: windows of ``16 * batch_size`` texts; in a window the distinct texts are
    embedded longest first in one embedder call. The same texts in the same windows
    give bit-identical vectors (sentence-transformers' output depends on the padding
    of each batch, so on the batch composition, and not on the thread count)."""
    n = len(texts)
    out = np.empty((n, emb.dim), dtype=np.float32)
    window = 16 * int(batch_size)
    for w0 in range(0, n, window):
        chunk = texts[w0:w0 + window]
        uniq = list(dict.fromkeys(chunk))
        order = sorted(range(len(uniq)), key=lambda j: -len(uniq[j]))
        Vu = np.empty((len(uniq), emb.dim), dtype=np.float32)
        if order:
            with _MODEL_LOCK:
                Vu[order] = _embedders.embed(emb, [uniq[j] for j in order])
        if len(uniq) < len(chunk):
            pos = {t: j for j, t in enumerate(uniq)}
            Vu = Vu[[pos[t] for t in chunk]]
        out[w0:w0 + len(chunk)] = Vu
    return out


def as_stored(V: np.ndarray, vector_dtype: str, what: str = "vectors") -> np.ndarray:
    """``V`` in the dtype the shard stores (checked as ``add_vectors`` checks it), so
    that half the bytes travel for float16 shards."""
    V = np.asarray(V)
    if V.dtype.kind not in "fiu" or V.dtype == np.bool_:
        raise InvalidArgumentError(f"{what} must hold numbers, got dtype {V.dtype}")
    if V.size and not np.isfinite(V).all():
        raise InvalidArgumentError(f"{what} hold NaN or infinite values")
    if vector_dtype == "float16":
        if V.size and np.abs(V).max() > F16_MAX:
            raise InvalidArgumentError(f"{what} hold values beyond the float16 range "
                                       "(|x| > 65504); use vector_dtype='float32'")
        # float32 first, as the database converts (float64 -> float16 directly could
        # round differently)
        return np.ascontiguousarray(np.asarray(V, dtype=np.float32).astype(np.float16))
    return np.ascontiguousarray(V, dtype=np.float32)


def embed_partition(key: str, texts: list, batch_size: int, vector_dtype: str) -> np.ndarray:
    """The vectors of one partition's texts, in the shard's stored dtype."""
    emb = _embedder(key)
    return as_stored(embed_like_add(emb, texts, batch_size), vector_dtype, "embeddings")


# --------------------------------------------------------------------------- shards

class RecordedEmbedder:
    """Stands for the job's embedder when a shard is created, so that the shard records
    its name and dimension (``sutradb.open(shard)`` then embeds text queries with it)
    without loading the model where the shard is written."""

    def __init__(self, name: str, dim: int) -> None:
        self.name = name
        self.dim = int(dim)

    def __call__(self, texts):
        raise EmbedderError("this shard writer does not embed (the workers did)")


def open_shard(path, opts: dict, dim: int, embedder: dict | None, *, timeout: float = 600.0):
    """Open (creating it if needed) a shard for writing. ``opts``: the database options
    of the job; the shard never trains a quantizer of its own (``index_threshold=0``):
    the job encodes every shard with the shared codebook."""
    o = dict(opts)
    o["index_threshold"] = 0
    if embedder is not None:
        o["embedder"] = RecordedEmbedder(embedder["name"], embedder["dim"])
    return sutradb.open(path, "a", dim=int(dim) if dim else None, metric=opts["metric"],
                        timeout=timeout, **{k: v for k, v in o.items() if k != "metric"})


def shard_status(path, opts: dict, dim: int, embedder: dict | None, timeout: float = 600.0) -> dict:
    """Create the shard if it does not exist; ``{"concepts": n}``. A shard whose ids are
    not ``0 .. n-1`` was changed outside the job: SutraError."""
    with open_shard(path, opts, dim, embedder, timeout=timeout) as db:
        n = len(db)
        _check_dense(db, n, path)
        return {"path": os.fspath(path), "concepts": n}


def _check_dense(db, n, path):
    ids = db.ids()
    if n and int(ids[-1]) != n - 1:
        raise SutraError(f"{path}: the shard's ids are not 0..{n - 1}: it was changed outside "
                         "the learn job (deleted or added concepts); rebuild with mode='w'")


def _stored_digest(db, offset: int, rows: int, with_vectors: bool) -> str:
    cs = [db.get(i) for i in range(offset, offset + rows)]
    V = np.stack([c.vector for c in cs]) if with_vectors and cs else None
    return partition_digest([c.text for c in cs], [c.key for c in cs],
                            [c.metadata for c in cs], V)


def write_partition(path, partition: int, offset: int, rows: int, digest: str,
                    with_vectors: bool, payload, opts: dict, dim: int, embedder: dict | None,
                    prev=None, timeout: float = 600.0) -> dict:
    """Commit one partition to its shard in one transaction, unless the shard already
    holds it.

    Parameters
    ----------
    path : str
        The shard.
    partition, offset, rows : int
        The partition number, the local id of its first row in the shard (the shard's
        partitions are written in order) and its row count.
    digest : str
        :func:`~sutradb.distributed.sources.partition_digest` of its records.
    with_vectors : bool
        Whether the digest covers the vectors (they came with the source).
    payload : tuple or None
        ``(vectors, texts, keys, metadata)``; None to only check that the shard holds
        the partition.
    prev
        The previous partition's write of this shard (an engine dependency only).

    Returns
    -------
    dict
        ``{"partition", "rows", "written"}``: ``written`` is False when the shard
        already held the partition (a re-run, or the engine re-ran the task after its
        worker died past the commit).

    Raises
    ------
    SutraError
        The shard holds other data at these ids (the source or the partition size
        changed since an interrupted run).
    """
    with open_shard(path, opts, dim, embedder, timeout=timeout) as db:
        n = len(db)
        if n == offset and payload is not None:
            vectors, texts, keys, metadata = payload
            with db.transaction():
                ids = db.add_vectors(vectors, texts=texts, metadata=metadata, keys=keys)
                if rows and int(ids[0]) != offset:      # rolled back
                    raise SutraError(f"{path}: the shard's next id is {int(ids[0])}, not {offset}: "
                                     "it was changed outside the learn job (deleted or added "
                                     "concepts); rebuild with mode='w'")
            return {"partition": partition, "rows": rows, "written": True}
        if n >= offset + rows:
            _check_held(db, path, partition, offset, rows, digest, with_vectors)
            return {"partition": partition, "rows": rows, "written": False}
        raise SutraError(f"{path}: the shard holds {n} concepts, partition {partition} starts at "
                         f"{offset}: the source (or the partition size) changed since the "
                         "interrupted run; rebuild with mode='w'")


def _check_held(db, path, partition, offset, rows, digest, with_vectors):
    if _stored_digest(db, offset, rows, with_vectors) != digest:
        raise SutraError(
            f"{path}: the shard holds other concepts at ids {offset}..{offset + rows - 1} "
            f"than partition {partition} of the source: the source (or the partition "
            "size) changed since the interrupted run; rebuild with mode='w'")


def check_partitions(path, items, with_vectors: bool) -> list:
    """Check that a shard holds partitions that a re-run skips (one open for many).

    ``items``: ``(partition, offset, rows, digest)`` tuples. Returns their
    ``{"partition", "rows", "written": False}``; SutraError when one differs."""
    out = []
    with sutradb.open(path, "r") as db:
        n = len(db)
        for partition, offset, rows, digest in items:
            if n < offset + rows:
                raise SutraError(f"{path}: the shard holds {n} concepts, not partition {partition} "
                                 f"(ids {offset}..{offset + rows - 1})")
            _check_held(db, path, partition, offset, rows, digest, with_vectors)
            out.append({"partition": partition, "rows": rows, "written": False})
    return out


def read_rows(path, local_ids) -> np.ndarray:
    """Stored vectors of some concepts of a shard (the training sample)."""
    ids = np.asarray(local_ids, dtype=np.int64)
    with sutradb.open(path, "r") as db:
        if len(ids) == 0:
            return np.zeros((0, db.dim or 0), np.float32)
        try:
            return db.get_vectors(ids)
        except InvalidArgumentError as e:
            raise InvalidArgumentError(f"{path}: the shard keeps no full vectors to train on "
                                       f"({e})") from None


def _quantizer(spec: dict) -> ProductQuantizer:
    m, nbits = default_pq_shape(int(spec["dim"]), spec.get("vector_dtype", "float16"), spec["m"],
                                spec["nbits"])
    return ProductQuantizer(int(spec["dim"]), m, nbits, spec["metric"], int(spec["seed"]))


def codebook_subspaces(spec: dict) -> int:
    """Subspaces of the shared quantizer that ``spec`` describes."""
    return _quantizer(spec).m


def train_codebook_part(spec: dict, parts, start: int, stop: int) -> dict:
    """Train subspaces ``start .. stop-1`` of the shared quantizer as
    :meth:`sutradb.Database.build_index` trains them
    (:meth:`~sutradb.ProductQuantizer.fit_subspaces`); the parts of a job run on
    different workers and :func:`assemble_codebook` joins them.

    Parameters
    ----------
    spec : dict
        ``dim, metric, m, nbits, seed, train_size, iters, sample`` (``sample``: the
        number of sampled rows), optionally ``threads`` (kernel threads of this task).
    parts : list of (global rows, stored vectors)
        The sample, shard by shard; rows are put back in global order (the order of
        the rows in one database holding everything).
    start, stop : int
        The subspaces to train.
    """
    dim = int(spec["dim"])
    rows = np.concatenate([np.asarray(r, np.int64) for r, _ in parts]) if parts else np.zeros(0, np.int64)
    X = np.empty((len(rows), dim), np.float32)
    order = np.argsort(rows, kind="stable")
    pos = np.empty(len(rows), np.int64)
    pos[order] = np.arange(len(rows))
    s0 = 0
    for r, v in parts:
        X[pos[s0:s0 + len(r)]] = np.asarray(v, dtype=np.float32)
        s0 += len(r)
    if len(rows) != spec["sample"] or (len(rows) > 1 and (np.diff(rows[order]) <= 0).any()):
        raise SutraError("the training sample came back incomplete")   # pragma: no cover
    return _quantizer(spec).fit_subspaces(X, int(start), int(stop), max_train=int(spec["train_size"]),
                                          iters=int(spec["iters"]), threads=spec.get("threads"))


def assemble_codebook(spec: dict, trained) -> bytes:
    """The shared quantizer from the :func:`train_codebook_part` results that cover
    all its subspaces: msgpack of :meth:`ProductQuantizer.to_dict` (the format of
    :meth:`ProductQuantizer.save`), the same bytes however the training was split."""
    return msgpack.packb(_quantizer(spec).set_trained(list(trained)).to_dict(), use_bin_type=True)


def read_codebook(directory, entry: dict) -> bytes:
    """The bytes of a finished job's codebook file, checked against its manifest entry."""
    f = Path(directory) / entry["path"]
    try:
        blob = f.read_bytes()
    except OSError as e:
        raise CorruptDatabaseError(f"{f}: the shared codebook cannot be read ({e})") from None
    if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
        raise CorruptDatabaseError(f"{f}: the shared codebook does not match the manifest")
    return blob


def load_codebook(blob: bytes, source: str = "<codebook>") -> ProductQuantizer:
    """The quantizer of codebook bytes (the :meth:`ProductQuantizer.save` format);
    damaged bytes raise CorruptDatabaseError."""
    try:
        d = msgpack.unpackb(blob, raw=False, strict_map_key=True, max_map_len=64,
                            max_array_len=64, max_ext_len=0, max_str_len=1 << 16,
                            max_bin_len=len(blob))
    except (msgpack.UnpackException, ValueError, TypeError) as e:
        raise CorruptDatabaseError(f"{source}: not a valid sutradb quantizer ({e})") from None
    return ProductQuantizer.from_dict(d, source=source)


def same_codebook(info: dict, pq: ProductQuantizer) -> bool:
    """Whether a shard's ``index_info`` describes ``pq`` (parameters and training
    error, which a different sample or seed would change)."""
    return (info.get("kind") != "flat" and info.get("m") == pq.m and info.get("nbits") == pq.nbits
            and info.get("seed") == pq.seed
            and info.get("training_error") == pq.training_error_)


def index_shard(path, codebook: bytes, opts: dict, dim: int, embedder: dict | None,
                timeout: float = 600.0) -> dict:
    """Encode a shard with the shared codebook (``build_index(quantizer=...)``: one
    transaction); nothing to do when it already is. Returns its ``index_info``."""
    pq = load_codebook(codebook)
    with open_shard(path, opts, dim, embedder, timeout=timeout) as db:
        if len(db) == 0:
            return dict(db.index_info)
        info = db.index_info
        if same_codebook(info, pq):
            return dict(info)
        return dict(db.build_index(quantizer=pq))


def verify_shard(path) -> dict:
    """``verify()`` a shard (every checksum, the database's invariants) read-only;
    ``{"path", "concepts", "verify", "index"}``."""
    with sutradb.open(path, "r") as db:
        v = db.verify()
        return {"path": os.fspath(path), "concepts": len(db), "verify": v,
                "index": dict(db.index_info)}


# --------------------------------------------------------------------------- directory

def prepare_directory(directory, mode: str) -> dict | None:
    """Make the sharded database directory ready for a job; return its manifest when
    a completed one is there (mode ``"a"``).

    ``"a"``: create it if needed (resume / re-run). ``"x"``: it must not exist (or be
    empty). ``"w"``: remove a previous sharded database there (the manifest first, so
    that readers stop seeing it at once, then its shards and codebook); a directory
    holding anything else is refused.
    """
    d = Path(directory)
    if mode not in ("a", "w", "x"):
        raise InvalidArgumentError(f"mode must be 'a', 'w' or 'x', not {mode!r}")
    if d.exists() and not d.is_dir():
        raise DatabaseExistsError(f"{directory!r} exists and is not a directory")
    if mode == "x" and d.exists() and any(d.iterdir()):
        raise DatabaseExistsError(f"{directory!r} exists (mode 'x' creates a new sharded database only)")
    if mode == "w" and d.exists():
        ours = [p for p in d.iterdir()
                if p.name in (_manifest.MANIFEST_NAME, _manifest.CODEBOOK_NAME)
                or (p.name.startswith("shard-") and p.name.endswith(".sutra"))
                or p.name.startswith(".")]
        others = sorted(p.name for p in d.iterdir() if p not in ours)
        if others:
            raise InvalidArgumentError(f"{directory!r} holds files that are not a sharded sutradb "
                                       f"database ({others[:5]}); mode 'w' will not remove them")
        man = d / _manifest.MANIFEST_NAME
        if man.exists():
            man.unlink()
            _manifest.fsync_dir(d)
        for p in ours:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    d.mkdir(parents=True, exist_ok=True)
    if mode == "a" and (d / _manifest.MANIFEST_NAME).exists():
        m = _manifest.read_manifest(d)
        m.pop("_dir", None)
        return m
    return None


def finalize(directory, body: dict, codebook: bytes | None) -> dict:
    """Write the codebook (atomically) and then the manifest: the commit point of the
    job. Returns the manifest as written."""
    d = Path(directory)
    body = dict(body)
    if codebook is not None:
        cb_path = d / _manifest.CODEBOOK_NAME
        _manifest.atomic_write(cb_path, codebook)
        pq = ProductQuantizer.load(cb_path)          # what readers will load
        body["codebook"] = {"path": _manifest.CODEBOOK_NAME,
                            "sha256": _manifest.file_sha256(cb_path),
                            "m": pq.m, "nbits": pq.nbits, "seed": pq.seed,
                            "training_error": pq.training_error_}
    else:
        body["codebook"] = None
    _manifest.write_manifest(d, body)
    out = _manifest.read_manifest(d)
    out.pop("_dir", None)
    return out


# --------------------------------------------------------------------------- reading

def shard_op(path: str, fn, args: tuple = (), refresh_token=None):
    """``fn(db, *args)`` on the shard at ``path`` opened read-only in this process (kept
    open for the next calls: searches on the engine pay the open once per worker)."""
    key = (os.fspath(path), refresh_token)
    db = _SHARDS.get(key)
    if db is None or db.closed:
        with _SHARDS_LOCK:
            db = _SHARDS.get(key)
            if db is None or db.closed:
                try:
                    db = sutradb.open(path, "r")
                except DatabaseNotFoundError:
                    raise DatabaseNotFoundError(f"shard {os.fspath(path)!r} is not reachable from "
                                                f"this worker (pid {os.getpid()})") from None
                for old in [k for k in _SHARDS if k[0] == key[0]]:
                    _SHARDS.pop(old)      # an older snapshot: closed when no call uses it
                _SHARDS[key] = db
    return fn(db, *args)


def op_len(db):
    return len(db)


def op_search(db, Q, k, kwargs):
    return db.search_vectors(Q, k, **kwargs)


def op_get(db, local):
    return db.get(int(local))


def op_get_many(db, locals_):
    return [db.get(int(i)) for i in locals_]


def op_find_key(db, key):
    try:
        return db.get(key)
    except KeyError:
        return None


def op_contains(db, x) -> bool:
    return x in db


def op_distance(db, a, b):
    return db.distance(int(a), int(b))


def op_ids(db):
    return db.ids()


def op_verify(db):
    return db.verify()


def op_info(db):
    return {"concepts": len(db), "dim": db.dim, "metric": db.metric,
            "index": dict(db.index_info), "embedder": db.embedder_name}


def op_refresh(db):
    return db.refresh()
