"""Every Mermaid diagram the tests produce parses with Mermaid itself (tools/mermaid-check), so
a diagram GitHub or Forgejo would show as an error never reaches a pull request."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import cli_env, run_cli
from tests.mermaid_cases import CASES, diagram
from tests.mermaid_check import MermaidChecker, mermaid_blocks
from tests.plan_fixtures import GOLDENS

BROKEN = {
    "unclosed label": 'flowchart LR\n  a["x]\n',
    "dangling edge": "flowchart LR\n  a -->\n",
    "subgraph never ended": 'flowchart LR\n  subgraph s["x"]\n    a\n',
    "end as a node id": "flowchart LR\n  end --> b\n",
    "over the edge limit": "flowchart LR\n" + "".join(f"  a --> b{i}\n" for i in range(501)),
}


def test_the_checker_rejects_broken_diagrams_and_names_them(mermaid: MermaidChecker) -> None:
    fine = {"fine": 'flowchart LR\n  a["ok"] -->|"22/tcp"| b\n'}
    r = mermaid.check({**fine, **BROKEN})
    assert r.returncode == 1, r.output
    assert re.findall(r"^FAILED (.+?): ", r.output, re.MULTILINE) == list(BROKEN), r.output
    assert "Edge limit exceeded" in r.output
    assert f"1 of {len(BROKEN) + 1} diagrams parsed" in r.output


def test_every_diagram_the_tests_produce_parses(mermaid: MermaidChecker, example: Path) -> None:
    diagrams: dict[str, str] = {}
    goldens = sorted(GOLDENS.glob("*.md"))
    for golden in goldens:
        for k, block in enumerate(mermaid_blocks(golden.read_text("utf-8"))):
            diagrams[f"{golden.name} #{k}"] = block
    assert len(diagrams) >= 5, "the goldens stopped drawing diagrams"
    for case in CASES:
        [block] = mermaid_blocks(diagram(case))
        diagrams[f"case {case}"] = block
    plan = _example_plan(example)
    blocks = mermaid_blocks(plan)
    assert len(blocks) == 3, plan  # ct, mc, quinn
    diagrams.update((f"example plan #{k}", block) for k, block in enumerate(blocks))
    # One Node process for all of them.
    r = mermaid.check(diagrams)
    assert r.returncode == 0, r.output
    assert f"{len(diagrams)} of {len(diagrams)} diagrams parsed" in r.output


def _example_plan(base: Path) -> str:
    """The markdown plan of the example tree against the sandbox: real Terraform."""
    r = run_cli(
        "--root", str(base / "tree"), "plan", "--sandbox", "--format", "markdown",
        "--out", str(base / "generated"), "--mesh-hosts", str(base / "mesh-hosts.json"),
        env=cli_env(base),
    )  # fmt: skip
    assert r.returncode == 2, r.stderr  # changes: nothing exists in a new sandbox
    return r.stdout
