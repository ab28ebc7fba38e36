"""``where`` filters: validation, and evaluation as a predicate or over field indexes.

A filter is a dict, MongoDB style::

    {"lang": "en"}                                   # equality
    {"src.site": "arxiv"}                            # a dotted path into nested dicts
    {"tags": "ml"}                                   # a list field: the list holds "ml"
    {"year": {"$gte": 2000, "$lt": 2010}}            # comparisons (all must hold)
    {"tag": {"$in": ["a", "b"]}, "src": {"$nin": ["spam"]}}
    {"tags": {"$all": ["ml", "nlp"]}}                # the list holds every value
    {"tags": {"$contains": "ml"}}                    # list membership; substring of a str
    {"doi": {"$exists": True}}
    {"year": {"$not": {"$gt": 2000}}}                # negates the operators it holds
    {"$or": [{"lang": "en"}, {"lang": "fr"}]}         # $and / $or of filters
    {"$not": {"lang": "en", "year": 2020}}           # negates a whole filter
    {"$text": "capital france"}                      # text holds every word (word index)

Semantics (those of MongoDB's ``find``, except where said):

* A field name is a path: a literal top-level key of that name wins, else the dots
  walk nested dicts, and a list of dicts met on the way is walked into each dict (the
  condition holds when it holds for any value reached). A literal key containing a
  dot is found only at the top level.
* A condition on a field whose value is a list holds when it holds for the list
  itself or for one of its elements: ``{"tags": "a"}`` matches ``["a", "b"]``, and
  ``{"tags": ["a", "b"]}`` matches that exact list. Each operator of a dict is
  checked on its own (``{"$gt": 1, "$lt": 3}`` matches ``[0, 5]``; there is no
  ``$elemMatch``).
* ``$contains``: a list holds the value as an element, or a string holds it as a
  substring. ``$all``: every value matches as ``$eq`` would.
* Equality never confuses ``True`` with ``1``; numbers compare by value (``1 ==
  1.0``); comparisons only hold between numbers or between strings.
* A concept that lacks the field matches only the negations: ``$ne``, ``$nin``,
  ``$not``, ``$exists: False`` (unlike MongoDB, ``{"x": None}`` does not match a
  missing ``x``: ask ``{"x": {"$exists": False}}``).
* ``$ne`` / ``$nin`` / ``$not`` are exact complements of ``$eq`` / ``$in`` / the
  conditions negated (so ``{"tags": {"$ne": "a"}}`` matches lists without ``"a"``).

An unknown operator or an ill-typed argument raises
:class:`~sutradb.errors.InvalidArgumentError` naming where it is
(``where.tags.$all: ...``), never a filter that silently matches nothing: NaN,
a comparison with anything but a number or a string, ``$in`` / ``$nin`` / ``$all``
without a list (``$all`` also not empty), ``$contains`` with a list or a dict,
``$exists`` with anything but a bool, ``$not`` without an operator dict, a value no
metadata can hold (NumPy scalars are taken as the Python ones).

:func:`compile_where` validates a filter once and returns a :class:`Filter`. The
database evaluates it either as a predicate over each concept's metadata
(:meth:`Filter.match`) or, usually, over :class:`~sutradb.index.fields.FieldIndex`
objects of the paths it names (:meth:`Filter.mask`), which give the same answer
without visiting every concept. This module knows nothing of storage.
"""

from __future__ import annotations

import operator
from typing import Callable

import numpy as np

from ..errors import InvalidArgumentError
from .fields import FieldIndex, FieldTables, comparable, freeze, resolve, values_equal

__all__ = ["compile_where", "Filter", "FIELD_OPS", "TOP_OPS"]

#: Operators of a field's condition dict.
FIELD_OPS = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$contains", "$all",
             "$exists", "$not")
#: Operators at the level of a filter.
TOP_OPS = ("$and", "$or", "$not", "$text")

_CMP = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}


# ---------------------------------------------------------------------- the tree

class _Node:
    """A condition: :meth:`match` on one concept, :meth:`mask` over field indexes."""

    __slots__ = ()

    def match(self, i, md, texts) -> bool:           # pragma: no cover - abstract
        raise NotImplementedError

    def mask(self, ctx) -> np.ndarray:               # pragma: no cover - abstract
        raise NotImplementedError

    def required(self, texts):
        """A set every matching id belongs to, or None."""
        return None


class _All(_Node):
    __slots__ = ()

    def match(self, i, md, texts):
        return True

    def mask(self, ctx):
        return np.ones(ctx.n, np.bool_)


