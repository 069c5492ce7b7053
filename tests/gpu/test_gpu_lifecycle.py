"""gpu up / down / reap over a real lease store (real ``terraform``): the order of lease,
claim, release and record, failures that keep the lease, and two reapers of which exactly
one acts (separate processes, locally and across machines sharing a bucket)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from infra_apply.errors import InfraApplyError
from infra_apply.gpu.config import GpuSettings
from infra_apply.gpu.lease import Claim, Lease, LeaseError, now_utc, stamp
from infra_apply.gpu.lifecycle import (
    CLAIM_TTL,
    ClaimHeld,
    end_new_lease,
    lease_gpu,
    reap,
    record_up,
    release_gpu,
    standin,
)
from infra_apply.gpu.probe import ProbeResult
from infra_apply.gpu.store import LeaseStore
from tests.conftest import REPO
from tests.gpu_helpers import CT_GPU, Bucket, make_store, moto_s3

H, M = timedelta(hours=1), timedelta(minutes=1)
WORKER = REPO / "tests" / "gpu_reap_worker.py"
SETTINGS = GpuSettings(CT_GPU, queue_depth="ssh lime vision-worker queue-depth", idle_after=30 * M)
EAGER = replace(SETTINGS, idle_after=timedelta(0))  # the issue's E2E: idle_after = "0s"


class Clock:
    """The time the lifecycle sees: moved by the test, never by waiting."""

    def __init__(self) -> None:
        self.now = now_utc()

    def __call__(self) -> datetime:
        return self.now


class World:
    """Fake droplets: what the command layer's release would do, recorded."""

    def __init__(self) -> None:
        self.released: list[Lease] = []
        self.probed: list[str] = []
        self.depth: ProbeResult = ProbeResult(depth=0)
        self.fail_with: str | None = None

    def probe(self, s: GpuSettings) -> ProbeResult:
        self.probed.append(s.name)
        return self.depth

    def release(self, lease: Lease) -> None:
        if self.fail_with:
            raise InfraApplyError(self.fail_with)
        self.released.append(lease)


@pytest.fixture
def store(tmp_path: Path) -> LeaseStore:
    return make_store(tmp_path / "state")


@pytest.fixture
def clock() -> Clock:
    return Clock()


def up(store: LeaseStore, clock: Clock, settings: GpuSettings = SETTINGS) -> Lease:
    lease_gpu(store, settings, who="ops@box", for_=None, clock=clock)
    return record_up(
        store, settings.name, droplet_id="1001", ip="203.0.113.9", hourly_price=3.39, clock=clock
    )


def reap_once(store: LeaseStore, world: World, clock: Clock, settings: GpuSettings = SETTINGS) -> list[str]:
    outcomes = reap(
        store,
        {settings.name: settings},
        who="reaper@box",
        probe=world.probe,
        release=world.release,
        clock=clock,
    )
    return [line for o in outcomes for line in o.lines()]


# --- gpu up -----------------------------------------------------------------------------------


def test_gpu_up_leases_then_records_the_droplet(store: LeaseStore, clock: Clock) -> None:
    leased = lease_gpu(store, SETTINGS, who="ops@box", for_=3 * H, clock=clock)
    assert (leased.until - leased.since, leased.droplet_id, leased.up_since) == (3 * H, None, None)
    clock.now += 4 * M  # the apply took a while
    got = record_up(store, CT_GPU, droplet_id="1001", ip="203.0.113.9", hourly_price=3.39, clock=clock)
    assert store.read().leases == {CT_GPU: got}
    assert (got.droplet_id, got.ip, got.hourly_price, got.up_since) == (
        "1001",
        "203.0.113.9",
        3.39,
        clock.now,
    )


def test_gpu_up_again_renews_within_max_lifetime(store: LeaseStore, clock: Clock) -> None:
    first = lease_gpu(store, SETTINGS, who="ops@box", for_=1 * H, clock=clock)
    clock.now += 30 * M
    again = lease_gpu(store, SETTINGS, who="someone@else", for_=2 * H, clock=clock)
    assert (again.since, again.who, again.until) == (first.since, "ops@box", clock.now + 2 * H)
    with pytest.raises(LeaseError, match="may still run: 7h30m"):
        lease_gpu(store, SETTINGS, who="ops@box", for_=8 * H, clock=clock)


