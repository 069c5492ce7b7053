"""The GPU lifecycle's steps over a lease store: lease (``gpu up``), record the droplet, release
(``gpu down``), and the reaper's pass (``gpu reap``).

Provisioning and releasing a droplet is the command layer's business (a producer plan/apply
with the GPU on or off, mesh registration): it comes in as a callback, so this module decides
*whether* and *in which order*, never *how*.

The order that keeps a team safe:

- lease first, then create: an ordinary plan running meanwhile already keeps the GPU;
- claim first, then release, then end the lease: the claim (written compare-and-swap) is what
  makes exactly one reaper act, and a claimed lease no longer holds the GPU for ordinary plans;
  a release that fails puts the lease back unclaimed with its error, and the next reap retries.

Each step takes the store's ``exclusive()`` lock itself (re-entrant, so a caller may hold it
around a longer sequence, e.g. ``gpu up``'s lease + apply + record).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from infra_apply.errors import ExitCode, InfraApplyError
from infra_apply.gpu import lease as leases
from infra_apply.gpu.claimant import claim_now, provably_dead, where
from infra_apply.gpu.config import GpuSettings, settings_for
from infra_apply.gpu.lease import Claim, Decision, Lease, LeaseError
from infra_apply.gpu.probe import ProbeResult
from infra_apply.gpu.store import LeaseConflict, LeaseStore
from infra_apply.runtime.signals import deferred

# A claim older than this was left by a run that died mid-release (killed, machine lost): the
# next reap takes it over. Longer than any release (a producer apply destroying one droplet)
# and than the example systemd unit's TimeoutStartSec. A claim whose run provably died on this
# machine (claimant.provably_dead) is taken over at once.
CLAIM_TTL = timedelta(minutes=30)
ATTEMPTS = 3

Clock = Callable[[], datetime]
Prober = Callable[[GpuSettings], ProbeResult]
Releaser = Callable[[Lease], None]  # raises InfraApplyError when the droplet was not released
# After a stop mid-release: True when the lease's droplet is gone all the same (Terraform's
# destroy finished before the stop), so the lease ends instead of coming back
Gone = Callable[[Lease], bool]


class ClaimHeld(LeaseError):
    """Another run's release claim, alive (or not provably dead) and not yet expired."""

    exit_code = ExitCode.REFUSED


@dataclass(frozen=True)
class Outcome:
    """What one reap (or ``gpu down``) did with one lease."""

    gpu: str
    decision: Decision | None  # None when the lease was left alone (``skipped`` says why)
    released: bool = False
    error: str | None = None  # the release failed: the lease stays, the next reap retries
    skipped: str | None = None
    unleased: bool = False  # a GPU that was up without a lease
    refused: bool = False  # the error is the guard's refusal (exit 3)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def lines(self) -> list[str]:
        """The report lines, each ``warning: ...``, ``info: ...`` or ``error: ...``."""
        out = [f"warning: {w}" for w in (self.decision.warnings if self.decision else ())]
        if self.skipped:
            out.append(f"info: {self.gpu}: {self.skipped}")
        elif self.decision is not None:
            out.append(f"info: {self.decision.message}")
        if self.released:
            out.append(f"info: {self.gpu}: released")
        if self.error and self.unleased:
            out.append(
                f"error: {self.gpu}: release failed, it stays up without a lease and the next reap "
                f"retries: {self.error}"
            )
        elif self.error:
            out.append(
                f"error: {self.gpu}: release failed, the lease stays and the next reap retries: {self.error}"
            )
        return out


# --- gpu up --------------------------------------------------------------------------------


