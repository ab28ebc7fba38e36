"""Concept writes of a :class:`~sutradb.database.Database`: ``add_vectors``, ``add``
(embedding in windows), ``update``, ``upsert`` and ``delete``.

Every write validates all of its arguments before it stages anything, then stages
into the current transaction (or an automatic one that commits when the call
returns), so a bad argument stores nothing. Id and key resolution and the reads live
in :mod:`.concepts`; the staging and the commit in :mod:`.transactions`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from ..errors import (DimensionError, DuplicateKeyError, InvalidArgumentError, NotFoundError,
                      SutraError)
from .options import BATCH, UNSET
from .progress import progress_bar
from .transactions import Bulk, Staged
from .validation import check_metadata, check_vector_rows, seq_arg
from .. import embedders

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy.typing as npt

    from ..embedders import Embedder
    from .progress import ProgressArg
    from .state import DatabaseState as _Base
    from .state import IdsOrKeys, Where
else:
    _Base = object

__all__ = ["WritesMixin"]


class WritesMixin(_Base):
    """The write methods of :class:`~sutradb.database.Database` (a mixin: they resolve ids and keys through :class:`~.concepts.ConceptsMixin` and stage through :class:`~.transactions.TransactionsMixin`)."""

    def add_vectors(self, vectors: npt.ArrayLike, *, texts: Sequence[str | None] | None = None,
                    metadata: Sequence[dict[str, Any] | None] | None = None,
                    keys: Sequence[str | None] | None = None) -> np.ndarray:
        """Add concepts from their vectors.

        Parameters
        ----------
        vectors : (n, dim) array_like
            Finite numbers; the first vectors of a database fix its ``dim``.
        texts : sequence of (str or None), optional
            One per vector (indexed for :meth:`find_words` and ``$text`` filters).
        metadata : sequence of (dict or None), optional
            One per vector; msgpack types with str keys.
        keys : sequence of (str or None), optional
            Unique keys (a :class:`~sutradb.errors.DuplicateKeyError` if one is taken).

        Returns
        -------
        (n,) int64 ndarray
            The new ids (increasing, never reused).

        Raises
        ------
        DimensionError, InvalidArgumentError, DuplicateKeyError, ReadOnlyError, ClosedError
            Nothing is added.
        """
        self._check_writable()
        with self._Auto(self) as st:
            V = check_vector_rows(vectors, st.meta["dim"], self._meta["vector_dtype"] == "float16")
            n = V.shape[0]
            texts = seq_arg(texts, n, "texts")
            metadata = seq_arg(metadata, n, "metadata")
            keys = seq_arg(keys, n, "keys")
            if n == 0:
                return np.zeros(0, np.int64)
            if texts is not None:
                for t in texts:
                    if t is not None and not isinstance(t, str):
                        raise InvalidArgumentError(f"a text must be a str or None, not {type(t).__name__}")
            if metadata is not None:
                metadata = [check_metadata(m) for m in metadata]
                if all(m is None for m in metadata):
                    metadata = None
            if keys is not None:
                self._check_new_keys(keys, st)
            if not st.meta["dim"]:
                st.meta["dim"] = int(V.shape[1])
            if st.pq is None and self._meta["vector_dtype"] is None:
                self._codes_for(np.asarray(V, dtype=np.float32), st)   # trains on this batch
            start = st.next_id
            ids = np.arange(start, start + n, dtype=np.int64)
            vd = self._meta["vector_dtype"]
            for s0 in range(0, n, BATCH):
                sl = slice(s0, s0 + BATCH)
                # float32 only where the quantizer needs it; vectors already in the
                # stored dtype go to the store as they are (it takes its own copy)
                blk = V[sl]
                codes = (self._codes_for(np.ascontiguousarray(blk, dtype=np.float32), st)
                         if st.pq is not None else None)
                if vd is not None and blk.dtype != vd:
                    blk = np.ascontiguousarray(blk, dtype=np.float32).astype(vd)
                kw = {"keys": keys[sl] if keys is not None else None,
                      "texts": texts[sl] if texts is not None else None,
                      "metadata": metadata[sl] if metadata is not None else None,
                      "codes": codes,
                      "vectors": blk if vd is not None else None}
                self._emit(("put", (ids[sl],), kw))
            st.next_id = start + n
            st.meta["next_id"] = st.next_id
            st.bulks.append(Bulk(start, n, V, keys, texts, metadata))
            st.starts.append(start)
            if keys is not None:
                for j, k in enumerate(keys):
                    if k is not None:
                        st.keys[k] = start + j
            return ids

    def add(self, texts: Sequence[str], *, metadata: Sequence[dict[str, Any] | None] | None = None,
            keys: Sequence[str | None] | None = None, batch_size: int | None = None,
            progress: ProgressArg = None) -> np.ndarray:
        """Learn concepts from texts: embed them with the database's embedder (in
        batches) and add them, all in one transaction.

        Parameters
        ----------
        texts : sequence of str
        metadata, keys : sequences, optional
            As in :meth:`add_vectors`.
        batch_size : int, optional
            Texts per embedder call (default: the ``batch_size`` option, 256).
            Identical texts in a call are embedded once. Texts go in windows of 16
            batches; inside a window they are embedded longest first, so that each
            batch pads little (what sentence-transformers does inside one call), and
            each window is stored as soon as it is embedded. Without a progress bar a
            window is one embedder call.
        progress : bool or callable, optional
            A progress bar (count, throughput, ETA) on stderr; by default shown when
            stderr is a terminal and the call has more than one batch. A callable is
            called as ``progress(done, total)`` after each batch.

        Returns
        -------
        (n,) int64 ndarray
            The new ids. The call is one transaction: on any error nothing is added.

        Raises
        ------
        EmbedderError
            No embedder (give ``embedder=`` to :func:`open`), or it failed.
        """
        if isinstance(texts, str):
            raise InvalidArgumentError("add takes a list of texts (wrap a single text in a list)")
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise InvalidArgumentError(f"texts must be str, not {type(t).__name__}")
        n = len(texts)
        metadata = None if metadata is None else seq_arg(metadata, n, "metadata")
        keys = None if keys is None else seq_arg(keys, n, "keys")
        emb = self._require_embedder()
        step = int(batch_size or self._batch_size)
        if step < 1:
            raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size!r}")
        bar = progress_bar(progress, n, step)
        out = np.empty(n, dtype=np.int64)
        try:
            with self.transaction():
                with self._Auto(self) as st:
                    if st is not None and not st.meta.get("embedder"):
                        st.meta["embedder"] = {"name": str(emb.name), "dim": int(emb.dim)}
                for w0, chunk, V in self._embedded_windows(emb, texts, step, bar):
                    w1 = w0 + len(chunk)
                    out[w0:w1] = self.add_vectors(
                        V, texts=chunk,
                        metadata=None if metadata is None else metadata[w0:w1],
                        keys=None if keys is None else keys[w0:w1])
                    if bar is not None:
                        bar(w1, n)
        finally:
            if bar is not None:
                bar(None, n)
        return out

    @staticmethod
    def _embedded_windows(emb: Embedder, texts: Sequence[str], step: int,
                          bar: Callable[[int | None, int], object] | None
                          ) -> Iterator[tuple[int, Sequence[str], np.ndarray]]:
        """``(start, texts, vectors)`` of consecutive windows of 16 batches of
        ``texts``: inside a window the distinct texts are embedded in order of
        length (as sentence-transformers does inside one call), so batches carry
        little padding; without a progress bar a window is one embedder call."""
        n = len(texts)
        window = 16 * step
        for w0 in range(0, n, window):
            chunk = texts[w0:w0 + window]
            uniq = list(dict.fromkeys(chunk))
            order = sorted(range(len(uniq)), key=lambda j: -len(uniq[j]))
            Vu = np.empty((len(uniq), emb.dim), dtype=np.float32)
            bstep = step if bar is not None else max(1, len(order))
            for b0 in range(0, len(order), bstep):
                sel = order[b0:b0 + bstep]
                Vu[sel] = embedders.embed(emb, [uniq[j] for j in sel])
                if bar is not None and b0 + bstep < len(order):
                    # texts of the window covered so far, in proportion
                    bar(w0 + (b0 + len(sel)) * len(chunk) // len(uniq), n)
            if len(uniq) < len(chunk):
                pos = {t: j for j, t in enumerate(uniq)}
                Vu = Vu[[pos[t] for t in chunk]]
            yield w0, chunk, Vu

    def _check_new_keys(self, keys: Sequence[str | None], st: Staged,
                        owners: Sequence[int] | None = None) -> None:
        seen = set()
        # a concept of this batch that takes another key frees its own (a swap)
        renamed = {} if owners is None else dict(zip(owners, keys))
        # no committed key at all (a first bulk load): only this batch and the staged
        # keys can clash
        committed = self._store.has_keys()
        for j, k in enumerate(keys):
            if k is None:
                continue
            if not isinstance(k, str):
                raise InvalidArgumentError(f"a key must be a str or None, not {type(k).__name__}")
            if k in seen:
                raise DuplicateKeyError(f"key {k!r} appears twice")
            seen.add(k)
            owner = owners[j] if owners is not None else None
            if k in st.keys:
                holder = st.keys[k]
            elif not committed:
                holder = None
            else:
                holder = self._committed_key(k)
                if holder is not None and self._staged_gone(st, holder):
                    holder = None
                if holder is not None and holder in st.over and st.over[holder][0] != k:  # type: ignore[index]  # not gone: a record
                    holder = None
            if holder is not None and holder != owner and renamed.get(holder, k) != k:
                holder = None
            if holder is not None and holder != owner:
                raise DuplicateKeyError(f"key {k!r} is already taken (id {holder})")

    # the fields are Any: str / dict / array or None for one concept, sequences for a batch
    # (the body normalises them in place), and UNSET when not given
    def update(self, id_or_key: IdsOrKeys, *, text: Any = UNSET, metadata: Any = UNSET,
               vector: Any = UNSET, key: Any = UNSET, texts: Any = UNSET, vectors: Any = UNSET,
               keys: Any = UNSET) -> None:
        """Replace some fields of one concept, or of many in one call (the other
        fields are kept).

        Parameters
        ----------
        id_or_key : int or str, or a sequence of them
            One concept, or many (a list, tuple or int array): then the fields are
            given per concept, ``texts=``, ``metadata=`` (a list), ``vectors=``
            (an (n, dim) array) and ``keys=``.
        text : str or None, optional
        metadata : dict or None, optional (a sequence of them for many)
            Replaces the whole metadata dict.
        vector : (dim,) array_like, optional
        key : str or None, optional
        texts, vectors, keys : optional
            The per-concept fields of a batch.

        Raises
        ------
        NotFoundError, DimensionError, InvalidArgumentError, DuplicateKeyError
            Nothing changes (a batch is one transaction).

        Examples
        --------
        >>> import numpy as np, sutradb
        >>> db = sutradb.open(":memory:", dim=2)
        >>> ids = db.add_vectors(np.eye(2, dtype="float32"), keys=["a", "b"])
        >>> db.update(["a", "b"], metadata=[{"n": 1}, {"n": 2}])
        >>> db.get("b").metadata
        {'n': 2}
        """
        self._check_writable()
        batch = not isinstance(id_or_key, (str, int, np.integer)) and id_or_key is not None \
            and not isinstance(id_or_key, bool)
        if not batch:
            for name, v in (("texts", texts), ("vectors", vectors), ("keys", keys)):
                if v is not UNSET:
                    raise InvalidArgumentError(f"{name}= is for a batch of ids; for one concept "
                                               f"give {name[:-1]}=")
            items = [id_or_key]
            texts = UNSET if text is UNSET else [text]
            metadata = UNSET if metadata is UNSET else [metadata]
            keys = UNSET if key is UNSET else [key]
            vrows = UNSET if vector is UNSET else vector
        else:
            for name, v in (("text", text), ("vector", vector), ("key", key)):
                if v is not UNSET:
                    raise InvalidArgumentError(f"{name}= is for one concept; for a batch give "
                                               f"{name}s= with one item per id")
            items = id_or_key.ravel().tolist() if isinstance(id_or_key, np.ndarray) \
                else list(id_or_key)  # type: ignore[arg-type]  # batch: not one id
            n = len(items)
            texts = UNSET if texts is UNSET else seq_arg(texts, n, "texts")
            if metadata is not UNSET:
                if metadata is None or isinstance(metadata, dict):
                    raise InvalidArgumentError("metadata= of a batch is a sequence with one dict "
                                               "(or None) per id")
                metadata = seq_arg(metadata, n, "metadata")
            keys = UNSET if keys is UNSET else seq_arg(keys, n, "keys")
            vrows = vectors
        with self._Auto(self) as st:
            ids = [self._id_of(x, st) for x in items]
            if len(set(ids)) != len(ids):
                raise InvalidArgumentError("a batch update names the same concept twice")
            if not ids:
                return
            n = len(ids)
            if texts is not UNSET:
                for t in texts:
                    if t is not None and not isinstance(t, str):
                        raise InvalidArgumentError(f"a text must be a str or None, not "
                                                   f"{type(t).__name__}")
            mds = UNSET if metadata is UNSET else [check_metadata(m) or {} for m in metadata]
            if keys is not UNSET:
                self._check_new_keys(keys, st, owners=ids)
            V = None
            if vrows is not UNSET:
                V = np.asarray(check_vector_rows(
                    vrows, st.meta["dim"], self._meta["vector_dtype"] == "float16",
                    "vector" if not batch else "vectors", one=not batch), dtype=np.float32)
                if V.shape[0] != n:
                    raise DimensionError(f"{V.shape[0]} vectors for {n} ids")
            recs = []
            for j, i in enumerate(ids):
                k0, t0, m0, v0, c0 = self._current(i, st)
                recs.append((i, k0 if keys is UNSET else keys[j],
                             t0 if texts is UNSET else texts[j],
                             m0 if mds is UNSET else mds[j],
                             None if V is None else V[j], v0, c0, k0))
            self._stage_replace(st, recs)

    def _stage_replace(self, st: Staged, recs: Sequence[tuple[Any, ...]]) -> None:
        """Stage new versions of existing concepts in one store ``put``.

        ``recs``: ``(id, key, text, metadata, new vector (float32) or None, old
        vector or None, old codes or None, old key)`` per concept; without a new
        vector the old one is kept, and its codes when they are of the staged
        quantizer."""
        vd = self._meta["vector_dtype"]
        pq = st.pq
        n = len(recs)
        vec32: list[np.ndarray | None] = [None] * n
        codes: np.ndarray | None = None
        if pq is not None:
            codes = np.empty((n, pq.code_size), np.uint8)
            todo = []
            for j, r in enumerate(recs):
                if r[4] is None and r[6] is not None and pq is self._index.pq:
                    codes[j] = r[6]
                else:
                    todo.append(j)
        for j, r in enumerate(recs):
            if r[4] is not None:
                vec32[j] = r[4]
            elif r[5] is not None:
                vec32[j] = np.asarray(r[5], dtype=np.float32)
        if pq is not None and todo:
            if any(vec32[j] is None for j in todo):   # pragma: no cover - defensive
                raise SutraError("cannot encode the concept")
            enc = self._codes_for(np.stack([vec32[j] for j in todo]), st)  # type: ignore[misc]  # checked above
            codes[todo] = enc  # type: ignore[index]  # pq is set: codes too
        if vd is not None:
            V = np.stack(vec32).astype(vd) if n else None  # type: ignore[arg-type]  # every row has one
        else:
            V = None
        ids = np.fromiter((r[0] for r in recs), np.int64, n)
        kw = {"keys": [r[1] for r in recs], "texts": [r[2] for r in recs],
              "metadata": [r[3] or None for r in recs], "codes": codes, "vectors": V}
        self._emit(("put", (ids,), kw))
        for j, r in enumerate(recs):
            i, new_key, k0 = r[0], r[1], r[7]
            if k0 is not None and k0 != new_key:
                st.keys[k0] = None
            if new_key is not None:
                st.keys[new_key] = i
            st.over[i] = (new_key, r[2], r[3] or {}, vec32[j])

    def upsert(self, items: Sequence[str] | npt.ArrayLike, *, keys: Sequence[str],
               texts: Sequence[str | None] | None = None,
               metadata: Sequence[dict[str, Any] | None] | None = None,
               batch_size: int | None = None, progress: ProgressArg = None) -> np.ndarray:
        """Insert or replace concepts by key, in one transaction.

        A key that names a concept replaces it whole (text, metadata and vector; its
        id and its links are kept); a new key adds a concept. What
        :meth:`add` / :meth:`add_vectors` are for a corpus loaded once, this is for
        one loaded again (Chroma's ``upsert``, LanceDB's ``merge_insert``).

        Parameters
        ----------
        items : sequence of str, or (n, dim) array_like
            Texts (embedded with the database's embedder, as :meth:`add` does) or
            vectors.
        keys : sequence of str
            One unique key per item.
        texts : sequence of (str or None), optional
            With vectors: the texts to store (with texts as ``items`` they are
            the texts).
        metadata : sequence of (dict or None), optional
        batch_size, progress : optional
            For texts, as in :meth:`add`.

        Returns
        -------
        (n,) int64 ndarray
            The id of each item (the existing id for a key that was there).

        Raises
        ------
        InvalidArgumentError
            A key is None, not a str, or given twice; the other errors of
            :meth:`add_vectors`. Nothing changes.

        Examples
        --------
        >>> import numpy as np, sutradb
        >>> db = sutradb.open(":memory:", dim=2)
        >>> db.upsert(np.eye(2, dtype="float32"), keys=["a", "b"]).tolist()
        [0, 1]
        >>> db.upsert([[1, 1], [0, 2]], keys=["b", "c"], metadata=[{"v": 2}, None]).tolist()
        [1, 2]
        >>> db.get("b").metadata, len(db)
        ({'v': 2}, 3)
        """
        self._check_writable()
        text_items = isinstance(items, (list, tuple)) and bool(items) and \
            all(isinstance(t, str) for t in items)
        if isinstance(items, str):
            raise InvalidArgumentError("upsert takes a list of texts or an array of vectors")
        if isinstance(keys, str) or keys is None:
            raise InvalidArgumentError("upsert needs keys=: a sequence with one str per item")
        keys = list(keys)
        n = len(keys)
        for k in keys:
            if not isinstance(k, str):
                raise InvalidArgumentError(f"upsert keys must be str, not {type(k).__name__}")
        if len(set(keys)) != n:
            dup = next(k for k in keys if keys.count(k) > 1)
            raise DuplicateKeyError(f"key {dup!r} appears twice")
        metadata = seq_arg(metadata, n, "metadata")
        if text_items:
            if texts is not None:
                raise InvalidArgumentError("texts= is for vectors; the items are the texts")
            texts = list(items)  # type: ignore[arg-type]  # text items: a sequence of str
            if len(texts) != n:
                raise DimensionError(f"{len(texts)} texts for {n} keys")
            emb = self._require_embedder()
            step = int(batch_size or self._batch_size)
            if step < 1:
                raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size!r}")
            bar = progress_bar(progress, n, step)
            out = np.empty(n, dtype=np.int64)
            try:
                with self.transaction():
                    with self._Auto(self) as st:
                        if not st.meta.get("embedder"):
                            st.meta["embedder"] = {"name": str(emb.name), "dim": int(emb.dim)}
                    for w0, chunk, V in self._embedded_windows(emb, texts, step, bar):  # type: ignore[arg-type]  # checked str
                        w1 = w0 + len(chunk)
                        out[w0:w1] = self._upsert_vectors(
                            V, keys[w0:w1], chunk,
                            None if metadata is None else metadata[w0:w1])
                        if bar is not None:
                            bar(w1, n)
            finally:
                if bar is not None:
                    bar(None, n)
            return out
        V = check_vector_rows(items, self._meta["dim"] or 0,
                              self._meta["vector_dtype"] == "float16")
        if V.shape[0] != n:
            raise DimensionError(f"{V.shape[0]} vectors for {n} keys")
        texts = seq_arg(texts, n, "texts")
        with self.transaction():
            return self._upsert_vectors(V, keys, texts, metadata)

    def _upsert_vectors(self, V: np.ndarray, keys: Sequence[str], texts: Sequence[str | None] | None,
                        metadata: Sequence[dict[str, Any] | None] | None) -> np.ndarray:
        """:meth:`upsert` of vectors, inside the caller's transaction."""
        with self._Auto(self) as st:
            n = len(keys)
            out = np.empty(n, dtype=np.int64)
            old = []
            for j, k in enumerate(keys):
                i = st.keys[k] if k in st.keys else self._committed_key(k)
                if i is not None and k not in st.keys and self._staged_gone(st, i):
                    i = None
                out[j] = -1 if i is None else i
                if i is not None:
                    old.append(j)
            new = np.flatnonzero(out < 0)
            if len(new):
                sel = new.tolist()
                out[new] = self.add_vectors(
                    V[new] if len(new) < n else V,
                    texts=None if texts is None else [texts[j] for j in sel],
                    metadata=None if metadata is None else [metadata[j] for j in sel],
                    keys=[keys[j] for j in sel])
            if old:
                if texts is not None:
                    for j in old:
                        t = texts[j]
                        if t is not None and not isinstance(t, str):
                            raise InvalidArgumentError(f"a text must be a str or None, not "
                                                       f"{type(t).__name__}")
                Vo = np.asarray(check_vector_rows(
                    V[old], st.meta["dim"], self._meta["vector_dtype"] == "float16"),
                    dtype=np.float32)
                recs = [(int(out[j]), keys[j], None if texts is None else texts[j],
                         check_metadata(None if metadata is None else metadata[j]) or {},
                         Vo[r], None, None, keys[j]) for r, j in enumerate(old)]
                self._stage_replace(st, recs)
            return out

    def delete(self, ids: IdsOrKeys | None = None, *, where: Where | None = None,
               missing_ok: bool = False) -> int:
        """Delete concepts (ids or keys; one or a sequence), or those that match a
        filter, and their links.

        Parameters
        ----------
        ids : int, str or sequence of them, optional
        where : dict, optional
            A filter (:mod:`sutradb.index.filters`): every concept that matches
            (``where={}`` matches all). With ``ids`` too, those of the ids that match.
        missing_ok : bool
            Skip ids and keys that do not exist instead of raising (vector store
            frameworks delete by ids that may be gone already).

        Returns
        -------
        int
            How many concepts were deleted.

        Raises
        ------
        NotFoundError
            One of the ids does not exist: nothing is deleted.
        InvalidArgumentError
            Neither ``ids`` nor ``where``, or a bad filter.
        """
        self._check_writable()
        if ids is None and where is None:
            raise InvalidArgumentError("delete needs ids or where=")
        with self._Auto(self) as st:
            if ids is not None:
                if isinstance(ids, (str, int, np.integer)):
                    ids = [ids]
                elif isinstance(ids, np.ndarray):
                    ids = ids.ravel().tolist()
                if missing_ok:
                    found = []
                    for x in ids:  # type: ignore[union-attr]  # a sequence now
                        try:
                            found.append(self._id_of(x, st))
                        except NotFoundError:
                            pass
                    todo = list(dict.fromkeys(found))
                else:
                    todo = list(dict.fromkeys(self._id_of(x, st) for x in ids))  # type: ignore[union-attr]  # a sequence now
            else:
                todo = None
            if where is not None:
                if st.over or st.bulks:
                    raise InvalidArgumentError(
                        "delete(where=) inside a transaction that has written: filters see "
                        "the committed state (delete by ids, or filter before writing)")
                hit = self.find_ids(where)
                if todo is None:
                    todo = hit.tolist()
                else:
                    keep = set(hit.tolist())
                    todo = [i for i in todo if i in keep]
            if not todo:
                return 0
            recs = [(i, self._current(i, st)[0]) for i in todo]
            self._emit(("delete", (np.array([i for i, _ in recs], np.int64),), {}))
            gone = set(todo)
            for i, k in recs:
                st.over[i] = None
                if k is not None:
                    st.keys[k] = None
            for key in [lk for lk in st.links if lk[0] in gone or lk[1] in gone]:
                st.links[key] = None
            return len(todo)
