"""Every Terraform resource type infra-apply renders, reads or takes over: one frozen entry each.

The rest of the package asks this table instead of spelling type strings: the guard (which
action needs which ``--allow-*`` flag), takeover (the import id, the attributes kept from an old
state), cost (how one is priced), drift (how an orphan is found), the diagram (how it is drawn),
the reports (what to call it) and render (what each one a module renders is called:
``Kind.names``). A type missing from the table is unknown: the guard
refuses to destroy or replace what it cannot judge, and cost refuses to price it.
tests/test_kinds.py fails when a template or the sandbox provider has a type without an entry.

Import id formats are the provider's (``do-provider-schema.json``, v2.99.1,
``resource_schemas.<type>.x_behavior.import.id_format``); note that the *resource ids* of a
database and a user (``<cluster_id>/database/<name>``) are not what their import takes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from infra_apply.render.module import ProducerContext

Action = Literal["create", "update", "replace", "destroy"]
AllowFlag = Literal["--allow-destroy", "--allow-replace", "--allow-resize", "--allow-trusted-sources"]
Mode = Literal["managed", "data"]
# How ``drift`` finds an orphan of the kind (one in the account that no state knows): listed
# by the ``managed-by:infra-apply`` tag and matched by id against every state ("tagged"), or
# not looked for ("not-looked-for": it carries no tag to find it by, or it is only read).
Orphans = Literal["tagged", "not-looked-for"]
# How the plan diagram draws a change of the kind: a box of its own, folded into its droplet's
# box (a firewall's rules), a database (or its user) node, or not at all.
Diagram = Literal["box", "droplet-rules", "database", "database-user", "none"]


@dataclass(frozen=True)
class GuardPolicy:
    """Per action, the flag that allows it (None: allowed without one)."""

    create: AllowFlag | None = None
    update: AllowFlag | None = None
    replace: AllowFlag | None = "--allow-replace"
    destroy: AllowFlag | None = "--allow-destroy"

    def flag(self, action: Action) -> AllowFlag | None:
        flags: Mapping[Action, AllowFlag | None] = {
            "create": self.create,
            "update": self.update,
            "replace": self.replace,
            "destroy": self.destroy,
        }
        return flags[action]


@dataclass(frozen=True)
class Price:
    """How cost prices one of the kind a month: by its droplet size slug ("size", from the price
    list), at a flat list price ("flat", ``monthly``), at nothing ("free"), or not at all
    ("unknown": the cost sentence names it as "price not known", never counts it as $0)."""

    how: Literal["size", "flat", "free", "unknown"]
    monthly: Decimal | None = None  # "flat" only: USD a month, from do-catalogue-facts.md

    def __post_init__(self) -> None:
        if (self.how == "flat") != (self.monthly is not None):
            raise ValueError(f"price {self.how}: a monthly amount goes with a flat price only")


BY_SIZE = Price("size")
FREE = Price("free")
UNKNOWN_PRICE = Price("unknown")


GUARDED = GuardPolicy()
# A data source is only ever read; reading it changes nothing.
READ_ONLY = GuardPolicy(replace=None, destroy=None)

Keeps = Mapping[str, tuple[type, ...]]
# The (local name, person's name) of every one of a kind a producer's module renders, read off
# the one context every template renders from: the guard's refusals and the reports name a
# resource by it (``--allow-destroy NAME``).
Names = Callable[["ProducerContext"], Iterable[tuple[str, str]]]


def _keeps(**attrs: tuple[type, ...]) -> Keeps:
    return MappingProxyType(attrs)


@dataclass(frozen=True)
class Kind:
    type: str  # the Terraform type, e.g. digitalocean_droplet
    mode: Mode
    noun: str  # what a person calls one: "droplet", "database user"
    guard: GuardPolicy
    import_id: str | None  # the provider's import id format; None: not taken over
    # takeover: the attributes kept from an old state, and the JSON types each may have
    keeps: Keeps = field(default_factory=lambda: _keeps())
    # What cost counts for one (a kind whose price nobody stated is "price not known").
    price: Price = UNKNOWN_PRICE
    orphans: Orphans = "not-looked-for"
    diagram: Diagram = "none"
    # The kind one of these belongs to and is named by (a droplet's own firewall): it goes with
    # its owner, and the guard's refusal of both is the owner's one line.
    owner: str | None = None
    # Its create and update need their flags only when they cut a client off (a database
    # firewall's rules kept or added take nothing away); a change never reviewed for that
    # (``Change.cuts_off`` None) needs them all the same.
    guards_cuts_only: bool = False
    # What its module's resources are called (None: render writes none, or they go unnamed and
    # the guard and the reports call one by its address).
    names: Names | None = field(default=None, compare=False)

    def address(self, local: str) -> str:
        """``digitalocean_droplet`` + ``web`` → ``digitalocean_droplet.web``."""
        return f"{self.type}.{local}"

    def local(self, address: str) -> str:
        """The local name (and index) of one of this kind's root-module addresses."""
        return address.removeprefix(f"{self.type}.")

    def import_id_of(self, **parts: str) -> str:
        """The id ``terraform import`` takes for one of this kind: its format, each ``<part>``
        filled in (``cluster_id="c1", name="forge"`` → ``c1,forge``)."""
        if self.import_id is None:
            raise ValueError(f"{self.type} is not imported")
        found = self.import_id
        for part, value in parts.items():
            found = found.replace(f"<{part}>", value)
        if "<" in found:
            raise ValueError(f"{self.type} import id {self.import_id}: parts {sorted(parts)} leave {found}")
        return found

    @property
    def safe_to_lose(self) -> bool:
        return self.guard.destroy is None and self.guard.replace is None


