"""The term postings of the stored texts: what ranked full-text search reads.

Postings live in *runs*. A run covers a contiguous range of rows ``[r0, r0 + n)`` and
holds, for every term (kept as its 64-bit hash, :func:`sutradb.text.term_hash`) that
occurs in the texts of those rows, the rows holding it and how often (``tf``), plus
the length in terms of every row's text. A checkpoint writes one run file (``.terms``,
``docs/file-format.md``) for the rows it moves out of the log, so the postings commit,
roll back and open together with the rows (a manifest swap names them) and a database
opens without reading a text; runs merge in the background of checkpoints (a run is
merged with the one before it while that one is not much larger: O(log n) runs,
each posting rewritten O(log n) times) and compaction rewrites them for the renumbered
live rows. Rows still in the log are tokenised in memory on first use
(:class:`TailTerms`), at most the rows of one checkpoint interval.

Dead rows keep their postings until compaction; readers mask them with the store's
``live`` array. This module builds, writes, maps, checks and merges runs; it knows
nothing of scoring (:mod:`sutradb.index.bm25`) or of the database.

Run file data (after the 64-byte segment header), all little-endian::

    r0 u64, n u64, T u64, P u64          # first row, rows, distinct terms, postings
    doclen  u32[n]     (padded to 8)     # terms in each row's text
    hashes  i64[T]     strictly increasing
    offsets u64[T+1]   offsets[0] = 0, non-decreasing, offsets[T] = P
    rows    u32[P]     (padded to 8)     # row - r0, increasing within a term
    tf      u16[P]     (padded to 8)     # occurrences (clipped at 65535)
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import CorruptDatabaseError
from ..text import Tokenizer
from .format import KIND_TERMS, align8, file_name
from .segments import MappedFile, write_new_file

__all__ = ["TermRun", "TailTerms", "build_run", "merge_runs", "write_run", "map_run",
           "add_tiered"]

_HEAD = struct.Struct("<QQQQ")
_I8 = np.dtype("<i8")
_U8 = np.dtype("<u8")
_U4 = np.dtype("<u4")
_U2 = np.dtype("<u2")
_EMPTY_I8 = np.zeros(0, _I8)
_EMPTY_U2 = np.zeros(0, _U2)


def run_size(n: int, t: int, p: int) -> int:
    """Data bytes of a run file with ``n`` rows, ``t`` terms and ``p`` postings."""
    return _HEAD.size + align8(4 * n) + 8 * t + 8 * (t + 1) + align8(4 * p) + align8(2 * p)


class TermRun:
    """The postings of rows ``[r0, r0 + n)`` (arrays in memory or views of a mapped file).

    Attributes
    ----------
    r0, n : int
        First row and number of rows covered.
    doclen : ndarray, (n,) uint32
        Terms in each row's text.
    hashes : ndarray, (T,) int64
        The run's terms, increasing.
    offsets : ndarray, (T + 1,) uint64
        Postings of term ``j``: ``rows[offsets[j]:offsets[j + 1]]``.
    rows : ndarray, (P,) uint32
        Rows relative to ``r0``.
    tf : ndarray, (P,) uint16
        Occurrences of the term in the row's text.
    """

    __slots__ = ("r0", "n", "doclen", "hashes", "offsets", "rows", "tf", "mapped", "_checked")

    def __init__(self, r0: int, doclen: np.ndarray, hashes: np.ndarray, offsets: np.ndarray,
                 rows: np.ndarray, tf: np.ndarray, mapped: MappedFile | None = None) -> None:
        self.r0, self.n = int(r0), len(doclen)
        self.doclen, self.hashes, self.offsets, self.rows, self.tf = doclen, hashes, offsets, rows, tf
        self.mapped = mapped
        self._checked = mapped is None

    @property
    def postings(self) -> int:
        return len(self.rows)

    def check(self, where: str, force: bool = False) -> None:
        """Validate a mapped run once (checksum, then structure; ``force``: again);
        CorruptDatabaseError."""
        if self._checked and not force:
            return
        assert self.mapped is not None
        self.mapped.check_crc()
        h, o, r = self.hashes, self.offsets, self.rows
        ok = (len(o) == len(h) + 1 and int(o[0]) == 0 and int(o[-1]) == len(r)
              and bool((o[1:] >= o[:-1]).all()) and (len(h) < 2 or bool((h[1:] > h[:-1]).all()))
              and (not len(r) or int(r.max()) < self.n))
        if ok and len(r) > 1:
            # rows strictly increase within a term (a decrease marks a term's start)
            step = np.diff(r.astype(_I8)) <= 0
            starts = np.zeros(len(r) + 1, bool)
            starts[o[1:-1].astype(_I8)] = True
            ok = not bool((step & ~starts[1:len(r)]).any())
        if not ok:
            raise CorruptDatabaseError(f"{where}: term postings are inconsistent")
        self._checked = True

    def lookup(self, h: int) -> tuple[np.ndarray, np.ndarray]:
        """(absolute rows int64, tf uint16) of term hash ``h`` (empty if absent)."""
        hs = self.hashes
        p = int(np.searchsorted(hs, h))
        if p >= len(hs) or int(hs[p]) != h:
            return _EMPTY_I8, _EMPTY_U2
        a, b = int(self.offsets[p]), int(self.offsets[p + 1])
        return self.rows[a:b].astype(_I8) + self.r0, self.tf[a:b]

    def expanded(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every posting as (term hash, absolute row, tf) arrays."""
        counts: np.ndarray = np.diff(self.offsets.astype(_I8))
        return (np.repeat(self.hashes, counts), self.rows.astype(_I8) + self.r0,
                np.asarray(self.tf))


