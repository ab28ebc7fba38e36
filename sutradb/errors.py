"""The sutradb exception tree.

Every error sutradb raises on purpose is a :class:`SutraError`. Where a builtin
exception already names the kind of failure, the sutradb class inherits it too, so
``except ValueError`` keeps working for callers who do not know sutradb.

This module imports nothing from the package (it is the root of the import graph).
"""

__all__ = [
    "SutraError",
    "InvalidArgumentError",
    "DimensionError",
    "NotTrainedError",
    "NotFoundError",
    "DatabaseNotFoundError",
    "DatabaseExistsError",
    "DuplicateKeyError",
    "ReadOnlyError",
    "LockedError",
    "CorruptDatabaseError",
    "ClosedError",
    "EmbedderError",
    "UnsupportedCPUError",
    "MissingDependencyError",
]


class SutraError(Exception):
    """Base class of every error sutradb raises."""


class InvalidArgumentError(SutraError, ValueError):
    """An argument has a wrong value: NaN/inf in vectors, an empty array, ``k < 1``,
    an unknown metric, ``dim % m != 0``..."""


class DimensionError(InvalidArgumentError):
    """An array has the wrong shape or dimension (vectors of the wrong ``dim``,
    codes of the wrong width)."""


class NotTrainedError(SutraError, RuntimeError):
    """A quantizer or index is used before it was trained (``fit``)."""


class NotFoundError(SutraError, KeyError):
    """An id or key is not in the database."""

    def __str__(self) -> str:  # KeyError quotes its argument; a message reads better plain
        return str(self.args[0]) if self.args else ""


class DatabaseNotFoundError(SutraError, FileNotFoundError):
    """There is no database at the path (opening read-only, or a path that must exist).
    Still a :class:`FileNotFoundError` for callers who do not know sutradb."""


class DatabaseExistsError(SutraError, FileExistsError):
    """A database (or something else) already exists where one must be created
    (``mode="x"``). Still a :class:`FileExistsError`."""


class DuplicateKeyError(InvalidArgumentError):
    """A key that must be unique is already taken."""


class ReadOnlyError(SutraError, PermissionError):
    """A write was attempted on a database opened read-only."""


class LockedError(SutraError, TimeoutError):
    """Another process holds the writer lock (and the caller's timeout expired)."""


class CorruptDatabaseError(SutraError):
    """A file of the database is damaged: bad magic, bad checksum, impossible size
    or offset. The message names the file."""


class ClosedError(SutraError, ValueError):
    """An operation on a closed database (``ValueError``, as for closed files)."""


class EmbedderError(SutraError):
    """An embedder cannot be loaded (missing model or package) or does not match
    the one the database was built with."""


class UnsupportedCPUError(SutraError, ImportError):
    """The compiled kernels cannot run as asked: ``SUTRADB_SIMD`` names a level this
    CPU does not support or this build did not compile, or the kernels are not
    built at all (an ``ImportError``: it is raised while ``sutradb`` is imported)."""


class MissingDependencyError(SutraError, ImportError):
    """An optional dependency a feature needs is not installed (pyarrow for
    :meth:`Database.to_arrow <sutradb.Database.to_arrow>` and Parquet, pandas for
    :meth:`Database.to_pandas <sutradb.Database.to_pandas>`); the message names the
    package and the extra that installs it. Still an :class:`ImportError`."""
