"""``comment``: post a markdown plan to a pull request, updating infra-apply's one comment.

Both forges answer the same issue-comment API shape under their API root:
``GET/POST {api}/repos/{owner}/{repo}/issues/{n}/comments`` and
``PATCH {api}/repos/{owner}/{repo}/issues/comments/{id}``. They differ in the token scheme
(``Bearer`` / ``token``), the API root (``https://api.github.com``,
``https://forge.example/api/v1``) and paging: GitHub pages the list (``per_page`` up to 100,
``page``, a ``Link`` header); Forgejo answers every comment of the issue at once with an
``X-Total-Count`` header (its ``page``/``limit`` paging is sent anyway, for servers that honour
it, and its ``Link`` header followed when present).

The comment infra-apply owns starts with a hidden marker (``<!-- infra-apply comment: KEY -->``);
a later run finds it (every page of comments) and edits it in place. A body over the comment
limit is cut at a line boundary, open code fences and ``<details>`` closed, with a note saying
where the full plan is: one comment, never rejected.

The token travels only in the Authorization header of requests to the API root's own origin:
redirects are not followed and pagination links to another origin are refused. It is never
printed, and it (and the other secrets infra-apply knows of) is masked in the posted body.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from infra_apply.errors import InfraApplyError

Forge = Literal["github", "forgejo"]
FORGES: tuple[Forge, ...] = ("github", "forgejo")
# GitHub refuses bodies over 65,536 characters (422); Forgejo has no documented limit, but the
# same cap keeps one workflow portable between the two.
COMMENT_LIMIT = 65_536
PAGE_SIZE: Mapping[Forge, tuple[str, int]] = {"github": ("per_page", 100), "forgejo": ("limit", 50)}
MAX_PAGES = 500
TIMEOUT = 30.0
KEY_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# The longest marker line ``compose`` puts above a body (a 64-character key): a text that
# leaves this much room under COMMENT_LIMIT (in UTF-16 units) is posted whole, never cut.
MARKER_ROOM = len("<!-- infra-apply comment:  -->\n") + 64
REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
# Secrets a plan must never carry into a pull request, masked if they appear in the body.
SECRET_ENV = (
    "DIGITALOCEAN_TOKEN",
    "DIGITALOCEAN_ACCESS_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "SPACES_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
MASK = "***"


@dataclass(frozen=True)
class Target:
    forge: Forge
    api_url: str  # the API root, no trailing slash
    repo: str  # owner/name
    token_env: str  # where the token came from, for messages
    token: str = field(repr=False)


@dataclass(frozen=True)
class Posted:
    action: Literal["created", "updated", "unchanged"]
    comment_id: int
    url: str | None
    cut: bool  # the body was over the limit and cut
    chars: int  # length of the posted body


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: Any


Transport = Callable[[str, str, Mapping[str, str], bytes | None], Response]


# --- where to post --------------------------------------------------------------------------


def resolve_target(
    env: Mapping[str, str],
    *,
    forge: str | None = None,
    api_url: str | None = None,
    repo: str | None = None,
    token_env: str | None = None,
) -> Target:
    """The forge, API root, repository and token, from flags first, then the CI variables of
    Forgejo Actions (``FORGEJO_*``, plus the ``GITHUB_*`` it also sets) or GitHub Actions."""
    kind = _forge(env, forge)
    api = (api_url or _default_api(env, kind)).rstrip("/")
    parts = urllib.parse.urlsplit(api)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InfraApplyError(f"--api-url {api!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise InfraApplyError("--api-url must not carry credentials; the token comes from the environment")
    name = (
        repo or (env.get("FORGEJO_REPOSITORY") if kind == "forgejo" else None) or env.get("GITHUB_REPOSITORY")
    )
    if not name:
        raise InfraApplyError("no repository: pass --repo OWNER/NAME or set GITHUB_REPOSITORY")
    if not REPO_RE.match(name):
        raise InfraApplyError(f"--repo {name!r} is not OWNER/NAME")
    var, token = _token(env, kind, token_env)
    return Target(kind, api, name, var, token)


def _forge(env: Mapping[str, str], forge: str | None) -> Forge:
    if forge is not None:
        if forge not in FORGES:
            raise InfraApplyError(f"--forge must be github or forgejo, not {forge!r}")
        return "github" if forge == "github" else "forgejo"
    forgejo_vars = ("FORGEJO_SERVER_URL", "FORGEJO_REPOSITORY", "FORGEJO_TOKEN")
    if env.get("FORGEJO_ACTIONS") == "true" or env.get("GITEA_ACTIONS") == "true":
        return "forgejo"
    if any(env.get(v) for v in forgejo_vars):
        return "forgejo"
    # A Forgejo (or Gitea) runner that only sets GITHUB_*: its API root ends in /api/v1.
    if env.get("GITHUB_API_URL", "").rstrip("/").endswith("/api/v1"):
        return "forgejo"
    return "github"


def _default_api(env: Mapping[str, str], forge: Forge) -> str:
    api = env.get("GITHUB_API_URL", "")
    if forge == "github":
        return api or "https://api.github.com"
    if api.rstrip("/").endswith("/api/v1"):
        return api
    server = env.get("FORGEJO_SERVER_URL") or env.get("GITHUB_SERVER_URL")
    if not server:
        raise InfraApplyError(
            "no Forgejo API URL: pass --api-url https://FORGE/api/v1 or set FORGEJO_SERVER_URL"
        )
    return server.rstrip("/") + "/api/v1"


def _token(env: Mapping[str, str], forge: Forge, token_env: str | None) -> tuple[str, str]:
    if token_env is not None:
        names: Sequence[str] = (token_env,)
    else:
        names = ("FORGEJO_TOKEN", "GITHUB_TOKEN") if forge == "forgejo" else ("GITHUB_TOKEN",)
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return name, value
    raise InfraApplyError(
        f"no token: set {' or '.join(names)} (in a workflow: env: {names[-1]}: "
        "${{ secrets.GITHUB_TOKEN }}), or name another variable with --token-env"
    )


# --- the body -------------------------------------------------------------------------------


def marker(key: str) -> str:
    if not KEY_RE.match(key):
        raise InfraApplyError(f"--key {key!r}: use lowercase letters, digits, '.', '_' or '-'")
    return f"<!-- infra-apply comment: {key} -->"


def compose(
    text: str,
    key: str,
    *,
    secrets: Sequence[str] = (),
    details: str | None = None,
    limit: int = COMMENT_LIMIT,
) -> tuple[str, bool]:
    """The comment body: marker, then ``text`` with secrets masked, cut to ``limit`` (counted
    in UTF-16 code units, the strictest way a forge counts characters). Returns (body, cut)."""
    head = marker(key) + "\n"
    text = mask(text, secrets)
    if units(head + text) <= limit:
        return head + text, False
    note = _cut_note(units(text), details)
    room = limit - units(head) - units(note)
    while True:
        kept = _cut_at_line(text, room)
        body = head + kept + _closers(kept) + note
        if units(body) <= limit or not kept:  # nothing left to cut: the note alone
            return body, True
        room -= units(body) - limit  # the closers did not fit: give them the room


def mask(text: str, secrets: Sequence[str]) -> str:
    # Longest first, so a secret containing another is masked whole.
    for secret in sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def units(text: str) -> int:
    """Length in UTF-16 code units (characters outside the BMP count twice)."""
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def _cut_at_line(text: str, room: int) -> str:
    """The longest prefix of ``text`` within ``room`` units, ending at a line end if it has one."""
    end, used = 0, 0
    for i, c in enumerate(text):
        used += 2 if ord(c) > 0xFFFF else 1
        if used > room:
            break
        end = i + 1
    prefix = text[:end]
    nl = prefix.rfind("\n")
    return prefix[: nl + 1] if nl >= 0 else prefix


FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _closers(kept: str) -> str:
    """What closes the code fence and the ``<details>`` left open at the cut."""
    fence: str | None = None
    for line in kept.splitlines():
        m = FENCE_RE.match(line)
        if m is None:
            continue
        mark = m.group(1)
        if fence is None:
            fence = mark
        elif mark[0] == fence[0] and len(mark) >= len(fence) and not line.strip()[len(mark) :].strip():
            fence = None
    out = "" if kept.endswith("\n") or not kept else "\n"
    if fence is not None:
        out += fence + "\n"
    outside = re.sub(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1", "", kept, flags=re.M | re.S)
    opened = len(re.findall(r"<details\b", outside, re.I)) - len(re.findall(r"</details\s*>", outside, re.I))
    return out + "</details>\n" * max(0, opened)


def _cut_note(total: int, details: str | None) -> str:
    where = f"[the CI run]({details})" if details else "the CI job log and its plan artifact"
    return (
        f"\n---\n> **Cut:** this plan is {total:,} characters, over the forge's "
        f"{COMMENT_LIMIT:,}-character comment limit; the rest is in {where}.\n"
    )


# --- the forge API --------------------------------------------------------------------------


def publish(
    target: Target,
    pr: int,
    text: str,
    key: str = "plan",
    *,
    secrets: Sequence[str] = (),
    details: str | None = None,
    transport: Transport | None = None,
) -> Posted:
    """Compose the body from ``text`` and post it to pull request ``pr``."""
    body, cut = compose(text, key, secrets=[target.token, *secrets], details=details)
    action, comment = post(target, pr, body, key, transport=transport)
    return Posted(action, _id(comment), _html(comment), cut, len(body))


def post(
    target: Target, pr: int, body: str, key: str, *, transport: Transport | None = None
) -> tuple[Literal["created", "updated", "unchanged"], dict[str, Any]]:
    """Create infra-apply's comment on pull request ``pr``, or update the one it posted before."""
    api = _Api(target, pr, transport or urllib_transport)
    mine = api.find(marker(key))
    if mine is None:
        return "created", api.call("POST", api.comments_url(), {"body": body}, f"comment on {api.where}")
    if mine.get("body") == body:
        return "unchanged", mine  # no edit, no notification
    url = f"{target.api_url}/repos/{target.repo}/issues/comments/{_id(mine)}"
    return "updated", api.call("PATCH", url, {"body": body}, f"update comment {_id(mine)} on {api.where}")


