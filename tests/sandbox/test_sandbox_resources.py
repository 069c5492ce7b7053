"""The sandbox provider's CRUD skeleton (infra_apply/sandbox/resources.py), called the way tf's
servicer calls it, against a real cloud file. tests/sandbox/test_sandbox.py drives the same code through
the real terraform binary; this covers the paths Terraform rarely takes (objects gone behind its
back, bad import ids, an unconfigured cloud) for every resource type at once."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from tf.types import Unknown
from tf.utils import Diagnostics

from infra_apply.sandbox import cloud
from infra_apply.sandbox.resources import (
    DATA_SOURCES,
    RESOURCES,
    CloudResource,
    DatabaseDB,
    DatabaseFirewall,
    DatabaseUser,
    Droplet,
    Firewall,
    MonitorAlert,
    UptimeAlert,
    UptimeCheck,
)

CLUSTER = "uvlava-pg"


class Ctx(NamedTuple):
    """What tf hands a resource method: the diagnostics to report into."""

    diagnostics: Any


class Case(NamedTuple):
    kind: type[CloudResource]
    config: Callable[[str], dict[str, Any]]  # cluster id -> configuration
    import_id: Callable[[dict[str, Any]], str]  # created state -> the id `terraform import` takes
    change: dict[str, Any]  # an in-place change (empty: every argument is ForceNew)


RULE = {"protocol": "tcp", "port_range": "22", "source_addresses": ["0.0.0.0/0"]}
UPTIME_ALERT_ID_FORMAT = "must use the IDs of the check and alert joined with a comma (e.g. `id1,id2`)"
ROUTES = [
    {"email": ["ops@example.net"], "slack": [{"channel": "#ops", "url": "https://hooks.slack.invalid/x"}]}
]


def _alert_on_a_new_check(_: str) -> dict[str, Any]:
    """An uptime alert's configuration, on a check made in the cloud the test configured."""
    with cloud.transaction(os.environ[cloud.ENV_VAR]) as c:
        check = cloud.add_uptime_check(c, {"name": "a.example.net", "type": "https", "target": "https://a"})
    return {"check_id": check["id"], "name": "down", "type": "down", "period": "2m", "notifications": ROUTES}


