"""Arrow columns of concepts: the metadata column encoding, vectors from Arrow
arrays, and the plan by which :meth:`~sutradb.database.arrow.ArrowMixin.add_arrow`
reads a table (:mod:`sutradb.database.arrow` describes the table).

Plain functions and small classes of Arrow arrays and Python values; pyarrow is
passed in or imported on first use (:func:`require_pyarrow`), never at import.
"""

from __future__ import annotations

import json
import sys

import msgpack
import numpy as np

from ..errors import DimensionError, InvalidArgumentError, MissingDependencyError
from .options import BATCH, DefaultStr

__all__ = ["require_pyarrow", "require_pandas", "vector_array", "FIXED_COLUMNS", "FIELD_KEY",
           "SCHEMA_KEY", "ATTRS_KEY", "I64_MAX", "metadata_plan", "MetadataField",
           "column_spec", "encode_metadata", "decode_metadata", "input_batches", "InputPlan",
           "has_bytes"]

#: The columns of a concept that are not metadata.
FIXED_COLUMNS = ("id", "key", "text", "vector", "codes")
#: Field-metadata key of a metadata column (JSON: field, encoding, kind, nulls).
FIELD_KEY = b"sutradb.metadata"
#: Schema-metadata key of a table sutradb wrote (JSON: format, version, dim, metric...).
SCHEMA_KEY = b"sutradb"
#: ``DataFrame.attrs`` key of :meth:`ArrowMixin.to_pandas`: column -> its field metadata.
ATTRS_KEY = "sutradb.metadata"

I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
_SCALAR = {bool: "bool", int: "int", float: "float", str: "str", bytes: "bytes"}
_ABSENT = object()


# --------------------------------------------------------------------------- imports

def require_pyarrow():
    """``pyarrow``, or :class:`~sutradb.errors.MissingDependencyError`."""
    try:
        import pyarrow
    except ImportError:
        raise MissingDependencyError(
            "this needs pyarrow: pip install 'sutradb[arrow]' (or pip install pyarrow)") from None
    return pyarrow


def require_pandas():
    """``pandas``, or :class:`~sutradb.errors.MissingDependencyError`."""
    try:
        import pandas
    except ImportError:
        raise MissingDependencyError(
            "this needs pandas: pip install 'sutradb[arrow]' (or pip install pandas)") from None
    return pandas


# --------------------------------------------------------------------------- metadata

def has_bytes(v) -> bool:
    """Whether a metadata value holds bytes anywhere (JSON cannot hold it)."""
    t = type(v)
    if t is bytes:
        return True
    if t is list:
        return any(has_bytes(x) for x in v)
    if t is dict:
        return any(has_bytes(x) for x in v.values())
    return False


def _kind(v) -> str:
    """The column kind one value asks for: a scalar kind, ``list<kind>``, ``list``
    (empty), ``json`` or ``msgpack`` (holds bytes)."""
    k = _SCALAR.get(type(v))
    if k is not None:
        if k == "int" and not I64_MIN <= v <= I64_MAX:
            return "json"
        return k
    if type(v) is list:
        ek = None
        for x in v:
            xk = _SCALAR.get(type(x))
            if xk is None or xk == "bytes" or (xk == "int" and not I64_MIN <= x <= I64_MAX) \
                    or (ek is not None and xk != ek):
                return "msgpack" if has_bytes(v) else "json"
            ek = xk
        return "list" if ek is None else f"list<{ek}>"
    return "msgpack" if has_bytes(v) else "json"


def _merge(a, b):
    if a is None or a == b:
        return b
    if a == "list" and b.startswith("list<"):
        return b
    if b == "list" and a.startswith("list<"):
        return a
    return "msgpack" if "msgpack" in (a, b) or "bytes" in (a, b) else "json"


