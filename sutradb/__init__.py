"""sutradb: an embedded concept database with product-quantized similarity search.

>>> import sutradb
>>> db = sutradb.open(":memory:", dim=3)        # or a directory path
"""

from . import errors
from .errors import *  # noqa: F401,F403
from .index.pq import ProductQuantizer
from .database import Concept, Database, Hit, Link, Transaction, open  # noqa: A004

__version__ = "0.1.0"

__all__ = ["open", "Database", "Transaction", "Concept", "Hit", "Link", "ProductQuantizer",
           "errors", "__version__"] + list(errors.__all__)
