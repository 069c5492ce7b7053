"""The plan model: what a `terraform show -json` plan does, and what never leaks from it."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import cast

import pytest

from infra_apply.errors import InfraApplyError, TerraformError
from infra_apply.plan_model import (
    CreateSettings,
    NameDrift,
    PublicPort,
    Resize,
    SettingsDrift,
    answer,
    classify,
    only_undoes_outside,
    parse_plan,
    reason,
    undoes,
    verb,
)
from infra_apply.report import producer_reports
from infra_apply.report.text import format_text
from tests.plan_fixtures import (
    FIXTURES,
    IMPORT_NAMES,
    NAMES,
    OUTSIDE_NAMES,
    QUINN_MODEL,
    RESIZE_NAMES,
    SECRETS,
    all_formats,
    by_address,
    load,
    parsed,
    rc,
    synthetic,
)

# ---------------------------------------------------------------------------------------------
# Parsing the fixtures


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


def test_region_change_is_a_replace_with_its_reason() -> None:
    changes = by_address(parsed("replace_delete"))
    art = changes["digitalocean_droplet.quinn_artifacts"]
    assert art.action == "replace"
    assert art.replace_paths == ("region",)
    assert "region" in art.updated_attrs
    region = art.diff("region")
    assert region is not None and region.render() == 'region "nyc3" → "fra1"'
    # The firewall follows its droplet: its droplet_ids become unknown, an in-place update.
    fw = changes["digitalocean_firewall.quinn_artifacts"]
    assert (fw.action, fw.updated_attrs) == ("update", ("droplet_ids",))


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


def test_size_update_names_the_attribute_and_gpu_index_is_resolved() -> None:
    changes = by_address(parsed("update_size", "ct"))
    services = changes["digitalocean_droplet.ct_services"]
    assert (services.action, services.updated_attrs) == ("update", ("size",))
    gpu = changes["digitalocean_droplet.ct_gpu[0]"]
    assert (gpu.action, gpu.name, gpu.base_address) == (
        "create",
        "com.uvlava.ct.gpu",
        "digitalocean_droplet.ct_gpu",
    )
    assert changes["digitalocean_firewall.ct_services"].updated_attrs == ("inbound_rule",)


# ---------------------------------------------------------------------------------------------
# Resizes and public ports (resize_ports.json: real Terraform and the sandbox provider)


def test_a_droplet_size_update_is_a_resize_with_one_way_disk_growth() -> None:
    changes = by_address(parsed("resize_ports", names=RESIZE_NAMES))
    dns = changes["digitalocean_droplet.dns"]
    assert dns.action == "update"
    assert dns.resize == Resize("s-1vcpu-1gb", "s-1vcpu-2gb", disk_grows=True, disk_before=25, disk_after=50)
    assert verb(dns) == "resize"
    assert reason(dns, with_values=False) == (
        'size "s-1vcpu-1gb" → "s-1vcpu-2gb": downtime (powered off, resized, powered on); '
        "the disk grows and can never be shrunk back"
    )
    assert [a for a, c in changes.items() if c.resize is not None] == ["digitalocean_droplet.dns"]


Values = Mapping[str, object]


def resized(action: list[str], before: Values, after: Values, **change: object) -> Resize | None:
    droplet = rc("digitalocean_droplet.dns", action, before=before, after=after, **change)
    return parse_plan("quinn", synthetic(droplet), {}).changes[0].resize


def test_what_counts_as_a_resize() -> None:
    small, big = {"size": "s-1vcpu-1gb"}, {"size": "s-2vcpu-4gb"}
    assert resized(["update"], small, big) == Resize("s-1vcpu-1gb", "s-2vcpu-4gb", True, 25, 80)
    # resize_disk = false keeps the disk: still downtime, but not one way.
    no_disk = resized(["update"], small, {**big, "resize_disk": False})
    assert isinstance(no_disk, Resize) and not no_disk.disk_grows
    assert "disk keeps its size" in no_disk.effect and "downtime" in no_disk.effect
    # A size known only at apply time is still a resize (the guard must not wave it through).
    unknown = resized(["update"], small, {}, after_unknown={"size": True})
    assert (
        unknown == Resize("s-1vcpu-1gb", None, disk_before=25) and "(known after apply)" in unknown.render()
    )
    # A replacement creates the new size; an update of another attribute is no resize.
    assert resized(["delete", "create"], small, big, replace_paths=[["region"]]) is None
    assert resized(["update"], {**small, "tags": []}, {**small, "tags": ["a"]}) is None
    firewall = rc("digitalocean_firewall.dns", ["update"], before=small, after=big)
    assert parse_plan("quinn", synthetic(firewall), {}).changes[0].resize is None


def test_a_resize_to_a_smaller_disk_than_the_droplet_has_is_refused_not_a_growth() -> None:
    """DigitalOcean refuses a size whose disk is below the droplet's current disk (422)."""
    shrink = resized(["update"], {"size": "s-4vcpu-8gb", "disk": 160}, {"size": "s-2vcpu-4gb"})
    assert shrink is not None and shrink.fails and not shrink.grows
    assert "refuses it (422)" in shrink.effect and "can never be shrunk back" not in shrink.effect
    assert "s-2vcpu-4gb's 80 GB disk is below the droplet's 160 GB" in shrink.effect
    assert "replace the droplet for that size, or keep s-4vcpu-8gb" in shrink.effect
    # state's disk is what counts: a console resize grew it beyond what the size says
    grown = resized(["update"], {"size": "s-8vcpu-16gb", "disk": 320}, {"size": "s-4vcpu-8gb"})
    assert grown is not None and grown.fails
    # no disk in state: the size table says what it has
    assert cast(Resize, resized(["update"], {"size": "s-4vcpu-8gb"}, {"size": "s-2vcpu-4gb"})).fails
    # resize_disk = false does not make a smaller disk possible either
    kept = resized(
        ["update"], {"size": "s-4vcpu-8gb", "disk": 160}, {"size": "s-2vcpu-4gb", "resize_disk": False}
    )
    assert kept is not None and kept.fails
    # a droplet resized without its disk can go back down to a size whose disk it still has
    back = resized(
        ["update"], {"size": "s-4vcpu-8gb", "disk": 80}, {"size": "s-2vcpu-4gb", "resize_disk": False}
    )
    assert back is not None and not back.fails and "disk keeps its size" in back.effect
    growth = resized(["update"], {"size": "s-2vcpu-4gb", "disk": 80}, {"size": "s-4vcpu-8gb"})
    assert growth is not None and growth.grows and not growth.fails


