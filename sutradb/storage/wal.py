"""The write-ahead log: creating, appending to and replaying ``wal-GGGGGGGG.log``.

A log starts at one manifest generation ``G`` and holds the transactions committed
since that generation's checkpoint: a 64-byte header (uuid, generation, a random
salt), then frames (``docs/file-format.md``, section 4): each a salted, checksummed
16-byte header and a msgpack record. A transaction is its op records followed by a
commit record ``[OP_COMMIT, txn id, number of ops, COMMIT_TRAILER]``; a transaction
without its commit record never happened.

With durability ``"full"`` the log is preallocated with zeros (and grown by as much in
the write of a commit), so the ``fdatasync`` of a commit does not update the file size;
the end of the log is found by its frames: zeros, a frame with another salt (a stale
log's) or a bad checksum end it. Replay (:meth:`Log.replay`) applies every complete
transaction after the replayed position and stops at the first incomplete one; a
writer opening the log then truncates a torn tail (:meth:`Log.drop_torn_tail`) before
appending again (:meth:`Log.append`). A reader replays while the writer appends:
at open it retries a torn-looking tail while a writer holds the lock
(:func:`writer_active`), at a refresh it reads in windows and stops quietly at
anything incomplete.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorruptDatabaseError
from . import osio
from .format import (COMMIT_TRAILER, DTYPE_CODE, DTYPES, FRAME, FRAME_SIZE, HEADER_SIZE,
                     LOCK_NAME, MAX_CODE_SIZE, MAX_DIM, MAX_FRAME, MAX_RELATION, OP_COMMIT,
                     OP_DELETE, OP_INDEX, OP_LINK, OP_META, OP_PUT, OP_UNLINK, VECTOR_DTYPES,
                     all_zero, check_wal_header, crc32, frame, packb, parse_frames, unpackb,
                     wal_header, wal_name)
from .records import Chunk, decode_record
from .segments import pread_all

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["WAL_PREALLOC", "WAL_GROW_MAX", "create_log", "writer_active", "encode_transaction",
           "decode_op", "frombytes", "Log"]

_I8 = np.dtype("<i8")
_U8 = np.dtype("<u8")
_F8 = np.dtype("<f8")

#: Zeros a "full" log is preallocated with (and grown by, doubling up to 1 MiB): a commit then
#: overwrites allocated, written blocks and fdatasync need not update the file size.
WAL_PREALLOC = 64 << 10
WAL_GROW_MAX = 1 << 20


def create_log(directory: str, gen: int, uuid: bytes, preallocate: bool, sync: bool) -> None:
    """Create log ``gen``: a header with a fresh random salt (frames of any other
    log never match it), preallocated with zeros when every commit is fsynced.

    Parameters
    ----------
    directory : str
    gen : int
        The manifest generation the log starts at (its name and header).
    uuid : bytes
        The store's uuid.
    preallocate : bool
        Append :data:`WAL_PREALLOC` zeros (durability ``"full"``).
    sync : bool
        fsync the file.
    """
    path = os.path.join(directory, wal_name(gen))
    fd = osio.open_file(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        salt = int.from_bytes(os.urandom(4), "little") or 1
        head = wal_header(uuid, gen, salt)
        if preallocate:
            head += bytes(WAL_PREALLOC)
        osio.io.pwrite(fd, head, 0)
        if sync:
            osio.io.fsync(fd)
    finally:
        os.close(fd)


def writer_active(directory: str) -> bool:
    """Whether a writer holds the lock of the store in ``directory`` (a reader's
    probe: a non-blocking shared lock on ``LOCK``, released at once; nothing is
    created or written)."""
    try:
        fd = osio.open_file(os.path.join(directory, LOCK_NAME), os.O_RDONLY)
    except OSError:
        return False
    try:
        try:
            if not osio.try_lock(fd, shared=True):
                return True
        except OSError:
            return False
        osio.unlock(fd)
        return False
    finally:
        os.close(fd)


def encode_transaction(ops: list[tuple[Any, ...]], txn_id: int, salt: int) -> bytes:
    """The frames of one transaction: its ops, then the commit record.

    Parameters
    ----------
    ops : list of tuple
        Staged ops (``("put", Chunk)``, ``("del", ids)``, ...: see :func:`decode_op`).
    txn_id : int
        The id the transaction commits as.
    salt : int
        The salt of the log the frames go into.

    Returns
    -------
    bytes
    """
    frames = []
    for op in ops:
        t = op[0]
        if t == "put":
            ch = op[1]
            rec = [OP_PUT, ch.ids.tobytes(),
                   ch.codes.tobytes() if ch.codes is not None else None,
                   ch.codes.shape[1] if ch.codes is not None else 0,
                   ch.vecs.tobytes() if ch.vecs is not None else None,
                   ch.vecs.shape[1] if ch.vecs is not None else 0,
                   DTYPE_CODE[ch.vecs.dtype] if ch.vecs is not None else 0,
                   ch.rec, ch.ends.tobytes(), ch.keys]
        elif t == "del":
            rec = [OP_DELETE, op[1].tobytes()]
        elif t == "link":
            rec = [OP_LINK, op[1].tobytes(), op[2].tobytes(), op[3], op[4].tobytes()]
        elif t == "unlink":
            rec = [OP_UNLINK, op[1].tobytes(), op[2].tobytes(), op[3]]
        elif t == "index":
            rec = [OP_INDEX, op[1], [[k, DTYPE_CODE[a.dtype], list(a.shape), a.tobytes()]
                                     for k, a in op[2].items()]]
        elif t == "meta":
            rec = [OP_META, op[1]]
        else:  # pragma: no cover
            raise AssertionError(t)
        frames.append(frame(packb(rec), salt))
    frames.append(frame(packb([OP_COMMIT, txn_id, len(ops), COMMIT_TRAILER]), salt))
    return b"".join(frames)


def frombytes(b: object, dtype: npt.DTypeLike) -> np.ndarray:
    """A read-only array over bytes ``b`` (ValueError if not a whole number of items)."""
    if not isinstance(b, bytes) or len(b) % np.dtype(dtype).itemsize:
        raise ValueError("bad array bytes")
    return np.frombuffer(b, dtype)


def decode_op(op: list[Any], where: str) -> tuple[Any, ...]:
    """A log record (msgpack list) -> an in-memory op, validating every field.

    Parameters
    ----------
    op : list
        The unpacked record; ``op[0]`` is its type (``OP_PUT``, ...).
    where : str
        The log's path (named in errors).

    Returns
    -------
    tuple
        ``("put", Chunk)``, ``("del", ids)``, ``("link", src, dst, rels, weights)``,
        ``("unlink", src, dst, rels)``, ``("index", blob, arrays)`` or
        ``("meta", meta)``: the ops a :class:`~sutradb.storage.Transaction` stages.

    Raises
    ------
    CorruptDatabaseError
        A field has the wrong type, size or range.
    """
    bad = CorruptDatabaseError(f"{where}: malformed log record (type {op[0]})")
    try:
        t = op[0]
        if t == OP_PUT:
            if len(op) == 10:
                _, ids_b, codes_b, m, vecs_b, d, vcode, rec, ends_b, keys = op
            else:   # a log written before records carried their keys beside them
                _, ids_b, codes_b, m, vecs_b, d, vcode, rec, ends_b = op
                keys = None
            ids = frombytes(ids_b, _I8)
            k = len(ids)
            ends = frombytes(ends_b, _U8)
            if not isinstance(rec, bytes) or len(ends) != k or not isinstance(m, int) or not isinstance(d, int):
                raise bad
            if (int(ends[-1]) if k else 0) != len(rec) or (k > 1 and not (ends[1:] >= ends[:-1]).all()):
                raise bad
            codes = vecs = None
            if codes_b is not None:
                if not (0 < m <= MAX_CODE_SIZE) or len(codes_b) != k * m:
                    raise bad
                codes = frombytes(codes_b, np.uint8).reshape(k, m)
            elif m != 0:
                raise bad
            if vecs_b is not None:
                if vcode not in (DTYPE_CODE[VECTOR_DTYPES["float16"]], DTYPE_CODE[VECTOR_DTYPES["float32"]]):
                    raise bad
                dt = DTYPES[vcode]
                if not (0 < d <= MAX_DIM) or len(vecs_b) != k * d * dt.itemsize:
                    raise bad
                vecs = frombytes(vecs_b, dt).reshape(k, d)
            elif d != 0:
                raise bad
            if keys is None:
                keys = [decode_record(int(ids[j]), rec[int(ends[j - 1]) if j else 0:int(ends[j])], where).key
                        for j in range(k)]
            elif (not isinstance(keys, list) or len(keys) != k
                  or not all(x is None or isinstance(x, str) for x in keys)):
                raise bad
            return ("put", Chunk(ids, codes, vecs, rec, ends, keys))
        if t == OP_DELETE:
            _, ids_b = op
            return ("del", frombytes(ids_b, _I8))
        if t in (OP_LINK, OP_UNLINK):
            src = frombytes(op[1], _I8)
            dst = frombytes(op[2], _I8)
            rels = op[3]
            if (len(dst) != len(src) or not isinstance(rels, list) or len(rels) != len(src)
                    or not all(isinstance(r, str) and 0 < len(r) <= MAX_RELATION for r in rels)):
                raise bad
            if t == OP_LINK:
                w = frombytes(op[4], _F8)
                if len(w) != len(src) or len(op) != 5:
                    raise bad
                return ("link", src, dst, rels, w)
            if len(op) != 4:
                raise bad
            return ("unlink", src, dst, rels)
        if t == OP_INDEX:
            _, blob, arrays = op
            if not isinstance(blob, bytes) or not isinstance(arrays, list):
                raise bad
            out = {}
            for item in arrays:
                name, code, shape, data = item
                if (not isinstance(name, str) or code not in DTYPES or not isinstance(shape, list)
                        or not all(isinstance(s, int) and s >= 0 for s in shape)
                        or not isinstance(data, bytes)
                        or len(data) != math.prod(shape) * DTYPES[code].itemsize):
                    raise bad
                out[name] = np.frombuffer(data, DTYPES[code]).reshape(shape)
            return ("index", blob, out)
        if t == OP_META:
            _, meta = op
            if not isinstance(meta, dict):
                raise bad
            return ("meta", meta)
    except CorruptDatabaseError:
        raise
    except (ValueError, TypeError, IndexError):
        raise bad from None
    raise bad


class Log:
    """One open log file: the replayed (and, for a writer, appended) position.

    Parameters
    ----------
    fd : int
        The open log file (read-only for a reader).
    where : str
        Its path (named in errors).
    directory : str
        The database directory (a reader probes its lock while replaying).
    full : bool
        Durability ``"full"``: the writer keeps zeros past the end and fsyncs every
        append.

    Attributes
    ----------
    pos : int
        The end of the last complete transaction read or appended (file offset).
    salt : int
        The salt of the log's frames (0: a version 1 log, which has no records).
    size : int
        Writer: the file size; every byte past ``pos`` is zero.
    txn : int
        The id of the last transaction replayed (set by :meth:`replay`).
    failed : OSError or None
        Set when an append failed and the log could not be cut back: the file may
        hold a partial transaction and the owner must not append again.
    """

    __slots__ = ("fd", "where", "directory", "full", "pos", "salt", "size", "txn",
                 "scan_end", "failed")

    def __init__(self, fd: int, where: str, directory: str, full: bool) -> None:
        self.fd = fd
        self.where = where
        self.directory = directory
        self.full = full
        self.pos = HEADER_SIZE
        self.salt = 0
        self.size = 0
        self.txn = 0
        self.scan_end = 0
        self.failed: OSError | None = None

    def close(self) -> None:
        """Close the file (idempotent); the positions stay."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # ------------------------------------------------------------------ header

    def open_existing(self, uuid: bytes, gen: int) -> None:
        """Check the header of a log being opened (replay starts after it).

        Raises
        ------
        CorruptDatabaseError
            A bad header, or a version 1 log with records (written by an older
            sutradb).
        """
        size = os.fstat(self.fd).st_size
        ver, self.salt = check_wal_header(pread_all(self.fd, HEADER_SIZE, 0), self.where, uuid, gen)
        if ver == 1 and size > HEADER_SIZE:
            raise CorruptDatabaseError(f"{self.where}: a version 1 log with records (written by an "
                                       "older sutradb): open and close it with that version first")
        self.pos = HEADER_SIZE

    def open_new(self, uuid: bytes, gen: int, where: str) -> None:
        """Adopt a log the writer just created (after a manifest swap); ``where``
        names it in a header error."""
        self.pos = HEADER_SIZE
        _, self.salt = check_wal_header(pread_all(self.fd, HEADER_SIZE, 0), where, uuid, gen)
        self.size = os.fstat(self.fd).st_size

    # ------------------------------------------------------------------ writing

    def drop_torn_tail(self) -> None:
        """Writer, after replay: truncate what follows the last complete transaction
        unless it is all zeros (a torn tail, or stale bytes), and note the size."""
        fd = self.fd
        size = os.fstat(fd).st_size
        if size > self.pos and not all_zero(pread_all(fd, size - self.pos, self.pos)):
            # a torn tail (or stale bytes): drop it before appending again; what
            # follows the log's end must be zeros
            osio.io.truncate(fd, self.pos)
            size = self.pos
        self.size = size

    def append(self, buf: bytes, checkpoint_bytes: int) -> None:
        """Write the frames of one transaction at :attr:`pos` and advance it.

        A preallocated log is written into its zeros, or grown (doubling, up to
        :data:`WAL_GROW_MAX` at a time, and not much past ``checkpoint_bytes``) with
        zeros in the same write, and fsynced (durability ``"full"``). On an error the file is cut back to :attr:`pos`
        (if that fails too, :attr:`failed` is set) and the error is raised.

        Parameters
        ----------
        buf : bytes
            From :func:`encode_transaction`.
        checkpoint_bytes : int
            The owner's checkpoint threshold (bounds the growth).
        """
        pos = self.pos
        end = pos + len(buf)
        full = self.full
        try:
            if end <= self.size or not full:
                osio.io.pwrite(self.fd, buf, pos)   # into preallocated zeros
            else:
                # grow the zeroed space (doubling) with the same write
                cur = self.size
                new = end + min(max(cur, WAL_PREALLOC), WAL_GROW_MAX)
                new = min(new, max(end, checkpoint_bytes + WAL_PREALLOC))
                new = -(-new // 4096) * 4096
                osio.io.pwrite(self.fd, buf + bytes(new - end), pos)
                self.size = new
            if full:
                osio.io.fsync(self.fd)
        except OSError:
            try:
                osio.io.truncate(self.fd, pos)
                self.size = pos
            except OSError as e2:
                self.failed = e2
            raise
        if end > self.size:
            self.size = end
        self.pos = end

    # ------------------------------------------------------------------ reading

    def replay(self, apply: Callable[[list[tuple[Any, ...]]], object], txn: int,
               strict: bool = True, wait_for_writer: bool = False) -> bool:
        """Apply every complete transaction of the log after :attr:`pos`.

        Parameters
        ----------
        apply : callable
            ``apply(ops)`` for each complete transaction, in order (ops as
            :func:`decode_op` returns them); :attr:`pos` and :attr:`txn` advance past
            it once it returns.
        txn : int
            The id of the last transaction applied; the next commit record must
            carry ``txn + 1``.
        strict : bool
            Opening: the whole rest of the log is read and checked, damage raises.
            Otherwise (a reader's refresh): read in windows, stop quietly at anything
            incomplete (the writer may be in the middle of a write).
        wait_for_writer : bool
            A reader opening: a tail that looks damaged is read again while a writer
            holds the lock, until its bytes stay the same for a while (a live
            writer's pwrite may be half copied into preallocated space; damage stays).

        Returns
        -------
        bool
            Whether any transaction was applied.

        Raises
        ------
        CorruptDatabaseError
            ``strict`` and the log is damaged after :attr:`pos`.
        """
        self.txn = txn
        fd = self.fd
        if not self.salt:           # a version 1 log without records
            return False
        size = os.fstat(fd).st_size
        if size <= self.pos:
            return False
        changed = False
        if strict:
            prev, waited, delay = None, 0.0, 0.001
            deadline = time.monotonic() + 2.0
            while True:
                base = self.pos
                buf = pread_all(fd, size - base, base)
                if prev is not None and buf != prev:
                    waited, delay = 0.0, 0.001
                try:
                    return self._scan(buf, True, apply) or changed
                except CorruptDatabaseError:
                    # a reader may have caught a live writer's pwrite half copied into
                    # preallocated space: while a writer holds the lock, look again
                    # until the bytes stay the same for a while (damage stays)
                    if (not wait_for_writer or waited >= 0.25 or time.monotonic() > deadline
                            or not writer_active(self.directory)):
                        raise
                    changed |= self.pos != base
                    prev = buf[self.pos - base:]
                    time.sleep(delay)
                    waited += delay
                    delay = min(2 * delay, 0.05)
                    size = os.fstat(fd).st_size
        window = 1 << 16
        while self.pos < size:
            pos = self.pos
            n = min(window, size - pos)
            buf = pread_all(fd, n, pos)
            changed |= self._scan(buf, False, apply)
            if self.pos == pos:
                if n == size - pos:
                    break
                # no complete transaction in the window: a larger one, or the end?
                e = self.scan_end
                if n - e >= FRAME_SIZE:
                    length, fsalt, _, hcrc = FRAME.unpack_from(buf, e)
                    if (fsalt != self.salt or crc32(buf[e:e + 12]) != hcrc
                            or e + FRAME_SIZE + length <= n):
                        break           # zeros (the end), or a frame being written
                    window = max(window, e + FRAME_SIZE + length) * 2
                else:
                    window *= 2
        return changed

    def _scan(self, buf: bytes | memoryview, strict: bool,
              apply: Callable[[list[tuple[Any, ...]]], object]) -> bool:
        """Apply the complete transactions in ``buf`` (the log from :attr:`pos`)."""
        where = self.where
        pending: list[Any] = []
        changed = False
        base = self.pos
        self.scan_end = 0
        for end, payload in parse_frames(buf, 0, where, self.salt, base, strict):
            self.scan_end = end
            op = unpackb(payload, where, MAX_FRAME)
            if not isinstance(op, list) or not op or not isinstance(op[0], int):
                raise CorruptDatabaseError(f"{where}: bad log record at offset {base + end - len(payload)}")
            if op[0] == OP_COMMIT:
                if (len(op) != 4 or op[1] != self.txn + 1 or op[2] != len(pending)
                        or op[3] != COMMIT_TRAILER):
                    raise CorruptDatabaseError(f"{where}: commit record out of sequence at offset {base + end}")
                apply([decode_op(o, where) for o in pending])
                self.txn += 1
                self.pos = base + end
                pending = []
                changed = True
            else:
                pending.append(op)
        return changed

    def check(self, uuid: bytes, gen: int) -> None:
        """Verify the header and every frame up to :attr:`pos` (nothing changed
        below the replayed position).

        Raises
        ------
        CorruptDatabaseError
        """
        where = self.where
        check_wal_header(pread_all(self.fd, HEADER_SIZE, 0), where, uuid, gen)
        buf = pread_all(self.fd, self.pos - HEADER_SIZE, HEADER_SIZE)
        last = 0
        if self.salt:
            for last, payload in parse_frames(buf, 0, where, self.salt, HEADER_SIZE):
                unpackb(payload, where, MAX_FRAME)
        if last != len(buf):
            raise CorruptDatabaseError(f"{where}: the log changed below the replayed position")
