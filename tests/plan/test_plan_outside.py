"""Changes made outside Terraform, and what a plan does about each (undo judged by value)."""

from __future__ import annotations

from typing import cast

from infra_apply.plan.model import parse_plan
from infra_apply.plan.outside import answer, only_undoes_outside, undoes
from infra_apply.plan.semantics import Resize
from infra_apply.report import producer_reports
from infra_apply.report.text import format_text
from tests.plan_fixtures import (
    OUTSIDE_NAMES,
    parsed,
    rc,
    synthetic,
)


def test_an_ordinary_plan_keeps_what_changed_outside_terraform_apart() -> None:
    # outside_drift.json is a real sandbox plan (make_outside_drift.sh): console edits, then a PR.
    plan = parsed("outside_drift", names=OUTSIDE_NAMES)
    assert [(c.address, c.action, c.updated_attrs) for c in plan.outside] == [
        ("digitalocean_droplet.quinn_artifacts", "update", ("name", "tags")),
        (
            "digitalocean_droplet.quinn_build",
            "update",
            ("disk", "memory", "price_hourly", "price_monthly", "size", "vcpus"),
        ),
        ("digitalocean_droplet.quinn_cache", "delete", ()),
        ("digitalocean_firewall.quinn_cache", "update", ("droplet_ids",)),
    ]
    build = next(c for c in plan.outside if c.address == "digitalocean_droplet.quinn_build")
    assert build.resize == Resize("s-2vcpu-4gb", "s-4vcpu-8gb", disk_before=80, disk_after=160)
    # the drift is not counted as the plan's own changes
    assert plan.counts == {"create": 3, "update": 5, "replace": 1, "delete": 2, "import": 0}


def test_answer_says_what_the_plan_does_about_each_outside_change() -> None:
    plan = parsed("outside_drift", names=OUTSIDE_NAMES)
    found = {o.address: answer(plan, o)[:3] for o in plan.outside}
    assert found == {
        "digitalocean_droplet.quinn_artifacts": ("partly reverts", ("tags",), ("name",)),
        "digitalocean_droplet.quinn_build": ("reverts", ("size",), ()),
        "digitalocean_droplet.quinn_cache": ("recreates", (), ()),
        "digitalocean_firewall.quinn_cache": ("reverts", ("droplet_ids",), ()),
    }
    undone = [c.address for c in plan.changes if undoes(plan, c) is not None]
    assert undone == [
        "digitalocean_droplet.quinn_artifacts",
        "digitalocean_droplet.quinn_build",
        "digitalocean_droplet.quinn_cache",
        "digitalocean_firewall.quinn_cache",
    ]
    assert not only_undoes_outside(plan)  # the pull request adds, resizes, replaces, destroys


def outside_only_plan() -> dict[str, object]:
    """A droplet deleted and another retagged by hand; the plan re-creates and retags."""
    return {
        **synthetic(
            rc("digitalocean_droplet.web", ["create"], after={"name": "web"}),
            rc("digitalocean_droplet.db", ["update"], before={"tags": ["a", "x"]}, after={"tags": ["a"]}),
        ),
        "resource_drift": [
            rc("digitalocean_droplet.web", ["delete"], before={"name": "web"}),
            rc("digitalocean_droplet.db", ["update"], before={"tags": ["a"]}, after={"tags": ["a", "x"]}),
        ],
    }


def test_a_plan_that_only_undoes_outside_changes_is_told_apart() -> None:
    plan = parse_plan("quinn", outside_only_plan(), {})
    assert only_undoes_outside(plan)
    # one more change of its own, and the plan brings something new
    raw = outside_only_plan()
    raw["resource_changes"].append(rc("digitalocean_droplet.new", ["create"], after={"name": "new"}))  # type: ignore[attr-defined]
    assert not only_undoes_outside(parse_plan("quinn", raw, {}))
    # an outside change the plan leaves alone
    kept = parse_plan("quinn", {**outside_only_plan(), "resource_changes": []}, {})
    assert [answer(kept, o).response for o in kept.outside] == ["keeps", "keeps"]
    assert not only_undoes_outside(kept)


