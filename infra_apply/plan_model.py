"""What a Terraform plan does, as typed data: parsed from ``terraform show -json <planfile>``.

Pure functions over the decoded output of ``terraform show -json`` (plan format 1.x) and the
address → human-name map produced by rendering. Nothing here runs Terraform or reads files, so
the guard (``infra_apply.guard``) and every report format (``infra_apply.report``) work on
fixtures alone. Only this module looks at Terraform's JSON; everything after it sees the
frozen dataclasses below.

Decisions a caller relies on:

* A plain ``no-op`` and a data-source ``read`` are not changes: ``parse_plan`` drops them.
  A ``no-op`` that imports is the action ``"import"``. A change that imports *and* updates
  (or replaces) keeps ``update``/``replace`` as its action with ``importing=True`` and is counted
  under both, like Terraform's own "1 to import, 1 to change".
* Action lists this module does not know (e.g. ``forget`` from a ``removed`` block, which
  infra-apply never renders) raise ``InfraApplyError``: the guard must not wave through what it
  cannot judge.
* Two kinds of update matter beyond their attributes: a droplet whose ``size`` changes is a
  ``Resize`` (the provider powers it off, resizes it and powers it on; the disk grows one way,
  and DigitalOcean refuses a size whose disk is below the droplet's current disk),
  and a firewall change lists the ``PublicPort`` s it opens or closes to the whole internet
  (an inbound rule with a ``/0`` source: ``0.0.0.0/0`` or ``::/0``).
* A change "undoes" one made outside Terraform only by value: each attribute it sets gets the
  value recorded before that outside change (a re-create: the deleted object as it was).
* Secrets: resource names, addresses and attribute *names* are kept; an attribute *value*
  is kept (as an ``AttrDiff``) only when it is a short scalar (or short list of scalars) that
  Terraform did not mark sensitive (``before_sensitive``/``after_sensitive``) and whose name does
  not look like a credential. Everything else is known by name only, so no format can leak it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

from infra_apply import kinds
from infra_apply.errors import InfraApplyError, TerraformError
from infra_apply.prices import DISKS_GB

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

_REPLACE_REASONS: Mapping[str, str] = {
    "replace_because_tainted": "tainted by a failed apply, must be replaced",
    "replace_by_request": "replacement requested with -replace",
    "replace_by_triggers": "replace_triggered_by forces replacement",
}
_DELETE_REASONS: Mapping[str, str] = {
    "delete_because_no_resource_config": "no longer in the manifests",
    "delete_because_count_index": "its count was lowered",
    "delete_because_each_key": "its for_each key is gone",
    "delete_because_no_module": "its module is gone",
    "delete_because_wrong_repetition": "its count/for_each changed",
    "delete_because_no_move_target": "its moved target is gone",
    "deposed": "a deposed object left by an interrupted replacement",
}

# Defence in depth: providers occasionally forget to mark a credential sensitive.
_SECRET_NAME = re.compile(r"pass|secret|token|key|cert|uri|user_data|private", re.IGNORECASE)
_INDEX_SUFFIX = re.compile(r'\[(?:\d+|"(?:[^"\\]|\\.)*")\]$')
_MAX_VALUE_CHARS = 60
_MAX_ELEMENT_CHARS = 40
_UNKNOWN = "(known after apply)"
_ALL_PORTS = range(1, 65536)
_NO_PORTS = range(0, 1)  # ICMP and other port-less protocols: opening the protocol is the change
_PROTOCOL_ORDER: Mapping[str, int] = {"tcp": 0, "udp": 1, "icmp": 2}


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
        order = _PROTOCOL_ORDER.get(self.protocol, 9)
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
class Resize:
    """A droplet's size changing in place (``after`` is ``None`` while unknown).

    The real provider powers the droplet off, resizes it and powers it on: downtime. With
    ``resize_disk`` (the provider's default; ``disk_grows`` here) the disk grows to the new size,
    and DigitalOcean never shrinks a disk: a resize to a size whose disk is smaller than the
    droplet's current disk (``disk_before``, from state, else the size table) is refused (422).
    """

    before: str
    after: str | None
    disk_grows: bool = True
    disk_before: int | None = None  # GB, the droplet's disk now
    disk_after: int | None = None  # GB, the new size's disk (None: unknown size or slug)

    def render(self) -> str:
        after = _UNKNOWN if self.after is None else _quoted(self.after)
        return f"size {_quoted(self.before)} → {after}"

    @property
    def fails(self) -> bool:
        """DigitalOcean refuses it: the new size's disk is smaller than the disk it has."""
        if self.disk_before is None or self.disk_after is None:
            return False
        return self.disk_after < self.disk_before

    @property
    def grows(self) -> bool:
        """The disk grows, one way (unknown sizes are assumed to grow: the worse case)."""
        if not self.disk_grows or self.fails:
            return False
        return self.disk_before is None or self.disk_after is None or self.disk_after > self.disk_before

    @property
    def effect(self) -> str:
        if self.fails:
            return (
                f"DigitalOcean refuses it (422): {self.after}'s {self.disk_after} GB disk is below the "
                f"droplet's {self.disk_before} GB and a disk never shrinks; replace the droplet for that "
                f"size, or keep {self.before}"
            )
        if self.grows:
            disk = "the disk grows and can never be shrunk back"
        elif self.disk_grows:
            disk = "the disk keeps its size"
        else:
            disk = "the disk keeps its size (resize_disk = false)"
        return f"downtime (powered off, resized, powered on); {disk}"


class PublicPort(NamedTuple):
    """A protocol and port range an inbound rule opens to the whole internet (a ``/0`` source)."""

    protocol: str  # tcp, udp, icmp, or _UNKNOWN when the rules are known only after apply
    ports: str = ""  # "22", "8000-9000"; "" for a protocol without ports

    def __str__(self) -> str:
        return f"{self.ports}/{self.protocol}" if self.ports else self.protocol


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


@dataclass(frozen=True)
class SettingsDrift:
    """A droplet that keeps what it was created with although infra-apply.toml now says otherwise
    (``settings``: among ``ssh_keys``, ``monitoring``, ``user_data``); new droplets get the new."""

    address: str
    name: str
    settings: tuple[str, ...]


@dataclass(frozen=True)
class ProducerPlan:
    producer: str
    changes: tuple[Change, ...] = ()
    drift: tuple[NameDrift, ...] = ()
    settings_drift: tuple[SettingsDrift, ...] = ()
    # What refresh found changed behind Terraform's back (``resource_drift``, noise left out):
    # not this change's doing, but what the plan's changes may undo (see ``answer``).
    outside: tuple[Change, ...] = ()

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


# --------------------------------------------------------------------------------------------
# Reading a change: the order and the words every output shares


def display_order(changes: Iterable[Change]) -> list[Change]:
    return sorted(changes, key=lambda c: (_DISPLAY_ORDER.get(c.action, 9), _natural_key(c.address)))


def verb(change: Change) -> str:
    if change.resize is not None:
        return "resize"
    return "destroy" if change.action == "delete" else change.action


def reason(change: Change, *, with_values: bool) -> str:
    """Why a replace/delete happens, or what a resize costs, in words; attribute values only
    when asked for (a resize always names its sizes: slugs are never secret)."""
    if change.cuts_off:
        return f"cuts off {'; '.join(change.cuts_off)}"
    if change.action == "delete":
        return _DELETE_REASONS.get(change.reason, "will be destroyed")
    if change.resize is not None:
        return f"{change.resize.render()}: {change.resize.effect}"
    if change.action != "replace":
        return ""
    if not change.replace_paths:
        return _REPLACE_REASONS.get(change.reason, "must be replaced")
    parts = []
    for path in change.replace_paths:
        diff = change.diff(path) if with_values else None
        parts.append(diff.render() if diff else path)
    forces = "forces" if len(parts) == 1 else "force"
    return f"{', '.join(parts)} {forces} replacement"


# --------------------------------------------------------------------------------------------
# Changed outside Terraform, and what the plan does about it

# What a resize recomputes: the size says it once.
SIZE_DERIVED = frozenset({"disk", "memory", "vcpus", "price_hourly", "price_monthly"})

Response = Literal["recreates", "replaces", "destroys", "reverts", "partly reverts", "changes", "keeps"]


class Answer(NamedTuple):
    """What a plan does about one change made outside Terraform."""

    response: Response
    reverted: tuple[str, ...] = ()  # attributes the plan sets back to their value before it
    kept: tuple[str, ...] = ()  # attributes the plan leaves as refresh found them
    change: Change | None = None  # the plan's change of that resource, if any
    # Attributes the plan sets to a value they had neither before nor after the outside change
    # (for a re-create: where the new droplet differs from the deleted one).
    changed: tuple[str, ...] = ()


def drifted_attrs(outside: Change) -> tuple[str, ...]:
    """The attributes an outside change touched, a resize's derived ones folded into ``size``."""
    attrs = outside.updated_attrs
    if "size" in attrs:
        return tuple(a for a in attrs if a not in SIZE_DERIVED)
    return attrs


def answer(plan: ProducerPlan, outside: Change) -> Answer:
    mine = next((c for c in plan.changes if c.address == outside.address), None)
    if mine is None:
        return Answer("keeps", kept=drifted_attrs(outside))
    if outside.action == "delete":
        if mine.action != "create":
            return Answer("keeps", change=mine)
        return Answer("recreates", change=mine, changed=mine.differs)
    if mine.action in ("replace", "delete"):
        return Answer("replaces" if mine.action == "replace" else "destroys", change=mine)
    attrs = drifted_attrs(outside)
    touched = [a for a in attrs if a in mine.updated_attrs]
    reverted = tuple(a for a in touched if a not in mine.differs)
    changed = tuple(a for a in touched if a in mine.differs)
    kept = tuple(a for a in attrs if a not in mine.updated_attrs)
    response: Response
    if reverted:
        response = "partly reverts" if kept or changed else "reverts"
    else:
        response = "changes" if changed else "keeps"
    return Answer(response, reverted, kept, mine, changed)


def undoes(plan: ProducerPlan, change: Change) -> Change | None:
    """The outside change a plan's change sets right, if it is one: re-creates a deleted
    resource as it was, or sets the attributes changed outside back to their values from
    before (and changes nothing else). Judged by value: a pull request that changes the same
    attribute to something new undoes nothing."""
    outside = next((o for o in plan.outside if o.address == change.address), None)
    if outside is None:
        return None
    if outside.action == "delete":
        return outside if change.action == "create" and not change.differs else None
    if change.action != "update" or change.importing:
        return None
    drifted = drifted_attrs(outside)
    mine = drifted_attrs(change) if "size" in drifted else change.updated_attrs
    back = mine and set(mine) <= set(drifted) and not set(mine) & set(change.differs)
    return outside if back else None


def only_undoes_outside(plan: ProducerPlan) -> bool:
    """Every change of the plan sets right a change made outside Terraform: applying it
    brings nothing new."""
    counted = [c for c in plan.changes if c.action in COUNTED_ACTIONS]
    return bool(counted) and all(undoes(plan, c) is not None for c in counted)


# --------------------------------------------------------------------------------------------
# Parsing


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


def parse_plan(
    producer: str,
    plan: JsonObject,
    names: Mapping[str, str],
    wanted: Mapping[str, CreateSettings] | None = None,
) -> ProducerPlan:
    """Summarise one producer's plan; ``names`` maps index-less addresses to human names,
    ``wanted`` index-less droplet addresses to their create-time settings."""
    _check_envelope(producer, plan)
    configured = _configured_attrs(plan)
    before_outside = _before_outside(plan)
    changes = [
        _against_outside(change, _dict(rc), before_outside, configured)
        for rc in _list(plan.get("resource_changes"))
        if (change := _parse_change(_dict(rc), names, configured)) is not None
    ]
    changes = _bare_droplets(_firewalls_named_by_droplet(changes, plan, names), plan)
    changes.sort(key=lambda c: (_natural_key(c.address), c.action, c.reason))
    drift = sorted(_name_drift(plan, names), key=lambda d: _natural_key(d.address))
    settings = sorted(
        _settings_drift(plan, names, wanted or {}, changes), key=lambda d: _natural_key(d.address)
    )
    return ProducerPlan(
        producer=producer,
        changes=tuple(changes),
        drift=tuple(drift),
        settings_drift=tuple(settings),
        outside=_outside(plan, names),
    )


def _outside(plan: JsonObject, names: Mapping[str, str]) -> tuple[Change, ...]:
    """``resource_drift`` as changes (before: what Terraform last knew, after: what refresh
    found), the provider's known noise left out. Ordinary and refresh-only plans alike."""
    entries = [_quiet(_dict(e)) for e in _list(plan.get("resource_drift")) if not is_noise(_dict(e))]
    found = [c for e in entries if (c := _parse_change(e, names, None)) is not None]
    found = _firewalls_named_by_droplet(found, plan, names)
    return tuple(sorted(found, key=lambda c: (_natural_key(c.address), c.action)))


def _before_outside(plan: JsonObject) -> dict[str, JsonObject]:
    """Address → the values Terraform recorded before each change made outside it."""
    return {
        str(entry.get("address", "")): _dict(_dict(entry.get("change")).get("before"))
        for entry in map(_dict, _list(plan.get("resource_drift")))
        if not is_noise(entry)
    }


def _against_outside(
    change: Change,
    rc: JsonObject,
    before_outside: Mapping[str, JsonObject],
    configured: Mapping[str, frozenset[str]],
) -> Change:
    """``change`` with what it sets to a value other than the one recorded before the change
    made outside Terraform at its address (``differs``); unchanged when there is none.

    An update is judged on the attributes it changes; a create (after a deletion outside
    Terraform) on every attribute its configuration sets that the deleted object had. A
    planned value known only after apply (a firewall's ``droplet_ids`` following a re-created
    droplet) follows what it is computed from, which is judged on its own."""
    recorded = before_outside.get(change.address)
    if recorded is None or change.action not in ("update", "create"):
        return change
    values = _dict(rc.get("change"))
    after, unknown = _dict(values.get("after")), _dict(values.get("after_unknown"))
    if change.action == "update":
        attrs: Sequence[str] = change.updated_attrs
    else:
        settable = configured.get(strip_index(change.address), frozenset(after))
        attrs = sorted(a for a in settable if a in recorded and after.get(a) is not None)
    differs = tuple(
        a
        for a in attrs
        if not _contains_true(unknown.get(a)) and not _same_value(recorded.get(a), after.get(a))
    )
    if not differs:
        return change
    sensitive = _Sensitivity(values.get("before_sensitive"), values.get("after_sensitive"))
    shown = _diffs(differs, recorded, after, unknown, sensitive)
    return replace(change, differs=differs, outside_diffs=shown)


def _same_value(old: object, new: object) -> bool:
    """Equal, a set (tags, ssh_keys: lists in JSON) compared regardless of order."""
    if isinstance(old, list) and isinstance(new, list):
        return sorted(map(_canonical, old)) == sorted(map(_canonical, new))
    return old == new


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def _firewalls_named_by_droplet(
    changes: Sequence[Change], plan: JsonObject, names: Mapping[str, str]
) -> list[Change]:
    """A firewall the manifests no longer name, told by its droplet: the droplet its state's
    ``droplet_ids`` hold (one firewall per droplet), by manifest name, else its state name."""
    root = _dict(_dict(_dict(plan.get("prior_state")).get("values")).get("root_module"))
    droplets: dict[str, str] = {}
    for res in _module_resources(root):
        values = _dict(res.get("values"))
        if res.get("mode") == "managed" and res.get("type") == kinds.DROPLET.type and values.get("id"):
            address = str(res.get("address", ""))
            name = names.get(address, names.get(strip_index(address), values.get("name")))
            if isinstance(name, str) and name:
                droplets[str(values["id"])] = name
    fixed = []
    for change in changes:
        if change.type == kinds.FIREWALL.type and change.name_source != "manifest":
            ids = _list(_firewall_state(root, change.address).get("droplet_ids"))
            owners = sorted({droplets[str(i)] for i in ids if str(i) in droplets})
            if len(owners) == 1:
                change = replace(change, name=owners[0], name_source="manifest")
        fixed.append(change)
    return fixed


def _bare_droplets(changes: Sequence[Change], plan: JsonObject) -> list[Change]:
    """A firewall destroyed while its droplet stays (or is replaced) and no new firewall takes
    that droplet's name: the droplet is left with no firewall, and DigitalOcean then lets every
    port through. That is every port opened; a firewall going with its droplet closes nothing
    anyone could reach, and is no call-out."""
    root = _dict(_dict(_dict(plan.get("prior_state")).get("values")).get("root_module"))
    droplets = {
        str(_dict(res.get("values")).get("id")): str(res.get("address", ""))
        for res in _module_resources(root)
        if res.get("mode") == "managed" and res.get("type") == kinds.DROPLET.type
    }
    gone = {c.address for c in changes if c.type == kinds.DROPLET.type and c.action == "delete"}
    guarded = {
        c.name for c in changes if c.type == kinds.FIREWALL.type and c.action in ("create", "replace")
    }
    everything = {"tcp": set(_ALL_PORTS), "udp": set(_ALL_PORTS), "icmp": set(_NO_PORTS)}
    found = []
    for change in changes:
        dropped = change.type == kinds.FIREWALL.type and change.action == "delete"
        if dropped and change.name not in guarded:
            values = _firewall_state(root, change.address)
            ids = [str(i) for i in _list(values.get("droplet_ids"))]
            if any(i in droplets and droplets[i] not in gone for i in ids):
                opened = _ports_only_in(everything, _exposure(values.get("inbound_rule")))
                change = replace(change, ports_opened=opened)
        found.append(change)
    return found


def _firewall_state(root: JsonObject, address: str) -> JsonObject:
    found = next((r for r in _module_resources(root) if r.get("address") == address), {})
    return _dict(_dict(found).get("values"))


def is_noise(entry: JsonObject) -> bool:
    """A firewall whose only difference is ``tags`` going from null to ``[]``: the real
    provider's refresh reports it on every firewall (docs/commands.md, drift), and it changes nothing."""
    if entry.get("type") != kinds.FIREWALL.type:
        return False
    change = _dict(entry.get("change"))
    if _list(change.get("actions")) != ["update"]:
        return False
    before, after = _dict(change.get("before")), _dict(change.get("after"))
    return _without_empty_tags(before) == _without_empty_tags(after)


def _quiet(entry: JsonObject) -> JsonObject:
    """A firewall's real drift without the tags noise beside it (``tags`` null → ``[]``)."""
    change = _dict(entry.get("change"))
    before, after = _dict(change.get("before")), _dict(change.get("after"))
    if (
        entry.get("type") != kinds.FIREWALL.type
        or before.get("tags") is not None
        or after.get("tags") != []
    ):
        return entry
    return {**entry, "change": {**change, "before": {**before, "tags": []}}}


def _without_empty_tags(values: JsonObject) -> JsonObject:
    if values.get("tags") in (None, []):
        return {k: v for k, v in values.items() if k != "tags"}
    return values


def _configured_attrs(plan: JsonObject) -> dict[str, frozenset[str]]:
    """Index-less address → the attributes its configuration sets (``configuration`` section).

    An attribute the configuration does not set is computed by the provider; when an update
    leaves it unknown, that is a side effect of the change, not a change of its own."""
    root = _dict(_dict(plan.get("configuration")).get("root_module"))
    return {
        str(res.get("address", "")): frozenset(_dict(res.get("expressions")))
        for res in map(_dict, _list(root.get("resources")))
    }


def _check_envelope(producer: str, plan: JsonObject) -> None:
    version = str(plan.get("format_version", ""))
    if not version.startswith("1."):
        raise InfraApplyError(
            f"producer {producer}: unsupported terraform plan format_version {version!r} "
            "(expected 1.x)"
        )
    if plan.get("errored") is True:
        raise TerraformError(f"producer {producer}: terraform reported errors; the plan is partial")


def _parse_change(
    rc: JsonObject, names: Mapping[str, str], configured: Mapping[str, frozenset[str]] | None
) -> Change | None:
    change = _dict(rc.get("change"))
    importing = _dict(change.get("importing")) if change.get("importing") is not None else None
    action = classify([str(a) for a in _list(change.get("actions"))], importing is not None)
    if action in ("no-op", "read"):
        return None
    address = str(rc.get("address", ""))
    before, after = _dict(change.get("before")), _dict(change.get("after"))
    unknown = _dict(change.get("after_unknown"))
    sensitive = _Sensitivity(change.get("before_sensitive"), change.get("after_sensitive"))
    settable = None if configured is None else configured.get(strip_index(address))
    attrs = _updated_attrs(action, before, after, unknown, settable)
    why = str(rc.get("action_reason") or ("deposed" if rc.get("deposed") else ""))
    rtype = str(rc.get("type", ""))
    opened, closed = _public_ports(rtype, action, before, after, unknown)
    name, source = _human_name(address, names, before, after, sensitive)
    return Change(
        address=address,
        type=rtype,
        name=name,
        name_source=source,
        action=action,
        replace_paths=tuple(_path_text(p) for p in _list(change.get("replace_paths"))),
        updated_attrs=attrs,
        importing=importing is not None,
        import_id=str(importing.get("id") or "") if importing is not None else "",
        reason=why,
        diffs=_diffs(attrs, before, after, unknown, sensitive),
        resize=_resize(rtype, action, attrs, before, after, unknown),
        ports_opened=opened,
        ports_closed=closed,
    )


def _resize(
    rtype: str,
    action: Action,
    attrs: Sequence[str],
    before: JsonObject,
    after: JsonObject,
    unknown: JsonObject,
) -> Resize | None:
    """A droplet update whose size changes (a replacement creates the new size instead)."""
    if rtype != kinds.DROPLET.type or action != "update" or "size" not in attrs:
        return None
    new = None if _contains_true(unknown.get("size")) else str(after.get("size") or "")
    old = str(before.get("size") or "")
    disk_before = disk_now(before)
    return Resize(
        old,
        new,
        # Unset or unknown resize_disk is the provider's default, true: assume the one-way growth.
        disk_grows=after.get("resize_disk") is not False,
        disk_before=disk_before,
        disk_after=None if new is None else DISKS_GB.get(new),
    )


def disk_now(values: Mapping[str, object]) -> int | None:
    """The disk (GB) a droplet has: state knows it (a console resize may have grown it), else
    its size's."""
    disk = values.get("disk")
    if isinstance(disk, int) and not isinstance(disk, bool) and disk > 0:
        return disk
    return DISKS_GB.get(str(values.get("size") or ""))


def _public_ports(
    rtype: str, action: Action, before: JsonObject, after: JsonObject, unknown: JsonObject
) -> tuple[tuple[PublicPort, ...], tuple[PublicPort, ...]]:
    """What a firewall change opens to, and closes from, the whole internet."""
    if rtype != kinds.FIREWALL.type or action not in ("create", "update", "replace"):
        return (), ()  # a deleted firewall: see _bare_droplets
    old, new = _exposure(before.get("inbound_rule")), _exposure(after.get("inbound_rule"))
    opened = _ports_only_in(new, old)
    if _contains_true(unknown.get("inbound_rule")):
        # Rules computed at apply time may open anything: say so rather than stay silent.
        opened += (PublicPort(_UNKNOWN),)
    return opened, _ports_only_in(old, new)


def _exposure(rules: object) -> dict[str, set[int]]:
    """Protocol → the ports inbound rules open to a ``/0`` source (``{0}`` for ICMP)."""
    exposed: dict[str, set[int]] = {}
    for rule in map(_dict, _list(rules)):
        if any(_is_world(s) for s in _list(rule.get("source_addresses"))):
            protocol = str(rule.get("protocol") or "").lower()
            exposed.setdefault(protocol, set()).update(_port_range(protocol, rule.get("port_range")))
    return exposed


def _is_world(source: object) -> bool:
    try:
        return ipaddress.ip_network(str(source), strict=False).prefixlen == 0
    except ValueError:
        return False


def _port_range(protocol: str, text: object) -> range:
    if protocol not in ("tcp", "udp"):
        return _NO_PORTS
    value = str(text or "").strip().lower()
    if value in ("", "0", "all"):  # the API's spellings of every port
        return _ALL_PORTS
    low, _, high = value.partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        return _ALL_PORTS  # unreadable: assume the worst rather than miss an opening
    return range(max(first, 1), min(last, 65535) + 1) if first <= last else _ALL_PORTS


def _ports_only_in(
    ours: Mapping[str, set[int]], theirs: Mapping[str, set[int]]
) -> tuple[PublicPort, ...]:
    found = []
    for protocol in sorted(ours, key=lambda p: (_PROTOCOL_ORDER.get(p, 9), p)):
        extra = sorted(ours[protocol] - theirs.get(protocol, set()))
        if protocol not in ("tcp", "udp"):
            found += [PublicPort(protocol)] if extra else []
            continue
        found += [PublicPort(protocol, span) for span in _spans(extra)]
    return tuple(found)


def _spans(ports: Sequence[int]) -> Iterator[str]:
    """Sorted ports → ``"80"``, ``"8000-8010"``: consecutive runs joined."""
    start = 0
    for i, port in enumerate(ports):
        if i + 1 == len(ports) or ports[i + 1] != port + 1:
            first = ports[start]
            yield str(first) if first == port else f"{first}-{port}"
            start = i + 1


def _human_name(
    address: str,
    names: Mapping[str, str],
    before: JsonObject,
    after: JsonObject,
    sensitive: _Sensitivity,
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
        if _contains_true(unknown.get(attr)):
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
    for step in _list(path):
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
    return text


class _Sensitivity:
    """Terraform's ``*_sensitive`` markers: ``true`` for the whole object or per attribute."""

    def __init__(self, before: object, after: object) -> None:
        self._markers = (before, after)

    def hides(self, attr: str) -> bool:
        for marker in self._markers:
            if marker is True:
                return True
            if isinstance(marker, Mapping) and _contains_true(marker.get(attr)):
                return True
        return False


def _diffs(
    attrs: Sequence[str],
    before: JsonObject,
    after: JsonObject,
    unknown: JsonObject,
    sensitive: _Sensitivity,
) -> tuple[AttrDiff, ...]:
    diffs = []
    for attr in attrs:
        if sensitive.hides(attr) or _SECRET_NAME.search(attr):
            continue
        if not _contains_true(unknown.get(attr)):
            listed = _rule_diff(attr, before.get(attr), after.get(attr))
            listed = listed or _list_diff(attr, before.get(attr), after.get(attr))
            if listed is not None:
                diffs.append(listed)
                continue
        old = _display_value(before.get(attr))
        new = "(known after apply)" if _contains_true(unknown.get(attr)) else None
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
    for rule in map(_dict, value):
        protocol = str(rule.get("protocol") or "").lower()
        peers = sorted(
            f"{prefix}{peer}" for key, prefix in _RULE_PEERS[attr] for peer in _list(rule.get(key))
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


def _name_drift(plan: JsonObject, names: Mapping[str, str]) -> Iterator[NameDrift]:
    root = _dict(_dict(_dict(plan.get("prior_state")).get("values")).get("root_module"))
    for res in _module_resources(root):
        if res.get("mode") != "managed" or res.get("type") != kinds.DROPLET.type:
            continue
        address = str(res.get("address", ""))
        manifest = names.get(address, names.get(strip_index(address)))
        live = _dict(res.get("values")).get("name")
        if manifest is not None and isinstance(live, str) and live != manifest:
            yield NameDrift(address=address, manifest_name=manifest, live_name=live)


def _settings_drift(
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
    root = _dict(_dict(_dict(plan.get("prior_state")).get("values")).get("root_module"))
    resources = list(_module_resources(root))
    key_ids = {
        str(values.get("name")): str(values.get("id"))
        for res in resources
        if res.get("mode") == "data" and res.get("type") == kinds.SSH_KEY.type
        for values in (_dict(res.get("values")),)
    }
    gone = {c.address for c in changes if c.action in ("replace", "delete")}
    for res in resources:
        address = str(res.get("address", ""))
        want = wanted.get(strip_index(address))
        if res.get("mode") != "managed" or want is None or address in gone:
            continue
        live = _dict(res.get("values"))
        differs = []
        ids = [key_ids.get(k) for k in want.ssh_keys]
        if all(i is not None for i in ids) and set(ids) != {str(k) for k in _list(live.get("ssh_keys"))}:
            differs.append("ssh_keys")
        if bool(live.get("monitoring")) != want.monitoring:
            differs.append("monitoring")
        if not _same_user_data(live.get("user_data"), want.user_data_sha1):
            differs.append("user_data")
        if differs:
            name = names.get(address, names.get(strip_index(address), address))
            yield SettingsDrift(address=address, name=name, settings=tuple(differs))


def _same_user_data(live: object, sha1: str | None) -> bool:
    if not isinstance(live, str) or not live:
        return sha1 is None
    if re.fullmatch(r"[0-9a-f]{40}", live):
        return live == sha1
    # Very old states kept the text itself.
    return hashlib.sha1(live.encode("utf-8")).hexdigest() == sha1


def _module_resources(module: JsonObject) -> Iterator[JsonObject]:
    for res in _list(module.get("resources")):
        yield _dict(res)
    for child in _list(module.get("child_modules")):
        yield from _module_resources(_dict(child))


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)


def _natural_key(text: str) -> tuple[tuple[int, str], ...]:
    parts = re.split(r"(\d+)", text)
    return tuple((int(p), "") if i % 2 else (0, p) for i, p in enumerate(parts))


def _contains_true(marker: object) -> bool:
    if marker is True:
        return True
    if isinstance(marker, Mapping):
        return any(_contains_true(v) for v in marker.values())
    if isinstance(marker, list):
        return any(_contains_true(v) for v in marker)
    return False


def _dict(value: object) -> JsonObject:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []
