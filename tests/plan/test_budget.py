"""Budgets in the guard (infra_apply.plan.budget): the configuration, the month against the budget,
what every plan format shows and what apply refuses; pure, on synthetic plans."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from infra_apply.manifests import config
from infra_apply.manifests.config import ConfigError
from infra_apply.plan.budget import Budget, Increase, check, parse_amount, parse_increase, refusal_lines
from infra_apply.plan.cost import ProducerCost, fallback_prices, producer_cost
from infra_apply.plan.model import parse_plan
from infra_apply.report import producer_reports
from infra_apply.report.json import format_json
from infra_apply.report.markdown import format_markdown
from infra_apply.report.text import format_text

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def droplet(name: str, size: str | None) -> dict[str, Any]:
    values: dict[str, Any] = {"name": name}
    if size is not None:
        values["size"] = size
    return {
        "address": f"digitalocean_droplet.{name}",
        "mode": "managed",
        "type": "digitalocean_droplet",
        "name": name,
        "values": values,
    }


def plan(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, Any]:
    changes = [
        {
            "address": d["address"],
            "mode": "managed",
            "type": d["type"],
            "name": d["name"],
            "change": {"actions": ["create"], "before": None, "after": d["values"]},
        }
        for d in after
        if d["address"] not in {b["address"] for b in before}
    ]
    return {
        "format_version": "1.2",
        "prior_state": {"format_version": "1.0", "values": {"root_module": {"resources": before}}},
        "planned_values": {"root_module": {"resources": after}},
        "resource_changes": changes,
    }


def cost(doc: dict[str, Any], budget: Budget | None, **kwargs: Any) -> ProducerCost:
    gpus = kwargs.pop("gpus", {})
    c = producer_cost(doc, fallback_prices(), gpus, now=NOW, **kwargs)
    from dataclasses import replace

    return replace(c, budget=budget)


BUDGET = Budget(Decimal("150.00"))
GROWING = plan([droplet("a", "s-4vcpu-8gb")], [droplet("a", "s-4vcpu-8gb"), droplet("b", "s-8vcpu-16gb")])


# --- configuration ------------------------------------------------------------------------------


def test_amounts_and_increases_are_exact_decimals_never_floats() -> None:
    assert parse_amount("150.00") == Decimal("150.00") and parse_amount(40) == Decimal(40)
    assert parse_increase("25%") == Increase(Decimal(25), percent=True)
    assert parse_increase("40.00") == Increase(Decimal("40.00"), percent=False)
    for bad in (150.0, "abc", "-1", "1.001", "NaN", True):
        assert isinstance(parse_amount(bad), str), bad
    assert "never a float" in str(parse_amount(150.5))
    assert isinstance(parse_increase("x%"), str)


def _load(tmp_path: Path, text: str) -> config.Config:
    (tmp_path / "infra-apply.toml").write_text(text)
    return config.load(tmp_path, {})


def test_a_producer_budget_is_read_from_its_table(tmp_path: Path) -> None:
    c = _load(
        tmp_path,
        '[producers.ct]\nbudget_monthly = "150.00"\nmax_increase = "25%"\n'
        '[producers.ct.droplets]\nmonitoring = true\n[producers.quinn]\nbudget_monthly = "80"\n',
    )
    assert c.budgets == {
        "ct": Budget(Decimal("150.00"), Increase(Decimal(25), True)),
        "quinn": Budget(Decimal(80)),
    }
    assert c.for_producer("ct").monitoring


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("[producers.ct]\nbudget_monthly = 150.0\n", "2:1", "budget_monthly must be an amount in USD"),
        ('[producers.ct]\nbudget_monthly = "150"\nmax_increase = "lots"\n', "3:1", "max_increase"),
        ('[producers.ct]\nmax_increase = "25%"\n', "2:1", "max_increase needs budget_monthly"),
        ('[producers.ct]\nbudget_montly = "1"\n', "2:1", "budget_montly: unknown setting"),
    ],
)
def test_a_bad_budget_is_a_located_error(tmp_path: Path, text: str, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    line = caught.value.format()
    assert line.startswith(f"infra-apply.toml:{where}: error config: "), line
    assert message in line and "\n" not in line, line


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[producers.ct]\nbudget_monthly = "1e30"\n', "2:1"),
        ('[producers.ct]\nbudget_monthly = "99999999999999999999999999999"\n', "2:1"),
        ('[producers.ct]\nbudget_monthly = "150"\nmax_increase = "1e40%"\n', "3:1"),
        ('[producers.ct]\nbudget_monthly = "150"\nmax_increase = "1e30"\n', "3:1"),
    ],
)
def test_a_huge_amount_is_a_located_error_not_a_crash(tmp_path: Path, text: str, where: str) -> None:
    """Decimal's 28 digits cannot hold the cents of 1e30: it was an internal error."""
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    line = caught.value.format()
    assert line.startswith(f"infra-apply.toml:{where}: error config: "), line
    assert "\n" not in line, line
    assert isinstance(parse_amount("999999999.99"), Decimal)


