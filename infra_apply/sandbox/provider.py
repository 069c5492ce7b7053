"""Stand-in for ``registry.terraform.io/digitalocean/digitalocean`` v2.99.1, served with ``tf``.

Attribute names, types, required/optional/computed, sensitive and ForceNew (as requires-replace)
are copied from the real provider's schema (v2.99.1, SDKv2). Resources live in the sandbox cloud
file (``infra_apply.sandbox.cloud``) named by ``INFRA_APPLY_SANDBOX_CLOUD``.

Two things ``tf`` 1.2 cannot do are handled here:

* its plan step skips the resource on create and cannot add requires-replace paths, so
  ``_servicer_class`` swaps in a servicer whose plan runs ``Resource.plan_change`` for create and
  update alike (SDK defaults, state functions, CustomizeDiff rules) and, like every SDKv2
  provider, flags the legacy type system so Terraform tolerates planned values that differ from
  config (hashed ``user_data``, lowercased ``region``);
* it has no object type, so ``ObjectType`` provides one for list-of-object attributes.

Module-level imports stay light: the executable is started for every terraform command,
including ``terraform show -json``, and start-up time counts.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tf import schema, types
from tf.blocks import SetNestedBlock
from tf.types import Unknown

from infra_apply.sandbox import cloud
from infra_apply.sandbox.cloud import CloudError

PROVIDER_SOURCE = "registry.terraform.io/digitalocean/digitalocean"
PROVIDER_VERSION = "2.99.1"
TYPE_PREFIX = "digitalocean_"

State = dict[str, Any]
Diags = Any  # tf.utils.Diagnostics (tf ships no type information)

TAG_PATTERN = r"^[a-zA-Z0-9:\-_]{1,255}$"
TAG_MESSAGE = (
    "tags may contain letters, numbers, colons, dashes, and underscores; "
    "there is a limit of 255 characters per tag"
)
FIREWALL_MAX_DROPLETS = 10
FIREWALL_MAX_TAGS = 5


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


# ---------------------------------------------------------------- diagnostics helpers


def _known(value: Any) -> bool:
    return value is not None and value is not Unknown


@contextlib.contextmanager
def _reported(diags: Diags, summary: str) -> Iterator[None]:
    """Turn a cloud refusal into a provider error diagnostic instead of a gRPC failure."""
    try:
        yield
    except CloudError as exc:
        diags.add_error(summary, str(exc))


def _remove(ctx: Any, kind: str, remove: Callable[[cloud.Cloud], object]) -> None:
    """Delete from the cloud; an object already gone is fine, as a 404 is for the real one."""
    path = _cloud_path(ctx.diagnostics)
    if path is not None:
        with _reported(ctx.diagnostics, f"Error deleting {kind}"), cloud.transaction(path) as c:
            remove(c)


def _cloud_path(diags: Diags) -> Path | None:
    try:
        return cloud.cloud_path_from_env()
    except CloudError as exc:
        diags.add_error("Sandbox cloud not configured", str(exc))
        return None


def _validate_attr(diags: Diags, attr: Attr, value: Any, path: list[Any]) -> None:
    if not _known(value):
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
        if isinstance(element, str) and not pattern.match(element):
            detail = TAG_MESSAGE if attr.element_pattern == TAG_PATTERN else ""
            diags.add_error(f"Invalid value {element!r} for {attr.name}", detail, path=path)


# ---------------------------------------------------------------- resource base


class Resource:
    """What the servicer needs from a resource type; subclasses fill in the cloud calls.

    Not derived from ``tf.iface.Resource``: tf only calls these methods by name, and tf has no
    type information, so a plain base class keeps mypy strict useful.
    """

    name: ClassVar[str]
    attrs: ClassVar[tuple[Attr, ...]]
    blocks: ClassVar[tuple[Any, ...]] = ()
    version: ClassVar[int] = 0

    def __init__(self, provider: DigitalOceanProvider) -> None:
        self.provider = provider

    @classmethod
    def get_name(cls) -> str:
        return cls.name

    @classmethod
    def get_schema(cls) -> Any:
        return schema.Schema(
            version=cls.version,
            attributes=[attr.to_schema() for attr in cls.attrs],
            block_types=list(cls.blocks),
        )

    @classmethod
    def blank(cls) -> State:
        """A state with every attribute and block present, so Terraform gets a whole object."""
        state: State = {attr.name: None for attr in cls.attrs}
        state.update({block.type_name: [] for block in cls.blocks})
        return state

    def validate(self, diags: Diags, type_name: str, config: State) -> None:
        for attr in self.attrs:
            _validate_attr(diags, attr, config.get(attr.name), [attr.name])

    def plan_change(self, diags: Diags, prior: State | None, proposed: State) -> State:
        """The planned new state: SDK defaults, unknown computed values on create, then rules."""
        planned = {**self.blank(), **proposed}
        for attr in self.attrs:
            if prior is not None and _zero(planned[attr.name]) and _zero(prior.get(attr.name)):
                # SDKv2 cannot tell null from an empty set or string: no diff between them.
                planned[attr.name] = prior.get(attr.name)
            if planned[attr.name] is not None:
                continue
            if attr.default is not None:
                planned[attr.name] = attr.default
            elif attr.computed and prior is None:
                planned[attr.name] = Unknown
        self.customize_plan(diags, prior, planned)
        return planned

    def customize_plan(self, diags: Diags, prior: State | None, planned: State) -> None:
        """Resource-specific plan rules (state functions, CustomizeDiff); none by default."""

    def replace_paths(self, prior: State, planned: State) -> list[str]:
        return [
            attr.name
            for attr in self.attrs
            if attr.force_new and not _same(attr, prior.get(attr.name), planned.get(attr.name))
        ]

    def upgrade(self, ctx: Any, version: int, old: State) -> State:
        return old


def _zero(value: Any) -> bool:
    return value is None or (isinstance(value, list | str) and len(value) == 0)


def _same(attr: Attr, old: Any, new: Any) -> bool:
    return bool(attr.type.semantically_equal(old, new))


# ---------------------------------------------------------------- digitalocean_droplet

# The API reports these and Read copies them into state (setDropletAttributes). ``image`` is
# deliberately not among them: the real provider lets it drift after create.
_DROPLET_API_FIELDS = (
    "id", "name", "region", "size", "vcpus", "memory", "disk", "price_hourly", "price_monthly",
    "status", "locked", "created_at", "vpc_uuid", "ipv4_address", "ipv4_address_private",
    "ipv6_address", "backups", "ipv6", "private_networking", "monitoring", "volume_ids", "tags",
    "urn",
)  # fmt: skip
_SIZE_DERIVED = ("vcpus", "memory", "disk", "price_hourly", "price_monthly")


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _parse_droplet_id(diags: Diags, raw: str) -> str | None:
    try:
        return str(int(raw))
    except ValueError:
        diags.add_error("Invalid droplet id", f"Invalid droplet id: {raw!r} is not an integer")
        return None


class Droplet(Resource):
    """``digitalocean_droplet``.

    The ``backup_policy`` block is list-mode (max_items 1) in the real schema; tf supports only
    set and single nesting, so it is omitted, as is SDKv2's implicit ``timeouts`` block.
    """

    name = "droplet"
    version = 1
    attrs = (
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

    def validate(self, diags: Diags, type_name: str, config: State) -> None:
        super().validate(diags, type_name, config)
        keys = config.get("ssh_keys")
        if isinstance(keys, list) and "" in keys:
            diags.add_error("Invalid value for ssh_keys", "ssh_keys must not be empty")

    def customize_plan(self, diags: Diags, prior: State | None, planned: State) -> None:
        # StateFunc: region and size are stored lowercased, user_data as its SHA-1.
        for field in ("region", "size"):
            if isinstance(planned[field], str):
                planned[field] = planned[field].lower()
        user_data = planned["user_data"]
        stored = prior.get("user_data") if prior else None
        if isinstance(user_data, str) and user_data != stored:
            planned["user_data"] = _sha1(user_data)
        if prior is None:
            return
        if planned["size"] != prior.get("size"):
            planned.update(dict.fromkeys(_SIZE_DERIVED, Unknown))
        if planned["ipv6"] is True and not prior.get("ipv6") and planned["ipv6_address"] in ("", None):
            planned["ipv6_address"] = Unknown  # CustomizeDiff: enabling IPv6 assigns an address

    def replace_paths(self, prior: State, planned: State) -> list[str]:
        paths = super().replace_paths(prior, planned)
        # CustomizeDiff ForceNewIfChange: IPv6 can be enabled in place but never disabled.
        if prior.get("ipv6") is True and planned.get("ipv6") is False:
            paths.append("ipv6")
        return paths

    @classmethod
    def state_from_record(cls, record: cloud.Record, base: State) -> State:
        state = {**cls.blank(), **base}
        for field in _DROPLET_API_FIELDS:
            state[field] = record[field]
        for field in ("image", "public_networking"):
            if not _known(state[field]) or state[field] == "":
                state[field] = record[field]
        return state

    def create(self, ctx: Any, planned: State) -> State | None:
        path = _cloud_path(ctx.diagnostics)
        if path is None:
            return None
        delay = cloud.create_delay(path)
        if delay:
            time.sleep(delay)  # outside the lock: a slow create must not serialise the others
        gate = cloud.create_gate(path)
        if gate is not None:
            with _reported(ctx.diagnostics, "Error creating droplet"):
                cloud.wait_at_gate(gate, planned["name"])
            if ctx.diagnostics.has_errors():
                return None
        with _reported(ctx.diagnostics, "Error creating droplet"), cloud.transaction(path) as c:
            failure = cloud.create_fault(c, planned["name"])
            if failure:
                raise CloudError(failure)
            record = cloud.add_droplet(c, _droplet_spec(planned))
            return self.state_from_record(record, planned)
        return None

    def read(self, ctx: Any, current: State) -> State | None:
        path = _cloud_path(ctx.diagnostics)
        if path is None:
            return current
        record = cloud.get_droplet(path, current["id"])
        # A droplet deleted outside Terraform is gone: returning None drops it from state.
        return None if record is None else self.state_from_record(record, current)

    def update(self, ctx: Any, current: State, planned: State) -> State | None:
        path = _cloud_path(ctx.diagnostics)
        if path is None:
            return current
        with _reported(ctx.diagnostics, "Error updating droplet"), cloud.transaction(path) as c:
            record = c["droplets"].get(str(current["id"]))
            if record is None:
                raise CloudError(f"droplet {current['id']} not found (404)")
            _apply_droplet_update(record, planned)
            return self.state_from_record(record, planned)
        # A failed update changed nothing: keep the prior state rather than lose the resource.
        return current

    def delete(self, ctx: Any, current: State) -> None:
        _remove(ctx, "droplet", lambda c: cloud.remove_droplet(c, str(current["id"])))

    def import_(self, ctx: Any, raw_id: str) -> State | None:
        diags = ctx.diagnostics
        droplet_id = _parse_droplet_id(diags, raw_id)
        path = _cloud_path(diags)
        if droplet_id is None or path is None:
            return None
        record = cloud.get_droplet(path, droplet_id)
        if record is None:
            diags.add_error("Error importing droplet", f"droplet {droplet_id} not found (404)")
            return None
        # Like the real importer: image comes from the API and resize_disk from its default.
        # graceful_shutdown gets its default too, so an adoption plan shows no in-place noise.
        base = {"image": record["image"], "resize_disk": True, "graceful_shutdown": False}
        return self.state_from_record(record, base)


def _droplet_spec(planned: State) -> cloud.DropletSpec:
    public = planned.get("public_networking")
    return cloud.DropletSpec(
        name=planned["name"],
        region=planned["region"] if _known(planned["region"]) else cloud.DEFAULT_REGION,
        size=planned["size"],
        image=planned["image"],
        tags=tuple(planned["tags"] or ()),
        ipv6=bool(planned["ipv6"]),
        backups=bool(planned["backups"]),
        monitoring=bool(planned["monitoring"]),
        public_networking=public if isinstance(public, bool) else True,
        vpc_uuid=planned["vpc_uuid"] if _known(planned["vpc_uuid"]) else None,
        volume_ids=tuple(planned["volume_ids"]) if _known(planned["volume_ids"]) else (),
    )


def _apply_droplet_update(record: cloud.Record, planned: State) -> None:
    """The in-place actions: rename, resize, backups, enable IPv6, tags, volumes."""
    record["name"] = planned["name"]
    if planned["size"] != record["size"]:
        cloud.resize_droplet(record, planned["size"])
    record["backups"] = bool(planned["backups"])
    if planned["ipv6"]:
        cloud.enable_ipv6(record)
    record["tags"] = sorted(set(planned["tags"] or ()))
    if _known(planned["volume_ids"]):
        record["volume_ids"] = sorted(planned["volume_ids"])


# ---------------------------------------------------------------- digitalocean_firewall

_RULE_COMMON = (
    Attr("port_range", STRING, optional=True, nonempty=True),
    Attr("protocol", STRING, required=True, choices=("tcp", "udp", "icmp")),
)


_RULE_ATTRS: dict[str, tuple[Attr, ...]] = {}


def _rule_block(type_name: str, prefix: str) -> Any:
    attrs = (
        *_RULE_COMMON,
        Attr(f"{prefix}_addresses", STRING_SET, optional=True),
        Attr(f"{prefix}_droplet_ids", NUMBER_SET, optional=True),
        Attr(f"{prefix}_kubernetes_ids", STRING_SET, optional=True),
        Attr(f"{prefix}_load_balancer_uids", STRING_SET, optional=True),
        Attr(f"{prefix}_tags", STRING_SET, optional=True, element_pattern=TAG_PATTERN),
    )
    _RULE_ATTRS[type_name] = attrs  # tf's Attribute cannot carry our validation facts
    return SetNestedBlock(type_name, schema.Block(attributes=[attr.to_schema() for attr in attrs]))


_INBOUND = _rule_block("inbound_rule", "source")
_OUTBOUND = _rule_block("outbound_rule", "destination")
_FIREWALL_FIELDS = ("name", "droplet_ids", "tags", "inbound_rule", "outbound_rule")

_PENDING_CHANGE = ObjectType({"droplet_id": NUMBER, "removing": BOOL, "status": STRING})


class Firewall(Resource):
    """``digitalocean_firewall``; every configurable attribute updates in place."""

    name = "firewall"
    attrs = (
        Attr("created_at", STRING, computed=True),
        Attr("droplet_ids", NUMBER_SET, optional=True),
        _id(),
        Attr("name", STRING, required=True, nonempty=True),
        Attr("pending_changes", types.List(_PENDING_CHANGE), computed=True),
        Attr("status", STRING, computed=True),
        _tags(),
    )
    blocks = (_INBOUND, _OUTBOUND)

    def validate(self, diags: Diags, type_name: str, config: State) -> None:
        super().validate(diags, type_name, config)
        _check_limit(diags, config.get("droplet_ids"), FIREWALL_MAX_DROPLETS, "droplet_ids")
        _check_limit(diags, config.get("tags"), FIREWALL_MAX_TAGS, "tags")
        rules_seen = False
        for block in self.blocks:
            rules = config.get(block.type_name)
            if rules is Unknown or rules is None:
                rules_seen = rules_seen or rules is Unknown
                continue
            rules_seen = rules_seen or bool(rules)
            for rule in rules:
                _validate_rule(diags, block, rule)
        if not rules_seen:
            diags.add_error(
                "Invalid firewall",
                "At least one rule must be specified (inbound_rule or outbound_rule)",
            )

    def create(self, ctx: Any, planned: State) -> State | None:
        path = _cloud_path(ctx.diagnostics)
        if path is None:
            return None
        with _reported(ctx.diagnostics, "Error creating firewall"), cloud.transaction(path) as c:
            record = cloud.add_firewall(c, _firewall_fields(planned))
            return _firewall_state(record, planned)
        return None

    def read(self, ctx: Any, current: State) -> State | None:
        path = _cloud_path(ctx.diagnostics)
        if path is None:
            return current
        record = cloud.load(path)["firewalls"].get(current["id"])
        return None if record is None else _firewall_state(record, current)

    def update(self, ctx: Any, current: State, planned: State) -> State | None:
        path = _cloud_path(ctx.diagnostics)
        if path is None:
            return current
        with _reported(ctx.diagnostics, "Error updating firewall"), cloud.transaction(path) as c:
            record = c["firewalls"].get(current["id"])
            if record is None:
                raise CloudError(f"firewall {current['id']} not found (404)")
            record.update(_firewall_fields(planned))
            return _firewall_state(record, planned)
        return current

    def delete(self, ctx: Any, current: State) -> None:
        _remove(ctx, "firewall", lambda c: c["firewalls"].pop(current["id"], None))

    def import_(self, ctx: Any, raw_id: str) -> State | None:
        path = _cloud_path(ctx.diagnostics)
        if path is None:
            return None
        record = cloud.load(path)["firewalls"].get(raw_id)
        if record is None:
            ctx.diagnostics.add_error("Error importing firewall", f"firewall {raw_id} not found")
            return None
        return _firewall_state(record, {})


def _check_limit(diags: Diags, values: Any, limit: int, name: str) -> None:
    if _known(values) and len(values) > limit:
        diags.add_error(
            f"Too many {name}",
            f"a firewall takes at most {limit} {name}, got {len(values)}",
            path=[name],
        )


def _validate_rule(diags: Diags, block: Any, rule: State) -> None:
    for attr in _RULE_ATTRS[block.type_name]:
        _validate_attr(diags, attr, rule.get(attr.name), [block.type_name])
    protocol = rule.get("protocol")
    if _known(protocol) and protocol != "icmp" and rule.get("port_range") is None:
        diags.add_error(
            f"Invalid {block.type_name}",
            f"`port_range` of {block.type_name} is required if protocol is `tcp` or `udp`",
            path=[block.type_name],
        )


def _firewall_fields(planned: State) -> cloud.Record:
    return {
        "name": planned["name"],
        "droplet_ids": sorted(planned["droplet_ids"] or ()),
        "tags": sorted(planned["tags"] or ()),
        "inbound_rule": planned["inbound_rule"] or [],
        "outbound_rule": planned["outbound_rule"] or [],
    }


def _firewall_state(record: cloud.Record, base: State) -> State:
    state = {**Firewall.blank(), **base}
    for field in (*_FIREWALL_FIELDS, "id", "status", "created_at"):
        state[field] = record[field]
    state["pending_changes"] = []
    return state


# ---------------------------------------------------------------- database db and user


def _split_import_id(diags: Diags, raw_id: str, kind: str) -> tuple[str, str] | None:
    cluster_id, sep, name = raw_id.partition(",")
    if not sep or not cluster_id or not name:
        diags.add_error(
            f"Invalid {kind} import id",
            f"must use the format <cluster_id>,<name> for import, got {raw_id!r}",
        )
        return None
    return cluster_id, name


class DatabaseDB(Resource):
    """``digitalocean_database_db``: both arguments are ForceNew, so it is never updated."""

    name = "database_db"
    attrs = (
        Attr("cluster_id", STRING, required=True, force_new=True, nonempty=True),
        _id(),
        Attr("name", STRING, required=True, force_new=True, nonempty=True),
    )

    def create(self, ctx: Any, planned: State) -> State | None:
        path = _cloud_path(ctx.diagnostics)
        if path is None:
            return None
        with _reported(ctx.diagnostics, "Error creating Database DB"), cloud.transaction(path) as c:
            record = cloud.add_database(c, planned["cluster_id"], planned["name"])
            return {**planned, "id": record["id"]}
        return None

    def read(self, ctx: Any, current: State) -> State | None:
        path = _cloud_path(ctx.diagnostics)
        if path is None:
            return current
        record = cloud.load(path)["databases"].get(current["id"])
        return None if record is None else {**current, "name": record["name"]}

    def update(self, ctx: Any, current: State, planned: State) -> State | None:
        return planned

    def delete(self, ctx: Any, current: State) -> None:
        _remove(ctx, "Database DB", lambda c: c["databases"].pop(current["id"], None))

    def import_(self, ctx: Any, raw_id: str) -> State | None:
        parts = _split_import_id(ctx.diagnostics, raw_id, "database")
        path = _cloud_path(ctx.diagnostics)
        if parts is None or path is None:
            return None
        key = cloud.database_id(*parts)
        if key not in cloud.load(path)["databases"]:
            ctx.diagnostics.add_error("Error importing Database DB", f"database {key} not found")
            return None
        return {"id": key, "cluster_id": parts[0], "name": parts[1]}


_USER_COMPUTED = ("id", "role", "password", "access_cert", "access_key")


class DatabaseUser(Resource):
    """``digitalocean_database_user``; the list-mode ``settings`` block is omitted (tf cannot
    express list nesting), leaving ``mysql_auth_plugin`` as the only in-place update."""

    name = "database_user"
    attrs = (
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

    def create(self, ctx: Any, planned: State) -> State | None:
        path = _cloud_path(ctx.diagnostics)
        if path is None:
            return None
        summary = "Error creating Database User"
        with _reported(ctx.diagnostics, summary), cloud.transaction(path) as c:
            record = cloud.add_user(c, planned["cluster_id"], planned["name"], planned["mysql_auth_plugin"])
            return _user_state(record, planned)
        return None

    def read(self, ctx: Any, current: State) -> State | None:
        path = _cloud_path(ctx.diagnostics)
        if path is None:
            return current
        record = cloud.load(path)["users"].get(current["id"])
        return None if record is None else _user_state(record, current)

    def update(self, ctx: Any, current: State, planned: State) -> State | None:
        path = _cloud_path(ctx.diagnostics)
        if path is None:
            return current
        summary = "Error updating Database User"
        with _reported(ctx.diagnostics, summary), cloud.transaction(path) as c:
            record = c["users"].get(current["id"])
            if record is None:
                raise CloudError(f"database user {current['id']} not found (404)")
            record["mysql_auth_plugin"] = planned["mysql_auth_plugin"]
            return _user_state(record, planned)
        return current

    def delete(self, ctx: Any, current: State) -> None:
        _remove(ctx, "Database User", lambda c: c["users"].pop(current["id"], None))

    def import_(self, ctx: Any, raw_id: str) -> State | None:
        parts = _split_import_id(ctx.diagnostics, raw_id, "database user")
        path = _cloud_path(ctx.diagnostics)
        if parts is None or path is None:
            return None
        record = cloud.load(path)["users"].get(cloud.user_id(*parts))
        if record is None:
            ctx.diagnostics.add_error("Error importing Database User", f"user {raw_id} not found")
            return None
        return _user_state(record, {"cluster_id": parts[0], "name": parts[1]})


def _user_state(record: cloud.Record, base: State) -> State:
    state = {**DatabaseUser.blank(), **base}
    for field in (*_USER_COMPUTED, "mysql_auth_plugin"):
        state[field] = record[field]
    return state


# ---------------------------------------------------------------- data source


_MAINTENANCE_WINDOW = ObjectType({"day": STRING, "hour": STRING})
_STORAGE_AUTOSCALE = ObjectType({"enabled": BOOL, "increment_gib": NUMBER, "threshold_percent": NUMBER})
_CLUSTER_FIELDS = (
    "database", "engine", "host", "node_count", "password", "port", "private_host",
    "private_network_uuid", "private_uri", "project_id", "region", "size", "storage_size_mib",
    "uri", "urn", "user", "version",
)  # fmt: skip


class DatabaseClusterData(Resource):
    """data ``digitalocean_database_cluster``: looked up by name among the cloud's clusters."""

    name = "database_cluster"
    attrs = (
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

    def read(self, ctx: Any, config: State) -> State | None:
        diags = ctx.diagnostics
        path = _cloud_path(diags)
        if path is None:
            return None
        name = config["name"]
        with _reported(diags, "Error retrieving DatabaseClusters"):
            clusters = cloud.load(path)["clusters"]
            record = next((c for c in clusters.values() if c["name"] == name), None)
            if record is None:
                _report_missing_cluster(diags, name, clusters, path)
                return None
            return _cluster_state(record, config)
        return None


def _report_missing_cluster(diags: Diags, name: str, clusters: dict[str, cloud.Record], path: Path) -> None:
    known = ", ".join(sorted(c["name"] for c in clusters.values())) or "none"
    detail = f'no database cluster named "{name}" in the sandbox cloud {path} (clusters: {known})'
    # The real provider says the first when the account has no clusters at all.
    summary = "Unable to find any database clusters" if not clusters else "Unable to find databases."
    diags.add_error(summary, detail, path=["name"])


def _cluster_state(record: cloud.Record, config: State) -> State:
    state = DatabaseClusterData.blank()
    state.update({field: record[field] for field in _CLUSTER_FIELDS})
    state.update(
        id=record["id"],
        name=record["name"],
        # The data source keeps what the configuration said about tags (optional, not computed).
        tags=config.get("tags"),
        maintenance_window=[],
        metrics_endpoints=[],
        storage_autoscale=[],
    )
    return state


# ---------------------------------------------------------------- provider

_PROVIDER_ATTRS = (
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

RESOURCES: tuple[type[Resource], ...] = (Droplet, Firewall, DatabaseDB, DatabaseUser)
DATA_SOURCES: tuple[type[Resource], ...] = (DatabaseClusterData,)


class DigitalOceanProvider:
    """The provider object ``tf`` serves; its block's values are accepted and ignored."""

    def full_name(self) -> str:
        return PROVIDER_SOURCE

    def get_model_prefix(self) -> str:
        return TYPE_PREFIX

    def get_provider_schema(self, diags: Diags) -> Any:
        return schema.Schema(attributes=[attr.to_schema() for attr in _PROVIDER_ATTRS])

    def validate_config(self, diags: Diags, config: State) -> None:
        """Nothing to check: token and endpoints mean nothing to the sandbox."""

    def configure_provider(self, diags: Diags, config: State) -> None:
        _cloud_path(diags)

    def get_resources(self) -> list[type[Resource]]:
        return list(RESOURCES)

    def get_data_sources(self) -> list[type[Resource]]:
        return list(DATA_SOURCES)

    def get_functions(self) -> list[type[Any]]:
        return []

    def new_resource(self, klass: type[Resource]) -> Resource:
        return klass(self)

    def new_data_source(self, klass: type[Resource]) -> Resource:
        return klass(self)

    def new_function(self, klass: type[Any]) -> Any:
        return klass(self)


# ---------------------------------------------------------------- gRPC servicer


def _servicer_class() -> type[Any]:
    """tf's servicer with a plan step that runs for creates too and reports our replace paths.

    Built on demand because ``tf.provider`` imports grpc, which only the server needs.
    """
    from tf.gen import tfplugin_pb2 as pb
    from tf.provider import ProviderServicer, _decode_state, _encode_state
    from tf.utils import Diagnostics, _to_attribute_path

    class SandboxServicer(ProviderServicer):  # type: ignore[misc]
        def PlanResourceChange(self, request: Any, context: Any) -> Any:
            response = pb.PlanResourceChange.Response
            type_name = request.type_name
            diags = Diagnostics()
            attrs = self._get_res_attrs(type_name)
            blocks = self._get_res_blocks(type_name)
            _, prior = _decode_state(diags, attrs, blocks, request.prior_state)
            _, proposed = _decode_state(diags, attrs, blocks, request.proposed_new_state)
            if diags.has_errors() or proposed is None:
                # A destroy plan: the planned state is null.
                return response(diagnostics=diags.to_pb(), legacy_type_system=True)
            resource = self.app.new_resource(self._get_res_cls(type_name))
            planned = resource.plan_change(diags, prior, proposed)
            replace = resource.replace_paths(prior, planned) if prior is not None else []
            return response(
                # No old encoding to reuse: tf would turn a planned [] back into a proposed null.
                planned_state=_encode_state(attrs, blocks, planned, None),
                requires_replace=[_to_attribute_path([name]) for name in replace],
                diagnostics=diags.to_pb(),
                legacy_type_system=True,
            )

        def ApplyResourceChange(self, request: Any, context: Any) -> Any:
            result = super().ApplyResourceChange(request, context)
            result.legacy_type_system = True
            return result

    return SandboxServicer


def _load_tls(path: Path) -> tuple[bytes, Any] | None:
    """The installed server certificate as tf's runner wants it, or None when unusable.

    Reading a prepared certificate skips importing ``cryptography`` and parsing or making a
    certificate, which tf otherwise does on every start.
    """
    import base64
    import json
    import time

    import grpc

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record["not_after"] - time.time() < 3600:
            return None
        chain = base64.b64decode(record["cert_der_b64"])
        pair = (record["key_pem"].encode(), record["cert_pem"].encode())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    credentials = grpc.ssl_server_credentials([pair], require_client_auth=False)
    return chain, credentials


PARENT_CHECK_SECONDS = 0.5


def exit_with_parent() -> None:
    """End this process when the Terraform that started it dies.

    Terraform stops its providers when it ends normally; when it is killed outright they would
    otherwise be reparented and serve an empty socket forever. On Linux the kernel signals us
    the moment the parent goes (PR_SET_PDEATHSIG); everywhere a watchdog thread notices the
    parent pid change. The signal is also sent when merely the parent *thread* that started us
    ends, so it only ends the process once the parent pid has really changed.
    """
    import os
    import signal
    import threading

    parent = os.getppid()

    def orphaned() -> bool:
        return os.getppid() != parent

    def on_parent_death(_signum: int, _frame: object) -> None:
        if orphaned():
            os._exit(1)

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError, ValueError):
            import ctypes

            signal.signal(signal.SIGUSR2, on_parent_death)
            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, int(signal.SIGUSR2), 0, 0, 0)

    def watch() -> None:
        while not orphaned():
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    if orphaned():  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _keep_serving_on_stop(runner: Any) -> None:
    """Terraform's Ctrl-C sends StopProvider and then waits for the operations in flight; tf
    stops its server right there, which kills a create between the cloud's answer and
    Terraform's record of it (a droplet Terraform never hears of). Like SDKv2 providers, keep
    serving until Terraform shuts the plugin down; the operations here are short."""
    base = runner._ShutdownInterceptor

    class Interceptor(base):  # type: ignore[misc, valid-type]
        def intercept_service(self, continuation: Any, details: Any) -> Any:
            if details.method == "/tfplugin6.Provider/StopProvider":
                return continuation(details)
            return super().intercept_service(continuation, details)

    runner._ShutdownInterceptor = Interceptor


def main(tls_file: str | None = None) -> None:
    """Entry point of the ``terraform-provider-digitalocean`` executable.

    ``tls_file`` is the certificate ``install`` prepared; without it (or when it is unusable)
    tf makes its own as usual.
    """
    import os

    import tf.provider
    from tf import runner

    exit_with_parent()
    # run_provider imports ProviderServicer from tf.provider when it is called.
    tf.provider.ProviderServicer = _servicer_class()
    _keep_serving_on_stop(runner)
    if tls_file is not None:
        make_certificate = runner._self_signed_cert

        def certificate() -> tuple[bytes, Any]:
            return _load_tls(Path(tls_file)) or make_certificate()

        runner._self_signed_cert = certificate
    runner.run_provider(DigitalOceanProvider(), sys.argv)
    # The server has stopped and every cloud write is complete; skip interpreter teardown
    # (thread-pool joins, module finalisers) that Terraform would otherwise wait for.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
