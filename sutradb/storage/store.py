"""The store: one directory, one writer, many readers, atomic transactions.

A :class:`Store` holds *rows*. A row is one version of one concept: an id (int64),
a record (key, text, metadata), and, when the store has them, a row of PQ codes
(``(code_size,) uint8``) and a full vector (``(vector_dim,)`` float16 or float32).
Rows are only ever appended; writing an id that exists appends a new row and marks
the old one dead, deleting an id marks its row dead. Row numbers are therefore stable
until :meth:`Store.compact` renumbers the live rows (in their order).

The kernels read ``store.codes`` (``(n_rows, code_size) uint8``, C-contiguous and
read-only: a view of the mapped code file when the log holds no rows, else a cached
concatenation) or, without any copy, :meth:`Store.code_blocks`; ``store.ids`` maps a
row to its id and ``store.live`` says which rows are current.

Keys are unique among live rows: :meth:`Transaction.put` raises
:class:`~sutradb.errors.DuplicateKeyError` for a key another live id holds, and
:meth:`Store.id_for_key` finds the id of a key (:mod:`.keys`).

Beside the rows a store keeps links ``(src, dst, relation) -> weight`` (:mod:`.links`),
an opaque index blob with named arrays (codebooks, parameters: the index layer's
business) and a small ``meta`` dict.

The pieces
----------
:class:`Store` composes collaborators that each own one concern and can be used and
tested alone: the record codec and row chunks (:mod:`.records`), the open log
(:class:`.wal.Log`: append, replay, torn-tail detection), generations and the atomic
manifest swap (:mod:`.manifest`), the key index (:class:`.keys.KeyIndex`), the link
table (:class:`.links.LinkTable`) and the segment builders of checkpoints and
compactions (:mod:`.compaction`). Staging lives in :mod:`.transaction`. The store
keeps the state the hot paths read (the rows, their liveness, the log's tail of rows)
as its own attributes, and owns the transaction protocol: commit through the log, by
a spill or a rewrite; checkpoint; compaction; recovery after a failed write.

Durability levels (``durability=``)
-----------------------------------
``"full"``
    Every commit fsyncs the log before :meth:`Transaction.commit` returns. A commit
    that returned survives a process crash, an OS crash and a power loss. The log is
    preallocated with zeros (and grown by as much in the write of a commit), so the
    ``fdatasync`` of a commit does not update the file size; the end of the log is
    found by its salted, checksummed frames (``docs/file-format.md``, section 4).
``"normal"``
    Commits are written to the log but fsynced only at checkpoints (as SQLite's WAL
    with ``synchronous=NORMAL``). A process crash loses nothing that committed; an OS
    crash or power loss may lose the transactions committed since the last
    checkpoint, but never leaves half of one and never corrupts the database.
``"off"``
    Nothing is fsynced, checkpoints included (bulk loads). A process crash still loses
    nothing that committed (the data is in the OS page cache); an OS crash or power
    loss may lose recent transactions *and* may leave files the manifest names
    incompletely written, which :meth:`Store.verify` (and reads of damaged records)
    report as :class:`~sutradb.errors.CorruptDatabaseError`.

Concurrency
-----------
One process (one :class:`Store` object) writes at a time: the writer holds an
exclusive lock on ``LOCK`` (``flock``; ``LockFileEx`` on Windows: see :mod:`.osio`);
another writer gets :class:`~sutradb.errors.LockedError` at once or after polling up
to ``timeout`` seconds. Readers (``mode="r"``) take no lock and write nothing: they
read the manifest, map the files it names and replay the log up to its last complete
transaction, which is their snapshot; :meth:`Store.refresh` moves them forward. A
writer deletes files that the current manifest no longer names right after the
manifest swap: a reader that has already opened (mapped) them keeps reading them
(POSIX unlink semantics; Windows refuses the delete while a file is open or mapped,
and a later sweep retries), a reader that had read the older manifest but not yet
opened its files finds one missing, re-reads the manifest and retries. A
:class:`Store` object is not thread-safe; share one behind a lock, or open one per
thread.
"""

from __future__ import annotations

import bisect
import math
import os
import time
import uuid as _uuid

import numpy as np

from ..errors import (ClosedError, CorruptDatabaseError, DatabaseExistsError,
                      DatabaseNotFoundError, InvalidArgumentError, LockedError, NotFoundError,
                      ReadOnlyError, SutraError)
from . import osio
from .format import (DTYPES, DTYPE_CODE, HEADER_SIZE, KIND_CODES, KIND_KEYS, KIND_ORDER,
                     KIND_VEC, LOCK_NAME, MANIFEST_NAME, MAX_RECORD, decode_manifest,
                     file_name, parse_file_name, seg_header, wal_name)
from .compaction import (append_rows, copy_live_rows, create_row_files, read_appended,
                         write_index_file)
from .keys import KeyIndex
from .links import LinkTable
from .manifest import (check_create_params, check_manifest, create_generation, fresh_body,
                       map_files, read_file, sweep, write_manifest)
from .records import Chunk, Record, as_ids, decode_record, encode_record
from .segments import Appender, write_new_file
from .transaction import Transaction
from .wal import Log, create_log, encode_transaction

__all__ = ["Store", "Transaction", "Record", "DURABILITY_LEVELS"]

DURABILITY_LEVELS = ("full", "normal", "off")
MODES = ("r", "a", "w", "x")
MEMORY = ":memory:"

