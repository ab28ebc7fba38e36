"""Searching many shard databases as one: :func:`open_sharded` and
:class:`ShardedDatabase`.

Every operation goes to the shards and the answers are merged: a search runs on
every shard at once (on local threads, or as tasks on a Dask cluster when a
``client`` is given and the shards live on the workers' storage) and the per-shard
top-k lists are merged into the exact top-k of their union; ``get`` and ``distance``
route by id. Ids are global (see :mod:`sutradb.distributed.manifest`): for shards
made by :func:`sutradb.distributed.learn` the global id of a concept is its row in
the source, the id one database holding everything would have given it.

This module imports no engine: ``import sutradb`` stays free of Dask.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

import sutradb
from .. import embedders as _embedders
from ..database import Concept, Hit
from ..errors import (ClosedError, CorruptDatabaseError, DatabaseNotFoundError, DimensionError,
                      EmbedderError, InvalidArgumentError, NotFoundError)
from ..index.flat import pair_scorer
from ..index.pq import default_threads
from . import manifest as _manifest
from . import tasks

if TYPE_CHECKING:
    import numpy.typing as npt

    from ..database.state import IdOrKey, Where
    from ..embedders import Embedder
    from ..index.pq import ProductQuantizer

__all__ = ["open_sharded", "ShardedDatabase"]

_I64_MAX = np.iinfo(np.int64).max


def _is_id(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


class _LocalBackend:
    """Shards opened read-only in this process; operations on a thread pool (the
    kernels release the GIL, so shards are searched in parallel)."""

    name = "threads"

    def __init__(self, paths: Iterable[str | os.PathLike[str]], threads: int | None) -> None:
        self.paths = list(paths)
        self.dbs: list[sutradb.Database] = []
        try:
            for p in self.paths:
                self.dbs.append(sutradb.open(p, "r"))
        except BaseException:
            for db in self.dbs:
                db.close()
            raise
        n = len(self.dbs)
        self.workers = max(1, min(n, threads or default_threads()))
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sutradb-shard") \
            if n > 1 and self.workers > 1 else None

    def map(self, fn: Callable[..., Any], args_per_shard: Iterable[Sequence[Any]]) -> list[Any]:
        if self.pool is None:
            return [fn(db, *a) for db, a in zip(self.dbs, args_per_shard)]
        fs = [self.pool.submit(fn, db, *a) for db, a in zip(self.dbs, args_per_shard)]
        return [f.result() for f in fs]

    def call(self, shard: int, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self.dbs[shard], *args)

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` where the shards are (here)."""
        return fn(*args)

    def refresh(self) -> None:
        for db in self.dbs:
            db.refresh()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None
        for db in self.dbs:
            db.close()


def open_sharded(paths_or_manifest: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                 client: Any = None, threads: int | None = None,
                 embedder: str | Embedder | None = None) -> ShardedDatabase:
    """Open a sharded database (read-only) for search, ``get`` and ``distance``.

    Parameters
    ----------
    paths_or_manifest : str, os.PathLike or sequence of them
        The directory a :func:`sutradb.distributed.learn` job wrote (or its
        ``shards.json`` manifest); or a list of shard database paths, whose global
        ids are then ``local_id * len(paths) + shard_number``.
    client : dask.distributed.Client, optional
        Run the shard operations as tasks on this cluster's workers (each worker
        opens the shards read-only once; the paths must be reachable there). By
        default the shards are opened here and searched on local threads.
    threads : int, optional
        Local threads searching shards at once (default: the CPUs, at most the
        number of shards).
    embedder : str or object, optional
        Embeds text queries (default: the embedder the shards were built with,
        loaded on first use).

    Returns
    -------
    ShardedDatabase

    Raises
    ------
    DatabaseNotFoundError
        No manifest (a learn job that has not finished is not visible) or a shard
        is missing.
    CorruptDatabaseError
        The manifest is damaged, or a shard does not match it (dimension, metric,
        codebook).
    """
    if threads is not None and (not _is_id(threads) or threads < 1):
        raise InvalidArgumentError(f"threads must be a positive integer, got {threads!r}")
    if isinstance(paths_or_manifest, (str, os.PathLike)):
        try:
            man = _manifest.read_manifest(paths_or_manifest)
        except DatabaseNotFoundError:
            if client is None:
                raise
            # not reachable here: the workers' storage may hold it
            man = client.submit(_manifest.read_manifest, os.fspath(paths_or_manifest),
                                pure=False).result()
        base = Path(man["_dir"])
        paths = [str(base / s["path"]) for s in man["shards"]]
    else:
        try:
            paths = [os.fspath(p) for p in paths_or_manifest]
        except TypeError:
            raise InvalidArgumentError("open_sharded takes a sharded database directory, its "
                                       "manifest, or a list of shard paths") from None
        if not paths:
            raise InvalidArgumentError("open_sharded needs at least one shard")
        if len(set(os.path.abspath(p) for p in paths)) != len(paths):
            raise InvalidArgumentError("a shard path is given twice")
        man = None
    if client is None:
        backend = _LocalBackend(paths, threads)
    else:
        from ._dask import DaskShardBackend
        backend = DaskShardBackend(client, paths)  # type: ignore[assignment]  # the same interface as _LocalBackend
    try:
        if man is None:         # a plain list of shards: ids local * N + shard
            man = _manifest_of_infos(paths, backend.map(tasks.op_info, [()] * len(paths)))
        return ShardedDatabase(man, paths, backend, embedder)
    except BaseException:
        backend.close()
        raise


