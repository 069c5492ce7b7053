"""The sandbox provider's schema: the real provider's attribute facts, as tables.

Attribute names, types, required/optional/computed, sensitive and ForceNew (as requires-replace)
are copied from the real provider's schema (``digitalocean/digitalocean`` v2.99.1, SDKv2; the
facts are in ``do-provider-schema.json``, and tests/sandbox/test_sandbox_schema.py holds these tables to
the copy in tests/fixtures/do_provider_facts.json), together with the validation the SDK runs on
each attribute.

tf 1.2 has no object type, so ``ObjectType`` provides one for list-of-object attributes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tf import schema, types
from tf.blocks import SetNestedBlock
from tf.types import Unknown

State = dict[str, Any]
Diags = Any  # tf.utils.Diagnostics (tf ships no type information)

TAG_PATTERN = r"^[a-zA-Z0-9:\-_]{1,255}$"  # Go's RE2 `$`: the very end (Python: fullmatch)
TAG_MESSAGE = (
    "tags may contain letters, numbers, colons, dashes, and underscores; "
    "there is a limit of 255 characters per tag"
)


class ObjectType(types.TfType):  # type: ignore[misc]
    """cty ``object`` type, missing from tf 1.2; values are dicts with every field present."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def encode(self, value: Any) -> Any:
        if value is None or value is Unknown:
            return value
        return {name: kind.encode(value.get(name)) for name, kind in self.fields.items()}

    def decode(self, value: Any) -> Any:
        if value is None or value is Unknown:
            return value
        return {name: kind.decode(value.get(name)) for name, kind in self.fields.items()}

    def tf_type(self) -> bytes:
        parts = ",".join(f'"{name}":{kind.tf_type().decode()}' for name, kind in self.fields.items())
        return f'["object",{{{parts}}}]'.encode()


STRING = types.String()
NUMBER = types.Number()
BOOL = types.Bool()
STRING_SET = types.Set(STRING)
NUMBER_SET = types.Set(NUMBER)
STRING_LIST = types.List(STRING)


@dataclass(frozen=True)
class Attr:
    """One attribute's facts from the real schema, plus the validation the SDK runs on it."""

    name: str
    type: Any
    required: bool = False
    optional: bool = False
    computed: bool = False
    sensitive: bool = False
    force_new: bool = False
    deprecated: bool = False
    default: Any = None  # SDK Default: planned when the configuration leaves it null
    nonempty: bool = False  # validation.NoZeroValues
    choices: tuple[str, ...] = ()  # validation.StringInSlice
    element_pattern: str | None = None  # regex every set element must match

    def to_schema(self) -> Any:
        return schema.Attribute(
            self.name,
            self.type,
            required=self.required,
            optional=self.optional,
            computed=self.computed,
            sensitive=self.sensitive,
            deprecated=self.deprecated or None,
            requires_replace=self.force_new,
        )


def _id() -> Attr:
    # SDKv2 adds an optional+computed ``id`` to every resource and data source.
    return Attr("id", STRING, optional=True, computed=True)


def _tags() -> Attr:
    return Attr("tags", STRING_SET, optional=True, element_pattern=TAG_PATTERN)


def known(value: Any) -> bool:
    return value is not None and value is not Unknown


def blank_state(attrs: Sequence[Attr], blocks: Sequence[Any] = ()) -> State:
    """A state with every attribute and block present, so Terraform gets a whole object."""
    state: State = {attr.name: None for attr in attrs}
    state.update({block.type_name: [] for block in blocks})
    return state


# ---------------------------------------------------------------- validation


def validate_attr(diags: Diags, attr: Attr, value: Any, path: list[Any]) -> None:
    if not known(value):
        return
    if attr.nonempty and value in ("", 0):
        diags.add_error(f"Invalid value for {attr.name}", f"{attr.name} must not be empty", path=path)
    if attr.choices and value not in attr.choices:
        expected = ", ".join(attr.choices)
        diags.add_error(
            f"Invalid value for {attr.name}",
            f"expected {attr.name} to be one of [{expected}], got {value}",
            path=path,
        )
    if attr.element_pattern is not None:
        _validate_elements(diags, attr, value, path)


def _validate_elements(diags: Diags, attr: Attr, values: Sequence[Any], path: list[Any]) -> None:
    pattern = re.compile(attr.element_pattern or "")
    for element in values:
        if isinstance(element, str) and not pattern.fullmatch(element):
            detail = TAG_MESSAGE if attr.element_pattern == TAG_PATTERN else ""
            diags.add_error(f"Invalid value {element!r} for {attr.name}", detail, path=path)


