"""``validate``: discover and validate every manifest (YAML, the infra/v1 schema, the rules)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from infra_apply import validate as checks
from infra_apply.commands import Output
from infra_apply.errors import ExitCode
from infra_apply.state import checked_state_dir, validation_cache


@dataclass(frozen=True)
class Validated:
    validation: checks.Validation
    strict: bool  # warnings fail too

    @property
    def failed(self) -> bool:
        return bool(self.validation.errors) or (self.strict and bool(self.validation.warnings))


def run(root: Path, mesh_path: Path | None, env: Mapping[str, str], *, strict: bool = False) -> Validated:
    # The validation cache lives in the state dir, which must not be inside a generated/ folder
    # (validate has no --out: INFRA_APPLY_OUT names it).
    out = Path(env.get("INFRA_APPLY_OUT") or "generated")
    checked_state_dir([out, root / "generated"], env, create=False)
    return Validated(checks.validate_tree(root, mesh_path, validation_cache(root, env)), strict)


def output(result: Validated, fmt: str) -> Output:
    text = format_json(result) if fmt == "json" else format_text(result)
    return Output(text, code=ExitCode.ERROR if result.failed else ExitCode.OK)


def format_text(result: Validated) -> str:
    v = result.validation
    lines = [p.format() for p in v.problems]
    lines.append(
        f"{len(v.errors)} error(s), {len(v.warnings)} warning(s) in "
        f"{len(v.discovery.manifests)} manifest(s) under {len(v.discovery.producers)} "
        f"producer(s){'' if not result.failed else ' — invalid'}"
    )
    return "".join(f"{line}\n" for line in lines)


def format_json(result: Validated) -> str:
    v = result.validation
    doc = {
        "valid": not result.failed,
        "manifests": len(v.discovery.manifests),
        "producers": list(v.discovery.producers),
        "errors": len(v.errors),
        "warnings": len(v.warnings),
        "problems": [p._asdict() for p in v.problems],
    }
    return json.dumps(doc, indent=2) + "\n"