def test_gpu_up_while_being_released_is_refused(store: LeaseStore, clock: Clock) -> None:
    lease_gpu(store, SETTINGS, who="ops@box", for_=None, clock=clock)
    store.update(lambda ls: {CT_GPU: replace(ls[CT_GPU], releasing=Claim("reaper@box run 1", clock.now))})
    with pytest.raises(LeaseError, match="is being released"):
        lease_gpu(store, SETTINGS, who="ops@box", for_=None, clock=clock)


def test_record_up_needs_a_lease(store: LeaseStore) -> None:
    with pytest.raises(LeaseError, match="has no lease"):
        record_up(store, CT_GPU, droplet_id="1", ip=None, hourly_price=None)


def test_end_new_lease_ends_only_the_lease_it_took(store: LeaseStore, clock: Clock) -> None:
    mine = lease_gpu(store, SETTINGS, who="ops@box", for_=1 * H, clock=clock)
    assert end_new_lease(store, mine) and store.read().leases == {}
    mine = lease_gpu(store, SETTINGS, who="ops@box", for_=1 * H, clock=clock)
    clock.now += M
    lease_gpu(store, SETTINGS, who="someone@else", for_=2 * H, clock=clock)  # renewed meanwhile
    assert not end_new_lease(store, mine)
    assert store.read().leases[CT_GPU].until == clock.now + 2 * H


# --- gpu reap ---------------------------------------------------------------------------------


def reap_unleased(
    store: LeaseStore, world: World, clock: Clock, settings: GpuSettings = SETTINGS
) -> list[str]:
    found = standin(
        CT_GPU, "ct", clock.now, droplet_id="1001", ip="203.0.113.9", hourly_price=3.39, created=None
    )
    outcomes = reap(
        store,
        {settings.name: settings},
        who="reaper@box",
        probe=world.probe,
        release=world.release,
        clock=clock,
        unleased={CT_GPU: found},
    )
    return [line for o in outcomes for line in o.lines()]


def test_an_unleased_gpu_whose_release_fails_stays_unleased_and_is_retried(
    store: LeaseStore, clock: Clock
) -> None:
    world = World()
    world.fail_with = "500 sandbox fault"
    lines = reap_unleased(store, world, clock)
    assert (
        f"error: {CT_GPU}: release failed, it stays up without a lease and the next reap retries: "
        "500 sandbox fault"
    ) in lines
    assert store.read().leases == {}  # no lease made up for it: nobody leased it
    world.fail_with = None
    assert f"info: {CT_GPU}: released" in reap_unleased(store, world, clock)
    assert [lease.droplet_id for lease in world.released] == ["1001"]
    assert store.read().leases == {}


def test_an_unleased_gpu_without_a_probe_is_released(store: LeaseStore, clock: Clock) -> None:
    world = World()
    lines = reap_unleased(store, world, clock, replace(SETTINGS, queue_depth=None))
    assert world.probed == [] and len(world.released) == 1
    assert lines[0] == (
        f"warning: {CT_GPU}: up without a lease and no queue_depth probe is configured: "
        "releasing it (never a standing GPU)"
    )


def test_a_leased_gpu_is_never_taken_for_an_unleased_one(store: LeaseStore, clock: Clock) -> None:
    world = World()
    up(store, clock)
    world.depth = ProbeResult(depth=0)
    lines = reap_unleased(store, world, clock)  # its lease is young: kept, whatever state says
    assert world.released == []
    assert lines == [f"info: {CT_GPU}: kept (lease until {stamp(clock.now + 2 * H)})"]


def test_reap_the_issues_sequence(store: LeaseStore, clock: Clock) -> None:
    """A probe printing 3 keeps and extends; then 0 with idle_after 0s releases."""
    world = World()
    up(store, clock, EAGER)
    clock.now += 10 * M
    world.depth = ProbeResult(depth=3)
    lines = reap_once(store, world, clock, EAGER)
    held = store.read().leases[CT_GPU]
    assert (held.last_busy, held.until, held.releasing) == (clock.now, clock.now + 2 * H, None)
    assert lines == [f"info: {CT_GPU}: busy (queue 3): lease until {held.until:%Y-%m-%dT%H:%M:%SZ}"]
    assert world.released == []
    clock.now += 1 * M
    world.depth = ProbeResult(depth=0)
    lines = reap_once(store, world, clock, EAGER)
    assert lines == [f"info: {CT_GPU}: idle 1m (idle_after 0s): releasing", f"info: {CT_GPU}: released"]
    assert [lease.droplet_id for lease in world.released] == ["1001"]
    assert world.released[0].releasing is not None  # released only once claimed
    assert store.read().leases == {}
    assert world.probed == [CT_GPU, CT_GPU]


