"""The few DigitalOcean API calls infra-apply makes itself, on the standard library.

Terraform does everything else; these are the rename action (names are ``ignore_changes``
so renames go live through the API) and the droplet list that ``adopt`` matches against.
A small client on ``urllib.request`` replaces pydo, which installs about 112 MB (the Azure
SDK stack) and imports in 0.14 s for these few documented calls (docs/development.md,
"Dependencies and install size"). ``Client.request`` and ``Client.paginate`` make a new call a one-liner:

    account = c.request("GET", "/v2/account")["account"]
    keys = list(c.paginate("/v2/account/keys", "ssh_keys"))

Every API failure becomes an ``ApiError`` (an InfraApplyError) carrying the HTTP status and
DigitalOcean's own ``id`` and ``message``; the token is never part of a message, and what the
server said is shown masked and printable. Requests go through ``infra_apply.cloud.http`` (no
redirects, a deadline, a size cap, bounded JSON); a listing stops at ``limits.max_pages``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from infra_apply import __version__
from infra_apply.cloud.http import LOOPBACK, Limits, Reply, TransportError, error_fields, json_body, send
from infra_apply.cloud.pat import TOKEN_VARS, do_token
from infra_apply.errors import InfraApplyError
from infra_apply.untrusted import from_server

ENDPOINT_VAR = "DIGITALOCEAN_API_URL"
DEFAULT_ENDPOINT = "https://api.digitalocean.com"
PER_PAGE = 200  # the API's maximum: fewest round trips
# Only these may be sent twice after a server error: a repeated POST could act twice.
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})

JsonObject = dict[str, Any]
Query = Mapping[str, str | int]


class ApiError(InfraApplyError):
    """A DigitalOcean API call failed.

    ``status`` is the HTTP status (None when no answer came), ``error_id`` and ``api_message``
    DigitalOcean's ``{"id": ..., "message": ...}`` error body when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_id: str | None = None,
        api_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.api_message = api_message


@dataclass(frozen=True)
class Retry:
    """How often and how long to retry a rate-limited (429) or failed (5xx) request.

    ``Retry-After`` is honoured when it asks for at most ``max_wait`` seconds; a longer wait is
    reported instead of slept through. Without it the wait doubles from ``backoff``.
    ``sleep`` is injectable so tests never really wait.
    """

    retries: int = 4
    backoff: float = 1.0
    max_wait: float = 60.0
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True)
class AccountDroplet:
    """A droplet as the account lists it (the subset adopt and rename need)."""

    id: str
    name: str
    region: str
    size: str
    image: str  # slug, or the image id as a string for snapshots and custom images
    public_ipv4: str | None
    private_ipv4: str | None
    tags: tuple[str, ...]
    status: str = ""  # new, active, off, archive
    created_at: str = ""  # ISO 8601, UTC, as DigitalOcean stamps it