class MetadataField:
    """How one metadata field travels as an Arrow column.

    Attributes
    ----------
    field : str
        The metadata key.
    column : str
        The column name (the key, or ``metadata.<key>`` for a fixed column's name).
    kind : str
        ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``list<bool|int|float|str>``
        (a typed column), ``json`` or ``msgpack``.
    nulls : {"absent", "none"}
        What a null means: the concept lacks the field, or its value is None.
    """

    __slots__ = ("field", "column", "kind", "nulls")

    def __init__(self, field, column, kind, nulls="absent"):
        self.field, self.column, self.kind, self.nulls = field, column, kind, nulls

    @property
    def encoding(self) -> str:
        return self.kind if self.kind in ("json", "msgpack") else "value"

    def arrow_type(self, pa):
        scalar = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(),
                  "str": pa.string(), "bytes": pa.binary(), "json": pa.string(),
                  "msgpack": pa.binary()}
        if self.kind.startswith("list<"):
            return pa.list_(scalar[self.kind[5:-1]])
        return scalar[self.kind]

    def to_dict(self) -> dict:
        """What the column's field metadata says (``FIELD_KEY``)."""
        return {"field": self.field, "encoding": self.encoding, "kind": self.kind,
                "nulls": self.nulls}

    def arrow_field(self, pa):
        return pa.field(self.column, self.arrow_type(pa), nullable=True,
                        metadata={FIELD_KEY: json.dumps(self.to_dict()).encode()})

    def __repr__(self):
        return f"MetadataField({self.field!r}, {self.column!r}, {self.kind!r}, {self.nulls!r})"


def metadata_plan(mds, n_rows: int | None = None) -> list[MetadataField]:
    """The columns of the metadata dicts ``mds`` (one pass).

    Parameters
    ----------
    mds : iterable of dict
        The metadata of every row (``{}`` or None: none).
    n_rows : int, optional
        How many rows (counted from ``mds`` when None).
    """
    # field -> [kind, present, nones, the scalar type whose values need no look]
    stats: dict[str, list] = {}
    count = 0
    for md in mds:
        count += 1
        if not md:
            continue
        for k, v in md.items():
            st = stats.get(k)
            if st is None:
                st = stats[k] = [None, 0, 0, None]
            st[1] += 1
            t = type(v)
            if t is st[3] and (t is not int or I64_MIN <= v <= I64_MAX):
                continue
            if v is None:
                st[2] += 1
            else:
                st[0] = kind = _merge(st[0], _kind(v))
                st[3] = t if kind == _SCALAR.get(t) else None
    n = count if n_rows is None else n_rows
    out, taken = [], set(FIXED_COLUMNS) | {"metadata"}
    for name, (kind, present, nones, _) in stats.items():
        nulls = "absent"
        if kind is None or kind == "list":
            kind = "json"
        elif nones and kind not in ("json", "msgpack"):
            if present == n:
                nulls = "none"
            else:
                kind = "msgpack" if kind == "bytes" else "json"
        column = name
        while column in taken:
            column = "metadata." + column
        taken.add(column)
        out.append(MetadataField(name, column, kind, nulls))
    return out


def encode_metadata(pa, spec: MetadataField, mds):
    """The Arrow array of field ``spec`` over the metadata dicts ``mds``."""
    name = spec.field
    vals = [(md.get(name, _ABSENT) if md else _ABSENT) for md in mds]
    if spec.kind == "json":
        vals = [None if v is _ABSENT else json.dumps(v, ensure_ascii=False) for v in vals]
    elif spec.kind == "msgpack":
        vals = [None if v is _ABSENT else msgpack.packb(v, use_bin_type=True) for v in vals]
    else:
        vals = [None if v is _ABSENT else v for v in vals]
    return pa.array(vals, type=spec.arrow_type(pa))


def _storable(pa, t) -> bool:
    """Whether values of Arrow type ``t`` read back (``to_pylist``) as metadata
    (msgpack types)."""
    ty = pa.types
    if (ty.is_null(t) or ty.is_boolean(t) or ty.is_integer(t) or ty.is_floating(t)
            or ty.is_string(t) or ty.is_large_string(t) or ty.is_binary(t)
            or ty.is_large_binary(t) or ty.is_fixed_size_binary(t)
            or getattr(ty, "is_string_view", lambda _: False)(t)
            or getattr(ty, "is_binary_view", lambda _: False)(t)):
        return True
    if ty.is_list(t) or ty.is_large_list(t) or ty.is_fixed_size_list(t) \
            or getattr(ty, "is_list_view", lambda _: False)(t) \
            or getattr(ty, "is_large_list_view", lambda _: False)(t):
        return _storable(pa, t.value_type)
    if ty.is_struct(t):
        return all(_storable(pa, t.field(i).type) for i in range(t.num_fields))
    if ty.is_dictionary(t):
        return _storable(pa, t.value_type)
    return False


