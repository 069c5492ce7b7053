"""The CI workflows shipped under examples/ci/: actionlint (with shellcheck on every run: script)
passes on each, their shape is what docs/runbooks.md promises, and the steps that call infra-apply
work when run as the runner runs them (bash -eo pipefail) against a real repository and forge."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pytest_httpserver import HTTPServer

from infra_apply.report.combine import failed_sentence
from infra_apply.report.json import format_json
from infra_apply.report.markdown import format_markdown
from tests.conftest import EXAMPLE_MESH, EXAMPLE_TREE, REPO, cli_env
from tests.forge.test_comment import MARK, PR, TOKEN, FakeForge
from tests.plan_fixtures import SANDBOX_CONTEXT
from tests.report.test_report_combine import FAILED, reports_of

CI = REPO / "examples" / "ci"
WORKFLOWS = sorted(CI.glob("*/*.yml"))
BIN = Path(sys.executable).parent


def actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(BIN / "actionlint"),
            "-no-color",
            "-oneline",
            "-config-file",
            str(CI / "actionlint.yaml"),
            "-shellcheck",
            str(BIN / "shellcheck"),
            "-pyflakes",
            "",
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def test_both_forges_get_both_workflows() -> None:
    assert [p.relative_to(CI).as_posix() for p in WORKFLOWS] == [
        "forgejo/infra-apply-apply.yml",
        "forgejo/infra-apply-drift.yml",
        "forgejo/infra-apply-plan.yml",
        "github/infra-apply-apply.yml",
        "github/infra-apply-drift.yml",
        "github/infra-apply-plan.yml",
    ]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.relative_to(CI).as_posix())
def test_actionlint_passes(path: Path) -> None:
    done = actionlint(path)
    assert (done.returncode, done.stdout) == (0, ""), done.stdout + done.stderr


def test_actionlint_and_shellcheck_do_catch_mistakes(tmp_path: Path) -> None:
    """The check above can fail: a broken copy of a shipped workflow is rejected."""
    text = (CI / "github" / "infra-apply-plan.yml").read_text()
    broken = text.replace("needs.check.outputs.producers", "needs.check.outputs.producer", 1)
    broken = broken.replace('> "plans/$PRODUCER.json" || rc=$?', "> plans/$PRODUCER.json || rc=$?", 1)
    (tmp_path / "broken.yml").write_text(broken)
    out = actionlint(tmp_path / "broken.yml").stdout
    assert 'property "producer" is not defined' in out
    assert "SC2086" in out  # shellcheck ran on the run: script


@pytest.mark.parametrize("forge", ["github", "forgejo"])
def test_pull_request_workflow_shape(forge: str) -> None:
    doc = load(CI / forge / "infra-apply-plan.yml")
    jobs = doc["jobs"]
    assert list(jobs) == ["check", "plan", "comment"]
    check = [s.get("run", "") for s in jobs["check"]["steps"]]
    assert any("infra-apply validate" in r for r in check)
    assert any("infra-apply render --check" in r for r in check)
    assert any("plan --changed" in r for r in check)
    assert jobs["plan"]["strategy"]["matrix"]["producer"] == "${{ fromJSON(needs.check.outputs.producers) }}"
    assert any('plan --producer "$PRODUCER" --format json' in s.get("run", "") for s in jobs["plan"]["steps"])
    # JSON is what passes between the jobs: each plan job's artifact, the comment job's input
    [upload] = [s for s in jobs["plan"]["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    assert upload["with"]["path"] == "plans/${{ matrix.producer }}.json"
    assert any("infra-apply comment --pr" in s.get("run", "") for s in jobs["comment"]["steps"])
    assert jobs["comment"]["permissions"] == {"pull-requests": "write"}


@pytest.mark.parametrize("forge", ["github", "forgejo"])
def test_apply_workflow_never_overlaps_one_producer(forge: str) -> None:
    doc = load(CI / forge / "infra-apply-apply.yml")
    on = doc[True]  # YAML 1.1 reads the key `on` as true
    assert on["push"]["branches"] == ["main"]
    apply = doc["jobs"]["apply"]
    assert apply["concurrency"] == {
        "group": "infra-apply-apply-${{ matrix.producer }}",
        "cancel-in-progress": False,
    }
    [run] = [s["run"] for s in apply["steps"] if "infra-apply apply" in s.get("run", "")]
    assert run == 'infra-apply apply --producer "$PRODUCER" --auto-approve'  # the guard stays on


@pytest.mark.parametrize("forge", ["github", "forgejo"])
def test_apply_workflow_brings_the_registry_in_with_one_job_and_one_commit(forge: str) -> None:
    """The parallel apply jobs each register into their own copy of mesh-hosts.json; one job
    after all of them (failed ones too) registers every producer of the run and commits."""
    jobs = load(CI / forge / "infra-apply-apply.yml")["jobs"]
    assert list(jobs) == ["check", "apply", "registry"]
    registry = jobs["registry"]
    assert registry["needs"] == ["check", "apply"]
    assert registry["if"].startswith("always() && needs.check.result == 'success'")
    assert registry["permissions"] == {"contents": "write"}
    assert "strategy" not in registry  # one job
    assert registry["concurrency"] == {"group": "infra-apply-registry", "cancel-in-progress": False}
    [s] = [s for s in registry["steps"] if "infra-apply register" in s.get("run", "")]
    assert s["env"]["PRODUCERS"] == "${{ needs.check.outputs.producers }}"
    assert {"SPACES_ACCESS_KEY_ID", "SPACES_SECRET_ACCESS_KEY"} <= set(s["env"])  # the shared state
    run = s["run"]
    assert 'infra-apply register --producer "$producer"' in run
    assert run.count("git commit") == 1 and 'git add -- "$INFRA_APPLY_MESH_HOSTS"' in run
    assert 'git push --quiet origin "HEAD:$BRANCH"' in run
    assert not any("artifact" in step.get("uses", "") for step in jobs["apply"]["steps"])


# What a step running Terraform against the cloud reads from the forge's secrets besides the
# token: [alerts] slack.url_env (plan, apply and drift plan it: a sensitive variable) and
# [notify] webhook_url_env (apply and drift send events), under the example config's names.
ALERTS_SECRET = "SLACK_ALERT_WEBHOOK"
EVENTS_SECRET = "INFRA_APPLY_WEBHOOK"


def cloud_steps(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(verb, step) of every step that plans, applies or drifts a producer against the cloud."""
    found = []
    for job in load(path)["jobs"].values():
        for s in job["steps"]:
            for verb in ("plan --producer", "apply --producer", "drift"):
                if f"infra-apply {verb}" in s.get("run", ""):
                    found.append((verb.split()[0], s))
    return found


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.relative_to(CI).as_posix())
def test_steps_that_plan_get_the_alert_and_event_webhooks_from_secrets(path: Path) -> None:
    """Without SLACK_ALERT_WEBHOOK a plan of a tree whose [alerts] route to Slack stops (its
    sensitive variable has no value); without INFRA_APPLY_WEBHOOK no event is ever sent."""
    steps = cloud_steps(path)
    assert steps, "every shipped workflow plans, applies or drifts"
    for verb, s in steps:
        env = s.get("env", {})
        assert env.get(ALERTS_SECRET) == f"${{{{ secrets.{ALERTS_SECRET} }}}}", (verb, s.get("name"))
        if verb in ("apply", "drift"):
            assert env.get(EVENTS_SECRET) == f"${{{{ secrets.{EVENTS_SECRET} }}}}", (verb, s.get("name"))


