"""DigitalOcean's list prices as of one date: the package's one price table.

Taken from ``/work/shared/do-catalogue-facts.md`` (gathered 2026-11-29 from DigitalOcean's API reference and
public projects pinning its sizes and prices). Prices change: against a real account
``GET /v2/sizes`` is the truth (``infra_apply.plan.cost.prices_from_api``); this table is for the
sandbox and for offline runs, and always travels with its date (``AS_OF``).

It lives outside ``sandbox/`` because a production install (no sandbox extra) needs it too:
the plan summaries' cost fallback and ``gpu status`` read it, and the sandbox catalogue takes
its prices from here, so there is one source of truth.

Where the facts give no figure (most GPU sizes), the table says ``None`` rather than guess one.
Figures are ``Decimal`` so sums are exact to the cent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

AS_OF = "2026-11-29"
HOURS_PER_MONTH = 672  # DigitalOcean bills hourly up to 672 hours a month
_HOURLY_PLACES = Decimal("0.00001")  # DigitalOcean quotes price_hourly to 5 decimals
_CENTS = Decimal("0.01")


@dataclass(frozen=True)
class ListPrice:
    """One size's list price in USD; ``None`` where the facts give no figure."""

    monthly: Decimal | None
    hourly: Decimal | None


def _monthly(price: str) -> ListPrice:
    """A size priced by the month; its hourly price is the month over the 672-hour cap."""
    monthly = Decimal(price)
    return ListPrice(monthly, (monthly / HOURS_PER_MONTH).quantize(_HOURLY_PLACES))


def _hourly(price: str | None) -> ListPrice:
    """A size priced by the hour (GPUs); a month is 672 of its hours."""
    if price is None:
        return ListPrice(None, None)
    hourly = Decimal(price)
    return ListPrice((hourly * HOURS_PER_MONTH).quantize(_CENTS), hourly)


PRICES: Mapping[str, ListPrice] = {
    "s-1vcpu-512mb-10gb": _monthly("4"),
    "s-1vcpu-1gb": _monthly("6"),
    "s-1vcpu-2gb": _monthly("12"),
    "s-2vcpu-2gb": _monthly("18"),
    "s-2vcpu-4gb": _monthly("24"),
    "s-4vcpu-8gb": _monthly("48"),
    "s-8vcpu-16gb": _monthly("96"),
    "gpu-h100x1-80gb": _hourly("3.39"),
    "gpu-h100x8-640gb": _hourly(None),
    "gpu-h200x1-141gb": _hourly(None),
    "gpu-l40sx1-48gb": _hourly(None),
    "gpu-6000adax1-48gb": _hourly(None),
    "gpu-4000adax1-20gb": _hourly(None),
    "gpu-mi300x1-192gb": _hourly(None),
}


# Each size's disk in GB (/work/shared/do-catalogue-facts.md): a resize to a smaller disk than the droplet's
# current one is refused by DigitalOcean, so the plan summaries need to know. The sandbox
# catalogue takes its disks from here too; where the facts give none, the size is absent.
DISKS_GB: Mapping[str, int] = {
    "s-1vcpu-512mb-10gb": 10,
    "s-1vcpu-1gb": 25,
    "s-1vcpu-2gb": 50,
    "s-2vcpu-2gb": 60,
    "s-2vcpu-4gb": 80,
    "s-4vcpu-8gb": 160,
    "s-8vcpu-16gb": 320,
    "gpu-h100x1-80gb": 720,
}


def as_float(value: Decimal | None) -> float | None:
    """The API's number shape (``price_monthly``/``price_hourly`` are JSON numbers)."""
    return None if value is None else float(value)
