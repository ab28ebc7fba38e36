"""Sphinx configuration: the user guide and design pages (MyST Markdown) and the API
reference generated from the numpydoc docstrings.

Build (what CI runs; ``-W`` makes every warning an error)::

    pip install -e ".[docs]"
    sphinx-build -W -b html docs docs/_build
"""

from __future__ import annotations

import os
import sys

# the checkout's package (with its kernels built in place) when it is not installed
sys.path.insert(0, os.path.abspath(".."))

import sutradb  # noqa: E402

project = "sutradb"
author = "The sutradb developers"
copyright = "the sutradb developers"
version = release = sutradb.__version__

extensions = [
    "sphinx.ext.autodoc",
    "numpydoc",
    "myst_parser",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: the pages' own heading anchors (``[x](#section)``) and GitHub-style tables
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# autodoc: members in source order; type hints in the signatures as written
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

# numpydoc renders the sections; class members are listed by autodoc itself (numpydoc's
# member tables would need autosummary stub pages)
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "alabaster"
html_title = f"sutradb {release}"
html_static_path: list[str] = []
