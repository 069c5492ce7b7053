"""The sandbox provider's resources: one CRUD skeleton over the sandbox cloud file.

Every managed resource does the same five things against the cloud
(``infra_apply.sandbox.cloud``, the file named by ``INFRA_APPLY_SANDBOX_CLOUD``): create a
record, read it back, change it in place, delete it, import it by id. ``CloudResource`` does
them once; a resource type only says how it maps onto the cloud (a ``Binding``: the cloud's
table, which record fields make its state, how to add and change a record, how to read an
import id) and keeps its own plan rules (the real provider's state functions and CustomizeDiff)
as small hooks.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tf import schema
from tf.types import Unknown

from infra_apply.sandbox import cloud
from infra_apply.sandbox.cloud import CloudError
from infra_apply.sandbox.schema import (
    DATABASE_CLUSTER_ATTRS,
    DATABASE_DB_ATTRS,
    DATABASE_FIREWALL_ATTRS,
    DATABASE_FIREWALL_BLOCKS,
    DATABASE_FIREWALL_RULE_ATTRS,
    DATABASE_USER_ATTRS,
    DROPLET_ATTRS,
    FIREWALL_ATTRS,
    FIREWALL_BLOCKS,
    FIREWALL_RULE_ATTRS,
    MONITOR_ALERT_ATTRS,
    MONITOR_ALERT_BLOCKS,
    SSH_KEY_ATTRS,
    UPTIME_ALERT_ATTRS,
    UPTIME_ALERT_BLOCKS,
    UPTIME_CHECK_ATTRS,
    Attr,
    Diags,
    State,
    blank_state,
    known,
    validate_attr,
)

FIREWALL_MAX_DROPLETS = 10
FIREWALL_MAX_TAGS = 5


# ---------------------------------------------------------------- diagnostics helpers


@contextlib.contextmanager
def _reported(diags: Diags, summary: str) -> Iterator[None]:
    """Turn a cloud refusal into a provider error diagnostic instead of a gRPC failure."""
    try:
        yield
    except CloudError as exc:
        diags.add_error(summary, str(exc))


def cloud_path(diags: Diags) -> Path | None:
    try:
        return cloud.cloud_path_from_env()
    except CloudError as exc:
        diags.add_error("Sandbox cloud not configured", str(exc))
        return None


# ---------------------------------------------------------------- schema-driven base


class Resource:
    """What the servicer needs from a resource or data source type: schema, validation, plan.

    Not derived from ``tf.iface.Resource``: tf only calls these methods by name, and tf has no
    type information, so a plain base class keeps mypy strict useful.
    """

    name: ClassVar[str]
    attrs: ClassVar[tuple[Attr, ...]]
    blocks: ClassVar[tuple[Any, ...]] = ()
    version: ClassVar[int] = 0

    def __init__(self, provider: object) -> None:
        self.provider = provider
        # The resource's configuration during an apply (the servicer sets it): what the SDK's
        # d.Get returns for attributes whose state is transformed (user_data's SHA-1).
        self.config: State | None = None

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
        return blank_state(cls.attrs, cls.blocks)

    def validate(self, diags: Diags, type_name: str, config: State) -> None:
        for attr in self.attrs:
            validate_attr(diags, attr, config.get(attr.name), [attr.name])

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
        for block in self.blocks:
            # nor inside a block: a Slack-only alert route (no email) was planned again forever
            if prior is not None and _sdk_same(prior.get(block.type_name), planned.get(block.type_name)):
                planned[block.type_name] = prior.get(block.type_name)
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


def _sdk_same(a: Any, b: Any) -> bool:
    """Equal as SDKv2 sees nested values: null, an empty list and an empty string are one."""
    if _zero(a) and _zero(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_sdk_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_sdk_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _same(attr: Attr, old: Any, new: Any) -> bool:
    return bool(attr.type.semantically_equal(old, new))


# ---------------------------------------------------------------- the CRUD skeleton


@dataclass(frozen=True)
class Binding:
    """How one resource type maps onto the sandbox cloud."""

    label: str  # in diagnostics summaries: "Error creating <label>"
    noun: str  # in not-found details: "<noun> <id> not found (404)"
    collection: str  # the cloud's table of these records, keyed by the resource id
    fields: tuple[str, ...]  # record fields copied into state on every create, read, update, import
    add: Callable[[cloud.Cloud, State], cloud.Record]  # create the record (inside a transaction)
    import_key: Callable[[Diags, str], str | None]  # import id -> record key; None after an error
    # change a record in place (inside a transaction); None: every argument is ForceNew
    change: Callable[[cloud.Cloud, cloud.Record, State], None] | None = None
    remove: Callable[[cloud.Cloud, str], object] | None = None  # None: drop it from its table
    finish: Callable[[cloud.Record, State], None] | None = None  # state beyond copied fields


class CloudResource(Resource):
    """A managed resource kept in the sandbox cloud; ``binding`` says how."""

    binding: ClassVar[Binding]

    def state(self, record: cloud.Record, base: State) -> State:
        """``base`` (planned, current or import defaults) overlaid with what the cloud holds."""
        state = {**self.blank(), **base}
        for field in self.binding.fields:
            state[field] = record[field]
        if self.binding.finish is not None:
            self.binding.finish(record, state)
        return state

    def before_create(self, diags: Diags, path: Path, planned: State) -> bool:
        """Runs before the create transaction, outside the cloud's lock; False stops the create
        (a diagnostic says why). Nothing by default."""
        return True

    def create(self, ctx: Any, planned: State) -> State | None:
        b = self.binding
        path = cloud_path(ctx.diagnostics)
        if path is None:
            return None
        if not self.before_create(ctx.diagnostics, path, planned):
            return None
        with _reported(ctx.diagnostics, f"Error creating {b.label}"), cloud.transaction(path) as c:
            return self.state(b.add(c, self.create_request(planned)), planned)
        return None

    def create_request(self, planned: State) -> State:
        """What the create sends: the planned state unless a type says otherwise."""
        return planned

    def read(self, ctx: Any, current: State) -> State | None:
        path = cloud_path(ctx.diagnostics)
        if path is None:
            return current
        record = cloud.load(path)[self.binding.collection].get(str(current["id"]))
        # An object deleted outside Terraform is gone: returning None drops it from state.
        return None if record is None else self.state(record, current)

    def update(self, ctx: Any, current: State, planned: State) -> State | None:
        b = self.binding
        if b.change is None:
            return planned
        path = cloud_path(ctx.diagnostics)
        if path is None:
            return current
        with _reported(ctx.diagnostics, f"Error updating {b.label}"), cloud.transaction(path) as c:
            record = c[b.collection].get(str(current["id"]))
            if record is None:
                raise CloudError(f"{b.noun} {current['id']} not found (404)")
            b.change(c, record, planned)
            return self.state(record, planned)
        # A failed update changed nothing: keep the prior state rather than lose the resource.
        return current

    def delete(self, ctx: Any, current: State) -> None:
        """Delete from the cloud; an object already gone is fine, as a 404 is for the real one."""
        b = self.binding
        key = str(current["id"])
        path = cloud_path(ctx.diagnostics)
        if path is None:
            return
        with _reported(ctx.diagnostics, f"Error deleting {b.label}"), cloud.transaction(path) as c:
            if b.remove is not None:
                b.remove(c, key)
            else:
                c[b.collection].pop(key, None)

    def import_(self, ctx: Any, raw_id: str) -> State | None:
        b = self.binding
        diags = ctx.diagnostics
        key = b.import_key(diags, raw_id)
        path = cloud_path(diags)
        if key is None or path is None:
            return None
        record = cloud.load(path)[b.collection].get(key)
        if record is None:
            diags.add_error(f"Error importing {b.label}", f"{b.noun} {key} not found (404)")
            return None
        # Like the real importers: what the API does not report gets the schema's default.
        defaults = {attr.name: attr.default for attr in self.attrs if attr.default is not None}
        return self.state(record, defaults)


def _import_as_is(diags: Diags, raw_id: str) -> str:
    return raw_id


def _split_import_id(kind: str, make_key: Callable[[str, str], str]) -> Callable[[Diags, str], str | None]:
    """An import id ``<cluster_id>,<name>``, as the real database importers take it."""

    def parse(diags: Diags, raw_id: str) -> str | None:
        cluster_id, sep, name = raw_id.partition(",")
        if not sep or not cluster_id or not name:
            diags.add_error(
                f"Invalid {kind} import id",
                f"must use the format <cluster_id>,<name> for import, got {raw_id!r}",
            )
            return None
        return make_key(cluster_id, name)

    return parse


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


def _droplet_key(diags: Diags, raw: str) -> str | None:
    try:
        return str(int(raw))
    except ValueError:
        diags.add_error("Invalid droplet id", f"Invalid droplet id: {raw!r} is not an integer")
        return None


def _add_droplet(c: cloud.Cloud, planned: State) -> cloud.Record:
    failure = cloud.create_fault(c, planned["name"])
    if failure:
        raise CloudError(failure)
    return cloud.add_droplet(c, _droplet_spec(planned))


def _droplet_spec(planned: State) -> cloud.DropletSpec:
    public = planned.get("public_networking")
    return cloud.DropletSpec(
        name=planned["name"],
        region=planned["region"] if known(planned["region"]) else cloud.DEFAULT_REGION,
        size=planned["size"],
        image=planned["image"],
        tags=tuple(planned["tags"] or ()),
        ipv6=bool(planned["ipv6"]),
        backups=bool(planned["backups"]),
        monitoring=bool(planned["monitoring"]),
        public_networking=public if isinstance(public, bool) else True,
        vpc_uuid=planned["vpc_uuid"] if known(planned["vpc_uuid"]) else None,
        volume_ids=tuple(planned["volume_ids"]) if known(planned["volume_ids"]) else (),
        ssh_keys=tuple(str(k) for k in planned["ssh_keys"] or ()),
        user_data=planned["user_data"] if known(planned["user_data"]) else None,
    )


def _change_droplet(c: cloud.Cloud, record: cloud.Record, planned: State) -> None:
    """The in-place actions: rename, resize, backups, enable IPv6, tags, volumes."""
    record["name"] = planned["name"]
    if planned["size"] != record["size"]:
        cloud.resize_droplet(c, record, planned["size"], disk=planned.get("resize_disk") is not False)
    record["backups"] = bool(planned["backups"])
    if planned["ipv6"]:
        cloud.enable_ipv6(record)
    record["tags"] = sorted(set(planned["tags"] or ()))
    if known(planned["volume_ids"]):
        record["volume_ids"] = sorted(planned["volume_ids"])


def _finish_droplet(record: cloud.Record, state: State) -> None:
    # Set once from the API when the configuration (or an import) leaves them open.
    for field in ("image", "public_networking"):
        if not known(state[field]) or state[field] == "":
            state[field] = record[field]


class Droplet(CloudResource):
    """``digitalocean_droplet``."""

    name = "droplet"
    version = 1
    attrs = DROPLET_ATTRS
    binding = Binding(
        label="droplet",
        noun="droplet",
        collection="droplets",
        fields=_DROPLET_API_FIELDS,
        add=_add_droplet,
        import_key=_droplet_key,
        change=_change_droplet,
        remove=cloud.remove_droplet,  # like DigitalOcean, firewalls forget a destroyed droplet
        finish=_finish_droplet,
    )

    def create(self, ctx: Any, planned: State) -> State | None:
        state = super().create(ctx, planned)
        path = cloud.cloud_path_from_env() if state is not None else None
        cut = cloud.interrupted_create(path, planned["name"]) if path is not None else None
        if state is None or cut is None:
            return state
        # What the real provider answers when Terraform stops it mid-create (its context is
        # canceled): before the API's answer nothing is recorded, after it the droplet is
        # recorded and, not known to be up, tainted.
        if cut == "lose":
            ctx.diagnostics.add_error(
                "Error creating droplet", 'Post "https://api.digitalocean.com/v2/droplets": context canceled'
            )
            return None
        ctx.diagnostics.add_error(
            f"Error waiting for droplet ({state['id']}) to become ready", "context canceled"
        )
        return state

    def create_request(self, planned: State) -> State:
        # The text of user_data, from the configuration; state keeps only its SHA-1.
        text = (self.config or {}).get("user_data")
        return {**planned, "user_data": text if isinstance(text, str) else None}

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

    def before_create(self, diags: Diags, path: Path, planned: State) -> bool:
        delay = cloud.create_delay(path)
        if delay:
            time.sleep(delay)  # outside the lock: a slow create must not serialise the others
        gate = cloud.create_gate(path)
        if gate is not None:
            with _reported(diags, "Error creating droplet"):
                cloud.wait_at_gate(gate, planned["name"])
            if diags.has_errors():
                return False
        return True


# ---------------------------------------------------------------- digitalocean_firewall

_FIREWALL_FIELDS = ("name", "droplet_ids", "tags", "inbound_rule", "outbound_rule")


def _firewall_fields(planned: State) -> cloud.Record:
    return {
        "name": planned["name"],
        "droplet_ids": sorted(planned["droplet_ids"] or ()),
        "tags": sorted(planned["tags"] or ()),
        "inbound_rule": planned["inbound_rule"] or [],
        "outbound_rule": planned["outbound_rule"] or [],
    }


def _add_firewall(c: cloud.Cloud, planned: State) -> cloud.Record:
    failure = cloud.create_fault(c, planned["name"])  # fail_create names firewalls too
    if failure:
        raise CloudError(failure)
    return cloud.add_firewall(c, _firewall_fields(planned))


def _finish_firewall(record: cloud.Record, state: State) -> None:
    state["pending_changes"] = []


class Firewall(CloudResource):
    """``digitalocean_firewall``; every configurable attribute updates in place."""

    name = "firewall"
    attrs = FIREWALL_ATTRS
    blocks = FIREWALL_BLOCKS
    binding = Binding(
        label="firewall",
        noun="firewall",
        collection="firewalls",
        fields=(*_FIREWALL_FIELDS, "id", "status", "created_at"),
        add=lambda c, planned: _add_firewall(c, planned),
        import_key=_import_as_is,
        change=lambda c, record, planned: record.update(_firewall_fields(planned)),
        finish=_finish_firewall,
    )

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
                _validate_rule(diags, block.type_name, rule)
        if not rules_seen:
            diags.add_error(
                "Invalid firewall",
                "At least one rule must be specified (inbound_rule or outbound_rule)",
            )


def _check_limit(diags: Diags, values: Any, limit: int, name: str) -> None:
    if known(values) and len(values) > limit:
        diags.add_error(
            f"Too many {name}",
            f"a firewall takes at most {limit} {name}, got {len(values)}",
            path=[name],
        )


def _validate_rule(diags: Diags, type_name: str, rule: State) -> None:
    for attr in FIREWALL_RULE_ATTRS[type_name]:
        validate_attr(diags, attr, rule.get(attr.name), [type_name])
    protocol = rule.get("protocol")
    if known(protocol) and protocol != "icmp" and rule.get("port_range") is None:
        diags.add_error(
            f"Invalid {type_name}",
            f"`port_range` of {type_name} is required if protocol is `tcp` or `udp`",
            path=[type_name],
        )


# ---------------------------------------------------------------- database db and user


class DatabaseDB(CloudResource):
    """``digitalocean_database_db``: both arguments are ForceNew, so it is never updated."""

    name = "database_db"
    attrs = DATABASE_DB_ATTRS
    binding = Binding(
        label="Database DB",
        noun="database",
        collection="databases",
        fields=("id", "cluster_id", "name"),
        add=lambda c, planned: cloud.add_database(c, planned["cluster_id"], planned["name"]),
        import_key=_split_import_id("database", cloud.database_id),
    )


def _add_user(c: cloud.Cloud, planned: State) -> cloud.Record:
    return cloud.add_user(c, planned["cluster_id"], planned["name"], planned["mysql_auth_plugin"])


def _change_user(c: cloud.Cloud, record: cloud.Record, planned: State) -> None:
    record["mysql_auth_plugin"] = planned["mysql_auth_plugin"]


class DatabaseUser(CloudResource):
    """``digitalocean_database_user``; ``mysql_auth_plugin`` is its only in-place update."""

    name = "database_user"
    attrs = DATABASE_USER_ATTRS
    binding = Binding(
        label="Database User",
        noun="database user",
        collection="users",
        fields=tuple(attr.name for attr in DATABASE_USER_ATTRS),
        add=_add_user,
        import_key=_split_import_id("database user", cloud.user_id),
        change=_change_user,
    )


# ---------------------------------------------------------------- uptime checks and alerts

_UPTIME_CHECK_FIELDS = ("name", "type", "target", "regions", "enabled")


def _uptime_check_fields(planned: State) -> cloud.Record:
    return {
        "name": planned["name"],
        "type": planned["type"],
        "target": planned["target"],
        "regions": sorted(planned["regions"] or ()),
        "enabled": planned["enabled"],
    }


class UptimeCheck(CloudResource):
    """``digitalocean_uptime_check``; every argument updates in place (a whole-check PUT)."""

    name = "uptime_check"
    attrs = UPTIME_CHECK_ATTRS
    binding = Binding(
        label="uptime check",
        noun="uptime check",
        collection="uptime_checks",
        fields=(*_UPTIME_CHECK_FIELDS, "id"),
        add=lambda c, planned: cloud.add_uptime_check(c, _uptime_check_fields(planned)),
        import_key=_import_as_is,
        change=lambda c, record, planned: cloud.change_uptime_check(c, record, _uptime_check_fields(planned)),
        remove=cloud.remove_uptime_check,
    )


def _notifications(blocks: Any) -> list[State]:
    """The first notifications block (the only one the provider sends), as state holds it."""
    if not blocks:
        return []
    first = blocks[0]
    slack = [{"channel": s["channel"], "url": s["url"]} for s in (first.get("slack") or [])]
    return [{"email": list(first.get("email") or []), "slack": slack}]


_UPTIME_ALERT_FIELDS = ("check_id", "name", "type", "threshold", "comparison", "period", "notifications")


def _uptime_alert_fields(planned: State) -> cloud.Record:
    fields = {name: planned[name] for name in _UPTIME_ALERT_FIELDS}
    fields["notifications"] = _notifications(planned["notifications"])
    return fields


def _uptime_alert_key(diags: Diags, raw_id: str) -> str | None:
    check_id, sep, alert_id = raw_id.partition(",")
    if not sep or not check_id or not alert_id:
        diags.add_error(
            "Invalid uptime alert import id",
            "must use the IDs of the check and alert joined with a comma (e.g. `id1,id2`)",
        )
        return None
    return alert_id


def _change_uptime_alert(c: cloud.Cloud, record: cloud.Record, planned: State) -> None:
    if planned["check_id"] not in c["uptime_checks"]:
        raise CloudError(f"uptime check {planned['check_id']} not found (404)")
    record.update(_uptime_alert_fields(planned))


class UptimeAlert(CloudResource):
    """``digitalocean_uptime_alert``; every argument updates in place, ``check_id`` included."""

    name = "uptime_alert"
    attrs = UPTIME_ALERT_ATTRS
    blocks = UPTIME_ALERT_BLOCKS
    binding = Binding(
        label="uptime alert",
        noun="uptime alert",
        collection="uptime_alerts",
        fields=(*_UPTIME_ALERT_FIELDS, "id"),
        add=lambda c, planned: cloud.add_uptime_alert(c, _uptime_alert_fields(planned)),
        import_key=_uptime_alert_key,
        change=_change_uptime_alert,
    )


_MONITOR_FIELDS = ("type", "description", "compare", "value", "window", "entities", "tags", "enabled")


def _monitor_fields(planned: State) -> cloud.Record:
    fields = {name: planned[name] for name in _MONITOR_FIELDS}
    fields["entities"] = sorted(planned["entities"] or ())
    fields["tags"] = sorted(planned["tags"] or ())
    fields["alerts"] = _notifications(planned["alerts"])
    return fields


def _finish_monitor_alert(record: cloud.Record, state: State) -> None:
    state["uuid"] = None  # the real provider never sets it: only the resource id holds the UUID


class MonitorAlert(CloudResource):
    """``digitalocean_monitor_alert``: a droplet metric alert policy, by droplet ids or tags."""

    name = "monitor_alert"
    attrs = MONITOR_ALERT_ATTRS
    blocks = MONITOR_ALERT_BLOCKS
    binding = Binding(
        label="monitor alert",
        noun="alert policy",
        collection="monitor_alerts",
        fields=(*_MONITOR_FIELDS, "alerts", "id"),
        add=lambda c, planned: cloud.add_monitor_alert(c, _monitor_fields(planned)),
        import_key=_import_as_is,
        change=lambda c, record, planned: record.update(_monitor_fields(planned)),
        finish=_finish_monitor_alert,
    )

    def validate(self, diags: Diags, type_name: str, config: State) -> None:
        super().validate(diags, type_name, config)
        # MinItems 1 in the provider's source: an explicitly empty set fails validation.
        entities = config.get("entities")
        if known(entities) and not entities:
            diags.add_error("Invalid monitor alert", "entities: attribute supports 1 item minimum")


# ---------------------------------------------------------------- digitalocean_database_firewall


def _rule_pairs(rules: Any) -> list[tuple[str, str]]:
    return [(str(r["type"]), str(r["value"])) for r in rules or ()]


class DatabaseFirewall(Resource):
    """``digitalocean_database_firewall``: a cluster's whole trusted-source list. Create and
    update PUT the full list, delete PUTs an empty one; the id is made locally
    (``<cluster_id>-<suffix>``), and an import takes the cluster id."""

    name = "database_firewall"
    attrs = DATABASE_FIREWALL_ATTRS
    blocks = DATABASE_FIREWALL_BLOCKS

    def validate(self, diags: Diags, type_name: str, config: State) -> None:
        super().validate(diags, type_name, config)
        rules = config.get("rule")
        if rules is Unknown:
            return
        if not rules:
            diags.add_error("Insufficient rule blocks", 'At least 1 "rule" blocks are required.')
            return
        for rule in rules:
            for attr in DATABASE_FIREWALL_RULE_ATTRS["rule"]:
                validate_attr(diags, attr, rule.get(attr.name), ["rule"])

    def customize_plan(self, diags: Diags, prior: State | None, planned: State) -> None:
        # A rule kept keeps the uuid and created_at the API gave it; a new one learns them on apply.
        before: list[State] = (prior or {}).get("rule") or []
        kept = {(r["type"], r["value"]): r for r in before}
        rules = planned.get("rule")
        if rules is None or rules is Unknown:
            return
        for rule in rules:
            old = kept.get((rule.get("type"), rule.get("value")))
            for field in ("uuid", "created_at"):
                if rule.get(field) is None:
                    rule[field] = old[field] if old is not None else Unknown

    def _state(self, cluster_id: str, resource_id: str, rules: list[cloud.Record]) -> State:
        return {
            "id": resource_id,
            "cluster_id": cluster_id,
            "rule": [{k: r[k] for k in ("created_at", "type", "uuid", "value")} for r in rules],
        }

    def _put(
        self, ctx: Any, summary: str, cluster_id: str, wanted: list[tuple[str, str]]
    ) -> list[cloud.Record] | None:
        path = cloud_path(ctx.diagnostics)
        if path is None:
            return None
        with _reported(ctx.diagnostics, summary), cloud.transaction(path) as c:
            return cloud.put_cluster_rules(c, cluster_id, wanted)
        return None

    def create(self, ctx: Any, planned: State) -> State | None:
        cluster_id = str(planned["cluster_id"])
        rules = self._put(ctx, "Error creating DatabaseFirewall", cluster_id, _rule_pairs(planned["rule"]))
        if rules is None:
            return None
        return self._state(cluster_id, f"{cluster_id}-{_local_suffix()}", rules)

    def read(self, ctx: Any, current: State) -> State | None:
        path = cloud_path(ctx.diagnostics)
        if path is None:
            return current
        record = cloud.load(path)["clusters"].get(str(current["cluster_id"]))
        if record is None:
            return None  # a 404 removes it from state
        return self._state(record["id"], str(current["id"]), record.get("firewall_rules", []))

    def update(self, ctx: Any, current: State, planned: State) -> State | None:
        cluster_id = str(planned["cluster_id"])
        rules = self._put(ctx, "Error updating DatabaseFirewall", cluster_id, _rule_pairs(planned["rule"]))
        return current if rules is None else self._state(cluster_id, str(current["id"]), rules)

    def delete(self, ctx: Any, current: State) -> None:
        self._put(ctx, "Error deleting DatabaseFirewall", str(current["cluster_id"]), [])

    def import_(self, ctx: Any, raw_id: str) -> State | None:
        path = cloud_path(ctx.diagnostics)
        if path is None:
            return None
        record = cloud.load(path)["clusters"].get(raw_id)
        if record is None:
            ctx.diagnostics.add_error(
                "Error importing DatabaseFirewall", f"database cluster {raw_id} not found (404)"
            )
            return None
        return self._state(raw_id, f"{raw_id}-{_local_suffix()}", record.get("firewall_rules", []))


def _local_suffix() -> str:
    """id.PrefixedUniqueId's suffix: made locally, unique, never an API id."""
    return hashlib.sha1(f"{time.time_ns()}-{id(object())}".encode()).hexdigest()[:26]


