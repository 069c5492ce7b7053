from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from infra_apply.manifests.discover import PRUNED, discover
from infra_apply.manifests.manifest import YamlError, load
from infra_apply.manifests.validate import validate_tree
from tests.conftest import base_tree, cli_env, project, run_cli, write_tree


def test_finds_manifests_and_producers_in_order(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "@quinn/.infra.yaml": "",
            "@ct/b/.infra.yaml": "",
            "@ct/a/.infra.dev.yaml": "",
            "@ct/a/.infra.yaml": "",
            "@mc/deep/er/x/.infra.yaml": "",
            "@ct/a/infra.yaml": "",
            "@ct/a/.infra.yaml.bak": "",
            "notes/readme.md": "",
        },
    )
    found = discover(tmp_path)
    assert found.producers == ("ct", "mc", "quinn")
    assert [m.path for m in found.manifests] == [
        "@ct/a/.infra.dev.yaml",
        "@ct/a/.infra.yaml",
        "@ct/b/.infra.yaml",
        "@mc/deep/er/x/.infra.yaml",
        "@quinn/.infra.yaml",
    ]
    by_path = {m.path: m for m in found.manifests}
    assert by_path["@ct/a/.infra.dev.yaml"].variant == "dev"
    assert by_path["@quinn/.infra.yaml"].producer_root
    assert not by_path["@ct/a/.infra.yaml"].producer_root


def test_prunes_dependency_and_tool_folders(tmp_path: Path) -> None:
    write_tree(tmp_path, {f"@ct/app/{d}/pkg/.infra.yaml": "" for d in PRUNED})
    write_tree(tmp_path, {"@ct/app/.infra.yaml": ""})
    assert [m.path for m in discover(tmp_path).manifests] == ["@ct/app/.infra.yaml"]


def test_symlinked_folders_are_not_followed(tmp_path: Path) -> None:
    write_tree(tmp_path, {"@ct/app/.infra.yaml": "", "elsewhere/.infra.yaml": ""})
    os.symlink(tmp_path / "@ct", tmp_path / "@ct" / "app" / "loop")
    os.symlink(tmp_path / "elsewhere", tmp_path / "@ct" / "linked")
    assert [m.path for m in discover(tmp_path).manifests] == ["@ct/app/.infra.yaml", "elsewhere/.infra.yaml"]


def test_manifest_outside_producers_and_retired_files(tmp_path: Path) -> None:
    write_tree(tmp_path, {"stray/.infra.yaml": "", "@ct/old/app.manifest.yaml": ""})
    found = discover(tmp_path)
    assert [(m.path, m.producer) for m in found.manifests] == [("stray/.infra.yaml", None)]
    assert found.retired == ("@ct/old/app.manifest.yaml",)


def test_nested_at_folders_are_not_producers(tmp_path: Path) -> None:
    write_tree(tmp_path, {"@quinn/@packages/manage-apps/.infra.yaml": ""})
    found = discover(tmp_path)
    assert found.producers == ("quinn",)
    assert found.manifests[0].producer == "quinn"


# --- manifests that are not regular files (issue 8, finding 10) ---------------------------------


def refused(root: Path) -> list[tuple[str, str, str]]:
    """(path, rule, message) of every discovery problem validation reports."""
    problems = validate_tree(root).problems
    return [(p.path, p.rule, p.message) for p in problems if p.rule == "manage_apps_orchestrator"]


def test_a_fifo_named_infra_yaml_is_a_located_error_instead_of_a_hang(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree", base_tree())
    (root / "@ct" / "pipe").mkdir()
    os.mkfifo(root / "@ct" / "pipe" / ".infra.yaml")
    # The timeout only bounds a failure: opening the FIFO would block until a writer came.
    result = run_cli("--root", str(root), "validate", env=cli_env(tmp_path), timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "@ct/pipe/.infra.yaml:1:1: error manage_apps_orchestrator: manifest is a FIFO (named pipe), "
        "not a regular file; a manifest must be a file"
    ) in result.stdout.splitlines()


def test_a_folder_named_infra_yaml_is_a_located_error(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {**base_tree(), "@ct/odd/.infra.yaml/notes.txt": "x"})
    assert refused(root) == [
        (
            "@ct/odd/.infra.yaml",
            "manage_apps_orchestrator",
            "manifest is a folder, not a regular file; a manifest must be a file",
        )
    ]


def test_a_symlinked_manifest_pointing_outside_the_root_is_refused(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree", base_tree())
    elsewhere = write_tree(tmp_path / "elsewhere", {"m.yaml": project("stolen")}) / "m.yaml"
    (root / "@ct" / "linked").mkdir()
    os.symlink(elsewhere, root / "@ct" / "linked" / ".infra.yaml")
    assert [m.path for m in discover(root).manifests] == ["@ct/.infra.yaml", "@ct/app/.infra.yaml"]
    assert refused(root) == [
        (
            "@ct/linked/.infra.yaml",
            "manage_apps_orchestrator",
            f"manifest is a symlink to {elsewhere}, outside the root; a manifest must live in the tree",
        )
    ]


def test_a_symlinked_manifest_inside_the_root_is_read(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {**base_tree(), "@ct/shared/app.yaml": project("other")})
    (root / "@ct" / "other").mkdir()
    os.symlink("../shared/app.yaml", root / "@ct" / "other" / ".infra.yaml")
    found = discover(root)
    assert "@ct/other/.infra.yaml" in [m.path for m in found.manifests] and found.refused == ()
    assert not validate_tree(root).errors


def test_a_dangling_manifest_symlink_is_a_located_error(tmp_path: Path) -> None:
    root = write_tree(tmp_path, base_tree())
    (root / "@ct" / "gone").mkdir()
    os.symlink("nowhere.yaml", root / "@ct" / "gone" / ".infra.yaml")
    [(path, _, message)] = refused(root)
    assert path == "@ct/gone/.infra.yaml" and message.startswith("manifest cannot be read")


def test_loading_a_manifest_that_became_a_fifo_does_not_block(tmp_path: Path) -> None:
    """Discovery saw a file; by the time it is loaded it is a FIFO: load must not wait."""
    fifo = tmp_path / ".infra.yaml"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            load(fifo, "@ct/.infra.yaml")
            outcome.append(None)
        except YamlError as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(30)
    if reader.is_alive():  # only on failure: a writer releases the blocked open
        with open(fifo, "wb"):
            pass
        reader.join()
        pytest.fail("load() blocked on a FIFO")
    [error] = outcome
    assert isinstance(error, YamlError) and error.message.startswith("not a regular file")


def test_the_root_hint_shows_a_producer_folders_control_characters_escaped(tmp_path: Path) -> None:
    from infra_apply.manifests.discover import root_hint

    (tmp_path / "@evil\x1b[2J").mkdir()
    (tmp_path / "@ct" / "app").mkdir(parents=True)
    (tmp_path / "@ct" / "app" / ".infra.yaml").write_text("project: app\n")
    hint = root_hint(discover(tmp_path / "@ct"), cwd=tmp_path / "@ct" / "app")
    assert hint == (
        "infra-apply: hint: manifests must sit in @<producer>/ folders of the root: "
        "try --root ../.. (it holds @ct, @evil\\x1b[2J)"
    )
    assert root_hint(discover(tmp_path)) is None  # every manifest is in a producer folder
