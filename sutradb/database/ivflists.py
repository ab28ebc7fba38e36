"""The IVF lists of a database: laying them out, choosing their default nprobe,
folding the tail in, renumbering them after a compaction.

Plain functions of arrays (the stored vectors and codes, the live mask, an
:class:`~sutradb.index.vector.IVFPart`): the database's index lifecycle
(:mod:`sutradb.database.indexing`) calls them with its store's arrays and stores
what they return. They never change an index in place: searches keep using the
one they started with while a new one is built. Reads of ``V`` (which may be a
memory map of the store) happen inside ``read`` (the database's read lock), in
batches, so that a commit can get in between.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

    from ..index.pq import ProductQuantizer

from ..index.flat import prepare_queries
from ..index.ivf import IVFIndex, default_nlist, exact_topk
from ..index.pq import default_threads
from ..index.vector import IVFPart, code_rows, default_rerank, list_codes
from .options import BATCH
from .progress import ProgressArg, stage_progress

__all__ = ["with_lists", "recall", "lay_out_lists", "tune_nprobe", "assign_rows",
           "fold_lists", "remap_lists", "TUNE_QUERIES"]

#: Held-out stored vectors used to choose the default nprobe when lists are built.
TUNE_QUERIES = 200
#: The nprobe values :func:`tune_nprobe` tries (those below nlist, then nlist).
_LADDER = (1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256,
           320, 384, 512, 640, 768, 1024, 1536, 2048, 3072, 4096)


def with_lists(ivf: IVFIndex, perm: npt.ArrayLike, offsets: npt.ArrayLike) -> IVFIndex:
    """A copy of ``ivf`` (sharing its centres) with another list layout: the index
    searches use is never changed in place."""
    new = copy.copy(ivf)
    new.perm = new.offsets = None
    return new.set_lists(np.ascontiguousarray(perm, dtype=np.int64),
                         np.ascontiguousarray(offsets, dtype=np.int64))


def recall(I: npt.ArrayLike, gt: npt.ArrayLike) -> float:
    """Mean share of each ground-truth row set (``-1`` ignored) found in ``I``."""
    tot = hit = 0
    for a, b in zip(np.asarray(I).tolist(), np.asarray(gt).tolist()):
        want = {x for x in b if x >= 0}
        tot += len(want)
        hit += len(want & set(a))
    return hit / tot if tot else 1.0


def lay_out_lists(pq: ProductQuantizer, V: np.ndarray, live: np.ndarray, rows: np.ndarray,
                  codes: np.ndarray, *, dim: int, metric: str, nlist: int | None, seed: int,
                  target_recall: float, read: AbstractContextManager[Any] | None = None,
                  progress: ProgressArg = False,
                  renumber: bool = False) -> IVFPart:
    """IVF lists of the entries ``rows``: coarse k-means on a seeded sample, every
    entry assigned, the default nprobe chosen on held-out live rows
    (:func:`tune_nprobe`).

    Parameters
    ----------
    pq : ProductQuantizer
        The database's quantizer (the lists hold its codes).
    V : (n_rows, dim) array
        The stored vectors.
    live : (n_rows,) bool
        The live rows (the nprobe is chosen on them).
    rows : (n,) int64
        The entries, increasing row numbers.
    codes : (n_rows, code_size) or (n, code_size) uint8
        Indexed by row; with ``renumber``, the entries' codes in the order of ``rows``.
    dim, metric, seed, target_recall
        The database's.
    nlist : int or None
        Lists (None: :func:`~sutradb.index.ivf.default_nlist`; at most ``n``).
    read : context manager, optional
        Taken around every read of ``V``.
    progress : bool or callable
        The database's ``progress`` option (:func:`~sutradb.database.progress.stage_progress`).
    renumber : bool
        The lists name entry positions (the rows after a rewrite that keeps exactly
        ``rows``) rather than the rows themselves.

    Returns
    -------
    IVFPart
        With its ``nprobe``, ``rerank_scale`` and ``tuned`` report; ``covered`` is
        ``rows[-1] + 1`` (``n`` with ``renumber``).
    """
    read = read if read is not None else nullcontext()
    n = len(rows)
    nlist = int(nlist or default_nlist(n))
    nlist = max(1, min(nlist, n))
    ivf = IVFIndex(dim, nlist, metric, seed)
    ts = min(n, 64 * nlist)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=ts, replace=False)) if ts < n else np.arange(n)
    with read:
        X = np.asarray(V[rows[sample]], dtype=np.float32)
    prog = stage_progress(progress, "training the IVF lists (k-means iterations)")
    ivf.fit(X, max_train=ts, iters=10, progress=prog)
    del X
    lid = np.empty(n, np.int32)
    prog = stage_progress(progress, "assigning the vectors to lists (rows)")
    for s0 in range(0, n, BATCH):
        with read:
            blk = np.asarray(V[rows[s0:s0 + BATCH]], dtype=np.float32)
        lid[s0:s0 + BATCH] = ivf.assign(blk)
        if prog is not None:
            prog(min(n, s0 + BATCH), n)
    ivf.build(lid)
    pos = ivf.perm
    lc = list_codes(pq, codes[pos] if renumber else codes[rows[pos]])
    tuned_ivf = with_lists(ivf, rows[pos], cast(np.ndarray, ivf.offsets))
    part = IVFPart(tuned_ivf, lc, int(rows[-1]) + 1 if n else 0, nlist)
    part.nprobe, part.rerank_scale, part.tuned = tune_nprobe(
        pq, part, V, live, metric=metric, seed=seed, target_recall=target_recall, read=read)
    part.tuned["n_built"] = int(n)
    if renumber:
        part.ivf = with_lists(ivf, cast(np.ndarray, pos).astype(np.int64), cast(np.ndarray, ivf.offsets))
        part.covered = n
    return part


def tune_nprobe(pq: ProductQuantizer, part: IVFPart, V: np.ndarray, live: np.ndarray, *,
                metric: str, seed: int, target_recall: float,
                read: AbstractContextManager[Any] | None = None
                ) -> tuple[int, int, dict[str, Any]]:
    """The default nprobe of new lists.

    The smallest nprobe whose recall@10 with the default re-ranking reaches
    ``target_recall`` on held-out live rows (:data:`TUNE_QUERIES` of them, drawn with
    ``seed + 1``; each query row masked out of the search and of its exact ground
    truth); if even every list falls short (a coarse quantizer), with 2x then 4x
    the re-ranked candidates.

    Returns
    -------
    (nprobe, rerank_scale, report)
        ``report``: ``target_recall``, ``recall``, ``queries``, ``k`` (and
        ``reached=False`` when the target was not met: the best setting seen).
    """
    read = read if read is not None else nullcontext()
    target = float(target_recall)
    nlist = cast(int, part.ivf.nlist)          # built
    live_rows = np.flatnonzero(live)
    nq = int(min(TUNE_QUERIES, max(1, len(live_rows) // 10)))
    rng = np.random.default_rng(int(seed) + 1)
    qrows = np.sort(rng.choice(live_rows, size=nq, replace=False))
    mask = live.copy()
    mask[qrows] = False
    k = 10
    with read:
        Q = prepare_queries(np.asarray(V[qrows], dtype=np.float32), metric)
        gt = exact_topk(Q, V, k, metric, mask=mask)
    ladder = sorted({p for p in _LADDER if p < nlist} | {nlist})
    best = (0.0, nlist, 1)
    for scale in (1, 2, 4):
        for p in ladder:
            with read:
                _, I = part.ivf.search(Q, part.codes, pq, k=k, nprobe=p,
                                       rerank=default_rerank(k) * scale, vectors=V,
                                       mask=mask, threads=default_threads())
            rec = recall(I, gt)
            if rec > best[0]:
                best = (rec, p, scale)
            if rec >= target:
                return p, scale, {"target_recall": target, "recall": rec, "queries": nq,
                                  "k": k}
    return best[1], best[2], {"target_recall": target, "recall": best[0], "queries": nq,
                              "k": k, "reached": False}


def assign_rows(ivf: IVFIndex, V: np.ndarray, rows: np.ndarray, metric: str
                ) -> tuple[np.ndarray, float]:
    """The list of each of ``rows`` (vectors in ``V``), in batches, and the sum of
    their squared distances to their centres (the coarse drift).

    Returns
    -------
    lid : (len(rows),) int32
    err : float
    """
    lid = np.empty(len(rows), np.int32)
    err = 0.0
    C = ivf.centroids
    for s0 in range(0, len(rows), BATCH):
        blk = prepare_queries(np.asarray(V[rows[s0:s0 + BATCH]], dtype=np.float32), metric)
        a = ivf.assign(blk)
        lid[s0:s0 + BATCH] = a
        R = blk - C[a]
        err += float(np.einsum("ij,ij->", R, R))
    return lid, err


def fold_lists(pq: ProductQuantizer, part: IVFPart, live: np.ndarray, new_rows: np.ndarray,
               lid_new: np.ndarray, new_codes: np.ndarray, n: int) -> IVFPart:
    """``part`` with the tail rows ``new_rows`` (lists ``lid_new``, codes
    ``new_codes``) put into its lists and the dead rows (``~live``) dropped from
    them; the centres, nprobe and tuning report stay. ``n``: the rows now covered."""
    ivf = part.ivf
    keep = live[ivf.perm]
    lid_old = np.repeat(np.arange(cast(int, ivf.nlist), dtype=np.int32), ivf.list_sizes())[keep]
    lid = np.concatenate([lid_old, lid_new])
    o = np.argsort(lid, kind="stable")
    perm = np.concatenate([cast(np.ndarray, ivf.perm)[keep], new_rows])[o]
    codes = list_codes(pq, np.concatenate([code_rows(part.codes)[keep], new_codes])[o])
    offsets = np.zeros(cast(int, ivf.nlist) + 1, np.int64)
    np.cumsum(np.bincount(lid, minlength=cast(int, ivf.nlist)), out=offsets[1:])
    return IVFPart(with_lists(ivf, perm, offsets), codes, n, part.nprobe, part.tuned,
                   part.rerank_scale)


def remap_lists(pq: ProductQuantizer, part: IVFPart, kept: np.ndarray) -> IVFPart:
    """``part`` after a compaction that keeps the rows ``kept`` (old row numbers,
    increasing; new row ``j`` is old row ``kept[j]``): rows renumbered, the
    dropped ones taken out of the lists."""
    ivf = part.ivf
    size = max(part.covered, int(kept[-1]) + 1 if len(kept) else 0)
    new_of_old = np.full(size, -1, np.int64)
    new_of_old[kept] = np.arange(len(kept), dtype=np.int64)
    np_ = new_of_old[ivf.perm]
    keep = np_ >= 0
    lid = np.repeat(np.arange(cast(int, ivf.nlist), dtype=np.int64), ivf.list_sizes())[keep]
    offsets = np.zeros(cast(int, ivf.nlist) + 1, np.int64)
    np.cumsum(np.bincount(lid, minlength=cast(int, ivf.nlist)), out=offsets[1:])
    covered = int(np.searchsorted(kept, part.covered))
    return IVFPart(with_lists(ivf, np_[keep], offsets),
                   list_codes(pq, code_rows(part.codes)[keep]),
                   covered, part.nprobe, part.tuned, part.rerank_scale)