# ---------------------------------------------------------------- data source

_CLUSTER_FIELDS = (
    "database", "engine", "host", "node_count", "password", "port", "private_host",
    "private_network_uuid", "private_uri", "project_id", "region", "size", "storage_size_mib",
    "uri", "urn", "user", "version",
)  # fmt: skip


class ByNameData(Resource):
    """A data source that looks one object up by ``name`` in the sandbox cloud."""

    error_summary = "Error"

    def read(self, ctx: Any, config: State) -> State | None:
        diags = ctx.diagnostics
        path = cloud_path(diags)
        if path is None:
            return None
        with _reported(diags, self.error_summary):
            return self.find(diags, path, config["name"], config)
        return None

    def find(self, diags: Diags, path: Path, name: str, config: State) -> State | None:
        raise NotImplementedError


class DatabaseClusterData(ByNameData):
    """data ``digitalocean_database_cluster``: looked up by name among the cloud's clusters."""

    name = "database_cluster"
    attrs = DATABASE_CLUSTER_ATTRS
    error_summary = "Error retrieving DatabaseClusters"

    def find(self, diags: Diags, path: Path, name: str, config: State) -> State | None:
        clusters = cloud.load(path)["clusters"]
        record = next((c for c in clusters.values() if c["name"] == name), None)
        if record is None:
            _report_missing_cluster(diags, name, clusters, path)
            return None
        return _cluster_state(record, config)