def lease_gpu(
    store: LeaseStore,
    settings: GpuSettings,
    *,
    who: str,
    for_: timedelta | None,
    clock: Clock = leases.now_utc,
    wait: float = 60,
    retry: str = "gpu up",
) -> Lease:
    """Record (or renew) the lease ``gpu up`` needs before the droplet is created. A release
    claim of a run that is dead (provably, or expired) is dropped: this run's apply then puts
    the GPU in the state its lease says. ``retry``: the command a refusal names."""

    def change(current: Mapping[str, Lease]) -> dict[str, Lease]:
        now = clock()
        held = current.get(settings.name)
        if held is not None and held.releasing is not None:
            if not _stale(held.releasing, now):
                raise _held(settings.name, held.releasing, retry)
            held = replace(held, releasing=None)
        new = (
            leases.renew(held, now, for_, settings)
            if held is not None
            else leases.new_lease(now, for_, settings, producer=store.producer, who=who)
        )
        if not new.up and (new.creating is None or _stale(new.creating, now)):
            new = replace(new, creating=claim_now(_claimant(who), leases.utc(now)))
        return {**current, settings.name: new}

    with store.exclusive(wait):
        return store.update(change, ATTEMPTS).leases[settings.name]


def record_up(
    store: LeaseStore,
    name: str,
    *,
    droplet_id: str,
    ip: str | None,
    hourly_price: float | None,
    created: datetime | None = None,
    clock: Clock = leases.now_utc,
    wait: float = 60,
) -> Lease:
    """The droplet is up: note its id, address, price and (when known) creation on its lease."""

    def change(current: Mapping[str, Lease]) -> dict[str, Lease]:
        if name not in current:
            raise LeaseError(f"{name} has no lease to record its droplet on")
        up = leases.mark_up(
            current[name], clock(), droplet_id=droplet_id, ip=ip, hourly_price=hourly_price, created=created
        )
        return {**current, name: up}

    with store.exclusive(wait):
        return store.update(change, ATTEMPTS).leases[name]


def end_new_lease(store: LeaseStore, lease: Lease, *, wait: float = 60) -> bool:
    """``gpu up`` took ``lease`` and its apply created nothing: end it. Only that very lease:
    one changed since (renewed, claimed) is left as it is. True when it was ended."""

    def change(current: Mapping[str, Lease]) -> dict[str, Lease]:
        return {n: held for n, held in current.items() if n != lease.gpu or held != lease}

    with store.exclusive(wait):
        return lease.gpu not in store.update(change, ATTEMPTS).leases


# --- gpu down ------------------------------------------------------------------------------


def release_gpu(
    store: LeaseStore,
    name: str,
    release: Releaser,
    *,
    who: str,
    clock: Clock = leases.now_utc,
    wait: float = 60,
    retry: str = "gpu down",
    gone: Gone | None = None,
) -> Outcome:
    """``gpu down NAME``: claim the lease, release the droplet, end the lease. A GPU without a
    lease is released all the same (the command is the allowance), with nothing to end.
    ``retry``: the command a refusal names; ``gone``: see ``Gone``."""
    with store.exclusive(wait):
        mine = claim_now(_claimant(who), leases.utc(clock()))

        def change(current: Mapping[str, Lease]) -> dict[str, Lease]:
            lease = current.get(name)
            if lease is None:
                return dict(current)
            if lease.releasing is not None and not _stale(lease.releasing, mine.at):
                raise _held(name, lease.releasing, retry)
            return {**current, name: replace(lease, releasing=mine)}

        try:
            claimed = store.update(change, ATTEMPTS).leases.get(name)
        except KeyboardInterrupt:
            # stopped while the claim was written: it may have landed; nothing was released,
            # so it is put back at once rather than left for the next run to take over
            store.update(_finisher({name: "stopped before the release started"}, {name: mine}), ATTEMPTS)
            raise
        if claimed is None:
            release(_unleased(name, store.producer, mine.at))
            return Outcome(name, None, released=True)
        decision = Decision("release", "down", claimed, f"{name}: gpu down: releasing")
        return _act(store, [(claimed, decision)], release, gone=gone)[0]


# --- gpu reap ------------------------------------------------------------------------------


