"""Transactions: changes staged on a writer store and committed atomically.

A :class:`Transaction` (from :meth:`Store.begin`) validates and stages puts, deletes,
links, the index, meta and ``replace_codes``; nothing is visible through the store
before :meth:`Transaction.commit`, which hands the staged ops to the store (the log, a
spill or a rewrite: :mod:`.store` owns the commit protocol). Staging enforces unique
keys among live rows (:class:`~sutradb.errors.DuplicateKeyError`) against the
committed state (the store's key index) and what the transaction staged before.

A transaction that stages more than ``spill_bytes`` of rows *spills*: its rows (and
all later ones) go straight into the row segment files instead of memory, and its
commit is a manifest swap.

A transaction works hand in hand with its :class:`~sutradb.storage.store.Store`, the
two classes being one unit split in two files. The transaction reads the store's
widths (``_m``, ``_d``, ``_vdtype``, ``_n``), settings (``_memory``, ``_spill_bytes``)
and key index (``_keys``), calls ``_check_open``, ``_commit``, ``_spill_start``,
``_spill_chunk`` and ``_recover_after_failure``, and clears ``_txn_open`` when it
finishes; the store's commit reads what was staged (``_ops``, ``_spilled``,
``_rewrite``, ``_index_bytes``). That is the whole of the protocol between them.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import DimensionError, DuplicateKeyError, InvalidArgumentError
from .format import DTYPE_CODE, MAX_CODE_SIZE, MAX_DIM, MAX_RELATION, VECTOR_DTYPES, packb, unpackb
from .records import Chunk, as_ids, encode_record

if TYPE_CHECKING:  # pragma: no cover
    import numpy.typing as npt

    from .store import Store

__all__ = ["Transaction", "seq", "private_copy"]

_I8 = np.dtype("<i8")
_U1 = np.dtype("u1")
_U8 = np.dtype("<u8")
_F8 = np.dtype("<f8")
_MAX_META = 1 << 20


class Transaction:
    """Changes staged on a writer :class:`Store`, applied atomically by :meth:`commit`.

    Staged changes are not visible through the store until the commit. Operations
    apply in the order they were staged. Use as a context manager to commit on success
    and roll back on an exception.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._ops: list[tuple[Any, ...]] = []
        self._bytes = 0
        self._spilled = False
        self._spill_rows = 0
        self._rewrite: tuple[np.ndarray, np.ndarray] | None = None
        self._index_bytes = 0      # bytes of the staged index (large: commit by checkpoint)
        self._done = False
        s = store
        self._m, self._d, self._vdtype = s._m, s._d, s._vdtype
        self._can_adopt = s._n == 0
        self._rows_staged = 0
        # unique keys: what this transaction staged so far
        self._key_of: dict[str, int] = {}          # key -> id that put it
        self._id_key: dict[int, str | None] = {}   # id -> key its last staged row has (None: no key)
        self._released: set[int] = set()     # ids put or deleted here: their committed keys are free
        self._track = None         # whether the committed state has keys (decided once)

    def _check(self):
        if self._done:
            raise InvalidArgumentError("the transaction is finished")
        self._store._check_open()

    def _add(self, op):
        if self._rewrite is not None and op[0] not in ("index", "meta"):
            raise InvalidArgumentError("replace_codes must be alone in its transaction "
                                       "(with set_index / set_meta)")
        self._ops.append(op)

    # ------------------------------------------------------------------ staging

    def put(self, ids, *, keys=None, texts=None, metadata=None, codes=None, vectors=None) -> None:
        """Stage rows: new concepts, or new versions of existing ones.

        Parameters
        ----------
        ids : array-like of int, shape (k,)
            Concept ids (int64). Within one call or transaction the last row of an id
            wins.
        keys, texts : sequence of (str or None), optional
            One per id.
        metadata : sequence of (dict or None), optional
            One per id; msgpack-serializable (str keys; None, bool, int, float, str,
            bytes, list, dict values; tuples come back as lists).
        codes : ndarray of uint8, shape (k, code_size), optional
            Required once the store has codes; the first rows of an empty store fix
            ``code_size``.
        vectors : ndarray of float16/float32, shape (k, vector_dim), optional
            Required once the store has vectors; converted to the store's dtype.

        Raises
        ------
        DuplicateKeyError
            A key is held by another live id (committed, or staged earlier in this
            transaction and not released by a delete or a re-put), or is given to two
            ids in this call. Updating an id with its own key is allowed; deleting an
            id (or re-putting it with another key) frees its key. Nothing of a call
            that raises is staged.
        """
        self._check()
        saved = self._m, self._d, self._vdtype
        try:
            self._put(ids, keys, texts, metadata, codes, vectors)
        except BaseException:
            if not self._done:
                self._m, self._d, self._vdtype = saved
            raise

    def _put(self, ids, keys, texts, metadata, codes, vectors):
        # lean on purpose (the commit latency of one-row transactions): no array is
        # converted or copied twice, dtypes are compared by identity first
        own = False
        if type(ids) is list and len(ids) == 1 and type(ids[0]) is int:
            try:
                ids = np.array(ids, _I8)
            except OverflowError:
                raise InvalidArgumentError("ids exceed the int64 range") from None
            own = True
        else:
            ids = as_ids(ids)
        k = len(ids)
        if k == 0:
            return
        keys = seq(keys, k, "keys")
        texts = seq(texts, k, "texts")
        metadata = seq(metadata, k, "metadata")
        adopt = self._can_adopt and self._rows_staged == 0
        cd = None
        if codes is not None:
            cd = codes if type(codes) is np.ndarray else np.asarray(codes)
            if cd.dtype is not _U1 and cd.dtype != _U1:
                raise InvalidArgumentError(f"codes must be uint8, got {cd.dtype}")
            sh = cd.shape
            if len(sh) != 2 or sh[0] != k or not 0 < sh[1] <= MAX_CODE_SIZE:
                raise DimensionError(f"codes must have shape ({k}, code_size), got {sh}")
            if self._m == 0 and adopt:
                self._m = sh[1]
            elif sh[1] != self._m:
                raise DimensionError(f"codes have {sh[1]} bytes per row, the store "
                                     f"{self._m} (use replace_codes to change it)")
        elif self._m:
            raise DimensionError("the store keeps codes: pass codes= for every row")
        vc = None
        if vectors is not None:
            vc = vectors if type(vectors) is np.ndarray else np.asarray(vectors)
            dt = vc.dtype
            if dt.kind != "f":
                raise InvalidArgumentError(f"vectors must be floats, got {dt}")
            sh = vc.shape
            if len(sh) != 2 or sh[0] != k or not 0 < sh[1] <= MAX_DIM:
                raise DimensionError(f"vectors must have shape ({k}, dim), got {sh}")
            if self._d == 0 and adopt:
                self._d = sh[1]
                self._vdtype = VECTOR_DTYPES["float16"] if dt == np.float16 else VECTOR_DTYPES["float32"]
            elif sh[1] != self._d:
                raise DimensionError(f"vectors have dimension {sh[1]}, the store {self._d}")
            if dt is not self._vdtype and dt != self._vdtype:
                vc = np.ascontiguousarray(vc, dtype=self._vdtype)   # a private copy already
                vc.setflags(write=False)
            else:
                vc = private_copy(vc)
        elif self._d:
            raise DimensionError("the store keeps vectors: pass vectors= for every row")
        if k == 1:
            rec = encode_record(keys[0], texts[0], metadata[0])
            ends = np.array([len(rec)], _U8)
        else:
            recs = [encode_record(a, b, c) for a, b, c in zip(keys, texts, metadata)]
            ends = np.cumsum(np.fromiter(map(len, recs), _I8, k)).astype(_U8)
            rec = b"".join(recs)
        self._check_keys(ids, keys)
        if own:
            ids.setflags(write=False)
        else:
            ids = private_copy(ids)
        ch = Chunk(ids, private_copy(cd), vc, rec, ends, keys)
        self._rows_staged += k
        self._stage_rows(ch)

    def _check_keys(self, ids, keys):
        """Reject a key held by another live id (committed, or staged earlier in this
        transaction); on success record what this put changes. Nothing is recorded
        when it raises."""
        s = self._store
        if self._track is None:
            self._track = s._keys.has_keys()
        track = self._track
        key_of, id_key, released = self._key_of, self._id_key, self._released
        if not key_of and not track and (keys[0] is None if len(keys) == 1
                                         else all(x is None for x in keys)):
            return                                  # no key anywhere: nothing to check
        ids = ids.tolist()
        lk, li = {}, {}                             # this call's changes (merged on success)
        # every id of the put gives up its committed key (a put replaces the record),
        # so keys can move between the ids of one put (a swap)
        lr = set(ids) if track else set()
        for i, key in zip(ids, keys):
            if key is not None:
                o = lk[key] if key in lk else key_of.get(key)
                if o is not None and o != i and (li[o] if o in li else id_key.get(o)) == key:
                    raise DuplicateKeyError(f"key {key!r:.80} is given to ids {o} and {i} "
                                            "in the same transaction")
                if track:
                    c = s._keys.owner(key)
                    if c is not None and c != i and c not in lr and c not in released:
                        raise DuplicateKeyError(f"key {key!r:.80} is already used by id {c}")
                lk[key] = i
                li[i] = key
            elif (li[i] if i in li else id_key.get(i)) is not None:
                li[i] = None
        key_of.update(lk)
        id_key.update(li)
        released |= lr

    def _stage_rows(self, ch) -> None:
        s = self._store
        if s._memory:
            self._add(("put", ch))
            return
        if self._spilled:
            self._spill(ch)
            return
        self._add(("put", ch))
        self._bytes += ch.nbytes
        if self._bytes > s._spill_bytes:
            self._start_spill()

    def _start_spill(self):
        """Move the staged rows (and all later ones) straight into the segment files."""
        s = self._store
        try:
            s._spill_start(self._m, self._d, self._vdtype)
            self._spilled = True
            staged = self._ops
            self._ops = []
            for op in staged:
                if op[0] == "put":
                    self._spill(op[1])
                else:
                    self._ops.append(op)
        except BaseException:
            self._fail()
            raise

    def _spill(self, ch):
        try:
            self._store._spill_chunk(ch)
        except BaseException:
            self._fail()
            raise
        self._ops.append(("putf", ch.ids, ch.keys))

    def _fail(self) -> None:
        self._done = True
        self._store._txn_open = None
        self._store._recover_after_failure()

    def delete(self, ids) -> None:
        """Stage the deletion of ``ids`` (ids that are not live are ignored). Links
        from and to a deleted id are removed with it."""
        self._check()
        ids = as_ids(ids)
        if len(ids):
            self._add(("del", ids))
            if self._track is None:
                self._track = self._store._keys.has_keys()
            if self._id_key or self._track:
                for i in ids.tolist():
                    if self._id_key.get(i) is not None:
                        self._id_key[i] = None
                    if self._track:
                        self._released.add(i)

    def link(self, src, dst, relation, weight: npt.ArrayLike = 1.0) -> None:
        """Stage links ``src -> dst`` (scalars or equal-length arrays); an existing
        link with the same ``(src, dst, relation)`` gets the new weight."""
        self._check()
        s, d, r, w = self._link_args(src, dst, relation, weight)
        self._add(("link", s, d, r, w))

    def unlink(self, src, dst, relation) -> None:
        """Stage the removal of links (absent ones are ignored)."""
        self._check()
        s, d, r, _ = self._link_args(src, dst, relation, 0.0)
        self._add(("unlink", s, d, r))

    @staticmethod
    def _link_args(src, dst, relation, weight):
        s, d = as_ids(src, "src"), as_ids(dst, "dst")
        n = max(len(s), len(d))
        if len(s) == 1:
            s = np.repeat(s, n)
        if len(d) == 1:
            d = np.repeat(d, n)
        if len(s) != len(d):
            raise DimensionError("src and dst have different lengths")
        rels = [relation] * n if isinstance(relation, str) else list(relation)
        if len(rels) != n or not all(isinstance(x, str) and 0 < len(x.encode()) <= MAX_RELATION
                                     and len(x) <= MAX_RELATION for x in rels):
            raise InvalidArgumentError("relation must be a non-empty str (or one per link)")
        w = np.asarray(weight, dtype=_F8)
        w = np.broadcast_to(w, (n,)).copy() if w.ndim == 0 else np.ascontiguousarray(w, _F8)
        if len(w) != n or not np.isfinite(w).all():
            raise InvalidArgumentError("weights must be finite, one per link")
        return s, d, rels, w

    def set_index(self, blob: bytes, arrays: dict | None = None) -> None:
        """Stage a new index blob (opaque bytes) and named arrays (float32, float16,
        float64, int32, int64, uint8, uint64), replacing the previous ones."""
        self._check()
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError("the index blob must be bytes")
        out = {}
        for name, a in (arrays or {}).items():
            a = np.asarray(a)
            key = next((c for c in DTYPE_CODE if c.kind == a.dtype.kind and c.itemsize == a.dtype.itemsize), None)
            if not isinstance(name, str) or key is None:
                raise InvalidArgumentError(f"index array {name!r}: unsupported dtype {a.dtype}")
            out[name] = np.ascontiguousarray(a, dtype=key)
        self._index_bytes = len(blob) + sum(a.nbytes for a in out.values())
        self._add(("index", bytes(blob), out))

    def set_meta(self, meta: dict) -> None:
        """Stage a new ``meta`` dict (small, msgpack-serializable, str keys)."""
        self._check()
        if not isinstance(meta, dict):
            raise InvalidArgumentError("meta must be a dict")
        try:
            b = packb(meta)
        except (TypeError, ValueError, OverflowError) as e:
            raise InvalidArgumentError(f"meta cannot be stored: {e}") from None
        if len(b) > _MAX_META:
            raise InvalidArgumentError("meta is larger than 1 MiB")
        self._add(("meta", unpackb(b, "meta")))

    def replace_codes(self, ids, codes) -> None:
        """Stage new codes for every live concept (after retraining the quantizer;
        ``code_size`` may change). Must be alone in its transaction, except for
        :meth:`set_index` and :meth:`set_meta`; the commit rewrites the segments."""
        self._check()
        if any(op[0] not in ("index", "meta") for op in self._ops) or self._spilled:
            raise InvalidArgumentError("replace_codes must be alone in its transaction "
                                       "(with set_index / set_meta)")
        if self._store._memory:
            raise InvalidArgumentError("replace_codes is not supported by in-memory stores")
        ids = as_ids(ids)
        cd = np.asarray(codes)
        if cd.dtype != np.uint8 or cd.ndim != 2 or cd.shape[0] != len(ids) or not 0 < cd.shape[1] <= MAX_CODE_SIZE:
            raise DimensionError(f"codes must be uint8 of shape ({len(ids)}, code_size)")
        self._rewrite = (ids, np.ascontiguousarray(cd))

    # ------------------------------------------------------------------ finishing

    def commit(self) -> int:
        """Apply every staged change atomically; return the transaction id.

        Raises
        ------
        OSError
            Writing or syncing failed; nothing of the transaction is visible and the
            store stays at its last committed state.
        """
        self._check()
        s = self._store
        self._done = True
        s._txn_open = None
        try:
            return s._commit(self)
        finally:
            self._ops = []

    def rollback(self) -> None:
        """Discard every staged change."""
        if self._done:
            return
        s = self._store
        self._done = True
        s._txn_open = None
        spilled, self._ops = self._spilled, []
        if spilled:
            s._recover_after_failure()

    def __enter__(self):
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if self._done:
            return False
        if exc_type is None:
            self.commit()
        else:
            self.rollback()
        return False


# --------------------------------------------------------------------------- helpers

def seq(values, k: int, what: str) -> list:
    """``values`` as a list of one item per id (``[None] * k`` for None).

    Raises
    ------
    InvalidArgumentError
        A str, bytes or dict (not a sequence of items).
    DimensionError
        Not ``k`` items.
    """
    if values is None:
        return [None] * k
    if isinstance(values, (str, bytes, dict)):
        raise InvalidArgumentError(f"{what} must be a sequence with one item per id")
    values = list(values)
    if len(values) != k:
        raise DimensionError(f"{len(values)} {what} for {k} ids")
    return values


def private_copy(a):
    """A read-only copy of ``a`` that no caller holds (None stays None)."""
    if a is None:
        return None
    a = np.array(a, copy=True, order="C")
    a.setflags(write=False)
    return a