# --- the month against the budget ---------------------------------------------------------------


def test_within_budget() -> None:
    checked = check("ct", cost(GROWING, Budget(Decimal("200"))))
    assert checked is not None and checked.ok
    assert (checked.before, checked.after) == (Decimal("48.00"), Decimal("144.00"))
    assert checked.line() == "budget $200.00/month: $144.00/month after the plan (+$96.00): within budget"
    assert refusal_lines([checked]) == ()


def test_over_the_total_is_refused_with_the_flag() -> None:
    checked = check("ct", cost(GROWING, Budget(Decimal("100.00"))))
    assert checked is not None and checked.over_total and not checked.ok
    [line] = refusal_lines([checked], "infra-apply apply --producer ct --allow-over-budget ct --sandbox")
    assert line == (
        "over budget ct: $144.00/month after the plan is above its budget of $100.00/month — rerun "
        "with --allow-over-budget ct (infra-apply apply --producer ct --allow-over-budget ct --sandbox)"
    )


@pytest.mark.parametrize(
    ("increase", "over"),
    [("100%", True), ("200%", False), ("95.99", True), ("96.00", False)],
)
def test_max_increase_as_a_percentage_or_an_amount(increase: str, over: bool) -> None:
    parsed = parse_increase(increase)
    assert isinstance(parsed, Increase)
    checked = check("ct", cost(GROWING, Budget(Decimal("1000"), parsed)))
    assert checked is not None and checked.over_increase is over and checked.ok is not over
    if over:
        assert "grows by +$96.00/month, more than max_increase" in refusal_lines([checked])[0]


def test_no_budget_no_check() -> None:
    assert check("ct", cost(GROWING, None)) is None


def test_a_price_not_known_is_never_counted_as_zero() -> None:
    unknown = plan([], [droplet("a", "s-1vcpu-1gb"), droplet("odd", "no-such-size")])
    checked = check("ct", cost(unknown, BUDGET))
    assert checked is not None and not checked.ok and not checked.over_total
    assert checked.unknown == ("droplet odd",)
    assert "price not known for droplet odd" in refusal_lines([checked])[0]
    later = plan([], [droplet("b", None)])  # size known only after apply
    assert check("ct", cost(later, BUDGET)).unknown == ("droplet b",)  # type: ignore[union-attr]


def test_a_kind_whose_price_is_not_known_is_refused() -> None:
    from infra_apply import kinds

    unknown = [k for k in kinds.KINDS.values() if k.price.how == "unknown"]
    if not unknown:
        pytest.skip("every kind has a price")
    kind = unknown[0]
    res = {"address": f"{kind.type}.x", "mode": "managed", "type": kind.type, "name": "x", "values": {}}
    checked = check("ct", cost(plan([], [res]), BUDGET))
    assert checked is not None and not checked.ok and checked.unknown == (f"{kind.noun}s (1)",)


