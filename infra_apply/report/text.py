"""The terminal summary: per producer its changes (destructive first), drift and counts.

With ``color`` (the CLI decides: a terminal, no NO_COLOR / --no-color) each change's symbol
and verb take its action's colour and ``!`` lines are yellow; text is made visible() first."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from infra_apply.color import paint
from infra_apply.plan.outside import only_undoes_outside
from infra_apply.plan.parse import Change, ProducerPlan, display_order
from infra_apply.report import ProducerReport, gpu_sentence
from infra_apply.report._common import (
    ONLY_UNDOES,
    answer_text,
    bootstrap_sentence,
    counts_sentence,
    detail,
    drift_sentence,
    outside_sentence,
    port_callouts,
    settings_sentence,
    undo_note,
    who,
)
from infra_apply.report.cost import (
    budget_sentence,
    changed_flat,
    changed_sizes,
    flat_sentence,
    gpu_cost_sentence,
    monthly_change,
    prices_label,
    refused_sentence,
    size_sentence,
    unpriced_sentence,
)
from infra_apply.untrusted import visible

_SYMBOLS: Mapping[str, tuple[str, str]] = {
    "create": ("+", "create"),
    "update": ("~", "update"),
    "replace": ("-/+", "replace"),
    "delete": ("-", "destroy"),
    "import": ("<=", "import"),
}


def format_text(reports: Sequence[ProducerReport], color: bool = False) -> str:
    """Every producer's block, blank-line separated; one line per change, public-port call-out,
    drift or count."""
    blocks = ["\n".join(map(_warning(color), _text_producer(report, color))) for report in reports]
    return "\n\n".join(blocks) + "\n" if blocks else "No producers planned.\n"


def _text_producer(report: ProducerReport, color: bool = False) -> Iterator[str]:
    plan = report.plan
    yield f"Producer {visible(plan.producer)}:"
    ordered = display_order(plan.changes)
    yield from _text_outside(plan)
    for change in ordered:
        yield _text_change(change, color) + visible(undo_note(plan, change))
    for change in ordered:
        yield from ("  ! " + line for _, line in port_callouts(change, visible))
    for drift in plan.drift:
        yield "  ! " + drift_sentence(plan.producer, drift, visible, visible, sandbox=report.sandbox)
    for settings in plan.settings_drift:
        yield "  ! " + settings_sentence(settings, visible)
    for name in plan.ssh_bootstrap:
        yield "  ! " + bootstrap_sentence(name, visible)
    for gpu in report.gpus:
        yield "  * " + visible(gpu_sentence(gpu, report.sandbox))
    yield f"Plan: {counts_sentence(plan)}." if plan.has_changes else "No changes."
    yield from _text_cost(report)


def _text_outside(plan: ProducerPlan) -> Iterator[str]:
    """What refresh found changed behind Terraform's back, apart from this plan's changes."""
    if not plan.outside:
        return
    yield "  Changed outside Terraform:"
    for outside in display_order(plan.outside):
        yield f"  ! {outside_sentence(outside, visible)} — {visible(answer_text(plan, outside))}"
    if plan.has_changes:
        yield "  Changed by this plan:"
    if only_undoes_outside(plan):
        yield f"  {ONLY_UNDOES}"


def _text_change(change: Change, color: bool = False) -> str:
    symbol, verb = _SYMBOLS[change.action]
    verb = "resize" if change.resize is not None else verb
    why = detail(change)
    head = paint(f"{symbol:>3} {verb:<7}", change.action, color)
    return f"{head} {visible(who(change))}" + (f": {visible(why)}" if why else "")


def _warning(color: bool) -> Callable[[str], str]:
    """Every ``!`` line (call-outs, drift, settings: whichever section yields it) in yellow."""
    return lambda line: paint(line, "warning", color) if line.startswith("  ! ") else line


def _text_cost(report: ProducerReport) -> Iterator[str]:
    """``Cost: $48.00/month → $72.00/month (+$24.00); prices: ...``, then the sizes whose count
    changes, the droplets left out for want of a price and the on-demand GPUs."""
    cost = report.cost
    if cost is None:
        return
    yield f"Cost: {monthly_change(cost)}; prices: {prices_label(cost.prices)}"
    against = budget_sentence(report.producer, cost, report.sandbox, report.plan.has_changes)
    if against is not None:
        yield f"  Budget: {visible(against)}"
    for row in changed_sizes(cost):
        yield "  $ " + size_sentence(row, visible)
    for k in changed_flat(cost):
        yield "  $ " + flat_sentence(k)
    for d in cost.refused:
        yield "  $ " + refused_sentence(d, visible)
    unpriced = unpriced_sentence(cost, visible)
    if unpriced:
        yield "  $ " + unpriced
    for gpu in cost.gpus:
        yield "  $ " + gpu_cost_sentence(gpu, visible, report.sandbox)
