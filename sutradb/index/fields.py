"""Metadata values as filters see them, and the field index.

Value semantics (shared by the ``where`` predicate of :mod:`sutradb.index.filters`
and by :class:`FieldIndex`, so that both always agree):

* :func:`resolve` — the values a dotted path reaches in a metadata dict. A literal
  top-level key wins (``{"a.b": 1}`` has a field ``"a.b"``); otherwise the path walks
  nested dicts, and a list met on the way is walked element by element (every dict in
  it; MongoDB's rule), so one path can reach several values.
* :func:`values_equal` — equality: ``bool`` only equals ``bool`` (``True`` is not
  ``1``), numbers compare by value (``1 == 1.0``), lists element-wise, dicts key by
  key; NaN equals nothing.
* :func:`freeze` — a hashable key with the same equality (None for a value that
  equals nothing: one holding a NaN).
* :func:`comparable` — whether ``x < a`` is meaningful: two numbers (not bools) or
  two strings.

:class:`FieldIndex` maps the values of one path to the ids that hold them: a
value -> ids posting table (whole values and elements of list values apart), sorted
numbers and strings with their ids for ranges, and the ids that have the path. It is
built from an id -> metadata mapping that its owner keeps current (telling it of
each change with :meth:`FieldIndex.changed`), and answers a filter condition as an
id mask. It keeps no copy of the values: the ids changed since the last build (the
*dirty* ids) are re-checked one by one against their metadata in the mapping, and the
tables are rebuilt when that re-checking has cost as much as a rebuild (so a stream
of single writes between queries costs at most twice the best of "rebuild every
time" and "never rebuild"). This module knows nothing of storage.
"""

from __future__ import annotations

import bisect
import threading
from itertools import chain
from typing import Callable

import numpy as np

__all__ = ["resolve", "values_equal", "freeze", "comparable", "is_number", "FieldIndex",
           "FieldTables"]

_I8 = np.int64


def is_number(x) -> bool:
    """Whether ``x`` is an int or a float and not a bool."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def comparable(x, a) -> bool:
    """Whether ``x`` and ``a`` compare in a range condition: two numbers (not bools)
    or two strings."""
    return (is_number(x) and is_number(a)) or (isinstance(x, str) and isinstance(a, str))


def values_equal(a, b) -> bool:
    """Equality of metadata values (see the module docstring)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if is_number(a):
        return is_number(b) and a == b
    if isinstance(a, (list, tuple)):
        return (isinstance(b, (list, tuple)) and len(a) == len(b)
                and all(values_equal(x, y) for x, y in zip(a, b)))
    if isinstance(a, dict):
        return (isinstance(b, dict) and len(a) == len(b)
                and all(k in b and values_equal(v, b[k]) for k, v in a.items()))
    if a is None:
        return b is None
    return type(a) is type(b) and a == b


def freeze(v):
    """A hashable key of ``v`` under :func:`values_equal`: two values are equal if and
    only if their keys are (None: ``v`` equals nothing, it holds a NaN).

    A str, a number (not a bool) or bytes is its own key (they never equal one
    another); the others are tuples. Takes the types metadata holds (exact ``str``,
    ``int``... as msgpack gives them back); anything else equals nothing.
    """
    t = type(v)
    if t is str or t is int or t is bytes:
        return v
    if t is float:
        return v if v == v else None
    if t is bool:
        return ("b", v)
    if v is None:
        return ("z",)
    if t is list or t is tuple:
        out = []
        for x in v:
            k = freeze(x)
            if k is None:
                return None
            out.append(k)
        return ("l", tuple(out))
    if t is dict:
        out = []
        for key, x in v.items():
            k = freeze(x)
            if k is None:
                return None
            out.append((key, k))
        return ("d", frozenset(out))
    return None


