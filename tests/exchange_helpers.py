"""Shared by tests/test_arrow.py and tests/test_export.py: metadata of every kind and
a type-strict comparison."""

import math

#: Metadata of every kind: typed fields, mixed, nested, bytes, beyond int64, None,
#: fields named like the fixed columns.
ZOO = [
    {"n": 1, "f": 0.5, "s": "a", "b": True, "tags": ["x", "y"], "nested": {"a": [1, {"b": None}]},
     "mixed": 1, "raw": b"\x00\xff", "deep_raw": {"r": [b"x"]}, "always": None, "big": 2 ** 63},
    {"n": 2, "f": -0.0, "s": "é", "b": False, "tags": [], "nested": {}, "mixed": "one",
     "raw": b"", "deep_raw": {"r": []}, "always": 3, "text": "a field called text"},
    {},
    {"n": 3, "f": float("inf"), "mixed": 1.0, "always": None, "id": "not the id"},
    {"n": 4, "tags": ["z"], "always": 7, "key": None},
]


def same(a, b) -> bool:
    """Equal values of the same types all the way down (bool is not int, 1 is not
    1.0, -0.0 is not 0.0); dict key order is not compared."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b) or (a != a and b != b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b
