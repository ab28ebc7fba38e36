"""Building segment files: what a checkpoint appends and what a compaction rewrites.

A checkpoint folds the rows the log added since the last one into the row segment
files (:func:`append_rows`: the files are append-only, the manifest records each
one's committed length and checksum); a transaction that stages more than
``spill_bytes`` writes its rows the same way before it commits. A compaction
(:meth:`Store.compact`, and a transaction with ``replace_codes``) copies the live rows,
in row order, into fresh row files (:func:`create_row_files`, :func:`copy_live_rows`),
renumbering them; the manifest swap that names the new files commits it and the old
files are deleted. Index blobs and arrays go into an immutable ``.index`` segment
(:func:`write_index_file`). The byte layouts are in ``docs/file-format.md``,
section 2; the commit protocols in section 5.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .format import (DTYPE_CODE, HEADER_SIZE, KIND_CODES, KIND_DEAD, KIND_ENDS, KIND_IDS,
                     KIND_INDEX, KIND_REC, KIND_VEC, file_name, seg_header)
from .records import Chunk
from .segments import Appender, pread_all, write_new_file

__all__ = ["COPY_ROWS", "append_rows", "read_appended", "create_row_files", "copy_live_rows",
           "write_index_file"]

_U8 = np.dtype("<u8")

#: Rows copied per step of a compaction (bounds the temporary arrays).
COPY_ROWS = 1 << 16


def append_rows(apps: dict[str, Appender], ch: Chunk) -> None:
    """Append the rows of ``ch`` to the row files ``apps`` (``{"ids": Appender, ...}``),
    record offsets shifted past what ``apps["rec"]`` already holds."""
    apps["ids"].append(ch.ids)
    apps["ends"].append(ch.ends + np.uint64(apps["rec"].length))
    apps["rec"].append(ch.rec)
    if ch.codes is not None:
        apps["codes"].append(ch.codes)
    if ch.vecs is not None:
        apps["vec"].append(ch.vecs)


def read_appended(app: Appender, from_byte: int) -> bytes:
    """The data bytes of ``app`` from ``from_byte`` on (committed or not)."""
    return pread_all(app.fd, app.length - from_byte, HEADER_SIZE + from_byte)


def create_row_files(directory: str, uuid: bytes, new_file_no: Callable[[], int], code_size: int,
                     dim: int, vdtype: np.dtype[Any] | None, created: list[Appender]
                     ) -> dict[str, Appender]:
    """New, empty row files for a compaction.

    Parameters
    ----------
    directory : str
    uuid : bytes
        The store's uuid (in the headers).
    new_file_no : callable
        Returns the next file number.
    code_size, dim : int
        Code and vector widths (0: no such file).
    vdtype : numpy.dtype or None
        The vector dtype.
    created : list
        Every appender created is added to it (the caller closes them, also when this
        raises).

    Returns
    -------
    dict
        ``{"ids", "ends", "rec", "dead"[, "codes"][, "vec"]: Appender}``.
    """
    def new(kind: int, width: int = 0, dt: int = 0) -> Appender:
        a = Appender(directory, file_name(new_file_no(), kind), 0, 0,
                     create_header=seg_header(kind, uuid, width, dt))
        created.append(a)
        return a
    apps = {"ids": new(KIND_IDS, 8), "ends": new(KIND_ENDS, 8), "rec": new(KIND_REC),
            "dead": new(KIND_DEAD, 8)}
    if code_size:
        apps["codes"] = new(KIND_CODES, code_size)
    if dim:
        apps["vec"] = new(KIND_VEC, dim * vdtype.itemsize, DTYPE_CODE[vdtype])  # type: ignore[union-attr,index]  # dim: a dtype
    return apps


def copy_live_rows(apps: dict[str, Appender], rows: np.ndarray, ids_all: np.ndarray, ends: np.ndarray,
                   rec: np.ndarray, codes: np.ndarray | None, vecs: np.ndarray | None,
                   codes_override: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Copy rows ``rows`` (ascending) of the checkpointed segments into ``apps``.

    Parameters
    ----------
    apps : dict
        From :func:`create_row_files`.
    rows : ndarray of int64
        The rows to keep, ascending.
    ids_all, ends, rec, codes, vecs
        The checkpointed columns (``codes``/``vecs`` None when the store has none;
        ``ends`` validated as increasing).
    codes_override : tuple, optional
        ``(sorted ids, codes)``: new codes for the kept ids (``replace_codes``).
    """
    for c0 in range(0, len(rows), COPY_ROWS):
        r = rows[c0:c0 + COPY_ROWS]
        ids = ids_all[r]
        apps["ids"].append(ids)
        if codes_override is not None:
            oi, oc = codes_override
            pos = np.minimum(np.searchsorted(oi, ids), len(oi) - 1)
            apps["codes"].append(oc[pos])
        elif "codes" in apps:
            apps["codes"].append(codes[r])  # type: ignore[index]  # a codes file: codes
        if "vec" in apps:
            apps["vec"].append(vecs[r])  # type: ignore[index]  # a vector file: vectors
        starts = np.where(r > 0, ends[np.maximum(r - 1, 0)], 0).astype(_U8)
        lens = ends[r] - starts
        base = apps["rec"].length
        apps["ends"].append(np.cumsum(lens, dtype=_U8) + np.uint64(base))
        brk = np.flatnonzero(np.diff(r) != 1) + 1
        for a, b in zip(np.r_[0, brk].tolist(), np.r_[brk, len(r)].tolist()):
            apps["rec"].append(rec[int(starts[a]):int(ends[r[b - 1]])])


def write_index_file(directory: str, new_file_no: Callable[[], int], uuid: bytes, blob: bytes,
                     arrays: dict[str, Any], sync: bool) -> dict[str, Any]:
    """Write an ``.index`` segment: the arrays (each 64-byte aligned), then the blob
    (``new_file_no()`` numbers the file).

    Returns
    -------
    dict
        Its manifest entry, with ``blob`` (``[offset, length]``) and ``arrays``
        (``[name, dtype code, shape, offset]`` each).
    """
    parts: list[np.ndarray | bytes] = []
    meta: list[list[Any]] = []
    off = 0
    for aname, a in arrays.items():
        a = np.ascontiguousarray(a)
        meta.append([aname, DTYPE_CODE[a.dtype], list(a.shape), off])
        parts.append(a)
        nb = a.nbytes
        pad = (-nb) % 64
        if pad:
            parts.append(bytes(pad))
        off += nb + pad
    parts.append(blob)
    entry = write_new_file(directory, file_name(new_file_no(), KIND_INDEX), KIND_INDEX,
                           uuid, parts, sync=sync)
    entry.update(blob=[off, len(blob)], arrays=meta)
    return entry