def test_a_firewall_is_told_by_its_droplet_in_state_else_by_its_name() -> None:
    droplet = {"id": "7", "name": "old-box"}
    gone_fw = {"id": "fw1", "name": "fw-old-box", "droplet_ids": [7]}
    orphan_fw = {"id": "fw2", "name": "fw-lonely", "droplet_ids": []}
    state = [
        {"address": a, "mode": "managed", "type": a.split(".")[0], "values": v}
        for a, v in (
            ("digitalocean_droplet.old", droplet),
            ("digitalocean_firewall.old", gone_fw),
            ("digitalocean_firewall.lonely", orphan_fw),
        )
    ]
    plan = synthetic(
        rc("digitalocean_droplet.old", ["delete"], before=droplet),
        rc("digitalocean_firewall.old", ["delete"], before=gone_fw),
        rc("digitalocean_firewall.lonely", ["delete"], before=orphan_fw),
        prior=state,
    )
    found = {c.address: (c.name, c.name_source) for c in parse_plan("quinn", plan, {}).changes}
    assert found["digitalocean_firewall.old"] == ("old-box", "manifest")  # "firewall of old-box"
    assert found["digitalocean_firewall.lonely"] == ("fw-lonely", "state")  # "firewall fw-lonely"
    # the manifest name of the droplet wins over its live name
    named = parse_plan("quinn", plan, {"digitalocean_droplet.old": "com.uvlava.quinn.old"})
    assert {c.address: c.name for c in named.changes}["digitalocean_firewall.old"] == "com.uvlava.quinn.old"


