"""Type stub of the record codec (``sutradb/storage/_codec.pyx``).

The array arguments are Cython typed memoryviews: any C-contiguous object with the
buffer protocol of the dtype named (read-only arrays and memory maps are accepted).
"""

from typing import Any

from typing_extensions import disjoint_base

import numpy as np
import numpy.typing as npt

from .records import Record

__all__ = ["crc32", "RecordFile"]

def crc32(data: npt.NDArray[np.uint8]) -> int: ...

@disjoint_base
class RecordFile:
    @property
    def where(self) -> str: ...
    @property
    def ends_where(self) -> str: ...
    def __init__(self, rec: npt.NDArray[np.uint8], ends: npt.NDArray[np.uint64],
                 ids: npt.NDArray[np.int64], where: str, ends_where: str) -> None: ...
    def at(self, row: int) -> Record: ...
    def many(self, rows: npt.NDArray[np.int64]) -> list[Record]: ...
    def columns(self, rows: npt.NDArray[np.int64]) -> tuple[list[str | None], list[str | None],
                                                            list[dict[str, Any]]]: ...
