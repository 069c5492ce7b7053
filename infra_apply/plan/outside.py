"""Changes made outside Terraform (a plan's ``resource_drift``) and what a plan does about each.

A change "undoes" one made outside Terraform only by value: each attribute it sets gets the
value recorded before that outside change (a re-create: the deleted object as it was).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Literal, NamedTuple

from infra_apply.plan.parse import (
    COUNTED_ACTIONS,
    Change,
    JsonObject,
    ProducerPlan,
    Sensitivity,
    attr_diffs,
    contains_true,
    json_dict,
    json_list,
    natural_key,
    strip_index,
)
from infra_apply.plan.semantics import firewalls_named_by_droplet, is_noise, quiet, read_change

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


def outside_changes(plan: JsonObject, names: Mapping[str, str]) -> tuple[Change, ...]:
    """``resource_drift`` as changes (before: what Terraform last knew, after: what refresh
    found), the provider's known noise left out. Ordinary and refresh-only plans alike."""
    entries = [
        quiet(json_dict(e)) for e in json_list(plan.get("resource_drift")) if not is_noise(json_dict(e))
    ]
    found = [c for e in entries if (c := read_change(e, names, None)) is not None]
    found = firewalls_named_by_droplet(found, plan, names)
    return tuple(sorted(found, key=lambda c: (natural_key(c.address), c.action)))


def recorded_before(plan: JsonObject) -> dict[str, JsonObject]:
    """Address → the values Terraform recorded before each change made outside it."""
    return {
        str(entry.get("address", "")): json_dict(json_dict(entry.get("change")).get("before"))
        for entry in map(json_dict, json_list(plan.get("resource_drift")))
        if not is_noise(entry)
    }


def against_outside(
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
    values = json_dict(rc.get("change"))
    after, unknown = json_dict(values.get("after")), json_dict(values.get("after_unknown"))
    if change.action == "update":
        attrs: Sequence[str] = change.updated_attrs
    else:
        settable = configured.get(strip_index(change.address), frozenset(after))
        attrs = sorted(a for a in settable if a in recorded and after.get(a) is not None)
    differs = tuple(
        a
        for a in attrs
        if not contains_true(unknown.get(a)) and not _same_value(recorded.get(a), after.get(a))
    )
    if not differs:
        return change
    sensitive = Sensitivity(values.get("before_sensitive"), values.get("after_sensitive"))
    shown = attr_diffs(differs, recorded, after, unknown, sensitive)
    return replace(change, differs=differs, outside_diffs=shown)


def _same_value(old: object, new: object) -> bool:
    """Equal, a set (tags, ssh_keys: lists in JSON) compared regardless of order."""
    if isinstance(old, list) and isinstance(new, list):
        return sorted(map(_canonical, old)) == sorted(map(_canonical, new))
    return old == new


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True)