def reap(
    store: LeaseStore,
    settings: Mapping[str, GpuSettings],
    *,
    who: str,
    probe: Prober,
    release: Releaser,
    clock: Clock = leases.now_utc,
    wait: float = 0,
    unleased: Mapping[str, Lease] | None = None,
    gone: Gone | None = None,
) -> list[Outcome]:
    """One pass of the reaper over the producer's leases, and over ``unleased``: the GPUs its
    state holds up (as stand-in leases, see ``standin``), of which those without a lease are
    probed like leased ones (``lease.decide_unleased``): busy, one gets a lease; else it is
    released like ``gpu down`` would. Its claim is written like a lease's, so a ``gpu up``
    racing it on another machine either lands first (the GPU is leased, left alone) or finds
    it being released.

    ``StoreBusy`` when another run on this machine holds the leases (``wait`` = 0: a timer's
    reap gives way at once and the next tick tries again). Each GPU with a configured
    ``queue_depth`` is probed once per pass, even when a conflicting write makes it decide
    again.
    """
    with store.exclusive(wait):
        probed: dict[str, ProbeResult | None] = {}
        for attempt in range(ATTEMPTS):
            snapshot = store.read()
            now = clock()
            claimant = claim_now(_claimant(who), leases.utc(now))
            plans = [
                _plan(lease, now, settings, probe, probed) for _, lease in sorted(snapshot.leases.items())
            ]
            orphans = {n: g for n, g in (unleased or {}).items() if n not in snapshot.leases}
            plans += [
                _plan_unleased(g, now, settings, probe, probed, who) for _, g in sorted(orphans.items())
            ]
            after = dict(snapshot.leases)
            for lease, decision, _ in plans:
                if decision is not None and decision.action == "extend":
                    after[lease.gpu] = decision.lease
                elif decision is not None and decision.action == "release":
                    after[lease.gpu] = replace(decision.lease, releasing=claimant)
            if after == snapshot.leases:
                break  # nothing to extend or claim: no write
            try:
                store.write(snapshot, after)
                break
            except LeaseConflict:
                if attempt == ATTEMPTS - 1:
                    raise
        ours = [(after[lease.gpu], d) for lease, d, _ in plans if d is not None and d.action == "release"]
        done = {o.gpu: o for o in _act(store, ours, release, frozenset(orphans), gone)}
        return [done.get(lease.gpu) or Outcome(lease.gpu, d, skipped=skip) for lease, d, skip in plans]


def _plan(
    lease: Lease,
    now: datetime,
    settings: Mapping[str, GpuSettings],
    probe: Prober,
    probed: dict[str, ProbeResult | None],
) -> tuple[Lease, Decision | None, str | None]:
    if lease.releasing is not None and not _stale(lease.releasing, now):
        return lease, None, f"being released ({_claim_text(lease.releasing)}); left alone"
    if lease.creating is not None and not lease.up:
        if not _stale(lease.creating, now):
            return lease, None, f"being created ({_claim_text(lease.creating)}); left alone"
        message = (
            f"{lease.gpu}: its gpu up ended before recording a droplet ({_claim_text(lease.creating)}): "
            "releasing"
        )
        return lease, Decision("release", "lease_end", lease, message), None
    s = settings_for(lease.gpu, settings)
    if lease.gpu not in probed:
        probed[lease.gpu] = probe(s) if s.queue_depth else None
    return lease, leases.decide(lease, now, probed[lease.gpu], s), None


def _plan_unleased(
    gpu: Lease,
    now: datetime,
    settings: Mapping[str, GpuSettings],
    probe: Prober,
    probed: dict[str, ProbeResult | None],
    who: str,
) -> tuple[Lease, Decision | None, str | None]:
    s = settings_for(gpu.gpu, settings)
    if gpu.gpu not in probed:
        probed[gpu.gpu] = probe(s) if s.queue_depth else None
    return gpu, leases.decide_unleased(gpu, now, probed[gpu.gpu], s, who=who), None