def test_a_kept_lease_is_not_rewritten(store: LeaseStore, clock: Clock) -> None:
    up(store, clock)
    before = store.read()
    serial = _serial(store)
    clock.now += 5 * M
    assert reap_once(store, World(), clock) == [
        f"info: {CT_GPU}: kept (lease until {_stamp(before, 'until')})"
    ]
    assert store.read() == before
    assert _serial(store) == serial


def test_past_max_lifetime_is_released_even_when_busy(store: LeaseStore, clock: Clock) -> None:
    world = World()
    up(store, clock)
    since = store.read().leases[CT_GPU].since
    clock.now += 8 * H
    world.depth = ProbeResult(depth=5)
    lines = reap_once(store, world, clock)
    assert lines[0] == (
        f"warning: {CT_GPU}: released at max_lifetime (8h since {since:%Y-%m-%dT%H:%M:%SZ}) "
        "although its queue is 5 deep"
    )
    assert lines[-1] == f"info: {CT_GPU}: released"
    assert store.read().leases == {}


def test_a_failed_release_keeps_the_lease_and_the_next_reap_retries(store: LeaseStore, clock: Clock) -> None:
    world = World()
    up(store, clock, EAGER)
    world.fail_with = "terraform apply failed: injected fault"
    lines = reap_once(store, world, clock, EAGER)
    assert lines[-1] == (
        f"error: {CT_GPU}: release failed, the lease stays and the next reap retries: "
        "terraform apply failed: injected fault"
    )
    kept = store.read().leases[CT_GPU]
    assert (kept.releasing, kept.last_error, kept.droplet_id) == (
        None,
        "terraform apply failed: injected fault",
        "1001",
    )
    world.fail_with = None
    clock.now += 5 * M
    assert reap_once(store, world, clock, EAGER)[-1] == f"info: {CT_GPU}: released"
    assert store.read().leases == {}


def test_a_probe_failure_is_reported_and_counts_as_idle(store: LeaseStore, clock: Clock) -> None:
    world = World()
    up(store, clock)
    world.depth = ProbeResult(failure="exited with status 255: ssh: connect to host lime: Connection refused")
    clock.now += 10 * M
    lines = reap_once(store, world, clock)
    assert lines[0] == (
        f"warning: {CT_GPU}: queue probe failed (exited with status 255: ssh: connect to host lime: "
        "Connection refused); counted as idle"
    )
    assert CT_GPU in store.read().leases
    clock.now += 20 * M
    assert reap_once(store, world, clock)[-1] == f"info: {CT_GPU}: released"


def test_no_probe_configured_means_no_probe_run(store: LeaseStore, clock: Clock) -> None:
    world = World()
    quiet = replace(SETTINGS, queue_depth=None)
    up(store, clock, quiet)
    clock.now += 1 * H
    reap_once(store, world, clock, quiet)
    clock.now += 1 * H
    assert reap_once(store, world, clock, quiet)[-1] == f"info: {CT_GPU}: released"
    assert world.probed == []


def test_a_fresh_claim_of_another_run_is_left_alone_a_stale_one_taken_over(
    store: LeaseStore, clock: Clock
) -> None:
    world = World()
    up(store, clock, EAGER)
    other = Claim("ops@laptop run 0badc0de", clock.now)
    store.update(lambda ls: {CT_GPU: replace(ls[CT_GPU], releasing=other)})
    clock.now += CLAIM_TTL - M
    lines = reap_once(store, world, clock, EAGER)
    assert lines == [
        f"info: {CT_GPU}: being released (by ops@laptop run 0badc0de since {_iso(other.at)}; "
        f"the claim expires {_iso(other.at + CLAIM_TTL)}); left alone"
    ]
    assert (world.released, world.probed) == ([], [])
    clock.now += M
    assert reap_once(store, world, clock, EAGER)[-1] == f"info: {CT_GPU}: released"


def test_an_interrupted_release_puts_the_claim_back(store: LeaseStore, clock: Clock) -> None:
    up(store, clock, EAGER)

    def interrupted(lease: Lease) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reap(store, {CT_GPU: EAGER}, who="r@b", probe=World().probe, release=interrupted, clock=clock)
    kept = store.read().leases[CT_GPU]
    assert (kept.releasing, kept.last_error) == (None, "stopped before the release finished")


# --- gpu down ---------------------------------------------------------------------------------


