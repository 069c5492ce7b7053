"""Plan reports, one module per format: ``text`` (terminal), ``json`` (tools), ``markdown``
(pull-request comment, with a ``mermaid`` diagram).

Every format reads the same ``ProducerReport`` per producer, so a new section is a new field
here (if it needs new data) and one function in each format's module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from infra_apply.guard import GuardVerdict, guard
from infra_apply.model import ProducerModel
from infra_apply.plan_model import ProducerPlan


@dataclass(frozen=True)
class ProducerReport:
    """One producer's plan, the guard's verdict on it, and its model (for the diagram)."""

    plan: ProducerPlan
    verdict: GuardVerdict
    model: ProducerModel | None = None

    @property
    def producer(self) -> str:
        return self.plan.producer


def producer_reports(
    plans: Sequence[ProducerPlan],
    verdicts: Mapping[str, GuardVerdict] | None = None,
    models: Mapping[str, ProducerModel] | None = None,
) -> tuple[ProducerReport, ...]:
    """Pair each plan with its verdict (default: no ``--allow-*``) and model, in plan order."""
    verdicts, models = verdicts or {}, models or {}
    return tuple(
        ProducerReport(plan, _verdict(plan, verdicts), models.get(plan.producer))
        for plan in plans
    )


def _verdict(plan: ProducerPlan, verdicts: Mapping[str, GuardVerdict]) -> GuardVerdict:
    # No verdict given (plain `plan`): report what `apply` would refuse without any --allow-*.
    verdict = verdicts.get(plan.producer)
    return verdict if verdict is not None else guard(plan, (), ())
