"""The product quantizer: training, encoding, decoding and ADC search.

This is the Python face of the kernels in ``sutradb/simd.pq.pyx`` (training and
encoding) and ``sutradb/simd.core.pyx`` (distance tables, the ADC scan with top-k,
re-ranking, symmetric distances). Validation lives here; the kernels trust what
they are given.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import msgpack
import numpy as np

from .. import simd
from ..errors import (
    CorruptDatabaseError,
    DimensionError,
    InvalidArgumentError,
    NotTrainedError,
)

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["ProductQuantizer", "pack4", "unpack4", "default_threads", "check_vectors"]

METRICS = ("l2", "ip", "cosine")
_FORMAT = "sutradb-pq"
_FORMAT_VERSION = 1
# The largest file ProductQuantizer.load will read (codebooks are at most
# M * 256 * Ds floats: a few MiB for any sane dimension).
_MAX_FILE_BYTES = 1 << 30
# Rows per batch when converting inputs to float32 (bounds temporary memory).
_BATCH_ROWS = 1 << 16


def default_threads() -> int:
    """Threads the kernels use when a call says ``threads=None``: the CPUs this
    process may run on (``SUTRADB_NUM_THREADS`` overrides)."""
    env = os.environ.get("SUTRADB_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise InvalidArgumentError(f"SUTRADB_NUM_THREADS={env!r} is not an integer") from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_DEFAULT_THREADS: int | None = None


def resolve_threads(threads: int | None) -> int:
    """The kernel thread count of a ``threads=`` argument: None is
    :func:`default_threads` (looked up once per process), else a positive integer
    (InvalidArgumentError otherwise). Shared with :mod:`sutradb.index.ivf`."""
    global _DEFAULT_THREADS
    if threads is None:
        if _DEFAULT_THREADS is None:        # once per process: a syscall per search adds up
            _DEFAULT_THREADS = default_threads()
        return _DEFAULT_THREADS
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise InvalidArgumentError(f"threads must be a positive integer or None, got {threads!r}")
    return int(threads)


def pack4(codes: np.ndarray) -> np.ndarray:
    """Pack (n, M) 4-bit codes two per byte: (n, ceil(M/2)) uint8, subspace 2j in
    the low nibble of byte j and 2j + 1 in the high nibble (0 pad for odd M)."""
    codes = np.asarray(codes, dtype=np.uint8)
    n, M = codes.shape
    if M % 2:
        codes = np.concatenate([codes, np.zeros((n, 1), np.uint8)], axis=1)
    return np.ascontiguousarray(codes[:, 0::2] | (codes[:, 1::2] << 4))


def unpack4(packed: np.ndarray, M: int) -> np.ndarray:
    """Inverse of :func:`pack4`: (n, ceil(M/2)) uint8 -> (n, M) uint8."""
    packed = np.asarray(packed, dtype=np.uint8)
    out = np.empty((packed.shape[0], 2 * packed.shape[1]), np.uint8)
    out[:, 0::2] = packed & 15
    out[:, 1::2] = packed >> 4
    return np.ascontiguousarray(out[:, :M])


class ProductQuantizer:
    """Product quantizer (Jégou et al., 2011) with Cython kernels.

    The ``dim``-dimensional space is split into ``m`` subspaces of ``dim // m``
    dimensions; each is quantized by its own k-means codebook of ``2**nbits``
    centroids, so a vector is stored as ``m`` small integers (``m`` bytes for
    8-bit codes, ``ceil(m / 2)`` bytes for 4-bit codes).

    Parameters
    ----------
    dim : int
        Dimension of the vectors.
    m : int
        Number of subspaces; must divide ``dim``.
    nbits : {8, 4}
        Bits per sub-code (``Ks = 2**nbits`` centroids per subspace).
    metric : {"l2", "ip", "cosine"}
        ``"l2"``: squared Euclidean distance; ``"ip"``: negated inner product;
        ``"cosine"``: ``1 - cos`` (vectors are normalised before training, encoding
        and search, then searched by inner product).
    seed : int
        Seeds the training sample, the k-means++ initialisation and the re-seeding of
        empty clusters: the same seed and data give bit-identical codebooks, whatever
        the thread count.

    Attributes
    ----------
    codebooks : (m, Ks, dim // m) float32 ndarray
        Centroids of each subspace (after ``fit``).
    Ks, Ds, code_size : int
        Centroids per subspace, dimensions per subspace, bytes per code.
    training_error_ : float
        Mean squared reconstruction error of the training sample after ``fit``.

    Examples
    --------
    >>> import numpy as np, sutradb
    >>> x = np.random.default_rng(0).standard_normal((5000, 64)).astype("float32")
    >>> pq = sutradb.ProductQuantizer(64, 8, seed=0).fit(x, iters=5)
    >>> codes = pq.encode(x)
    >>> D, I = pq.search(x[:3], codes, k=5)
    >>> I.shape
    (3, 5)
    """

    def __init__(self, dim: int, m: int, nbits: int = 8, metric: str = "l2", seed: int = 0) -> None:
        for name, v in (("dim", dim), ("m", m), ("nbits", nbits), ("seed", seed)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise InvalidArgumentError(f"{name} must be an integer, got {v!r}")
        if dim < 1 or m < 1:
            raise InvalidArgumentError(f"dim and m must be >= 1 (got dim={dim}, m={m})")
        if dim % m:
            raise DimensionError(f"dim={dim} is not divisible by m={m}: choose m among "
                                 f"{[d for d in range(1, min(dim, 128) + 1) if dim % d == 0]}")
        if nbits not in (4, 8):
            raise InvalidArgumentError(f"nbits must be 4 or 8, got {nbits!r}")
        if metric not in METRICS:
            raise InvalidArgumentError(f"metric must be one of {METRICS}, got {metric!r}")
        if seed < 0:
            raise InvalidArgumentError("seed must be >= 0")
        self.dim = int(dim)
        self.m = int(m)
        self.nbits = int(nbits)
        self.metric = metric
        self.seed = int(seed)
        self.Ks = 1 << self.nbits
        self.Ds = self.dim // self.m
        self.code_size = self.m if self.nbits == 8 else (self.m + 1) // 2
        self._codebooks: np.ndarray | None = None
        self._sdc: np.ndarray | None = None
        # (transposed codebooks, squared norms), cached; None until the codebooks are set
        # and read only after the trained check
        self._table_ops: tuple[np.ndarray, np.ndarray] = None  # type: ignore[assignment]  # (see above)
        self.training_error_ = float("nan")
        self.fit_params_: dict[str, Any] = {}

    # ------------------------------------------------------------------ helpers
    def __repr__(self) -> str:
        state = "trained" if self.is_trained else "untrained"
        return (f"ProductQuantizer(dim={self.dim}, m={self.m}, nbits={self.nbits}, "
                f"metric={self.metric!r}, seed={self.seed}) [{state}]")

    @property
    def is_trained(self) -> bool:
        return self._codebooks is not None

    @property
    def codebooks(self) -> np.ndarray:
        if self._codebooks is None:
            raise NotTrainedError("the quantizer is not trained: call fit() first")
        return self._codebooks

    @property
    def _kernel_metric(self) -> int:
        """Metric of SDC tables and re-ranking-free distances: ``ip`` for ``ip`` and
        ``cosine``, ``l2`` for ``l2``."""
        return simd.core.METRIC_L2 if self.metric == "l2" else simd.core.METRIC_IP

    @property
    def _adc_metric(self) -> int:
        """Metric of the ADC tables. ``cosine`` ranks by squared L2 between the
        normalised query and the reconstruction: on unit vectors it orders exactly
        as the inner product does, and unlike the inner-product table it also sees
        each reconstruction's norm error (measured on MiniLM embeddings: recall@10
        0.68 vs 0.65 with the same codes). Reported as ``||q - x_hat||^2 / 2``,
        which is ``1 - cos`` up to that error."""
        return simd.core.METRIC_IP if self.metric == "ip" else simd.core.METRIC_L2

    def _set_codebooks(self, codebooks: np.ndarray) -> None:
        self._codebooks = codebooks
        self._sdc = None
        self._table_ops = simd.core.table_operands(codebooks)

    def _check_vectors(self, x: npt.ArrayLike, name: str, *, allow_1d: bool = False,
                       allow_empty: bool = True) -> np.ndarray:
        """(n, dim) float32 C-contiguous, finite; normalised for cosine."""
        return check_vectors(x, self.dim, self.metric, name, allow_1d=allow_1d,
                             allow_empty=allow_empty)

    def _check_codes(self, codes: npt.ArrayLike, name: str = "codes") -> np.ndarray:
        if not isinstance(codes, np.ndarray):
            codes = np.asarray(codes)
        if codes.dtype != np.uint8:
            raise InvalidArgumentError(f"{name} must be uint8, got {codes.dtype}")
        if codes.ndim != 2 or codes.shape[1] != self.code_size:
            raise DimensionError(f"{name} must have shape (n, {self.code_size}) for m={self.m}, "
                                 f"nbits={self.nbits}; got {codes.shape}")
        if not codes.flags.c_contiguous:
            codes = np.ascontiguousarray(codes)
        return cast(np.ndarray, codes)

    # ------------------------------------------------------------------ training
    def fit(self, x: npt.ArrayLike, max_train: int | None = None, iters: int = 25,
            threads: int | None = None, progress: Callable[[int, int], object] | None = None, *,
            tol: float = 0.0, init_sample: int | None = None) -> ProductQuantizer:
        """Train the codebooks with per-subspace k-means.

        Parameters
        ----------
        x : (n, dim) array_like
            Training vectors (any real dtype; float16 / memory maps are read in
            batches).
        max_train : int, optional
            Rows used for training; when ``n`` is larger a sample of that many rows
            is drawn with the seed. Default ``256 * Ks`` (what FAISS recommends).
        iters : int
            Lloyd iterations per subspace (at most; see ``tol``).
        threads : int, optional
            Threads for the kernels (default: all CPUs). Results do not depend on it.
        progress : callable, optional
            Called as ``progress(done, total)`` after each subspace.
        tol : float
            Stop a subspace early when the squared centroid shift of an iteration
            falls below ``tol`` times the total variance of its training rows.
            ``0`` (the default, as in FAISS) runs every iteration.
        init_sample : int, optional
            Rows the k-means++ initialisation looks at (default ``min(n, 4 * Ks)``;
            k-means++ costs O(rows * Ks * log Ks) per subspace).

        Returns
        -------
        self

        See Also
        --------
        fit_subspaces : the same training split into parts (one per worker).
        """
        part = self.fit_subspaces(x, 0, self.m, max_train=max_train, iters=iters,
                                  threads=threads, progress=progress, tol=tol,
                                  init_sample=init_sample)
        return self.set_trained([part])

    def fit_subspaces(self, x: npt.ArrayLike, start: int, stop: int, max_train: int | None = None,
                      iters: int = 25, threads: int | None = None,
                      progress: Callable[[int, int], object] | None = None, *,
                      tol: float = 0.0, init_sample: int | None = None) -> dict[str, Any]:
        """Train the codebooks of subspaces ``start .. stop-1`` only, as :meth:`fit`
        trains them (same sample, same per-subspace seeds), and return them as a part
        for :meth:`set_trained`. Parts over any split of ``0 .. m-1`` give the
        codebooks of :meth:`fit`, bit for bit: the subspaces are trained
        independently, so the parts can run in different processes or machines.
        The parameters are those of :meth:`fit`; this quantizer is not changed.

        Returns
        -------
        dict
            ``start``, ``stop``, ``codebooks`` ((stop - start, Ks, Ds) float32),
            ``errors`` (squared error per subspace), ``fit_params``.
        """
        nthreads = resolve_threads(threads)
        for name, v in (("start", start), ("stop", stop)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise InvalidArgumentError(f"{name} must be an integer, got {v!r}")
        if not 0 <= start < stop <= self.m:
            raise InvalidArgumentError(f"subspaces {start}..{stop} are not within 0..{self.m}")
        if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 0:
            raise InvalidArgumentError(f"iters must be an integer >= 0, got {iters!r}")
        if not (isinstance(tol, (int, float)) and tol >= 0):
            raise InvalidArgumentError(f"tol must be a number >= 0, got {tol!r}")
        if max_train is None:
            max_train = 256 * self.Ks
        if isinstance(max_train, bool) or not isinstance(max_train, (int, np.integer)) or max_train < 1:
            raise InvalidArgumentError(f"max_train must be a positive integer, got {max_train!r}")
        if progress is not None and not callable(progress):
            raise InvalidArgumentError("progress must be callable: progress(done, total)")

        arr = x if isinstance(x, np.ndarray) else np.asarray(x)
        if arr.ndim != 2:
            raise DimensionError(f"x must be a 2-d array (n, {self.dim}), got shape {arr.shape}")
        n = arr.shape[0]
        if n < self.Ks:
            raise InvalidArgumentError(
                f"training needs at least Ks={self.Ks} rows, got {n}")
        rng = np.random.default_rng(self.seed)
        if n > max_train:
            idx = np.sort(rng.choice(n, size=int(max_train), replace=False))
            arr = arr[idx]
        X = self._check_vectors(arr, "x", allow_empty=False)
        n_train = X.shape[0]
        if init_sample is None:
            init_sample = 4 * self.Ks
        n_init = int(min(n_train, max(self.Ks, init_sample)))
        sub_seeds = rng.integers(0, 2**31 - 1, size=self.m)

        codebooks = np.empty((stop - start, self.Ks, self.Ds), dtype=np.float32)
        errors = []
        from threadpoolctl import threadpool_limits
        # One BLAS thread for the k-means++ initialisations (their floating-point
        # results must not depend on the thread count). Set once: each set/reset scans
        # the process's loaded libraries (~3 ms with PyTorch loaded), which per
        # subspace was half of training 96 subspaces on a few thousand rows.
        with threadpool_limits(limits=1, user_api="blas"):
            for sub in range(start, stop):
                Xm = np.ascontiguousarray(X[:, sub * self.Ds:(sub + 1) * self.Ds])
                C, err = _kmeans(Xm, self.Ks, iters=int(iters), tol=float(tol),
                                 seed=int(sub_seeds[sub]), n_init=n_init, nthreads=nthreads)
                codebooks[sub - start] = C
                errors.append(float(err))
                if progress is not None:
                    progress(sub - start + 1, stop - start)
        return {"start": int(start), "stop": int(stop), "codebooks": codebooks, "errors": errors,
                "fit_params": {"n_train": int(n_train), "iters": int(iters), "tol": float(tol),
                               "init_sample": n_init}}

    def set_trained(self, parts: Iterable[dict[str, Any]]) -> ProductQuantizer:
        """Install the codebooks of :meth:`fit_subspaces` parts that together cover
        subspaces ``0 .. m-1`` once each (in any order).

        Returns
        -------
        self

        Raises
        ------
        InvalidArgumentError
            The parts overlap, leave a subspace out, have the wrong shape, or come
            from different training parameters.
        """
        parts = sorted(parts, key=lambda p: p["start"])
        at, params = 0, None
        codebooks = np.empty((self.m, self.Ks, self.Ds), dtype=np.float32)
        errors: list[float] = []
        for p in parts:
            lo, hi = int(p["start"]), int(p["stop"])
            cb = np.asarray(p["codebooks"])
            if lo != at or not lo < hi <= self.m or cb.shape != (hi - lo, self.Ks, self.Ds) \
                    or len(p["errors"]) != hi - lo:
                raise InvalidArgumentError(f"training parts must cover subspaces 0..{self.m} "
                                           f"once each; got a part {lo}..{hi} at {at}")
            if params is not None and p["fit_params"] != params:
                raise InvalidArgumentError("training parts from different training parameters")
            params = p["fit_params"]
            codebooks[lo:hi] = cb
            errors.extend(p["errors"])
            at = hi
        if at != self.m:
            raise InvalidArgumentError(f"training parts cover subspaces 0..{at} of {self.m}")
        sq_err = 0.0
        for e in errors:            # in subspace order, as one fit adds them
            sq_err += e
        self._set_codebooks(codebooks)
        self.training_error_ = sq_err / params["n_train"]  # type: ignore[index]  # parts: not empty
        self.fit_params_ = dict(params)  # type: ignore[arg-type]  # (likewise)
        return self

    # ------------------------------------------------------------- encode/decode
    def encode(self, x: npt.ArrayLike, threads: int | None = None) -> np.ndarray:
        """Codes of the rows of ``x``: (n, m) uint8, or (n, ceil(m/2)) packed for
        ``nbits=4``. Memory beyond the output stays bounded (rows go in batches)."""
        cb = self.codebooks
        nthreads = resolve_threads(threads)
        arr = x if isinstance(x, np.ndarray) else np.asarray(x)
        if arr.ndim == 2 and arr.shape[1] == self.dim and arr.shape[0] > _BATCH_ROWS:
            out = np.empty((arr.shape[0], self.code_size), dtype=np.uint8)
            for s in range(0, arr.shape[0], _BATCH_ROWS):
                out[s:s + _BATCH_ROWS] = self.encode(arr[s:s + _BATCH_ROWS], nthreads)
            return out
        X = self._check_vectors(arr, "x")
        codes = simd.pq.encode(X, cb, nthreads)
        return pack4(codes) if self.nbits == 4 else codes

    def decode(self, codes: npt.ArrayLike) -> np.ndarray:
        """Reconstructed vectors (n, dim) float32 of ``codes`` (for ``cosine`` the
        reconstruction of the normalised vector)."""
        cb = self.codebooks
        codes = self._check_codes(codes)
        if self.nbits == 4:
            codes = unpack4(codes, self.m)
        return simd.pq.decode(codes, cb)

    # -------------------------------------------------------------------- search
    def distance_tables(self, queries: npt.ArrayLike) -> np.ndarray:
        """ADC tables (nq, m, Ks) float32 of the queries (``l2`` and ``cosine``:
        squared distances of each sub-vector to each centroid, for ``cosine`` of the
        normalised query; ``ip``: negated dots)."""
        self.codebooks                      # raises NotTrainedError
        Q = self._check_vectors(queries, "queries", allow_1d=True)
        return simd.core.distance_tables_t(Q, *self._table_ops, self._adc_metric, 1)

    def search(self, queries: npt.ArrayLike, codes: npt.ArrayLike, k: int = 10,
               mask: npt.ArrayLike | None = None, threads: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest codes of each query by asymmetric (ADC) distance.

        Parameters
        ----------
        queries : (nq, dim) or (dim,) array_like
        codes : (n, code_size) uint8
            May be a read-only ``np.memmap``: it is scanned in place.
        k : int >= 1
        mask : (n,) bool or uint8, optional
            Rows where it is false are skipped.
        threads : int, optional

        Returns
        -------
        D : (nq, k) float32
            Ascending ADC distances (``l2``: squared L2; ``ip``: ``-dot``;
            ``cosine``: ``||q - x_hat||^2 / 2``, i.e. ``1 - cos`` with the
            reconstruction's norm error folded in), ``inf`` where fewer than k
            rows qualify.
        I : (nq, k) int64
            Rows of ``codes``, ``-1`` with ``inf``. Ties go to the smaller row.
        """
        self.codebooks                      # raises NotTrainedError
        k = check_k(k)
        nthreads = resolve_threads(threads)
        Q = self._check_vectors(queries, "queries", allow_1d=True)
        codes = self._check_codes(codes)
        mask = check_mask(mask, codes.shape[0])
        tables = simd.core.distance_tables_t(Q, *self._table_ops, self._adc_metric, nthreads)
        D, I = simd.core.adc_topk(tables, codes, k, mask, nthreads)
        if self.metric == "cosine":
            D *= 0.5                        # ||q - x_hat||^2 / 2 = 1 - cos (see _adc_metric)
        return D, I

    def rerank(self, queries: npt.ArrayLike, vectors: npt.ArrayLike, candidates: npt.ArrayLike,
               k: int = 10, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact distances of each query to its candidate rows of ``vectors``
        (float32 or float16, e.g. a memory map); the k best, ascending.

        ``candidates`` is (nq, c) int64 (e.g. ``I`` of a wider :meth:`search`);
        ``-1`` entries are ignored. Distances follow the quantizer's metric.
        """
        k = check_k(k)
        nthreads = resolve_threads(threads)
        Q = self._check_vectors(queries, "queries", allow_1d=True)
        return exact_rerank(Q, vectors, candidates, k, self.metric, nthreads)

    def sdc(self, codes_a: npt.ArrayLike, codes_b: npt.ArrayLike) -> np.ndarray:
        """Symmetric distances between pairs of codes (the distance between their
        reconstructions), in the quantizer's metric: (p,) float32."""
        cb = self.codebooks
        a = self._check_codes(np.atleast_2d(codes_a), "codes_a")
        b = self._check_codes(np.atleast_2d(codes_b), "codes_b")
        if a.shape[0] != b.shape[0]:
            raise DimensionError("codes_a and codes_b must have the same number of rows")
        if self.nbits == 4:
            a, b = unpack4(a, self.m), unpack4(b, self.m)
        if self._sdc is None:
            self._sdc = simd.core.sdc_tables(cb, self._kernel_metric)
        d = simd.core.sdc(self._sdc, a, b)
        return d + 1.0 if self.metric == "cosine" else d

    # --------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        """A msgpack-able description (parameters, training parameters, codebooks
        as raw little-endian float32 bytes with a CRC32)."""
        d = {"format": _FORMAT, "version": _FORMAT_VERSION, "dim": self.dim, "m": self.m,
             "nbits": self.nbits, "metric": self.metric, "seed": self.seed,
             "fit_params": self.fit_params_, "training_error": self.training_error_}
        if self._codebooks is not None:
            raw = self._codebooks.astype("<f4", copy=False).tobytes()
            d["codebooks"] = raw
            d["codebooks_crc32"] = zlib.crc32(raw)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "<dict>") -> ProductQuantizer:
        """Inverse of :meth:`to_dict`; a malformed description raises
        :class:`~sutradb.errors.CorruptDatabaseError` naming ``source``."""
        def bad(why: str) -> CorruptDatabaseError:
            return CorruptDatabaseError(f"{source}: not a valid sutradb quantizer ({why})")

        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise bad("wrong format tag")
        if d.get("version") != _FORMAT_VERSION:
            raise bad(f"unsupported version {d.get('version')!r}")
        try:
            pq = cls(d["dim"], d["m"], d["nbits"], d["metric"], d["seed"])
        except (KeyError, TypeError, InvalidArgumentError) as e:
            raise bad(f"bad parameters: {e}") from None
        fp = d.get("fit_params", {})
        pq.fit_params_ = dict(fp) if isinstance(fp, dict) else {}
        te = d.get("training_error", float("nan"))
        pq.training_error_ = float(te) if isinstance(te, (int, float)) else float("nan")
        raw = d.get("codebooks")
        if raw is not None:
            if not isinstance(raw, bytes):
                raise bad("codebooks are not bytes")
            if len(raw) != pq.m * pq.Ks * pq.Ds * 4:
                raise bad(f"codebooks hold {len(raw)} bytes, expected {pq.m * pq.Ks * pq.Ds * 4}")
            if zlib.crc32(raw) != d.get("codebooks_crc32"):
                raise bad("codebook checksum mismatch")
            cb = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(pq.m, pq.Ks, pq.Ds)
            if not np.isfinite(cb).all():
                raise bad("codebooks hold NaN or infinite values")
            pq._set_codebooks(np.ascontiguousarray(cb))
        return pq

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the quantizer to ``path`` (msgpack; atomic: written to a temporary
        file, fsynced, then renamed over ``path``). Never pickle."""
        data = msgpack.packb(self.to_dict(), use_bin_type=True)
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ProductQuantizer:
        """Read a quantizer written by :meth:`save`. A damaged file raises
        :class:`~sutradb.errors.CorruptDatabaseError`."""
        path = os.fspath(path)
        size = os.path.getsize(path)
        if size > _MAX_FILE_BYTES:
            raise CorruptDatabaseError(f"{path}: {size} bytes is too large for a quantizer")
        with open(path, "rb") as f:
            data = f.read()
        try:
            # explicit limits: a quantizer is a small map of scalars and one blob
            d = msgpack.unpackb(data, raw=False, strict_map_key=True, max_map_len=64,
                                max_array_len=64, max_ext_len=0, max_str_len=1 << 16,
                                max_bin_len=_MAX_FILE_BYTES)
        except (msgpack.UnpackException, ValueError, TypeError) as e:
            raise CorruptDatabaseError(f"{path}: not a valid sutradb quantizer ({e})") from None
        return cls.from_dict(d, source=path)


