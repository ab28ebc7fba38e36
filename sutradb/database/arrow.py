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
(``b"sutradb.metadata"``: JSON ``{"field", "encoding", "kind", "nulls"}``), so
:meth:`ArrowMixin.add_arrow` restores the exact Python values, bools and ints and
nested dicts included. A field named like a fixed column (``id``, ``key``,
``text``, ``vector``, ``codes``, ``metadata``) becomes the column ``metadata.<name>``.

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

import numpy as np

from ..errors import DimensionError, DuplicateKeyError, InvalidArgumentError
from .arrowcols import (ATTRS_KEY, FIELD_KEY, FIXED_COLUMNS, I64_MAX, SCHEMA_KEY, InputPlan,
                        MetadataField, encode_metadata, input_batches, metadata_plan,
                        require_pandas, require_pyarrow, vector_array)
from .options import BATCH, DefaultStr
from .transactions import Bulk
from .validation import check_metadata, check_vector_rows, is_id

__all__ = ["ArrowMixin", "vector_array"]

#: Defaults of add_arrow: used when the table has such a column
_DEFAULT_TEXT, _DEFAULT_VECTOR = DefaultStr("text"), DefaultStr("vector")
_DEFAULT_KEY = DefaultStr("key")


def _null_row(values, what, row0, why):
    for j, t in enumerate(values):
        if t is None:
            raise InvalidArgumentError(f"column {what!r} is null at row {row0 + j} ({why})")


# --------------------------------------------------------------------------- the mixin

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .state import DatabaseState as _Base
else:
    _Base = object


class ArrowMixin(_Base):
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
                raise InvalidArgumentError(f"metadata of rows {row0}..{row0 + n - 1}: "
                                           f"{e}") from None
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
            if n and int(ids.max()) >= I64_MAX:
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
