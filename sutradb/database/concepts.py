"""Concepts of a :class:`~sutradb.database.Database`: the records, their writes
(add, update, delete), id and key resolution, and the lock-free read path of ``get``.

Data model
----------
A *concept* has an int64 ``id`` (allocated by the database, increasing, never reused),
an optional unique ``key`` (str: the user's own primary key), an optional ``text``, a
``metadata`` dict (anything msgpack holds: str keys; None, bool, int, float, str,
bytes, lists, dicts) and a ``vector`` of the database's dimension. The storage engine
keeps one *row* per version of a concept; the database maps ids to their live rows.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Concept", "Hit", "new_concept", "nested"]


class Concept(NamedTuple):
    """A stored concept (a snapshot: changing it changes nothing in the database).

    ``vector`` is a read-only view of the stored vector, in the stored precision
    (float16 by default: ``c.vector.astype("float32")`` for arithmetic), or None when
    the database keeps no full vectors; ``metadata`` is ``{}`` when none was given.
    """

    id: int
    key: str | None
    text: str | None
    metadata: dict
    vector: np.ndarray | None


class Hit(NamedTuple):
    """One search result: the concept's ``id``, its ``distance`` to the query
    (``1 - cos`` for cosine, ``-dot`` for ip, squared L2 for l2) and the ``concept``."""

    id: int
    distance: float
    concept: Concept


#: Make a Concept without NamedTuple's argument handling (the get() fast path).
new_concept = tuple.__new__


def nested(md) -> bool:
    """Whether a metadata dict holds lists or dicts (the cache's records are copied
    deeply then: a caller that changes its Concept must not change the cache)."""
    return bool(md) and any(type(v) is list or type(v) is dict for v in md.values())
