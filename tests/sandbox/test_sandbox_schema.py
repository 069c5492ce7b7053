"""The sandbox provider's attribute tables (infra_apply/sandbox/schema.py) against the real
provider's facts (tests/fixtures/do_provider_facts.json, copied from do-provider-schema.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tf.types import Unknown
from tf.utils import Diagnostics

from infra_apply.sandbox.schema import (
    DATABASE_CLUSTER_ATTRS,
    DATABASE_DB_ATTRS,
    DATABASE_FIREWALL_ATTRS,
    DATABASE_FIREWALL_RULE_ATTRS,
    DATABASE_USER_ATTRS,
    DROPLET_ATTRS,
    FIREWALL_ATTRS,
    FIREWALL_BLOCKS,
    FIREWALL_RULE_ATTRS,
    MONITOR_ALERT_ATTRS,
    NOTIFICATION_ATTRS,
    NOTIFICATION_SLACK_ATTRS,
    SSH_KEY_ATTRS,
    STRING,
    STRING_SET,
    TAG_MESSAGE,
    TAG_PATTERN,
    UPTIME_ALERT_ATTRS,
    UPTIME_CHECK_ATTRS,
    Attr,
    blank_state,
    validate_attr,
)
from tests.conftest import TESTS

FACTS = json.loads((TESTS / "fixtures" / "do_provider_facts.json").read_text())

# (facts table, type) -> the sandbox's attribute table and its nested blocks' tables.
TABLES: dict[tuple[str, str], tuple[tuple[Attr, ...], dict[str, tuple[Attr, ...]]]] = {
    ("resource_schemas", "digitalocean_droplet"): (DROPLET_ATTRS, {}),
    ("resource_schemas", "digitalocean_firewall"): (FIREWALL_ATTRS, FIREWALL_RULE_ATTRS),
    ("resource_schemas", "digitalocean_database_db"): (DATABASE_DB_ATTRS, {}),
    ("resource_schemas", "digitalocean_database_user"): (DATABASE_USER_ATTRS, {}),
    ("resource_schemas", "digitalocean_database_firewall"): (
        DATABASE_FIREWALL_ATTRS,
        DATABASE_FIREWALL_RULE_ATTRS,
    ),
    ("data_source_schemas", "digitalocean_database_cluster"): (DATABASE_CLUSTER_ATTRS, {}),
    ("data_source_schemas", "digitalocean_ssh_key"): (SSH_KEY_ATTRS, {}),
}
# List-nested blocks tf 1.2 cannot express, and SDKv2's implicit timeouts: left out on purpose.
OMITTED_BLOCKS = {
    "digitalocean_droplet": {"backup_policy", "timeouts"},
    "digitalocean_database_user": {"settings"},
}


def _ours(attr: Attr, with_force_new: bool) -> dict[str, Any]:
    facts = {
        "type": json.loads(attr.type.tf_type()),
        "required": attr.required,
        "optional": attr.optional,
        "computed": attr.computed,
        "sensitive": attr.sensitive,
    }
    return {**facts, "force_new": attr.force_new} if with_force_new else facts


def _theirs(spec: dict[str, Any], with_force_new: bool) -> dict[str, Any]:
    keys = ("type", "required", "optional", "computed", "sensitive", "force_new")
    facts = {key: spec.get(key, False) for key in keys}
    if not with_force_new:
        del facts["force_new"]  # recorded literally for data sources, where it means nothing
    return facts


def _compare(attrs: tuple[Attr, ...], facts: dict[str, Any], with_force_new: bool) -> dict[str, Any]:
    ours = {a.name: _ours(a, with_force_new) for a in attrs}
    theirs = {name: _theirs(spec, with_force_new) for name, spec in facts.items()}
    return {
        name: (ours.get(name), theirs.get(name))
        for name in sorted(ours.keys() | theirs.keys())
        if ours.get(name) != theirs.get(name)
    }


@pytest.mark.parametrize(("table", "type_name"), list(TABLES), ids=[t for _, t in TABLES])
def test_attribute_tables_match_the_real_provider(table: str, type_name: str) -> None:
    """Names, types, required/optional/computed, sensitivity and ForceNew, attribute by attribute."""
    attrs, nested = TABLES[(table, type_name)]
    facts = FACTS[table][type_name]
    resource = table == "resource_schemas"
    assert _compare(attrs, facts["attributes"], resource) == {}
    blocks = facts.get("block_types", {})
    assert set(blocks) - set(nested) == OMITTED_BLOCKS.get(type_name, set())
    for block_name, block_attrs in nested.items():
        assert blocks[block_name]["nesting_mode"] == "set"
        assert _compare(block_attrs, blocks[block_name]["block"]["attributes"], resource) == {}


def test_firewall_blocks_serve_the_rule_tables() -> None:
    assert [b.type_name for b in FIREWALL_BLOCKS] == list(FIREWALL_RULE_ATTRS)


def test_blank_state_has_every_attribute_and_block() -> None:
    state = blank_state(FIREWALL_ATTRS, FIREWALL_BLOCKS)
    assert state == {
        **{attr.name: None for attr in FIREWALL_ATTRS},
        "inbound_rule": [],
        "outbound_rule": [],
    }


def _errors(attr: Attr, value: Any) -> list[tuple[str, str]]:
    diags = Diagnostics()
    validate_attr(diags, attr, value, [attr.name])
    return [(d.summary, d.detail) for d in diags.diagnostics]


@pytest.mark.parametrize(
    ("attr", "value", "expected"),
    [
        (Attr("tags", STRING_SET, element_pattern=TAG_PATTERN), ["ok:tag", "has space"],
         [("Invalid value 'has space' for tags", TAG_MESSAGE)]),
        (Attr("image", STRING, nonempty=True), "", [("Invalid value for image", "image must not be empty")]),
        (Attr("protocol", STRING, choices=("tcp", "udp")), "icmp",
         [("Invalid value for protocol", "expected protocol to be one of [tcp, udp], got icmp")]),
        (Attr("protocol", STRING, choices=("tcp", "udp")), "udp", []),
        # Unknown until apply, or left out: nothing to check yet.
        (Attr("image", STRING, nonempty=True), Unknown, []),
        (Attr("image", STRING, nonempty=True), None, []),
    ],
)  # fmt: skip
def test_validation_runs_the_sdk_rules_on_known_values(attr: Attr, value: Any, expected: list[Any]) -> None:
    assert _errors(attr, value) == expected


SHARED_SCHEMA = Path("/work/shared/do-provider-schema.json")
# Watching's types are not in the fixture copy: held to the shared provider facts instead. Their
# list-nested notification blocks are set-nested here (tf 1.2), with the same attributes.
WATCHING: dict[str, tuple[tuple[Attr, ...], str, tuple[Attr, ...]]] = {
    "digitalocean_uptime_check": (UPTIME_CHECK_ATTRS, "", ()),
    "digitalocean_uptime_alert": (UPTIME_ALERT_ATTRS, "notifications", NOTIFICATION_ATTRS),
    "digitalocean_monitor_alert": (MONITOR_ALERT_ATTRS, "alerts", NOTIFICATION_ATTRS),
}


@pytest.mark.skipif(not SHARED_SCHEMA.is_file(), reason="the provider facts are not on this machine")
@pytest.mark.parametrize("type_name", list(WATCHING))
def test_watching_tables_match_the_real_provider(type_name: str) -> None:
    facts = json.loads(SHARED_SCHEMA.read_text())["resource_schemas"][type_name]["block"]
    attrs, block, block_attrs = WATCHING[type_name]
    assert _compare(attrs, facts["attributes"], True) == {}
    assert set(facts.get("block_types", {})) == ({block} if block else set())
    if block:
        nested = facts["block_types"][block]["block"]
        assert _compare(block_attrs, nested["attributes"], True) == {}
        slack = nested["block_types"]["slack"]["block"]["attributes"]
        assert _compare(NOTIFICATION_SLACK_ATTRS, slack, True) == {}
