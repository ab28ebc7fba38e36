"""Text corpora for the learn benchmark that need no download.

``stdlib_docstrings(n)``: the docstrings of the Python standard library's modules,
classes and functions (real English technical prose, mostly one to several
paragraphs: a corpus of *longer* texts beside the one-line PyPI summaries).
Write one to a file with ``python bench/corpora.py OUT.txt [N]`` (one text per line,
newlines folded to spaces).

``package_docstrings(roots, n)``: the docstrings of every module, class and function
in the ``.py`` files under ``roots`` (e.g. a venv's site-packages: NumPy, SciPy,
scikit-learn, PyTorch, pandas, Dask...), read with :mod:`ast` (nothing is imported or
run): tens of thousands of long technical texts, for a long-text benchmark set
(``bench/make_textset.py``).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pkgutil
import sys
import warnings

SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test",
        "lib2to3", "ensurepip", "venv", "pydoc_data"}


def stdlib_docstrings(n: int = 2000, min_len: int = 200, max_len: int = 2000) -> list[str]:
    """Up to ``n`` distinct docstrings of ``min_len``..``max_len`` characters, in a
    fixed (sorted module) order."""
    out, seen = [], set()
    names = sorted(m.name for m in pkgutil.iter_modules()
                   if m.name in sys.stdlib_module_names and m.name not in SKIP
                   and not m.name.startswith("_"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            try:
                mod = importlib.import_module(name)
            except Exception:          # a module that cannot import here is skipped
                continue
            objs = [mod] + [v for _, v in sorted(vars(mod).items())
                            if inspect.isclass(v) or inspect.isfunction(v)]
            for obj in objs:
                if _keep(inspect.getdoc(obj), out, seen, min_len, max_len) and len(out) >= n:
                    return out
    return out


def _keep(doc, out: list[str], seen: set[str], min_len: int, max_len: int) -> bool:
    """Append ``doc`` (whitespace folded) to ``out`` when its length is in range and it
    is new; whether it was appended."""
    if not doc:
        return False
    text = " ".join(doc.split())
    if not (min_len <= len(text) <= max_len) or text in seen:
        return False
    seen.add(text)
    out.append(text)
    return True


def package_docstrings(roots, n: int = 50_000, min_len: int = 200, max_len: int = 2000,
                       skip_dirs=("tests", "test", "testing", "__pycache__")) -> list[str]:
    """Up to ``n`` distinct docstrings of ``min_len``..``max_len`` characters (whitespace
    folded) of the modules, classes and functions in the ``.py`` files under ``roots``,
    in a fixed (sorted path, then source) order. Files are parsed, never imported."""
    out, seen = [], set()
    files = []
    for root in roots:
        for d, dirs, names in os.walk(root):
            dirs[:] = sorted(x for x in dirs if x not in skip_dirs and not x.endswith(".dist-info"))
            files.extend(os.path.join(d, f) for f in sorted(names) if f.endswith(".py"))
    for path in files:
        try:
            with open(path, "rb") as f:
                tree = ast.parse(f.read(), filename=path)
        except (SyntaxError, ValueError, OSError, RecursionError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if _keep(ast.get_docstring(node), out, seen, min_len, max_len) and len(out) >= n:
                return out
    return out


if __name__ == "__main__":
    texts = stdlib_docstrings(int(sys.argv[2]) if len(sys.argv) > 2 else 2000)
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        f.write("\n".join(texts) + "\n")
    print(f"{len(texts)} texts, mean {sum(map(len, texts)) / len(texts):.0f} characters")
