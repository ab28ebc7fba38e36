"""sutradb: an embedded concept database with product-quantized similarity search.

>>> import sutradb
>>> db = sutradb.open(":memory:", dim=3)        # or a directory path
"""

from . import errors
from .errors import *  # noqa: F401,F403
from .simd import show_config
from .index.pq import ProductQuantizer
from .database import Concept, Database, Hit, Link, Transaction, from_export, open, tune  # noqa: A004

__version__ = "0.1.0"

__all__ = ["open", "tune", "from_export", "Database", "Transaction", "Concept", "Hit", "Link",
           "ProductQuantizer", "show_config", "errors", "__version__"] + list(errors.__all__)


def open_sharded(paths_or_manifest, **kwargs):
    """Open a sharded database (read-only): the directory a
    :func:`sutradb.distributed.learn` job wrote, or a list of shard paths. Searches
    every shard and merges the top-k exactly; ``get`` / ``distance`` route by global
    id. See :func:`sutradb.distributed.open_sharded` (imported on call: ``import
    sutradb`` imports neither :mod:`sutradb.distributed` nor Dask)."""
    from .distributed.sharded import open_sharded as _open_sharded
    return _open_sharded(paths_or_manifest, **kwargs)


__all__.append("open_sharded")
