"""A resize to a smaller disk than the droplet has can never succeed (DigitalOcean answers 422,
after the provider has powered the droplet off): apply stops before anything runs, exit 1,
located at the droplet's size, whatever --allow-resize says; and it is priced as no change."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from infra_apply.commands import apply
from infra_apply.errors import ExitCode, GuardRefused, InfraApplyError
from infra_apply.manifests import manifest
from infra_apply.manifests.model import Droplet
from tests.commands.fakes import FakeTerminal, World
from tests.plan_fixtures import OUTSIDE_NAMES, QUINN_MODEL, read_golden

MANIFEST = b"""apiVersion: infra/v1
project: quinn-infra
provider: digitalocean
droplets:
  - name: com.uvlava.quinn.build
    role: build
    size: s-2vcpu-4gb
    hosts: [build]
"""


def test_apply_stops_on_it_before_anything_runs_even_when_resizes_are_allowed(tmp_path: Path) -> None:
    world = World(tmp_path, "quinn")
    before = world.mesh_path.read_bytes()
    copy = world.copy("outside_drift", changed=True)  # resizes quinn.build 160 GB -> s-2vcpu-4gb
    build = Droplet("com.uvlava.quinn.build", "quinn", "@quinn/.infra.yaml", size="s-2vcpu-4gb")
    prep = world.prepared(copy, names=OUTSIDE_NAMES)
    prep = replace(prep, producer=replace(QUINN_MODEL, droplets=(*QUINN_MODEL.droplets, build)))
    allow = apply.ApplyOptions(
        allow_destroy=("com.uvlava.quinn.docs",),
        allow_replace=("com.uvlava.quinn.mcp",),
        allow_resize=("com.uvlava.dns", "com.uvlava.quinn.build"),
        auto_approve=True,
        manifests={"@quinn/.infra.yaml": manifest.parse(MANIFEST, "@quinn/.infra.yaml")},
    )
    terminal = FakeTerminal(world.events, answer=True)
    with pytest.raises(InfraApplyError) as stopped:
        apply.apply_producer(world.context(), prep, terminal.terminal(), allow)
    assert not isinstance(stopped.value, GuardRefused) and stopped.value.exit_code == ExitCode.ERROR
    assert "apply" not in world.events and "confirm" not in world.events
    assert world.mesh_path.read_bytes() == before
    err = stopped.value
    assert (err.path, err.line, err.col, err.rule) == ("@quinn/.infra.yaml", 7, 11, "resize")
    assert err.message.startswith(
        "droplet com.uvlava.quinn.build: size s-4vcpu-8gb → s-2vcpu-4gb can never be applied: "
        "s-2vcpu-4gb's disk is 80 GB, below the droplet's 160 GB, and a disk never shrinks"
    )


def test_the_plan_says_apply_stops_and_prices_it_as_no_change() -> None:
    """The golden reports: priced as it is (no saving promised), and no `--allow-resize` offered
    for it, since no flag makes it possible."""
    text = read_golden("outside_drift", "txt")
    assert (
        "com.uvlava.quinn.build priced as it is, s-4vcpu-8gb: its resize to s-2vcpu-4gb can never happen"
    ) in text
    md = read_golden("outside_drift", "md")
    assert (
        "apply would stop with an error (exit 1) before changing anything: resizing com.uvlava.quinn.build"
    ) in md
    assert "--allow-resize com.uvlava.quinn.build" not in md