# ---------------------------------------------------------------- digitalocean_droplet

# The ``backup_policy`` block is list-mode (max_items 1) in the real schema; tf supports only
# set and single nesting, so it is omitted, as is SDKv2's implicit ``timeouts`` block.
DROPLET_ATTRS = (
    Attr("backups", BOOL, optional=True, default=False),
    Attr("created_at", STRING, computed=True),
    Attr("disk", NUMBER, computed=True),
    Attr("droplet_agent", BOOL, optional=True, force_new=True),
    Attr(
        "gpu_partition_mode", STRING, optional=True, force_new=True,
        choices=("PARTITION_MODE_SPX_NPS1", "PARTITION_MODE_DPX_NPS2"),
    ),
    Attr("graceful_shutdown", BOOL, optional=True, default=False),
    _id(),
    Attr("image", STRING, required=True, force_new=True, nonempty=True),
    Attr("ipv4_address", STRING, computed=True),
    Attr("ipv4_address_private", STRING, computed=True),
    Attr("ipv6", BOOL, optional=True, default=False),
    Attr("ipv6_address", STRING, optional=True, computed=True),
    Attr("locked", BOOL, computed=True),
    Attr("memory", NUMBER, computed=True),
    Attr("monitoring", BOOL, optional=True, force_new=True, default=False),
    Attr("name", STRING, required=True, nonempty=True),
    Attr("price_hourly", NUMBER, computed=True),
    Attr("price_monthly", NUMBER, computed=True),
    Attr("private_networking", BOOL, optional=True, computed=True, deprecated=True),
    Attr("public_networking", BOOL, optional=True, computed=True, force_new=True),
    Attr("region", STRING, optional=True, computed=True, force_new=True, nonempty=True),
    Attr("resize_disk", BOOL, optional=True, default=True),
    Attr("size", STRING, required=True, nonempty=True),
    Attr("ssh_keys", STRING_SET, optional=True, force_new=True),
    Attr("status", STRING, computed=True),
    _tags(),
    Attr("urn", STRING, computed=True),
    Attr("user_data", STRING, optional=True, force_new=True, nonempty=True),
    Attr("vcpus", NUMBER, computed=True),
    Attr("volume_ids", STRING_SET, optional=True, computed=True),
    Attr("vpc_uuid", STRING, optional=True, computed=True, force_new=True, nonempty=True),
)  # fmt: skip


# ---------------------------------------------------------------- digitalocean_firewall


def _rule_attrs(prefix: str) -> tuple[Attr, ...]:
    return (
        Attr("port_range", STRING, optional=True, nonempty=True),
        Attr("protocol", STRING, required=True, choices=("tcp", "udp", "icmp")),
        Attr(f"{prefix}_addresses", STRING_SET, optional=True),
        Attr(f"{prefix}_droplet_ids", NUMBER_SET, optional=True),
        Attr(f"{prefix}_kubernetes_ids", STRING_SET, optional=True),
        Attr(f"{prefix}_load_balancer_uids", STRING_SET, optional=True),
        Attr(f"{prefix}_tags", STRING_SET, optional=True, element_pattern=TAG_PATTERN),
    )


# Kept beside the blocks because tf's Attribute cannot carry our validation facts.
FIREWALL_RULE_ATTRS: dict[str, tuple[Attr, ...]] = {
    "inbound_rule": _rule_attrs("source"),
    "outbound_rule": _rule_attrs("destination"),
}
FIREWALL_BLOCKS = tuple(
    SetNestedBlock(type_name, schema.Block(attributes=[attr.to_schema() for attr in attrs]))
    for type_name, attrs in FIREWALL_RULE_ATTRS.items()
)

_PENDING_CHANGE = ObjectType({"droplet_id": NUMBER, "removing": BOOL, "status": STRING})

FIREWALL_ATTRS = (
    Attr("created_at", STRING, computed=True),
    Attr("droplet_ids", NUMBER_SET, optional=True),
    _id(),
    Attr("name", STRING, required=True, nonempty=True),
    Attr("pending_changes", types.List(_PENDING_CHANGE), computed=True),
    Attr("status", STRING, computed=True),
    _tags(),
)


# ---------------------------------------------------------------- database db and user

