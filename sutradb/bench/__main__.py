"""``python -m sutradb.bench``: the performance suite (see :mod:`sutradb.bench.suite`)."""

from .suite import main

raise SystemExit(main(prog="python -m sutradb.bench"))
