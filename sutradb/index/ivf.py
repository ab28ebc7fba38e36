"""The inverted-file (IVF) index over PQ codes, with exact re-ranking.

An :class:`IVFIndex` partitions the vectors into ``nlist`` lists by a coarse k-means
(Jégou et al.'s IVFADC, FAISS's ``IndexIVFPQ``). A search computes the query's
distances to the coarse centres, scans the PQ codes of the ``nprobe`` nearest lists
with the ADC kernel (the ``where`` mask applied inside the scan), and re-ranks the
best ``rerank`` candidates exactly against the stored vectors.

The PQ codes are those of the *raw* vectors (not of the residuals to the coarse
centre): one distance table per query then serves every probed list, and the codes
of a flat PQ index are reused unchanged when a collection moves from flat PQ to
IVF-PQ. Measured on the PyPI MiniLM set (100k x 384, m = 48, nlist = 1265): residual
PQ has the smaller reconstruction error (0.18 vs 0.26) but no better recall once
candidates are re-ranked exactly (recall@10 after re-ranking 100 candidates of all
lists: raw 0.994, residual 0.982-0.984; at nprobe = 64: raw 0.923, residual 0.920-0.922),
and it needs a table per probed list (or FAISS's nlist x m x 256 precomputed
tables). See ``docs/ivf.md``.

This module knows no storage: it holds the coarse centres and the list layout
(``perm``, ``offsets``) as arrays; the caller keeps the codes (in list order, see
:meth:`IVFIndex.list_order`) and the vectors, e.g. as memory maps. Search
parameters (``nprobe``, ``rerank``, ``mask``, ``threads``) are per call and never
stored on the object, so one index can serve concurrent searches.
"""

from __future__ import annotations

import math
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .. import simd
from ..storage import osio
from ..errors import (
    CorruptDatabaseError,
    DimensionError,
    InvalidArgumentError,
    NotTrainedError,
)
from .pq import (
    METRICS,
    ProductQuantizer,
    check_k,
    check_mask,
    check_vectors,
    normalise_rows,
    resolve_threads,
    split_empty,
)

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["IVFIndex", "BlockedCodes", "default_nlist", "tune"]

_FORMAT = "sutradb-ivf"
_FORMAT_VERSION = 1
_BATCH_ROWS = 1 << 16
# Rows per chunk of the BLAS assignment (fixed: results must not depend on threads).
_ASSIGN_CHUNK = 4096
# Below this many queries the coarse search runs in the kernel, above it in BLAS.
_COARSE_BLAS_MIN_QUERIES = 32
_KMETRIC = {"l2": simd.core.METRIC_L2, "ip": simd.core.METRIC_IP, "cosine": simd.core.METRIC_COS}


