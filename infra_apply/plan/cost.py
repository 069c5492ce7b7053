"""What a plan does to a producer's DigitalOcean bill: monthly cost before, after, difference.

Pure functions over ``terraform show -json`` of a saved plan and a price list (``Prices``):

* before = the managed droplets in the plan's ``prior_state``; after = those in its
  ``planned_values`` (every ``count``/``for_each`` instance, in every module). A droplet is
  matched across the two by its address (``previous_address`` for a ``moved`` one), so a
  replacement of the same size costs nothing more and a resize costs the difference.
* Every managed resource the plan touches is priced as its kind in ``kinds.py`` says: a droplet
  by its size, other kinds at a flat list price or nothing. A kind whose price is not known is
  counted per kind (``KindCount``), named as "price not known" and left out of both totals; a
  type missing from the kinds table is refused, never skipped.
* Droplets cost their size's ``price_monthly`` (DigitalOcean bills hourly up to 672 hours a
  month, so the monthly price is what a standing droplet costs).
* A droplet whose price is unknown (a size missing from the price list, a size "known after
  apply") is never counted as 0: it is listed in ``unpriced`` and left out of *both* totals,
  which then say they exclude it (the difference stays the difference of what is priced).
* On-demand GPU droplets are not standing cost: they are shown by their hourly price with their
  lease ("up to $N until the lease ends": the hours billed by the lease end less those billed
  so far, both counted from when the droplet came up, as DigitalOcean bills each started hour
  of a droplet's life and ``gpu status`` counts what it cost so far) and kept out of the
  monthly totals.

Money is ``Decimal`` throughout (3 x $4 is $12.00, not 12.000000000000002); ``money`` and
``signed`` are the one way every format writes it.

Where prices come from: ``prices_from_api`` (``GET /v2/sizes`` of the account) or
``fallback_prices`` (the dated table shipped in ``infra_apply/plan/prices.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Protocol

from infra_apply import kinds
from infra_apply.errors import InfraApplyError
from infra_apply.gpu.lease import MAX_BILLED_HOURS, billed_hours
from infra_apply.plan.parse import JsonObject, json_dict, json_list, strip_index
from infra_apply.plan.prices import AS_OF, DISKS_GB, PRICES, ListPrice
from infra_apply.plan.semantics import disk_now

if TYPE_CHECKING:
    from infra_apply.plan.budget import Budget

API_SOURCE = "DigitalOcean API /v2/sizes"
TABLE_SOURCE = f"list prices as of {AS_OF} (shipped table)"
CURRENCY = "USD"
_CENTS = Decimal("0.01")
_ZERO = Decimal(0)


# --- prices ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prices:
    """Size slug → list price, where the prices come from and the date they hold for."""

    sizes: Mapping[str, ListPrice]
    source: str  # API_SOURCE or TABLE_SOURCE
    as_of: str  # YYYY-MM-DD: the table's date, or the day the API was asked

    def monthly(self, slug: str) -> Decimal | None:
        found = self.sizes.get(slug)
        return found.monthly if found is not None else None

    def hourly(self, slug: str) -> Decimal | None:
        found = self.sizes.get(slug)
        return found.hourly if found is not None else None


def fallback_prices() -> Prices:
    """The dated table shipped in the package: the sandbox, and offline runs."""
    return Prices(PRICES, TABLE_SOURCE, AS_OF)


class SizesClient(Protocol):
    """What ``prices_from_api`` needs of ``do_api.Client``."""

    def paginate(self, path: str, key: str, *, what: str | None = None) -> Iterator[JsonObject]: ...


def prices_from_api(client: SizesClient, *, today: date | None = None) -> Prices:
    """``GET /v2/sizes`` (every page): ``price_monthly`` and ``price_hourly`` of each slug.

    ``client`` is a ``do_api.Client``; its ``ApiError`` (an ``InfraApplyError``) passes through,
    so the caller decides whether to fall back. A list with no usable size is an error too.
    """
    return prices_from_sizes(client.paginate("/v2/sizes", "sizes", what="cost: GET /v2/sizes"), today=today)


def prices_from_sizes(listed: Iterable[JsonObject], *, today: date | None = None) -> Prices:
    """The prices of ``GET /v2/sizes``'s objects (fetched once per run, shared with pre-flight)."""
    sizes: dict[str, ListPrice] = {}
    for raw in listed:
        slug = raw.get("slug")
        if isinstance(slug, str) and slug:
            sizes[slug] = ListPrice(_price(raw.get("price_monthly")), _price(raw.get("price_hourly")))
    if not sizes:
        raise InfraApplyError("DigitalOcean API: cost: GET /v2/sizes: the answer lists no sizes")
    return Prices(sizes, API_SOURCE, (today or datetime.now(UTC).date()).isoformat())


