"""End to end in the sandbox: a producer's budget in the guard (issue 21), with real Terraform
and the sandbox provider on (a copy of) the example tree, priced from the shipped table.

mc's one droplet (s-2vcpu-4gb) costs $24.00 a month; ct's GPU (gpu-h100x1-80gb) $3.39 an hour.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra_apply.report.combine import combine, read_json
from tests import stopping
from tests.e2e.test_e2e_gpu import GPU, GpuOps

pytestmark = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")


@pytest.fixture
def ops(example: Path) -> Iterator[GpuOps]:
    ops = GpuOps(example)
    yield ops
    stopping.clean_up(ops)


def budget(ops: GpuOps, producer: str, *lines: str) -> None:
    path = ops.root / "infra-apply.toml"
    path.write_text(path.read_text() + f"\n[producers.{producer}]\n" + "".join(f"{x}\n" for x in lines))


def test_over_budget_is_shown_refused_with_exit_3_then_applied_with_the_flag(ops: GpuOps) -> None:
    budget(ops, "mc", 'budget_monthly = "20.00"')
    code, out, err = ops.sandbox("plan", "--producer", "mc", "--format", "json")
    assert code == 2, err
    doc = json.loads(out)
    assert doc["producers"]["mc"]["budget"]["ok"] is False
    # the pull-request comment is built from plan --format json files: it shows the budget line
    body = combine([read_json(out)])
    assert (
        "⛔ **Budget**: budget \\$20.00/month: \\$24.00/month after the plan (+\\$24.00): over budget" in body
    ), body
    code, out, err = ops.sandbox("plan", "--producer", "mc")
    assert code == 2 and "Budget: budget $20.00/month: $24.00/month after the plan" in out

    code, out, err = ops.apply("mc")
    assert code == 3, out + err
    assert "over budget mc: $24.00/month after the plan is above its budget of $20.00/month" in err
    assert ops.droplets() == {}  # nothing was created
    # the remedy, run exactly as printed (with the run's own --out and --mesh-hosts)
    printed = re.search(r"\((infra-apply apply [^)]*)\)", err)
    assert printed is not None, err
    words = shlex.split(printed.group(1))
    assert words[-1] == "--sandbox" and words.count("--allow-over-budget") == 1
    code, out, err = ops.run(*words[1:], "--out", str(ops.out), "--mesh-hosts", str(ops.mesh))
    assert code == 0, out + err
    assert "com.uvlava.mc.services" in ops.droplets()
    # still over budget, but a plan that changes nothing is never refused for it
    code, out, err = ops.apply("mc")
    assert code == 0 and "mc: nothing to apply" in out, out + err


def test_gpu_up_over_budget_is_refused_and_leaves_no_lease(ops: GpuOps) -> None:
    # the GPU's hour ($3.39) is more than the one dollar a plan may add to ct's month
    budget(ops, "ct", 'budget_monthly = "1000.00"', 'max_increase = "1.00"')
    code, out, err = ops.apply("ct", "--allow-over-budget", "ct")  # the standing $120.00 first
    assert code == 0, out + err
    code, out, err = ops.gpu("up", GPU, "--for", "1h")
    assert code == 3, out + err
    assert "over budget ct: it grows by +$3.39/month, more than max_increase $1.00" in err, err
    assert f"infra-apply gpu up {GPU} --for 1h --allow-over-budget ct --sandbox" in err
    assert GPU not in ops.droplets() and GPU not in ops.leases()


def printed_apply(err: str) -> list[str]:
    found = re.search(r"over budget .*\((infra-apply apply [^)]*)\)", err)
    assert found is not None, err
    return shlex.split(found.group(1))


def test_the_over_budget_remedy_keeps_every_guard_flag_it_needs(ops: GpuOps) -> None:
    # quinn's first apply needs --allow-trusted-sources uvlava-pg from the guard as well: the
    # cluster trusts nobody yet (as before its owner's first apply)
    from infra_apply.sandbox import cloud

    with cloud.transaction(ops.cloud) as c:
        cloud.put_cluster_rules(c, str(cloud.find_cluster(c, "uvlava-pg")["id"]), [])
    budget(ops, "quinn", 'budget_monthly = "20.00"')
    code, out, err = ops.apply("quinn")
    assert code == 3, out + err
    words = printed_apply(err)
    assert " --allow-trusted-sources uvlava-pg " in " ".join(words) + " ", err
    # a flag given is kept: the printed command was refused by the guard when it dropped it
    code, out, err = ops.apply("quinn", "--allow-trusted-sources", "uvlava-pg")
    assert code == 3, out + err
    words = printed_apply(err)
    code, out, err = ops.run(*words[1:], "--out", str(ops.out), "--mesh-hosts", str(ops.mesh))
    assert code == 0, out + err
    assert "com.uvlava.quinn.artifacts" in ops.droplets()