def default_nlist(n: int) -> int:
    """About ``4 * sqrt(n)`` lists, at least 1, at most ``n // 16`` (lists of fewer
    rows cost more in coarse search than they save) and 65,536."""
    if n < 1:
        return 1
    return int(max(1, min(round(4 * math.sqrt(n)), n // 16, 65536)))


#: blocked codes from this many bytes on are allocated for transparent huge pages
_HUGE_BYTES = 8 << 20


def _huge_zeros(shape: tuple[int, int]) -> np.ndarray:
    """A zeroed uint8 array; from ``_HUGE_BYTES`` on, in memory advised for
    transparent huge pages where the OS offers them (:func:`~sutradb.storage.osio.huge_pages`):
    the fast scan jumps between lists, and with 4 KiB pages each list start costs a
    TLB miss (measured at 1M rows, nprobe 96: the scan ~6% faster with huge pages).
    Elsewhere ``np.zeros``."""
    nbytes = int(shape[0]) * int(shape[1])
    mm = osio.huge_pages(nbytes) if nbytes >= _HUGE_BYTES else None
    if mm is None:
        return np.zeros(shape, dtype=np.uint8)
    return np.frombuffer(mm, dtype=np.uint8, count=nbytes).reshape(shape)


def _is_int(v: object) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, np.integer))


class BlockedCodes:
    """List-ordered 4-bit PQ codes laid out for the fast scan.

    The rows (in list order) go in groups of 16; a group stores dword ``g`` (code
    bytes ``4g .. 4g + 3``) of its 16 rows as one 64-byte run, so the scan loads the
    sub-codes of 16 rows with one plain load per 8 subspaces (no gathers), as FAISS's
    fast-scan layout does. The bytes are the same as the unblocked codes', padded to
    a multiple of 16 rows and of 4 bytes per row (for ``m = 96``, 48 bytes: no
    padding within a row).

    Parameters
    ----------
    data : (16 * ceil(n / 16), 4 * ceil(width / 4)) uint8
        The groups (e.g. a memory map).
    n : int
        Rows.
    width : int
        Bytes of one unblocked code (the quantizer's ``code_size``).
    """

    __slots__ = ("data", "n", "width")

    def __init__(self, data: np.ndarray, n: int, width: int) -> None:
        n, width = int(n), int(width)
        g4 = (width + 3) // 4
        if (not isinstance(data, np.ndarray) or data.dtype != np.uint8
                or data.shape != (16 * ((n + 15) // 16), 4 * g4)):
            raise DimensionError(f"blocked codes of {n} rows x {width} bytes must be a uint8 "
                                 f"array of shape ({16 * ((n + 15) // 16)}, {4 * g4}), got "
                                 f"{getattr(data, 'shape', None)} {getattr(data, 'dtype', '')}")
        self.data = data if data.flags.c_contiguous else np.ascontiguousarray(data)
        self.n = n
        self.width = width

    @classmethod
    def from_rows(cls, codes: np.ndarray) -> "BlockedCodes":
        """Block (n, width) codes (rows and bytes past them are zero). Large blocks
        go in memory advised for transparent huge pages (:func:`_huge_zeros`)."""
        codes = np.asarray(codes, dtype=np.uint8)
        n, w = codes.shape
        g4, nb = (w + 3) // 4, (n + 15) // 16
        pad = np.zeros((nb * 16, 4 * g4), dtype=np.uint8)
        pad[:n, :w] = codes
        data = _huge_zeros((nb * 16, 4 * g4))
        data.reshape(nb, g4, 16, 4)[...] = pad.reshape(nb, 16, g4, 4).transpose(0, 2, 1, 3)
        return cls(data, n, w)

    def rows(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The codes of rows ``start:stop`` (default all), unblocked: a
        ``(stop - start, width)`` copy; only the groups holding them are read."""
        stop = self.n if stop is None else min(int(stop), self.n)
        start = max(0, int(start))
        if start >= stop:
            return np.zeros((0, self.width), np.uint8)
        g0, g1 = start // 16, (stop + 15) // 16
        g4 = self.data.shape[1] // 4
        part = self.data[16 * g0:16 * g1].reshape(g1 - g0, g4, 16, 4).transpose(0, 2, 1, 3)
        rows = part.reshape(16 * (g1 - g0), 4 * g4)
        return np.ascontiguousarray(rows[start - 16 * g0:stop - 16 * g0, :self.width])

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, width)``: the shape of the codes it holds."""
        return (self.n, self.width)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"BlockedCodes({self.n} rows x {self.width} bytes)"


class IVFIndex:
    """Inverted-file partition of a vector collection (coarse k-means).

    Parameters
    ----------
    dim : int
    nlist : int or None
        Number of lists; ``None`` chooses :func:`default_nlist` of the number of rows
        given to :meth:`fit`.
    metric : {"cosine", "ip", "l2"}
        Must match the :class:`ProductQuantizer` used in :meth:`search`. Vectors are
        normalised for ``cosine``, and the coarse k-means is then *spherical* (unit
        centres: nearest by L2 = largest cosine); measured on the PyPI MiniLM set it
        reaches the same share of the true neighbours in the probed lists with about
        20% fewer rows scanned than plain k-means centres. Lists are assigned and
        probed by squared L2 distance to the centres (for ``ip`` on unnormalised
        vectors this is FAISS's L2 coarse quantizer, not its IP one).
    seed : int
        Seeds the training sample, the k-means++ initialisation and the splitting of
        empty clusters: the same seed and data give bit-identical centres and lists,
        whatever the thread count.

    Attributes
    ----------
    centroids : (nlist, dim) float32
    perm : (n,) int64
        Row ids in list order: list ``l`` holds ``perm[offsets[l]:offsets[l + 1]]``
        (rows of a list in increasing id order).
    offsets : (nlist + 1,) int64
    """

    def __init__(self, dim: int, nlist: int | None = None, metric: str = "cosine", seed: int = 0) -> None:
        if not _is_int(dim) or dim < 1:
            raise InvalidArgumentError(f"dim must be a positive integer, got {dim!r}")
        if nlist is not None and (not _is_int(nlist) or nlist < 1):
            raise InvalidArgumentError(f"nlist must be a positive integer or None, got {nlist!r}")
        if metric not in METRICS:
            raise InvalidArgumentError(f"metric must be one of {METRICS}, got {metric!r}")
        if not _is_int(seed) or seed < 0:
            raise InvalidArgumentError(f"seed must be an integer >= 0, got {seed!r}")
        self.dim = int(dim)
        self.nlist = None if nlist is None else int(nlist)
        self.metric = metric
        self.seed = int(seed)
        self._centroids: np.ndarray | None = None
        # None until the centroids are set; read only after the trained check
        self._p16: np.ndarray | None = None      # float16 panels, built on first use
        self._P8: tuple[np.ndarray, np.ndarray, np.ndarray] = None  # type: ignore[assignment]  # (see above)
        self._cn: np.ndarray = None  # type: ignore[assignment]  # (see above)
        self.perm: np.ndarray | None = None
        self.offsets: np.ndarray | None = None
        self.training_error_ = float("nan")
        self.fit_params_: dict[str, Any] = {}

    # ------------------------------------------------------------------ basics
    def __repr__(self) -> str:
        state = "trained" if self.is_trained else "untrained"
        rows = f", {self.ntotal} rows" if self.perm is not None else ""
        return (f"IVFIndex(dim={self.dim}, nlist={self.nlist}, metric={self.metric!r}, "
                f"seed={self.seed}) [{state}{rows}]")

    @property
    def is_trained(self) -> bool:
        return self._centroids is not None

    @property
    def centroids(self) -> np.ndarray:
        if self._centroids is None:
            raise NotTrainedError("the IVF index is not trained: call fit() first")
        return self._centroids

    @property
    def ntotal(self) -> int:
        """Rows in the lists (0 before :meth:`build`)."""
        return 0 if self.perm is None else int(self.perm.shape[0])

    def list_sizes(self) -> np.ndarray:
        self._need_lists()
        return np.diff(cast(np.ndarray, self.offsets))

    def nbytes(self) -> int:
        """Bytes of the index's own arrays (centres, their int8 panels and norms,
        perm, offsets); the caller's codes and vectors are not included."""
        parts = (self._centroids, self._p16, self._cn, self.perm, self.offsets,
                 *(self._P8 or ()))
        return int(sum(a.nbytes for a in parts if a is not None))

    @property
    def _P16(self) -> np.ndarray:
        """float16 panels of the centres (``coarse_probes_f16``; the searches use the
        int8 panels ``_P8``): built on first use."""
        if self._p16 is None:
            self._p16 = simd.core.coarse_panels_f16(self.centroids)
        return self._p16

    def _set_centroids(self, C: np.ndarray) -> None:
        C = np.ascontiguousarray(C, dtype=np.float32)
        self._centroids = C
        self._p16 = None
        self._P8 = simd.core.coarse_panels_i8(C)
        self._cn = np.ascontiguousarray(np.einsum("ij,ij->i", C, C), dtype=np.float32)
        self.nlist = int(C.shape[0])

    def _need_lists(self) -> None:
        if self.perm is None or self.offsets is None:
            raise NotTrainedError("the IVF lists are empty: call build() (or add()) first")

    def _prepare(self, x: npt.ArrayLike, name: str, *, allow_1d: bool = False,
                 allow_empty: bool = True) -> np.ndarray:
        """(n, dim) float32 C-contiguous finite rows (normalised for cosine)."""
        return check_vectors(x, self.dim, self.metric, name, allow_1d=allow_1d,
                             allow_empty=allow_empty)

    # ---------------------------------------------------------------- training
    def fit(self, x: npt.ArrayLike, max_train: int | None = None, iters: int = 10,
            threads: int | None = None, progress: Callable[[int, int], object] | None = None
            ) -> IVFIndex:
        """Train the coarse centres: k-means++ initialisation (scikit-learn, on
        ``min(n_train, 8 * nlist)`` rows), then Lloyd iterations whose assignment
        step runs in BLAS (``||c||^2 - 2 x.c`` over fixed chunks of rows, one BLAS
        thread per chunk, chunks spread over ``threads``) and whose update step is
        the float64 kernel of the PQ engine; empty clusters are split as there.

        Parameters
        ----------
        x : (n, dim) array_like (any real dtype; float16 and memory maps are read in
            batches)
        max_train : int, optional
            Training rows (a seeded sample when ``n`` is larger); default
            ``64 * nlist``.
        iters : int
            Lloyd iterations.
        threads : int, optional
        progress : callable, optional
            ``progress(done, total)`` after each iteration.

        Returns
        -------
        self
        """
        nthreads = resolve_threads(threads)
        if not _is_int(iters) or iters < 0:
            raise InvalidArgumentError(f"iters must be an integer >= 0, got {iters!r}")
        if progress is not None and not callable(progress):
            raise InvalidArgumentError("progress must be callable: progress(done, total)")
        arr = x if isinstance(x, np.ndarray) else np.asarray(x)
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise DimensionError(f"x must be a 2-d array (n, {self.dim}), got shape {arr.shape}")
        n = arr.shape[0]
        nlist = self.nlist if self.nlist is not None else default_nlist(n)
        if n < nlist:
            raise InvalidArgumentError(f"training needs at least nlist={nlist} rows, got {n}")
        if max_train is None:
            max_train = 64 * nlist
        if not _is_int(max_train) or max_train < nlist:
            raise InvalidArgumentError(f"max_train must be an integer >= nlist={nlist}, "
                                       f"got {max_train!r}")
        rng = np.random.default_rng(self.seed)
        if n > max_train:
            arr = arr[np.sort(rng.choice(n, size=int(max_train), replace=False))]
        X = self._prepare(arr, "x", allow_empty=False)
        C, err = _coarse_kmeans(X, nlist, iters=int(iters), rng=rng, nthreads=nthreads,
                                progress=progress, spherical=self.metric == "cosine")
        self._set_centroids(C)
        self.perm = self.offsets = None
        self.training_error_ = err / X.shape[0]
        self.fit_params_ = {"n_train": int(X.shape[0]), "iters": int(iters)}
        return self

    def assign(self, x: npt.ArrayLike, threads: int | None = None) -> np.ndarray:
        """Nearest coarse centre (squared L2, first one on ties up to float rounding)
        of each row: (n,) int32."""
        C = self.centroids
        nthreads = resolve_threads(threads)
        arr = x if isinstance(x, np.ndarray) else np.asarray(x)
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise DimensionError(f"x must be a 2-d array (n, {self.dim}), got shape {arr.shape}")
        out = np.empty(arr.shape[0], dtype=np.int32)
        for s in range(0, arr.shape[0], _BATCH_ROWS):
            X = self._prepare(arr[s:s + _BATCH_ROWS], "x")
            out[s:s + X.shape[0]] = _assign_blas(X, C, self._cn, nthreads)[0]
        return out

    # ------------------------------------------------------------------- lists
    def build(self, list_ids: npt.ArrayLike) -> IVFIndex:
        """Lay rows ``0..n-1`` out by list: ``list_ids[i]`` is row i's list (from
        :meth:`assign`). Rows of a list keep increasing id order."""
        self.centroids
        lid = self._check_list_ids(list_ids)
        counts = np.bincount(lid, minlength=cast(int, self.nlist))
        self.perm = np.argsort(lid, kind="stable").astype(np.int64)
        self.offsets = np.zeros(cast(int, self.nlist) + 1, dtype=np.int64)
        np.cumsum(counts, out=self.offsets[1:])
        return self

    def add(self, list_ids: npt.ArrayLike) -> np.ndarray:
        """Append rows ``ntotal .. ntotal + len(list_ids) - 1`` to their lists (each
        at the end of its list). Returns ``src`` (new ``ntotal``,) int64: the new
        list-ordered codes are ``concat([old_list_codes, new_codes])[src]`` (see
        :meth:`extend_codes`)."""
        self.centroids
        lid = self._check_list_ids(list_ids)
        if self.perm is None:
            self.build(np.zeros(0, np.int32))
        n_old = self.ntotal
        old_counts = np.diff(cast(np.ndarray, self.offsets))
        new_counts = np.bincount(lid, minlength=cast(int, self.nlist))
        new_offsets = np.zeros(cast(int, self.nlist) + 1, dtype=np.int64)
        np.cumsum(old_counts + new_counts, out=new_offsets[1:])
        order = np.argsort(lid, kind="stable")
        # source rows (in concat([old list order, new rows])) of every new position
        src = np.empty(n_old + lid.shape[0], dtype=np.int64)
        shift_old = np.repeat(new_offsets[:-1] - cast(np.ndarray, self.offsets)[:-1], old_counts)
        src[np.arange(n_old) + shift_old] = np.arange(n_old)
        new_start = np.zeros(cast(int, self.nlist) + 1, dtype=np.int64)
        np.cumsum(new_counts, out=new_start[1:])
        rank = np.arange(lid.shape[0]) - np.repeat(new_start[:-1], new_counts)
        pos_new = new_offsets[:-1][lid[order]] + old_counts[lid[order]] + rank
        src[pos_new] = n_old + order
        new_ids = np.arange(n_old, n_old + lid.shape[0], dtype=np.int64)
        self.perm = np.concatenate([self.perm, new_ids])[src]
        self.offsets = new_offsets
        return src

    def extend_codes(self, list_codes: npt.ArrayLike, new_codes: npt.ArrayLike,
                     src: np.ndarray) -> np.ndarray:
        """The list-ordered codes after :meth:`add` returned ``src``."""
        return np.ascontiguousarray(np.concatenate([np.asarray(list_codes),
                                                    np.asarray(new_codes)])[src])

    def list_order(self, codes: npt.ArrayLike, blocked: bool = False) -> np.ndarray | BlockedCodes:
        """``codes`` (rows in id order) rearranged in list order, as :meth:`search`
        takes them (a contiguous copy; store it next to the flat codes).

        ``blocked=True`` (4-bit codes): a :class:`BlockedCodes`, which the search
        scans with the blocked fast-scan kernel (same results, several times
        faster per row than the unblocked 4-bit or 8-bit codes)."""
        self._need_lists()
        codes = np.asarray(codes)
        if codes.shape[0] != self.ntotal:
            raise DimensionError(f"codes have {codes.shape[0]} rows, the lists {self.ntotal}")
        out = np.ascontiguousarray(codes[self.perm])
        return BlockedCodes.from_rows(out) if blocked else out

    def set_lists(self, perm: npt.ArrayLike, offsets: npt.ArrayLike) -> IVFIndex:
        """Install a list layout kept by the caller (e.g. memory maps); validated."""
        self.centroids
        perm = np.asarray(perm)
        offsets = np.asarray(offsets)
        if perm.ndim != 1 or perm.dtype != np.int64:
            raise InvalidArgumentError("perm must be a 1-d int64 array")
        if offsets.shape != (cast(int, self.nlist) + 1,) or offsets.dtype != np.int64:
            raise InvalidArgumentError(f"offsets must be ({cast(int, self.nlist) + 1},) int64")
        if offsets[0] != 0 or offsets[-1] != perm.shape[0] or (np.diff(offsets) < 0).any():
            raise InvalidArgumentError("offsets must rise from 0 to len(perm)")
        if perm.size and (perm.min() < 0):
            raise InvalidArgumentError("perm holds negative ids")
        self.perm = perm
        self.offsets = offsets
        return self

    def _check_list_ids(self, list_ids: npt.ArrayLike) -> np.ndarray:
        lid = np.asarray(list_ids)
        if lid.ndim != 1 or lid.dtype.kind not in "iu":
            raise InvalidArgumentError("list_ids must be a 1-d integer array")
        if lid.size and (lid.min() < 0 or lid.max() >= self.nlist):
            raise InvalidArgumentError(f"list ids must be in [0, {self.nlist})")
        return lid.astype(np.int64, copy=False)

    # ------------------------------------------------------------------ search
    def probes(self, queries: np.ndarray, nprobe: int, threads: int | None = None) -> np.ndarray:
        """The ``nprobe`` nearest lists (by ``||c||^2 - 2 q.c``) of each prepared
        (float32, normalised for cosine) query: (nq, nprobe) int64, in no particular
        order within a row (the scan's result does not depend on it).

        Fewer than 32 queries: the int8-panel kernel (streams a quarter of the bytes
        of the float32 centres, quickselect instead of a sort); more: BLAS over
        float32 centres. Near-ties at the ``nprobe``-th list may resolve differently
        in the two paths (int8 rounding), which only matters for which list is
        scanned last."""
        Q = queries
        nthreads = resolve_threads(threads)
        if Q.shape[0] < _COARSE_BLAS_MIN_QUERIES:
            return simd.core.coarse_probes_i8(Q, *self._P8, self._cn, nprobe, nthreads)
        P = np.empty((Q.shape[0], nprobe), dtype=np.int64)
        for s in range(0, Q.shape[0], _ASSIGN_CHUNK):
            d = self._cn[None, :] - 2.0 * (Q[s:s + _ASSIGN_CHUNK] @ cast(np.ndarray, self._centroids).T)
            if nprobe < cast(int, self.nlist):
                part = np.argpartition(d, nprobe - 1, axis=1)[:, :nprobe]
            else:
                part = np.broadcast_to(np.arange(cast(int, self.nlist)), d.shape)
            dv = np.take_along_axis(d, part, axis=1)
            o = np.lexsort((part, dv), axis=1)
            P[s:s + _ASSIGN_CHUNK] = np.take_along_axis(part, o, axis=1)
        return P

    def search(self, queries: npt.ArrayLike, codes: npt.ArrayLike | BlockedCodes, pq: ProductQuantizer,
               k: int = 10, nprobe: int = 8, rerank: int | None = None,
               vectors: np.ndarray | None = None, mask: npt.ArrayLike | None = None,
               threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest rows of each query.

        Parameters
        ----------
        queries : (nq, dim) or (dim,) array_like
        codes : (n, code_size) uint8 or BlockedCodes
            The PQ codes **in list order** (:meth:`list_order`); may be a read-only
            memory map. 4-bit codes as :class:`BlockedCodes` (``list_order(...,
            blocked=True)``) take the blocked fast scan.
        pq : ProductQuantizer
            The trained quantizer of the codes (same ``dim`` and ``metric``).
        k : int >= 1
        nprobe : int
            Lists scanned per query (clipped to ``nlist``).
        rerank : int, optional
            Candidates taken from the ADC scan and re-ranked exactly against
            ``vectors`` (default ``max(10 * k, 100)`` when ``vectors`` is given; it
            is raised to ``k`` at least). ``0`` or no ``vectors``: ADC distances
            only.
        vectors : (N, dim) float32 or float16, optional
            The stored vectors by row id (a memory map is read in place: only the
            candidates' rows are touched).
        mask : (N,) bool or uint8, optional
            Row ids where it is false are skipped inside the scan (deleted, filtered
            out); ids beyond its length are skipped too.
        threads : int, optional
            Parallel over queries (and over probed lists for fewer queries than
            threads); results do not depend on it.

        Returns
        -------
        D : (nq, k) float32 ascending (ADC distances as :meth:`ProductQuantizer.search`
            reports them, or exact ones after re-ranking), ``inf`` padded
        I : (nq, k) int64 row ids, ``-1`` padded
        """
        self.centroids
        self._need_lists()
        if not isinstance(pq, ProductQuantizer):
            raise InvalidArgumentError("pq must be a ProductQuantizer")
        if pq.dim != self.dim or pq.metric != self.metric:
            raise InvalidArgumentError(f"the quantizer ({pq.dim}-d, {pq.metric!r}) does not "
                                       f"match the index ({self.dim}-d, {self.metric!r})")
        pq.codebooks                          # NotTrainedError
        k = check_k(k)
        if not _is_int(nprobe) or nprobe < 1:
            raise InvalidArgumentError(f"nprobe must be an integer >= 1, got {nprobe!r}")
        nprobe = min(int(nprobe), cast(int, self.nlist))
        if rerank is None:
            rerank = max(10 * k, 100) if vectors is not None else 0
        if not _is_int(rerank) or rerank < 0:
            raise InvalidArgumentError(f"rerank must be an integer >= 0, got {rerank!r}")
        do_rerank = vectors is not None and rerank > 0
        nthreads = resolve_threads(threads)
        Q = self._prepare_queries(queries)
        codes = self._check_list_codes(codes, pq)
        if codes.shape[0] != self.ntotal:
            raise DimensionError(f"codes have {codes.shape[0]} rows, the lists {self.ntotal} "
                                 f"(pass the list-ordered codes: ivf.list_order(codes))")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.ndim != 1:
                raise DimensionError(f"mask must be 1-d, got shape {mask.shape}")
            mask = check_mask(mask, mask.shape[0])
        kk = max(k, int(rerank)) if do_rerank else k
        v = vectors_view(vectors, self.dim) if do_rerank else None  # type: ignore[arg-type]  # do_rerank: given
        return self._search_prepared(Q, codes, pq, k, nprobe, kk, v, mask, nthreads)

    @staticmethod
    def _check_list_codes(codes: npt.ArrayLike | BlockedCodes, pq: ProductQuantizer
                          ) -> np.ndarray | BlockedCodes:
        """``codes`` checked against the quantizer: an array (as ``pq._check_codes``)
        or :class:`BlockedCodes` of 4-bit codes of its width."""
        if isinstance(codes, BlockedCodes):
            if pq.nbits != 4 or codes.width != pq.code_size:
                raise DimensionError(f"blocked codes of {codes.width} bytes do not fit the "
                                     f"quantizer (m={pq.m}, nbits={pq.nbits}): blocked codes "
                                     f"are 4-bit codes")
            return codes
        return pq._check_codes(codes)

    def _search_prepared(self, Q: np.ndarray, codes: np.ndarray | BlockedCodes, pq: ProductQuantizer,
                         k: int, nprobe: int, kk: int, v: np.ndarray | None,
                         mask: np.ndarray | None, nthreads: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` on validated arguments (the caller's contract): ``Q``
        prepared queries, ``codes`` list-ordered C-contiguous uint8 codes of
        ``ntotal`` rows (or :class:`BlockedCodes` of them), ``1 <= nprobe <=
        nlist``, ``kk >= k`` ADC candidates, ``v`` the re-rank view of the vectors
        (:func:`vectors_view`) or None for ADC distances, ``mask`` None or
        C-contiguous uint8 / bool."""
        if mask is not None and mask.dtype == np.bool_:
            mask = mask.view(np.uint8)
        kmetric = _KMETRIC[self.metric]
        blocked = isinstance(codes, BlockedCodes)
        # blocked 4-bit codes with re-ranking: candidates by their quantised sums
        # (no exact ADC distances: the re-rank gives the exact ones)
        approx = blocked and v is not None
        if blocked:
            codes = cast(BlockedCodes, codes).data
        if Q.shape[0] < _COARSE_BLAS_MIN_QUERIES and (nthreads == 1 or Q.shape[0] >= nthreads):
            # latency path: the whole pipeline in one kernel call per batch (the same
            # results as the steps below, without their Python round trips)
            D, I = simd.core.ivf_search(Q, None, self._cn, nprobe, *pq._table_ops,
                                    pq._adc_metric, cast(np.ndarray, codes),   # (.data if blocked)
                                    cast(np.ndarray, self.offsets),
                                    cast(np.ndarray, self.perm), kk, k,
                                    mask, v, kmetric, nthreads, blocked=blocked,
                                    panels8=self._P8, approx=approx)
            if self.metric == "cosine":
                if v is not None:
                    D[I >= 0] += 1.0
                else:
                    D *= 0.5
            return D, I
        P = self.probes(Q, nprobe, nthreads)
        tables = simd.core.distance_tables_t(Q, *pq._table_ops, pq._adc_metric, nthreads)
        D, I = simd.core.ivf_adc_topk(tables, cast(np.ndarray, codes), cast(np.ndarray, self.offsets), P,
                                  cast(np.ndarray, self.perm), kk, mask,
                                  nthreads, blocked=blocked, approx=approx)
        if v is None:
            if pq.metric == "cosine":
                D *= 0.5
            return D, I
        # candidate ids come from perm (ids >= len(vectors) are skipped by the kernel)
        D, I = simd.core.rerank(Q, v, I, k, kmetric, nthreads)
        if self.metric == "cosine":
            D[I >= 0] += 1.0
        return D, I

    def _prepare_queries(self, queries: npt.ArrayLike) -> np.ndarray:
        """``_prepare`` with a fast path for one query (the latency-bound case)."""
        if isinstance(queries, np.ndarray) and queries.dtype.kind == "f" and (
                queries.shape == (self.dim,) or queries.shape == (1, self.dim)):
            q = np.array(queries, dtype=np.float32, ndmin=2, order="C")
            if not np.isfinite(q).all():
                raise InvalidArgumentError("queries holds NaN or infinite values")
            if self.metric == "cosine":
                nrm = float(np.sqrt(np.dot(q[0], q[0])))
                if nrm > 0:
                    q /= nrm
            return q
        return self._prepare(queries, "queries", allow_1d=True)

    # ------------------------------------------------------------- persistence
    def to_dict(self, lists: bool = True) -> dict[str, Any]:
        """A msgpack-able description: parameters, the coarse centres as raw
        little-endian float32 bytes with a CRC32, and (``lists=True``, once built)
        ``perm`` / ``offsets`` as raw little-endian int64 with their CRC32."""
        d = {"format": _FORMAT, "version": _FORMAT_VERSION, "dim": self.dim,
             "nlist": self.nlist, "metric": self.metric, "seed": self.seed,
             "fit_params": self.fit_params_, "training_error": self.training_error_}
        if self._centroids is not None:
            raw = self._centroids.astype("<f4", copy=False).tobytes()
            d["centroids"] = raw
            d["centroids_crc32"] = zlib.crc32(raw)
        if lists and self.perm is not None:
            for name in ("perm", "offsets"):
                raw = np.ascontiguousarray(getattr(self, name), dtype="<i8").tobytes()
                d[name] = raw
                d[name + "_crc32"] = zlib.crc32(raw)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "<dict>") -> IVFIndex:
        """Inverse of :meth:`to_dict`; anything malformed raises
        :class:`~sutradb.errors.CorruptDatabaseError` naming ``source``."""
        def bad(why: str) -> CorruptDatabaseError:
            return CorruptDatabaseError(f"{source}: not a valid sutradb IVF index ({why})")

        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise bad("wrong format tag")
        if d.get("version") != _FORMAT_VERSION:
            raise bad(f"unsupported version {d.get('version')!r}")
        try:
            ivf = cls(d["dim"], d["nlist"], d["metric"], d["seed"])
        except (KeyError, TypeError, InvalidArgumentError) as e:
            raise bad(f"bad parameters: {e}") from None
        fp = d.get("fit_params", {})
        ivf.fit_params_ = dict(fp) if isinstance(fp, dict) else {}
        te = d.get("training_error", float("nan"))
        ivf.training_error_ = float(te) if isinstance(te, (int, float)) else float("nan")

        def blob(name: str, itemsize: int) -> bytes:
            raw = d.get(name)
            if not isinstance(raw, bytes):
                raise bad(f"{name} are not bytes")
            if len(raw) % itemsize:
                raise bad(f"{name}: {len(raw)} bytes is not a whole number of items")
            if zlib.crc32(raw) != d.get(name + "_crc32"):
                raise bad(f"{name} checksum mismatch")
            return raw

        if d.get("centroids") is not None:
            if ivf.nlist is None:
                raise bad("centroids without nlist")
            raw = blob("centroids", 4)
            if len(raw) != ivf.nlist * ivf.dim * 4:
                raise bad(f"centroids hold {len(raw)} bytes, expected {ivf.nlist * ivf.dim * 4}")
            C = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(ivf.nlist, ivf.dim)
            if not np.isfinite(C).all():
                raise bad("centroids hold NaN or infinite values")
            ivf._set_centroids(C)
        if d.get("perm") is not None or d.get("offsets") is not None:
            if ivf._centroids is None:
                raise bad("lists without centroids")
            perm = np.frombuffer(blob("perm", 8), dtype="<i8").astype(np.int64)
            offsets = np.frombuffer(blob("offsets", 8), dtype="<i8").astype(np.int64)
            if offsets.shape != (cast(int, ivf.nlist) + 1,) or offsets[0] != 0 \
                    or offsets[-1] != perm.shape[0] or (np.diff(offsets) < 0).any():
                raise bad("offsets do not describe the lists")
            if perm.size and (perm.min() < 0 or
                              np.bincount(perm, minlength=1).max(initial=0) > 1):
                raise bad("perm is not a set of distinct row ids")
            ivf.perm, ivf.offsets = perm, offsets
        return ivf


# ---------------------------------------------------------------------- k-means

def vectors_view(vectors: np.ndarray, dim: int) -> np.ndarray:
    """float32 rows, or float16 rows viewed as uint16, for the re-rank kernel."""
    if not isinstance(vectors, np.ndarray):
        vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise DimensionError(f"vectors must be (n, {dim}), got {vectors.shape}")
    if vectors.dtype == np.float16:
        return (vectors if vectors.flags.c_contiguous else np.ascontiguousarray(vectors)).view(np.uint16)
    if vectors.dtype == np.float32:
        return vectors if vectors.flags.c_contiguous else np.ascontiguousarray(vectors)
    raise InvalidArgumentError(f"vectors must be float32 or float16, got {vectors.dtype}")


def _assign_blas(X: np.ndarray, C: np.ndarray, cn: np.ndarray,
                 nthreads: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre of every row of X by ``||c||^2 - 2 x.c`` in BLAS (sgemm), over
    fixed chunks of rows with one BLAS thread each (so the result does not depend on
    ``nthreads``). Returns (labels int32, squared distances float32 clipped at 0)."""
    from threadpoolctl import threadpool_limits

    n = X.shape[0]
    labels = np.empty(n, dtype=np.int32)
    sq = np.empty(n, dtype=np.float32)
    CT = np.ascontiguousarray(C.T)

    def work(s: int) -> None:
        blk = X[s:s + _ASSIGN_CHUNK]
        d = blk @ CT
        d *= -2.0
        d += cn[None, :]
        lab = np.argmin(d, axis=1)
        labels[s:s + blk.shape[0]] = lab
        v = d[np.arange(blk.shape[0]), lab] + np.einsum("ij,ij->i", blk, blk)
        sq[s:s + blk.shape[0]] = np.maximum(v, 0)

    starts = range(0, n, _ASSIGN_CHUNK)
    with threadpool_limits(limits=1, user_api="blas"):
        if nthreads == 1 or n <= _ASSIGN_CHUNK:
            for s in starts:
                work(s)
        else:
            with ThreadPoolExecutor(nthreads) as ex:
                list(ex.map(work, starts))
    return labels, sq


def _unit_rows(C: np.ndarray) -> np.ndarray:
    C = np.asarray(C, dtype=np.float64)
    nrm = np.linalg.norm(C, axis=1, keepdims=True)
    nrm[nrm == 0] = 1.0
    return cast(np.ndarray, C / nrm)


def _coarse_kmeans(X: np.ndarray, K: int, *, iters: int, rng: np.random.Generator,
                   nthreads: int, progress: Callable[[int, int], object] | None = None,
                   spherical: bool = False) -> tuple[np.ndarray, float]:
    """k-means++ (scikit-learn, on at most 8 * K rows) then Lloyd iterations with the
    BLAS assignment and the float64 update kernel. ``spherical``: centres are
    normalised after every update (for unit vectors: nearest by L2 = largest inner
    product). Returns (centres, SSE)."""
    from sklearn.cluster import kmeans_plusplus
    from threadpoolctl import threadpool_limits

    n = X.shape[0]
    n_init = min(n, 8 * K)
    init_rows = X if n_init >= n else X[np.sort(rng.choice(n, size=n_init, replace=False))]
    with threadpool_limits(limits=1):
        C, _ = kmeans_plusplus(np.ascontiguousarray(init_rows, dtype=np.float64), K,
                               random_state=int(rng.integers(0, 2**31 - 1)))
    if spherical:
        C = _unit_rows(C)
    C = np.ascontiguousarray(C, dtype=np.float32)
    sq = None
    for it in range(iters):
        cn = np.einsum("ij,ij->i", C, C).astype(np.float32)
        labels, sq = _assign_blas(X, C, cn, nthreads)
        sums, counts = simd.pq.update(X, labels, K)
        newC = np.empty_like(sums)
        nonempty = counts > 0
        newC[nonempty] = sums[nonempty] / counts[nonempty, None]
        split_empty(newC, counts, rng)
        if spherical:
            newC = _unit_rows(newC)
        C = np.ascontiguousarray(newC, dtype=np.float32)
        if progress is not None:
            progress(it + 1, iters)
    if sq is None:
        cn = np.einsum("ij,ij->i", C, C).astype(np.float32)
        _, sq = _assign_blas(X, C, cn, nthreads)
    return C, float(sq.sum(dtype=np.float64))


# ---------------------------------------------------------------------- tuning

def exact_topk(queries: npt.ArrayLike, vectors: np.ndarray, k: int, metric: str,
               chunk: int = 16384, mask: np.ndarray | None = None) -> np.ndarray:
    """Exact top-k row ids of each query by brute force (NumPy, chunked over the
    vectors; rows where ``mask`` is false are skipped, ``-1`` pads): the ground
    truth :func:`tune` measures recall against."""
    Q = np.asarray(queries, dtype=np.float32)
    if Q.ndim == 1:
        Q = Q[None, :]
    if metric == "cosine":
        Q = Q.copy()
        normalise_rows(Q)
    n = vectors.shape[0]
    bestD = np.full((Q.shape[0], 0), np.inf, np.float32)
    bestI = np.zeros((Q.shape[0], 0), np.int64)
    for s in range(0, n, chunk):
        V = np.asarray(vectors[s:s + chunk], dtype=np.float32)
        if metric == "l2":
            d = (V * V).sum(1)[None, :] - 2 * Q @ V.T
        elif metric == "ip":
            d = -(Q @ V.T)
        else:
            nv = np.sqrt((V * V).sum(1))
            nv[nv == 0] = 1
            d = -(Q @ V.T) / nv[None, :]
        if mask is not None:
            d[:, ~np.asarray(mask[s:s + V.shape[0]], dtype=bool)] = np.inf
        allD = np.concatenate([bestD, d], axis=1)
        allI = np.concatenate([bestI, np.broadcast_to(np.arange(s, s + V.shape[0]), d.shape)],
                              axis=1)
        kk = min(k, allD.shape[1])
        part = np.argpartition(allD, kk - 1, axis=1)[:, :kk]
        bestD = np.take_along_axis(allD, part, axis=1)
        bestI = np.take_along_axis(allI, part, axis=1)
    o = np.argsort(bestD, axis=1, kind="stable")
    return np.where(np.isfinite(np.take_along_axis(bestD, o, axis=1)),
                    np.take_along_axis(bestI, o, axis=1), -1)


def tune(ivf: IVFIndex, pq: ProductQuantizer, queries: npt.ArrayLike,
         codes: npt.ArrayLike | BlockedCodes, vectors: np.ndarray, *, k: int = 10,
         target_recall: float = 0.95, nprobes: Sequence[int] | None = None,
         reranks: Sequence[int] | None = None, mask: npt.ArrayLike | None = None,
         threads: int | None = None, batched: bool = False,
         gt: np.ndarray | None = None) -> dict[str, Any]:
    """Pick ``nprobe`` and ``rerank`` for a target recall@k on the caller's data.

    The exact top-k of ``queries`` over ``vectors`` (brute force, or ``gt`` if
    given) is the ground truth; every (nprobe, rerank) of the grid is run once
    untimed for its recall, the settings that reach ``target_recall`` are timed
    (one query per call unless ``batched``), and the fastest wins. If none reaches
    the target, the one with the best recall is returned with ``"reached": False``.

    Returns a dict: ``nprobe``, ``rerank``, ``recall``, ``qps``, ``reached`` and
    ``grid`` (every setting measured: nprobe, rerank, recall, qps or None).
    """
    Q = ivf._prepare(queries, "queries", allow_1d=True, allow_empty=False)
    if not (0 < target_recall <= 1):
        raise InvalidArgumentError("target_recall must be in (0, 1]")
    if nprobes is None:
        nprobes = sorted({p for p in (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512)
                          if p <= cast(int, ivf.nlist)} | {min(cast(int, ivf.nlist), 512)})
    if reranks is None:
        reranks = (k, 2 * k, 5 * k, 10 * k, 20 * k)
    if gt is None:
        gt = exact_topk(Q, vectors, k, ivf.metric)
    gt = np.asarray(gt)[:, :k]

    def recall(I: np.ndarray) -> float:
        return float(np.mean([len(set(a[a >= 0].tolist()) & set(b.tolist())) / k
                              for a, b in zip(I, gt)]))

    grid: list[dict[str, Any]] = []
    for r in reranks:
        for p in nprobes:
            _, I = ivf.search(Q, codes, pq, k=k, nprobe=p, rerank=r, vectors=vectors,
                              mask=mask, threads=threads)
            rec = recall(I)
            grid.append({"nprobe": int(p), "rerank": int(r), "recall": rec, "qps": None})
            if rec >= target_recall:
                break          # larger nprobe at this rerank only costs more
    ok = [g for g in grid if g["recall"] >= target_recall]
    for g in ok:
        if batched:
            t0 = time.perf_counter()
            ivf.search(Q, codes, pq, k=k, nprobe=g["nprobe"], rerank=g["rerank"],
                       vectors=vectors, mask=mask, threads=threads)
            g["qps"] = Q.shape[0] / (time.perf_counter() - t0)
        else:
            t0 = time.perf_counter()
            for i in range(Q.shape[0]):
                ivf.search(Q[i:i + 1], codes, pq, k=k, nprobe=g["nprobe"], rerank=g["rerank"],
                           vectors=vectors, mask=mask, threads=threads)
            g["qps"] = Q.shape[0] / (time.perf_counter() - t0)
    if ok:
        best = max(ok, key=lambda g: g["qps"])
        return dict(best, reached=True, grid=grid)
    best = max(grid, key=lambda g: (g["recall"], -g["nprobe"] * g["rerank"]))
    return dict(best, reached=False, grid=grid)
