"""The cost sentences every plan format prints (``infra_apply.plan.cost`` computes the figures).

Each takes the format's own escaping for the untrusted parts (droplet names); sizes and
amounts come from Terraform and the price list and are escaped too, since a size slug is a
manifest value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal

from infra_apply.plan.budget import FLAG, check
from infra_apply.plan.cost import (
    API_SOURCE,
    DropletCost,
    GpuCost,
    KindCount,
    Prices,
    ProducerCost,
    SizeCount,
    hourly_text,
    money,
    signed,
)
from infra_apply.remedy import command, for_producer, kept

Escape = Callable[[str], str]

OUTSIDE_MONTHLY = "on demand, not in the monthly figures"


def monthly_change(cost: ProducerCost) -> str:
    """``$48.00/month → $72.00/month (+$24.00)``, saying when the totals leave droplets out."""
    text = (
        f"{money(cost.monthly_before)}/month → {money(cost.monthly_after)}/month "
        f"({signed(cost.monthly_diff)})"
    )
    n = len(cost.unpriced)
    if n:
        text += f", excluding {n} droplet{'s' if n > 1 else ''} whose price is unknown"
    unknown = price_not_known_sentence(cost)
    return f"{text}; {unknown}" if unknown else text


def budget_sentence(
    producer: str, cost: ProducerCost, sandbox: bool = False, changes: bool = True
) -> str | None:
    """``budget $150.00/month: $72.00/month after the plan (+$24.00): within budget``; when over,
    what allows it (None: the producer has no budget). ``changes`` False: apply refuses nothing
    of a plan that changes nothing, so no flag is named."""
    checked = check(producer, cost)
    if checked is None:
        return None
    line = checked.line()
    if not checked.ok and changes:
        again = for_producer("apply", producer, FLAG, producer, keep=kept(sandbox))
        line += f" (apply refuses it, exit 3, unless {again})"
    return line


def price_not_known_sentence(cost: ProducerCost) -> str | None:
    """``price not known, not in the totals: uptime checks (0 → 2)``: the kinds whose price
    nobody stated, each with its count before and after the plan (nouns come from the table)."""
    if not cost.price_not_known:
        return None
    return "price not known, not in the totals: " + ", ".join(map(_kind_count, cost.price_not_known))


def _kind_count(k: KindCount) -> str:
    return f"{k.kind.noun}s ({k.before} → {k.after})"


def short_change(cost: ProducerCost) -> str:
    """``$48.00 → $72.00 (+$24.00)``, for a table cell."""
    return f"{money(cost.monthly_before)} → {money(cost.monthly_after)} ({signed(cost.monthly_diff)})"


def prices_label(prices: Prices) -> str:
    """``list prices as of 2026-11-29 (shipped table)`` / ``DigitalOcean API /v2/sizes, 2026-11-29``."""
    return f"{prices.source}, {prices.as_of}" if prices.source == API_SOURCE else prices.source


def size_sentence(row: SizeCount, esc: Escape) -> str:
    """``s-2vcpu-4gb at $24.00/month: 1 → 2 droplets (+$24.00)``."""
    noun = "droplet" if max(row.before, row.after) == 1 else "droplets"
    return (
        f"{esc(row.size)} at {money(row.monthly)}/month: {row.before} → {row.after} {noun} "
        f"({signed(row.diff)})"
    )


def changed_flat(cost: ProducerCost) -> Iterator[KindCount]:
    """The kinds at a flat list price (uptime checks) whose count the plan changes: the totals
    count them, so the lines under them say so."""
    return (k for k in cost.kinds if k.kind.price.how == "flat" and k.before != k.after)


def flat_sentence(k: KindCount) -> str:
    """``uptime check at $1.00/month: 0 → 2 uptime checks (+$2.00)``."""
    each, before, after = k.each or Decimal(0), k.monthly_before or Decimal(0), k.monthly_after or Decimal(0)
    noun = k.kind.noun if max(k.before, k.after) == 1 else f"{k.kind.noun}s"
    return f"{k.kind.noun} at {money(each)}/month: {k.before} → {k.after} {noun} ({signed(after - before)})"


def refused_sentence(d: DropletCost, esc: Escape) -> str:
    """A resize that can never happen is priced as no change: no saving is promised."""
    return (
        f"{esc(d.name)} priced as it is, {esc(d.size_before or '?')}: its resize to "
        f"{esc(d.refused_size or '?')} can never happen (a smaller disk; apply refuses it)"
    )


def changed_sizes(cost: ProducerCost) -> Iterator[SizeCount]:
    """The sizes whose count the plan changes (a plan that changes nothing lists none)."""
    return (row for row in cost.by_size() if row.before != row.after)


def unpriced_sentence(cost: ProducerCost, esc: Escape, *, limit: int | None = None) -> str | None:
    """``not in the totals, price unknown: NAME (size X), NAME (size known after apply)``; with
    ``limit``, at most that many droplets named and ``and N more``."""
    if not cost.unpriced:
        return None
    shown = cost.unpriced if limit is None else cost.unpriced[:limit]
    parts = []
    for d in shown:
        if d.size is not None:
            size = f"size {esc(d.size)}"
        else:
            size = "size known after apply" if d.after else "size unknown"
        parts.append(f"{esc(d.name)} ({size})")
    more = len(cost.unpriced) - len(shown)
    return "not in the totals, price unknown: " + ", ".join(parts) + (f" and {more} more" if more else "")


def gpu_cost_sentence(gpu: GpuCost, esc: Escape, sandbox: bool = False) -> str:
    """``GPU NAME (gpu-h100x1-80gb): $3.39/hour, up to $27.12 until its lease ends
    2026-11-29 18:00Z; on demand, not in the monthly figures``."""
    size = f" ({esc(gpu.size)})" if gpu.size else ""
    price = f"{hourly_text(gpu.hourly)}/hour" if gpu.hourly is not None else "hourly price unknown"
    if gpu.lease_until is None:
        up, down = (command(f"gpu {verb}", gpu.name, keep=kept(sandbox)) for verb in ("up", "down"))
        lease = f"no lease holds it ({esc(up)} leases it; {esc(down)} releases it)"
    else:
        end = gpu.lease_until.strftime("%Y-%m-%d %H:%MZ")
        up_to = gpu.up_to
        if gpu.lease_ended:
            lease = f"its lease ended {end} (the next gpu reap releases it)"
        elif gpu.hours_left == 0:
            lease = f"nothing more until its lease ends {end} (its last billed hour is under way)"
        elif up_to is not None:
            lease = f"up to {money(up_to)} until its lease ends {end}"
        else:
            lease = f"its lease ends {end}"
    return f"GPU {esc(gpu.name)}{size}: {price}, {lease}; {OUTSIDE_MONTHLY}"


def source_note(prices: Prices) -> str:
    """Where the prices come from and what the figures mean (said once per summary)."""
    return (
        f"Prices: {prices_label(prices)}; USD a month per droplet (DigitalOcean bills hourly up to "
        "672 hours a month); on-demand GPUs by the hour, outside the monthly figures"
    )