_NULLABLE_BOOL = (bool, type(None))
_NULLABLE_LIST = (list, type(None))

DROPLET = Kind(
    type="digitalocean_droplet",
    mode="managed",
    noun="droplet",
    guard=GUARDED,
    import_id="<droplet_id>",  # must parse as an integer
    keeps=_keeps(
        id=(str,),
        name=(str,),
        region=(str,),
        image=(str,),
        size=(str,),
        monitoring=_NULLABLE_BOOL,
        ipv6=_NULLABLE_BOOL,
    ),
    price=BY_SIZE,
    orphans="tagged",
    diagram="box",
    names=lambda c: ((e.address, e.droplet.name) for e in c.droplets),
)
# Losing a droplet's firewall opens every port of a droplet that stays: it is guarded like the
# droplet, and a firewall is named by its droplet, so --allow-destroy NAME allows both. A droplet
# has two (render.py): its own (SSH, outbound) and its public openings' (<address>__public).
FIREWALL = Kind(
    type="digitalocean_firewall",
    mode="managed",
    noun="firewall",
    guard=GUARDED,
    import_id="<firewall_id>",
    keeps=_keeps(id=(str,), name=(str,), droplet_ids=_NULLABLE_LIST, tags=_NULLABLE_LIST),
    price=FREE,  # DigitalOcean bills no cloud firewall
    diagram="droplet-rules",
    owner="digitalocean_droplet",
    names=lambda c: ((a, e.droplet.name) for e in c.droplets for a in (e.address, e.public_address)),
)
DATABASE = Kind(
    type="digitalocean_database_db",
    mode="managed",
    noun="database",
    guard=GUARDED,
    import_id="<cluster_id>,<name>",
    keeps=_keeps(id=(str,), cluster_id=(str,), name=(str,)),
    price=FREE,  # the cluster is what is billed, and infra-apply only reads it
    diagram="database",
    names=lambda c: ((d.db_address, d.name) for d in c.databases),
)
USER = Kind(
    type="digitalocean_database_user",
    mode="managed",
    noun="database user",
    guard=GUARDED,
    import_id="<cluster_id>,<name>",
    keeps=_keeps(id=(str,), cluster_id=(str,), name=(str,)),
    price=FREE,  # billed with its cluster, as a database is
    diagram="database-user",
    names=lambda c: ((d.user_address, d.user) for d in c.databases),
)
CLUSTER = Kind(
    type="digitalocean_database_cluster",
    mode="data",
    noun="database cluster",
    guard=READ_ONLY,
    import_id=None,
)
SSH_KEY = Kind(type="digitalocean_ssh_key", mode="data", noun="SSH key", guard=READ_ONLY, import_id=None)
# A cluster's trusted sources: the whole rule list. Its first rules block every client not listed,
# and losing one cuts a client off its database, so its first rules, a narrowing, a replacement
# or a destroy is consented to by naming the cluster (the resource's name) with
# --allow-trusted-sources.
DATABASE_FIREWALL = Kind(
    type="digitalocean_database_firewall",
    mode="managed",
    noun="trusted sources",
    guard=GuardPolicy(
        create="--allow-trusted-sources",
        update="--allow-trusted-sources",
        replace="--allow-trusted-sources",
        destroy="--allow-trusted-sources",
    ),
    import_id="<cluster_id>",
    price=FREE,  # trusted sources are part of the cluster's billing, as its databases are
    guards_cuts_only=True,
    names=lambda c: ((t.address, t.ts.cluster) for t in c.trusted),
)
# The lease store's and the mesh allocation record's own roots hold one record each; never
# planned through the guard, but losing one loses the leases or the allocations. A record lives
# in the state alone: nothing in the account bills it.
RECORD = Kind(type="terraform_data", mode="managed", noun="record", guard=GUARDED, import_id=None, price=FREE)

