"""Fault injection: infra-apply killed with SIGTERM, SIGHUP or SIGKILL while Terraform applies.

Each trial makes quinn's droplets need creating (the first trial starts from an empty cloud,
later ones delete them behind Terraform's back, as a person in the control panel would), holds
every droplet create at the sandbox gate, sends the signal, opens the gate and reruns the apply.
After every trial: no droplet name twice in the cloud (counted: the run's summary says how many
trials were checked), state equal to the cloud, no lock left behind and no process left running.

``make faults`` runs 10 trials per signal (marker ``faults``, excluded from the default run);
the default suite runs one trial per signal. ``make faults`` also stops ``gpu up``, ``gpu down``
and ``gpu reap`` at each of their phases (``GPU_TRIALS``): after each stop the
next ``gpu down`` works and lease, sandbox cloud and mesh-hosts.json agree.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from infra_apply.sandbox import cloud
from tests import stopping
from tests.e2e.test_e2e_sandbox import QUINN, Ops

SIGNALS = [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL]
IDS = ["SIGTERM", "SIGHUP", "SIGKILL"]
TRIALS = 10
TWIN_CHECKS = "trials_checked_for_twin_droplets"  # summed in the run's summary (conftest.py)


def assert_no_twins(ops: Ops) -> None:
    """No two droplets in the cloud share a name: a second billed droplet is the failure."""
    twins = {n: k for n, k in Counter(d["name"] for d in cloud.list_droplets(ops.cloud)).items() if k > 1}
    assert not twins, f"droplets sharing a name in the cloud: {twins}"


def trial(ops: Ops, signum: int, number: int, lose: tuple[str, ...] = ()) -> None:
    gate = ops.base / f"gate-{number}"
    run = stopping.apply_stopped_at_gate(ops, signum, gate, name=f"trial-{number}", lose=lose)
    cloud.release_gate(gate)
    code, out, err = run.finish()
    assert_no_twins(ops)
    context = f"trial {number}, {signal.Signals(signum).name}:\n{out}\n{err}"
    if signum == signal.SIGKILL:
        assert code == -signal.SIGKILL, context
    else:
        assert code == 128 + signum, context
        assert "Traceback" not in err, context
        stopping.assert_no_process_left(ops)
    cloud.inject_faults(ops.cloud)
    # After a SIGKILL this rerun may find the orphaned Terraform still finishing: it waits.
    code, out, err = ops.apply("quinn")
    assert code == 0, f"rerun after {context}\n{out}\n{err}"
    assert_no_twins(ops)
    stopping.assert_no_duplicate_and_state_matches_cloud(ops, QUINN)
    stopping.assert_no_lock_left(ops)
    stopping.assert_no_process_left(ops)
    assert ops.sandbox("plan", "--producer", "quinn")[0] == 0


def trials(
    ops: Ops, signum: int, count: int, record: Callable[[str, object], None], lose: tuple[str, ...] = ()
) -> None:
    ops.sandbox("plan", "--producer", "quinn")  # installs the sandbox and seeds its cloud
    for number in range(1, count + 1):
        if number > 1:
            for droplet in cloud.list_droplets(ops.cloud):
                cloud.delete_droplet(ops.cloud, droplet["id"])
        trial(ops, signum, number, lose)
    record(TWIN_CHECKS, count)


@pytest.fixture
def ops(example: Path) -> Iterator[Ops]:
    ops = Ops(example)
    yield ops
    stopping.clean_up(ops)


@pytest.mark.parametrize("signum", SIGNALS, ids=IDS)
def test_one_stop_at_the_apply_phase_leaves_nothing_behind(
    ops: Ops, signum: int, record_property: Callable[[str, object], None]
) -> None:
    trials(ops, signum, 1, record_property)


@pytest.mark.faults
@pytest.mark.parametrize("signum", SIGNALS, ids=IDS)
def test_repeated_stops_at_the_apply_phase_leave_nothing_behind(
    ops: Ops, signum: int, record_property: Callable[[str, object], None]
) -> None:
    trials(ops, signum, TRIALS, record_property)


STOPPED = [signal.SIGTERM, signal.SIGHUP]


@pytest.mark.parametrize("signum", STOPPED, ids=IDS[:2])
def test_creates_a_stopped_provider_drops_are_imported_not_made_twice(
    ops: Ops, signum: int, record_property: Callable[[str, object], None]
) -> None:
    """The real provider drops its in-flight creates when Terraform stops it: the droplets are
    made, state never hears of them. The rerun imports them (this state's journal)."""
    trials(ops, signum, 1, record_property, lose=tuple(sorted(QUINN)))


@pytest.mark.faults
@pytest.mark.parametrize("signum", STOPPED, ids=IDS[:2])
def test_repeated_stops_dropping_creates_never_make_twins(
    ops: Ops, signum: int, record_property: Callable[[str, object], None]
) -> None:
    trials(ops, signum, TRIALS, record_property, lose=tuple(sorted(QUINN)))


# --- the GPU commands (issue 18): stopped at each phase, lease, cloud and mesh-hosts.json agree --

# (command, phase: a line of its output the signal waits for, signal). Every phase meets a stop
# infra-apply handles and a SIGKILL; bounded for CI (nine trials).
PLANS = "ct: terraform plan"
CREATING = "digitalocean_droplet.ct_gpu[0]: Creating..."
DESTROYED = "digitalocean_droplet.ct_gpu[0]: Destruction complete"
GPU_TRIALS = [
    ("up", PLANS, signal.SIGINT),  # before any apply
    ("up", PLANS, signal.SIGKILL),
    ("up", CREATING, signal.SIGTERM),
    ("up", CREATING, signal.SIGKILL),
    ("down", PLANS, signal.SIGHUP),
    ("down", DESTROYED, signal.SIGTERM),
    ("down", DESTROYED, signal.SIGKILL),
    ("reap", DESTROYED, signal.SIGHUP),
    ("reap", DESTROYED, signal.SIGKILL),
]


def gpu_agrees(ops: Any, context: str = "") -> None:
    """A lease without a droplet, a droplet without a lease, or hosts of a GPU that is gone (or
    missing for one that is up) is the disagreement that bills or breaks the mesh."""
    from tests.e2e.test_e2e_gpu import GPU

    up = GPU in ops.droplets()
    leased = GPU in ops.leases()
    assert up == leased, f"GPU up: {up}, leased: {leased} ({ops.leases()}) {context}"
    assert bool(ops.gpu_hosts()) == up, f"GPU up: {up}, hosts: {ops.gpu_hosts()} {context}"


def gpu_trial(ops: Any, verb: str, phase: str, signum: int) -> None:
    from tests.e2e.test_e2e_gpu import GPU

    name = f"{verb}-{signal.Signals(signum).name}-{len(list(ops.base.glob('*.stdout')))}"
    if verb != "up":
        assert ops.gpu("up", GPU, "--for", "1h")[0] == 0
    args = (
        ("gpu", "up", GPU, "--for", "1h")
        if verb == "up"
        else ("gpu", verb, *((GPU,) if verb == "down" else ()))
    )
    run = stopping.start(ops, *args, name=name)
    stopping.wait_for(lambda: phase in run.stderr() or phase in run.stdout(), phase, run)
    run.proc.send_signal(signum)
    code, out, err = run.finish()
    context = f"{verb} at {phase!r}, {signal.Signals(signum).name} (exit {code}):\n{out}\n{err}"
    assert "Traceback" not in err, context
    if signum != signal.SIGKILL:  # stopped cleanly: already in agreement, nothing left running
        stopping.assert_no_process_left(ops)
        gpu_agrees(ops, context)
    # the next command works and leaves nothing of the GPU: no droplet, no lease, no hosts
    code, out, err = ops.gpu("down", GPU)
    assert code == 0, f"gpu down after {context}\n{out}\n{err}"
    gpu_agrees(ops)
    assert GPU not in ops.droplets(), context
    assert ops.sandbox("plan", "--producer", "ct")[0] == 0, context
    stopping.assert_no_process_left(ops)


@pytest.fixture
def gpu_ops(example: Path) -> Iterator[Any]:
    from tests.e2e.test_e2e_gpu import GpuOps

    ops = GpuOps(example)
    ops.configure(idle_after="0s")  # every reap releases: a stop mid-reap is a stop mid-release
    yield ops
    stopping.clean_up(ops)


@pytest.mark.faults
def test_gpu_commands_stopped_at_each_phase_leave_lease_and_cloud_agreeing(gpu_ops: Any) -> None:
    assert gpu_ops.apply("ct")[0] == 0
    for verb, phase, signum in GPU_TRIALS:
        gpu_trial(gpu_ops, verb, phase, signum)
