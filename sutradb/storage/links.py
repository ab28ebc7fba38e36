"""The link table: ``(src, dst, relation) -> weight``.

A checkpoint writes the links into one immutable ``.links`` segment: the columns
``src``, ``dst``, ``rel`` (an index into the relation names) and ``weight``, sorted by
``(src, relation, dst)``, then ``by_dst`` (the permutation that sorts them by
``(dst, src, relation)``) and the msgpack list of relation names
(``docs/file-format.md``, section 2). :class:`Links` reads such a segment (validated
once, on first use); :class:`LinkTable` is the link state of a snapshot: the segment
plus the changes the log made since the checkpoint (a delta dict, indexed by source
and by destination), and writes the next segment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np

from ..errors import CorruptDatabaseError
from .format import HEADER_SIZE, KIND_LINKS, MAX_RELATION, align8, file_name, packb, unpackb
from .segments import MappedFile, write_new_file

__all__ = ["sorted_ranges", "Links", "LinkTable"]

_I8 = np.dtype("<i8")
_F8 = np.dtype("<f8")
_I4 = np.dtype("<i4")
_EMPTY_I8 = np.zeros(0, _I8)


def sorted_ranges(keys: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Indices of every element of sorted ``keys`` equal to one of ``q``.

    Parameters
    ----------
    keys : ndarray
        Sorted.
    q : ndarray
        The values looked for (each once; any order).

    Returns
    -------
    ndarray of int64
        The indices, grouped by element of ``q`` (ascending within a group).
    """
    if not len(keys) or not len(q):
        return _EMPTY_I8
    lo = np.searchsorted(keys, q, "left")
    hi = np.searchsorted(keys, q, "right")
    m = hi > lo
    lo, hi = lo[m], hi[m]
    if not len(lo):
        return _EMPTY_I8
    lens = hi - lo
    return np.repeat(lo - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())


class Links:
    """The links of one links file: arrays sorted by (src, relation, dst).

    Parameters
    ----------
    mf : MappedFile or None
        The mapped ``.links`` segment (None: no links).
    entry : dict or None
        Its manifest entry (``count``: the number of links).
    where : str
        Its path (named in errors).
    """

    def __init__(self, mf: MappedFile | None, entry: dict[str, Any] | None, where: str) -> None:
        self.where = where
        self.mf = mf
        if mf is None:
            self.n = 0
            self.src = self.dst = self.by_dst = _EMPTY_I8
            self.rel = np.zeros(0, _I4)
            self.weight = np.zeros(0, _F8)
            self.names = []
            self.checked = True
            self._dst_sorted: np.ndarray | None = _EMPTY_I8
            return
        n = self.n = entry["count"]  # type: ignore[index]  # a segment comes with its entry
        self.src = mf.array(_I8, n, 0)
        self.dst = mf.array(_I8, n, 8 * n)
        self.rel = mf.array(_I4, n, 16 * n)
        w0 = align8(20 * n)
        self.weight = mf.array(_F8, n, w0)
        self.by_dst = mf.array(_I8, n, w0 + 8 * n)
        names = unpackb(mf.mm[HEADER_SIZE + w0 + 16 * n:HEADER_SIZE + mf.length], where)
        if (not isinstance(names, list) or len(set(names)) != len(names)
                or not all(isinstance(s, str) and 0 < len(s) <= MAX_RELATION for s in names)):
            raise CorruptDatabaseError(f"{where}: bad relation table")
        self.names = names
        self.checked = False
        self._dst_sorted = None

    def check(self) -> None:
        """Validate ordering and ranges once before trusting the arrays (O(n))."""
        if self.checked:
            return
        n = self.n
        if n:
            if self.rel.min() < 0 or self.rel.max() >= len(self.names):
                raise CorruptDatabaseError(f"{self.where}: relation index out of range")
            s, r, d = self.src, self.rel, self.dst
            ok = (s[1:] > s[:-1]) | ((s[1:] == s[:-1]) & ((r[1:] > r[:-1]) | ((r[1:] == r[:-1]) & (d[1:] > d[:-1]))))
            if not ok.all():
                raise CorruptDatabaseError(f"{self.where}: links are not sorted")
            b = self.by_dst
            if b.min() < 0 or b.max() >= n or np.bincount(b, minlength=n).max() != 1:
                raise CorruptDatabaseError(f"{self.where}: bad destination permutation")
            ds = d[b]
            if not (ds[1:] >= ds[:-1]).all():
                raise CorruptDatabaseError(f"{self.where}: destination permutation not sorted")
            self._dst_sorted = ds
        else:
            self._dst_sorted = _EMPTY_I8
        self.checked = True

    def indices_from(self, q: np.ndarray) -> np.ndarray:
        """Indices of the links whose source is in ``q``."""
        self.check()
        return sorted_ranges(self.src, q)

    def indices_to(self, q: np.ndarray) -> np.ndarray:
        """Indices of the links whose destination is in ``q``."""
        self.check()
        return cast(np.ndarray, self.by_dst[sorted_ranges(cast(np.ndarray, self._dst_sorted), q)])   # check() sets it

    def key(self, i: int) -> tuple[int, int, str]:
        """``(src, dst, relation)`` of link ``i``."""
        return int(self.src[i]), int(self.dst[i]), self.names[self.rel[i]]


