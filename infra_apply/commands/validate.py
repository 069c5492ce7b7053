"""``validate``: discover and validate every manifest (YAML, the infra/v1 schema, the rules)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from infra_apply.commands import Output
from infra_apply.errors import ExitCode, Problem
from infra_apply.manifests import validate as checks
from infra_apply.manifests.discover import root_hint
from infra_apply.runtime.state import checked_state_dir, validation_cache

if TYPE_CHECKING:
    from infra_apply.cloud.account import Account

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
    live: Account | None = None,
    say: Say = _silent,
) -> Validated:
    """Validate the tree; with ``live`` (``validate --live``: the account chosen by the CLI)
    also run the pre-flight checks against that account."""
    # The validation cache lives in the state dir, which must not be inside a generated/ folder
    # (validate has no --out: INFRA_APPLY_OUT names it).
    out = Path(env.get("INFRA_APPLY_OUT") or "generated")
    create = live is not None and live.cloud_in_state_dir
    checked_state_dir([out, root / "generated"], env, create=create)
    v = checks.validate_tree(root, mesh_path, validation_cache(root, env))
    if live is not None:
        v = _with_preflight(v, env, live, say)
    return Validated(v, strict, root_hint(v.discovery))


def _with_preflight(
    v: checks.Validation, env: Mapping[str, str], account: Account, say: Say
) -> checks.Validation:
    """The pre-flight problems of every producer, after a clean validation (a tree with errors
    is not checked against the account): every list asked at once (``accounts.Accounts``)."""
    from infra_apply.cloud import preflight
    from infra_apply.cloud.accounts import Accounts
    from infra_apply.manifests.build import build_model

    if v.errors:
        say("infra-apply: pre-flight skipped: fix the errors above first")
        return v
    model = build_model(v)
    with Accounts(env) as accounts:
        found = preflight.problems(
            root=v.discovery.root,
            env=env,
            account=account,
            model=model,
            manifests={m.path: m for m in v.manifests},
            config=v.config,
            producers=[p.name for p in model.producers if p.droplets or p.databases],
            say=say,
            accounts=accounts,
        )
    return dataclasses.replace(v, problems=tuple(sorted({*v.problems, *found}, key=Problem.sort_key)))


def output(result: Validated, fmt: str) -> Output:
    from infra_apply.report import formats

    text = formats.validate().render(result, fmt)
    hint = (result.hint,) if result.hint else ()  # stderr: --format json keeps stdout JSON
    return Output(text, hint, code=ExitCode.ERROR if result.failed else ExitCode.OK)
