"""Every Mermaid diagram the tests produce parses with Mermaid itself (tools/mermaid-check), so
a diagram GitHub or Forgejo would show as an error never reaches a pull request."""

from __future__ import annotations

import re

from tests.mermaid_check import MermaidChecker

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
