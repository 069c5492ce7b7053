"""drift: a refresh-only plan, shown and never applied; the registry compared, never written."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from infra_apply import terraform as tf
from infra_apply.commands import drift
from tests.commands.fakes import FakeCopy, World, droplets_output

MC_OUTPUT = {"droplets": droplets_output("mc", "com.uvlava.mc.services", ["mc-web"])}
NO_DRIFT = {"format_version": "1.2", "resource_drift": [], "resource_changes": []}


@dataclass
class RefreshCopy(FakeCopy):
    def plan(self, *, variables: Mapping[str, str] | None = None, refresh_only: bool = False) -> bool:
        self.events.append("plan -refresh-only" if refresh_only else "plan")
        return self.changed


def test_refresh_only_plan_is_shown_never_applied_and_the_registry_never_written(tmp_path: Path) -> None:
    world = World(tmp_path)
    before = world.mesh_path.read_bytes()
    copy = RefreshCopy(world.events, tmp_path / "work" / "mc", NO_DRIFT, outputs=MC_OUTPUT)
    prep = world.prepared(copy)
    refreshed = drift.refresh_one(prep, world.said.append)
    found = drift.producer_drift(world.context(), refreshed)
    assert world.events == ["init", "plan -refresh-only", "show", "output droplets"]
    assert [(h.kind, h.host) for h in found.mesh] == [("added", "mc-web")]
    assert found.drifted and not found.outside and not found.names
    assert world.mesh_path.read_bytes() == before


def test_a_producer_never_applied_has_nothing_the_registry_could_disagree_with(tmp_path: Path) -> None:
    world = World(tmp_path)
    missing = tf.OutputMissing("output droplets", tmp_path, 'Error: Output "droplets" not found')
    copy = RefreshCopy(world.events, tmp_path / "work" / "mc", NO_DRIFT, fail={"output droplets": missing})
    found = drift.producer_drift(world.context(), drift.Refreshed(world.prepared(copy), NO_DRIFT))
    assert (found.drifted, found.mesh_checked) == (False, True)


def test_without_a_registry_it_says_so_and_checks_the_rest(tmp_path: Path) -> None:
    world = World(tmp_path, mesh=False)
    copy = RefreshCopy(world.events, tmp_path / "work" / "mc", NO_DRIFT, outputs=MC_OUTPUT)
    found = drift.producer_drift(world.context(), drift.Refreshed(world.prepared(copy), NO_DRIFT))
    assert (found.drifted, found.mesh_checked) == (False, False)
    assert world.said == ["mc: no mesh-hosts.json given: the registry was not checked"]