def test_gpu_down_claims_releases_and_ends_the_lease(store: LeaseStore, clock: Clock) -> None:
    world = World()
    up(store, clock)
    outcome = release_gpu(store, CT_GPU, world.release, who="ops@box", clock=clock)
    assert (outcome.released, outcome.error) == (True, None)
    assert world.released[0].releasing is not None
    assert store.read().leases == {}


def test_a_stop_during_the_leases_end_waits_for_it(
    store: LeaseStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the released GPU's lease is being ended: the write finishes, then the stop
    is handled (a lease left claimed would have the next plan create the GPU again)."""
    world = World()
    up(store, clock)
    update = LeaseStore.update
    calls: list[int] = []

    def interrupted_update(self: LeaseStore, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # the first write claims the lease, the second ends it
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # the handler runs here, on the main thread
        return update(self, *args, **kwargs)

    monkeypatch.setattr(LeaseStore, "update", interrupted_update)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # xdist's workers ignore it
    try:
        with pytest.raises(KeyboardInterrupt):
            release_gpu(store, CT_GPU, world.release, who="ops@box", clock=clock)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert [lease.gpu for lease in world.released] == [CT_GPU]
    assert store.read().leases == {}


def test_gpu_down_that_fails_keeps_the_lease(store: LeaseStore, clock: Clock) -> None:
    world = World()
    up(store, clock)
    world.fail_with = "droplet 1001: 500 from the API"
    outcome = release_gpu(store, CT_GPU, world.release, who="ops@box", clock=clock)
    assert (outcome.released, outcome.failed) == (False, True)
    assert store.read().leases[CT_GPU].last_error == "droplet 1001: 500 from the API"


def test_gpu_down_without_a_lease_still_releases(store: LeaseStore, clock: Clock) -> None:
    world = World()
    outcome = release_gpu(store, CT_GPU, world.release, who="ops@box", clock=clock)
    assert outcome.released and [lease.gpu for lease in world.released] == [CT_GPU]
    assert store.read().leases == {}


# --- two reapers at once: separate processes, steered by lines, never by sleeps ----------------


class Worker:
    def __init__(self, tmp_path: Path, state: str, who: str, **config: Any) -> None:
        self.config = {
            "state": str(tmp_path / state),
            "who": who,
            "gpus": [CT_GPU],
            "idle_after": "0s",
            "depth": 0,
            "wait": 0,
            "act_log": str(tmp_path / "acts.log"),
            **config,
        }
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(self.config)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def expect(self, line: str) -> None:
        assert self.proc.stdout is not None
        got = self.proc.stdout.readline()
        if got != line + "\n":
            self.proc.kill()
            raise AssertionError(f"expected {line!r}, got {got!r}; stderr: {self.proc.communicate()[1]}")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self) -> tuple[int, str]:
        out, err = self.proc.communicate(timeout=300)
        assert "Traceback" not in err, err
        return self.proc.returncode, out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.kill()


def seed(store: LeaseStore) -> None:
    """A GPU that is up: leased, its droplet recorded (a lease still being created by a live
    run is left alone by every reap)."""
    lease_gpu(store, EAGER, who="ops@box", for_=None)
    record_up(store, EAGER.name, droplet_id="1001", ip="203.0.113.9", hourly_price=3.39)


def acts(tmp_path: Path) -> list[str]:
    log = tmp_path / "acts.log"
    return log.read_text().splitlines() if log.exists() else []


def test_two_reaps_on_one_machine_the_second_gives_way(tmp_path: Path, workers: list[Worker]) -> None:
    seed(make_store(tmp_path / "state"))
    a = Worker(tmp_path, "state", "A", gate_act=True)
    workers.append(a)
    a.expect(f"probing {CT_GPU}")
    a.expect(f"acting {CT_GPU}")  # A holds the leases, mid-release
    b = Worker(tmp_path, "state", "B")
    workers.append(b)
    assert b.finish() == (3, "busy\n")
    a.go()
    code, out = a.finish()
    assert code == 0 and '"released": true' in out
    assert acts(tmp_path) == [f"A {CT_GPU}"]
    assert make_store(tmp_path / "state").read().leases == {}


def test_a_reap_that_waits_for_the_lock_finds_nothing_left_to_do(
    tmp_path: Path, workers: list[Worker]
) -> None:
    """Whenever B gets the lock (it may be blocked on it or not yet there), A's release has
    ended the lease by then: B never acts."""
    seed(make_store(tmp_path / "state"))
    a = Worker(tmp_path, "state", "A", gate_act=True)
    workers.append(a)
    a.expect(f"probing {CT_GPU}")
    a.expect(f"acting {CT_GPU}")
    b = Worker(tmp_path, "state", "B", wait=-1)
    workers.append(b)
    a.go()
    assert a.finish()[0] == 0
    assert b.finish() == (0, "outcomes []\n")
    assert acts(tmp_path) == [f"A {CT_GPU}"]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        yield endpoint


def test_two_machines_decide_at_once_only_one_claim_lands(
    tmp_path: Path, s3_endpoint: str, workers: list[Worker]
) -> None:
    """Remote state, two state dirs (two machines: their file locks do not see each other).
    Both read the same leases and decide to release; the compare-and-swap lets one claim land,
    the other reads again, sees the claim and leaves the GPU alone."""
    bucket = Bucket(s3_endpoint)
    seed(bucket.store(tmp_path / "machine-a"))
    remote = {
        "backend": {"kind": "s3", "bucket": bucket.name, "endpoint": s3_endpoint, "key_prefix": "live"},
        "env": bucket.env,
        "gate_probe": True,
        "gate_act": True,
    }
    a = Worker(tmp_path, "machine-a", "A", **remote)
    b = Worker(tmp_path, "machine-b", "B", **remote)
    workers += [a, b]
    a.expect(f"probing {CT_GPU}")
    b.expect(f"probing {CT_GPU}")  # both have read the leases and are deciding
    a.go()
    a.expect(f"acting {CT_GPU}")  # A's claim landed
    b.go()
    code, out = b.finish()  # B's claim conflicted; B read again and saw A's
    assert (code, out.startswith("outcomes ")) == (0, True), out  # B never printed "acting"
    (b_outcome,) = json.loads(out.removeprefix("outcomes "))
    assert b_outcome["released"] is False
    assert b_outcome["skipped"].startswith("being released (by A run ")
    a.go()
    assert a.finish()[0] == 0
    assert acts(tmp_path) == [f"A {CT_GPU}"]
    assert bucket.store(tmp_path / "machine-b").read().leases == {}


def _serial(store: LeaseStore) -> int:
    return int(json.loads((store.path / "terraform.tfstate").read_text())["serial"])


def _iso(moment: datetime) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%SZ}"


def _stamp(snapshot: Any, field: str) -> str:
    return _iso(getattr(snapshot.leases[CT_GPU], field))


# --- claims that name their run (issue 18) -----------------------------------------------------


def _ended_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_claim_whose_run_died_here_is_taken_over_at_once_another_machines_only_when_expired(
    store: LeaseStore, clock: Clock
) -> None:
    from infra_apply.gpu import claimant

    world = World()
    up(store, clock, EAGER)
    ours = claimant.claim_now("ops@laptop run 0badc0de", clock.now)
    dead = replace(ours, pid=_ended_pid())
    assert claimant.provably_dead(dead) and not claimant.provably_dead(ours)
    elsewhere = replace(dead, host="another-host", boot="another-boot")
    assert not claimant.provably_dead(elsewhere) and not claimant.provably_dead(Claim("x", clock.now))

    store.update(lambda ls: {CT_GPU: replace(ls[CT_GPU], releasing=elsewhere)})
    assert reap_once(store, world, clock, EAGER)[-1].endswith("left alone")
    with pytest.raises(ClaimHeld) as held:
        release_gpu(store, CT_GPU, world.release, who="ops@box", clock=clock, retry="infra-apply gpu down X")
    assert held.value.exit_code == 3
    assert f"pid {dead.pid} on another-host" in held.value.message
    assert f"the claim expires {_iso(clock.now + CLAIM_TTL)}" in held.value.message
    assert held.value.message.endswith("rerun infra-apply gpu down X then")

    store.update(lambda ls: {CT_GPU: replace(ls[CT_GPU], releasing=dead)})
    assert reap_once(store, world, clock, EAGER)[-1] == f"info: {CT_GPU}: released"
    assert store.read().leases == {}


def test_a_claim_round_trips_through_the_store_with_its_run(store: LeaseStore, clock: Clock) -> None:
    from infra_apply.gpu import claimant

    lease = up(store, clock, EAGER)
    claim = claimant.claim_now("ops@laptop run 0badc0de", clock.now)
    store.update(lambda ls: {CT_GPU: replace(ls[CT_GPU], releasing=claim)})
    assert store.read().leases[CT_GPU] == replace(lease, releasing=claim)
    assert claim.pid == os.getpid() and claim.boot and claim.host and claim.started
