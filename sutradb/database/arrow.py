"""Arrow and pandas in and out: ``to_arrow``, ``to_pandas``, ``add_arrow``.

The table
---------
:meth:`ArrowMixin.to_arrow` gives one row per concept, columns in this order:

========== ==============================================================
``id``     int64, never null
``key``    string (null: no key)
``text``   string (null: no text)
``vector`` ``fixed_size_list<halffloat or float>[dim]``: the stored vectors
``codes``  ``fixed_size_list<uint8>[code_size]``: the PQ codes (only when asked
           for by name)
*field*    one column per top-level metadata field, in order of first appearance
========== ==============================================================

Metadata columns are *typed where the field is uniform*: when every value of the
field is a bool, an int that fits int64, a float, a str, bytes, or a list of one of
the first four (one type throughout), the column is ``bool``, ``int64``,
``float64``, ``string``, ``binary`` or ``list<...>``, null where a concept lacks the
field. Any other field (mixed types, dicts, nested lists, ints beyond int64) is a
``string`` column of JSON text, or a ``binary`` column of msgpack when a value holds
bytes (JSON has no bytes). A field that is ``None`` for some concepts stays typed if
every concept has it (null then means ``None``), else goes JSON (null: absent,
``"null"``: ``None``). Each metadata column says which in its field metadata
(``b"sutradb.metadata"``: JSON ``{"field", "encoding", "nulls"}``), so
:meth:`ArrowMixin.add_arrow` restores the exact Python values, bools and ints and
nested dicts included. A field named like a fixed column (``id``, ``key``,
``text``, ``vector``, ``codes``) becomes the column ``metadata.<name>``.

Vectors go out without a copy where the storage allows: the vector column of a
batch of rows that are consecutive in storage (every concept, in ``id`` order, of a
database loaded once; or ``order_by=None``) is a view of the stored (memory-mapped)
array, kept alive by the table. Coming in, a ``fixed_size_list`` column of floats is
read as an ``(n, dim)`` NumPy view of its Arrow buffer (:func:`vector_array`).

pyarrow and pandas are imported on first use; without them these methods raise
:class:`~sutradb.errors.MissingDependencyError` (``pip install sutradb[arrow]``).
"""

from __future__ import annotations

import json
import sys

import msgpack
import numpy as np

from ..errors import (DimensionError, DuplicateKeyError, InvalidArgumentError,
                      MissingDependencyError)
from .options import BATCH, DefaultStr
from .transactions import Bulk
from .validation import check_metadata, check_vector_rows, is_id

__all__ = ["ArrowMixin", "require_pyarrow", "require_pandas", "vector_array",
           "FIXED_COLUMNS", "FIELD_KEY", "SCHEMA_KEY", "ATTRS_KEY", "metadata_plan", "MetadataField",
           "column_spec", "encode_metadata", "decode_metadata", "input_batches", "InputPlan",
           "has_bytes"]

#: The columns of a concept that are not metadata.
FIXED_COLUMNS = ("id", "key", "text", "vector", "codes")
#: Field-metadata key of a metadata column (JSON: field, encoding, nulls).
FIELD_KEY = b"sutradb.metadata"
#: Schema-metadata key of a table sutradb wrote (JSON: format, version, dim, metric...).
SCHEMA_KEY = b"sutradb"
#: ``DataFrame.attrs`` key of :meth:`ArrowMixin.to_pandas`: column -> its field metadata.
ATTRS_KEY = "sutradb.metadata"

_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_SCALAR = {bool: "bool", int: "int", float: "float", str: "str", bytes: "bytes"}
_ABSENT = object()
_DEFAULT_TEXT, _DEFAULT_VECTOR, _DEFAULT_KEY = DefaultStr("text"), DefaultStr("vector"), DefaultStr("key")


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
        if k == "int" and not _I64_MIN <= v <= _I64_MAX:
            return "json"
        return k
    if type(v) is list:
        ek = None
        for x in v:
            xk = _SCALAR.get(type(x))
            if xk is None or xk == "bytes" or (xk == "int" and not _I64_MIN <= x <= _I64_MAX) \
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
            if t is st[3] and (t is not int or _I64_MIN <= v <= _I64_MAX):
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
                raise InvalidArgumentError(f"column {self.id!r} (the ids) is null at row {row0 + row}")
            ids = col.to_numpy(zero_copy_only=False)
            if ids.dtype.kind == "u" and n and ids.max() > _I64_MAX:
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


