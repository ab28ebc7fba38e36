"""``where`` filters: validation and compilation to a predicate over concepts.

A filter is a dict (MongoDB / Chroma style)::

    {"lang": "en"}                                   # equality
    {"year": {"$gte": 2000, "$lt": 2010}}            # comparisons (all must hold)
    {"tag": {"$in": ["a", "b"]}, "src": {"$nin": ["spam"]}}
    {"$or": [{"lang": "en"}, {"lang": "fr"}]}         # $and / $or of filters
    {"$text": "capital france"}                      # text holds every word (word index)

Field names are metadata keys (top level). Several conditions in one dict must all
hold. Comparisons only hold between numbers (``bool`` is not a number here) or between
strings; equality never confuses ``True`` with ``1``. A concept that lacks a field
matches only ``$ne`` / ``$nin`` conditions on it.

:func:`compile_where` validates a filter once (errors are
:class:`~sutradb.errors.InvalidArgumentError`) and returns a :class:`Filter`; the
database evaluates it over its metadata into a row mask that the scan kernels skip
(pre-filtering). This module knows nothing of storage.
"""

from __future__ import annotations

from typing import Callable

from ..errors import InvalidArgumentError

__all__ = ["compile_where", "Filter", "FIELD_OPS"]

FIELD_OPS = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte")
_MISSING = object()


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _eq(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if _is_num(a) and _is_num(b):
        return a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b))
    if type(a) is not type(b):
        return False
    return a == b


def _cmp_ok(a, b) -> bool:
    return (_is_num(a) and _is_num(b)) or (isinstance(a, str) and isinstance(b, str))


class Filter:
    """A compiled ``where`` filter.

    Attributes
    ----------
    where : dict
        The filter as given.
    text_queries : tuple of str
        The ``$text`` queries it holds (the caller resolves each to a set of ids with
        the word index and passes them to :meth:`match` as ``texts``).
    uses_fields : bool
        Whether it looks at metadata (else only ``$text`` conditions).
    """

    __slots__ = ("where", "text_queries", "uses_fields", "_pred", "_required")

    def __init__(self, where, pred, text_queries, required, uses_fields):
        self.where = where
        self.uses_fields = bool(uses_fields)
        self._pred = pred
        self.text_queries = tuple(dict.fromkeys(text_queries))
        self._required = required

    def match(self, id_: int, metadata: dict, texts: dict) -> bool:
        """Whether concept ``id_`` with ``metadata`` passes (``texts``: ``$text``
        query -> set of ids holding its words)."""
        return self._pred(id_, metadata, texts)

    def candidates(self, texts: dict) -> set | None:
        """A set of ids every match belongs to (from top-level ``$text`` conditions),
        or None when the filter does not narrow the candidates that way."""
        return self._required(texts)

    def select(self, items, texts: dict) -> list[int]:
        """Ids of the ``(id, metadata)`` pairs of ``items`` that pass."""
        pred = self._pred
        return [i for i, m in items if pred(i, m, texts)]

    def __repr__(self):
        return f"Filter({self.where!r})"


def compile_where(where) -> Filter:
    """Validate ``where`` and compile it.

    Raises
    ------
    InvalidArgumentError
        Not a dict, an unknown ``$`` operator, ``$in`` without a list, an empty
        ``$and``/``$or``, a ``$text`` that is not a string...
    """
    texts: list[str] = []
    fields: list[str] = []
    pred, required = _compile(where, texts, fields, "where")
    return Filter(where, pred, texts, required, fields)


def _none(_texts):
    return None


