"""The JSON report for tools: one stable document (``format_version`` 1), sorted keys, ASCII."""

from __future__ import annotations

import json
from collections.abc import Sequence

from infra_apply.guard import allow_flag, refusal_lines
from infra_apply.plan_model import Change, display_order
from infra_apply.report import ProducerReport

JSON_FORMAT_VERSION = 1


def format_json(reports: Sequence[ProducerReport]) -> str:
    doc = {
        "format_version": JSON_FORMAT_VERSION,
        "changed": any(r.plan.has_changes for r in reports),
        "producers": {r.producer: _json_producer(r) for r in reports},
    }
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def _json_producer(report: ProducerReport) -> dict[str, object]:
    plan, verdict = report.plan, report.verdict
    return {
        "changes": [_json_change(c) for c in display_order(plan.changes)],
        "counts": dict(plan.counts),
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
        },
    }


def _json_change(change: Change) -> dict[str, object]:
    return {
        "action": change.action,
        "address": change.address,
        "type": change.type,
        "name": change.name,
        "importing": change.importing,
        "import_id": change.import_id or None,
        "reason": change.reason or None,
        "replace_paths": list(change.replace_paths),
        "updated_attrs": list(change.updated_attrs),
        "diffs": [{"attr": d.attr, "before": d.before, "after": d.after} for d in change.diffs],
    }
