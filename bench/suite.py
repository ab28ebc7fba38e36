"""The performance suite from a source checkout: ``python bench/suite.py [options]``.

The suite itself ships in the package (:mod:`sutradb.bench.suite`; ``sutradb bench``
or ``python -m sutradb.bench`` anywhere it is installed). This wrapper runs it with the
checkout's defaults: the real 100k set in ``../shared/data/pypi-minilm-100k`` when it is
there (else the bundled sample) and the JSON in ``bench/results/``. Same options,
``--help`` lists them.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common  # noqa: E402  (puts the checkout's sutradb first on the path)
from sutradb.bench.suite import main as suite_main  # noqa: E402


def main(argv=None) -> int:
    real = common.SHARED_DATA / "pypi-minilm-100k"
    return suite_main(argv, prog="python bench/suite.py",
                      default_data=real if real.is_dir() else None,
                      results_dir=common.RESULTS_DIR)


if __name__ == "__main__":
    raise SystemExit(main())