CASES = {
    "droplet": Case(
        Droplet,
        lambda _: {"name": "web", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64", "region": "nyc3"},
        lambda state: str(state["id"]),
        {"name": "web2", "tags": ["quinn"]},
    ),
    "firewall": Case(
        Firewall,
        lambda _: {"name": "fw", "tags": ["quinn"], "inbound_rule": [RULE]},
        lambda state: str(state["id"]),
        {"name": "fw2"},
    ),
    "database_db": Case(
        DatabaseDB,
        lambda cluster: {"cluster_id": cluster, "name": "app"},
        lambda state: f"{state['cluster_id']},{state['name']}",
        {},
    ),
    "database_user": Case(
        DatabaseUser,
        lambda cluster: {"cluster_id": cluster, "name": "app"},
        lambda state: f"{state['cluster_id']},{state['name']}",
        {"mysql_auth_plugin": "caching_sha2_password"},
    ),
    "uptime_check": Case(
        UptimeCheck,
        lambda _: {"name": "a.example.net", "target": "https://a.example.net", "regions": ["us_east"]},
        lambda state: str(state["id"]),
        {"target": "https://b.example.net", "regions": ["eu_west", "us_east"]},
    ),
    "uptime_alert": Case(
        UptimeAlert,
        _alert_on_a_new_check,
        lambda state: f"{state['check_id']},{state['id']}",
        {"type": "ssl_expiry", "threshold": 14, "comparison": "less_than"},
    ),
    "monitor_alert": Case(
        MonitorAlert,
        lambda _: {
            "description": "cpu",
            "type": "v1/insights/droplet/cpu",
            "compare": "GreaterThan",
            "value": 90,
            "window": "5m",
            "tags": ["producer:quinn"],
            "alerts": ROUTES,
        },
        lambda state: str(state["id"]),
        {"value": 95, "window": "10m"},
    ),
}


@pytest.fixture
def cloud_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cloud.json"
    cloud.seed(path, [CLUSTER])
    monkeypatch.setenv(cloud.ENV_VAR, str(path))
    return path


def _messages(ctx: Ctx) -> list[tuple[str, str]]:
    return [(d.summary, d.detail) for d in ctx.diagnostics.diagnostics]


def _created(case: Case, path: Path) -> tuple[CloudResource, Ctx, dict[str, Any]]:
    """Plan and apply the case's configuration; the resource, its context and the new state."""
    resource, ctx = case.kind(None), Ctx(Diagnostics())
    config = case.config(cloud.list_clusters(path)[0]["id"])
    planned = resource.plan_change(ctx.diagnostics, None, config)
    state = resource.create(ctx, planned)
    assert state is not None, _messages(ctx)
    return resource, ctx, state


def test_every_served_type_is_a_case() -> None:
    # the database firewall is no record of its own (the cluster's rule list): tested below
    assert {kind.name for kind in RESOURCES if kind is not DatabaseFirewall} == set(CASES)
    assert all(not issubclass(kind, CloudResource) for kind in DATA_SOURCES)


@pytest.mark.parametrize("name", list(CASES))
def test_create_read_import_delete(name: str, cloud_file: Path) -> None:
    case = CASES[name]
    resource, ctx, state = _created(case, cloud_file)
    # Terraform rejects an apply that leaves a planned-unknown value unknown.
    assert [k for k, v in state.items() if v is Unknown] == []
    assert state["id"] in cloud.load(cloud_file)[resource.binding.collection]
    # A refresh right after the apply finds nothing to change.
    assert resource.read(ctx, state) == state
    imported = resource.import_(ctx, case.import_id(state))
    assert imported is not None
    assert {f: imported[f] for f in resource.binding.fields} == {f: state[f] for f in resource.binding.fields}
    resource.delete(ctx, state)
    assert state["id"] not in cloud.load(cloud_file)[resource.binding.collection]
    # Deleted outside Terraform: read drops it from state; deleting again is no error.
    assert resource.read(ctx, state) is None
    resource.delete(ctx, state)
    assert _messages(ctx) == []


@pytest.mark.parametrize("name", [n for n, case in CASES.items() if case.change])
def test_update_changes_the_record_in_place(name: str, cloud_file: Path) -> None:
    case = CASES[name]
    resource, ctx, state = _created(case, cloud_file)
    updated = resource.update(ctx, state, {**state, **case.change})
    assert updated is not None and _messages(ctx) == []
    record = cloud.load(cloud_file)[resource.binding.collection][state["id"]]
    assert {k: record[k] for k in case.change} == case.change
    assert {k: updated[k] for k in case.change} == case.change


@pytest.mark.parametrize("name", [n for n, case in CASES.items() if case.change])
def test_update_of_an_object_gone_keeps_the_prior_state(name: str, cloud_file: Path) -> None:
    case = CASES[name]
    resource, ctx, state = _created(case, cloud_file)
    with cloud.transaction(cloud_file) as c:
        del c[resource.binding.collection][state["id"]]
    assert resource.update(ctx, state, {**state, **case.change}) == state
    label, noun = resource.binding.label, resource.binding.noun
    assert _messages(ctx) == [(f"Error updating {label}", f"{noun} {state['id']} not found (404)")]


@pytest.mark.parametrize(
    ("name", "raw_id", "expected"),
    [
        ("droplet", "web", ("Invalid droplet id", "Invalid droplet id: 'web' is not an integer")),
        ("droplet", "4242", ("Error importing droplet", "droplet 4242 not found (404)")),
        ("firewall", "nope", ("Error importing firewall", "firewall nope not found (404)")),
        ("database_db", "app", ("Invalid database import id",
                                "must use the format <cluster_id>,<name> for import, got 'app'")),
        ("database_user", ",app", ("Invalid database user import id",
                                   "must use the format <cluster_id>,<name> for import, got ',app'")),
        ("database_user", "c,app", ("Error importing Database User",
                                    "database user c/user/app not found (404)")),
        ("uptime_alert", "alert-only", ("Invalid uptime alert import id", UPTIME_ALERT_ID_FORMAT)),
        ("uptime_alert", "c,a", ("Error importing uptime alert", "uptime alert a not found (404)")),
    ],
)  # fmt: skip
def test_bad_import_ids_are_diagnostics(
    name: str, raw_id: str, expected: tuple[str, str], cloud_file: Path
) -> None:
    ctx = Ctx(Diagnostics())
    assert CASES[name].kind(None).import_(ctx, raw_id) is None
    assert _messages(ctx) == [expected]


def test_without_a_cloud_nothing_is_lost(cloud_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resource, ctx, state = _created(CASES["droplet"], cloud_file)
    monkeypatch.delenv(cloud.ENV_VAR)
    # Read and update keep the state they were given; create makes nothing.
    assert resource.read(ctx, state) == state
    assert resource.update(ctx, state, {**state, "name": "other"}) == state
    assert resource.create(ctx, state) is None
    summaries = {summary for summary, _ in _messages(ctx)}
    assert summaries == {"Sandbox cloud not configured"}


def test_deleting_a_droplet_takes_it_out_of_its_firewall(cloud_file: Path) -> None:
    _, _, droplet = _created(CASES["droplet"], cloud_file)
    firewall, ctx = Firewall(None), Ctx(Diagnostics())
    config = {"name": "fw", "droplet_ids": [int(droplet["id"])], "inbound_rule": [RULE]}
    walled = firewall.create(ctx, firewall.plan_change(ctx.diagnostics, None, config))
    assert walled is not None and walled["droplet_ids"] == [int(droplet["id"])]
    Droplet(None).delete(ctx, droplet)
    assert firewall.read(ctx, walled) == {**walled, "droplet_ids": []}


def test_a_refused_create_makes_nothing(cloud_file: Path) -> None:
    cloud.inject_faults(cloud_file, fail_create=["web"], message="422 droplet limit reached")
    resource, ctx = Droplet(None), Ctx(Diagnostics())
    planned = resource.plan_change(ctx.diagnostics, None, CASES["droplet"].config(""))
    assert resource.create(ctx, planned) is None
    assert _messages(ctx) == [("Error creating droplet", "422 droplet limit reached")]
    assert cloud.list_droplets(cloud_file) == []


# --- SSH keys, user data and the catalogue ---------------------------------------------------

DROPLET = {"name": "web", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64", "region": "nyc3"}


def _create_droplet(config: dict[str, Any]) -> tuple[Droplet, Ctx, dict[str, Any] | None]:
    """Plan and apply a droplet as the servicer does: the configuration beside the planned state."""
    resource, ctx = Droplet(None), Ctx(Diagnostics())
    planned = resource.plan_change(ctx.diagnostics, None, config)
    resource.config = config
    return resource, ctx, resource.create(ctx, planned)


def test_ssh_key_data_source_finds_one_key_by_name(cloud_file: Path) -> None:
    cloud.seed(cloud_file, [], ["ops-2026", "ct-deploy"])
    [data] = [kind(None) for kind in DATA_SOURCES if kind.name == "ssh_key"]
    ctx = Ctx(Diagnostics())
    found = data.read(ctx, {"name": "ct-deploy"})
    [key] = [k for k in cloud.list_ssh_keys(cloud_file) if k["name"] == "ct-deploy"]
    assert found == {k: key[k] for k in ("id", "name", "fingerprint", "public_key")}
    assert isinstance(found["id"], int)  # a number in this data source, as in the real one
    assert data.read(ctx, {"name": "nobody"}) is None
    assert _messages(ctx) == [
        (
            "Error retrieving SSH key",
            "no ssh key found with name nobody (sandbox account keys: ct-deploy, ops-2026)",
        ),
    ]


def test_ssh_key_data_source_refuses_two_keys_of_one_name(cloud_file: Path) -> None:
    with cloud.transaction(cloud_file) as c:
        for key_id in (7, 8):
            c["ssh_keys"][str(key_id)] = cloud.ssh_key_record(key_id, "twin")
    [data] = [kind(None) for kind in DATA_SOURCES if kind.name == "ssh_key"]
    ctx = Ctx(Diagnostics())
    assert data.read(ctx, {"name": "twin"}) is None
    assert "too many ssh keys found with name twin (found 2, expected 1)" in _messages(ctx)[0][1]


def test_a_droplet_keeps_its_keys_and_user_data_in_the_cloud_never_in_state(cloud_file: Path) -> None:
    cloud.seed(cloud_file, [], ["ops-2026"])
    [key] = cloud.list_ssh_keys(cloud_file)
    text = "#cloud-config\nruncmd: ['echo ${HOME}']\n"
    resource, ctx, state = _create_droplet(
        {**DROPLET, "ssh_keys": [str(key["id"])], "user_data": text, "monitoring": True}
    )
    assert state is not None, _messages(ctx)
    record = cloud.load(cloud_file)["droplets"][state["id"]]
    assert (record["ssh_keys"], record["user_data"], record["monitoring"]) == ([key["id"]], text, True)
    # state has the SHA-1 (the provider's StateFunc); a refresh keeps it, an import knows neither
    assert state["user_data"] == hashlib.sha1(text.encode()).hexdigest()
    assert resource.read(ctx, state) == state
    imported = resource.import_(ctx, state["id"])
    assert imported is not None and (imported["ssh_keys"], imported["user_data"]) == (None, None)


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"ssh_keys": ["99"]}, "You specified an invalid ssh key: 99"),
        ({"size": "s-4vcpu-16gb"}, "You specified an invalid size (s-4vcpu-16gb)"),
        ({"region": "xyz1"}, "You specified an invalid region (xyz1)"),
        ({"image": "ubuntu-20-04-x64"}, "You specified an invalid image (ubuntu-20-04-x64)"),
        ({"size": "gpu-h100x1-80gb"}, "Size gpu-h100x1-80gb is not available in region nyc3 (offered in"),
    ],
)
def test_a_create_digitalocean_refuses_is_refused(
    cloud_file: Path, change: dict[str, Any], refusal: str
) -> None:
    _, ctx, state = _create_droplet({**DROPLET, **change})
    assert state is None
    [(summary, detail)] = _messages(ctx)
    assert summary == "Error creating droplet" and detail.startswith(f"422 unprocessable_entity: {refusal}")
    assert cloud.load(cloud_file)["droplets"] == {}


