"""Concepts of a :class:`~sutradb.database.Database`: the records, id and key
resolution, and the reads (the lock-free path of ``get``); the writes are in :mod:`.writes`.

Data model
----------
A *concept* has an int64 ``id`` (allocated by the database, increasing, never reused),
an optional unique ``key`` (str: the user's own primary key), an optional ``text``, a
``metadata`` dict (anything msgpack holds: str keys; None, bool, int, float, str,
bytes, lists, dicts) and a ``vector`` of the database's dimension. The storage engine
keeps one *row* per version of a concept; the database maps ids to their live rows.

The lock-free ``get``
---------------------
``get`` of an id (or key) it has read twice takes no lock: it reads ``_rstate`` (the
row map and the vector array of the last commit), then the record cached for the id
(``_ccache``), then the id's row. A row's record enters the cache on its second read
(``_seen``: one byte per row), so reads that touch each row once (a scan, a cold
start) pay no cache insert and evict nothing; the cache drops its oldest quarter when
full (``cache_size`` records). A commit, under the exclusive lock, first drops the
cached records of the ids it changes, then the read state, then moves their rows in
the row map (:meth:`~sutradb.database.transactions.TransactionsMixin._after_commit`):
so a cached record found is the version of the row found next, or that row is beyond
the vector array the reader holds (IndexError: the locked path). The locked path
caches what it read while it still holds the read lock.
"""

from __future__ import annotations

import copy
from itertools import islice
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple, cast

import numpy as np

from ..errors import (ClosedError, InvalidArgumentError,
                      NotFoundError)
from .options import UNSET
from .transactions import Staged
from .validation import is_id

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy.typing as npt

    from .state import DatabaseState as _Base
    from .state import IdOrKey
else:
    _Base = object

__all__ = ["Concept", "Hit", "ConceptsMixin"]


class Concept(NamedTuple):
    """A stored concept (a snapshot: changing it changes nothing in the database).

    ``vector`` is a read-only view of the stored vector, in the stored precision
    (float16 by default: ``c.vector.astype("float32")`` for arithmetic), or None when
    the database keeps no full vectors; ``metadata`` is ``{}`` when none was given.
    """

    id: int
    key: str | None
    text: str | None
    metadata: dict[str, Any]
    vector: np.ndarray | None


class Hit(NamedTuple):
    """One search result: the concept's ``id``, its ``distance`` to the query
    (``1 - cos`` for cosine, ``-dot`` for ip, squared L2 for l2) and the ``concept``."""

    id: int
    distance: float
    concept: Concept

    @property
    def score(self) -> float:
        """``-distance``: higher is better (the BM25 or fused score of a text or
        hybrid search)."""
        return -self.distance


#: Make a Concept without NamedTuple's argument handling (the get() fast path).
_new_concept = tuple.__new__


_CONTAINERS = (list, dict)


