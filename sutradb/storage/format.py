"""Byte-level layout of the files of a sutradb database (see ``docs/file-format.md``).

Everything here is pure: it packs and validates bytes and never touches the file system.
All integers are little-endian. Every structure read from disk is checked (magic,
version, checksum, sizes) and a failure raises
:class:`~sutradb.errors.CorruptDatabaseError` naming the file.
"""

from __future__ import annotations

import struct
import zlib

import msgpack
import numpy as np

from ..errors import CorruptDatabaseError

FORMAT_VERSION = 1

#: Size of the header that starts every segment file and every log file.
HEADER_SIZE = 64

MANIFEST_NAME = "MANIFEST"
LOCK_NAME = "LOCK"

SEG_MAGIC = b"SUTRASEG"
WAL_MAGIC = b"SUTRAWAL"
MAN_MAGIC = b"SUTRAMAN"

# kinds of segment files: code -> (name, file extension)
KIND_IDS, KIND_ENDS, KIND_REC, KIND_CODES, KIND_VEC, KIND_DEAD, KIND_ORDER = 1, 2, 3, 4, 5, 6, 7
KIND_LINKS, KIND_INDEX = 8, 9
KIND_EXT = {KIND_IDS: "ids", KIND_ENDS: "ends", KIND_REC: "rec", KIND_CODES: "codes",
            KIND_VEC: "vec", KIND_DEAD: "dead", KIND_ORDER: "order", KIND_LINKS: "links",
            KIND_INDEX: "index"}
EXT_KIND = {v: k for k, v in KIND_EXT.items()}

# dtypes that may be stored (code in headers / log records <-> numpy dtype)
DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f2"), 3: np.dtype("<f8"), 4: np.dtype("<i4"),
          5: np.dtype("<i8"), 6: np.dtype("u1"), 7: np.dtype("<u8")}
DTYPE_CODE = {v: k for k, v in DTYPES.items()}
VECTOR_DTYPES = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}

# limits (a value read from disk beyond them is damage, not data)
MAX_MANIFEST = 64 << 20
MAX_FRAME = 1 << 30
MAX_RECORD = 256 << 20
MAX_CODE_SIZE = 1 << 16
MAX_DIM = 1 << 20
MAX_RELATION = 1024

# log frame: payload length, payload crc, crc of the first 8 bytes
FRAME = struct.Struct("<III")
FRAME_SIZE = FRAME.size

# log record types
OP_PUT, OP_DELETE, OP_LINK, OP_UNLINK, OP_INDEX, OP_META, OP_COMMIT = 1, 2, 3, 4, 5, 6, 7

_SEG_HEADER = struct.Struct("<8sII16sQI16x")        # magic ver kind uuid width dtype -> 60
_WAL_HEADER = struct.Struct("<8sI16sQ24x")          # magic ver uuid generation -> 60
_MAN_HEADER = struct.Struct("<8sIIQI")              # magic ver len generation crc -> 28
MAN_HEADER_SIZE = 32

assert _SEG_HEADER.size == 60 and _WAL_HEADER.size == 60


def crc32(data, value: int = 0) -> int:
    """CRC-32 (zlib polynomial) of ``data``, continuing from ``value``."""
    return zlib.crc32(data, value) & 0xFFFFFFFF


# --------------------------------------------------------------------------- msgpack

def _np_scalar(obj):
    """msgpack ``default`` hook: NumPy scalars become the Python numbers they hold."""
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    raise TypeError(f"can not serialize {type(obj).__name__!r} object")


def packb(obj) -> bytes:
    """msgpack-encode ``obj`` (bin type for bytes, str for str; NumPy scalars as
    Python numbers; anything else raises TypeError: never pickle)."""
    return msgpack.packb(obj, use_bin_type=True, default=_np_scalar)


