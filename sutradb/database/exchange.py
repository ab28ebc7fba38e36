"""Export and import: a database written out whole, and read back into an equal one.

:meth:`ExchangeMixin.export` writes every live concept (id, key, text, metadata,
vector, PQ codes), every link, the embedder spec, the options and the trained
index; :func:`from_export` builds a new database from it with the same ids, keys,
texts, metadata (exact values and types), vectors (bit for bit), codes, links,
quantizer and IVF lists, so searches return the same results.

Layouts
-------
A directory (``format="parquet"`` or ``"jsonl"``)::

    manifest.json        format, version, counts, dim, metric, next id, embedder spec,
                         options (vector_dtype, index, thresholds, pq_m...), index kind
    concepts.parquet     one row per concept, in storage order: the table of
                         Database.to_arrow (id, key, text, vector, codes, metadata
                         columns typed where uniform, JSON or msgpack where not, each
                         saying which in its field metadata)
    links.parquet        source, target, relation, weight
    index.msgpack        the index blob (quantizer, IVF parameters) when trained
    index.<name>.npy     its arrays (IVF centres, lists, list-ordered codes)

(``concepts.jsonl`` and ``links.jsonl`` with ``format="jsonl"``: one JSON object
per line, ``{"id", "key", "text", "metadata", "codes", "vector"}`` and
``{"source", "target", "relation", "weight"}``.)

Or one JSONL stream (a ``.jsonl`` file, or a text stream such as stdout): a header
line ``{"sutradb_export": manifest}``, an ``{"index": {...}}`` line when trained
(base64), the concept lines, then ``{"link": {...}}`` lines.

Concepts are in storage order (the order they were last written), which the
database keeps on import: the IVF lists name rows, and exact searches break ties
by row. Vectors are exact in both formats (float16 values print and parse back
exactly as JSON numbers). In JSONL, metadata that JSON cannot hold exactly
(bytes) is written as ``"metadata_msgpack"`` (base64 of msgpack) instead of
``"metadata"``; NaN and infinities are written as Python's ``json`` does.
"""

from __future__ import annotations

import base64
import json
import os
import shutil

import msgpack
import numpy as np

from ..errors import (DatabaseExistsError, EmbedderError, InvalidArgumentError)
from ..graph import check_relation
from ..index.vector import decode_index, encode_index
from ..storage import osio
from .arrowcols import InputPlan, has_bytes, require_pyarrow
from .ivflists import remap_lists
from .options import BATCH, MEMORY, STORED

__all__ = ["ExchangeMixin", "from_export", "is_export", "EXPORT_FORMAT", "EXPORT_VERSION"]

EXPORT_FORMAT = "sutradb-export"
EXPORT_VERSION = 1
#: Drift statistics of the meta carried over (index_info's ``drift``).
_STATS = ("pq_added_sq", "pq_added_n", "ivf_added_sq", "ivf_added_n")
#: Options of :func:`sutradb.open` an import may set (the stored ones come from the export).
_OPEN_OPTIONS = ("durability", "cache_size", "progress", "embedder", "batch_size", "timeout")
_JSONL_SUFFIXES = (".jsonl", ".ndjson")


def _is_stream(x) -> bool:
    return hasattr(x, "write") or hasattr(x, "readline")