def _evict(cache: dict[Any, Any], size: int) -> None:
    """Make room in a full first-in-first-out cache: drop its oldest quarter at once.

    Deleting only the oldest entry before each insert costs O(size) per insert: a dict
    keeps deleted entries in place until it is resized, and finding the first live
    one walks over them (26 us per insert at 65,536 entries). A quarter at a time
    walks them once per ``size / 4`` inserts."""
    try:
        for k in list(islice(cache, max(1, size // 4))):
            cache.pop(k, None)
    except RuntimeError:        # another reader changed it meanwhile: it made room
        pass


def _nested(md: Any) -> bool:
    """Whether a metadata dict holds lists or dicts (the cache's records are copied
    deeply then: a caller that changes its Concept must not change the cache)."""
    if not md:
        return False
    for v in md.values():
        if type(v) in _CONTAINERS:
            return True
    return False


class ConceptsMixin(_Base):
    """The concept reads of :class:`~sutradb.database.Database`: id and key
    resolution, ``get`` and its caches, ``get_many``, ``get_vectors``, ``ids``,
    ``len``, ``in``, iteration; a mixin: ``get`` reads the database's own attributes
    on its lock-free path."""

    # ------------------------------------------------------------------ id resolution

    def _committed_key(self, key: str) -> int | None:
        """The committed id of ``key``, or None."""
        f = getattr(self._store, "id_for_key", None)
        if f is not None:
            return cast("int | None", f(key))
        return self._key_index().get(key)

    def _key_index(self) -> dict[str, int]:
        """key -> id of the live concepts (built on first use)."""
        r = self._records
        if r.keys is None:
            with self._read:
                r.build_keys(self._store)
        return cast("dict[str, int]", r.keys)

    def _id_of(self, x: Any, staged: Staged | None = None) -> int:
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
    def _staged_gone(staged: Staged, i: int) -> bool:
        return i in staged.over and staged.over[i] is None

    def _exists(self, i: int, staged: Staged | None) -> bool:
        if staged is not None:
            if i in staged.over:
                return staged.over[i] is not None
            if staged.bulk_of(i) is not None:
                return True
        return i in self._row_map()

    def _current(self, i: int, staged: Staged | None) -> tuple[Any, ...]:
        """(key, text, metadata, vector or None, codes or None) of an existing id."""
        if staged is not None:
            if i in staged.over:
                rec = staged.over[i]
                return rec[0], rec[1], rec[2], rec[3], None  # type: ignore[index]  # staged, not deleted
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

    # ------------------------------------------------------------------ reads

    def __len__(self) -> int:
        self._check_open()
        return self._store.n_live

    def __contains__(self, x: object) -> bool:
        if self._closed:
            raise ClosedError("the database is closed")
        if isinstance(x, str):
            with self._read:
                return self._committed_key(x) is not None
        if not is_id(x):
            return False
        with self._read:
            return int(x) in self._row_map()  # type: ignore[call-overload]  # is_id(x): an integer

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

    def get(self, id_or_key: IdOrKey) -> Concept:
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
            row = st[0].get(id_or_key) if rec is not None else None
            if rec is not None and row is not None:
                vecs = st[1]
                try:
                    v = vecs[row] if vecs is not None else None
                except IndexError:      # a commit is updating the row map right now
                    v = UNSET
                if v is not UNSET:
                    md = rec[2]
                    return _new_concept(Concept, (id_or_key, rec[0], rec[1], (
                        copy.deepcopy(md) if rec[3] else dict(md)) if md else {}, v))
        if self._closed:
            raise ClosedError("the database is closed")
        with self._read:
            if type(id_or_key) is int:
                i = id_or_key
            elif isinstance(id_or_key, str):
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
            r = self._store.record_at(row)
            vecs = st[1]
            v = vecs[row] if vecs is not None else None
            md = r.metadata
            # admitted to the cache on its second read (a row read once, as a scan
            # reads, costs no cache insert and evicts nothing); cached under the read
            # lock: a commit between the read and the caching would find nothing to
            # drop, and the old record would stay cached
            size = self._cache_size
            if size:
                seen = self._seen
                if row < len(seen) and seen[row]:
                    nested = _nested(md)
                    cc = self._ccache
                    if len(cc) >= size:
                        _evict(cc, size)
                    cc[i] = (r.key, r.text, md, nested)
                    if r.key is not None:
                        kc = self._kcache
                        if len(kc) >= size:
                            _evict(kc, size)
                        kc[r.key] = i
                    return _new_concept(Concept, (i, r.key, r.text, (
                        copy.deepcopy(md) if nested else dict(md)) if md else {}, v))
                if row >= len(seen):
                    seen.extend(bytes(row + 4096 - len(seen)))
                seen[row] = 1
        # decoded for this call only: the caller's own
        return _new_concept(Concept, (i, r.key, r.text, md, v))

    def _row_map(self) -> dict[int, int]:
        """id -> live row (built once, then kept up to date at each commit)."""
        rm = self._rowmap
        if rm is None:
            s = self._store
            live_rows = np.flatnonzero(s.live)
            rm = self._rowmap = dict(zip(s.ids[live_rows].tolist(), live_rows.tolist()))
        return rm

    def _build_rstate(self) -> tuple[dict[int, int], Any]:
        st = self._rstate = (self._row_map(), self._store.vectors)
        return st

    def get_many(self, ids: Iterable[IdOrKey]) -> list[Concept]:
        """:meth:`get` for several ids or keys, read in one batch.

        The rows are looked up together and their records decoded in one batch (in C:
        :meth:`~sutradb.storage.store.Store.record_columns`), under one read lock: the
        concepts come from one committed state. As with :meth:`get`, each metadata
        dict is the caller's own and each vector a read-only view of the stored row.
        ``NotFoundError`` names the first id or key that is not there. About 5x the
        rate of one sqlite3 primary-key lookup per id (``docs/benchmarks.md``).
        """
        self._check_open()
        items = ids if isinstance(ids, list) else list(ids)
        if not items:
            return []
        plain = all(type(x) is int for x in items)
        with self._read:
            if plain:
                out_ids = np.array(items, np.int64)
            else:
                out_ids = np.empty(len(items), np.int64)
                for j, x in enumerate(items):
                    if isinstance(x, str):
                        i = self._committed_key(x)
                        if i is None:
                            raise NotFoundError(f"key {x!r} is not in the database")
                        out_ids[j] = i
                    elif is_id(x):
                        out_ids[j] = int(x)
                    else:
                        raise InvalidArgumentError(f"get takes an id (int) or a key (str), not "
                                                   f"{type(x).__name__}")
            s = self._store
            rows = s.rows_of(out_ids)
            if (rows < 0).any():
                raise NotFoundError(f"id {int(out_ids[rows < 0][0])} is not in the database")
            ids_l = out_ids.tolist()
            keys, texts, metas = s.record_columns(rows)
            vecs = s.vectors
        # the records were decoded for this call: their dicts are the caller's own; the
        # vectors are read-only views of the stored rows, as get() returns them
        V = [vecs[r] for r in rows.tolist()] if vecs is not None else [None] * len(items)
        return [_new_concept(Concept, t) for t in zip(ids_l, keys, texts, metas, V)]

    def get_vectors(self, ids: npt.ArrayLike) -> np.ndarray:
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

    def _concepts_at(self, rows: list[int]) -> list[Concept]:
        """The concepts of rows, their records decoded in one batch
        (:meth:`~sutradb.storage.store.Store.record_columns`); the caller holds the
        read lock. The metadata dicts are the caller's own; vectors are read-only views
        of the stored rows."""
        if not rows:
            return []
        s = self._store
        R = np.array(rows, np.int64)
        keys, texts, metas = s.record_columns(R)
        vecs = s.vectors
        V = [vecs[r] for r in rows] if vecs is not None else [None] * len(rows)
        return [_new_concept(Concept, t) for t in zip(s.ids[R].tolist(), keys, texts, metas, V)]
