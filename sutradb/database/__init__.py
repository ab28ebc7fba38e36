"""The database: concepts (text, vector, metadata, key), search, links, transactions.

:func:`open` returns a :class:`Database`. This package is the only part of sutradb
that ties the storage engine (:mod:`sutradb.storage`), the vector index
(:mod:`sutradb.index`) and embedders together; each of those knows nothing of the
others, and none of them imports this package.

Data model: :mod:`sutradb.database.concepts`.
Index lifecycle: :mod:`sutradb.database.indexing`.
Transactions: :mod:`sutradb.database.transactions`.
Thread safety: :mod:`sutradb.database.locking`.

Modules
-------
core
    :class:`Database`, :func:`open`, :func:`tune`: opening, options and stored meta,
    the state the other modules share, ``verify``, ``compact``, ``refresh``, ``close``.
concepts
    :class:`Concept`, :class:`Hit`; ``add``, ``add_vectors``, ``upsert``, ``update``
    (one or a batch), ``delete`` (ids or a filter),
    id and key resolution, ``get`` and its caches.
listing
    ``find``, ``find_ids``, ``find_iter``, ``count``: concepts by filter, ordered,
    in pages.
links
    ``link``, ``unlink``, ``neighbors``, ``links``.
arrow
    ``to_arrow``, ``to_pandas``, ``add_arrow``: Arrow tables (and pandas) in and
    out.
arrowcols
    The Arrow columns: metadata column encoding, vectors, the input plan.
exchange
    ``export`` and :func:`from_export`: a database written out whole and read back
    equal (ids, links, index).
search
    ``search``, ``search_vectors``, filters, ``find_words``.
distances
    ``distance`` and ``distances`` over a
    :class:`~sutradb.database.distances.DistanceTable`.
indexing
    ``index_info``, ``build_index``, ``tune``; training, drift and the IVF lists'
    upkeep after commits.
ivflists
    The IVF list arithmetic (layout, default nprobe, fold, renumbering): functions.
transactions
    :class:`Transaction`, staging, commit and what follows it.
recordindex
    The key, metadata and word indexes of the live concepts.
locking
    The readers/writer lock.
options
    :data:`DEFAULT_OPTIONS`, :data:`METRICS`, :data:`INDEX_KINDS`, the meta format.
validation
    Argument checks.
progress
    Progress display.
"""

from __future__ import annotations

from ..graph import Link
from .concepts import Concept, Hit
from .core import Database, open, tune
from .exchange import from_export
from .options import DEFAULT_OPTIONS, INDEX_KINDS, METRICS
from .transactions import Transaction

__all__ = ["open", "tune", "from_export", "Database", "Transaction", "Concept", "Hit", "Link",
           "METRICS", "DEFAULT_OPTIONS", "INDEX_KINDS"]
