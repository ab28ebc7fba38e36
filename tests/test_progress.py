"""Progress bars on every install: rich when installed, else tqdm, else the built-in
bar of sutradb.database.progress (a plain install has neither). Each backend is forced
by hiding the others from the import system; the bars draw on a fake terminal."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest

import sutradb
from sutradb.database import progress as P


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def use_tty(monkeypatch) -> FakeTTY:
    """A fake terminal as sys.stderr (set in the test body: pytest's capture replaces
    sys.stderr between a fixture's set-up and the test)."""
    s = FakeTTY()
    monkeypatch.setattr(sys, "stderr", s)
    return s


def force(monkeypatch, name: str) -> None:
    """Make ``name`` the backend: hide the ones before it (an import of a module set
    to None in sys.modules raises ImportError, as a missing package does)."""
    for other in P.BACKENDS[:P.BACKENDS.index(name)]:
        monkeypatch.setitem(sys.modules, other, None)
    if name != "text":
        pytest.importorskip(name)
    assert P.backend() == name


def test_backend_order(monkeypatch):
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "rich", None)
        m.setitem(sys.modules, "tqdm", None)
        assert P.backend() == "text"          # a plain install: numpy, scikit-learn, msgpack
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "rich", None)
        try:
            import tqdm  # noqa: F401
        except ImportError:
            assert P.backend() == "text"
        else:
            assert P.backend() == "tqdm"


@pytest.mark.parametrize("name", ["rich", "tqdm", "text"])
def test_learning_bar_on_a_terminal(name, monkeypatch):
    force(monkeypatch, name)
    tty = use_tty(monkeypatch)
    cb = P.progress_bar(None, 100, 10)          # more than one batch, stderr a terminal
    assert cb is not None
    for done in (10, 50, 100):
        cb(done, 100)
    cb(None, 100)
    out = tty.getvalue()
    assert "learning" in out and "100" in out, out


@pytest.mark.parametrize("name", ["rich", "tqdm", "text"])
def test_stage_bar_on_a_terminal(name, monkeypatch):
    force(monkeypatch, name)
    tty = use_tty(monkeypatch)
    cb = P.stage_progress(True, "training the quantizer (subspaces)")
    assert cb is not None
    for done in range(1, 49):
        cb(done, 48)
    out = tty.getvalue()
    assert "training the quantizer" in out and "48/48" in out, out
    cb(1, 3)                                    # a second stage: a new bar
    cb(3, 3)
    assert "3/3" in tty.getvalue()


def test_text_bar_count_throughput_eta(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(P.time, "perf_counter", lambda: clock[0])
    s = FakeTTY()
    bar = P.TextBar("learning", 100, s, unit="concepts", width=10)
    clock[0] += 10.0
    bar.update(50)
    assert s.getvalue() == "\rlearning [#####-----] 50/100  50%  5 concepts/s  ETA 0:10"
    clock[0] += 0.05
    bar.update(60)                                  # within min_interval: not redrawn
    assert "60/100" not in s.getvalue()
    clock[0] += 9.95
    bar.update(100)                                 # the end is always drawn
    assert s.getvalue().endswith("\rlearning [##########] 100/100 100%  5 concepts/s  in 0:20")
    bar.close()
    bar.close()
    assert s.getvalue().endswith("in 0:20\n")
    t = P.TextBar("x", 3600 * 10, FakeTTY(), transient=True)
    clock[0] += 1.0
    t.update(1)
    assert "ETA 9:59:59" in t.stream.getvalue()
    t.close()
    assert t.stream.getvalue().endswith("\r")       # transient: the line is erased


def test_no_bar_off_a_terminal_or_when_not_asked(monkeypatch):
    s = io.StringIO()                               # not a terminal
    monkeypatch.setattr(sys, "stderr", s)
    assert P.progress_bar(None, 100, 10) is None
    assert P.progress_bar(True, 100, 10) is None
    assert P.stage_progress(False) is None
    cb = P.stage_progress(True, "assigning")         # index building: plain lines
    cb(1, 2)
    cb(2, 2)
    assert s.getvalue() == "\rsutradb: assigning 1/2\rsutradb: assigning 2/2\n"
    seen = []
    user = P.progress_bar(lambda d, n: seen.append((d, n)), 100, 10)
    user(5, 100)
    user(None, 100)                                  # closing does not call the user
    assert seen == [(5, 100)]
    f = P.stage_progress(lambda d, n: seen.append((d, n)))
    f(1, 1)
    assert seen[-1] == (1, 1)


def test_tty_check_tolerates_odd_streams(monkeypatch):
    class Closed(io.StringIO):
        def isatty(self):
            raise ValueError("I/O operation on closed file")
    monkeypatch.setattr(sys, "stderr", Closed())
    assert P.progress_bar(True, 100, 10) is None


class Tiny:
    """A 4-d embedder of the test: letter counts."""

    name = "test:tiny"
    dim = 4

    def __call__(self, texts):
        return np.array([[t.count(c) + 1.0 for c in "aeio"] for t in texts], np.float32)


def test_database_add_draws_the_builtin_bar(monkeypatch):
    force(monkeypatch, "text")
    tty = use_tty(monkeypatch)
    texts = [f"text {i} about a topic" for i in range(40)]
    with sutradb.open(":memory:", embedder=Tiny()) as db:
        ids = db.add(texts, batch_size=8)              # five batches: a bar
    assert len(ids) == 40
    out = tty.getvalue()
    assert "learning [" in out and "concepts/s" in out, out
    assert out.endswith("\r")                          # transient


def test_index_training_draws_stage_bars(monkeypatch):
    force(monkeypatch, "text")
    tty = use_tty(monkeypatch)
    rng = np.random.default_rng(0)
    with sutradb.open(":memory:", dim=16, index_threshold=300, progress=True, pq_nbits=4,
                      train_iters=2) as db:
        db.add_vectors(rng.standard_normal((400, 16)).astype(np.float32))
        assert db.index_info["kind"] != "flat"
    out = tty.getvalue()
    assert "sutradb: training the quantizer" in out and "\n" in out, out