def test_firewall_changes_list_the_public_ports_they_open_and_close() -> None:
    changes = by_address(parsed("resize_ports", names=RESIZE_NAMES))
    mcp = changes["digitalocean_firewall.quinn_mcp"]
    assert (mcp.ports_opened, mcp.ports_closed) == ((PublicPort("tcp", "80"), PublicPort("tcp", "443")), ())
    artifacts = changes["digitalocean_firewall.quinn_artifacts"]
    assert artifacts.ports_opened == ()
    assert [str(p) for p in artifacts.ports_closed] == ["80/tcp", "443/tcp"]
    assert not changes["digitalocean_droplet.dns"].ports_opened


def test_a_new_firewall_opens_each_of_its_public_ports() -> None:
    firewall = by_address(parsed("create_producer", "mc"))["digitalocean_firewall.mc_services"]
    assert [str(p) for p in firewall.ports_opened] == ["22/tcp", "51820/udp"]


WORLD = ["0.0.0.0/0", "::/0"]


def rule(protocol: str, port: str | None, sources: list[str] = WORLD) -> Values:
    return {"protocol": protocol, "port_range": port, "source_addresses": sources}


def ports(
    action: list[str], before: list[Values] | None, after: list[Values] | None, **change: object
) -> tuple[list[str], list[str]]:
    fw = rc(
        "digitalocean_firewall.f",
        action,
        before=None if before is None else {"inbound_rule": before},
        after=None if after is None else {"inbound_rule": after},
        **change,
    )
    c = parse_plan("quinn", synthetic(fw), {}).changes[0]
    return [str(p) for p in c.ports_opened], [str(p) for p in c.ports_closed]


def test_public_ports_are_those_open_to_a_whole_internet_source() -> None:
    ssh = rule("tcp", "22")
    # A mesh-only or single-address source opens nothing to the internet.
    assert ports(["update"], [ssh], [ssh, rule("tcp", "8080", ["10.9.0.0/24"])]) == ([], [])
    assert ports(["update"], [ssh], [ssh, rule("tcp", "8080", ["198.51.100.7/32"])]) == ([], [])
    # ::/0 alone is the whole internet too; so is any /0 however it is written.
    assert ports(["update"], [ssh], [ssh, rule("udp", "53", ["::/0"])]) == (["53/udp"], [])
    assert ports(["update"], [ssh], [ssh, rule("udp", "53", ["1.2.3.4/0"])]) == (["53/udp"], [])
    # Making a mesh-only rule public opens it; the reverse closes it.
    mesh_only, public = rule("tcp", "8080", ["10.9.0.0/24"]), rule("tcp", "8080")
    assert ports(["update"], [mesh_only], [public]) == (["8080/tcp"], [])
    assert ports(["update"], [public], [mesh_only]) == ([], ["8080/tcp"])


def test_port_ranges_are_compared_port_by_port() -> None:
    narrow, wide = rule("tcp", "8000-8010"), rule("tcp", "8000-8020")
    assert ports(["update"], [narrow], [wide]) == (["8011-8020/tcp"], [])
    assert ports(["update"], [wide], [narrow]) == ([], ["8011-8020/tcp"])
    # A port moving inside a range the plan keeps open opens nothing.
    assert ports(["update"], [wide, rule("tcp", "22")], [wide, rule("tcp", "8005")]) == ([], ["22/tcp"])
    for every in ("1-65535", "all", "0", None):
        opened = ["1-21/tcp", "23-65535/tcp"]
        assert ports(["update"], [rule("tcp", "22")], [rule("tcp", every)]) == (opened, [])
    assert ports(["update"], [], [rule("icmp", None)]) == (["icmp"], [])
    assert ports(["update"], [rule("TCP", "22")], [rule("tcp", "22")]) == ([], [])
    # An unreadable range is taken as every port: over-reporting beats missing an opening.
    assert ports(["update"], [], [rule("tcp", "http")]) == (["1-65535/tcp"], [])


