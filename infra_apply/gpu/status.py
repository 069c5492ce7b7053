"""The rows of ``gpu status``: every GPU droplet, up or down, in text or JSON.

A row comes from three sources: the GPU droplets the manifests declare (``GpuRef``), the
producers' leases, and optionally what the producers' Terraform state holds (``LiveGpu``):
a GPU in state without a lease is shown as ``unleased`` — a standing GPU nobody will reap.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from infra_apply.gpu.config import GpuSettings, format_duration, settings_for
from infra_apply.gpu.lease import Lease, billed_hours, cost_so_far, stamp, uptime, utc

State = Literal["up", "leased", "releasing", "unleased", "down"]
COST_RULE = "hours started since the droplet came up x its hourly price, at most 672 hours a month"


@dataclass(frozen=True)
class GpuRef:
    """A GPU droplet the manifests declare (``service.gpu``)."""

    name: str
    producer: str


@dataclass(frozen=True)
class LiveGpu:
    """A GPU droplet found in a producer's Terraform state."""

    droplet_id: str
    ip: str | None = None
    hourly_price: float | None = None
    created: datetime | None = None


@dataclass(frozen=True)
class StatusRow:
    gpu: str
    producer: str
    state: State
    size: str
    region: str
    who: str | None
    since: datetime | None  # lease start
    until: datetime | None  # lease end
    last_busy: datetime | None
    uptime: timedelta | None  # None: up without a lease and its state has no created_at
    hourly_price: float | None
    cost: float | None
    droplet_id: str | None
    ip: str | None
    releasing: str | None
    last_error: str | None


def rows(
    gpus: Iterable[GpuRef],
    leases: Mapping[str, Lease],
    settings: Mapping[str, GpuSettings],
    now: datetime,
    live: Mapping[str, LiveGpu] | None = None,
) -> list[StatusRow]:
    """One row per GPU droplet declared, leased or live, sorted by producer and name."""
    live = live or {}
    producers = {g.name: g.producer for g in gpus}
    producers.update({name: lease.producer for name, lease in leases.items()})
    names = sorted(set(producers) | set(live), key=lambda n: (producers.get(n, ""), n))
    return [
        _row(n, producers.get(n, "?"), leases.get(n), live.get(n), settings_for(n, settings), now)
        for n in names
    ]


def _row(
    name: str, producer: str, lease: Lease | None, live: LiveGpu | None, s: GpuSettings, now: datetime
) -> StatusRow:
    if lease is None:
        up = _live_uptime(live, now)
        price = live.hourly_price if live else listed_price(s.size)
        billed = None if price is None or live is None or up is None else billed_hours(up)
        return StatusRow(
            gpu=name,
            producer=producer,
            state="unleased" if live else "down",
            size=s.size,
            region=s.region,
            who=None,
            since=None,
            until=None,
            last_busy=None,
            uptime=up,
            hourly_price=price,
            cost=None if billed is None or price is None else round(billed * price, 2),
            droplet_id=live.droplet_id if live else None,
            ip=live.ip if live else None,
            releasing=None,
            last_error=None,
        )
    state: State = "releasing" if lease.releasing else ("up" if lease.up or live else "leased")
    claim = lease.releasing
    return StatusRow(
        gpu=name,
        producer=producer,
        state=state,
        size=s.size,
        region=s.region,
        who=lease.who,
        since=lease.since,
        until=lease.until,
        last_busy=lease.last_busy,
        uptime=uptime(lease, now),
        hourly_price=lease.hourly_price if lease.hourly_price is not None else listed_price(s.size),
        cost=cost_so_far(lease, now),
        droplet_id=lease.droplet_id or (live.droplet_id if live else None),
        ip=lease.ip or (live.ip if live else None),
        releasing=None if claim is None else f"by {claim.by} since {stamp(claim.at)}",
        last_error=lease.last_error,
    )


