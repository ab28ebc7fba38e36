"""A committed log cut short is damage (issue 19), through the Database and the CLI:
``open`` and ``verify`` report it, ``recover=True`` / ``sutradb recover`` read what
is intact and say what was lost, ``sutradb recover --to`` saves it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import sutradb
from sutradb.cli import main
from sutradb.errors import CorruptDatabaseError, InvalidArgumentError


@pytest.fixture
def cut_db(tmp_path):
    """A database whose log held 30 committed transactions, copied while the writer
    was open (as a crash leaves it), then its log cut in the middle of its records."""
    src, copy = tmp_path / "src", tmp_path / "copy"
    rng = np.random.default_rng(5)
    db = sutradb.open(src, dim=8)
    try:
        for i in range(30):
            db.add_vectors(rng.standard_normal((1, 8)).astype("float32"), texts=[f"t{i}"],
                           metadata=[{"i": i}], keys=[f"k{i}"])
        db.link(int(db.ids()[0]), int(db.ids()[1]), "next")
        shutil.copytree(src, copy)
    finally:
        db.close()
    wal = next(copy.glob("wal-*.log"))
    data = wal.read_bytes()
    with sutradb.open(copy, "r") as intact:
        full = len(intact)
    end = len(data.rstrip(b"\0"))             # the committed records (then preallocated zeros)
    wal.write_bytes(data[:64 + (end - 64) // 2])
    return copy, wal, full


def test_open_and_verify_report_a_cut_log(cut_db, capsys):
    path, wal, _ = cut_db
    for mode in ("r", "a"):
        with pytest.raises(CorruptDatabaseError, match=rf"{wal.name}: the log ends at byte \d+ "
                           r"\(transaction \d+\) but transactions up to \d+ were committed"):
            sutradb.open(path, mode)
    assert main(["verify", str(path)]) == 1
    err = capsys.readouterr().err
    assert "CorruptDatabaseError" in err and wal.name in err and "missing" in err


def test_recover_reads_the_intact_part_and_says_what_was_lost(cut_db, tmp_path, capsys):
    path, wal, full = cut_db
    with pytest.raises(InvalidArgumentError):
        sutradb.open(path, "a", recover=True)
    with sutradb.open(path, "r", recover=True) as db:
        rec = db.recovery
        n = len(db)
        assert 0 < n < full
        assert rec["committed_transaction"] > rec["intact_transaction"]
        assert wal.name in rec["problems"][0]
        texts = sorted(db.get(int(i)).text for i in db.ids())
    assert main(["recover", str(path), "--json"]) == 1       # something was lost
    out = json.loads(capsys.readouterr().out)
    assert out["lost"] and out["concepts"] == n
    new = tmp_path / "saved"
    assert main(["recover", str(path), "--to", str(new)]) == 0
    capsys.readouterr()
    with sutradb.open(new, "r") as saved:
        assert sorted(saved.get(int(i)).text for i in saved.ids()) == texts
        assert saved.recovery is None
        saved.verify()
        assert saved.get("k0").metadata == {"i": 0}


def test_recover_on_an_intact_database_reports_nothing(tmp_path, capsys):
    with sutradb.open(tmp_path / "ok", dim=4) as db:
        db.add_vectors(np.eye(4, dtype="float32"))
    assert main(["recover", str(tmp_path / "ok")]) == 0
    assert "nothing is missing" in capsys.readouterr().out
    with sutradb.open(tmp_path / "ok", "r", recover=True) as db:
        assert db.recovery is None
