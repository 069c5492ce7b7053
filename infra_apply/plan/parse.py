"""Parsing ``terraform show -json <planfile>`` (plan format 1.x) into typed data.

Pure functions over the decoded JSON and the address → human-name map produced by rendering;
nothing here runs Terraform or reads files. This module knows Terraform's plan format, not
what a change means on DigitalOcean (``do_semantics``) nor how it relates to a change made
outside Terraform (``plan_outside``); ``plan_model.parse_plan`` runs the three in order.

Decisions a caller relies on:

* A plain ``no-op`` and a data-source ``read`` are not changes: ``parse_change`` drops them.
  A ``no-op`` that imports is the action ``"import"``. A change that imports *and* updates
  (or replaces) keeps ``update``/``replace`` as its action with ``importing=True`` and is counted
  under both, like Terraform's own "1 to import, 1 to change".
* Action lists this module does not know (e.g. ``forget`` from a ``removed`` block, which
  infra-apply never renders) raise ``InfraApplyError``: the guard must not wave through what it
  cannot judge.
* Secrets: resource names, addresses and attribute *names* are kept; an attribute *value*
  is kept (as an ``AttrDiff``) only when it is a short scalar (or short list of scalars) that
  Terraform did not mark sensitive (``before_sensitive``/``after_sensitive``) and whose name does
  not look like a credential. Everything else is known by name only, so no format can leak it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from infra_apply import kinds
from infra_apply.errors import InfraApplyError, TerraformError

if TYPE_CHECKING:  # the provider's meaning of a change, attached by do_semantics
    from infra_apply.plan.semantics import PublicPort, Resize, SshChange

Action = Literal["create", "update", "replace", "delete", "import", "read", "no-op"]


CountedAction = Literal["create", "update", "replace", "delete", "import"]


NameSource = Literal["manifest", "state", "address"]


# Decoded JSON, as it comes from ``json.loads``: checked field by field, never trusted.
JsonObject = Mapping[str, object]


COUNTED_ACTIONS: tuple[CountedAction, ...] = ("create", "update", "replace", "delete", "import")


_ACTIONS: Mapping[tuple[str, ...], Action] = {
    ("create",): "create",
    ("update",): "update",
    ("delete", "create"): "replace",
    ("create", "delete"): "replace",
    ("delete",): "delete",
    ("read",): "read",
    ("no-op",): "no-op",
}


# Destructive first: an operator skimming a plan must see what is lost before what is added.
_DISPLAY_ORDER: Mapping[str, int] = {
    "delete": 0,
    "replace": 1,
    "create": 2,
    "update": 3,
    "import": 4,
}


# Defence in depth: providers occasionally forget to mark a credential sensitive.
_SECRET_NAME = re.compile(r"pass|secret|token|key|cert|uri|user_data|private", re.IGNORECASE)


_INDEX_SUFFIX = re.compile(r'\[(?:\d+|"(?:[^"\\]|\\.)*")\]$')


_MAX_VALUE_CHARS = 60


_MAX_ELEMENT_CHARS = 40


UNKNOWN = "(known after apply)"


PROTOCOL_ORDER: Mapping[str, int] = {"tcp": 0, "udp": 1, "icmp": 2}


# A firewall's rule lists: each rule is one element (protocol, ports, peers), told as added and
# removed rules rather than as an unreadable list of objects. Peers by kind, as the provider
# names them: addresses as they are, the rest prefixed with what they are.
_RULE_PEERS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "inbound_rule": (
        ("source_addresses", ""),
        ("source_droplet_ids", "droplet "),
        ("source_tags", "tag "),
        ("source_load_balancer_uids", "load balancer "),
        ("source_kubernetes_ids", "kubernetes "),
    ),
    "outbound_rule": (
        ("destination_addresses", ""),
        ("destination_droplet_ids", "droplet "),
        ("destination_tags", "tag "),
        ("destination_load_balancer_uids", "load balancer "),
        ("destination_kubernetes_ids", "kubernetes "),
    ),
}


RULE_ATTRS = frozenset(_RULE_PEERS)


_MAX_RULE_CHARS = 240


@dataclass(frozen=True)
class FirewallRule:
    """One inbound or outbound firewall rule: ``ports`` is ``"all"`` for every port of a
    tcp/udp rule, ``""`` for a protocol without ports (ICMP); ``peers`` its sources (inbound)
    or destinations (outbound), sorted."""

    direction: Literal["inbound", "outbound"]
    protocol: str
    ports: str
    peers: tuple[str, ...]

    def render(self) -> str:
        """``tcp 22 from 10.9.0.0/24, droplet 4123``; ``icmp to 0.0.0.0/0, ::/0``."""
        where = "from" if self.direction == "inbound" else "to"
        head = " ".join(p for p in (self.protocol or "?", self.ports) if p)
        text = f"{head} {where} {', '.join(self.peers) or 'nowhere'}"
        text = json.dumps(text, ensure_ascii=True)[1:-1]  # ASCII, no control characters
        return text if len(text) <= _MAX_RULE_CHARS else text[: _MAX_RULE_CHARS - 3] + "..."

    def sort_key(self) -> tuple[object, ...]:
        """tcp, udp, icmp; then by port as a number (22 before 443 before 8000-8010)."""
        first = self.ports.split("-", 1)[0]
        port = int(first) if first.isdigit() else -1
        order = PROTOCOL_ORDER.get(self.protocol, 9)
        return (self.direction, order, self.protocol, port, self.ports, self.peers)


@dataclass(frozen=True)
class AttrDiff:
    """A displayable before → after of one top-level attribute (never a sensitive value).

    A list or set of scalars is also told element by element (``elements``: what is added and
    removed), so a long tag list still says what changes; ``before``/``after`` are then the
    whole lists, or ``[N items]`` when too long to show."""

    attr: str
    before: str
    after: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    elements: bool = False
    # A firewall's inbound_rule / outbound_rule: the rules added and removed (``added`` and
    # ``removed`` are their renderings)
    added_rules: tuple[FirewallRule, ...] = ()
    removed_rules: tuple[FirewallRule, ...] = ()

    def render(self) -> str:
        if self.elements:
            return f"{self.attr} {self.element_changes()}"
        return f"{self.attr} {self.before} → {self.after}"

    def element_changes(self) -> str:
        """``+owner:alice, -role:batch +role:jobs``: sorted, a removed and an added element
        with the same ``key:`` prefix side by side (a tag's value changing). Firewall rules:
        ``-tcp 22 from 0.0.0.0/0; +tcp 22 from 10.9.0.0/24`` (a rule holds commas)."""
        if self.attr in RULE_ATTRS:
            rules = [f"-{r}" for r in self.removed] + [f"+{r}" for r in self.added]
            return "; ".join(rules) or "reordered"
        signed: list[tuple[str, str]] = sorted(
            [(e, "-") for e in self.removed] + [(e, "+") for e in self.added],
            key=lambda pair: (pair[0].split(":", 1)[0], pair[1] == "+", pair[0]),
        )
        parts: list[str] = []
        for i, (element, sign) in enumerate(signed):
            previous = signed[i - 1] if i else None
            pairs = (
                previous is not None
                and sign == "+"
                and previous[1] == "-"
                and ":" in element
                and element.split(":", 1)[0] == previous[0].split(":", 1)[0]
            )
            text = f"{sign}{element}"
            if pairs:
                parts[-1] += f" {text}"
            else:
                parts.append(text)
        return ", ".join(parts) or "reordered"


@dataclass(frozen=True)
class Change:
    """One resource the plan creates, updates, replaces, deletes or imports."""

    address: str
    type: str
    name: str
    action: Action
    replace_paths: tuple[str, ...] = ()
    updated_attrs: tuple[str, ...] = ()
    importing: bool = False
    import_id: str = ""
    reason: str = ""
    diffs: tuple[AttrDiff, ...] = ()
    resize: Resize | None = None
    ports_opened: tuple[PublicPort, ...] = ()
    ports_closed: tuple[PublicPort, ...] = ()
    # Ports this firewall takes over from another firewall of the same droplet in this plan
    # (left out of ports_opened here and ports_closed there: nothing opens or closes).
    ports_moved: tuple[PublicPort, ...] = ()
    ssh: SshChange | None = None  # SSH narrowed or closed by this firewall change
    # Where ``name`` came from: the manifests (via rendering), the state's ``name`` attribute,
    # or nowhere (it is the address). A firewall's manifest name is its droplet's.
    name_source: NameSource = "manifest"
    # Against a change made outside Terraform at the same address (none: both empty): the
    # attributes this change sets to a value other than the one before that outside change
    # (names, and the displayable ones as before-outside → planned). Empty: a true undo.
    differs: tuple[str, ...] = ()
    outside_diffs: tuple[AttrDiff, ...] = ()
    # Whom the change leaves without access (a database firewall's removed rules, its hosts not
    # tagged yet, every unlisted client when its first rules come): told by trusted.py; None
    # when nobody looked (the guard then refuses what the kind could cut).
    cuts_off: tuple[str, ...] | None = None

    @property
    def base_address(self) -> str:
        return strip_index(self.address)

    @property
    def label(self) -> str:
        return self.address if self.name == self.address else f"{self.address} ({self.name})"

    def diff(self, attr: str) -> AttrDiff | None:
        return next((d for d in self.diffs if d.attr == attr), None)


@dataclass(frozen=True)
class NameDrift:
    """A droplet whose live name differs from its manifest name (renames are ignore_changes)."""

    address: str
    manifest_name: str
    live_name: str


@dataclass(frozen=True)
class CreateSettings:
    """What infra-apply.toml asks a droplet to be created with: SSH key names, monitoring and
    the SHA-1 of its user data (what the provider keeps in state). All are ForceNew and in
    ``ignore_changes``, so they never change a droplet that exists."""

    ssh_keys: tuple[str, ...] = ()
    monitoring: bool = False
    user_data_sha1: str | None = None
    # The cluster whose VPC the droplet is created in (``Droplet.vpc_cluster``): ForceNew and
    # ignored too, so a droplet created elsewhere stays where it is and the plan notes it.
    vpc_cluster: str | None = None


@dataclass(frozen=True)
class SettingsDrift:
    """A droplet that keeps what it was created with although infra-apply.toml now says otherwise
    (``settings``: among ``ssh_keys``, ``monitoring``, ``user_data``); new droplets get the new."""

    address: str
    name: str
    settings: tuple[str, ...]
    # With ``vpc_uuid`` among ``settings``: the cluster whose VPC (in the droplet's region) it
    # is not in, so that cluster's private host is out of its reach.
    vpc_cluster: str | None = None


@dataclass(frozen=True)
class ProducerPlan:
    producer: str
    changes: tuple[Change, ...] = ()
    drift: tuple[NameDrift, ...] = ()
    settings_drift: tuple[SettingsDrift, ...] = ()
    # What refresh found changed behind Terraform's back (``resource_drift``, noise left out):
    # not this change's doing, but what the plan's changes may undo (see ``answer``).
    outside: tuple[Change, ...] = ()
    # ssh_from = "mesh": droplets whose SSH stays open from bootstrap_from in this plan, until
    # they are in mesh-hosts.json (the plan's ssh_bootstrap_* variables)
    ssh_bootstrap: tuple[str, ...] = ()

    @property
    def counts(self) -> dict[CountedAction, int]:
        counts: dict[CountedAction, int] = dict.fromkeys(COUNTED_ACTIONS, 0)
        for change in self.changes:
            if change.action in counts:
                counts[change.action] += 1
            if change.importing and change.action != "import":
                counts["import"] += 1
        return counts

    @property
    def has_changes(self) -> bool:
        return any(c.action in COUNTED_ACTIONS for c in self.changes)


def display_order(changes: Iterable[Change]) -> list[Change]:
    return sorted(changes, key=lambda c: (_DISPLAY_ORDER.get(c.action, 9), natural_key(c.address)))


def strip_index(address: str) -> str:
    """``digitalocean_droplet.ct_gpu[0]`` → ``digitalocean_droplet.ct_gpu``."""
    return _INDEX_SUFFIX.sub("", address)


def classify(actions: Sequence[str], importing: bool) -> Action:
    action = _ACTIONS.get(tuple(actions))
    if action is None:
        raise InfraApplyError(
            f"terraform planned actions {list(actions)!r}, which infra-apply does not know; "
            "refusing to summarise or guard this plan"
        )
    return "import" if action == "no-op" and importing else action


def check_envelope(producer: str, plan: JsonObject) -> None:
    version = str(plan.get("format_version", ""))
    if not version.startswith("1."):
        raise InfraApplyError(
            f"producer {producer}: unsupported terraform plan format_version {version!r} (expected 1.x)"
        )
    if plan.get("errored") is True:
        raise TerraformError(f"producer {producer}: terraform reported errors; the plan is partial")


def configured_attrs(plan: JsonObject) -> dict[str, frozenset[str]]:
    """Index-less address → the attributes its configuration sets (``configuration`` section).

    An attribute the configuration does not set is computed by the provider; when an update
    leaves it unknown, that is a side effect of the change, not a change of its own."""
    root = json_dict(json_dict(plan.get("configuration")).get("root_module"))
    return {
        str(res.get("address", "")): frozenset(json_dict(res.get("expressions")))
        for res in map(json_dict, json_list(root.get("resources")))
    }


def parse_change(
    rc: JsonObject, names: Mapping[str, str], configured: Mapping[str, frozenset[str]] | None
) -> Change | None:
    """One ``resource_changes`` (or ``resource_drift``) entry as a change, ``None`` for a
    no-op or a read; ``configured``: the attributes each resource's configuration sets
    (``None``: not known)."""
    change = json_dict(rc.get("change"))
    importing = json_dict(change.get("importing")) if change.get("importing") is not None else None
    action = classify([str(a) for a in json_list(change.get("actions"))], importing is not None)
    if action in ("no-op", "read"):
        return None
    address = str(rc.get("address", ""))
    before, after = json_dict(change.get("before")), json_dict(change.get("after"))
    unknown = json_dict(change.get("after_unknown"))
    sensitive = Sensitivity(change.get("before_sensitive"), change.get("after_sensitive"))
    settable = None if configured is None else configured.get(strip_index(address))
    attrs = _updated_attrs(action, before, after, unknown, settable)
    why = str(rc.get("action_reason") or ("deposed" if rc.get("deposed") else ""))
    rtype = str(rc.get("type", ""))
    name, source = _human_name(address, names, before, after, sensitive)
    return Change(
        address=address,
        type=rtype,
        name=name,
        name_source=source,
        action=action,
        replace_paths=tuple(_path_text(p) for p in json_list(change.get("replace_paths"))),
        updated_attrs=attrs,
        importing=importing is not None,
        import_id=str(importing.get("id") or "") if importing is not None else "",
        reason=why,
        diffs=attr_diffs(attrs, before, after, unknown, sensitive),
    )


def _human_name(
    address: str,
    names: Mapping[str, str],
    before: JsonObject,
    after: JsonObject,
    sensitive: Sensitivity,
) -> tuple[str, NameSource]:
    for key in (address, strip_index(address)):
        if key in names:
            return names[key], "manifest"
    # Removed from the manifests: the state still knows what the resource was called.
    if not sensitive.hides("name"):
        for values in (before, after):
            name = values.get("name")
            if isinstance(name, str) and name:
                return name, "state"
    return address, "address"


def _updated_attrs(
    action: Action,
    before: JsonObject,
    after: JsonObject,
    unknown: JsonObject,
    settable: frozenset[str] | None,
) -> tuple[str, ...]:
    """What an update or replacement changes. ``settable``: the attributes the configuration
    sets (``None``: not known, every unknown counts)."""
    if action not in ("update", "replace"):
        return ()
    changed: list[str] = []
    side_effects: list[str] = []
    for attr in sorted(set(before) | set(after) | set(unknown)):
        if contains_true(unknown.get(attr)):
            # A replacement recomputes every computed attribute; only an update's unknowns
            # (e.g. a firewall's droplet_ids after its droplet is rebuilt) tell the operator much,
            # and only those the configuration sets: a computed one (a resized droplet's disk,
            # price) going unknown is the provider recomputing it, not a change of its own.
            if action == "update":
                (changed if settable is None or attr in settable else side_effects).append(attr)
        elif before.get(attr) != after.get(attr):
            changed.append(attr)
    # Terraform says the resource changes: never hide everything it would change.
    return tuple(changed or side_effects)


def _path_text(path: object) -> str:
    """``["inbound_rule", 0, "port_range"]`` → ``inbound_rule[0].port_range``."""
    text = ""
    for step in json_list(path):
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
    return text


class Sensitivity:
    """Terraform's ``*_sensitive`` markers: ``true`` for the whole object or per attribute."""

    def __init__(self, before: object, after: object) -> None:
        self._markers = (before, after)

    def hides(self, attr: str) -> bool:
        for marker in self._markers:
            if marker is True:
                return True
            if isinstance(marker, Mapping) and contains_true(marker.get(attr)):
                return True
        return False


def attr_diffs(
    attrs: Sequence[str],
    before: JsonObject,
    after: JsonObject,
    unknown: JsonObject,
    sensitive: Sensitivity,
) -> tuple[AttrDiff, ...]:
    diffs = []
    for attr in attrs:
        if sensitive.hides(attr) or _SECRET_NAME.search(attr):
            continue
        if not contains_true(unknown.get(attr)):
            listed = _rule_diff(attr, before.get(attr), after.get(attr))
            listed = listed or _list_diff(attr, before.get(attr), after.get(attr))
            if listed is not None:
                diffs.append(listed)
                continue
        old = _display_value(before.get(attr))
        new = "(known after apply)" if contains_true(unknown.get(attr)) else None
        new = new or _display_value(after.get(attr))
        if old is not None and new is not None:
            diffs.append(AttrDiff(attr, old, new))
    return tuple(diffs)


def _rule_diff(attr: str, before: object, after: object) -> AttrDiff | None:
    """A firewall rule list told rule by rule: what is added and what removed (a rule whose
    ports or peers change is one removed and one added)."""
    if attr not in _RULE_PEERS:
        return None
    old, new = _rules(attr, before), _rules(attr, after)
    if old is None or new is None:
        return None
    removed = sorted((Counter(old) - Counter(new)).elements(), key=FirewallRule.sort_key)
    added = sorted((Counter(new) - Counter(old)).elements(), key=FirewallRule.sort_key)
    return AttrDiff(
        attr,
        f"[{len(old)} rules]",
        f"[{len(new)} rules]",
        added=tuple(r.render() for r in added),
        removed=tuple(r.render() for r in removed),
        elements=True,
        added_rules=tuple(added),
        removed_rules=tuple(removed),
    )


def _rules(attr: str, value: object) -> list[FirewallRule] | None:
    """The rules of a rule list (``null``: none); ``None`` when it is not a list of rules."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(r, Mapping) for r in value):
        return None
    direction: Literal["inbound", "outbound"] = "inbound" if attr == "inbound_rule" else "outbound"
    rules = []
    for rule in map(json_dict, value):
        protocol = str(rule.get("protocol") or "").lower()
        peers = sorted(
            f"{prefix}{peer}" for key, prefix in _RULE_PEERS[attr] for peer in json_list(rule.get(key))
        )
        ports = _ports_text(protocol, rule.get("port_range"))
        rules.append(FirewallRule(direction, protocol, ports, tuple(peers)))
    return rules


def _ports_text(protocol: str, value: object) -> str:
    if protocol not in ("tcp", "udp"):
        return ""
    text = str(value or "").strip().lower()
    return "all" if text in ("", "0", "all") else text


def _list_diff(attr: str, before: object, after: object) -> AttrDiff | None:
    """A list/set of scalars (``null`` counting as empty) told by what is added and removed."""
    old, new = _scalars(before), _scalars(after)
    if old is None or new is None or (before is None and after is None):
        return None
    removed = Counter(old) - Counter(new)
    added = Counter(new) - Counter(old)
    if not removed and not added and old == new:
        return None  # null → [] and the like: nothing to tell element by element
    return AttrDiff(
        attr,
        _display_list(old),
        _display_list(new),
        added=tuple(sorted(_element(e) for e in added.elements())),
        removed=tuple(sorted(_element(e) for e in removed.elements())),
        elements=True,
    )


def _scalars(value: object) -> list[str | int | float | bool] | None:
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(v, str | int | float | bool) for v in value):
        return list(value)
    return None


def _element(value: object) -> str:
    """One element, ASCII-only, cut when very long (a tag may take 255 characters)."""
    text = value if isinstance(value, str) else json.dumps(value)
    text = json.dumps(text, ensure_ascii=True)[1:-1]
    return text if len(text) <= _MAX_ELEMENT_CHARS else text[: _MAX_ELEMENT_CHARS - 3] + "..."


def _display_list(values: Sequence[object]) -> str:
    text = json.dumps(list(values), ensure_ascii=True)
    return text if len(text) <= _MAX_VALUE_CHARS else f"[{len(values)} items]"


def _display_value(value: object) -> str | None:
    """A short, ASCII-only rendering of a scalar or list of scalars; ``None`` when not shown."""
    scalar = (str, int, float, bool, type(None))
    shown = isinstance(value, scalar) or (
        isinstance(value, list) and all(isinstance(v, scalar) for v in value)
    )
    if not shown:
        return None
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= _MAX_VALUE_CHARS else None


def name_drift(plan: JsonObject, names: Mapping[str, str]) -> Iterator[NameDrift]:
    root = json_dict(json_dict(json_dict(plan.get("prior_state")).get("values")).get("root_module"))
    for res in module_resources(root):
        if res.get("mode") != "managed" or res.get("type") != kinds.DROPLET.type:
            continue
        address = str(res.get("address", ""))
        manifest = names.get(address, names.get(strip_index(address)))
        live = json_dict(res.get("values")).get("name")
        if manifest is not None and isinstance(live, str) and live != manifest:
            yield NameDrift(address=address, manifest_name=manifest, live_name=live)


def settings_drift(
    plan: JsonObject,
    names: Mapping[str, str],
    wanted: Mapping[str, CreateSettings],
    changes: Sequence[Change],
) -> Iterator[SettingsDrift]:
    """Droplets in state whose create-time settings differ from what is wanted now.

    State keeps what a droplet was created with (``ssh_keys`` as key ids and ``user_data`` as
    its SHA-1 are never read back; ``monitoring`` is). Key names become ids through the
    ``digitalocean_ssh_key`` data sources the plan read; a droplet the plan replaces or
    destroys anyway gets no note (a new one gets the new settings).
    """
    root = json_dict(json_dict(json_dict(plan.get("prior_state")).get("values")).get("root_module"))
    resources = list(module_resources(root))
    key_ids = {
        str(values.get("name")): str(values.get("id"))
        for res in resources
        if res.get("mode") == "data" and res.get("type") == kinds.SSH_KEY.type
        for values in (json_dict(res.get("values")),)
    }
    cluster_vpcs = _cluster_vpcs(resources)
    gone = {c.address for c in changes if c.action in ("replace", "delete")}
    for res in resources:
        address = str(res.get("address", ""))
        want = wanted.get(strip_index(address))
        if res.get("mode") != "managed" or want is None or address in gone:
            continue
        live = json_dict(res.get("values"))
        differs = []
        ids = [key_ids.get(k) for k in want.ssh_keys]
        if all(i is not None for i in ids) and set(ids) != {str(k) for k in json_list(live.get("ssh_keys"))}:
            differs.append("ssh_keys")
        if bool(live.get("monitoring")) != want.monitoring:
            differs.append("monitoring")
        if not _same_user_data(live.get("user_data"), want.user_data_sha1):
            differs.append("user_data")
        outside = _outside_vpc(live, want.vpc_cluster, cluster_vpcs)
        if outside:
            differs.append("vpc_uuid")
        if differs:
            name = names.get(address, names.get(strip_index(address), address))
            yield SettingsDrift(
                address=address,
                name=name,
                settings=tuple(differs),
                vpc_cluster=want.vpc_cluster if outside else None,
            )


def _cluster_vpcs(resources: Sequence[JsonObject]) -> dict[str, tuple[str, str]]:
    """Cluster name -> (region, private_network_uuid), from the cluster data sources the plan read."""
    out = {}
    for res in resources:
        values = json_dict(res.get("values"))
        region, vpc = values.get("region"), values.get("private_network_uuid")
        if res.get("mode") == "data" and res.get("type") == kinds.CLUSTER.type and region and vpc:
            out[str(values.get("name"))] = (str(region).lower(), str(vpc))
    return out


def _outside_vpc(live: JsonObject, cluster: str | None, vpcs: Mapping[str, tuple[str, str]]) -> bool:
    """A running droplet outside the VPC of its cluster, when the cluster is in its region (in
    another region it is rendered into that region's default VPC, as it was created)."""
    if cluster is None or cluster not in vpcs or not live.get("vpc_uuid"):
        return False
    region, vpc = vpcs[cluster]
    return str(live.get("region", "")).lower() == region and str(live["vpc_uuid"]) != vpc


def _same_user_data(live: object, sha1: str | None) -> bool:
    if not isinstance(live, str) or not live:
        return sha1 is None
    if re.fullmatch(r"[0-9a-f]{40}", live):
        return live == sha1
    # Very old states kept the text itself.
    return hashlib.sha1(live.encode("utf-8")).hexdigest() == sha1


def module_resources(module: JsonObject) -> Iterator[JsonObject]:
    for res in json_list(module.get("resources")):
        yield json_dict(res)
    for child in json_list(module.get("child_modules")):
        yield from module_resources(json_dict(child))


def quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)


def natural_key(text: str) -> tuple[tuple[int, str], ...]:
    parts = re.split(r"(\d+)", text)
    return tuple((int(p), "") if i % 2 else (0, p) for i, p in enumerate(parts))


def contains_true(marker: object) -> bool:
    if marker is True:
        return True
    if isinstance(marker, Mapping):
        return any(contains_true(v) for v in marker.values())
    if isinstance(marker, list):
        return any(contains_true(v) for v in marker)
    return False


def json_dict(value: object) -> JsonObject:
    return value if isinstance(value, Mapping) else {}


def json_list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


SSH_VARIABLE_PREFIX = "ssh_bootstrap_"  # render.ssh_variable: + the droplet's address


def ssh_bootstrap(plan: JsonObject, names: Mapping[str, str]) -> tuple[str, ...]:
    """The droplets whose SSH the plan keeps open from bootstrap_from (its variables)."""
    found = []
    for var, entry in json_dict(plan.get("variables")).items():
        # a -var value is shown as given: the string "true" (a tfvars file would give true)
        if var.startswith(SSH_VARIABLE_PREFIX) and json_dict(entry).get("value") in (True, "true"):
            address = kinds.DROPLET.address(var.removeprefix(SSH_VARIABLE_PREFIX))
            found.append(names.get(address, address))
    return tuple(sorted(found))
