"""End to end: the monthly cost every plan summary states, with real Terraform and the sandbox
provider on (a copy of) the example tree, priced from the shipped table (the sandbox's prices)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import stopping
from tests.conftest import run_cli
from tests.e2e.test_e2e_sandbox import Ops

TABLE = "list prices as of 2026-11-29 (shipped table)"


@pytest.fixture
def ops(example: Path) -> Iterator[Ops]:
    ops = Ops(example)
    yield ops
    stopping.clean_up(ops)


def test_a_fresh_plan_states_each_producers_monthly_cost_from_the_example_sizes(ops: Ops) -> None:
    code, out, err = ops.sandbox("plan", "--format", "json")
    assert code == 2, err
    producers = json.loads(out)["producers"]
    figures = {
        name: (p["cost"]["monthly_before"], p["cost"]["monthly_after"], p["cost"]["monthly_diff"])
        for name, p in producers.items()
    }
    # ct: s-8vcpu-16gb $96 + s-2vcpu-4gb $24 (its on-demand GPU has no lease: not planned);
    # mc: s-2vcpu-4gb $24; quinn: s-1vcpu-1gb $6 + s-4vcpu-8gb $48 + s-2vcpu-4gb $24.
    assert figures == {"ct": (0.0, 120.0, 120.0), "mc": (0.0, 24.0, 24.0), "quinn": (0.0, 78.0, 78.0)}
    quinn = producers["quinn"]["cost"]
    assert (quinn["currency"], quinn["source"], quinn["as_of"]) == ("USD", TABLE, "2026-11-29")
    assert quinn["unpriced"] == [] and quinn["gpus"] == []
    assert sorted((d["name"], d["size"], d["monthly_after"]) for d in quinn["droplets"]) == [
        ("com.uvlava.dns", "s-1vcpu-1gb", 6.0),
        ("com.uvlava.quinn.artifacts", "s-4vcpu-8gb", 48.0),
        ("com.uvlava.quinn.mcp", "s-2vcpu-4gb", 24.0),
    ]
    assert "warning: cost" not in err  # the sandbox never asks an API for prices


def test_apply_shows_the_cost_and_a_resize_plans_the_difference(ops: Ops) -> None:
    name = "com.uvlava.mc.services"
    code, out, err = ops.apply("mc")
    assert code == 0, err
    assert f"Cost: $0.00/month → $24.00/month (+$24.00); prices: {TABLE}" in out
    ops.edit("@mc/.infra.yaml", "    region: fra1\n", "    region: fra1\n    size: s-4vcpu-8gb\n")
    code, out, err = ops.sandbox("plan", "--producer", "mc", "--format", "json")
    assert code == 2, err
    cost = json.loads(out)["producers"]["mc"]["cost"]
    assert (cost["monthly_before"], cost["monthly_after"], cost["monthly_diff"]) == (24.0, 48.0, 24.0)
    assert cost["droplets"] == [
        {
            "address": "digitalocean_droplet.mc_services",
            "monthly_after": 48.0,
            "monthly_before": 24.0,
            "name": name,
            "priced": True,
            "refused_size": None,
            "size": "s-4vcpu-8gb",
            "size_before": "s-2vcpu-4gb",
        }
    ]
    code, out, _ = ops.sandbox("plan", "--producer", "mc")
    assert code == 2
    assert "Cost: $24.00/month → $48.00/month (+$24.00)" in out
    assert "  $ s-2vcpu-4gb at $24.00/month: 1 → 0 droplet (-$24.00)" in out
    assert "  $ s-4vcpu-8gb at $48.00/month: 0 → 1 droplet (+$48.00)" in out
    code, out, _ = ops.sandbox("plan", "--producer", "mc", "--format", "markdown")
    assert code == 2
    row = "| mc | 0 | 1 | 0 | 0 | 0 | 0 | 0 | ⛔ refused without `--allow-resize` |"
    assert f"{row} \\$24.00 → \\$48.00 (+\\$24.00) |" in out
    assert "**Cost**: \\$24.00/month → \\$48.00/month (+\\$24.00)" in out
    assert f"Prices: {TABLE}" in out


def test_a_resize_to_a_smaller_disk_is_refused_before_apply_and_priced_as_no_change(ops: Ops) -> None:
    """Refused before anything runs, located at the manifest's size, the droplet untouched;
    the plan prices it as no change."""
    name = "com.uvlava.mc.services"
    assert ops.apply("mc")[0] == 0
    before = ops.droplets()[name]
    assert before["size"] == "s-2vcpu-4gb" and before["disk"] == 80
    ops.edit("@mc/.infra.yaml", "    region: fra1\n", "    region: fra1\n    size: s-1vcpu-1gb\n")
    assert run_cli("--root", str(ops.root), "render", "--out", str(ops.out), env=ops.env).returncode == 0
    code, out, _ = ops.sandbox("plan", "--producer", "mc", "--format", "json")
    assert code == 2
    mc = json.loads(out)["producers"]["mc"]
    assert mc["cost"]["monthly_diff"] == 0.0  # no saving promised
    assert [e["name"] for e in mc["guard"]["errors"]] == [name]
    code, _, err = ops.apply("mc", "--allow-resize", name)
    assert code == 1, err
    assert (
        "@mc/.infra.yaml:8:11: error resize: droplet com.uvlava.mc.services: size s-2vcpu-4gb → "
        "s-1vcpu-1gb can never be applied: s-1vcpu-1gb's disk is 25 GB, below the droplet's 80 GB"
    ) in err
    after = ops.droplets()[name]
    assert (after["size"], after["status"], after["disk"]) == ("s-2vcpu-4gb", "active", 80)
