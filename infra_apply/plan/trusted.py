"""A shared cluster's trusted sources in a plan: whom a ``digitalocean_database_firewall``
change cuts off.

The resource owns the cluster's whole rule list, so what it removes is judged against the
rules the cluster has now (the run's account read, ``GET /v2/databases/$ID/firewall``),
hand-made ones included, not against Terraform's state. Its first rules block every client
not listed; and a droplet hosting a project that uses the cluster, present in the account
without the cluster's tag (its producer not applied since), would lose its database. Each of
these goes in the change's ``cuts_off``, which the guard refuses without
``--allow-trusted-sources CLUSTER`` and every plan format shows. A create or update that cuts
nobody off (the cluster already trusts what it lists) needs no flag.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from infra_apply import remedy
from infra_apply.kinds import DATABASE_FIREWALL, DROPLET
from infra_apply.plan.parse import AttrDiff, Change, ProducerPlan

if TYPE_CHECKING:
    from infra_apply.manifests.model import ProducerModel, TrustedSources
    from infra_apply.plan.exists import Account

Rule = tuple[str, str]  # (type, value)


def review(
    plan: ProducerPlan,
    raw: Mapping[str, Any],
    producer: ProducerModel,
    account: Account | None,
    *,
    keep: Sequence[str] = (),
) -> ProducerPlan:
    """``plan`` with each database firewall change's rule diff and ``cuts_off`` filled in."""
    owned = {t.cluster: t for t in producer.trusted_sources}
    values = _values(raw)
    known = _known_before_outside(raw)
    changes = tuple(
        _reviewed(
            c, values.get(c.address, ({}, {})), known.get(c.address), owned.get(c.name), account, raw, keep
        )
        if c.type == DATABASE_FIREWALL.type
        else c
        for c in plan.changes
    )
    return replace(plan, changes=changes)


def _reviewed(
    change: Change,
    before_after: tuple[Mapping[str, Any], Mapping[str, Any]],
    known: Mapping[str, Any] | None,
    ts: TrustedSources | None,
    account: Account | None,
    raw: Mapping[str, Any],
    keep: Sequence[str],
) -> Change:
    before_state, after_state = before_after
    now = account.rules.get(change.name) if account is not None else None
    before = set(now) if now is not None else set(_rules(before_state.get("rule")))
    after = set() if change.action == "delete" else set(_rules(after_state.get("rule")))
    removed, added = sorted(before - after), sorted(after - before)
    # what Terraform recorded before any change made outside it (refresh reads hand-made rules)
    recorded = set(_rules((known if known is not None else before_state).get("rule")))
    cuts = []
    if change.action != "delete":  # a deletion opens the cluster to every address instead
        cuts = [f"{_show(r)} ({_origin(r, recorded)})" for r in removed]
    if change.action in ("create", "replace") and not before and after:
        now_known = "the cluster trusts any address now" if now is not None else "its rules now are unknown"
        cuts.append(f"every client not listed ({now_known})")
    if ts is not None and account is not None and change.action != "delete":
        tagged = _tagged_by_plan(raw, ts.tag)
        for name, producer in ts.hosts:
            for d in account.named(name):
                if ts.tag not in d.tags and name not in tagged:
                    first = remedy.for_producer("apply", producer, keep=keep)
                    cuts.append(
                        f"droplet {name} (it hosts a project using {ts.cluster} and does not carry "
                        f"tag {ts.tag} yet; to keep it, run {first} first)"
                    )
    diff = AttrDiff(
        "rule",
        f"[{len(before)} rules]",
        f"[{len(after)} rules]",
        added=tuple(_show(r) for r in added),
        removed=tuple(_show(r) for r in removed),
        elements=True,
    )
    diffs = (*(d for d in change.diffs if d.attr != "rule"), diff) if removed or added else change.diffs
    return replace(change, diffs=diffs, cuts_off=tuple(cuts))


def _origin(rule: Rule, recorded: set[Rule]) -> str:
    return "a rule it removes" if rule in recorded else "a rule made outside infra-apply"


def _show(rule: Rule) -> str:
    return f"{rule[0]} {rule[1]}"


def _rules(value: object) -> list[Rule]:
    if not isinstance(value, list):
        return []
    return [
        (str(r.get("type")), str(r.get("value")))
        for r in value
        if isinstance(r, Mapping) and isinstance(r.get("type"), str) and isinstance(r.get("value"), str)
    ]


def _values(raw: Mapping[str, Any]) -> dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]]:
    out = {}
    for rc in _list(raw.get("resource_changes")):
        change = _map(rc.get("change"))
        before, after = change.get("before"), change.get("after")
        out[str(rc.get("address"))] = (
            before if isinstance(before, Mapping) else {},
            after if isinstance(after, Mapping) else {},
        )
    return out


def _known_before_outside(raw: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Address -> the values Terraform recorded before the change made outside it (the plan's
    ``resource_drift``), for the resources changed outside."""
    return {
        str(e.get("address")): _map(_map(e.get("change")).get("before"))
        for e in _list(raw.get("resource_drift"))
    }


def _tagged_by_plan(raw: Mapping[str, Any], tag: str) -> set[str]:
    """Droplets (by name) this plan gives the tag: created or updated with it in their tags."""
    names = set()
    for rc in _list(raw.get("resource_changes")):
        if rc.get("type") != DROPLET.type:
            continue
        change = _map(rc.get("change"))
        after = change.get("after")
        if (
            isinstance(after, Mapping)
            and tag in (after.get("tags") or ())
            and "delete" not in change.get("actions", ())
        ):
            names.add(str(after.get("name")))
    return names


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> Sequence[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []
