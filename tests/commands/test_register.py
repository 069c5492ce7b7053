"""register: the droplets output of the producer's state into mesh-hosts.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra_apply.cloud.account import sandbox_registry
from infra_apply.commands import register
from infra_apply.errors import InfraApplyError
from infra_apply.report import verbs
from infra_apply.runtime import terraform as tf
from tests.commands.fakes import World, droplets_output

MC_OUTPUT = {"droplets": droplets_output("mc", "com.uvlava.mc.services", ["mc-web"])}


def test_dry_run_shows_the_diff_then_a_write_then_nothing_to_do(tmp_path: Path) -> None:
    world = World(tmp_path)
    before = world.mesh_path.read_bytes()
    prep = world.prepared(world.copy(outputs=MC_OUTPUT))
    dry = register.register(world.context(), prep, dry_run=True)
    assert world.events == ["init", "output droplets"]
    assert world.mesh_path.read_bytes() == before
    text = verbs.register_text(register.Registered(dry, dry_run=True))
    assert text.startswith("---") and '+    "mc-web": {' in text
    done = register.register(world.context(), prep)
    assert verbs.register_text(register.Registered(done, dry_run=False)).startswith("+ mc-web 10.9.0.")
    assert json.loads(world.mesh_path.read_text())["hosts"]["mc-web"]["droplet"] == "com.uvlava.mc.services"
    again = register.register(world.context(), prep)
    text = verbs.register_text(register.Registered(again, dry_run=False))
    assert text == f"{world.mesh_path} already up to date\n"
    doc = json.loads(verbs.register_json(register.Registered(again, dry_run=False)))
    assert (doc["written"], doc["changes"]) == (False, [])


def test_before_any_apply_it_says_to_apply_first(tmp_path: Path) -> None:
    world = World(tmp_path)
    missing = tf.OutputMissing("output droplets", tmp_path, 'Error: Output "droplets" not found')
    prep = world.prepared(world.copy(fail={"output droplets": missing}))
    with pytest.raises(InfraApplyError, match=r"no applied state here .*: apply it first"):
        register.register(world.context(), prep)
    assert world.events == ["init", "output droplets"]


def test_without_a_registry_nothing_runs(tmp_path: Path) -> None:
    world = World(tmp_path, mesh=False)
    with pytest.raises(InfraApplyError, match=r"no mesh-hosts\.json given"):
        register.register(world.context(), world.prepared(world.copy(outputs=MC_OUTPUT)))
    assert world.events == []


def test_the_sandbox_registers_into_its_own_copy(tmp_path: Path) -> None:
    world = World(tmp_path)
    before = world.mesh_path.read_bytes()
    ctx = world.context(sandbox=True)
    done = register.register(ctx, world.prepared(world.copy(outputs=MC_OUTPUT)))
    assert done.path == sandbox_registry(ctx) and "mc-web" in json.loads(done.path.read_text())["hosts"]
    assert world.mesh_path.read_bytes() == before
    assert any("your mesh-hosts.json is never written" in line for line in world.said)