def _manifest_of_infos(paths: Sequence[str], infos: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """An in-memory manifest for a plain list of shards (block 1: ids local * N + shard)."""
    first = infos[0]
    for p, i in zip(paths, infos):
        if i["metric"] != first["metric"]:
            raise InvalidArgumentError(f"{p}: metric {i['metric']!r}, the first shard {first['metric']!r}")
        if i["dim"] and first["dim"] and i["dim"] != first["dim"]:
            raise DimensionError(f"{p}: dimension {i['dim']}, the first shard {first['dim']}")
    dim = next((i["dim"] for i in infos if i["dim"]), 0)
    emb = first["embedder"]
    return {"dim": dim, "metric": first["metric"],
            "embedder": {"name": emb, "dim": dim} if emb and dim else None,
            "ids": {"scheme": _manifest.ID_SCHEME, "block": 1, "shards": len(paths)},
            "shards": [{"path": p, "concepts": i["concepts"]} for p, i in zip(paths, infos)],
            "concepts": sum(i["concepts"] for i in infos), "codebook": None, "_dir": None}


def _file_digest(path: str | os.PathLike[str]) -> str | None:
    """SHA-256 of a file, None when it cannot be read."""
    try:
        return _manifest.file_sha256(path)
    except OSError:
        return None


def _read_file(path: str | os.PathLike[str]) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class ShardedDatabase:
    """Several shard databases searched as one (read-only). Create with
    :func:`sutradb.open_sharded`.

    Search results and concepts carry global ids (:attr:`ids_scheme` maps them to
    ``(shard, local id)``). Thread-safe for reads, like :class:`sutradb.Database`.
    """

    def __init__(self, manifest: dict[str, Any], paths: Sequence[str], backend: Any,
                 embedder: str | Embedder | None = None) -> None:
        self._closed = True
        self.manifest = {k: v for k, v in manifest.items() if k != "_dir"}
        self.directory = manifest.get("_dir")
        self.paths = list(paths)
        self._backend = backend
        ids = manifest["ids"]
        self.ids_scheme = _manifest.IdScheme(ids["shards"], ids["block"])
        self._dim = int(manifest["dim"]) or None
        self._metric: str = manifest["metric"]
        self._embedder = (_embedders.get_embedder(embedder) if isinstance(embedder, str)
                          else embedder)
        self._closed = False
        infos = backend.map(tasks.op_info, [()] * len(paths))
        self._check_shards(infos)
        self._infos = infos

    def _check_shards(self, infos: Sequence[dict[str, Any]]) -> None:
        cb = self.manifest.get("codebook")
        for p, i in zip(self.paths, infos):
            if i["metric"] != self._metric:
                raise CorruptDatabaseError(f"{p}: metric {i['metric']!r}, the manifest {self._metric!r}")
            if i["dim"] and self._dim and i["dim"] != self._dim:
                raise CorruptDatabaseError(f"{p}: dimension {i['dim']}, the manifest {self._dim}")
            if cb is not None and i["concepts"]:
                idx = i["index"]
                if not (idx.get("kind") != "flat" and idx.get("m") == cb["m"]
                        and idx.get("nbits") == cb["nbits"] and idx.get("seed") == cb["seed"]
                        and idx.get("training_error") == cb["training_error"]):
                    raise CorruptDatabaseError(f"{p}: the shard is not encoded with the shared "
                                               "codebook the manifest names")

    # ------------------------------------------------------------------ properties

    @property
    def n_shards(self) -> int:
        return len(self.paths)

    @property
    def dim(self) -> int | None:
        return self._dim

    @property
    def metric(self) -> str:
        return self._metric

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def backend(self) -> str:
        """Where shard operations run: ``"threads"`` (here) or ``"dask"``."""
        return cast(str, self._backend.name)

    @property
    def embedder_name(self) -> str | None:
        if self._embedder is not None:
            return str(self._embedder.name)
        e = self.manifest.get("embedder")
        return e.get("name") if e else None

    @property
    def embedder(self) -> Embedder | None:
        """The embedder of text queries (the one given, else the one the shards were
        built with, loaded on first use), or None."""
        if self._embedder is None:
            name = self.embedder_name
            if name:
                try:
                    self._embedder = _embedders.get_embedder(name)
                except EmbedderError as e:
                    raise EmbedderError(f"the shards were built with the embedder {name!r}, which "
                                        f"cannot be loaded here ({e}); pass embedder= to "
                                        "open_sharded") from None
        return self._embedder

    @property
    def index_info(self) -> dict[str, Any]:
        """``{"kind", "shards", "codebook", "per_shard": [index_info of each shard]}``."""
        self._check_open()
        per = [i["index"] for i in self._infos]
        kinds = {p.get("kind") for p, i in zip(per, self._infos) if i["concepts"]}
        return {"kind": kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "flat"),
                "shards": self.n_shards, "codebook": self.manifest.get("codebook"),
                "per_shard": per}

    def __repr__(self) -> str:
        if self._closed:
            return "<sutradb.ShardedDatabase closed>"
        return (f"<sutradb.ShardedDatabase {self.directory or self.paths!r} {self.n_shards} shards "
                f"dim={self.dim} metric={self.metric!r} backend={self.backend!r}>")

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the sharded database is closed")

    # ------------------------------------------------------------------ ids

    def locate(self, id_: int | np.integer[Any]) -> tuple[int, int]:
        """``(shard number, local id)`` of a global id (whether or not it exists)."""
        if not _is_id(id_) or id_ < 0:
            raise InvalidArgumentError(f"an id must be an int >= 0, not {id_!r}")
        return self.ids_scheme.to_local(int(id_))

    def global_id(self, shard: int, local_id: int) -> int:
        """The global id of local id ``local_id`` of shard ``shard``."""
        if not _is_id(shard) or not 0 <= shard < self.n_shards:
            raise InvalidArgumentError(f"shard must be in 0..{self.n_shards - 1}, got {shard!r}")
        return self.ids_scheme.to_global(int(shard), int(local_id))

    def _globalise(self, c: Concept, shard: int) -> Concept:
        return c._replace(id=self.ids_scheme.to_global(shard, c.id))

    def _resolve(self, x: IdOrKey) -> tuple[int, int, Concept | None]:
        """(shard, local id, concept or None) of an id or key that exists."""
        if isinstance(x, str):
            found = [(s, c) for s, c in enumerate(self._backend.map(tasks.op_find_key,
                                                                     [(x,)] * self.n_shards))
                     if c is not None]
            if not found:
                raise NotFoundError(f"key {x!r} is not in the database")
            s, c = found[0]
            return s, c.id, c
        if not _is_id(x):
            raise InvalidArgumentError(f"an id must be an int (or a key: str), not {type(x).__name__}")
        if x < 0:
            raise NotFoundError(f"id {int(x)} is not in the database")
        s, loc = self.ids_scheme.to_local(int(x))
        return s, loc, None

    # ------------------------------------------------------------------ reads

    def __len__(self) -> int:
        self._check_open()
        return int(sum(self._backend.map(tasks.op_len, [()] * self.n_shards)))

    def __contains__(self, x: Any) -> bool:
        self._check_open()
        if isinstance(x, str):
            return any(c is not None for c in self._backend.map(tasks.op_find_key,
                                                                 [(x,)] * self.n_shards))
        if not _is_id(x) or x < 0:
            return False
        s, loc = self.ids_scheme.to_local(int(x))
        return bool(self._backend.call(s, tasks.op_contains, loc))

    def ids(self) -> np.ndarray:
        """The global ids of every concept, sorted (int64)."""
        self._check_open()
        per = self._backend.map(tasks.op_ids, [()] * self.n_shards)
        g = [self.ids_scheme.to_global(s, np.asarray(a, np.int64)) for s, a in enumerate(per)]
        return np.sort(np.concatenate(g)) if g else np.zeros(0, np.int64)

    def __iter__(self) -> Iterator[int]:
        return iter(self.ids().tolist())

    def get(self, id_or_key: IdOrKey) -> Concept:
        """The concept with this global id (int) or key (str), with its global id.

        Raises
        ------
        NotFoundError
            It does not exist.
        """
        self._check_open()
        s, loc, c = self._resolve(id_or_key)
        if c is None:
            try:
                c = self._backend.call(s, tasks.op_get, loc)
            except NotFoundError:
                raise NotFoundError(f"id {int(id_or_key)} is not in the database") from None
        return self._globalise(c, s)

    def get_many(self, ids: Sequence[IdOrKey]) -> list[Concept]:
        """:meth:`get` of several ids or keys (one call per shard for ids)."""
        self._check_open()
        ids = list(ids)
        out: list[Any] = [None] * len(ids)
        per: list[list[Any]] = [[] for _ in range(self.n_shards)]
        for j, x in enumerate(ids):
            if isinstance(x, str):
                out[j] = self.get(x)
            else:
                s, loc, _ = self._resolve(x)
                per[s].append((j, loc))
        args = [([loc for _, loc in lst],) for lst in per]
        try:
            res = self._backend.map(tasks.op_get_many, args)
        except NotFoundError as e:
            raise NotFoundError(f"an id is not in the database ({e})") from None
        for s, lst in enumerate(per):
            for (j, _), c in zip(lst, res[s]):
                out[j] = self._globalise(c, s)
        return out

    def distance(self, a: IdOrKey, b: IdOrKey) -> float:
        """Distance between two stored concepts (global ids or keys), as one database
        holding both computes it (exact over the stored vectors)."""
        self._check_open()
        sa, la, ca = self._resolve(a)
        sb, lb, cb = self._resolve(b)
        if sa == sb:
            try:
                return float(self._backend.call(sa, tasks.op_distance, la, lb))
            except NotFoundError:
                raise NotFoundError(f"id {a if ca is None else b} is not in the database") from None
        va = (ca or self._backend.call(sa, tasks.op_get, la)).vector
        vb = (cb or self._backend.call(sb, tasks.op_get, lb)).vector
        if va is None or vb is None:
            raise InvalidArgumentError("the shards keep no full vectors: a distance across shards "
                                       "needs them")
        # the kernel one database uses (Database.distance), on the two stored rows
        rows = np.stack([np.asarray(va), np.asarray(vb)])
        metric = {"l2": 0, "ip": 1, "cosine": 2}[self._metric]
        return float(pair_scorer([rows], np.arange(2, dtype=np.int64), metric).distance(0, 1))

    # ------------------------------------------------------------------ search

    def search_vectors(self, queries: npt.ArrayLike, k: int = 10, *, where: Where | None = None,
                       rerank: int | None = None, exact: bool = False, threads: int | None = None,
                       **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest concepts of each query vector over all shards.

        Every shard answers its own top-k (with the same ``where``, ``rerank`` and
        ``exact`` as :meth:`sutradb.Database.search_vectors`) and the lists are merged
        into the exact top-k of their union (equal distances: the smaller global id
        first, as one database orders equal distances by row).

        Parameters
        ----------
        queries : (nq, dim) or (dim,) array_like
        k : int >= 1
        where, rerank, exact
            As in :meth:`sutradb.Database.search_vectors`.
        threads : int, optional
            Kernel threads per shard (default: the CPUs shared among the shards
            searched at once; 1 for a single query).
        **kwargs
            Other per-call parameters of the shards' ``search_vectors`` (``nprobe``
            of an IVF index).

        Returns
        -------
        D : (nq, k) float32
            Distances, ascending (``inf`` padding).
        I : (nq, k) int64
            Global ids (``-1`` padding).
        """
        self._check_open()
        if not _is_id(k) or k < 1:
            raise InvalidArgumentError(f"k must be an integer >= 1, got {k!r}")
        k = int(k)
        Q = self._check_queries(queries)
        if threads is None and self._backend.name == "threads":
            threads = 1 if Q.shape[0] <= 1 else max(1, default_threads() // self._backend.workers)
        kw = dict(kwargs, where=where, rerank=rerank, exact=exact, threads=threads)
        res = self._backend.map(tasks.op_search, [(Q, k, kw)] * self.n_shards)
        return self._merge(res, k)

    def _merge(self, res: Sequence[tuple[np.ndarray, np.ndarray]], k: int
               ) -> tuple[np.ndarray, np.ndarray]:
        Ds, Gs = [], []
        for s, (D, I) in enumerate(res):
            Ds.append(np.asarray(D, np.float32))
            Gs.append(self.ids_scheme.to_global(s, np.asarray(I, np.int64)))
        D = np.concatenate(Ds, axis=1)
        G = np.concatenate(Gs, axis=1)
        key = np.where(G < 0, _I64_MAX, G)
        o = np.lexsort((key, D), axis=1)[:, :k]
        D = np.take_along_axis(D, o, 1)
        G = np.take_along_axis(G, o, 1)
        return np.ascontiguousarray(D), np.ascontiguousarray(G)

    def _check_queries(self, queries: npt.ArrayLike) -> np.ndarray:
        arr = queries if isinstance(queries, np.ndarray) else np.asarray(queries)
        if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
            raise InvalidArgumentError(f"queries must hold numbers, got dtype {arr.dtype}")
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise DimensionError(f"queries must be (nq, dim) or (dim,), got shape {arr.shape}")
        if self._dim and arr.shape[1] != self._dim:
            raise DimensionError(f"queries have dimension {arr.shape[1]}, the database {self._dim}")
        if not np.isfinite(arr).all():
            raise InvalidArgumentError("queries hold NaN or infinite values")
        return np.ascontiguousarray(arr, dtype=np.float32)

    def search(self, query: str | npt.ArrayLike, k: int = 10, *, where: Where | None = None,
               rerank: int | None = None, exact: bool = False, **kwargs: Any) -> list[Hit]:
        """The k nearest concepts of one query (a vector, or a text embedded by
        :attr:`embedder`): ``[Hit(id, distance, concept)]`` with global ids."""
        self._check_open()
        if isinstance(query, str):
            emb = self.embedder
            if emb is None:
                raise EmbedderError("these shards have no embedder: pass a vector, or "
                                    "open_sharded(..., embedder=...)")
            query = _embedders.embed(emb, [query])[0]
        q = np.asarray(query)
        if q.ndim != 1:
            raise DimensionError(f"search takes one query (dim,), got shape {q.shape}; use "
                                 "search_vectors for batches")
        D, G = self.search_vectors(q, k, where=where, rerank=rerank, exact=exact, **kwargs)
        keep = [(int(g), float(d)) for d, g in zip(D[0].tolist(), G[0].tolist()) if g >= 0]
        cs = self.get_many([g for g, _ in keep])
        return [Hit(g, d, c) for (g, d), c in zip(keep, cs)]

    # ------------------------------------------------------------------ maintenance

    def verify(self) -> dict[str, Any]:
        """Check every shard (``verify()``: checksums, invariants) and the set against
        its manifest (counts, codebook file and fingerprint). Returns counts; raises
        CorruptDatabaseError."""
        self._check_open()
        per = self._backend.map(tasks.op_verify, [()] * self.n_shards)
        infos = self._backend.map(tasks.op_info, [()] * self.n_shards)
        self._check_shards(infos)
        if self.directory is not None:
            for s, (p, i) in enumerate(zip(self.manifest["shards"], infos)):
                if i["concepts"] != p["concepts"]:
                    raise CorruptDatabaseError(f"{self.paths[s]}: {i['concepts']} concepts, the "
                                               f"manifest says {p['concepts']}")
            cb = self.manifest.get("codebook")
            if cb is not None:
                f = str(Path(self.directory) / cb["path"])
                if self._backend.run(_file_digest, f) != cb["sha256"]:
                    raise CorruptDatabaseError(f"{f}: the shared codebook is missing or damaged")
        return {"shards": self.n_shards, "concepts": sum(i["concepts"] for i in infos),
                "per_shard": per}

    def codebook(self) -> ProductQuantizer | None:
        """The shared :class:`~sutradb.ProductQuantizer` (None if the shards are not
        indexed or there is no manifest)."""
        cb = self.manifest.get("codebook")
        if cb is None or self.directory is None:
            return None
        blob = self._backend.run(_read_file, str(Path(self.directory) / cb["path"]))
        if hashlib.sha256(blob).hexdigest() != cb["sha256"]:
            raise CorruptDatabaseError(f"{self.directory}: the shared codebook does not match "
                                       "the manifest")
        return tasks.load_codebook(blob, source=str(Path(self.directory) / cb["path"]))

    def refresh(self) -> None:
        """Move every shard to its latest committed state."""
        self._check_open()
        self._backend.refresh()
        self._infos = self._backend.map(tasks.op_info, [()] * self.n_shards)

    def close(self) -> None:
        """Close the shards (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._backend.close()

    def __enter__(self) -> ShardedDatabase:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.close()
        return False

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
