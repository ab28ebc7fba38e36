"""Checks of the arguments of :class:`~sutradb.database.Database` methods.

Plain functions of their arguments (and of the database's dimension, metric and
vector dtype where those matter): they raise the documented exceptions
(:class:`~sutradb.errors.InvalidArgumentError`, :class:`~sutradb.errors.DimensionError`)
and return the value as the database stores or searches it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np

from .. import embedders
from ..errors import DimensionError, EmbedderError, InvalidArgumentError
from ..index.pq import check_vectors
from .options import BATCH, INDEX_KINDS

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["is_id", "check_options", "check_metadata", "seq_arg", "check_vector_rows",
           "check_query_rows", "F16_MAX"]

#: The largest finite float16.
F16_MAX = 65504.0


def is_id(x: object) -> bool:
    """Whether ``x`` is an integer (Python or NumPy) and not a bool."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


from ..text import check_spec


def check_options(o: dict[str, Any]) -> None:
    """Validate a full options dict (:data:`DEFAULT_OPTIONS` updated with the
    caller's); InvalidArgumentError, or EmbedderError for an unusable embedder
    object."""
    if o["vector_dtype"] not in ("float16", "float32", None):
        raise InvalidArgumentError("vector_dtype must be 'float16', 'float32' or None")
    for name, lo in (("index_threshold", 0), ("train_size", 1), ("train_iters", 0),
                     ("seed", 0), ("cache_size", 0)):
        v = o[name]
        if not is_id(v) or v < lo:
            raise InvalidArgumentError(f"{name} must be an integer >= {lo}, got {v!r}")
    if o["pq_m"] is not None and (not is_id(o["pq_m"]) or o["pq_m"] < 1):
        raise InvalidArgumentError(f"pq_m must be a positive integer or None, got {o['pq_m']!r}")
    if o["pq_nbits"] is not None and o["pq_nbits"] not in (4, 8):
        raise InvalidArgumentError("pq_nbits must be 4, 8 or None")
    if o["index"] not in INDEX_KINDS:
        raise InvalidArgumentError(f"index must be one of {INDEX_KINDS}, not {o['index']!r}")
    if not is_id(o["ivf_threshold"]) or o["ivf_threshold"] < 0:
        raise InvalidArgumentError(f"ivf_threshold must be an integer >= 0, got {o['ivf_threshold']!r}")
    if o["ivf_nlist"] is not None and (not is_id(o["ivf_nlist"]) or o["ivf_nlist"] < 1):
        raise InvalidArgumentError(f"ivf_nlist must be a positive integer or None, got {o['ivf_nlist']!r}")
    tr = o["target_recall"]
    if isinstance(tr, bool) or not isinstance(tr, (int, float)) or not 0 < tr <= 1:
        raise InvalidArgumentError(f"target_recall must be in (0, 1], got {tr!r}")
    check_spec(o["text_tokenizer"])
    p = o["progress"]
    if not (isinstance(p, bool) or callable(p)):
        raise InvalidArgumentError("progress must be a bool or a callable(done, total)")
    e = o["embedder"]
    if e is not None and not isinstance(e, str):
        if not hasattr(e, "name"):
            raise EmbedderError("an embedder needs a .name (stored with the database), an "
                                "integer .dim and __call__(texts) -> (n, dim) float32")
        embedders.check_embedder(e)
    if not is_id(o["batch_size"]) or o["batch_size"] < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {o['batch_size']!r}")


#: metadata values that msgpack reads back as themselves (int: in range; checked apart)
_FLAT_SCALARS = frozenset({str, float, bool, bytes, type(None)})
_INT_MIN, _UINT_MAX = -(1 << 63), (1 << 64) - 1


def check_metadata(md: object) -> dict[str, Any] | None:
    """Validate one metadata dict: msgpack-able with str keys at every level.

    Returns
    -------
    dict or None
        The dict as it will read back (a msgpack round trip), None for None or ``{}``.
    """
    if md is None:
        return None
    if not isinstance(md, dict):
        raise InvalidArgumentError(f"metadata must be a dict or None, not {type(md).__name__}")
    if not md:
        return None
    # the common case, a flat dict of plain scalars under str keys, reads back as a
    # copy of itself: no msgpack round trip (3-4 us a row in bulk loads)
    if type(md) is dict and all(type(k) is str for k in md):
        for v in md.values():
            t = type(v)
            if t is int:
                if not _INT_MIN <= v <= _UINT_MAX:
                    break
            elif t not in _FLAT_SCALARS:
                break
        else:
            return dict(md)
    try:
        raw = msgpack.packb(md, use_bin_type=True)
        back: dict[str, Any] = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        return back
    except (TypeError, ValueError, OverflowError, msgpack.UnpackException) as e:
        raise InvalidArgumentError(f"metadata cannot be stored (msgpack types with str keys "
                                   f"only): {e}") from None


