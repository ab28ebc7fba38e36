"""Tokenisation for ranked full-text search: texts to terms, terms to 64-bit hashes.

A :class:`Tokenizer` is described by a small *spec* dict that is stored with the
database (the manifest's ``terms`` entry, ``docs/file-format.md``), so that the terms
written by one process are the terms every later reader looks up:

``{"v": 1, "stopwords": [...], "stem": None | "english" | ...}``

A term is a maximal run of Unicode word characters (``\\w+``) of the case-folded text
(so ``"Straße"`` and ``"STRASSE"`` are the same term and CJK or accented words are
kept whole), minus the spec's stop words, optionally reduced to its stem by the
Snowball stemmer of the spec's language (the ``snowballstemmer`` package, pure Python,
installed with ``pip install "sutradb[text]"``; never downloaded at run time).

Storage keeps each term as the 64-bit BLAKE2b hash of its UTF-8 bytes
(:func:`term_hash`): postings are looked up without a vocabulary to decode. Two terms
share postings only if their hashes collide (probability about ``T**2 / 2**65`` for a
vocabulary of ``T`` terms: 3e-8 for a million terms).

This module is pure: it knows nothing of storage or of the database.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterable
from typing import Any

from .errors import InvalidArgumentError

__all__ = ["Tokenizer", "DEFAULT_SPEC", "ENGLISH_STOPWORDS", "term_hash", "check_spec"]

_WORD = re.compile(r"\w+")

#: The spec of the default tokenizer: case-folded Unicode words, no stop words, no stemming.
DEFAULT_SPEC: dict[str, Any] = {"v": 1, "stopwords": [], "stem": None}

#: A short English stop-word list (the one Lucene's ``EnglishAnalyzer`` uses).
ENGLISH_STOPWORDS = (
    "a an and are as at be but by for if in into is it no not of on or such that the their "
    "then there these they this to was will with").split()


def term_hash(term: str) -> int:
    """The signed 64-bit hash under which storage keeps ``term`` (BLAKE2b, 8 bytes, little-endian).

    >>> term_hash("paris") == term_hash("paris") != term_hash("london")
    True
    """
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "little", signed=True)


def check_spec(spec: Any) -> dict[str, Any]:
    """Validate a tokenizer spec (as given by a user or read back from a file).

    Returns
    -------
    dict
        The spec with defaults filled in (``v``, ``stopwords`` sorted, ``stem``).

    Raises
    ------
    InvalidArgumentError
        An unknown key, a stop-word list that is not a list of str, or a stemmer
        language the installed ``snowballstemmer`` does not have.
    """
    if spec is None:
        return dict(DEFAULT_SPEC)
    if not isinstance(spec, dict):
        raise InvalidArgumentError("a text tokenizer spec must be a dict")
    unknown = set(spec) - {"v", "stopwords", "stem"}
    if unknown:
        raise InvalidArgumentError(f"unknown text tokenizer options: {sorted(unknown)}")
    if spec.get("v", 1) != 1:
        raise InvalidArgumentError(f"unsupported text tokenizer version {spec.get('v')!r}")
    stop = spec.get("stopwords") or []
    if stop == "english":
        stop = ENGLISH_STOPWORDS
    if isinstance(stop, str) or not all(isinstance(w, str) for w in stop):
        raise InvalidArgumentError("stopwords must be a list of str (or 'english')")
    stem = spec.get("stem")
    if stem is not None:
        if not isinstance(stem, str):
            raise InvalidArgumentError("stem must be a language name (str) or None")
        _stemmer(stem)          # raises if unavailable
    return {"v": 1, "stopwords": sorted({w.casefold() for w in stop}), "stem": stem}


def _stemmer(language: str) -> Any:
    try:
        import snowballstemmer  # type: ignore[import-untyped]  # no stubs
    except ImportError:
        raise InvalidArgumentError("stemming needs the snowballstemmer package "
                                   "(pip install 'sutradb[text]')") from None
    try:
        return snowballstemmer.stemmer(language)
    except KeyError:
        raise InvalidArgumentError(f"no Snowball stemmer for {language!r}; one of "
                                   f"{snowballstemmer.algorithms()}") from None


class Tokenizer:
    """Texts to terms, as a spec (:func:`check_spec`) says.

    Parameters
    ----------
    spec : dict, optional
        The tokenizer spec; None for :data:`DEFAULT_SPEC`.

    Examples
    --------
    >>> Tokenizer().terms("The cat sat on the mat; the CAT!")
    ['the', 'cat', 'sat', 'on', 'the', 'mat', 'the', 'cat']
    >>> Tokenizer({"stopwords": "english", "stem": "english"}).terms("The cats were running")
    ['cat', 'were', 'run']
    """

    __slots__ = ("spec", "_stop", "_lang", "_local", "_stems", "_hashes")

    def __init__(self, spec: dict[str, Any] | None = None) -> None:
        self.spec = check_spec(spec)
        self._stop = frozenset(self.spec["stopwords"])
        self._lang = self.spec["stem"]
        # a Snowball stemmer keeps state between calls: one per thread
        self._local = threading.local()
        self._stems: dict[str, str] = {}            # word -> stem (memoised; shared)
        self._hashes: dict[str, int] = {}

    def terms(self, text: str | None) -> list[str]:
        """The terms of ``text`` in order, with repeats (empty for None or "")."""
        if not text:
            return []
        words = _WORD.findall(text.casefold())
        if self._stop:
            stop = self._stop
            words = [w for w in words if w not in stop]
        if self._lang is not None and words:
            stems = self._stems
            out = [stems.get(w) for w in words]
            if None in out:
                stem = getattr(self._local, "stem", None)
                if stem is None:
                    stem = self._local.stem = _stemmer(self._lang).stemWord
                if len(stems) > 1 << 20:
                    stems.clear()
                for j, w in enumerate(words):
                    if out[j] is None:
                        out[j] = stems[w] = stem(w)
            return out  # type: ignore[return-value]  # every None was replaced
        return words

    def hashes(self, terms: Iterable[str]) -> list[int]:
        """:func:`term_hash` of each term (memoised: a corpus repeats its terms)."""
        cache = self._hashes
        out = []
        for t in terms:
            h = cache.get(t)
            if h is None:
                if len(cache) > 1 << 20:
                    cache.clear()
                h = cache[t] = term_hash(t)
            out.append(h)
        return out

    def query_term_counts(self, text: str) -> dict[int, int]:
        """``{term hash: times the term occurs in text}``, in order of first
        appearance: a query's terms (a term repeated in the query counts as often,
        as in Lucene's BM25)."""
        counts: dict[int, int] = {}
        for h in self.hashes(self.terms(text)):
            counts[h] = counts.get(h, 0) + 1
        return counts
