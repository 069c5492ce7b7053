"""The documentation stays true to the repository: the architecture page maps every module, the
README stays short and opens with its two commands, and no relative link points nowhere."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
ARCHITECTURE = DOCS / "architecture.md"
README_LIMIT = 250

# `infra_apply/x.py`, `infra_apply/pkg/y.py`: how the architecture page names a module.
MODULE_NAME = re.compile(r"`(infra_apply/[\w/]+\.py)`")
# [text](target) and [text](target "title"), images included; not reference-style links.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~)")


def modules_on_disk() -> set[str]:
    package = REPO / "infra_apply"
    return {p.relative_to(REPO).as_posix() for p in package.rglob("*.py")}


def modules_named(text: str) -> set[str]:
    return set(MODULE_NAME.findall(text))


def code_blocks(text: str) -> list[str]:
    """The fenced code blocks of a markdown text, in order."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            if current is None:
                current = []
            else:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code: links live there, not in examples."""
    kept, inside = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            inside = not inside
        elif not inside:
            kept.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(kept)


def relative_targets(text: str) -> list[str]:
    """Every link target that names a file of this repository (no scheme, no pure anchor)."""
    found = []
    for target in LINK.findall(prose(text)):
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue
        found.append(unquote(target.split("#", 1)[0]))
    return found


def broken_links(page: Path) -> list[str]:
    return [t for t in relative_targets(page.read_text()) if not (page.parent / t).exists()]


def doc_pages() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.glob("*.md"))]


def test_every_module_is_on_the_architecture_page() -> None:
    missing = modules_on_disk() - modules_named(ARCHITECTURE.read_text())
    assert not missing, f"add a line for each to docs/architecture.md: {sorted(missing)}"


def test_every_module_on_the_architecture_page_exists() -> None:
    gone = modules_named(ARCHITECTURE.read_text()) - modules_on_disk()
    assert not gone, f"docs/architecture.md names modules that do not exist: {sorted(gone)}"


def test_readme_is_short() -> None:
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= README_LIMIT, f"README.md has {lines} lines; the reference belongs in docs/"


def test_readme_opens_with_the_two_commands() -> None:
    first = code_blocks((REPO / "README.md").read_text())[0]
    commands = [line.split("#", 1)[0].strip() for line in first.splitlines()]
    assert "make demo" in commands
    assert "make test" in commands


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_point_at_files(page: Path) -> None:
    assert not broken_links(page), f"{page.relative_to(REPO)}: links to missing files"


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """The helpers see what they are meant to see: a stray module, a dead link, a missing command."""
    assert modules_named("| `infra_apply/report/text.py` | x |\n`infra_apply/x.py`") == {
        "infra_apply/report/text.py",
        "infra_apply/x.py",
    }
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](page.md) [anchor](#a) [web](https://example.com) [gone](missing.md#part)\n"
        "```sh\n[not a link](nowhere.md)\n```\n`[inline](nowhere.md)`\n"
    )
    assert broken_links(page) == ["missing.md"]
    assert code_blocks("text\n```sh\nmake demo\n```\n```\nx\n```\n") == ["make demo", "x"]