def resolve(md: dict, path: str) -> list:
    """The values at dotted ``path`` of metadata ``md`` (empty: the path is missing).

    >>> resolve({"src": {"site": "x"}}, "src.site")
    ['x']
    >>> resolve({"a": [{"b": 1}, {"c": 2}, {"b": [3]}]}, "a.b")
    [1, [3]]
    >>> resolve({"a.b": 1, "a": {"b": 2}}, "a.b")      # a literal key wins
    [1]
    """
    if path in md:
        return [md[path]]
    if "." not in path:
        return []
    cur = [md]
    for part in path.split("."):
        nxt = []
        for c in cur:
            if isinstance(c, dict):
                if part in c:
                    nxt.append(c[part])
            elif isinstance(c, list):
                for e in c:
                    if isinstance(e, dict) and part in e:
                        nxt.append(e[part])
        if not nxt:
            return []
        cur = nxt
    return cur


def _concat(lists, n):
    """The lists of ids concatenated (int64), and the n + 1 offsets (Python ints)."""
    lists = list(lists)
    offs = [0] * (n + 1)
    total = 0
    for j, x in enumerate(lists):
        total += len(x)
        offs[j + 1] = total
    return np.fromiter(chain.from_iterable(lists), _I8, total), offs


class FieldTables:
    """The immutable lookup tables of a :class:`FieldIndex` at one build.

    Every method returns a list of int64 id arrays (an id may repeat); the caller
    sets them in a mask.

    Attributes
    ----------
    present : (p,) int64
        The ids that have the path.
    """

    __slots__ = ("present", "_ids", "_whole", "_elem", "_num_keys", "_num_off", "_num_ids",
                 "_str_keys", "_str_off", "_str_ids", "_str_whole")

    def __init__(self, vals: dict):
        whole: dict = {}
        elem: dict = {}
        wget, eget = whole.get, elem.get
        for i, leaves in vals.items():
            for v in leaves:
                t = type(v)
                if t is list:
                    ks = [x if (type(x) is str or type(x) is int) else freeze(x) for x in v]
                    for k in ks:
                        if k is not None:
                            lst = eget(k)
                            if lst is None:
                                elem[k] = [i]
                            elif lst[-1] != i:
                                lst.append(i)
                    k = None if None in ks else ("l", tuple(ks))
                else:
                    k = v if (t is str or t is int) else freeze(v)
                if k is not None:
                    lst = wget(k)
                    if lst is None:
                        whole[k] = [i]
                    else:
                        lst.append(i)
        self.present = np.fromiter(vals.keys(), _I8, len(vals))
        # one array holds every posting list: whole values, then elements
        self._ids, offs = _concat(chain(whole.values(), elem.values()), len(whole) + len(elem))
        nw = len(whole)
        self._whole = dict(zip(whole, zip(offs[:nw], offs[1:nw + 1])))
        self._elem = dict(zip(elem, zip(offs[nw:-1], offs[nw + 1:])))
        # ranges: the distinct numbers (strings), sorted, with the ids holding each one
        # as a value or as an element of a list value
        nums, strs = set(), set()
        for k in chain(whole, elem):
            t = type(k)
            if t is str:
                strs.add(k)
            elif t is int or t is float:
                nums.add(k)
        self._num_keys, self._num_off, self._num_ids = self._sorted(nums, whole, elem)
        self._str_keys, self._str_off, self._str_ids = self._sorted(strs, whole, elem)
        # substrings: the distinct string values (not list elements)
        self._str_whole = [(k, se) for k, se in self._whole.items() if type(k) is str]

    @staticmethod
    def _sorted(keys, whole, elem):
        keys = sorted(keys)
        empty = []
        lists = [whole.get(v, empty) + elem.get(v, empty) for v in keys]
        ids, offs = _concat(lists, len(lists))
        return keys, np.asarray(offs, _I8), ids

    def equal(self, key) -> list:
        """Ids holding a value equal to the one of frozen ``key``, or a list with an
        element equal to it."""
        out = []
        for table in (self._whole, self._elem):
            se = table.get(key)
            if se is not None:
                out.append(self._ids[se[0]:se[1]])
        return out

    def element(self, key) -> list:
        """Ids holding a list with an element equal to frozen ``key``."""
        se = self._elem.get(key)
        return [] if se is None else [self._ids[se[0]:se[1]]]

    def substring(self, s: str) -> list:
        """Ids holding a string value that contains ``s``."""
        ids = self._ids
        return [ids[a:b] for v, (a, b) in self._str_whole if s in v]

    def range(self, lo, lo_incl: bool, hi, hi_incl: bool) -> list:
        """Ids holding a number (a string) in the range, or a list with one: ``lo`` /
        ``hi`` are both numbers or both strings or None (unbounded), at least one
        given."""
        a = lo if lo is not None else hi
        if isinstance(a, str):
            keys, off, ids = self._str_keys, self._str_off, self._str_ids
        else:
            keys, off, ids = self._num_keys, self._num_off, self._num_ids
        p0 = 0 if lo is None else (bisect.bisect_left if lo_incl else bisect.bisect_right)(keys, lo)
        p1 = len(keys) if hi is None else (bisect.bisect_right if hi_incl else bisect.bisect_left)(keys, hi)
        if p1 <= p0:
            return []
        return [ids[off[p0]:off[p1]]]


