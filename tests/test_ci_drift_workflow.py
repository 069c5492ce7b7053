"""The scheduled drift workflows (examples/ci/*/infra-apply-drift.yml): their shape, and the
issue step run as the runner runs it (``infra-apply comment --issue``) against a local forge
answering the issues API of both forges in their documented shapes (GitHub pages with
``per_page`` and a ``Link`` header, Forgejo with ``limit`` and ``X-Total-Count``; both list pull
requests among the issues, with ``pull_request`` set, and answer ``GET /user``)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from infra_apply.forge.comment import marker
from infra_apply.plan.drift import DriftReport, Orphan, ProducerDrift
from infra_apply.registry.mesh import HostChange
from infra_apply.report.drift import MARKER, format_json, format_markdown
from tests.test_ci_workflows import BIN, CI, load, run_step, step

TOKEN = "FAKE-gh-token_drift-workflow-test"
# Three runs' reports: none, a stale mesh entry, then also a droplet no state knows.
NO_DRIFT = DriftReport((ProducerDrift("quinn"),))
STALE = HostChange("updated", "mcp", "10.9.0.5", "com.uvlava.quinn.mcp", ("public_ip",))
FIRST = DriftReport((ProducerDrift("quinn", mesh=(STALE,)),))
SECOND = replace(FIRST, orphans=(Orphan("9", "stray", ("managed-by:infra-apply",)),))
BOT = "drift-bot"
MARK = marker("drift")


class IssueForge:
    """Open and closed issues of repository o/r; pull requests are issues too (as on GitHub)."""

    def __init__(self, server: HTTPServer, kind: str) -> None:
        self.kind = kind
        self.prefix = "" if kind == "github" else "/api/v1"
        self.issues: list[dict[str, Any]] = [
            self._issue(n, f"unrelated {n}", "reviewer") for n in range(1, 121)
        ]
        self.issues.append({**self._issue(121, f"{MARK}\n{MARKER} a pull request", BOT), "pull_request": {}})
        # Someone else's issue carrying the marker: never edited, never closed.
        self.issues.append(self._issue(122, f"{MARK}\n{MARKER}\nforged by another user", "mallory"))
        self.auth: set[str] = set()
        base = f"{self.prefix}/repos/o/r/issues"
        server.expect_request(f"{self.prefix}/user").respond_with_handler(self.user)
        server.expect_request(base, method="GET").respond_with_handler(self.list)
        server.expect_request(base, method="POST").respond_with_handler(self.create)
        server.expect_request(re.compile(rf"^{re.escape(base)}/\d+$"), method="PATCH").respond_with_handler(
            self.edit
        )
        self.server = server

    @staticmethod
    def _issue(number: int, body: str, login: str) -> dict[str, Any]:
        return {
            "id": 5000 + number,
            "number": number,
            "title": f"issue {number}",
            "body": body,
            "state": "open",
            "user": {"login": login},
            "html_url": f"https://forge.example/o/r/issues/{number}",
        }

    def env(self, token_var: str) -> dict[str, str]:
        url = self.server.url_for("").rstrip("/")
        if self.kind == "github":
            ci = {"GITHUB_ACTIONS": "true", "GITHUB_API_URL": url, "GITHUB_REPOSITORY": "o/r"}
        else:
            ci = {"FORGEJO_ACTIONS": "true", "FORGEJO_SERVER_URL": url, "FORGEJO_REPOSITORY": "o/r"}
            ci |= {"GITHUB_SERVER_URL": url, "GITHUB_REPOSITORY": "o/r"}
        return {**ci, token_var: TOKEN}

    def user(self, request: Request) -> Response:
        self.auth.add(request.headers.get("Authorization", ""))
        return Response(json.dumps({"id": 7, "login": BOT}), content_type="application/json")

    def list(self, request: Request) -> Response:
        self.auth.add(request.headers.get("Authorization", ""))
        assert request.args["state"] == "open"
        param = "per_page" if self.kind == "github" else "limit"
        page, size = int(request.args["page"]), int(request.args[param])
        open_ = [i for i in self.issues if i["state"] == "open"]
        headers = {"X-Total-Count": str(len(open_))} if self.kind == "forgejo" else {}
        if self.kind == "github" and page * size < len(open_):
            query = urlencode({**request.args, "page": page + 1})  # GitHub's links keep the query
            headers["Link"] = f'<{self.server.url_for(request.path)}?{query}>; rel="next"'
        chunk = open_[(page - 1) * size : page * size]
        return Response(json.dumps(chunk), headers=headers, content_type="application/json")

    def create(self, request: Request) -> Response:
        doc = json.loads(request.data)
        issue = {**self._issue(len(self.issues) + 1, doc["body"], BOT), "title": doc["title"]}
        self.issues.append(issue)
        return Response(json.dumps(issue), status=201, content_type="application/json")

    def edit(self, request: Request) -> Response:
        issue = self.issues[int(request.path.rsplit("/", 1)[1]) - 1]
        issue.update(json.loads(request.data))
        return Response(json.dumps(issue), content_type="application/json")


@pytest.mark.parametrize("forge", ["github", "forgejo"])
def test_drift_workflow_shape(forge: str) -> None:
    doc = load(CI / forge / "infra-apply-drift.yml")
    assert "schedule" in doc[True] and "workflow_dispatch" in doc[True]  # YAML 1.1: `on` is true
    assert doc["permissions"] == {"contents": "read", "issues": "write"}
    [job] = doc["jobs"].values()
    run = step(CI / forge / "infra-apply-drift.yml", "drift", "Refresh-only plans")["run"]
    assert "infra-apply drift --format json > drift.json" in run  # the issue body is its `markdown`
    issue = step(CI / forge / "infra-apply-drift.yml", "drift", "Open, update or close")
    assert "python3" not in issue["run"]  # infra-apply's own client, not an inline script
    assert job["runs-on"] == ("ubuntu-latest" if forge == "github" else "docker")


@pytest.mark.parametrize("forge", ["github", "forgejo"])
def test_the_issue_step_opens_updates_then_closes_only_its_own_issue(
    tmp_path: Path, httpserver: HTTPServer, forge: str
) -> None:
    server = IssueForge(httpserver, forge)
    s = step(CI / forge / "infra-apply-drift.yml", "drift", "Open, update or close")
    token_var = "GITHUB_TOKEN" if forge == "github" else "FORGEJO_TOKEN"
    assert s["env"][token_var] == "${{ secrets.GITHUB_TOKEN }}"
    env = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **server.env(token_var)}
    env["INFRA_APPLY_STATE_DIR"] = str(tmp_path / "state")
    forged = dict(server.issues[121])

    def run(rc: int, report: DriftReport) -> str:
        (tmp_path / "drift.json").write_text(format_json(report))  # as the drift step writes it
        done = run_step(s["run"], tmp_path, {**env, "DRIFT_RC": str(rc)})
        assert done.returncode == 0, done.stderr
        assert TOKEN not in done.stdout + done.stderr
        assert "issue 122 by mallory carries the marker; not ours, left alone" in done.stderr
        return done.stdout

    assert run(0, NO_DRIFT) == "no open issue to close in o/r\n"
    assert len(server.issues) == 122
    run(2, FIRST)
    assert server.issues[122] | {"html_url": ""} == {
        **IssueForge._issue(123, f"{MARK}\n{format_markdown(FIRST)}", BOT),
        "title": "infra-apply: drift outside Terraform",
        "html_url": "",
    }
    out = run(2, SECOND)  # found again past the first page of open issues
    assert out.startswith("updated issue 123 in o/r")
    assert len(server.issues) == 123 and server.issues[122]["body"] == f"{MARK}\n{format_markdown(SECOND)}"
    run(0, NO_DRIFT)
    assert server.issues[122]["state"] == "closed"
    assert server.issues[122]["body"] == f"{MARK}\n{format_markdown(NO_DRIFT)}"
    assert server.issues[121] == forged  # someone else's marker issue: untouched throughout
    scheme = "Bearer" if forge == "github" else "token"
    assert server.auth == {f"{scheme} {TOKEN}"}