@dataclass
class _Api:
    target: Target
    pr: int
    send: Transport

    @property
    def where(self) -> str:
        return f"{self.target.repo}#{self.pr}"

    def comments_url(self) -> str:
        return f"{self.target.api_url}/repos/{self.target.repo}/issues/{self.pr}/comments"

    def headers(self) -> dict[str, str]:
        scheme = "Bearer" if self.target.forge == "github" else "token"
        headers = {
            "Authorization": f"{scheme} {self.target.token}",
            "Accept": "application/vnd.github+json" if self.target.forge == "github" else "application/json",
            "Content-Type": "application/json",
            "User-Agent": "infra-apply",
        }
        if self.target.forge == "github":
            headers["X-GitHub-Api-Version"] = "2022-11-28"
        return headers

    def find(self, mark: str) -> dict[str, Any] | None:
        """The latest comment whose body starts with ``mark``, looking through every page."""
        param, size = PAGE_SIZE[self.target.forge]
        url: str | None = f"{self.comments_url()}?{param}={size}&page=1"
        mine: dict[str, Any] | None = None
        ids: set[Any] = set()
        page = 1
        while url is not None:
            if page > MAX_PAGES:
                raise InfraApplyError(f"{self.where} has more than {MAX_PAGES} pages of comments; giving up")
            response = self._get(url)
            items = (
                [c for c in response.body if isinstance(c, dict)] if isinstance(response.body, list) else []
            )
            fresh = [c for c in items if c.get("id") not in ids]
            for c in fresh:
                ids.add(c.get("id"))
                if str(c.get("body") or "").startswith(mark):
                    mine = c
            page += 1
            # A page with nothing new: a server ignoring ``page`` answered the same list again.
            url = self._next(response, len(ids), page, param, size, bool(fresh))
        return mine

    def _get(self, url: str) -> Response:
        return self._send("GET", url, None, f"list the comments of {self.where}")

    def _next(self, r: Response, seen: int, page: int, param: str, size: int, fresh: bool) -> str | None:
        """The next page: the Link header's rel="next" (GitHub sends one whenever there are more
        pages). Without one, a Forgejo list is complete when X-Total-Count says so, or when a
        page brings nothing new."""
        if not fresh:
            return None
        link = _link_next(r.headers.get("link", ""))
        if link is not None:
            return self._own_url(link, param, size)
        if self.target.forge == "github":
            return None
        total = r.headers.get("x-total-count", "")
        if "link" in r.headers or (total.isdigit() and seen >= int(total)):
            return None
        return f"{self.comments_url()}?{param}={size}&page={page}"

    def _own_url(self, link: str, param: str, size: int) -> str:
        """The linked page on the API root's own origin. A forge behind a proxy may link to its
        public address instead; the token is never sent there: the page number is reused."""
        want = urllib.parse.urlsplit(self.target.api_url)
        got = urllib.parse.urlsplit(urllib.parse.urljoin(self.target.api_url + "/", link))
        if (got.scheme, got.netloc) == (want.scheme, want.netloc):
            return got.geturl()
        page = urllib.parse.parse_qs(got.query).get("page", [""])[0]
        if not page.isdigit():
            raise InfraApplyError(f"cannot list the comments of {self.where}: unusable next-page link")
        return f"{self.comments_url()}?{param}={size}&page={page}"

    def call(self, method: str, url: str, payload: Mapping[str, Any], what: str) -> dict[str, Any]:
        body = self._send(method, url, json.dumps(payload).encode(), what).body
        if not isinstance(body, dict):
            raise InfraApplyError(f"cannot {what}: the forge answered something that is not a comment")
        return body

    def _send(self, method: str, url: str, data: bytes | None, what: str) -> Response:
        try:
            r = self.send(method, url, self.headers(), data)
        except InfraApplyError as exc:
            raise InfraApplyError(mask(f"cannot {what}: {exc.message}", [self.target.token])) from None
        if 200 <= r.status < 300:
            return r
        raise InfraApplyError(mask(_refusal(self.target, self.pr, r, what), [self.target.token]))


