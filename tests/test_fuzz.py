"""Damage fuzzing, bounded for CI (``bench/fuzz.py`` runs the long campaign).

Every case damages files of a real database and opens it; the only allowed outcomes
are the same content or a ``SutraError`` (``fuzz_target.py`` says exactly what is
checked). The drivers run in a child process so that a crash of the interpreter (a
segfault in a kernel) or a hang (``faulthandler`` ends the child) fails the test
instead of ending the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = os.path.join(HERE, "fuzz_target.py")
CASES = int(os.environ.get("SUTRADB_FUZZ_CASES", "1500"))
RUNS = int(os.environ.get("SUTRADB_FUZZ_RUNS", "600"))
pytestmark = pytest.mark.slow


def _run(args, timeout):
    out = subprocess.run([sys.executable, TARGET, *map(str, args)], capture_output=True,
                         text=True, timeout=timeout, cwd=HERE)
    assert out.returncode == 0, (f"return code {out.returncode} (negative: killed by that "
                                 f"signal)\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}")
    return out


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-seeds")
    _run(["seeds", root], timeout=600)
    return root


def test_random_damage_cases(seeds):
    """Bit flips, truncations, zeroed pages, splices, earlier versions of files,
    deleted files, several files at once; readers and writers."""
    out = _run(["random", seeds, CASES, int(os.environ.get("SUTRADB_FUZZ_SEED", "1"))],
               timeout=1800)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["cases"] == CASES
    assert sum(summary["outcomes"].values()) == CASES
    print(f"\nrandom damage: {summary}")


def test_coverage_guided_damage(seeds, tmp_path):
    """libFuzzer (atheris) over every file kind, the storage, index and database
    layers instrumented for coverage."""
    pytest.importorskip("atheris")
    out = _run(["atheris", seeds, RUNS, tmp_path], timeout=1800)
    assert f"Done {RUNS} runs" in out.stderr, out.stderr[-3000:]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(("crash-", "timeout-", "oom-"))]
