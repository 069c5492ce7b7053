"""Writes land only in --out, the state dir and mesh-hosts.json (issue 8, finding 2).

A producer is a root folder ``@<name>``; its name picks the folder under --out and the working
copy under the state dir. An empty or unsafe name is a located error, and every write checks its
resolved target first, so even a name validation missed cannot carry a write elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from infra_apply.cloud.account import choose
from infra_apply.errors import InfraApplyError
from infra_apply.manifests.model import Model
from infra_apply.render.output import HEADER, Rendered, write
from infra_apply.runtime import workcopy
from infra_apply.runtime.paths import child, inside
from tests.conftest import cli_env, droplet, producer_root, run_cli, write_tree


def snapshot(base: Path) -> dict[Path, bytes | None]:
    out: dict[Path, bytes | None] = {}
    for folder, dirs, files in os.walk(base):
        out.update({Path(folder, d): None for d in dirs})
        out.update({Path(folder, f): Path(folder, f).read_bytes() for f in files})
    return out


def test_a_producer_folder_named_at_is_a_located_error_and_nothing_is_written(example: Path) -> None:
    """The issue's reproduction: ``@`` beside the example producers, then validate, render, plan."""
    write_tree(
        example / "tree",
        {"@/.infra.yaml": producer_root("", droplet("com.uvlava.zz", ["zz"]))},
    )
    env = cli_env(example, INFRA_APPLY_NO_CACHE="1")  # so that the run writes nothing at all
    common = ("--root", str(example / "tree"))
    before = {p: v for p, v in snapshot(example).items() if p != example / "state"}

    # validate first: on the code before the fix it passed, and render then wrote into /.
    checked = run_cli(*common, "validate", "--mesh-hosts", str(example / "mesh-hosts.json"), env=env)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    [problem, _summary] = checked.stdout.splitlines()
    assert problem.startswith(
        "@/.infra.yaml:1:1: error do_limits: producer folder name '' is not a producer name"
    )

    for command in (("render", "--out", str(example / "generated")), ("plan", "--sandbox")):
        result = run_cli(*common, *command, env=env)
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stderr.startswith("@/.infra.yaml:1:1: error do_limits: ")
        assert "Traceback" not in result.stderr
    # Neither generated/ nor a working copy was touched; the state dir itself may have been made
    # (empty and private) by the check that runs before any command writes into it.
    after = {p: v for p, v in snapshot(example).items() if p != example / "state"}
    assert after == before


@pytest.mark.parametrize("producer", ["..", ".", "ELSEWHERE"], ids=["dot-dot", "dot", "absolute"])
def test_render_never_writes_outside_its_producer_folder(tmp_path: Path, producer: str) -> None:
    out = tmp_path / "a" / "out"
    out.mkdir(parents=True)
    name = str(tmp_path / "elsewhere") if producer == "ELSEWHERE" else producer
    before = snapshot(tmp_path)
    with pytest.raises(InfraApplyError, match="refusing to write"):
        write([Rendered(name, {"droplets.tf": f"{HEADER}\n"})], out)
    assert snapshot(tmp_path) == before


def test_render_does_not_follow_a_symlinked_producer_folder_out_of_out(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "ct")
    with pytest.raises(InfraApplyError, match="outside"):
        write([Rendered("ct", {"droplets.tf": f"{HEADER}\n"})], out)
    assert list(elsewhere.iterdir()) == []


def test_a_refused_producer_leaves_the_others_unwritten(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(InfraApplyError):
        write([Rendered("ct", {"droplets.tf": f"{HEADER}\n"}), Rendered("..", {"x.tf": f"{HEADER}\n"})], out)
    assert not out.exists()


def context(tmp_path: Path, *, sandbox: bool) -> workcopy.Context:
    env = {"INFRA_APPLY_STATE_DIR": str(tmp_path / "state"), "DIGITALOCEAN_TOKEN": "FAKE-do-token_paths-test"}
    return workcopy.Context(
        root=tmp_path / "root", out=tmp_path / "out", account=choose(sandbox), mesh_path=None, env=env
    )


@pytest.mark.parametrize("producer", ["", ".", "..", "a/.."], ids=["empty", "dot", "dot-dot", "a-dot-dot"])
def test_working_copies_and_imports_stay_in_their_own_folders(tmp_path: Path, producer: str) -> None:
    (tmp_path / "root").mkdir()
    ctx = context(tmp_path, sandbox=False)
    for call in (
        lambda: workcopy.imports_file(ctx, producer),
        lambda: workcopy.imports_file(context(tmp_path, sandbox=True), producer),
        lambda: workcopy.sandbox_overlay(ctx, producer),
    ):
        with pytest.raises(InfraApplyError, match="refusing to write"):
            call()
    project = workcopy.Project(Model(()), {producer: Rendered(producer, {"main.tf": "# x\n"})}, False)
    with pytest.raises(InfraApplyError, match="refusing to write"):
        workcopy.prepare(ctx, project, [producer])
    written = [p for p in snapshot(tmp_path) if p.name == "main.tf"]
    assert written == []


def test_inside_and_child(tmp_path: Path) -> None:
    assert inside(tmp_path / "a" / "b", tmp_path) == (tmp_path / "a" / "b").resolve()
    assert child(tmp_path, "ct") == (tmp_path / "ct").resolve()
    for name in ("", ".", "..", "a/b", "/etc"):
        with pytest.raises(InfraApplyError):
            child(tmp_path, name)
    with pytest.raises(InfraApplyError):
        inside(tmp_path, tmp_path)
