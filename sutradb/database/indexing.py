"""The index lifecycle of a :class:`~sutradb.database.Database`: training,
encoding, the IVF lists (layout, fold, regrowth), drift, ``build_index`` and
``tune``.

Index lifecycle
---------------
While the database holds fewer than ``index_threshold`` concepts, search is exact
(brute force over the stored vectors). Once it is past the threshold, a product
quantizer is trained (on first use after the commit that crossed it: see "upkeep"
below) on a seeded sample of the live vectors, every vector is
encoded, and from then on searches scan the PQ codes and re-rank the best candidates
exactly against the full vectors (kept as float16 by default). Later vectors are
encoded with the stored codebooks; :meth:`Database.build_index` retrains on demand.

With ``index="auto"`` the IVF lists are laid out past ``ivf_threshold`` concepts
(``index="ivf"``: as soon as the quantizer is trained); rows added since are
scanned flat (the *tail*) until they pass a share of the lists and are folded in
(the centres stay); when the database has grown 4x since the lists were built they
are built again with twice the lists. The quantisation error of what is added is
accumulated (``drift`` in :attr:`Database.index_info`). Each new index is committed
as a whole and swapped in under the exclusive lock: searches use the one they
started with. The list arithmetic is in :mod:`sutradb.database.ivflists`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ..errors import InvalidArgumentError
from ..index.flat import prepare_queries
from ..index.ivf import default_nlist, exact_topk
from ..index.pq import ProductQuantizer, check_k, default_threads
from ..index.vector import (IVFPart, decode_index, default_pq_shape, default_rerank,
                            encode_index, encode_quantizer)
from ..storage import Store
from .ivflists import assign_rows, fold_lists, lay_out_lists, recall, remap_lists
from .options import BATCH, MEMORY
from .progress import stage_progress
from .validation import check_query_rows, is_id

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy.typing as npt

    from .state import DatabaseState as _Base
    from .state import Where
    from .transactions import Staged
else:
    _Base = object

__all__ = ["IndexingMixin", "added_error", "recall_grid"]

#: The tail of rows added since the IVF lists were laid out is folded into them when
#: it passes this share of the rows in the lists (and _FOLD_MIN rows): it is scanned
#: flat, so it must stay small next to the share of the lists a search probes.
_FOLD_SHARE = 1 / 16
_FOLD_MIN = 4096
#: Rows without stored term postings that make writing them due (a writer's next
#: search, or close, tokenises them: sutradb.storage.Store.index_text).
TEXT_UPKEEP_ROWS = 4096
#: tune(): a ladder of nprobe stops when this many more steps adding as much recall as
#: the last one would still fall short of the target (the re-ranked depth is the limit).
_TUNE_STEPS_LEFT = 10
#: Rows of a large added batch on which its quantisation error (drift) is measured.
_DRIFT_SAMPLE = 4096


def added_error(pq: ProductQuantizer, V: np.ndarray, codes: np.ndarray) -> float:
    """The summed squared quantisation error of the rows ``V`` encoded as ``codes``
    (the drift's numerator). A large batch is measured on an evenly spaced sample of
    :data:`_DRIFT_SAMPLE` rows, scaled to the batch (an unbiased estimate of the
    batch's mean, without decoding all of it)."""
    n = len(V)
    sel = slice(None) if n <= _DRIFT_SAMPLE else np.linspace(0, n - 1, _DRIFT_SAMPLE).astype(np.int64)
    X = V[sel]
    if pq.metric == "cosine":
        nrm = np.sqrt(np.einsum("ij,ij->i", X, X))
        nrm[nrm == 0] = 1.0
        X = X / nrm[:, None]
    R = pq.decode(codes[sel])
    R -= X
    return float(np.einsum("ij,ij->", R, R)) * (n / len(X)) if len(X) else 0.0


def recall_grid(search: Callable[[int | None, int | None], np.ndarray], gt_rows: np.ndarray,
                nprobes: Sequence[int | None], reranks: Sequence[int],
                target_recall: float) -> list[dict[str, Any]]:
    """The recall ladders of :meth:`Database.tune`.

    Parameters
    ----------
    search : callable ``(rerank, nprobe) -> I``
        The rows found for the sample queries with that setting.
    gt_rows : (nq, k) int64
        Their exact rows.
    nprobes : iterable of (int or None)
    reranks : iterable of int
    target_recall : float

    Returns
    -------
    list of dict
        One ``{"nprobe", "rerank", "recall", "qps": None}`` per setting run, in the
        order run.
    """
    grid = []
    nprobes = sorted(set(nprobes), key=lambda p: -1 if p is None else p)
    first = 0
    # deepest re-ranking first: fewer candidates need at least as many lists, so a
    # shallower rerank's ladder starts where the deeper one reached the target; a
    # ladder stops at the target or where more lists add too little recall to get
    # there (the re-ranked depth is the limit: at millions of rows a small rerank
    # may never reach the target, and scanning up to every list would take long)
    for r in sorted(set(int(x) for x in reranks), reverse=True):
        prev = None
        for j in range(first, len(nprobes)):
            p = nprobes[j]
            rec = recall(search(r, p), gt_rows)
            grid.append({"nprobe": p, "rerank": r, "recall": rec, "qps": None})
            if rec >= target_recall:
                first = j
                break
            if prev is not None and (rec - prev) * _TUNE_STEPS_LEFT < target_recall - rec:
                break               # ten more such steps would not reach it
            prev = rec
    return grid


class IndexingMixin(_Base):
    """The index methods of :class:`~sutradb.database.Database`: ``index_info``,
    ``build_index``, ``tune`` and the automatic maintenance after commits; a mixin:
    they replace the database's index (``self._index``) and, for an in-memory
    database that retrains, its store."""

    @property
    def index_info(self) -> dict[str, Any]:
        """How searches are answered: ``{"kind": "flat"}`` or the PQ parameters.

        Upkeep the last commits left due (training, IVF lists) runs first, as on a
        search."""
        self._check_open()
        self._catch_up()
        pq = self._index.pq
        if pq is None:
            return {"kind": "flat", "threshold": self._meta["index_threshold"]}
        out = {"kind": "pq", "m": pq.m, "nbits": pq.nbits, "seed": pq.seed,
               "code_size": pq.code_size, "training_error": pq.training_error_,
               **pq.fit_params_, "drift": self._drift("pq", pq.training_error_)}
        part = self._index.ivf
        if part is not None:
            ivf = part.ivf
            out.update(kind="ivf", nlist=ivf.nlist, nprobe=part.nprobe,
                       rerank=default_rerank(10) * part.rerank_scale, tuned=dict(part.tuned),
                       list_rows=ivf.ntotal, tail_rows=self._store.n_rows - part.covered,
                       coarse_training_error=ivf.training_error_,
                       coarse_drift=self._drift("ivf", ivf.training_error_))
        return out

    def _drift(self, what: str, training_error: float) -> float | None:
        """Mean squared quantisation error of the vectors encoded since training,
        over the training error (1.0: as trained; retrain when it grows, see
        docs/user-guide.md); None when nothing was added since."""
        n = self._meta.get(what + "_added_n", 0)
        if not n or not training_error or not np.isfinite(training_error):
            return None
        return float(self._meta.get(what + "_added_sq", 0.0) / n / training_error)

    def _codes_for(self, V: np.ndarray, st: Staged) -> np.ndarray | None:
        """Codes of ``V`` when the database keeps codes (training the quantizer on this
        batch first when the database keeps no full vectors)."""
        if st.pq is None and self._meta["vector_dtype"] is None:
            st.pq = self._fit(V, st.meta)
            st.index_blob = encode_quantizer(st.pq)
        if st.pq is None:
            return None
        pq = st.pq
        codes = pq.encode(V, threads=default_threads() if len(V) > 64 else 1)
        # drift: the quantisation error of what is added, against the training error
        err = added_error(pq, V, codes)
        m = st.meta
        m["pq_added_sq"] = float(m.get("pq_added_sq", 0.0)) + err
        m["pq_added_n"] = int(m.get("pq_added_n", 0)) + len(V)
        return codes

    def _fit(self, V: np.ndarray, meta: dict[str, Any],
             progress: Callable[[int, int], object] | None = None) -> ProductQuantizer:
        """A quantizer trained on ``V`` with the shape and training options of ``meta``."""
        dim = meta["dim"]
        m, nbits = default_pq_shape(dim, meta.get("vector_dtype"), meta.get("pq_m"),
                                    meta.get("pq_nbits"))
        pq = ProductQuantizer(dim, m, nbits, meta["metric"], meta.get("seed", 0))
        if V.shape[0] < pq.Ks:
            raise InvalidArgumentError(f"training the quantizer needs at least {pq.Ks} vectors, got "
                                       f"{V.shape[0]} (a database with vector_dtype=None must start "
                                       "with such a batch)")
        cb = progress if progress is not None else stage_progress(self._progress)
        pq.fit(V, max_train=meta.get("train_size", 65536), iters=meta.get("train_iters", 20),
               progress=cb)
        return pq

    # ------------------------------------------------------------------ upkeep
    #
    # A commit never trains or lays out an index itself (a bulk load would wait
    # seconds for k-means inside its commit): it only notes that the index is due
    # for upkeep (_maybe_train). The work (_run_upkeep) runs on first use: the next
    # search or index_info of this handle that finds the write lock free and no
    # transaction of its own open, build_index(), or close(). Until then searches use
    # the index as it is (an exact scan before the first training; the IVF lists'
    # unlisted tail is scanned exactly).

    def _maybe_train(self) -> None:
        """After a commit: note whether the index is due for upkeep (training, IVF lists
        laid out, regrown or folded; term postings to write); :meth:`_catch_up` runs it
        on first use."""
        self._index_due = self._upkeep_step() is not None or self._text_due()

    def _text_due(self, rows: int = TEXT_UPKEEP_ROWS) -> bool:
        """Whether at least ``rows`` rows wait for their term postings to be written
        (:meth:`~sutradb.storage.store.Store.index_text`)."""
        s = self._store
        return s.mode != "r" and s.path is not None and s.text_uncovered >= max(rows, 1)

    def _index_text(self) -> None:
        """Write the term postings that commits left to do (tokenising the texts of the
        rows no stored run covers; the caller holds the write lock)."""
        with self._excl:
            self._store.index_text()

    def _upkeep_step(self) -> Callable[[], None] | None:
        """The upkeep the ``index`` option asks for at the current size, as a bound
        method to call, or None."""
        kind = self._opt("index")
        if kind == "flat" or not self._meta["dim"] or self._meta["vector_dtype"] is None:
            return None
        n_live = self._store.n_live
        if self._index.pq is None:
            if (self._meta["index_threshold"]
                    and n_live >= max(self._meta["index_threshold"],
                                      1 << int(self._meta.get("pq_nbits") or 8))):
                return self._train_default
            return None
        part = self._index.ivf
        if part is None:
            return self._build_ivf_default if self._wants_ivf(kind, n_live) else None
        if (kind in ("auto", "ivf") and self._opt("ivf_nlist") is None
                and n_live >= 4 * int(part.tuned.get("n_built") or n_live)
                and default_nlist(n_live) >= 2 * cast(int, part.ivf.nlist)):
            return self._build_ivf_default          # grown 4x: twice the lists
        if self._store.n_rows - part.covered >= max(_FOLD_MIN, part.covered * _FOLD_SHARE):
            return self._fold
        return None

    def _train_default(self) -> None:
        self._train({})

    def _build_ivf_default(self) -> None:
        self._build_ivf(None)

    def _run_upkeep(self) -> None:
        """Run the due upkeep now (the caller holds the write lock, no transaction open).
        A failure leaves the index as it was, with a warning: the commits stand."""
        self._index_due = False
        try:
            step = self._upkeep_step()
            if step is not None:
                step()
            if self._text_due():
                self._index_text()
        except Exception as e:          # the commit stands; searches stay as they were
            import warnings
            warnings.warn(f"sutradb: automatic index maintenance failed ({e!r}); searches "
                          "use the previous index until build_index() succeeds",
                          RuntimeWarning, stacklevel=4)

    def _catch_up(self, wait: bool = False) -> None:
        """Run the upkeep the last commits left due, if this handle writes and no
        transaction is open. Reads pass ``wait=False``: when another thread holds the
        write lock they go on with the index as it is."""
        if not self._index_due or self._closed or self._store.mode == "r":
            return
        if not self._wlock.acquire(blocking=wait):
            return
        try:
            if self._index_due and not self._closed and self._staged is None:
                self._run_upkeep()
        finally:
            self._wlock.release()

    def _wants_ivf(self, kind: str, n_live: int) -> bool:
        """Whether the ``index`` option ``kind`` asks for IVF lists at ``n_live`` concepts."""
        if n_live < 64:
            return False
        if kind == "ivf":
            return True
        t = self._opt("ivf_threshold")
        return kind == "auto" and bool(t) and n_live >= t

    def build_index(self, **params: Any) -> dict[str, Any]:
        """(Re)build the vector index now.

        Parameters
        ----------
        **params
            ``kind``: ``"pq"`` (flat PQ scan) or ``"ivf"`` (PQ + inverted lists);
            default: what the ``index`` option gives at the current size. An explicit
            ``kind`` is stored (later automatic maintenance keeps it).
            ``m`` (subspaces), ``nbits`` (8 or 4), ``seed``, ``train_size``,
            ``iters``: retrain the quantizer (default: the database's options).
            ``quantizer``: a trained :class:`~sutradb.index.pq.ProductQuantizer` of the
            database's dimension and metric to encode with instead of training one
            (shards that share one codebook: :mod:`sutradb.distributed`).
            ``nlist``: IVF lists (default ``ivf_nlist``, else about ``4 sqrt(n)``);
            given without ``kind``, it implies ``kind="ivf"`` (with ``kind="pq"`` it is
            an error).
            With an existing quantizer and none of its parameters, ``kind="ivf"``
            only (re)builds the lists (no re-encoding) and ``kind="pq"`` drops them.

        Returns
        -------
        dict
            :attr:`index_info`.
        """
        self._check_writable()
        pq_params = {"m", "nbits", "seed", "train_size", "iters", "quantizer"}
        allowed = pq_params | {"kind", "nlist"}
        bad = set(params) - allowed
        if bad:
            raise InvalidArgumentError(f"unknown index parameters {sorted(bad)} (known: {sorted(allowed)})")
        kind = params.get("kind")
        if kind is not None and kind not in ("pq", "ivf"):
            raise InvalidArgumentError(f"kind must be 'pq' or 'ivf', not {kind!r}")
        nlist = params.get("nlist")
        if nlist is not None and (not is_id(nlist) or nlist < 1):
            raise InvalidArgumentError(f"nlist must be a positive integer, got {nlist!r}")
        if nlist is not None:
            if kind == "pq":
                raise InvalidArgumentError("nlist sets IVF lists: it does not go with kind='pq'")
            kind = "ivf"                # lists asked for by their number: IVF, whatever the size
        with self._wlock:
            if self._staged is not None:
                raise InvalidArgumentError("build_index cannot run inside a transaction")
            if self._meta["vector_dtype"] is None:
                raise InvalidArgumentError("this database keeps no full vectors to retrain on")
            if not self._meta["dim"] or self._store.n_live == 0:
                raise InvalidArgumentError("the database is empty")
            q = params.get("quantizer")
            if q is not None:
                if not isinstance(q, ProductQuantizer) or not q.is_trained:
                    raise InvalidArgumentError("quantizer must be a trained ProductQuantizer")
                if q.dim != self._meta["dim"] or q.metric != self._meta["metric"]:
                    raise InvalidArgumentError(
                        f"the quantizer ({q.dim}-d, {q.metric!r}) does not match the database "
                        f"({self._meta['dim']}-d, {self._meta['metric']!r})")
                if set(params) & (pq_params - {"quantizer"}):
                    raise InvalidArgumentError("quantizer= replaces m, nbits, seed, train_size and iters")
            n_live = self._store.n_live
            self._index_due = False     # this build replaces the upkeep commits left due
            if kind == "ivf" and n_live < 64:
                raise InvalidArgumentError("IVF lists need at least 64 concepts")
            sticky = {}
            if kind is not None:
                sticky["index"] = kind
            if nlist is not None:
                sticky["ivf_nlist"] = int(nlist)
            self._meta.update(sticky)
            if self._index.pq is not None and not set(params) & pq_params:
                if kind == "pq":
                    self._commit_index(self._index.pq, None, sticky)
                    return self.index_info
                if kind == "ivf" or (kind is None and self._wants_ivf(self._opt("index"), n_live)):
                    self._build_ivf(nlist, sticky)
                    return self.index_info
            with_ivf = kind == "ivf" or (kind is None and self._wants_ivf(self._opt("index"), n_live))
            self._train(params, with_ivf=with_ivf, nlist=nlist, sticky=sticky)
        return self.index_info

    def _train(self, params: dict[str, Any], with_ivf: bool | None = None, nlist: int | None = None,
               sticky: dict[str, Any] | None = None) -> None:
        """Train a quantizer on a seeded sample of the live vectors (or take the given
        one), encode all of them, lay out the IVF lists if wanted, and commit codes +
        index (one store transaction that rewrites the rows)."""
        meta = dict(self._meta)
        for src, dst in (("m", "pq_m"), ("nbits", "pq_nbits"), ("seed", "seed"),
                         ("train_size", "train_size"), ("iters", "train_iters")):
            if src in params:
                meta[dst] = params[src]
        s = self._store
        with self._read:
            live = s.live.copy()
            live_rows = np.flatnonzero(live)
            V = s.vectors
            ids = s.ids[live_rows].copy()
            n = len(live_rows)
            ts = min(n, int(meta.get("train_size", 65536)))
            rng = np.random.default_rng(int(meta.get("seed", 0)))
            sample = np.sort(rng.choice(n, size=ts, replace=False)) if ts < n else np.arange(n)
            X = (np.asarray(V[live_rows[sample]], dtype=np.float32)  # type: ignore[index]  # kept vectors
                 if params.get("quantizer") is None else None)
        pq = self._fit(X, meta) if X is not None else params["quantizer"]
        del X
        codes = np.empty((n, pq.code_size), np.uint8)
        for s0 in range(0, n, BATCH):
            with self._read:
                blk = np.asarray(V[live_rows[s0:s0 + BATCH]], dtype=np.float32)  # type: ignore[index]  # kept vectors
            codes[s0:s0 + BATCH] = pq.encode(blk)
        if with_ivf is None:
            with_ivf = self._wants_ivf(self._opt("index"), n)
        part = None
        if with_ivf and n >= 64:
            # the lists of the rows as they will be numbered after the rewrite
            # (the live rows in order: new row j = live_rows[j]); tuned on the rows
            # as they are now (same lists, old numbering)
            part = self._make_ivf(pq, V, live, live_rows, codes, meta, nlist,  # type: ignore[arg-type]  # kept vectors
                                  renumber=True)
        blob, arrays = encode_index(pq, part)
        full = s.meta
        full["sutradb"] = self._persisted_meta(meta) | {
            "pq_m": pq.m, "pq_nbits": pq.nbits, "seed": pq.seed,
            "train_size": int(meta.get("train_size", 65536)),
            "train_iters": int(meta.get("train_iters", 20)), "next_id": self._meta["next_id"],
            "pq_added_sq": 0.0, "pq_added_n": 0, "ivf_added_sq": 0.0, "ivf_added_n": 0}
        full["sutradb"].update(sticky or {})
        with self._excl:
            if self._memory:
                self._rebuild_memory(ids, live_rows, codes, (blob, arrays), full)
            else:
                t = s.begin()
                try:
                    t.set_index(blob, arrays)
                    t.set_meta(full)
                    t.replace_codes(ids, codes)
                    t.commit()
                except BaseException:
                    t.rollback()
                    raise
            self._meta.update({k: full["sutradb"][k] for k in (
                "pq_added_sq", "pq_added_n", "ivf_added_sq", "ivf_added_n")})
            self._index = self._load_index()
            self._row_caches(renumbered=True)

    def _make_ivf(self, pq: ProductQuantizer, V: np.ndarray, live: np.ndarray, rows: np.ndarray,
                  codes: np.ndarray, meta: dict[str, Any], nlist: int | None,
                  renumber: bool = False) -> IVFPart:
        """IVF lists of the entries ``rows`` with this database's options
        (:func:`~sutradb.database.ivflists.lay_out_lists`; ``meta`` gives the seed)."""
        return lay_out_lists(pq, V, live, rows, codes, dim=self._meta["dim"],
                             metric=self._meta["metric"], nlist=nlist or self._opt("ivf_nlist"),
                             seed=int(meta.get("seed", 0)),
                             target_recall=float(self._opt("target_recall")), read=self._read,
                             progress=self._progress, renumber=renumber)

    def _build_ivf(self, nlist: int | None, sticky: dict[str, Any] | None = None) -> None:
        """Lay out IVF lists over the live rows with the current quantizer and codes."""
        s = self._store
        pq = self._index.pq
        with self._read:
            live = s.live.copy()
            rows = np.flatnonzero(live)
            codes = s.codes
            V = s.vectors
        part = self._make_ivf(pq, V, live, rows, codes, self._meta, nlist)  # type: ignore[arg-type]  # trained, kept vectors
        part.covered = len(live)
        self._meta["ivf_added_sq"], self._meta["ivf_added_n"] = 0.0, 0
        self._commit_index(pq, part, sticky)  # type: ignore[arg-type]  # trained

    def _fold(self) -> None:
        """Put the tail (live rows added since the lists were laid out) into the
        lists and drop the dead rows from them; the centres stay."""
        s = self._store
        part = cast(IVFPart, self._index.ivf)       # there are lists to fold
        with self._read:
            n = s.n_rows
            live = s.live.copy()
            c = part.covered
            new_rows = c + np.flatnonzero(live[c:n])
            lid_new, err = assign_rows(part.ivf, s.vectors, new_rows, self._meta["metric"])  # type: ignore[arg-type]  # lists: vectors kept
            new_codes = s.codes[new_rows]
        new = fold_lists(self._index.pq, part, live, new_rows, lid_new, new_codes, n)  # type: ignore[arg-type]  # lists: trained
        self._meta["ivf_added_sq"] = float(self._meta.get("ivf_added_sq", 0.0)) + err
        self._meta["ivf_added_n"] = int(self._meta.get("ivf_added_n", 0)) + len(new_rows)
        self._commit_index(cast(ProductQuantizer, self._index.pq), new)

    def _commit_index(self, pq: ProductQuantizer, part: IVFPart | None,
                      sticky: dict[str, Any] | None = None) -> None:
        """Store a new index (quantizer and IVF part) for the current rows; ``sticky``
        options (given to build_index) are stored too."""
        s = self._store
        blob, arrays = encode_index(pq, part)
        full = s.meta
        full["sutradb"] = self._persisted_meta(self._meta)
        full["sutradb"].update(sticky or {})
        with self._excl:
            n_before = s.n_rows
            t = s.begin()
            try:
                t.set_index(blob, arrays)
                t.set_meta(full)
                t.commit()
            except BaseException:
                t.rollback()
                raise
            self._index = self._load_index()
            # the commit may checkpoint and compact (rows renumbered)
            self._row_caches(renumbered=s.n_rows != n_before)

    def _remap_index(self, kept: np.ndarray) -> tuple[bytes, dict[str, np.ndarray]] | None:
        """The store's hook when compaction renumbers rows: the stored IVF lists with
        rows renumbered (dead ones dropped), or None without lists."""
        s = self._store
        blob = s.index_blob
        if blob is None:
            return None
        pq, part = decode_index(blob, s.index_arrays, f"{self._path or MEMORY}: index",
                                s.n_rows)
        if part is None:
            return None
        return encode_index(pq, remap_lists(pq, part, kept))

    def _rebuild_memory(self, ids: np.ndarray, live_rows: np.ndarray, codes: np.ndarray,
                        index: tuple[bytes, dict[str, np.ndarray]],
                        full_meta: dict[str, Any]) -> None:
        """An in-memory store cannot rewrite its codes: copy it into a new one."""
        old = self._store
        new = Store.open(MEMORY)
        t = new.begin()
        recs = [old.record_at(r) for r in live_rows.tolist()]
        V = old.vectors
        t.put(ids, keys=[r.key for r in recs], texts=[r.text for r in recs],
              metadata=[r.metadata or None for r in recs], codes=codes,
              vectors=V[live_rows] if V is not None else None)
        links = old.all_links()
        if links:
            t.link([x[0] for x in links], [x[1] for x in links], [x[2] for x in links],
                   [x[3] for x in links])
        t.set_index(*index)
        t.set_meta(full_meta)
        t.commit()
        new.on_renumber = self._remap_index
        self._store = new
        old.close()

    def tune(self, queries: npt.ArrayLike | Sequence[str], *, k: int = 10,
             target_recall: float | None = None, nprobes: Sequence[int] | None = None,
             reranks: Sequence[int] | None = None, where: Where | None = None,
             save: bool = False) -> dict[str, Any]:
        """Pick ``nprobe`` and ``rerank`` for a target recall@k on your own queries.

        Exact search over the stored vectors (with ``where``) is the ground truth.
        Every setting of the grid is run once for its recall (for each ``rerank``,
        ``nprobe`` grows until the target is met); the settings that reach it are
        timed one query per call, and the fastest wins.

        Parameters
        ----------
        queries : (nq, dim) array_like or list of str
            Sample queries (texts need the embedder); a few hundred are enough.
        k : int
        target_recall : float, optional
            Default: the database's ``target_recall`` option.
        nprobes, reranks : sequence of int, optional
            The grid (default: a geometric ladder of nprobe up to ``nlist``, and
            rerank ``k, 2k, 5k, 10k, 20k, 40k, 80k``). Without IVF lists only
            ``rerank`` varies. Deeper re-ranking is tried first; for each ``rerank``
            nprobe grows from where the deeper one met the target, until the target
            is met or ten more steps at the last step's gain would not reach it.
        where : dict, optional
            The filter your searches use.
        save : bool
            Store the chosen ``nprobe`` (IVF lists only) and ``rerank`` (rounded up
            to a multiple of the default ``max(8k, 100)``) as the database's
            defaults; both stay per-call arguments too.

        Returns
        -------
        dict
            ``nprobe`` (None without IVF lists), ``rerank``, ``recall``, ``qps``,
            ``reached`` and ``grid`` (every setting: nprobe, rerank, recall, qps).
        """
        import time
        self._check_open()
        self._catch_up()
        k = check_k(k)
        if target_recall is None:
            target_recall = float(self._opt("target_recall"))
        if isinstance(target_recall, bool) or not isinstance(target_recall, (int, float)) \
                or not 0 < target_recall <= 1:
            raise InvalidArgumentError("target_recall must be in (0, 1]")
        if isinstance(queries, (list, tuple)) and queries and all(isinstance(x, str) for x in queries):
            queries = self._embed(list(queries))
        Q = check_query_rows(queries, self._meta["dim"], self._meta["metric"])
        if Q.shape[0] == 0:
            raise InvalidArgumentError("tune needs at least one query")
        if self._index.pq is None:
            raise InvalidArgumentError("the database searches exactly (no index to tune yet)")
        part = self._index.ivf
        if nprobes is None:
            nprobes = [None] if part is None else sorted(  # type: ignore[list-item]  # flat: no nprobe
                {p for p in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512,
                             768, 1024, 2048) if p < cast(int, part.ivf.nlist)}
                | {cast(int, part.ivf.nlist)})
        if reranks is None:
            reranks = (k, 2 * k, 5 * k, 10 * k, 20 * k, 40 * k, 80 * k)
        for name, vals in (("nprobes", nprobes), ("reranks", reranks)):
            for v in vals:
                if v is not None and (not is_id(v) or v < (1 if name == "nprobes" else 0)):
                    raise InvalidArgumentError(f"{name} must hold positive integers, got {v!r}")
        with self._read:
            s = self._store
            mask = s.live if where is None else self._where_mask(where, s.live)
            V = s.vectors
            if V is None:
                raise InvalidArgumentError("tune needs the stored vectors (ground truth)")
            gt_rows = exact_topk(prepare_queries(Q.copy(), self._meta["metric"]), V, k,
                                 self._meta["metric"], mask=mask)
        grid = recall_grid(lambda r, p: self._search_q(Q, k, where, r, p,
                                                        threads=default_threads())[1],
                           gt_rows, nprobes, reranks, target_recall)
        ok = [g for g in grid if g["recall"] >= target_recall]
        for g in ok:
            t0 = time.perf_counter()
            for i in range(Q.shape[0]):
                self._search_q(Q[i:i + 1], k, where, g["rerank"], g["nprobe"])
            g["qps"] = Q.shape[0] / (time.perf_counter() - t0)
        if ok:
            best = dict(max(ok, key=lambda g: g["qps"]), reached=True)
        else:
            best = dict(max(grid, key=lambda g: (g["recall"], -(g["nprobe"] or 0) * g["rerank"])),
                        reached=False)
        best["grid"] = grid
        if save and part is not None and best["nprobe"] is not None:
            self._check_writable()
            with self._wlock:
                if self._staged is not None:
                    raise InvalidArgumentError("tune(save=True) cannot run inside a transaction")
                cur = cast(IVFPart, self._index.ivf)   # part is not None
                new = IVFPart(cur.ivf, cur.codes, cur.covered, best["nprobe"],
                              dict(cur.tuned, target_recall=float(target_recall),
                                   recall=best["recall"], queries=int(Q.shape[0]), k=k,
                                   source="tune"),
                              max(1, -(-best["rerank"] // default_rerank(k))))
                self._commit_index(self._index.pq, new)
        return best

    def _search_q(self, Q: np.ndarray, k: int, where: Where | None, rerank: int | None,
                  nprobe: int | None, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Rows of prepared queries (the tuning loop)."""
        with self._read:
            return self._search_rows(Q, k, where, rerank, False, threads, nprobe)
