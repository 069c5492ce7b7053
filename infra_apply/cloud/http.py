"""The one HTTP transport of every API infra-apply talks to itself (DigitalOcean, the forges).

Every request is bounded, whatever the server does:

- no redirect is ever followed (``http.client`` follows none): the Authorization header goes
  only where it was sent;
- ``Limits.timeout`` bounds the connect and each wait for bytes, ``Limits.deadline`` the whole
  request, headers and body: a server trickling one byte every few seconds is cut off there;
- ``Limits.max_bytes`` bounds the body: a larger ``Content-Length`` is refused before a byte of
  the body is read, and a body without one (chunked, or until close) stops one byte past it;
- ``json_body`` refuses JSON nested deeper than ``Limits.max_depth`` before decoding it;
- a client listing pages stops at ``Limits.max_pages``;
- a header value with a control or non-ASCII character is refused without being shown.

Every failure is a ``TransportError`` (an ``InfraApplyError``) whose message has each secret
the caller names replaced by ``***`` and is printable on one line. A loopback endpoint (a local
stand-in) is reached directly; any other through the environment's proxy, as urllib would.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import re
import socket
import threading
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from infra_apply.errors import InfraApplyError
from infra_apply.untrusted import from_server

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_CHUNK = 64 * 1024
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")
# A JSON string (escapes included) or one bracket: what nesting depth is counted over.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)


@dataclass(frozen=True)
class Limits:
    """How long and how much one request may take. The defaults fit every documented answer
    of the APIs used (a 200-droplet page is about 1 MB) with a wide margin."""

    timeout: float = 30.0  # connecting, and each wait for the next bytes
    deadline: float = 120.0  # the whole request: sending it, the headers and the body
    max_bytes: int = 32 * 1024 * 1024
    max_depth: int = 64  # JSON nesting; the APIs answer at most about 6 deep
    # Pages of one listing: 100 pages of 200 DigitalOcean objects is far past any account; a
    # next-page link that never ends stops here.
    max_pages: int = 100


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # lower-case names; a repeated header's values joined by ", "
    body: bytes


class TransportError(InfraApplyError):
    """No usable answer: unreachable, too slow, too large, or not JSON."""


def send(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    data: bytes | None = None,
    limits: Limits = Limits(),
    secrets: Sequence[str] = (),
) -> Reply:
    """One request and its answer, whatever its status (a redirect is an answer like any
    other). Raises ``TransportError`` with the reason, every one of ``secrets`` masked."""
    for name, value in headers.items():
        if not _HEADER_VALUE.fullmatch(value):
            # The value is likely a token: never shown, not even in part.
            raise TransportError(f"the {name} header holds a control or non-ASCII character; not sent")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TransportError(f"not an http(s) URL: {from_server(url, secrets)}")
    conn, target, via = _connection(parts, url, min(limits.timeout, limits.deadline))
    expired = threading.Event()
    watchdog = threading.Timer(limits.deadline, _abort, (conn, expired))
    watchdog.daemon = True
    watchdog.start()
    reason = ""
    try:
        conn.request(method, target, body=data, headers={**headers, **via})
        response = conn.getresponse()
        body = _read(response, limits, expired)
        return Reply(response.status, _lower(response.getheaders()), body)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
    finally:
        watchdog.cancel()
        conn.close()
    if expired.is_set():
        reason = f"no complete answer within {limits.deadline:g}s"
    # Raised outside the handler: no exception holding the request hangs on as __context__.
    raise TransportError(from_server(reason, secrets))


def json_body(body: bytes, limits: Limits = Limits()) -> Any:
    """The decoded JSON of ``body``; None when it is empty or not JSON. JSON nested deeper than
    ``limits.max_depth`` raises ``TransportError`` (the decoder would recurse that deep)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.strip():
        return None
    depth = 0
    for m in _JSON_TOKEN.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > limits.max_depth:
                raise TransportError(f"the answer is JSON nested more than {limits.max_depth} deep")
        elif c in "]}":
            depth -= 1
    try:
        return json.loads(text)
    except ValueError:
        return None


def error_fields(body: Any) -> tuple[str | None, str]:
    """What an API's error answer (decoded) says: its ``id`` (DigitalOcean's error slug) and its
    ``message`` (DigitalOcean, GitHub and Forgejo all use it), with GitHub's ``errors`` list
    after it, on one line; ``(None, "")`` when the answer is no such object."""
    if not isinstance(body, dict):
        return None, ""
    error_id = body.get("id")
    message = body.get("message")
    parts = [message if isinstance(message, str) else ""]
    for e in body.get("errors") or []:
        parts.append(str(e.get("message") or e.get("code") or "") if isinstance(e, dict) else str(e))
    said = " ".join("; ".join(p for p in parts if p).split())
    return (error_id if isinstance(error_id, str) else None), said


def _connection(
    parts: Any, url: str, timeout: float
) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
    """The connection to open, the request target and the proxy's own headers: direct for
    loopback, else through the environment's proxy (an https URL tunnels with CONNECT, so the
    proxy never sees the request or its Authorization header)."""
    host: str = parts.hostname
    port: int = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    proxy = None
    if host not in LOOPBACK and not urllib.request.proxy_bypass(host):
        proxy = urllib.request.getproxies().get(parts.scheme)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    if proxy is None:
        return cls(host, port, timeout=timeout), path, {}
    p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    auth: dict[str, str] = {}
    if p.username is not None:
        user = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
        auth["Proxy-Authorization"] = "Basic " + base64.b64encode(user).decode("ascii")
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(p.hostname or "", p.port or 80, timeout=timeout)
        conn.set_tunnel(host, port, headers=auth)
        return conn, path, {}
    return http.client.HTTPConnection(p.hostname or "", p.port or 80, timeout=timeout), url, auth


def _abort(conn: http.client.HTTPConnection, expired: threading.Event) -> None:
    """The deadline passed: wake whatever read is waiting on the socket, so it fails now."""
    expired.set()
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)


def _read(response: http.client.HTTPResponse, limits: Limits, expired: threading.Event) -> bytes:
    length = (response.getheader("content-length") or "").strip()
    if length.isdigit() and int(length) > limits.max_bytes:
        raise TransportError(
            f"the answer is {int(length):,} bytes long, over the {limits.max_bytes:,}-byte limit"
        )
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = response.read(min(_CHUNK, limits.max_bytes + 1 - size))
        if expired.is_set():
            raise OSError("deadline")  # the socket was shut down under the read
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limits.max_bytes:
            raise TransportError(f"the answer is over the {limits.max_bytes:,}-byte limit")
        chunks.append(chunk)


def _lower(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in items:
        key = k.lower()
        out[key] = f"{out[key]}, {v}" if key in out else v
    return out
