"""The JSON report for tools: one stable document (``format_version`` 1), sorted keys, ASCII."""

from __future__ import annotations

import json
from collections.abc import Sequence

from infra_apply.cost import CURRENCY, ProducerCost, as_number
from infra_apply.guard import allow_flag, refusal_lines
from infra_apply.plan_model import (
    RULE_ATTRS,
    AttrDiff,
    Change,
    FirewallRule,
    ProducerPlan,
    PublicPort,
    answer,
    display_order,
    only_undoes_outside,
    undoes,
)
from infra_apply.report import ProducerReport
from infra_apply.report._common import answer_text, display_name, impossible_resizes

JSON_FORMAT_VERSION = 1
_STAMP = "%Y-%m-%dT%H:%M:%SZ"


def format_json(reports: Sequence[ProducerReport]) -> str:
    doc = {
        "format_version": JSON_FORMAT_VERSION,
        "changed": any(r.plan.has_changes for r in reports),
        "producers": {r.producer: _json_producer(r) for r in reports},
    }
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def _json_producer(report: ProducerReport) -> dict[str, object]:
    doc = _json_plan(report)
    if report.gpus:
        # On-demand GPU droplets that are up (gpu up), as their leases say, and those up
        # without a lease (leased false: the plan destroys them); absent when none.
        doc["gpus_up"] = [
            {
                "name": g.name,
                "leased": g.until is not None,
                "lease_until": None if g.until is None else g.until.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "hourly_price": g.hourly_price,
                "releasing": g.releasing,
            }
            for g in report.gpus
        ]
    if report.cost is not None:
        doc["cost"] = _json_cost(report.cost)
    return doc


def _json_cost(cost: ProducerCost) -> dict[str, object]:
    """Monthly USD before/after/diff of the standing droplets (numbers rounded to the cent);
    ``unpriced`` droplets are in neither total; on-demand ``gpus`` are in neither either."""
    return {
        "currency": CURRENCY,
        "source": cost.prices.source,
        "as_of": cost.prices.as_of,
        "monthly_before": as_number(cost.monthly_before),
        "monthly_after": as_number(cost.monthly_after),
        "monthly_diff": as_number(cost.monthly_diff),
        "droplets": [
            {
                "name": d.name,
                "address": d.address,
                "size": d.size,
                "size_before": d.size_before,
                "monthly_before": as_number(d.monthly_before),
                "monthly_after": as_number(d.monthly_after),
                "priced": d.priced,
                "refused_size": d.refused_size,
            }
            for d in cost.droplets
        ],
        "unpriced": [{"name": d.name, "address": d.address, "size": d.size} for d in cost.unpriced],
        "gpus": [
            {
                "name": g.name,
                "address": g.address,
                "size": g.size,
                "hourly": None if g.hourly is None else float(g.hourly),
                "lease_until": None if g.lease_until is None else g.lease_until.strftime(_STAMP),
                "hours_left": g.hours_left,
                "lease_ended": g.lease_ended,
                "up_to": as_number(g.up_to),
            }
            for g in cost.gpus
        ],
    }


