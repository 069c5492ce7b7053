"""A local stand-in of the DigitalOcean API v2 answering what pre-flight asks, in the documented
shapes: ``/v2/account``, ``/v2/databases``, ``/v2/account/keys``, ``/v2/sizes``, ``/v2/regions``,
``/v2/images?type=distribution`` and ``/v2/images/<slug>``, and what exists.py looks up:
``/v2/droplets``, ``/v2/firewalls``, ``/v2/databases/<id>/dbs`` and ``/users``, and a cluster's
trusted sources, ``/v2/databases/<id>/firewall`` (``{"rules": [...]}``); paginated with
``links.pages.next`` and ``meta.total`` like the real API, bearer-checked (401 ``unauthorized``).

``latency`` delays every answer (the bench's 60 ms API); ``together`` names paths whose first
requests must all be in flight at once: each waits for the others, and when they never come
(calls made one after another) answers 418 ``not_concurrent``. Both need a threaded server."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from infra_apply.sandbox import catalogue

TOKEN = "FAKE-do-token_preflight-test-token"


def key_json(key_id: int, name: str) -> dict[str, Any]:
    return {
        "id": key_id,
        "name": name,
        "fingerprint": ":".join(f"{(key_id + i) % 256:02x}" for i in range(16)),
        "public_key": f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{key_id:032d} {name}",
    }


def database_json(name: str) -> dict[str, Any]:
    return {
        "id": f"9cc10173-e9ea-4176-9dbc-a4cee4c4ff{len(name):02d}",
        "name": name,
        "engine": "pg",
        "version": "16",
        "connection": {"host": f"{name}.db.ondigitalocean.com", "port": 25060, "ssl": True},
        "private_connection": {"host": f"private-{name}.db.ondigitalocean.com", "port": 25060},
        "region": "nyc3",
        "private_network_uuid": "5a4981aa-9653-4bd1-bef5-d6bff52042e4",
        "status": "online",
    }


def rule_json(cluster_id: str, rule_type: str, value: str) -> dict[str, Any]:
    """One trusted source as ``GET /v2/databases/$ID/firewall`` lists it."""
    return {
        "uuid": f"79f26d28-ea8a-41f2-8ad8-{abs(hash((rule_type, value))) % 10**12:012d}",
        "cluster_uuid": cluster_id,
        "type": rule_type,
        "value": value,
        "created_at": "2026-11-20T10:00:00Z",
    }


def account_json(status: str) -> dict[str, Any]:
    return {
        "account": {
            "droplet_limit": 25,
            "email": "ops@example.com",
            "uuid": "b6fr89dbf6d9156cace5f3c78dc9851d957381ef",
            "email_verified": True,
            "status": status,
            "status_message": "" if status == "active" else "Your account is locked for review",
        }
    }


@dataclass
class Account:
    """What the stand-in account holds; ``page_size`` forces pagination on every list."""

    clusters: Sequence[str] = ("uvlava-pg",)
    ssh_keys: Sequence[str] = ("ops-2026", "ct-deploy")
    status: str = "active"
    page_size: int | None = None
    token: str | None = TOKEN  # None: any bearer token is taken
    unavailable_regions: frozenset[str] = frozenset()
    distribution_images: frozenset[str] = catalogue.DISTRIBUTION_IMAGES
    pages: list[str] = field(default_factory=list)  # every list page served, "path?page=N"
    droplets: list[dict[str, Any]] = field(default_factory=list)  # GET /v2/droplets objects
    firewalls: list[dict[str, Any]] = field(default_factory=list)
    dbs: dict[str, list[str]] = field(default_factory=dict)  # cluster name -> database names
    users: dict[str, list[str]] = field(default_factory=dict)  # cluster name -> user names
    # cluster name -> its trusted sources, (type, value) each; a cluster not named trusts every
    # address (no rules). By default the example tree's, as its owner's apply leaves them.
    rules: dict[str, list[tuple[str, str]]] = field(
        default_factory=lambda: {"uvlava-pg": [("tag", "db-uvlava-pg"), ("ip_addr", "203.0.113.4/32")]}
    )
    latency: float = 0.0  # seconds before every answer
    together: frozenset[str] = frozenset()  # paths whose first requests must overlap
    requests: list[str] = field(default_factory=list)  # every path asked, in arrival order
    _waiting: dict[str, threading.Barrier] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self, server: HTTPServer) -> None:
        lists = {
            "/v2/databases": ("databases", [database_json(n) for n in self.clusters]),
            "/v2/account/keys": ("ssh_keys", [key_json(41000 + i, n) for i, n in enumerate(self.ssh_keys)]),
            "/v2/sizes": ("sizes", catalogue.sizes()),
            "/v2/regions": (
                "regions",
                [{**r, "available": r["slug"] not in self.unavailable_regions} for r in catalogue.regions()],
            ),
            "/v2/images": (
                "images",
                [i for i in catalogue.images() if i["slug"] in self.distribution_images],
            ),
            "/v2/droplets": ("droplets", self.droplets),
            "/v2/firewalls": ("firewalls", self.firewalls),
        }
        for path, (key, items) in lists.items():
            server.expect_request(path).respond_with_handler(self._lister(path, key, items))
        server.expect_request("/v2/account").respond_with_handler(
            self._guarded(lambda _: _json(account_json(self.status)))
        )
        server.expect_request(re.compile(r"^/v2/images/[^/]+$")).respond_with_handler(
            self._guarded(self._image)
        )
        server.expect_request(re.compile(r"^/v2/databases/[^/]+/(dbs|users|firewall)$")).respond_with_handler(
            self._guarded(self._in_cluster)
        )

    def _in_cluster(self, request: Request) -> Response:
        """``{"dbs": [{"name"}]}`` / ``{"users": [{"name", "role"}]}``: not paginated."""
        _, _, cluster_id, key = request.path.strip("/").split("/")
        name = next((n for n in self.clusters if database_json(n)["id"] == cluster_id), None)
        if name is None:
            return _json(
                {"id": "not_found", "message": "The resource you were accessing could not be found."}, 404
            )
        if key == "firewall":
            return _json({"rules": [rule_json(cluster_id, t, v) for t, v in self.rules.get(name, [])]})
        held = (self.dbs if key == "dbs" else self.users).get(name, [])
        extra = {"role": "normal"} if key == "users" else {}
        return _json({key: [{"name": n, **extra} for n in held]})

    def _together(self, path: str) -> bool:
        """Whether this request met the others named in ``together`` (True when not one of them)."""
        with self._lock:
            first = path in self.together and path not in self.requests
            self.requests.append(path)
            if not first:
                return True
            barrier = self._waiting.setdefault("all", threading.Barrier(len(self.together)))
        try:
            barrier.wait(timeout=10)
        except threading.BrokenBarrierError:
            return False
        return True

    def _guarded(self, handler: Any) -> Any:
        def guarded(request: Request) -> Response:
            if not self._together(request.path):
                return _json({"id": "not_concurrent", "message": f"{request.path} asked alone"}, 418)
            if self.latency:
                time.sleep(self.latency)
            bearer = request.headers.get("Authorization", "")
            if not bearer.startswith("Bearer ") or self.token not in (None, bearer.removeprefix("Bearer ")):
                return _json({"id": "unauthorized", "message": "Unable to authenticate you"}, 401)
            return handler(request)

        return guarded

    def _lister(self, path: str, key: str, items: list[dict[str, Any]]) -> Any:
        def handler(request: Request) -> Response:
            if path == "/v2/images" and request.args.get("type") != "distribution":
                return _json({"id": "bad_request", "message": "pre-flight lists distributions"}, 400)
            per_page = min(int(request.args.get("per_page", 20)), self.page_size or 200)
            page = int(request.args.get("page", 1))
            self.pages.append(f"{path}?page={page}")
            chunk = items[(page - 1) * per_page : page * per_page]
            pages: dict[str, str] = {}
            if page * per_page < len(items):
                pages["next"] = f"https://api.digitalocean.com{path}?page={page + 1}&per_page={per_page}"
            return _json({key: chunk, "links": {"pages": pages}, "meta": {"total": len(items)}})

        return self._guarded(handler)

    def _image(self, request: Request) -> Response:
        slug = request.path.rsplit("/", 1)[1]
        found = next((i for i in catalogue.images() if i["slug"] == slug), None)
        if found is None:
            return _json(
                {"id": "not_found", "message": "The resource you were accessing could not be found."}, 404
            )
        return _json({"image": found})


def _json(doc: Any, status: int = 200) -> Response:
    return Response(json.dumps(doc), status=status, content_type="application/json")
