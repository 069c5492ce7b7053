"""``render``: write OUT/<producer>/*.tf, one Terraform root module per producer (``--check``:
write nothing, say what is stale)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from infra_apply.commands import Output
from infra_apply.errors import ExitCode
from infra_apply.render.module import Drift, Rendered, cache_file, compare, render_model, write
from infra_apply.runtime.paths import check_path
from infra_apply.runtime.state import checked_state_dir, validation_cache


@dataclass(frozen=True)
class Rendering:
    out: Path
    check: bool
    rendered: tuple[Rendered, ...]
    drift: Drift  # --check: what is stale or extra; else what was written or removed

    @property
    def stale(self) -> bool:
        return bool(self.drift.stale or self.drift.extra)


def run(
    root: Path,
    out: Path,
    mesh_path: Path | None,
    env: Mapping[str, str],
    *,
    check: bool = False,
    say: Callable[[str], None],
) -> Rendering:
    from infra_apply.manifests.build import build_model
    from infra_apply.manifests.validate import require_valid

    check_path("--out", out)
    checked_state_dir([out, root / "generated"], env, create=False)  # the validation cache lives there
    cache = validation_cache(root, env)
    v = require_valid(root, mesh_path, cache, say)
    rendered = render_model(build_model(v), out, cache_file(cache))
    drift = compare(rendered, out) if check else write(rendered, out)
    return Rendering(out, check, tuple(rendered), drift)


def output(result: Rendering, fmt: str) -> Output:
    from infra_apply.report import formats

    text = formats.render().render(result, fmt)
    if result.check and result.stale:
        return Output(
            text,
            (f"infra-apply: {result.out} is out of date; run infra-apply render",),
            ExitCode.ERROR,
        )
    return Output(text)
