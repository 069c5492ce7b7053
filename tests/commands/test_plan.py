"""plan: each producer is init -> plan (saved) -> show; the result's output and exit code."""

from __future__ import annotations

import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra_apply.commands import plan
from infra_apply.errors import ExitCode, InfraApplyError
from infra_apply.manifests.changed import Changes, Selection
from infra_apply.report import PlanContext
from tests.commands.fakes import Ticks, World


def test_one_producer_is_init_plan_show_and_parsed(tmp_path: Path) -> None:
    world = World(tmp_path)
    copy = world.copy("create_producer", changed=True)
    planned = plan.plan_one(world.prepared(copy), world.said.append, clock=Ticks(10.0, 22.4, 22.5, 22.9))
    assert world.events == ["init", "plan", "show"]
    assert copy.variables == [{}]
    assert planned.changed and planned.plan.counts["create"] == 4
    # Each phase says how long it took when it ends, on the progress lines (stderr).
    assert world.said == [
        "mc: terraform plan",
        "mc: plan done in 12.4s (changes)",
        "mc: show done in 0.4s (4 to create)",
    ]


def test_a_steady_producer_says_no_changes_on_its_timing_lines(tmp_path: Path) -> None:
    world = World(tmp_path, "quinn")
    plan.plan_one(world.prepared(world.copy("no_changes")), world.said.append, clock=Ticks(0, 1, 1, 1.5))
    assert world.said[1:] == [
        "quinn: plan done in 1.0s (no changes)",
        "quinn: show done in 0.5s (no changes)",
    ]


def test_a_multi_producer_run_ends_with_its_total_time(tmp_path: Path) -> None:
    mc, quinn = World(tmp_path, mesh=False), World(tmp_path, "quinn", mesh=False)
    preps = [mc.prepared(mc.copy("create_producer", changed=True)), quinn.prepared(quinn.copy("no_changes"))]
    said: list[str] = []
    plan.plan_all(preps, said.append)  # parallel: the real clock, so only the format is asserted
    assert re.fullmatch(r"2 producers planned in \d+\.\ds", said[-1]), said
    assert sum(bool(re.fullmatch(r"(mc|quinn): plan done in \d+\.\ds \(.+\)", line)) for line in said) == 2
    said.clear()
    plan.plan_all(preps[:1], said.append)
    assert not any("producers planned" in line for line in said)  # one producer: no total


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


# --- where and when a plan ran: the comment's banner and commit ---------------------------------

SHA = "0123456789abcdef0123456789abcdef01234567"


def git(cwd: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
        "PATH": os.environ["PATH"],
    }
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_the_commit_planned_is_github_sha_else_head_of_the_roots_repository(tmp_path: Path) -> None:
    repo, tree = tmp_path / "repo", tmp_path / "repo" / "tree"
    tree.mkdir(parents=True)
    assert plan.planned_commit(tree, {}) is None  # not in a repository: left out
    git(repo, "init", "-q")
    assert plan.planned_commit(tree, {}) is None  # no commit yet
    (tree / "a").write_text("a")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "one")
    head = git(repo, "rev-parse", "HEAD")
    assert plan.planned_commit(tree, {}) == head
    assert plan.planned_commit(tree, {"GITHUB_SHA": SHA.upper()}) == SHA  # CI says what it checked out
    # a GITHUB_SHA that is not a commit id is not trusted into the comment
    assert plan.planned_commit(tree, {"GITHUB_SHA": "abc --><script>"}) == head


def test_plan_markdown_carries_the_context_the_run_recorded(tmp_path: Path) -> None:
    world = World(tmp_path)
    planned = plan.plan_all([world.prepared(world.copy("no_changes"))], world.said.append)
    when = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    result = plan.PlanResult(tuple(planned), context=PlanContext(True, SHA, when))
    md = plan.output(result, "markdown").stdout
    hidden = f"<!-- infra-apply plan: commit={SHA} planned-at=2026-11-29T12:00:00Z sandbox=yes -->\n"
    assert md.startswith(hidden)
    assert "## infra-apply plan (sandbox)\n" in md and "Planned at commit `0123456789ab`" in md
    # text and JSON are unchanged by it
    assert plan.output(result, "text").stdout == plan.output(plan.PlanResult(tuple(planned)), "text").stdout


def test_the_commit_asked_ahead_is_the_commit_and_a_failed_ask_is_made_again(tmp_path: Path) -> None:
    """The commit is asked while Terraform plans (``in_background``); what it found is what the
    context carries, and when asking ahead failed (or never started) the commit is asked at the
    point of use, never left out, waited for in vain, nor turned into an error."""
    from infra_apply.cloud.account import LiveAccount
    from infra_apply.runtime.workcopy import Context

    ctx = Context(tmp_path, tmp_path / "generated", LiveAccount(), None, {"GITHUB_SHA": SHA})
    assert plan.plan_context(ctx, plan.in_background(lambda: "f" * 40)).commit == "f" * 40

    def broken() -> str | None:
        raise OSError("git vanished")

    assert plan.plan_context(ctx, plan.in_background(broken)).commit == SHA  # asked again
    never = plan.in_background(lambda: "f" * 40, when=lambda _: None)  # Terraform never started
    assert plan.plan_context(ctx, never).commit == SHA  # asked in place, not waited for
    assert plan.plan_context(ctx).commit == SHA
    with pytest.raises(ValueError, match="the same error"):  # an error at the point of use stays one
        plan.ahead(plan.in_background(broken), lambda: int("the same error"))
