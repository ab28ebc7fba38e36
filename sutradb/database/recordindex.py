"""The key, metadata, field and word indexes of a database's live concepts.

Built from the store on first use (a filter on metadata or ``$text``,
:meth:`Database.find_words`, a key lookup on a store without its own key index; a
field index when a filter first names its path) and then kept up to date by each
commit (:meth:`RecordIndexes.set` for every id the commit wrote); dropped when the
database moves to another state wholesale (``refresh``). They are keyed by id, so a
compaction (which renumbers rows, not ids) leaves them valid.
"""

from __future__ import annotations

import threading

import numpy as np

from ..index.fields import FieldIndex
from ..index.words import WordIndex

__all__ = ["RecordIndexes"]


class RecordIndexes:
    """Indexes of the live records, each None until built.

    Attributes
    ----------
    keys : dict or None
        key -> id.
    key_of : dict or None
        id -> key (built with ``keys``, to drop an id's old key).
    metadata : dict or None
        id -> metadata dict (``{}`` for none).
    words : WordIndex or None
        The words of the texts.
    fields : dict
        path -> :class:`~sutradb.index.fields.FieldIndex` of the metadata paths
        filters have named (built with :meth:`field`; needs ``metadata``).

    The ``build_*`` methods and :meth:`field` read the store's live rows: the caller
    holds the database's read lock (several readers may build at once: a lock
    inside makes them build each index once).
    """

    __slots__ = ("keys", "key_of", "metadata", "words", "fields", "_lock")

    def __init__(self):
        self.keys: dict[str, int] | None = None
        self.key_of: dict[int, str] | None = None
        self.metadata: dict[int, dict] | None = None
        self.words: WordIndex | None = None
        self.fields: dict[str, FieldIndex] = {}
        self._lock = threading.RLock()

    @property
    def built(self) -> bool:
        """Whether any of the indexes exists (a commit then has them to update)."""
        return self.keys is not None or self.metadata is not None or self.words is not None

    def field(self, path: str, store) -> FieldIndex:
        """The :class:`~sutradb.index.fields.FieldIndex` of metadata ``path`` (built
        from :attr:`metadata` on first use)."""
        fi = self.fields.get(path)
        if fi is None:
            with self._lock:
                fi = self.fields.get(path)
                if fi is None:
                    fi = FieldIndex(path, self.build_metadata(store)).build()
                    self.fields[path] = fi
        return fi

    def build_keys(self, store) -> dict:
        """Build :attr:`keys` (and :attr:`key_of`) from ``store``; returns :attr:`keys`."""
        ki, ik = {}, {}
        for row in np.flatnonzero(store.live).tolist():
            r = store.record_at(row)
            if r.key is not None:
                ki[r.key] = r.id
                ik[r.id] = r.key
        self.key_of = ik
        self.keys = ki
        return ki

    def build_metadata(self, store) -> dict:
        """Build :attr:`metadata` from ``store`` unless it is built; returns it (one
        dict for the life of these indexes: the field indexes read it)."""
        with self._lock:
            if self.metadata is None:
                self.metadata = self._read_metadata(store)
            return self.metadata

    @staticmethod
    def _read_metadata(store) -> dict:
        md = {}
        rows = np.flatnonzero(store.live)
        for s0 in range(0, len(rows), 65536):
            for r in store.records_at(rows[s0:s0 + 65536]):
                md[r.id] = r.metadata
        return md

    def build_words(self, store) -> WordIndex:
        """Build :attr:`words` from ``store``; returns it."""
        wi = WordIndex()
        for row in np.flatnonzero(store.live).tolist():
            r = store.record_at(row)
            if r.text:
                wi.set(r.id, r.text)
        self.words = wi
        return wi

    def set(self, i: int, rec) -> None:
        """Id ``i`` is now ``rec`` (``(key, text, metadata, ...)``), or deleted (None):
        update the indexes that are built."""
        keys = self.keys
        if keys is not None:
            old = self.key_of.pop(i, None)  # type: ignore[union-attr]  # built with keys
            if old is not None and keys.get(old) == i:
                del keys[old]
            if rec is not None and rec[0] is not None:
                keys[rec[0]] = i
                self.key_of[i] = rec[0]  # type: ignore[index]  # (likewise)
        if self.metadata is not None:
            if rec is None:
                self.metadata.pop(i, None)
            else:
                self.metadata[i] = rec[2] or {}
            for fi in self.fields.values():
                fi.changed(i)
        if self.words is not None:
            if rec is None:
                self.words.remove(i)
            else:
                self.words.set(i, rec[1])
