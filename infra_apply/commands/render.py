"""``render``: write OUT/<producer>/*.tf, one Terraform root module per producer (``--check``:
write nothing, say what is stale)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from infra_apply.commands import Output
from infra_apply.errors import ExitCode
from infra_apply.paths import check_path
from infra_apply.render import Drift, Rendered, cache_file, compare, render_model, write
from infra_apply.state import checked_state_dir, validation_cache


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
    from infra_apply.build import build_model
    from infra_apply.validate import require_valid

    check_path("--out", out)
    checked_state_dir([out, root / "generated"], env, create=False)  # the validation cache lives there
    cache = validation_cache(root, env)
    v = require_valid(root, mesh_path, cache, say)
    rendered = render_model(build_model(v), out, cache_file(cache))
    drift = compare(rendered, out) if check else write(rendered, out)
    return Rendering(out, check, tuple(rendered), drift)


def output(result: Rendering, fmt: str) -> Output:
    text = format_json(result) if fmt == "json" else format_text(result)
    if result.check and result.stale:
        return Output(
            text,
            (f"infra-apply: {result.out} is out of date; run infra-apply render",),
            ExitCode.ERROR,
        )
    return Output(text)


def format_text(result: Rendering) -> str:
    out, drift = result.out, result.drift
    if result.check:
        lines = [f"{out / rel}: stale or missing" for rel in drift.stale]
        lines += [f"{out / rel}: no longer rendered (would be removed)" for rel in drift.extra]
        if not result.stale:
            files = sum(len(r.files) for r in result.rendered)
            lines.append(f"{out} is up to date ({files} files, {len(result.rendered)} producers)")
    else:
        lines = [f"wrote {out / rel}" for rel in drift.stale]
        lines += [f"removed {out / rel}" for rel in drift.extra]
        if not result.stale:
            lines.append(f"{out} already up to date")
    return "".join(f"{line}\n" for line in lines)


def format_json(result: Rendering) -> str:
    check, drift = result.check, result.drift
    doc = {
        "out": str(result.out),
        "check": check,
        "stale" if check else "written": list(drift.stale),
        "removed" if not check else "extra": list(drift.extra),
        "up_to_date": not result.stale,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