def test_which_firewall_changes_are_judged() -> None:
    web = [rule("tcp", "22"), rule("tcp", "443")]
    assert ports(["create"], None, web) == (["22/tcp", "443/tcp"], [])
    assert ports(["delete", "create"], [rule("tcp", "22")], web) == (["443/tcp"], [])
    # A deleted firewall goes with its droplet: nothing to call out.
    assert ports(["delete"], web, None) == ([], [])
    # Rules known only at apply time may open anything: said, not guessed.
    assert ports(["update"], web, web, after_unknown={"inbound_rule": [{"port_range": True}]}) == (
        ["(known after apply)"],
        [],
    )


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


# ---------------------------------------------------------------------------------------------
# Secrets


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


# ---------------------------------------------------------------------------------------------
# Determinism


def test_same_plan_in_any_order_renders_byte_identically() -> None:
    raw = load("replace_delete")
    shuffled = {**raw, "resource_changes": list(reversed(raw["resource_changes"]))}
    a = [parse_plan("quinn", raw, NAMES)]
    b = [parse_plan("quinn", shuffled, NAMES)]
    assert a == b
    assert all_formats(a, {"quinn": QUINN_MODEL}) == all_formats(b, {"quinn": QUINN_MODEL})


# ---------------------------------------------------------------------------------------------
# Create-time settings (ForceNew, ignored): changed in infra-apply.toml, kept by a live droplet


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


# --------------------------------------------------------------------------------------------
# Changed outside Terraform (an ordinary plan's resource_drift) and what the plan does about it


def test_an_ordinary_plan_keeps_what_changed_outside_terraform_apart() -> None:
    # outside_drift.json is a real sandbox plan (make_outside_drift.sh): console edits, then a PR.
    plan = parsed("outside_drift", names=OUTSIDE_NAMES)
    assert [(c.address, c.action, c.updated_attrs) for c in plan.outside] == [
        ("digitalocean_droplet.quinn_artifacts", "update", ("name", "tags")),
        (
            "digitalocean_droplet.quinn_build",
            "update",
            ("disk", "memory", "price_hourly", "price_monthly", "size", "vcpus"),
        ),
        ("digitalocean_droplet.quinn_cache", "delete", ()),
        ("digitalocean_firewall.quinn_cache", "update", ("droplet_ids",)),
    ]
    build = next(c for c in plan.outside if c.address == "digitalocean_droplet.quinn_build")
    assert build.resize == Resize("s-2vcpu-4gb", "s-4vcpu-8gb", disk_before=80, disk_after=160)
    # the drift is not counted as the plan's own changes
    assert plan.counts == {"create": 3, "update": 5, "replace": 1, "delete": 2, "import": 0}


def test_the_drift_noise_filter_applies_to_ordinary_plans_too() -> None:
    firewall = {"name": "fw-dns", "droplet_ids": [1003], "inbound_rule": []}
    noise = rc(
        "digitalocean_firewall.dns",
        ["update"],
        before={**firewall, "tags": None},
        after={**firewall, "tags": []},
    )
    gone = rc(
        "digitalocean_firewall.dns",
        ["update"],
        before={**firewall, "tags": None},
        after={**firewall, "droplet_ids": [], "tags": []},
    )
    for entry, expected in ((noise, []), (gone, [("droplet_ids",)])):
        plan = {**synthetic(), "resource_drift": [entry]}
        assert [c.updated_attrs for c in parse_plan("quinn", plan, {}).outside] == expected


def test_answer_says_what_the_plan_does_about_each_outside_change() -> None:
    plan = parsed("outside_drift", names=OUTSIDE_NAMES)
    found = {o.address: answer(plan, o)[:3] for o in plan.outside}
    assert found == {
        "digitalocean_droplet.quinn_artifacts": ("partly reverts", ("tags",), ("name",)),
        "digitalocean_droplet.quinn_build": ("reverts", ("size",), ()),
        "digitalocean_droplet.quinn_cache": ("recreates", (), ()),
        "digitalocean_firewall.quinn_cache": ("reverts", ("droplet_ids",), ()),
    }
    undone = [c.address for c in plan.changes if undoes(plan, c) is not None]
    assert undone == [
        "digitalocean_droplet.quinn_artifacts",
        "digitalocean_droplet.quinn_build",
        "digitalocean_droplet.quinn_cache",
        "digitalocean_firewall.quinn_cache",
    ]
    assert not only_undoes_outside(plan)  # the pull request adds, resizes, replaces, destroys


def outside_only_plan() -> dict[str, object]:
    """A droplet deleted and another retagged by hand; the plan re-creates and retags."""
    return {
        **synthetic(
            rc("digitalocean_droplet.web", ["create"], after={"name": "web"}),
            rc("digitalocean_droplet.db", ["update"], before={"tags": ["a", "x"]}, after={"tags": ["a"]}),
        ),
        "resource_drift": [
            rc("digitalocean_droplet.web", ["delete"], before={"name": "web"}),
            rc("digitalocean_droplet.db", ["update"], before={"tags": ["a"]}, after={"tags": ["a", "x"]}),
        ],
    }


def test_a_plan_that_only_undoes_outside_changes_is_told_apart() -> None:
    plan = parse_plan("quinn", outside_only_plan(), {})
    assert only_undoes_outside(plan)
    # one more change of its own, and the plan brings something new
    raw = outside_only_plan()
    raw["resource_changes"].append(rc("digitalocean_droplet.new", ["create"], after={"name": "new"}))  # type: ignore[attr-defined]
    assert not only_undoes_outside(parse_plan("quinn", raw, {}))
    # an outside change the plan leaves alone
    kept = parse_plan("quinn", {**outside_only_plan(), "resource_changes": []}, {})
    assert [answer(kept, o).response for o in kept.outside] == ["keeps", "keeps"]
    assert not only_undoes_outside(kept)


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


def test_a_real_resize_lists_only_the_size_not_what_it_recomputes() -> None:
    dns = by_address(parsed("resize_ports", names=RESIZE_NAMES))["digitalocean_droplet.dns"]
    assert dns.updated_attrs == ("size",)
    assert [d.attr for d in dns.diffs] == ["size"]


def pr_and_console_plan() -> dict[str, object]:
    """Issue 13: the pull request changes what was also changed by hand, to other values."""
    applied = {
        "name": "svc",
        "size": "s-4vcpu-8gb",
        "region": "nyc3",
        "image": "ubuntu-24-04-x64",
        "disk": 160,
    }
    console = {**applied, "size": "s-2vcpu-4gb", "disk": 80}
    batch = {"name": "batch", "tags": ["managed-by:infra-apply", "role:batch"]}
    dns = {"name": "dns", "size": "s-1vcpu-1gb", "region": "nyc3", "image": "ubuntu-24-04-x64"}
    return {
        **synthetic(
            rc(
                "digitalocean_droplet.svc",
                ["update"],
                before=console,
                after={**console, "size": "s-8vcpu-16gb"},
            ),
            rc(
                "digitalocean_droplet.batch",
                ["update"],
                before={**batch, "tags": [*batch["tags"], "owner:alice"]},
                after={**batch, "tags": ["managed-by:infra-apply", "role:jobs"]},
            ),
            rc("digitalocean_droplet.dns", ["create"], after={**dns, "size": "s-2vcpu-4gb"}),
        ),
        "resource_drift": [
            rc("digitalocean_droplet.svc", ["update"], before=applied, after=console),
            rc(
                "digitalocean_droplet.batch",
                ["update"],
                before=batch,
                after={**batch, "tags": [*batch["tags"], "owner:alice"]},
            ),
            rc("digitalocean_droplet.dns", ["delete"], before=dns),
        ],
    }