class _And(_Node):
    __slots__ = ("subs",)

    def __init__(self, subs):
        self.subs = subs

    def match(self, i, md, texts):
        return all(s.match(i, md, texts) for s in self.subs)

    def mask(self, ctx):
        subs = self.subs
        m = subs[0].mask(ctx)
        for s in subs[1:]:
            m &= s.mask(ctx)
        return m

    def required(self, texts):
        sets = [r for r in (s.required(texts) for s in self.subs) if r is not None]
        if not sets:
            return None
        sets.sort(key=len)
        out = set(sets[0])
        for s in sets[1:]:
            out &= s
        return out


class _Or(_And):
    __slots__ = ()

    def match(self, i, md, texts):
        return any(s.match(i, md, texts) for s in self.subs)

    def mask(self, ctx):
        subs = self.subs
        m = subs[0].mask(ctx)
        for s in subs[1:]:
            m |= s.mask(ctx)
        return m

    def required(self, texts):
        return None


class _Not(_Node):
    __slots__ = ("sub",)

    def __init__(self, sub):
        self.sub = sub

    def match(self, i, md, texts):
        return not self.sub.match(i, md, texts)

    def mask(self, ctx):
        m = self.sub.mask(ctx)
        np.logical_not(m, out=m)
        return m


class _Text(_Node):
    __slots__ = ("query",)

    def __init__(self, query):
        self.query = query

    def match(self, i, md, texts):
        return i in texts[self.query]

    def mask(self, ctx):
        m = np.zeros(ctx.n, np.bool_)
        ids = ctx.texts[self.query]
        if ids:
            a = np.fromiter(ids, np.int64, len(ids))
            m[a[a < ctx.n]] = True
        return m

    def required(self, texts):
        return texts[self.query]


class _Leaf(_Node):
    """A positive condition on the values of one path (it never holds when the path
    is missing): :meth:`test` on the values, :meth:`lookup` in a field index."""

    __slots__ = ("path",)

    def match(self, i, md, texts):
        vals = resolve(md, self.path) if md else None
        return bool(vals) and self.test(vals)

    def mask(self, ctx):
        return ctx.field(self.path).mask(ctx.n, self.lookup, self.test)

    def test(self, vals: list) -> bool:              # pragma: no cover - abstract
        raise NotImplementedError

    def lookup(self, t: FieldTables) -> list:        # pragma: no cover - abstract
        raise NotImplementedError


def _flat(vals):
    """The values and the elements of list values."""
    for v in vals:
        if type(v) is list:
            yield from v
        else:
            yield v


class _Eq(_Leaf):
    __slots__ = ("value", "key")

    def __init__(self, path, value):
        self.path = path
        self.value = value
        self.key = freeze(value)

    def test(self, vals):
        a = self.value
        for v in vals:
            if values_equal(v, a):
                return True
            if type(v) is list:
                for x in v:
                    if values_equal(x, a):
                        return True
        return False

    def lookup(self, t):
        return t.equal(self.key)


class _In(_Leaf):
    __slots__ = ("eqs", "keys", "strs")

    def __init__(self, path, values):
        self.path = path
        self.eqs = [_Eq(path, v) for v in values]
        self.keys = list(dict.fromkeys(freeze(v) for v in values))
        self.strs = frozenset(values) if all(isinstance(v, str) for v in values) else None

    def test(self, vals):
        strs = self.strs
        if strs is not None:
            return any(isinstance(x, str) and x in strs for x in _flat(vals))
        return any(e.test(vals) for e in self.eqs)

    def lookup(self, t):
        out = []
        for k in self.keys:
            out += t.equal(k)
        return out


class _Contains(_Leaf):
    __slots__ = ("value", "key")

    def __init__(self, path, value):
        self.path = path
        self.value = value
        self.key = freeze(value)

    def test(self, vals):
        a = self.value
        for v in vals:
            if type(v) is list:
                for x in v:
                    if values_equal(x, a):
                        return True
            elif isinstance(v, str) and isinstance(a, str) and a in v:
                return True
        return False

    def lookup(self, t):
        out = t.element(self.key)
        if isinstance(self.value, str):
            out += t.substring(self.value)
        return out


class _Exists(_Leaf):
    __slots__ = ()

    def __init__(self, path):
        self.path = path

    def test(self, vals):
        return True

    def lookup(self, t):
        return [t.present]


