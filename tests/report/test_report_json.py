"""The JSON report: one stable document for tools, with the guard and the counts."""

from __future__ import annotations

import json

import pytest

from infra_apply.plan.guard import guard
from infra_apply.report import producer_reports
from infra_apply.report.json import format_json
from tests.plan_fixtures import OUTSIDE_NAMES, RESIZE_NAMES, SCENARIOS, parsed, read_golden, render_golden


def test_json_is_one_stable_document_with_guard_and_counts() -> None:
    plans = [parsed("replace_delete"), parsed("no_changes", "mc")]
    verdicts = {"quinn": guard(plans[0], ["forge"], ())}
    text = format_json(producer_reports(plans, verdicts))
    assert text.endswith("}\n") and '\n  "format_version": 1,' in text
    doc = json.loads(text)
    assert doc["changed"] is True and doc["format_version"] == 1
    quinn = doc["producers"]["quinn"]
    assert quinn["counts"] == {"create": 0, "update": 1, "replace": 1, "delete": 4, "import": 0}
    assert quinn["guard"]["ok"] is False
    assert [b["address"] for b in quinn["guard"]["blocked"]] == [
        "digitalocean_droplet.quinn_mcp",
        "digitalocean_droplet.quinn_artifacts",
    ]
    assert quinn["guard"]["blocked"][1]["allow_flag"] == "--allow-replace"
    replace = next(c for c in quinn["changes"] if c["action"] == "replace")
    assert replace["replace_paths"] == ["region"]
    # A producer without a verdict gets the no-allowance one: what `apply` would refuse.
    assert doc["producers"]["mc"] == {
        "changes": [],
        "counts": {"create": 0, "update": 0, "replace": 0, "delete": 0, "import": 0},
        "drift": [],
        "guard": {"ok": True, "blocked": [], "errors": []},
        # its parts of the pull-request comment: a row, and no section (nothing to show)
        "markdown": {
            "row": "| mc | 0 | 0 | 0 | 0 | 0 | 0 | 0 | ✅ | - |",
            "prices": None,
            "unpriced": None,
            "section": None,
        },
        "only_undoes_outside": False,
        "outside": [],
        "public_ports": {"opened": [], "closed": [], "moved": []},
        "settings_drift": [],
        "ssh": [],
        "ssh_bootstrap": [],
    }


def test_json_marks_a_resize_and_lists_public_ports() -> None:
    plan = parsed("resize_ports", names=RESIZE_NAMES)
    quinn = json.loads(format_json(producer_reports([plan])))["producers"]["quinn"]
    resize = next(c for c in quinn["changes"] if c["address"] == "digitalocean_droplet.dns")
    assert resize["resize"] == {
        "before": "s-1vcpu-1gb",
        "after": "s-1vcpu-2gb",
        "downtime": True,
        "disk_grows": True,
        "disk_before_gb": 25,
        "disk_after_gb": 50,
        "fails": False,
        "message": "downtime (powered off, resized, powered on); the disk grows and can never be shrunk back",
    }
    assert all(c["resize"] is None for c in quinn["changes"] if c is not resize)
    [blocked] = quinn["guard"]["blocked"]
    assert (blocked["allow_flag"], blocked["name"]) == ("--allow-resize", "com.uvlava.dns")
    mcp = {"address": "digitalocean_firewall.quinn_mcp", "name": "com.uvlava.quinn.mcp"}
    artifacts = {"address": "digitalocean_firewall.quinn_artifacts", "name": "com.uvlava.quinn.artifacts"}
    assert quinn["public_ports"] == {
        "opened": [{**mcp, "protocol": "tcp", "ports": "80"}, {**mcp, "protocol": "tcp", "ports": "443"}],
        "closed": [
            {**artifacts, "protocol": "tcp", "ports": "80"},
            {**artifacts, "protocol": "tcp", "ports": "443"},
        ],
        "moved": [],
    }
    allowed = guard(plan, (), (), ["com.uvlava.dns"])
    doc = json.loads(format_json(producer_reports([plan], {"quinn": allowed})))
    assert doc["producers"]["quinn"]["guard"] == {"ok": True, "blocked": [], "errors": []}


def test_json_reports_unchanged_when_nothing_changes() -> None:
    doc = json.loads(format_json(producer_reports([parsed("no_changes"), parsed("name_drift")], {})))
    assert doc["changed"] is False
    assert doc["producers"]["quinn"]["drift"][0]["live_name"] == "quinn-artifacts-01"


def test_json_lists_outside_changes_apart_and_labels_firewalls() -> None:
    doc = json.loads(format_json(producer_reports([parsed("outside_drift", names=OUTSIDE_NAMES)])))
    quinn = doc["producers"]["quinn"]
    build = next(o for o in quinn["outside"] if o["address"] == "digitalocean_droplet.quinn_build")
    said = (build["action"], build["plan"]["response"], build["plan"]["reverted"])
    assert said == ("resize", "reverts", ["size"])
    assert "never shrinks a disk" in build["plan"]["message"]
    firewalls = {c["address"]: c["label"] for c in quinn["changes"] if c["type"] == "digitalocean_firewall"}
    assert firewalls["digitalocean_firewall.quinn_ci"] == "firewall of com.uvlava.quinn.ci"
    # removed from the manifests: told by the droplet its state's droplet_ids hold
    assert firewalls["digitalocean_firewall.quinn_docs"] == "firewall of com.uvlava.quinn.docs"
    undone = sorted(c["address"] for c in quinn["changes"] if c["undoes_outside"])
    assert undone == [
        "digitalocean_droplet.quinn_artifacts",
        "digitalocean_droplet.quinn_build",
        "digitalocean_droplet.quinn_cache",
        "digitalocean_firewall.quinn_cache",
    ]
    # the resize back lists what really changes, not what the provider recomputes
    resize = next(c for c in quinn["changes"] if c["address"] == "digitalocean_droplet.quinn_build")
    assert resize["updated_attrs"] == ["size"] and "(known after apply)" not in json.dumps(resize)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_json_prints_its_golden_byte_for_byte(scenario: str) -> None:
    assert render_golden(scenario, "json") == read_golden(scenario, "json")
