"""A GPU lease and every decision about it, as pure functions of (lease, now, probe, settings).

The rules (issue 12, rule ``gpu_ondemand``):

- ``gpu up`` leases a GPU for ``--for`` (default ``default_lease``), never past
  ``since + max_lifetime``;
- the reaper probes the queue: a depth > 0 is *busy*, which records ``last_busy`` and extends
  the lease by ``default_lease``, still never past ``since + max_lifetime``;
- a GPU is released when it is past ``max_lifetime`` (even with a deep queue: that is
  warned about), when its queue has been idle for ``idle_after`` (idle since ``last_busy``, or
  since the lease began), or when its lease has ended and the queue is not busy;
- a probe that fails or prints no integer counts as idle, and is reported;
- a GPU without a configured probe is never busy and never idle: its lease end decides.

Cost: DigitalOcean bills a droplet by the hour, up to 672 hours a month (the monthly price,
/work/shared/do-catalogue-facts.md). ``cost_so_far`` counts every hour *started* since the droplet came up
(a droplet up 61 minutes costs two hours), capped at 672 hours: an upper estimate, never
less than the bill.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from infra_apply.errors import InfraApplyError
from infra_apply.gpu.config import GpuSettings, format_duration
from infra_apply.gpu.probe import ProbeResult

MAX_BILLED_HOURS = 672
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

Action = Literal["keep", "extend", "release"]
Why = Literal["busy", "idle", "lease_end", "max_lifetime", "leased", "down", "unleased"]


class LeaseError(InfraApplyError):
    """A lease request that cannot be granted (e.g. ``--for`` beyond ``max_lifetime``)."""

    default_rule = "gpu_ondemand"


@dataclass(frozen=True)
class Claim:
    """A release in progress: who started it and when. Written before the droplet is released,
    so a second reaper (another machine) leaves it alone, and an ordinary plan no longer keeps
    the GPU for this lease."""

    by: str
    at: datetime
    # the claiming run, so a claim left by a run that died on this machine is known dead at
    # once (see ``claimant``): host name, pid, process start time (clock ticks after boot),
    # boot id and pid namespace. None in claims written before they were recorded.
    host: str | None = None
    pid: int | None = None
    started: str | None = None
    boot: str | None = None
    pidns: str | None = None


@dataclass(frozen=True)
class Lease:
    gpu: str  # the GPU droplet's name
    producer: str
    who: str  # user@host that ran `gpu up`
    since: datetime  # lease start: max_lifetime counts from here
    until: datetime  # lease end
    last_busy: datetime | None = None  # last probe that saw a queue
    droplet_id: str | None = None  # once the droplet is up
    ip: str | None = None
    up_since: datetime | None = None  # when the droplet came up: uptime and cost count from here
    hourly_price: float | None = None  # USD, from the droplet's own price_hourly
    releasing: Claim | None = None
    last_error: str | None = None  # the last failed release, kept until one succeeds
    # the `gpu up` run creating its droplet, until the droplet is recorded: a lease left without
    # a droplet by a run that died (SIGKILL) is told from one whose droplet is being created
    creating: Claim | None = None

    @property
    def up(self) -> bool:
        return self.droplet_id is not None


@dataclass(frozen=True)
class Decision:
    action: Action
    why: Why
    lease: Lease  # the lease after the decision (extended when busy)
    message: str  # one line for the reap report
    warnings: tuple[str, ...] = ()


def utc(moment: datetime) -> datetime:
    """``moment`` in UTC, to the second (what the store keeps). A naive time is refused: a
    lease compared across machines must not depend on a local timezone."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no timezone")
    return moment.astimezone(UTC).replace(microsecond=0)


def now_utc() -> datetime:
    return utc(datetime.now(UTC))


def whoami(env: Mapping[str, str] | None = None) -> str:
    """``user@host`` for the lease and for release claims."""
    env = os.environ if env is None else env
    user = env.get("USER") or env.get("LOGNAME")
    if not user:
        import getpass  # only without USER or LOGNAME

        try:
            user = getpass.getuser()
        except (OSError, KeyError):  # no passwd entry for this uid (containers)
            user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname() or 'localhost'}"


def deadline(lease: Lease, settings: GpuSettings) -> datetime:
    """The moment the lease can never outlive: ``since + max_lifetime``."""
    return lease.since + settings.max_lifetime


def new_lease(
    now: datetime, for_: timedelta | None, settings: GpuSettings, *, producer: str, who: str
) -> Lease:
    """The lease ``gpu up NAME [--for D]`` records before the droplet is created."""
    length = (
        settings.default_lease if for_ is None else _checked_length(for_, settings.max_lifetime, settings)
    )
    start = utc(now)
    return Lease(gpu=settings.name, producer=producer, who=who, since=start, until=start + length)


