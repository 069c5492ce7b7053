from __future__ import annotations

from pathlib import Path

from infra_apply.manifests.validate import validate_tree
from tests.conftest import base_tree, project, write_tree


def test_cache_reuses_unchanged_files_and_sees_every_edit(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", base_tree())
    cache = tmp_path / "cache.json"
    assert validate_tree(root, None, cache).problems == ()
    assert cache.is_file()
    assert validate_tree(root, None, cache).problems == ()
    (root / "@ct/app/.infra.yaml").write_text("apiVersion: infra/v1\nproject: app\nprovider: aws\n")
    [p] = validate_tree(root, None, cache).problems
    assert (p.path, p.line, p.rule) == ("@ct/app/.infra.yaml", 3, "schema")
    write_tree(root, {"@ct/app/.infra.yaml": project("app")})
    assert validate_tree(root, None, cache).problems == ()


def test_a_damaged_cache_is_ignored(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", base_tree())
    cache = tmp_path / "cache.json"
    cache.write_bytes(b"not json")
    assert validate_tree(root, None, cache).problems == ()
    assert validate_tree(root, None, cache).manifests == validate_tree(root).manifests


def test_a_cache_this_user_did_not_write_is_never_trusted(tmp_path: Path) -> None:
    """A shared state dir: entries planted under the right stamps would put other manifests'
    contents into the model render and plan build."""
    import json

    root = write_tree(tmp_path / "root", base_tree())
    cache = tmp_path / "cache.json"
    validate_tree(root, None, cache)
    doc = json.loads(cache.read_text())
    for _stamp, manifest, _problems in doc["entries"].values():
        if manifest is not None and "project" in manifest["data"]:
            manifest["data"]["project"] = "injected"
    cache.write_text(json.dumps(doc))
    assert validate_tree(root, None, cache).manifests != validate_tree(root).manifests  # trusted: private
    cache.chmod(0o644)
    assert validate_tree(root, None, cache).manifests == validate_tree(root).manifests


def test_a_cache_that_cannot_be_written_only_costs_the_speed(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", base_tree())
    cache = tmp_path / "cache.json"
    cache.write_text("x")
    cache.chmod(0o400)  # respected, even by root
    assert validate_tree(root, None, cache).manifests == validate_tree(root).manifests
