"""Parsing `terraform show -json`: actions, names, diffs, drift, settings, and what never leaks."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace

import pytest

from infra_apply.errors import InfraApplyError, TerraformError
from infra_apply.plan.model import parse_plan
from infra_apply.plan.parse import CreateSettings, NameDrift, SettingsDrift, classify
from infra_apply.report import producer_reports
from infra_apply.report.text import format_text
from tests.plan_fixtures import (
    FIXTURES,
    IMPORT_NAMES,
    NAMES,
    QUINN_MODEL,
    SECRETS,
    all_formats,
    by_address,
    load,
    parsed,
    rc,
    synthetic,
)


def test_steady_state_plan_has_no_changes() -> None:
    plan = parsed("no_changes")
    assert plan.changes == ()
    assert plan.drift == ()
    assert not plan.has_changes
    assert plan.counts == {"create": 0, "update": 0, "replace": 0, "delete": 0, "import": 0}


def test_new_producer_is_all_creates_named_from_the_manifest() -> None:
    plan = parsed("create_producer", "mc")
    assert [(c.action, c.address, c.name) for c in plan.changes] == [
        ("create", "digitalocean_database_db.mc_billing_prod", "billing"),
        ("create", "digitalocean_database_user.mc_billing_prod", "billing"),
        ("create", "digitalocean_droplet.mc_services", "com.uvlava.mc.services"),
        ("create", "digitalocean_firewall.mc_services", "com.uvlava.mc.services"),
    ]
    assert plan.counts["create"] == 4
    assert plan.has_changes


def test_removed_resources_fall_back_to_their_state_names() -> None:
    changes = by_address(parsed("replace_delete"))
    deleted = {a: c.name for a, c in changes.items() if c.action == "delete"}
    assert deleted == {
        "digitalocean_database_db.quinn_forge_prod": "forge",
        "digitalocean_database_user.quinn_forge_prod": "forge",
        "digitalocean_droplet.quinn_mcp": "com.uvlava.quinn.mcp",
        # a firewall is told by its droplet (its state's droplet_ids), as every firewall is
        "digitalocean_firewall.quinn_mcp": "com.uvlava.quinn.mcp",
    }
    assert changes["digitalocean_firewall.quinn_mcp"].name_source == "manifest"
    assert {c.reason for c in changes.values() if c.action == "delete"} == {
        "delete_because_no_resource_config"
    }
    # Unchanged resources (the registry database and user) are not listed at all.
    assert not any("registry" in a for a in changes)


def test_imports_count_once_and_an_import_with_update_counts_under_both() -> None:
    plan = parsed("import", names=IMPORT_NAMES)
    changes = by_address(plan)
    art = changes["digitalocean_droplet.quinn_artifacts"]
    assert (art.action, art.importing, art.import_id) == ("import", True, "412345678")
    mcp = changes["digitalocean_droplet.quinn_mcp"]
    assert (mcp.action, mcp.importing, mcp.updated_attrs) == ("update", True, ("tags",))
    assert plan.counts == {"create": 1, "update": 1, "replace": 0, "delete": 0, "import": 2}


def test_name_drift_is_reported_even_though_the_plan_is_a_no_op() -> None:
    plan = parsed("name_drift")
    assert not plan.has_changes
    assert plan.drift == (
        NameDrift(
            address="digitalocean_droplet.quinn_artifacts",
            manifest_name="com.uvlava.quinn.artifacts",
            live_name="quinn-artifacts-01",
        ),
    )


def test_drift_uses_the_index_less_name_for_counted_droplets() -> None:
    prior = [
        {
            "address": "digitalocean_droplet.ct_gpu[0]",
            "mode": "managed",
            "type": "digitalocean_droplet",
            "name": "ct_gpu",
            "index": 0,
            "values": {"name": "gpu-box"},
            "sensitive_values": {},
        }
    ]
    plan = parse_plan("ct", synthetic(prior=prior), NAMES)
    assert [(d.address, d.live_name) for d in plan.drift] == [("digitalocean_droplet.ct_gpu[0]", "gpu-box")]


@pytest.mark.parametrize(
    ("actions", "importing", "expected"),
    [
        (["create"], False, "create"),
        (["update"], False, "update"),
        (["update"], True, "update"),
        (["delete", "create"], False, "replace"),
        (["create", "delete"], False, "replace"),
        (["delete"], False, "delete"),
        (["no-op"], True, "import"),
        (["no-op"], False, "no-op"),
        (["read"], False, "read"),
    ],
)
def test_terraform_action_lists_map_to_one_action(actions: list[str], importing: bool, expected: str) -> None:
    assert classify(actions, importing) == expected


def test_unknown_actions_fail_closed() -> None:
    with pytest.raises(InfraApplyError, match="forget"):
        parse_plan("quinn", synthetic(rc("digitalocean_droplet.x", ["forget"])), {})


def test_reads_and_no_ops_are_not_changes() -> None:
    plan = parse_plan(
        "quinn",
        synthetic(
            rc("data.digitalocean_database_cluster.pg", ["read"]),
            rc("digitalocean_droplet.a", ["no-op"], before={"name": "a"}, after={"name": "a"}),
        ),
        {},
    )
    assert plan.changes == ()
    assert not plan.has_changes


def test_errored_or_foreign_plans_are_refused() -> None:
    with pytest.raises(TerraformError):
        parse_plan("quinn", {**synthetic(), "errored": True}, {})
    with pytest.raises(InfraApplyError, match="format_version"):
        parse_plan("quinn", {**synthetic(), "format_version": "2.0"}, {})


@pytest.mark.parametrize(
    "fixture",
    [
        "no_changes",
        "create_producer",
        "replace_delete",
        "update_size",
        "import",
        "name_drift",
        "resize_ports",
    ],
)
def test_no_secret_from_a_fixture_reaches_any_format(fixture: str) -> None:
    raw = (FIXTURES / f"{fixture}.json").read_text()
    plans = [parse_plan("quinn", json.loads(raw), {})]  # no names: fall back to state names
    for output in all_formats(plans, {"quinn": QUINN_MODEL}):
        for secret in SECRETS:
            assert secret not in output


@pytest.mark.parametrize("fixture", ["resize_ports", "outside_drift"])
def test_sandbox_passwords_in_the_real_fixtures_reach_no_format(fixture: str) -> None:
    # These are real sandbox plans: their database passwords are the sandbox's own.
    raw = (FIXTURES / f"{fixture}.json").read_text()
    passwords = set(re.findall(r"AVNS_[A-Za-z0-9]+", raw))
    assert passwords
    for output in all_formats([parse_plan("quinn", json.loads(raw), {})], {"quinn": QUINN_MODEL}):
        assert not [p for p in passwords if p in output]


def test_fixtures_really_carry_the_secrets() -> None:
    # Guards the test above against fixtures silently losing what it checks for.
    assert SECRETS[1] in (FIXTURES / "replace_delete.json").read_text()
    assert SECRETS[0] in (FIXTURES / "no_changes.json").read_text()
    assert SECRETS[2] in (FIXTURES / "create_producer.json").read_text()


def test_sensitive_and_secret_looking_values_are_named_never_shown() -> None:
    plan = parse_plan(
        "quinn",
        synthetic(
            rc(
                "digitalocean_database_user.quinn_forge_prod",
                ["update"],
                before={"name": "forge", "password": "old-Pw-1111", "role": "normal"},
                after={"name": "forge", "password": "new-Pw-2222", "role": "admin"},
                before_sensitive={"password": True},
                after_sensitive={"password": True},
            ),
            rc(
                "digitalocean_droplet.x",
                ["update"],
                before={"name": "x", "api_token": "tok-3333", "size": "a"},
                after={"name": "x", "api_token": "tok-4444", "size": "b"},
            ),
            rc(
                "digitalocean_database_db.hidden",
                ["delete"],
                before={"name": "name-is-sensitive-5555"},
                before_sensitive=True,
            ),
        ),
        {},
    )
    changes = by_address(plan)
    assert changes["digitalocean_database_user.quinn_forge_prod"].updated_attrs == (
        "password",
        "role",
    )
    assert changes["digitalocean_database_db.hidden"].name == "digitalocean_database_db.hidden"
    for output in all_formats([plan], {}):
        for secret in ("Pw-1111", "Pw-2222", "tok-3333", "tok-4444", "sensitive-5555"):
            assert secret not in output
    assert 'role "normal" → "admin"' in format_text(producer_reports([plan]))
    assert "password" in format_text(producer_reports([plan]))


def test_same_plan_in_any_order_renders_byte_identically() -> None:
    raw = load("replace_delete")
    shuffled = {**raw, "resource_changes": list(reversed(raw["resource_changes"]))}
    a = [parse_plan("quinn", raw, NAMES)]
    b = [parse_plan("quinn", shuffled, NAMES)]
    assert a == b
    assert all_formats(a, {"quinn": QUINN_MODEL}) == all_formats(b, {"quinn": QUINN_MODEL})


def _settings_plan(droplet: dict[str, object], action: list[str] | None = None) -> dict[str, object]:
    """A plan whose prior state holds one droplet and the ssh_key data sources read for it."""
    keys = [
        {
            "address": f"data.digitalocean_ssh_key.{n}",
            "mode": "data",
            "type": "digitalocean_ssh_key",
            "values": {"id": i, "name": n},
        }
        for n, i in (("ops-2026", 41001), ("ct-deploy", 41002))
    ]
    web = {
        "address": "digitalocean_droplet.web",
        "mode": "managed",
        "type": "digitalocean_droplet",
        "values": droplet,
    }
    changes = (
        []
        if action is None
        else [
            {
                "address": "digitalocean_droplet.web",
                "type": "digitalocean_droplet",
                "change": {"actions": action, "before": droplet, "after": droplet},
            }
        ]
    )
    return {
        "format_version": "1.2",
        "prior_state": {"values": {"root_module": {"resources": [*keys, web]}}},
        "resource_changes": changes,
    }


USER_DATA = "#cloud-config\n"


WANTED = CreateSettings(("ops-2026",), True, hashlib.sha1(USER_DATA.encode()).hexdigest())


AS_CREATED = {"ssh_keys": ["41001"], "monitoring": True, "user_data": WANTED.user_data_sha1}


@pytest.mark.parametrize(
    ("live", "settings"),
    [
        (AS_CREATED, ()),
        ({**AS_CREATED, "ssh_keys": ["41002"]}, ("ssh_keys",)),
        ({**AS_CREATED, "ssh_keys": None}, ("ssh_keys",)),  # created without keys (or adopted)
        ({**AS_CREATED, "monitoring": False}, ("monitoring",)),
        ({**AS_CREATED, "user_data": hashlib.sha1(b"#!/bin/sh\n").hexdigest()}, ("user_data",)),
        ({**AS_CREATED, "user_data": USER_DATA}, ()),  # an old state holding the text itself
        ({"ssh_keys": None, "monitoring": False, "user_data": None}, ("ssh_keys", "monitoring", "user_data")),
    ],
)
def test_settings_a_live_droplet_keeps_are_noted(live: dict[str, object], settings: tuple[str, ...]) -> None:
    names = {"digitalocean_droplet.web": "com.uvlava.ct.web"}
    plan = parse_plan("ct", _settings_plan(live), names, {"digitalocean_droplet.web": WANTED})
    expected = (SettingsDrift("digitalocean_droplet.web", "com.uvlava.ct.web", settings),) if settings else ()
    assert plan.settings_drift == expected
    assert not plan.has_changes


def test_a_droplet_replaced_anyway_gets_its_new_settings_and_no_note() -> None:
    raw = _settings_plan({**AS_CREATED, "monitoring": False}, ["delete", "create"])
    plan = parse_plan("ct", raw, {}, {"digitalocean_droplet.web": WANTED})
    assert plan.settings_drift == ()


def test_keys_the_plan_did_not_look_up_are_not_compared() -> None:
    wanted = CreateSettings(("unknown-key",), True, WANTED.user_data_sha1)
    plan = parse_plan("ct", _settings_plan(AS_CREATED), {}, {"digitalocean_droplet.web": wanted})
    assert plan.settings_drift == ()


def test_every_format_says_a_setting_applies_to_new_droplets_only() -> None:
    raw = _settings_plan({**AS_CREATED, "monitoring": False})
    plan = parse_plan("ct", raw, {}, {"digitalocean_droplet.web": WANTED})
    text, doc, markdown = all_formats([plan], {})
    assert (
        "  ! new droplets only: digitalocean_droplet.web keeps the monitoring it was created with; "
        "infra-apply.toml now says otherwise, which applies to droplets created from now on "
        "(a ForceNew setting never replaces a running droplet)"
    ) in text.splitlines()
    assert "**Settings for new droplets only**" in markdown and "keeps the monitoring" in markdown
    assert json.loads(doc)["producers"]["ct"]["settings_drift"] == [
        {
            "address": "digitalocean_droplet.web",
            "name": "digitalocean_droplet.web",
            "settings": ["monitoring"],
        }
    ]


CLUSTER_VPC = "5a4981aa-9653-4bd1-bef5-d6bff52042e4"
DEFAULT_VPC = "c7a5e8d2-1b3f-4a6e-9d0c-5f2e8b7a4c13"


def _vpc_plan(live_vpc: str, cluster_region: str = "nyc3") -> dict[str, object]:
    """A running nyc3 droplet in ``live_vpc`` and the cluster data source the plan read."""
    raw = _settings_plan({**AS_CREATED, "region": "nyc3", "vpc_uuid": live_vpc})
    cluster = {
        "address": "data.digitalocean_database_cluster.uvlava-pg",
        "mode": "data",
        "type": "digitalocean_database_cluster",
        "values": {"name": "uvlava-pg", "region": cluster_region, "private_network_uuid": CLUSTER_VPC},
    }
    resources = raw["prior_state"]["values"]["root_module"]["resources"]  # type: ignore[index]
    resources.append(cluster)
    return raw


@pytest.mark.parametrize(
    ("live_vpc", "cluster_region", "noted"),
    [
        (DEFAULT_VPC, "nyc3", True),  # created before it hosted a database project
        (CLUSTER_VPC, "nyc3", False),
        (DEFAULT_VPC, "fra1", False),  # a VPC is regional: rendered into its region's default one
    ],
)
def test_a_running_droplet_outside_its_clusters_vpc_is_noted_never_replaced(
    live_vpc: str, cluster_region: str, noted: bool
) -> None:
    wanted = {"digitalocean_droplet.web": replace(WANTED, vpc_cluster="uvlava-pg")}
    plan = parse_plan("ct", _vpc_plan(live_vpc, cluster_region), {}, wanted)
    assert not plan.has_changes
    web = "digitalocean_droplet.web"
    expected = SettingsDrift(web, web, ("vpc_uuid",), "uvlava-pg")
    assert plan.settings_drift == ((expected,) if noted else ())
    if not noted:
        return
    text, doc, markdown = all_formats([plan], {})
    assert (
        "  ! new droplets only: digitalocean_droplet.web stays in the VPC it runs in, outside the VPC "
        "of cluster uvlava-pg it hosts a project of, so the cluster's private host is out of its reach "
        "(db-credentials says so); droplets created from now on join the cluster's VPC (a ForceNew "
        "setting never replaces a running droplet)"
    ) in text.splitlines()
    assert "outside the VPC of cluster uvlava-pg" in markdown
    [drift] = json.loads(doc)["producers"]["ct"]["settings_drift"]
    assert drift["settings"] == ["vpc_uuid"] and drift["vpc_cluster"] == "uvlava-pg"


def test_an_update_leaves_out_computed_attributes_that_only_go_unknown() -> None:
    update = rc(
        "digitalocean_droplet.web",
        ["update"],
        before={"tags": ["a"], "urn": "do:droplet:1", "status": "active"},
        after={"tags": ["a", "b"], "urn": None, "status": None},
        after_unknown={"urn": True, "status": True},
    )
    firewall = rc(
        "digitalocean_firewall.web",
        ["update"],
        before={"droplet_ids": [1], "status": "ok"},
        after={"droplet_ids": None, "status": None},
        after_unknown={"droplet_ids": True, "status": True},
    )
    raw = synthetic(update, firewall)
    raw["configuration"] = {
        "root_module": {
            "resources": [
                {"address": "digitalocean_droplet.web", "expressions": {"tags": {}, "name": {}}},
                {"address": "digitalocean_firewall.web", "expressions": {"droplet_ids": {}}},
            ]
        }
    }
    changes = by_address(parse_plan("quinn", raw, {}))
    assert changes["digitalocean_droplet.web"].updated_attrs == ("tags",)
    # set by the configuration and unknown: it really changes (the droplet it names is rebuilt)
    assert changes["digitalocean_firewall.web"].updated_attrs == ("droplet_ids",)
    assert [d.render() for d in changes["digitalocean_firewall.web"].diffs] == [
        "droplet_ids [1] → (known after apply)"
    ]
    # no configuration to judge by: every unknown is kept, never silently dropped
    unjudged = by_address(parse_plan("quinn", synthetic(update), {}))
    assert unjudged["digitalocean_droplet.web"].updated_attrs == ("status", "tags", "urn")


def test_a_list_attribute_says_what_is_added_and_removed_however_long() -> None:
    tags = [f"service:{'x' * 30}-{i}" for i in range(4)]
    before, after = {"tags": tags}, {"tags": [*tags[1:], "owner:alice", "team:" + "y" * 80]}
    change = parse_plan(
        "q", synthetic(rc("digitalocean_droplet.a", ["update"], before=before, after=after)), {}
    )
    diff = change.changes[0].diff("tags")
    assert diff is not None
    cut = "+team:" + "y" * 32 + "..."
    assert diff.render() == f"tags +owner:alice, -{tags[0]}, {cut}"
    assert (diff.before, diff.after) == ("[4 items]", "[5 items]")
    assert diff.added == ("owner:alice", "team:" + "y" * 32 + "...") and diff.removed == (tags[0],)


def test_firewall_rules_are_diffed_rule_by_rule_with_every_kind_of_peer() -> None:
    from infra_apply.plan.parse import FirewallRule

    fw = {"name": "x", "droplet_ids": [1]}
    outbound_all = {"protocol": "udp", "port_range": "all", "destination_addresses": ["0.0.0.0/0"]}
    before = {**fw, "inbound_rule": None, "outbound_rule": [outbound_all]}
    inbound = {
        "protocol": "TCP",
        "port_range": "8000-8010",
        "source_addresses": ["10.9.0.0/24"],
        "source_droplet_ids": [4123],
        "source_tags": ["web"],
    }
    after = {**fw, "inbound_rule": [inbound], "outbound_rule": []}
    change = {
        "address": "digitalocean_firewall.x",
        "mode": "managed",
        "type": "digitalocean_firewall",
        "name": "x",
        "change": {"actions": ["update"], "before": before, "after": after, "after_unknown": {}},
    }
    plan = parse_plan("quinn", {"format_version": "1.2", "resource_changes": [change]}, {})
    [c] = plan.changes
    inbound_diff, outbound_diff = c.diff("inbound_rule"), c.diff("outbound_rule")
    assert inbound_diff is not None and outbound_diff is not None
    assert inbound_diff.added_rules == (
        FirewallRule("inbound", "tcp", "8000-8010", ("10.9.0.0/24", "droplet 4123", "tag web")),
    )
    assert inbound_diff.render() == "inbound_rule +tcp 8000-8010 from 10.9.0.0/24, droplet 4123, tag web"
    assert outbound_diff.render() == "outbound_rule -udp all to 0.0.0.0/0"
