"""Fault injection: infra-apply killed with SIGTERM, SIGHUP or SIGKILL while Terraform applies.

Each trial makes quinn's droplets need creating (the first trial starts from an empty cloud,
later ones delete them behind Terraform's back, as a person in the control panel would), holds
every droplet create at the sandbox gate, sends the signal, opens the gate and reruns the apply.
After every trial: no droplet name twice in the cloud (counted: the run's summary says how many
trials were checked), state equal to the cloud, no lock left behind and no process left running.

``make faults`` runs 10 trials per signal (marker ``faults``, excluded from the default run);
the default suite runs one trial per signal.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infra_apply.sandbox import cloud
from tests import stopping
from tests.test_e2e_sandbox import QUINN, Ops

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
