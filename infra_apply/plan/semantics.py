"""What a planned change means on DigitalOcean (provider v2.99.1): facts from
``/work/shared/do-provider-schema.json``, ``do-catalogue-facts.md`` and the kinds table.

* Why a resource is replaced or destroyed, in words (``reason``), and the verb a report uses.
* A droplet whose ``size`` changes in place is a ``Resize``: the provider powers it off,
  resizes it and powers it on; the disk grows one way, and DigitalOcean refuses a size whose
  disk is below the droplet's current disk.
* A firewall change lists the ``PublicPort`` s it opens or closes to the whole internet (an
  inbound rule with a ``/0`` source: ``0.0.0.0/0`` or ``::/0``); a firewall destroyed while its
  droplet stays opens every port (DigitalOcean lets everything through a droplet without one).
* A firewall is told by its droplet; the refresh noise the provider reports on every firewall
  (``tags`` null → ``[]``) is no change.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

from infra_apply import kinds
from infra_apply.plan.parse import (
    PROTOCOL_ORDER,
    UNKNOWN,
    Action,
    Change,
    JsonObject,
    contains_true,
    json_dict,
    json_list,
    module_resources,
    parse_change,
    quoted,
    strip_index,
)
from infra_apply.plan.prices import DISKS_GB

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


_ALL_PORTS = range(1, 65536)


_NO_PORTS = range(0, 1)  # ICMP and other port-less protocols: opening the protocol is the change


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
        after = UNKNOWN if self.after is None else quoted(self.after)
        return f"size {quoted(self.before)} → {after}"

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

    protocol: str  # tcp, udp, icmp, or UNKNOWN when the rules are known only after apply
    ports: str = ""  # "22", "8000-9000"; "" for a protocol without ports

    def __str__(self) -> str:
        return f"{self.ports}/{self.protocol}" if self.ports else self.protocol


class SshChange(NamedTuple):
    """Addresses a firewall change stops letting reach SSH (22/tcp), and those still let."""

    removed: tuple[str, ...]
    left: tuple[str, ...]


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


def read_change(
    rc: JsonObject, names: Mapping[str, str], configured: Mapping[str, frozenset[str]] | None
) -> Change | None:
    """``plan_parse.parse_change`` with what the change means here: a droplet resize, the
    ports a firewall change opens or closes to the whole internet."""
    change = parse_change(rc, names, configured)
    if change is None:
        return None
    values = json_dict(rc.get("change"))
    before, after = json_dict(values.get("before")), json_dict(values.get("after"))
    unknown = json_dict(values.get("after_unknown"))
    opened, closed = public_ports(change.type, change.action, before, after, unknown)
    resize = droplet_resize(change.type, change.action, change.updated_attrs, before, after, unknown)
    ssh = ssh_change(change.type, change.action, before, after)
    return replace(change, resize=resize, ports_opened=opened, ports_closed=closed, ssh=ssh)


def ssh_change(rtype: str, action: Action, before: JsonObject, after: JsonObject) -> SshChange | None:
    """The addresses a firewall update stops letting reach SSH (22/tcp): narrowing it, or
    closing it altogether, is said like a public port (a deleted firewall: bare_droplets)."""
    if rtype != kinds.FIREWALL.type or action not in ("update", "replace"):
        return None
    old, new = _ssh_sources(before.get("inbound_rule")), _ssh_sources(after.get("inbound_rule"))
    removed = tuple(sorted(old - new))
    # Opened to the whole internet is no narrowing, whatever left: "public ports opened" says it.
    widened = any(_is_world(source) for source in new - old)
    return SshChange(removed, tuple(sorted(new))) if removed and not widened else None


def _ssh_sources(rules: object) -> set[str]:
    found: set[str] = set()
    for rule in map(json_dict, json_list(rules)):
        protocol = str(rule.get("protocol") or "").lower()
        if protocol == "tcp" and 22 in _port_range(protocol, rule.get("port_range")):
            found.update(str(s) for s in json_list(rule.get("source_addresses")))
    return found


def moved_ports(changes: Sequence[Change]) -> list[Change]:
    """A port one firewall of a droplet closes while another of the same droplet opens it (the
    public openings moving to their own firewall) is neither opened nor closed: it is moved."""
    firewalls = [c for c in changes if c.type == kinds.FIREWALL.type and c.name_source == "manifest"]
    out = []
    for change in changes:
        if change not in firewalls:
            out.append(change)
            continue
        others = [o for o in firewalls if o.name == change.name and o.address != change.address]
        closed_elsewhere = {p for o in others for p in o.ports_closed}
        opened_elsewhere = {p for o in others for p in o.ports_opened}
        moved = tuple(p for p in change.ports_opened if p in closed_elsewhere)
        out.append(
            replace(
                change,
                ports_opened=tuple(p for p in change.ports_opened if p not in closed_elsewhere),
                ports_closed=tuple(p for p in change.ports_closed if p not in opened_elsewhere),
                ports_moved=moved,
            )
        )
    return out


def droplet_resize(
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
    new = None if contains_true(unknown.get("size")) else str(after.get("size") or "")
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


def public_ports(
    rtype: str, action: Action, before: JsonObject, after: JsonObject, unknown: JsonObject
) -> tuple[tuple[PublicPort, ...], tuple[PublicPort, ...]]:
    """What a firewall change opens to, and closes from, the whole internet."""
    if rtype != kinds.FIREWALL.type or action not in ("create", "update", "replace"):
        return (), ()  # a deleted firewall: see bare_droplets
    old, new = _exposure(before.get("inbound_rule")), _exposure(after.get("inbound_rule"))
    opened = _ports_only_in(new, old)
    if contains_true(unknown.get("inbound_rule")):
        # Rules computed at apply time may open anything: say so rather than stay silent.
        opened += (PublicPort(UNKNOWN),)
    return opened, _ports_only_in(old, new)


def _exposure(rules: object) -> dict[str, set[int]]:
    """Protocol → the ports inbound rules open to a ``/0`` source (``{0}`` for ICMP)."""
    exposed: dict[str, set[int]] = {}
    for rule in map(json_dict, json_list(rules)):
        if any(_is_world(s) for s in json_list(rule.get("source_addresses"))):
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


def _ports_only_in(ours: Mapping[str, set[int]], theirs: Mapping[str, set[int]]) -> tuple[PublicPort, ...]:
    found = []
    for protocol in sorted(ours, key=lambda p: (PROTOCOL_ORDER.get(p, 9), p)):
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


def firewalls_named_by_droplet(
    changes: Sequence[Change], plan: JsonObject, names: Mapping[str, str]
) -> list[Change]:
    """A firewall the manifests no longer name, told by its droplet: the droplet its state's
    ``droplet_ids`` hold (one firewall per droplet), by manifest name, else its state name."""
    root = _prior_root(plan)
    droplets = _names_by_id(root, kinds.DROPLET.type, names)
    fixed = []
    for change in changes:
        if change.type == kinds.FIREWALL.type and change.name_source != "manifest":
            ids = json_list(_firewall_state(root, change.address).get("droplet_ids"))
            owners = sorted({droplets[str(i)] for i in ids if str(i) in droplets})
            if len(owners) == 1:
                change = replace(change, name=owners[0], name_source="manifest")
        fixed.append(change)
    return fixed


def _prior_root(plan: JsonObject) -> JsonObject:
    return json_dict(json_dict(json_dict(plan.get("prior_state")).get("values")).get("root_module"))


def _names_by_id(root: JsonObject, rtype: str, names: Mapping[str, str]) -> dict[str, str]:
    """Id -> name of every ``rtype`` in the prior state: its manifest name, else its state name."""
    found: dict[str, str] = {}
    for res in module_resources(root):
        values = json_dict(res.get("values"))
        if res.get("mode") == "managed" and res.get("type") == rtype and values.get("id"):
            address = str(res.get("address", ""))
            name = names.get(address, names.get(strip_index(address), values.get("name")))
            if isinstance(name, str) and name:
                found[str(values["id"])] = name
    return found


def uptime_alerts_named_by_check(
    changes: Sequence[Change], plan: JsonObject, names: Mapping[str, str]
) -> list[Change]:
    """An uptime alert the manifests no longer name, told by its check (the check its state's
    ``check_id`` holds), so that ``--allow-destroy DOMAIN`` allows a check and its alerts."""
    root = _prior_root(plan)
    checks = _names_by_id(root, kinds.UPTIME_CHECK.type, names)
    fixed = []
    for change in changes:
        if change.type == kinds.UPTIME_ALERT.type and change.name_source != "manifest":
            check = _firewall_state(root, change.address).get("check_id")
            if str(check) in checks:
                change = replace(change, name=checks[str(check)], name_source="manifest")
        fixed.append(change)
    return fixed


def bare_droplets(changes: Sequence[Change], plan: JsonObject) -> list[Change]:
    """A firewall destroyed while its droplet stays (or is replaced) and no new firewall takes
    that droplet's name: the droplet is left with no firewall, and DigitalOcean then lets every
    port through. That is every port opened; a firewall going with its droplet closes nothing
    anyone could reach, and is no call-out."""
    root = json_dict(json_dict(json_dict(plan.get("prior_state")).get("values")).get("root_module"))
    droplets = {
        str(json_dict(res.get("values")).get("id")): str(res.get("address", ""))
        for res in module_resources(root)
        if res.get("mode") == "managed" and res.get("type") == kinds.DROPLET.type
    }
    gone = {c.address for c in changes if c.type == kinds.DROPLET.type and c.action == "delete"}
    guarded = {c.name for c in changes if c.type == kinds.FIREWALL.type and c.action in ("create", "replace")}
    everything = {"tcp": set(_ALL_PORTS), "udp": set(_ALL_PORTS), "icmp": set(_NO_PORTS)}
    found = []
    for change in changes:
        dropped = change.type == kinds.FIREWALL.type and change.action == "delete"
        if dropped and change.name not in guarded:
            values = _firewall_state(root, change.address)
            ids = [str(i) for i in json_list(values.get("droplet_ids"))]
            if any(i in droplets and droplets[i] not in gone for i in ids):
                opened = _ports_only_in(everything, _exposure(values.get("inbound_rule")))
                change = replace(change, ports_opened=opened)
        found.append(change)
    return found


def _firewall_state(root: JsonObject, address: str) -> JsonObject:
    found = next((r for r in module_resources(root) if r.get("address") == address), {})
    return json_dict(json_dict(found).get("values"))


def is_noise(entry: JsonObject) -> bool:
    """A firewall whose only difference is ``tags`` going from null to ``[]``: the real
    provider's refresh reports it on every firewall (docs/commands.md, drift), and it changes nothing."""
    if entry.get("type") != kinds.FIREWALL.type:
        return False
    change = json_dict(entry.get("change"))
    if json_list(change.get("actions")) != ["update"]:
        return False
    before, after = json_dict(change.get("before")), json_dict(change.get("after"))
    return _without_empty_tags(before) == _without_empty_tags(after)


def quiet(entry: JsonObject) -> JsonObject:
    """A firewall's real drift without the tags noise beside it (``tags`` null → ``[]``)."""
    change = json_dict(entry.get("change"))
    before, after = json_dict(change.get("before")), json_dict(change.get("after"))
    if entry.get("type") != kinds.FIREWALL.type or before.get("tags") is not None or after.get("tags") != []:
        return entry
    return {**entry, "change": {**change, "before": {**before, "tags": []}}}


def _without_empty_tags(values: JsonObject) -> JsonObject:
    if values.get("tags") in (None, []):
        return {k: v for k, v in values.items() if k != "tags"}
    return values