def build_run(tok: Tokenizer, r0: int, texts: Sequence[str | None]) -> TermRun:
    """Tokenise ``texts`` (the texts of rows ``r0, r0 + 1, ...``) into a run."""
    n = len(texts)
    doclen = np.zeros(n, _U4)
    tokens: list[str] = []
    terms = tok.terms
    for j, t in enumerate(texts):
        if t:
            ts = terms(t)
            doclen[j] = len(ts)
            tokens += ts
    if not tokens:
        return _sorted_run(r0, doclen, _EMPTY_I8, _EMPTY_I8, _EMPTY_I8)
    vocab = {w: i for i, w in enumerate(dict.fromkeys(tokens))}
    tid = np.fromiter(map(vocab.__getitem__, tokens), _I8, len(tokens))
    # number the terms in hash order (words whose hashes collide share a number):
    # one sort of (term number, row) keys gives the postings in file order and the
    # term frequencies
    uh, rank = np.unique(np.asarray(tok.hashes(vocab), _I8), return_inverse=True)
    rows = np.repeat(np.arange(n, dtype=_I8), doclen.astype(_I8))
    u, cnt = np.unique(rank.astype(_I8)[tid] * n + rows, return_counts=True)
    return _sorted_run(r0, doclen, uh[u // n], u % n, cnt)


def _sorted_run(r0: int, doclen: np.ndarray, h: np.ndarray, rows_rel: np.ndarray,
                tf: np.ndarray) -> TermRun:
    """A run from postings already sorted by (term hash, row)."""
    if len(h):
        first = np.flatnonzero(np.concatenate(([True], h[1:] != h[:-1])))
        hashes = h[first]
        offsets = np.concatenate((first, [len(h)])).astype(_U8)
    else:
        hashes, offsets = _EMPTY_I8, np.zeros(1, _U8)
    return TermRun(r0, np.ascontiguousarray(doclen, _U4), np.ascontiguousarray(hashes, _I8),
                   offsets, np.ascontiguousarray(rows_rel, _U4),
                   np.ascontiguousarray(np.minimum(tf, 65535), _U2))


def merge_runs(runs: Sequence[TermRun], remap: np.ndarray | None = None, r0: int | None = None) -> TermRun:
    """One run holding the postings of consecutive ``runs``; with ``remap`` (new row of
    each old absolute row, -1 to drop) the rows are renumbered and ``r0`` is the new
    first row."""
    parts = [r.expanded() for r in runs]
    h = np.concatenate([p[0] for p in parts]) if parts else _EMPTY_I8
    rows = np.concatenate([p[1] for p in parts]) if parts else _EMPTY_I8
    tf = np.concatenate([p[2] for p in parts]) if parts else _EMPTY_U2
    doclen = np.concatenate([r.doclen for r in runs]) if runs else np.zeros(0, _U4)
    base = runs[0].r0 if runs else 0
    # each run is sorted by (hash, row) and the runs' rows ascend: a stable sort by
    # hash alone gives (hash, row) order (renumbering keeps the rows' order)
    o = np.argsort(h, kind="stable")
    h, rows, tf = h[o], rows[o], tf[o]
    if remap is None:
        return _sorted_run(base, doclen, h, rows - base, tf)
    new = remap[rows]
    keep = new >= 0
    own = np.arange(base, base + len(doclen))
    dl_keep = remap[own] >= 0
    start = 0 if r0 is None else r0
    return _sorted_run(start, doclen[dl_keep], h[keep], new[keep] - start, tf[keep])


def add_tiered(runs: list[TermRun], new: TermRun, merge: Callable[[list[TermRun]], TermRun] = merge_runs) -> list[TermRun]:
    """``runs`` + ``new``, merging the last two while the older is at most twice as large
    (so a store keeps O(log n) runs)."""
    out = list(runs) + [new]
    while len(out) > 1 and out[-2].postings + out[-2].n <= 2 * (out[-1].postings + out[-1].n) + 4096:
        out[-2:] = [merge(out[-2:])]
    return out


def write_run(dirpath: str, new_file_no: Callable[[], int], uuid: bytes, run: TermRun, sync: bool) -> dict[str, Any]:
    """Write ``run`` to a new ``.terms`` file; its manifest entry (``r0``, ``n`` added)."""
    t, p = len(run.hashes), len(run.rows)
    pad = b"\0" * 8

    def padded(a: np.ndarray, dt: np.dtype) -> list[Any]:
        b = np.ascontiguousarray(a, dt)
        extra = -b.nbytes % 8
        return [b, pad[:extra]] if extra else [b]

    parts: list[Any] = [_HEAD.pack(run.r0, run.n, t, p)]
    parts += padded(run.doclen, _U4)
    parts += [np.ascontiguousarray(run.hashes, _I8), np.ascontiguousarray(run.offsets, _U8)]
    parts += padded(run.rows, _U4) + padded(run.tf, _U2)
    name = file_name(new_file_no(), KIND_TERMS)
    e = write_new_file(dirpath, name, KIND_TERMS, uuid, parts, sync=sync)
    e.update(r0=run.r0, n=run.n)
    return e


def map_run(mf: MappedFile, entry: dict[str, Any], where: str) -> TermRun:
    """The run of a mapped ``.terms`` file (checked later, :meth:`TermRun.check`)."""
    if mf.length < _HEAD.size:
        raise CorruptDatabaseError(f"{where}: term file too short")
    r0, n, t, p = _HEAD.unpack(mf.mm[64:64 + _HEAD.size])
    if r0 != entry["r0"] or n != entry["n"] or t > mf.length or p > mf.length \
            or run_size(n, t, p) != mf.length:
        raise CorruptDatabaseError(f"{where}: term file head does not match the manifest")
    off = _HEAD.size
    doclen = mf.array(_U4, n, off)
    off += align8(4 * n)
    hashes = mf.array(_I8, t, off)
    off += 8 * t
    offsets = mf.array(_U8, t + 1, off)
    off += 8 * (t + 1)
    rows = mf.array(_U4, p, off)
    off += align8(4 * p)
    tf = mf.array(_U2, p, off)
    return TermRun(r0, doclen, hashes, offsets, rows, tf, mapped=mf)


class TailTerms:
    """In-memory runs of the rows past the last stored run (rows in the log),
    tokenised on first use and extended as commits add rows.

    Thread-safe: readers of one committed state may extend it at once (a lock
    serialises them); rows are only ever appended.
    """

    __slots__ = ("start", "upto", "runs", "_lock")

    def __init__(self, start: int) -> None:
        self.start = self.upto = start
        self.runs: list[TermRun] = []
        self._lock = threading.Lock()

    def extend(self, tok: Tokenizer, n: int, texts_of: Callable[[int, int], list[str | None]]) -> list[TermRun]:
        """Cover rows up to ``n`` (``texts_of(a, b)`` gives the texts of rows a..b)."""
        if self.upto >= n:
            return self.runs
        with self._lock:
            if self.upto < n:
                run = build_run(tok, self.upto, texts_of(self.upto, n))
                self.runs = add_tiered(self.runs, run)
                self.upto = n
        return self.runs
