"""The cost line of apply's summary, against a fake working copy: shown with the plan apply asks
about, before it asks; left out where no prices were fetched (gpu up / down / reap)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra_apply.commands import apply
from infra_apply.errors import InfraApplyError
from infra_apply.plan.cost import TABLE_SOURCE, fallback_prices
from tests.commands.fakes import FakeTerminal, World

GPU = "com.uvlava.ct.gpu"


def test_apply_shows_the_plans_cost_with_the_plan_before_asking(tmp_path: Path) -> None:
    world = World(tmp_path, mesh=False)
    copy = world.copy("create_producer", changed=True)
    terminal = FakeTerminal(world.events, answer=False)
    options = apply.ApplyOptions(prices=fallback_prices())
    with pytest.raises(InfraApplyError, match="apply cancelled"):  # answered no: nothing applied
        apply.apply_producer(world.context(), world.prepared(copy), terminal.terminal(), options)
    shown = terminal.shown[0].splitlines()
    plan_line = next(i for i, line in enumerate(shown) if line.startswith("Plan: "))
    assert shown[plan_line + 1] == f"Cost: $0.00/month → $24.00/month (+$24.00); prices: {TABLE_SOURCE}"
    assert world.events[-1] == "confirm" and "apply" not in world.events


def test_a_leased_gpu_is_priced_by_the_hour_until_its_lease_ends(tmp_path: Path) -> None:
    world = World(tmp_path, "quinn", mesh=False)
    copy = world.copy("update_size", changed=True)
    until = datetime.now(UTC) + timedelta(hours=1, minutes=30)
    options = apply.ApplyOptions(
        prices=fallback_prices(), lease_ends={GPU: until}, allow_resize=("com.uvlava.ct.services",)
    )
    prep = world.prepared(copy, names={"digitalocean_droplet.ct_gpu": GPU})
    terminal = FakeTerminal(world.events, answer=False)
    with pytest.raises(InfraApplyError, match="apply cancelled"):
        apply.apply_producer(world.context(), prep, terminal.terminal(), options)
    text = terminal.shown[0]
    assert f"  $ GPU {GPU} (gpu-h100x1-80gb): $3.39/hour, up to $6.78 until its lease ends" in text
    assert "on demand, not in the monthly figures" in text


def test_without_prices_there_is_no_cost_line(tmp_path: Path) -> None:
    world = World(tmp_path, mesh=False)
    copy = world.copy("create_producer", changed=True)
    terminal = FakeTerminal(world.events, answer=False)
    with pytest.raises(InfraApplyError, match="apply cancelled"):
        apply.apply_producer(world.context(), world.prepared(copy), terminal.terminal())
    assert "Cost:" not in terminal.shown[0]
