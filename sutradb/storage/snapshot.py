"""The committed state a store object sees: its snapshot.

A snapshot holds *rows*. A row is one version of one concept: an id (int64), a record
(key, text, metadata), and, when the store has them, a row of PQ codes
(``(code_size,) uint8``) and a full vector (``(vector_dim,)`` float16 or float32).
Rows are only ever appended; writing an id that exists appends a new row and marks
the old one dead, deleting an id marks its row dead. Row numbers are therefore stable
until :meth:`Store.compact` renumbers the live rows (in their order).

The state is the checkpointed version a manifest names (its segment files, mapped:
:meth:`Snapshot._install`) plus the *tail*: the transactions the log added since,
applied in memory (:meth:`Snapshot._apply`: rows as :class:`~.records.Chunk` s, dead
rows, link changes, the index and meta last set).

The kernels read ``store.codes`` (``(n_rows, code_size) uint8``, C-contiguous and
read-only: a view of the mapped code file when the log holds no rows, else a cached
concatenation) or, without any copy, :meth:`Snapshot.code_blocks`; ``store.ids`` maps a
row to its id and ``store.live`` says which rows are current.

Keys are unique among live rows: :meth:`Transaction.put` raises
:class:`~sutradb.errors.DuplicateKeyError` for a key another live id holds, and
:meth:`Snapshot.id_for_key` finds the id of a key (:mod:`.keys`). Beside the rows a
snapshot has links ``(src, dst, relation) -> weight`` (:mod:`.links`), an opaque index
blob with named arrays (codebooks, parameters: the index layer's business) and a small
``meta`` dict.

:class:`Snapshot` is the base class of :class:`~.store.Store`, which builds it (open,
replay, commit, checkpoint) and adds the writer; it is not used on its own. Its
attributes are the ones every read and commit touches, kept on the one object so that
``codes``, ``record_at`` and the commit path pay no indirection.
"""

from __future__ import annotations

import bisect
import functools
import math
import os
import threading

from typing import Any, cast

import numpy as np

from ..errors import (ClosedError, CorruptDatabaseError, InvalidArgumentError, NotFoundError,
                      SutraError)
from .format import DTYPES
from .keys import KeyIndex
from .links import LinkTable
from ._codec import RecordFile
from .records import Record, as_ids, decode_record
from .tail import TailMixin, concat_rows
from .terms import TailTerms, TermRun, map_run
from ..text import Tokenizer, check_spec

__all__ = ["Snapshot"]

_I8 = np.dtype("<i8")
_U8 = np.dtype("<u8")
_EMPTY_I8 = np.zeros(0, _I8)


