"""discover -> load -> JSON Schema -> convention rules, collecting every problem of every file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from infra_apply.discover import Discovery, discover
from infra_apply.errors import InfraApplyError, Problem
from infra_apply.manifest import Manifest, load
from infra_apply.rules import Tree, run_rules


@dataclass(frozen=True)
class Validation:
    discovery: Discovery
    manifests: tuple[Manifest, ...]  # the ones that parsed and passed the schema
    problems: tuple[Problem, ...]
    mesh_hosts: Mapping[str, Mapping[str, Any]] | None

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.level == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.level == "warning")


def schema_text() -> str:
    return resources.files("infra_apply").joinpath("data/infra-v1.schema.json").read_text("utf-8")


@lru_cache(maxsize=1)
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(schema_text()))


def validate_tree(root: Path, mesh_path: Path | None = None) -> Validation:
    if not root.is_dir():
        raise InfraApplyError(f"root {root} is not a folder (--root, INFRA_APPLY_ROOT)")
    mesh_hosts = load_mesh_hosts(mesh_path) if mesh_path is not None else None
    found = discover(root)
    problems: list[Problem] = []
    manifests: list[Manifest] = []
    for ref in found.manifests:
        try:
            m = load(root / ref.path, ref.path)
        except InfraApplyError as exc:
            problems.append(Problem(ref.path, exc.line, exc.col, "error", exc.rule or "yaml", exc.message))
            continue
        schema_problems = check_schema(m)
        problems.extend(schema_problems)
        if not schema_problems:
            manifests.append(m)
    tree = Tree(
        found,
        tuple(manifests),
        {r.path: r for r in found.manifests},
        mesh_hosts,
        str(mesh_path) if mesh_path else None,
    )
    problems.extend(run_rules(tree))
    return Validation(found, tuple(manifests), tuple(sorted(set(problems), key=Problem.sort_key)), mesh_hosts)


def check_schema(m: Manifest) -> list[Problem]:
    out = []
    for err in _validator().iter_errors(m.data):
        out.append(_schema_problem(m, err))
    return out


def _schema_problem(m: Manifest, err: Any) -> Problem:
    path = tuple(err.absolute_path)
    rule = "schema"
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = set(err.schema.get("properties", {}))
        extra = sorted(k for k in err.instance if k not in allowed)
        key = (*path, extra[0]) if extra else path
        line, col = m.locate(key, at_key=True)
        where = ".".join(str(p) for p in path) or "top level"
        return Problem(
            m.path,
            line,
            col,
            "error",
            rule,
            f"unknown key {extra[0]!r} at {where} (allowed: {', '.join(sorted(allowed))})",
        )
    if err.validator == "required":
        line, col = m.locate(path, at_key=True) if path else (1, 1)
    else:
        line, col = m.locate(path)
    if err.validator == "pattern" and path[-1:] == ("name",) and path[:1] == ("droplets",):
        rule = "droplet_naming"
    where = ".".join(str(p) for p in path) or "top level"
    return Problem(m.path, line, col, "error", rule, f"{where}: {_short(err.message)}")


def _short(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= 200 else message[:197] + "..."


def load_mesh_hosts(path: Path) -> Mapping[str, Mapping[str, Any]]:
    """The ``hosts`` map of mesh-hosts.json, for validation only (registration reloads it)."""
    from infra_apply.mesh import load_document

    doc, _ = load_document(path)
    hosts = doc["hosts"]
    return {k: v for k, v in hosts.items() if isinstance(v, dict)}
