"""Type stub: the _pq kernels at level native have the scalar level's signatures."""

from ..scalar._pq import *
