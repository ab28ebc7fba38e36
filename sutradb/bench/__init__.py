"""The sutradb performance suite, shipped with the package.

``sutradb bench [--quick] [--json out.json] ...`` or ``python -m sutradb.bench ...``
runs :func:`sutradb.bench.suite.main`: sutradb's operations against sqlite3, NumPy and
(when installed, ``pip install sutradb[bench]``) FAISS and hnswlib, on the bundled real
sample or on a data set directory (``--data``). :mod:`sutradb.bench.common` holds the
helpers it shares with the longer research benchmarks of a source checkout's ``bench/``.

Nothing here is imported by ``import sutradb``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def main(argv: Sequence[str] | None = None, **kwargs: Any) -> int:
    """Run the suite; see :func:`sutradb.bench.suite.main`."""
    from .suite import main as suite_main
    return suite_main(argv, **kwargs)
