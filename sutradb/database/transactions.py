"""Transactions of a :class:`~sutradb.database.Database`: staging and commit.

Transactions
------------
Every write outside a transaction commits on its own. ``with db.transaction():``
groups writes atomically (commit on success, rollback on an exception); a nested
``transaction()`` is a savepoint. Reads inside a transaction see the last committed
state (writes become visible at commit); writes inside it are validated against the
staged state (an id added earlier in the transaction can be updated, linked,
deleted).

How
---
The outermost transaction holds the database's write lock and one store
transaction; each write validates against :class:`Staged` (what the transaction
has staged so far: rows, keys, links, meta, a quantizer trained inside it) and hands
its store operation to :meth:`TransactionsMixin._emit`. A savepoint buffers its
operations and forwards them to the level below when it is released (its rollback
restores the :class:`Staged` snapshot taken when it began). At the commit
(:meth:`TransactionsMixin._commit`) the store transaction commits under the
exclusive lock and the derived structures (row map, record caches, key, metadata
and word indexes, the vector index) are brought up to date before the lock is
released; then the index lifecycle notes what upkeep is due (:meth:`IndexingMixin._maybe_train
<sutradb.database.indexing.IndexingMixin._maybe_train>`), which runs on first use,
never inside the commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

import bisect
import threading
from types import TracebackType

import numpy as np

from ..errors import InvalidArgumentError, SutraError
from ..index.vector import VectorIndex
from .options import STORED

if TYPE_CHECKING:
    from ..index.pq import ProductQuantizer
    from ..storage.transaction import Transaction as StoreTransaction
    from .state import DatabaseState
    from .state import DatabaseState as _Base
else:
    _Base = object

__all__ = ["Bulk", "Staged", "Transaction", "AutoTransaction", "TransactionsMixin"]


class Bulk:
    """The rows of one ``add_vectors`` call staged in a transaction (references to
    the caller's sequences: no per-row objects)."""

    __slots__ = ("start", "n", "vectors", "keys", "texts", "metadata")

    def __init__(self, start: int, n: int, vectors: np.ndarray | None,
                 keys: Sequence[str | None] | None, texts: Sequence[str | None] | None,
                 metadata: Sequence[dict[str, Any] | None] | None) -> None:
        self.start, self.n = start, n
        self.vectors, self.keys, self.texts, self.metadata = vectors, keys, texts, metadata

    def record(self, i: int) -> tuple[str | None, str | None, dict[str, Any], np.ndarray | None]:
        """``(key, text, metadata, vector)`` of the batch's row ``i``."""
        return (self.keys[i] if self.keys is not None else None,
                self.texts[i] if self.texts is not None else None,
                (self.metadata[i] or {}) if self.metadata is not None else {},
                self.vectors[i] if self.vectors is not None else None)


class Staged:
    """What the open transaction has staged: used to validate later writes of the
    same transaction and to update the caches after the commit."""

    def __init__(self, meta: dict[str, Any], quantizer: ProductQuantizer | None) -> None:
        self.meta = dict(meta)
        self.next_id = meta["next_id"]
        self.bulks: list[Bulk] = []
        self.starts: list[int] = []
        self.over: dict[int, tuple[Any, ...] | None] = {}      # id -> (key, text, md, vector) / None
        self.keys: dict[str, int | None] = {}        # key -> id, None: freed
        self.links: dict[tuple[int, int, str], float | None] = {}   # (src, dst, rel) -> weight / None
        self.pq = quantizer                          # quantizer (may be trained in the txn)
        self.index_blob: bytes | None = None
        self.index_arrays: dict[str, Any] | None = None   # a whole index staged (IVF lists too)

    def snapshot(self) -> tuple[Any, ...]:
        """The state a savepoint restores on rollback (:meth:`restore`)."""
        return (dict(self.meta), self.next_id, len(self.bulks), dict(self.over), dict(self.keys),
                dict(self.links), self.pq, self.index_blob, self.index_arrays)

    def restore(self, s: tuple[Any, ...]) -> None:
        """Go back to a :meth:`snapshot` (the batches staged after it are dropped)."""
        (self.meta, self.next_id, nb, self.over, self.keys, self.links, self.pq,
         self.index_blob, self.index_arrays) = s
        del self.bulks[nb:]
        del self.starts[nb:]

    def bulk_of(self, id_: int) -> Bulk | None:
        """The staged :class:`Bulk` that added ``id_``, or None."""
        i = bisect.bisect_right(self.starts, id_) - 1
        if i >= 0:
            b = self.bulks[i]
            if id_ < b.start + b.n:
                return b
        return None


class Transaction:
    """A transaction (or, nested, a savepoint) on a :class:`Database`.

    Returned by :meth:`Database.transaction`, already begun. Use it as a context
    manager (commit on success, roll back on an exception) or call :meth:`commit` /
    :meth:`rollback` once. Transactions nest: an inner one is a savepoint whose
    rollback undoes only its own writes.
    """

    __slots__ = ("_db", "_depth", "_done", "_snap")

    def __init__(self, db: DatabaseState, depth: int, snap: tuple[Any, ...] | None) -> None:
        self._db, self._depth, self._done, self._snap = db, depth, False, snap

    @property
    def active(self) -> bool:
        return not self._done

    def commit(self) -> None:
        """Commit (outermost) or release the savepoint (nested)."""
        self._db._end(self, True)

    def rollback(self) -> None:
        """Discard every write of this transaction (or savepoint)."""
        self._db._end(self, False)

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if not self._done:
            if exc_type is None:
                self.commit()
            else:
                self._db._end(self, False)
        return False

    def __repr__(self) -> str:
        return f"<sutradb.Transaction depth={self._depth} {'done' if self._done else 'open'}>"


class AutoTransaction:
    """``with AutoTransaction(db) as staged``: a write joins the transaction this
    thread has open, or runs in its own one (committed on exit, rolled back on an
    exception). ``staged`` is the open transaction's :class:`Staged`."""

    __slots__ = ("db", "t")

    def __init__(self, db: DatabaseState) -> None:
        self.db = db
        self.t: Transaction | None = None

    def __enter__(self) -> Staged:
        db = self.db
        db._check_writable()
        if db._staged is not None and db._txn_owner == threading.get_ident():
            self.t = None
        else:
            self.t = db.transaction()
        return cast(Staged, db._staged)        # open now

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if self.t is not None:
            self.t.__exit__(exc_type, exc, tb)
        return False


class TransactionsMixin(_Base):
    """The transaction methods of :class:`~sutradb.database.Database` (begin, end,
    commit, the bookkeeping after a commit); a mixin: they read and replace the
    database's shared state (store, meta, index, caches) under its locks."""

    def transaction(self) -> Transaction:
        """Begin a transaction (a savepoint when one is already open in this thread).

        Returns
        -------
        Transaction
            A context manager: commits on success, rolls back on an exception.

        Examples
        --------
        >>> import numpy as np, sutradb
        >>> db = sutradb.open(":memory:", dim=2)
        >>> with db.transaction():
        ...     a, b = db.add_vectors(np.eye(2, dtype="float32"))
        ...     db.link(a, b, "next")
        >>> len(db), db.neighbors(a)
        (2, [Link(id=1, relation='next', weight=1.0)])
        """
        self._check_writable()
        self._wlock.acquire()
        try:
            self._check_writable()
            if self._staged is None:
                with self._excl:
                    self._stxn = self._store.begin()
                self._staged = Staged(self._meta, self._index.pq)
                self._rows_put = 0
                self._txn_owner = threading.get_ident()
                self._txn_failed = None
                t = Transaction(self, 1, None)
            else:
                self._levels.append([])
                t = Transaction(self, len(self._levels) + 1, self._staged.snapshot())
            self._txn_stack.append(t)
            return t
        except BaseException:
            self._wlock.release()
            raise

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open (in any thread)."""
        return self._staged is not None

    def _end(self, t: Transaction, ok: bool) -> None:
        if t._done:
            raise InvalidArgumentError("this transaction is already finished")
        if self._txn_owner != threading.get_ident():
            raise InvalidArgumentError("a transaction must be finished by the thread that began it")
        if not self._txn_stack or self._txn_stack[-1] is not t:
            raise InvalidArgumentError("finish the inner transaction (savepoint) first")
        self._txn_stack.pop()
        t._done = True
        try:
            if t._depth > 1:
                ops = self._levels.pop()
                if ok and self._txn_failed is None:
                    try:
                        for op in ops:
                            self._emit(op)
                    except BaseException as e:       # half forwarded: the outer one is lost
                        self._txn_failed = e
                        raise
                else:
                    self._staged.restore(t._snap)  # type: ignore[union-attr,arg-type]  # a savepoint: both set
                return
            # in a transaction: both are set
            staged, stxn = cast(Staged, self._staged), cast("StoreTransaction", self._stxn)
            self._staged = self._stxn = None
            self._levels = []
            self._txn_owner = None
            if ok and self._txn_failed is not None:
                with self._excl:
                    stxn.rollback()
                raise SutraError(f"the transaction failed earlier ({self._txn_failed}) and was "
                                 "rolled back")
            if not ok:
                with self._excl:
                    stxn.rollback()
                return
            self._commit(staged, stxn)
        finally:
            self._wlock.release()

    def _commit(self, staged: Staged, stxn: StoreTransaction) -> None:
        meta_changed = staged.meta != self._meta
        if staged.index_blob is not None:
            stxn.set_index(staged.index_blob, staged.index_arrays)
        if meta_changed:
            full = self._store.meta
            full["sutradb"] = self._persisted_meta(staged.meta)
            stxn.set_meta(full)
        with self._excl:
            n_before = self._store.n_rows
            stxn.commit()
            self._after_commit(staged, n_before)
        self._maybe_train()

    def _persisted_meta(self, meta: dict[str, Any]) -> dict[str, Any]:
        stored = self._store.meta.get("sutradb") or {}
        out = dict(meta)
        # session overrides of tuning options are not persisted
        for k in STORED:
            if k in stored:
                out[k] = stored[k]
        return out

    def _after_commit(self, staged: Staged, n_before: int) -> None:
        """Bring the derived structures up to date with what just committed."""
        self._meta = dict(staged.meta)
        if staged.index_arrays:
            # a whole index (quantizer and IVF lists) was committed with the rows
            # (a restore, :mod:`.exchange`): read it back as opening would
            self._index = self._load_index()
        elif staged.pq is not self._index.pq:
            self._index = VectorIndex(self._meta["dim"], self._meta["metric"], staged.pq)
        self._index.dim = self._meta["dim"]
        cc = self._ccache
        for i in staged.over:
            cc.pop(i, None)
        self._row_caches()
        s = self._store
        renumbered = s.n_rows != n_before + self._rows_put     # compacted by the checkpoint
        if renumbered and self._index.has_ivf:
            self._index = self._load_index()       # the lists were remapped in the swap
        rm = self._rowmap
        if rm is not None:
            if renumbered:
                self._rowmap = None
            else:
                touched = [np.fromiter(staged.over, np.int64, len(staged.over))]
                touched += [np.arange(b.start, b.start + b.n, dtype=np.int64) for b in staged.bulks]
                t = np.concatenate(touched) if touched else np.zeros(0, np.int64)
                if len(t) > max(1024, len(rm) // 4):
                    self._rowmap = None
                elif len(t):
                    rows = s.rows_of(t)
                    for i, r in zip(t.tolist(), rows.tolist()):
                        if r >= 0:
                            rm[i] = r
                        else:
                            rm.pop(i, None)
        records = self._records
        if not records.built:
            return
        for i, rec in staged.over.items():
            records.set(i, rec)
        for b in staged.bulks:
            over = staged.over
            for j in range(b.n):
                i = b.start + j
                if i not in over:
                    records.set(i, b.record(j))

    #: A write outside a transaction runs in its own one: ``with self._Auto(self) as st``.
    _Auto = AutoTransaction

    def _emit(self, op: tuple[str, tuple[Any, ...], dict[str, Any]]) -> None:
        """Stage one store operation: buffered in the innermost savepoint, or handed
        to the store transaction."""
        if self._levels:
            self._levels[-1].append(op)
            return
        name, args, kw = op
        try:
            with self._excl:
                getattr(self._stxn, name)(*args, **kw)
                if name == "put":
                    self._rows_put += len(args[0])
        except BaseException as e:
            if getattr(self._stxn, "_done", False):   # the store gave up the transaction
                self._txn_failed = e
            raise
