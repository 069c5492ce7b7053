"""What changed outside Terraform, as typed data (the pure core of ``infra-apply drift``).

Four kinds of drift, each found by a pure function so the formatters and the tests work on
fixtures alone:

* ``outside``: the refresh-only plan's ``resource_drift`` (a console resize, edited tags, a
  deleted droplet), parsed by ``plan_model`` like any change. The real provider's refresh shows
  ``+ tags = []`` on firewalls (docs/commands.md, drift); that noise is dropped before parsing.
* ``names``: droplets whose live name differs from the manifest name (``plan_model``).
* ``mesh``: mesh-hosts.json entries that disagree with state: what ``register`` would change,
  computed as a dry run (missing host, stale public IP, an entry for a droplet state no longer
  has).
* ``orphans``: droplets tagged ``managed-by:infra-apply`` that no producer's state knows (the
  kinds table says which kinds are looked for: ``Kind.orphans``).
* ``duplicates``: such droplets named like a droplet a state does know: a second, billed copy
  (a moved checkout or an empty state applied again). ``adopt`` cannot take it over (the name
  is in state) and no apply destroys it: only a person can, after checking it.

A producer never applied here (no state) has nothing to drift from: it is reported as "not
applied yet", never as drift. Its mesh-hosts.json entries are not judged either (the registry
may well hold hosts registered from another state or by hand): the scheduled drift workflow
opens an issue on drift, and a producer nobody has applied yet must not page anyone. Its first
``apply`` registers its hosts, which puts such entries right. A droplet tagged for it in the
account is still an orphan (a lost state shows up that way).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from infra_apply import kinds
from infra_apply.plan.managed import is_managed, prior_resources, tagged_producer
from infra_apply.plan.model import parse_plan
from infra_apply.plan.parse import Change, JsonObject, NameDrift, json_dict, json_list
from infra_apply.plan.semantics import is_noise as is_noise  # the noise filter is a provider fact

if TYPE_CHECKING:
    # a type only: plan (through exists) imports this module, and the registry is not its
    from infra_apply.registry.mesh import HostChange


@dataclass(frozen=True)
class Orphan:
    """A droplet in the account tagged as infra-apply's that no state knows."""

    id: str
    name: str
    tags: tuple[str, ...]

    @property
    def producer(self) -> str | None:
        return tagged_producer(self.tags)


@dataclass(frozen=True)
class Duplicate:
    """A tagged droplet no state knows, named like ``state_id``, a droplet in ``owner``'s state."""

    droplet: Orphan
    state_id: str
    owner: str  # the producer whose state holds the droplet of that name

    @property
    def id(self) -> str:
        return self.droplet.id

    @property
    def name(self) -> str:
        return self.droplet.name


@dataclass(frozen=True)
class StateDroplet:
    """A droplet in a producer's (refreshed) state: what a tagged droplet is compared with."""

    id: str
    name: str
    producer: str


@dataclass(frozen=True)
class ProducerDrift:
    producer: str
    outside: tuple[Change, ...] = ()
    names: tuple[NameDrift, ...] = ()
    mesh: tuple[HostChange, ...] = ()
    mesh_checked: bool = True  # False when no registry was given: nothing to compare with
    applied: bool = True  # False: no state here yet, so nothing was compared (not drift)
    declared: frozenset[str] = frozenset()  # its manifest droplet names: which remedy fits

    @property
    def drifted(self) -> bool:
        return bool(self.outside or self.names or self.mesh)


@dataclass(frozen=True)
class DriftReport:
    producers: tuple[ProducerDrift, ...] = ()
    orphans: tuple[Orphan, ...] = ()
    sandbox: bool = False
    duplicates: tuple[Duplicate, ...] = ()
    cloud: str | None = None  # the sandbox cloud file (a sandbox duplicate is deleted from it)

    @property
    def drifted(self) -> bool:
        return bool(self.orphans or self.duplicates) or any(p.drifted for p in self.producers)


