"""Options of :func:`sutradb.open`, the database meta's format, and the package's
constants (checked by :func:`sutradb.database.validation.check_options`).

The options in :data:`STORED` are kept in the database meta (the store's
``meta["sutradb"]``) when it is created; opening it again with another value of a
tuning option overrides it for the session only (never persisted), and
``vector_dtype`` cannot change.
"""

from __future__ import annotations

from typing import Any

__all__ = ["METRICS", "MEMORY", "FORMAT", "FORMAT_VERSION", "INDEX_KINDS", "DEFAULT_OPTIONS",
           "STORED", "BATCH", "DefaultStr", "DEFAULT_METRIC", "UNSET"]

METRICS = ("cosine", "ip", "l2")
#: The path of a database without files.
MEMORY = ":memory:"
#: ``meta["sutradb"]["format"]`` and ``["version"]`` of a database.
FORMAT = "sutradb-db"
FORMAT_VERSION = 1
#: Rows per batch wherever many rows are checked, encoded or read at once.
BATCH = 1 << 16

INDEX_KINDS = ("auto", "flat", "pq", "ivf")

DEFAULT_OPTIONS: dict[str, Any] = {
    "vector_dtype": "float16",   # "float16", "float32" or None (keep PQ codes only)
    "index": "auto",             # "auto": exact -> PQ (index_threshold) -> IVF-PQ
                                 # (ivf_threshold); "flat": exact only; "pq": never IVF;
                                 # "ivf": IVF lists as soon as the quantizer is trained
    # measured (bench/bench_auto.py, docs/benchmarks.md): at recall@10 >= 0.95, one
    # query per call, IVF lists beat the exact scan from 2-5k rows on every real set
    # and a flat PQ scan at every size, so "auto" goes from exact straight to IVF; at
    # 10,000, not 5,000: below that the exact scan costs < 0.3 ms and the nprobe tuned
    # on held-out stored vectors fell short on sift-5k's foreign queries (0.78 at 5k)
    "index_threshold": 10_000,   # live concepts that trigger PQ training
    "ivf_threshold": 10_000,     # live concepts that trigger the IVF lists ("auto")
    "ivf_nlist": None,           # lists (default ~4 sqrt(n), see index.ivf.default_nlist)
    "target_recall": 0.95,       # recall@10 the default nprobe is chosen for
    "pq_m": None,                # subspaces (default: one code byte per 8 dimensions)
    "pq_nbits": None,            # 4 (fast scans) when vectors are stored, else 8
    "seed": 0,
    "train_size": 65_536,        # training sample
    "train_iters": 20,
    "durability": "full",
    "cache_size": 262_144,       # decoded records kept for get()
    "progress": False,           # True (stderr) or callable(done, total) during training
    "embedder": None,            # spec ("sentence-transformers:all-MiniLM-L6-v2", "spacy:NAME")
                                 # or an object with .name, .dim and __call__(texts)
    "batch_size": 256,           # texts embedded per batch by add()
    "text_tokenizer": None,      # ranked full-text search: a sutradb.text spec, e.g.
                                 # {"stopwords": "english", "stem": "english"}; set at
                                 # creation (None: case-folded Unicode words)
}
#: Options stored in the database meta at creation.
STORED = ("vector_dtype", "index", "index_threshold", "ivf_threshold", "ivf_nlist",
          "target_recall", "pq_m", "pq_nbits", "seed", "train_size", "train_iters")


class DefaultStr(str):
    """A default argument value that can be told apart from the same value given."""


#: ``metric=`` when not given (an existing database keeps its own metric).
DEFAULT_METRIC = DefaultStr("cosine")
#: "Not given" for arguments where None is a value (``Database.update``).
UNSET: Any = type("_Unset", (), {"__repr__": lambda self: "<unset>"})()