def _refusal(target: Target, pr: int, r: Response, what: str) -> str:
    said = _server_message(r.body)
    tail = f": {said}" if said else ""
    if r.status == 401:
        return (
            f"cannot {what}: the forge rejected the token in ${target.token_env} (401 Unauthorized"
            f"{tail}); check it is set for this job and not expired"
        )
    if r.status == 403:
        need = "permissions: pull-requests: write" if target.forge == "github" else "write access to issues"
        return (
            f"cannot {what}: the token in ${target.token_env} may not do that (403 Forbidden{tail}); "
            f"the job needs {need}"
        )
    if r.status == 404:
        return (
            f"cannot {what}: {target.repo} pull request {pr} not found at {target.api_url} (404 Not Found"
            f"{tail}); check --repo, --pr and --api-url (a token that cannot see a private repository "
            "also gets 404)"
        )
    if r.status == 422:
        return f"cannot {what}: the forge refused the comment (422 Unprocessable Entity{tail})"
    if 300 <= r.status < 400:
        moved = r.headers.get("location", "?")
        return (
            f"cannot {what}: the forge answered a redirect ({r.status}) to {moved}; "
            "pass that API root as --api-url"
        )
    return f"cannot {what}: the forge answered HTTP {r.status}{tail}"


def _server_message(body: Any) -> str:
    """The forge's own explanation (both put it in ``message``; GitHub adds ``errors``), one
    line, bounded."""
    if not isinstance(body, dict):
        return ""
    parts = [str(body.get("message") or "")]
    for e in body.get("errors") or []:
        parts.append(str(e.get("message") or e.get("code") or "") if isinstance(e, dict) else str(e))
    text = "; ".join(p for p in parts if p)
    text = " ".join(text.split())
    return text[:300] + ("…" if len(text) > 300 else "")


