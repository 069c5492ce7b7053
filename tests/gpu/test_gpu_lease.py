"""Leases and the reaper's decisions: pure functions, table-driven."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from infra_apply.gpu.config import GpuSettings
from infra_apply.gpu.lease import (
    Claim,
    Lease,
    LeaseError,
    billed_hours,
    claim,
    cost_so_far,
    decide,
    decide_unleased,
    extend,
    from_dict,
    held,
    mark_up,
    new_lease,
    release_failed,
    renew,
    to_dict,
    uptime,
    utc,
    whoami,
)
from infra_apply.gpu.probe import ProbeResult

H, M, S = timedelta(hours=1), timedelta(minutes=1), timedelta(seconds=1)
T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
GPU = "com.uvlava.ct.gpu"
SETTINGS = GpuSettings(GPU, queue_depth="echo 0", idle_after=30 * M, max_lifetime=8 * H, default_lease=2 * H)
NO_PROBE = replace(SETTINGS, queue_depth=None)
EAGER = replace(SETTINGS, idle_after=timedelta(0))  # the E2E: idle_after = "0s"


def lease(**changes: object) -> Lease:
    base = new_lease(T0, None, SETTINGS, producer="ct", who="ops@box")
    return replace(base, **changes)  # type: ignore[arg-type]


def depth(n: int) -> ProbeResult:
    return ProbeResult(depth=n)


FAILED = ProbeResult(failure="timed out after 30s")

# (case, settings, lease changes, now - T0, probe, action, why, until - T0 after the decision)
DECISIONS = [
    ("fresh, queue empty", SETTINGS, {}, 10 * M, depth(0), "keep", "leased", 2 * H),
    ("idle exactly idle_after", SETTINGS, {}, 30 * M, depth(0), "release", "idle", 2 * H),
    ("busy extends by default_lease", SETTINGS, {}, 10 * M, depth(3), "extend", "busy", 2 * H + 10 * M),
    ("busy near the end: capped", SETTINGS, {}, 7 * H, depth(3), "extend", "busy", 8 * H),
    ("past max_lifetime though busy", SETTINGS, {}, 8 * H, depth(3), "release", "max_lifetime", 2 * H),
    ("past max_lifetime, idle", SETTINGS, {}, 9 * H, depth(0), "release", "max_lifetime", 2 * H),
    ("probe failed, not yet idle long", SETTINGS, {}, 10 * M, FAILED, "keep", "leased", 2 * H),
    ("probe failed, idle long enough", SETTINGS, {}, 31 * M, FAILED, "release", "idle", 2 * H),
    (
        "busy lately but the lease ended",
        SETTINGS,
        {"last_busy": T0 + 110 * M},
        125 * M,
        depth(0),
        "release",
        "lease_end",
        2 * H,
    ),
    (
        "idle counts from last_busy",
        SETTINGS,
        {"last_busy": T0 + 100 * M},
        119 * M,
        depth(0),
        "keep",
        "leased",
        2 * H,
    ),
    ("no probe: kept within the lease", NO_PROBE, {}, 1 * H, None, "keep", "leased", 2 * H),
    ("no probe: released at its end", NO_PROBE, {}, 2 * H, None, "release", "lease_end", 2 * H),
    ("no probe: never idle", NO_PROBE, {"until": T0 + 5 * H}, 4 * H, None, "keep", "leased", 5 * H),
    ("idle_after 0s, queue empty", EAGER, {}, timedelta(0), depth(0), "release", "idle", 2 * H),
    ("idle_after 0s, queue deep", EAGER, {}, 5 * M, depth(3), "extend", "busy", 2 * H + 5 * M),
    ("clock behind the lease", SETTINGS, {}, -5 * M, depth(0), "keep", "leased", 2 * H),
    ("extension never shortens", SETTINGS, {"until": T0 + 5 * H}, 1 * H, depth(1), "extend", "busy", 5 * H),
]


@pytest.mark.parametrize(
    ("settings", "changes", "at", "probe", "action", "why", "until"),
    [case[1:] for case in DECISIONS],
    ids=[case[0] for case in DECISIONS],
)
def test_decide(
    settings: GpuSettings,
    changes: dict[str, object],
    at: timedelta,
    probe: ProbeResult | None,
    action: str,
    why: str,
    until: timedelta,
) -> None:
    d = decide(lease(**changes), T0 + at, probe, settings)
    assert (d.action, d.why, d.lease.until - T0) == (action, why, until)
    if action == "extend":
        assert d.lease.last_busy == T0 + at
    else:
        assert d.lease == lease(**changes)  # only a busy queue changes the lease


def test_max_lifetime_release_warns_and_names_the_queue() -> None:
    deep = decide(lease(), T0 + 8 * H, depth(3), SETTINGS)
    assert deep.warnings == (
        f"{GPU}: released at max_lifetime (8h since 2026-11-29T10:00:00Z) although its queue is 3 deep",
    )
    assert decide(lease(), T0 + 9 * H, depth(0), SETTINGS).warnings == (
        f"{GPU}: released at max_lifetime (8h since 2026-11-29T10:00:00Z)",
    )


def test_a_failed_probe_is_reported_and_counts_as_idle() -> None:
    kept = decide(lease(), T0 + 10 * M, FAILED, SETTINGS)
    assert kept.warnings == (f"{GPU}: queue probe failed (timed out after 30s); counted as idle",)
    released = decide(lease(), T0 + 31 * M, ProbeResult(failure="printed no integer: 'ok'"), SETTINGS)
    assert released.message == f"{GPU}: idle 31m (idle_after 30m): releasing"
    assert released.warnings == (f"{GPU}: queue probe failed (printed no integer: 'ok'); counted as idle",)


def test_an_unleased_gpu_busy_gets_a_lease_from_now_else_it_is_released() -> None:
    # found up without a lease, up since T0 (its created_at), looked at 20h later
    found = Lease(GPU, "ct", "-", T0 + 20 * H, T0 + 20 * H, droplet_id="1001", up_since=T0, hourly_price=3.39)
    now = T0 + 20 * H + 5 * M
    busy = decide_unleased(found, now, depth(2), SETTINGS, who="reaper@box")
    assert (busy.action, busy.why) == ("extend", "busy")
    # max_lifetime counts from now, not from a creation 20h ago; uptime and cost keep counting from T0
    adopted = replace(found, who="reaper@box (gpu reap)", since=now, until=now + 2 * H, last_busy=now)
    assert busy.lease == adopted
    for probe, why in (
        (depth(0), "its queue is idle"),
        (FAILED, "its queue probe failed (timed out after 30s)"),
        (None, "no queue_depth probe is configured"),
    ):
        idle = decide_unleased(found, now, probe, SETTINGS, who="reaper@box")
        assert (idle.action, idle.why, idle.lease) == ("release", "unleased", found)
        assert idle.warnings == (f"{GPU}: up without a lease and {why}: releasing it (never a standing GPU)",)


# --- leasing ----------------------------------------------------------------------------------


def test_new_lease() -> None:
    got = new_lease(T0 + 500 * timedelta(microseconds=1), None, SETTINGS, producer="ct", who="ops@box")
    assert got == Lease(GPU, "ct", "ops@box", since=T0, until=T0 + 2 * H)
    assert new_lease(T0, 8 * H, SETTINGS, producer="ct", who="w").until == T0 + 8 * H


@pytest.mark.parametrize(
    ("for_", "message"),
    [
        (8 * H + S, "--for 8h1s is longer than com.uvlava.ct.gpu may still run: 8h (max_lifetime 8h"),
        (timedelta(0), "--for 0s: a lease must last longer than 0s"),
    ],
)
def test_new_lease_refuses(for_: timedelta, message: str) -> None:
    with pytest.raises(LeaseError) as info:
        new_lease(T0, for_, SETTINGS, producer="ct", who="w")
    assert message in info.value.message


def test_renew_within_max_lifetime() -> None:
    held_lease = lease()
    assert renew(held_lease, T0 + 1 * H, 3 * H, SETTINGS).until == T0 + 4 * H
    assert renew(held_lease, T0 + 1 * H, 30 * M, SETTINGS).until == T0 + 2 * H  # never shortened
    assert renew(held_lease, T0 + 7 * H, None, SETTINGS).until == T0 + 8 * H  # default, capped
    with pytest.raises(LeaseError, match=r"may still run: 1h \(max_lifetime 8h from the lease's start\)"):
        renew(held_lease, T0 + 7 * H, 2 * H, SETTINGS)


def test_extend_records_busy_and_caps() -> None:
    assert extend(lease(), T0 + 1 * H, SETTINGS) == lease(last_busy=T0 + 1 * H, until=T0 + 3 * H)
    assert extend(lease(), T0 + 7 * H, SETTINGS).until == T0 + 8 * H


def test_held_leaves_out_leases_being_released() -> None:
    a, b = lease(), replace(lease(), gpu="other")
    assert held([a, claim(b, "x", T0)]) == {GPU}
    assert held([a, release_failed(claim(b, "x", T0), "boom")]) == {GPU, "other"}


# --- uptime and cost --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("up", "hours"),
    [(timedelta(0), 0), (S, 1), (H, 1), (H + S, 2), (61 * M, 2), (10 * H, 10), (700 * H, 672)],
)
def test_billed_hours_are_hours_started_capped_at_672(up: timedelta, hours: int) -> None:
    assert billed_hours(up) == hours


def test_uptime_and_cost_count_from_the_droplet_coming_up() -> None:
    leased = lease()
    assert (uptime(leased, T0 + H), cost_so_far(leased, T0 + H)) == (timedelta(0), None)
    up = mark_up(leased, T0 + 5 * M, droplet_id="1001", ip="203.0.113.9", hourly_price=3.39)
    assert uptime(up, T0 + 66 * M) == 61 * M
    assert cost_so_far(up, T0 + 66 * M) == 6.78  # two hours started
    assert cost_so_far(up, T0 + 5 * M) == 0.0
    # recording the droplet again (a re-apply) keeps when it came up, so cost never restarts
    again = mark_up(up, T0 + 2 * H, droplet_id="1001", ip="203.0.113.9", hourly_price=3.39)
    assert again.up_since == T0 + 5 * M
    assert uptime(up, T0) == timedelta(0)  # a clock behind never gives a negative uptime


# --- the store's form -------------------------------------------------------------------------


def test_round_trip_through_the_store_form() -> None:
    full = replace(
        mark_up(lease(last_busy=T0 + M), T0 + 2 * M, droplet_id="7", ip="203.0.113.1", hourly_price=3.39),
        releasing=Claim("ops@box run 1a2b3c4d", T0 + 3 * M),
        last_error="terraform apply failed",
    )
    for one in (lease(), full):
        assert from_dict(to_dict(one)) == one
    assert to_dict(lease())["since"] == "2026-11-29T10:00:00Z"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gpu": None}, "gpu is missing"),
        ({"since": "2026-11-29 10:00"}, "does not match format"),
        ({"until": 5}, "5 is not a time"),
        ({"hourly_price": "3.39"}, "hourly_price is not a number"),
        ({"hourly_price": True}, "hourly_price is not a number"),
        ({"releasing": "x"}, "releasing is not a JSON object"),
        ({"droplet_id": 7}, "droplet_id is not a string"),
    ],
)
def test_a_damaged_lease_is_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_dict({**to_dict(lease()), **change})


def test_times_are_utc_and_naive_times_refused() -> None:
    plus2 = timezone(timedelta(hours=2))
    assert utc(datetime(2026, 11, 29, 12, 0, 0, 999, tzinfo=plus2)) == T0
    with pytest.raises(ValueError, match="no timezone"):
        utc(datetime(2026, 11, 29, 10, 0))


def test_whoami_is_user_at_host() -> None:
    assert whoami({"USER": "ops"}).startswith("ops@")
    assert whoami({"LOGNAME": "quinn"}).startswith("quinn@")