def test_a_resize_to_a_size_the_region_lacks_is_refused(cloud_file: Path) -> None:
    resource, ctx, state = _create_droplet(DROPLET)
    assert state is not None
    assert resource.update(ctx, state, {**state, "size": "gpu-h100x1-80gb"}) == state
    assert "Size gpu-h100x1-80gb is not available in region nyc3" in _messages(ctx)[0][1]
    assert cloud.load(cloud_file)["droplets"][state["id"]]["size"] == "s-1vcpu-1gb"
    updated = resource.update(ctx, state, {**state, "size": "s-2vcpu-4gb"})
    assert updated is not None and cloud.load(cloud_file)["droplets"][state["id"]]["price_monthly"] == 24.0


def test_deleting_an_uptime_check_deletes_its_alerts(cloud_file: Path) -> None:
    # as at DigitalOcean: an alert belongs to its check
    _, ctx, alert = _created(CASES["uptime_alert"], cloud_file)
    check = {"id": alert["check_id"]}
    UptimeCheck(None).delete(ctx, check)
    assert cloud.load(cloud_file)["uptime_alerts"] == {}
    assert UptimeAlert(None).read(ctx, alert) is None


def test_an_uptime_alert_on_a_check_that_does_not_exist_is_refused(cloud_file: Path) -> None:
    resource, ctx = UptimeAlert(None), Ctx(Diagnostics())
    config = {**_alert_on_a_new_check(""), "check_id": "nope"}
    assert resource.create(ctx, resource.plan_change(ctx.diagnostics, None, config)) is None
    assert _messages(ctx) == [("Error creating uptime alert", "uptime check nope not found (404)")]


