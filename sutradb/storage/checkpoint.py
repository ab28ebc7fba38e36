"""Checkpoints and compaction of a :class:`~.store.Store`: the log's rows moved into
segments, live rows rewritten into new segments, each ended by a manifest swap.

A checkpoint appends the rows the log holds to the row files (or starts new ones),
writes the index and the key segment, swaps the manifest and starts a new log; a
compaction (automatic once dead rows pass a bound, or :meth:`compact`) copies the
live rows into fresh files and swaps the manifest to them. Nothing a manifest names
is written after the swap (docs/file-format.md, sections 5 and 6). The segment
builders themselves are in :mod:`.compaction`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, cast

import numpy as np

from ..errors import CorruptDatabaseError, InvalidArgumentError
from . import osio
from .format import (DTYPE_CODE, HEADER_SIZE, KIND_CODES, KIND_KEYS, KIND_ORDER, KIND_VEC,
                     file_name, seg_header, wal_name)
from .compaction import (append_rows, copy_live_rows, create_row_files, read_appended,
                         write_index_file)
from .manifest import map_files, sweep, write_manifest
from .records import Chunk, decode_record, encode_record
from .segments import Appender, write_new_file
from .terms import TermRun, add_tiered, build_run, merge_runs, write_run
from .wal import Log, create_log

if TYPE_CHECKING:
    from .snapshot import Snapshot as _Base      # the state the mixin works on (Store's)
else:
    _Base = object

__all__ = ["CheckpointsMixin"]

_I8 = np.dtype("<i8")
_U8 = np.dtype("<u8")
_EMPTY_I8 = np.zeros(0, _I8)


class CheckpointsMixin(_Base):
    """Checkpoint and compaction methods of :class:`~.store.Store` (a mixin over the store's state: its generation, appenders, log and lock)."""

    def checkpoint(self) -> None:
        """Fold the log into the segment files and start a new log (no-op when the log
        is empty). Compacts when the garbage passes the configured bound."""
        self._no_txn("checkpoint")
        if self._memory:
            return
        if self._log.pos > HEADER_SIZE or self._index_pending is not None:
            try:
                self._checkpoint()
            except OSError:
                self._recover_after_failure()
                raise

    def _open_appenders(self) -> None:
        for a in self._apps.values():
            a.close()
        self._apps = {}
        for key in ("ids", "ends", "rec", "dead", "codes", "vec"):
            e = self._man["files"].get(key)
            if e is not None:
                a = Appender(self._dir, e["name"], e["len"], e["crc"])
                self._apps[key] = a
                a.reset()

    def _new_file_no(self):
        no = self._next_file
        self._next_file += 1
        return no

    def _ensure_row_files(self):
        """Create the code / vector files when the store just got codes / vectors."""
        sync = self._durability != "off"
        created = []
        for key, kind, width, dt in (("codes", KIND_CODES, self._m, 0),
                                     ("vec", KIND_VEC, self._d * (self._vdtype.itemsize if self._vdtype else 0),
                                      DTYPE_CODE[self._vdtype] if self._vdtype else 0)):
            if width and key not in self._apps:
                if self._seg_n:  # pragma: no cover - guarded by put validation
                    raise AssertionError("rows without " + key)
                name = file_name(self._new_file_no(), kind)
                self._apps[key] = Appender(self._dir, name, 0, 0,
                                           create_header=seg_header(kind, self._uuid, width, dt))
                created.append(key)
        return created

    def _spill_start(self, m, d, vdtype) -> None:
        """A transaction starts writing its rows straight into the row files (its
        widths ``m``, ``d``, ``vdtype`` become the store's): checkpoint the log first,
        so that the files end with the checkpointed rows."""
        if self._log.pos > HEADER_SIZE or self._index_pending is not None:
            self._checkpoint()
        for a in self._apps.values():
            a.reset()
        self._m, self._d, self._vdtype = m, d, vdtype
        self._ensure_row_files()

    def _spill_chunk(self, ch) -> None:
        """Append a spilling transaction's rows to the row files (uncommitted until
        its manifest swap)."""
        append_rows(self._apps, ch)

    def index_text(self) -> int:
        """Write the term postings of the rows no stored run covers (tokenising their
        texts) in a checkpoint, merging runs; returns the rows tokenised (0: nothing
        to do, or an in-memory store, whose postings live in memory).

        Checkpoints inside commits write only the postings already built in memory
        (by text searches); the rest waits for this call, which the database makes
        as deferred upkeep (:meth:`Database.close`, a writer's searches), so commits
        never pay for tokenisation.
        """
        self._no_txn("index_text")
        if self._memory:
            return 0
        todo = self.text_uncovered
        if not todo:
            return 0
        try:
            self._checkpoint(build_terms=True)
        except OSError:
            self._recover_after_failure()
            raise
        return todo

    @property
    def text_uncovered(self) -> int:
        """Rows whose term postings are not in a stored run yet (:meth:`index_text`)."""
        self._check_open()
        return self._n - sum(r.n for r in self._term_runs)

    def _checkpoint(self, spilled: bool = False, build_terms: bool = False):
        """Write the tail into segment files and swap the manifest (commit point)."""
        sync = self._durability != "off"
        apps = self._apps
        if not spilled:
            for a in apps.values():
                a.reset()
        self._ensure_row_files()
        body = dict(self._man)
        retired = []
        # rows held in memory
        for ch in self._chunks:
            append_rows(apps, ch)
        if self._tail_dead:
            apps["dead"].append(np.concatenate(self._tail_dead))
        n = self._n
        if apps["ids"].length != 8 * n:  # pragma: no cover - defensive
            raise AssertionError("row files out of step with the row count")
        # id order
        seg_sorted = self._man["sorted"]
        new_ids = None
        if n > self._seg_n:
            new_ids = np.frombuffer(read_appended(apps["ids"], 8 * self._seg_n), _I8)
        order_entry = self._man["files"].get("order")
        if new_ids is not None:
            last = self._seg_ids[-1] if self._seg_n else None
            still = seg_sorted and (len(new_ids) < 2 or (new_ids[1:] > new_ids[:-1]).all()) and (
                last is None or new_ids[0] > last)
            if not still:
                all_ids = np.concatenate([self._seg_ids, new_ids])
                order = np.argsort(all_ids, kind="stable").astype(_I8)
                if order_entry is not None:
                    retired.append(order_entry["name"])
                order_entry = write_new_file(self._dir, file_name(self._new_file_no(), KIND_ORDER),
                                             KIND_ORDER, self._uuid, [order], width=8, sync=sync)
            seg_sorted = bool(still)
        # links
        links_entry = self._man["links"]
        if self._links.changed:
            if links_entry is not None:
                retired.append(links_entry["name"])
            links_entry = self._links.write(self._dir, self._uuid, self._new_file_no, sync)
        # index
        index_entry = self._man["index"]
        if self._index_pending is not None:
            if index_entry is not None:
                retired.append(index_entry["name"])
            index_entry = write_index_file(self._dir, self._new_file_no, self._uuid, *self._index_pending, sync)
        # keys
        keys_entry = self._man["files"].get("keys")
        kidx = self._keys.rebuild("keys" in self._man["files"], self._tail_dead, self._seg_n,
                                  self._seg_ids, self._live)
        if kidx is not None:
            keys_entry = write_new_file(self._dir, file_name(self._new_file_no(), KIND_KEYS),
                                        KIND_KEYS, self._uuid, list(kidx), width=16, sync=sync)
        terms = self._terms_checkpoint(apps, n, sync, build_terms)
        for a in apps.values():
            if sync:
                a.sync()
        files = {k: a.publish() for k, a in apps.items()}
        if order_entry is not None:
            files["order"] = order_entry
        if keys_entry is not None:
            files["keys"] = keys_entry
        gen = self._gen + 1
        body.update(files=files, n=int(n), sorted=bool(seg_sorted), links=links_entry, index=index_entry,
                    format=2, terms=terms,
                    meta=self._meta, txn=self._txn, wal=wal_name(gen), m=self._m, d=self._d,
                    vdtype=DTYPE_CODE[self._vdtype] if self._vdtype else 0,
                    next_file=self._next_file)
        create_log(self._dir, gen, self._uuid, self._durability == "full", sync)
        write_manifest(self._dir, gen, body, sync, self._set_broken)
        # committed: adopt the new manifest
        for a in apps.values():
            a.mark_committed()
        self._after_swap(gen, body)
        if self._should_compact():
            try:
                self._rewrite()
            except Exception as e:   # the checkpoint itself is done; compaction retries later
                self.last_checkpoint_error = e
                self._recover_after_failure()
                if self._broken is not None:
                    raise

    def _after_swap(self, gen, body):
        try:
            maps = map_files(self._dir, body)
            wal_fd = osio.open_file(os.path.join(self._dir, body["wal"]), os.O_RDWR)
        except BaseException as e:
            self._broken = e
            raise
        self._log.close()
        log = self._log = Log(wal_fd, os.path.join(self._dir, body["wal"]), self._dir,
                              self._durability == "full")
        checked = self._ids_checked
        self._install(gen, body, maps)
        # the new ids (and order) files hold checked ids and ids this writer appended
        # from memory: no need to read them all again
        self._ids_checked = self._ids_checked or checked
        try:
            log.open_new(self._uuid, gen, body["wal"])
        except BaseException as e:
            self._broken = e
            raise
        sweep(self._dir, self._man)
        self._mark()

    def _should_compact(self) -> bool:
        dead = self._n - self._n_live
        return dead >= self._compact_min_rows and dead > self._compact_ratio * self._n

    def compact(self) -> None:
        """Rewrite the live rows into new segment files (renumbering rows) and swap
        the manifest; the old files are deleted. Readers keep their snapshot."""
        self._no_txn("compact")
        if self._memory:
            self._compact_memory()
            return
        try:
            if self._log.pos > HEADER_SIZE or self._index_pending is not None:
                self._checkpoint()
            if self._n_live != self._n:
                self._rewrite()
        except OSError:
            self._recover_after_failure()
            raise

    def _compact_memory(self) -> None:
        rows = np.flatnonzero(self._live[:self._n])
        ids = self.ids[rows]
        codes = self.codes[rows] if self._m else None
        vecs = cast(np.ndarray, self.vectors)[rows] if self._d else None
        recs = [self.record_at(r) for r in rows.tolist()]
        rec_b = [encode_record(r.key, r.text, r.metadata) for r in recs]
        ends = np.cumsum([len(b) for b in rec_b], dtype=_U8) if rec_b else np.zeros(0, _U8)
        ch = Chunk(ids.copy(), None if codes is None else codes.copy(),
                    None if vecs is None else vecs.copy(), b"".join(rec_b), ends,
                    [r.key for r in recs])
        links, meta, idx, txn = self._links, self._meta, self._index_pending, self._txn
        if idx is not None and self.on_renumber is not None:
            idx = self.on_renumber(rows) or idx
        body = dict(self._man, n=0, m=self._m, d=self._d,
                    vdtype=DTYPE_CODE[self._vdtype] if self._vdtype else 0)
        self._install(self._gen, body, {})
        self._links = links
        self._meta, self._index_pending, self._txn = meta, idx, txn
        if len(ids):
            self._apply([("put", ch)])

    def _rewrite(self, codes_override=None, index=None, meta=None, txn=None):
        """Write the live rows into fresh files; optionally with new codes (``(ids
        sorted, codes)``), a new index and meta, as transaction ``txn``."""
        sync = self._durability != "off"
        if self._chunks or self._tail_dead or self._links.changed:  # pragma: no cover
            raise AssertionError("rewrite needs a checkpointed state")
        rows = np.flatnonzero(self._live[:self._n])
        m = self._m if codes_override is None else codes_override[1].shape[1]
        created = []
        try:
            apps = create_row_files(self._dir, self._uuid, self._new_file_no, m, self._d,
                                    self._vdtype, created)
            self._check_ends()
            copy_live_rows(apps, rows, self._seg_ids, self._seg_ends, self._seg_rec,
                           self._seg_codes, self._seg_vecs, codes_override)
            for a in apps.values():
                if sync:
                    a.sync()
            new_ids = np.frombuffer(read_appended(apps["ids"], 0), _I8) if len(rows) else _EMPTY_I8
            files = {k: a.publish() for k, a in apps.items()}
            srt = len(new_ids) < 2 or bool((new_ids[1:] > new_ids[:-1]).all())
            if not srt:
                order = np.argsort(new_ids, kind="stable").astype(_I8)
                files["order"] = write_new_file(self._dir, file_name(self._new_file_no(), KIND_ORDER),
                                                KIND_ORDER, self._uuid, [order], width=8, sync=sync)
            if "keys" in self._man["files"]:     # keys map to ids: unchanged by renumbering
                files["keys"] = self._man["files"]["keys"]
            terms = self._terms_rewrite(rows, sync)
            index_entry = self._man["index"]
            if index is None and index_entry is not None and self.on_renumber is not None:
                index = self.on_renumber(rows)
            if index is not None:
                index_entry = write_index_file(self._dir, self._new_file_no, self._uuid, *index, sync)
            gen = self._gen + 1
            body = dict(self._man)
            body.update(files=files, n=len(rows), sorted=srt, index=index_entry, format=2, terms=terms,
                        meta=self._meta if meta is None else meta,
                        txn=self._txn if txn is None else txn, wal=wal_name(gen), m=m,
                        next_file=self._next_file)
            create_log(self._dir, gen, self._uuid, self._durability == "full", sync)
            write_manifest(self._dir, gen, body, sync, self._set_broken)
        finally:
            for a in created:
                a.close()
        try:
            self._open_appenders_from(body)
        except BaseException as e:
            self._broken = e
            raise
        self._after_swap(gen, body)

    # ------------------------------------------------------------------ term postings

    def _checked_runs(self, runs: list[TermRun]) -> list[TermRun]:
        for r in runs:
            if not r._checked:
                r.check(self._where(r.mapped.name))  # type: ignore[union-attr]  # stored runs are mapped
        return runs

    def _terms_checkpoint(self, apps, n: int, sync: bool, build: bool = False) -> dict:
        """The manifest's ``terms`` entry after a checkpoint to ``n`` rows: a new run
        for the rows past the stored ones that the in-memory tail already holds (with
        ``build``, every row past them, tokenised now), merged into the runs before
        it as :func:`~.terms.add_tiered` says; only new or merged runs are written.
        Without ``build`` (a commit's checkpoint) nothing is tokenised and a run that
        cannot be merged (damaged) is left as it is."""
        runs = list(self._term_runs)
        old = self._man.get("terms")
        entries = list(old["runs"]) if old else []
        covered = sum(r.n for r in runs)
        if n > covered:
            tail = self._terms_tail
            parts = [r for r in tail.runs if r.r0 + r.n <= n] if tail.start == covered else []
            upto = parts[-1].r0 + parts[-1].n if parts else covered
            if build and upto < n:
                parts.append(build_run(self.tokenizer, upto, self._checkpoint_texts(apps, upto, n)))
            if not parts:
                return {"spec": self._text_spec, "runs": entries}
            new = parts[0] if len(parts) == 1 else merge_runs(parts)
            try:
                merged = add_tiered(runs, new, lambda rs: merge_runs(self._checked_runs(rs)))
            except CorruptDatabaseError:
                if build:
                    raise
                merged = runs + [new]
            k = 0
            while k < min(len(runs), len(merged)) and merged[k] is runs[k]:
                k += 1
            entries = entries[:k] + [write_run(self._dir, self._new_file_no, self._uuid, r, sync)
                                     for r in merged[k:]]
        return {"spec": self._text_spec, "runs": entries}

    def _checkpoint_texts(self, apps, a: int, b: int) -> list:
        """Texts of rows ``a .. b`` while a checkpoint appends them: mapped rows and
        the log's rows from the snapshot, spilled rows (written straight into the row
        files, not mapped yet) from the appended bytes."""
        out: list = []
        seg_n = self._seg_n
        if a < min(b, seg_n):
            out += self._texts_of(a, min(b, seg_n))
        lo = max(a, seg_n)
        first_chunk = self._chunk_rows[0] if self._chunks else b
        if lo < min(first_chunk, b):
            hi = min(first_chunk, b)
            ends = np.frombuffer(read_appended(apps["ends"], 8 * seg_n), _U8)
            base = int(self._seg_ends[-1]) if seg_n else 0
            rec = read_appended(apps["rec"], base)
            where = self._where(apps["rec"].name)
            for r in range(lo, hi):
                st = int(ends[r - seg_n - 1]) if r > seg_n else base
                out.append(decode_record(0, rec[st - base:int(ends[r - seg_n]) - base], where).text)
        if max(lo, first_chunk) < b:
            out += self._texts_of(max(lo, first_chunk), b)
        return out

    def _terms_rewrite(self, rows: np.ndarray, sync: bool) -> dict:
        """The ``terms`` entry of a compaction keeping ``rows`` (renumbered 0..): one
        run, the postings of the kept rows that stored runs and the in-memory tail
        hold, renumbered (rows past them stay for :meth:`index_text`; nothing is
        tokenised here). Postings that fail their check are dropped, not copied: they
        derive from the texts, and :meth:`index_text` builds them again."""
        try:
            runs = self._checked_runs(list(self._term_runs))
        except CorruptDatabaseError:
            return {"spec": self._text_spec, "runs": []}
        covered = sum(r.n for r in runs)
        tail = self._terms_tail
        if tail.start == covered:
            runs += [r for r in tail.runs if r.r0 + r.n <= self._n]
        entries = []
        if runs and len(rows):
            remap = np.full(self._n, -1, _I8)
            remap[rows] = np.arange(len(rows))
            entries.append(write_run(self._dir, self._new_file_no, self._uuid,
                                     merge_runs(runs, remap, 0), sync))
        return {"spec": self._text_spec, "runs": entries}

    def _open_appenders_from(self, body) -> None:
        self._man = body
        self._open_appenders()

    def _commit_rewrite(self, txn) -> int:
        ids, codes = txn._rewrite
        try:
            if self._log.pos > HEADER_SIZE or self._index_pending is not None:
                self._checkpoint()
        except OSError:
            self._recover_after_failure()
            raise
        live_ids = self._seg_ids[self._live[:self._n]]
        o = np.argsort(ids, kind="stable")
        sid, sc = ids[o], codes[o]
        if len(sid) != len(live_ids) or (len(sid) > 1 and not (sid[1:] > sid[:-1]).all()) or not np.array_equal(np.sort(live_ids), sid):
            raise InvalidArgumentError("replace_codes must give codes for exactly the live ids, once each")
        index = meta = None
        for op in txn._ops:
            if op[0] == "index":
                index = (op[1], op[2])
            elif op[0] == "meta":
                meta = op[1]
        try:
            self._rewrite((sid, sc), index=index, meta=meta, txn=self._txn + 1)
        except BaseException:
            self._recover_after_failure()
            raise
        return self._txn