DATABASE_DB_ATTRS = (
    Attr("cluster_id", STRING, required=True, force_new=True, nonempty=True),
    _id(),
    Attr("name", STRING, required=True, force_new=True, nonempty=True),
)

# The list-mode ``settings`` block is omitted (tf cannot express list nesting), leaving
# ``mysql_auth_plugin`` as the only in-place update.
DATABASE_USER_ATTRS = (
    Attr("access_cert", STRING, computed=True, sensitive=True),
    Attr("access_key", STRING, computed=True, sensitive=True),
    Attr("cluster_id", STRING, required=True, force_new=True, nonempty=True),
    _id(),
    Attr(
        "mysql_auth_plugin", STRING, optional=True,
        choices=("mysql_native_password", "caching_sha2_password"),
    ),
    Attr("name", STRING, required=True, force_new=True, nonempty=True),
    Attr("password", STRING, computed=True, sensitive=True),
    Attr("role", STRING, computed=True),
)  # fmt: skip


# ---------------------------------------------------------------- digitalocean_database_firewall

DATABASE_FIREWALL_RULE_TYPES = ("ip_addr", "droplet", "k8s", "tag", "app")
# Kept beside the block, as the firewall's rule tables are.
DATABASE_FIREWALL_RULE_ATTRS: dict[str, tuple[Attr, ...]] = {
    "rule": (
        Attr("created_at", STRING, computed=True),
        Attr("type", STRING, required=True, choices=DATABASE_FIREWALL_RULE_TYPES),
        Attr("uuid", STRING, computed=True),
        Attr("value", STRING, required=True, nonempty=True),
    )
}
DATABASE_FIREWALL_BLOCKS = tuple(
    SetNestedBlock(type_name, schema.Block(attributes=[attr.to_schema() for attr in attrs]))
    for type_name, attrs in DATABASE_FIREWALL_RULE_ATTRS.items()
)
DATABASE_FIREWALL_ATTRS = (
    Attr("cluster_id", STRING, required=True, force_new=True, nonempty=True),
    _id(),
)


# ---------------------------------------------------------------- data digitalocean_database_cluster

_MAINTENANCE_WINDOW = ObjectType({"day": STRING, "hour": STRING})
_STORAGE_AUTOSCALE = ObjectType({"enabled": BOOL, "increment_gib": NUMBER, "threshold_percent": NUMBER})

DATABASE_CLUSTER_ATTRS = (
    Attr("database", STRING, computed=True),
    Attr("engine", STRING, computed=True),
    Attr("host", STRING, computed=True),
    _id(),
    Attr("maintenance_window", types.List(_MAINTENANCE_WINDOW), computed=True),
    Attr("metrics_endpoints", STRING_LIST, computed=True),
    Attr("name", STRING, required=True, nonempty=True),
    Attr("node_count", NUMBER, computed=True),
    Attr("password", STRING, computed=True, sensitive=True),
    Attr("port", NUMBER, computed=True),
    Attr("private_host", STRING, computed=True),
    Attr("private_network_uuid", STRING, computed=True),
    Attr("private_uri", STRING, computed=True, sensitive=True),
    Attr("project_id", STRING, computed=True),
    Attr("region", STRING, computed=True),
    Attr("size", STRING, computed=True),
    Attr("storage_autoscale", types.List(_STORAGE_AUTOSCALE), computed=True),
    Attr("storage_size_mib", STRING, computed=True),
    _tags(),
    Attr("ui_database", STRING, computed=True),
    Attr("ui_host", STRING, computed=True),
    Attr("ui_password", STRING, computed=True, sensitive=True),
    Attr("ui_port", NUMBER, computed=True),
    Attr("ui_uri", STRING, computed=True, sensitive=True),
    Attr("ui_user", STRING, computed=True),
    Attr("uri", STRING, computed=True, sensitive=True),
    Attr("urn", STRING, computed=True),
    Attr("user", STRING, computed=True),
    Attr("version", STRING, computed=True),
)


# ---------------------------------------------------------------- data digitalocean_ssh_key

# The id is a number in this data source (the key's id), not SDKv2's usual string id.
SSH_KEY_ATTRS = (
    Attr("fingerprint", STRING, computed=True),
    Attr("id", NUMBER, computed=True),
    Attr("name", STRING, required=True),
    Attr("public_key", STRING, computed=True),
)


# ---------------------------------------------------------------- the provider block

