"""Mermaid itself as a test tool: ``tools/mermaid-check`` (Node, pinned by its package-lock.json)
installed once, then run on many diagrams in one process.

Installed with ``npm ci`` into the tool's own ``node_modules`` (not in git); a stamp holding the
lock file's SHA-256 says the installed tree is the locked one, so later sessions skip npm.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from filelock import FileLock

TOOL = Path(__file__).resolve().parent.parent / "tools" / "mermaid-check"
_STAMP = TOOL / "node_modules" / ".infra-apply-lock-sha256"
# npm's own words for a registry it cannot reach (DNS, refused, timed out, offline).
_UNREACHABLE = re.compile(
    r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|"
    r"network request to .* failed|request to .* failed, reason|ERR_SOCKET_TIMEOUT|offline",
    re.IGNORECASE,
)
_FENCE = re.compile(r"^```mermaid\n(.*?)^```$", re.MULTILINE | re.DOTALL)

# Every line infra-apply's diagram may contain: ids are ours, labels escaped (no raw quote,
# backtick, percent, angle bracket, brace or pipe; only our own <br/> between lines).
LABEL = r'"[^"`%<>{}|\n]*(?:<br/>[^"`%<>{}|\n]*)*"'
CLASSES = r"(?:created|updated|replaced|deleted|imported|firewall|down|external)"
NODE = r"(?:drop\d+_(?:svc|job)\d+|ext\d+)"
MERMAID_LINE = re.compile(
    "|".join(
        [
            r"flowchart LR",
            rf"  classDef {CLASSES} [a-z0-9:#,\- ]+",
            r'  internet\(\("internet"\)\)',
            rf"  subgraph (?:drop\d+|cluster\d+|legend)\[{LABEL}\]",
            r"  end",
            rf"    drop\d+_host\{{\{{{LABEL}\}}\}}",
            rf"    (?:drop\d+_(?:svc|job)\d+|legend_{CLASSES})\[{LABEL}\]",
            rf"    cluster\d+_db\d+\[\({LABEL}\)\]",
            rf"  (?:gone\d+|ext\d+|omitted|empty)\[{LABEL}\]",
            r'  internet -->\|"\d+/(?:tcp|udp)(?: \(opened\))?"\| drop\d+_host',
            r'  internet -\.->\|"(?:\d+(?:-\d+)?/(?:tcp|udp)|icmp) \(closed\)"\| drop\d+_host',
            rf'  drop\d+_svc\d+ -\.->\|"HTTP over mesh"\| {NODE}',
            rf"  {NODE} --> cluster\d+_db\d+",
            rf"  drop\d+_host -->\|{LABEL}\| cluster\d+_db\d+",
            rf"  class [a-z0-9_]+ {CLASSES}",
        ]
    )
)


class Checked(NamedTuple):
    returncode: int
    output: str


class MermaidChecker(NamedTuple):
    """Runs ``check.mjs`` on named diagrams in one Node process."""

    node: str

    def check(self, diagrams: Mapping[str, str]) -> Checked:
        items = [{"name": name, "diagram": text} for name, text in diagrams.items()]
        r = subprocess.run(
            [self.node, str(TOOL / "check.mjs")],
            input=json.dumps(items),
            capture_output=True,
            text=True,
            timeout=300,
            cwd=TOOL,
        )
        return Checked(r.returncode, r.stdout + r.stderr)


def mermaid_blocks(markdown: str) -> list[str]:
    """The bodies of the ```mermaid fences of a markdown text."""
    return _FENCE.findall(markdown)


def install() -> MermaidChecker | str:
    """The checker, installed when needed; or why it cannot be (a reason to skip)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node and npm are not on PATH (Debian: apt-get install nodejs npm; .ci/run does)"
    lock = TOOL / "package-lock.json"
    want = hashlib.sha256(lock.read_bytes()).hexdigest()
    # Two sessions in one worktree must not run npm ci over each other.
    with FileLock(str(TOOL / ".npm-ci.lock")):
        if _STAMP.is_file() and _STAMP.read_text().strip() == want:
            return MermaidChecker(node)
        env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fetch_retries": "1"}
        try:
            r = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=TOOL,
                capture_output=True,
                text=True,
                timeout=600,
                env=env,
            )
        except subprocess.TimeoutExpired:
            return "npm ci took over 10 minutes: the npm registry cannot be reached"
        if r.returncode != 0:
            output = (r.stdout + r.stderr).strip()
            why = next((line for line in output.splitlines() if _UNREACHABLE.search(line)), None)
            if why is not None:
                return f"the npm registry cannot be reached (npm ci: {why.strip()})"
            raise RuntimeError(f"npm ci failed in {TOOL}:\n{output}")
        _STAMP.write_text(want + "\n")
    return MermaidChecker(node)