class _Cmp(_Leaf):
    __slots__ = ("op", "value", "fn")

    def __init__(self, path, op, value):
        self.path = path
        self.op = op
        self.value = value
        self.fn = _CMP[op]

    def test(self, vals):
        a, fn = self.value, self.fn
        return any(comparable(x, a) and fn(x, a) for x in _flat(vals))

    def lookup(self, t):
        op, a = self.op, self.value
        if op in ("$gt", "$gte"):
            return t.range(a, op == "$gte", None, False)
        return t.range(None, False, a, op == "$lte")


# ---------------------------------------------------------------------- Filter

class _Ctx:
    __slots__ = ("n", "field", "texts")

    def __init__(self, n, field, texts):
        self.n = n
        self.field = field
        self.texts = texts


class Filter:
    """A compiled ``where`` filter.

    Attributes
    ----------
    where : dict
        The filter as given.
    paths : tuple of str
        The metadata paths it looks at (in order of first mention).
    text_queries : tuple of str
        The ``$text`` queries it holds (the caller resolves each to a set of ids with
        the word index and passes them as ``texts``).
    """

    __slots__ = ("where", "paths", "text_queries", "_root")

    def __init__(self, where, root, paths, text_queries):
        self.where = where
        self._root = root
        self.paths = tuple(dict.fromkeys(paths))
        self.text_queries = tuple(dict.fromkeys(text_queries))

    @property
    def uses_fields(self) -> bool:
        """Whether it looks at metadata (else only ``$text`` conditions, or nothing)."""
        return bool(self.paths)

    def match(self, id_: int, metadata: dict, texts: dict) -> bool:
        """Whether concept ``id_`` with ``metadata`` passes (``texts``: ``$text``
        query -> set of ids holding its words)."""
        return self._root.match(id_, metadata, texts)

    def select(self, items, texts: dict) -> list[int]:
        """Ids of the ``(id, metadata)`` pairs of ``items`` that pass."""
        m = self._root.match
        return [i for i, md in items if m(i, md, texts)]

    def candidates(self, texts: dict) -> set | None:
        """A set of ids every match belongs to (from ``$text`` conditions that must
        hold), or None when the filter does not narrow the candidates that way."""
        return self._root.required(texts)

    def mask(self, n: int, field: Callable[[str], FieldIndex], texts: dict) -> np.ndarray:
        """Which ids in ``[0, n)`` pass, over field indexes.

        Parameters
        ----------
        n : int
            Above every id.
        field : callable
            ``field(path)``: the :class:`~sutradb.index.fields.FieldIndex` of one of
            :attr:`paths`, holding every id (those without the path included, as
            missing).
        texts : dict
            ``$text`` query -> set of ids.

        Returns
        -------
        (n,) bool ndarray
            True for the ids that pass; ids the indexes do not hold pass the
            negations, so the caller intersects with the ids that exist.
        """
        return self._root.mask(_Ctx(int(n), field, texts))

    def __repr__(self):
        return f"Filter({self.where!r})"


def compile_where(where) -> Filter:
    """Validate ``where`` and compile it.

    Raises
    ------
    InvalidArgumentError
        Not a dict, an unknown ``$`` operator, an ill-typed operator argument, an
        empty ``$and``/``$or``... The message starts with where in the filter the
        fault is (``where.tags.$all``, ``where.$or[1].year.$gt``).
    """
    texts: list[str] = []
    paths: list[str] = []
    root = _compile(where, texts, paths, "where")
    return Filter(where, root, paths, texts)


def _compile(where, texts, paths, at) -> _Node:
    if not isinstance(where, dict):
        raise InvalidArgumentError(f"{at} must be a dict, got {type(where).__name__}")
    nodes: list[_Node] = []
    for key, value in where.items():
        if not isinstance(key, str):
            raise InvalidArgumentError(f"{at}: field names must be str, got {key!r}")
        here = f"{at}.{key}"
        if key in ("$and", "$or"):
            if not isinstance(value, (list, tuple)) or not value:
                raise InvalidArgumentError(f"{here} must be a non-empty list of filters")
            subs = [_compile(v, texts, paths, f"{here}[{j}]") for j, v in enumerate(value)]
            nodes.append(_And(subs) if key == "$and" else _Or(subs))
        elif key == "$not":
            if not isinstance(value, dict) or not value:
                raise InvalidArgumentError(f"{here} must be a non-empty filter dict, got {value!r}")
            nodes.append(_Not(_compile(value, texts, paths, here)))
        elif key == "$text":
            if not isinstance(value, str):
                raise InvalidArgumentError(f"{here} must be a str of words")
            texts.append(value)
            nodes.append(_Text(value))
        elif key.startswith("$"):
            raise InvalidArgumentError(f"{at}: unknown operator {key!r} (fields cannot start "
                                       f"with '$'; operators here: {', '.join(TOP_OPS)})")
        else:
            paths.append(key)
            nodes.append(_field(key, value, here))
    if not nodes:
        return _All()
    return nodes[0] if len(nodes) == 1 else _And(nodes)


