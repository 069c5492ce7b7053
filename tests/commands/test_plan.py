"""plan: each producer is init -> plan (saved) -> show; the result's output and exit code."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra_apply.changed import Changes, Selection
from infra_apply.commands import plan
from infra_apply.errors import ExitCode, InfraApplyError
from tests.commands.fakes import World


def test_one_producer_is_init_plan_show_and_parsed(tmp_path: Path) -> None:
    world = World(tmp_path)
    copy = world.copy("create_producer", changed=True)
    planned = plan.plan_one(world.prepared(copy), world.said.append)
    assert world.events == ["init", "plan", "show"]
    assert copy.variables == [{}]
    assert planned.changed and planned.plan.counts["create"] == 4
    assert world.said == ["mc: terraform plan"]


def test_a_held_gpu_sets_the_droplets_variable_and_an_unknown_one_runs_nothing(tmp_path: Path) -> None:
    world = World(tmp_path)
    copy = world.copy("create_producer", changed=True)
    prep = world.prepared(copy, gpu_variables={"com.uvlava.mc.gpu": "gpu_mc_gpu"})
    plan.plan_all([prep], world.said.append, gpu=["com.uvlava.mc.gpu"])
    assert copy.variables == [{"gpu_mc_gpu": "true"}]
    world.events.clear()
    with pytest.raises(InfraApplyError, match=r"com\.uvlava\.ct\.gpu: not an on-demand GPU"):
        plan.plan_all([prep], world.said.append, gpu=["com.uvlava.ct.gpu"])
    assert world.events == []


@pytest.mark.parametrize(
    ("fixture", "changed", "code"),
    [("create_producer", True, ExitCode.CHANGES), ("no_changes", False, ExitCode.OK)],
)
def test_the_exit_code_says_whether_anything_changes(
    tmp_path: Path, fixture: str, changed: bool, code: ExitCode
) -> None:
    world = World(tmp_path, "mc" if fixture == "create_producer" else "quinn")
    planned = plan.plan_all([world.prepared(world.copy(fixture, changed=changed))], world.said.append)
    for fmt, start in (("text", "Producer "), ("json", "{"), ("markdown", "## ")):
        out = plan.output(plan.PlanResult(tuple(planned)), fmt)
        assert out.code == code and out.stdout.startswith(start), fmt


def test_changed_with_nothing_selected_plans_nothing_and_exits_0() -> None:
    found = Changes("origin/main", "0" * 40, (), Selection(()))
    out = plan.output(plan.PlanResult(changes=found), "text")
    assert (out.stdout, out.code) == (
        "No changes: no producer's manifests, generated module or configuration changed since origin/main.\n",
        ExitCode.OK,
    )
    listed = plan.output(plan.PlanResult(changes=found, listed=()), "text")
    assert (listed.stdout, listed.code) == ("", ExitCode.OK)
