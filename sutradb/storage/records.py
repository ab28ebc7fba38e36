"""Records and rows in memory: the record codec and the row chunks of the log.

A row is one version of one concept: an id (int64), a record (key, text, metadata)
and, when the store has them, a row of PQ codes and a full vector. The record is
stored as ``b""`` when it is empty, else as crc32 (4 bytes, little-endian) followed by
the msgpack list ``[key, text, metadata or None]`` (``docs/file-format.md``,
section 2). :func:`encode_record` checks what a caller gives; :func:`decode_record`
checks what the disk gives back and raises
:class:`~sutradb.errors.CorruptDatabaseError` naming the file.

A :class:`Chunk` holds rows in memory: the rows a transaction stages, and those the
log added since the last checkpoint (the store's *tail*), in the column layout of the
row segment files.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..errors import CorruptDatabaseError, DimensionError, InvalidArgumentError
from .format import MAX_RECORD, crc32, packb, unpackb

__all__ = ["Record", "encode_record", "decode_record", "Chunk", "as_ids"]

_I8 = np.dtype("<i8")


class Record(NamedTuple):
    """The record of one concept (``metadata`` is ``{}`` when none was given)."""

    id: int
    key: str | None
    text: str | None
    metadata: dict[str, Any]


def encode_record(key: str | None, text: str | None, metadata: dict[str, Any] | None) -> bytes:
    """Bytes of one record: ``b""`` for an empty one, else crc32 + msgpack.

    Parameters
    ----------
    key, text : str or None
    metadata : dict or None
        msgpack-serializable.

    Returns
    -------
    bytes

    Raises
    ------
    InvalidArgumentError
        A field has the wrong type, the metadata cannot be packed, or the record is
        larger than ``MAX_RECORD``.
    """
    if key is None and text is None and not metadata:
        return b""
    if key is not None and not isinstance(key, str):
        raise InvalidArgumentError(f"a key must be a str or None, not {type(key).__name__}")
    if text is not None and not isinstance(text, str):
        raise InvalidArgumentError(f"a text must be a str or None, not {type(text).__name__}")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidArgumentError(f"metadata must be a dict or None, not {type(metadata).__name__}")
    try:
        body = packb([key, text, metadata or None])
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidArgumentError(f"metadata cannot be stored (msgpack types only): {e}") from None
    if len(body) > MAX_RECORD:
        raise InvalidArgumentError(f"record of {len(body)} bytes exceeds {MAX_RECORD}")
    return crc32(body).to_bytes(4, "little") + body


def decode_record(id_: int, raw: bytes | memoryview | np.ndarray, where: str) -> Record:
    """Inverse of :func:`encode_record`, validating everything.

    Parameters
    ----------
    id_ : int
        The id of the row (returned in the record; named in errors).
    raw : bytes-like
        The stored bytes.
    where : str
        The file the bytes come from (named in errors).

    Returns
    -------
    Record

    Raises
    ------
    CorruptDatabaseError
        The bytes are truncated, fail their checksum or do not hold a record.
    """
    n = len(raw)
    if n == 0:
        return Record(id_, None, None, {})
    if n < 5:
        raise CorruptDatabaseError(f"{where}: record of id {id_} is {n} bytes")
    body = raw[4:]
    if crc32(body) != int.from_bytes(bytes(raw[:4]), "little"):
        raise CorruptDatabaseError(f"{where}: record of id {id_}: checksum mismatch")
    obj = unpackb(body, where, MAX_RECORD)
    if (not isinstance(obj, list) or len(obj) != 3
            or not (obj[0] is None or isinstance(obj[0], str))
            or not (obj[1] is None or isinstance(obj[1], str))
            or not (obj[2] is None or isinstance(obj[2], dict))):
        raise CorruptDatabaseError(f"{where}: record of id {id_} has a bad structure")
    return Record(id_, obj[0], obj[1], obj[2] or {})


class Chunk:
    """Rows held in memory (staged, or committed through the log since the last
    checkpoint).

    Parameters
    ----------
    ids : ndarray of int64, shape (k,)
    codes : ndarray of uint8, shape (k, code_size), or None
    vecs : ndarray of float16/float32, shape (k, vector_dim), or None
    rec : bytes
        The records of the rows, concatenated.
    ends : ndarray of uint64, shape (k,)
        End offset of each row's record in ``rec``.
    keys : list of (str or None)
        The key of each row (also inside its record; kept beside it for the key
        index).

    Attributes
    ----------
    row0 : int
        The row number of the first row once the chunk is committed (-1 before).
    """

    __slots__ = ("row0", "ids", "codes", "vecs", "rec", "ends", "keys")

    def __init__(self, ids: np.ndarray, codes: np.ndarray | None, vecs: np.ndarray | None,
                 rec: bytes | bytearray | np.ndarray, ends: np.ndarray,
                 keys: list[str | None] | None) -> None:
        self.row0 = -1
        self.ids, self.codes, self.vecs, self.rec, self.ends = ids, codes, vecs, rec, ends
        self.keys = keys       # list: the key (str or None) of each row

    @property
    def nbytes(self) -> int:
        """Bytes of row data the chunk holds."""
        n: int = (self.ids.nbytes + self.ends.nbytes + len(self.rec)
                  + (self.codes.nbytes if self.codes is not None else 0)
                  + (self.vecs.nbytes if self.vecs is not None else 0))
        return n


def as_ids(ids: Any, what: str = "ids") -> np.ndarray:
    """``ids`` as a one-dimensional C-contiguous int64 array (a scalar: one id).

    Raises
    ------
    DimensionError
        Not one-dimensional.
    InvalidArgumentError
        Not integers, or outside the int64 range (``what`` names them).
    """
    a = np.asarray(ids)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise DimensionError(f"{what} must be one-dimensional, got shape {a.shape}")
    if a.size == 0:
        return np.zeros(0, _I8)
    if a.dtype.kind not in "iu":
        raise InvalidArgumentError(f"{what} must be integers, got dtype {a.dtype}")
    if a.dtype.kind == "u" and a.max() > np.iinfo(np.int64).max:
        raise InvalidArgumentError(f"{what} exceed the int64 range")
    return np.ascontiguousarray(a, dtype=_I8)