def test_a_leased_gpu_counts_its_billed_hours_this_month() -> None:
    gpu = droplet("g", "gpu-h100x1-80gb")
    doc = plan([], [gpu])
    # up now (12:00 on the 29th of November) until 12:00 on 2 December: 36 hours in November
    until = NOW + timedelta(days=3)
    c = cost(doc, Budget(Decimal("100.00")), gpus={"g": until})
    [g] = c.gpus
    assert g.month_hours == 36 and g.hourly is not None and not g.before
    checked = check("ct", c)
    assert checked is not None and checked.after == g.hourly * 36 and checked.before == 0
    assert checked.over_total == (g.hourly * 36 > 100)
    # without a lease, its hours cannot be known: refused, never $0
    unleased = check("ct", cost(doc, Budget(Decimal("100000")), gpus={"g": None}))
    assert unleased is not None and unleased.unknown == ("GPU g",)


def test_a_gpu_up_before_the_plan_adds_nothing_to_the_increase() -> None:
    gpu = droplet("g", "gpu-h100x1-80gb")
    c = cost(
        plan([gpu], [gpu]),
        Budget(Decimal("100000"), Increase(Decimal(0), False)),
        gpus={"g": NOW + timedelta(hours=5)},
        up_since={"g": NOW - timedelta(hours=2)},
    )
    checked = check("ct", c)
    assert checked is not None and checked.ok and checked.diff == 0 and checked.after > 0


# --- every format shows it ----------------------------------------------------------------------


def reports(budget: Budget) -> Any:
    doc = GROWING
    parsed = parse_plan("ct", doc, {})
    return producer_reports([parsed], costs={"ct": cost(doc, budget)}, stand_in=True)


def test_every_format_shows_cost_against_budget() -> None:
    over = reports(Budget(Decimal("100.00")))
    text = format_text(over)
    assert "Budget: budget $100.00/month: $144.00/month after the plan (+$96.00): over budget" in text
    assert "infra-apply apply --producer ct --allow-over-budget ct --sandbox" in text
    md = format_markdown(over)
    assert "⛔ **Budget**: budget \\$100.00/month: \\$144.00/month after the plan" in md
    doc = json.loads(format_json(over))
    producer = doc["producers"]["ct"]
    assert producer["budget"]["ok"] is False and producer["budget"]["monthly"] == 100.0
    assert producer["budget"]["month_after"] == 144.0 and producer["budget"]["over_total"] is True
    ok = format_markdown(reports(Budget(Decimal("200.00"))))
    assert "✅ **Budget**: budget \\$200.00/month" in ok and "within budget" in ok


def test_a_plan_that_changes_nothing_names_no_flag_apply_would_not_ask_for() -> None:
    """apply never refuses a plan that changes nothing for its budget ("nothing to apply"):
    the line said it would, exit 3, unless the flag."""
    standing = GROWING["planned_values"]["root_module"]["resources"]
    doc = plan(standing, standing)
    same = producer_reports(
        [parse_plan("ct", doc, {})], costs={"ct": cost(doc, Budget(Decimal("100.00")))}, stand_in=True
    )
    text = format_text(same)
    assert "Budget: budget $100.00/month: $144.00/month after the plan (±$0.00): over budget" in text
    for shown in (text, format_markdown(same)):
        assert "--allow-over-budget" not in shown, shown


def test_a_targeted_plan_keeps_what_it_does_not_target() -> None:
    # gpu up plans with -target: planned_values hold the GPU alone, the standing droplet stays
    standing, gpu = droplet("a", "s-4vcpu-8gb"), droplet("g", "gpu-h100x1-80gb")
    doc = plan([standing], [gpu])
    until = {"g": NOW + timedelta(hours=1)}
    whole = cost(doc, BUDGET, gpus=until)
    assert (whole.monthly_before, whole.monthly_after) == (Decimal(48), Decimal(0))
    targeted = cost(doc, Budget(Decimal(1000), Increase(Decimal(1), False)), gpus=until, targeted=True)
    assert (targeted.monthly_before, targeted.monthly_after) == (Decimal(48), Decimal(48))
    checked = check("ct", targeted)
    assert checked is not None and checked.diff == Decimal("3.39") and checked.over_increase