def test_an_uptime_check_from_a_region_digitalocean_lacks_is_refused(cloud_file: Path) -> None:
    resource, ctx = UptimeCheck(None), Ctx(Diagnostics())
    config = {"name": "a.example.net", "target": "https://a.example.net", "regions": ["nyc3"]}
    assert resource.create(ctx, resource.plan_change(ctx.diagnostics, None, config)) is None
    [(summary, detail)] = _messages(ctx)
    assert summary == "Error creating uptime check" and "422 invalid region 'nyc3'" in detail
    _, ctx, state = _created(CASES["uptime_check"], cloud_file)
    assert resource.update(ctx, state, {**state, "regions": ["mars"]}) == state  # nothing changed
    assert "422 invalid region 'mars'" in _messages(ctx)[0][1]


def test_seeding_adds_only_what_it_is_given(tmp_path: Path) -> None:
    path = tmp_path / "cloud.json"
    cloud.seed(path, ["a-pg"], ["k1"])
    cloud.seed(path, [], ["k2", "k1"])
    assert [c["name"] for c in cloud.list_clusters(path)] == ["a-pg"]
    assert [(k["id"], k["name"]) for k in cloud.list_ssh_keys(path)] == [(41001, "k1"), (41002, "k2")]
    assert cloud.load(path)["catalogue"]["as_of"] == "2026-11-29"


# ---------------------------------------------------------------- digitalocean_database_firewall


