"""What a distributed learn job reads: texts (with optional keys and metadata) in
fixed-size partitions.

A *source* is one of

* a list, tuple or any iterable (a generator) of items, an item being a text (str)
  or a dict ``{"text": ..., "key": ..., "metadata": {...}}`` (field names are
  parameters of :func:`iter_partitions`);
* a path (``str`` or :class:`os.PathLike`) of a file: ``.txt`` (one text per line;
  lines end with ``\\n``, a trailing ``\\r`` is dropped), ``.jsonl`` / ``.ndjson``
  (one JSON item per line: a string or an object as above), ``.parquet`` (a text
  column and optional key / metadata columns; needs ``pyarrow``); ``.gz`` after
  ``.txt`` / ``.jsonl`` is read through gzip;
* a ``dask.bag.Bag`` of such items (the engine's own data set: its partitions are
  computed on the cluster, a few at a time, and cut into partitions of the job's
  size; a dask DataFrame column goes through ``df["text"].to_bag()``).

Items are read lazily, partition by partition: a source larger than memory is fine.
Every item is checked as :meth:`sutradb.Database.add` checks it (texts are str, keys
str or None, metadata msgpack-able dicts with str keys) and the error names its row.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from itertools import islice
from pathlib import Path
from typing import Iterator, NamedTuple

import msgpack
import numpy as np

from ..errors import DimensionError, InvalidArgumentError

__all__ = ["Partition", "iter_partitions", "count_rows", "describe_source", "partition_digest",
           "normalise_metadata"]

TEXT_SUFFIXES = (".txt", ".text")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")


class Partition(NamedTuple):
    """One partition of a source: rows ``start .. start + len(texts) - 1``."""

    index: int  # type: ignore[assignment]  # a field named like tuple.index (a NamedTuple allows it)
    start: int
    texts: list
    keys: list | None
    metadata: list | None
    vectors: np.ndarray | None


def normalise_metadata(md, row: int):
    """Metadata as the database stores it: None for none/empty, else the dict after a
    msgpack round trip (str keys at every level)."""
    if md is None:
        return None
    if not isinstance(md, dict):
        raise InvalidArgumentError(f"row {row}: metadata must be a dict or None, not "
                                   f"{type(md).__name__}")
    if not md:
        return None
    try:
        return msgpack.unpackb(msgpack.packb(md, use_bin_type=True), raw=False,
                               strict_map_key=True)
    except (TypeError, ValueError, OverflowError, msgpack.UnpackException) as e:
        raise InvalidArgumentError(f"row {row}: metadata cannot be stored (msgpack types with "
                                   f"str keys only): {e}") from None


def partition_digest(texts, keys, metadata, vectors=None) -> str:
    """SHA-256 of a partition's records (key, text, metadata as stored; the vectors'
    bytes when they came with the source): how a re-run recognises a partition that a
    shard already holds."""
    h = hashlib.sha256()
    pack = msgpack.Packer(use_bin_type=True)
    for i, t in enumerate(texts):
        k = keys[i] if keys is not None else None
        m = (metadata[i] if metadata is not None else None) or {}
        h.update(pack.pack([k, t, m]))
    if vectors is not None:
        h.update(np.ascontiguousarray(vectors).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- kinds

def _is_path(source) -> bool:
    return isinstance(source, (str, os.PathLike))


def _is_bag(source) -> bool:
    return type(source).__module__.startswith("dask.bag") and hasattr(source, "to_delayed")


def _file_kind(path: Path) -> tuple[str, bool]:
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in TEXT_SUFFIXES:
        return "text", gz
    if last in JSONL_SUFFIXES:
        return "jsonl", gz
    if last in PARQUET_SUFFIXES and not gz:
        return "parquet", False
    raise InvalidArgumentError(
        f"cannot tell the format of {os.fspath(path)!r}: name it *.txt (one text per line), "
        f"*.jsonl (one JSON text or object per line) or *.parquet (optionally .gz after "
        f"txt/jsonl)")


def _check_file(source) -> Path:
    p = Path(os.fspath(source))
    if not p.is_file():
        raise InvalidArgumentError(f"source file {os.fspath(source)!r} does not exist (a str "
                                   f"source is a path; pass texts as a list)")
    return p


def describe_source(source) -> str:
    """A short description of a source for the manifest's job record."""
    if _is_path(source):
        return f"file:{os.fspath(source)}"
    if _is_bag(source):
        return f"dask.bag:{getattr(source, 'name', '?')}"
    n = len(source) if hasattr(source, "__len__") else None
    return f"{type(source).__name__}" + (f"[{n}]" if n is not None else "")


def count_rows(source) -> int | None:
    """Rows of a source when that is cheap to know (lists, uncompressed text/JSONL
    files: a pass counting newlines; Parquet: its metadata), else None."""
    if _is_path(source):
        p = _check_file(source)
        kind, gz = _file_kind(p)
        if kind == "parquet":
            pq = _pyarrow_parquet()
            return int(pq.ParquetFile(p).metadata.num_rows)
        if gz:
            return None
        n, last = 0, b"\n"
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                n += chunk.count(b"\n")
                last = chunk[-1:]
        return n + (1 if last != b"\n" else 0)
    if _is_bag(source):
        return None
    if isinstance(source, (list, tuple, np.ndarray)):
        return len(source)
    return None


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidArgumentError("reading Parquet needs pyarrow: `pip install pyarrow`") from None
    return pq


