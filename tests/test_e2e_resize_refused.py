"""A resize to a smaller disk, end to end (real Terraform, the sandbox provider): refused before
anything runs, located at the manifest's size, the droplet untouched; the plan prices it as no
change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import stopping
from tests.conftest import run_cli
from tests.test_e2e_sandbox import Ops

MC = "com.uvlava.mc.services"


@pytest.fixture
def ops(example: Path) -> Iterator[Ops]:
    ops = Ops(example)
    yield ops
    stopping.clean_up(ops)


def test_a_resize_to_a_smaller_disk_is_refused_before_apply_and_priced_as_no_change(ops: Ops) -> None:
    assert ops.apply("mc")[0] == 0
    before = ops.droplets()[MC]
    assert before["size"] == "s-2vcpu-4gb" and before["disk"] == 80
    ops.edit("@mc/.infra.yaml", "    region: fra1\n", "    region: fra1\n    size: s-1vcpu-1gb\n")
    assert run_cli("--root", str(ops.root), "render", "--out", str(ops.out), env=ops.env).returncode == 0
    code, out, _ = ops.sandbox("plan", "--producer", "mc", "--format", "json")
    assert code == 2
    mc = json.loads(out)["producers"]["mc"]
    assert mc["cost"]["monthly_diff"] == 0.0  # no saving promised
    assert [e["name"] for e in mc["guard"]["errors"]] == [MC]
    code, _, err = ops.apply("mc", "--allow-resize", MC)
    assert code == 1, err
    assert (
        "@mc/.infra.yaml:8:11: error resize: droplet com.uvlava.mc.services: size s-2vcpu-4gb → "
        "s-1vcpu-1gb can never be applied: s-1vcpu-1gb's disk is 25 GB, below the droplet's 80 GB"
    ) in err
    after = ops.droplets()[MC]
    assert (after["size"], after["status"], after["disk"]) == ("s-2vcpu-4gb", "active", 80)
