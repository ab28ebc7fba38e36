"""``python -m sutradb``: the command line (see :mod:`sutradb.cli`)."""

from .cli import main

raise SystemExit(main())
