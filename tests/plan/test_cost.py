"""The monthly cost of a plan (infra_apply.plan.cost): pure, on synthetic ``terraform show -json``
documents shaped like Terraform 1.11's (prior_state, planned_values, resource_changes)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest

from infra_apply import kinds
from infra_apply.errors import InfraApplyError
from infra_apply.gpu.status import listed_price
from infra_apply.plan.cost import (
    API_SOURCE,
    TABLE_SOURCE,
    Prices,
    ProducerCost,
    fallback_prices,
    money,
    producer_cost,
    signed,
)
from infra_apply.plan.model import parse_plan
from infra_apply.plan.prices import AS_OF, PRICES, ListPrice
from infra_apply.report import producer_reports
from infra_apply.report.cost import gpu_cost_sentence, monthly_change, unpriced_sentence
from infra_apply.report.json import format_json
from infra_apply.report.markdown import format_markdown
from infra_apply.report.text import format_text
from infra_apply.sandbox import catalogue

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
TABLE = fallback_prices()


def droplet(address: str, size: str | None, name: str | None = None, **extra: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"name": name or address.split(".")[-1]}
    if size is not None:  # Terraform leaves a value known only after apply out of planned_values
        values["size"] = size
    return {
        "address": address,
        "mode": "managed",
        "type": "digitalocean_droplet",
        "name": address.split(".")[-1].split("[")[0],
        "values": values,
        **extra,
    }


def plan(
    before: list[dict[str, Any]] = (),  # type: ignore[assignment]
    after: list[dict[str, Any]] = (),  # type: ignore[assignment]
    *,
    changes: list[dict[str, Any]] = (),  # type: ignore[assignment]
    before_modules: list[dict[str, Any]] = (),  # type: ignore[assignment]
    after_modules: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    return {
        "format_version": "1.2",
        "prior_state": {
            "format_version": "1.0",
            "values": {"root_module": {"resources": list(before), "child_modules": list(before_modules)}},
        },
        "planned_values": {"root_module": {"resources": list(after), "child_modules": list(after_modules)}},
        "resource_changes": list(changes),
    }


def cost(doc: dict[str, Any], prices: Prices = TABLE, **kwargs: Any) -> ProducerCost:
    gpus = kwargs.pop("gpus", {})
    return producer_cost(doc, prices, gpus, now=NOW, **kwargs)


def totals(c: ProducerCost) -> tuple[str, str, str]:
    return money(c.monthly_before), money(c.monthly_after), signed(c.monthly_diff)


def test_creating_droplets_costs_their_monthly_prices() -> None:
    c = cost(
        plan(
            after=[
                droplet("digitalocean_droplet.a", "s-2vcpu-4gb"),
                droplet("digitalocean_droplet.b", "s-4vcpu-8gb"),
            ]
        )
    )
    assert totals(c) == ("$0.00", "$72.00", "+$72.00")
    assert monthly_change(c) == "$0.00/month → $72.00/month (+$72.00)"
    assert [(d.name, d.size, d.monthly_before, d.monthly_after) for d in c.droplets] == [
        ("a", "s-2vcpu-4gb", None, Decimal("24")),
        ("b", "s-4vcpu-8gb", None, Decimal("48")),
    ]


def test_count_instances_are_each_a_droplet_and_sums_are_exact_to_the_cent() -> None:
    # 3 x $4 is $12.00, and 3 x $0.10 is $0.30 (a float sum would be 0.30000000000000004).
    three = [droplet(f"digitalocean_droplet.w[{i}]", "s-1vcpu-512mb-10gb") for i in range(3)]
    assert totals(cost(plan(after=three))) == ("$0.00", "$12.00", "+$12.00")
    dimes = Prices({"tiny": ListPrice(Decimal("0.1"), None)}, API_SOURCE, "2026-11-29")
    c = cost(plan(after=[droplet(f"digitalocean_droplet.t[{i}]", "tiny") for i in range(3)]), dimes)
    assert c.monthly_after == Decimal("0.3")
    assert money(c.monthly_after) == "$0.30"


def test_for_each_keys_and_modules_are_found_on_both_sides() -> None:
    mod_before = {
        "address": "module.edge",
        "resources": [droplet('module.edge.digitalocean_droplet.e["fra1"]', "s-1vcpu-1gb")],
    }
    mod_after = {
        "address": "module.edge",
        "resources": [droplet('module.edge.digitalocean_droplet.e["fra1"]', "s-1vcpu-2gb")],
    }
    c = cost(plan(before_modules=[mod_before], after_modules=[mod_after]))
    assert totals(c) == ("$6.00", "$12.00", "+$6.00")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("s-2vcpu-4gb", "s-4vcpu-8gb", ("$24.00", "$48.00", "+$24.00")),  # resize up
        # replaced by a smaller one (an in-place resize to a smaller disk never happens: below)
        ("s-8vcpu-16gb", "s-2vcpu-4gb", ("$96.00", "$24.00", "-$72.00")),
        ("s-2vcpu-4gb", "s-2vcpu-4gb", ("$24.00", "$24.00", "±$0.00")),  # replaced, same size
    ],
)
def test_a_droplet_that_stays_costs_the_difference_of_its_sizes(
    old: str, new: str, expected: tuple[str, str, str]
) -> None:
    address = "digitalocean_droplet.app"
    c = cost(plan([droplet(address, old)], [droplet(address, new)]))
    assert totals(c) == expected
    assert len(c.droplets) == 1


def test_destroying_a_droplet_saves_its_price_and_shows_the_size_it_had() -> None:
    keep = droplet("digitalocean_droplet.keep", "s-2vcpu-4gb")
    gone = droplet("digitalocean_droplet.gone", "s-1vcpu-1gb", "com.uvlava.quinn.mcp")
    c = cost(plan([keep, gone], [keep]))
    assert totals(c) == ("$30.00", "$24.00", "-$6.00")
    [destroyed] = [d for d in c.droplets if d.size_after is None]
    assert (destroyed.name, destroyed.size, destroyed.monthly_after) == (
        "com.uvlava.quinn.mcp",
        "s-1vcpu-1gb",
        None,
    )


def test_manifest_names_win_over_live_names() -> None:
    address = "digitalocean_droplet.quinn_artifacts"
    c = cost(
        plan(after=[droplet(address, "s-1vcpu-1gb", "live-name")]),
        names={address: "com.uvlava.quinn.artifacts"},
    )
    assert c.droplets[0].name == "com.uvlava.quinn.artifacts"


def test_a_moved_droplet_meets_itself_under_its_new_address() -> None:
    doc = plan(
        [droplet("digitalocean_droplet.old", "s-2vcpu-4gb")],
        [droplet("digitalocean_droplet.new", "s-2vcpu-4gb")],
        changes=[{"address": "digitalocean_droplet.new", "previous_address": "digitalocean_droplet.old"}],
    )
    c = cost(doc)
    assert totals(c) == ("$24.00", "$24.00", "±$0.00")
    assert [(d.size_before, d.size_after) for d in c.droplets] == [("s-2vcpu-4gb", "s-2vcpu-4gb")]


def test_a_size_without_a_price_is_listed_and_left_out_of_both_totals_never_counted_as_zero() -> None:
    before = [droplet("digitalocean_droplet.a", "s-2vcpu-4gb"), droplet("digitalocean_droplet.odd", "c-4")]
    after = [droplet("digitalocean_droplet.a", "s-2vcpu-4gb"), droplet("digitalocean_droplet.odd", "c-8")]
    c = cost(plan(before, after))
    assert totals(c) == ("$24.00", "$24.00", "±$0.00")
    assert [(d.name, d.size) for d in c.unpriced] == [("odd", "c-8")]
    assert unpriced_sentence(c, str) == "not in the totals, price unknown: odd (size c-8)"
    assert monthly_change(c) == (
        "$24.00/month → $24.00/month (±$0.00), excluding 1 droplet whose price is unknown"
    )


def test_a_size_known_only_after_apply_is_unpriced_not_free() -> None:
    address = "digitalocean_droplet.a"
    c = cost(plan([droplet(address, "s-2vcpu-4gb")], [droplet(address, None)]))
    # Counting it as 0 after would read as a $24 saving; it is left out of both totals instead.
    assert totals(c) == ("$0.00", "$0.00", "±$0.00")
    assert [(d.name, d.size, d.after) for d in c.unpriced] == [("a", None, True)]
    assert unpriced_sentence(c, str) == "not in the totals, price unknown: a (size known after apply)"


def test_an_on_demand_gpu_costs_by_the_hour_until_its_lease_ends_and_stays_out_of_the_monthly_totals() -> (
    None
):
    names = {"digitalocean_droplet.ct_gpu": "com.uvlava.ct.gpu"}
    services = droplet("digitalocean_droplet.ct_services", "s-2vcpu-4gb")
    gpu = droplet("digitalocean_droplet.ct_gpu[0]", "gpu-h100x1-80gb")
    until = NOW + timedelta(hours=2, minutes=30)  # 3 hours start before it ends
    c = cost(plan([services], [services, gpu]), names=names, gpus={"com.uvlava.ct.gpu": until})
    assert totals(c) == ("$24.00", "$24.00", "±$0.00")
    [g] = c.gpus
    assert (g.name, g.size, g.hourly, g.hours_left, g.up_to) == (
        "com.uvlava.ct.gpu",
        "gpu-h100x1-80gb",
        Decimal("3.39"),
        3,
        Decimal("10.17"),
    )
    assert gpu_cost_sentence(g, str) == (
        "GPU com.uvlava.ct.gpu (gpu-h100x1-80gb): $3.39/hour, up to $10.17 until its lease ends "
        "2026-11-29 14:30Z; on demand, not in the monthly figures"
    )


def test_a_gpu_without_a_lease_or_a_price_says_so() -> None:
    names = {"digitalocean_droplet.g": "g"}
    c = cost(
        plan(after=[droplet("digitalocean_droplet.g[0]", "gpu-h200x1-141gb")]), names=names, gpus={"g": None}
    )
    [g] = c.gpus
    assert (g.hourly, g.up_to, c.monthly_after) == (None, None, Decimal(0))
    assert "hourly price unknown, no lease holds it" in gpu_cost_sentence(g, str)


def test_a_gpu_whose_lease_has_ended_costs_nothing_more_by_its_lease() -> None:
    names = {"digitalocean_droplet.g": "g"}
    doc = plan(after=[droplet("digitalocean_droplet.g[0]", "gpu-h100x1-80gb")])
    [g] = cost(doc, names=names, gpus={"g": NOW - timedelta(minutes=5)}).gpus
    assert (g.hours_left, g.up_to, g.lease_ended) == (0, Decimal("0.00"), True)
    assert "its lease ended 2026-11-29 11:55Z (the next gpu reap releases it)" in gpu_cost_sentence(g, str)


def test_a_gpu_released_by_the_plan_is_no_cost_line() -> None:
    names = {"digitalocean_droplet.g": "g"}
    c = cost(
        plan([droplet("digitalocean_droplet.g[0]", "gpu-h100x1-80gb")], []), names=names, gpus={"g": None}
    )
    assert c.gpus == () and c.droplets == ()


@pytest.mark.parametrize(
    ("amount", "plain", "diff"),
    [
        (Decimal("0"), "$0.00", "±$0.00"),
        (Decimal("-6"), "-$6.00", "-$6.00"),
        (Decimal("1234.5"), "$1,234.50", "+$1,234.50"),
        (Decimal("0.005"), "$0.01", "+$0.01"),
        (Decimal("-0.004"), "$0.00", "±$0.00"),
    ],
)
def test_money_is_two_decimals_with_an_explicit_sign(amount: Decimal, plain: str, diff: str) -> None:
    assert (money(amount), signed(amount)) == (plain, diff)


def test_the_shipped_table_is_dated_and_the_one_source_of_every_price() -> None:
    assert (TABLE.source, TABLE.as_of) == (TABLE_SOURCE, AS_OF)
    assert TABLE_SOURCE == "list prices as of 2026-11-29 (shipped table)"
    assert TABLE.monthly("s-2vcpu-4gb") == Decimal("24")
    assert TABLE.hourly("s-1vcpu-1gb") == Decimal("0.00893")  # $6 over the 672-hour month
    assert TABLE.monthly("gpu-h100x1-80gb") == Decimal("2278.08")  # 672 x $3.39
    # The sandbox catalogue and gpu status read the same table: no second copy of a price.
    for size in catalogue.sizes():
        price = PRICES[size["slug"]]
        assert size["price_monthly"] == (None if price.monthly is None else float(price.monthly))
        assert size["price_hourly"] == (None if price.hourly is None else float(price.hourly))
    assert listed_price("gpu-h100x1-80gb") == 3.39
    assert json.dumps(catalogue.sizes()[1]["price_hourly"]) == "0.00893"


def test_a_gpu_costs_the_hours_billed_by_its_lease_end_less_those_billed_since_it_came_up() -> None:
    """DigitalOcean bills each started hour of a droplet's life: 4 s after `gpu up --for 3h`,
    one hour is billed already (what `gpu status` shows) and two more will be, not three."""
    from infra_apply.gpu.lease import billed_hours

    names = {"digitalocean_droplet.g": "g"}
    doc = plan(
        [droplet("digitalocean_droplet.g[0]", "gpu-h100x1-80gb")],
        [droplet("digitalocean_droplet.g[0]", "gpu-h100x1-80gb")],
    )
    up = NOW - timedelta(seconds=4)
    until = up + timedelta(hours=3)
    [g] = cost(doc, names=names, gpus={"g": until}, up_since={"g": up}).gpus
    spent = billed_hours(NOW - up) * Decimal("3.39")  # gpu status's cost so far
    assert (g.hours_left, g.up_to, spent) == (2, Decimal("6.78"), Decimal("3.39"))
    assert g.up_to + spent == Decimal("10.17")  # the whole lease: 3 hours
    # 61 minutes up with a lease of 2 h 30 m: 3 hours by the end, 2 billed already
    up = NOW - timedelta(minutes=61)
    [g] = cost(doc, names=names, gpus={"g": up + timedelta(hours=2, minutes=30)}, up_since={"g": up}).gpus
    assert g.hours_left == 1
    # not up yet (the plan brings it up now): counted from now, as before
    [g] = cost(doc, names=names, gpus={"g": NOW + timedelta(hours=3)}).gpus
    assert g.hours_left == 3


def test_a_live_lease_in_its_last_billed_hour_is_not_said_to_have_ended() -> None:
    """Up for 30 minutes with 20 left: its one billed hour covers the rest, so nothing more is
    billed, but the lease is live (and the GPU stays up) for 20 minutes yet."""
    names = {"digitalocean_droplet.g": "g"}
    doc = plan(after=[droplet("digitalocean_droplet.g[0]", "gpu-h100x1-80gb")])
    up_since = {"g": NOW - timedelta(minutes=30)}
    [g] = cost(doc, names=names, gpus={"g": NOW + timedelta(minutes=20)}, up_since=up_since).gpus
    sentence = gpu_cost_sentence(g, str)
    assert "ended" not in sentence
    live = "nothing more until its lease ends 2026-11-29 12:20Z (its last billed hour is under way)"
    assert live in sentence
    assert (g.hours_left, g.up_to, g.lease_ended) == (0, Decimal("0.00"), False)


def test_a_resize_to_a_smaller_disk_is_priced_as_no_change() -> None:
    """It can never happen (a disk never shrinks; apply refuses it): no saving is promised."""
    address = "digitalocean_droplet.a"
    grown = droplet(address, "s-4vcpu-8gb", disk=160)  # a console resize grew its disk
    resize = {"address": address, "change": {"actions": ["update"]}}
    c = cost(plan([grown], [droplet(address, "s-2vcpu-4gb", disk=160)], changes=[resize]))
    assert totals(c) == ("$48.00", "$48.00", "±$0.00")
    [d] = c.refused
    assert (d.size_before, d.size_after, d.refused_size) == ("s-4vcpu-8gb", "s-4vcpu-8gb", "s-2vcpu-4gb")
    # a resize the disk allows is priced as planned
    ok = cost(plan([droplet(address, "s-1vcpu-1gb")], [droplet(address, "s-2vcpu-4gb")], changes=[resize]))
    assert totals(ok) == ("$6.00", "$24.00", "+$18.00") and ok.refused == ()


# --- every managed kind the plan touches, priced as the kinds table says --------------------


def resource(rtype: str, address: str, **values: Any) -> dict[str, Any]:
    name = address.split(".")[-1]
    return {"address": address, "mode": "managed", "type": rtype, "name": name, "values": values}


UPTIME = "digitalocean_uptime_check"  # replaced by a test's own entry where it needs one
UNLISTED = "digitalocean_loadbalancer"  # a DigitalOcean kind the table does not have


def with_kind(monkeypatch: pytest.MonkeyPatch, kind: kinds.Kind) -> None:
    monkeypatch.setattr(kinds, "KINDS", MappingProxyType({**kinds.KINDS, kind.type: kind}))


def test_a_kind_missing_from_the_table_is_refused_never_skipped_as_free() -> None:
    unlisted = resource(UNLISTED, f"{UNLISTED}.web")
    doc = plan(after=[droplet("digitalocean_droplet.web", "s-1vcpu-1gb"), unlisted])
    with pytest.raises(InfraApplyError, match=rf"{UNLISTED}\.web: resource type {UNLISTED} is not in"):
        cost(doc)


def test_the_tables_uptime_check_costs_its_flat_price_and_its_alerts_nothing() -> None:
    doc = plan(
        after=[
            droplet("digitalocean_droplet.web", "s-1vcpu-1gb"),
            resource(UPTIME, f"{UPTIME}.web", name="web.example.net"),
            resource("digitalocean_uptime_alert", "digitalocean_uptime_alert.web_down", name="down"),
            resource("digitalocean_monitor_alert", "digitalocean_monitor_alert.cpu", description="cpu"),
        ]
    )
    c = cost(doc)
    assert totals(c) == ("$0.00", "$7.00", "+$7.00")
    assert c.price_not_known == ()


def test_a_firewall_database_and_user_are_free_and_count_no_price_unknown() -> None:
    doc = plan(
        after=[
            droplet("digitalocean_droplet.web", "s-1vcpu-1gb"),
            resource("digitalocean_firewall", "digitalocean_firewall.web", name="fw-web"),
            resource("digitalocean_database_db", "digitalocean_database_db.pg__app", name="app"),
            resource("digitalocean_database_user", "digitalocean_database_user.pg__app", name="app"),
        ]
    )
    c = cost(doc)
    assert totals(c) == ("$0.00", "$6.00", "+$6.00")
    assert c.price_not_known == ()
    assert {(k.kind.type, k.before, k.after) for k in c.kinds} == {
        ("digitalocean_firewall", 0, 1),
        ("digitalocean_database_db", 0, 1),
        ("digitalocean_database_user", 0, 1),
    }
    assert "price not known" not in monthly_change(c)


def two_new_checks() -> dict[str, Any]:
    """A plan creating a droplet and two uptime checks."""
    return plan(
        after=[
            droplet("digitalocean_droplet.web", "s-1vcpu-1gb"),
            resource(UPTIME, f"{UPTIME}.web", name="web"),
            resource(UPTIME, f"{UPTIME}.api", name="api"),
        ],
        changes=[
            {**resource(UPTIME, f"{UPTIME}.{n}"), "change": {"actions": ["create"], "after": {}}}
            for n in ("web", "api")
        ],
    )


def test_a_kind_whose_price_is_not_known_is_named_in_every_format_never_counted_as_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # an entry that states no price: its price is not known
    check = kinds.Kind(type=UPTIME, mode="managed", noun="uptime check", guard=kinds.GUARDED, import_id=None)
    with_kind(monkeypatch, check)
    doc = two_new_checks()
    c = cost(doc)
    assert totals(c) == ("$0.00", "$6.00", "+$6.00")  # the droplet only: the checks are left out
    said = "price not known, not in the totals: uptime checks (0 → 2)"
    assert monthly_change(c).endswith(f"(+$6.00); {said}")
    reports = producer_reports([parse_plan("quinn", doc, {})], costs={"quinn": c})
    assert said in format_text(reports)
    assert said.replace("$", "\\$") in format_markdown(reports)
    assert format_markdown(reports).count(said) == 2  # the table's footnote and the section
    producer = json.loads(format_json(reports))["producers"]["quinn"]
    assert producer["cost"]["price_not_known"] == [
        {"type": UPTIME, "noun": "uptime check", "before": 0, "after": 2}
    ]


def test_a_kind_at_a_flat_list_price_adds_it_per_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    # do-catalogue-facts.md: an uptime check costs about 1 USD a month.
    check = kinds.Kind(
        type=UPTIME,
        mode="managed",
        noun="uptime check",
        guard=kinds.GUARDED,
        import_id=None,
        price=kinds.Price("flat", Decimal(1)),
    )
    with_kind(monkeypatch, check)
    doc = plan(
        before=[resource(UPTIME, f"{UPTIME}.web")],
        after=[resource(UPTIME, f"{UPTIME}.web"), resource(UPTIME, f"{UPTIME}.api")],
    )
    assert totals(cost(doc)) == ("$1.00", "$2.00", "+$1.00")


def test_the_uptime_checks_a_total_counts_have_their_own_line_in_every_summary() -> None:
    """The totals count $1.00 a check: the lines under them, which listed droplets only, left
    the difference unexplained."""
    doc = two_new_checks()
    c = cost(doc)
    assert totals(c) == ("$0.00", "$8.00", "+$8.00")
    said = "uptime check at $1.00/month: 0 → 2 uptime checks (+$2.00)"
    reports = producer_reports([parse_plan("quinn", doc, {})], costs={"quinn": c})
    assert f"  $ {said}\n" in format_text(reports)
    assert f"- 💲 {said}".replace("$", "\\$") in format_markdown(reports)
    # a plan that keeps the checks as they are says nothing of them
    standing = doc["planned_values"]["root_module"]["resources"]
    kept = cost(plan(before=standing, after=standing))
    unchanged = producer_reports([parse_plan("quinn", plan(), {})], costs={"quinn": kept})
    assert "uptime check at" not in format_text(unchanged)


def test_a_flat_price_goes_with_an_amount_and_nothing_else_does() -> None:
    with pytest.raises(ValueError):
        kinds.Price("flat")
    with pytest.raises(ValueError):
        kinds.Price("free", Decimal(1))
