"""``render``'s own sequence: the caches are stored on another thread while the files are
written, and whatever happens to that thread is known once the files are."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from infra_apply.commands import render
from infra_apply.render import output, uptodate
from tests.conftest import EXAMPLE_TREE, cli_env


def test_a_store_that_breaks_is_raised_after_every_file_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, out = tmp_path / "tree", tmp_path / "out"
    shutil.copytree(EXAMPLE_TREE, root)

    def broken(*_: object) -> None:
        raise RuntimeError("the record could not be kept")

    monkeypatch.setattr(uptodate, "store", broken)
    with pytest.raises(RuntimeError, match="could not be kept"):
        render.run(root, out, None, cli_env(tmp_path), say=lambda _: None)
    monkeypatch.undo()
    again = render.run(root, out, None, cli_env(tmp_path), check=True, say=lambda _: None)
    assert not again.stale  # every file was written, whole, before the error was raised
    assert output.compare(again.rendered, out) == output.Drift((), ())


def test_the_caches_a_render_stores_serve_the_next_one(tmp_path: Path) -> None:
    root, out = tmp_path / "tree", tmp_path / "out"
    shutil.copytree(EXAMPLE_TREE, root)
    env = cli_env(tmp_path)
    first = render.run(root, out, None, env, say=lambda _: None)
    state = Path(env["INFRA_APPLY_STATE_DIR"])
    cache = sorted(p.name for p in (state / "cache").glob("render-*.json"))
    assert [n for n in cache if n.startswith("render-inputs-")] and [n for n in cache if "-inputs-" not in n]
    kept = uptodate._load(uptodate.record_file(state, root, out))  # whole, once the run returned
    assert kept is not None and [r.producer for r in kept.rendered] == [r.producer for r in first.rendered]
    assert all(set(k.files) == set(r.files) for k, r in zip(kept.rendered, first.rendered, strict=True))
