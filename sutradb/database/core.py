"""The :class:`Database` and :func:`open`: opening, the options and stored meta of
a session, the locks and the database's shared state, ``verify``, ``compact``,
``refresh``, ``close``.

:class:`Database` is composed of mixins, one per concern, each in its module
(:mod:`.concepts`, :mod:`.links`, :mod:`.search`, :mod:`.indexing`,
:mod:`.transactions`); this module creates the state they share (store, meta,
vector index, locks, caches) and resets it. See ``docs/architecture.md``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from .. import errors as _errors
from ..errors import (ClosedError, DimensionError, EmbedderError, InvalidArgumentError,
                      ReadOnlyError)
from ..index.flat import FlatVectors
from ..index.vector import VectorIndex, code_rows, decode_index
from ..storage import Store
from ..text import check_spec
from .arrow import ArrowMixin
from .concepts import ConceptsMixin
from .writes import WritesMixin
from .exchange import ExchangeMixin
from .indexing import IndexingMixin
from .links import LinksMixin
from .listing import ListingMixin
from .locking import ExclusiveLock, ReadLock, RWLock
from .options import (BATCH, DEFAULT_METRIC, DEFAULT_OPTIONS, FORMAT, FORMAT_VERSION, MEMORY,
                      METRICS, STORED, DefaultStr)
from .recordindex import RecordIndexes
from .distances import NO_TABLE, DistancesMixin
from .search import SearchMixin
from .transactions import Staged, Transaction, TransactionsMixin
from .validation import check_options, is_id
from .. import embedders as _embedders

if TYPE_CHECKING:
    import numpy.typing as npt

    from ..embedders import Embedder

__all__ = ["open", "tune", "Database"]


# --------------------------------------------------------------------------- open

def open(path: str | os.PathLike[str], mode: str = "a", *, dim: int | None = None,
         metric: str = DEFAULT_METRIC, timeout: float = 0.0, recover: bool = False,
         **options: Any) -> "Database":
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
    recover : bool
        Open a damaged database as far as it is intact, read-only (``mode="r"`` only):
        a log cut short or damaged part-way is read to its last intact transaction
        instead of raising :class:`~sutradb.errors.CorruptDatabaseError`, and
        :attr:`Database.recovery` says what was lost (``sutradb recover``).
    **options
        ``vector_dtype`` ("float16" default, "float32", or None to keep only PQ
        codes), ``index_threshold`` (10,000: concepts that trigger PQ training),
        ``ivf_threshold`` (10,000: concepts that trigger the IVF lists),
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
    return Database(path, mode, dim=dim, metric=metric, timeout=timeout, recover=recover,
                    **options)


def tune(db: "Database", queries: npt.ArrayLike | Sequence[str], target_recall: float | None = None,
         **kwargs: Any) -> dict[str, Any]:
    """Pick ``nprobe`` / ``rerank`` for ``target_recall`` on your own queries:
    :meth:`Database.tune`."""
    return db.tune(queries, target_recall=target_recall, **kwargs)


class Database(WritesMixin, ConceptsMixin, ListingMixin, LinksMixin, SearchMixin, DistancesMixin,
               IndexingMixin, TransactionsMixin, ArrowMixin, ExchangeMixin):
    """A sutradb database. Create with :func:`sutradb.open`.

    See :mod:`sutradb.database` for the data model, the index lifecycle, transactions
    and thread safety.
    """

    def __init__(self, path: str | os.PathLike[str], mode: str = "a", *, dim: int | None = None,
                 metric: str = DEFAULT_METRIC, timeout: float = 0.0, recover: bool = False,
                 **options: Any) -> None:
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
        self._levels: list[list[Any]] = []
        self._txn_stack: list[Transaction] = []
        self._txn_failed = None
        self._rows_put = 0
        self._index_due = False         # index upkeep left due by a commit (indexing.py)
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
                                     durability=opts["durability"], recover=recover,
                                     create_params={"text": opts["text_tokenizer"]})
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

    def _init_meta(self, dim: int | None, metric: str, opts: dict[str, Any], mode: str) -> None:
        """Create the database meta (a new database) or check the stored one against
        the arguments (session overrides of tuning options applied, not stored); load
        the vector index and hook the index into the store's compactions."""
        s = self._store
        tok = opts["text_tokenizer"]
        if tok is not None and check_spec(tok) != s.text_spec:
            raise InvalidArgumentError(f"{self._path}: the database's text tokenizer is "
                                       f"{s.text_spec} (set when it was created), not {check_spec(tok)}")
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

    def _opt(self, name: str) -> Any:
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

    def _reset_caches(self) -> None:
        """Forget every derived structure (they are rebuilt lazily)."""
        self._ccache: dict[int, tuple[Any, ...]] = {}     # id -> (key, text, metadata) decoded
        self._kcache: dict[str, int] = {}       # key -> id, confirmed against _ccache
        self._seen = bytearray()                # rows get() read once (cache admission)
        self._rowmap: dict[int, int] | None = None
        self._records = RecordIndexes()         # key / metadata / word indexes
        self._row_caches()

    def _row_caches(self, renumbered: bool = False) -> None:
        """Forget structures tied to the stored arrays (rebuilt lazily); with
        ``renumbered`` (compaction, retraining) also the id -> row map."""
        if renumbered:
            self._rowmap = None
        self._flat: FlatVectors | None = None
        self._dtable = NO_TABLE       # distance(): rebuilt on first use
        self._rstate = None        # (rowmap, vectors): the lock-free get() path

    # ------------------------------------------------------------------ properties

    @property
    def path(self) -> str | None:
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
        return cast(str, self._meta["metric"])

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
    def embedder(self) -> Embedder | None:
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

    def _require_embedder(self) -> Embedder:
        """:attr:`embedder`, or EmbedderError when there is none."""
        emb = self.embedder
        if emb is None:
            raise EmbedderError(
                "this database has no embedder: pass vectors, or open it with embedder="
                f"{_embedders.default_spec()!r} (or 'spacy:<pipeline>', or an object with "
                ".name, .dim and __call__(texts))")
        return emb

    def _embed(self, texts: Sequence[str], emb: Embedder | None = None) -> np.ndarray:
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

    def __repr__(self) -> str:
        if self._closed:
            return "<sutradb.Database closed>"
        return (f"<sutradb.Database {self._store.path or MEMORY!r} mode={self.mode!r} "
                f"{len(self)} concepts dim={self.dim} metric={self.metric!r} "
                f"index={self.index_info['kind']}>")

    # ------------------------------------------------------------------ checks

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the database is closed")

    def _check_writable(self) -> None:
        if self._closed:
            raise ClosedError("the database is closed")
        if self._store.mode == "r":
            raise ReadOnlyError("the database is open read-only (mode 'r')")

    # ------------------------------------------------------------------ maintenance

    @property
    def recovery(self) -> dict[str, Any] | None:
        """What an ``open(..., mode="r", recover=True)`` could not read (``problems``:
        messages naming the damaged file; ``intact_transaction``: the last transaction
        read; ``committed_transaction``: the last one the writer had committed, when
        known), or None when nothing was lost."""
        self._check_open()
        return self._store.recovery

    def verify(self) -> dict[str, Any]:
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
                perm = cast(np.ndarray, part.ivf.perm)     # decoded lists
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
            if self._staged is None:
                self._catch_up(wait=True)       # index upkeep the last commits left due
                if not self._memory and self._store.mode != "r":
                    try:
                        if self._text_due(1):   # the next open tokenises nothing
                            self._index_text()
                    except Exception as e:      # the commits stand; postings wait
                        import warnings
                        warnings.warn(f"sutradb: writing the term postings failed ({e!r}); "
                                      "text search tokenises those texts on first use",
                                      RuntimeWarning, stacklevel=2)
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
                    self._dtable = NO_TABLE
                    self._flat = None
                    # the index's mapped arrays (IVF lists) go with the files
                    self._index = VectorIndex(self._meta.get("dim"), self._meta.get("metric"))  # type: ignore[arg-type]  # a closed database's placeholder
                    self._txn_owner = None
                    for _ in range(held):      # locks taken by transactions left open
                        self._wlock.release()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.close()
        return False

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            if not self._closed and self._staged is None:
                self.close()
        except Exception:
            pass
