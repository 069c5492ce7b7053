"""What changed outside Terraform, as typed data (the pure core of ``infra-apply drift``).

Four kinds of drift, each found by a pure function so the formatters and the tests work on
fixtures alone:

* ``outside``: the refresh-only plan's ``resource_drift`` (a console resize, edited tags, a
  deleted droplet), parsed by ``plan_model`` like any change. The real provider's refresh shows
  ``+ tags = []`` on firewalls (DESIGN.md); that noise is dropped before parsing.
* ``names``: droplets whose live name differs from the manifest name (``plan_model``).
* ``mesh``: mesh-hosts.json entries that disagree with state: what ``register`` would change,
  computed as a dry run (missing host, stale public IP, an entry for a droplet state no longer
  has).
* ``orphans``: droplets tagged ``managed-by:infra-apply`` that no producer's state knows.

A producer never applied here (no state) has nothing to drift from: it is reported as "not
applied yet", never as drift. Its mesh-hosts.json entries are not judged either (the registry
may well hold hosts registered from another state or by hand): the scheduled drift workflow
opens an issue on drift, and a producer nobody has applied yet must not page anyone. Its first
``apply`` registers its hosts, which puts such entries right. A droplet tagged for it in the
account is still an orphan (a lost state shows up that way).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from infra_apply.mesh import HostChange
from infra_apply.plan_model import Change, JsonObject, NameDrift, parse_plan
from infra_apply.plan_model import is_noise as is_noise  # the noise filter lives with the parser
from infra_apply.render import MANAGED_TAG

PRODUCER_TAG = "producer:"


@dataclass(frozen=True)
class Orphan:
    """A droplet in the account tagged as infra-apply's that no state knows."""

    id: str
    name: str
    tags: tuple[str, ...]

    @property
    def producer(self) -> str | None:
        return next((t[len(PRODUCER_TAG) :] for t in self.tags if t.startswith(PRODUCER_TAG)), None)


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

    @property
    def drifted(self) -> bool:
        return bool(self.orphans) or any(p.drifted for p in self.producers)


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
    return any(True for _ in _managed(plan)) or bool(_list(plan.get("resource_drift")))


def state_droplet_ids(plan: JsonObject) -> set[str]:
    """Ids of every managed droplet in the plan's (refreshed) prior state."""
    ids = set()
    for res in _managed(plan):
        if res.get("type") == "digitalocean_droplet":
            found = _dict(res.get("values")).get("id")
            if isinstance(found, str | int) and str(found):
                ids.add(str(found))
    return ids


def _managed(plan: JsonObject) -> Iterator[JsonObject]:
    """The managed resources of the plan's prior state, child modules included."""
    stack = [_dict(_dict(_dict(plan.get("prior_state")).get("values")).get("root_module"))]
    while stack:
        module = stack.pop()
        yield from (r for r in map(_dict, _list(module.get("resources"))) if r.get("mode") == "managed")
        stack.extend(map(_dict, _list(module.get("child_modules"))))


def orphans(
    tagged: Iterable[Orphan], known_ids: set[str], producers: Sequence[str], every_producer: bool
) -> tuple[Orphan, ...]:
    """Tagged droplets no state knows. Only the producers checked can vouch for their droplets:
    with some producers named, a droplet tagged for another producer (or for none) is not
    judged."""
    found = []
    for d in tagged:
        if MANAGED_TAG not in d.tags or d.id in known_ids:
            continue
        owner = d.producer
        if (owner is None and every_producer) or owner in producers:
            found.append(d)
    return tuple(sorted(found, key=lambda d: (d.name, int(d.id) if d.id.isdigit() else 0, d.id)))


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


def _dict(value: object) -> JsonObject:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []
