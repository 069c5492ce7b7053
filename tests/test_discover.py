from __future__ import annotations

import os
from pathlib import Path

from infra_apply.discover import PRUNED, discover
from tests.conftest import write_tree


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