def _price(value: object) -> Decimal | None:
    """A JSON number as an exact Decimal (through its shortest repr: 0.00893, not 0.0089299...)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        price = Decimal(repr(value))
    except InvalidOperation:
        return None
    return price if price.is_finite() and price >= 0 else None


# --- what a plan costs ------------------------------------------------------------------------


@dataclass(frozen=True)
class DropletCost:
    """One standing droplet before and after the plan. A size is ``None`` where the droplet is
    not (``before``/``after`` False) or where Terraform knows it only after apply."""

    address: str
    name: str
    before: bool  # in the prior state
    after: bool  # in the planned values
    size_before: str | None = None
    size_after: str | None = None
    monthly_before: Decimal | None = None  # None: not there, or its price is unknown
    monthly_after: Decimal | None = None
    # A resize to a size whose disk is below the droplet's: it can never happen (a disk never
    # shrinks; apply refuses it), so it is priced as no change, size_after the size it keeps;
    # this is the size it was asked for.
    refused_size: str | None = None

    @property
    def priced(self) -> bool:
        """Every side the droplet exists on has a known price."""
        before_ok = not self.before or self.monthly_before is not None
        after_ok = not self.after or self.monthly_after is not None
        return before_ok and after_ok

    @property
    def size(self) -> str | None:
        """What it is after the plan; what it was, for one the plan destroys."""
        return self.size_after if self.after else self.size_before


@dataclass(frozen=True)
class GpuCost:
    """An on-demand GPU droplet up after the plan: its hourly price and its lease."""

    address: str
    name: str
    size: str | None
    hourly: Decimal | None
    lease_until: datetime | None  # None: no lease holds it
    hours_left: int | None  # hours billed by the lease end beyond those billed already
    # The lease end has passed (the next reap releases it). Not the same as no hour left: in
    # its last billed hour a lease is live, and no more hours will be billed by its end.
    lease_ended: bool = False
    # hours its life bills in the current calendar month, to its lease end (None: no lease)
    month_hours: int | None = None
    before: bool = False  # up before the plan (in its prior state)

    @property
    def month_cost(self) -> Decimal | None:
        """What it bills this month by its lease end (a budget counts it)."""
        if self.hourly is None or self.month_hours is None:
            return None
        return cents(self.hourly * self.month_hours)

    @property
    def up_to(self) -> Decimal | None:
        """The most it costs from now until its lease ends."""
        if self.hourly is None or self.hours_left is None:
            return None
        return cents(self.hourly * self.hours_left)


@dataclass(frozen=True)
class SizeCount:
    """How many standing droplets of one size, before and after, at its monthly price."""

    size: str
    monthly: Decimal
    before: int
    after: int

    @property
    def diff(self) -> Decimal:
        return self.monthly * (self.after - self.before)


@dataclass(frozen=True)
class KindCount:
    """How many resources of one kind not priced by size, before and after the plan."""

    kind: kinds.Kind
    before: int
    after: int

    @property
    def known(self) -> bool:
        return self.kind.price.how != "unknown"

    @property
    def each(self) -> Decimal | None:
        """What one costs a month; None when its price is not known."""
        price = self.kind.price
        return price.monthly if price.how == "flat" else _ZERO if price.how == "free" else None

    @property
    def monthly_before(self) -> Decimal | None:
        return None if self.each is None else self.each * self.before

    @property
    def monthly_after(self) -> Decimal | None:
        return None if self.each is None else self.each * self.after


@dataclass(frozen=True)
class ProducerCost:
    droplets: tuple[DropletCost, ...]  # standing droplets only, by name
    gpus: tuple[GpuCost, ...]
    prices: Prices
    kinds: tuple[KindCount, ...] = ()  # every other managed kind the plan touches, by type
    budget: Budget | None = None  # the producer's [producers.P] budget (budget.py checks it)

    @property
    def price_not_known(self) -> tuple[KindCount, ...]:
        """Kinds left out of both totals: nobody stated their price."""
        return tuple(k for k in self.kinds if not k.known)

    @property
    def unpriced(self) -> tuple[DropletCost, ...]:
        return tuple(d for d in self.droplets if not d.priced)

    @property
    def refused(self) -> tuple[DropletCost, ...]:
        """Droplets whose resize can never happen, priced at the size they keep."""
        return tuple(d for d in self.droplets if d.refused_size is not None)

    @property
    def monthly_before(self) -> Decimal:
        droplets = sum((d.monthly_before or _ZERO for d in self.droplets if d.priced), _ZERO)
        return droplets + sum((k.monthly_before or _ZERO for k in self.kinds), _ZERO)

    @property
    def monthly_after(self) -> Decimal:
        droplets = sum((d.monthly_after or _ZERO for d in self.droplets if d.priced), _ZERO)
        return droplets + sum((k.monthly_after or _ZERO for k in self.kinds), _ZERO)

    @property
    def monthly_diff(self) -> Decimal:
        return self.monthly_after - self.monthly_before

    def by_size(self) -> tuple[SizeCount, ...]:
        """The priced droplets counted per size, by price then slug."""
        counts: dict[str, list[int]] = {}
        for d in self.droplets:
            if not d.priced:
                continue
            if d.size_before is not None:
                counts.setdefault(d.size_before, [0, 0])[0] += 1
            if d.size_after is not None:
                counts.setdefault(d.size_after, [0, 0])[1] += 1
        rows = [
            SizeCount(size, self.prices.monthly(size) or _ZERO, before, after)
            for size, (before, after) in counts.items()
        ]
        return tuple(sorted(rows, key=lambda r: (r.monthly, r.size)))


def producer_cost(
    plan: JsonObject,
    prices: Prices,
    gpus: Mapping[str, datetime | None],
    *,
    names: Mapping[str, str] | None = None,
    now: datetime,
    up_since: Mapping[str, datetime] | None = None,
    targeted: bool = False,
) -> ProducerCost:
    """The monthly cost of ``plan`` (``terraform show -json`` of a saved plan) before and after.

    ``gpus``: the producer's on-demand GPU droplets by name → their lease end (``None`` when no
    lease holds one); ``names``: index-less address → manifest name (as rendering gives them);
    ``up_since``: GPU name → when its droplet came up (absent: it comes up with this plan);
    ``targeted``: a ``-target`` plan (gpu up/down/reap), whose untargeted resources stay.
    """
    names = names or {}
    all_before = _managed(json_dict(json_dict(plan.get("prior_state")).get("values")).get("root_module"))
    all_after = _managed(json_dict(plan.get("planned_values")).get("root_module"))
    if targeted:
        all_after = _untouched(all_before, all_after, plan)
    touched = {t: kinds.KINDS[t] for t in {*all_before, *all_after}}  # _managed refused the rest
    sized = {t for t, k in touched.items() if k.price.how == "size"}
    before = {a: v for t in sized for a, v in all_before.get(t, {}).items()}
    after = {a: v for t in sized for a, v in all_after.get(t, {}).items()}
    before = _follow_moves(before, after, plan)
    in_place = _updated(plan)
    standing: list[DropletCost] = []
    on_demand: list[GpuCost] = []
    for address in sorted(set(before) | set(after)):
        old, new = before.get(address), after.get(address)
        name = _name(address, names, new, old)
        if name in gpus:
            if new is not None:
                since = (up_since or {}).get(name)
                gpu = _gpu(address, name, new, prices, (since, gpus[name]), now)
                on_demand.append(replace(gpu, before=old is not None))
            continue
        standing.append(_droplet(address, name, old, new, prices, in_place=address in in_place))
    standing.sort(key=lambda d: (d.name, d.address))
    on_demand.sort(key=lambda g: (g.name, g.address))
    counts = tuple(
        KindCount(touched[t], len(all_before.get(t, {})), len(all_after.get(t, {})))
        for t in sorted(set(touched) - sized)
    )
    return ProducerCost(tuple(standing), tuple(on_demand), prices, counts)


def _droplet(
    address: str,
    name: str,
    old: JsonObject | None,
    new: JsonObject | None,
    prices: Prices,
    *,
    in_place: bool = False,
) -> DropletCost:
    """``in_place``: the plan updates it (a size change is a resize; a replacement is free to
    take any size)."""
    size_before = _size(old) if old is not None else None
    size_after = _size(new) if new is not None else None
    refused = None
    if in_place and old is not None and _refused_resize(old, size_before, size_after):
        refused = size_after
    if refused is not None:
        size_after = size_before
    return DropletCost(
        address=address,
        name=name,
        before=old is not None,
        after=new is not None,
        size_before=size_before,
        size_after=size_after,
        monthly_before=prices.monthly(size_before) if size_before is not None else None,
        monthly_after=prices.monthly(size_after) if size_after is not None else None,
        refused_size=refused,
    )


def _updated(plan: JsonObject) -> set[str]:
    """Addresses the plan updates in place."""
    return {
        str(rc.get("address", ""))
        for rc in map(json_dict, json_list(plan.get("resource_changes")))
        if json_list(json_dict(rc.get("change")).get("actions")) == ["update"]
    }


def _refused_resize(old: JsonObject, size_before: str | None, size_after: str | None) -> bool:
    if size_before is None or size_after is None or size_before == size_after:
        return False
    have, want = disk_now(old), DISKS_GB.get(size_after)
    return have is not None and want is not None and want < have


def _gpu(
    address: str,
    name: str,
    values: JsonObject,
    prices: Prices,
    lease: tuple[datetime | None, datetime | None],
    now: datetime,
) -> GpuCost:
    """``lease``: when the droplet came up (None: not yet, it comes up now) and the lease end."""
    size = _size(values)
    since, until = lease
    hours = month = None
    if until is not None:
        start = _utc(since) if since is not None else _utc(now)
        hours = max(0, billed_hours(_utc(until) - start) - billed_hours(_utc(now) - start))
        month = _month_hours(start, _utc(until), _utc(now))
    return GpuCost(
        address=address,
        name=name,
        size=size,
        hourly=prices.hourly(size) if size is not None else None,
        lease_until=None if until is None else _utc(until),
        hours_left=hours,
        lease_ended=until is not None and _utc(until) <= _utc(now),
        month_hours=month,
    )


def _month_hours(start: datetime, until: datetime, now: datetime) -> int:
    """Hours started between ``start`` and ``until`` that fall in ``now``'s calendar month
    (DigitalOcean bills each started hour of a droplet's life, at most 672 a month)."""
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last = (
        first.replace(year=first.year + 1, month=1)
        if first.month == 12
        else first.replace(month=first.month + 1)
    )
    before_month = billed_hours(first - start) if first > start else 0
    in_month = billed_hours(min(until, last) - start) - before_month
    return max(0, min(in_month, MAX_BILLED_HOURS))


def _managed(module: object) -> dict[str, dict[str, JsonObject]]:
    """Type → address → attribute values of every managed resource in a module tree (a deposed
    object left by an interrupted replacement costs like any other). A type the kinds table
    does not know is refused: its price cannot be known, and skipping it would count it as $0."""
    found: dict[str, dict[str, JsonObject]] = {}
    stack = [json_dict(module)]
    while stack:
        current = stack.pop()
        for res in map(json_dict, json_list(current.get("resources"))):
            if res.get("mode") != "managed":
                continue
            rtype, address = str(res.get("type", "")), str(res.get("address", ""))
            if kinds.kind_of(rtype) is None:
                raise InfraApplyError(
                    f"cost: {address}: resource type {rtype} is not in infra-apply's kinds table "
                    "(infra_apply/kinds.py), so its price is not known: add its kind with its price"
                )
            if res.get("deposed_key"):
                address += f" (deposed {res['deposed_key']})"
            found.setdefault(rtype, {})[address] = json_dict(res.get("values"))
        stack.extend(map(json_dict, json_list(current.get("child_modules"))))
    return found


def _untouched(
    before: Mapping[str, Mapping[str, JsonObject]], after: dict[str, dict[str, JsonObject]], plan: JsonObject
) -> dict[str, dict[str, JsonObject]]:
    """``after`` with what a targeted plan (``-target``: gpu up/down/reap) leaves out: its
    ``planned_values`` hold only the targets, and a resource of the prior state that no
    resource change names stays as it is (in a whole plan, a resource that goes is a change)."""
    named = set()
    for rc in map(json_dict, json_list(plan.get("resource_changes"))):
        named |= {a for a in (rc.get("address"), rc.get("previous_address")) if isinstance(a, str)}
    kept = {t: dict(found) for t, found in after.items()}
    for rtype, found in before.items():
        for address, values in found.items():
            if address.split(" (deposed ")[0] not in named and address not in kept.get(rtype, {}):
                kept.setdefault(rtype, {})[address] = values
    return kept


def _follow_moves(
    before: dict[str, JsonObject], after: Mapping[str, JsonObject], plan: JsonObject
) -> dict[str, JsonObject]:
    """Key ``before`` by the new address of a ``moved`` droplet, so it meets itself after."""
    moved = dict(before)
    for rc in map(json_dict, json_list(plan.get("resource_changes"))):
        old, new = rc.get("previous_address"), rc.get("address")
        if isinstance(old, str) and isinstance(new, str) and old in moved and new not in moved:
            moved[new] = moved.pop(old)
    return moved


def _name(address: str, names: Mapping[str, str], *values: JsonObject | None) -> str:
    for key in (address, strip_index(address)):
        if key in names:
            return names[key]
    for v in values:
        name = v.get("name") if v is not None else None
        if isinstance(name, str) and name:
            return name
    return address


def _size(values: JsonObject) -> str | None:
    """The size slug; None when Terraform knows it only after apply (absent from the values)."""
    size = values.get("size")
    return size if isinstance(size, str) and size else None


# --- writing money ----------------------------------------------------------------------------


def cents(amount: Decimal) -> Decimal:
    return amount.quantize(_CENTS, rounding=ROUND_HALF_UP)


def money(amount: Decimal) -> str:
    """``$1,234.50``; ``-$6.00`` for a negative amount."""
    value = cents(amount)
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.2f}"


def signed(amount: Decimal) -> str:
    """A difference, its sign always written: ``+$24.00``, ``-$6.00``, ``±$0.00``."""
    value = cents(amount)
    if value == 0:
        return "±$0.00"
    return f"{'+' if value > 0 else '-'}${abs(value):,.2f}"


def hourly_text(amount: Decimal) -> str:
    """An hourly price: at least 2 decimals, more when the price has them (``$0.00893``)."""
    places = max(2, -int(amount.normalize().as_tuple().exponent))
    return f"${amount:,.{places}f}"


def as_number(amount: Decimal | None) -> float | None:
    """For JSON: the amount in cents' precision as a number (48.0, 0.01; never float noise)."""
    return None if amount is None else float(cents(amount))


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