def listed_price(size: str) -> float | None:
    """The dated list price of ``size`` (infra_apply/plan/prices.py, from
    /work/shared/do-catalogue-facts.md) for a GPU that is down: what it would cost an hour. A
    GPU that is up shows what its droplet reports."""
    from infra_apply.plan.prices import PRICES, as_float

    found = PRICES.get(size)
    return as_float(found.hourly) if found is not None else None


def _live_uptime(live: LiveGpu | None, now: datetime) -> timedelta | None:
    """0 for a GPU that is down; None (unknown) for one up whose state has no created_at."""
    if live is None:
        return timedelta(0)
    if live.created is None:
        return None
    return max(timedelta(0), utc(now) - utc(live.created))


# --- output ---------------------------------------------------------------------------------


def to_json(table: Iterable[StatusRow], now: datetime) -> str:
    doc = {"now": stamp(now), "cost_rule": COST_RULE, "gpus": [_json_row(r) for r in table]}
    return json.dumps(doc, indent=2)


def _json_row(r: StatusRow) -> dict[str, Any]:
    return {
        "gpu": r.gpu,
        "producer": r.producer,
        "state": r.state,
        "size": r.size,
        "region": r.region,
        "who": r.who,
        "lease_since": _opt(r.since),
        "lease_until": _opt(r.until),
        "last_busy": _opt(r.last_busy),
        "uptime_seconds": None if r.uptime is None else int(r.uptime.total_seconds()),
        "hourly_price": r.hourly_price,
        "cost_so_far": r.cost,
        "droplet_id": r.droplet_id,
        "ip": r.ip,
        "releasing": r.releasing,
        "last_error": r.last_error,
    }


HEADERS = ("GPU", "PRODUCER", "STATE", "UPTIME", "LEASE END", "LAST BUSY", "$/HOUR", "COST")


def to_text(table: Iterable[StatusRow], now: datetime) -> str:
    """An aligned table, then one line per GPU that needs attention (a claim, a failed
    release, a GPU up without a lease)."""
    table = list(table)
    if not table:
        return "no GPU droplets declared or leased\n"
    cells = [HEADERS, *(_cells(r, now) for r in table)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADERS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines += [line for r in table for line in _notes(r)]
    lines.append(f"cost: {COST_RULE} (an upper estimate; the bill is the truth)")
    return "\n".join(lines) + "\n"


def _cells(r: StatusRow, now: datetime) -> tuple[str, ...]:
    up = r.state in ("up", "releasing", "unleased")
    return (
        r.gpu,
        r.producer,
        r.state,
        ("?" if r.uptime is None else format_duration(r.uptime)) if up else "-",
        _when(r.until, now) if r.until else "-",
        _when(r.last_busy, now) if r.last_busy else "-",
        f"${r.hourly_price:.2f}" if r.hourly_price is not None else "-",
        f"${r.cost:.2f}" if r.cost is not None else "-",
    )


def _notes(r: StatusRow) -> list[str]:
    notes = []
    if r.releasing:
        notes.append(f"{r.gpu}: being released {r.releasing}")
    if r.last_error:
        notes.append(f"{r.gpu}: last release failed (the next reap retries): {r.last_error}")
    if r.state == "unleased":
        notes.append(
            f"{r.gpu}: up without a lease: gpu reap releases it unless its queue is busy (then it "
            f"takes a lease); gpu up {r.gpu} leases it, gpu down {r.gpu} releases it now"
        )
    return notes


def _when(moment: datetime, now: datetime) -> str:
    """``2026-11-29 18:00Z (in 55m)`` / ``(12m ago)``."""
    delta = utc(moment) - utc(now)
    relative = f"in {format_duration(delta)}" if delta >= timedelta(0) else f"{format_duration(-delta)} ago"
    return f"{utc(moment).strftime('%Y-%m-%d %H:%MZ')} ({relative})"


def _opt(moment: datetime | None) -> str | None:
    return None if moment is None else stamp(moment)