def column_spec(pa, field) -> MetadataField:
    """How to read the metadata column ``field`` (a ``pyarrow.Field``): from its
    sutradb field metadata, else a plain typed column (null: absent)."""
    raw = (field.metadata or {}).get(FIELD_KEY)
    if raw is None:
        if not _storable(pa, field.type):
            raise InvalidArgumentError(
                f"column {field.name!r} has type {field.type}, which metadata cannot hold "
                "(bool, int, float, str, bytes, lists and structs of them): cast it first "
                "(e.g. timestamps to str or int)")
        return MetadataField(field.name, field.name, "value")
    try:
        d = json.loads(raw)
        enc = d["encoding"]
        spec = MetadataField(str(d["field"]), field.name, enc,
                             d.get("nulls", "absent"))
    except (ValueError, KeyError, TypeError):
        raise InvalidArgumentError(f"column {field.name!r}: unreadable sutradb field "
                                   f"metadata {raw!r}") from None
    if spec.kind not in ("value", "json", "msgpack") or spec.nulls not in ("absent", "none"):
        raise InvalidArgumentError(f"column {field.name!r}: unknown metadata encoding {d!r}")
    if spec.kind == "value" and not _storable(pa, field.type):
        raise InvalidArgumentError(f"column {field.name!r} has type {field.type}, which "
                                   "metadata cannot hold")
    if spec.kind == "json" and not (pa.types.is_string(field.type)
                                    or pa.types.is_large_string(field.type)):
        raise InvalidArgumentError(f"column {field.name!r}: JSON metadata must be strings, "
                                   f"got {field.type}")
    if spec.kind == "msgpack" and not (pa.types.is_binary(field.type)
                                       or pa.types.is_large_binary(field.type)):
        raise InvalidArgumentError(f"column {field.name!r}: msgpack metadata must be binary, "
                                   f"got {field.type}")
    return spec


def decode_metadata(specs, columns, n: int, row0: int = 0) -> list | None:
    """The metadata dicts (None for none) of ``n`` rows from the metadata columns
    ``columns`` (Arrow arrays) read as ``specs`` (:func:`column_spec`); None when
    no row has any. ``row0`` numbers the rows in messages."""
    if not specs:
        return None
    mds: list = [None] * n
    for spec, col in zip(specs, columns):
        vals = col.to_pylist()
        name, enc, keep_null = spec.field, spec.kind, spec.nulls == "none"
        for i, v in enumerate(vals):
            if v is None:
                if not keep_null:
                    continue
            elif enc == "json":
                try:
                    v = json.loads(v)
                except ValueError as e:
                    raise InvalidArgumentError(f"column {spec.column!r}, row {row0 + i}: not "
                                               f"JSON ({e})") from None
            elif enc == "msgpack":
                try:
                    v = msgpack.unpackb(v, raw=False, strict_map_key=True)
                except (ValueError, TypeError, msgpack.UnpackException) as e:
                    raise InvalidArgumentError(f"column {spec.column!r}, row {row0 + i}: not "
                                               f"msgpack ({e})") from None
            md = mds[i]
            if md is None:
                md = mds[i] = {}
            md[name] = v
    return mds if any(md is not None for md in mds) else None


# --------------------------------------------------------------------------- vectors

