"""The word index: which concepts' texts hold which words.

A word is a maximal run of Unicode word characters (``\\w+``), case-folded. The index
maps each word to the set of ids whose text holds it; :meth:`WordIndex.find` returns
the ids whose text holds *all* the words of a query. It lives in memory, is built
lazily by the database from the stored texts and kept up to date at each commit.
This module knows nothing of storage.
"""

from __future__ import annotations

import builtins
import re

__all__ = ["tokenize", "WordIndex"]

_WORD = re.compile(r"\w+")


def tokenize(text: str | None) -> list[str]:
    """The distinct words of ``text`` (case-folded, in order of first appearance).

    >>> tokenize("Paris is the capital of France; paris!")
    ['paris', 'is', 'the', 'capital', 'of', 'france']
    """
    if not text:
        return []
    return list(dict.fromkeys(_WORD.findall(text.casefold())))


class WordIndex:
    """Inverted index ``word -> set of ids`` with the words of each id.

    Not thread-safe by itself: the database updates it under its write lock and
    swaps whole sets, so concurrent readers see either the old or the new state.
    """

    __slots__ = ("_postings", "_doc")

    def __init__(self) -> None:
        self._postings: dict[str, set[int]] = {}
        self._doc: dict[int, tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._doc)

    def set(self, id_: int, text: str | None) -> None:
        """Index ``text`` as the text of ``id_`` (replacing its previous text)."""
        self.remove(id_)
        words = tokenize(text)
        if not words:
            return
        self._doc[id_] = tuple(words)
        post = self._postings
        for w in words:
            s = post.get(w)
            if s is None:
                post[w] = {id_}
            else:
                s.add(id_)

    def remove(self, id_: int) -> None:
        """Forget ``id_`` (no-op if it has no indexed text)."""
        words = self._doc.pop(id_, None)
        if not words:
            return
        post = self._postings
        for w in words:
            s = post.get(w)
            if s is not None:
                s.discard(id_)
                if not s:
                    del post[w]

    def find(self, query: str | None) -> builtins.set[int]:
        """Ids whose text holds every word of ``query`` (empty query: no ids)."""
        words = tokenize(query)
        if not words:
            return set()
        sets = []
        for w in words:
            s = self._postings.get(w)
            if not s:
                return set()
            sets.append(s)
        sets.sort(key=len)
        out = set(sets[0])
        for s in sets[1:]:
            out &= s
            if not out:
                break
        return out