class FieldIndex:
    """The index of one metadata path (see the module docstring).

    Parameters
    ----------
    path : str
        The dotted path (:func:`resolve`).
    source : mapping
        id -> metadata dict of every id (the owner keeps it current and calls
        :meth:`changed` for each id it changes); the index keeps no copy of the
        values, only its tables, and reads ``source`` for the ids changed since they
        were built.

    Thread safety: the owner changes ``source`` and calls :meth:`changed` while no
    query runs (the database does both under its exclusive lock); queries may run at
    once (one lock inside guards the rebuild of the tables).
    """

    __slots__ = ("path", "_source", "_tables", "_dirty", "_work", "_lock")

    #: The tables are rebuilt when the ids re-checked since the last build pass
    #: ``len(source) + SLACK``.
    SLACK = 1024

    def __init__(self, path: str, source):
        self.path = path
        self._source = source
        self._tables: FieldTables | None = None
        self._dirty: set[int] = set()
        self._work = 0
        self._lock = threading.Lock()

    def build(self) -> "FieldIndex":
        """(Re)build the tables from ``source``; returns self."""
        with self._lock:
            self._rebuild()
        return self

    def _rebuild(self):
        path = self.path
        vals = {}
        for i, md in self._source.items():
            if md:
                v = resolve(md, path)
                if v:
                    vals[i] = v
        self._tables = FieldTables(vals)
        self._dirty = set()
        self._work = 0

    @property
    def dirty_count(self) -> int:
        """How many ids changed since the tables were built."""
        return len(self._dirty)

    def changed(self, i: int) -> None:
        """The metadata of id ``i`` in ``source`` changed (or ``i`` left it)."""
        self._dirty.add(i)

    def mask(self, n: int, lookup: Callable[[FieldTables], list],
             test: Callable[[list], bool]) -> np.ndarray:
        """The ids in ``[0, n)`` that satisfy a condition, as a bool mask.

        Parameters
        ----------
        n : int
            Size of the mask (every id is below it).
        lookup : callable
            ``lookup(tables)``: the ids that satisfy the condition according to the
            :class:`FieldTables` (a list of id arrays).
        test : callable
            ``test(values)``: whether an id with ``values`` (a non-empty list, see
            :func:`resolve`) satisfies it; asked for the ids changed since the
            tables were built. The condition never holds for an id without values.
        """
        out = np.zeros(n, np.bool_)
        with self._lock:
            if self._tables is None:
                self._rebuild()
            dirty = self._dirty
            if dirty:
                self._work += len(dirty)
                if self._work > len(self._source) + self.SLACK:
                    self._rebuild()
                    dirty = self._dirty
            for ids in lookup(self._tables):
                out[ids] = True
            if dirty:
                source, path = self._source, self.path
                for i in dirty:
                    if i < n:
                        md = source.get(i)
                        v = resolve(md, path) if md else None
                        out[i] = bool(v) and test(v)
        return out