# ---------------------------------------------------------------------- helpers

def check_vectors(x: npt.ArrayLike, dim: int, metric: str, name: str, *, allow_1d: bool = False,
                  allow_empty: bool = True) -> np.ndarray:
    """Rows as the kernels take them: (n, dim) float32 C-contiguous and finite, L2-
    normalised for ``metric="cosine"`` (a float32 C-contiguous input of another
    metric is returned as it is, not copied). Any real dtype and memory maps are
    read in batches. Raises DimensionError / InvalidArgumentError."""
    if (isinstance(x, np.ndarray) and x.dtype.kind == "f" and x.shape[-1:] == (dim,)
            and (x.ndim == 2 and x.shape[0] == 1 or x.ndim == 1 and allow_1d)):
        # one float row (the latency-bound query): the same result, fewer steps
        out = np.array(x, dtype=np.float32, ndmin=2)
        if not np.isfinite(out).all():
            raise InvalidArgumentError(f"{name} holds NaN or infinite values")
        if metric == "cosine":
            normalise_rows(out)
        return out
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(f"{name} is not an array of numbers: {e}") from None
    if arr.dtype.kind not in "fiu":
        raise InvalidArgumentError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if allow_1d and arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise DimensionError(f"{name} must be a 2-d array (n, {dim}), got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise DimensionError(f"{name} has dimension {arr.shape[1]}, expected {dim}")
    if arr.shape[0] == 0 and not allow_empty:
        raise InvalidArgumentError(f"{name} is empty")
    if (metric != "cosine" and arr.dtype == np.float32 and arr.flags.c_contiguous
            and arr.shape[0] <= _BATCH_ROWS):
        # the common query case: already what the kernels take, read in place
        if not np.isfinite(arr).all():
            raise InvalidArgumentError(f"{name} holds NaN or infinite values")
        return arr
    out = np.empty(arr.shape, dtype=np.float32)
    for s in range(0, arr.shape[0], _BATCH_ROWS):
        out[s:s + _BATCH_ROWS] = arr[s:s + _BATCH_ROWS]
        if not np.isfinite(out[s:s + _BATCH_ROWS]).all():
            raise InvalidArgumentError(f"{name} holds NaN or infinite values")
    if metric == "cosine":
        normalise_rows(out)
    return out


def normalise_rows(x: np.ndarray) -> None:
    """In-place L2 normalisation of float32 rows (zero rows stay zero)."""
    for s in range(0, x.shape[0], _BATCH_ROWS):
        blk = x[s:s + _BATCH_ROWS]
        norms = np.sqrt(np.einsum("ij,ij->i", blk, blk))
        norms[norms == 0] = 1.0
        blk /= norms[:, None]


def check_k(k: Any) -> int:
    """``k`` as an int >= 1 (InvalidArgumentError otherwise)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidArgumentError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def check_mask(mask: npt.ArrayLike | None, n: int) -> np.ndarray | None:
    """A row mask as the kernels take it: None, or a C-contiguous (n,) uint8 array
    (bool masks viewed, other dtypes compared with 0); DimensionError on a wrong
    shape."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != (n,):
        raise DimensionError(f"mask must have shape ({n},), got {mask.shape}")
    if mask.dtype == np.bool_:
        mask = mask.view(np.uint8)
    elif mask.dtype != np.uint8:
        mask = (mask != 0).view(np.uint8)
    return np.ascontiguousarray(mask)


def exact_rerank(Q: np.ndarray, vectors: npt.ArrayLike, candidates: npt.ArrayLike, k: int,
                 metric: str, nthreads: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k among candidate rows; ``Q`` already validated (and normalised for
    cosine). ``vectors`` is float32 or float16 (n, d), possibly a memory map."""
    if not isinstance(vectors, np.ndarray):
        vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[1] != Q.shape[1]:
        raise DimensionError(f"vectors must be (n, {Q.shape[1]}), got {vectors.shape}")
    if vectors.dtype == np.float16:
        v = np.ascontiguousarray(vectors).view(np.uint16)
    elif vectors.dtype == np.float32:
        v = np.ascontiguousarray(vectors)
    else:
        raise InvalidArgumentError(f"vectors must be float32 or float16, got {vectors.dtype}")
    cand = np.asarray(candidates)
    if cand.ndim == 1:
        cand = cand[None, :]
    if cand.ndim != 2 or cand.shape[0] != Q.shape[0]:
        raise DimensionError(f"candidates must be (nq={Q.shape[0]}, c), got {cand.shape}")
    if cand.dtype.kind not in "iu":
        raise InvalidArgumentError(f"candidates must be integers, got {cand.dtype}")
    cand = np.ascontiguousarray(cand, dtype=np.int64)
    if cand.size and cand.max() >= v.shape[0]:
        raise InvalidArgumentError(f"candidate row {int(cand.max())} is out of range "
                                   f"(vectors has {v.shape[0]} rows)")
    kmetric = {"l2": simd.core.METRIC_L2, "ip": simd.core.METRIC_IP, "cosine": simd.core.METRIC_COS}[metric]
    D, I = simd.core.rerank(Q, v, cand, k, kmetric, nthreads)
    if metric == "cosine":
        D[I >= 0] += 1.0
    return D, I


def _kmeans(X: np.ndarray, K: int, *, iters: int, tol: float, seed: int, n_init: int,
            nthreads: int) -> tuple[np.ndarray, float]:
    """k-means on float32 rows X (n, d): k-means++ initialisation (scikit-learn) on
    the first ``n_init`` rows of a seeded permutation, then Lloyd iterations in the
    Cython kernels. Returns (centres (K, d) float32, sum of squared errors).

    The caller limits BLAS to one thread (``threadpool_limits``): the initialisation
    must not depend on the thread count."""
    from sklearn.cluster import kmeans_plusplus

    rng = np.random.default_rng(seed)
    n = X.shape[0]
    init_rows = X if n_init >= n else X[np.sort(rng.choice(n, size=n_init, replace=False))]
    # float64: scikit-learn's distance code takes a slower upcasting path on float32
    C, _ = kmeans_plusplus(np.ascontiguousarray(init_rows, dtype=np.float64), K,
                           random_state=int(rng.integers(0, 2**31 - 1)))
    C = np.ascontiguousarray(C, dtype=np.float32)
    total_var = float(np.square(X - X.mean(axis=0, dtype=np.float64)).sum())
    # (Hamerly's bounds were tried for the assignment step: on PQ subspaces
    # (d = 8, K = 256) over half the rows still needed a full search after ten
    # iterations, and the bookkeeping made it slower than this plain loop.)
    sq = None
    for _ in range(iters):
        labels, sq = simd.pq.assign(X, C, nthreads)
        sums, counts = simd.pq.update(X, labels, K)
        newC = np.empty_like(sums)
        nonempty = counts > 0
        newC[nonempty] = sums[nonempty] / counts[nonempty, None]
        split_empty(newC, counts, rng)
        newC = newC.astype(np.float32)
        shift = float(np.square(newC - C).sum())
        C = newC
        if tol > 0 and shift <= tol * total_var:
            break
    if sq is None:          # iters == 0: the error of the initial centres
        _, sq = simd.pq.assign(X, C, nthreads)
    # (with iters > 0: the error of the last assignment, as FAISS reports it)
    return C, float(sq.sum(dtype=np.float64))


def split_empty(C: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> None:
    """Re-seed empty clusters by splitting large ones (as FAISS does): an empty
    centre becomes a slightly perturbed copy of a centre drawn with probability
    proportional to its size, which moves the other way. Deterministic for a seed."""
    eps = 1.0 / 1024
    for j in np.flatnonzero(counts == 0):
        p = np.maximum(counts - 1, 0).astype(np.float64)
        if p.sum() <= 0:
            C[j] = C[np.argmax(counts)]
            continue
        ci = int(rng.choice(len(counts), p=p / p.sum()))
        sign = np.where(np.arange(C.shape[1]) % 2 == 0, 1.0, -1.0)
        C[j] = C[ci] * (1 + eps * sign)
        C[ci] = C[ci] * (1 - eps * sign)
        counts[j] = counts[ci] // 2
        counts[ci] -= counts[j]
