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
