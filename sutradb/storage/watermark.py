"""The watermark: how far the committed log reaches, recorded where a shrink shows.

The log's end is found by its frames (a crash leaves a torn tail that replay drops),
so a log that was *cut short* after its transactions committed — a copy that stopped
half-way, a truncating tool, a file system that lost blocks — would read as an older
state without any error. An fsync'd log cannot shrink in a crash, so a log shorter
than what was committed is damage, and must be reported.

After every commit that wrote to the log (after its ``fdatasync`` with durability
``"full"``), after every checkpoint (new generation) and when a writer opens, the
writer writes one 80-byte record into the ``LOCK`` file at byte 64 (byte 0 is the
lock byte that Windows' ``LockFileEx`` locks; the record is never fsynced and costs
one ``pwrite``):

======  ====  ================================================================
offset  size  field
======  ====  ================================================================
0       8     magic ``SUTRAWMK``
8       4     version (1)
12      4     durability of the writer (1 full, 2 normal, 3 off)
16      16    store uuid
32      8     manifest generation
40      8     end of the log's last committed transaction (byte offset)
48      8     id of the last committed transaction
56      16    boot id of the writer's machine (zeros when unknown)
72      4     zero
76      4     CRC-32 of bytes 0-75
======  ====  ================================================================

Readers and writers compare it with what they found (:func:`shortfall`): the same
uuid and generation and a log that ends earlier (or at an older transaction) means
committed transactions are missing. That is reported as damage when the writer
fsynced its log before writing the record (``"full"``) or when the machine has not
rebooted since (same boot id: the page cache cannot have lost what a process wrote);
after a reboot a ``"normal"`` or ``"off"`` writer's recent transactions may be lost
legitimately (their documented contract), and the shortfall is accepted. A newer
generation in the record than in ``MANIFEST`` means an older manifest is in place:
damage unless ``"off"`` after a reboot. A record that is absent, torn (bad CRC) or of
another store says nothing (older databases have an empty ``LOCK``).
"""

from __future__ import annotations

import os
import struct
from typing import Any, Final, NamedTuple

from . import osio
from .format import LOCK_NAME, crc32

__all__ = ["WATERMARK_OFFSET", "WATERMARK_SIZE", "Watermark", "encode", "decode", "read",
           "write", "shortfall", "stale", "DURABILITY_CODES", "DAMAGED"]

WATERMARK_OFFSET = 64
WATERMARK_SIZE = 80
MAGIC = b"SUTRAWMK"
VERSION = 1
DURABILITY_CODES = {"full": 1, "normal": 2, "off": 3}
_NAMES = {v: k for k, v in DURABILITY_CODES.items()}
_LAYOUT = struct.Struct("<8sII16sQQQ16sI")   # 76 bytes, then the CRC
#: What :func:`decode` returns for bytes that are neither zeros nor a valid record.
DAMAGED: Final = "damaged"


class Watermark(NamedTuple):
    """One watermark record (see the module docstring)."""

    durability: str
    uuid: bytes
    generation: int
    log_end: int
    txn: int
    boot: bytes


def encode(w: Watermark) -> bytes:
    """The 80 bytes of ``w``."""
    body = _LAYOUT.pack(MAGIC, VERSION, DURABILITY_CODES[w.durability], w.uuid, w.generation,
                        w.log_end, w.txn, w.boot or bytes(16), 0)
    return body + struct.pack("<I", crc32(body))


def decode(b: bytes) -> Watermark | str | None:
    """The record in ``b`` (80 bytes); None when there is none (nothing or zeros:
    a database written before watermarks); :data:`DAMAGED` for any other bytes (the
    record is written by one 80-byte ``pwrite`` inside the first sector of ``LOCK``,
    which a crash does not tear)."""
    b = bytes(b[:WATERMARK_SIZE])
    if not any(b):
        return None
    if len(b) < WATERMARK_SIZE or b[:8] != MAGIC or struct.unpack_from("<I", b, 76)[0] != crc32(b[:76]):
        return DAMAGED
    magic, version, dur, uuid, gen, log_end, txn, boot, zero = _LAYOUT.unpack_from(b)
    if version != VERSION or dur not in _NAMES or zero:
        return DAMAGED
    return Watermark(_NAMES[dur], uuid, gen, log_end, txn, boot)


def read(directory: str, fd: int | None = None) -> Watermark | str | None:
    """The watermark of the database in ``directory`` (through ``fd`` when the caller
    holds ``LOCK`` open): a :class:`Watermark`, None or :data:`DAMAGED` (:func:`decode`)."""
    try:
        if fd is not None:
            return decode(osio.pread(fd, WATERMARK_SIZE, WATERMARK_OFFSET))
        f = osio.open_file(os.path.join(directory, LOCK_NAME), os.O_RDONLY)
    except OSError:
        return None
    try:
        return decode(osio.pread(f, WATERMARK_SIZE, WATERMARK_OFFSET))
    except OSError:
        return None
    finally:
        os.close(f)


def write(fd: int, w: Watermark) -> None:
    """Write ``w`` into the open ``LOCK`` file (best effort: a failed write leaves an
    older record, which only weakens the check)."""
    try:
        osio.io.pwrite(fd, encode(w), WATERMARK_OFFSET)
    except OSError:
        pass


def shortfall(w: Watermark | None, uuid: bytes, generation: int, log_end: int, txn: int,
              boot: bytes | None) -> str | None:
    """What is missing, as a sentence, or None when the state found (``generation``,
    the log replayed to ``log_end`` and transaction ``txn``) holds everything ``w``
    says was committed (or ``w`` cannot tell)."""
    if w is DAMAGED:  # type: ignore[comparison-overlap]  # decode() returns DAMAGED too
        return "LOCK: the watermark (bytes 64-143) is damaged; committed transactions may be missing"
    if w is None or w.uuid != uuid:
        return None
    same_boot = bool(boot) and any(boot) and boot == w.boot  # type: ignore[arg-type]  # bool(boot): bytes
    if w.generation > generation:
        if w.durability != "off" or same_boot:
            return (f"MANIFEST is at generation {generation} but generation {w.generation} "
                    f"was committed (transaction {w.txn}): an older manifest is in place")
        return None
    if w.generation < generation:
        return None
    if log_end >= w.log_end and txn >= w.txn:
        return None
    if w.durability == "full" or same_boot:
        return (f"the log ends at byte {log_end} (transaction {txn}) but transactions up to "
                f"{w.txn} were committed, to byte {w.log_end}: {max(0, w.log_end - log_end)} "
                f"bytes and {max(0, w.txn - txn)} transactions are missing")
    return None


def stale(w: Any, uuid: bytes, generation: int, txn: int, boot: bytes | None) -> str | None:
    """A sentence when the log holds more than one transaction past ``w`` on the
    machine that wrote it: the writer updates the watermark after every commit, so
    only the commit a crash interrupted can be missing from it; more means ``LOCK``
    was replaced by an older copy (which would hide a cut log). Call it with a
    watermark read *after* the log (a live writer moves both)."""
    if not isinstance(w, Watermark) or w.uuid != uuid or w.generation != generation:
        return None
    if txn <= w.txn + 1 or not (boot and any(boot) and boot == w.boot):
        return None
    return (f"LOCK: the watermark says transaction {w.txn} but the log holds transaction "
            f"{txn}: LOCK is older than the log (replaced by an older copy?)")