def renew(lease: Lease, now: datetime, for_: timedelta | None, settings: GpuSettings) -> Lease:
    """``gpu up`` on a GPU already leased: the lease runs at least ``for_`` from now, within
    ``max_lifetime`` of its start (a longer lease takes ``gpu down`` and a new ``gpu up``)."""
    now = utc(now)
    left = deadline(lease, settings) - now
    length = settings.default_lease if for_ is None else for_
    if for_ is not None:
        _checked_length(for_, left, settings)
    until = min(max(lease.until, now + length), deadline(lease, settings))
    return replace(lease, until=until)


def _checked_length(for_: timedelta, room: timedelta, settings: GpuSettings) -> timedelta:
    if for_ <= timedelta(0):
        raise LeaseError(f"--for {format_duration(for_)}: a lease must last longer than 0s")
    if for_ > room:
        cap = format_duration(settings.max_lifetime)
        raise LeaseError(
            f"--for {format_duration(for_)} is longer than {settings.name} may still run: "
            f"{format_duration(room)} (max_lifetime {cap} from the lease's start)"
        )
    return for_


def extend(lease: Lease, now: datetime, settings: GpuSettings) -> Lease:
    """A busy probe: ``last_busy`` is now and the lease runs ``default_lease`` more, within
    ``max_lifetime`` of its start (never shortened)."""
    now = utc(now)
    until = min(max(lease.until, now + settings.default_lease), deadline(lease, settings))
    return replace(lease, last_busy=now, until=until)


def mark_up(
    lease: Lease,
    now: datetime,
    *,
    droplet_id: str,
    ip: str | None,
    hourly_price: float | None,
    created: datetime | None = None,
) -> Lease:
    """The droplet exists: record it. ``up_since`` is kept from the first time (a re-apply of
    a droplet already up must not restart its uptime or its cost); else it is the droplet's
    ``created`` when known (a GPU that was up without a lease has cost since then), or now."""
    return replace(
        lease,
        droplet_id=droplet_id,
        ip=ip,
        hourly_price=hourly_price,
        up_since=lease.up_since or utc(created or now),
        creating=None,
    )


def claim(lease: Lease, by: str, now: datetime) -> Lease:
    return replace(lease, releasing=Claim(by, utc(now)))


def release_failed(lease: Lease, error: str) -> Lease:
    """The release did not happen: the lease stays, unclaimed, so the next reap retries."""
    return replace(lease, releasing=None, last_error=error)


def held(leases: Iterable[Lease]) -> frozenset[str]:
    """The GPUs an ordinary plan or apply must keep: every lease not being released.

    A lease past its end still holds its GPU here: releasing one (and its mesh entries) is
    the reaper's job, never a side effect of somebody's unrelated apply.
    """
    return frozenset(lease.gpu for lease in leases if lease.releasing is None)


# --- uptime and cost -----------------------------------------------------------------------


def uptime(lease: Lease, now: datetime) -> timedelta:
    if lease.up_since is None:
        return timedelta(0)
    return max(timedelta(0), utc(now) - lease.up_since)


def billed_hours(up: timedelta) -> int:
    """Hours started, capped at DigitalOcean's 672 hours a month; 0 for a droplet not up."""
    seconds = up.total_seconds()
    if seconds <= 0:
        return 0
    return min(MAX_BILLED_HOURS, math.ceil(seconds / 3600))


def cost_so_far(lease: Lease, now: datetime) -> float | None:
    """USD billed so far (upper estimate, see the module doc); None when the price is unknown."""
    if lease.hourly_price is None:
        return None
    return round(billed_hours(uptime(lease, now)) * lease.hourly_price, 2)


# --- the reaper's decision -----------------------------------------------------------------


def decide(lease: Lease, now: datetime, probe: ProbeResult | None, settings: GpuSettings) -> Decision:
    """Keep, extend or release ``lease`` at ``now``; ``probe`` None: no probe configured."""
    now = utc(now)
    name = lease.gpu
    end = deadline(lease, settings)
    if now >= end:
        deep = f" although its queue is {probe.depth} deep" if probe is not None and probe.busy else ""
        warning = (
            f"{name}: released at max_lifetime ({format_duration(settings.max_lifetime)} since "
            f"{stamp(lease.since)}){deep}"
        )
        return Decision("release", "max_lifetime", lease, f"{name}: past max_lifetime: releasing", (warning,))
    if probe is not None and probe.busy:
        longer = extend(lease, now, settings)
        return Decision(
            "extend", "busy", longer, f"{name}: busy (queue {probe.depth}): lease until {stamp(longer.until)}"
        )
    warnings: tuple[str, ...] = ()
    if probe is not None and probe.failure is not None:
        warnings = (f"{name}: queue probe failed ({probe.failure}); counted as idle",)
    if probe is not None:
        idle = now - (lease.last_busy or lease.since)
        if idle >= settings.idle_after:
            message = (
                f"{name}: idle {format_duration(idle)} (idle_after "
                f"{format_duration(settings.idle_after)}): releasing"
            )
            return Decision("release", "idle", lease, message, warnings)
    if now >= lease.until:
        return Decision(
            "release", "lease_end", lease, f"{name}: lease ended {stamp(lease.until)}: releasing", warnings
        )
    return Decision("keep", "leased", lease, f"{name}: kept (lease until {stamp(lease.until)})", warnings)


