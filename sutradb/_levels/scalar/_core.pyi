"""Type stub of the ``_core`` kernels (``sutradb/_core.pyx``), the same at every level.

The array arguments are Cython typed memoryviews: any object with the buffer protocol,
C-contiguous, of the dtype named (``const``: read-only arrays and memory maps are
accepted). The other levels' ``_core.pyi`` re-export this one.
"""

from collections.abc import Sequence
from typing import Final

from typing_extensions import disjoint_base

import numpy as np
import numpy.typing as npt

_F32 = npt.NDArray[np.float32]
_U8 = npt.NDArray[np.uint8]
_U16 = npt.NDArray[np.uint16]
_I64 = npt.NDArray[np.int64]
_I8 = npt.NDArray[np.int8]
_I32 = npt.NDArray[np.int32]

#: the kernel level this module was compiled for (0 scalar, 1 avx2, 2 avx512, 3 native)
LEVEL: Final[int]
#: the SIMD paths of _simd.h compiled into this module ("avx512", "avx2")
COMPILED_PATHS: Final[tuple[str, ...]]
#: "intel", "amd" or ""
CPU_VENDOR: Final[str]
#: the 4-bit fast scan's bounds are computed with SIMD at this level
HAVE_FASTSCAN4: Final[bool]
METRIC_L2: Final[int]
METRIC_IP: Final[int]
METRIC_COS: Final[int]
_CPU_FEATURE_BITS: Final[tuple[str, ...]]

def cpu_features() -> frozenset[str]: ...
def adc_gather(on: bool | None = None) -> bool: ...
def _unit_outputs(nq: int, nsplit: int, k: int) -> tuple[_F32, _I64, _F32, _I64]: ...
def table_operands(codebooks: _F32) -> tuple[_F32, _F32]: ...
def distance_tables(queries: _F32, codebooks: _F32, metric: int, nthreads: int = 1) -> _F32: ...
def distance_tables_t(queries: _F32, CT: _F32, cn: _F32, metric: int,
                      nthreads: int = 1) -> _F32: ...
def adc_topk(tables: _F32, codes: _U8, k: int, mask: _U8 | None = None, nthreads: int = 1,
             fastscan: bool = True) -> tuple[_F32, _I64]: ...
def adc_distances(tables: _F32, codes: _U8, nthreads: int = 1) -> _F32: ...
def rerank(queries: _F32, vectors: _F32 | _U16, candidates: _I64, k: int, metric: int,
           nthreads: int = 1) -> tuple[_F32, _I64]: ...
def sdc_tables(codebooks: _F32, metric: int) -> _F32: ...
def sdc(tables: _F32, a: _U8, b: _U8) -> _F32: ...
def ivf_adc_topk(tables: _F32, codes: _U8, offsets: _I64, probes: _I64, ids: _I64, k: int,
                 mask: _U8 | None = None, nthreads: int = 1, fastscan: bool = True,
                 blocked: bool = False, approx: bool = False) -> tuple[_F32, _I64]: ...
def coarse_panels_f16(centres: _F32) -> _U16: ...
def coarse_probes_f16(queries: _F32, panels: _U16, cn: _F32, nprobe: int,
                      nthreads: int = 1) -> _I64: ...
def coarse_panels_i8(centres: _F32) -> tuple[_I8, _F32, _I32]: ...
def coarse_probes_i8(queries: _F32, panels: _I8, cinv: _F32, csum: _I32, cn: _F32,
                     nprobe: int, nthreads: int = 1) -> _I64: ...
def ivf_search(queries: _F32, panels: _U16 | None, ccn: _F32, nprobe: int, CT: _F32, cn: _F32,
               tmetric: int, codes: _U8, offsets: _I64, ids: _I64, kc: int, k: int,
               mask: _U8 | None = None, vectors: _F32 | _U16 | None = None, rmetric: int = 0,
               nthreads: int = 1, fastscan: bool = True, blocked: bool = False,
               panels8: tuple[_I8, _F32, _I32] | None = None,
               approx: bool = False) -> tuple[_F32, _I64]: ...


@disjoint_base
class PairDistances:
    def __new__(cls, blocks: Sequence[_F32 | _U16], idrow: _I64, metric: int) -> PairDistances: ...
    @property
    def n_ids(self) -> int: ...
    def distance(self, a: int, b: int) -> float: ...
    def distances(self, pairs: _I64, nthreads: int = 1) -> _F32: ...