def _fsync(path) -> None:
    """Flush a file to disk (through :mod:`sutradb.storage.osio`, the one module that
    knows the platforms)."""
    fd = osio.open_file(path, os.O_RDONLY)
    try:
        osio.sync_file(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- export

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .state import DatabaseState as _Base
else:
    _Base = object


class ExchangeMixin(_Base):
    """``export`` of :class:`~sutradb.database.Database` and the restore behind
    :func:`from_export`; a mixin (reads under the read lock, the restore in one
    transaction)."""

    def export(self, path, *, format: str | None = None) -> dict:
        """Write the whole database out: concepts, links, embedder spec, options and
        index, so that :func:`sutradb.from_export` rebuilds an equal database.

        Parameters
        ----------
        path : str, os.PathLike or a text stream
            A directory (created; it must not exist, or be empty), a ``.jsonl`` file
            (created), or an open text stream (e.g. ``sys.stdout``): one JSONL stream.
        format : {"parquet", "jsonl"}, optional
            The tables of a directory: Parquet (needs pyarrow; the default for a
            directory) or JSONL. A file or stream is always JSONL.

        Returns
        -------
        dict
            The manifest (counts, dim, metric, embedder, options, index kind...).

        Raises
        ------
        MissingDependencyError
            Parquet without pyarrow.
        InvalidArgumentError
            The directory exists and is not empty, or a bad ``format``.

        Notes
        -----
        The export reads one committed state: it holds the read lock while it
        writes (writers of this process wait; other processes are not blocked).

        Examples
        --------
        >>> import numpy as np, sutradb, tempfile, os
        >>> db = sutradb.open(":memory:", dim=2)
        >>> a, b = db.add_vectors(np.eye(2, dtype="float32"), keys=["a", "b"])
        >>> db.link(a, b, "next")
        >>> out = os.path.join(tempfile.mkdtemp(), "backup.jsonl")
        >>> db.export(out)["concepts"]
        2
        >>> db2 = sutradb.from_export(out, ":memory:")
        >>> db2.get("b").id, db2.links()
        (1, [(0, 1, 'next', 1.0)])
        """
        self._check_open()
        stream = _is_stream(path)
        single = stream or str(os.fspath(path)).lower().endswith(_JSONL_SUFFIXES)
        if format is None:
            format = "jsonl" if single else "parquet"
        if format not in ("parquet", "jsonl"):
            raise InvalidArgumentError(f"format must be 'parquet' or 'jsonl', not {format!r}")
        if single and format != "jsonl":
            raise InvalidArgumentError("a Parquet export is a directory (concepts.parquet, "
                                       "links.parquet, manifest.json): give a directory path")
        pa = require_pyarrow() if format == "parquet" else None
        if stream:
            with self._read:
                return self._write_stream(path)
        path = os.fspath(path)
        if single:
            return self._write_file(path)
        if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
            raise InvalidArgumentError(f"{path!r} exists and is not an empty directory")
        # written beside, synced, then renamed into place: a crash leaves the whole
        # export or none of it
        tmp = f"{os.path.abspath(path).rstrip(os.sep)}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
        os.mkdir(tmp)
        try:
            with self._read:
                man = self._write_dir(tmp, format, pa)
            for name in os.listdir(tmp):
                _fsync(os.path.join(tmp, name))
            osio.sync_dir(tmp)
            if os.path.isdir(path):
                os.rmdir(path)
            osio.replace_file(tmp, path)
            osio.sync_dir(os.path.dirname(os.path.abspath(path)))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return man

    def _write_file(self, path) -> dict:
        if os.path.exists(path):
            raise InvalidArgumentError(f"{path!r} exists")
        tmp = f"{path}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            with open(tmp, "w", encoding="utf-8") as f, self._read:
                man = self._write_stream(f)
            _fsync(tmp)
            osio.replace_file(tmp, path)
            osio.sync_dir(os.path.dirname(os.path.abspath(path)))
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        return man

    def _export_state(self):
        """``(rows, manifest, index or None, links)`` of the committed state (under
        the read lock): ``index`` is ``(blob, arrays)`` with the IVF lists renumbered
        to the export's row order."""
        import sutradb
        s = self._store
        rows = np.flatnonzero(s.live)
        stored = s.meta.get("sutradb") or self._meta
        pq = self._index.pq
        index = None
        kind = "flat"
        if pq is not None:
            part = self._index.ivf
            if part is not None:
                part = remap_lists(pq, part, rows)
            index = encode_index(pq, part)
            kind = "ivf" if part is not None else "pq"
        links = s.all_links()
        man = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION,
               "sutradb": sutradb.__version__, "order": "storage",
               "concepts": int(len(rows)), "links": len(links),
               "dim": self._meta["dim"] or None, "metric": self._meta["metric"],
               "next_id": int(self._meta["next_id"]),
               "embedder": stored.get("embedder"),
               "options": {**{k: stored.get(k, self._meta.get(k)) for k in STORED},
                           "text_tokenizer": s.text_spec},
               "stats": {k: stored[k] for k in _STATS if k in stored},
               "index": {"kind": kind}}
        return rows, man, index, links

    def _write_dir(self, d, format, pa) -> dict:
        rows, man, index, links = self._export_state()
        s = self._store
        man["files"] = {"concepts": f"concepts.{format}", "links": f"links.{format}"}
        if index is not None:
            blob, arrays = index
            with open(os.path.join(d, "index.msgpack"), "wb") as f:
                f.write(blob)
            man["index"]["blob"] = "index.msgpack"
            man["index"]["arrays"] = {}
            for name, a in arrays.items():
                fn = f"index.{name}.npy"
                np.save(os.path.join(d, fn), np.ascontiguousarray(a), allow_pickle=False)
                man["index"]["arrays"][name] = fn
        cpath = os.path.join(d, man["files"]["concepts"])
        lpath = os.path.join(d, man["files"]["links"])
        if format == "parquet":
            import pyarrow.parquet as pq
            has_vectors = self._meta["vector_dtype"] is not None and bool(self._meta["dim"])
            cols = ["id", "key", "text"] + (["vector"] if has_vectors else []) \
                + (["codes"] if index is not None else []) + ["metadata"]
            # two passes over the records: the metadata columns' types, then the rows
            plan = self._arrow_plan(pa, cols, "stored", (
                r.metadata for s0 in range(0, len(rows), BATCH)
                for r in s.records_at(rows[s0:s0 + BATCH])), len(rows))
            # dictionaries and min/max statistics of millions of vector components cost
            # most of the write and read time and help nobody: PLAIN for those
            plain = [c for c in plan[1].names if c not in ("vector", "codes")]
            with pq.ParquetWriter(cpath, plan[1], use_dictionary=plain,
                                  write_statistics=plain) as w:
                for s0 in range(0, len(rows), BATCH):
                    blk = rows[s0:s0 + BATCH]
                    w.write_batch(self._arrow_batch(pa, plan, blk, s.records_at(blk)))
            lt = pa.table({"source": pa.array([x[0] for x in links], pa.int64()),
                           "target": pa.array([x[1] for x in links], pa.int64()),
                           "relation": pa.array([x[2] for x in links], pa.string()),
                           "weight": pa.array([x[3] for x in links], pa.float64())})
            pq.write_table(lt, lpath)
        else:
            with open(cpath, "w", encoding="utf-8") as f:
                self._write_concept_lines(f, rows, index is not None)
            with open(lpath, "w", encoding="utf-8") as f:
                for a, b, rel, w in links:
                    f.write(json.dumps({"source": a, "target": b, "relation": rel, "weight": w},
                                       ensure_ascii=False) + "\n")
        with open(os.path.join(d, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(man, f, indent=2)
            f.write("\n")
        return man

    def _write_stream(self, f) -> dict:
        rows, man, index, links = self._export_state()
        f.write(json.dumps({"sutradb_export": man}) + "\n")
        if index is not None:
            blob, arrays = index
            f.write(json.dumps({"index": {
                "blob": base64.b64encode(blob).decode(),
                "arrays": {k: {"dtype": np.asarray(a).dtype.str, "shape": list(np.shape(a)),
                               "data": base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()}
                           for k, a in arrays.items()}}}) + "\n")
        self._write_concept_lines(f, rows, index is not None)
        for a, b, rel, w in links:
            f.write(json.dumps({"link": {"source": a, "target": b, "relation": rel, "weight": w}},
                               ensure_ascii=False) + "\n")
        return man

    def _write_concept_lines(self, f, rows, with_codes):
        s = self._store
        V = s.vectors
        C = s.codes if with_codes else None
        for s0 in range(0, len(rows), BATCH):
            blk = rows[s0:s0 + BATCH]
            vecs = None
            if V is not None and V.dtype == np.float16:
                # every float16 has its JSON number precomputed (what json.dumps writes)
                vecs = _f16_json()[np.asarray(V[blk]).view(np.uint16)]
            self._write_concept_block(f, blk, s.records_at(blk), V, vecs, C)

    @staticmethod
    def _write_concept_block(f, rows, recs, V, vecs, C):
        for j, (r, rec) in enumerate(zip(rows.tolist(), recs)):
            d = {"id": rec.id, "key": rec.key, "text": rec.text}
            md = rec.metadata or {}
            if has_bytes(md):                   # JSON cannot hold bytes
                d["metadata_msgpack"] = base64.b64encode(
                    msgpack.packb(md, use_bin_type=True)).decode()
            else:
                d["metadata"] = md
            if C is not None:
                d["codes"] = C[r].tolist()
            line = json.dumps(d, ensure_ascii=False)
            if vecs is not None:
                line = f'{line[:-1]}, "vector": [{", ".join(vecs[j])}]}}'
            elif V is not None:
                line = f'{line[:-1]}, "vector": {json.dumps(V[r].tolist())}}}'
            f.write(line + "\n")

    # ------------------------------------------------------------------ import

    def _restore_from(self, reader) -> None:
        """Fill this new, empty database from an export ``reader``, in one
        transaction: the rows with their ids and codes, the index, the links, the
        embedder spec, the id counter and the drift statistics."""
        man = reader.manifest
        if self._store.n_rows or len(self):
            raise InvalidArgumentError("an export is restored into a new, empty database")
        with self.transaction():
            st = self._staged
            spec = man.get("embedder")
            if spec:
                if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                    raise InvalidArgumentError(f"{reader.where('manifest')}: bad embedder spec")
                have = st.meta.get("embedder")
                if have and have.get("name") != spec["name"]:
                    raise EmbedderError(f"the export was made with the embedder {spec['name']!r}, "
                                        f"not {have.get('name')!r}")
                st.meta["embedder"] = {"name": spec["name"], "dim": int(spec.get("dim") or 0)}
            for k, v in (man.get("stats") or {}).items():
                if k in _STATS and isinstance(v, (int, float)) and not isinstance(v, bool):
                    st.meta[k] = v
            idx = reader.index()
            code_size = None
            if idx is not None:
                blob, arrays = idx
                pq, part = decode_index(blob, arrays, reader.where("index"),
                                        int(man["concepts"]))
                if pq.dim != self._meta["dim"] or pq.metric != self._meta["metric"]:
                    raise InvalidArgumentError(
                        f"{reader.where('index')}: the quantizer ({pq.dim}-d, {pq.metric}) does "
                        f"not match the export ({self._meta['dim']}-d, {self._meta['metric']})")
                st.pq = pq
                st.index_blob = bytes(blob)
                st.index_arrays = dict(arrays) if part is not None else None
                code_size = pq.code_size
            floor, seen, row0 = st.next_id, set(), 0
            vd = self._meta["vector_dtype"]
            for cols in reader.concepts():
                codes = cols["codes"]
                if code_size is not None:
                    if codes is None:
                        raise InvalidArgumentError(f"{reader.where('concepts')}: the codes are "
                                                   "missing (the export has an index)")
                    if codes.shape[1] != code_size:
                        raise InvalidArgumentError(
                            f"{reader.where('concepts')}: codes of {codes.shape[1]} bytes, the "
                            f"quantizer's are {code_size}")
                else:
                    codes = None
                if cols["ids"] is None:
                    raise InvalidArgumentError(f"{reader.where('concepts')}: no ids")
                V = cols["vectors"]
                if vd is not None and V is None:
                    raise InvalidArgumentError(f"{reader.where('concepts')}: the vectors are "
                                               "missing")
                self._add_rows(st, V if vd is not None else None, cols, floor, seen, row0,
                               f"{reader.where('concepts')}: the vectors", codes=codes)
                row0 += cols["n"]
            if row0 != man["concepts"]:
                raise InvalidArgumentError(f"{reader.where('concepts')}: {row0} concepts, the "
                                           f"manifest says {man['concepts']}")
            nl = 0
            for src, dst, rels, w in reader.links():
                for x in (src, dst):
                    bad = [i for i in x.tolist() if i not in seen]
                    if bad:
                        raise InvalidArgumentError(f"{reader.where('links')}: a link names id "
                                                   f"{bad[0]}, which the export does not hold")
                for r in set(rels):
                    check_relation(r)
                self._emit(("link", (src, dst, rels, w), {}))
                st.links.update(zip(zip(src.tolist(), dst.tolist(), rels), w.tolist()))
                nl += len(src)
            if nl != man.get("links", nl):
                raise InvalidArgumentError(f"{reader.where('links')}: {nl} links, the manifest "
                                           f"says {man['links']}")
            nxt = man.get("next_id")
            if not isinstance(nxt, int) or isinstance(nxt, bool) or nxt < st.next_id:
                raise InvalidArgumentError(f"{reader.where('manifest')}: bad next_id {nxt!r}")
            st.next_id = nxt
            st.meta["next_id"] = nxt


_F16_JSON = None


def _f16_json():
    """The JSON text of every float16 value, indexed by its bits (what
    ``json.dumps(float(x))`` writes: Python's shortest repr, exact)."""
    global _F16_JSON
    if _F16_JSON is None:
        vals = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
        _F16_JSON = np.array([json.dumps(float(x)) for x in vals.tolist()], dtype=object)
    return _F16_JSON


# --------------------------------------------------------------------------- readers

def _check_manifest(man, where):
    if not isinstance(man, dict) or man.get("format") != EXPORT_FORMAT:
        raise InvalidArgumentError(f"{where}: not a sutradb export")
    if man.get("version") != EXPORT_VERSION:
        raise InvalidArgumentError(f"{where}: unsupported export version {man.get('version')!r}")
    for k, t in (("concepts", int), ("metric", str), ("options", dict), ("next_id", int)):
        if not isinstance(man.get(k), t):
            raise InvalidArgumentError(f"{where}: the manifest has no valid {k!r}")
    if man.get("dim") is not None and not isinstance(man["dim"], int):
        raise InvalidArgumentError(f"{where}: the manifest has no valid 'dim'")
    return man


def _concept_cols(lines, where, first_line) -> dict:
    """The columns (as :class:`~sutradb.database.arrow.InputPlan` decodes them) of
    JSONL concept objects."""
    n = len(lines)
    ids = np.empty(n, np.int64)
    keys, texts, mds, vecs, codes = [], [], [], [], []
    for j, d in enumerate(lines):
        at = f"{where}:{first_line + j}"
        if not isinstance(d, dict) or not isinstance(d.get("id"), int) or isinstance(d["id"], bool):
            raise InvalidArgumentError(f"{at}: not a concept (an object with an integer 'id')")
        try:
            ids[j] = d["id"]
        except OverflowError:
            raise InvalidArgumentError(f"{at}: id beyond the int64 range") from None
        k, t = d.get("key"), d.get("text")
        if not (k is None or isinstance(k, str)) or not (t is None or isinstance(t, str)):
            raise InvalidArgumentError(f"{at}: key and text must be strings or null")
        keys.append(k)
        texts.append(t)
        if "metadata_msgpack" in d:
            try:
                md = msgpack.unpackb(base64.b64decode(d["metadata_msgpack"]), raw=False,
                                     strict_map_key=True)
            except (ValueError, TypeError, msgpack.UnpackException) as e:
                raise InvalidArgumentError(f"{at}: bad metadata_msgpack ({e})") from None
        else:
            md = d.get("metadata")
        if md is not None and not isinstance(md, dict):
            raise InvalidArgumentError(f"{at}: metadata must be an object")
        mds.append(md or None)
        vecs.append(d.get("vector"))
        codes.append(d.get("codes"))
    out = {"n": n, "ids": ids, "keys": keys, "texts": texts, "metadata": mds,
           "vectors": None, "codes": None}
    for name, vals, dt in (("vectors", vecs, np.float64), ("codes", codes, np.int64)):
        have = [v is not None for v in vals]
        if not any(have):
            continue
        if not all(have):
            j = have.index(False)
            raise InvalidArgumentError(f"{where}:{first_line + j}: no {name[:-1]}")
        try:
            a = np.array(vals, dtype=dt)
        except (ValueError, TypeError, OverflowError) as e:
            raise InvalidArgumentError(f"{where}:{first_line}..{first_line + n - 1}: {name} "
                                       f"are not lists of numbers of one length ({e})") from None
        if a.ndim != 2:
            raise InvalidArgumentError(f"{where}:{first_line}..: {name} of different lengths")
        if name == "codes":
            if a.size and (a.min() < 0 or a.max() > 255):
                raise InvalidArgumentError(f"{where}:{first_line}..: codes must be bytes (0..255)")
            a = a.astype(np.uint8)
        out[name] = a
    return out


def _link_cols(objs, where, first_line):
    src, dst, rels, w = [], [], [], []
    for j, d in enumerate(objs):
        try:
            a, b, r, x = d["source"], d["target"], d["relation"], d.get("weight", 1.0)
            if any(not isinstance(i, int) or isinstance(i, bool) for i in (a, b)) \
                    or not isinstance(r, str) or isinstance(x, bool) \
                    or not isinstance(x, (int, float)):
                raise TypeError
        except (KeyError, TypeError):
            raise InvalidArgumentError(f"{where}:{first_line + j}: not a link (source, target, "
                                       "relation, weight)") from None
        src.append(a)
        dst.append(b)
        rels.append(r)
        w.append(float(x))
    return (np.array(src, np.int64), np.array(dst, np.int64), rels, np.array(w, np.float64))


def _json_line(line, where, n):
    try:
        return json.loads(line)
    except ValueError as e:
        raise InvalidArgumentError(f"{where}:{n}: not JSON ({e})") from None


class _DirReader:
    """An export directory."""

    def __init__(self, path):
        self.path = path
        mp = os.path.join(path, "manifest.json")
        try:
            with open(mp, encoding="utf-8") as f:
                man = json.load(f)
        except ValueError as e:
            raise InvalidArgumentError(f"{mp}: not JSON ({e})") from None
        self.manifest = _check_manifest(man, mp)
        files = man.get("files")
        if not isinstance(files, dict):
            raise InvalidArgumentError(f"{mp}: the manifest names no files")
        self.files = {}
        for k in ("concepts", "links"):
            fn = files.get(k)
            if not isinstance(fn, str) or os.path.basename(fn) != fn \
                    or not fn.endswith((".parquet", ".jsonl")):
                raise InvalidArgumentError(f"{mp}: bad file name for {k}: {fn!r}")
            self.files[k] = os.path.join(path, fn)

    def where(self, what):
        if what == "manifest":
            return os.path.join(self.path, "manifest.json")
        if what == "index":
            return os.path.join(self.path, "index.msgpack")
        return self.files[what]

    def index(self):
        ix = self.manifest.get("index") or {}
        if not ix.get("blob"):
            return None
        names = [ix["blob"]] + list((ix.get("arrays") or {}).values())
        for fn in names:
            if not isinstance(fn, str) or os.path.basename(fn) != fn:
                raise InvalidArgumentError(f"{self.where('manifest')}: bad index file {fn!r}")
        with open(os.path.join(self.path, ix["blob"]), "rb") as f:
            blob = f.read()
        arrays = {}
        for name, fn in (ix.get("arrays") or {}).items():
            try:
                arrays[name] = np.load(os.path.join(self.path, fn), allow_pickle=False)
            except ValueError as e:
                raise InvalidArgumentError(f"{os.path.join(self.path, fn)}: {e}") from None
        return blob, arrays

    def concepts(self):
        p = self.files["concepts"]
        if p.endswith(".jsonl"):
            yield from _jsonl_batches(p, _concept_cols)
            return
        pa = require_pyarrow()
        import pyarrow.parquet as pq
        pf = pq.ParquetFile(p)
        names = pf.schema_arrow.names
        plan = InputPlan(pa, pf.schema_arrow, "text" if "text" in names else None,
                          "vector" if "vector" in names else None,
                          "key" if "key" in names else None, "id", "rest",
                          codes="codes" if "codes" in names else None)
        row0 = 0
        for rb in pf.iter_batches(batch_size=BATCH):
            yield plan.decode(rb, row0)
            row0 += rb.num_rows

    def links(self):
        p = self.files["links"]
        if p.endswith(".jsonl"):
            yield from _jsonl_batches(p, _link_cols)
            return
        require_pyarrow()
        import pyarrow.parquet as pq
        pf = pq.ParquetFile(p)
        need = ["source", "target", "relation", "weight"]
        if [n for n in need if n not in pf.schema_arrow.names]:
            raise InvalidArgumentError(f"{p}: the links need the columns {need}")
        for rb in pf.iter_batches(batch_size=BATCH, columns=need):
            cols = [rb.column(n) for n in need]
            if any(c.null_count for c in cols):
                raise InvalidArgumentError(f"{p}: a link has a null field")
            yield (np.asarray(cols[0].to_numpy(zero_copy_only=False), np.int64),
                   np.asarray(cols[1].to_numpy(zero_copy_only=False), np.int64),
                   cols[2].to_pylist(),
                   np.asarray(cols[3].to_numpy(zero_copy_only=False), np.float64))


def _jsonl_batches(path, convert):
    with open(path, encoding="utf-8") as f:
        buf, first = [], 1
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if not buf:
                first = n
            buf.append(_json_line(line, path, n))
            if len(buf) >= BATCH:
                yield convert(buf, path, first)
                buf = []
        if buf:
            yield convert(buf, path, first)


class _StreamReader:
    """A single JSONL stream: header, index, concepts, links, in that order."""

    def __init__(self, f, name):
        self.f, self.name, self.n = f, name, 0
        self.pending = None
        head = self._next()
        if head is None or not isinstance(head, dict) or "sutradb_export" not in head:
            raise InvalidArgumentError(f"{name}: not a sutradb export (the first line is not "
                                       "its header)")
        self.manifest = _check_manifest(head["sutradb_export"], name)
        self._index = None
        nxt = self._next()
        if isinstance(nxt, dict) and "index" in nxt:
            self._index = nxt["index"]
            nxt = self._next()
        self.pending = nxt

    def _next(self):
        while True:
            line = self.f.readline()
            if not line:
                return None
            self.n += 1
            if line.strip():
                return _json_line(line, self.name, self.n)

    def where(self, what):
        return self.name

    def index(self):
        ix = self._index
        if ix is None:
            return None
        try:
            blob = base64.b64decode(ix["blob"])
            arrays = {}
            for k, a in ix.get("arrays", {}).items():
                dt = np.dtype(a["dtype"])
                if dt.kind not in "iuf":
                    raise ValueError(f"dtype {dt}")
                arrays[k] = np.frombuffer(base64.b64decode(a["data"]), dtype=dt).reshape(
                    [int(x) for x in a["shape"]])
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidArgumentError(f"{self.name}: bad index line ({e})") from None
        return blob, arrays

    def concepts(self):
        buf, first = [], self.n
        while isinstance(self.pending, dict) and "link" not in self.pending:
            if not buf:
                first = self.n
            buf.append(self.pending)
            self.pending = self._next()
            if len(buf) >= BATCH:
                yield _concept_cols(buf, self.name, first)
                buf = []
        if buf:
            yield _concept_cols(buf, self.name, first)

    def links(self):
        buf, first = [], self.n
        while self.pending is not None:
            d = self.pending
            if not isinstance(d, dict) or "link" not in d:
                raise InvalidArgumentError(f"{self.name}:{self.n}: expected a link line")
            if not buf:
                first = self.n
            buf.append(d["link"])
            self.pending = self._next()
            if len(buf) >= BATCH:
                yield _link_cols(buf, self.name, first)
                buf = []
        if buf:
            yield _link_cols(buf, self.name, first)


def is_export(source) -> bool:
    """Whether ``source`` (a path) is a sutradb export: a directory with a
    ``manifest.json`` of the export format, or a JSONL file whose first line is an
    export header."""
    p = os.fspath(source)
    if os.path.isdir(p):
        return os.path.isfile(os.path.join(p, "manifest.json"))
    if os.path.isfile(p):
        try:
            with open(p, encoding="utf-8") as f:
                head = json.loads(f.readline())
        except (ValueError, OSError, UnicodeDecodeError):
            return False
        return isinstance(head, dict) and "sutradb_export" in head
    return False


def from_export(source, path, **options):
    """Build a new database from an export (:meth:`Database.export`, ``sutradb
    export``): same ids, keys, texts, metadata, vectors, codes, links, embedder
    spec, options and index.

    Parameters
    ----------
    source : str, os.PathLike or a text stream
        An export directory, an export ``.jsonl`` file, or a stream of one.
    path : str or os.PathLike
        The new database (must not exist), or ``":memory:"``.
    **options
        ``durability``, ``cache_size``, ``progress``, ``batch_size``, ``timeout``,
        ``embedder`` (an object or spec of the same name as the export's, to load
        it from somewhere else): the stored options come from the export.

    Returns
    -------
    Database
        Open for writing; close it (or use it in a ``with`` block).

    Raises
    ------
    DatabaseExistsError
        ``path`` exists.
    InvalidArgumentError
        The export is damaged or incomplete (the message names the file and line).
        Nothing is left at ``path``.
    """
    from .core import open as open_db
    bad = set(options) - set(_OPEN_OPTIONS)
    if bad:
        raise InvalidArgumentError(f"from_export takes {_OPEN_OPTIONS}, not {sorted(bad)} (the "
                                   "stored options come from the export)")
    if _is_stream(source):
        reader = _StreamReader(source, getattr(source, "name", "<stream>"))
    else:
        src = os.fspath(source)
        if os.path.isdir(src):
            reader = _DirReader(src)
        elif os.path.isfile(src):
            f = open(src, encoding="utf-8")
            try:
                reader = _StreamReader(f, src)
            except BaseException:
                f.close()
                raise
        else:
            raise FileNotFoundError(f"no export at {src!r}")
    man = reader.manifest
    memory = isinstance(path, str) and path == MEMORY
    if not memory and os.path.exists(os.fspath(path)):
        raise DatabaseExistsError(f"{os.fspath(path)!r} exists (an export is imported into a "
                                  "new database)")
    opts = {k: v for k, v in man["options"].items() if k in STORED or k == "text_tokenizer"}
    timeout = options.pop("timeout", 0.0)
    opts.update(options)
    db = None
    try:
        db = open_db(path, "a" if memory else "x", dim=man.get("dim"), metric=man["metric"],
                     timeout=timeout, **opts)
        db._restore_from(reader)
    except BaseException:
        if db is not None:
            db.close()
            if not memory:
                shutil.rmtree(os.fspath(path), ignore_errors=True)
        raise
    finally:
        f = getattr(reader, "f", None)
        if f is not None and not _is_stream(source):
            f.close()
    return db