# Watching (docs/watching.md): losing a check or an alert loses no data, but it silences a
# warning nobody would notice missing, so it is guarded like the rest. An uptime check is named
# by its domain; its alerts go with it.
UPTIME_CHECK = Kind(
    type="digitalocean_uptime_check",
    mode="managed",
    noun="uptime check",
    guard=GUARDED,
    import_id="<check_id>",
    price=Price("flat", Decimal("1.00")),  # about 1 USD a check a month (do-catalogue-facts.md)
    names=lambda c: ((check.address, check.domain) for check in c.checks),
)
UPTIME_ALERT = Kind(
    type="digitalocean_uptime_alert",
    mode="managed",
    noun="uptime alert",
    guard=GUARDED,
    import_id="<check_id>,<alert_id>",
    price=FREE,  # billed with its check
    owner="digitalocean_uptime_check",
    names=lambda c: ((a, check.domain) for check in c.checks for a in check.alert_addresses),
)
MONITOR_ALERT = Kind(
    type="digitalocean_monitor_alert",
    mode="managed",
    noun="droplet alert",
    guard=GUARDED,
    import_id="<alert_policy_uuid>",
    price=FREE,  # DigitalOcean bills no metric alert
    names=lambda c: ((m.address, m.name) for m in c.monitors),
)

_TABLE: dict[str, Kind] = {}
KINDS: Mapping[str, Kind] = MappingProxyType(_TABLE)


def register(kind: Kind) -> Kind:
    """Add ``kind`` to the table: the one way an entry gets in (below, for every kind
    infra-apply knows; tests/test_new_kind.py, for one it makes up)."""
    if kind.type in _TABLE:
        raise ValueError(f"{kind.type} is in the kinds table already")
    _TABLE[kind.type] = kind
    return kind


def unregister(rtype: str) -> None:
    """Take a kind ``register`` added out again (a test's own kind, once it is done)."""
    del _TABLE[rtype]


for _kind in (
    DROPLET,
    FIREWALL,
    DATABASE,
    USER,
    CLUSTER,
    SSH_KEY,
    RECORD,
    UPTIME_CHECK,
    UPTIME_ALERT,
    MONITOR_ALERT,
    DATABASE_FIREWALL,
):
    register(_kind)
# What ``adopt --from-state`` takes over from another root.
TAKEOVER: tuple[Kind, ...] = tuple(k for k in KINDS.values() if k.keeps)


def kind_of(rtype: str) -> Kind | None:
    return KINDS.get(rtype)


def noun(rtype: str) -> str:
    """What to call a resource of ``rtype``; an unknown type is called by its type."""
    found = KINDS.get(rtype)
    return found.noun if found is not None else rtype


def guard_flag(rtype: str, action: Action) -> AllowFlag | None:
    """The flag that allows ``action`` on a resource of ``rtype``. An unknown type is judged
    like the most guarded kind: its destroy and replacement need their flags."""
    found = KINDS.get(rtype)
    return (found.guard if found is not None else GUARDED).flag(action)
