"""sutradb: an embedded concept database with product-quantized similarity search."""

from . import errors
from .errors import *  # noqa: F401,F403
from .index.pq import ProductQuantizer

__version__ = "0.1.0"

__all__ = ["ProductQuantizer", "errors", "__version__"] + list(errors.__all__)
