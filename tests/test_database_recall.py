"""Recall on real sentence embeddings: the 2,000-row PyPI sample that ships with sutradb
(all-MiniLM-L6-v2, 384-d; exact top-100 ground truth by inner product)."""

from pathlib import Path

import numpy as np
import pytest

import sutradb

SAMPLE = Path(sutradb.__file__).parent / "data" / "pypi-sample"


def recall_at(I, gt, k=10):
    return np.mean([len(set(a[:k].tolist()) & set(b[:k].tolist())) / k for a, b in zip(I, gt)])


@pytest.fixture(scope="module")
def sample():
    X = np.load(SAMPLE / "base.f16.npy")
    Q = np.load(SAMPLE / "queries.f16.npy").astype(np.float32)
    gt = np.load(SAMPLE / "gt.i32.npy")
    texts = (SAMPLE / "base_texts.txt").read_text().splitlines()
    return X, Q, gt, texts


def test_exact_while_small(sample):
    X, Q, gt, texts = sample
    with sutradb.open(":memory:") as db:
        ids = db.add_vectors(X, texts=texts)
        assert db.index_info["kind"] == "flat" and ids.tolist() == list(range(len(X)))
        D, I = db.search_vectors(Q, k=10)
        assert recall_at(I, gt) >= 0.99        # float16 ties aside, exact


@pytest.mark.parametrize("memory", [True, False])
def test_pq_with_default_rerank(sample, tmp_path, memory):
    X, Q, gt, texts = sample
    path = ":memory:" if memory else str(tmp_path / "db")
    with sutradb.open(path, index_threshold=1000, durability="off") as db:
        db.add_vectors(X[:1000], texts=texts[:1000])
        db.add_vectors(X[1000:], texts=texts[1000:])   # encoded with the stored codebooks
        info = db.index_info
        # the default with stored vectors: 4-bit codes, one byte per 8 dimensions
        assert info["kind"] == "pq" and info["code_size"] == 48
        assert info["m"] == 96 and info["nbits"] == 4
        D, I = db.search_vectors(Q, k=10)
        assert recall_at(I, gt) >= 0.95
        _, I0 = db.search_vectors(Q, k=10, rerank=0)   # codes only: lower, still useful
        assert recall_at(I0, gt) >= 0.4
        hits = db.search(Q[0], k=3, where={"$text": "python"})
        assert all("python" in h.concept.text.lower() for h in hits)