def _report_missing_cluster(diags: Diags, name: str, clusters: dict[str, cloud.Record], path: Path) -> None:
    known_names = ", ".join(sorted(c["name"] for c in clusters.values())) or "none"
    detail = f'no database cluster named "{name}" in the sandbox cloud {path} (clusters: {known_names})'
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


class SSHKeyData(ByNameData):
    """data ``digitalocean_ssh_key``: the account's key of that name; none or several is an
    error, as the real data source's name filter makes it."""

    name = "ssh_key"
    attrs = SSH_KEY_ATTRS
    error_summary = "Error retrieving SSH keys"

    def find(self, diags: Diags, path: Path, name: str, config: State) -> State | None:
        matches = [k for k in cloud.load(path)["ssh_keys"].values() if k["name"] == name]
        if len(matches) != 1:
            known = ", ".join(sorted(k["name"] for k in cloud.list_ssh_keys(path))) or "none"
            detail = (
                f"no ssh key found with name {name}"
                if not matches
                else f"too many ssh keys found with name {name} (found {len(matches)}, expected 1)"
            )
            diags.add_error("Error retrieving SSH key", f"{detail} (sandbox account keys: {known})")
            return None
        key = matches[0]
        return {
            "id": key["id"],
            "name": key["name"],
            "fingerprint": key["fingerprint"],
            "public_key": key["public_key"],
        }


RESOURCES: tuple[type[Resource], ...] = (
    Droplet,
    Firewall,
    DatabaseDB,
    DatabaseUser,
    UptimeCheck,
    UptimeAlert,
    MonitorAlert,
    DatabaseFirewall,
)
DATA_SOURCES: tuple[type[Resource], ...] = (DatabaseClusterData, SSHKeyData)
