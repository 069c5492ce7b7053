"""The JSON report for tools: one stable document (``format_version`` 1), sorted keys, ASCII.

It is also the artifact between CI jobs: with the plan's ``context`` and each producer's parts
of the pull-request comment (``markdown``), ``comment`` assembles several plans into one."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC

from infra_apply.plan.budget import BudgetCheck, check
from infra_apply.plan.cost import CURRENCY, ProducerCost, as_number
from infra_apply.plan.guard import allow_flag, refusal_lines
from infra_apply.plan.outside import answer, only_undoes_outside, undoes
from infra_apply.plan.parse import Change, ProducerPlan, display_order
from infra_apply.plan.semantics import PublicPort
from infra_apply.report import PlanContext, ProducerReport
from infra_apply.report._common import answer_text, bootstrap_sentence, impossible_resizes, ssh_sentence
from infra_apply.report.change_doc import change_doc
from infra_apply.report.markdown import producer_parts

JSON_FORMAT_VERSION = 1
_STAMP = "%Y-%m-%dT%H:%M:%SZ"


def format_json(reports: Sequence[ProducerReport], context: PlanContext | None = None) -> str:
    """The plan of ``reports``; ``context``: where and when it ran (``null`` when unknown)."""
    doc = {
        "format_version": JSON_FORMAT_VERSION,
        "changed": any(r.plan.has_changes for r in reports),
        "context": None if context is None else _json_context(context),
        "producers": {r.producer: _json_producer(r) for r in reports},
    }
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def _json_context(context: PlanContext) -> dict[str, object]:
    return {
        "sandbox": context.sandbox,
        "commit": context.commit,
        "planned_at": context.planned_at.astimezone(UTC).strftime(_STAMP),
    }


def _json_producer(report: ProducerReport) -> dict[str, object]:
    doc = _json_plan(report)
    # The producer's parts of the pull-request comment, rendered here (the diagram needs the
    # model, the guard sentence the verdict): ``comment`` assembles several plans from them.
    doc["markdown"] = dataclasses.asdict(producer_parts(report))
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
        checked = check(report.producer, report.cost)
        if checked is not None:
            doc["budget"] = _json_budget(checked)
    return doc


def _json_budget(checked: BudgetCheck) -> dict[str, object]:
    """The month (standing cost + leased GPUs' hours this month) against the budget; ``ok``
    False: apply refuses it (exit 3) without --allow-over-budget."""
    inc = checked.budget.max_increase
    return {
        "monthly": as_number(checked.budget.monthly),
        "max_increase": None if inc is None else inc.text,
        "month_before": as_number(checked.before),
        "month_after": as_number(checked.after),
        "month_diff": as_number(checked.diff),
        "price_not_known": list(checked.unknown),
        "over_total": checked.over_total,
        "over_increase": checked.over_increase,
        "ok": checked.ok,
        "reasons": list(checked.reasons()),
    }


def _json_cost(cost: ProducerCost) -> dict[str, object]:
    """Monthly USD before/after/diff of the standing droplets (numbers rounded to the cent);
    ``unpriced`` droplets are in neither total, nor the ``price_not_known`` kinds; on-demand
    ``gpus`` are in neither either."""
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
        "price_not_known": [
            {"type": k.kind.type, "noun": k.kind.noun, "before": k.before, "after": k.after}
            for k in cost.price_not_known
        ],
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
                "month_hours": g.month_hours,
            }
            for g in cost.gpus
        ],
    }


def _json_plan(report: ProducerReport) -> dict[str, object]:
    plan, verdict = report.plan, report.verdict
    ordered = display_order(plan.changes)
    return {
        "changes": [{**change_doc(c), "undoes_outside": undoes(plan, c) is not None} for c in ordered],
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
            {
                "address": d.address,
                "name": d.name,
                "settings": list(d.settings),
                **({"vpc_cluster": d.vpc_cluster} if d.vpc_cluster else {}),
            }
            for d in plan.settings_drift
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
            # taken over from another firewall of the same droplet: open throughout
            "moved": [_json_port(c, p) for c in ordered for p in c.ports_moved],
        },
        # SSH (22/tcp) narrowed or closed: the addresses that lose it, and those that keep it
        "ssh": [
            {
                "address": c.address,
                "name": c.name,
                "removed": list(c.ssh.removed),
                "left": list(c.ssh.left),
                "message": ssh_sentence(c, str),
            }
            for c in ordered
            if c.ssh is not None
        ],
        "ssh_bootstrap": [{"name": n, "message": bootstrap_sentence(n, str)} for n in plan.ssh_bootstrap],
    }


def _json_outside(plan: ProducerPlan, outside: Change) -> dict[str, object]:
    found = answer(plan, outside)
    return {
        **change_doc(outside, outside=True),
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
