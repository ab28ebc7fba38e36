"""The store: one directory, one writer, many readers, atomic transactions.

A :class:`Store` is a :class:`~.snapshot.Snapshot` (the committed rows, links, index
and meta it sees, and every read: :mod:`.snapshot`) that opens, refreshes and, for a
writer, changes it: it runs the commit protocol (through the log, by a spill or a
rewrite) and recovery after a failed write; checkpoints and compaction are its
:class:`~.checkpoint.CheckpointsMixin`.

The pieces
----------
Each concern with its own state is a collaborator the store owns, usable and tested
alone: the record codec and row chunks (:mod:`.records`), the open log
(:class:`.wal.Log`: append, replay, torn-tail detection), generations and the atomic
manifest swap (:mod:`.manifest`), the key index (:class:`.keys.KeyIndex`), the link
table (:class:`.links.LinkTable`) and the segment builders of checkpoints and
compactions (:mod:`.compaction`). Staging lives in :mod:`.transaction`.

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

import math
import os
import time
import uuid as _uuid
from typing import Any, Callable, Literal

import numpy as np

from ..errors import (CorruptDatabaseError, DatabaseExistsError, DatabaseNotFoundError,
                      InvalidArgumentError, LockedError, ReadOnlyError)
from . import osio, watermark
from .format import (HEADER_SIZE, LOCK_NAME, MANIFEST_NAME, decode_manifest, parse_file_name)
from .terms import TailTerms
from .manifest import (check_create_params, check_manifest, create_generation, fresh_body,
                       map_files, read_file, sweep)
from .records import Record
from .segments import Appender
from .checkpoint import CheckpointsMixin
from .snapshot import Snapshot
from .transaction import Transaction
from .wal import Log, encode_transaction

__all__ = ["Store", "Transaction", "Record", "DURABILITY_LEVELS"]

DURABILITY_LEVELS = ("full", "normal", "off")
MODES = ("r", "a", "w", "x")
MEMORY = ":memory:"




# --------------------------------------------------------------------------- store

class Store(CheckpointsMixin, Snapshot):
    """A sutradb storage directory (or an in-memory store).

    Use :meth:`Store.open`; the constructor is private. See the module docstring for
    the durability levels and the concurrency rules, :mod:`.snapshot` for the data
    model and the reads (inherited from :class:`~.snapshot.Snapshot`).
    """

    # the state :meth:`open` sets (the constructor is private); for type checkers
    _recover: bool
    _memory: bool
    # None in an in-memory store, whose branches never reach the file operations that
    # use them (an invariant the checker cannot see; declared as set)
    _dir: str
    _mode: str
    _durability: str
    _timeout: float
    _checkpoint_bytes: int
    _spill_bytes: int
    _compact_ratio: float
    _compact_min_rows: int
    _closed: bool
    _broken: BaseException | None
    _txn_open: Transaction | None
    _lock_fd: int
    _log: Log
    _apps: dict[Any, Appender]
    last_checkpoint_error: BaseException | None
    #: None, or what a ``recover=True`` open could not read (:meth:`open`)
    recovery: dict[str, Any] | None
    on_renumber: Callable[[np.ndarray], tuple[bytes, dict[str, np.ndarray]] | None] | None

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path, mode: str = "a", *, timeout: float = 0.0, durability: str = "full",
             create_params: dict | None = None, checkpoint_bytes: int = 16 << 20,
             spill_bytes: int = 16 << 20, compact_ratio: float = 0.5,
             compact_min_rows: int = 4096, recover: bool = False) -> "Store":
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
        recover : bool
            Open what is intact, read-only (``mode="r"`` only): a log shorter than
            what was committed (see :mod:`.watermark`) or damaged part-way is read up
            to its last intact transaction instead of raising, and
            :attr:`recovery` says what was lost.

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
        if recover and mode != "r":
            raise InvalidArgumentError("recover=True opens read-only: use mode='r'")
        self = cls.__new__(cls)
        self._recover = bool(recover)
        #: None, or what a ``recover=True`` open could not read (:meth:`open`)
        self.recovery = None
        self._memory = path is None or (isinstance(path, str) and path == MEMORY)
        self._dir = None if self._memory else os.path.abspath(os.fspath(path))  # type: ignore[assignment]  # see the declaration
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
        self._log = None  # type: ignore[assignment]  # the open log (None: an in-memory store)
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

    def _init_memory(self, params) -> None:
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
        self._mark()

    def _set_broken(self, e) -> None:
        """The disk may no longer match the in-memory state (an I/O error after a
        commit point): every later call raises until the store is reopened."""
        self._broken = e

    # ------------------------------------------------------------------ loading

    def _load(self, initial: bool = False):
        """(Re)build the whole state from the manifest and the log on disk."""
        d = self._dir
        man = os.path.join(d, MANIFEST_NAME)
        deadline = time.monotonic() + max(self._timeout, 1.0)
        while True:
            # before the manifest: the writer updates it after the manifest and the log,
            # so what it says was committed is on disk when those are read
            mark = watermark.read(d, self._lock_fd if self._lock_fd >= 0 else None)
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
        try:
            self._replay()
        except CorruptDatabaseError as e:
            if not self._recover:
                raise
            self._lost(str(e), mark)
        self._check_mark(mark)
        if self._mode != "r":
            log.drop_torn_tail()
            self._open_appenders()

    # ------------------------------------------------------------------ the log

    def _replay(self, strict: bool = True):
        """Apply every complete transaction of the log after its replayed position
        (:meth:`.wal.Log.replay`); whether any was."""
        return self._log.replay(self._apply_logged, self._txn, strict, self._mode == "r")

    def _check_mark(self, mark, cut_only: bool = False):
        """Raise if committed transactions are missing (:func:`.watermark.shortfall`);
        ``cut_only``: only if the log file is shorter than the committed extent (a
        reader's :meth:`verify`, whose snapshot may lag behind the writer)."""
        boot = osio.boot_id()
        msg = watermark.shortfall(mark, self._uuid, self._gen, self._log.pos, self._txn, boot)
        if msg is None and self._txn > getattr(mark, "txn", self._txn) + 1:
            # read again after the log: a live writer has moved it on meanwhile
            fresh = watermark.read(self._dir, self._lock_fd if self._lock_fd >= 0 else None)
            msg = watermark.stale(fresh, self._uuid, self._gen, self._txn, boot)
        if msg is None:
            return
        if cut_only and not msg.startswith("LOCK") and os.fstat(self._log.fd).st_size >= mark.log_end:
            return
        where = (self._where(MANIFEST_NAME) if msg.startswith("MANIFEST")
                 else self._where(LOCK_NAME) if msg.startswith("LOCK") else self._log.where)
        if msg.startswith(("MANIFEST", "LOCK")):
            msg = msg.split(": ", 1)[1]
        msg = f"{where}: {msg}"
        if self._recover:
            self._lost(msg, mark)
            return
        raise CorruptDatabaseError(f"{msg} (damage, not a crash: a committed log never shrinks; "
                                   "`sutradb recover` opens what is intact)")

    def _lost(self, msg, mark) -> None:
        r = self.recovery or {"problems": []}
        r["problems"].append(msg)
        r["intact_transaction"] = self._txn
        r["committed_transaction"] = (mark.txn if isinstance(mark, watermark.Watermark)
                                      and mark.uuid == self._uuid else None)
        r["generation"] = self._gen
        self.recovery = r

    def _mark(self) -> None:
        """Record how far the committed state reaches (:mod:`.watermark`): the writer,
        after every commit and manifest swap."""
        if self._lock_fd >= 0 and self._log is not None:
            watermark.write(self._lock_fd, watermark.Watermark(
                self._durability, self._uuid, self._gen, self._log.pos, self._txn,
                osio.boot_id() or bytes(16)))

    def _apply_logged(self, ops) -> None:
        """Apply one transaction replayed from the log."""
        self._apply(ops)
        self._txn += 1

    # ------------------------------------------------------------------ properties

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

    # keys

    # links

    # index and meta

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
        n = self._commit_ops(txn)
        self._mark()
        return n

    def _commit_ops(self, txn) -> int:
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
            except Exception as e:   # the transaction is committed; retry next time
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

    def _recover_after_failure(self) -> None:
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

    # ------------------------------------------------------------------ compaction

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
            self._check_mark(watermark.read(self._dir, self._lock_fd if self._lock_fd >= 0 else None),
                             cut_only=self._mode == "r")
        self._check_ends()
        self._seg_lookup()
        for run in self._term_runs:
            run.check(self._where(run.mapped.name), force=True)  # type: ignore[union-attr]  # stored runs are mapped
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

    def _release(self) -> None:
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
        self._grow = {}
        self._seg_ids_raw = self._seg_ends = self._seg_rec = self._seg_codes = None
        self._seg_vecs = self._seg_order = self._seg_keys = None
        self._recf = None           # it holds the mapped record file
        self._keys = None           # it holds the mapped .keys file
        self._term_runs = []        # and these the mapped .terms files
        self._terms_tail = TailTerms(0)

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

    def __exit__(self, *exc: object) -> Literal[False]:
        self.close()
        return False

    def __repr__(self) -> str:
        where = self._dir or MEMORY
        state = "closed" if self._closed else f"{self._n_live} live rows, txn {self._txn}"
        return f"<sutradb.storage.Store {where!r} mode={self._mode!r} {state}>"
