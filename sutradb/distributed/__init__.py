"""Scale-out on Dask distributed: distributed learn and sharded search.

* :func:`learn` embeds a corpus on a Dask cluster (the model loaded once per
  worker) into N shard databases that share one PQ codebook, and writes a manifest;
  each shard is a normal database :func:`sutradb.open` reads alone.
* :func:`open_sharded` (also ``sutradb.open_sharded``) searches all the shards at
  once (local threads, or tasks on the cluster) and merges the top-k exactly;
  ``get`` and ``distance`` route by global id.
* :func:`local_cluster` starts a ``LocalCluster`` bound to 127.0.0.1.

Only :mod:`sutradb.distributed._dask` imports Dask, and only when a job or a
sharded database is given a ``client`` (``pip install sutradb[dask]``); the core
never imports this package. See ``docs/distributed.md``.
"""

from __future__ import annotations

from typing import Any

from .learn import LearnReport, learn
from .manifest import IdScheme, read_manifest
from .sharded import ShardedDatabase, open_sharded

__all__ = ["learn", "LearnReport", "open_sharded", "ShardedDatabase", "IdScheme",
           "read_manifest", "local_cluster"]


def local_cluster(n_workers: int = 2, threads_per_worker: int = 1, **kwargs: Any) -> Any:
    """A Dask ``LocalCluster`` of worker processes bound to 127.0.0.1 without a
    dashboard (see :func:`sutradb.distributed._dask.local_cluster`)."""
    from ._dask import local_cluster as _lc
    return _lc(n_workers, threads_per_worker, **kwargs)
