"""The terminal summary: per producer its changes (destructive first), drift and counts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from infra_apply.plan_model import Change, ProducerPlan, display_order, only_undoes_outside
from infra_apply.report import ProducerReport, gpu_sentence
from infra_apply.report._common import (
    ONLY_UNDOES,
    answer_text,
    counts_sentence,
    detail,
    drift_sentence,
    outside_sentence,
    port_callouts,
    settings_sentence,
    undo_note,
    who,
)
from infra_apply.untrusted import visible

_SYMBOLS: Mapping[str, tuple[str, str]] = {
    "create": ("+", "create"),
    "update": ("~", "update"),
    "replace": ("-/+", "replace"),
    "delete": ("-", "destroy"),
    "import": ("<=", "import"),
}


def format_text(reports: Sequence[ProducerReport]) -> str:
    """Every producer's block, blank-line separated; one line per change, public-port call-out,
    drift or count."""
    blocks = ["\n".join(_text_producer(report)) for report in reports]
    return "\n\n".join(blocks) + "\n" if blocks else "No producers planned.\n"


def _text_producer(report: ProducerReport) -> Iterator[str]:
    plan = report.plan
    yield f"Producer {visible(plan.producer)}:"
    ordered = display_order(plan.changes)
    yield from _text_outside(plan)
    for change in ordered:
        yield _text_change(change) + visible(undo_note(plan, change))
    for change in ordered:
        yield from ("  ! " + line for _, line in port_callouts(change, visible))
    for drift in plan.drift:
        yield "  ! " + drift_sentence(plan.producer, drift, visible, visible)
    for settings in plan.settings_drift:
        yield "  ! " + settings_sentence(settings, visible)
    for gpu in report.gpus:
        yield "  * " + visible(gpu_sentence(gpu))
    yield f"Plan: {counts_sentence(plan)}." if plan.has_changes else "No changes."


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


def _text_change(change: Change) -> str:
    symbol, verb = _SYMBOLS[change.action]
    verb = "resize" if change.resize is not None else verb
    why = detail(change)
    return f"{symbol:>3} {verb:<7} {visible(who(change))}" + (f": {visible(why)}" if why else "")
