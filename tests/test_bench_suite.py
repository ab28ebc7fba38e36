"""The performance suite that ships in the package: `sutradb bench`, `python -m sutradb.bench`.

Functional checks only, on tiny scales (seconds): the rows have the documented fields
and sane values, missing peers and a missing embedder are skipped (said once), and the
suite runs from outside a source checkout.
"""

import argparse
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import sutradb
from sutradb.bench import common
from sutradb.bench import suite
from sutradb.demo import SAMPLE

FIELDS = ("operation", "system", "scale", "throughput", "unit", "p50_ms", "p95_ms", "p99_ms",
          "memory_mb", "disk_mb", "errors")
PKG_PARENT = Path(sutradb.__file__).resolve().parent.parent


def run_module(args, cwd, timeout=120):
    """``python -m <args>`` in ``cwd`` with this sutradb importable (whether it is an
    installed wheel or a checkout built in place)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PKG_PARENT), env.get("PYTHONPATH"))
                                        if p)
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def check_rows(rows):
    assert rows
    for r in rows:
        missing = [f for f in FIELDS if f not in r]
        assert not missing, (r, missing)
        assert r["errors"] == 0, r
        assert isinstance(r["throughput"], float) and r["throughput"] > 0, r
        assert isinstance(r["scale"], int) and r["scale"] > 0
        assert isinstance(r["unit"], str) and r["unit"].endswith("/s")
        lat = [r[k] for k in ("p50_ms", "p95_ms", "p99_ms")]
        if lat[0] is not None:
            assert 0 < lat[0] <= lat[1] <= lat[2], r
        for k in ("memory_mb", "disk_mb"):
            assert r[k] is None or isinstance(r[k], float), r
        if r["operation"] == "search":
            assert 0.0 <= r["recall_at_10"] <= 1.0, r
            assert r["batched_qps"] > 0
        if r["operation"] == "text search" and r["system"] == "sutradb":
            # the same BM25 ranking idea, two tokenizers and two idf forms: most agree
            assert 0.5 <= r["top10_overlap_with_fts5"] <= 1.0, r


def test_bench_quick_runs_outside_a_checkout(tmp_path):
    """`python -m sutradb bench --quick --json out.json` from a directory that is not
    the repository: the suite comes from the package and runs on the bundled sample."""
    out = tmp_path / "out.json"
    r = run_module(["sutradb", "bench", "--quick", "--scales", "1000", "--quiet",
                    "--embedder", "no-such-family:model", "--json", str(out)], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "source checkout" not in r.stderr
    res = json.loads(out.read_text())
    assert Path(res["parameters"]["suite_file"]).resolve() == \
        (PKG_PARENT / "sutradb" / "bench" / "suite.py").resolve()
    assert Path(res["parameters"]["data"]).resolve() == SAMPLE.resolve()
    assert res["parameters"]["scales"] == [1000]
    rows = res["rows"]
    check_rows(rows)
    ops = {r["operation"] for r in rows}
    assert {"load", "open", "save", "get", "get_key", "distance", "distance_batch", "search",
            "text search", "compact"} <= ops
    assert "learn" not in ops                       # the embedder cannot be loaded: skipped
    assert {"sutradb", "sqlite3"} <= {r["system"] for r in rows}
    search = [r for r in rows if r["operation"] == "search" and r["system"].startswith("sutradb")]
    assert search and all(r["recall_at_10"] == 1.0 for r in search)   # exact below 10,000
    skipped = [s["what"] for s in res["skipped"]]
    assert skipped.count("learn") == 1
    assert r.stdout.count("learn: skipped") == 1
    assert "JSON: " in r.stdout and f"({len(rows)} rows)" in r.stdout


def test_python_m_sutradb_bench_help(tmp_path):
    r = run_module(["sutradb.bench", "--help"], cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "python -m sutradb.bench" in r.stdout and "--quick" in r.stdout
    r = run_module(["sutradb", "bench", "--help"], cwd=tmp_path, timeout=60)
    assert r.returncode == 0 and "sutradb bench" in r.stdout and "--scales" in r.stdout


def block(monkeypatch, *names):
    """Make ``names`` (and their submodules, if loaded) impossible to import."""
    for name in names:
        for m in [m for m in sys.modules if m == name or m.startswith(name + ".")] + [name]:
            monkeypatch.setitem(sys.modules, m, None)


def small_set(tmp_path, n=400, nq=12, texts=False, gt=False):
    base = np.load(SAMPLE / "base.f16.npy")[:n]
    queries = np.load(SAMPLE / "queries.f16.npy")[:nq]
    d = tmp_path / "set"
    d.mkdir()
    np.save(d / "base.f16.npy", base)
    np.save(d / "queries.f16.npy", queries)
    if texts:
        lines = (SAMPLE / "base_texts.txt").read_text(encoding="utf-8").splitlines()[:n]
        (d / "base_texts.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if gt:
        np.save(d / "gt.i32.npy", suite.exact_gt(base.astype(np.float32),
                                                 queries.astype(np.float32)).astype(np.int32))
    return d


def test_missing_peers_are_skipped_once(tmp_path, monkeypatch, capsys):
    """With FAISS, hnswlib and rich not importable: two scales, one line per missing
    peer, the summary as a plain table, exact ground truth computed for a set without."""
    block(monkeypatch, "faiss", "hnswlib", "rich")
    data = small_set(tmp_path)
    out = tmp_path / "r.json"
    env_before = {k: os.environ.get(k) for k in (*common.THREAD_ENV_VARS, "SUTRADB_NUM_THREADS")}
    pools_before = [p["num_threads"] for p in common.thread_pools()]
    code = suite.main(["--quick", "--data", str(data), "--scales", "150,300,1000000",
                       "--ops", "search", "--quiet", "--json", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    # an in-process run leaves the thread settings of the caller as they were
    assert {k: os.environ.get(k) for k in env_before} == env_before
    assert [p["num_threads"] for p in common.thread_pools()] == pools_before
    assert stdout.count("search peer FAISS (IndexFlatIP, IVF-PQ+refine): skipped") == 1
    assert stdout.count("search peer hnswlib: skipped") == 1
    assert "larger scales capped" in stdout
    assert "sutradb bench: summary (medians)" in stdout and "recall_at_10" in stdout
    res = json.loads(out.read_text())
    assert res["parameters"]["scales"] == [150, 300, 400]
    assert res["parameters"]["ops"] == ["load", "search"]
    assert sorted(s["what"] for s in res["skipped"]) == [
        "search peer FAISS (IndexFlatIP, IVF-PQ+refine)", "search peer hnswlib"]
    check_rows(res["rows"])
    search = [r for r in res["rows"] if r["operation"] == "search"]
    assert sorted({r["scale"] for r in search}) == [150, 300, 400]
    assert all(r["recall_at_10"] == 1.0 for r in search)


class HashEmbedder:
    """A tiny deterministic embedder: learn runs without a model."""
    name = "test:hash"
    dim = 16

    def __call__(self, texts):
        out = np.empty((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            out[i] = np.random.default_rng(zlib.crc32(t.encode())).standard_normal(self.dim)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_learn_rows_with_an_embedder(tmp_path):
    data = small_set(tmp_path, n=64, texts=True)
    base, texts, queries, gt, _ = suite.load_data(argparse.Namespace(data=str(data), texts=None))
    assert len(texts) == 64 and gt is None
    ctx = {"texts": texts, "learn_n": 40, "repeats_learn": 1, "scale": 64,
           "tmp": str(tmp_path), "embedder": "test:hash",
           "shared": {"warned": set(), "skipped": [], "embedder": HashEmbedder()}}
    with common.Progress(total_steps=1, enabled=False) as prog:
        rows = suite.bench_learn(ctx, prog)
    check_rows(rows)
    assert [(r["operation"], r["system"]) for r in rows] == [
        ("learn", "sutradb"), ("learn", "raw model"),
        ("learn_single", "sutradb"), ("learn_single", "raw model")]
    assert rows[0]["texts"] == 40 and rows[0]["embedder"] == "test:hash"


def test_progress_falls_back_to_tqdm_then_lines(monkeypatch, capsys):
    pytest.importorskip("tqdm")
    block(monkeypatch, "rich")
    with common.Progress(total_steps=2, title="t", enabled=True) as prog:
        assert prog.backend == "tqdm" and not prog.rich and prog.console is None
        with prog.op("work", total=10, unit="rows") as advance:
            advance(10)
        prog.log("a line")
        prog.step(2)
    out, err = capsys.readouterr()
    assert "a line" in out and "2/2" in err
    block(monkeypatch, "tqdm")
    with common.Progress(total_steps=1, enabled=True) as prog:
        assert prog.backend == "lines"
        with prog.op("work", total=3) as advance:
            advance(3)
        prog.log("done")
        prog.step()
    out = capsys.readouterr().out
    assert "  work ..." in out and "done" in out
    with common.Progress(total_steps=1, enabled=False) as prog:     # not a TTY: logs only
        assert prog.backend == "plain"
        with prog.op("quiet", total=1) as advance:
            advance()
    assert "quiet" not in capsys.readouterr().out


def test_default_json_goes_to_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = common.default_json_path("suite")
    assert p.parent == Path(".") and p.name.startswith("suite-") and p.suffix == ".json"
    assert common.default_json_path("x", tmp_path / "r").parent == tmp_path / "r"


def test_import_sutradb_does_not_import_the_suite():
    r = subprocess.run([sys.executable, "-c", "import sys, sutradb; "
                        "print(any(m.startswith('sutradb.bench') for m in sys.modules))"],
                       capture_output=True, text=True, cwd=PKG_PARENT, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
