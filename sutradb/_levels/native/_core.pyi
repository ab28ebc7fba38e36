"""Type stub: the _core kernels at level native have the scalar level's signatures."""

from ..scalar._core import *
from ..scalar._core import _CPU_FEATURE_BITS as _CPU_FEATURE_BITS, _unit_outputs as _unit_outputs
