"""Where a run's prices come from: ``GET /v2/sizes`` of a local stand-in of the DigitalOcean API
(the documented shape, paginated), and the shipped table when the API fails or in the sandbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from infra_apply.cloud import do_api
from infra_apply.cloud.account import choose
from infra_apply.cloud.pricing import run_prices
from infra_apply.errors import InfraApplyError
from infra_apply.plan.cost import API_SOURCE, TABLE_SOURCE, prices_from_api
from infra_apply.runtime.workcopy import Context

TOKEN = "FAKE-do-token_cost-test-token"
NO_WAIT = do_api.Retry(retries=2, sleep=lambda _seconds: None)

# Priced unlike the shipped table, so a test can tell which one answered.
SIZES: list[dict[str, Any]] = [
    {
        "slug": slug,
        "memory": 1024,
        "vcpus": 1,
        "disk": 25,
        "transfer": 1.0,
        "price_monthly": monthly,
        "price_hourly": hourly,
        "regions": ["nyc3", "fra1"],
        "available": True,
        "description": "Basic",
    }
    for slug, monthly, hourly in (
        ("s-1vcpu-1gb", 7.0, 0.01042),
        ("s-2vcpu-4gb", 28, 0.04167),
        ("s-4vcpu-8gb", 56.0, 0.08333),
        ("gpu-h100x1-80gb", 2378.88, 3.54),
        ("s-legacy", None, None),
    )
]


@pytest.fixture
def api(httpserver: HTTPServer) -> Iterator[HTTPServer]:
    httpserver.no_handler_status_code = 418  # an unexpected call fails at once
    yield httpserver


def serve_sizes(server: HTTPServer, per_page: int, seen: list[int]) -> None:
    """``/v2/sizes`` as DigitalOcean pages it: ``links.pages.next`` names api.digitalocean.com."""

    def handler(request: Request) -> Response:
        assert request.headers.get("Authorization") == f"Bearer {TOKEN}"
        page = int(request.args.get("page", 1))
        seen.append(page)
        chunk = SIZES[(page - 1) * per_page : page * per_page]
        pages = {}
        if page * per_page < len(SIZES):
            pages["next"] = f"https://api.digitalocean.com/v2/sizes?page={page + 1}&per_page={per_page}"
        body = {"sizes": chunk, "links": {"pages": pages}, "meta": {"total": len(SIZES)}}
        return Response(json.dumps(body), content_type="application/json")

    server.expect_request("/v2/sizes").respond_with_handler(handler)


def context(tmp_path: Path, endpoint: str, *, sandbox: bool = False) -> tuple[Context, list[str]]:
    said: list[str] = []
    env = {"DIGITALOCEAN_TOKEN": TOKEN, "DIGITALOCEAN_API_URL": endpoint, "HOME": str(tmp_path)}
    return Context(tmp_path, tmp_path / "generated", choose(sandbox), None, env, said.append), said


def test_prices_from_api_reads_every_page_of_sizes_exactly(api: HTTPServer) -> None:
    pages: list[int] = []
    serve_sizes(api, per_page=2, seen=pages)
    client = do_api.Client(TOKEN, api.url_for("/"), retry=NO_WAIT)
    prices = prices_from_api(client, today=date(2026, 12, 3))
    assert pages == [1, 2, 3]
    assert (prices.source, prices.as_of) == (API_SOURCE, "2026-12-03")
    assert prices.monthly("s-2vcpu-4gb") == Decimal("28")
    assert prices.monthly("gpu-h100x1-80gb") == Decimal("2378.88")
    assert prices.hourly("s-1vcpu-1gb") == Decimal("0.01042")  # exactly, not 0.010419999...
    assert prices.monthly("s-legacy") is None and prices.monthly("nowhere") is None


def test_an_answer_without_sizes_is_an_error_not_an_empty_price_list(api: HTTPServer) -> None:
    api.expect_request("/v2/sizes").respond_with_json({"sizes": [], "links": {}, "meta": {"total": 0}})
    with pytest.raises(InfraApplyError, match="lists no sizes"):
        prices_from_api(do_api.Client(TOKEN, api.url_for("/"), retry=NO_WAIT))


def test_a_live_run_asks_the_account_once(api: HTTPServer, tmp_path: Path) -> None:
    pages: list[int] = []
    serve_sizes(api, per_page=200, seen=pages)
    ctx, said = context(tmp_path, api.url_for("/"))
    prices = run_prices(ctx, ["ct", "mc", "quinn"], retry=NO_WAIT)
    assert prices.source == API_SOURCE and prices.monthly("s-4vcpu-8gb") == Decimal("56")
    assert pages == [1] and said == []


def test_a_failing_api_falls_back_to_the_dated_table_with_one_warning(
    api: HTTPServer, tmp_path: Path
) -> None:
    api.expect_request("/v2/sizes").respond_with_json({"id": "server_error", "message": "boom"}, status=500)
    ctx, said = context(tmp_path, api.url_for("/"))
    prices = run_prices(ctx, ["quinn"], retry=NO_WAIT)
    assert (prices.source, prices.monthly("s-2vcpu-4gb")) == (TABLE_SOURCE, Decimal("24"))
    assert len(api.log) == 3  # the first try and its 2 retries
    assert said == [
        "infra-apply: warning: cost: DigitalOcean API: cost: GET /v2/sizes: HTTP 500 server_error: boom "
        f"(after 2 retries); using {TABLE_SOURCE}"
    ]
    assert TOKEN not in said[0]


def test_an_unreachable_api_falls_back_to_the_dated_table(tmp_path: Path) -> None:
    # Port 9 on loopback (discard): nothing listens there, the connection is refused at once.
    ctx, said = context(tmp_path, "http://127.0.0.1:9")
    prices = run_prices(ctx, ["quinn"], retry=NO_WAIT)
    assert prices.source == TABLE_SOURCE
    [warning] = said
    assert warning.startswith(
        "infra-apply: warning: cost: DigitalOcean API: cost: GET /v2/sizes: cannot reach"
    )
    assert warning.endswith(f"; using {TABLE_SOURCE}")


def test_the_sandbox_never_asks_the_api(api: HTTPServer, tmp_path: Path) -> None:
    ctx, said = context(tmp_path, api.url_for("/"), sandbox=True)
    assert run_prices(ctx, ["quinn"]).source == TABLE_SOURCE
    assert api.log == [] and said == []


def test_the_plan_summaries_disk_table_agrees_with_the_sandbox_catalogue() -> None:
    from infra_apply.plan.prices import DISKS_GB
    from infra_apply.sandbox.catalogue import SIZES

    assert {slug: s.disk_gb for slug, s in SIZES.items() if s.disk_gb is not None} == DISKS_GB