def _is_ops(cond) -> bool:
    return isinstance(cond, dict) and bool(cond) and all(
        isinstance(k, str) and k.startswith("$") for k in cond)


def _field(name, cond, at) -> _Node:
    if not _is_ops(cond):
        if isinstance(cond, dict) and any(isinstance(k, str) and k.startswith("$") for k in cond):
            raise InvalidArgumentError(f"{at}: do not mix operators and plain keys")
        return _Eq(name, _value(cond, at))
    nodes = [_op(name, op, arg, f"{at}.{op}") for op, arg in cond.items()]
    return nodes[0] if len(nodes) == 1 else _And(nodes)


def _op(name, op, arg, at) -> _Node:
    if op == "$eq":
        return _Eq(name, _value(arg, at))
    if op == "$ne":
        return _Not(_Eq(name, _value(arg, at)))
    if op in ("$in", "$nin", "$all"):
        if not isinstance(arg, (list, tuple, set, frozenset)):
            raise InvalidArgumentError(f"{at} needs a list of values, got {type(arg).__name__}")
        vals = [_value(v, f"{at}[{j}]") for j, v in enumerate(arg)]
        if op == "$all":
            if not vals:
                raise InvalidArgumentError(f"{at} needs at least one value")
            nodes = [_Eq(name, v) for v in vals]
            return nodes[0] if len(nodes) == 1 else _And(nodes)
        node = _In(name, vals)
        return node if op == "$in" else _Not(node)
    if op in _CMP:
        arg = _value(arg, at)
        if isinstance(arg, bool) or not isinstance(arg, (int, float, str)):
            raise InvalidArgumentError(f"{at} compares with a number or a string, got {arg!r}")
        return _Cmp(name, op, arg)
    if op == "$contains":
        arg = _value(arg, at)
        if isinstance(arg, (list, dict)):
            raise InvalidArgumentError(f"{at} takes one value (an element of a list, or a "
                                       f"substring), got {arg!r}; use $all for several")
        return _Contains(name, arg)
    if op == "$exists":
        if not isinstance(arg, (bool, np.bool_)):
            raise InvalidArgumentError(f"{at} takes True or False, got {arg!r}")
        return _Exists(name) if arg else _Not(_Exists(name))
    if op == "$not":
        if not _is_ops(arg):
            raise InvalidArgumentError(f"{at} takes a dict of operators such as "
                                       f"{{'$gt': 2000}}, got {arg!r}")
        return _Not(_field(name, arg, at))
    raise InvalidArgumentError(f"{at}: unknown operator {op!r} (one of {', '.join(FIELD_OPS)})")


def _value(v, at):
    """A filter value as metadata would hold it (NumPy scalars as the Python ones,
    subclasses such as ``IntEnum`` / ``StrEnum`` members as their base type, tuples as
    lists); InvalidArgumentError for NaN or a type metadata cannot hold."""
    t = type(v)
    if t is str or t is int or t is bool or v is None or t is bytes:
        return v
    if isinstance(v, np.generic) and isinstance(v, (np.bool_, np.integer, np.floating, np.str_,
                                                     np.bytes_)):
        return _value(v.item(), at)
    if isinstance(v, float):
        if v != v:
            raise InvalidArgumentError(f"{at}: NaN equals and compares with nothing")
        return float(v)
    if isinstance(v, int):                     # bool is final: an int subclass here
        return int(v)
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, bytes):
        return bytes(v)
    if isinstance(v, (list, tuple)):
        return [_value(x, f"{at}[{j}]") for j, x in enumerate(v)]
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise InvalidArgumentError(f"{at}: dict keys must be str, got {k!r}")
            out[str.__str__(k)] = _value(x, f"{at}.{k}")
        return out
    raise InvalidArgumentError(f"{at}: {type(v).__name__} is not a metadata value (None, bool, "
                               "int, float, str, bytes, lists and dicts of them)")
