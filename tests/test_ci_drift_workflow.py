"""The scheduled drift workflows (examples/ci/*/infra-apply-drift.yml): their shape, and the
issue step run as the runner runs it against a local forge answering the issues API of both
forges (GitHub's and Forgejo's share the shapes used here)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from infra_apply.report.drift import MARKER
from tests.test_ci_workflows import BIN, CI, load, run_step, step

TOKEN = "FAKE-gh-token_drift-workflow-test"


class IssueForge:
    """Open and closed issues of one repository; pull requests are issues too (as on GitHub)."""

    def __init__(self, server: HTTPServer) -> None:
        self.issues: list[dict[str, Any]] = [
            {"number": n, "body": f"unrelated {n}", "state": "open"} for n in range(1, 61)
        ]
        self.issues.append(
            {"number": 61, "body": MARKER + " a pull request", "state": "open", "pull_request": {}}
        )
        self.auth: set[str] = set()
        server.expect_request("/api/v1/repos/o/r/issues", method="GET").respond_with_handler(self.list)
        server.expect_request("/api/v1/repos/o/r/issues", method="POST").respond_with_handler(self.create)
        server.expect_request("/api/v1/repos/o/r/issues/62", method="PATCH").respond_with_handler(self.edit)
        self.url = server.url_for("/api/v1/repos/o/r/issues")

    def list(self, request: Request) -> Response:
        self.auth.add(request.headers.get("Authorization", ""))
        page, size = int(request.args["page"]), int(request.args["limit"])
        open_ = [i for i in self.issues if i["state"] == "open"]
        return Response(json.dumps(open_[(page - 1) * size : page * size]), content_type="application/json")

    def create(self, request: Request) -> Response:
        issue = {**json.loads(request.data), "number": len(self.issues) + 1, "state": "open"}
        self.issues.append(issue)
        return Response(json.dumps(issue), status=201, content_type="application/json")

    def edit(self, request: Request) -> Response:
        issue = self.issues[61]
        issue.update(json.loads(request.data))
        return Response(json.dumps(issue), content_type="application/json")


@pytest.mark.parametrize("forge", ["github", "forgejo"])
def test_drift_workflow_shape(forge: str) -> None:
    doc = load(CI / forge / "infra-apply-drift.yml")
    assert "schedule" in doc[True] and "workflow_dispatch" in doc[True]  # YAML 1.1: `on` is true
    assert doc["permissions"] == {"contents": "read", "issues": "write"}
    [job] = doc["jobs"].values()
    run = step(CI / forge / "infra-apply-drift.yml", "drift", "Refresh-only plans")["run"]
    assert "infra-apply drift --format markdown > drift.md" in run
    issue = step(CI / forge / "infra-apply-drift.yml", "drift", "Open, update or close")
    assert issue["env"]["TOKEN"] == "${{ secrets.GITHUB_TOKEN }}"
    assert job["runs-on"] == ("ubuntu-latest" if forge == "github" else "docker")


@pytest.mark.parametrize("forge", ["github", "forgejo"])
def test_the_issue_step_opens_updates_then_closes_one_issue(
    tmp_path: Path, httpserver: HTTPServer, forge: str
) -> None:
    server = IssueForge(httpserver)
    s = step(CI / forge / "infra-apply-drift.yml", "drift", "Open, update or close")
    env = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "ISSUES_URL": server.url, "TOKEN": TOKEN}

    def run(rc: int, report: str) -> None:
        (tmp_path / "drift.md").write_text(report)
        done = run_step(s["run"], tmp_path, {**env, "DRIFT_RC": str(rc)})
        assert done.returncode == 0, done.stderr
        assert TOKEN not in done.stdout + done.stderr

    run(0, f"{MARKER}\nno drift\n")  # nothing open, nothing drifted: nothing to do
    assert len(server.issues) == 61
    run(2, f"{MARKER}\nfirst\n")
    assert server.issues[61] == {
        "number": 62,
        "title": "infra-apply: drift outside Terraform",
        "body": f"{MARKER}\nfirst\n",
        "state": "open",
    }
    run(2, f"{MARKER}\nsecond\n")  # found again past the first page of open issues
    assert len(server.issues) == 62 and server.issues[61]["body"] == f"{MARKER}\nsecond\n"
    run(0, f"{MARKER}\nno drift\n")
    assert server.issues[61]["state"] == "closed" and server.issues[61]["body"] == f"{MARKER}\nno drift\n"
    assert server.auth == {f"token {TOKEN}"}
