"""drift: a refresh-only plan, shown and never applied; the registry compared, never written."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra_apply.commands import Output, drift
from infra_apply.plan.drift import DriftReport
from infra_apply.runtime import terraform as tf
from tests.commands.fakes import FakeCopy, Ticks, World, droplets_output

MC_OUTPUT = {"droplets": droplets_output("mc", "com.uvlava.mc.services", ["mc-web"])}
NEVER_APPLIED = {"format_version": "1.2", "resource_drift": [], "resource_changes": []}
MC_DROPLET = {
    "address": "digitalocean_droplet.mc_services",
    "mode": "managed",
    "type": "digitalocean_droplet",
    "name": "mc_services",
    "values": {"id": "5001", "name": "com.uvlava.mc.services"},
}
# An applied producer: its refreshed state holds the droplet (a data source alone would not count).
NO_DRIFT = {**NEVER_APPLIED, "prior_state": {"values": {"root_module": {"resources": [MC_DROPLET]}}}}


@dataclass
class RefreshCopy(FakeCopy):
    def plan(
        self,
        *,
        variables: Mapping[str, str] | None = None,
        refresh_only: bool = False,
        targets: Sequence[str] = (),
    ) -> bool:
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
    assert (found.drifted, found.mesh_checked, found.applied) == (False, True, True)


def test_a_producer_with_no_state_is_not_applied_and_its_registry_entries_are_not_judged(
    tmp_path: Path,
) -> None:
    """The registry holds mc-web for mc (registered elsewhere) and nothing was applied here:
    not drift (a scheduled run must not open an issue), nor is Terraform asked for outputs."""
    world = World(tmp_path)
    doc = json.loads(world.mesh_path.read_text())
    doc["hosts"]["mc-web"] = {
        "mesh_ip": "10.9.0.40",
        "public_ip": "192.0.2.99",
        "provider": "digitalocean",
        "droplet": "com.uvlava.mc.services",
        "producer": "mc",
    }
    world.mesh_path.write_text(json.dumps(doc))
    copy = RefreshCopy(world.events, tmp_path / "work" / "mc", NEVER_APPLIED)
    found = drift.producer_drift(world.context(), drift.Refreshed(world.prepared(copy), NEVER_APPLIED))
    assert (found.applied, found.drifted, found.mesh, found.mesh_checked) == (False, False, (), False)
    assert found.declared == {"com.uvlava.mc.services"}
    assert world.events == []
    report = DriftReport((found,), sandbox=True)
    assert drift.output(report, "text") == Output(
        "Producer mc:\n"
        "  not applied yet: run infra-apply apply --producer mc --sandbox\n"
        "Nothing to compare.\n"
    )
    assert json.loads(drift.output(report, "json").stdout)["producers"]["mc"]["applied"] is False


def test_refresh_only_phases_say_how_long_they_took(tmp_path: Path) -> None:
    world = World(tmp_path)
    copy = RefreshCopy(world.events, tmp_path / "work" / "mc", NO_DRIFT, changed=True, outputs=MC_OUTPUT)
    drift.refresh_one(world.prepared(copy), world.said.append, clock=Ticks(10.0, 22.4, 22.5, 22.9))
    assert world.said == [
        "mc: terraform plan -refresh-only",
        "mc: refresh-only plan done in 12.4s (changes)",
        "mc: show done in 0.4s (0 changed outside Terraform)",
    ]


def test_a_multi_producer_drift_run_ends_with_its_total_time(tmp_path: Path) -> None:
    mc, quinn = World(tmp_path, mesh=False), World(tmp_path, "quinn", mesh=False)
    preps = [
        mc.prepared(RefreshCopy(mc.events, tmp_path / "work" / "mc", NO_DRIFT)),
        quinn.prepared(RefreshCopy(quinn.events, tmp_path / "work" / "quinn", NEVER_APPLIED)),
    ]
    said: list[str] = []
    drift.refresh_all(preps, said.append, clock=Ticks(*range(10)))
    assert said == [
        "mc: terraform plan -refresh-only",
        "mc: refresh-only plan done in 1.0s (no changes)",
        "mc: show done in 1.0s (0 changed outside Terraform)",
        "quinn: terraform plan -refresh-only",
        "quinn: refresh-only plan done in 1.0s (no changes)",
        "quinn: show done in 1.0s (0 changed outside Terraform)",
        "2 producers checked in 9.0s",
    ]


def test_without_a_registry_it_says_so_and_checks_the_rest(tmp_path: Path) -> None:
    world = World(tmp_path, mesh=False)
    copy = RefreshCopy(world.events, tmp_path / "work" / "mc", NO_DRIFT, outputs=MC_OUTPUT)
    found = drift.producer_drift(world.context(), drift.Refreshed(world.prepared(copy), NO_DRIFT))
    assert (found.drifted, found.mesh_checked) == (False, False)
    assert world.said == ["mc: no mesh-hosts.json given: the registry was not checked"]
