"""BM25 ranking over term postings, and reciprocal rank fusion.

:func:`bm25_top` scores rows with the Lucene form of Okapi BM25 (the one Lucene,
Elasticsearch and ``bm25s``'s ``method="lucene"`` use)::

    score(d, q) = sum over query terms t of
        count(t, q) * idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

where ``N`` is the number of live rows, ``df(t)`` the live rows whose text holds
``t``, ``|d|`` the terms of row ``d``'s text and ``avgdl`` their mean over the live
rows. A filter restricts which rows are returned, not the statistics (as a filter
clause does in Lucene). Scores are computed over the postings of the query's terms
only (sparse), never over every row.

:func:`rrf` fuses ranked lists by reciprocal rank (Cormack, Clarke and Buettcher,
SIGIR 2009): ``sum_i w_i / (c + rank_i)``.

This module is pure NumPy: it knows nothing of storage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["bm25_top", "rrf"]


def bm25_top(postings: Sequence[tuple[np.ndarray, np.ndarray, int]], doclen: np.ndarray,
             live: np.ndarray, n_live: int, avgdl: float, k: int, *, k1: float = 1.2,
             b: float = 0.75, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best rows by BM25.

    Parameters
    ----------
    postings : sequence of (rows, tf, count)
        For each distinct query term: the rows holding it (live or dead, int64, each
        once), their term frequencies, and how often the term occurs in the query.
    doclen : (n_rows,) array
        Terms in each row's text.
    live : (n_rows,) bool
        Current rows (the others are ignored, also in the statistics).
    n_live : int
        ``live.sum()``.
    avgdl : float
        Mean of ``doclen`` over the live rows.
    k : int
    k1, b : float
        BM25's term-frequency saturation and length normalisation.
    mask : (n_rows,) bool, optional
        Rows that may be returned (a filter).

    Returns
    -------
    rows : (<= k,) int64
        Best first; ties by row.
    scores : (<= k,) float64
    """
    norm_b = b / avgdl if avgdl > 0 else 0.0
    lists = []                  # (rows, tf, count * idf) of each term, live rows only
    for rows, tf, count in postings:
        if not len(rows):
            continue
        m = live[rows]
        rows = rows[m]
        df = len(rows)
        if df:
            lists.append((rows, tf[m], count * math.log(1.0 + (n_live - df + 0.5) / (df + 0.5))))
    if not lists:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)

    def weights(rows: np.ndarray, tf: np.ndarray, cidf: float) -> np.ndarray:
        t: np.ndarray = tf.astype(np.float64)
        out: np.ndarray = cidf * t / (t + k1 * ((1.0 - b) + norm_b * doclen[rows].astype(np.float64)))
        return out

    rows_l = [t[0] for t in lists]
    w_l = [weights(*t) for t in lists]
    rows = np.concatenate(rows_l)
    w = np.concatenate(w_l)
    per_row = 1                 # postings per row at most (rows unique: one term)
    if len(rows_l) > 1:
        acc = np.bincount(rows, weights=w, minlength=len(live))
        if len(rows) >= 2 * len(live):
            # twice as many postings as rows: the rows that score, once each
            rows = np.flatnonzero(acc)
            w = acc[rows]
        else:
            # few postings: each reads its row's total back (a row holding several
            # query terms appears once per term), no pass over every row
            w = acc[rows]
            per_row = len(rows_l)
    if mask is not None:
        keep = mask[rows]
        rows, w = rows[keep], w[keep]
    if len(rows) > k:
        # the k-th best distinct row is among the best k * per_row postings; then
        # every row scoring at least as much, ties broken by row (a larger k extends
        # a smaller k's answer)
        m = min(len(w), k * per_row)
        top = np.argpartition(-w, m - 1)[:m] if m < len(w) else np.arange(len(w))
        sc = acc[np.unique(rows[top])] if per_row > 1 else w[top]
        j = min(k, len(sc)) - 1
        kth = -np.partition(-sc, j)[j]
        sel = w >= kth
        rows, w = rows[sel], w[sel]
        if per_row > 1:
            rows = np.unique(rows)
            w = acc[rows]
    elif per_row > 1:
        rows = np.unique(rows)
        w = acc[rows]
    o = np.lexsort((rows, -w))[:k]
    return rows[o].astype(np.int64), w[o]


def rrf(rankings: Sequence[Sequence[int]], weights: Sequence[float], k: int,
        c: float = 60.0) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of ranked lists of ids.

    Parameters
    ----------
    rankings : sequence of sequences of int
        Each best first.
    weights : sequence of float
        One per ranking.
    k : int
        Results kept.
    c : float
        The rank constant (60, as in the paper and in Elasticsearch and LanceDB).

    Returns
    -------
    list of (id, score)
        Best first; ties by best rank in the earliest ranking that has the id, then id.

    Examples
    --------
    >>> rrf([[1, 2, 3], [3, 1]], [1.0, 1.0], 2)
    [(1, 0.03252247488101534), (3, 0.03200204813108039)]
    """
    score: dict[int, float] = {}
    first: dict[int, tuple[int, int]] = {}
    for j, (ranking, wt) in enumerate(zip(rankings, weights)):
        for r, i in enumerate(ranking):
            score[i] = score.get(i, 0.0) + wt / (c + r + 1)
            first.setdefault(i, (j, r))
    best = sorted(score, key=lambda i: (-score[i], first[i], i))[:k]
    return [(i, score[i]) for i in best]
