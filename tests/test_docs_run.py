"""The docs are executed: every ```python block of README.md and docs/*.md runs, so a snippet that
drifts from the code fails the suite. Conventions (docs/testing.md, "Runnable docs"):

- the blocks of one file run in order in one namespace, in a temporary working folder that holds
  a link to ``examples/`` (snippets may read ``examples/configs/...``);
- ``<!-- illustrative: <reason> -->`` on the line before a fence skips that block; the reason is
  required (e.g. it needs an API key or the real local models);
- a ```python fence inside an HTML comment (``<!-- setup ... -->``) is hidden from readers but run
  like any other block: it defines what the visible snippet assumes (a pool, queries, ...).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"(?:<!--\s*illustrative:(?P<why>[^\n]*?)-->[ \t]*\n)?^```python[ \t]*\n(?P<code>.*?)^```", re.S | re.M)


def doc_blocks(path: Path) -> list[tuple[int, str | None, str]]:
    """(line, illustrative reason or None, code) for each ```python block of a Markdown file."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start("code")) + 1, None if m.group("why") is None else m.group("why").strip(),
             m.group("code")) for m in _BLOCK.finditer(text)]


def doc_counts() -> tuple[int, int]:
    """(executed, illustrative) snippet counts over README.md and docs/*.md."""
    blocks = [b for p in DOCS for b in doc_blocks(p)]
    return sum(why is None for _, why, _ in blocks), sum(why is not None for _, why, _ in blocks)


def test_every_illustrative_block_says_why():
    for path in DOCS:
        for line, why, _ in doc_blocks(path):
            assert why is None or why, f"{path.name}:{line}: '<!-- illustrative: -->' needs a reason"


def test_the_fence_pattern_finds_every_python_block():
    """A block the pattern misses would silently go unrun."""
    for path in DOCS:
        assert len(doc_blocks(path)) == len(re.findall(r"^```python", path.read_text(), re.M)), path.name


@pytest.mark.parametrize("path", [p for p in DOCS if any(why is None for _, why, _ in doc_blocks(p))],
                         ids=lambda p: p.name)
def test_doc_snippets_run(path, tmp_path, monkeypatch):
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"doc:{path.name}"}
    for line, why, code in doc_blocks(path):
        if why is not None:
            continue
        try:
            exec(compile(code, f"{path.relative_to(ROOT)}:{line}", "exec"), namespace)
        except Exception as exc:  # the file and line of the block in the report, not only exec's frame
            raise AssertionError(f"{path.relative_to(ROOT)}, block at line {line} failed: {exc!r}") from exc
