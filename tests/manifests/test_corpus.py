"""Malformed-manifest corpus: every file is rejected (never hangs: 30 s cap), located, right rule.

Each ``tests/corpus/NN-name.yaml`` starts with a header comment::

    # expect: [error|warning] RULE[|RULE...] [line=N]

``RULE|RULE`` lists the rule ids that are equally acceptable (where the contract leaves the
choice open, e.g. a list document is both a parse-level and a schema problem); ``line=N`` pins
the line the problem must be reported on; ``warning`` cases run ``validate --strict``. Files that
cannot carry a comment (empty, binary, broken encodings) have their expectation in
``NO_HEADER``; inputs too big or too deep to keep as files are built at test time
(``GENERATED``).

Each case is written to ``<tmp>/@quinn/proj/.infra.yaml`` and validated by the CLI as a
subprocess (``python -m infra_apply --root <tmp> validate``), with an address-space limit so a
blow-up fails the test instead of the machine.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TESTS

CORPUS = TESTS / "corpus"
MANIFEST = "@quinn/proj/.infra.yaml"
HANG_TIMEOUT_S = 30.0
MEMORY_LIMIT = 2 * 1024**3

HEADER_RE = re.compile(
    r"^# expect: (?:(?P<level>error|warning) )?(?P<rules>[a-z_]+(?:\|[a-z_]+)*)"
    r"(?: line=(?P<line>\d+))?\s*$"
)
PROBLEM_RE = re.compile(
    r"^(?P<path>[^:\n]+):(?P<line>\d+):(?P<col>\d+): (?P<level>error|warning) "
    r"(?P<rule>[A-Za-z_]+): (?P<message>.+)$",
    re.MULTILINE,
)

# Expectations for corpus files whose first line cannot be a comment.
NO_HEADER: dict[str, str] = {
    "62-empty.yaml": "schema|yaml",
    "63-nul-bytes.yaml": "yaml",
    "64-random-bytes.yaml": "yaml",
    "65-bom-then-invalid-utf8.yaml": "yaml",
    "66-utf16-bom-junk.yaml": "yaml",
}

VALID = (
    "apiVersion: infra/v1\n"
    "project: proj\n"
    "provider: digitalocean\n"
    "service:\n"
    "  host: lime\n"
    "  runtime: python\n"
    "  port: 8080\n"
    "  systemd_unit: proj.service\n"
    "  deploy: scripts/deploy.sh\n"
)

MESH_HOSTS = {
    "network": "10.9.0.0/24",
    "hosts": {
        "wg": {"mesh_ip": "10.9.0.1", "public_ip": "198.51.100.7", "provider": "digitalocean"},
        "lime": {"mesh_ip": "10.9.0.2", "public_ip": "198.51.100.8", "provider": "digitalocean"},
        "fennel": {"mesh_ip": "10.9.0.3", "provider": "mac"},
    },
    "services": {},
}


@dataclass(frozen=True)
class Expect:
    rules: tuple[str, ...]
    level: str = "error"
    line: int | None = None


@dataclass(frozen=True)
class Case:
    id: str
    content: Callable[[], bytes]
    expect: Expect


def parse_expect(text: str) -> Expect:
    match = HEADER_RE.match(text)
    if match is None:
        raise ValueError(f"bad expectation {text!r}")
    line = match.group("line")
    return Expect(
        rules=tuple(match.group("rules").split("|")),
        level=match.group("level") or "error",
        line=int(line) if line else None,
    )


def corpus_expect(path: Path) -> Expect:
    if path.name in NO_HEADER:
        return parse_expect(f"# expect: {NO_HEADER[path.name]}")
    first = path.read_bytes().split(b"\n", 1)[0].decode("ascii")
    return parse_expect(first)


def _huge() -> bytes:
    """A syntactically valid manifest over 1 MiB: only a size limit can reject it."""
    items = "".join(f"    - dependency-{i:07d}\n" for i in range(70_000))
    return (VALID + "  depends_on:\n" + items).encode()


def _nested(opener: str, closer: str, depth: int = 10_000, prefix: str = "") -> Callable[[], bytes]:
    return lambda: (prefix + opener * depth + "x" + closer * depth + "\n").encode()


GENERATED: list[Case] = [
    Case("gen-huge-file", _huge, Expect(("yaml",))),
    Case("gen-deep-flow-lists", _nested("[", "]"), Expect(("yaml",))),
    Case("gen-deep-flow-mappings", _nested("{a: ", "}"), Expect(("yaml",))),
    Case("gen-deep-block-sequences", _nested("- ", ""), Expect(("yaml",))),
    Case(
        "gen-deep-lists-in-value",
        _nested("[", "]", prefix=VALID + "  depends_on: "),
        Expect(("yaml", "schema")),
    ),
]


def _file_case(path: Path) -> Case:
    return Case(path.stem, path.read_bytes, corpus_expect(path))


def all_cases() -> list[Case]:
    files = sorted(p for p in CORPUS.glob("*.yaml"))
    return [_file_case(p) for p in files] + GENERATED


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@dataclass(frozen=True)
class Run:
    code: int
    output: str
    seconds: float


def write_tree(root: Path, manifest: bytes) -> Path:
    target = root / MANIFEST
    target.parent.mkdir(parents=True)
    target.write_bytes(manifest)
    mesh = root / "mesh-hosts.json"
    mesh.write_text(json.dumps(MESH_HOSTS, indent=2))
    return mesh


def run_validate(root: Path, mesh: Path, *, strict: bool = False) -> Run:
    command = [sys.executable, "-m", "infra_apply", "--root", str(root), "validate"]
    if strict:
        command.append("--strict")
    env = {
        **os.environ,
        "INFRA_APPLY_MESH_HOSTS": str(mesh),
        "INFRA_APPLY_STATE_DIR": str(root / ".state"),
        "PYTHONUNBUFFERED": "1",
    }
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            env=env,
            timeout=HANG_TIMEOUT_S,
            preexec_fn=_limit_memory,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"validate hung for more than {HANG_TIMEOUT_S:.0f}s")
    seconds = time.perf_counter() - started
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    return Run(done.returncode, output, seconds)


def matching_problems(output: str, expect: Expect) -> list[re.Match[str]]:
    return [
        m
        for m in PROBLEM_RE.finditer(output)
        if m.group("path") == MANIFEST
        and m.group("level") == expect.level
        and m.group("rule") in expect.rules
    ]


def describe(run: Run) -> str:
    text = run.output if len(run.output) < 3000 else run.output[:3000] + "\n[...]"
    return f"exit {run.code} in {run.seconds:.2f}s; output:\n{text}"


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_corpus_case_is_rejected(case: Case, tmp_path: Path) -> None:
    mesh = write_tree(tmp_path, case.content())
    run = run_validate(tmp_path, mesh, strict=case.expect.level == "warning")

    assert "Traceback" not in run.output, describe(run)
    assert "PWNED" not in run.output, "a YAML tag executed code: " + describe(run)
    assert run.code == 1, describe(run)
    hits = matching_problems(run.output, case.expect)
    wanted = f"{case.expect.level} {'|'.join(case.expect.rules)}"
    assert hits, f"no '{MANIFEST}:L:C: {wanted}: ...' line; " + describe(run)
    assert all(int(m.group("line")) >= 1 for m in hits), describe(run)
    if case.expect.line is not None:
        lines = sorted({int(m.group("line")) for m in hits})
        assert case.expect.line in lines, f"expected line {case.expect.line}; " + describe(run)


def test_corpus_is_complete() -> None:
    files = sorted(CORPUS.glob("*.yaml"))
    assert len(files) >= 40
    assert all(re.fullmatch(r"\d\d-[a-z0-9-]+\.yaml", p.name) for p in files)
    assert set(NO_HEADER) <= {p.name for p in files}
    for path in files:
        corpus_expect(path)  # raises on a missing or malformed header


def test_baseline_manifest_is_valid(tmp_path: Path) -> None:
    """The manifest the corpus cases are mutated from passes, so every failure is the mutation's."""
    mesh = write_tree(tmp_path, VALID.encode())
    run = run_validate(tmp_path, mesh, strict=True)
    assert run.code == 0, describe(run)
    assert "Traceback" not in run.output


def test_shared_database_user_is_own_db(tmp_path: Path) -> None:
    """Cross-file: two projects reusing one database user on a cluster break ``own_db``."""
    database = "database: {cluster: main-pg, name: NAME, user: shared}\n"
    mesh = write_tree(tmp_path, (VALID + database.replace("NAME", "proj")).encode())
    other = tmp_path / "@quinn" / "other" / ".infra.yaml"
    other.parent.mkdir(parents=True)
    other_manifest = VALID.replace("project: proj", "project: other").replace("proj.service", "other.service")
    other.write_text(other_manifest + database.replace("NAME", "other"))
    run = run_validate(tmp_path, mesh)
    assert "Traceback" not in run.output, describe(run)
    assert run.code == 1, describe(run)
    rules = {m.group("rule") for m in PROBLEM_RE.finditer(run.output) if m.group("level") == "error"}
    assert "own_db" in rules, describe(run)