def _trusted(path: Path) -> tuple[DatabaseFirewall, Ctx, str]:
    return DatabaseFirewall(None), Ctx(Diagnostics()), str(cloud.list_clusters(path)[0]["id"])


def _rules(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"type": t, "value": v, "uuid": None, "created_at": None} for t, v in pairs]


def test_database_firewall_owns_the_whole_rule_list(cloud_file: Path) -> None:
    resource, ctx, cluster_id = _trusted(cloud_file)
    with cloud.transaction(cloud_file) as c:  # a rule made by hand, before Terraform
        cloud.put_cluster_rules(c, cluster_id, [("ip_addr", "198.51.100.7")])
    config = {"cluster_id": cluster_id, "id": None, "rule": _rules(("tag", "db-uvlava-pg"))}
    planned = resource.plan_change(ctx.diagnostics, None, config)
    assert planned["id"] is Unknown and planned["rule"][0]["uuid"] is Unknown
    state = resource.create(ctx, planned)
    assert state is not None and _messages(ctx) == []
    # the id is made locally from the cluster's; the hand-made rule is gone (PUT replaces)
    assert state["id"].startswith(f"{cluster_id}-") and state["id"] != cluster_id
    [rule] = cloud.cluster_rules(cloud.load(cloud_file), cluster_id)
    assert (rule["type"], rule["value"]) == ("tag", "db-uvlava-pg")
    assert resource.read(ctx, state) == state  # no perpetual diff
    # a kept rule keeps its uuid in the plan; a new one learns its own on apply
    more = {**state, "rule": _rules(("tag", "db-uvlava-pg"), ("ip_addr", "203.0.113.4/32"))}
    replanned = resource.plan_change(ctx.diagnostics, state, more)
    uuids = {r["value"]: r["uuid"] for r in replanned["rule"]}
    assert uuids == {"db-uvlava-pg": rule["uuid"], "203.0.113.4/32": Unknown}
    assert resource.replace_paths(state, replanned) == []  # rules update in place
    updated = resource.update(ctx, state, replanned)
    assert updated is not None and len(updated["rule"]) == 2
    moved = resource.plan_change(ctx.diagnostics, state, {**state, "cluster_id": "another"})
    assert resource.replace_paths(state, moved) == ["cluster_id"]  # ForceNew
    # import takes the cluster id; destroy clears every rule
    imported = resource.import_(ctx, cluster_id)
    assert imported is not None and imported["rule"] == updated["rule"]
    resource.delete(ctx, updated)
    assert cloud.cluster_rules(cloud.load(cloud_file), cluster_id) == []
    assert _messages(ctx) == []


def test_database_firewall_validates_like_the_provider(cloud_file: Path) -> None:
    resource, ctx, cluster_id = _trusted(cloud_file)
    resource.validate(
        ctx.diagnostics, "digitalocean_database_firewall", {"cluster_id": cluster_id, "rule": []}
    )
    resource.validate(
        ctx.diagnostics,
        "digitalocean_database_firewall",
        {"cluster_id": cluster_id, "rule": _rules(("vpc", "x"))},
    )
    assert [summary for summary, _ in _messages(ctx)] == [
        "Insufficient rule blocks",
        "Invalid value for type",
    ]
    gone = resource.import_(ctx, "no-such-cluster")
    assert gone is None and "not found (404)" in _messages(ctx)[-1][1]


@pytest.mark.parametrize("name", ["uptime_alert", "monitor_alert"])
def test_a_slack_only_route_applied_plans_no_change(name: str, cloud_file: Path) -> None:
    """A route with no email: the cloud (as DigitalOcean's API) answers ``email: []`` where the
    configuration has null, which SDKv2 takes as one value; the next plan must not update it
    again (it did, on every plan, for every alert)."""
    block = "notifications" if name == "uptime_alert" else "alerts"
    slack_only = [{"email": None, "slack": ROUTES[0]["slack"]}]
    resource, ctx = CASES[name].kind(None), Ctx(Diagnostics())
    config = {**CASES[name].config(""), block: slack_only}
    state = resource.create(ctx, resource.plan_change(ctx.diagnostics, None, config))
    assert state is not None and state[block][0]["email"] == []
    assert resource.plan_change(ctx.diagnostics, state, config)[block] == state[block]
    # a route changed in the configuration is still planned
    moved = [{"email": None, "slack": [{"channel": "#ops", "url": "https://hooks.slack.invalid/y"}]}]
    assert resource.plan_change(ctx.diagnostics, state, {**config, block: moved})[block] == moved