def _link_next(header: str) -> str | None:
    """The rel="next" target of an RFC 8288 Link header."""
    for part in header.split(","):
        url, _, params = part.partition(";")
        url = url.strip()
        if not (url.startswith("<") and url.endswith(">")):
            continue
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "rel" and "next" in value.strip().strip('"').lower().split():
                return url[1:-1]
    return None


def _id(comment: Mapping[str, Any]) -> int:
    value = comment.get("id")
    if not isinstance(value, int):
        raise InfraApplyError("the forge answered a comment without an id")
    return value


def _html(comment: Mapping[str, Any]) -> str | None:
    url = comment.get("html_url")
    return url if isinstance(url, str) else None


# --- HTTP -----------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """urllib would resend the Authorization header to wherever a redirect points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())


def urllib_transport(method: str, url: str, headers: Mapping[str, str], data: bytes | None) -> Response:
    request = urllib.request.Request(url, data=data, headers=dict(headers), method=method)
    try:
        with _OPENER.open(request, timeout=TIMEOUT) as r:
            return Response(r.status, _lower(r.headers.items()), _json(r.read()))
    except urllib.error.HTTPError as exc:
        with exc:
            return Response(exc.code, _lower(exc.headers.items()), _json(exc.read()))
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InfraApplyError(f"cannot reach {_origin(url)}: {reason}") from None


def _lower(items: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in items:
        key = k.lower()
        out[key] = f"{out[key]}, {v}" if key in out else v
    return out


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