def test_the_example_alerts_config_names_the_secret_the_workflows_pass() -> None:
    import tomllib

    doc = tomllib.loads((REPO / "tests" / "fixtures" / "alerts" / "alerts.toml").read_text())
    assert doc["alerts"]["slack"]["url_env"] == ALERTS_SECRET


def step(path: Path, job: str, name: str) -> dict[str, Any]:
    steps = load(path)["jobs"][job]["steps"]
    found: dict[str, Any] = next(s for s in steps if s.get("name", "").startswith(name))
    return found


def run_step(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """As the runner does: ``bash --noprofile --norc -eo pipefail {0}``."""
    (cwd / "step.sh").write_text(script)
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(cwd / "step.sh")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def git(cwd: Path, env: dict[str, str], *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


@pytest.mark.parametrize("forge", ["github", "forgejo"])
def test_the_changed_producers_step_feeds_the_matrix(tmp_path: Path, forge: str) -> None:
    """The operator's layout: the repository's top level is the root (@ folders, generated/)."""
    top = tmp_path / "code"
    shutil.copytree(EXAMPLE_TREE, top)
    shutil.copytree(REPO / "generated", top / "generated")
    shutil.copy(EXAMPLE_MESH, top / "mesh-hosts.json")
    env = cli_env(
        tmp_path,
        GIT_CONFIG_GLOBAL=str(tmp_path / "gitconfig"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.invalid",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.invalid",
    )
    git(top, env, "init", "-q", "-b", "main")
    git(top, env, "add", "-A")
    git(top, env, "commit", "-q", "-m", "infra")
    git(top, env, "update-ref", "refs/remotes/origin/main", "main")  # what checkout fetches
    git(top, env, "checkout", "-q", "-b", "pr")
    catalog = top / "@mc" / "catalog" / ".infra.yaml"
    catalog.write_text(catalog.read_text().replace("catalog", "catalog2"))
    git(top, env, "commit", "-q", "-am", "mc: a change")

    s = step(CI / forge / "infra-apply-plan.yml", "check", "Producers this pull request changes")
    assert s["env"] == {"BASE": "origin/${{ github.base_ref }}"}
    output = tmp_path / "github_output"
    env |= {
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_OUTPUT": str(output),
        "RUNNER_TEMP": str(tmp_path),
        "BASE": "origin/main",
        **{
            k: v
            for k, v in load(CI / forge / "infra-apply-plan.yml")["env"].items()
            if k.startswith("INFRA_")
        },
        "INFRA_APPLY_MESH_HOSTS": "mesh-hosts.json",
    }
    done = run_step(s["run"], top, env)
    assert done.returncode == 0, done.stderr
    assert output.read_text() == 'producers=["mc"]\n'


@pytest.mark.parametrize("kind", ["github", "forgejo"])
def test_the_comment_step_posts_the_plans(tmp_path: Path, httpserver: HTTPServer, kind: str) -> None:
    forge = FakeForge(httpserver, kind)
    s = step(CI / kind / "infra-apply-plan.yml", "comment", "Post or update the plan comment")
    env = {
        **forge.env(tmp_path),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        **{k: v for k, v in s["env"].items() if "${{" not in v},
        "PR": str(PR),
        "RUN_URL": "https://forge.example/run/1",
    }
    token_var = "GITHUB_TOKEN" if kind == "github" else "FORGEJO_TOKEN"
    assert s["env"][token_var] == "${{ secrets.GITHUB_TOKEN }}"
    env[token_var] = TOKEN
    work = tmp_path / "job"
    work.mkdir()

    done = run_step(s["run"], work, env)  # no producer changed: no plans downloaded
    assert done.returncode == 0, done.stderr
    assert forge.comments[0]["body"].startswith(f"{MARK}\n## infra-apply plan\n\nNo changes: no producer's")

    # The matrix: one JSON plan per producer, one that failed; one comment reading as one plan.
    ct, quinn = reports_of("update_size_and_import")
    (work / "plans").mkdir()
    (work / "plans" / "ct.json").write_text(format_json([ct], SANDBOX_CONTEXT))
    (work / "plans" / "quinn.json").write_text(format_json([quinn], SANDBOX_CONTEXT))
    # The plan step itself, for a producer whose plan fails (the root holds no @mc): exit 1,
    # and what it leaves for the comment job says so.
    plan = step(CI / kind / "infra-apply-plan.yml", "plan", "Plan ")
    assert plan["env"]["PRODUCER"] == "${{ matrix.producer }}"
    empty = tmp_path / "root"
    empty.mkdir()
    failed = run_step(plan["run"], work, {**env, "PRODUCER": "mc", "INFRA_APPLY_ROOT": str(empty)})
    assert failed.returncode == 1, failed.stderr
    assert json.loads((work / "plans" / "mc.json").read_text()) == {
        "format_version": 1,
        "failed": [{"producer": "mc", "exit_code": 1}],
    }
    done = run_step(s["run"], work, env)
    assert done.returncode == 0, done.stderr
    both = format_markdown([ct, quinn], SANDBOX_CONTEXT)
    table = "\n<!-- infra-apply:table "  # the failed plan is named in the header, before the table
    header = failed_sentence([("mc", "1")])
    one_plan = both.replace(table, f"\n{header}\n{table}", 1) + "\n" + FAILED
    assert [c["body"] for c in forge.comments] == [f"{MARK}\n{one_plan}"]
    assert TOKEN not in done.stdout + done.stderr
    assert json.dumps(TOKEN) not in json.dumps(forge.requests)  # the token only in the header