class LinkTable:
    """The links of one snapshot: a checkpointed segment plus the log's changes.

    Parameters
    ----------
    mf, entry, where
        As for :class:`Links` (the segment the manifest names).

    Attributes
    ----------
    base : Links
        The checkpointed links.
    delta : dict
        ``(src, dst, relation) -> weight`` set since the checkpoint (None: removed).
    """

    __slots__ = ("base", "delta", "by_src", "by_dst")

    def __init__(self, mf: MappedFile | None, entry: dict[str, Any] | None, where: str) -> None:
        self.base = Links(mf, entry, where)
        self.delta: dict[tuple[int, int, str], float | None] = {}
        self.by_src: dict[int, set[tuple[int, int, str]]] = {}        # src -> keys of delta
        self.by_dst: dict[int, set[tuple[int, int, str]]] = {}        # dst -> keys of delta

    @property
    def changed(self) -> bool:
        """Whether the log changed any link since the checkpoint."""
        return bool(self.delta)

    def set(self, key: tuple[int, int, str], value: float | None) -> None:
        """Set the weight of link ``key = (src, dst, relation)`` (None removes it)."""
        self.delta[key] = value
        self.by_src.setdefault(key[0], set()).add(key)
        self.by_dst.setdefault(key[1], set()).add(key)

    def drop_ids(self, ids: np.ndarray) -> None:
        """Remove every link from or to ``ids`` (they are being deleted)."""
        q = np.unique(ids)
        L = self.base
        if L.n:
            for i in np.union1d(L.indices_from(q), L.indices_to(q)).tolist():
                self.set(L.key(i), None)
        for i in q.tolist():
            for key in list(self.by_src.get(i, ())) + list(self.by_dst.get(i, ())):
                self.delta[key] = None

    def query(self, q: int, outgoing: bool, relation: str | None) -> list[tuple[int, str, float]]:
        """Links from (``outgoing``) or to id ``q``: ``[(other id, relation, weight)]``
        sorted by relation, then other id."""
        L = self.base
        out: dict[tuple[int, int, str], float | None] = {}
        idx = L.indices_from(np.array([q], _I8)) if outgoing else L.indices_to(np.array([q], _I8))
        for i in idx.tolist():
            key = L.key(i)
            out[key] = float(L.weight[i])
        for key in (self.by_src if outgoing else self.by_dst).get(q, ()):
            out[key] = self.delta[key]
        res = [(k[1] if outgoing else k[0], k[2], w) for k, w in out.items()
               if w is not None and (relation is None or k[2] == relation)]
        res.sort(key=lambda t: (t[1], t[0]))
        return res

    def all(self) -> list[tuple[int, int, str, float]]:
        """Every link ``(src, dst, relation, weight)``, sorted (O(links))."""
        L = self.base
        L.check()
        out: dict[tuple[int, int, str], float | None] = {L.key(i): float(L.weight[i]) for i in range(L.n)}
        out.update(self.delta)
        return sorted((k[0], k[1], k[2], w) for k, w in out.items() if w is not None)

    def write(self, directory: str, uuid: bytes, new_file_no: Callable[[], int],
              sync: bool) -> dict[str, Any] | None:
        """Write the merged links into a new ``.links`` segment.

        Parameters
        ----------
        directory : str
        uuid : bytes
            The store's uuid (in the segment header).
        new_file_no : callable
            Returns the next file number (called only when a file is written).
        sync : bool
            fsync the new file.

        Returns
        -------
        dict or None
            Its manifest entry; None when no link remains.
        """
        L = self.base
        L.check()
        keep = np.ones(L.n, bool)
        for key in self.delta:
            s, d_, r = key
            lo = int(np.searchsorted(L.src, s, "left"))
            hi = int(np.searchsorted(L.src, s, "right"))
            for i in range(lo, hi):
                if int(L.dst[i]) == d_ and L.names[L.rel[i]] == r:
                    keep[i] = False
        added = [(k, w) for k, w in self.delta.items() if w is not None]
        names = sorted(set(L.names[j] for j in np.unique(L.rel[keep]).tolist()) | {k[2] for k, _ in added})
        nid = {s: i for i, s in enumerate(names)}
        remap = np.array([nid.get(s, -1) for s in L.names] or [0], _I4)
        src = np.concatenate([L.src[keep], np.array([k[0] for k, _ in added], _I8)])
        dst = np.concatenate([L.dst[keep], np.array([k[1] for k, _ in added], _I8)])
        rel = np.concatenate([remap[L.rel[keep]] if L.n else np.zeros(0, _I4),
                              np.array([nid[k[2]] for k, _ in added], _I4)])
        wt = np.concatenate([L.weight[keep], np.array([w for _, w in added], _F8)])
        n = len(src)
        if n == 0:
            return None
        o = np.lexsort((dst, rel, src))
        src, dst, rel, wt = src[o], dst[o], rel[o], wt[o]
        by_dst = np.lexsort((rel, src, dst)).astype(_I8)
        names_b = packb(names)
        pad = bytes(align8(20 * n) - 20 * n)
        entry = write_new_file(directory, file_name(new_file_no(), KIND_LINKS), KIND_LINKS,
                               uuid, [src, dst, rel, pad, wt, by_dst, names_b], sync=sync)
        entry.update(count=n, names_len=len(names_b))
        return entry