def vector_array(column, what: str = "vector") -> np.ndarray:
    """The ``(n, dim)`` NumPy array of an Arrow column of vectors.

    Parameters
    ----------
    column : pyarrow.Array or ChunkedArray
        ``fixed_size_list<float16|float32|float64>[dim]`` (read without a copy: the
        result is a view of the column's buffer), or ``list``/``large_list`` of
        floats of one length (copied), or a fixed-shape tensor extension array of
        one dimension. Integers are accepted too.
    what : str
        The column's name in messages.

    Returns
    -------
    (n, dim) ndarray
        Read-only when it is a view.

    Raises
    ------
    InvalidArgumentError
        Not a column of vectors, or a null vector or component (the message names
        the column and the row).
    DimensionError
        Lists of different lengths.
    """
    pa = require_pyarrow()
    if isinstance(column, pa.ChunkedArray):
        column = column.chunk(0) if column.num_chunks == 1 else (
            column.combine_chunks() if column.num_chunks else pa.array([], column.type))
    if isinstance(column.type, pa.ExtensionType):
        column = column.storage
    t = column.type
    n = len(column)
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise InvalidArgumentError(f"column {what!r} has a null vector at row {row}")
    ty = pa.types
    if ty.is_fixed_size_list(t):
        dim = t.list_size
        values = column.flatten()
    elif ty.is_list(t) or ty.is_large_list(t) or getattr(ty, "is_list_view", lambda _: False)(t):
        import pyarrow.compute as pc
        lens = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        dim = int(lens[0]) if n else 0
        if n and (lens != dim).any():
            row = int(np.flatnonzero(lens != dim)[0])
            raise DimensionError(f"column {what!r}: the vector at row {row} has {int(lens[row])} "
                                 f"components, the first one {dim}")
        values = column.flatten()
    else:
        raise InvalidArgumentError(f"column {what!r} must hold vectors (a fixed_size_list or "
                                   f"list of floats), got {t}")
    vt = values.type
    if not (ty.is_floating(vt) or ty.is_integer(vt)):
        raise InvalidArgumentError(f"column {what!r} must hold vectors of numbers, got {t}")
    if values.null_count:
        j = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise InvalidArgumentError(f"column {what!r} has a null component in the vector at "
                                   f"row {j // max(dim, 1)}")
    arr = values.to_numpy(zero_copy_only=False)
    if dim == 0 and n:
        raise DimensionError(f"column {what!r} holds empty vectors")
    return arr.reshape(n, dim)


# --------------------------------------------------------------------------- input

def input_batches(data, batch_rows: int = BATCH):
    """``(schema, iterator of RecordBatch)`` of what :meth:`ArrowMixin.add_arrow`
    takes: a pyarrow Table, RecordBatch or RecordBatchReader, a pandas DataFrame
    (converted by pyarrow, without its index), or an object with
    ``__arrow_c_stream__`` (Polars, DuckDB...)."""
    pa = require_pyarrow()
    if isinstance(data, pa.Table):
        return data.schema, iter(data.to_batches(max_chunksize=batch_rows))
    if isinstance(data, pa.RecordBatch):
        return data.schema, iter([data.slice(s, batch_rows)
                                  for s in range(0, max(data.num_rows, 1), batch_rows)])
    if isinstance(data, pa.RecordBatchReader):
        return data.schema, iter(data)
    pd = sys.modules.get("pandas")          # a DataFrame means pandas is imported
    if pd is not None and isinstance(data, pd.DataFrame):
        t = _with_encodings(pa, pa.Table.from_pandas(data, preserve_index=False),
                            data.attrs.get(ATTRS_KEY))
        return t.schema, iter(t.to_batches(max_chunksize=batch_rows))
    if hasattr(data, "__arrow_c_stream__") and hasattr(pa.RecordBatchReader, "from_stream"):
        r = pa.RecordBatchReader.from_stream(data)
        return r.schema, iter(r)
    raise InvalidArgumentError(f"add_arrow takes a pyarrow Table, RecordBatch or "
                               f"RecordBatchReader, or a pandas DataFrame, not "
                               f"{type(data).__name__}")


