"""A producer's monthly budget (``[producers.P] budget_monthly``) and the plan's cost against it.

``check`` compares a ``ProducerCost`` with its ``Budget``. The month counted is the standing
cost (``ProducerCost.monthly_*``) plus, for each leased on-demand GPU, its hourly price times
the hours its lease bills in the current calendar month (``GpuCost.month_hours``). A plan is
over when that after the change exceeds ``budget_monthly``, when it grows by more than
``max_increase`` (a percentage of the month before, or an amount), or when anything it keeps
or creates has no known price: an unknown price is never counted as zero, so it cannot be
shown to fit. ``apply`` (and ``gpu up``) refuse such a plan with exit 3 unless
``--allow-over-budget P``; ``plan`` shows the same lines.

Money is ``Decimal`` from the configuration's strings to the comparison: never a float.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from infra_apply.plan.cost import ProducerCost, cents, money, signed
from infra_apply.untrusted import shell

FLAG = "--allow-over-budget"
_ZERO = Decimal(0)
_HUNDRED = Decimal(100)
# Above this no budget means anything, and Decimal's 28 digits could not hold its cents.
_MAX = Decimal(1_000_000_000)


@dataclass(frozen=True)
class Increase:
    """``max_increase``: ``"25%"`` (of the month before the change) or ``"40.00"`` (USD)."""

    amount: Decimal
    percent: bool

    def limit(self, before: Decimal) -> Decimal:
        return cents(before * self.amount / _HUNDRED) if self.percent else self.amount

    @property
    def text(self) -> str:
        return f"{self.amount.normalize():f}%" if self.percent else money(self.amount)


@dataclass(frozen=True)
class Budget:
    monthly: Decimal  # USD a month
    max_increase: Increase | None = None


def parse_amount(value: object) -> Decimal | str:
    """A USD amount written as a string (``"150.00"``) or an integer; else why not (the
    message a config error carries)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        kind = "a float" if isinstance(value, float) else type(value).__name__
        return (
            f'must be an amount in USD written as a string, like "150.00" (not {kind}: money is '
            "never a float)"
        )
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return f'{shell(str(value))} is not an amount in USD (write it like "150.00")'
    if not amount.is_finite() or amount < 0:
        return f'{shell(str(value))} is not an amount in USD (a number of at least 0, like "150.00")'
    if amount >= _MAX:
        return f"{shell(str(value))} is too large (at most 999999999.99 USD)"
    if amount != cents(amount):
        return f"{shell(str(value))} has more than 2 decimals (USD are counted in cents)"
    return amount


def parse_increase(value: object) -> Increase | str:
    """``"25%"`` or ``"40.00"``; else why not."""
    if isinstance(value, str) and value.strip().endswith("%"):
        number = parse_amount(value.strip()[:-1])
        if isinstance(number, str):
            return f'{shell(value)} is not a percentage (write it like "25%")'
        return Increase(number, percent=True)
    amount = parse_amount(value)
    if isinstance(amount, str):
        return amount.replace("(write it like", '(write it like "25%" or')
    return Increase(amount, percent=False)


@dataclass(frozen=True)
class BudgetCheck:
    """One producer's month before and after the plan, against its budget."""

    producer: str
    budget: Budget
    before: Decimal  # USD this month: standing resources + leased GPUs' hours
    after: Decimal
    unknown: tuple[str, ...] = ()  # what the plan keeps or creates without a known price

    @property
    def diff(self) -> Decimal:
        return self.after - self.before

    @property
    def over_total(self) -> bool:
        return self.after > self.budget.monthly

    @property
    def over_increase(self) -> bool:
        inc = self.budget.max_increase
        return inc is not None and self.diff > inc.limit(self.before)

    @property
    def ok(self) -> bool:
        return not (self.unknown or self.over_total or self.over_increase)

    def line(self) -> str:
        """``budget $150.00/month: $72.00/month after the plan (+$24.00; at most +25% =
        $12.00): over budget`` (every format prints it)."""
        text = (
            f"budget {money(self.budget.monthly)}/month: {money(self.after)}/month after the plan "
            f"({signed(self.diff)}"
        )
        inc = self.budget.max_increase
        if inc is not None:
            text += f"; at most +{inc.text}" + (f" = {money(inc.limit(self.before))}" if inc.percent else "")
        text += ")"
        if self.unknown:
            text += f"; price not known: {', '.join(self.unknown)}"
        return text + (": within budget" if self.ok else ": over budget")

    def reasons(self) -> tuple[str, ...]:
        out = []
        if self.unknown:
            out.append(
                f"price not known for {', '.join(self.unknown)} (never counted as $0, so the plan "
                "cannot be shown to fit)"
            )
        if self.over_total:
            out.append(
                f"{money(self.after)}/month after the plan is above its budget of "
                f"{money(self.budget.monthly)}/month"
            )
        if self.over_increase and self.budget.max_increase is not None:
            inc = self.budget.max_increase
            out.append(
                f"it grows by {signed(self.diff)}/month, more than max_increase {inc.text}"
                + (f" ({money(inc.limit(self.before))} of {money(self.before)})" if inc.percent else "")
            )
        return tuple(out)


def check(producer: str, cost: ProducerCost) -> BudgetCheck | None:
    """``cost`` against its producer's budget (None: the producer has none)."""
    budget = cost.budget
    if budget is None:
        return None
    before, after = cost.monthly_before, cost.monthly_after
    unknown = [f"droplet {d.name}" for d in cost.droplets if d.after and d.monthly_after is None]
    unknown += [f"{k.kind.noun}s ({k.after})" for k in cost.price_not_known if k.after]
    if budget.max_increase is not None:
        # the increase needs the month before too
        unknown += [
            f"droplet {d.name}"
            for d in cost.droplets
            if d.before and not d.after and d.monthly_before is None
        ]
        unknown += [f"{k.kind.noun}s ({k.before})" for k in cost.price_not_known if k.before and not k.after]
    for g in cost.gpus:
        month = g.month_cost
        if month is None:
            unknown.append(f"GPU {g.name}")
            continue
        after += month
        if g.before:
            before += month
    return BudgetCheck(producer, budget, cents(before), cents(after), tuple(dict.fromkeys(unknown)))


def refusal_lines(checks: Iterable[BudgetCheck], again: str | None = None) -> tuple[str, ...]:
    """One line per producer over its budget, ending in the flag that allows it (as the
    guard's refusals do); ``again``: the whole command to rerun with it, as printed."""
    return tuple(
        f"over budget {c.producer}: {'; '.join(c.reasons())} — rerun with {FLAG} {shell(c.producer)}"
        + (f" ({again})" if again else "")
        for c in checks
        if not c.ok
    )
