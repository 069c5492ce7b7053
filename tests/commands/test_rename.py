"""rename: the rename action on the live droplet, a state refresh, the registry entries moved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra_apply.commands import rename
from infra_apply.errors import InfraApplyError, TerraformError
from infra_apply.plan.parse import JsonObject
from infra_apply.report import verbs
from infra_apply.runtime import terraform as tf
from infra_apply.sandbox import cloud
from tests.commands.fakes import World, droplets_output

NEW = "com.uvlava.mc.services"  # the manifest name


def state_with(droplet_id: str, live_name: str) -> JsonObject:
    resource = {
        "address": "digitalocean_droplet.mc_services",
        "mode": "managed",
        "type": "digitalocean_droplet",
        "name": "mc_services",
        "values": {"id": droplet_id, "name": live_name},
    }
    return {"values": {"root_module": {"resources": [resource]}}}


def sandbox_droplet(tmp_path: Path, name: str) -> tuple[Path, str]:
    path = tmp_path / "cloud.json"
    return path, str(cloud.create_droplet(path, name, region="fra1")["id"])


def test_the_live_droplet_is_renamed_state_refreshed_and_hosts_moved(tmp_path: Path) -> None:
    world = World(tmp_path)
    path, droplet_id = sandbox_droplet(tmp_path, "com.uvlava.mc.old")
    copy = world.copy(
        state_doc=state_with(droplet_id, "com.uvlava.mc.old"),
        outputs={"droplets": droplets_output("mc", NEW, ["mc-web"], droplet_id)},
    )
    done = rename.rename(world.context(), world.prepared(copy, cloud=path), NEW)
    assert done == rename.Renamed(droplet_id, "com.uvlava.mc.old", NEW)
    assert world.events == ["init", "state", "refresh", "init", "output droplets"]
    assert [d["name"] for d in cloud.list_droplets(path)] == [NEW]
    assert json.loads(world.mesh_path.read_text())["hosts"]["mc-web"]["droplet"] == NEW
    text = verbs.rename_text(rename.RenameResult(NEW, done))
    assert text == f"renamed droplet {droplet_id}: com.uvlava.mc.old -> {NEW}\n"


def test_a_matching_name_changes_nothing(tmp_path: Path) -> None:
    world = World(tmp_path)
    path, droplet_id = sandbox_droplet(tmp_path, NEW)
    copy = world.copy(state_doc=state_with(droplet_id, NEW))
    assert rename.rename(world.context(), world.prepared(copy, cloud=path), NEW) is None
    assert world.events == ["init", "state"]
    assert verbs.rename_text(rename.RenameResult(NEW, None)) == f"{NEW}: live name already matches\n"


def test_a_failed_refresh_says_the_rename_itself_happened(tmp_path: Path) -> None:
    world = World(tmp_path)
    path, droplet_id = sandbox_droplet(tmp_path, "com.uvlava.mc.old")
    failure = tf.CommandFailed("apply", tmp_path, "Error: state lock")
    copy = world.copy(state_doc=state_with(droplet_id, "com.uvlava.mc.old"), fail={"refresh": failure})
    with pytest.raises(TerraformError) as failed:
        rename.rename(world.context(), world.prepared(copy, cloud=path), NEW)
    assert failed.value.message == "the droplet was renamed, but refreshing state failed:\nError: state lock"
    assert world.events == ["init", "state", "refresh"]


def test_an_unknown_or_unapplied_droplet_is_named(tmp_path: Path) -> None:
    world = World(tmp_path)
    with pytest.raises(InfraApplyError, match="no droplet named 'nope' in producer mc's manifests"):
        rename.rename(world.context(), world.prepared(world.copy()), "nope")
    assert world.events == []
    with pytest.raises(InfraApplyError, match="is not in state yet; apply it first"):
        rename.rename(world.context(), world.prepared(world.copy()), NEW)
