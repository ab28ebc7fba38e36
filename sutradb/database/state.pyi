"""The state the :class:`~sutradb.database.core.Database` mixins share: a stub-only
module, for type checkers (there is no ``state.py``).

:class:`~sutradb.database.core.Database` is composed of mixins (see
``docs/architecture.md``) that work on one state which ``core`` creates: the store, the
meta, the vector index, the locks, the staged transaction and the caches. Each mixin
names :class:`DatabaseState` as its base *when type checking* (at run time its base is
``object``), so a checker knows the attributes and the methods one mixin uses from
another. It is a plain class, not a Protocol: mypy does not carry a protocol's
attribute declarations into the assignments of an explicit subclass. Nothing imports
this module at run time.
"""

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeAlias

import numpy as np

from ..embedders import Embedder
from ..index.flat import FlatVectors
from ..index.vector import VectorIndex
from ..storage import Store
from ..storage.transaction import Transaction as StoreTransaction
from .concepts import Concept
from .locking import ExclusiveLock, ReadLock, RWLock
from .progress import ProgressArg
from .recordindex import RecordIndexes
from .distances import DistanceTable
from .transactions import AutoTransaction, Staged, Transaction

__all__ = ["DatabaseState", "IdOrKey", "IdsOrKeys", "Where"]

#: How a concept is named in the API: its id (a Python or NumPy integer) or its key.
IdOrKey: TypeAlias = int | np.integer[Any] | str
#: One concept or several: an id or key, a sequence of them, or an integer array.
IdsOrKeys: TypeAlias = IdOrKey | Sequence[IdOrKey] | np.ndarray
#: A metadata filter (:mod:`sutradb.index.filters`).
Where: TypeAlias = Mapping[str, Any]


class DatabaseState:
    """Attributes and cross-mixin methods of a database (see the module docstring)."""

    # ---- set by Database.__init__ (core)
    _closed: bool
    _wlock: threading.RLock
    _rw: RWLock
    _read: ReadLock
    _excl: ExclusiveLock
    _txn_owner: int | None
    _staged: Staged | None
    _stxn: StoreTransaction | None
    _levels: list[list[Any]]
    _txn_stack: list[Transaction]
    _txn_failed: BaseException | None
    _rows_put: int
    _index_due: bool
    _embedder: Embedder | None
    _batch_size: int
    _progress: ProgressArg
    _cache_size: int
    _memory: bool
    _path: str | os.PathLike[str] | None
    _store: Store
    _meta: dict[str, Any]
    _index: VectorIndex
    # ---- the caches (core._reset_caches, core._row_caches)
    _ccache: dict[int, tuple[Any, ...]]
    _kcache: dict[str, int]
    _seen: bytearray
    _rowmap: dict[int, int] | None
    _records: RecordIndexes
    _flat: FlatVectors | None
    _dtable: DistanceTable
    _rstate: tuple[dict[int, int], Any] | None

    # ---- core
    def __len__(self) -> int: ...
    def _check_open(self) -> None: ...
    def _check_writable(self) -> None: ...
    def _opt(self, name: str) -> Any: ...
    def _load_index(self, lazy: bool = True) -> VectorIndex: ...
    def _reset_caches(self) -> None: ...
    def _row_caches(self, renumbered: bool = False) -> None: ...
    def _require_embedder(self) -> Embedder: ...
    def _embed(self, texts: Sequence[str], emb: Embedder | None = None) -> np.ndarray: ...

    # ---- transactions
    _Auto: ClassVar[type[AutoTransaction]]
    def transaction(self) -> Transaction: ...
    def _end(self, t: Transaction, ok: bool) -> None: ...
    def _emit(self, op: tuple[str, tuple[Any, ...], dict[str, Any]]) -> None: ...
    def _persisted_meta(self, meta: dict[str, Any]) -> dict[str, Any]: ...

    # ---- concepts
    def _id_of(self, x: Any, staged: Staged | None = None) -> int: ...
    def _committed_key(self, key: str) -> int | None: ...
    @staticmethod
    def _staged_gone(staged: Staged, i: int) -> bool: ...
    def _exists(self, i: int, staged: Staged | None) -> bool: ...
    def _current(self, i: int, staged: Staged | None) -> tuple[Any, ...]: ...

    # ---- writes
    def _check_new_keys(self, keys: Sequence[str | None], st: Staged,
                        owners: Sequence[int] | None = None) -> None: ...
    @staticmethod
    def _embedded_windows(emb: Embedder, texts: Sequence[str], step: int, bar: Any
                          ) -> Any: ...
    def _row_map(self) -> dict[int, int]: ...
    def _concepts_at(self, rows: list[int]) -> list[Concept]: ...

    # ---- listing
    def find_ids(self, where: Any = None, *, limit: int | None = None, offset: int = 0,
                 order_by: str = "id") -> np.ndarray: ...

    # ---- indexing
    def _catch_up(self, wait: bool = False) -> None: ...

    # ---- search
    def _where_mask(self, where: Any, live: np.ndarray) -> np.ndarray: ...
    def _search_rows(self, Q: np.ndarray, k: int, where: Any, rerank: Any, exact: bool,
                     threads: int | None, nprobe: int | None = None
                     ) -> tuple[np.ndarray, np.ndarray]: ...
    def _meta_index(self) -> Any: ...

    # ---- indexing
    def _codes_for(self, V: np.ndarray, st: Staged) -> Any: ...
    def _maybe_train(self) -> None: ...
