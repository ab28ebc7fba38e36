"""Links between concepts of a :class:`~sutradb.database.Database`: ``link``,
``unlink``, ``neighbors``, ``links``.

A link is directed, ``a -[relation]-> b`` with a float weight; the store keeps them
(:mod:`sutradb.storage`), :mod:`sutradb.graph` checks their arguments. Deleting a
concept deletes its links (:meth:`Database.delete`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InvalidArgumentError
from ..graph import DIRECTIONS, Link, as_links, check_relation, check_weight
from .validation import is_id

if TYPE_CHECKING:
    from .state import DatabaseState as _Base
    from .state import IdOrKey
else:
    _Base = object

__all__ = ["LinksMixin"]


class LinksMixin(_Base):
    """The link methods of :class:`~sutradb.database.Database`; a mixin (writes go
    through the database's transactions)."""

    def link(self, a: IdOrKey, b: IdOrKey, relation: str, weight: float = 1.0) -> None:
        """Add (or re-weight) the directed link ``a -[relation]-> b``.

        ``a`` and ``b`` are ids or keys of existing concepts (NotFoundError otherwise).
        Deleting either concept removes the link.
        """
        self._check_writable()
        check_relation(relation)
        w = check_weight(weight)
        with self._Auto(self) as st:
            ia, ib = self._id_of(a, st), self._id_of(b, st)
            self._emit(("link", (ia, ib, relation, w), {}))
            st.links[(ia, ib, relation)] = w

    def unlink(self, a: IdOrKey, b: IdOrKey, relation: str | None = None) -> None:
        """Remove the link ``a -[relation]-> b`` (every relation from ``a`` to ``b``
        when ``relation`` is None). Absent links are ignored."""
        self._check_writable()
        if relation is not None:
            check_relation(relation)
        with self._Auto(self) as st:
            ia, ib = self._id_of(a, st), self._id_of(b, st)
            if relation is not None:
                rels = [relation]
            else:
                with self._read:
                    rels = {r for d, r, _ in self._store.links_from(ia) if d == ib}  # type: ignore[assignment]  # a set, sorted below
                rels |= {k[2] for k in st.links if k[0] == ia and k[1] == ib}  # type: ignore[operator]  # (the set)
                rels = sorted(rels)
            for r in rels:
                self._emit(("unlink", (ia, ib, r), {}))
                st.links[(ia, ib, r)] = None

    def neighbors(self, a: IdOrKey, relation: str | None = None,
                  direction: str = "out") -> list[Link]:
        """Links of a concept: ``[Link(id, relation, weight), ...]`` sorted by relation
        then id. ``direction``: "out" (``id`` = destination), "in" (``id`` = source)
        or "both" (out first)."""
        self._check_open()
        if direction not in DIRECTIONS:
            raise InvalidArgumentError(f"direction must be one of {DIRECTIONS}")
        with self._read:
            s = self._store
            i = int(a) if is_id(a) and int(a) in self._row_map() else self._id_of(a)
            if direction == "out":
                return as_links(s.links_from(i, relation))
            if direction == "in":
                return as_links(s.links_to(i, relation))
            return as_links(s.links_from(i, relation)) + as_links(s.links_to(i, relation))

    def links(self) -> list[tuple[int, int, str, float]]:
        """Every link ``(src, dst, relation, weight)``, sorted."""
        self._check_open()
        with self._read:
            return self._store.all_links()
