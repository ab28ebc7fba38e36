"""Test helpers for code built on sutradb: hypothesis strategies and pytest fixtures.

Strategies (``hypothesis`` must be installed)::

    from hypothesis import given
    from sutradb import testing as st_sutra

    @given(st_sutra.vectors(dim=8), st_sutra.metadata())
    def test_roundtrip(sutra_db, V, md): ...

Fixtures: add this line to your top-level ``conftest.py``::

    pytest_plugins = ["sutradb.testing"]

and use ``sutra_db`` (a fresh 8-dimensional on-disk database in a temporary directory,
closed afterwards) or ``sutra_db_factory`` (``sutra_db_factory(dim=384, metric="l2",
memory=False, **options)`` opens as many as you need). Importing the two fixtures by
name into a test module works too.

Everything generated here is what a database stores unchanged: vectors are finite
and within the float16 range, metadata round-trips through msgpack exactly (str
keys; None, bool, 64-bit ints, finite floats, str, bytes, lists, dicts).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

if TYPE_CHECKING:
    import numpy.typing as npt

    from .database import Database

__all__ = ["vectors", "vector", "metadata_values", "metadata", "keys", "texts", "concepts",
           "where_filters", "sutra_db", "sutra_db_factory", "WORDS"]

#: The small vocabulary :func:`texts` draws from (so ``$text`` filters match often).
WORDS = ("alpha", "beta", "gamma", "delta", "paris", "france", "capital", "river")


def vectors(dim: int, *, min_rows: int = 1, max_rows: int = 16, bound: float = 100.0,
            dtype: npt.DTypeLike = np.float32) -> st.SearchStrategy[np.ndarray]:
    """``(n, dim)`` arrays of finite values in ``[-bound, bound]`` (n in
    ``[min_rows, max_rows]``)."""
    if bound > 65504:
        raise ValueError("bound must stay within the float16 range")
    elements = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=32)
    return st.integers(min_rows, max_rows).flatmap(
        lambda n: hnp.arrays(dtype, (n, dim), elements=elements))


def vector(dim: int, *, bound: float = 100.0) -> st.SearchStrategy[np.ndarray]:
    """One ``(dim,)`` vector (see :func:`vectors`)."""
    return vectors(dim, min_rows=1, max_rows=1, bound=bound).map(lambda a: a[0])


def metadata_values(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Values msgpack stores unchanged: None, bool, int64, finite float, str, bytes,
    and lists / str-keyed dicts of them."""
    scalars = (st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 63 - 1)
               | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
               | st.binary(max_size=8))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                        max_leaves=max_leaves)


def metadata(*, fields: Mapping[str, st.SearchStrategy[Any]] | None = None,
             max_size: int = 4) -> st.SearchStrategy[dict[str, Any]]:
    """Metadata dicts. With ``fields`` (a dict ``name -> strategy``) each field is
    present or absent at random, which makes :func:`where_filters` selective."""
    if fields is None:
        return st.dictionaries(st.text(max_size=10), metadata_values(), max_size=max_size)
    return st.fixed_dictionaries({}, optional=dict(fields))


def keys(prefix: str = "k", n: int = 20) -> st.SearchStrategy[str]:
    """Keys from a small pool (``k0 .. k19``), so that collisions happen."""
    return st.integers(0, n - 1).map(lambda i: f"{prefix}{i}")


def texts(words: Sequence[str] = WORDS, max_words: int = 4) -> st.SearchStrategy[str]:
    """Short texts over a small vocabulary (mixed case, punctuation)."""
    word = st.sampled_from(words).flatmap(lambda w: st.sampled_from([w, w.upper(), w.title()]))
    return st.lists(word, min_size=0, max_size=max_words).flatmap(
        lambda ws: st.sampled_from([" ", ", ", "; "]).map(lambda sep: sep.join(ws)))


#: Fields of the metadata that :func:`concepts` and :func:`where_filters` agree on.
FIELDS = {"n": st.integers(0, 4), "tag": st.sampled_from(["x", "y", "z"]),
          "ok": st.booleans(), "score": st.floats(-2, 2, allow_nan=False)}


def concepts(dim: int, *, with_keys: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    """One concept as keyword arguments: ``{"vector", "text", "metadata", "key"}``."""
    return st.fixed_dictionaries({
        "vector": vector(dim),
        "text": st.none() | texts(),
        "metadata": metadata(fields=FIELDS),
        "key": (st.none() | keys()) if with_keys else st.none(),
    })


def where_filters(fields: Mapping[str, st.SearchStrategy[Any]] | None = None, *,
                  words: Sequence[str] = WORDS,
                  max_depth: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    """``where`` filters over ``fields`` (default: the fields :func:`concepts` makes):
    equality, ``$in``/``$nin``, comparisons, ``$ne``, ``$exists``, ``$not``,
    ``$text``, ``$and``/``$or``/``$not``."""
    fields = dict(FIELDS if fields is None else fields)

    def leaf_for(name: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
        ops = [values.map(lambda v: {name: v}),
               values.map(lambda v: {name: {"$ne": v}}),
               st.lists(values, min_size=1, max_size=3).map(lambda vs: {name: {"$in": vs}}),
               st.lists(values, min_size=1, max_size=3).map(lambda vs: {name: {"$nin": vs}})]
        numeric = st.integers(0, 4) | st.floats(-2, 2, allow_nan=False)
        for op in ("$gt", "$gte", "$lt", "$lte"):
            ops.append(numeric.map(lambda v, op=op: {name: {op: v}}))  # type: ignore[misc]  # op= binds the loop variable
            ops.append(numeric.map(lambda v, op=op: {name: {"$not": {op: v}}}))  # type: ignore[misc]  # op= binds the loop variable
        ops.append(st.booleans().map(lambda b: {name: {"$exists": b}}))
        return st.one_of(ops)

    leaves = st.one_of([leaf_for(n, v) for n, v in fields.items()]
                       + [st.lists(st.sampled_from(words), min_size=1, max_size=2)
                          .map(lambda ws: {"$text": " ".join(ws)})])
    return st.recursive(leaves, lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda fs: {"$and": fs}),
        st.lists(inner, min_size=1, max_size=3).map(lambda fs: {"$or": fs}),
        inner.map(lambda f: {"$not": f})), max_leaves=4)


# --------------------------------------------------------------------------- fixtures

@pytest.fixture
def sutra_db_factory(tmp_path: Path) -> Iterator[Callable[..., Database]]:
    """Open databases in a temporary directory; all closed at teardown.

    ``sutra_db_factory(dim=8, metric="cosine", memory=False, name=None, **options)``
    (``durability="off"`` unless given: tests need no fsync).
    """
    opened = []
    counter = [0]

    def make(dim: int = 8, metric: str = "cosine", memory: bool = False, name: str | None = None,
             **options: Any) -> Database:
        from . import open as _open
        options.setdefault("durability", "off")
        if memory:
            path = ":memory:"
        else:
            counter[0] += 1
            path = os.fspath(tmp_path / (name or f"db{counter[0]}"))
        db = _open(path, dim=dim, metric=metric, **options)
        opened.append(db)
        return db

    yield make
    for db in opened:
        db.close()


@pytest.fixture
def sutra_db(sutra_db_factory: Callable[..., Database]) -> Database:
    """A fresh, empty, 8-dimensional cosine database on disk (closed afterwards)."""
    return sutra_db_factory()
