"""The layout keeps its promises, checked by reading the source.

Live or sandbox is chosen once, where the command starts (``account.choose``, called by the
CLI): no other module branches on it. The exceptions, each for a reason:

- ``cli.py``, the composition root: it declares ``--sandbox`` and makes the choice;
- ``cloud/account.py``: ``choose`` and the two accounts it chooses between;
- ``sandbox/``: it models the provider;
- ``config.py``: infra-apply.toml's ``[sandbox]`` table and ``[state] sandbox_key_prefix``;
- ``report/``: it renders what a report records (``"sandbox"`` in JSON, the comment's
  marker), for reports read back from files too, where there is no account to ask.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "infra_apply"
EXEMPT = ("cli.py", "cloud/account.py", "manifests/config.py", "sandbox/", "report/")
# Each a form the live/sandbox choice took in the verbs before there was one account.
BRANCHES = {
    "the mode as a flag of the context": re.compile(r"\bctx\.sandbox\b"),
    "the mode passed on as a flag": re.compile(r"\bsandbox\s*="),
    "a branch on the mode": re.compile(r"\bif\b.*\b(sandbox|stand_in)\b"),
    "the mode told by the cloud file": re.compile(r"\bcloud\s+is\s+(not\s+)?None\b"),
}


def code_lines(source: str) -> dict[int, str]:
    """Each line's code without its strings and comments (docstrings say "sandbox" freely)."""
    lines: dict[int, list[str]] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.STRING, tokenize.COMMENT) or tok.type == getattr(
            tokenize, "FSTRING_START", -1
        ):
            continue
        if tok.type in (tokenize.NAME, tokenize.OP, tokenize.NUMBER):
            lines.setdefault(tok.start[0], []).append(tok.string)
    return {n: " ".join(words).replace(" . ", ".") for n, words in lines.items()}


def branches(package: Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if rel.startswith(EXEMPT):
            continue
        for number, line in code_lines(path.read_text(encoding="utf-8")).items():
            found += [
                f"infra_apply/{rel}:{number}: {what}: {line}"
                for what, rx in BRANCHES.items()
                if rx.search(line)
            ]
    return found


def test_no_module_outside_the_composition_root_branches_on_sandbox() -> None:
    assert branches(PACKAGE) == []


def test_the_check_sees_each_form_it_forbids(tmp_path: Path) -> None:
    (tmp_path / "verb.py").write_text(
        '"""Docstrings and comments may say sandbox=True; code may not."""\n'
        "def run(ctx, prep):\n"
        "    if ctx.sandbox:  # sandbox\n"
        "        remedy(sandbox=True)\n"
        "    mode = 'sandbox' if prep.cloud is not None else 'live'\n"
        "    return mode\n"
    )
    found = branches(tmp_path)
    assert [line.split(": ")[1] for line in found] == [
        "the mode as a flag of the context",
        "a branch on the mode",
        "the mode passed on as a flag",
        "the mode told by the cloud file",
    ]
    assert all(line.startswith("infra_apply/verb.py:") for line in found)


# A test file sits where the module it tests lives; these check the repository as a whole.
REPO_WIDE_TESTS = {
    "test_bench_figures",
    "test_ci_drift_workflow",
    "test_ci_workflows",
    "test_docs",
    "test_layout",
    "test_new_kind",
    "test_scan",
    "test_startup",
}


def misplaced(tests: Path, package: Path) -> list[str]:
    """Test files outside the mirror of ``package``: tests/<pkg>/ for one of its packages,
    tests/e2e/ for the journeys, the top of tests/ for top-level modules and repo-wide checks."""
    packages = {p.parent.name for p in package.glob("*/__init__.py")} | {"e2e"}
    modules = {p.stem for p in package.glob("*.py")} - {"__init__", "__main__"}
    found = []
    for path in sorted(tests.rglob("test_*.py")):
        rel = path.relative_to(tests)
        if any(part in ("fixtures", "corpus") for part in rel.parts):
            continue
        if len(rel.parts) > 2 or (len(rel.parts) == 2 and rel.parts[0] not in packages):
            found.append(f"tests/{rel.as_posix()}: no package infra_apply/{rel.parent.as_posix()}")
        elif (
            len(rel.parts) == 1
            and path.stem not in REPO_WIDE_TESTS
            and not any(path.stem == f"test_{m}" or path.stem.startswith(f"test_{m}_") for m in modules)
        ):
            found.append(f"tests/{rel.as_posix()}: not a top-level module's test: move it to its package")
    return found


def test_tests_mirror_the_package() -> None:
    assert misplaced(PACKAGE.parent / "tests", PACKAGE) == []


def test_the_mirror_check_sees_a_misplaced_test(tmp_path: Path) -> None:
    package, tests = tmp_path / "pkg", tmp_path / "tests"
    for rel in ("plan/__init__.py", "plan/guard.py", "plan/stray.py", "kinds.py", "__init__.py"):
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text("")
    for rel in (
        "plan/test_guard.py",
        "e2e/test_e2e_x.py",
        "test_kinds_table.py",
        "test_docs.py",
        "fixtures/test_not_a_test.py",
        "test_stray.py",
        "planning/test_guard.py",
    ):
        (tests / rel).parent.mkdir(parents=True, exist_ok=True)
        (tests / rel).write_text("")
    assert misplaced(tests, package) == [
        "tests/planning/test_guard.py: no package infra_apply/planning",
        "tests/test_stray.py: not a top-level module's test: move it to its package",
    ]
