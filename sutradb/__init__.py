"""sutradb: an embedded concept database with product-quantized similarity search.

>>> import sutradb
>>> db = sutradb.open(":memory:", dim=3)        # or a directory path
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import errors as errors
from .errors import *  # noqa: F401,F403
from .simd import show_config as show_config
from .index.pq import ProductQuantizer as ProductQuantizer
from .database import (Concept as Concept, Database as Database, Hit as Hit, Link as Link,
                       Transaction as Transaction, from_export as from_export, open as open,
                       tune as tune)  # noqa: A004

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from .distributed.sharded import ShardedDatabase

__version__ = "0.1.0"

__all__ = ["open", "tune", "from_export", "Database", "Transaction", "Concept", "Hit", "Link",
           "ProductQuantizer", "show_config", "errors", "__version__"] + list(errors.__all__)


def open_sharded(paths_or_manifest: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                 **kwargs: Any) -> ShardedDatabase:
    """Open a sharded database (read-only): the directory a
    :func:`sutradb.distributed.learn` job wrote, or a list of shard paths. Searches
    every shard and merges the top-k exactly; ``get`` / ``distance`` route by global
    id. See :func:`sutradb.distributed.open_sharded` (imported on call: ``import
    sutradb`` imports neither :mod:`sutradb.distributed` nor Dask)."""
    from .distributed.sharded import open_sharded as _open_sharded
    return _open_sharded(paths_or_manifest, **kwargs)


__all__.append("open_sharded")
