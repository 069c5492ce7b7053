"""``validate``: discover and validate every manifest (YAML, the infra/v1 schema, the rules)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from infra_apply import validate as checks
from infra_apply.commands import Output
from infra_apply.discover import root_hint
from infra_apply.errors import ExitCode, InfraApplyError, Problem
from infra_apply.state import checked_state_dir, validation_cache

Say = Callable[[str], None]


def _silent(_: str) -> None:
    return None


@dataclass(frozen=True)
class Validated:
    validation: checks.Validation
    strict: bool  # warnings fail too
    hint: str | None = None  # manifests outside any @producer folder: the --root that fits

    @property
    def failed(self) -> bool:
        return bool(self.validation.errors) or (self.strict and bool(self.validation.warnings))


def run(
    root: Path,
    mesh_path: Path | None,
    env: Mapping[str, str],
    *,
    strict: bool = False,
    live: bool = False,
    sandbox: bool = False,
    say: Say = _silent,
) -> Validated:
    """Validate the tree; with ``live`` also run the pre-flight checks against the account (the
    sandbox account with ``sandbox``)."""
    if sandbox and not live:
        raise InfraApplyError("--sandbox goes with --live (the sandbox account is what it checks)")
    # The validation cache lives in the state dir, which must not be inside a generated/ folder
    # (validate has no --out: INFRA_APPLY_OUT names it).
    out = Path(env.get("INFRA_APPLY_OUT") or "generated")
    checked_state_dir([out, root / "generated"], env, create=sandbox)
    v = checks.validate_tree(root, mesh_path, validation_cache(root, env))
    if live:
        v = _with_preflight(v, env, sandbox, say)
    return Validated(v, strict, root_hint(v.discovery))


def _with_preflight(
    v: checks.Validation, env: Mapping[str, str], sandbox: bool, say: Say
) -> checks.Validation:
    """The pre-flight problems of every producer, after a clean validation (a tree with errors
    is not checked against the account)."""
    from infra_apply import preflight
    from infra_apply.build import build_model

    if v.errors:
        say("infra-apply: pre-flight skipped: fix the errors above first")
        return v
    model = build_model(v)
    found = preflight.problems(
        root=v.discovery.root,
        env=env,
        sandbox=sandbox,
        model=model,
        manifests={m.path: m for m in v.manifests},
        config=v.config,
        producers=[p.name for p in model.producers if p.droplets or p.databases],
        say=say,
    )
    return dataclasses.replace(v, problems=tuple(sorted({*v.problems, *found}, key=Problem.sort_key)))


def output(result: Validated, fmt: str) -> Output:
    from infra_apply.report import formats

    text = formats.validate().render(result, fmt)
    hint = (result.hint,) if result.hint else ()  # stderr: --format json keeps stdout JSON
    return Output(text, hint, code=ExitCode.ERROR if result.failed else ExitCode.OK)

