"""Byte-level layout of the files of a sutradb database (see ``docs/file-format.md``).

Everything here is pure: it packs and validates bytes and never touches the file system.
All integers are little-endian. Every structure read from disk is checked (magic,
version, checksum, sizes) and a failure raises
:class:`~sutradb.errors.CorruptDatabaseError` naming the file.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np

from ..errors import CorruptDatabaseError

FORMAT_VERSION = 1
#: Version of the log format (2: salted 16-byte frame headers, preallocated logs).
WAL_VERSION = 2

#: Size of the header that starts every segment file and every log file.
HEADER_SIZE = 64

MANIFEST_NAME = "MANIFEST"
LOCK_NAME = "LOCK"

SEG_MAGIC = b"SUTRASEG"
WAL_MAGIC = b"SUTRAWAL"
MAN_MAGIC = b"SUTRAMAN"

# kinds of segment files: code -> (name, file extension)
KIND_IDS, KIND_ENDS, KIND_REC, KIND_CODES, KIND_VEC, KIND_DEAD, KIND_ORDER = 1, 2, 3, 4, 5, 6, 7
KIND_LINKS, KIND_INDEX, KIND_KEYS, KIND_TERMS = 8, 9, 10, 11
KIND_EXT = {KIND_IDS: "ids", KIND_ENDS: "ends", KIND_REC: "rec", KIND_CODES: "codes",
            KIND_VEC: "vec", KIND_DEAD: "dead", KIND_ORDER: "order", KIND_LINKS: "links",
            KIND_INDEX: "index", KIND_KEYS: "keys", KIND_TERMS: "terms"}
EXT_KIND = {v: k for k, v in KIND_EXT.items()}

# dtypes that may be stored (code in headers / log records <-> numpy dtype)
DTYPES: dict[int, np.dtype[Any]] = {1: np.dtype("<f4"), 2: np.dtype("<f2"), 3: np.dtype("<f8"), 4: np.dtype("<i4"),
          5: np.dtype("<i8"), 6: np.dtype("u1"), 7: np.dtype("<u8")}
DTYPE_CODE: dict[np.dtype[Any], int] = {v: k for k, v in DTYPES.items()}
VECTOR_DTYPES: dict[str, np.dtype[Any]] = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}

# limits (a value read from disk beyond them is damage, not data)
MAX_MANIFEST = 64 << 20
MAX_FRAME = 1 << 30
MAX_RECORD = 256 << 20
MAX_CODE_SIZE = 1 << 16
MAX_DIM = 1 << 20
MAX_RELATION = 1024

# log frame: payload length, the log's salt, payload crc, crc of the first 12 bytes
FRAME = struct.Struct("<IIII")
FRAME_SIZE = FRAME.size
_FRAME_HEAD = struct.Struct("<III")
#: A torn write leaves zeros from a sector boundary on (the unit a disk writes whole;
#: page-cache copies are cut at 4096-byte boundaries, a multiple of it).
SECTOR = 512
#: Last item of every commit record: its final byte (0x5A) is not zero and no single
#: flipped bit or byte makes it zero, so damage to a commit frame is never mistaken
#: for a write cut short.
COMMIT_TRAILER = 0x5A5A

# log record types
OP_PUT, OP_DELETE, OP_LINK, OP_UNLINK, OP_INDEX, OP_META, OP_COMMIT = 1, 2, 3, 4, 5, 6, 7

_SEG_HEADER = struct.Struct("<8sII16sQI16x")        # magic ver kind uuid width dtype -> 60
_WAL_HEADER = struct.Struct("<8sI16sQI20x")         # magic ver uuid generation salt -> 60
_MAN_HEADER = struct.Struct("<8sIIQI")              # magic ver len generation crc -> 28
MAN_HEADER_SIZE = 32

assert _SEG_HEADER.size == 60 and _WAL_HEADER.size == 60


def crc32(data: bytes | bytearray | memoryview | np.ndarray, value: int = 0) -> int:
    """CRC-32 (zlib polynomial) of ``data``, continuing from ``value``."""
    return zlib.crc32(data, value) & 0xFFFFFFFF  # type: ignore[arg-type]  # an ndarray is a buffer (stubs: from Python 3.12)


# --------------------------------------------------------------------------- msgpack

def _np_scalar(obj: object) -> object:
    """msgpack ``default`` hook: NumPy scalars become the Python numbers they hold."""
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    raise TypeError(f"can not serialize {type(obj).__name__!r} object")


def packb(obj: object) -> bytes:
    """msgpack-encode ``obj`` (bin type for bytes, str for str; NumPy scalars as
    Python numbers; anything else raises TypeError: never pickle)."""
    return msgpack.packb(obj, use_bin_type=True, default=_np_scalar)


def unpackb(data: bytes | bytearray | memoryview | np.ndarray, where: str, limit: int | None = None) -> Any:
    """Decode msgpack ``data`` read from file ``where`` with explicit size limits.

    Any decoding problem (truncated, trailing bytes, over-long item, ext types, non-str
    map keys) raises :class:`CorruptDatabaseError` naming ``where``.
    """
    n = len(data)
    if limit is not None and n > limit:
        raise CorruptDatabaseError(f"{where}: msgpack item of {n} bytes exceeds {limit}")
    try:
        return msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True,  # type: ignore[arg-type]  # (likewise)
            max_str_len=n, max_bin_len=n,
            max_array_len=n, max_map_len=n, max_ext_len=0)
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as e:
        raise CorruptDatabaseError(f"{where}: undecodable msgpack ({type(e).__name__}: {e})") from None


# --------------------------------------------------------------------------- headers

def seg_header(kind: int, uuid: bytes, width: int = 0, dtype: int = 0) -> bytes:
    """The 64-byte header of a segment file."""
    body = _SEG_HEADER.pack(SEG_MAGIC, FORMAT_VERSION, kind, uuid, width, dtype)
    return body + struct.pack("<I", crc32(body))


def check_seg_header(raw: bytes, where: str, kind: int, uuid: bytes,
                     width: int | None = None, dtype: int | None = None) -> tuple[int, int]:
    """Validate a segment header; return its ``(width, dtype)``."""
    if len(raw) < HEADER_SIZE:
        raise CorruptDatabaseError(f"{where}: truncated header ({len(raw)} bytes)")
    body, (crc,) = raw[:60], struct.unpack("<I", raw[60:64])
    if crc32(body) != crc:
        raise CorruptDatabaseError(f"{where}: header checksum mismatch")
    magic, ver, k, u, w, dt = _SEG_HEADER.unpack(body)
    if magic != SEG_MAGIC:
        raise CorruptDatabaseError(f"{where}: bad magic {magic!r}")
    if ver != FORMAT_VERSION:
        raise CorruptDatabaseError(f"{where}: unsupported format version {ver}")
    if k != kind:
        raise CorruptDatabaseError(f"{where}: file kind {k}, expected {kind}")
    if u != uuid:
        raise CorruptDatabaseError(f"{where}: belongs to another database")
    if width is not None and w != width:
        raise CorruptDatabaseError(f"{where}: row width {w}, manifest says {width}")
    if dtype is not None and dt != dtype:
        raise CorruptDatabaseError(f"{where}: dtype {dt}, manifest says {dtype}")
    return w, dt


def wal_header(uuid: bytes, generation: int, salt: int) -> bytes:
    """The 64-byte header of a log file (``salt``: random, nonzero, 32 bits)."""
    body = _WAL_HEADER.pack(WAL_MAGIC, WAL_VERSION, uuid, generation, salt)
    return body + struct.pack("<I", crc32(body))


def check_wal_header(raw: bytes, where: str, uuid: bytes, generation: int) -> tuple[int, int]:
    """Validate a log header against the manifest that names the log; return
    ``(version, salt)`` (version 1 logs have no salt: 0)."""
    if len(raw) < HEADER_SIZE:
        raise CorruptDatabaseError(f"{where}: truncated header ({len(raw)} bytes)")
    body, (crc,) = raw[:60], struct.unpack("<I", raw[60:64])
    if crc32(body) != crc:
        raise CorruptDatabaseError(f"{where}: header checksum mismatch")
    magic, ver, u, gen, salt = _WAL_HEADER.unpack(body)
    if magic != WAL_MAGIC:
        raise CorruptDatabaseError(f"{where}: bad magic {magic!r}")
    if ver not in (1, WAL_VERSION):
        raise CorruptDatabaseError(f"{where}: unsupported format version {ver}")
    if u != uuid or gen != generation:
        raise CorruptDatabaseError(f"{where}: log does not belong to manifest generation {generation}")
    if ver == 1:
        salt = 0
    elif salt == 0:
        raise CorruptDatabaseError(f"{where}: zero salt")
    return ver, salt


# --------------------------------------------------------------------------- manifest

def encode_manifest(generation: int, body: dict[str, Any]) -> bytes:
    """Manifest bytes: a 32-byte header (magic, version, length, generation, payload
    crc, header crc) followed by the msgpack payload."""
    payload = packb(body)
    head = _MAN_HEADER.pack(MAN_MAGIC, FORMAT_VERSION, len(payload), generation, crc32(payload))
    return head + struct.pack("<I", crc32(head)) + payload


def decode_manifest(raw: bytes, where: str) -> tuple[int, dict[str, Any]]:
    """Validate manifest bytes; return ``(generation, body)``."""
    if len(raw) < MAN_HEADER_SIZE:
        raise CorruptDatabaseError(f"{where}: truncated ({len(raw)} bytes)")
    head, (hcrc,) = raw[:28], struct.unpack("<I", raw[28:32])
    if crc32(head) != hcrc:
        raise CorruptDatabaseError(f"{where}: header checksum mismatch")
    magic, ver, length, gen, pcrc = _MAN_HEADER.unpack(head)
    if magic != MAN_MAGIC:
        raise CorruptDatabaseError(f"{where}: bad magic {magic!r}")
    if ver != FORMAT_VERSION:
        raise CorruptDatabaseError(f"{where}: unsupported format version {ver}")
    if length != len(raw) - MAN_HEADER_SIZE or length > MAX_MANIFEST:
        raise CorruptDatabaseError(f"{where}: payload length {length} does not match file size")
    payload = raw[MAN_HEADER_SIZE:]
    if crc32(payload) != pcrc:
        raise CorruptDatabaseError(f"{where}: payload checksum mismatch")
    body = unpackb(payload, where, MAX_MANIFEST)
    if not isinstance(body, dict):
        raise CorruptDatabaseError(f"{where}: payload is not a map")
    return gen, body


# --------------------------------------------------------------------------- log frames

def frame(payload: bytes, salt: int) -> bytes:
    """A log frame: length, salt, crc32(payload), crc32 of those 12 bytes, payload."""
    head = _FRAME_HEAD.pack(len(payload), salt, crc32(payload))
    return head + struct.pack("<I", crc32(head)) + payload


def _align_up(x: int, a: int) -> int:
    return -(-x // a) * a


def align8(x: int) -> int:
    """``x`` rounded up to a multiple of 8 (the padding of a links file)."""
    return (x + 7) & ~7


def all_zero(mv: bytes | bytearray | memoryview) -> bool:
    """Whether every byte of a bytes-like object is zero (fast, C loops)."""
    return not np.frombuffer(mv, np.uint8).any() if len(mv) else True


def parse_frames(buf: bytes | bytearray | memoryview, start: int, where: str, salt: int,
                 base: int = 0, strict: bool = True) -> Iterator[tuple[int, memoryview]]:
    """Iterate over the frames of a log buffer from offset ``start``.

    ``buf`` holds the log from file offset ``base`` to its end of file (space
    preallocated with zeros included). Yields ``(offset_after_frame,
    payload_memoryview)``. The log ends quietly at:

    * a frame header of sixteen zero bytes with only zeros after it (space
      preallocated, or extended but never written);
    * a frame with another salt (stale bytes of another log: never applied);
    * fewer bytes left than a frame header, or a payload that runs past the end of
      the buffer (a write cut short by the end of file);
    * a *torn write*: a frame whose header or payload checksum fails while every byte
      from a sector boundary inside that frame to the end of the buffer is zero
      (a write cut short in preallocated space).

    Anything else that does not check out (a checksum mismatch with data after it, an
    impossible length, zeros followed by data) is damage and raises
    :class:`CorruptDatabaseError`. With ``strict=False`` (a reader catching up with a
    live writer, whose write may be in progress) every such case ends the log quietly.
    """
    mv = memoryview(buf)
    end = len(mv)
    pos = start
    zstart: list[int | None] = [None]

    def torn(fend: int) -> bool:
        if zstart[0] is None:
            zstart[0] = len(bytes(mv).rstrip(b"\0"))
        cut = _align_up(base + max(zstart[0], pos + 1), SECTOR) - base  # type: ignore[operator,type-var]  # set above
        return cut < fend

    while end - pos >= FRAME_SIZE:
        length, fsalt, pcrc, hcrc = FRAME.unpack_from(mv, pos)
        if crc32(mv[pos:pos + 12]) != hcrc:
            if not strict:
                return
            if not (length or fsalt or pcrc or hcrc):
                if all_zero(mv[pos:]):
                    return
                raise CorruptDatabaseError(f"{where}: zeroed frame header followed by data "
                                           f"at offset {base + pos}")
            if torn(pos + FRAME_SIZE):
                return
            raise CorruptDatabaseError(f"{where}: frame header checksum mismatch at offset {base + pos}")
        if fsalt != salt:
            return
        if length == 0 or length > MAX_FRAME:
            if not strict:
                return
            raise CorruptDatabaseError(f"{where}: impossible frame length {length} at offset {base + pos}")
        body_end = pos + FRAME_SIZE + length
        if body_end > end:
            return
        payload = mv[pos + FRAME_SIZE:body_end]
        if crc32(payload) != pcrc:
            if not strict or torn(body_end):
                return
            raise CorruptDatabaseError(f"{where}: frame checksum mismatch at offset {base + pos}")
        yield body_end, payload
        pos = body_end


# --------------------------------------------------------------------------- helpers

def file_name(number: int, kind: int) -> str:
    """Name of segment file ``number`` of ``kind`` (e.g. ``000012.codes``)."""
    return f"{number:06d}.{KIND_EXT[kind]}"


def wal_name(generation: int) -> str:
    """Name of the log that starts at manifest ``generation``."""
    return f"wal-{generation:08d}.log"


def parse_file_name(name: str) -> tuple[str, int] | None:
    """``("seg", number)``, ``("wal", generation)``, or None for a foreign name."""
    if name.startswith("wal-") and name.endswith(".log") and len(name) == 16:
        try:
            return "wal", int(name[4:12])
        except ValueError:
            return None
    stem, dot, ext = name.partition(".")
    if dot and ext in EXT_KIND and len(stem) == 6 and stem.isdigit():
        return "seg", int(stem)
    return None
