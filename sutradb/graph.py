"""Typed, weighted, directed links between concepts.

The storage engine keeps links as ``(src, dst, relation) -> weight`` and answers
per-id queries from sorted arrays plus the log's recent changes; this module gives
them their public shape (:class:`Link`) and validates arguments once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NamedTuple

from .errors import InvalidArgumentError

__all__ = ["Link", "DIRECTIONS", "check_relation", "check_weight"]

DIRECTIONS = ("out", "in", "both")


class Link(NamedTuple):
    """One link seen from a concept: the other end's ``id``, the ``relation`` and the
    ``weight``. For ``direction="out"`` ``id`` is the destination, for ``"in"`` the
    source."""

    id: int
    relation: str
    weight: float


def check_relation(relation: object) -> str:
    if not isinstance(relation, str) or not relation or len(relation.encode()) > 1024:
        raise InvalidArgumentError(f"relation must be a non-empty str (at most 1024 bytes), got {relation!r}")
    return relation


def check_weight(weight: Any) -> float:
    try:
        w = float(weight)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"weight must be a number, got {weight!r}") from None
    if isinstance(weight, bool) or not math.isfinite(w):
        raise InvalidArgumentError(f"weight must be a finite number, got {weight!r}")
    return w


def as_links(rows: Iterable[tuple[int, str, float]]) -> list[Link]:
    """``[(id, relation, weight), ...]`` from the store -> ``[Link, ...]``."""
    return [Link(i, r, w) for i, r, w in rows]