# Accepted and ignored: token and endpoints mean nothing to the sandbox.
PROVIDER_ATTRS = (
    Attr("api_endpoint", STRING, optional=True),
    Attr("http_retry_max", NUMBER, optional=True),
    Attr("http_retry_wait_max", NUMBER, optional=True),
    Attr("http_retry_wait_min", NUMBER, optional=True),
    Attr("requests_per_second", NUMBER, optional=True),
    Attr("spaces_access_id", STRING, optional=True),
    Attr("spaces_endpoint", STRING, optional=True),
    Attr("spaces_secret_key", STRING, optional=True),
    Attr("token", STRING, optional=True),
)


# ---------------------------------------------------------------- uptime checks and alerts

UPTIME_CHECK_ATTRS = (
    Attr("enabled", BOOL, optional=True, default=True),
    # declared computed-only (and ForceNew) in the real schema, not SDKv2's implicit id
    Attr("id", STRING, computed=True, force_new=True),
    Attr("name", STRING, required=True),
    Attr("regions", STRING_SET, optional=True),
    Attr("target", STRING, required=True),
    Attr("type", STRING, optional=True, default="https", choices=("ping", "http", "https")),
)

_SLACK_ATTRS = (
    Attr("channel", STRING, required=True, nonempty=True),
    Attr("url", STRING, required=True, nonempty=True),
)
# The real blocks are list-nested (tf 1.2 has set and single nesting only): the same
# configuration syntax, at most one element used, as the real provider uses the first.
NOTIFICATION_ATTRS = (Attr("email", STRING_LIST, optional=True),)
NOTIFICATION_SLACK_ATTRS = _SLACK_ATTRS


class _WholeSetBlock(SetNestedBlock):  # type: ignore[misc]
    """A set block whose elements are equal only when their nested blocks are too: tf 1.2
    compares elements by their attributes alone, so a read that found a Slack route changed
    outside (its url or channel) handed back the old one and no drift was ever seen."""

    def semantically_equal(self, a_decoded: Any, b_decoded: Any) -> bool:
        def keys(elements: Any) -> list[str]:
            return sorted(json.dumps(e, sort_keys=True, default=repr) for e in elements)

        return keys(a_decoded) == keys(b_decoded)


def _notification_block(type_name: str) -> SetNestedBlock:
    slack = SetNestedBlock("slack", schema.Block(attributes=[a.to_schema() for a in _SLACK_ATTRS]))
    return _WholeSetBlock(
        type_name,
        schema.Block(attributes=[a.to_schema() for a in NOTIFICATION_ATTRS], block_types=[slack]),
    )


UPTIME_ALERT_ATTRS = (
    Attr("check_id", STRING, required=True),
    Attr("comparison", STRING, optional=True, choices=("greater_than", "less_than")),
    Attr("id", STRING, computed=True),
    Attr("name", STRING, required=True),
    Attr("period", STRING, optional=True, choices=("2m", "3m", "5m", "10m", "15m", "30m", "1h")),
    Attr("threshold", NUMBER, optional=True),
    Attr("type", STRING, required=True, choices=("latency", "down", "down_global", "ssl_expiry")),
)
UPTIME_ALERT_BLOCKS = (_notification_block("notifications"),)

# The droplet metrics infra-apply renders, of the provider's longer list.
MONITOR_TYPES = (
    "v1/insights/droplet/cpu",
    "v1/insights/droplet/memory_utilization_percent",
    "v1/insights/droplet/disk_utilization_percent",
    "v1/insights/droplet/public_outbound_bandwidth",
    "v1/insights/droplet/public_inbound_bandwidth",
    "v1/insights/droplet/private_outbound_bandwidth",
    "v1/insights/droplet/private_inbound_bandwidth",
    "v1/insights/droplet/disk_read",
    "v1/insights/droplet/disk_write",
    "v1/insights/droplet/load_1",
    "v1/insights/droplet/load_5",
    "v1/insights/droplet/load_15",
)
MONITOR_ALERT_ATTRS = (
    Attr("compare", STRING, required=True, choices=("GreaterThan", "LessThan")),
    Attr("description", STRING, required=True),
    Attr("enabled", BOOL, optional=True, default=True),
    Attr("entities", STRING_SET, optional=True),
    _id(),
    _tags(),
    Attr("type", STRING, required=True, choices=MONITOR_TYPES),
    Attr("uuid", STRING, computed=True),
    Attr("value", NUMBER, required=True),
    Attr("window", STRING, required=True, choices=("5m", "10m", "30m", "1h")),
)
MONITOR_ALERT_BLOCKS = (_notification_block("alerts"),)
