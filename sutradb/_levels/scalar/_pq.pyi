"""Type stub of the ``_pq`` kernels (``sutradb/_pq.pyx``), the same at every level.

Array arguments are Cython typed memoryviews (any C-contiguous buffer of the dtype
named). The other levels' ``_pq.pyi`` re-export this one.
"""

import numpy as np
import numpy.typing as npt

def assign(X: npt.NDArray[np.float32], centers: npt.NDArray[np.float32],
           nthreads: int = 1) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]: ...
def update(X: npt.NDArray[np.float32], labels: npt.NDArray[np.int32],
           K: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]: ...
def encode(X: npt.NDArray[np.float32], codebooks: npt.NDArray[np.float32],
           nthreads: int = 1) -> npt.NDArray[np.uint8]: ...
def decode(codes: npt.NDArray[np.uint8],
           codebooks: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...
