"""sutradb's storage engine: a crash-safe, transactional on-disk format.

One directory per database::

    MANIFEST            the commit point: names every live file (msgpack, checksummed)
    LOCK                the writer's lock (flock; LockFileEx on Windows)
    wal-GGGGGGGG.log    the write-ahead log that starts at manifest generation G
    NNNNNN.ids/.ends/.rec/.dead/.codes/.vec/.order   row segments (append-only)
    NNNNNN.links/.index                              immutable link and index segments

The public objects are :class:`Store` (open with :meth:`Store.open`),
:class:`Transaction` (from :meth:`Store.begin`) and :class:`Record`. The byte layout
is specified in ``docs/file-format.md``. :mod:`sutradb.storage.osio` is the only
module with platform-specific code (locks, positional I/O, fsync, madvise, renames)
and holds the seam ``osio.io`` through which every write, fsync, rename and truncate
goes (tests inject faults there).

This package depends on NumPy, msgpack and the standard library only (no kernels).
"""

from . import osio
from .store import DURABILITY_LEVELS, Record, Store, Transaction

__all__ = ["Store", "Transaction", "Record", "DURABILITY_LEVELS"]