# --------------------------------------------------------------------------- rows

def _open_text(p: Path, gz: bool):
    raw = gzip.open(p, "rb") if gz else open(p, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", newline="\n")


def _lines(p: Path, gz: bool):
    with _open_text(p, gz) as f:
        for line in f:
            if line.endswith("\n"):
                line = line[:-1]
            if line.endswith("\r"):
                line = line[:-1]
            yield line


def _jsonl_items(p: Path, gz: bool):
    for i, line in enumerate(_lines(p, gz)):
        try:
            yield json.loads(line)
        except ValueError as e:
            raise InvalidArgumentError(f"{p}: line {i + 1} is not JSON ({e})") from None


def _parquet_items(p: Path, text_field, key_field, metadata_field, batch):
    pq = _pyarrow_parquet()
    f = pq.ParquetFile(p)
    names = set(f.schema_arrow.names)
    if text_field not in names:
        raise InvalidArgumentError(f"{p}: no column {text_field!r} (columns: {sorted(names)})")
    cols = [c for c in (text_field, key_field, metadata_field) if c and c in names]
    for rb in f.iter_batches(batch_size=max(1, batch), columns=cols):
        for row in rb.to_pylist():
            yield row


def _bag_items(bag, window: int = 4):
    import dask
    parts = bag.to_delayed()
    for s in range(0, len(parts), window):
        for part in dask.compute(*parts[s:s + window]):
            yield from part


def _items(source, text_field, key_field, metadata_field, batch):
    if _is_path(source):
        p = _check_file(source)
        kind, gz = _file_kind(p)
        if kind == "text":
            return _lines(p, gz)
        if kind == "jsonl":
            return _jsonl_items(p, gz)
        return _parquet_items(p, text_field, key_field, metadata_field, batch)
    if _is_bag(source):
        return _bag_items(source)
    if isinstance(source, (bytes, bytearray, dict)):
        raise InvalidArgumentError(f"a source is a list/iterable of texts, a file path or a "
                                   f"dask bag, not {type(source).__name__}")
    try:
        return iter(source)
    except TypeError:
        raise InvalidArgumentError(f"a source is a list/iterable of texts, a file path or a "
                                   f"dask bag, not {type(source).__name__}") from None


def _row(item, row, text_field, key_field, metadata_field):
    if isinstance(item, str):
        return item, None, None
    if isinstance(item, dict):
        if text_field not in item:
            raise InvalidArgumentError(f"row {row}: no {text_field!r} field")
        text = item[text_field]
        key = item.get(key_field) if key_field else None
        md = item.get(metadata_field) if metadata_field else None
    else:
        raise InvalidArgumentError(f"row {row}: an item is a text (str) or a dict with a "
                                   f"{text_field!r} field, not {type(item).__name__}")
    if not isinstance(text, str):
        raise InvalidArgumentError(f"row {row}: a text must be a str, not {type(text).__name__}")
    if key is not None and not isinstance(key, str):
        raise InvalidArgumentError(f"row {row}: a key must be a str or None, not {type(key).__name__}")
    return text, key, normalise_metadata(md, row)


def iter_partitions(source, size: int, *, vectors=None, text_field: str = "text",
                    key_field: str | None = "key",
                    metadata_field: str | None = "metadata") -> Iterator[Partition]:
    """Partitions of ``size`` rows (the last one shorter) of a source.

    Parameters
    ----------
    source
        See the module docstring.
    size : int
        Rows per partition.
    vectors : (n, dim) array_like, optional
        Embeddings of the rows (bring your own): row ``i`` of the source is
        ``vectors[i]``; the source must have exactly ``n`` rows.
    text_field, key_field, metadata_field : str
        Field names of dict items / JSONL objects / Parquet columns.

    Yields
    ------
    Partition
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InvalidArgumentError(f"partition size must be a positive integer, got {size!r}")
    V = None
    if vectors is not None:
        V = vectors if isinstance(vectors, np.ndarray) else np.asarray(vectors)
        if V.ndim != 2 or V.shape[1] < 1:
            raise DimensionError(f"vectors must be (n, dim), got shape {V.shape}")
    items = _items(source, text_field, key_field, metadata_field, size)
    p, row = 0, 0
    while True:
        chunk = list(islice(items, size))
        if not chunk:
            break
        texts, keys, mds = [], [], []
        for j, it in enumerate(chunk):
            t, k, m = _row(it, row + j, text_field, key_field, metadata_field)
            texts.append(t)
            keys.append(k)
            mds.append(m)
        n = len(texts)
        vec = None
        if V is not None:
            if row + n > V.shape[0]:
                raise DimensionError(f"the source has more rows than the {V.shape[0]} vectors")
            vec = V[row:row + n]
        yield Partition(p, row, texts,
                        keys if any(k is not None for k in keys) else None,
                        mds if any(m is not None for m in mds) else None, vec)
        p += 1
        row += n
        if n < size:
            break
    if V is not None and row != V.shape[0]:
        raise DimensionError(f"the source has {row} rows for {V.shape[0]} vectors")
