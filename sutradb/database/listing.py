"""Listing concepts by filter: ``find``, ``find_ids``, ``find_iter``, ``count``.

What SQL's ``SELECT ... WHERE ... ORDER BY ... LIMIT ... OFFSET`` and Chroma's
``get(where=, limit=, offset=)`` do: the concepts that match a ``where`` filter
(:mod:`sutradb.index.filters`), in a stable order, a page at a time. Every call
reads one committed state (under the read lock); :meth:`ListingMixin.find_iter`
walks a snapshot of the matching ids in pages and skips the concepts deleted while
it walks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import numpy as np

from ..errors import InvalidArgumentError
from .concepts import Concept
from .validation import is_id

if TYPE_CHECKING:
    from .state import DatabaseState as _Base
    from .state import Where
else:
    _Base = object

__all__ = ["ListingMixin"]

_MISSING = object()


def _path_get(md: dict, path: str):
    """The value at a dotted ``path`` of a metadata dict (an exact top-level key
    first), or ``_MISSING``."""
    if path in md:
        return md[path]
    cur = md
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _sort_key(v):
    """A total order over metadata values: numbers, then strings, then the rest
    (by their repr), then missing values."""
    if v is _MISSING or v is None:
        return (3, 0, "")
    if isinstance(v, bool):
        return (0, int(v), "")
    if isinstance(v, (int, float)):
        return (0, v, "")
    if isinstance(v, str):
        return (1, 0, v)
    return (2, 0, repr(v))


def _check_page(limit, offset):
    if limit is not None and (not is_id(limit) or limit < 0):
        raise InvalidArgumentError(f"limit must be an int >= 0 or None, got {limit!r}")
    if not is_id(offset) or offset < 0:
        raise InvalidArgumentError(f"offset must be an int >= 0, got {offset!r}")


def _parse_order(order_by) -> tuple[str, str | None, bool]:
    """``(what, metadata path, descending)`` of an ``order_by``."""
    if not isinstance(order_by, str) or order_by in ("", "-"):
        raise InvalidArgumentError(f"order_by must be 'id', 'key' or 'metadata.<field>' (a "
                                   f"leading '-' for descending), got {order_by!r}")
    desc = order_by.startswith("-")
    name = order_by[1:] if desc else order_by
    if name in ("id", "key"):
        return name, None, desc
    if name.startswith("metadata.") and len(name) > len("metadata."):
        return "metadata", name[len("metadata."):], desc
    raise InvalidArgumentError(f"order_by must be 'id', 'key' or 'metadata.<field>' (a leading "
                               f"'-' for descending), got {order_by!r}")


class ListingMixin(_Base):
    """The listing methods of :class:`~sutradb.database.Database`; a mixin: they
    read the store and the record indexes under the database's read lock."""

    def _matching_rows(self, where) -> np.ndarray:
        """Rows (int64, storage order) of the live concepts that match ``where``
        (the caller holds the read lock)."""
        s = self._store
        live = s.live
        if where is None:
            return np.flatnonzero(live)
        return np.flatnonzero(self._where_mask(where, live))

    def _ordered_ids(self, where, order_by) -> np.ndarray:
        """Ids of the matches in ``order_by`` order (under the read lock)."""
        what, path, desc = _parse_order(order_by)
        s = self._store
        rows = self._matching_rows(where)
        ids = s.ids[rows]
        if what == "id":
            ids = np.sort(ids)
            return ids[::-1].copy() if desc else ids
        idl = ids.tolist()
        if what == "key":
            vals = [s.record_at(r).key for r in rows.tolist()]
            missing = [v is None for v in vals]
            skey = [v or "" for v in vals]
        else:
            md = self._meta_index()
            vals = [_path_get(md.get(i, {}), path) for i in idl]  # type: ignore[arg-type]  # a metadata path here
            missing = [v is _MISSING or v is None for v in vals]
            skey = [_sort_key(v) for v in vals]
        # ties by id; concepts without the field last in both directions
        present = sorted((j for j in range(len(idl)) if not missing[j]), key=lambda j: idl[j])
        present.sort(key=lambda j: skey[j], reverse=desc)
        absent = sorted((j for j in range(len(idl)) if missing[j]), key=lambda j: idl[j])
        return np.asarray([idl[j] for j in present + absent], dtype=np.int64)

    def find_ids(self, where: Where | None = None, *, limit: int | None = None, offset: int = 0,
                 order_by: str = "id") -> np.ndarray:
        """Ids of the concepts that match a filter, ordered, one page.

        Parameters
        ----------
        where : dict, optional
            A filter (:mod:`sutradb.index.filters`); None or ``{}``: every concept.
        limit : int, optional
            At most this many ids (None: all).
        offset : int
            Skip this many first.
        order_by : str
            ``"id"`` (the order they were added), ``"key"``, or
            ``"metadata.<field>"`` (a dotted path; numbers, then strings, then other
            values; concepts without the field last); a leading ``-`` for descending.
            Ties go by id.

        Returns
        -------
        (k,) int64 ndarray
        """
        self._check_open()
        _check_page(limit, offset)
        with self._read:
            ids = self._ordered_ids(where, order_by)
        stop = None if limit is None else offset + limit
        return ids[offset:stop].copy()

    def find(self, where: Where | None = None, *, limit: int | None = None, offset: int = 0,
             order_by: str = "id") -> list[Concept]:
        """The concepts that match a filter, ordered, one page: :meth:`find_ids`
        with the concepts, read from the same committed state.

        Examples
        --------
        >>> import numpy as np, sutradb
        >>> db = sutradb.open(":memory:", dim=2)
        >>> _ = db.add_vectors(np.ones((5, 2), "float32"),
        ...                    metadata=[{"n": i % 3} for i in range(5)])
        >>> [c.id for c in db.find({"n": {"$gte": 1}}, limit=2, offset=1)]
        [2, 4]
        >>> db.count({"n": 0})
        2
        """
        self._check_open()
        _check_page(limit, offset)
        with self._read:
            ids = self._ordered_ids(where, order_by)
            stop = None if limit is None else offset + limit
            ids = ids[offset:stop]
            rows = self._store.rows_of(ids)
            return self._concepts_at(rows.tolist())

    def find_iter(self, where: Where | None = None, *, order_by: str = "id",
                  batch_size: int = 1000) -> Iterator[Concept]:
        """Iterate over the concepts that match a filter, in pages (for results too
        large for one list).

        The matching ids are taken once, when iteration starts; each page is then
        read under the read lock, so a concept deleted meanwhile is skipped and an
        updated one comes in its new version.

        Parameters
        ----------
        where, order_by
            As in :meth:`find_ids`.
        batch_size : int
            Concepts read per page.
        """
        self._check_open()
        if not is_id(batch_size) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be an int >= 1, got {batch_size!r}")
        with self._read:
            ids = self._ordered_ids(where, order_by)
        return self._pages(ids, int(batch_size))

    def _pages(self, ids, step):
        for s0 in range(0, len(ids), step):
            self._check_open()
            with self._read:
                rows = self._store.rows_of(ids[s0:s0 + step])
                page = self._concepts_at([r for r in rows.tolist() if r >= 0])
            yield from page

    def count(self, where: Where | None = None) -> int:
        """How many concepts match a filter (all of them when ``where`` is None)."""
        self._check_open()
        if where is None:
            return len(self)
        with self._read:
            return int(np.count_nonzero(self._where_mask(where, self._store.live)))