def pr_and_console_plan() -> dict[str, object]:
    """Issue 13: the pull request changes what was also changed by hand, to other values."""
    applied = {
        "name": "svc",
        "size": "s-4vcpu-8gb",
        "region": "nyc3",
        "image": "ubuntu-24-04-x64",
        "disk": 160,
    }
    console = {**applied, "size": "s-2vcpu-4gb", "disk": 80}
    batch = {"name": "batch", "tags": ["managed-by:infra-apply", "role:batch"]}
    dns = {"name": "dns", "size": "s-1vcpu-1gb", "region": "nyc3", "image": "ubuntu-24-04-x64"}
    return {
        **synthetic(
            rc(
                "digitalocean_droplet.svc",
                ["update"],
                before=console,
                after={**console, "size": "s-8vcpu-16gb"},
            ),
            rc(
                "digitalocean_droplet.batch",
                ["update"],
                before={**batch, "tags": [*batch["tags"], "owner:alice"]},
                after={**batch, "tags": ["managed-by:infra-apply", "role:jobs"]},
            ),
            rc("digitalocean_droplet.dns", ["create"], after={**dns, "size": "s-2vcpu-4gb"}),
        ),
        "resource_drift": [
            rc("digitalocean_droplet.svc", ["update"], before=applied, after=console),
            rc(
                "digitalocean_droplet.batch",
                ["update"],
                before=batch,
                after={**batch, "tags": [*batch["tags"], "owner:alice"]},
            ),
            rc("digitalocean_droplet.dns", ["delete"], before=dns),
        ],
    }


def test_a_change_to_a_new_value_never_counts_as_undoing_an_outside_change() -> None:
    from infra_apply.report._common import answer_text

    plan = parse_plan("mc", pr_and_console_plan(), {})
    assert [undoes(plan, c) for c in plan.changes] == [None, None, None]
    assert not only_undoes_outside(plan)
    said = {o.address: (answer(plan, o).response, answer_text(plan, o)) for o in plan.outside}
    assert said == {
        "digitalocean_droplet.svc": (
            "changes",
            "this plan resizes it to s-8vcpu-16gb, a size it never had",
        ),
        "digitalocean_droplet.batch": (
            "changes",
            "this plan changes tags -owner:alice, -role:batch +role:jobs, not back",
        ),
        "digitalocean_droplet.dns": ("recreates", "this plan re-creates it as s-2vcpu-4gb, not as it was"),
    }
    text = format_text(producer_reports([plan]))
    assert "only undoes" not in text and "undoes a change" not in text and "back to" not in text


def test_a_true_undo_is_judged_by_value_attribute_by_attribute() -> None:
    raw = pr_and_console_plan()
    changes: list[dict[str, object]] = raw["resource_changes"]  # type: ignore[assignment]
    svc, batch, dns = (cast(dict[str, dict[str, dict[str, object]]], c)["change"] for c in changes)
    svc["after"] = {**svc["after"], "size": "s-4vcpu-8gb"}  # back to what it had
    batch["after"] = {**batch["after"], "tags": ["role:batch", "managed-by:infra-apply"]}  # a set
    dns["after"] = {**dns["after"], "size": "s-1vcpu-1gb"}  # the droplet that was deleted
    plan = parse_plan("mc", raw, {})
    assert [undoes(plan, c) is not None for c in plan.changes] == [True, True, True]
    assert only_undoes_outside(plan)
    # the same droplet in another image is a new one, not the one deleted
    dns["after"] = {**dns["after"], "image": "debian-12-x64"}
    plan = parse_plan("mc", raw, {})
    gone = next(o for o in plan.outside if o.action == "delete")
    from infra_apply.report._common import answer_text

    assert answer_text(plan, gone) == "this plan re-creates it with a different image, not as it was"
    assert not only_undoes_outside(plan)