class Snapshot(TailMixin):
    """The rows, links, index and meta of one committed state (see the module
    docstring); the reading half of :class:`~.store.Store`.

    Its state is set by :meth:`_install` (a manifest's version) and advanced by
    :meth:`~.tail.TailMixin._apply` (committed transactions, :mod:`.tail`); the subclass sets ``_dir`` (None in
    memory), ``_closed`` and ``_broken`` (checked by every public read).
    """

    _closed: bool                   # set by the subclass (see above)
    _broken: Any

    # ------------------------------------------------------------------ installing a version

    def _where(self, name):
        return name if self._dir is None else _joined(self._dir, name)

    def _install(self, gen, body, maps):
        """Set the checkpointed state of manifest ``gen`` and empty the log tail."""
        self._gen = gen
        self._man = body
        self._uuid = body["uuid"]
        self._maps = maps
        self._m, self._d = body["m"], body["d"]
        self._vdtype = DTYPES[body["vdtype"]] if body["vdtype"] else None
        n = self._seg_n = body["n"]
        self._txn = body["txn"]
        self._meta = body["meta"]
        self._next_file = body["next_file"]
        w = self._where
        if "ids" in maps:
            self._seg_ids_raw = maps["ids"].array(_I8, n)
            self._seg_ends = maps["ends"].array(_U8, n)
            self._seg_rec = maps["rec"].array(np.uint8)
        else:
            self._seg_ids_raw, self._seg_ends, self._seg_rec = _EMPTY_I8, np.zeros(0, _U8), np.zeros(0, np.uint8)
        self._seg_codes = (maps["codes"].array(np.uint8, n * self._m).reshape(n, self._m)
                           if "codes" in maps else None)
        self._seg_vecs = (maps["vec"].array(self._vdtype, n * self._d).reshape(n, self._d)
                          if "vec" in maps else None)
        self._seg_order = maps["order"].array(_I8, n) if "order" in maps else None
        self._seg_keys = None
        self._recf: RecordFile | None = None
        self._ends_checked = False
        self._ids_checked = not n
        dead = maps["dead"].array(_I8) if "dead" in maps else _EMPTY_I8
        if len(dead) and (dead.min() < 0 or dead.max() >= n):
            raise CorruptDatabaseError(f"{w(body['files']['dead']['name'])}: dead row out of range")
        self._live = np.ones(max(n, 1024), bool)
        self._live[dead] = False
        self._n = n
        self._n_live = n - (len(np.unique(dead)) if len(dead) else 0)   # not O(n)
        self._links = LinkTable(maps.get("links"), body["links"],
                                w(body["links"]["name"]) if body["links"] else "")
        self._index_entry = body["index"]
        self._index_pending: tuple[bytes, dict[str, np.ndarray]] | None = None
        # the tail (what the log added since the checkpoint)
        self._chunks = []
        self._chunk_rows = []
        self._tail_map = {}
        self._tail_dead = []
        self._cache = {}
        self._grow = {}           # row buffers that commits extend (_cat_rows)
        # term postings: the stored runs (checked on first use) and the rows past them
        terms = body.get("terms")
        self._text_spec = terms["spec"] if terms else check_spec(None)
        self._tokenizer: Tokenizer | None = None
        runs = []
        # a run file the previous version named too is the same file (never
        # rewritten): keep its object, checked state included
        before = {(r.mapped.name, r.mapped.crc): r for r in getattr(self, "_term_runs", ())
                  if r.mapped is not None}
        for j, e in enumerate(terms["runs"] if terms else ()):
            old = before.get((e["name"], e["crc"]))
            runs.append(old if old is not None else map_run(maps[f"terms{j}"], e, w(e["name"])))
        self._term_runs: list[TermRun] = runs
        self._terms_tail = TailTerms(sum(r.n for r in runs))
        # keys: the checkpointed index (mapped lazily) and the log's additions
        self._keys = KeyIndex(maps.get("keys"), w(body["files"]["keys"]["name"]) if "keys" in maps else "",
                              self._scan_keys if n else None, self._live_key_of)

    # ------------------------------------------------------------------ applying committed transactions

    # ------------------------------------------------------------------ lookups

    @property
    def _seg_ids(self):
        """The ids of the checkpointed rows, checked against the manifest's CRC-32 of
        the ``.ids`` (and ``.order``) file on first use: every id lookup, read by row
        and checkpoint goes through here, and ids damaged so that they stay sorted
        (the order check passes) would otherwise show rows under ids never stored.
        O(8 bytes per row) once per version."""
        if not self._ids_checked:
            self._maps["ids"].check_crc()
            if "order" in self._maps:
                self._maps["order"].check_crc()
            self._ids_checked = True
        return self._seg_ids_raw

    def _seg_lookup(self):
        """(sorted ids, rows or None) of the checkpointed rows, validated once."""
        if self._seg_keys is None:
            ids, order, n = self._seg_ids, self._seg_order, self._seg_n
            if order is None:
                if n > 1 and not (ids[1:] > ids[:-1]).all():
                    raise CorruptDatabaseError(f"{self._where(self._man['files']['ids']['name'])}: "
                                               "ids are not sorted as the manifest says")
                self._seg_keys = ids
            else:
                where = self._where(self._man["files"]["order"]["name"])
                if n and (order.min() < 0 or order.max() >= n or np.bincount(order, minlength=n).max() != 1):
                    raise CorruptDatabaseError(f"{where}: not a permutation of the rows")
                keys = ids[order]
                if n > 1:
                    dk = np.diff(keys)
                    if not ((dk > 0) | ((dk == 0) & (np.diff(order) > 0))).all():
                        raise CorruptDatabaseError(f"{where}: rows are not in id order")
                self._seg_keys = keys
        return self._seg_keys, self._seg_order

    def _live_row(self, i: int) -> int:
        """Current live row of one id (-1 if none): :meth:`_rows_of_committed` for a
        Python int, without building arrays."""
        r = self._tail_map.get(i)
        if r is None:
            if not self._seg_n:
                return -1
            keys, order = self._seg_lookup()
            p = int(keys.searchsorted(i, "right")) - 1
            if p < 0 or keys[p] != i:
                return -1
            r = p if order is None else int(order[p])
        return r if self._live[r] else -1

    def _rows_of_committed(self, q: np.ndarray) -> np.ndarray:
        """Current live row of each id of ``q`` (-1 if none)."""
        out = np.full(len(q), -1, _I8)
        if not len(q):
            return out
        if self._seg_n:
            keys, order = self._seg_lookup()
            k0 = int(keys[0])
            if int(keys[-1]) - k0 == len(keys) - 1 and order is None:
                # consecutive ids (sorted and distinct, checked): the id is the address
                pos = q - k0
                ok = (pos >= 0) & (pos < len(keys))
                out[ok] = pos[ok]
            else:
                pos = np.searchsorted(keys, q, "right") - 1
                ok = pos >= 0
                pos = np.where(ok, pos, 0)
                ok &= keys[pos] == q
                rows = pos if order is None else order[pos]
                out[ok] = rows[ok]
        tm = self._tail_map
        if tm:
            if len(q) <= 256 or len(tm) <= 256:
                for i, v in enumerate(q.tolist()):
                    r = tm.get(v)
                    if r is not None:
                        out[i] = r
            else:
                tk, tr = self._tail_sorted()
                pos = np.minimum(np.searchsorted(tk, q), len(tk) - 1)
                hit = tk[pos] == q
                out[hit] = tr[pos[hit]]
        m = out >= 0
        out[m] = np.where(self._live[out[m]], out[m], -1)
        return out

    def _tail_sorted(self):
        c = self._cache.get("tail_sorted")
        if c is None:
            tk = np.fromiter(self._tail_map.keys(), _I8, len(self._tail_map))
            tr = np.fromiter(self._tail_map.values(), _I8, len(self._tail_map))
            o = np.argsort(tk)
            c = self._cache["tail_sorted"] = (tk[o], tr[o])
        return c

    # ------------------------------------------------------------------ reads

    def _check_open(self):
        if self._closed:
            raise ClosedError("the store is closed")
        if self._broken is not None:
            raise SutraError(f"the store hit an I/O error after a commit point ({self._broken}); "
                             "close and reopen it")

    @property
    def generation(self) -> int:
        """Generation of the manifest this snapshot is based on."""
        return self._gen

    @property
    def txn_id(self) -> int:
        """Id of the last committed transaction visible here (0 for none)."""
        return self._txn

    @property
    def code_size(self) -> int:
        """Bytes of PQ codes per row (0: the store keeps no codes yet)."""
        return self._m

    @property
    def vector_dim(self) -> int:
        """Dimension of stored vectors (0: the store keeps no vectors yet)."""
        return self._d

    @property
    def vector_dtype(self):
        """``numpy.float16`` / ``numpy.float32`` dtype of stored vectors, or None."""
        return self._vdtype

    @property
    def n_rows(self) -> int:
        """Rows, dead ones included (the length of ``ids``, ``live``, ``codes``)."""
        self._check_open()
        return self._n

    @property
    def n_live(self) -> int:
        """Live concepts."""
        self._check_open()
        return self._n_live

    def __len__(self) -> int:
        return self.n_live

    def _cat_rows(self, name, seg, attr, width, dtype):
        """All rows of one array (the mapped segment, then the log's chunks), cached
        until the next commit. With rows in the log the concatenation lives in a
        buffer with spare room that later commits extend by their own rows only
        (amortised O(new rows) per commit instead of a copy of every row); views given
        out earlier stay valid and unchanged."""
        c = self._cache.get(name)
        if c is not None:
            return c
        seg = seg if seg is not None and len(seg) else None
        chunks = self._chunks
        grow = self._grow
        if not chunks or (seg is None and len(chunks) == 1):
            grow.pop(name, None)
            if chunks:
                c = getattr(chunks[0], attr)
            else:
                c = seg if seg is not None else np.zeros((0, width) if width is not None else 0, dtype)
            if c.flags.writeable:
                c = c.view()
                c.setflags(write=False)
        else:
            with _GROW_LOCK:
                c = _grow_rows(grow, name, seg, chunks, attr)
        self._cache[name] = c
        return c

    @property
    def ids(self) -> np.ndarray:
        """``(n_rows,) int64``: the id of each row (read-only)."""
        self._check_open()
        return self._cat_rows("ids", self._seg_ids, "ids", None, _I8)

    @property
    def live(self) -> np.ndarray:
        """``(n_rows,) bool``: which rows are current (read-only view)."""
        self._check_open()
        v = self._live[:self._n].view()
        v.setflags(write=False)
        return v

    @property
    def codes(self) -> np.ndarray:
        """``(n_rows, code_size) uint8`` C-contiguous, read-only.

        A view of the mapped code file when every row is checkpointed; otherwise a
        concatenation cached until the next commit (use :meth:`code_blocks` to scan
        without it).
        """
        self._check_open()
        return self._cat_rows("codes", self._seg_codes, "codes", self._m, np.uint8)

    @property
    def vectors(self) -> np.ndarray | None:
        """``(n_rows, vector_dim)`` float16/float32, read-only (None without vectors)."""
        self._check_open()
        if not self._d:
            return None
        return self._cat_rows("vecs", self._seg_vecs, "vecs", self._d, self._vdtype)

    def code_blocks(self) -> list[tuple[int, np.ndarray]]:
        """``[(first_row, codes), ...]`` covering all rows without copying the mapped
        part: at most two blocks (checkpointed rows, then the log's rows)."""
        self._check_open()
        out = []
        if self._seg_n and self._seg_codes is not None:
            out.append((0, self._seg_codes))
        if self._chunks:
            c = self._cache.get("tail_codes")
            if c is None:
                c = self._cache["tail_codes"] = concat_rows([ch.codes for ch in self._chunks], np.uint8, self._m)
                c.setflags(write=False)
            out.append((self._seg_n, c))
        return out

    def vector_blocks(self) -> list[tuple[int, np.ndarray]]:
        """``[(first_row, vectors), ...]`` covering all rows without copying the mapped
        part (at most two blocks: checkpointed rows, then the log's rows); ``[]``
        without vectors. Unlike :attr:`vectors` this costs O(rows in the log) after a
        commit, not O(all rows)."""
        self._check_open()
        if not self._d:
            return []
        out = []
        if self._seg_n and self._seg_vecs is not None:
            out.append((0, self._seg_vecs))
        if self._chunks:
            c = self._cache.get("tail_vecs")
            if c is None:
                c = self._cache["tail_vecs"] = concat_rows([ch.vecs for ch in self._chunks], self._vdtype, self._d)
                c.setflags(write=False)
            out.append((self._seg_n, c))
        return out

    def rows_of(self, ids) -> np.ndarray:
        """Row of each id (``-1`` for an id that is not live)."""
        self._check_open()
        return self._rows_of_committed(as_ids(ids))

    def __contains__(self, id_) -> bool:
        try:
            return bool(self.rows_of([id_])[0] >= 0)
        except (InvalidArgumentError, TypeError):
            return False

    def _row_of(self, id_) -> int:
        if isinstance(id_, bool) or not isinstance(id_, (int, np.integer)):
            raise InvalidArgumentError(f"an id must be an int, not {type(id_).__name__}")
        r = int(self.rows_of([id_])[0])
        if r < 0:
            raise NotFoundError(f"id {int(id_)} is not in the store")
        return r

    def record_at(self, row: int) -> Record:
        """The record of row ``row`` (live or dead)."""
        if self._closed or self._broken is not None:
            self._check_open()
        if type(row) is not int:
            row = int(row)
        if 0 <= row < self._seg_n:            # checkpointed: the C codec
            return (self._recf or self._recfile()).at(row)
        if not 0 <= row < self._n:
            raise InvalidArgumentError(f"row {row} out of range [0, {self._n})")
        if row < self._seg_n:
            return (self._recf or self._recfile()).at(row)
        i = bisect.bisect_right(self._chunk_rows, row) - 1
        ch = self._chunks[i]
        j = row - ch.row0
        start = int(ch.ends[j - 1]) if j else 0
        return decode_record(int(ch.ids[j]), ch.rec[start:int(ch.ends[j])],
                             self._where(self._man["wal"]))

    def records_at(self, rows) -> list[Record]:
        """The records of many rows, in order: :meth:`record_at` with the per-file
        work (names, offset checks) done once.

        Parameters
        ----------
        rows : sequence of int
            Rows in ``[0, n_rows)`` (live or dead).
        """
        self._check_open()
        rows = np.asarray(rows, _I8).ravel()
        n = len(rows)
        if not n:
            return []
        if rows.min() < 0 or rows.max() >= self._n:
            bad = int(rows[(rows < 0) | (rows >= self._n)][0])
            raise InvalidArgumentError(f"row {bad} out of range [0, {self._n})")
        out: list[Any] = [None] * n
        in_seg = rows < self._seg_n
        pos = np.flatnonzero(in_seg)
        if len(pos) == n:
            return self._recfile().many(rows)
        if len(pos):
            seg = np.ascontiguousarray(rows[pos])
            for p, r in zip(pos.tolist(), self._recfile().many(seg)):
                out[p] = r
        if len(pos) < n:
            where = self._where(self._man["wal"])
            for p in np.flatnonzero(~in_seg).tolist():
                row = int(rows[p])
                ch = self._chunks[bisect.bisect_right(self._chunk_rows, row) - 1]
                j = row - ch.row0
                a = int(ch.ends[j - 1]) if j else 0
                out[p] = decode_record(int(ch.ids[j]), ch.rec[a:int(ch.ends[j])], where)
        return out

    def record_columns(self, rows) -> tuple[list[Any], list[Any], list[Any]]:
        """The keys, texts and metadata of many rows, as three lists in the order of
        ``rows``: :meth:`records_at` without a :class:`Record` per row (the batch path
        of ``get_many``). Metadata is ``{}`` where a record has none."""
        self._check_open()
        rows = np.ascontiguousarray(rows, _I8).ravel()
        if len(rows) and 0 <= rows.min() and rows.max() < self._seg_n:
            return self._recfile().columns(rows)
        recs = self.records_at(rows)
        return [r.key for r in recs], [r.text for r in recs], [r.metadata for r in recs]

    def _recfile(self) -> RecordFile:
        """The segment's record file in the C codec (made on first use per version)."""
        rf = self._recf
        if rf is None:
            files = self._man["files"]
            # the ids are checked against their CRC here (once per version)
            rf = self._recf = RecordFile(self._seg_rec, np.ascontiguousarray(self._seg_ends, np.uint64),
                                         np.ascontiguousarray(self._seg_ids, np.int64),
                                         self._where(files["rec"]["name"]) if "rec" in files else "",
                                         self._where(files["ends"]["name"]) if "ends" in files else "")
        return rf

    def get_record(self, id_) -> Record:
        """The record of a live id.

        Raises
        ------
        NotFoundError
            ``id_`` is not live.
        """
        return self.record_at(self._row_of(id_))

    def get_codes(self, ids) -> np.ndarray:
        """``(len(ids), code_size)`` codes of live ids (NotFoundError otherwise)."""
        rows = self._rows_strict(ids)
        return self.codes[rows]

    def get_vectors(self, ids) -> np.ndarray:
        """``(len(ids), vector_dim)`` vectors of live ids (NotFoundError otherwise)."""
        rows = self._rows_strict(ids)
        if not self._d:
            raise InvalidArgumentError("the store keeps no vectors")
        return cast(np.ndarray, self.vectors)[rows]

    def _rows_strict(self, ids):
        q = as_ids(ids)
        rows = self.rows_of(q)
        if (rows < 0).any():
            raise NotFoundError(f"id {int(q[np.argmax(rows < 0)])} is not in the store")
        return rows

    def live_ids(self) -> np.ndarray:
        """Ids of the live rows, in row order."""
        return self.ids[self.live]

    def _check_ends(self):
        if not self._ends_checked:
            e = self._seg_ends
            if len(e) and (not (e[1:] >= e[:-1]).all() or int(e[-1]) > len(self._seg_rec)):
                raise CorruptDatabaseError(f"{self._where(self._man['files']['ends']['name'])}: "
                                           "record offsets are not increasing")
            self._ends_checked = True

    # ------------------------------------------------------------------ term postings

    @property
    def text_spec(self) -> dict:
        """The tokenizer spec of the stored term postings (:mod:`sutradb.text`)."""
        return dict(self._text_spec)

    @property
    def tokenizer(self) -> Tokenizer:
        """The :class:`~sutradb.text.Tokenizer` of :attr:`text_spec` (made on first use).

        Raises
        ------
        InvalidArgumentError
            The spec names a stemmer whose package is not installed.
        """
        t = self._tokenizer
        if t is None:
            t = self._tokenizer = Tokenizer(self._text_spec)
        return t

    def term_runs(self) -> list[TermRun]:
        """Runs of postings covering every row (:mod:`.terms`): the stored ones,
        checked on first use, then the rows in the log, tokenised on first use."""
        self._check_open()
        for r in self._term_runs:
            if not r._checked:
                r.check(self._where(r.mapped.name))  # type: ignore[union-attr]  # stored runs are mapped
        tail = self._terms_tail
        if tail.upto < self._n:
            tail.extend(self.tokenizer, self._n, self._texts_of)
        return self._term_runs + tail.runs

    def _texts_of(self, a: int, b: int) -> list[str | None]:
        return self.record_columns(np.arange(a, b, dtype=_I8))[1]

    def postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows (live or dead, int64) whose text holds the term of hash ``term``, and
        how often (uint16)."""
        parts = [r.lookup(term) for r in self.term_runs()]
        parts = [p for p in parts if len(p[0])]
        if not parts:
            return np.zeros(0, _I8), np.zeros(0, np.uint16)
        if len(parts) == 1:
            return parts[0]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def doc_lengths(self) -> np.ndarray:
        """``(n_rows,) uint32``: terms in each row's text (cached until the next commit)."""
        c = self._cache.get("doclen")
        if c is None:
            runs = self.term_runs()
            c = runs[0].doclen if len(runs) == 1 else (
                np.concatenate([r.doclen for r in runs]) if runs else np.zeros(0, np.uint32))
            self._cache["doclen"] = c
        return c

    def text_stats(self) -> tuple[int, float]:
        """``(live concepts, their mean document length in terms)``: the collection
        statistics of BM25 (cached until the next commit)."""
        c = self._cache.get("text_stats")
        if c is None:
            n = int(self._n_live)
            dl = self.doc_lengths()
            c = self._cache["text_stats"] = (n, float(dl[self.live].sum()) / max(n, 1))
        return cast("tuple[int, float]", c)

    # ------------------------------------------------------------------ keys

    def has_keys(self) -> bool:
        """Whether any committed row may have a key (O(1); false positives allowed,
        never a false negative): when False, no key is taken."""
        self._check_open()
        return self._keys.has_keys()

    def id_for_key(self, key: str) -> int | None:
        """The live id whose record has key ``key`` (committed state), or None.

        Keys are unique among live rows (:meth:`Transaction.put` enforces it). The
        lookup uses the checkpointed key index (a ``.keys`` segment: sorted 64-bit key
        hashes and ids, mapped, O(log n)) and the keys the log added since; every
        candidate is confirmed against the row's record, so a hash collision or a stale
        entry never yields a wrong id.
        """
        self._check_open()
        if not isinstance(key, str):
            raise InvalidArgumentError(f"a key must be a str, not {type(key).__name__}")
        return self._keys.owner(key)

    def _live_key_of(self, id_: int):
        """Key of the live row of ``id_`` (None if not live or without key)."""
        r = self._live_row(id_)
        if r < 0:
            return None
        if r >= self._seg_n:
            ch = self._chunks[bisect.bisect_right(self._chunk_rows, r) - 1]
            return ch.keys[r - ch.row0]
        return self.record_at(r).key

    def _scan_keys(self):
        """(ids, keys) of the live keyed checkpointed rows, from their records (a
        store written before key indexes existed)."""
        keys, ids = [], []
        for r in np.flatnonzero(self._live[:self._seg_n]).tolist():
            k = self.record_at(r).key
            if k is not None:
                keys.append(k)
                ids.append(int(self._seg_ids[r]))
        return ids, keys

    # ------------------------------------------------------------------ links

    def _links_query(self, q, outgoing, relation):
        self._check_open()
        if isinstance(q, bool) or not isinstance(q, (int, np.integer)):
            raise InvalidArgumentError("an id must be an int")
        return self._links.query(int(q), outgoing, relation)

    def links_from(self, src, relation: str | None = None) -> list[tuple[int, str, float]]:
        """Outgoing links of ``src``: ``[(dst, relation, weight), ...]``."""
        return self._links_query(src, True, relation)

    def links_to(self, dst, relation: str | None = None) -> list[tuple[int, str, float]]:
        """Incoming links of ``dst``: ``[(src, relation, weight), ...]``."""
        return self._links_query(dst, False, relation)

    def all_links(self) -> list[tuple[int, int, str, float]]:
        """Every link ``(src, dst, relation, weight)``, sorted (O(links))."""
        self._check_open()
        return self._links.all()

    # ------------------------------------------------------------------ index and meta

    @property
    def index_blob(self) -> bytes | None:
        """The opaque index blob (None if never set)."""
        self._check_open()
        if self._index_pending is not None:
            return self._index_pending[0]
        e = self._index_entry
        if e is None:
            return None
        off, ln = e["blob"]
        return self._maps["index"].array(np.uint8, ln, off).tobytes()

    @property
    def index_arrays(self) -> dict:
        """The named index arrays (read-only; views of the mapped index file)."""
        self._check_open()
        if self._index_pending is not None:
            return dict(self._index_pending[1])
        e = self._index_entry
        if e is None:
            return {}
        mf = self._maps["index"]
        return {name: mf.array(DTYPES[code], math.prod(shape), off).reshape(shape)
                for name, code, shape, off in e["arrays"]}

    @property
    def meta(self) -> dict:
        """A copy of the small user dict (set with :meth:`Transaction.set_meta`)."""
        self._check_open()
        return _deepcopy_plain(self._meta)