_I8 = np.dtype("<i8")
_U1 = np.dtype("u1")
_U8 = np.dtype("<u8")
_F8 = np.dtype("<f8")
_EMPTY_I8 = np.zeros(0, _I8)



# --------------------------------------------------------------------------- helpers

def _cat(parts, dtype, width=None):
    parts = [p for p in parts if p is not None]
    if not parts:
        return np.zeros((0, width) if width else 0, dtype)
    return np.ascontiguousarray(np.concatenate(parts))


# --------------------------------------------------------------------------- store

class Store:
    """A sutradb storage directory (or an in-memory store).

    Use :meth:`Store.open`; the constructor is private. See the module docstring for
    the data model, the durability levels and the concurrency rules.
    """

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path, mode: str = "a", *, timeout: float = 0.0, durability: str = "full",
             create_params: dict | None = None, checkpoint_bytes: int = 16 << 20,
             spill_bytes: int = 16 << 20, compact_ratio: float = 0.5,
             compact_min_rows: int = 4096) -> "Store":
        """Open or create a store.

        Parameters
        ----------
        path : str or os.PathLike or None
            The database directory; ``None`` or ``":memory:"`` for a store that lives
            in memory only.
        mode : {"a", "r", "w", "x"}
            ``"a"`` open for writing, creating it if needed; ``"r"`` read-only (writes
            nothing, takes no lock); ``"w"`` create, or empty an existing store;
            ``"x"`` create, the directory must not exist.
        timeout : float
            Seconds to keep polling for the writer lock (``"a"``, ``"w"``) before
            raising :class:`LockedError`; ``0`` fails at once. For readers, the time
            allowed to obtain a consistent snapshot while a writer is busy.
        durability : {"full", "normal", "off"}
            What a commit costs and what it survives (module docstring).
        create_params : dict, optional
            When the store is created: ``code_size`` (bytes of PQ codes per row),
            ``dim`` and ``vector_dtype`` (``"float16"`` or ``"float32"``) of stored
            vectors. Unset ones are fixed by the first rows written.
        checkpoint_bytes : int
            A commit that leaves more log than this folds the log into segments.
        spill_bytes : int
            A transaction that stages more row data than this writes it straight into
            the segment files (not the log) and commits by swapping the manifest.
        compact_ratio, compact_min_rows
            A checkpoint compacts when at least ``compact_min_rows`` rows are dead and
            they are more than ``compact_ratio`` of all rows.

        Returns
        -------
        Store

        Raises
        ------
        LockedError
            Another writer holds the lock beyond ``timeout``.
        DatabaseNotFoundError
            ``mode="r"`` and there is no store at ``path`` (a ``FileNotFoundError``).
        DatabaseExistsError
            ``mode="x"`` and ``path`` exists (a ``FileExistsError``).
        CorruptDatabaseError
            A file of the store is damaged (the message names it).
        """
        if mode not in MODES:
            raise InvalidArgumentError(f"mode must be one of {MODES}, not {mode!r}")
        if durability not in DURABILITY_LEVELS:
            raise InvalidArgumentError(f"durability must be one of {DURABILITY_LEVELS}, not {durability!r}")
        if not (isinstance(timeout, (int, float)) and timeout >= 0 and math.isfinite(timeout)):
            raise InvalidArgumentError("timeout must be a finite number >= 0")
        params = check_create_params(create_params)
        self = cls.__new__(cls)
        self._memory = path is None or (isinstance(path, str) and path == MEMORY)
        self._dir = None if self._memory else os.path.abspath(os.fspath(path))
        self._mode = "a" if self._memory and mode != "r" else mode
        if self._memory and mode == "r":
            raise InvalidArgumentError("an in-memory store cannot be opened read-only")
        self._durability = durability
        self._timeout = float(timeout)
        self._checkpoint_bytes = int(checkpoint_bytes)
        self._spill_bytes = int(spill_bytes)
        self._compact_ratio = float(compact_ratio)
        self._compact_min_rows = int(compact_min_rows)
        self._closed = False
        self._broken = None
        self._txn_open = None
        self._lock_fd = -1
        self._log = None            # the open log (None: an in-memory store)
        self._apps = {}
        self.last_checkpoint_error = None
        #: Called when rows are renumbered (compaction) while an index is stored:
        #: ``on_renumber(kept)`` with ``kept`` the old row numbers of the surviving rows
        #: in their new order (new row ``j`` was row ``kept[j]``); it returns the index
        #: ``(blob, arrays)`` that matches the new numbering, written in the same
        #: manifest swap, or None to keep the stored index as it is. The store does not
        #: know what the index holds; an index that names rows must follow them.
        self.on_renumber = None
        if self._memory:
            self._init_memory(params)
        elif mode == "r":
            if not os.path.isfile(os.path.join(self._dir, MANIFEST_NAME)):
                raise DatabaseNotFoundError(f"{self._dir}: no sutradb database here")
            self._load(initial=True)
        else:
            try:
                self._open_writer(mode, params)
            except BaseException:
                self._release()
                raise
        return self

    def _init_memory(self, params):
        self._uuid = _uuid.uuid4().bytes
        body = fresh_body(self._uuid, 1, params, 1)
        body["files"] = {}
        self._install(1, body, {})

    # ------------------------------------------------------------------ writer open

    def _open_writer(self, mode, params):
        d = self._dir
        if mode == "x":
            try:
                os.mkdir(d)
            except FileExistsError:
                raise DatabaseExistsError(f"{d}: already exists (mode 'x' creates a new database)") from None
        else:
            os.makedirs(d, exist_ok=True)
        fd = osio.open_file(os.path.join(d, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            osio.lock(fd, timeout=self._timeout,
                      message=f"{d}: another process is writing (lock held"
                              f"{f' for {self._timeout:g} s' if self._timeout else ''})")
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        man = os.path.join(d, MANIFEST_NAME)
        if mode == "w" or not os.path.exists(man):
            if mode != "w":
                ours = [n for n in os.listdir(d) if parse_file_name(n) and parse_file_name(n)[0] == "seg"]
                if ours:
                    raise CorruptDatabaseError(f"{man}: missing, but segment files exist ({ours[0]}, ...)")
            gen = 0
            if mode == "w" and os.path.exists(man):
                try:
                    gen, _ = decode_manifest(read_file(man), man)
                except CorruptDatabaseError:
                    gen = 0
            create_generation(d, gen + 1, _uuid.uuid4().bytes, params, self._durability,
                              self._set_broken)
        self._load(initial=True)
        sweep(self._dir, self._man)
        if not self._log.salt:      # an empty version 1 log: start a version 2 one
            self._checkpoint()

    def _set_broken(self, e):
        """The disk may no longer match the in-memory state (an I/O error after a
        commit point): every later call raises until the store is reopened."""
        self._broken = e

    # ------------------------------------------------------------------ loading

    def _load(self, initial=False):
        """(Re)build the whole state from the manifest and the log on disk."""
        d = self._dir
        man = os.path.join(d, MANIFEST_NAME)
        deadline = time.monotonic() + max(self._timeout, 1.0)
        while True:
            try:
                raw = read_file(man)
            except FileNotFoundError:
                raise DatabaseNotFoundError(f"{d}: no sutradb database here (MANIFEST missing)") from None
            gen, body = decode_manifest(raw, man)
            check_manifest(body, man)
            try:
                maps = map_files(self._dir, body)
                wal_fd = osio.open_file(os.path.join(d, body["wal"]),
                                        os.O_RDONLY if self._mode == "r" else os.O_RDWR)
            except FileNotFoundError as e:
                missing = e.filename
                if self._mode != "r":
                    raise CorruptDatabaseError(f"{missing}: named by the manifest but missing") from None
                try:
                    gen2, _ = decode_manifest(read_file(man), man)
                except (FileNotFoundError, CorruptDatabaseError):
                    gen2 = gen
                if gen2 == gen:
                    raise CorruptDatabaseError(f"{missing}: named by the manifest but missing") from None
                if time.monotonic() > deadline:
                    raise LockedError(f"{d}: the writer keeps replacing the manifest") from None
                continue
            break
        if self._log is not None:
            self._log.close()
        log = self._log = Log(wal_fd, os.path.join(d, body["wal"]), d, self._durability == "full")
        self._install(gen, body, maps)
        log.open_existing(self._uuid, gen)
        self._replay()
        if self._mode != "r":
            log.drop_torn_tail()
            self._open_appenders()

    def _where(self, name):
        return name if self._dir is None else os.path.join(self._dir, name)

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
            self._seg_ids = maps["ids"].array(_I8, n)
            self._seg_ends = maps["ends"].array(_U8, n)
            self._seg_rec = maps["rec"].array(np.uint8)
        else:
            self._seg_ids, self._seg_ends, self._seg_rec = _EMPTY_I8, np.zeros(0, _U8), np.zeros(0, np.uint8)
        self._seg_codes = (maps["codes"].array(np.uint8, n * self._m).reshape(n, self._m)
                           if "codes" in maps else None)
        self._seg_vecs = (maps["vec"].array(self._vdtype, n * self._d).reshape(n, self._d)
                          if "vec" in maps else None)
        self._seg_order = maps["order"].array(_I8, n) if "order" in maps else None
        self._seg_keys = None
        self._ends_checked = False
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
        self._index_pending = None
        # the tail (what the log added since the checkpoint)
        self._chunks = []
        self._chunk_rows = []
        self._tail_map = {}
        self._tail_dead = []
        self._cache = {}
        # keys: the checkpointed index (mapped lazily) and the log's additions
        self._keys = KeyIndex(maps.get("keys"), w(body["files"]["keys"]["name"]) if "keys" in maps else "",
                              self._scan_keys if n else None, self._live_key_of)

    # ------------------------------------------------------------------ the log

    def _replay(self, strict=True):
        """Apply every complete transaction of the log after its replayed position
        (:meth:`.wal.Log.replay`); whether any was."""
        return self._log.replay(self._apply_logged, self._txn, strict, self._mode == "r")

    def _apply_logged(self, ops):
        """Apply one transaction replayed from the log."""
        self._apply(ops)
        self._txn += 1

    # ------------------------------------------------------------------ applying

    def _apply(self, ops, spilled_rows=None):
        """Apply the ops of one committed transaction to the in-memory state.

        ``spilled_rows``: for a spilled transaction, the ids of its rows, which are
        already in the segment files right after the checkpointed rows.
        """
        r0 = self._n
        row = r0
        puts = []
        dels = []
        for op in ops:
            t = op[0]
            if t == "put":
                ch = op[1]
                k = len(ch.ids)
                if ch.codes is not None and self._m == 0 and self._n == 0 and row == r0:
                    self._m = ch.codes.shape[1]
                if ch.vecs is not None and self._d == 0 and self._n == 0 and row == r0:
                    self._d, self._vdtype = ch.vecs.shape[1], ch.vecs.dtype
                if ((ch.codes.shape[1] if ch.codes is not None else 0) != self._m
                        or (ch.vecs.shape[1] if ch.vecs is not None else 0) != self._d
                        or (ch.vecs is not None and ch.vecs.dtype != self._vdtype)):
                    raise CorruptDatabaseError(f"{self._where(self._man['wal'])}: row width does not match the store")
                ch.row0 = row
                self._chunks.append(ch)
                self._chunk_rows.append(row)
                puts.append(ch.ids)
                self._keys.note(row, ch.ids, ch.keys)
                row += k
            elif t == "putf":
                puts.append(op[1])
                self._keys.note(row, op[1], op[2])
                row += len(op[1])
            elif t == "del":
                dels.append((op[1], row))
                self._links.drop_ids(op[1])
            elif t == "link":
                _, src, dst, rels, w = op
                set_link = self._links.set
                for s, d_, r, x in zip(src.tolist(), dst.tolist(), rels, w.tolist()):
                    set_link((s, d_, r), x)
            elif t == "unlink":
                _, src, dst, rels = op
                set_link = self._links.set
                for s, d_, r in zip(src.tolist(), dst.tolist(), rels):
                    set_link((s, d_, r), None)
            elif t == "index":
                self._index_pending = (op[1], op[2])
            elif t == "meta":
                self._meta = op[1]
        if row > r0 or dels:
            self._resolve_rows(r0, row, puts, dels, spilled_rows is not None)
        self._cache = {}

    def _resolve_rows(self, r0, n_new, puts, dels, spilled):
        """Liveness after a transaction that appended rows ``r0 .. n_new`` and deleted
        ``dels`` (ids, time) where a delete at time ``t`` kills rows below ``t``."""
        if not spilled and n_new - r0 <= 64 and sum(len(d) for d, _ in dels) <= 64:
            return self._resolve_small(r0, n_new, puts, dels)
        P = _cat(puts, _I8)
        s = len(P)
        if n_new > len(self._live):
            grown = np.ones(max(n_new, 2 * len(self._live)), bool)
            grown[:self._n] = self._live[:self._n]
            self._live = grown
        self._live[r0:n_new] = False
        D = _cat([d for d, _ in dels], _I8)
        DT = np.concatenate([np.full(len(d), t, _I8) for d, t in dels]) if dels else _EMPTY_I8
        touched = np.union1d(P, D)
        old = self._rows_of_committed(touched)
        old = old[old >= 0]
        self._live[old] = False
        killed = [old]
        if s:
            uid, first_rev = np.unique(P[::-1], return_index=True)
            lp = s - 1 - first_rev                      # position of the last put of uid
            ld = np.full(len(uid), -1, _I8)
            if len(D):
                uD, inv = np.unique(D, return_inverse=True)
                tD = np.full(len(uD), -1, _I8)
                np.maximum.at(tD, inv, DT)
                pos = np.searchsorted(uD, uid)
                pos_c = np.minimum(pos, len(uD) - 1)
                hit = uD[pos_c] == uid
                ld[hit] = tD[pos_c[hit]]
            alive = (r0 + lp) >= ld
            keep = r0 + lp[alive]
            self._live[keep] = True
            newdead = np.ones(s, bool)
            newdead[lp[alive]] = False
            killed.append(r0 + np.flatnonzero(newdead))
            if not spilled:
                tm = self._tail_map
                for i, r in zip(uid[alive].tolist(), keep.tolist()):
                    tm[i] = r
        self._n = n_new
        kd = _cat(killed, _I8)
        if len(kd):
            self._tail_dead.append(kd)
        self._n_live = int(np.count_nonzero(self._live[:n_new])) if spilled or s > 4096 else (
            self._n_live + int(np.count_nonzero(self._live[r0:n_new])) - len(old))

    def _resolve_small(self, r0, n_new, puts, dels):
        """:meth:`_resolve_rows` for a few rows, in plain Python (the commit latency of
        small transactions)."""
        if n_new > len(self._live):
            grown = np.ones(max(n_new, 2 * len(self._live)), bool)
            grown[:self._n] = self._live[:self._n]
            self._live = grown
        live = self._live
        tm = self._tail_map
        if not dels and n_new == r0 + 1:            # one row put: the common commit
            i = int(puts[0][0])
            old = self._live_row(i)
            if old >= 0:
                live[old] = False
                self._tail_dead.append(np.array([old], _I8))
            live[r0] = True
            tm[i] = r0
            self._n = n_new
            self._n_live += old < 0
            return
        P = [i for p in puts for i in p.tolist()]
        last = {}                                   # id -> (kind, row or time): the last event
        events = [(r0 + j, "put", i) for j, i in enumerate(P)]
        events += [(t, "del", i) for d, t in dels for i in d.tolist()]
        # a put at row r happens "at" r; a delete at time t comes after rows < t
        events.sort(key=lambda e: (e[0], e[1] == "put"))
        for when, kind, i in events:
            last[i] = (kind, when)
        old = [self._live_row(i) for i in last]
        live[r0:n_new] = False
        killed = [r for r in old if r >= 0]
        for r in killed:
            live[r] = False
        alive = 0
        for i, (kind, when) in last.items():
            if kind == "put":
                live[when] = True
                tm[i] = when
                alive += 1
        killed += [r for r in range(r0, n_new) if not live[r]]
        self._n = n_new
        if killed:
            self._tail_dead.append(np.array(killed, _I8))
        self._n_live += alive - sum(r >= 0 for r in old)

    # ------------------------------------------------------------------ lookups

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

    # ------------------------------------------------------------------ public reads

    def _check_open(self):
        if self._closed:
            raise ClosedError("the store is closed")
        if self._broken is not None:
            raise SutraError(f"the store hit an I/O error after a commit point ({self._broken}); "
                             "close and reopen it")

    @property
    def path(self) -> str | None:
        """The directory (None for an in-memory store)."""
        return self._dir

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def durability(self) -> str:
        return self._durability

    @property
    def read_only(self) -> bool:
        return self._mode == "r"

    @property
    def closed(self) -> bool:
        return self._closed

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
        c = self._cache.get(name)
        if c is None:
            parts = [seg] if seg is not None and len(seg) else []
            parts += [getattr(ch, attr) for ch in self._chunks]
            if not parts:
                c = np.zeros((0, width) if width is not None else 0, dtype)
            elif len(parts) == 1:
                c = parts[0]
            else:
                c = np.concatenate(parts)
            if c.flags.writeable:
                c.setflags(write=False)
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
                c = self._cache["tail_codes"] = _cat([ch.codes for ch in self._chunks], np.uint8, self._m)
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
        self._check_open()
        row = int(row)
        if not 0 <= row < self._n:
            raise InvalidArgumentError(f"row {row} out of range [0, {self._n})")
        if row < self._seg_n:
            ends, rec = self._seg_ends, self._seg_rec
            start = int(ends[row - 1]) if row else 0
            end = int(ends[row])
            where = self._where(self._man["files"]["rec"]["name"])
            if not (0 <= start <= end <= len(rec)) or end - start > MAX_RECORD + 4:
                raise CorruptDatabaseError(f"{self._where(self._man['files']['ends']['name'])}: "
                                           f"bad record offsets for row {row}")
            return decode_record(int(self._seg_ids[row]), rec[start:end].tobytes(), where)
        i = bisect.bisect_right(self._chunk_rows, row) - 1
        ch = self._chunks[i]
        j = row - ch.row0
        start = int(ch.ends[j - 1]) if j else 0
        return decode_record(int(ch.ids[j]), ch.rec[start:int(ch.ends[j])],
                             self._where(self._man["wal"]))

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
        return self.vectors[rows]

    def _rows_strict(self, ids):
        q = as_ids(ids)
        rows = self.rows_of(q)
        if (rows < 0).any():
            raise NotFoundError(f"id {int(q[np.argmax(rows < 0)])} is not in the store")
        return rows

    def live_ids(self) -> np.ndarray:
        """Ids of the live rows, in row order."""
        return self.ids[self.live]

    # keys

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

    # links

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

    # index and meta

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

    # ------------------------------------------------------------------ refresh

    def refresh(self) -> bool:
        """Move a reader's snapshot to the latest committed state.

        Returns
        -------
        bool
            Whether anything changed. On a writer this is a no-op.
        """
        self._check_open()
        if self._mode != "r" or self._memory:
            return False
        man = os.path.join(self._dir, MANIFEST_NAME)
        gen, _ = decode_manifest(read_file(man), man)
        if gen == self._gen and os.fstat(self._log.fd).st_size >= self._log.pos:
            return self._replay(strict=False)
        self._load()
        return True

    # ------------------------------------------------------------------ writing

    def begin(self) -> "Transaction":
        """Start a transaction (one at a time per store).

        Use it as a context manager to commit on success and roll back on an
        exception::

            with store.begin() as txn:
                txn.put(ids, texts=texts, codes=codes)
        """
        self._check_open()
        if self._mode == "r":
            raise ReadOnlyError("the store is open read-only")
        if self._txn_open is not None:
            raise InvalidArgumentError("a transaction is already open on this store")
        self._txn_open = Transaction(self)
        return self._txn_open

    def _no_txn(self, what):
        self._check_open()
        if self._mode == "r":
            raise ReadOnlyError(f"{what}: the store is open read-only")
        if self._txn_open is not None:
            raise InvalidArgumentError(f"{what}: a transaction is open")

    def _commit(self, txn) -> int:
        if not txn._ops and not txn._spilled and txn._rewrite is None:
            return self._txn
        if self._memory:
            self._apply(txn._ops)
            self._txn += 1
            return self._txn
        if txn._rewrite is not None:
            return self._commit_rewrite(txn)
        if txn._spilled:
            return self._commit_spilled(txn)
        if txn._index_bytes > self._spill_bytes:
            return self._commit_by_checkpoint(txn)
        if not self._log.salt:         # still on an empty version 1 log: start a new one
            try:
                self._checkpoint()
            except OSError:
                self._recover_after_failure()
                raise
        log = self._log
        try:
            log.append(encode_transaction(txn._ops, self._txn + 1, log.salt), self._checkpoint_bytes)
        except OSError:
            if log.failed is not None:      # the log could not be cut back
                self._broken = log.failed
            raise
        try:
            # the staged ops are exactly what was encoded (put() made private copies)
            self._apply(txn._ops)
            self._txn += 1
        except BaseException as e:  # pragma: no cover - a bug; the log is the truth
            self._broken = e
            raise
        self._maybe_checkpoint()
        return self._txn

    def _maybe_checkpoint(self):
        if self._log.pos > self._checkpoint_bytes:
            try:
                self._checkpoint()
            except OSError as e:   # the transaction is committed; retry next time
                self.last_checkpoint_error = e
                self._recover_after_failure()
                if self._broken is not None:
                    raise

    def _commit_by_checkpoint(self, txn) -> int:
        """A transaction with a large index: no log record (the arrays would be
        written twice and could exceed a frame); the checkpoint writes the index file
        and the manifest swap commits everything, as for spilled rows."""
        try:
            self._apply(txn._ops)
            self._txn += 1
            self._checkpoint()
        except BaseException:
            self._recover_after_failure()
            raise
        return self._txn

    def _commit_spilled(self, txn) -> int:
        ops = [op for op in txn._ops]
        try:
            self._apply(ops, spilled_rows=True)
            self._txn += 1
            self._checkpoint(spilled=True)
        except BaseException:
            self._recover_after_failure()
            raise
        return self._txn

    def _recover_after_failure(self):
        """Rebuild the in-memory state from disk after a failed commit/checkpoint."""
        if self._broken is not None:
            return
        try:
            for a in self._apps.values():
                a.reset()
            self._load()
            sweep(self._dir, self._man)
        except BaseException as e:
            self._broken = e

    def checkpoint(self) -> None:
        """Fold the log into the segment files and start a new log (no-op when the log
        is empty). Compacts when the garbage passes the configured bound."""
        self._no_txn("checkpoint")
        if self._memory:
            return
        if self._log.pos > HEADER_SIZE or self._index_pending is not None:
            try:
                self._checkpoint()
            except OSError:
                self._recover_after_failure()
                raise

    def _open_appenders(self):
        for a in self._apps.values():
            a.close()
        self._apps = {}
        for key in ("ids", "ends", "rec", "dead", "codes", "vec"):
            e = self._man["files"].get(key)
            if e is not None:
                a = Appender(self._dir, e["name"], e["len"], e["crc"])
                self._apps[key] = a
                a.reset()

    def _new_file_no(self):
        no = self._next_file
        self._next_file += 1
        return no

    def _ensure_row_files(self):
        """Create the code / vector files when the store just got codes / vectors."""
        sync = self._durability != "off"
        created = []
        for key, kind, width, dt in (("codes", KIND_CODES, self._m, 0),
                                     ("vec", KIND_VEC, self._d * (self._vdtype.itemsize if self._vdtype else 0),
                                      DTYPE_CODE[self._vdtype] if self._vdtype else 0)):
            if width and key not in self._apps:
                if self._seg_n:  # pragma: no cover - guarded by put validation
                    raise AssertionError("rows without " + key)
                name = file_name(self._new_file_no(), kind)
                self._apps[key] = Appender(self._dir, name, 0, 0,
                                           create_header=seg_header(kind, self._uuid, width, dt))
                created.append(key)
        return created

    def _spill_start(self, m, d, vdtype):
        """A transaction starts writing its rows straight into the row files (its
        widths ``m``, ``d``, ``vdtype`` become the store's): checkpoint the log first,
        so that the files end with the checkpointed rows."""
        if self._log.pos > HEADER_SIZE or self._index_pending is not None:
            self._checkpoint()
        for a in self._apps.values():
            a.reset()
        self._m, self._d, self._vdtype = m, d, vdtype
        self._ensure_row_files()

    def _spill_chunk(self, ch):
        """Append a spilling transaction's rows to the row files (uncommitted until
        its manifest swap)."""
        append_rows(self._apps, ch)

    def _checkpoint(self, spilled=False):
        """Write the tail into segment files and swap the manifest (commit point)."""
        sync = self._durability != "off"
        apps = self._apps
        if not spilled:
            for a in apps.values():
                a.reset()
        self._ensure_row_files()
        body = dict(self._man)
        retired = []
        # rows held in memory
        for ch in self._chunks:
            append_rows(apps, ch)
        if self._tail_dead:
            apps["dead"].append(np.concatenate(self._tail_dead))
        n = self._n
        if apps["ids"].length != 8 * n:  # pragma: no cover - defensive
            raise AssertionError("row files out of step with the row count")
        # id order
        seg_sorted = self._man["sorted"]
        new_ids = None
        if n > self._seg_n:
            new_ids = np.frombuffer(read_appended(apps["ids"], 8 * self._seg_n), _I8)
        order_entry = self._man["files"].get("order")
        if new_ids is not None:
            last = self._seg_ids[-1] if self._seg_n else None
            still = seg_sorted and (len(new_ids) < 2 or (new_ids[1:] > new_ids[:-1]).all()) and (
                last is None or new_ids[0] > last)
            if not still:
                all_ids = np.concatenate([self._seg_ids, new_ids])
                order = np.argsort(all_ids, kind="stable").astype(_I8)
                if order_entry is not None:
                    retired.append(order_entry["name"])
                order_entry = write_new_file(self._dir, file_name(self._new_file_no(), KIND_ORDER),
                                             KIND_ORDER, self._uuid, [order], width=8, sync=sync)
            seg_sorted = bool(still)
        # links
        links_entry = self._man["links"]
        if self._links.changed:
            if links_entry is not None:
                retired.append(links_entry["name"])
            links_entry = self._links.write(self._dir, self._uuid, self._new_file_no, sync)
        # index
        index_entry = self._man["index"]
        if self._index_pending is not None:
            if index_entry is not None:
                retired.append(index_entry["name"])
            index_entry = write_index_file(self._dir, self._new_file_no, self._uuid, *self._index_pending, sync)
        # keys
        keys_entry = self._man["files"].get("keys")
        kidx = self._keys.rebuild("keys" in self._man["files"], self._tail_dead, self._seg_n,
                                  self._seg_ids, self._live)
        if kidx is not None:
            keys_entry = write_new_file(self._dir, file_name(self._new_file_no(), KIND_KEYS),
                                        KIND_KEYS, self._uuid, list(kidx), width=16, sync=sync)
        for a in apps.values():
            if sync:
                a.sync()
        files = {k: a.publish() for k, a in apps.items()}
        if order_entry is not None:
            files["order"] = order_entry
        if keys_entry is not None:
            files["keys"] = keys_entry
        gen = self._gen + 1
        body.update(files=files, n=int(n), sorted=bool(seg_sorted), links=links_entry, index=index_entry,
                    meta=self._meta, txn=self._txn, wal=wal_name(gen), m=self._m, d=self._d,
                    vdtype=DTYPE_CODE[self._vdtype] if self._vdtype else 0,
                    next_file=self._next_file)
        create_log(self._dir, gen, self._uuid, self._durability == "full", sync)
        write_manifest(self._dir, gen, body, sync, self._set_broken)
        # committed: adopt the new manifest
        for a in apps.values():
            a.mark_committed()
        self._after_swap(gen, body)
        if self._should_compact():
            try:
                self._rewrite()
            except OSError as e:   # the checkpoint itself is done; compaction retries later
                self.last_checkpoint_error = e
                self._recover_after_failure()
                if self._broken is not None:
                    raise

    def _after_swap(self, gen, body):
        try:
            maps = map_files(self._dir, body)
            wal_fd = osio.open_file(os.path.join(self._dir, body["wal"]), os.O_RDWR)
        except BaseException as e:
            self._broken = e
            raise
        self._log.close()
        log = self._log = Log(wal_fd, os.path.join(self._dir, body["wal"]), self._dir,
                              self._durability == "full")
        self._install(gen, body, maps)
        try:
            log.open_new(self._uuid, gen, body["wal"])
        except BaseException as e:
            self._broken = e
            raise
        sweep(self._dir, self._man)

    def _should_compact(self) -> bool:
        dead = self._n - self._n_live
        return dead >= self._compact_min_rows and dead > self._compact_ratio * self._n

    # ------------------------------------------------------------------ compaction

    def compact(self) -> None:
        """Rewrite the live rows into new segment files (renumbering rows) and swap
        the manifest; the old files are deleted. Readers keep their snapshot."""
        self._no_txn("compact")
        if self._memory:
            self._compact_memory()
            return
        try:
            if self._log.pos > HEADER_SIZE or self._index_pending is not None:
                self._checkpoint()
            if self._n_live != self._n:
                self._rewrite()
        except OSError:
            self._recover_after_failure()
            raise

    def _compact_memory(self):
        rows = np.flatnonzero(self._live[:self._n])
        ids = self.ids[rows]
        codes = self.codes[rows] if self._m else None
        vecs = self.vectors[rows] if self._d else None
        recs = [self.record_at(r) for r in rows.tolist()]
        rec_b = [encode_record(r.key, r.text, r.metadata) for r in recs]
        ends = np.cumsum([len(b) for b in rec_b], dtype=_U8) if rec_b else np.zeros(0, _U8)
        ch = Chunk(ids.copy(), None if codes is None else codes.copy(),
                    None if vecs is None else vecs.copy(), b"".join(rec_b), ends,
                    [r.key for r in recs])
        links, meta, idx, txn = self._links, self._meta, self._index_pending, self._txn
        if idx is not None and self.on_renumber is not None:
            idx = self.on_renumber(rows) or idx
        body = dict(self._man, n=0, m=self._m, d=self._d,
                    vdtype=DTYPE_CODE[self._vdtype] if self._vdtype else 0)
        self._install(self._gen, body, {})
        self._links = links
        self._meta, self._index_pending, self._txn = meta, idx, txn
        if len(ids):
            self._apply([("put", ch)])

    def _rewrite(self, codes_override=None, index=None, meta=None, txn=None):
        """Write the live rows into fresh files; optionally with new codes (``(ids
        sorted, codes)``), a new index and meta, as transaction ``txn``."""
        sync = self._durability != "off"
        if self._chunks or self._tail_dead or self._links.changed:  # pragma: no cover
            raise AssertionError("rewrite needs a checkpointed state")
        rows = np.flatnonzero(self._live[:self._n])
        m = self._m if codes_override is None else codes_override[1].shape[1]
        created = []
        try:
            apps = create_row_files(self._dir, self._uuid, self._new_file_no, m, self._d,
                                    self._vdtype, created)
            self._check_ends()
            copy_live_rows(apps, rows, self._seg_ids, self._seg_ends, self._seg_rec,
                           self._seg_codes, self._seg_vecs, codes_override)
            for a in apps.values():
                if sync:
                    a.sync()
            new_ids = np.frombuffer(read_appended(apps["ids"], 0), _I8) if len(rows) else _EMPTY_I8
            files = {k: a.publish() for k, a in apps.items()}
            srt = len(new_ids) < 2 or bool((new_ids[1:] > new_ids[:-1]).all())
            if not srt:
                order = np.argsort(new_ids, kind="stable").astype(_I8)
                files["order"] = write_new_file(self._dir, file_name(self._new_file_no(), KIND_ORDER),
                                                KIND_ORDER, self._uuid, [order], width=8, sync=sync)
            if "keys" in self._man["files"]:     # keys map to ids: unchanged by renumbering
                files["keys"] = self._man["files"]["keys"]
            index_entry = self._man["index"]
            if index is None and index_entry is not None and self.on_renumber is not None:
                index = self.on_renumber(rows)
            if index is not None:
                index_entry = write_index_file(self._dir, self._new_file_no, self._uuid, *index, sync)
            gen = self._gen + 1
            body = dict(self._man)
            body.update(files=files, n=len(rows), sorted=srt, index=index_entry,
                        meta=self._meta if meta is None else meta,
                        txn=self._txn if txn is None else txn, wal=wal_name(gen), m=m,
                        next_file=self._next_file)
            create_log(self._dir, gen, self._uuid, self._durability == "full", sync)
            write_manifest(self._dir, gen, body, sync, self._set_broken)
        finally:
            for a in created:
                a.close()
        try:
            self._open_appenders_from(body)
        except BaseException as e:
            self._broken = e
            raise
        self._after_swap(gen, body)

    def _open_appenders_from(self, body):
        self._man = body
        self._open_appenders()

    def _check_ends(self):
        if not self._ends_checked:
            e = self._seg_ends
            if len(e) and (not (e[1:] >= e[:-1]).all() or int(e[-1]) > len(self._seg_rec)):
                raise CorruptDatabaseError(f"{self._where(self._man['files']['ends']['name'])}: "
                                           "record offsets are not increasing")
            self._ends_checked = True

    def _commit_rewrite(self, txn) -> int:
        ids, codes = txn._rewrite
        try:
            if self._log.pos > HEADER_SIZE or self._index_pending is not None:
                self._checkpoint()
        except OSError:
            self._recover_after_failure()
            raise
        live_ids = self._seg_ids[self._live[:self._n]]
        o = np.argsort(ids, kind="stable")
        sid, sc = ids[o], codes[o]
        if len(sid) != len(live_ids) or (len(sid) > 1 and not (sid[1:] > sid[:-1]).all()) or not np.array_equal(np.sort(live_ids), sid):
            raise InvalidArgumentError("replace_codes must give codes for exactly the live ids, once each")
        index = meta = None
        for op in txn._ops:
            if op[0] == "index":
                index = (op[1], op[2])
            elif op[0] == "meta":
                meta = op[1]
        try:
            self._rewrite((sid, sc), index=index, meta=meta, txn=self._txn + 1)
        except BaseException:
            self._recover_after_failure()
            raise
        return self._txn

    # ------------------------------------------------------------------ verify

    def verify(self) -> dict:
        """Check everything: every checksum of every file, record by record, and the
        consistency of ids, offsets, dead rows, id order, links and index arrays.

        Returns
        -------
        dict
            Counts of what was checked.

        Raises
        ------
        CorruptDatabaseError
            The first damage found (the message names the file).
        """
        self._check_open()
        for mf in self._maps.values():
            mf.check_crc()
        if not self._memory:
            self._log.check(self._uuid, self._gen)
        self._check_ends()
        self._seg_lookup()
        self._links.base.check()
        for r in range(self._n):
            self.record_at(r)
        ids = self.ids[self.live]
        if len(np.unique(ids)) != len(ids):
            raise CorruptDatabaseError(f"{self._where(MANIFEST_NAME)}: an id has two live rows")
        keyed = 0
        for r in np.flatnonzero(self.live).tolist():
            rec = self.record_at(r)
            if rec.key is not None:
                keyed += 1
                if self._keys.owner(rec.key) != rec.id:
                    raise CorruptDatabaseError(
                        f"{self._where(self._man['files'].get('keys', {}).get('name', MANIFEST_NAME))}: "
                        f"key {rec.key!r:.60} of id {rec.id} is not indexed (or not unique)")
        self.index_arrays
        return {"rows": self._n, "live": self._n_live, "files": len(self._maps),
                "links": len(self.all_links()), "keys": keyed}

    # ------------------------------------------------------------------ closing

    def _release(self):
        for a in self._apps.values():
            try:
                a.close()
            except OSError:
                pass
        self._apps = {}
        if self._log is not None:
            self._log.close()
        if self._lock_fd >= 0:
            osio.close_locked(self._lock_fd)   # releases the lock
            self._lock_fd = -1
        # the store's own references to the mapped files: a file is unmapped once no
        # array obtained from the store refers to it any more
        self._maps = {}
        self._cache = {}
        self._seg_ids = self._seg_ends = self._seg_rec = self._seg_codes = None
        self._seg_vecs = self._seg_order = self._seg_keys = None
        self._keys = None           # it holds the mapped .keys file

    def close(self) -> None:
        """Roll back an open transaction, checkpoint (writers), release files and the
        lock. Arrays obtained from the store stay valid. Idempotent."""
        if self._closed:
            return
        try:
            if self._txn_open is not None:
                self._txn_open.rollback()
            if (self._mode != "r" and not self._memory and self._broken is None
                    and self._log.pos > HEADER_SIZE):
                self.checkpoint()
        finally:
            self._closed = True
            self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        where = self._dir or MEMORY
        state = "closed" if self._closed else f"{self._n_live} live rows, txn {self._txn}"
        return f"<sutradb.storage.Store {where!r} mode={self._mode!r} {state}>"


# --------------------------------------------------------------------------- module helpers

def _deepcopy_plain(x):
    if isinstance(x, dict):
        return {k: _deepcopy_plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_deepcopy_plain(v) for v in x]
    return x
