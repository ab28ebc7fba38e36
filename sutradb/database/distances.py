"""Distances between stored concepts: :meth:`Database.distance` and
:meth:`Database.distances` over a :class:`DistanceTable`.

The table is a snapshot of the committed state that the first call after a write
builds and the next commit drops (the database then holds :data:`NO_TABLE`). With
full vectors it is an id -> row array (vectorised: no per-row Python object) and the
exact pair kernel (:func:`~sutradb.index.flat.pair_scorer`) over the stored vectors
as they are (float16 rows read in place: no float32 copy, no row views), so setting
it up is a few milliseconds of NumPy work at 100k rows and one pair costs one kernel
call. Without vectors: PQ-symmetric distances over the codes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DimensionError, InvalidArgumentError, NotFoundError
from ..index.flat import pair_scorer
from ..index.pq import default_threads

if TYPE_CHECKING:
    import numpy.typing as npt

    from .._levels.scalar._core import PairDistances
    from ..index.pq import ProductQuantizer
    from .state import DatabaseState as _Base
    from .state import IdOrKey
else:
    _Base = object

__all__ = ["DistanceTable", "NO_TABLE", "DistancesMixin"]

RowsOf = Callable[[np.ndarray], np.ndarray]

#: ids spread beyond this multiple of the live count (plus the floor) are looked up
#: through the store's sorted ids rather than an id -> row array over their range
_DENSE_FACTOR, _DENSE_FLOOR = 16, 1 << 16
#: pairs per call from which ``distances`` uses every core
_PARALLEL_PAIRS = 1 << 14


class DistanceTable:
    """What :meth:`Database.distance` and :meth:`Database.distances` look rows up in.

    Parameters
    ----------
    kind : {"exact", "sdc", "none"}
        Full vectors, PQ codes only (symmetric distances), or neither yet.
    rows_of : callable
        int64 ids -> rows of this committed state (``-1`` for none).
    scorer : PairDistances, optional
        ``"exact"``: the kernel over the stored vectors. Its table maps ids to rows
        when ``dense``, else rows to themselves (ids then go through ``rows_of``).
    dense : bool
    codes, pq : optional
        ``"sdc"``: the codes and their quantizer.

    Attributes
    ----------
    fast : PairDistances or None
        The scorer when ids index it directly (the lock-free single-pair path).
    """

    __slots__ = ("kind", "rows_of", "scorer", "dense", "codes", "pq", "fast")

    def __init__(self, kind: str, rows_of: RowsOf, *, scorer: PairDistances | None = None,
                 dense: bool = False, codes: np.ndarray | None = None,
                 pq: ProductQuantizer | None = None) -> None:
        self.kind = kind
        self.rows_of = rows_of
        self.scorer = scorer
        self.dense = dense
        self.codes = codes
        self.pq = pq
        self.fast = scorer if dense else None

    def pairs(self, P: np.ndarray) -> np.ndarray:
        """(p,) float32 distances of the id pairs ``P`` ((p, 2) int64); NotFoundError
        for an id this state does not hold."""
        threads = default_threads() if len(P) >= _PARALLEL_PAIRS else 1
        if self.scorer is not None and self.dense:
            try:
                return self.scorer.distances(P, threads)
            except KeyError as e:
                raise NotFoundError(f"id {e.args[0]} is not in the database") from None
        rows = self.rows_of(P.ravel()).reshape(P.shape)
        if (rows < 0).any():
            raise NotFoundError(f"id {int(P[rows < 0][0])} is not in the database")
        if self.scorer is not None:
            return self.scorer.distances(np.ascontiguousarray(rows), threads)
        if self.kind == "sdc" and self.pq is not None and self.codes is not None:
            out: np.ndarray = self.pq.sdc(self.codes[rows[:, 0]], self.codes[rows[:, 1]])
            return out
        raise InvalidArgumentError("the database keeps neither vectors nor codes yet")


def _no_rows(ids: np.ndarray) -> np.ndarray:
    return np.full(len(ids), -1, np.int64)


#: No table (before the first distance call after a write): every lookup misses.
NO_TABLE = DistanceTable("none", _no_rows)


class DistancesMixin(_Base):
    """``distance`` and ``distances`` of :class:`~sutradb.database.Database`; a mixin:
    the table is the database's ``_dtable``, dropped by every commit."""

    def _build_dtable(self) -> DistanceTable:
        """The :class:`DistanceTable` of the committed state (under the read lock: no
        commit between reading the ids and the rows)."""
        with self._read:
            return self._build_dtable_locked()

    def _build_dtable_locked(self) -> DistanceTable:
        """:meth:`_build_dtable` for a caller that holds the read lock (readers do
        not nest)."""
        s = self._store
        rows_of = s.rows_of
        blocks = [b for _, b in s.vector_blocks()]      # the mapped rows are not copied
        if blocks:
            metric = {"l2": 0, "ip": 1, "cosine": 2}[self._meta["metric"]]
            live_rows = np.flatnonzero(s.live)
            nxt = int(self._meta["next_id"])
            if nxt <= _DENSE_FACTOR * len(live_rows) + _DENSE_FLOOR:
                idrow = np.full(nxt, -1, np.int64)
                idrow[s.ids[live_rows]] = live_rows
                t = DistanceTable("exact", rows_of, scorer=pair_scorer(blocks, idrow, metric),
                                  dense=True)
            else:
                rowrow = np.arange(s.n_rows, dtype=np.int64)
                t = DistanceTable("exact", rows_of, scorer=pair_scorer(blocks, rowrow, metric))
        elif self._index.pq is not None:
            t = DistanceTable("sdc", rows_of, codes=np.ascontiguousarray(s.codes), pq=self._index.pq)
        else:
            t = DistanceTable("none", rows_of)
        self._dtable = t
        return t

    def distance(self, a: IdOrKey, b: IdOrKey) -> float:
        """Distance between two stored concepts (ids or keys): exact when the database
        keeps full vectors (``1 - cos`` for cosine, ``-dot`` for ip, squared L2 for
        l2), PQ-symmetric otherwise. Well under a microsecond of kernel per call; the
        first call after a write sets up an id -> row array (no per-concept objects)."""
        fast = self._dtable.fast
        if fast is not None:
            try:
                return fast.distance(a, b)  # type: ignore[arg-type]  # a key: TypeError, below
            except (KeyError, TypeError, OverflowError):
                pass
        return self._distance_other(a, b)

    def _distance_other(self, a: IdOrKey, b: IdOrKey) -> float:
        """:meth:`distance` off the fast path: builds the table (the first call after
        a write), resolves keys, or reports an id that is not there."""
        self._check_open()
        t = self._dtable
        if t is NO_TABLE:
            t = self._build_dtable()
        ia, ib = self._id_of(a), self._id_of(b)        # keys; NotFoundError
        if t.fast is not None:
            try:
                return t.fast.distance(ia, ib)
            except KeyError:
                pass
            t = self._build_dtable()                    # a commit raced the lookup
        return float(t.pairs(np.array([[ia, ib]], np.int64))[0])

    def distances(self, pairs: npt.ArrayLike) -> np.ndarray:
        """Distances of many pairs of stored concepts.

        Parameters
        ----------
        pairs : (p, 2) array_like of ids

        Returns
        -------
        (p,) float32
            As :meth:`distance` gives them, computed in one kernel call (on every core
            for large batches).

        Raises
        ------
        NotFoundError
            An id is not in the database.
        """
        self._check_open()
        P = np.asarray(pairs)
        if P.ndim != 2 or P.shape[1] != 2:
            raise DimensionError(f"pairs must be (p, 2), got shape {P.shape}")
        if P.size and P.dtype.kind not in "iu":
            raise InvalidArgumentError("pairs must hold integer ids")
        P = np.ascontiguousarray(P, dtype=np.int64)
        # the table and the rows of one committed state
        with self._read:
            t = self._dtable
            if t is NO_TABLE:
                t = self._build_dtable_locked()
            return t.pairs(P)
