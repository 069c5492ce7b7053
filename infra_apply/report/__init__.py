"""Plan reports, one module per format: ``text`` (terminal), ``json`` (tools), ``markdown``
(pull-request comment, with a ``mermaid`` diagram).

Every format reads the same ``ProducerReport`` per producer, so a new section is a new field
here (if it needs new data) and one function in each format's module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from infra_apply.remedy import command, kept

if TYPE_CHECKING:  # type-only: render's and validate's one-line reports must not load plan/
    from infra_apply.manifests.model import ProducerModel
    from infra_apply.plan.cost import ProducerCost
    from infra_apply.plan.guard import GuardVerdict
    from infra_apply.plan.parse import ProducerPlan


@dataclass(frozen=True)
class GpuUp:
    """An on-demand GPU droplet that is up, as its lease says (``gpu up``), or up without a
    lease (``until`` None: left by an older version's ``--with-gpu``, or its lease removed)."""

    name: str
    until: datetime | None  # lease end; None: no lease holds it, so the plan destroys it
    hourly_price: float | None  # USD
    releasing: bool = False  # a `gpu down` / reap is releasing it


@dataclass(frozen=True)
class PlanContext:
    """Where and when a plan ran, for the pull-request comment: against the sandbox (no real
    account touched) or not, the commit planned (a full hex sha; ``None`` when unknown), when."""

    sandbox: bool
    commit: str | None
    planned_at: datetime


@dataclass(frozen=True)
class ProducerReport:
    """One producer's plan, the guard's verdict on it, its model (for the diagram), its GPUs
    that are up and what the plan does to its monthly cost (None: not priced, e.g. gpu up)."""

    plan: ProducerPlan
    verdict: GuardVerdict
    model: ProducerModel | None = None
    gpus: tuple[GpuUp, ...] = ()
    cost: ProducerCost | None = None
    sandbox: bool = False  # planned with --sandbox: every remedy printed carries it

    @property
    def producer(self) -> str:
        return self.plan.producer


def producer_reports(
    plans: Sequence[ProducerPlan],
    verdicts: Mapping[str, GuardVerdict] | None = None,
    models: Mapping[str, ProducerModel] | None = None,
    gpus: Mapping[str, tuple[GpuUp, ...]] | None = None,
    costs: Mapping[str, ProducerCost] | None = None,
    *,
    stand_in: bool = False,
) -> tuple[ProducerReport, ...]:
    """Pair each plan with its verdict (default: no ``--allow-*``), model, GPUs that are up and
    cost, in plan order; ``stand_in``: the plans ran with ``--sandbox``."""
    verdicts, models, gpus, costs = verdicts or {}, models or {}, gpus or {}, costs or {}
    return tuple(
        ProducerReport(
            plan,
            _verdict(plan, verdicts),
            models.get(plan.producer),
            gpus.get(plan.producer, ()),
            costs.get(plan.producer),
            stand_in,
        )
        for plan in plans
    )


def gpu_sentence(gpu: GpuUp, sandbox: bool = False) -> str:
    """``com.uvlava.ct.gpu is up: lease ends 2026-11-29 18:00Z, $3.39/hour`` (every format)."""
    if gpu.until is None:
        up = command("gpu up", gpu.name, keep=kept(sandbox))
        down = command("gpu down", gpu.name, keep=kept(sandbox))
        return (
            f"GPU {gpu.name} is up without a lease, so this plan destroys it (never a standing "
            f"GPU): run {up} to lease it, or {down} to release it"
        )
    price = f"${gpu.hourly_price:.2f}/hour" if gpu.hourly_price is not None else "price unknown"
    end = gpu.until.strftime("%Y-%m-%d %H:%MZ")
    state = "is up, being released" if gpu.releasing else "is up"
    return f"GPU {gpu.name} {state}: lease ends {end}, {price}"


def _verdict(plan: ProducerPlan, verdicts: Mapping[str, GuardVerdict]) -> GuardVerdict:
    from infra_apply.plan.guard import guard

    # No verdict given (plain `plan`): report what `apply` would refuse without any --allow-*.
    verdict = verdicts.get(plan.producer)
    return verdict if verdict is not None else guard(plan, (), ())