def seq_arg(values: Iterable[Any] | None, n: int, what: str) -> list[Any] | None:
    """``values`` (texts, keys, metadata of a batch) as a list of ``n`` items, or None."""
    if values is None:
        return None
    if isinstance(values, (str, bytes, dict)):
        raise InvalidArgumentError(f"{what} must be a sequence with one item per vector")
    values = list(values)
    if len(values) != n:
        raise DimensionError(f"{len(values)} {what} for {n} vectors")
    return values


def check_vector_rows(vectors: npt.ArrayLike, dim: int, f16: bool, what: str = "vectors",
                      one: bool = False) -> np.ndarray:
    """Validate (n, dim) vectors to store: finite numbers (within the float16 range
    when ``f16``), checked batch by batch without converting them all at once.

    Parameters
    ----------
    vectors : array_like
    dim : int
        The database's dimension (0: not fixed yet, any width but 0).
    f16 : bool
        The database stores float16.
    what : str
        The argument's name in messages.
    one : bool
        ``vectors`` is one (dim,) vector (returned as a (1, dim) view).

    Returns
    -------
    ndarray
        ``vectors`` as an array (not converted).
    """
    if isinstance(vectors, np.ndarray):
        arr = vectors
    else:
        try:
            arr = np.asarray(vectors)
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(f"{what} is not an array of numbers: {e}") from None
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise InvalidArgumentError(f"{what} must hold numbers, got dtype {arr.dtype}")
    if one:
        if arr.ndim != 1:
            raise DimensionError(f"{what} must be one vector (dim,), got shape {arr.shape}")
        arr = arr[None, :]
    if arr.ndim != 2:
        raise DimensionError(f"{what} must be a 2-d array (n, dim), got shape {arr.shape}")
    if dim and arr.shape[1] != dim:
        raise DimensionError(f"{what} have dimension {arr.shape[1]}, the database {dim}")
    if arr.shape[1] == 0:
        raise DimensionError(f"{what} have dimension 0")
    for s0 in range(0, arr.shape[0], BATCH):
        blk = arr[s0:s0 + BATCH]
        if blk.dtype.kind == "f" and not np.isfinite(blk).all():
            raise InvalidArgumentError(f"{what} hold NaN or infinite values")
        if f16 and blk.size and blk.dtype != np.float16 and np.abs(blk).max() > F16_MAX:
            raise InvalidArgumentError(f"{what} hold values beyond the float16 range (|x| > 65504); "
                                       "open the database with vector_dtype='float32'")
        if blk.dtype.itemsize > 4 and blk.size and np.abs(blk).max() > 3.4e38:
            raise InvalidArgumentError(f"{what} hold values beyond the float32 range")
    return arr


def check_query_rows(Q: npt.ArrayLike, dim: int, metric: str, one: bool = False) -> np.ndarray:
    """Queries as the index takes them (:func:`~sutradb.index.pq.check_vectors`:
    (nq, dim) float32 C-contiguous, finite, unit rows for cosine).

    ``dim`` 0 (an empty database) accepts any width; with ``one``, ``Q`` must be
    one (dim,) vector (:meth:`Database.search`).
    """
    if one:
        arr = Q if isinstance(Q, np.ndarray) else None
        if arr is None:
            try:
                arr = np.asarray(Q)
            except (TypeError, ValueError) as e:
                raise InvalidArgumentError(f"queries are not an array of numbers: {e}") from None
        if arr.ndim != 1:
            raise DimensionError(f"search takes one query vector (dim,), got shape "
                                 f"{arr.shape}; use search_vectors for batches")
        Q = arr
    if not dim:                          # an empty database: any width, no results
        dim = np.shape(Q)[-1] if np.ndim(Q) else 0
    return check_vectors(Q, dim, metric, "queries", allow_1d=True)
