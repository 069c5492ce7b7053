"""comment: the real CLI against a local HTTP server answering both forges' issue-comment APIs.

The fake forge follows the documented shapes: GitHub pages the list (``per_page`` capped at 100,
``Link`` header), takes ``Authorization: Bearer``, refuses a body over 65,536 characters with 422;
Forgejo (under ``/api/v1``) answers every comment of an issue at once with ``X-Total-Count``,
takes ``Authorization: token``. Both shape their errors as ``{"message": ...}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from infra_apply.errors import InfraApplyError
from infra_apply.forge.comment import COMMENT_LIMIT, Target, compose, marker, resolve_target, units
from infra_apply.report.combine import failed_sentence
from infra_apply.report.json import format_json
from infra_apply.report.markdown import format_markdown
from tests.conftest import cli_env, run_cli
from tests.plan_fixtures import SANDBOX_CONTEXT
from tests.report.test_report_combine import FAILED, forty_creates, reports_of

TOKEN = "FAKE-gh-token_" + "Tk9" * 12  # plainly fake, unique enough to grep for
REPO = "uvlava/infra"
PR = 7
MARK = marker("plan")


class FakeForge:
    def __init__(self, server: HTTPServer, kind: str, *, paged_forgejo: bool = False) -> None:
        self.server, self.kind, self.paged_forgejo = server, kind, paged_forgejo
        self.prefix = "" if kind == "github" else "/api/v1"
        self.comments: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.force: dict[str, tuple[int, dict[str, Any]]] = {}  # method -> forced answer
        self.link_origin: str | None = None  # GitHub behind a proxy: links to another origin
        self.login: str | None = "bot"  # whose the token is; None: GET /user answers 403
        self.poster = "bot"  # who the forge records as writing what the token posts
        self.html_url: str | None = None  # what the forge answers as a new comment's html_url
        self.who_asked = 0
        self._next_id = 9000
        base = re.escape(self.prefix)
        server.expect_request(
            re.compile(rf"^{base}/repos/[^/]+/[^/]+/issues/\d+/comments$")
        ).respond_with_handler(self._issue)
        server.expect_request(
            re.compile(rf"^{base}/repos/[^/]+/[^/]+/issues/comments/\d+$"), method="PATCH"
        ).respond_with_handler(self._edit)
        server.expect_request(f"{self.prefix}/user", method="GET").respond_with_handler(self._user)

    @property
    def api_url(self) -> str:
        return self.server.url_for(self.prefix).rstrip("/")

    def env(self, base: Path, **extra: str) -> dict[str, str]:
        if self.kind == "github":
            ci = {"GITHUB_ACTIONS": "true", "GITHUB_API_URL": self.api_url, "GITHUB_TOKEN": TOKEN}
            ci["GITHUB_REPOSITORY"] = REPO
        else:  # Forgejo Actions sets its own variables and the GITHUB_* ones
            server = self.server.url_for("").rstrip("/")
            ci = {
                "FORGEJO_ACTIONS": "true",
                "FORGEJO_SERVER_URL": server,
                "FORGEJO_REPOSITORY": REPO,
                "FORGEJO_TOKEN": TOKEN,
                "GITHUB_SERVER_URL": server,
                "GITHUB_REPOSITORY": REPO,
            }
        return cli_env(base, **{**ci, **extra})

    def seed(self, n: int, body: str = "looks good") -> None:
        for _ in range(n):
            self._add(body, "reviewer")

    def _add(self, body: str, login: str) -> dict[str, Any]:
        self._next_id += 1
        c = {
            "id": self._next_id,
            "html_url": f"https://forge.example/{REPO}/pulls/{PR}#issuecomment-{self._next_id}",
            "body": body,
            "user": {"login": login},
            "created_at": "2026-11-29T12:00:00Z",
        }
        self.comments.append(c)
        return c

    # --- handlers -------------------------------------------------------------------------

    def _error(self, status: int, message: str) -> Response:
        doc: dict[str, Any] = {"message": message}
        if self.kind == "github":
            doc["documentation_url"] = "https://docs.github.com/rest"
        else:
            doc["url"] = "https://forge.example/api/swagger"
        return Response(json.dumps(doc), status, content_type="application/json")

    def _guard(self, request: Request) -> Response | None:
        self.requests.append((request.method, request.path, dict(request.args)))
        scheme = "Bearer" if self.kind == "github" else "token"
        if request.headers.get("Authorization") != f"{scheme} {TOKEN}":
            return self._error(401, "Bad credentials" if self.kind == "github" else "token is required")
        if f"/repos/{REPO}/" not in request.path:
            return self._error(404, "Not Found")
        if request.method in self.force:
            status, doc = self.force[request.method]
            return Response(json.dumps(doc), status, content_type="application/json")
        return None

    def _user(self, request: Request) -> Response:
        """GET /user: the token's own user. GitHub Actions' own token gets 403 here."""
        self.who_asked += 1
        scheme = "Bearer" if self.kind == "github" else "token"
        if request.headers.get("Authorization") != f"{scheme} {TOKEN}":
            return self._error(401, "Bad credentials" if self.kind == "github" else "token is required")
        if self.login is None:
            return self._error(403, "Resource not accessible by integration")
        return self._json({"id": 1, "login": self.login}, 200)

    def _issue(self, request: Request) -> Response:
        refused = self._guard(request)
        if refused is not None:
            return refused
        if not request.path.endswith(f"/issues/{PR}/comments"):
            return self._error(404, "Not Found")
        if request.method == "POST":
            body = request.get_json()["body"]
            if self._over(body):
                return self._too_long()
            added = self._add(body, self.poster)
            return self._json({**added, "html_url": self.html_url or added["html_url"]}, 201)
        return self._list(request)

    def _list(self, request: Request) -> Response:
        if self.kind == "forgejo" and not self.paged_forgejo:
            headers = {"X-Total-Count": str(len(self.comments))}  # all at once; page/limit ignored
            return self._json(self.comments, 200, headers)
        param, cap, default = ("per_page", 100, 30) if self.kind == "github" else ("limit", 50, 30)
        size = min(int(request.args.get(param, default)), cap)
        page = int(request.args.get("page", 1))
        chunk = self.comments[(page - 1) * size : page * size]
        last = max(1, -(-len(self.comments) // size))
        origin = self.link_origin or self.server.url_for("").rstrip("/")
        links = []
        if page > 1:
            links.append(f'<{origin}{request.path}?{param}={size}&page={page - 1}>; rel="prev"')
            links.append(f'<{origin}{request.path}?{param}={size}&page=1>; rel="first"')
        if page < last:
            links.append(f'<{origin}{request.path}?{param}={size}&page={page + 1}>; rel="next"')
            links.append(f'<{origin}{request.path}?{param}={size}&page={last}>; rel="last"')
        headers = {"Link": ", ".join(links)} if links else {}
        if self.kind == "forgejo":
            headers["X-Total-Count"] = str(len(self.comments))
        return self._json(chunk, 200, headers)

    def _edit(self, request: Request) -> Response:
        refused = self._guard(request)
        if refused is not None:
            return refused
        wanted = int(request.path.rsplit("/", 1)[1])
        found = next((c for c in self.comments if c["id"] == wanted), None)
        if found is None:
            return self._error(404, "Not Found")
        body = request.get_json()["body"]
        if self._over(body):
            return self._too_long()
        found["body"] = body
        return self._json(found, 200)

    def _over(self, body: str) -> bool:
        return self.kind == "github" and len(body) > COMMENT_LIMIT

    def _too_long(self) -> Response:
        doc = {
            "message": "Validation Failed",
            "errors": [
                {
                    "resource": "IssueComment",
                    "code": "custom",
                    "field": "body",
                    "message": "body is too long (maximum is 65536 characters)",
                }
            ],
        }
        return Response(json.dumps(doc), 422, content_type="application/json")

    @staticmethod
    def _json(doc: Any, status: int, headers: dict[str, str] | None = None) -> Response:
        return Response(json.dumps(doc), status, headers=headers, content_type="application/json")

    def methods(self) -> list[str]:
        return [m for m, _, _ in self.requests]


@pytest.fixture(params=["github", "forgejo"])
def forge(request: pytest.FixtureRequest, httpserver: HTTPServer) -> Iterator[FakeForge]:
    yield FakeForge(httpserver, request.param)


def post(tmp_path: Path, forge: FakeForge, text: str, *args: str, **env: str) -> tuple[int, str, str]:
    plan = tmp_path / "plan.md"
    plan.write_text(text, "utf-8")
    r = run_cli("comment", "--pr", str(PR), str(plan), *args, env=forge.env(tmp_path, **env))
    assert "Traceback" not in r.stderr, r.stderr
    assert TOKEN not in r.stdout + r.stderr  # never printed, whatever happened
    return r.returncode, r.stdout, r.stderr


def test_create_then_update_in_place_then_leave_alone(tmp_path: Path, forge: FakeForge) -> None:
    code, out, err = post(tmp_path, forge, "## infra-apply plan\n\nct: 1 to create\n")
    assert code == 0, err
    assert out.startswith(f"created comment 9001 on {REPO}#{PR}")
    [mine] = forge.comments
    assert mine["body"] == f"{MARK}\n## infra-apply plan\n\nct: 1 to create\n"

    code, out, err = post(tmp_path, forge, "## infra-apply plan\n\nct: 2 to create\n")
    assert code == 0, err
    assert out.startswith(f"updated comment 9001 on {REPO}#{PR}")
    assert [c["body"] for c in forge.comments] == [f"{MARK}\n## infra-apply plan\n\nct: 2 to create\n"]

    forge.requests.clear()
    code, out, err = post(tmp_path, forge, "## infra-apply plan\n\nct: 2 to create\n", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["action"] == "unchanged"
    assert "PATCH" not in forge.methods() and len(forge.comments) == 1  # no edit, no notification


def test_finds_its_comment_among_many_pages(tmp_path: Path, forge: FakeForge) -> None:
    forge.seed(131)
    forge._add(f"{MARK}\nold plan\n", "bot")  # ours, 9132, on GitHub's second page of 100
    forge.seed(1, f"> {MARK}\n> quoted by a reviewer: not ours")
    forge.seed(90)  # GitHub: a third page
    code, out, err = post(tmp_path, forge, "new plan\n")
    assert code == 0, err
    assert out.startswith("updated comment 9132")
    assert [c["id"] for c in forge.comments if c["body"].startswith(MARK)] == [9132]
    assert forge.comments[131]["body"] == f"{MARK}\nnew plan\n"
    assert forge.comments[132]["body"].startswith("> ")  # the quote is left alone
    lists = [args for m, _, args in forge.requests if m == "GET"]
    if forge.kind == "github":
        assert lists == [{"per_page": "100", "page": str(p)} for p in (1, 2, 3)]
    else:
        assert len(lists) == 1  # Forgejo answers every comment of the issue at once


def test_forgejo_that_pages_is_followed(tmp_path: Path, httpserver: HTTPServer) -> None:
    forge = FakeForge(httpserver, "forgejo", paged_forgejo=True)
    forge.seed(120)
    forge._add(f"{MARK}\nold\n", "bot")
    code, out, err = post(tmp_path, forge, "new\n")
    assert code == 0, err
    assert out.startswith("updated comment 9121")
    assert [a["page"] for m, _, a in forge.requests if m == "GET"] == ["1", "2", "3"]


def test_a_next_link_to_another_origin_never_gets_the_token(tmp_path: Path, httpserver: HTTPServer) -> None:
    forge = FakeForge(httpserver, "github")
    forge.link_origin = "http://public.example.invalid"  # the forge's public name, not ours
    forge.seed(150)
    forge._add(f"{MARK}\nold\n", "bot")
    code, out, err = post(tmp_path, forge, "new\n")
    assert code == 0, err
    assert out.startswith("updated comment 9151")  # page 2 fetched from the API's own origin


@pytest.mark.parametrize(
    ("var", "value", "status", "says"),
    [
        ("TOKEN", "wrong-token-1234", "401", "rejected the token"),
        ("REPOSITORY", "uvlava/nope", "404", "not found"),
    ],
)
def test_401_and_404_are_one_line(
    tmp_path: Path, forge: FakeForge, var: str, value: str, status: str, says: str
) -> None:
    prefix = "GITHUB_" if forge.kind == "github" else "FORGEJO_"
    code, out, err = post(tmp_path, forge, "plan\n", **{prefix + var: value})
    assert code == 1 and out == ""
    [line] = err.strip().splitlines()
    first = "ask the forge whose token this is" if status == "401" else "list the comments of"
    assert line.startswith(f"infra-apply: error: cannot {first}") and status in line and says in line
    assert "wrong-token-1234" not in err
    assert forge.comments == []


def test_422_is_one_line_with_the_forges_reason(tmp_path: Path, forge: FakeForge) -> None:
    forge.force["POST"] = (422, {"message": "Validation Failed", "errors": [{"message": "body is locked"}]})
    code, _, err = post(tmp_path, forge, "plan\n")
    assert code == 1
    [line] = err.strip().splitlines()
    assert "422 Unprocessable Entity: Validation Failed; body is locked" in line
    assert line.startswith(f"infra-apply: error: cannot comment on {REPO}#{PR}")


def test_an_error_echoing_the_token_does_not_print_it(tmp_path: Path, forge: FakeForge) -> None:
    forge.force["GET"] = (500, {"message": f"internal error for Bearer {TOKEN}"})
    code, _, err = post(tmp_path, forge, "plan\n")  # post() asserts the token is absent
    assert code == 1 and "HTTP 500" in err and "***" in err


def big_plan() -> str:
    """About 100,000 characters of plan-shaped markdown, with details and a code fence open
    wherever the cut falls."""
    lines = ["## infra-apply plan", "", "| producer | create |", "| --- | ---: |", "| ct | 900 |", ""]
    lines += ["<details open>", "<summary><strong>ct</strong>: 900 to create</summary>", "", "```hcl"]
    n = 0
    while sum(len(x) + 1 for x in lines) < 100_000:
        lines.append(
            f'  + digitalocean_droplet.d{n} = {{ name = "com.uvlava.ct.box-{n}", size = "s-1vcpu" }}'
        )
        n += 1
    lines += ["```", "</details>", ""]
    return "\n".join(lines)


def test_a_100000_character_plan_is_cut_with_a_note(tmp_path: Path, forge: FakeForge) -> None:
    text = big_plan()
    assert len(text) >= 100_000
    run = "https://forge.example/uvlava/infra/actions/runs/42"
    code, out, err = post(tmp_path, forge, text, "--details-url", run, "--format", "json")
    assert code == 0, err  # GitHub's fake would have answered 422 to anything over the limit
    doc = json.loads(out)
    assert doc["action"] == "created" and doc["cut"] is True
    [mine] = forge.comments
    body = mine["body"]
    assert len(body.encode("utf-16-le")) // 2 <= COMMENT_LIMIT
    assert body.startswith(MARK + "\n## infra-apply plan")
    kept = body[len(MARK) + 1 : body.index("```\n</details>\n\n---\n")]
    assert text.startswith(kept) and kept.endswith("\n")  # cut at a line end
    assert body.count("```") % 2 == 0 and body.count("<details") == body.count("</details>")
    assert f"the rest is in [the CI run]({run})" in body
    assert "over the comment limit" in err


def test_secrets_in_the_plan_are_masked(tmp_path: Path, forge: FakeForge) -> None:
    secret = "FAKE-do-token_" + "a1" * 20
    code, _, err = post(tmp_path, forge, f"token {secret} and {TOKEN}\n", DIGITALOCEAN_TOKEN=secret)
    assert code == 0, err
    assert forge.comments[0]["body"] == f"{MARK}\ntoken *** and ***\n"


def post_files(tmp_path: Path, forge: FakeForge, files: dict[str, str], *args: str) -> tuple[int, str, str]:
    """``comment`` with several files, as the CI's comment job passes ``plans/*.md``."""
    (tmp_path / "plans").mkdir(exist_ok=True)
    for name, text in files.items():
        (tmp_path / "plans" / name).write_text(text, "utf-8")
    paths = [str(tmp_path / "plans" / name) for name in files]
    r = run_cli("comment", "--pr", str(PR), *args, *paths, env=forge.env(tmp_path))
    assert "Traceback" not in r.stderr, r.stderr
    assert TOKEN not in r.stdout + r.stderr
    return r.returncode, r.stdout, r.stderr