def unpackb(data, where: str, limit: int | None = None):
    """Decode msgpack ``data`` read from file ``where`` with explicit size limits.

    Any decoding problem (truncated, trailing bytes, over-long item, ext types, non-str
    map keys) raises :class:`CorruptDatabaseError` naming ``where``.
    """
    n = len(data)
    if limit is not None and n > limit:
        raise CorruptDatabaseError(f"{where}: msgpack item of {n} bytes exceeds {limit}")
    try:
        return msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True,
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


def wal_header(uuid: bytes, generation: int) -> bytes:
    """The 64-byte header of a log file."""
    body = _WAL_HEADER.pack(WAL_MAGIC, FORMAT_VERSION, uuid, generation)
    return body + struct.pack("<I", crc32(body))


def check_wal_header(raw: bytes, where: str, uuid: bytes, generation: int) -> None:
    """Validate a log header against the manifest that names the log."""
    if len(raw) < HEADER_SIZE:
        raise CorruptDatabaseError(f"{where}: truncated header ({len(raw)} bytes)")
    body, (crc,) = raw[:60], struct.unpack("<I", raw[60:64])
    if crc32(body) != crc:
        raise CorruptDatabaseError(f"{where}: header checksum mismatch")
    magic, ver, u, gen = _WAL_HEADER.unpack(body)
    if magic != WAL_MAGIC:
        raise CorruptDatabaseError(f"{where}: bad magic {magic!r}")
    if ver != FORMAT_VERSION:
        raise CorruptDatabaseError(f"{where}: unsupported format version {ver}")
    if u != uuid or gen != generation:
        raise CorruptDatabaseError(f"{where}: log does not belong to manifest generation {generation}")


# --------------------------------------------------------------------------- manifest

def encode_manifest(generation: int, body: dict) -> bytes:
    """Manifest bytes: a 32-byte header (magic, version, length, generation, payload
    crc, header crc) followed by the msgpack payload."""
    payload = packb(body)
    head = _MAN_HEADER.pack(MAN_MAGIC, FORMAT_VERSION, len(payload), generation, crc32(payload))
    return head + struct.pack("<I", crc32(head)) + payload


def decode_manifest(raw: bytes, where: str) -> tuple[int, dict]:
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

def frame(payload: bytes) -> bytes:
    """A log frame: length, crc32(payload), crc32 of those 8 bytes, payload."""
    head = struct.pack("<II", len(payload), crc32(payload))
    return head + struct.pack("<I", crc32(head)) + payload


def parse_frames(buf, start: int, where: str):
    """Iterate over the frames of a log buffer from offset ``start``.

    Yields ``(offset_after_frame, payload_memoryview)``. Stops quietly at a *torn tail*:
    fewer bytes left than a frame header, a payload that runs past the end of the
    buffer (a write cut short), or a header of twelve zero bytes when everything after
    it is zero too (space the file system extended but never wrote). Anything else
    that does not check out (a header or payload checksum mismatch, an impossible
    length, zeros followed by data) is damage and raises :class:`CorruptDatabaseError`.
    """
    mv = memoryview(buf)
    end = len(mv)
    pos = start
    while end - pos >= FRAME_SIZE:
        length, pcrc, hcrc = FRAME.unpack_from(mv, pos)
        if length == 0 and pcrc == 0 and hcrc == 0:
            if not any(mv[pos:]):
                return
            raise CorruptDatabaseError(f"{where}: zeroed frame header followed by data at offset {pos}")
        if crc32(mv[pos:pos + 8]) != hcrc:
            raise CorruptDatabaseError(f"{where}: frame header checksum mismatch at offset {pos}")
        if length == 0 or length > MAX_FRAME:
            raise CorruptDatabaseError(f"{where}: impossible frame length {length} at offset {pos}")
        body_end = pos + FRAME_SIZE + length
        if body_end > end:
            return
        payload = mv[pos + FRAME_SIZE:body_end]
        if crc32(payload) != pcrc:
            raise CorruptDatabaseError(f"{where}: frame checksum mismatch at offset {pos}")
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
