"""``render``: write OUT/<producer>/*.tf, one Terraform root module per producer (``--check``:
write nothing, say what is stale)."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra_apply.commands import Output
from infra_apply.errors import ExitCode
from infra_apply.render import uptodate
from infra_apply.render.output import Drift, Rendered, compare, read_ledgers, write
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
    check_path("--out", out)
    state = checked_state_dir([out, root / "generated"], env, create=False)  # the caches live there
    record = None if env.get("INFRA_APPLY_NO_CACHE") else uptodate.record_file(state, root, out)
    found = None if record is None else uptodate.lookup(record, root, out, mesh_path, env)
    stores: list[Callable[[], None]] = []
    rendered = (
        uptodate.replay(found, say)
        if found is not None
        else _render(root, out, mesh_path, env, say, record, stores.append)
    )
    # The caches are stored while the files are written: one waits on its fsyncs, the other
    # encodes JSON.
    with _meanwhile(stores):
        drift = compare(rendered, out) if check else write(rendered, out)
    return Rendering(out, check, tuple(rendered), drift)


@contextlib.contextmanager
def _meanwhile(work: Sequence[Callable[[], None]]) -> Iterator[None]:
    """Run ``work`` on another thread during the block; its error, if any, is raised after."""
    if not work:
        yield
        return
    failed: list[BaseException] = []

    def run_all() -> None:
        try:
            for step in work:
                step()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run_all, name="render-caches", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()
    if failed:
        raise failed[0]


def _render(
    root: Path,
    out: Path,
    mesh_path: Path | None,
    env: Mapping[str, str],
    say: Callable[[str], None],
    record: Path | None,
    keep: Callable[[Callable[[], None]], None],
) -> list[Rendered]:
    """The full render: validate, build the model, render it (or reuse its cached texts), and
    keep the record that lets the next run skip all of it when no input changes (``keep``: how
    the caches are stored)."""
    from infra_apply.runtime.identity import ask_git_ahead

    if record is not None:  # the validation cache is keyed by the tree: git answers meanwhile
        ask_git_ahead(root)
    from infra_apply.manifests.build import build_model
    from infra_apply.manifests.validate import require_valid
    from infra_apply.render.module import cache_file, render_model, rendered_producers

    # The code's digest once: walking the package is most of a digest's cost, and the caches
    # take it three times (the inputs before and after, the render cache's key).
    code = None if record is None else uptodate.code_digest_or_none()
    before = uptodate.tree_digest(root, out, mesh_path, env, code) if record is not None else None
    warnings: list[str] = []

    def warn(line: str) -> None:
        warnings.append(line)
        say(line)

    cache = validation_cache(root, env)
    v = require_valid(root, mesh_path, cache, warn)
    model = build_model(v)
    ledgers = read_ledgers(out, (p.name for p in rendered_producers(model)))
    rendered = render_model(model, out, cache_file(cache), ledgers, code, keep)
    if (
        record is not None
        and before is not None
        and before == uptodate.tree_digest(root, out, mesh_path, env, code)
    ):
        keep(functools.partial(uptodate.store, record, before, ledgers, v.config, warnings, rendered))
    return rendered


def output(result: Rendering, fmt: str) -> Output:
    from infra_apply import remedy
    from infra_apply.report import formats

    text = formats.render().render(result, fmt)
    if result.check and result.stale:
        again = remedy.command("render", keep=())  # the run's --root and --out, when given
        return Output(text, (f"infra-apply: {result.out} is out of date; run {again}",), ExitCode.ERROR)
    return Output(text)