def decide_unleased(
    found: Lease, now: datetime, probe: ProbeResult | None, settings: GpuSettings, *, who: str
) -> Decision:
    """A GPU up without a lease (``found``: its stand-in, see ``lifecycle.standin``), in the
    spirit of ``gpu_ondemand``: a busy queue gets it a lease as ``gpu up`` would, from now (so
    ``max_lifetime`` counts from now) and ``last_busy`` now; anything else releases it. It has
    no last busy time: it counts as idle since it was found, and a GPU without a probe has no
    lease end to wait for."""
    now = utc(now)
    name = found.gpu
    if probe is not None and probe.busy:
        adopted = extend(replace(found, who=f"{who} (gpu reap)", since=now, until=now), now, settings)
        message = (
            f"{name}: up without a lease, busy (queue {probe.depth}): leased until "
            f"{stamp(adopted.until)} (max_lifetime counts from now)"
        )
        return Decision("extend", "busy", adopted, message)
    if probe is None:
        why = "no queue_depth probe is configured"
    elif probe.failure is not None:
        why = f"its queue probe failed ({probe.failure})"
    else:
        why = "its queue is idle"
    warning = f"{name}: up without a lease and {why}: releasing it (never a standing GPU)"
    return Decision("release", "unleased", found, f"{name}: up without a lease: releasing", (warning,))


# --- the store's document ------------------------------------------------------------------


def stamp(moment: datetime) -> str:
    return utc(moment).strftime(TIME_FORMAT)


def parse_time(text: object) -> datetime:
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a time")
    return utc(datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC))


def to_dict(lease: Lease) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "gpu": lease.gpu,
        "producer": lease.producer,
        "who": lease.who,
        "since": stamp(lease.since),
        "until": stamp(lease.until),
        "last_busy": _opt_stamp(lease.last_busy),
        "droplet_id": lease.droplet_id,
        "ip": lease.ip,
        "up_since": _opt_stamp(lease.up_since),
        "hourly_price": lease.hourly_price,
        "releasing": None if lease.releasing is None else _claim_dict(lease.releasing),
        "last_error": lease.last_error,
    }
    if lease.creating is not None:  # absent otherwise: a lease's document stays as it was
        doc["creating"] = _claim_dict(lease.creating)
    return doc


def from_dict(doc: object) -> Lease:
    """A lease from the store's document; ``ValueError`` naming what is wrong otherwise."""
    if not isinstance(doc, dict):
        raise ValueError("a lease is not a JSON object")
    releasing = doc.get("releasing")
    if releasing is not None and not isinstance(releasing, dict):
        raise ValueError("releasing is not a JSON object")
    creating = doc.get("creating")
    if creating is not None and not isinstance(creating, dict):
        raise ValueError("creating is not a JSON object")
    price = doc.get("hourly_price")
    if price is not None and (isinstance(price, bool) or not isinstance(price, int | float)):
        raise ValueError("hourly_price is not a number")
    return Lease(
        gpu=_text(doc, "gpu"),
        producer=_text(doc, "producer"),
        who=_text(doc, "who"),
        since=parse_time(doc.get("since")),
        until=parse_time(doc.get("until")),
        last_busy=_opt_time(doc.get("last_busy")),
        droplet_id=_opt_text(doc, "droplet_id"),
        ip=_opt_text(doc, "ip"),
        up_since=_opt_time(doc.get("up_since")),
        hourly_price=None if price is None else float(price),
        releasing=None if releasing is None else _claim(releasing),
        last_error=_opt_text(doc, "last_error"),
        creating=None if creating is None else _claim(creating),
    )


_CLAIMANT = ("host", "started", "boot", "pidns")


def _claim_dict(claim: Claim) -> dict[str, Any]:
    doc: dict[str, Any] = {"by": claim.by, "at": stamp(claim.at)}
    if claim.pid is not None:  # a claim without its run's identity is written as before
        doc.update({key: getattr(claim, key) for key in _CLAIMANT}, pid=claim.pid)
    return doc


def _claim(doc: Mapping[str, Any]) -> Claim:
    pid = doc.get("pid")
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int)):
        raise ValueError("releasing.pid is not an integer")
    return Claim(
        _text(doc, "by"),
        parse_time(doc.get("at")),
        pid=pid,
        **{key: _opt_text(doc, key) for key in _CLAIMANT},
    )


def _text(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} is missing or not a string")
    return value


def _opt_text(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key} is not a string")
    return value


def _opt_time(value: object) -> datetime | None:
    return None if value is None else parse_time(value)


def _opt_stamp(value: datetime | None) -> str | None:
    return None if value is None else stamp(value)
