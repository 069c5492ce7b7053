"""The DigitalOcean API client against a local server answering as the API v2 documents."""

from __future__ import annotations

import json
import socket
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from infra_apply.cloud import do_api
from infra_apply.cloud.do_api import AccountDroplet
from infra_apply.errors import InfraApplyError

TOKEN = "FAKE-do-token_test-secret-token"


@pytest.fixture
def api(httpserver: HTTPServer) -> Iterator[HTTPServer]:
    # An unmatched request must fail fast: the default 500 would be retried with backoff.
    httpserver.no_handler_status_code = 418
    yield httpserver
    httpserver.check_assertions()


@pytest.fixture
def client(api: HTTPServer) -> Any:
    return do_api.client(token=TOKEN, endpoint=api.url_for(""))


def droplet_json(
    id_: int, name: str, *, image_slug: str | None = "ubuntu-24-04-x64", tags: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A droplet object with the fields DigitalOcean documents for GET /v2/droplets."""
    return {
        "id": id_,
        "name": name,
        "memory": 1024,
        "vcpus": 1,
        "disk": 25,
        "locked": False,
        "status": "active",
        "created_at": "2026-01-05T10:00:00Z",
        "features": ["private_networking"],
        "backup_ids": [],
        "snapshot_ids": [],
        "image": {"id": 160000000 + id_, "name": "24.04 (LTS) x64", "slug": image_slug},
        "size": {"slug": "s-1vcpu-1gb", "memory": 1024, "vcpus": 1},
        "size_slug": "s-1vcpu-1gb",
        "networks": {
            "v4": [
                {
                    "ip_address": f"10.116.0.{id_ % 250}",
                    "netmask": "255.255.240.0",
                    "gateway": "10.116.0.1",
                    "type": "private",
                },
                {
                    "ip_address": f"203.0.113.{id_ % 250}",
                    "netmask": "255.255.240.0",
                    "gateway": "203.0.113.1",
                    "type": "public",
                },
            ],
            "v6": [],
        },
        "region": {"name": "New York 3", "slug": "nyc3", "available": True},
        "tags": list(tags),
        "vpc_uuid": "5a4981aa-9653-4bd1-bef5-d6bff52042e4",
    }


def page(droplets: list[dict[str, Any]], total: int, next_page: int | None) -> dict[str, Any]:
    pages: dict[str, str] = {}
    if next_page is not None:
        # DigitalOcean's links point at its own host, never at the endpoint we talk to.
        pages["next"] = f"https://api.digitalocean.com/v2/droplets?page={next_page}&per_page=200"
        pages["last"] = pages["next"]
    return {"droplets": droplets, "links": {"pages": pages}, "meta": {"total": total}}


def action_json(action_id: int, status: str, droplet_id: int = 3164444) -> dict[str, Any]:
    return {
        "action": {
            "id": action_id,
            "status": status,
            "type": "rename",
            "started_at": "2026-01-05T10:00:00Z",
            "completed_at": None if status == "in-progress" else "2026-01-05T10:00:09Z",
            "resource_id": droplet_id,
            "resource_type": "droplet",
            "region_slug": "nyc3",
        }
    }


# --------------------------------------------------------------------------- client


def test_client_reads_token_and_endpoint_from_the_environment(
    api: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DIGITALOCEAN_TOKEN", raising=False)
    monkeypatch.setenv("DIGITALOCEAN_ACCESS_TOKEN", "FAKE-do-token_from-access-token-var")
    monkeypatch.setenv("DIGITALOCEAN_API_URL", api.url_for(""))
    api.expect_request("/v2/droplets").respond_with_json(page([], 0, None))

    assert do_api.list_droplets(do_api.client()) == []

    ((request, _),) = api.log
    assert request.headers["Authorization"] == "Bearer FAKE-do-token_from-access-token-var"


def test_digitalocean_token_wins_over_access_token(api: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", "FAKE-do-token_primary")
    monkeypatch.setenv("DIGITALOCEAN_ACCESS_TOKEN", "FAKE-do-token_secondary")
    api.expect_request("/v2/droplets").respond_with_json(page([], 0, None))

    do_api.list_droplets(do_api.client(endpoint=api.url_for("")))

    assert api.log[0][0].headers["Authorization"] == "Bearer FAKE-do-token_primary"


def test_missing_token_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIGITALOCEAN_TOKEN", raising=False)
    monkeypatch.delenv("DIGITALOCEAN_ACCESS_TOKEN", raising=False)
    with pytest.raises(InfraApplyError, match="DIGITALOCEAN_TOKEN"):
        do_api.client()


def test_plain_http_to_a_remote_host_is_refused_before_any_request() -> None:
    with pytest.raises(InfraApplyError, match="plain http") as excinfo:
        do_api.client(token=TOKEN, endpoint="http://api.example.com")
    assert TOKEN not in str(excinfo.value)


def test_default_endpoint_is_digitalocean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIGITALOCEAN_API_URL", raising=False)
    c = do_api.client(token=TOKEN)
    assert c.endpoint == "https://api.digitalocean.com"


# --------------------------------------------------------------------------- listing


def test_list_droplets_follows_pagination(api: HTTPServer, client: Any) -> None:
    first = [droplet_json(101, "com.uvlava.quinn.artifacts", tags=("quinn", "infra-apply"))]
    second = [droplet_json(102, "com.uvlava.mc.web", image_slug=None)]
    api.expect_ordered_request(
        "/v2/droplets", method="GET", query_string={"per_page": "200", "page": "1"}
    ).respond_with_json(page(first, 2, next_page=2))
    api.expect_ordered_request(
        "/v2/droplets", method="GET", query_string={"per_page": "200", "page": "2"}
    ).respond_with_json(page(second, 2, next_page=None))

    droplets = do_api.list_droplets(client)

    assert droplets == [
        AccountDroplet(
            id="101",
            name="com.uvlava.quinn.artifacts",
            region="nyc3",
            size="s-1vcpu-1gb",
            image="ubuntu-24-04-x64",
            public_ipv4="203.0.113.101",
            private_ipv4="10.116.0.101",
            tags=("quinn", "infra-apply"),
            status="active",
            created_at="2026-01-05T10:00:00Z",
        ),
        AccountDroplet(
            id="102",
            name="com.uvlava.mc.web",
            region="nyc3",
            size="s-1vcpu-1gb",
            image="160000102",  # a snapshot has no slug: its id stands in
            public_ipv4="203.0.113.102",
            private_ipv4="10.116.0.102",
            tags=(),
            status="active",
            created_at="2026-01-05T10:00:00Z",
        ),
    ]
    assert len(api.log) == 2
    for request, _ in api.log:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_a_next_link_that_does_not_advance_stops_the_listing(api: HTTPServer, client: Any) -> None:
    api.expect_request("/v2/droplets").respond_with_json(page([droplet_json(1, "a")], 5, next_page=1))
    assert [d.name for d in do_api.list_droplets(client)] == ["a"]
    assert len(api.log) == 1


def test_a_response_without_droplets_is_an_error(api: HTTPServer, client: Any) -> None:
    api.expect_request("/v2/droplets").respond_with_json({"unexpected": True})
    with pytest.raises(InfraApplyError, match="no 'droplets'"):
        do_api.list_droplets(client)


@pytest.mark.parametrize(
    ("status", "error_id", "message"),
    [
        (401, "Unauthorized", "Unable to authenticate you"),
        (404, "not_found", "The resource you were accessing could not be found."),
        (422, "unprocessable_entity", "Name is invalid"),
    ],
)
def test_api_errors_carry_status_and_message_but_never_the_token(
    api: HTTPServer, client: Any, status: int, error_id: str, message: str
) -> None:
    api.expect_request("/v2/droplets").respond_with_json(
        {"id": error_id, "message": message, "request_id": "4d9d8375-3c56"}, status=status
    )
    with pytest.raises(InfraApplyError) as excinfo:
        do_api.list_droplets(client)
    text = excinfo.value.format()
    assert f"HTTP {status} {error_id}: {message}" in text
    assert TOKEN not in text
    assert excinfo.value.__cause__ is None  # no chained traceback reaches the CLI


def test_unreachable_api_is_an_error_not_a_traceback() -> None:
    # Port 9 (discard) on loopback: nothing listens there in a test environment.
    c = do_api.client(token=TOKEN, endpoint="http://127.0.0.1:9")
    with pytest.raises(InfraApplyError, match="list droplets") as excinfo:
        do_api.list_droplets(c)
    assert TOKEN not in excinfo.value.format()


# --------------------------------------------------------------------------- rename


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def test_rename_posts_the_action_and_polls_until_completed(api: HTTPServer, client: Any) -> None:
    new = "com.uvlava.quinn.artifacts"
    api.expect_ordered_request(
        "/v2/droplets/3164444/actions",
        method="POST",
        json={"type": "rename", "name": new},
    ).respond_with_json(action_json(36804745, "in-progress"), status=201)
    for _ in range(3):
        api.expect_ordered_request("/v2/actions/36804745", method="GET").respond_with_json(
            action_json(36804745, "in-progress")
        )
    api.expect_ordered_request("/v2/actions/36804745", method="GET").respond_with_json(
        action_json(36804745, "completed")
    )
    sleeps = Sleeps()

    do_api.rename_droplet(client, "3164444", new, poll_interval=0.5, sleep=sleeps)

    assert sleeps.calls == [0.5] * 4
    assert [r.method for r, _ in api.log] == ["POST", "GET", "GET", "GET", "GET"]
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r, _ in api.log)


def test_rename_already_completed_does_not_poll(api: HTTPServer, client: Any) -> None:
    api.expect_request("/v2/droplets/7/actions", method="POST").respond_with_json(
        action_json(5, "completed", droplet_id=7), status=201
    )
    sleeps = Sleeps()
    do_api.rename_droplet(client, "7", "web", sleep=sleeps)
    assert sleeps.calls == []


def test_errored_rename_action_is_an_error(api: HTTPServer, client: Any) -> None:
    api.expect_ordered_request("/v2/droplets/7/actions", method="POST").respond_with_json(
        action_json(5, "in-progress", droplet_id=7), status=201
    )
    api.expect_ordered_request("/v2/actions/5").respond_with_json(action_json(5, "errored", droplet_id=7))
    with pytest.raises(InfraApplyError, match=r"rename droplet 7 to 'web'.*errored"):
        do_api.rename_droplet(client, "7", "web", sleep=Sleeps())


def test_rename_times_out_when_the_action_never_finishes(api: HTTPServer, client: Any) -> None:
    api.expect_request("/v2/droplets/7/actions", method="POST").respond_with_json(
        action_json(5, "in-progress", droplet_id=7), status=201
    )
    api.expect_request("/v2/actions/5").respond_with_json(action_json(5, "in-progress", 7))
    sleeps = Sleeps()
    with pytest.raises(InfraApplyError, match="still 'in-progress' after 10s"):
        do_api.rename_droplet(client, "7", "web", poll_interval=2, timeout=10, sleep=sleeps)
    assert sum(sleeps.calls) == 10


def test_rename_of_a_missing_droplet_reports_digitaloceans_message(api: HTTPServer, client: Any) -> None:
    api.expect_request("/v2/droplets/999/actions", method="POST").respond_with_json(
        {"id": "not_found", "message": "The resource you were accessing could not be found."},
        status=404,
    )
    with pytest.raises(InfraApplyError) as excinfo:
        do_api.rename_droplet(client, "999", "web", sleep=Sleeps())
    assert excinfo.value.message == (
        "DigitalOcean API: rename droplet 999 to 'web': HTTP 404 not_found: "
        "The resource you were accessing could not be found."
    )


def test_rename_rejected_name_is_an_error(api: HTTPServer, client: Any) -> None:
    api.expect_request("/v2/droplets/7/actions", method="POST").respond_with_json(
        {"id": "unprocessable_entity", "message": "Name is invalid"}, status=422
    )
    with pytest.raises(InfraApplyError, match="HTTP 422 unprocessable_entity: Name is invalid"):
        do_api.rename_droplet(client, "7", "bad name!", sleep=Sleeps())


def test_rename_rejects_a_non_numeric_droplet_id_without_calling_the_api(
    api: HTTPServer, client: Any
) -> None:
    with pytest.raises(InfraApplyError, match="not a DigitalOcean droplet id"):
        do_api.rename_droplet(client, "droplet-abc", "web", sleep=Sleeps())
    assert api.log == []


def test_server_answers_with_the_request_body_the_client_sends(api: HTTPServer, client: Any) -> None:
    """The rename body is JSON with exactly the documented keys."""
    seen: list[dict[str, Any]] = []

    def handler(request: Request) -> Response:
        seen.append(json.loads(request.get_data()))
        return Response(json.dumps(action_json(1, "completed")), 201, content_type="application/json")

    api.expect_request("/v2/droplets/3/actions", method="POST").respond_with_handler(handler)
    do_api.rename_droplet(client, "3", "com.uvlava.quinn.web", sleep=Sleeps())
    assert seen == [{"type": "rename", "name": "com.uvlava.quinn.web"}]


# --------------------------------------------------------------------------- request, retries


def retrying_client(api: HTTPServer, sleeps: Sleeps, **retry: Any) -> do_api.Client:
    return do_api.client(token=TOKEN, endpoint=api.url_for(""), retry=do_api.Retry(sleep=sleeps, **retry))


RATE_LIMITED = {"id": "too_many_requests", "message": "API Rate limit exceeded."}


def test_rate_limited_request_waits_as_retry_after_asks_then_succeeds(api: HTTPServer) -> None:
    api.expect_ordered_request("/v2/droplets").respond_with_json(
        RATE_LIMITED, status=429, headers={"Retry-After": "7"}
    )
    api.expect_ordered_request("/v2/droplets").respond_with_json(page([droplet_json(1, "a")], 1, None))
    sleeps = Sleeps()

    droplets = do_api.list_droplets(retrying_client(api, sleeps))

    assert [d.name for d in droplets] == ["a"]
    assert sleeps.calls == [7.0]
    assert len(api.log) == 2


def test_retry_after_as_an_http_date_in_the_past_retries_at_once(api: HTTPServer) -> None:
    api.expect_ordered_request("/v2/droplets").respond_with_json(
        RATE_LIMITED, status=429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
    )
    api.expect_ordered_request("/v2/droplets").respond_with_json(page([], 0, None))
    sleeps = Sleeps()
    assert do_api.list_droplets(retrying_client(api, sleeps)) == []
    assert sleeps.calls == [0.0]


def test_rate_limited_rename_post_is_retried(api: HTTPServer) -> None:
    # A 429 means the request was not processed, so even a POST is safe to send again.
    api.expect_ordered_request("/v2/droplets/7/actions", method="POST").respond_with_json(
        RATE_LIMITED, status=429, headers={"Retry-After": "2"}
    )
    api.expect_ordered_request("/v2/droplets/7/actions", method="POST").respond_with_json(
        action_json(5, "completed", droplet_id=7), status=201
    )
    sleeps = Sleeps()
    do_api.rename_droplet(retrying_client(api, sleeps), "7", "web", sleep=Sleeps())
    assert sleeps.calls == [2.0]
    assert [r.method for r, _ in api.log] == ["POST", "POST"]


def test_server_errors_on_a_get_are_retried_with_doubling_waits(api: HTTPServer) -> None:
    api.expect_ordered_request("/v2/droplets").respond_with_data("<html>bad gateway</html>", 502)
    api.expect_ordered_request("/v2/droplets").respond_with_json(
        {"id": "server_error", "message": "Unexpected server-side error"}, status=500
    )
    api.expect_ordered_request("/v2/droplets").respond_with_json(page([droplet_json(1, "a")], 1, None))
    sleeps = Sleeps()
    assert [d.name for d in do_api.list_droplets(retrying_client(api, sleeps))] == ["a"]
    assert sleeps.calls == [1.0, 2.0]


def test_retries_are_bounded_and_the_last_answer_is_reported(api: HTTPServer) -> None:
    api.expect_request("/v2/droplets").respond_with_json(
        {"id": "service_unavailable", "message": "Try again later"}, status=503
    )
    sleeps = Sleeps()
    with pytest.raises(do_api.ApiError) as excinfo:
        do_api.list_droplets(retrying_client(api, sleeps, retries=3))
    assert excinfo.value.message == (
        "DigitalOcean API: list droplets: HTTP 503 service_unavailable: Try again later (after 3 retries)"
    )
    assert excinfo.value.status == 503
    assert sleeps.calls == [1.0, 2.0, 4.0]
    assert len(api.log) == 4


def test_a_retry_after_longer_than_max_wait_is_reported_not_slept(api: HTTPServer) -> None:
    api.expect_request("/v2/droplets").respond_with_json(
        RATE_LIMITED, status=429, headers={"Retry-After": "3600"}
    )
    sleeps = Sleeps()
    with pytest.raises(do_api.ApiError, match=r"HTTP 429 too_many_requests: .*\(Retry-After: 3600s\)$"):
        do_api.list_droplets(retrying_client(api, sleeps, max_wait=60))
    assert sleeps.calls == []
    assert len(api.log) == 1


def test_a_server_error_on_a_post_is_not_retried(api: HTTPServer) -> None:
    # The action may have been created before the server failed: sending it again could act twice.
    api.expect_request("/v2/droplets/7/actions", method="POST").respond_with_json(
        {"id": "server_error", "message": "Unexpected server-side error"}, status=500
    )
    sleeps = Sleeps()
    with pytest.raises(do_api.ApiError, match="HTTP 500 server_error"):
        do_api.rename_droplet(retrying_client(api, sleeps), "7", "web", sleep=Sleeps())
    assert sleeps.calls == []
    assert len(api.log) == 1


# --------------------------------------------------------------------------- the token stays secret


def test_the_token_never_appears_in_an_error_even_when_the_endpoint_echoes_it(
    api: HTTPServer, client: Any
) -> None:
    def echo(request: Request) -> Response:
        body = {"id": "Unauthorized", "message": f"bad token {request.headers['Authorization']}"}
        return Response(json.dumps(body), 401, content_type="application/json")

    api.expect_request("/v2/droplets").respond_with_handler(echo)
    with pytest.raises(do_api.ApiError) as excinfo:
        do_api.list_droplets(client)
    error = excinfo.value
    shown = [
        error.format(),
        str(error),
        repr(error),
        repr(error.api_message),
        "".join(traceback.format_exception(error)),
    ]
    assert all(TOKEN not in text for text in shown)
    assert error.api_message == "bad token Bearer ***"
    assert error.status == 401


def test_a_network_failure_hides_the_request_and_its_token() -> None:
    c = do_api.client(token=TOKEN, endpoint="http://127.0.0.1:9")
    with pytest.raises(do_api.ApiError, match=r"cannot reach 127\.0\.0\.1:9") as excinfo:
        do_api.list_droplets(c)
    # No urllib exception (whose traceback holds the Authorization header) is chained on.
    assert excinfo.value.__context__ is None
    assert TOKEN not in "".join(traceback.format_exception(excinfo.value))


def test_the_client_repr_does_not_show_the_token(client: Any) -> None:
    assert TOKEN not in repr(client)
    assert TOKEN not in repr(do_api.Client(TOKEN))


def test_a_redirect_is_not_followed_with_the_token(api: HTTPServer, client: Any) -> None:
    api.expect_request("/v2/droplets").respond_with_data(
        "", 302, headers={"Location": api.url_for("/collect")}
    )
    with pytest.raises(do_api.ApiError, match="HTTP 302"):
        do_api.list_droplets(client)
    assert [r.path for r, _ in api.log] == ["/v2/droplets"]


def test_a_loopback_endpoint_is_reached_directly_not_through_a_proxy(
    api: HTTPServer, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy from the environment would see the token in clear text on plain http.
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    api.expect_request("/v2/droplets").respond_with_json(page([], 0, None))
    assert do_api.list_droplets(do_api.client(token=TOKEN, endpoint=api.url_for(""))) == []


def test_an_api_that_never_answers_times_out() -> None:
    # The listening socket accepts connections (the kernel's backlog) but never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        c = do_api.Client(TOKEN, f"http://127.0.0.1:{port}", timeout=0.2)
        with pytest.raises(do_api.ApiError, match=r"list droplets: cannot reach .*timed out"):
            do_api.list_droplets(c)


# --------------------------------------------------------------------------- the generic calls


def test_request_sends_query_and_json_body_and_returns_the_object(api: HTTPServer, client: Any) -> None:
    api.expect_request(
        "/v2/account/keys", method="POST", query_string={"x": "1"}, json={"name": "ops"}
    ).respond_with_json({"ssh_key": {"id": 512190, "name": "ops"}}, status=201)
    api.expect_request("/v2/account/keys/512190", method="DELETE").respond_with_data("", 204)

    created = client.request("POST", "/v2/account/keys", query={"x": 1}, body={"name": "ops"})

    assert created["ssh_key"]["id"] == 512190
    assert client.request("DELETE", "/v2/account/keys/512190") == {}
    assert api.log[0][0].headers["Content-Type"] == "application/json"


def test_a_success_that_is_not_a_json_object_is_an_error(api: HTTPServer, client: Any) -> None:
    api.expect_request("/v2/account").respond_with_data("<html>maintenance</html>", 200)
    with pytest.raises(do_api.ApiError, match=r"GET /v2/account: HTTP 200 answer is not a JSON"):
        client.request("GET", "/v2/account")


def test_paginate_follows_next_links_for_any_collection(api: HTTPServer, client: Any) -> None:
    def keys(ids: range, next_page: int | None) -> dict[str, Any]:
        pages = {"next": f"https://api.digitalocean.com/v2/account/keys?page={next_page}"}
        return {
            "ssh_keys": [{"id": i, "name": f"k{i}"} for i in ids],
            "links": {"pages": pages if next_page else {}},
            "meta": {"total": 3},
        }

    api.expect_ordered_request(
        "/v2/account/keys", query_string={"per_page": "200", "page": "1"}
    ).respond_with_json(keys(range(1, 3), 2))
    api.expect_ordered_request(
        "/v2/account/keys", query_string={"per_page": "200", "page": "2"}
    ).respond_with_json(keys(range(3, 4), None))

    assert [k["name"] for k in client.paginate("/v2/account/keys", "ssh_keys")] == ["k1", "k2", "k3"]


def test_paginate_stops_at_meta_total_even_if_a_next_link_remains(api: HTTPServer, client: Any) -> None:
    api.expect_request("/v2/regions").respond_with_json(
        {
            "regions": [{"slug": "nyc3"}],
            "links": {"pages": {"next": "https://api.digitalocean.com/v2/regions?page=2"}},
            "meta": {"total": 1},
        }
    )
    assert [r["slug"] for r in client.paginate("/v2/regions", "regions")] == ["nyc3"]
    assert len(api.log) == 1
