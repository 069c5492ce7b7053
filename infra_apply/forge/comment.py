"""``comment``: post a markdown plan to a pull request, updating infra-apply's one comment.

Both forges answer the same issue-comment API shape under their API root:
``GET/POST {api}/repos/{owner}/{repo}/issues/{n}/comments`` and
``PATCH {api}/repos/{owner}/{repo}/issues/comments/{id}``. They differ in the token scheme
(``Bearer`` / ``token``), the API root (``https://api.github.com``,
``https://forge.example/api/v1``) and paging: GitHub pages the list (``per_page`` up to 100,
``page``, a ``Link`` header); Forgejo answers every comment of the issue at once with an
``X-Total-Count`` header (its ``page``/``limit`` paging is sent anyway, for servers that honour
it, and its ``Link`` header followed when present).

The comment infra-apply owns starts with a hidden marker (``<!-- infra-apply comment: KEY -->``)
and is authored by the identity whose token posts it (``GET /user``; GitHub Actions' own token,
which gets 403 there, is ``github-actions[bot]``): a later run finds it (every page of comments)
and edits it in place. A marker comment by anyone else is never edited, only named; when the
identity cannot be known nothing is edited: a new comment is posted. ``--issue`` does the same
with the one open issue holding the marker (the scheduled drift report), closed with
``--close``. A body over the comment limit is cut at a line boundary, open code fences and
``<details>`` closed, with a note saying where the full plan is: one comment, never rejected.

The token travels only in the Authorization header of requests to the API root's own origin,
through ``infra_apply.cloud.http`` (no redirects, a deadline, a size cap, bounded JSON); pagination
links to another origin are not followed. It is never printed, and it (and the other secrets
infra-apply knows of) is masked in the posted body and in whatever the forge answers.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from infra_apply.cloud.http import Limits, TransportError, error_fields, json_body, send
from infra_apply.cloud.pat import env_token
from infra_apply.errors import InfraApplyError
from infra_apply.untrusted import from_server, mask

Forge = Literal["github", "forgejo"]
FORGES: tuple[Forge, ...] = ("github", "forgejo")
# GitHub refuses bodies over 65,536 characters (422); Forgejo has no documented limit, but the
# same cap keeps one workflow portable between the two.
COMMENT_LIMIT = 65_536
PAGE_SIZE: Mapping[Forge, tuple[str, int]] = {"github": ("per_page", 100), "forgejo": ("limit", 50)}
LIMITS = Limits(timeout=30.0, deadline=120.0, max_pages=500)
# Who GitHub Actions' own GITHUB_TOKEN posts as; GET /user refuses that token (403).
ACTIONS_BOT = "github-actions[bot]"
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


@dataclass(frozen=True)
class Target:
    forge: Forge
    api_url: str  # the API root, no trailing slash
    repo: str  # owner/name
    token_env: str  # where the token came from, for messages
    token: str = field(repr=False)


Action = Literal["created", "updated", "unchanged", "closed", "none"]


@dataclass(frozen=True)
class Foreign:
    """A marker comment (or issue) someone else wrote: named, never edited."""

    number: int
    user: str  # printable


@dataclass(frozen=True)
class Posted:
    action: Action
    comment_id: int  # the comment id, or the issue number (0: nothing to close)
    url: str | None  # printable, secrets masked
    cut: bool  # the body was over the limit and cut
    chars: int  # length of the posted body
    identity: str | None = None  # who the token acts as; None: unknown, so nothing was edited
    foreign: tuple[Foreign, ...] = ()


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: Any


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
    found = env_token(env, names)
    if found is not None:
        return found
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
    limits: Limits = LIMITS,
) -> Posted:
    """Compose the body from ``text`` and post it to pull request ``pr``."""
    body, cut = compose(text, key, secrets=[target.token, *secrets], details=details)
    api = _Api(target, f"{target.repo}#{pr}", limits, secrets)
    me = api.identity()
    found = api.find(api.url(f"issues/{pr}/comments"), {}, marker(key), me)
    mine = found.mine
    if mine is None:
        action: Action = "created"
        comment = api.call(
            "POST", api.url(f"issues/{pr}/comments"), {"body": body}, f"comment on {api.where}"
        )
    elif mine.get("body") == body:
        action, comment = "unchanged", mine  # no edit, no notification
    else:
        what = f"update comment {_id(mine)} on {api.where}"
        action, comment = (
            "updated",
            api.call("PATCH", api.url(f"issues/comments/{_id(mine)}"), {"body": body}, what),
        )
    return Posted(action, _id(comment), api.html(comment), cut, len(body), me, found.foreign)


def publish_issue(
    target: Target,
    title: str,
    text: str,
    key: str,
    *,
    close: bool = False,
    secrets: Sequence[str] = (),
    limits: Limits = LIMITS,
) -> Posted:
    """Keep one open issue holding ``text``: the open issue with ``key``'s marker authored by the
    token's identity is updated (and closed with ``close``), else one is opened (none when
    closing)."""
    body, cut = compose(text, key, secrets=[target.token, *secrets])
    api = _Api(target, target.repo, limits, secrets)
    me = api.identity()
    query = {"state": "open", "type": "issues"}
    found = api.find(api.url("issues"), query, marker(key), me, issues=True)
    mine = found.mine
    if mine is None and close:
        return Posted("none", 0, None, cut, 0, me, found.foreign)
    if mine is None:
        issue = api.call(
            "POST", api.url("issues"), {"title": title, "body": body}, f"open an issue in {api.where}"
        )
        return Posted("created", _number(issue), api.html(issue), cut, len(body), me, found.foreign)
    n = _number(mine)
    if not close and mine.get("body") == body:
        return Posted("unchanged", n, api.html(mine), cut, len(body), me, found.foreign)
    payload = {"body": body, "state": "closed"} if close else {"body": body}
    issue = api.call("PATCH", api.url(f"issues/{n}"), payload, f"update issue {n} in {api.where}")
    return Posted("closed" if close else "updated", n, api.html(issue), cut, len(body), me, found.foreign)


@dataclass(frozen=True)
class _Found:
    mine: dict[str, Any] | None  # the latest marker item by the token's identity
    foreign: tuple[Foreign, ...]  # marker items by anyone else, oldest first


@dataclass
class _Api:
    target: Target
    where: str
    limits: Limits
    secrets: Sequence[str] = ()

    def url(self, path: str) -> str:
        return f"{self.target.api_url}/repos/{self.target.repo}/{path}"

    def html(self, item: Mapping[str, Any]) -> str | None:
        url = item.get("html_url")
        return self.shown(url) if isinstance(url, str) else None

    def shown(self, text: str) -> str:
        return from_server(text, [self.target.token, *self.secrets])

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

    def identity(self) -> str | None:
        """The login the token acts as (``GET /user``); None when the forge will not say."""
        r = self._request("GET", f"{self.target.api_url}/user", None, "ask the forge whose token this is")
        if r.status == 401:
            raise InfraApplyError(self._refusal(r, "ask the forge whose token this is"))
        if 200 <= r.status < 300 and isinstance(r.body, dict) and isinstance(r.body.get("login"), str):
            return str(r.body["login"])
        if r.status == 403 and self.target.forge == "github":
            return ACTIONS_BOT  # an installation token: GitHub Actions' own
        return None

    def find(
        self, base: str, query: Mapping[str, str], mark: str, me: str | None, *, issues: bool = False
    ) -> _Found:
        """The latest item whose body starts with ``mark`` and whose author is ``me``, looking
        through every page; the marker items of other authors are named in ``foreign``."""
        param, size = PAGE_SIZE[self.target.forge]
        url: str | None = self._page(base, query, param, size, 1)
        mine: dict[str, Any] | None = None
        foreign: list[Foreign] = []
        ids: set[Any] = set()
        page = 1
        while url is not None:
            if page > self.limits.max_pages:
                raise InfraApplyError(
                    f"{self.where} has more than {self.limits.max_pages} pages to list; giving up"
                )
            response = self._send(
                "GET", url, None, f"list {'the issues' if issues else 'the comments'} of {self.where}"
            )
            items = (
                [c for c in response.body if isinstance(c, dict)] if isinstance(response.body, list) else []
            )
            fresh = [c for c in items if c.get("id") not in ids]
            for c in fresh:
                ids.add(c.get("id"))
                if issues and c.get("pull_request") is not None:
                    continue
                if not str(c.get("body") or "").startswith(mark):
                    continue
                author = _login(c)
                if me is not None and author == me:
                    mine = c
                else:
                    number = c.get("number") if issues else c.get("id")
                    foreign.append(
                        Foreign(number if isinstance(number, int) else 0, self.shown(author or "?"))
                    )
            page += 1
            # A page with nothing new: a server ignoring ``page`` answered the same list again.
            url = self._next(response, len(ids), base, query, page, param, size, bool(fresh))
        return _Found(mine, tuple(foreign))

    def _page(self, base: str, query: Mapping[str, str], param: str, size: int, page: int) -> str:
        return f"{base}?{urllib.parse.urlencode({**query, param: size, 'page': page})}"

    def _next(
        self,
        r: Response,
        seen: int,
        base: str,
        query: Mapping[str, str],
        page: int,
        param: str,
        size: int,
        fresh: bool,
    ) -> str | None:
        """The next page: the Link header's rel="next" (GitHub sends one whenever there are more
        pages). Without one, a Forgejo list is complete when X-Total-Count says so, or when a
        page brings nothing new."""
        if not fresh:
            return None
        link = _link_next(r.headers.get("link", ""))
        if link is not None:
            return self._own_url(link, base, query, param, size)
        if self.target.forge == "github":
            return None
        total = r.headers.get("x-total-count", "")
        if "link" in r.headers or (total.isdigit() and seen >= int(total)):
            return None
        return self._page(base, query, param, size, page)

    def _own_url(self, link: str, base: str, query: Mapping[str, str], param: str, size: int) -> str:
        """The linked page on the API root's own origin. A forge behind a proxy may link to its
        public address instead; the token is never sent there: the page number is reused."""
        want = urllib.parse.urlsplit(self.target.api_url)
        got = urllib.parse.urlsplit(urllib.parse.urljoin(self.target.api_url + "/", link))
        if (got.scheme, got.netloc) == (want.scheme, want.netloc):
            return got.geturl()
        page = urllib.parse.parse_qs(got.query).get("page", [""])[0]
        if not page.isdigit():
            raise InfraApplyError(f"cannot list the items of {self.where}: unusable next-page link")
        return self._page(base, query, param, size, int(page))

    def call(self, method: str, url: str, payload: Mapping[str, Any], what: str) -> dict[str, Any]:
        body = self._send(method, url, json.dumps(payload).encode(), what).body
        if not isinstance(body, dict):
            raise InfraApplyError(f"cannot {what}: the forge answered something that is not a comment")
        return body

    def _send(self, method: str, url: str, data: bytes | None, what: str) -> Response:
        r = self._request(method, url, data, what)
        if 200 <= r.status < 300:
            return r
        raise InfraApplyError(self._refusal(r, what))

    def _request(self, method: str, url: str, data: bytes | None, what: str) -> Response:
        secrets = [self.target.token, *self.secrets]
        try:
            reply = send(method, url, headers=self.headers(), data=data, limits=self.limits, secrets=secrets)
            body = json_body(reply.body, self.limits)
        except TransportError as exc:
            reason = exc.message
        else:
            return Response(reply.status, reply.headers, body)
        raise InfraApplyError(f"cannot {what}: {_origin(url)}: {reason}")

    def _refusal(self, r: Response, what: str) -> str:
        return mask(_refusal(self.target, self.where, r, what, self.shown), [self.target.token])


def _refusal(target: Target, where: str, r: Response, what: str, shown: Callable[[str], str]) -> str:
    said = shown(error_fields(r.body)[1])
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
            f"cannot {what}: {where} not found at {target.api_url} (404 Not Found"
            f"{tail}); check --repo, --pr and --api-url (a token that cannot see a private repository "
            "also gets 404)"
        )
    if r.status == 422:
        return f"cannot {what}: the forge refused the comment (422 Unprocessable Entity{tail})"
    if 300 <= r.status < 400:
        moved = shown(r.headers.get("location", "?"))
        return (
            f"cannot {what}: the forge answered a redirect ({r.status}) to {moved}; "
            "pass that API root as --api-url"
        )
    return f"cannot {what}: the forge answered HTTP {r.status}{tail}"


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


def _number(issue: Mapping[str, Any]) -> int:
    value = issue.get("number")
    if not isinstance(value, int):
        raise InfraApplyError("the forge answered an issue without a number")
    return value


def _login(item: Mapping[str, Any]) -> str | None:
    user = item.get("user")
    login = user.get("login") if isinstance(user, Mapping) else None
    return login if isinstance(login, str) else None


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"cannot reach {parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