# --------------------------------------------------------------------------- helpers

_GROW_LOCK = threading.Lock()


def _grow_rows(grow: dict, name: str, seg, chunks: list, attr: str) -> np.ndarray:
    """``seg`` then the ``attr`` arrays of ``chunks``, as a read-only view of the
    buffer ``grow[name]``: extended in place when it already holds ``seg`` and a prefix
    of ``chunks`` (the same objects), else rebuilt with half again as much room."""
    parts = [getattr(ch, attr) for ch in chunks]
    total = (len(seg) if seg is not None else 0) + sum(len(p) for p in parts)
    g = grow.get(name)
    if (g is not None and g["seg"] is seg and g["k"] <= len(chunks)
            and (g["k"] == 0 or chunks[g["k"] - 1] is g["last"])
            and len(g["buf"]) >= total):
        buf, pos = g["buf"], g["filled"]
        for p in parts[g["k"]:]:
            buf[pos:pos + len(p)] = p
            pos += len(p)
    else:
        first = parts[0]
        buf = np.empty((total + total // 2 + 1024,) + first.shape[1:], first.dtype)
        pos = 0
        for p in ([seg] if seg is not None else []) + parts:
            buf[pos:pos + len(p)] = p
            pos += len(p)
    grow[name] = {"seg": seg, "k": len(chunks), "last": chunks[-1], "buf": buf, "filled": pos}
    v = buf[:pos]
    v.setflags(write=False)
    return v


@functools.lru_cache(maxsize=256)
def _joined(d: str, name: str) -> str:
    """``os.path.join`` of a directory and a file name, cached (every record read
    names its file for the messages of damage)."""
    return os.path.join(d, name)


def _deepcopy_plain(x):
    if isinstance(x, dict):
        return {k: _deepcopy_plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_deepcopy_plain(v) for v in x]
    return x
