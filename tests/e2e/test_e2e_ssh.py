"""End to end, sandbox: ssh_from = "mesh" keeps SSH from bootstrap_from on an unregistered
droplet, says when it closes, and the plan after registering closes it (no port-22 rule left)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra_apply.sandbox import cloud
from tests import stopping
from tests.e2e.test_e2e_sandbox import Ops

MESH = 'ssh_from = "mesh"\nbootstrap_from = ["198.51.100.0/28"]'


@pytest.fixture
def ops(example: Path) -> Iterator[Ops]:
    ops = Ops(example)
    ops.edit("infra-apply.toml", 'ssh_from = ["203.0.113.4/32", "198.51.100.0/28"]', MESH)
    yield ops
    stopping.clean_up(ops)


def _ssh_sources(ops: Ops) -> dict[str, list[str]]:
    """Firewall name -> the sources of its port-22 rules, in the sandbox cloud."""
    found: dict[str, list[str]] = {}
    for fw in cloud.load(ops.cloud)["firewalls"].values():
        rules: list[dict[str, Any]] = fw.get("inbound_rule") or []
        ssh = [r for r in rules if r.get("port_range") == "22"]
        found[fw["name"]] = sorted(s for r in ssh for s in r["source_addresses"])
    return found


def test_mesh_keeps_bootstrap_ssh_until_registered_then_closes_it(ops: Ops) -> None:
    code, out, err = ops.sandbox("plan", "--producer", "quinn", "--format", "json")
    assert code == 2, err
    doc = json.loads(out)["producers"]["quinn"]
    # the artifacts droplet is in the example's mesh-hosts.json already: no SSH at all
    assert [b["name"] for b in doc["ssh_bootstrap"]] == ["com.uvlava.dns", "com.uvlava.quinn.mcp"]
    code, out, err = ops.apply("quinn")
    assert code == 0, err
    assert _ssh_sources(ops) == {
        "fw-dns": ["198.51.100.0/28"],
        "fw-dns--public": [],
        "fw-quinn-artifacts": [],
        "fw-quinn-artifacts--public": [],
        "fw-quinn-mcp": ["198.51.100.0/28"],
        "fw-quinn-mcp--public": [],
    }
    # apply registered dns and mcp: the next plan closes their bootstrap SSH, and says so
    code, out, err = ops.sandbox("plan", "--producer", "quinn")
    assert code == 2, err
    assert "! SSH (22/tcp) closed on firewall of com.uvlava.dns (digitalocean_firewall.dns)" in out
    assert "stays open from bootstrap_from" not in out
    code, out, err = ops.apply("quinn")
    assert code == 0, err
    assert all(sources == [] for sources in _ssh_sources(ops).values())
    code, out, _ = ops.sandbox("plan", "--producer", "quinn")
    assert (code, "No changes." in out) == (0, True)