class Client:
    """An authenticated DigitalOcean API v2 client. Its repr never shows the token."""

    def __init__(
        self,
        token: str,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        timeout: float = 60.0,
        retry: Retry | None = None,
        limits: Limits | None = None,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InfraApplyError(f"{ENDPOINT_VAR} is not an http(s) URL: {endpoint!r}")
        loopback = parts.hostname in LOOPBACK
        if parts.scheme == "http" and not loopback:
            # Sending the token in clear text to another machine is never what anyone wants.
            raise InfraApplyError(
                f"refusing to send the API token over plain http to {parts.hostname}; "
                f"use an https URL in {ENDPOINT_VAR}"
            )
        self.endpoint = endpoint.rstrip("/")
        self.limits = limits or Limits(timeout=timeout)
        self.retry = retry or Retry()
        self._token = token

    def __repr__(self) -> str:
        return f"Client(endpoint={self.endpoint!r})"

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        body: object = None,
        what: str | None = None,
    ) -> JsonObject:
        """One API call: the decoded JSON object of a 2xx answer (``{}`` for an empty one).

        Retries 429 (any method: the request was not processed) and 5xx (idempotent methods
        only) as ``self.retry`` allows. ``what`` names the call in error messages.
        """
        what = what or f"{method} {path}"
        url = self.endpoint + path + (f"?{urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode("utf-8")
        attempt = 0
        while True:
            reply = self._send(method, url, data, what)
            if 200 <= reply.status < 300:
                return self._decode(what, reply)
            delay = self._retry_delay(method, reply, attempt)
            if delay is None:
                raise self._http_error(what, reply, attempt)
            self.retry.sleep(delay)
            attempt += 1

    def paginate(
        self, path: str, key: str, *, query: Query | None = None, what: str | None = None
    ) -> Iterator[JsonObject]:
        """Every object of ``key`` over all pages, following ``links.pages.next``.

        Only the page number of the next link is used (the link names api.digitalocean.com),
        so a stand-in endpoint keeps receiving the requests. Stops when the link is missing or
        does not move forward (which would loop forever), or ``meta.total`` objects were seen.
        """
        what = what or f"GET {path}"
        page, seen = 1, 0
        for _ in range(self.limits.max_pages):
            body = self.request(
                "GET", path, query={**(query or {}), "per_page": PER_PAGE, "page": page}, what=what
            )
            items = body.get(key)
            if items is None and key in body:
                items = []  # some lists answer null rather than [] when there is nothing
            if not isinstance(items, list):
                raise self._error(f"DigitalOcean API: {what}: response has no {key!r}")
            for item in items:
                if not isinstance(item, dict):
                    raise self._error(f"DigitalOcean API: {what}: an entry of {key!r} is not an object")
                yield item
            seen += len(items)
            following = _next_page(body)
            if following is None or following <= page or _reached_total(body, seen):
                return
            page = following
        raise self._error(f"DigitalOcean API: {what}: more than {self.limits.max_pages} pages; giving up")

    # ----------------------------------------------------------------------- transport

    def _send(self, method: str, url: str, data: bytes | None, what: str) -> Reply:
        headers = {
            "Accept": "application/json",
            "User-Agent": f"infra-apply/{__version__}",
            "Authorization": f"Bearer {self._token}",
        }
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            return send(method, url, headers=headers, data=data, limits=self.limits, secrets=[self._token])
        except TransportError as exc:
            reason = exc.message
        host = urlsplit(self.endpoint).netloc
        raise self._error(f"DigitalOcean API: {what}: cannot reach {host}: {reason}")

    def _retry_delay(self, method: str, reply: Reply, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or None to give up now."""
        retryable = reply.status == 429 or (reply.status >= 500 and method in _IDEMPOTENT)
        if not retryable or attempt >= self.retry.retries:
            return None
        asked = _retry_after(reply.headers.get("retry-after"))
        if asked is None:
            return min(self.retry.backoff * 2.0**attempt, self.retry.max_wait)
        return asked if asked <= self.retry.max_wait else None

    def _decode(self, what: str, reply: Reply) -> JsonObject:
        if not reply.body.strip():
            return {}
        body = self._json(what, reply)
        if not isinstance(body, dict):
            raise self._error(
                f"DigitalOcean API: {what}: HTTP {reply.status} answer is not a JSON object",
                status=reply.status,
            )
        return body

    def _json(self, what: str, reply: Reply) -> Any:
        try:
            return json_body(reply.body, self.limits)
        except TransportError as exc:
            raise self._error(f"DigitalOcean API: {what}: HTTP {reply.status}: {exc.message}") from None

    def _http_error(self, what: str, reply: Reply, retries: int) -> ApiError:
        """``DigitalOcean API: <what>: HTTP 404 not_found: The resource ... could not be found.``"""
        error_id, said = error_fields(self._json(what, reply))
        message = said or None
        text = f"DigitalOcean API: {what}: HTTP {reply.status}"
        if error_id:
            text += f" {error_id}"
        if message:
            text += f": {message}"
        if retries:
            text += f" (after {retries} retr{'y' if retries == 1 else 'ies'})"
        elif reply.status == 429 and reply.headers.get("retry-after"):
            text += f" (Retry-After: {reply.headers['retry-after']}s)"
        return self._error(text, status=reply.status, error_id=error_id, api_message=message)

    def _error(
        self,
        text: str,
        *,
        status: int | None = None,
        error_id: str | None = None,
        api_message: str | None = None,
    ) -> ApiError:
        """An ApiError with the token blanked out of its text, whatever an endpoint echoed, and
        what the server said made printable on one line."""
        return ApiError(
            self.shown(text),
            status=status,
            error_id=error_id and self.shown(error_id),
            api_message=api_message and self.shown(api_message),
        )

    def shown(self, text: str) -> str:
        """A text from the API fit to print: the token masked, control characters visible."""
        return from_server(text, [self._token], limit=1000)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime  # only for a Retry-After date: email is costly

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _next_page(body: Mapping[str, Any]) -> int | None:
    """The page number in ``links.pages.next`` (a full URL on api.digitalocean.com)."""
    links = body.get("links") or {}
    pages = links.get("pages") if isinstance(links, Mapping) else None
    url = pages.get("next") if isinstance(pages, Mapping) else None
    if not isinstance(url, str):
        return None
    values = parse_qs(urlsplit(url).query).get("page", [])
    try:
        return int(values[0])
    except (IndexError, ValueError):
        return None


def _reached_total(body: Mapping[str, Any], seen: int) -> bool:
    meta = body.get("meta")
    total = meta.get("total") if isinstance(meta, Mapping) else None
    return isinstance(total, int) and seen >= total


def client(token: str | None = None, endpoint: str | None = None, *, retry: Retry | None = None) -> Client:
    """A client; token from the argument, else DIGITALOCEAN_TOKEN / _ACCESS_TOKEN, endpoint
    from the argument, else DIGITALOCEAN_API_URL, else DigitalOcean's."""
    token = token or do_token(os.environ)
    if not token:
        raise InfraApplyError(f"no DigitalOcean API token: set {TOKEN_VARS[0]} (or {TOKEN_VARS[1]})")
    endpoint = endpoint or os.environ.get(ENDPOINT_VAR) or DEFAULT_ENDPOINT
    return Client(token, endpoint, retry=retry)


# --------------------------------------------------------------------------- listing


def list_droplets(c: Client) -> list[AccountDroplet]:
    """Every droplet in the account, page by page."""
    return [account_droplet(raw) for raw in c.paginate("/v2/droplets", "droplets", what="list droplets")]


def account_droplet(raw: Mapping[str, Any]) -> AccountDroplet:
    """A droplet object of ``GET /v2/droplets``."""
    if "id" not in raw or not isinstance(raw.get("name"), str):
        raise InfraApplyError("DigitalOcean API: list droplets: a droplet has no id or name")
    region = raw.get("region") or {}
    image = raw.get("image") or {}
    size = raw.get("size_slug") or (raw.get("size") or {}).get("slug") or ""
    return AccountDroplet(
        id=str(raw["id"]),
        name=raw["name"],
        region=str(region.get("slug") or ""),
        size=str(size),
        image=str(image.get("slug") or image.get("id") or ""),
        public_ipv4=_ipv4(raw, "public"),
        private_ipv4=_ipv4(raw, "private"),
        tags=tuple(str(t) for t in raw.get("tags") or ()),
        status=str(raw.get("status") or ""),
        created_at=str(raw.get("created_at") or ""),
    )


def _ipv4(raw: Mapping[str, Any], kind: str) -> str | None:
    networks = (raw.get("networks") or {}).get("v4") or []
    for net in networks:
        if isinstance(net, Mapping) and net.get("type") == kind and net.get("ip_address"):
            return str(net["ip_address"])
    return None


# --------------------------------------------------------------------------- rename


def rename_droplet(
    c: Client,
    droplet_id: str,
    new_name: str,
    *,
    poll_interval: float = 2.0,
    timeout: float = 300,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Rename a droplet with the rename action and wait until DigitalOcean completes it.

    ``timeout`` bounds the time spent waiting between polls, so an injected ``sleep``
    makes the whole wait deterministic.
    """
    number = _droplet_number(droplet_id)
    what = f"rename droplet {droplet_id} to {new_name!r}"
    body = {"type": "rename", "name": new_name}
    action = _action(what, c.request("POST", f"/v2/droplets/{number}/actions", body=body, what=what))
    waited = 0.0
    while True:
        status = action.get("status")
        if status == "completed":
            return
        if status == "errored":
            raise InfraApplyError(f"DigitalOcean API: {what}: action {action.get('id')} errored")
        if waited >= timeout:
            raise InfraApplyError(
                f"DigitalOcean API: {what}: action {action.get('id')} still {c.shown(repr(status))} "
                f"after {timeout:g}s"
            )
        sleep(poll_interval)
        waited += poll_interval
        action = _action(what, c.request("GET", f"/v2/actions/{action['id']}", what=what))


def _droplet_number(droplet_id: str) -> int:
    try:
        number = int(droplet_id)
    except ValueError:
        number = 0
    if number < 1:
        raise InfraApplyError(f"droplet id {droplet_id!r} is not a DigitalOcean droplet id")
    return number


def _action(what: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
    action = body.get("action")
    if not isinstance(action, Mapping) or not isinstance(action.get("id"), int):
        raise InfraApplyError(f"DigitalOcean API: {what}: response has no action")
    return action
