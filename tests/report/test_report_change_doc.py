"""One JSON shape for a resource change: `plan --format json` and `drift --format json` write a
change made outside Terraform the same way, and every field either ever had is still there."""

from __future__ import annotations

import json

from infra_apply.plan.drift import DriftReport, ProducerDrift
from infra_apply.report import producer_reports
from infra_apply.report.drift import format_json as drift_json
from infra_apply.report.json import format_json as plan_json
from tests.plan_fixtures import OUTSIDE_NAMES, RESIZE_NAMES, parsed

# What each list wrote before the shapes were one: nothing a tool reads may go.
PLAN_CHANGE_FIELDS = {
    "action", "address", "type", "name", "label", "importing", "import_id", "reason",
    "replace_paths", "updated_attrs", "diffs", "resize", "undoes_outside",
}  # fmt: skip
OUTSIDE_FIELDS = {"address", "name", "type", "action", "attributes", "diffs"}


def test_plan_and_drift_write_a_change_made_outside_terraform_alike() -> None:
    plan = parsed("outside_drift", names=OUTSIDE_NAMES)
    planned = json.loads(plan_json(producer_reports([plan])))["producers"]["quinn"]["outside"]
    drifted = json.loads(drift_json(DriftReport((ProducerDrift("quinn", outside=plan.outside),))))
    # the plan adds only what it does about each (`plan`); the change itself is one shape
    assert [{k: v for k, v in o.items() if k != "plan"} for o in planned] == (
        drifted["producers"]["quinn"]["outside"]
    )
    assert all(set(o) >= OUTSIDE_FIELDS for o in planned)
    build = next(o for o in planned if o["address"] == "digitalocean_droplet.quinn_build")
    assert (build["action"], build["kind"], build["resize"]["before"]) == ("resize", "resize", "s-2vcpu-4gb")


def test_a_change_keeps_every_field_and_kind_says_resize_in_every_list() -> None:
    quinn = json.loads(plan_json(producer_reports([parsed("resize_ports", names=RESIZE_NAMES)])))
    changes = quinn["producers"]["quinn"]["changes"]
    assert all(PLAN_CHANGE_FIELDS | OUTSIDE_FIELDS | {"kind"} <= set(c) for c in changes)
    dns = next(c for c in changes if c["address"] == "digitalocean_droplet.dns")
    # in a plan's changes `action` stays Terraform's; `kind` is what every list calls it
    assert (dns["action"], dns["kind"]) == ("update", "resize")
    assert all(c["attributes"] == c["updated_attrs"] for c in changes)
    assert all(c["kind"] == c["action"] for c in changes if c["resize"] is None)
