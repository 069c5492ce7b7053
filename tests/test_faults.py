"""Fault injection: infra-apply killed with SIGTERM, SIGHUP or SIGKILL while Terraform applies.

Each trial makes quinn's droplets need creating (the first trial starts from an empty cloud,
later ones delete them behind Terraform's back, as a person in the control panel would), holds
every droplet create at the sandbox gate, sends the signal, opens the gate and reruns the apply.
After every trial: no droplet name twice in the cloud, state equal to the cloud, no lock left
behind and no process left running.

``make faults`` runs 10 trials per signal (marker ``faults``, excluded from the default run);
the default suite runs one trial per signal.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra_apply.sandbox import cloud
from tests import stopping
from tests.test_e2e_sandbox import QUINN, Ops

SIGNALS = [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL]
IDS = ["SIGTERM", "SIGHUP", "SIGKILL"]
TRIALS = 10


def trial(ops: Ops, signum: int, number: int) -> None:
    gate = ops.base / f"gate-{number}"
    run = stopping.apply_stopped_at_gate(ops, signum, gate, name=f"trial-{number}")
    cloud.release_gate(gate)
    code, out, err = run.finish()
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
    stopping.assert_no_duplicate_and_state_matches_cloud(ops, QUINN)
    stopping.assert_no_lock_left(ops)
    stopping.assert_no_process_left(ops)
    assert ops.sandbox("plan", "--producer", "quinn")[0] == 0


def trials(ops: Ops, signum: int, count: int) -> None:
    ops.sandbox("plan", "--producer", "quinn")  # installs the sandbox and seeds its cloud
    for number in range(1, count + 1):
        if number > 1:
            for droplet in cloud.list_droplets(ops.cloud):
                cloud.delete_droplet(ops.cloud, droplet["id"])
        trial(ops, signum, number)


@pytest.fixture
def ops(example: Path) -> Iterator[Ops]:
    ops = Ops(example)
    yield ops
    stopping.clean_up(ops)


@pytest.mark.parametrize("signum", SIGNALS, ids=IDS)
def test_one_stop_at_the_apply_phase_leaves_nothing_behind(ops: Ops, signum: int) -> None:
    trials(ops, signum, 1)


@pytest.mark.faults
@pytest.mark.parametrize("signum", SIGNALS, ids=IDS)
def test_repeated_stops_at_the_apply_phase_leave_nothing_behind(ops: Ops, signum: int) -> None:
    trials(ops, signum, TRIALS)