def _with_encodings(pa, t, specs):
    """Table ``t`` (from a DataFrame) with the metadata encodings
    :meth:`ArrowMixin.to_pandas` left in its ``attrs``: field metadata back on the
    columns, typed columns cast back to their type (pandas turns an int column with
    missing values into floats). A column that no longer fits its encoding is
    read as it is."""
    if not isinstance(specs, dict) or not specs:
        return t
    import pyarrow.compute as pc
    cols, fields = [], []
    for f, col in zip(t.schema, t.columns):
        d = specs.get(f.name)
        if isinstance(d, dict) and FIELD_KEY not in (f.metadata or {}):
            try:
                spec = MetadataField(str(d["field"]), f.name, str(d.get("kind") or d["encoding"]),
                                     d.get("nulls", "absent"))
                want = spec.arrow_type(pa)
                if col.type != want:
                    col = pc.cast(col, want)
                f = pa.field(f.name, want, metadata={FIELD_KEY: json.dumps(d).encode()})
            except (KeyError, TypeError, ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        cols.append(col)
        fields.append(f)
    return pa.Table.from_arrays(cols, schema=pa.schema(fields, metadata=t.schema.metadata))


def _string_list(pa, col, what, row0):
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.dictionary_decode()
        t = col.type
    if not (pa.types.is_null(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
            or getattr(pa.types, "is_string_view", lambda _: False)(t)):
        raise InvalidArgumentError(f"column {what!r} must hold strings, got {t}")
    return col.to_pylist()


class InputPlan:
    """Which input columns are the text, vector, key, id and metadata, checked
    against the schema before anything is read."""

    def __init__(self, pa, schema, text, vector, key, id, metadata, codes=None):
        names = schema.names
        if len(set(names)) != len(names):
            dup = next(x for x in names if names.count(x) > 1)
            raise InvalidArgumentError(f"the table has two columns named {dup!r}")

        def pick(name, arg):
            if name is None:
                return None
            if not isinstance(name, str):
                raise InvalidArgumentError(f"{arg}= must be a column name or None, not {name!r}")
            if name in names:
                return name
            if isinstance(name, DefaultStr):
                return None
            raise InvalidArgumentError(f"{arg}={name!r}: no such column (columns: {names})")

        self.text, self.vector = pick(text, "text"), pick(vector, "vector")
        self.key, self.id = pick(key, "key"), pick(id, "id")
        self.codes = pick(codes, "codes")
        bound = [c for c in (self.text, self.vector, self.key, self.id, self.codes) if c]
        if len(set(bound)) != len(bound):
            raise InvalidArgumentError(f"one column is given two roles: {bound}")
        if self.id is not None and not pa.types.is_integer(schema.field(self.id).type):
            raise InvalidArgumentError(f"column {self.id!r} (the ids) must hold integers, got "
                                       f"{schema.field(self.id).type}")
        if metadata is None:
            cols = []
        elif isinstance(metadata, str) and metadata == "rest":
            cols = [f.name for f in schema if f.name not in bound and (
                f.name not in FIXED_COLUMNS or FIELD_KEY in (f.metadata or {}))]
        elif isinstance(metadata, str):
            raise InvalidArgumentError(f"metadata= is None, 'rest' or a list of column names, "
                                       f"not {metadata!r}")
        else:
            cols = list(metadata)
            for c in cols:
                if not isinstance(c, str) or c not in names:
                    raise InvalidArgumentError(f"metadata column {c!r}: no such column "
                                               f"(columns: {names})")
                if c in bound:
                    raise InvalidArgumentError(f"column {c!r} is both metadata and another role")
        self.md_cols = cols
        self.md_specs = [column_spec(pa, schema.field(c)) for c in cols]
        fields = [s.field for s in self.md_specs]
        if len(set(fields)) != len(fields):
            dup = next(x for x in fields if fields.count(x) > 1)
            raise InvalidArgumentError(f"two columns hold the metadata field {dup!r}")
        self.pa = pa

    def decode(self, rb, row0: int) -> dict:
        """The columns of one record batch as NumPy arrays and lists."""
        pa = self.pa
        n = rb.num_rows
        out = {"n": n, "texts": None, "keys": None, "ids": None, "vectors": None, "codes": None}
        if self.text is not None:
            out["texts"] = _string_list(pa, rb.column(self.text), self.text, row0)
        if self.key is not None:
            out["keys"] = _string_list(pa, rb.column(self.key), self.key, row0)
        if self.id is not None:
            col = rb.column(self.id)
            if col.null_count:
                row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
                raise InvalidArgumentError(f"column {self.id!r} (the ids) is null at row "
                                           f"{row0 + row}")
            ids = col.to_numpy(zero_copy_only=False)
            if ids.dtype.kind == "u" and n and ids.max() > I64_MAX:
                raise InvalidArgumentError(f"column {self.id!r}: ids beyond the int64 range")
            out["ids"] = ids.astype(np.int64, copy=False)
        if self.vector is not None:
            out["vectors"] = vector_array(rb.column(self.vector), self.vector)
        if self.codes is not None:
            c = vector_array(rb.column(self.codes), self.codes)
            if c.dtype != np.uint8:
                raise InvalidArgumentError(f"column {self.codes!r} (PQ codes) must hold uint8")
            out["codes"] = c
        out["metadata"] = decode_metadata(self.md_specs, [rb.column(c) for c in self.md_cols],
                                          n, row0)
        return out