def _act(
    store: LeaseStore,
    claimed: Sequence[tuple[Lease, Decision]],
    release: Releaser,
    standins: frozenset[str] = frozenset(),
    gone: Gone | None = None,
) -> list[Outcome]:
    """Release each claimed lease's droplet, then end the released leases and put the failed
    ones back (unclaimed, with their error) in one write. A failed ``standins`` one (a GPU up
    without a lease) goes back to having no lease: nobody leased it, the next reap retries."""
    errors: dict[str, str | None] = {}
    refused: set[str] = set()
    claims = {lease.gpu: lease.releasing for lease, _ in claimed}
    try:
        for lease, _ in claimed:
            try:
                release(lease)
                errors[lease.gpu] = None
            except InfraApplyError as exc:
                errors[lease.gpu] = exc.message
                if exc.exit_code == ExitCode.REFUSED:
                    refused.add(lease.gpu)
    except BaseException:
        # Interrupted (Ctrl-C, a bug): put back every claim not settled, so the next reap
        # retries at once instead of after CLAIM_TTL, then stop as asked. A droplet whose
        # destroy finished before the stop is released: its lease ends, never comes back (an
        # unclaimed lease would make the next plan create the GPU again).
        for lease, _ in claimed:
            if lease.gpu not in errors:
                errors[lease.gpu] = None if gone is not None and gone(lease) else _STOPPED
        with deferred():
            store.update(_finisher(errors, claims, standins), ATTEMPTS)
        raise
    if claimed:
        # Not cut short by a signal: a released GPU whose lease stayed claimed would be created
        # again by the next plan; the write takes seconds, the signal is handled after it.
        with deferred():
            store.update(_finisher(errors, claims, standins), ATTEMPTS)
    return [
        Outcome(
            lease.gpu,
            d,
            released=errors[lease.gpu] is None,
            error=errors[lease.gpu],
            unleased=lease.gpu in standins,
            refused=lease.gpu in refused,
        )
        for lease, d in claimed
    ]


def _finisher(
    errors: Mapping[str, str | None],
    claims: Mapping[str, Claim | None],
    standins: frozenset[str] = frozenset(),
) -> Callable[[Mapping[str, Lease]], dict[str, Lease]]:
    """End the released leases; put the failed ones back unclaimed with their error (a
    stand-in's claim is just removed)."""

    def finish(current: Mapping[str, Lease]) -> dict[str, Lease]:
        out = dict(current)
        for name, error in errors.items():
            held = out.get(name)
            if held is None or held.releasing != claims[name]:
                continue  # somebody took over our claim meanwhile (after CLAIM_TTL): theirs now
            if error is None or name in standins:
                del out[name]
            else:
                out[name] = leases.release_failed(held, error)
        return out

    return finish


_STOPPED = "stopped before the release finished"


def _stale(claim: Claim, now: datetime) -> bool:
    """A claim nobody is acting on any more: past CLAIM_TTL, or its run died on this machine."""
    return leases.utc(now) - claim.at >= CLAIM_TTL or provably_dead(claim)


def _held(name: str, claim: Claim, retry: str) -> ClaimHeld:
    """The refusal: who holds the claim, from where, until when, and how to take it over."""
    return ClaimHeld(
        f"{name} is being released ({_claim_text(claim)}); if that run is still going, let it "
        f"finish. A claim is taken over at once when its run has ended on the machine that "
        f"wrote it (run this there), else once it expires: rerun {retry} then"
    )


def _claimant(who: str) -> str:
    """``who`` plus a run id: two runs of one user on one host never mistake each other's claim."""
    return f"{who} run {uuid.uuid4().hex[:8]}"


def _claim_text(claim: Claim) -> str:
    run = where(claim)
    return (
        f"by {claim.by}{f' ({run})' if run else ''} since {leases.stamp(claim.at)}; "
        f"the claim expires {leases.stamp(claim.at + CLAIM_TTL)}"
    )


def _unleased(name: str, producer: str, now: datetime) -> Lease:
    """A stand-in lease for releasing a GPU nobody leased (``gpu down`` of an orphan)."""
    at = leases.utc(now)
    return Lease(gpu=name, producer=producer, who="-", since=at, until=at)


def standin(
    name: str,
    producer: str,
    now: datetime,
    *,
    droplet_id: str,
    ip: str | None,
    hourly_price: float | None,
    created: datetime | None,
) -> Lease:
    """A GPU found up in state without a lease, as a lease that ends the moment it is found
    (what ``reap`` decides on): its droplet, price and, when the state says, when it came up."""
    return replace(
        _unleased(name, producer, now),
        droplet_id=droplet_id,
        ip=ip,
        hourly_price=hourly_price,
        up_since=None if created is None else leases.utc(created),
    )
