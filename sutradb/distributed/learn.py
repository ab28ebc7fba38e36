"""Distributed learn: embed a corpus on a Dask cluster into N shard databases that share
one PQ codebook.

See :func:`learn` and ``docs/distributed.md``. This module does not import Dask: a
job given a ``client`` goes through :mod:`sutradb.distributed._dask`; without one it
runs in this process (the same shards, for corpora one machine handles).
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

import sutradb
from .. import embedders as _embedders
from ..errors import DimensionError, DuplicateKeyError, InvalidArgumentError, SutraError
from ..index.pq import default_threads
from . import manifest as _manifest
from . import tasks
from .sources import count_rows, describe_source, iter_partitions, partition_digest

if TYPE_CHECKING:
    import numpy.typing as npt

    from ..embedders import Embedder

__all__ = ["learn", "LearnReport", "LocalEngine"]

_DEFAULT: Any = object()
#: Partitions a skipped-partition check covers (one shard open for all of them).
_CHECK_BATCH = 256
#: Job parameters that must match when a job resumes or re-runs in a directory.
_JOB_KEYS = ("shards", "partition_size", "batch_size", "embedder", "metric", "vector_dtype",
             "index_threshold", "pq_m", "pq_nbits", "seed", "train_size", "train_iters",
             "embedded", "options")


@dataclass(frozen=True)
class LearnReport:
    """What a :func:`learn` job did.

    Attributes
    ----------
    path : str
        The sharded database directory (open it with :func:`sutradb.open_sharded`).
    manifest : dict
        The manifest as written.
    concepts, shards, partitions : int
    written, skipped : int
        Partitions committed by this run, and partitions that the shards already held
        (a re-run or a resumed job; they were checked, not embedded again).
    seconds : float
        Wall time of the job.
    timings : dict
        Seconds per phase: ``setup`` (embedder on the workers), ``partitions`` (embed
        and write), ``train`` (shared codebook), ``index`` (encode the shards),
        ``verify``, ``manifest``.
    engine : str
    workers : int
    """

    path: str
    manifest: dict[str, Any]
    concepts: int
    shards: int
    partitions: int
    written: int
    skipped: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    engine: str = ""
    workers: int = 1

    @property
    def texts_per_second(self) -> float:
        """Concepts per second of wall time (the whole job)."""
        return self.concepts / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "concepts": self.concepts, "shards": self.shards,
                "partitions": self.partitions, "written": self.written, "skipped": self.skipped,
                "seconds": self.seconds, "timings": dict(self.timings), "engine": self.engine,
                "workers": self.workers, "texts_per_second": self.texts_per_second}


# --------------------------------------------------------------------------- engines

class _Done:
    """A finished call, with the interface of an engine future."""

    __slots__ = ("_value", "_error")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self._value, self._error = value, error

    def done(self) -> bool:
        return True

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


def _resolve(x: Any) -> Any:
    if isinstance(x, _Done):
        return x.result()
    if isinstance(x, list):
        return [_resolve(v) for v in x]
    if isinstance(x, tuple):
        return tuple(_resolve(v) for v in x)
    return x


class LocalEngine:
    """Runs a job's tasks in this process, one after the other (no Dask)."""

    name = "in-process"
    workers = 1
    #: tasks that can run at once (one: they run one after the other)
    task_slots = 1
    #: kernel threads a task may use (None: all of this machine's)
    task_threads = None

    @property
    def threads(self) -> int:
        return default_threads()

    def describe(self) -> str:
        return "in-process"

    def setup_workers(self, key: str, embedder: Any, threads: int | None) -> Any:
        return tasks.install_embedder(key, embedder, threads)

    def submit(self, fn: Callable[..., Any], *args: Any, key: str | None = None,
               **kwargs: Any) -> _Done:
        try:
            return _Done(fn(*_resolve(args), **kwargs))
        except Exception as e:           # raised again by .result(), as an engine does
            return _Done(error=e)

    def wait_first(self, futures: Iterable[Any]) -> set[Any]:
        return set(futures)

    def cancel(self, futures: Iterable[Any]) -> None:
        pass


# --------------------------------------------------------------------------- progress

class _Progress:
    """Progress of a job: a rich bar on stderr (count, throughput, ETA, workers) or a
    callable ``(done, total)``; ``done=None`` closes."""

    def __init__(self, progress, total, engine_desc) -> None:
        self.cb = None
        self.bar = None
        self.done = 0
        self.total = total
        if callable(progress) and not isinstance(progress, bool):
            self.cb = progress
            return
        if progress is None:
            progress = sys.stderr.isatty()
        if not progress:
            return
        try:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
        except ImportError:
            return
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                            TimeElapsedColumn(), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=False)
        self.bar.start()
        self.t0 = time.perf_counter()
        self.task = self.bar.add_task(f"learning on {engine_desc}", total=total, rate="")

    def advance(self, n: int) -> None:
        self.done += n
        if self.cb is not None:
            self.cb(self.done, self.total)
        elif self.bar is not None:
            rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.update(self.task, completed=self.done, rate=f"{rate:,.0f} texts/s")

    def phase(self, text: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


# --------------------------------------------------------------------------- checks

def _int_arg(name, v, lo: int = 1, none: bool = False):
    if v is None and none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise InvalidArgumentError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def _embedder_key(embedder) -> str:
    if isinstance(embedder, str):
        return embedder
    _embedders.check_embedder(embedder)
    return f"object:{embedder.name}:{id(embedder):x}"


def _check_job(existing: dict, job: dict, directory: str) -> None:
    old = existing.get("job") or {}
    diff = [k for k in _JOB_KEYS if old.get(k) != job.get(k)]
    if diff:
        raise InvalidArgumentError(
            f"{directory!r} holds a sharded database made with other parameters "
            f"({', '.join(f'{k}: {old.get(k)!r} there, {job.get(k)!r} now' for k in diff)}); "
            "use mode='w' to rebuild it")


# --------------------------------------------------------------------------- learn

def learn(source: Any, path: str | os.PathLike[str], *, embedder: str | Embedder | None = _DEFAULT,
          shards: int = 2, client: Any = None, mode: str = "a", vectors: npt.ArrayLike | None = None, partition_size: int | None = None, batch_size: int = 256,
          metric: str = "cosine", index_threshold: int = 10_000, pq_m: int | None = None,
          pq_nbits: int | None = None, seed: int = 0, train_size: int = 65_536, train_iters: int = 20,
          vector_dtype: str = "float16", durability: str = "full", writer: str = "workers",
          text_field: str = "text", key_field: str | None = "key",
          metadata_field: str | None = "metadata", worker_threads: int | None = None,
          max_in_flight: int | None = None, lock_timeout: float = 600.0,
          progress: bool | Callable[[int | None, int], object] | None = None,
          **options: Any) -> LearnReport:
    """Learn a corpus into ``shards`` shard databases on a Dask cluster.

    The job (1) cuts the source into partitions of ``partition_size`` rows and embeds
    them on the workers (the model loaded once per worker), each partition written to
    shard ``partition % shards`` in one transaction; (2) draws the training sample
    exactly as one database holding everything would (a seeded sample of the stored
    vectors) and trains one PQ codebook on the workers (its subspaces split into one part
    per task slot: the same codebook however split); (3) encodes every shard with it;
    (4) verifies every shard and writes the manifest, which is what makes the result
    visible to :func:`sutradb.open_sharded`. Each shard is a normal database that
    :func:`sutradb.open` reads alone.

    The result equals one ``db.add(texts, progress=False)`` of the same texts into one
    database opened with the same options: same ids (global id = row of the source),
    texts, keys, metadata and stored vectors, and for the same seed the same codebook,
    bit for bit, when ``partition_size`` is a multiple of ``16 * batch_size`` (the
    windows ``db.add`` embeds at once; see docs/distributed.md).

    Parameters
    ----------
    source
        Texts: a list or iterable of str (or of dicts with ``text``, ``key``,
        ``metadata``), a ``.txt`` / ``.jsonl`` / ``.parquet`` file, or a
        ``dask.bag.Bag`` (see :mod:`sutradb.distributed.sources`). Read lazily.
    path : str or os.PathLike
        The sharded database directory (created). With ``writer="workers"`` it must
        be the same path on every worker (shared storage).
    embedder : str or object, optional
        An embedder spec (default ``"sentence-transformers:all-MiniLM-L6-v2"``): each
        worker loads it from its own installed files. An embedder object is pickled
        to each worker once. None with ``vectors``.
    shards : int
        Number of shard databases.
    client : dask.distributed.Client, optional
        The cluster to run on. None runs the job in this process.
    mode : {"a", "w", "x"}
        ``"a"`` create, or resume an interrupted job / re-run a finished one (the
        partitions the shards hold are checked, not embedded again; the parameters
        must be the same); ``"w"`` rebuild; ``"x"`` the directory must not exist.
    vectors : (n, dim) array_like, optional
        Bring your own embeddings (row i of the source is ``vectors[i]``): nothing is
        embedded.
    partition_size : int, optional
        Rows per partition (default ``16 * batch_size``, 4096).
    batch_size : int
        As the database option: texts per embedder batch (windows of 16 batches).
    metric, index_threshold, pq_m, pq_nbits, seed, train_size, train_iters, vector_dtype, durability
        The database options of :func:`sutradb.open`, for every shard and for the
        shared codebook (trained when the corpus has ``index_threshold`` concepts or
        more, as one database would; ``index_threshold=0``: shards stay exact).
        ``vector_dtype=None`` is not supported (the codebook is trained on stored
        vectors).
    writer : {"workers", "client"}
        Who writes the shards: the workers (shards on storage every worker reaches at
        ``path``; only small results come back) or this process (vectors come back
        here; no shared storage needed).
    text_field, key_field, metadata_field : str
        Field names of dict items, JSON objects and Parquet columns.
    worker_threads : int, optional
        Model threads per worker (default: each worker's thread count).
    max_in_flight : int, optional
        Partitions submitted and not yet written (back-pressure; default
        ``max(4, 2 * threads of the cluster)``).
    lock_timeout : float
        Seconds a shard writer waits for another writer of the same shard.
    progress : bool or callable, optional
        A progress bar on stderr (default: when stderr is a terminal) or a callable
        ``progress(done, total)`` (``total`` None when the source's length is
        unknown).
    **options
        Other options of :func:`sutradb.open` for the shards (``index``,
        ``cache_size``, ...).

    Returns
    -------
    LearnReport

    Raises
    ------
    InvalidArgumentError, DimensionError, DuplicateKeyError
        Bad arguments or items (a duplicate key anywhere in the source).
    EmbedderError
        The embedder cannot be loaded on a worker.
    SutraError
        A resumed job finds shards that hold other data than the source.

    Examples
    --------
    >>> from dask.distributed import Client                          # doctest: +SKIP
    >>> from sutradb.distributed import learn, local_cluster         # doctest: +SKIP
    >>> with local_cluster(n_workers=2) as cluster, Client(cluster) as client:
    ...     report = learn("corpus.txt", "corpus.shards", shards=4, client=client)
    >>> db = sutradb.open_sharded("corpus.shards")                   # doctest: +SKIP
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    N = _int_arg("shards", shards)
    batch_size = _int_arg("batch_size", batch_size)
    P = _int_arg("partition_size", partition_size if partition_size is not None else 16 * batch_size)
    if mode not in ("a", "w", "x"):
        raise InvalidArgumentError(f"mode must be 'a', 'w' or 'x', not {mode!r}")
    if writer not in ("workers", "client"):
        raise InvalidArgumentError(f"writer must be 'workers' or 'client', not {writer!r}")
    if vector_dtype is None:
        raise InvalidArgumentError("vector_dtype=None is not supported by a distributed learn: the "
                                   "shared codebook is trained on the stored vectors")
    worker_threads = _int_arg("worker_threads", worker_threads, none=True)
    max_in_flight = _int_arg("max_in_flight", max_in_flight, none=True)
    if not isinstance(lock_timeout, (int, float)) or lock_timeout < 0:
        raise InvalidArgumentError(f"lock_timeout must be a number >= 0, got {lock_timeout!r}")
    if embedder is _DEFAULT:
        embedder = None if vectors is not None else _embedders.default_spec()
    if embedder is None and vectors is None:
        raise InvalidArgumentError("learn needs an embedder (a spec such as "
                                   f"{_embedders.default_spec()!r}) or vectors=")
    opts = {"metric": metric, "vector_dtype": vector_dtype, "index_threshold": index_threshold,
            "pq_m": pq_m, "pq_nbits": pq_nbits, "seed": seed, "train_size": train_size,
            "train_iters": train_iters, "durability": durability}
    for k in ("embedder", "progress", "batch_size"):
        if k in options:
            raise InvalidArgumentError(f"{k!r} is a parameter of learn, not a shard option")
    opts.update(options)
    sutradb.open(":memory:", **opts).close()  # type: ignore[arg-type]  # the database's own checks
    V = None
    if vectors is not None:
        V = vectors if isinstance(vectors, np.ndarray) else np.asarray(vectors)
        if V.ndim != 2 or V.shape[1] < 1:
            raise DimensionError(f"vectors must be (n, dim), got shape {V.shape}")
    directory = os.path.abspath(os.fspath(path))

    if client is None:
        engine = LocalEngine()
    else:
        from ._dask import DaskEngine
        engine = DaskEngine(client)  # type: ignore[assignment]  # the same interface as LocalEngine
    local = LocalEngine()
    on_files = engine if writer == "workers" else local

    # ---- the directory, and a finished job already there
    existing = on_files.submit(tasks.prepare_directory, directory, mode).result()

    # ---- the embedder on the workers (loaded once per worker process)
    t = time.perf_counter()
    key = None
    if V is None:
        key = _embedder_key(embedder)
        info = engine.setup_workers(key, embedder, worker_threads)
        emb_rec = {"name": info["name"], "dim": int(info["dim"])}
        dim = emb_rec["dim"]
    else:
        dim = int(V.shape[1])
        emb_rec = None
        if embedder is not None:     # recorded for text queries; not loaded here
            name = embedder if isinstance(embedder, str) else str(embedder.name)
            edim = dim if isinstance(embedder, str) else int(embedder.dim)
            if edim != dim:
                raise DimensionError(f"the embedder makes {edim}-d vectors, vectors= are {dim}-d")
            emb_rec = {"name": name, "dim": dim}
    if pq_m is not None and dim % pq_m:
        raise DimensionError(f"pq_m={pq_m} does not divide the dimension {dim}")
    timings["setup"] = time.perf_counter() - t

    job = {"shards": N, "partition_size": P, "batch_size": batch_size,
           "embedder": emb_rec["name"] if emb_rec else None, "metric": metric,
           "vector_dtype": vector_dtype, "index_threshold": index_threshold, "pq_m": pq_m,
           "pq_nbits": pq_nbits, "seed": seed, "train_size": train_size,
           "train_iters": train_iters, "embedded": V is None,
           "options": {k: options[k] for k in sorted(options)},
           "source": describe_source(source), "engine": engine.describe()}
    if existing is not None:
        _check_job(existing, job, directory)

    scheme = _manifest.IdScheme(N, P)
    paths = [os.path.join(directory, _manifest.shard_name(s)) for s in range(N)]
    status = [f.result() for f in [on_files.submit(tasks.shard_status, p, opts, dim, emb_rec,
                                                   lock_timeout) for p in paths]]
    committed = [s["concepts"] for s in status]

    total = count_rows(source)
    if total is not None and V is not None and total != V.shape[0]:
        raise DimensionError(f"the source has {total} rows for {V.shape[0]} vectors")
    bar = _Progress(progress, total, engine.describe())
    futures_out: list = []
    try:
        t = time.perf_counter()
        expected, n_parts, written, skipped = _run_partitions(
            engine, on_files, writer, source, V, P, N, paths, committed, existing, opts,
            dim, emb_rec, key, batch_size, vector_dtype, lock_timeout, bar,
            max_in_flight or max(4, 2 * engine.threads), text_field, key_field, metadata_field)
        timings["partitions"] = time.perf_counter() - t
        n = int(sum(expected))

        # ---- the shared codebook, trained as one database holding everything would
        t = time.perf_counter()
        codebook = None
        trained = existing.get("codebook") if existing is not None else None
        if trained is not None and written == 0:
            # a finished job run again: its codebook (checked against the manifest)
            f = on_files.submit(tasks.read_codebook, directory, trained)
            futures_out.append(f)
            codebook = f.result()
        elif (index_threshold and opts.get("index") != "flat"
                and n >= max(index_threshold, 1 << int(pq_nbits or 8))):
            bar.phase("training the shared codebook")
            ts = min(n, int(train_size))
            rng = np.random.default_rng(int(seed))
            sample = np.sort(rng.choice(n, size=ts, replace=False)) if ts < n else np.arange(n)
            sh, loc = scheme.to_local(sample)
            parts = []
            for s in range(N):
                m = sh == s
                if m.any():
                    f = on_files.submit(tasks.read_rows, paths[s], loc[m])
                    futures_out.append(f)
                    parts.append((sample[m], f))
            spec = {"dim": dim, "metric": metric, "m": pq_m, "nbits": pq_nbits, "seed": seed,
                    "vector_dtype": vector_dtype, "train_size": train_size,
                    "iters": train_iters, "sample": int(ts), "threads": on_files.task_threads}
            # the subspaces are trained independently: one part per task slot of the
            # cluster (the same codebook, bit for bit, however it is split)
            m_sub = tasks.codebook_subspaces(spec)
            k = max(1, min(m_sub, on_files.task_slots))  # type: ignore[assignment]  # k: a str above, a count here
            cuts = [round(i * m_sub / k) for i in range(k + 1)]  # type: ignore[operator]  # (likewise)
            fs = [on_files.submit(tasks.train_codebook_part, spec, parts, cuts[i], cuts[i + 1])
                  for i in range(k)]  # type: ignore[call-overload]  # (likewise)
            futures_out.extend(fs)
            codebook = tasks.assemble_codebook(spec, [f.result() for f in fs])
        timings["train"] = time.perf_counter() - t

        # ---- every shard encoded with it (one transaction per shard)
        t = time.perf_counter()
        if codebook is not None:
            bar.phase("encoding the shards")
            fs = [on_files.submit(tasks.index_shard, paths[s], codebook, opts, dim, emb_rec,
                                  lock_timeout) for s in range(N) if expected[s]]
            futures_out.extend(fs)
            for f in fs:
                f.result()
        timings["index"] = time.perf_counter() - t

        # ---- verified, then made visible by the manifest
        t = time.perf_counter()
        bar.phase("verifying the shards")
        fs = [on_files.submit(tasks.verify_shard, p) for p in paths]
        futures_out.extend(fs)
        checked = [f.result() for f in fs]
        for s, c in enumerate(checked):
            if c["concepts"] != expected[s]:
                raise SutraError(f"{paths[s]}: {c['concepts']} concepts after the job, "
                                 f"{expected[s]} expected")
        timings["verify"] = time.perf_counter() - t

        t = time.perf_counter()
        job["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        body = {"dim": dim, "metric": metric, "embedder": emb_rec, "ids": scheme.as_dict(),
                "shards": [{"path": _manifest.shard_name(s), "concepts": int(expected[s])}
                           for s in range(N)],
                "concepts": n, "partitions": n_parts, "job": job}
        man = on_files.submit(tasks.finalize, directory, body, codebook).result()
        timings["manifest"] = time.perf_counter() - t
    except BaseException:
        engine.cancel([f for f in futures_out if not isinstance(f, _Done)])
        raise
    finally:
        bar.close()
    return LearnReport(directory, man, n, N, n_parts, written, skipped,
                       time.perf_counter() - t_start, timings, engine.describe(), engine.workers)


def _run_partitions(engine, on_files, writer, source, V, P, N, paths, committed, existing,
                    opts, dim, emb_rec, key, batch_size, vector_dtype, lock_timeout, bar,
                    max_in_flight, text_field, key_field, metadata_field):
    """Embed and write every partition (back-pressure: at most ``max_in_flight``
    partitions between submission and commit). Returns (rows per shard, partitions,
    written, skipped). On an error, what is still running is cancelled; what committed
    stays (a re-run resumes from it)."""
    inflight: dict = {}              # write / check future -> its embed future (or None)
    queue: deque = deque()           # writer="client": (write args, embed future), in order
    try:
        return _partitions_loop(engine, on_files, writer, source, V, P, N, paths, committed,
                                existing, opts, dim, emb_rec, key, batch_size, vector_dtype,
                                lock_timeout, bar, max_in_flight, text_field, key_field,
                                metadata_field, inflight, queue)
    except BaseException:
        pending = [f for f in inflight if not isinstance(f, _Done)]
        pending += [e for e in inflight.values() if e is not None and not isinstance(e, _Done)]
        pending += [e for _, e in queue if e is not None and not isinstance(e, _Done)]
        engine.cancel(pending)
        raise


def _partitions_loop(engine, on_files, writer, source, V, P, N, paths, committed, existing,
                     opts, dim, emb_rec, key, batch_size, vector_dtype, lock_timeout, bar,
                     max_in_flight, text_field, key_field, metadata_field, inflight, queue):
    expected = [0] * N
    last_write = [None] * N          # per shard: its previous write (they go in order)
    token = uuid.uuid4().hex[:8]
    checks: list[list] = [[] for _ in range(N)]
    seen_keys: set = set()
    with_vectors = V is not None
    counts = {"written": 0, "skipped": 0}

    def finish(results) -> None:
        for r in (results if isinstance(results, list) else [results]):
            bar.advance(r["rows"])
            counts["written" if r["written"] else "skipped"] += 1

    def write_head() -> None:
        args, ef = queue.popleft()
        vec = ef.result() if ef is not None else None
        payload = args[6]
        if ef is not None:
            payload = (vec,) + tuple(payload[1:])
        finish(tasks.write_partition(*args[:6], payload, *args[7:]))  # type: ignore[call-arg]  # args: the task's own arguments

    def drain(block: bool) -> None:
        progressed = False
        for f in [f for f in inflight if f.done()]:
            inflight.pop(f)
            finish(f.result())
            progressed = True
        while queue and (queue[0][1] is None or queue[0][1].done()):
            write_head()
            progressed = True
        if block and not progressed:
            if queue:
                write_head()
            elif inflight:
                for f in engine.wait_first([f for f in inflight if not isinstance(f, _Done)]):
                    inflight.pop(f)
                    finish(f.result())

    def flush_checks(s) -> None:
        if checks[s]:
            f = on_files.submit(tasks.check_partitions, paths[s], list(checks[s]), with_vectors)
            inflight[f] = None
            checks[s] = []

    p = -1
    for part in iter_partitions(source, P, vectors=V, text_field=text_field,
                                key_field=key_field, metadata_field=metadata_field):
        p = part.index
        rows = len(part.texts)
        s = p % N
        offset = (p // N) * P
        if existing is not None and p >= existing["partitions"]:
            raise InvalidArgumentError(
                f"the sharded database is complete with {existing['partitions']} partitions and "
                "the source has more rows: a finished job is not appended to; rebuild with "
                "mode='w' (or learn the new texts into another sharded database)")
        if part.keys is not None:
            for j, k in enumerate(part.keys):
                if k is None:
                    continue
                if k in seen_keys:
                    raise DuplicateKeyError(f"key {k!r} appears twice in the source (row "
                                            f"{part.start + j})")
                seen_keys.add(k)
        vec = tasks.as_stored(part.vectors, vector_dtype) if with_vectors else None
        digest = partition_digest(part.texts, part.keys, part.metadata, vec)
        expected[s] += rows
        if offset + rows <= committed[s]:               # the shard holds it: check only
            checks[s].append((p, offset, rows, digest))
            if len(checks[s]) >= _CHECK_BATCH:
                flush_checks(s)
        elif offset < committed[s]:
            raise SutraError(f"{paths[s]}: the shard holds {committed[s]} concepts, in the middle "
                             f"of partition {p} (ids {offset}..{offset + rows - 1}): the partition "
                             "size or the source changed since the interrupted run; rebuild with "
                             "mode='w'")
        else:
            ef = None
            if not with_vectors:
                ef = engine.submit(tasks.embed_partition, key, part.texts, batch_size,
                                   vector_dtype, key=f"sutradb-embed-{token}-{p}")
            payload = (ef if ef is not None else vec, part.texts, part.keys, part.metadata)
            args = (paths[s], p, offset, rows, digest, with_vectors, payload, opts, dim, emb_rec,
                    last_write[s], lock_timeout)
            if writer == "workers":
                wf = engine.submit(tasks.write_partition, *args,
                                   key=f"sutradb-write-{token}-{p}")
                last_write[s] = wf
                inflight[wf] = ef
            else:
                queue.append((args[:10] + (None, lock_timeout), ef))
        while len(inflight) + len(queue) >= max_in_flight:
            drain(block=True)
        drain(block=False)
    n_parts = p + 1
    if existing is not None and n_parts != existing["partitions"]:
        raise InvalidArgumentError(f"the source has {n_parts} partitions, the sharded database "
                                   f"{existing['partitions']}: rebuild with mode='w'")
    for s in range(N):
        if committed[s] > expected[s]:
            raise SutraError(f"{paths[s]}: the shard holds {committed[s]} concepts, the source "
                             f"gives it {expected[s]}: rebuild with mode='w'")
        flush_checks(s)
    while inflight or queue:
        drain(block=True)
    return expected, n_parts, counts["written"], counts["skipped"]