def test_a_change_to_a_new_value_never_counts_as_undoing_an_outside_change() -> None:
    from infra_apply.report._common import answer_text

    plan = parse_plan("mc", pr_and_console_plan(), {})
    assert [undoes(plan, c) for c in plan.changes] == [None, None, None]
    assert not only_undoes_outside(plan)
    said = {o.address: (answer(plan, o).response, answer_text(plan, o)) for o in plan.outside}
    assert said == {
        "digitalocean_droplet.svc": (
            "changes",
            "this plan resizes it to s-8vcpu-16gb, a size it never had",
        ),
        "digitalocean_droplet.batch": (
            "changes",
            "this plan changes tags -owner:alice, -role:batch +role:jobs, not back",
        ),
        "digitalocean_droplet.dns": ("recreates", "this plan re-creates it as s-2vcpu-4gb, not as it was"),
    }
    text = format_text(producer_reports([plan]))
    assert "only undoes" not in text and "undoes a change" not in text and "back to" not in text


def test_a_true_undo_is_judged_by_value_attribute_by_attribute() -> None:
    raw = pr_and_console_plan()
    changes: list[dict[str, object]] = raw["resource_changes"]  # type: ignore[assignment]
    svc, batch, dns = (cast(dict[str, dict[str, dict[str, object]]], c)["change"] for c in changes)
    svc["after"] = {**svc["after"], "size": "s-4vcpu-8gb"}  # back to what it had
    batch["after"] = {**batch["after"], "tags": ["role:batch", "managed-by:infra-apply"]}  # a set
    dns["after"] = {**dns["after"], "size": "s-1vcpu-1gb"}  # the droplet that was deleted
    plan = parse_plan("mc", raw, {})
    assert [undoes(plan, c) is not None for c in plan.changes] == [True, True, True]
    assert only_undoes_outside(plan)
    # the same droplet in another image is a new one, not the one deleted
    dns["after"] = {**dns["after"], "image": "debian-12-x64"}
    plan = parse_plan("mc", raw, {})
    gone = next(o for o in plan.outside if o.action == "delete")
    from infra_apply.report._common import answer_text

    assert answer_text(plan, gone) == "this plan re-creates it with a different image, not as it was"
    assert not only_undoes_outside(plan)


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


def test_a_firewall_destroyed_while_its_droplet_stays_opens_every_port() -> None:
    """No firewall, no filter: DigitalOcean lets every port through to a droplet without one.
    A firewall that goes with its droplet closes nothing anyone could reach: no call-out."""
    ssh = {"protocol": "tcp", "port_range": "22", "source_addresses": ["0.0.0.0/0"]}
    droplet = {"id": "7", "name": "box"}
    fw = {"id": "fw1", "name": "fw-box", "droplet_ids": [7], "inbound_rule": [ssh]}
    state = [
        {
            "address": "digitalocean_droplet.box",
            "mode": "managed",
            "type": "digitalocean_droplet",
            "values": droplet,
        },
        {
            "address": "digitalocean_firewall.box",
            "mode": "managed",
            "type": "digitalocean_firewall",
            "values": fw,
        },
    ]
    fw_gone = rc("digitalocean_firewall.box", ["delete"], before=fw)
    stays = parse_plan("q", synthetic(fw_gone, prior=state), {}).changes[0]
    assert [str(p) for p in stays.ports_opened] == ["1-21/tcp", "23-65535/tcp", "1-65535/udp", "icmp"]
    both = parse_plan(
        "q", synthetic(fw_gone, rc("digitalocean_droplet.box", ["delete"], before=droplet), prior=state), {}
    )
    assert all(c.ports_opened == () == c.ports_closed for c in both.changes)


def test_firewall_rules_are_diffed_rule_by_rule_with_every_kind_of_peer() -> None:
    from infra_apply.plan_model import FirewallRule

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
