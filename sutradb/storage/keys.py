"""Unique keys: key hashing and the key index of a store.

Keys are unique among live rows. A checkpoint writes a ``.keys`` segment: the 64-bit
hashes of the keys of every live keyed row, sorted, then the ids in the same order
(``docs/file-format.md``, section 2). :class:`KeyIndex` answers "which live id has
this key" from that segment (mapped, O(log n)) plus the keys the log put since the
checkpoint; every candidate is confirmed against the row itself (``key_of``), so a
hash collision or a stale entry never yields a wrong id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CorruptDatabaseError

if TYPE_CHECKING:
    from .segments import MappedFile

__all__ = ["key_hash", "sort_keys", "KeyIndex"]

_I8 = np.dtype("<i8")
_U8 = np.dtype("<u8")
_EMPTY_I8 = np.zeros(0, _I8)


def key_hash(key: str) -> int:
    """The 64-bit hash of a key stored in ``.keys`` files (BLAKE2b, 8 bytes, little-endian)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "little")


def sort_keys(hs: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(hashes, ids)`` sorted by hash, then id (the order of a ``.keys`` file).

    Parameters
    ----------
    hs : ndarray of uint64
    ids : ndarray of int64, same length

    Returns
    -------
    tuple of ndarray
        Both C-contiguous.
    """
    o = np.lexsort((ids, hs))
    return np.ascontiguousarray(hs[o]), np.ascontiguousarray(ids[o])


class KeyIndex:
    """The keys of the committed rows of one snapshot.

    A new one is made for each checkpointed state (each manifest the store installs);
    :meth:`note` then adds the keys the log puts.

    Parameters
    ----------
    mapped : MappedFile or None
        The ``.keys`` segment the manifest names (mapped lazily on first use).
    where : str
        Its path (named in errors).
    scan : callable or None
        For checkpointed rows without a ``.keys`` segment (a store written before key
        indexes existed): ``scan() -> (ids, keys)`` of the live checkpointed rows,
        hashed and sorted on first use. None when there are no checkpointed rows.
    key_of : callable
        ``key_of(id) -> str or None``: the key of the live row of an id (None if the
        id is not live or has no key); confirms every candidate.
    """

    __slots__ = ("mapped", "where", "scan", "key_of", "segment", "tail", "tail_rows")

    def __init__(self, mapped: MappedFile | None, where: str,
                 scan: Callable[[], tuple[np.ndarray, Sequence[str]]] | None,
                 key_of: Callable[[int], str | None]) -> None:
        self.mapped = mapped
        self.where = where
        self.scan = scan
        self.key_of = key_of
        #: (sorted uint64 hashes, ids) of the checkpointed rows once loaded
        self.segment: tuple[np.ndarray, np.ndarray] | None = None
        #: key -> id of the last row the log put with that key
        self.tail: dict[str, int] = {}
        #: [(first row, ids, keys)] of every put since the checkpoint
        self.tail_rows: list[tuple[int, np.ndarray, Sequence[str | None]]] = []

    def note(self, row0: int, ids: np.ndarray, keys: Sequence[str | None] | None) -> None:
        """Record the keys of committed rows ``row0 .. row0 + len(ids)``."""
        if keys is None or not any(k is not None for k in keys):
            return
        self.tail_rows.append((row0, ids, keys))
        tk = self.tail
        for i, k in zip(ids.tolist(), keys):
            if k is not None:
                tk[k] = i

    def owner(self, key: str, h: int | None = None) -> int | None:
        """The live id whose row has ``key``, or None (``h``: its hash, if known)."""
        i = self.tail.get(key)
        if i is not None and self.key_of(i) == key:
            return i
        hs, ids = self.checkpointed()
        if len(hs):
            if h is None:
                h = key_hash(key)
            hv = np.uint64(h)
            lo = int(hs.searchsorted(hv, "left"))
            while lo < len(hs) and hs[lo] == hv:
                c = int(ids[lo])
                if c != i and self.key_of(c) == key:
                    return c
                lo += 1
        return None

    def has_keys(self) -> bool:
        """Whether any committed row may have a key (cheap; false positives allowed)."""
        return bool(self.tail) or bool(len(self.checkpointed()[0]))

    def checkpointed(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted uint64 key hashes, ids) of the checkpointed rows, validated once."""
        c = self.segment
        if c is None:
            mf = self.mapped
            if mf is not None:
                cnt = mf.length // 16
                hs = mf.array(_U8, cnt, 0)
                ids = mf.array(_I8, cnt, 8 * cnt)
                if cnt > 1 and not (hs[1:] >= hs[:-1]).all():
                    raise CorruptDatabaseError(f"{self.where}: key hashes are not sorted")
                c = (hs, ids)
            elif self.scan is not None:
                ids, keys = self.scan()
                c = sort_keys(np.array([key_hash(k) for k in keys], _U8), np.array(ids, _I8))
            else:
                c = (np.zeros(0, _U8), _EMPTY_I8)
            self.segment = c
        return c

    def rebuild(self, exact: bool, tail_dead: list[np.ndarray], seg_n: int, seg_ids: np.ndarray,
                live: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The ``.keys`` content after the log's rows are folded into the segments.

        Parameters
        ----------
        exact : bool
            Whether the manifest names a ``.keys`` segment (then, with no tail, it is
            still exact).
        tail_dead : list of ndarray
            Rows the log killed.
        seg_n : int
            Checkpointed rows.
        seg_ids : ndarray
            Their ids.
        live : ndarray of bool
            Liveness of every row.

        Returns
        -------
        tuple of ndarray or None
            ``(hashes, ids)`` of every live keyed row, sorted; None when the
            checkpointed index is still exact.
        """
        if not self.tail_rows and not tail_dead and exact:
            return None
        hs, ids = self.checkpointed()
        if tail_dead and len(ids):
            killed = np.ascontiguousarray(np.concatenate(tail_dead))
            killed = killed[killed < seg_n]
            if len(killed):
                keep = ~np.isin(ids, seg_ids[killed])
                hs, ids = hs[keep], ids[keep]
        nh, ni = [], []
        for row0, rids, keys in self.tail_rows:
            for j, (i, k) in enumerate(zip(rids.tolist(), keys)):
                if k is not None and live[row0 + j]:
                    nh.append(key_hash(k))
                    ni.append(i)
        if nh:
            hs = np.concatenate([hs, np.array(nh, _U8)])
            ids = np.concatenate([ids, np.array(ni, _I8)])
            return sort_keys(hs, ids)
        return np.ascontiguousarray(hs), np.ascontiguousarray(ids)
