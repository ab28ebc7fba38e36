# cython: language_level=3
"""Decoding records from a record file in C: the batch path of ``records_at`` and the
single-record path of ``record_at`` (a cold ``get``).

The reference is :func:`sutradb.storage.records.decode_record` (pure Python), which
this module must match exactly: same records, same :class:`CorruptDatabaseError`
messages. A record is ``b""`` (empty) or crc32 (4 bytes, little-endian) + the msgpack
list ``[key, text, metadata or None]`` (``docs/file-format.md``, section 2).

What is in C here: the offsets' bounds checks, the CRC-32 (zlib's polynomial, table
driven, eight bytes per step: the same values as :func:`zlib.crc32`, which the tests
check), gathering a batch's msgpack bodies into one buffer, and the structure checks.
The msgpack decoding itself is msgpack's (one streaming ``Unpacker`` per batch: no
per-record call overhead); every record must end exactly where the next begins
(``Unpacker.tell``), so a body can never be read into its neighbour's bytes.
Portable C only: no SIMD, built once for every CPU.
"""

cimport cython
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from cpython.bytes cimport PyBytes_FromStringAndSize

import msgpack
import numpy as np

from ..errors import CorruptDatabaseError
from .format import MAX_RECORD
from .records import Record

__all__ = ["crc32", "RecordFile"]

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define SUTRA_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 1)
    #else
    #define SUTRA_PREFETCH(p) ((void)0)
    #endif
    """
    void SUTRA_PREFETCH(const void* p) noexcept nogil

# rows ahead whose offsets, then bytes, are asked for while a batch is checked (a
# hint: the random reads of a batch overlap instead of waiting one by one)
cdef enum:
    AHEAD = 8

cdef uint32_t _T[8][256]
cdef uint64_t _MAX_SPAN = MAX_RECORD + 4


cdef void _init_tables() noexcept:
    cdef uint32_t c
    cdef int i, k, t
    for i in range(256):
        c = <uint32_t>i
        for k in range(8):
            c = (c >> 1) ^ (0xEDB88320u if (c & 1u) else 0u)
        _T[0][i] = c
    for i in range(256):
        for t in range(1, 8):
            _T[t][i] = (_T[t - 1][i] >> 8) ^ _T[0][_T[t - 1][i] & 0xFFu]


_init_tables()


cdef inline uint32_t _le32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16)
            | (<uint32_t>p[3] << 24))


cdef uint32_t _crc32(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef uint32_t c = 0xFFFFFFFFu, one, two
    while n >= 8:
        one = _le32(p) ^ c
        two = _le32(p + 4)
        c = (_T[7][one & 0xFFu] ^ _T[6][(one >> 8) & 0xFFu] ^ _T[5][(one >> 16) & 0xFFu]
             ^ _T[4][one >> 24] ^ _T[3][two & 0xFFu] ^ _T[2][(two >> 8) & 0xFFu]
             ^ _T[1][(two >> 16) & 0xFFu] ^ _T[0][two >> 24])
        p += 8
        n -= 8
    while n > 0:
        c = _T[0][(c ^ p[0]) & 0xFFu] ^ (c >> 8)
        p += 1
        n -= 1
    return c ^ 0xFFFFFFFFu


def crc32(const uint8_t[::1] data):
    """CRC-32 of ``data`` (zlib's polynomial: equal to ``zlib.crc32(data)``)."""
    return _crc32(&data[0] if data.shape[0] else NULL, data.shape[0])


_new = tuple.__new__
_unpackb = msgpack.unpackb


cdef object _record(object id_, object obj, str where):
    """The Record of a decoded body (structure checked as ``decode_record`` does)."""
    if (type(obj) is not list or len(<list>obj) != 3):
        raise CorruptDatabaseError(f"{where}: record of id {id_} has a bad structure")
    k = (<list>obj)[0]
    t = (<list>obj)[1]
    m = (<list>obj)[2]
    if (not (k is None or isinstance(k, str)) or not (t is None or isinstance(t, str))
            or not (m is None or isinstance(m, dict))):
        raise CorruptDatabaseError(f"{where}: record of id {id_} has a bad structure")
    return _new(Record, (id_, k, t, m or {}))


@cython.auto_pickle(False)      # it holds a memory map: nothing to pickle
cdef class RecordFile:
    """The records of a row segment: its record bytes and their end offsets.

    Parameters
    ----------
    rec : uint8 array
        The record file's data (a memory map).
    ends : uint64 array
        ``ends[r]``: the end offset of row ``r``'s record in ``rec`` (row r starts where
        row r - 1 ends; row 0 at 0).
    ids : int64 array
        ``ids[r]``: the id of row ``r`` (returned in its record, named in errors).
    where, ends_where : str
        The paths of the record and offsets files, named in errors.
    """

    cdef const uint8_t[::1] rec
    cdef const uint64_t[::1] ends
    cdef const int64_t[::1] ids
    cdef readonly str where
    cdef readonly str ends_where

    def __init__(self, const uint8_t[::1] rec, const uint64_t[::1] ends,
                 const int64_t[::1] ids, str where, str ends_where):
        if ids.shape[0] != ends.shape[0]:
            raise ValueError("ids and ends differ in length")
        self.rec = rec
        self.ends = ends
        self.ids = ids
        self.where = where
        self.ends_where = ends_where

    cdef inline int _span(self, Py_ssize_t row, uint64_t* a, uint64_t* b) except -1:
        if row < 0 or row >= self.ends.shape[0]:
            raise IndexError(f"row {row} out of range [0, {self.ends.shape[0]})")
        a[0] = self.ends[row - 1] if row else 0
        b[0] = self.ends[row]
        if a[0] > b[0] or b[0] > <uint64_t>self.rec.shape[0] or b[0] - a[0] > _MAX_SPAN:
            raise CorruptDatabaseError(f"{self.ends_where}: bad record offsets for row {row}")
        return 0

    cdef inline int _check(self, uint64_t a, uint64_t b, object id_) except -1:
        cdef Py_ssize_t n = <Py_ssize_t>(b - a)
        if n < 5:
            raise CorruptDatabaseError(f"{self.where}: record of id {id_} is {n} bytes")
        if _crc32(&self.rec[a + 4], n - 4) != _le32(&self.rec[a]):
            raise CorruptDatabaseError(f"{self.where}: record of id {id_}: checksum mismatch")
        return 0

    def at(self, Py_ssize_t row):
        """The :class:`~sutradb.storage.records.Record` of row ``row``."""
        cdef uint64_t a, b
        cdef Py_ssize_t n
        self._span(row, &a, &b)
        id_ = self.ids[row]
        if a == b:
            return _new(Record, (id_, None, None, {}))
        self._check(a, b, id_)
        n = <Py_ssize_t>(b - a - 4)
        body = PyBytes_FromStringAndSize(<const char*>&self.rec[a + 4], n)
        try:
            # msgpack's defaults: str keys only, str as str, lists, and every length
            # limited by the body's size; ext types refused
            obj = _unpackb(body, max_ext_len=0)
        except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as e:
            raise CorruptDatabaseError(f"{self.where}: undecodable msgpack "
                                       f"({type(e).__name__}: {e})") from None
        return _record(id_, obj, self.where)

    def many(self, const int64_t[::1] rows):
        """The :class:`~sutradb.storage.records.Record` of each of ``rows`` (in order)."""
        cdef Py_ssize_t n = rows.shape[0], i
        keys, texts, metas = self.columns(rows)
        return [_new(Record, (self.ids[rows[i]], keys[i], texts[i], metas[i]))
                for i in range(n)]

    def columns(self, const int64_t[::1] rows):
        """The keys, texts and metadata of ``rows`` as three lists: the bodies are
        gathered into one buffer and decoded by one streaming unpacker. Metadata is a
        new ``{}`` where a record has none."""
        cdef Py_ssize_t n = rows.shape[0], i, total = 0, pos = 0, nb
        cdef uint64_t a, b
        cdef list keys = [None] * n, texts = [None] * n, metas = [None] * n
        cdef uint64_t[::1] sa = np.empty(n, np.uint64)
        cdef uint64_t[::1] sb = np.empty(n, np.uint64)
        cdef char* dst
        cdef Py_ssize_t nends = self.ends.shape[0], r
        for i in range(n):
            if i + AHEAD < n:
                r = rows[i + AHEAD]
                if 0 < r < nends:
                    SUTRA_PREFETCH(&self.ends[r - 1])
            self._span(rows[i], &a, &b)
            sa[i] = a
            sb[i] = b
        for i in range(n):
            if i + AHEAD < n and sa[i + AHEAD] != sb[i + AHEAD]:
                SUTRA_PREFETCH(&self.rec[sa[i + AHEAD]])
            if sa[i] != sb[i]:
                self._check(sa[i], sb[i], self.ids[rows[i]])
                total += <Py_ssize_t>(sb[i] - sa[i] - 4)
        if not total:
            for i in range(n):
                metas[i] = {}
            return keys, texts, metas
        buf = PyByteArray_FromStringAndSize(NULL, total)
        dst = PyByteArray_AS_STRING(buf)
        for i in range(n):
            if sa[i] != sb[i]:
                nb = <Py_ssize_t>(sb[i] - sa[i] - 4)
                memcpy(dst + pos, &self.rec[sa[i] + 4], nb)
                pos += nb
        up = msgpack.Unpacker(None, raw=False, strict_map_key=True, use_list=True,
                              max_buffer_size=total, max_str_len=total, max_bin_len=total,
                              max_array_len=total, max_map_len=total, max_ext_len=0)
        up.feed(buf)
        unpack = up.unpack
        tell = up.tell
        pos = 0
        for i in range(n):
            if sa[i] == sb[i]:
                metas[i] = {}
                continue
            pos += <Py_ssize_t>(sb[i] - sa[i] - 4)
            try:
                obj = unpack()
            except (ValueError, TypeError, OverflowError, msgpack.UnpackException,
                    msgpack.OutOfData) as e:
                raise CorruptDatabaseError(f"{self.where}: undecodable msgpack "
                                           f"({type(e).__name__}: {e})") from None
            if tell() != pos:
                raise CorruptDatabaseError(f"{self.where}: undecodable msgpack "
                                           f"(record of id {self.ids[rows[i]]} does not end where it should)")
            if type(obj) is not list or len(<list>obj) != 3:
                raise CorruptDatabaseError(f"{self.where}: record of id {self.ids[rows[i]]} has a bad structure")
            k = (<list>obj)[0]
            t = (<list>obj)[1]
            m = (<list>obj)[2]
            if (not (k is None or type(k) is str or isinstance(k, str))
                    or not (t is None or type(t) is str or isinstance(t, str))
                    or not (m is None or type(m) is dict or isinstance(m, dict))):
                raise CorruptDatabaseError(f"{self.where}: record of id {self.ids[rows[i]]} has a bad structure")
            keys[i] = k
            texts[i] = t
            metas[i] = m if m else {}
        return keys, texts, metas