def outside_changes(producer: str, plan: JsonObject, names: Mapping[str, str]) -> tuple[Change, ...]:
    """The plan's ``resource_drift`` as changes, known noise left out (``plan_model`` reads it
    the same way for ordinary plans)."""
    return parse_plan(producer, {**plan, "resource_changes": []}, names).outside


def name_drift(producer: str, plan: JsonObject, names: Mapping[str, str]) -> tuple[NameDrift, ...]:
    return parse_plan(producer, {**plan, "resource_changes": []}, names).drift


def applied(plan: JsonObject) -> bool:
    """Whether the producer has applied state: a managed resource in the refreshed prior state
    (data sources are read even with no state), or one the refresh found deleted outside
    Terraform (it leaves the refreshed state but shows in ``resource_drift``)."""
    return any(True for _ in prior_resources(plan)) or bool(json_list(plan.get("resource_drift")))


def looked_for() -> frozenset[str]:
    """The kinds whose orphans drift looks for, as the kinds table says: each is listed in the
    account by the managed-by tag (``commands/drift.list_tagged``) and matched by id against
    the states; an entry marked "not-looked-for" is not."""
    return frozenset(k.type for k in kinds.KINDS.values() if k.orphans == "tagged")


def state_droplets(producer: str, plan: JsonObject) -> list[StateDroplet]:
    """Every managed resource of a kind drift looks for orphans of (droplets) in the plan's
    (refreshed) prior state, with its live name."""
    found: list[StateDroplet] = []
    wanted = looked_for()
    for res in prior_resources(plan):
        if res.get("type") in wanted:
            values = json_dict(res.get("values"))
            droplet_id, name = values.get("id"), values.get("name")
            if isinstance(droplet_id, str | int) and str(droplet_id):
                found.append(StateDroplet(str(droplet_id), str(name or ""), producer))
    return found


def orphans(
    tagged: Iterable[Orphan],
    known_ids: set[str],
    producers: Sequence[str],
    every_producer: bool,
    in_state: Iterable[StateDroplet] = (),
) -> tuple[Orphan, ...]:
    """Tagged droplets no state knows, apart from the ``duplicates`` of droplets ``in_state``.
    Only the producers checked can vouch for their droplets: with some producers named, a
    droplet tagged for another producer (or for none) is not judged."""
    names = {d.name for d in in_state}
    unknown = _unknown(tagged, known_ids, producers, every_producer)
    return tuple(d for d in unknown if d.name not in names)


def duplicates(
    tagged: Iterable[Orphan],
    in_state: Iterable[StateDroplet],
    producers: Sequence[str],
    every_producer: bool,
) -> tuple[Duplicate, ...]:
    """Tagged droplets no state knows that are named like a droplet in a state checked."""
    kept = list(in_state)
    by_name = {d.name: d for d in kept}
    unknown = _unknown(tagged, {d.id for d in kept}, producers, every_producer)
    return tuple(
        Duplicate(d, by_name[d.name].id, by_name[d.name].producer) for d in unknown if d.name in by_name
    )


def _unknown(
    tagged: Iterable[Orphan], known_ids: set[str], producers: Sequence[str], every_producer: bool
) -> list[Orphan]:
    found = []
    for d in tagged:
        if not is_managed(d.tags) or d.id in known_ids:
            continue
        owner = d.producer
        if (owner is None and every_producer) or owner in producers:
            found.append(d)
    return sorted(found, key=lambda d: (d.name, int(d.id) if d.id.isdigit() else 0, d.id))


def stale_registry_droplets(doc: Mapping[str, object], producer: str, live: Iterable[str]) -> list[str]:
    """Droplet names the registry holds for ``producer`` that its state no longer has."""
    hosts = doc.get("hosts")
    if not isinstance(hosts, Mapping):
        return []
    live_names = set(live)
    stale = {
        str(e["droplet"])
        for e in hosts.values()
        if isinstance(e, Mapping)
        and e.get("producer") == producer
        and isinstance(e.get("droplet"), str)
        and e["droplet"] not in live_names
    }
    return sorted(stale)
