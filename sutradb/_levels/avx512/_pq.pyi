"""Type stub: the _pq kernels at level avx512 have the scalar level's signatures."""

from ..scalar._pq import *
