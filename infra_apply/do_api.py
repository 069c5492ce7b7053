"""The few DigitalOcean API calls infra-apply makes itself, through pydo (the official client).

Terraform does everything else; these are the rename action (names are ``ignore_changes``
so renames go live through the API) and the droplet list that ``adopt`` matches against.
Every API failure becomes an InfraApplyError carrying the HTTP status and DigitalOcean's own
message; the token is never part of a message.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pydo
from azure.core.credentials import AccessToken
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import BearerTokenCredentialPolicy

from infra_apply.errors import InfraApplyError

TOKEN_VARS = ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN")
ENDPOINT_VAR = "DIGITALOCEAN_API_URL"
DEFAULT_ENDPOINT = "https://api.digitalocean.com"
PER_PAGE = 200  # the API's maximum: fewest round trips
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


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


class _StaticToken:
    """The token as an azure-core credential (what pydo builds internally for itself)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *_scopes: str, **_kwargs: Any) -> AccessToken:
        return AccessToken(self._token, 0)


class _LoopbackBearerPolicy(BearerTokenCredentialPolicy[Any, Any]):
    """Bearer auth that also works over plain http, installed only for a loopback endpoint.

    azure-core refuses to send a bearer token to a non-https URL; a local stand-in of the
    API (tests, the sandbox) speaks plain http on 127.0.0.1, where that risk does not exist.
    """

    def on_request(self, request: PipelineRequest[Any]) -> None:
        request.context.options["enforce_https"] = False
        super().on_request(request)


def client(token: str | None = None, endpoint: str | None = None) -> Any:
    """A pydo client; token from the argument, else DIGITALOCEAN_TOKEN / _ACCESS_TOKEN."""
    token = token or next((os.environ[v] for v in TOKEN_VARS if os.environ.get(v)), None)
    if not token:
        raise InfraApplyError(
            f"no DigitalOcean API token: set {TOKEN_VARS[0]} (or {TOKEN_VARS[1]})"
        )
    endpoint = endpoint or os.environ.get(ENDPOINT_VAR) or DEFAULT_ENDPOINT
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InfraApplyError(f"{ENDPOINT_VAR} is not an http(s) URL: {endpoint!r}")
    kwargs: dict[str, Any] = {}
    if parts.scheme == "http":
        if parts.hostname not in _LOOPBACK:
            # Sending the token in clear text to another machine is never what anyone wants.
            raise InfraApplyError(
                f"refusing to send the API token over plain http to {parts.hostname}; "
                f"use an https URL in {ENDPOINT_VAR}"
            )
        kwargs["authentication_policy"] = _LoopbackBearerPolicy(
            _StaticToken(token), DEFAULT_ENDPOINT
        )
    return pydo.Client(token=token, endpoint=endpoint.rstrip("/"), **kwargs)


# --------------------------------------------------------------------------- listing


def list_droplets(c: Any) -> list[AccountDroplet]:
    """Every droplet in the account, following ``links.pages.next`` page by page."""
    return [_account_droplet(raw) for raw in _droplet_pages(c)]


def _droplet_pages(c: Any) -> Iterator[Mapping[str, Any]]:
    page = 1
    while True:
        body = _call("list droplets", c.droplets.list, per_page=PER_PAGE, page=page)
        droplets = body.get("droplets")
        if not isinstance(droplets, list):
            raise InfraApplyError("DigitalOcean API: list droplets: response has no 'droplets'")
        yield from droplets
        following = _next_page(body)
        # A next link that does not move forward would loop forever; stop instead.
        if following is None or following <= page:
            return
        page = following


def _next_page(body: Mapping[str, Any]) -> int | None:
    """The page number in ``links.pages.next`` (a full URL on api.digitalocean.com).

    Only the number is used, so a stand-in endpoint keeps receiving the requests.
    """
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


def _account_droplet(raw: object) -> AccountDroplet:
    if not isinstance(raw, Mapping) or "id" not in raw or not isinstance(raw.get("name"), str):
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
    )


def _ipv4(raw: Mapping[str, Any], kind: str) -> str | None:
    networks = (raw.get("networks") or {}).get("v4") or []
    for net in networks:
        if isinstance(net, Mapping) and net.get("type") == kind and net.get("ip_address"):
            return str(net["ip_address"])
    return None


# --------------------------------------------------------------------------- rename


def rename_droplet(
    c: Any,
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
    action = _action(what, _call(what, c.droplet_actions.post, number, body=body, expect=201))
    waited = 0.0
    while True:
        status = action.get("status")
        if status == "completed":
            return
        if status == "errored":
            raise InfraApplyError(f"DigitalOcean API: {what}: action {action.get('id')} errored")
        if waited >= timeout:
            raise InfraApplyError(
                f"DigitalOcean API: {what}: action {action.get('id')} still {status!r} "
                f"after {timeout:g}s"
            )
        sleep(poll_interval)
        waited += poll_interval
        action = _action(what, _call(what, c.actions.get, action["id"]))


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


# --------------------------------------------------------------------------- errors


def _call(
    what: str, method: Callable[..., Any], *args: Any, expect: int = 200, **kwargs: Any
) -> Mapping[str, Any]:
    """Run one pydo operation; turn every failure into an InfraApplyError.

    pydo hands some documented error statuses (404 on actions) back as a normal body
    instead of raising, so the status is captured through ``cls`` and checked here.
    """
    captured: dict[str, int] = {}

    def keep_status(pipeline_response: Any, deserialized: Any, _headers: Any) -> Any:
        captured["status"] = pipeline_response.http_response.status_code
        return deserialized

    try:
        body = method(*args, cls=keep_status, **kwargs)
    except HttpResponseError as e:
        raise InfraApplyError(_http_error(what, e.status_code, _error_body(e))) from None
    except AzureError as e:
        raise InfraApplyError(f"DigitalOcean API: {what}: {e.message}") from None
    status = captured.get("status", expect)
    if status != expect or not isinstance(body, Mapping):
        raise InfraApplyError(_http_error(what, status, body))
    return body


def _error_body(e: HttpResponseError) -> object:
    try:
        return json.loads(e.response.text()) if e.response is not None else None
    except ValueError:
        return None


def _http_error(what: str, status: int | None, body: object) -> str:
    """``DigitalOcean API: <what>: HTTP 404 not_found: The resource ... could not be found.``"""
    text = f"DigitalOcean API: {what}: HTTP {status}"
    if isinstance(body, Mapping):
        if isinstance(body.get("id"), str):
            text += f" {body['id']}"
        if isinstance(body.get("message"), str):
            text += f": {body['message']}"
    return text