def test_a_matrix_of_plans_is_one_comment_read_as_one_plan(tmp_path: Path, forge: FakeForge) -> None:
    ct, quinn = reports_of("update_size_and_import")
    files = {
        "quinn.md": format_markdown([quinn], SANDBOX_CONTEXT),
        "mc.md": FAILED,  # what the workflow writes for a plan that failed
        "ct.md": format_markdown([ct], SANDBOX_CONTEXT),
    }
    code, out, err = post_files(tmp_path, forge, files, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["action"] == "created" and json.loads(out)["cut"] is False
    [mine] = forge.comments
    both = format_markdown([ct, quinn], SANDBOX_CONTEXT)
    table = "\n<!-- infra-apply:table "
    named = both.replace(table, f"\n{failed_sentence([('mc', '1')])}\n{table}", 1)  # in the header
    assert mine["body"] == f"{MARK}\n" + named + "\n" + FAILED

    code, out, err = post_files(tmp_path, forge, files)  # the next push, the same plans
    assert code == 0, err
    assert out.startswith("unchanged comment 9001") and "PATCH" not in forge.methods()


def test_json_plans_are_one_comment_and_a_single_one_is_rendered(tmp_path: Path, forge: FakeForge) -> None:
    """What the workflows pass between jobs: ``plan --format json`` files, a failed producer's
    JSON note among them; the comment is the one markdown plan of them all."""
    ct, quinn = reports_of("update_size_and_import")
    failed = {"format_version": 1, "failed": [{"producer": "mc", "exit_code": 1}]}
    files = {
        "quinn.json": format_json([quinn], SANDBOX_CONTEXT),
        "mc.json": json.dumps(failed),
        "ct.json": format_json([ct], SANDBOX_CONTEXT),
    }
    code, _, err = post_files(tmp_path, forge, files)
    assert code == 0, err
    both = format_markdown([ct, quinn], SANDBOX_CONTEXT)
    table = "\n<!-- infra-apply:table "
    named = both.replace(table, f"\n{failed_sentence([('mc', '1')])}\n{table}", 1)
    assert [c["body"] for c in forge.comments] == [f"{MARK}\n" + named + "\n" + FAILED]

    code, _, err = post(tmp_path, forge, format_json([ct], SANDBOX_CONTEXT))  # one file: rendered
    assert code == 0, err
    assert forge.comments[0]["body"] == f"{MARK}\n" + format_markdown([ct], SANDBOX_CONTEXT)


def test_a_json_file_that_is_no_plan_is_one_located_line(tmp_path: Path, forge: FakeForge) -> None:
    code, _, err = post_files(tmp_path, forge, {"ct.json": '{"format_version": 1, "producers": []}'})
    assert code == 1 and forge.comments == []
    where = tmp_path / "plans" / "ct.json"
    assert err == f"{where}: error infra-apply: not a plan --format json document: producers is not a dict\n"
    code, _, err = post_files(tmp_path, forge, {"mc.json": '{\n  "format_version": 1,\n  oops'})
    assert code == 1 and err.startswith(f"{where.with_name('mc.json')}:3:3: error infra-apply: not a plan")


def test_a_combined_plan_over_the_limit_is_cut_and_said_so(tmp_path: Path, forge: FakeForge) -> None:
    files = {f"p{i:02}.md": forty_creates(f"p{i:02}") for i in range(12)}
    code, out, err = post_files(tmp_path, forge, files, "--format", "json")
    assert code == 0, err  # GitHub's fake answers 422 to anything over the limit
    assert json.loads(out)["cut"] is True
    assert "the plan combined from 12 files is over the comment limit" in err
    [mine] = forge.comments
    assert units(mine["body"]) <= COMMENT_LIMIT and mine["body"].count("| producer |") == 1
    assert mine["body"].count("<details") == mine["body"].count("</details>")


def test_standard_input_only_once(tmp_path: Path, forge: FakeForge) -> None:
    r = run_cli("comment", "--pr", str(PR), "-", "-", env=forge.env(tmp_path))
    assert r.returncode == 1 and r.stderr == "infra-apply: error: - (standard input) can be given only once\n"
    assert forge.comments == []


def test_redirects_are_not_followed(tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request(re.compile(r"^/repos/.*")).respond_with_response(
        Response("", 301, headers={"Location": httpserver.url_for("/elsewhere")})
    )
    httpserver.expect_request("/elsewhere").respond_with_data("should never be asked", status=200)
    env = cli_env(tmp_path, GITHUB_API_URL=httpserver.url_for("").rstrip("/"), GITHUB_TOKEN=TOKEN)
    (tmp_path / "plan.md").write_text("plan\n")
    r = run_cli("comment", "--pr", "7", "--repo", REPO, str(tmp_path / "plan.md"), env=env)
    assert r.returncode == 1 and "redirect (301)" in r.stderr and TOKEN not in r.stderr
    assert [req.path for req, _ in httpserver.log if req.path == "/elsewhere"] == []


def test_unreachable_forge_and_unreadable_file(tmp_path: Path) -> None:
    env = cli_env(tmp_path, GITHUB_API_URL="http://127.0.0.1:9", GITHUB_TOKEN=TOKEN, GITHUB_REPOSITORY=REPO)
    (tmp_path / "plan.md").write_text("plan\n")
    r = run_cli("comment", "--pr", "7", str(tmp_path / "plan.md"), env=env)
    assert r.returncode == 1 and r.stderr.startswith("infra-apply: error: cannot ask the forge whose token")
    assert "cannot reach http://127.0.0.1:9" in r.stderr
    r = run_cli("comment", "--pr", "7", str(tmp_path / "missing.md"), env=env)
    assert r.returncode == 1 and "cannot read" in r.stderr and "Traceback" not in r.stderr


# --- where to post (no server) ----------------------------------------------------------------


def test_github_actions_variables() -> None:
    t = resolve_target({"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": REPO, "GITHUB_TOKEN": TOKEN})
    assert (t.forge, t.api_url, t.repo, t.token_env) == (
        "github",
        "https://api.github.com",
        REPO,
        "GITHUB_TOKEN",
    )
    assert TOKEN not in repr(t)


def test_forgejo_actions_variables() -> None:
    env = {
        "FORGEJO_ACTIONS": "true",
        "FORGEJO_SERVER_URL": "https://forge.uvlava.example",
        "FORGEJO_REPOSITORY": "quinn/artifacts",
        "FORGEJO_TOKEN": TOKEN,
        "GITHUB_REPOSITORY": "ignored/when-forgejo-says",
    }
    t = resolve_target(env)
    assert (t.forge, t.api_url, t.repo, t.token_env) == (
        "forgejo",
        "https://forge.uvlava.example/api/v1",
        "quinn/artifacts",
        "FORGEJO_TOKEN",
    )


def test_a_runner_setting_only_github_variables_with_a_forgejo_api_is_forgejo() -> None:
    env = {"GITHUB_API_URL": "https://forge.example/api/v1", "GITHUB_REPOSITORY": REPO, "GITHUB_TOKEN": TOKEN}
    assert resolve_target(env).forge == "forgejo"


def test_flags_win_and_the_token_variable_is_named() -> None:
    env = {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": REPO, "MY_PAT": TOKEN}
    t = resolve_target(
        env, forge="forgejo", api_url="https://f.example/api/v1/", repo="a/b", token_env="MY_PAT"
    )
    assert (t.forge, t.api_url, t.repo, t.token_env) == (
        "forgejo",
        "https://f.example/api/v1",
        "a/b",
        "MY_PAT",
    )
    with pytest.raises(InfraApplyError, match=r"no token: set GITHUB_TOKEN"):
        resolve_target({"GITHUB_REPOSITORY": REPO})
    with pytest.raises(InfraApplyError, match="must not carry credentials"):
        resolve_target(env, api_url="https://user:pw@f.example", token_env="MY_PAT")
    with pytest.raises(InfraApplyError, match="is not OWNER/NAME"):
        resolve_target(env, repo="just-a-name", token_env="MY_PAT")


def test_missing_token_is_one_line_from_the_cli(tmp_path: Path) -> None:
    (tmp_path / "plan.md").write_text("plan\n")
    env = cli_env(tmp_path, GITHUB_REPOSITORY=REPO)
    env.pop("GITHUB_TOKEN", None)
    r = run_cli("comment", "--pr", "7", str(tmp_path / "plan.md"), env=env)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "no token" in r.stderr


# --- the body ---------------------------------------------------------------------------------


def test_compose_keeps_a_fitting_body_whole() -> None:
    assert compose("x\n", "plan") == (f"{MARK}\nx\n", False)


def test_compose_counts_utf16_units_and_cuts_at_a_line() -> None:
    line = "🙂" * 99 + "\n"  # 100 characters, 199 UTF-16 units
    body, cut = compose(line * 2000, "plan", limit=10_000)
    assert cut and len(body.encode("utf-16-le")) // 2 <= 10_000
    kept = body[len(MARK) + 1 : body.index("\n---\n")]
    assert kept == line * (len(kept) // len(line))
    # 4,000 characters but 8,000 units: over a 5,000 limit although len() says it fits
    body, cut = compose(line * 40, "plan", limit=5_000)
    assert cut and len(body.encode("utf-16-le")) // 2 <= 5_000


def test_compose_closes_a_tilde_fence_and_nested_details() -> None:
    text = "<details>\n<details>\n~~~~\n" + "x\n" * 5000
    body, cut = compose(text, "plan", limit=2000)
    assert cut and len(body) <= 2000
    assert "x\n~~~~\n</details>\n</details>\n" in body


def test_compose_ends_even_when_the_limit_leaves_no_room() -> None:
    body, cut = compose("x\n" * 100, "plan", limit=50)
    assert cut and body.startswith(MARK) and "**Cut:**" in body


def test_target_repr_hides_the_token() -> None:
    assert TOKEN not in repr(Target("github", "https://api.github.com", REPO, "GITHUB_TOKEN", TOKEN))


# --- only our own comment is edited -----------------------------------------------------------


def test_another_users_marker_comment_is_named_and_left_alone(tmp_path: Path, forge: FakeForge) -> None:
    forge._add(f"{MARK}\nforged plan: all clear\n", "mallory")
    code, out, err = post(tmp_path, forge, "real plan\n")
    assert code == 0, err
    assert out.startswith(f"created comment 9002 on {REPO}#{PR}")
    assert err == "infra-apply: warning: comment 9001 by mallory carries the marker; not ours, left alone\n"
    assert [c["body"] for c in forge.comments] == [
        f"{MARK}\nforged plan: all clear\n",
        f"{MARK}\nreal plan\n",
    ]
    assert "PATCH" not in forge.methods()
    # Our own comment, posted after mallory's, is the one updated from now on.
    code, out, err = post(tmp_path, forge, "plan 2\n", "--format", "json")
    doc = json.loads(out)
    assert (doc["action"], doc["comment_id"], doc["identity"]) == ("updated", 9002, "bot")
    assert doc["left_alone"] == [{"number": 9001, "user": "mallory"}]
    assert forge.comments[0]["body"] == f"{MARK}\nforged plan: all clear\n"


def test_github_actions_own_token_is_the_actions_bot(tmp_path: Path, httpserver: HTTPServer) -> None:
    forge = FakeForge(httpserver, "github")
    forge.login, forge.poster = None, "github-actions[bot]"  # GET /user: 403 for this token
    forge._add(f"{MARK}\nold\n", "github-actions[bot]")
    forge._add(f"{MARK}\nforged\n", "mallory")  # later, but not ours
    code, out, err = post(tmp_path, forge, "new\n")
    assert code == 0, err
    assert out.startswith("updated comment 9001")
    assert [c["body"] for c in forge.comments] == [f"{MARK}\nnew\n", f"{MARK}\nforged\n"]
    assert "comment 9002 by mallory carries the marker; not ours, left alone" in err


def test_when_the_forge_will_not_say_whose_token_it_is_nothing_is_edited(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    forge = FakeForge(httpserver, "forgejo")
    forge.login = None  # GET /user refused: the identity cannot be known
    forge._add(f"{MARK}\nold\n", "bot")
    code, out, err = post(tmp_path, forge, "new\n")
    assert code == 0, err
    assert out.startswith("created comment 9002")
    assert "PATCH" not in forge.methods() and forge.comments[0]["body"] == f"{MARK}\nold\n"
    assert "does not say whose token this is" in err and "comment 9001 by bot" in err


def test_html_url_with_escapes_and_the_token_is_printed_masked_and_visible(
    tmp_path: Path, forge: FakeForge
) -> None:
    forge.html_url = f"https://forge.example/x?t={TOKEN}\x1b]8;;https://evil.example\x07\ncreated comment 1"
    code, out, err = post(tmp_path, forge, "plan\n")
    assert code == 0, err
    [line] = out.splitlines()
    assert line.isprintable() and "t=***\\x1b]8;;https://evil.example\\x07\\ncreated comment 1" in line


def test_a_token_with_a_line_break_is_one_line_naming_its_variable(tmp_path: Path, forge: FakeForge) -> None:
    var = "GITHUB_TOKEN" if forge.kind == "github" else "FORGEJO_TOKEN"
    code, out, err = post(tmp_path, forge, "plan\n", **{var: TOKEN + "\r\n"})
    assert code == 1 and out == ""
    assert (
        err.startswith(f"infra-apply: error: ${var} holds a character no token has") and err.count("\n") == 1
    )
    assert forge.requests == [] and forge.who_asked == 0