def _null_row(values, what, row0, why):
    for j, t in enumerate(values):
        if t is None:
            raise InvalidArgumentError(f"column {what!r} is null at row {row0 + j} ({why})")


# --------------------------------------------------------------------------- the mixin

class ArrowMixin:
    """``to_arrow``, ``to_pandas``, ``add_arrow`` of
    :class:`~sutradb.database.Database`; a mixin: reads go through the database's
    read lock and listing, writes through its transactions."""

    # ------------------------------------------------------------------ out

    def to_arrow(self, columns=None, where=None, *, vectors: str | None = "stored",
                 order_by: str | None = "id", limit: int | None = None, offset: int = 0):
        """The concepts as a ``pyarrow.Table``, one row per concept.

        Parameters
        ----------
        columns : sequence of str, optional
            Which columns, in this order: ``"id"``, ``"key"``, ``"text"``,
            ``"vector"``, ``"codes"`` (the PQ codes), metadata fields by name (a field
            named like a fixed column: ``"metadata.<name>"``), and ``"metadata"`` for
            every metadata field. Default: id, key, text, vector (when the database
            keeps vectors) and every metadata field.
        where : dict, optional
            A filter (:mod:`sutradb.index.filters`): only the concepts that match.
        vectors : {"stored", "float16", "float32", None}
            The vector column's precision: as stored (``vector_dtype``, float16 by
            default; a view of the stored array where the rows are consecutive), or
            converted (a copy); None leaves the column out.
        order_by : str or None
            As in :meth:`find_ids` (``"id"``, ``"key"``, ``"metadata.<field>"``, a
            leading ``-`` for descending); None: storage order (the order concepts
            were last written; the cheapest).
        limit, offset : int, optional
            One page of the ordered concepts.

        Returns
        -------
        pyarrow.Table
            Columns as described in :mod:`sutradb.database.arrow`; the schema's
            metadata (``b"sutradb"``) holds the dimension, metric and vector dtype.

        Raises
        ------
        MissingDependencyError
            pyarrow is not installed.
        InvalidArgumentError
            An unknown argument value; ``"vector"`` of a database that keeps no
            full vectors; ``"codes"`` of one without a quantizer.

        Examples
        --------
        >>> import numpy as np, sutradb
        >>> db = sutradb.open(":memory:", dim=2)
        >>> _ = db.add_vectors(np.eye(2, dtype="float32"), texts=["a", "b"],
        ...                    metadata=[{"n": 1}, {"n": 2, "tags": ["x"]}])
        >>> t = db.to_arrow()
        >>> t.column_names
        ['id', 'key', 'text', 'vector', 'n', 'tags']
        >>> str(t.schema.field("vector").type), str(t.schema.field("n").type)
        ('fixed_size_list<item: halffloat>[2]', 'int64')
        """
        pa = require_pyarrow()
        self._check_open()
        # the records (key, text, metadata) are read only when a column needs them
        need = columns is None or isinstance(columns, str) or \
            any(c not in ("id", "vector", "codes") for c in columns)
        with self._read:
            rows = self._arrow_rows(where, order_by, limit, offset)
            recs = self._store.records_at(rows) if need else None
            plan = self._arrow_plan(pa, columns, vectors,
                                    [r.metadata for r in recs] if need else (), len(rows))
            batches = [self._arrow_batch(pa, plan, rows[s0:s0 + BATCH],
                                         recs[s0:s0 + BATCH] if need else None)
                       for s0 in range(0, len(rows), BATCH)]
        return pa.Table.from_batches(batches, schema=plan[1])

    def to_pandas(self, columns=None, where=None, *, vectors: str | None = "stored",
                  order_by: str | None = "id", limit: int | None = None, offset: int = 0,
                  dtype_backend: str | None = None):
        """The concepts as a ``pandas.DataFrame``: :meth:`to_arrow` converted by
        pyarrow.

        Parameters
        ----------
        columns, where, vectors, order_by, limit, offset
            As in :meth:`to_arrow`.
        dtype_backend : {None, "numpy_nullable", "pyarrow"}
            As in ``pandas.read_parquet``: None gives NumPy dtypes (an int field with
            missing values becomes float64 with NaN), ``"numpy_nullable"`` pandas'
            nullable dtypes (``Int64``, ``boolean``, ``Float64``, ``string``),
            ``"pyarrow"`` ``ArrowDtype`` columns. The vector column holds one NumPy
            array per row.

        Returns
        -------
        pandas.DataFrame
            A ``RangeIndex``; the ids are the ``id`` column.
        """
        pd = require_pandas()
        if dtype_backend not in (None, "numpy_nullable", "pyarrow"):
            raise InvalidArgumentError(f"dtype_backend must be None, 'numpy_nullable' or "
                                       f"'pyarrow', not {dtype_backend!r}")
        t = self.to_arrow(columns, where, vectors=vectors, order_by=order_by, limit=limit,
                          offset=offset)
        if dtype_backend == "pyarrow":
            df = t.to_pandas(types_mapper=pd.ArrowDtype)
        elif dtype_backend == "numpy_nullable":
            pa = require_pyarrow()
            m = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype(),
                 pa.float64(): pd.Float64Dtype(), pa.string(): pd.StringDtype()}
            df = t.to_pandas(types_mapper=m.get)
        else:
            df = t.to_pandas()
        # the metadata columns' encodings, for add_arrow (pandas keeps attrs through
        # most operations; Arrow field metadata does not survive a DataFrame)
        df.attrs[ATTRS_KEY] = {f.name: json.loads(f.metadata[FIELD_KEY]) for f in t.schema
                               if f.metadata and FIELD_KEY in f.metadata}
        return df

    def _arrow_rows(self, where, order_by, limit, offset) -> np.ndarray:
        """Rows of the selected concepts, in order (under the read lock)."""
        if limit is not None and (not is_id(limit) or limit < 0):
            raise InvalidArgumentError(f"limit must be an int >= 0 or None, got {limit!r}")
        if not is_id(offset) or offset < 0:
            raise InvalidArgumentError(f"offset must be an int >= 0, got {offset!r}")
        if order_by is None:
            rows = self._matching_rows(where)
        else:
            rows = self._store.rows_of(self._ordered_ids(where, order_by))
        stop = None if limit is None else offset + limit
        return np.ascontiguousarray(rows[offset:stop], dtype=np.int64)

    def _arrow_plan(self, pa, columns, vectors, mds, n_rows):
        """``(column plan, schema)``: each planned column is ``("id",)``,
        ``("vector", dtype)``, ``("md", MetadataField)``..."""
        if vectors not in ("stored", "float16", "float32", None):
            raise InvalidArgumentError(f"vectors must be 'stored', 'float16', 'float32' or "
                                       f"None, not {vectors!r}")
        dim, vdt = self._meta["dim"], self._meta["vector_dtype"]
        has_vectors = vdt is not None and bool(dim)
        if columns is None:
            names = ["id", "key", "text"] + (["vector"] if has_vectors and vectors else []) \
                + ["metadata"]
        elif isinstance(columns, str):
            raise InvalidArgumentError("columns must be a list of column names")
        else:
            names = list(columns)
            if len(set(names)) != len(names):
                raise InvalidArgumentError(f"a column is named twice in {names}")
        specs = None
        if "metadata" in names or any(c not in FIXED_COLUMNS for c in names):
            specs = metadata_plan(mds, n_rows)
        by_col = {sp.column: sp for sp in (specs or [])}
        plan, fields = [], []
        for c in names:
            if not isinstance(c, str):
                raise InvalidArgumentError(f"a column name must be a str, not {c!r}")
            if c == "id":
                plan.append(("id",))
                fields.append(pa.field("id", pa.int64(), nullable=False))
            elif c in ("key", "text"):
                plan.append((c,))
                fields.append(pa.field(c, pa.string()))
            elif c == "vector":
                if not has_vectors:
                    raise InvalidArgumentError("the database keeps no full vectors "
                                               "(vector_dtype=None); ask for 'codes'")
                if vectors is None:
                    raise InvalidArgumentError("columns names 'vector' but vectors=None")
                dt = np.dtype(vdt if vectors == "stored" else vectors)
                plan.append(("vector", dt))
                fields.append(pa.field("vector", pa.list_(pa.from_numpy_dtype(dt), int(dim))))
            elif c == "codes":
                pq = self._index.pq
                if pq is None:
                    raise InvalidArgumentError("the database has no PQ codes (no quantizer "
                                               "trained yet)")
                plan.append(("codes",))
                fields.append(pa.field("codes", pa.list_(pa.uint8(), int(pq.code_size))))
            elif c == "metadata":
                for sp in specs:
                    if sp.column not in names:
                        plan.append(("md", sp))
                        fields.append(sp.arrow_field(pa))
            else:
                sp = by_col.get(c) or MetadataField(c, c, "json")
                plan.append(("md", sp))
                fields.append(sp.arrow_field(pa))
        info = {"format": "sutradb-arrow", "version": 1, "dim": self.dim, "metric": self.metric,
                "vector_dtype": self._meta["vector_dtype"]}
        return plan, pa.schema(fields, metadata={SCHEMA_KEY: json.dumps(info).encode()})

    def _arrow_batch(self, pa, plan, rows, recs):
        """One ``RecordBatch`` of the ``plan`` columns for ``rows`` (records ``recs``)."""
        schema = plan[1]
        s = self._store
        n = len(rows)
        consecutive = n > 0 and int(rows[-1]) - int(rows[0]) == n - 1 and \
            bool((np.diff(rows) == 1).all())
        arrays = []
        for col in plan[0]:
            what = col[0]
            if what == "id":
                arrays.append(pa.array(s.ids[rows], pa.int64()))
            elif what == "key":
                arrays.append(pa.array([r.key for r in recs], pa.string()))
            elif what == "text":
                arrays.append(pa.array([r.text for r in recs], pa.string()))
            elif what in ("vector", "codes"):
                src = s.vectors if what == "vector" else s.codes
                blk = src[int(rows[0]):int(rows[0]) + n] if consecutive else src[rows]
                if what == "vector" and blk.dtype != col[1]:
                    blk = blk.astype(col[1])
                blk = np.ascontiguousarray(blk)
                arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(blk.reshape(-1)),
                                                                blk.shape[1]))
            else:
                arrays.append(encode_metadata(pa, col[1], [r.metadata for r in recs]))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    # ------------------------------------------------------------------ in

    def add_arrow(self, data, *, text: str | None = _DEFAULT_TEXT,
                  vector: str | None = _DEFAULT_VECTOR, key: str | None = _DEFAULT_KEY,
                  id: str | None = None, metadata="rest",
                  batch_size: int | None = None) -> np.ndarray:
        """Add concepts from an Arrow table (or a pandas DataFrame), all in one
        transaction.

        Parameters
        ----------
        data : pyarrow.Table, RecordBatch or RecordBatchReader, or pandas.DataFrame
            Read batch by batch (a RecordBatchReader streams). A DataFrame is
            converted by pyarrow without its index; an object with
            ``__arrow_c_stream__`` (Polars, DuckDB) is read through it.
        text : str or None
            The column of texts (str or null). Default ``"text"`` when there is one.
            Without a vector column the texts are embedded by the database's
            embedder (as :meth:`add` does) and none may be null.
        vector : str or None
            The column of vectors: ``fixed_size_list<float16|float32>[dim]`` is read
            without a copy (:func:`vector_array`); ``list<float>`` of one length
            works too (copied). Default ``"vector"`` when there is one.
        key : str or None
            The column of keys (str or null: no key). Default ``"key"`` when there is
            one.
        id : str or None
            A column of ids for the new concepts (integers, no nulls, unique, each at
            least the next free id: ids are never reused, so these can only be ids
            the database has never given out, e.g. into a new database). Default
            None: the database numbers them. The ids the database gives out next
            start after the largest.
        metadata : "rest", None or list of str
            The metadata columns: every other column (``"rest"``, the default: all
            columns but the ones above and, unless sutradb wrote them as metadata,
            those named ``id``, ``key``, ``text``, ``vector``, ``codes``), these
            columns, or none. A column's name is its field name (or the field named
            in its sutradb field metadata: :meth:`to_arrow`'s JSON and msgpack
            columns decode back to the exact values); a null leaves the field out
            (or is None where the field metadata says so).
        batch_size : int, optional
            Texts per embedder call (as in :meth:`add`).

        Returns
        -------
        (n,) int64 ndarray
            The ids of the rows, in order.

        Raises
        ------
        MissingDependencyError
            pyarrow (or pandas, for a DataFrame) is not installed.
        InvalidArgumentError
            A named column is missing or of the wrong type, a null where none may
            be (messages name the column and the row), an id already given out.
        DimensionError
            Vectors of another dimension than the database's.
        EmbedderError
            Texts to embed and no embedder.
        DuplicateKeyError
            A key is taken or given twice. On any error nothing is added.

        Examples
        --------
        >>> import numpy as np, pyarrow as pa, sutradb
        >>> V = np.eye(3, dtype="float32")
        >>> t = pa.table({"vector": pa.FixedSizeListArray.from_arrays(V.reshape(-1), 3),
        ...               "text": ["a", "b", None], "year": [2001, None, 2003]})
        >>> db = sutradb.open(":memory:")
        >>> db.add_arrow(t).tolist()
        [0, 1, 2]
        >>> db.get(1).metadata, db.get(2).metadata
        ({}, {'year': 2003})
        """
        self._check_writable()
        pa = require_pyarrow()
        schema, batches = input_batches(data)
        plan = InputPlan(pa, schema, text, vector, key, id, metadata)
        if plan.vector is None and plan.text is None:
            raise InvalidArgumentError(f"add_arrow needs a vector column or a text column to "
                                       f"embed (columns: {schema.names})")
        emb = self._require_embedder() if plan.vector is None else None
        step = int(batch_size or self._batch_size)
        if step < 1:
            raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size!r}")
        out = []
        with self.transaction():
            st = self._staged
            floor, seen = st.next_id, (set() if plan.id is not None else None)
            if emb is not None and not st.meta.get("embedder"):
                st.meta["embedder"] = {"name": str(emb.name), "dim": int(emb.dim)}
            row0 = 0
            for rb in batches:
                if rb.num_rows == 0:
                    continue
                cols = plan.decode(rb, row0)
                V = cols["vectors"]
                if V is None:
                    _null_row(cols["texts"], plan.text, row0,
                              "without a vector column every text is embedded")
                    V = np.concatenate([w[2] for w in self._embedded_windows(
                        emb, cols["texts"], step, None)])
                what = (f"the vectors of column {plan.vector!r}" if plan.vector else
                        f"the vectors of the texts of column {plan.text!r}")
                out.append(self._add_rows(st, V, cols, floor, seen, row0, what))
                row0 += rb.num_rows
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def _add_rows(self, st, V, cols, floor, seen, row0, what, codes=None) -> np.ndarray:
        """Validate one batch of new concepts (vectors ``V`` or None with ``codes``;
        ``cols``: ids, keys, texts, metadata as :class:`InputPlan` decodes them) and
        stage it in the open transaction ``st``; returns the ids."""
        n = cols["n"]
        vd = self._meta["vector_dtype"]
        if V is not None:
            V = check_vector_rows(V, st.meta["dim"], vd == "float16", what)
            if V.shape[0] != n:      # pragma: no cover - the decoder keeps them equal
                raise DimensionError(f"{V.shape[0]} vectors for {n} rows")
        elif codes is None or vd is not None:
            raise InvalidArgumentError("vectors are needed")
        texts, keys, mds = cols["texts"], cols["keys"], cols["metadata"]
        if texts is not None:
            for j, t in enumerate(texts):
                if t is not None and not isinstance(t, str):
                    raise InvalidArgumentError(f"row {row0 + j}: a text must be a str or None, "
                                               f"not {type(t).__name__}")
            if all(t is None for t in texts):
                texts = None
        if mds is not None:
            try:
                mds = [check_metadata(m) for m in mds]
            except InvalidArgumentError as e:
                raise InvalidArgumentError(f"metadata of rows {row0}..{row0 + n - 1}: {e}") from None
            if all(m is None for m in mds):
                mds = None
        if keys is not None:
            if all(k is None for k in keys):
                keys = None
            else:
                self._check_new_keys(keys, st)
        ids = cols["ids"]
        if ids is None:
            ids = np.arange(st.next_id, st.next_id + n, dtype=np.int64)
        else:
            if n and int(ids.max()) >= _I64_MAX:
                raise InvalidArgumentError(f"column of ids: {int(ids.max())} leaves no id after "
                                           "it (ids must be below 2**63 - 1)")
            low = ids < floor
            if low.any():
                j = int(np.flatnonzero(low)[0])
                raise InvalidArgumentError(
                    f"row {row0 + j}: id {int(ids[j])} is below {floor}, the next id this "
                    "database gives out: ids are never reused, so explicit ids can only name "
                    "new concepts (leave id=None to have them numbered)")
            uniq = np.unique(ids)
            if len(uniq) != n or (seen and not seen.isdisjoint(uniq.tolist())):
                counts = {}
                for i in ids.tolist():
                    if i in seen or counts.get(i):
                        raise DuplicateKeyError(f"id {i} is given twice")
                    counts[i] = 1
            seen.update(ids.tolist())
        self._put_new_rows(st, ids, V, codes, keys, texts, mds)
        return ids

    def _put_new_rows(self, st, ids, V, codes, keys, texts, mds) -> None:
        """Stage new concepts with the ids ``ids`` (checked: new, unique) in the
        open transaction ``st``: what :meth:`add_vectors` stages, for any ids.
        ``codes`` (the PQ codes, when known) are stored as given; else they are
        computed as :meth:`add_vectors` does."""
        n = len(ids)
        vd = self._meta["vector_dtype"]
        if V is not None and not st.meta["dim"]:
            st.meta["dim"] = int(V.shape[1])
        if codes is None and st.pq is None and vd is None:
            self._codes_for(np.asarray(V, dtype=np.float32), st)     # trains on this batch
        encode = codes is None and st.pq is not None
        for s0 in range(0, n, BATCH):
            sl = slice(s0, s0 + BATCH)
            blk = vec = None
            if V is not None:
                if encode or (vd is not None and V.dtype != vd):
                    # through float32, as add_vectors converts
                    blk = np.ascontiguousarray(V[sl], dtype=np.float32)
                if vd is not None:
                    vec = V[sl] if V.dtype == vd else blk.astype(vd, copy=False)
            c = codes[sl] if codes is not None else (self._codes_for(blk, st) if encode else None)
            self._emit(("put", (ids[sl],), {
                "keys": keys[sl] if keys is not None else None,
                "texts": texts[sl] if texts is not None else None,
                "metadata": mds[sl] if mds is not None else None,
                "codes": c, "vectors": vec}))
        top = int(ids.max()) + 1 if n else 0
        st.next_id = max(st.next_id, top)
        st.meta["next_id"] = st.next_id
        # runs of consecutive ids above the last staged batch are batches (Bulk); the
        # other rows are staged one by one (what update() stages)
        breaks = np.flatnonzero(np.diff(ids) != 1) + 1
        for a, b in zip([0] + breaks.tolist(), breaks.tolist() + [n]):
            start = int(ids[a])
            last = st.bulks[-1] if st.bulks else None
            if last is None or start >= last.start + last.n:
                st.bulks.append(Bulk(start, b - a, V[a:b] if V is not None else None,
                                     keys[a:b] if keys is not None else None,
                                     texts[a:b] if texts is not None else None,
                                     mds[a:b] if mds is not None else None))
                st.starts.append(start)
            else:
                for j in range(a, b):
                    st.over[int(ids[j])] = (keys[j] if keys is not None else None,
                                            texts[j] if texts is not None else None,
                                            (mds[j] if mds is not None else None) or {},
                                            V[j] if V is not None else None)
        if keys is not None:
            for i, k in zip(ids.tolist(), keys):
                if k is not None:
                    st.keys[k] = i