def _json_plan(report: ProducerReport) -> dict[str, object]:
    plan, verdict = report.plan, report.verdict
    ordered = display_order(plan.changes)
    return {
        "changes": [{**_json_change(c), "undoes_outside": undoes(plan, c) is not None} for c in ordered],
        "counts": dict(plan.counts),
        # What refresh found changed outside Terraform, and what this plan does about each.
        "outside": [_json_outside(plan, o) for o in display_order(plan.outside)],
        "only_undoes_outside": only_undoes_outside(plan),
        "drift": [
            {"address": d.address, "live_name": d.live_name, "manifest_name": d.manifest_name}
            for d in plan.drift
        ],
        # Create-time settings (ForceNew, ignored) infra-apply.toml changed: new droplets only.
        "settings_drift": [
            {"address": d.address, "name": d.name, "settings": list(d.settings)} for d in plan.settings_drift
        ],
        "guard": {
            "ok": verdict.ok,
            "blocked": [
                {
                    "action": c.action,
                    "address": c.address,
                    "name": c.name,
                    "allow_flag": allow_flag(c),
                    "message": line,
                }
                for c, line in zip(verdict.blocked, refusal_lines(verdict), strict=True)
            ],
            # What apply stops on with an error (exit 1) whatever is allowed: resizes to a
            # smaller disk, which can never succeed.
            "errors": [
                {"address": c.address, "name": c.name, "message": c.resize.effect}
                for c in impossible_resizes(plan)
                if c.resize is not None
            ],
        },
        # The firewall changes that open or close a port to the whole internet: a reviewer's
        # (or a CI check's) one place to look.
        "public_ports": {
            "opened": [_json_port(c, p) for c in ordered for p in c.ports_opened],
            "closed": [_json_port(c, p) for c in ordered for p in c.ports_closed],
        },
    }


def _json_outside(plan: ProducerPlan, outside: Change) -> dict[str, object]:
    found = answer(plan, outside)
    return {
        "address": outside.address,
        "name": outside.name,
        "label": display_name(outside),
        "type": outside.type,
        "action": "resize" if outside.resize is not None else outside.action,
        "attributes": list(outside.updated_attrs),
        "diffs": [json_diff(d) for d in outside.diffs],
        "plan": {
            "response": found.response,
            "reverted": list(found.reverted),
            "kept": list(found.kept),
            "changed": list(found.changed),
            "message": answer_text(plan, outside),
        },
    }


def _json_port(change: Change, port: PublicPort) -> dict[str, object]:
    return {"address": change.address, "name": change.name, "protocol": port.protocol, "ports": port.ports}


def _json_change(change: Change) -> dict[str, object]:
    return {
        "action": change.action,
        "address": change.address,
        "type": change.type,
        "name": change.name,
        "label": display_name(change),
        "importing": change.importing,
        "import_id": change.import_id or None,
        "reason": change.reason or None,
        "replace_paths": list(change.replace_paths),
        "updated_attrs": list(change.updated_attrs),
        "diffs": [json_diff(d) for d in change.diffs],
        "resize": _json_resize(change),
        **({"cuts_off": list(change.cuts_off)} if change.cuts_off else {}),
    }


def json_diff(diff: AttrDiff) -> dict[str, object]:
    """A before → after; a list/set attribute also by element (``added``, ``removed``), which
    holds however long the lists (``before``/``after`` then say ``[N items]``)."""
    doc: dict[str, object] = {"attr": diff.attr, "before": diff.before, "after": diff.after}
    if diff.elements:
        doc.update(added=list(diff.added), removed=list(diff.removed))
    if diff.attr in RULE_ATTRS and diff.elements:
        # A firewall's rules, field by field, for tools (``added``/``removed`` say them in words).
        doc.update(
            added_rules=[_json_rule(r) for r in diff.added_rules],
            removed_rules=[_json_rule(r) for r in diff.removed_rules],
        )
    return doc


def _json_rule(rule: FirewallRule) -> dict[str, object]:
    peers = "sources" if rule.direction == "inbound" else "destinations"
    return {"protocol": rule.protocol, "ports": rule.ports, peers: list(rule.peers)}


def _json_resize(change: Change) -> dict[str, object] | None:
    """An in-place resize: always downtime; ``disk_grows`` means it can never be undone;
    ``fails``: DigitalOcean refuses it (the new size's disk is below the droplet's disk)."""
    r = change.resize
    if r is None:
        return None
    return {
        "before": r.before,
        "after": r.after,
        "downtime": True,
        "disk_grows": r.grows,
        "disk_before_gb": r.disk_before,
        "disk_after_gb": r.disk_after,
        "fails": r.fails,
        "message": r.effect,
    }
