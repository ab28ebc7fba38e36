"""The database: concepts (text, vector, metadata, key), search, links, transactions.

:func:`open` returns a :class:`Database`. This is the only module that ties the
storage engine (:mod:`sutradb.storage`), the vector index (:mod:`sutradb.index`) and
embedders together; each of those knows nothing of the others.

Data model: :mod:`sutradb.database.concepts`.
Index lifecycle: :mod:`sutradb.database.indexing`.
Transactions: :mod:`sutradb.database.transactions`.
Thread safety: :mod:`sutradb.database.locking`.
"""

from __future__ import annotations

import copy
import threading
from typing import Iterator

import numpy as np

from .. import errors as _errors
from ..errors import (ClosedError, DimensionError, DuplicateKeyError, EmbedderError,
                     InvalidArgumentError, NotFoundError, ReadOnlyError, SutraError)
from ..graph import DIRECTIONS, Link, as_links, check_relation, check_weight
from ..index.flat import FlatVectors
from ..index.vector import VectorIndex, code_rows, decode_index
from ..storage import Store
from .concepts import Concept, Hit, nested, new_concept
from .indexing import IndexingMixin
from .locking import ExclusiveLock, ReadLock, RWLock
from .options import (BATCH, DEFAULT_METRIC, DEFAULT_OPTIONS, FORMAT, FORMAT_VERSION, INDEX_KINDS,
                      MEMORY, METRICS, STORED, UNSET, DefaultStr)
from .progress import progress_bar
from .recordindex import RecordIndexes
from .search import NO_TABLE, SearchMixin
from .transactions import Bulk, Staged, Transaction, TransactionsMixin
from .validation import check_metadata, check_options, check_vector_rows, is_id, seq_arg
from .. import embedders as _embedders

__all__ = ["open", "tune", "Database", "Transaction", "Concept", "Hit", "Link", "METRICS",
           "DEFAULT_OPTIONS", "INDEX_KINDS"]

# --------------------------------------------------------------------------- open

def open(path, mode: str = "a", *, dim: int | None = None, metric: str = DEFAULT_METRIC,
         timeout: float = 0.0, **options) -> "Database":
    """Open or create a database.

    Parameters
    ----------
    path : str or os.PathLike
        The database directory, or ``":memory:"`` for a database without files.
    mode : {"a", "r", "w", "x"}
        ``"a"`` open for reading and writing, creating it if needed; ``"r"``
        read-only (no lock; writes raise :class:`~sutradb.errors.ReadOnlyError`);
        ``"w"`` create, emptying an existing database; ``"x"`` create, the path must
        not exist.
    dim : int, optional
        Dimension of the vectors; fixed by the first vectors added when not given.
        Opening an existing database with another ``dim`` raises
        :class:`~sutradb.errors.DimensionError`.
    metric : {"cosine", "ip", "l2"}
        Distance of the database, fixed at creation (default ``"cosine"``): ``1 - cos``,
        ``-dot``, or squared L2.
    timeout : float
        Seconds to wait for another process's writer lock before
        :class:`~sutradb.errors.LockedError`.
    **options
        ``vector_dtype`` ("float16" default, "float32", or None to keep only PQ
        codes), ``index_threshold`` (10,000: concepts that trigger PQ training),
        ``pq_m`` (subspaces; default one code byte per 8 dimensions), ``pq_nbits``
        (4 or 8; default 4 when vectors are stored: every search re-ranks, and 4-bit
        codes are scanned several times faster; 8 without them), ``seed``,
        ``train_size`` (65,536), ``train_iters`` (20), ``durability`` ("full",
        "normal", "off"; see :mod:`sutradb.storage.store`), ``cache_size`` (decoded
        records kept for :meth:`Database.get`, 262,144), ``progress`` (True or a
        callable ``(done, total)`` during training), ``embedder`` (an object with
        ``dim`` and ``__call__(texts) -> (n, dim) float32``, for text queries and
        :meth:`Database.add`).

    Returns
    -------
    Database
        Usable as a context manager (``with sutradb.open(p) as db:`` closes it).

    Examples
    --------
    >>> import numpy as np, sutradb
    >>> with sutradb.open(":memory:", dim=4) as db:
    ...     ids = db.add_vectors(np.eye(4, dtype="float32"), texts=list("abcd"))
    ...     D, I = db.search_vectors(np.array([1, 0, 0, 0.1], "float32"), k=2)
    ...     db.get(int(I[0, 0])).text
    'a'
    """
    return Database(path, mode, dim=dim, metric=metric, timeout=timeout, **options)


def tune(db: "Database", queries, target_recall: float | None = None, **kwargs) -> dict:
    """Pick ``nprobe`` / ``rerank`` for ``target_recall`` on your own queries:
    :meth:`Database.tune`."""
    return db.tune(queries, target_recall=target_recall, **kwargs)


class Database(TransactionsMixin, SearchMixin, IndexingMixin):
    """A sutradb database. Create with :func:`sutradb.open`.

    See the module docstring for the data model, the index lifecycle, transactions and
    thread safety.
    """

    def __init__(self, path, mode: str = "a", *, dim: int | None = None,
                 metric: str = DEFAULT_METRIC, timeout: float = 0.0, **options):
        unknown = set(options) - set(DEFAULT_OPTIONS)
        if unknown:
            raise InvalidArgumentError(f"unknown options: {sorted(unknown)} (known: {sorted(DEFAULT_OPTIONS)})")
        if mode not in ("r", "a", "w", "x"):
            raise InvalidArgumentError(f"mode must be 'r', 'a', 'w' or 'x', not {mode!r}")
        if metric not in METRICS:
            raise InvalidArgumentError(f"metric must be one of {METRICS}, not {metric!r}")
        if dim is not None and (not is_id(dim) or not 0 < dim <= (1 << 20)):
            raise InvalidArgumentError(f"dim must be a positive integer, got {dim!r}")
        opts = dict(DEFAULT_OPTIONS)
        opts.update(options)
        check_options(opts)
        self._closed = True
        self._wlock = threading.RLock()
        self._rw = RWLock()
        self._read = ReadLock(self._rw)
        self._excl = ExclusiveLock(self._rw)
        self._txn_owner = None
        self._staged: Staged | None = None
        self._stxn = None
        self._levels: list[list] = []
        self._txn_stack: list[Transaction] = []
        self._txn_failed = None
        self._rows_put = 0
        # an embedder given by spec is loaded now (the caller asked for it); the one a
        # database was built with is loaded on first use (opening stays fast)
        self._embedder = (_embedders.get_embedder(opts["embedder"])
                          if isinstance(opts["embedder"], str) else opts["embedder"])
        self._batch_size = int(opts["batch_size"])
        self._progress = opts["progress"]
        self._cache_size = int(opts["cache_size"])
        self._memory = isinstance(path, str) and path == MEMORY
        self._path = None if self._memory else path
        try:
            self._store = Store.open(MEMORY if self._memory else path, mode, timeout=timeout,
                                     durability=opts["durability"])
        except FileNotFoundError as e:
            cls = getattr(_errors, "DatabaseNotFoundError", None)
            if cls is not None and not isinstance(e, cls):
                raise cls(f"no database at {path!r} (mode 'r' does not create one)") from None
            raise
        except FileExistsError as e:
            cls = getattr(_errors, "DatabaseExistsError", None)
            if cls is not None and not isinstance(e, cls):
                raise cls(f"{path!r} exists (mode 'x' creates a new database only)") from None
            raise
        self._closed = False
        try:
            self._init_meta(dim, metric, opts, mode)
        except BaseException:
            self._store.close()
            self._closed = True
            raise
        self._reset_caches()

    # ------------------------------------------------------------------ set-up

    def _init_meta(self, dim, metric, opts, mode):
        s = self._store
        meta = s.meta.get("sutradb")
        if meta is None:
            if s.n_rows:
                raise _errors.CorruptDatabaseError(f"{self._path}: rows but no sutradb database meta")
            if self._embedder is not None and dim is None:
                dim = int(self._embedder.dim)
            meta = {"format": FORMAT, "version": FORMAT_VERSION, "dim": int(dim or 0),
                    "metric": str(metric), "next_id": 0}
            if self._embedder is not None:
                meta["embedder"] = {"name": str(self._embedder.name),
                                    "dim": int(self._embedder.dim)}
            meta.update({k: opts[k] for k in STORED})
            if mode != "r":
                with self._excl:
                    t = s.begin()
                    t.set_meta({"sutradb": meta})
                    t.commit()
        else:
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise _errors.CorruptDatabaseError(f"{self._path}: not a sutradb database meta")
            if meta.get("version") != FORMAT_VERSION:
                raise _errors.CorruptDatabaseError(f"{self._path}: unsupported version {meta.get('version')!r}")
            if dim is not None and meta["dim"] and dim != meta["dim"]:
                raise DimensionError(f"the database has dimension {meta['dim']}, not {dim}")
            if not isinstance(metric, DefaultStr) and metric != meta["metric"]:
                raise InvalidArgumentError(f"the database uses metric {meta['metric']!r}, not {metric!r}")
            given = {k for k in STORED if k in opts and opts[k] != DEFAULT_OPTIONS[k]}
            if "vector_dtype" in given and opts["vector_dtype"] != meta["vector_dtype"]:
                raise InvalidArgumentError(f"the database keeps vectors as {meta['vector_dtype']!r}")
            meta = dict(meta)
            # session overrides of tuning options (not persisted)
            for k in given - {"vector_dtype"}:
                meta[k] = opts[k]
        if self._embedder is not None and meta["dim"] and self._embedder.dim != meta["dim"]:
            raise EmbedderError(f"the embedder makes {self._embedder.dim}-d vectors, the database "
                                f"holds {meta['dim']}-d ones")
        built = meta.get("embedder")
        if self._embedder is not None and built and built.get("name") != self._embedder.name:
            raise EmbedderError(
                f"the database was built with the embedder {built.get('name')!r}; mixing in "
                f"vectors of {self._embedder.name!r} would make distances meaningless. Open it "
                f"without embedder= (the stored one is used) or with that one")
        self._meta = meta
        self._index = self._load_index()
        self._store.on_renumber = self._remap_index

    def _opt(self, name):
        """An option of this session (stored with the database, or the default for
        databases made before it existed)."""
        return self._meta.get(name, DEFAULT_OPTIONS[name])

    def _load_index(self, lazy: bool = True) -> VectorIndex:
        """The vector index as stored: the quantizer and the IVF lists (views of the
        mapped index file; with ``lazy`` decoded and checked on first use)."""
        s = self._store
        blob = s.index_blob
        pq = part = None
        if blob is not None:
            pq, part = decode_index(blob, s.index_arrays, f"{self._path or MEMORY}: index",
                                    s.n_rows, lazy=lazy)
            if s.code_size != pq.code_size:
                raise _errors.CorruptDatabaseError(f"{self._path}: codes do not match the index")
        return VectorIndex(self._meta["dim"], self._meta["metric"], pq, part)

    def _reset_caches(self):
        """Forget every derived structure (they are rebuilt lazily)."""
        self._ccache: dict[int, tuple] = {}     # id -> (key, text, metadata) decoded
        self._kcache: dict[str, int] = {}       # key -> id, confirmed against _ccache
        self._rowmap: dict[int, int] | None = None
        self._records = RecordIndexes()         # key / metadata / word indexes
        self._row_caches()

    def _row_caches(self, renumbered: bool = False):
        """Forget structures tied to the stored arrays (rebuilt lazily); with
        ``renumbered`` (compaction, retraining) also the id -> row map."""
        if renumbered:
            self._rowmap = None
        self._flat: FlatVectors | None = None
        self._dtable = NO_TABLE       # distance(): rebuilt on first use
        self._rstate = None        # (rowmap, vectors): the lock-free get() path

    # ------------------------------------------------------------------ properties

    @property
    def path(self):
        """The database directory (None for ``":memory:"``)."""
        return self._store.path

    @property
    def mode(self) -> str:
        return self._store.mode

    @property
    def dim(self) -> int | None:
        """Dimension of the vectors (None until fixed)."""
        return self._meta["dim"] or None

    @property
    def metric(self) -> str:
        return self._meta["metric"]

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def read_only(self) -> bool:
        return self._store.mode == "r"

    @property
    def embedder_name(self) -> str | None:
        """Name of the embedder the database was built with (or was given), without
        loading it."""
        if self._embedder is not None:
            return str(self._embedder.name)
        built = self._meta.get("embedder")
        return built.get("name") if built else None

    @property
    def embedder(self):
        """The embedder of text queries and :meth:`add`: the one given to :func:`open`,
        else the one the database was built with (loaded on first use), else None."""
        if self._embedder is None:
            built = self._meta.get("embedder") if not self._closed else None
            if built:
                try:
                    self._embedder = _embedders.get_embedder(built["name"])
                except EmbedderError as e:
                    raise EmbedderError(
                        f"the database was built with the embedder {built['name']!r}, which "
                        f"cannot be loaded here ({e}); pass embedder=<the same embedder> to "
                        f"sutradb.open") from None
        return self._embedder

    def __repr__(self):
        if self._closed:
            return "<sutradb.Database closed>"
        return (f"<sutradb.Database {self._store.path or MEMORY!r} mode={self.mode!r} "
                f"{len(self)} concepts dim={self.dim} metric={self.metric!r} "
                f"index={self.index_info['kind']}>")

    # ------------------------------------------------------------------ checks

    def _check_open(self):
        if self._closed:
            raise ClosedError("the database is closed")

    def _check_writable(self):
        if self._closed:
            raise ClosedError("the database is closed")
        if self._store.mode == "r":
            raise ReadOnlyError("the database is open read-only (mode 'r')")

    # ------------------------------------------------------------------ id resolution

    def _committed_key(self, key) -> int | None:
        f = getattr(self._store, "id_for_key", None)
        if f is not None:
            return f(key)
        return self._key_index().get(key)

    def _key_index(self) -> dict:
        r = self._records
        if r.keys is None:
            with self._read:
                r.build_keys(self._store)
        return r.keys

    def _id_of(self, x, staged: Staged | None = None) -> int:
        """The id of an id or key that exists (staged state first); NotFoundError."""
        if isinstance(x, str):
            if staged is not None and x in staged.keys:
                i = staged.keys[x]
                if i is None:
                    raise NotFoundError(f"key {x!r} is not in the database")
                return i
            i = self._committed_key(x)
            if i is None or (staged is not None and self._staged_gone(staged, i)):
                raise NotFoundError(f"key {x!r} is not in the database")
            return int(i)
        if not is_id(x):
            raise InvalidArgumentError(f"an id must be an int (or a key: str), not {type(x).__name__}")
        i = int(x)
        if not self._exists(i, staged):
            raise NotFoundError(f"id {i} is not in the database")
        return i

    @staticmethod
    def _staged_gone(staged, i):
        return i in staged.over and staged.over[i] is None

    def _exists(self, i: int, staged: Staged | None) -> bool:
        if staged is not None:
            if i in staged.over:
                return staged.over[i] is not None
            if staged.bulk_of(i) is not None:
                return True
        return i in self._row_map()

    def _current(self, i: int, staged: Staged | None):
        """(key, text, metadata, vector or None, codes or None) of an existing id."""
        if staged is not None:
            if i in staged.over:
                rec = staged.over[i]
                return rec[0], rec[1], rec[2], rec[3], None
            b = staged.bulk_of(i)
            if b is not None:
                k, t, m, v = b.record(i - b.start)
                return k, t, m, v, None
        with self._read:
            s = self._store
            row = int(s.rows_of([i])[0])
            if row < 0:
                raise NotFoundError(f"id {i} is not in the database")
            r = s.record_at(row)
            v = s.vectors[row] if s.vectors is not None else None
            c = s.codes[row] if s.code_size else None
            return r.key, r.text, r.metadata, v, c

    # ------------------------------------------------------------------ writes

    def add_vectors(self, vectors, *, texts=None, metadata=None, keys=None) -> np.ndarray:
        """Add concepts from their vectors.

        Parameters
        ----------
        vectors : (n, dim) array_like
            Finite numbers; the first vectors of a database fix its ``dim``.
        texts : sequence of (str or None), optional
            One per vector (indexed for :meth:`find_words` and ``$text`` filters).
        metadata : sequence of (dict or None), optional
            One per vector; msgpack types with str keys.
        keys : sequence of (str or None), optional
            Unique keys (a :class:`~sutradb.errors.DuplicateKeyError` if one is taken).

        Returns
        -------
        (n,) int64 ndarray
            The new ids (increasing, never reused).

        Raises
        ------
        DimensionError, InvalidArgumentError, DuplicateKeyError, ReadOnlyError, ClosedError
            Nothing is added.
        """
        self._check_writable()
        with self._Auto(self) as st:
            V = check_vector_rows(vectors, st.meta["dim"], self._meta["vector_dtype"] == "float16")
            n = V.shape[0]
            texts = seq_arg(texts, n, "texts")
            metadata = seq_arg(metadata, n, "metadata")
            keys = seq_arg(keys, n, "keys")
            if n == 0:
                return np.zeros(0, np.int64)
            if texts is not None:
                for t in texts:
                    if t is not None and not isinstance(t, str):
                        raise InvalidArgumentError(f"a text must be a str or None, not {type(t).__name__}")
            if metadata is not None:
                metadata = [check_metadata(m) for m in metadata]
                if all(m is None for m in metadata):
                    metadata = None
            if keys is not None:
                self._check_new_keys(keys, st)
            if not st.meta["dim"]:
                st.meta["dim"] = int(V.shape[1])
            if st.pq is None and self._meta["vector_dtype"] is None:
                self._codes_for(np.asarray(V, dtype=np.float32), st)   # trains on this batch
            start = st.next_id
            ids = np.arange(start, start + n, dtype=np.int64)
            vd = self._meta["vector_dtype"]
            for s0 in range(0, n, BATCH):
                sl = slice(s0, s0 + BATCH)
                blk = np.ascontiguousarray(V[sl], dtype=np.float32)
                kw = {"keys": keys[sl] if keys is not None else None,
                      "texts": texts[sl] if texts is not None else None,
                      "metadata": metadata[sl] if metadata is not None else None,
                      "codes": self._codes_for(blk, st),
                      "vectors": blk.astype(vd) if vd is not None else None}
                self._emit(("put", (ids[sl],), kw))
            st.next_id = start + n
            st.meta["next_id"] = st.next_id
            st.bulks.append(Bulk(start, n, V, keys, texts, metadata))
            st.starts.append(start)
            if keys is not None:
                for j, k in enumerate(keys):
                    if k is not None:
                        st.keys[k] = start + j
            return ids

    def add(self, texts, *, metadata=None, keys=None, batch_size: int | None = None,
            progress=None) -> np.ndarray:
        """Learn concepts from texts: embed them with the database's embedder (in
        batches) and add them, all in one transaction.

        Parameters
        ----------
        texts : sequence of str
        metadata, keys : sequences, optional
            As in :meth:`add_vectors`.
        batch_size : int, optional
            Texts per embedder call (default: the ``batch_size`` option, 256).
            Identical texts in a call are embedded once. Texts go in windows of 16
            batches; inside a window they are embedded longest first, so that each
            batch pads little (what sentence-transformers does inside one call), and
            each window is stored as soon as it is embedded. Without a progress bar a
            window is one embedder call.
        progress : bool or callable, optional
            A progress bar (count, throughput, ETA) on stderr; by default shown when
            stderr is a terminal and the call has more than one batch. A callable is
            called as ``progress(done, total)`` after each batch.

        Returns
        -------
        (n,) int64 ndarray
            The new ids. The call is one transaction: on any error nothing is added.

        Raises
        ------
        EmbedderError
            No embedder (give ``embedder=`` to :func:`open`), or it failed.
        """
        if isinstance(texts, str):
            raise InvalidArgumentError("add takes a list of texts (wrap a single text in a list)")
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise InvalidArgumentError(f"texts must be str, not {type(t).__name__}")
        n = len(texts)
        metadata = None if metadata is None else seq_arg(metadata, n, "metadata")
        keys = None if keys is None else seq_arg(keys, n, "keys")
        emb = self._require_embedder()
        step = int(batch_size or self._batch_size)
        if step < 1:
            raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size!r}")
        bar = progress_bar(progress, n, step)
        out = np.empty(n, dtype=np.int64)
        try:
            with self.transaction():
                with self._Auto(self) as st:
                    if st is not None and not st.meta.get("embedder"):
                        st.meta["embedder"] = {"name": str(emb.name), "dim": int(emb.dim)}
                # Windows of 16 batches: inside one, the distinct texts are embedded
                # in order of length (as sentence-transformers does inside one call),
                # so batches carry little padding; then the window is stored.
                window = 16 * step
                for w0 in range(0, n, window):
                    chunk = texts[w0:w0 + window]
                    uniq = list(dict.fromkeys(chunk))
                    order = sorted(range(len(uniq)), key=lambda j: -len(uniq[j]))
                    Vu = np.empty((len(uniq), emb.dim), dtype=np.float32)
                    # without progress to show, the window is one embedder call
                    bstep = step if bar is not None else max(1, len(order))
                    for b0 in range(0, len(order), bstep):
                        sel = order[b0:b0 + bstep]
                        Vu[sel] = _embedders.embed(emb, [uniq[j] for j in sel])
                        if bar is not None and b0 + bstep < len(order):
                            # texts of the window covered so far, in proportion
                            bar(w0 + (b0 + len(sel)) * len(chunk) // len(uniq), n)
                    if len(uniq) < len(chunk):
                        pos = {t: j for j, t in enumerate(uniq)}
                        Vu = Vu[[pos[t] for t in chunk]]
                    out[w0:w0 + len(chunk)] = self.add_vectors(
                        Vu, texts=chunk,
                        metadata=None if metadata is None else metadata[w0:w0 + window],
                        keys=None if keys is None else keys[w0:w0 + window])
                    if bar is not None:
                        bar(w0 + len(chunk), n)
        finally:
            if bar is not None:
                bar(None, n)
        return out

    def _require_embedder(self):
        emb = self.embedder
        if emb is None:
            raise EmbedderError(
                "this database has no embedder: pass vectors, or open it with embedder="
                f"{_embedders.default_spec()!r} (or 'spacy:<pipeline>', or an object with "
                ".name, .dim and __call__(texts))")
        return emb

    def _embed(self, texts, emb=None) -> np.ndarray:
        """Vectors of ``texts``; identical texts are embedded once."""
        emb = emb if emb is not None else self._require_embedder()
        for t in texts:
            if not isinstance(t, str):
                raise InvalidArgumentError(f"texts must be str, not {type(t).__name__}")
        uniq = list(dict.fromkeys(texts))
        V = _embedders.embed(emb, uniq)
        if len(uniq) == len(texts):
            return V
        where = {t: i for i, t in enumerate(uniq)}
        return V[[where[t] for t in texts]]

    def _check_new_keys(self, keys, st, owners=None):
        seen = set()
        for j, k in enumerate(keys):
            if k is None:
                continue
            if not isinstance(k, str):
                raise InvalidArgumentError(f"a key must be a str or None, not {type(k).__name__}")
            if k in seen:
                raise DuplicateKeyError(f"key {k!r} appears twice")
            seen.add(k)
            owner = owners[j] if owners is not None else None
            if k in st.keys:
                holder = st.keys[k]
            else:
                holder = self._committed_key(k)
                if holder is not None and self._staged_gone(st, holder):
                    holder = None
                if holder is not None and holder in st.over and st.over[holder][0] != k:
                    holder = None
            if holder is not None and holder != owner:
                raise DuplicateKeyError(f"key {k!r} is already taken (id {holder})")

    def update(self, id_or_key, *, text=UNSET, metadata=UNSET, vector=UNSET, key=UNSET) -> None:
        """Replace some fields of a concept (the others are kept).

        Parameters
        ----------
        id_or_key : int or str
        text : str or None, optional
        metadata : dict or None, optional
            Replaces the whole metadata dict.
        vector : (dim,) array_like, optional
        key : str or None, optional

        Raises
        ------
        NotFoundError, DimensionError, InvalidArgumentError, DuplicateKeyError
            Nothing changes.
        """
        self._check_writable()
        with self._Auto(self) as st:
            i = self._id_of(id_or_key, st)
            k0, t0, m0, v0, c0 = self._current(i, st)
            if text is not UNSET and text is not None and not isinstance(text, str):
                raise InvalidArgumentError(f"a text must be a str or None, not {type(text).__name__}")
            md = m0 if metadata is UNSET else (check_metadata(metadata) or {})
            if key is not UNSET:
                self._check_new_keys([key], st, owners=[i])
            V = None if vector is UNSET else np.asarray(
                check_vector_rows(vector, st.meta["dim"], self._meta["vector_dtype"] == "float16",
                                  "vector", one=True), dtype=np.float32)
            new_key = k0 if key is UNSET else key
            new_text = t0 if text is UNSET else text
            vd = self._meta["vector_dtype"]
            if V is not None:
                vec32 = V[0]
            elif v0 is not None:
                vec32 = np.asarray(v0, dtype=np.float32)
            else:
                vec32 = None
            if V is not None or c0 is None:
                codes = (self._codes_for(vec32[None, :], st)
                         if vec32 is not None and st.pq is not None else None)
                if st.pq is not None and codes is None:  # pragma: no cover - defensive
                    raise SutraError("cannot encode the concept")
            else:
                codes = c0[None, :] if st.pq is self._index.pq else st.pq.encode(vec32[None, :])
            kw = {"keys": [new_key], "texts": [new_text], "metadata": [md or None],
                  "codes": codes,
                  "vectors": vec32[None, :].astype(vd) if vd is not None else None}
            self._emit(("put", (np.array([i], np.int64),), kw))
            if k0 is not None and k0 != new_key:
                st.keys[k0] = None
            if new_key is not None:
                st.keys[new_key] = i
            st.over[i] = (new_key, new_text, md or {}, vec32)

    def delete(self, ids) -> None:
        """Delete concepts (ids or keys; one or a sequence) and their links.

        Raises
        ------
        NotFoundError
            One of them does not exist: nothing is deleted.
        """
        self._check_writable()
        with self._Auto(self) as st:
            if isinstance(ids, (str, int, np.integer)):
                ids = [ids]
            elif isinstance(ids, np.ndarray):
                ids = ids.ravel().tolist()
            todo = []
            for x in ids:
                i = self._id_of(x, st)
                todo.append(i)
            if not todo:
                return
            recs = [(i, self._current(i, st)[0]) for i in dict.fromkeys(todo)]
            self._emit(("delete", (np.array([i for i, _ in recs], np.int64),), {}))
            for i, k in recs:
                st.over[i] = None
                if k is not None:
                    st.keys[k] = None
                for key in [lk for lk in st.links if lk[0] == i or lk[1] == i]:
                    st.links[key] = None

    def link(self, a, b, relation: str, weight: float = 1.0) -> None:
        """Add (or re-weight) the directed link ``a -[relation]-> b``.

        ``a`` and ``b`` are ids or keys of existing concepts (NotFoundError otherwise).
        Deleting either concept removes the link.
        """
        self._check_writable()
        check_relation(relation)
        w = check_weight(weight)
        with self._Auto(self) as st:
            ia, ib = self._id_of(a, st), self._id_of(b, st)
            self._emit(("link", (ia, ib, relation, w), {}))
            st.links[(ia, ib, relation)] = w

    def unlink(self, a, b, relation: str | None = None) -> None:
        """Remove the link ``a -[relation]-> b`` (every relation from ``a`` to ``b``
        when ``relation`` is None). Absent links are ignored."""
        self._check_writable()
        if relation is not None:
            check_relation(relation)
        with self._Auto(self) as st:
            ia, ib = self._id_of(a, st), self._id_of(b, st)
            if relation is not None:
                rels = [relation]
            else:
                with self._read:
                    rels = {r for d, r, _ in self._store.links_from(ia) if d == ib}
                rels |= {k[2] for k in st.links if k[0] == ia and k[1] == ib}
                rels = sorted(rels)
            for r in rels:
                self._emit(("unlink", (ia, ib, r), {}))
                st.links[(ia, ib, r)] = None

    # ------------------------------------------------------------------ reads

    def __len__(self) -> int:
        self._check_open()
        return self._store.n_live

    def __contains__(self, x) -> bool:
        if self._closed:
            raise ClosedError("the database is closed")
        if isinstance(x, str):
            with self._read:
                return self._committed_key(x) is not None
        if not is_id(x):
            return False
        with self._read:
            return int(x) in self._row_map()

    def __iter__(self) -> Iterator[int]:
        """The ids of the concepts (a snapshot, in storage order)."""
        self._check_open()
        with self._read:
            ids = self._store.live_ids()
        return iter(ids.tolist())

    def ids(self) -> np.ndarray:
        """The ids of the concepts, sorted (int64)."""
        self._check_open()
        with self._read:
            return np.sort(self._store.live_ids())

    def get(self, id_or_key) -> Concept:
        """The concept with this id (int) or key (str).

        Raises
        ------
        NotFoundError
            (a ``KeyError``) it does not exist.
        """
        st = self._rstate
        if st is not None and type(id_or_key) is str:
            # a key seen before: trusted only if the cached record of its id still
            # holds that key (commits refresh or drop the records they change)
            i = self._kcache.get(id_or_key)
            if i is not None:
                rec = self._ccache.get(i)
                if rec is not None and rec[0] == id_or_key:
                    id_or_key = i
        if st is not None and type(id_or_key) is int:
            # the record before the row: a commit drops the records it changes before
            # it moves their rows, so a record found here is the version of the row
            # found next, or that row is beyond ``st``'s vectors (IndexError below)
            rec = self._ccache.get(id_or_key)
            row = st[0].get(id_or_key)
            if row is not None and rec is not None:
                vecs = st[1]
                try:
                    v = vecs[row] if vecs is not None else None
                except IndexError:      # a commit is updating the row map right now
                    v = UNSET
                if v is not UNSET:
                    md = rec[2]
                    return new_concept(Concept, (id_or_key, rec[0], rec[1], (
                        copy.deepcopy(md) if rec[3] else dict(md)) if md else {}, v))
        self._check_open()
        with self._read:
            if isinstance(id_or_key, str):
                i = self._committed_key(id_or_key)
                if i is None:
                    raise NotFoundError(f"key {id_or_key!r} is not in the database")
            elif is_id(id_or_key):
                i = int(id_or_key)
            else:
                raise InvalidArgumentError(f"get takes an id (int) or a key (str), not "
                                           f"{type(id_or_key).__name__}")
            st = self._rstate or self._build_rstate()
            row = st[0].get(i)
            if row is None:
                raise NotFoundError(f"id {i} is not in the database")
            c = self._concept_at(row)
            # cached under the read lock: a commit between the read and the caching
            # would find nothing to drop, and the old record would stay cached
            if self._cache_size:
                cc = self._ccache
                if len(cc) >= self._cache_size:
                    try:
                        del cc[next(iter(cc))]
                    except (StopIteration, KeyError, RuntimeError):
                        pass
                cc[c.id] = (c.key, c.text, c.metadata, nested(c.metadata))
                if c.key is not None:
                    kc = self._kcache
                    if len(kc) >= self._cache_size:
                        try:
                            del kc[next(iter(kc))]
                        except (StopIteration, KeyError, RuntimeError):
                            pass
                    kc[c.key] = c.id
        md = c.metadata
        return Concept(c.id, c.key, c.text,
                       (copy.deepcopy(md) if nested(md) else dict(md)) if md else {}, c.vector)

    def _row_map(self) -> dict:
        """id -> live row (built once, then kept up to date at each commit)."""
        rm = self._rowmap
        if rm is None:
            s = self._store
            live_rows = np.flatnonzero(s.live)
            rm = self._rowmap = dict(zip(s.ids[live_rows].tolist(), live_rows.tolist()))
        return rm

    def _build_rstate(self):
        st = self._rstate = (self._row_map(), self._store.vectors)
        return st

    def get_many(self, ids) -> list[Concept]:
        """:meth:`get` for several ids or keys."""
        return [self.get(x) for x in ids]

    def get_vectors(self, ids) -> np.ndarray:
        """The stored vectors of several concepts at once, without their texts and
        metadata (one read from the vector file; ``get`` per id costs ~16 us each).

        Parameters
        ----------
        ids : sequence of int
            Concept ids (committed), in any order; repeats allowed.

        Returns
        -------
        (len(ids), dim) ndarray
            A copy, in the stored dtype (``vector_dtype``), row i the vector of
            ``ids[i]``.

        Raises
        ------
        NotFoundError
            An id is not in the database.
        InvalidArgumentError
            The ids are not integers, or the database keeps no vectors
            (``vector_dtype=None``).
        """
        self._check_open()
        with self._read:
            return np.array(self._store.get_vectors(ids))

    def _concept_at(self, row: int) -> Concept:
        s = self._store
        r = s.record_at(row)
        vecs = s.vectors
        return Concept(r.id, r.key, r.text, r.metadata, vecs[row] if vecs is not None else None)

    # ------------------------------------------------------------------ links

    def neighbors(self, a, relation: str | None = None, direction: str = "out") -> list[Link]:
        """Links of a concept: ``[Link(id, relation, weight), ...]`` sorted by relation
        then id. ``direction``: "out" (``id`` = destination), "in" (``id`` = source)
        or "both" (out first)."""
        self._check_open()
        if direction not in DIRECTIONS:
            raise InvalidArgumentError(f"direction must be one of {DIRECTIONS}")
        with self._read:
            s = self._store
            i = int(a) if is_id(a) and int(a) in self._row_map() else self._id_of(a)
            if direction == "out":
                return as_links(s.links_from(i, relation))
            if direction == "in":
                return as_links(s.links_to(i, relation))
            return as_links(s.links_from(i, relation)) + as_links(s.links_to(i, relation))

    def links(self) -> list[tuple[int, int, str, float]]:
        """Every link ``(src, dst, relation, weight)``, sorted."""
        self._check_open()
        with self._read:
            return self._store.all_links()

    # ------------------------------------------------------------------ maintenance

    def verify(self) -> dict:
        """Check every file (checksums, structure) and the database's own invariants
        (meta, index, ids). Returns counts; raises CorruptDatabaseError."""
        self._check_open()
        with self._wlock, self._read:
            out = dict(self._store.verify())
            s = self._store
            ids = s.live_ids()
            if len(ids) and int(ids.max()) >= self._meta["next_id"]:
                raise _errors.CorruptDatabaseError(f"{self._path}: an id is beyond the id counter")
            idx = self._load_index(lazy=False)
            pq, part = idx.pq, idx.ivf
            if pq is None and s.code_size and self._meta["vector_dtype"] is not None:
                raise _errors.CorruptDatabaseError(f"{self._path}: codes without an index")
            if part is not None:
                # every live row below `covered` is in exactly one list, with its codes
                perm = part.ivf.perm
                live = s.live
                c = part.covered
                if np.bincount(perm, minlength=c).max(initial=0) > 1:
                    raise _errors.CorruptDatabaseError(f"{self._path}: a row is in two IVF lists")
                inl = np.zeros(c, bool)
                inl[perm] = True
                if (live[:c] & ~inl).any():
                    raise _errors.CorruptDatabaseError(f"{self._path}: live rows missing from the IVF lists")
                for s0 in range(0, len(perm), BATCH):
                    p = perm[s0:s0 + BATCH]
                    if not np.array_equal(code_rows(part.codes, s0, s0 + BATCH), s.codes[p]):
                        raise _errors.CorruptDatabaseError(f"{self._path}: IVF list codes differ "
                                                           "from the stored codes")
            out["index"] = "flat" if pq is None else ("ivf" if part is not None else "pq")
            out["concepts"] = len(ids)
            return out

    def compact(self) -> None:
        """Rewrite the live concepts into fresh files (dropping old versions and
        deleted concepts). Not inside a transaction."""
        self._check_writable()
        with self._wlock:
            if self._staged is not None:
                raise InvalidArgumentError("compact cannot run inside a transaction")
            with self._excl:
                self._store.compact()
                self._index = self._load_index()
                self._row_caches(renumbered=True)

    def refresh(self) -> bool:
        """Read-only databases: move to the latest committed state of the writer."""
        self._check_open()
        with self._excl:
            changed = self._store.refresh()
            if changed:
                self._meta = dict(self._store.meta.get("sutradb") or self._meta)
                self._index = self._load_index()
                self._reset_caches()
        return changed

    def close(self) -> None:
        """Roll back an open transaction and close the files (idempotent)."""
        if self._closed:
            return
        with self._wlock:
            if self._closed:
                return
            held = len(self._txn_stack) if self._txn_owner == threading.get_ident() else 0
            with self._excl:
                try:
                    if self._stxn is not None:
                        self._stxn.rollback()
                    self._store.close()
                finally:
                    self._closed = True
                    self._staged = self._stxn = None
                    self._levels = []
                    self._txn_stack = []
                    self._ccache = {}
                    self._rstate = None
                    self._dtable = NO_TABLE       # distance(): rebuilt on first use
                    self.__dict__.pop("distance", None)
                    self._flat = None
                    # the index's mapped arrays (IVF lists) go with the files
                    self._index = VectorIndex(self._meta.get("dim"), self._meta.get("metric"))
                    self._txn_owner = None
                    for _ in range(held):      # locks taken by transactions left open
                        self._wlock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):  # pragma: no cover - best effort
        try:
            if not self._closed and self._staged is None:
                self.close()
        except Exception:
            pass
