"""The log's tail of a :class:`~.snapshot.Snapshot`: applying the operations of one
committed transaction (rows put, deletes, links, index and meta) to the in-memory
state, and resolving which rows stay live.

A committed transaction's rows become a chunk of the tail (the rows after the
checkpointed segments); a delete at time ``t`` kills the id's rows below ``t``. The
checkpoint later moves the tail into segment files (:mod:`.checkpoint`). Replaying the
log on open (:mod:`.wal`) and every commit go through here, so a reader and the writer
derive the same state from the same log.
"""

from __future__ import annotations


import numpy as np

from ..errors import CorruptDatabaseError

__all__ = ["TailMixin", "concat_rows"]

_I8 = np.dtype("<i8")
_EMPTY_I8 = np.zeros(0, _I8)


class TailMixin:
    """Applying committed transactions to a snapshot's state (a mixin of :class:`~.snapshot.Snapshot`, over its attributes)."""

    def _apply(self, ops, spilled_rows=None):
        """Apply the ops of one committed transaction to the in-memory state.

        ``spilled_rows``: for a spilled transaction, the ids of its rows, which are
        already in the segment files right after the checkpointed rows.
        """
        r0 = self._n
        row = r0
        puts = []
        dels = []
        for op in ops:
            t = op[0]
            if t == "put":
                ch = op[1]
                k = len(ch.ids)
                if ch.codes is not None and self._m == 0 and self._n == 0 and row == r0:
                    self._m = ch.codes.shape[1]
                if ch.vecs is not None and self._d == 0 and self._n == 0 and row == r0:
                    self._d, self._vdtype = ch.vecs.shape[1], ch.vecs.dtype
                if ((ch.codes.shape[1] if ch.codes is not None else 0) != self._m
                        or (ch.vecs.shape[1] if ch.vecs is not None else 0) != self._d
                        or (ch.vecs is not None and ch.vecs.dtype != self._vdtype)):
                    raise CorruptDatabaseError(f"{self._where(self._man['wal'])}: row width does not match the store")
                ch.row0 = row
                self._chunks.append(ch)
                self._chunk_rows.append(row)
                puts.append(ch.ids)
                self._keys.note(row, ch.ids, ch.keys)
                row += k
            elif t == "putf":
                puts.append(op[1])
                self._keys.note(row, op[1], op[2])
                row += len(op[1])
            elif t == "del":
                dels.append((op[1], row))
                self._links.drop_ids(op[1])
            elif t == "link":
                _, src, dst, rels, w = op
                set_link = self._links.set
                for s, d_, r, x in zip(src.tolist(), dst.tolist(), rels, w.tolist()):
                    set_link((s, d_, r), x)
            elif t == "unlink":
                _, src, dst, rels = op
                set_link = self._links.set
                for s, d_, r in zip(src.tolist(), dst.tolist(), rels):
                    set_link((s, d_, r), None)
            elif t == "index":
                self._index_pending = (op[1], op[2])
            elif t == "meta":
                self._meta = op[1]
        if row > r0 or dels:
            self._resolve_rows(r0, row, puts, dels, spilled_rows is not None)
        self._cache = {}

    def _resolve_rows(self, r0, n_new, puts, dels, spilled):
        """Liveness after a transaction that appended rows ``r0 .. n_new`` and deleted
        ``dels`` (ids, time) where a delete at time ``t`` kills rows below ``t``."""
        if not spilled and n_new - r0 <= 64 and sum(len(d) for d, _ in dels) <= 64:
            return self._resolve_small(r0, n_new, puts, dels)
        P = concat_rows(puts, _I8)
        s = len(P)
        if n_new > len(self._live):
            grown = np.ones(max(n_new, 2 * len(self._live)), bool)
            grown[:self._n] = self._live[:self._n]
            self._live = grown
        self._live[r0:n_new] = False
        D = concat_rows([d for d, _ in dels], _I8)
        DT = np.concatenate([np.full(len(d), t, _I8) for d, t in dels]) if dels else _EMPTY_I8
        touched = np.union1d(P, D)
        old = self._rows_of_committed(touched)
        old = old[old >= 0]
        self._live[old] = False
        killed = [old]
        if s:
            uid, first_rev = np.unique(P[::-1], return_index=True)
            lp = s - 1 - first_rev                      # position of the last put of uid
            ld = np.full(len(uid), -1, _I8)
            if len(D):
                uD, inv = np.unique(D, return_inverse=True)
                tD = np.full(len(uD), -1, _I8)
                np.maximum.at(tD, inv, DT)
                pos = np.searchsorted(uD, uid)
                pos_c = np.minimum(pos, len(uD) - 1)
                hit = uD[pos_c] == uid
                ld[hit] = tD[pos_c[hit]]
            alive = (r0 + lp) >= ld
            keep = r0 + lp[alive]
            self._live[keep] = True
            newdead = np.ones(s, bool)
            newdead[lp[alive]] = False
            killed.append(r0 + np.flatnonzero(newdead))
            if not spilled:
                tm = self._tail_map
                for i, r in zip(uid[alive].tolist(), keep.tolist()):
                    tm[i] = r
        self._n = n_new
        kd = concat_rows(killed, _I8)
        if len(kd):
            self._tail_dead.append(kd)
        self._n_live = int(np.count_nonzero(self._live[:n_new])) if spilled or s > 4096 else (
            self._n_live + int(np.count_nonzero(self._live[r0:n_new])) - len(old))

    def _resolve_small(self, r0, n_new, puts, dels) -> None:
        """:meth:`_resolve_rows` for a few rows, in plain Python (the commit latency of
        small transactions)."""
        if n_new > len(self._live):
            grown = np.ones(max(n_new, 2 * len(self._live)), bool)
            grown[:self._n] = self._live[:self._n]
            self._live = grown
        live = self._live
        tm = self._tail_map
        if not dels and n_new == r0 + 1:            # one row put: the common commit
            i = int(puts[0][0])
            old_row = self._live_row(i)
            if old_row >= 0:
                live[old_row] = False
                self._tail_dead.append(np.array([old_row], _I8))
            live[r0] = True
            tm[i] = r0
            self._n = n_new
            self._n_live += old_row < 0
            return
        P = [i for p in puts for i in p.tolist()]
        last = {}                                   # id -> (kind, row or time): the last event
        events = [(r0 + j, "put", i) for j, i in enumerate(P)]
        events += [(t, "del", i) for d, t in dels for i in d.tolist()]
        # a put at row r happens "at" r; a delete at time t comes after rows < t
        events.sort(key=lambda e: (e[0], e[1] == "put"))
        for when, kind, i in events:
            last[i] = (kind, when)
        old = [self._live_row(i) for i in last]
        live[r0:n_new] = False
        killed = [r for r in old if r >= 0]
        for r in killed:
            live[r] = False
        alive = 0
        for i, (kind, when) in last.items():
            if kind == "put":
                live[when] = True
                tm[i] = when
                alive += 1
        killed += [r for r in range(r0, n_new) if not live[r]]
        self._n = n_new
        if killed:
            self._tail_dead.append(np.array(killed, _I8))
        self._n_live += alive - sum(r >= 0 for r in old)


def concat_rows(parts, dtype, width=None) -> np.ndarray:
    """The arrays of ``parts`` (None skipped) one after the other, C-contiguous; an
    empty (0[, width]) array of ``dtype`` when there are none."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return np.zeros((0, width) if width else 0, dtype)
    return np.ascontiguousarray(np.concatenate(parts))