def _compile(where, texts, fields, path) -> tuple[Callable, Callable]:
    if not isinstance(where, dict):
        raise InvalidArgumentError(f"{path} must be a dict, got {type(where).__name__}")
    if not where:
        return (lambda i, m, t: True), _none
    preds, reqs = [], []
    for key, value in where.items():
        if not isinstance(key, str):
            raise InvalidArgumentError(f"{path}: field names must be str, got {key!r}")
        if key in ("$and", "$or"):
            if not isinstance(value, (list, tuple)) or not value:
                raise InvalidArgumentError(f"{path}.{key} must be a non-empty list of filters")
            subs = [_compile(v, texts, fields, f"{path}.{key}[{j}]") for j, v in enumerate(value)]
            sp = [s[0] for s in subs]
            if key == "$and":
                preds.append(lambda i, m, t, sp=sp: all(p(i, m, t) for p in sp))
                sr = [s[1] for s in subs]
                reqs.append(lambda t, sr=sr: _intersect([r(t) for r in sr]))
            else:
                preds.append(lambda i, m, t, sp=sp: any(p(i, m, t) for p in sp))
        elif key == "$text":
            if not isinstance(value, str):
                raise InvalidArgumentError(f"{path}.$text must be a str of words")
            texts.append(value)
            preds.append(lambda i, m, t, q=value: i in t[q])
            reqs.append(lambda t, q=value: t[q])
        elif key.startswith("$"):
            raise InvalidArgumentError(f"{path}: unknown operator {key!r} (fields cannot start with '$'; "
                                       "operators: $and, $or, $text)")
        else:
            fields.append(key)
            preds.append(_field(key, value, f"{path}.{key}"))
    if len(preds) == 1:
        pred = preds[0]
    else:
        pred = lambda i, m, t, ps=preds: all(p(i, m, t) for p in ps)  # noqa: E731
    required = (lambda t, rs=reqs: _intersect([r(t) for r in rs])) if reqs else _none  # type: ignore[misc]  # a lambda or _none, alike
    return pred, required


def _intersect(sets):
    sets = [s for s in sets if s is not None]
    if not sets:
        return None
    sets.sort(key=len)
    out = set(sets[0])
    for s in sets[1:]:
        out &= s
    return out


def _field(name, cond, path):
    if not (isinstance(cond, dict) and cond and all(isinstance(k, str) and k.startswith("$") for k in cond)):
        if isinstance(cond, dict) and any(isinstance(k, str) and k.startswith("$") for k in cond):
            raise InvalidArgumentError(f"{path}: do not mix operators and plain keys")
        cond = {"$eq": cond}
    tests = []
    for op, arg in cond.items():
        if op not in FIELD_OPS:
            raise InvalidArgumentError(f"{path}: unknown operator {op!r} (one of {', '.join(FIELD_OPS)})")
        if op in ("$in", "$nin"):
            if not isinstance(arg, (list, tuple, set, frozenset)):
                raise InvalidArgumentError(f"{path}.{op} needs a list of values, got {type(arg).__name__}")
            vals = list(arg)
            if all(isinstance(v, str) for v in vals):
                fast = frozenset(vals)
                hit = lambda x, fast=fast: isinstance(x, str) and x in fast  # noqa: E731
            else:
                hit = lambda x, vals=vals: any(_eq(x, v) for v in vals)  # noqa: E731
            if op == "$in":
                tests.append(lambda x, hit=hit: x is not _MISSING and hit(x))
            else:
                tests.append(lambda x, hit=hit: x is _MISSING or not hit(x))
        elif op == "$eq":
            tests.append(lambda x, a=arg: x is not _MISSING and _eq(x, a))
        elif op == "$ne":
            tests.append(lambda x, a=arg: x is _MISSING or not _eq(x, a))
        else:
            if not (_is_num(arg) or isinstance(arg, str)):
                raise InvalidArgumentError(f"{path}.{op} compares with a number or a string, got {arg!r}")
            if op == "$gt":
                tests.append(lambda x, a=arg: _cmp_ok(x, a) and x > a)
            elif op == "$gte":
                tests.append(lambda x, a=arg: _cmp_ok(x, a) and x >= a)
            elif op == "$lt":
                tests.append(lambda x, a=arg: _cmp_ok(x, a) and x < a)
            else:
                tests.append(lambda x, a=arg: _cmp_ok(x, a) and x <= a)
    if len(tests) == 1:
        t0 = tests[0]
        return lambda i, m, t: t0(m.get(name, _MISSING))
    return lambda i, m, t: all(tt(m.get(name, _MISSING)) for tt in tests)
