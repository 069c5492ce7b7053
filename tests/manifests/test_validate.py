from __future__ import annotations

from pathlib import Path

import pytest

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


def test_a_cache_this_user_did_not_write_is_never_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared state dir: entries planted under the right stamps would put other manifests'
    contents into the model render and plan build."""
    import json

    from infra_apply.manifests import validate

    monkeypatch.setattr(validate, "RACY_NS", 0)  # files this fresh are otherwise never a hit
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


def test_a_file_rewritten_within_its_timestamp_granule_is_parsed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A same-size rewrite within one tick of the file system's clock keeps every field of the
    stat: the cache must not answer with the old parse (render would key its record on the new
    bytes and replay the old Terraform from then on)."""
    import time

    from infra_apply.manifests import validate

    root = write_tree(tmp_path / "root", base_tree())
    cache = tmp_path / "cache.json"
    tick = time.time_ns() + 3600 * 10**9  # one granule for every write of this test
    monkeypatch.setattr(validate, "_stat", lambda path: (tick, path.stat().st_size, path.stat().st_ino, tick))
    manifest = root / "@ct/app/.infra.yaml"
    validate_tree(root, None, cache)
    before = manifest.read_text()
    assert "project: app\n" in before
    manifest.write_text(before.replace("project: app\n", "project: apq\n"))  # same size and inode
    (found,) = (m for m in validate_tree(root, None, cache).manifests if m.path == "@ct/app/.infra.yaml")
    assert found.data["project"] == "apq"
