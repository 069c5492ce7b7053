"""End to end in the sandbox: the on-demand GPU lifecycle through the real CLI and Terraform
(issue 12): gpu up, ordinary plan/apply keeping it, status, reap keeping a busy GPU and
releasing an idle one, max_lifetime, a failed release retried, two reaps at once.

The queue probe is ``cat FILE`` on a file (or FIFO) the test writes: nothing waits on a clock.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from filelock import FileLock

from infra_apply.gpu.lease import Lease
from infra_apply.gpu.store import LeaseStore, open_store
from infra_apply.runtime import terraform as tf
from infra_apply.runtime.identity import identify
from infra_apply.runtime.state import Backend
from infra_apply.sandbox import cloud
from tests import stopping
from tests.e2e.test_e2e_sandbox import Ops

pytestmark = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")

GPU = "com.uvlava.ct.gpu"
TABLE = '[gpu."com.uvlava.ct.gpu"]'


class GpuOps(Ops):
    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.depth = base / "queue-depth"
        self.depth.write_text("0\n")

    def configure(self, **settings: str) -> None:
        """Replace the example's [gpu] table: probe ``cat`` of the depth file, plus ``settings``."""
        path = self.root / "infra-apply.toml"
        text = path.read_text()
        head = text[: text.index(TABLE)]
        lines = [TABLE, f"queue_depth = {json.dumps(f'cat {self.depth}')}"]
        lines += [f'{key} = "{value}"' for key, value in settings.items()]
        path.write_text(head + "\n".join(lines) + "\n")

    def gpu(self, *args: str) -> tuple[int, str, str]:
        return self.sandbox("gpu", *args)

    def store(self) -> LeaseStore:
        state = self.base / "state"
        work_root = state / "work" / "sandbox" / identify(self.root, self.env).key
        return open_store(state, work_root, "ct", Backend("local"), tf.find_binary(self.env), self.env)

    def leases(self) -> dict[str, Lease]:
        return dict(self.store().read().leases)

    def gpu_hosts(self) -> list[str]:
        return [h for h, entry in self.hosts().items() if entry.get("droplet") == GPU]


@pytest.fixture
def ops(example: Path) -> Iterator[GpuOps]:
    ops = GpuOps(example)
    yield ops
    stopping.clean_up(ops)


def up(ops: GpuOps) -> dict[str, object]:
    code, out, err = ops.apply("ct")
    assert code == 0, out + err
    code, out, err = ops.gpu("up", GPU, "--for", "1h")
    assert code == 0, out + err
    assert f"{GPU}: up (" in out
    live = ops.droplets()[GPU]
    assert live["region"] == "nyc2"  # [gpu] decides, not the standing hosts' nyc3
    return live


def test_gpu_up_plan_apply_status_reap_keep_then_release(ops: GpuOps) -> None:
    ops.configure(idle_after="30m")
    live = up(ops)
    assert ops.gpu_hosts(), "gpu up registers the GPU's hosts like any droplet's"
    lease = ops.leases()[GPU]
    assert (lease.droplet_id, lease.hourly_price) == (str(live["id"]), 3.39)

    # an ordinary plan keeps it: no "destroy ... count was lowered"; the summary shows it
    code, out, err = ops.sandbox("plan", "--producer", "ct")
    assert code == 0, out + err
    assert f"GPU {GPU} is up: lease ends " in out and "$3.39/hour" in out
    code, out, _ = ops.sandbox("plan", "--producer", "ct", "--format", "json")
    assert code == 0 and json.loads(out)["producers"]["ct"]["gpus_up"][0]["name"] == GPU
    code, out, _ = ops.sandbox("plan", "--producer", "ct", "--format", "markdown")
    assert code == 0 and f"GPU {GPU} is up" in out

    # an ordinary apply of an unrelated change keeps it
    ops.edit("@ct/.infra.yaml", "hosts: [redroid]", "hosts: [redroid, redroid2]")
    code, out, err = ops.apply("ct")
    assert code == 0, out + err
    assert ops.droplets()[GPU]["id"] == live["id"]
    assert "redroid2" in ops.hosts()

    code, out, err = ops.gpu("status")
    assert code == 0, err
    [row] = [line for line in out.splitlines() if line.startswith(GPU)]
    assert row.split()[2] == "up" and "$3.39" in row
    code, out, _ = ops.gpu("status", "--format", "json")
    [doc] = json.loads(out)["gpus"]
    assert doc["state"] == "up" and doc["cost_so_far"] == 3.39 and doc["uptime_seconds"] >= 0

    # a deep queue keeps it and extends its lease
    ops.depth.write_text("3\n")
    code, out, err = ops.gpu("reap")
    assert code == 0, out + err
    assert GPU in ops.droplets() and ops.leases()[GPU].last_busy is not None

    # an empty queue with idle_after = 0s releases it, and its mesh entry
    ops.depth.write_text("0\n")
    ops.configure(idle_after="0s")
    code, out, err = ops.gpu("reap")
    assert code == 0, out + err
    assert f"info: {GPU}: released" in out
    assert GPU not in ops.droplets() and ops.leases() == {}
    assert ops.gpu_hosts() == []
    code, out, err = ops.sandbox("plan", "--producer", "ct")
    assert code == 0, out + err
    assert "GPU " not in out


def test_past_max_lifetime_it_is_released_even_with_a_deep_queue(ops: GpuOps) -> None:
    ops.configure(max_lifetime="8h")
    up(ops)
    store = ops.store()
    # as if `gpu up` ran 9 hours ago: the lease is moved back, no clock is waited on
    store.update(lambda current: {n: _aged(lease, timedelta(hours=9)) for n, lease in current.items()})
    ops.depth.write_text("5\n")
    code, out, err = ops.gpu("reap")
    assert code == 0, out + err
    assert "warning:" in err and "max_lifetime" in err
    assert GPU not in ops.droplets() and ops.leases() == {}


def test_a_failed_release_keeps_the_lease_and_the_next_reap_retries(ops: GpuOps) -> None:
    ops.configure(idle_after="0s")
    live = up(ops)
    cloud.inject_faults(ops.cloud, fail_delete=[GPU])
    code, out, err = ops.gpu("reap")
    assert code == 1, out + err
    assert f"error: {GPU}: release failed, the lease stays" in err
    assert ops.droplets()[GPU]["id"] == live["id"]
    lease = ops.leases()[GPU]
    assert lease.releasing is None and lease.last_error and "500 sandbox fault" in lease.last_error
    code, out, _ = ops.gpu("status")
    assert "last release failed" in out
    cloud.inject_faults(ops.cloud)  # the cloud recovers
    code, out, err = ops.gpu("reap")
    assert code == 0, out + err
    assert GPU not in ops.droplets() and ops.leases() == {} and ops.gpu_hosts() == []


def test_two_reaps_at_once_exactly_one_acts(ops: GpuOps) -> None:
    fifo = ops.base / "queue-fifo"
    os.mkfifo(fifo)
    ops.configure(idle_after="0s", probe_timeout="10m")
    up(ops)
    ops.depth.unlink()
    ops.depth.symlink_to(fifo)  # the first reap's probe blocks until the test writes the depth
    args = ["--root", str(ops.root), "gpu", "reap", "--sandbox", "--out", str(ops.out)]
    args += ["--mesh-hosts", str(ops.mesh)]
    first = subprocess.Popen(
        [sys.executable, "-m", "infra_apply", *args],
        env=ops.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        writer = _open_when_read(fifo, first)  # the first reap is probing: it holds the leases
        code, out, err = ops.gpu("reap")
        assert code == 0, out + err
        assert "another infra-apply holds its GPU leases" in out
        assert GPU in ops.droplets()  # the second did nothing
        os.write(writer, b"0\n")
        os.close(writer)
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, out + err
    assert f"info: {GPU}: released" in out
    assert GPU not in ops.droplets() and ops.leases() == {}


def _aged(lease: Lease, by: timedelta) -> Lease:
    def back(moment: object) -> object:
        return moment - by if moment is not None else None  # type: ignore[operator]

    return replace(
        lease,
        since=lease.since - by,
        up_since=back(lease.up_since),  # type: ignore[arg-type]
    )


def _open_when_read(fifo: Path, reader: subprocess.Popen[str]) -> int:
    """Open ``fifo`` for writing once ``reader``'s probe has it open for reading (ENXIO until
    then): the event the test waits on, not a delay."""
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
        if reader.poll() is not None:
            raise AssertionError(f"the first reap ended before probing: {reader.communicate()}")
        time.sleep(0.05)  # polls the event above; its length changes no outcome


def test_gpu_down_releases_it_its_firewall_and_its_mesh_entry(ops: GpuOps) -> None:
    up(ops)
    assert ops.gpu_hosts() == ["ct-gpu"]
    code, out, err = ops.gpu("down", GPU)
    assert code == 0, out + err
    assert out == f"{GPU}: released; its lease ended\n"
    assert GPU not in ops.droplets() and ops.leases() == {} and ops.gpu_hosts() == []
    assert not [f for f in cloud.load(ops.cloud)["firewalls"].values() if f["name"] == "fw-ct-gpu"]
    code, out, err = ops.sandbox("plan", "--producer", "ct")
    assert code == 0, out + err


# --- a GPU up without a lease (what the old --with-gpu left behind) -------------------------


def up_unleased(ops: GpuOps) -> dict[str, object]:
    """A GPU droplet that is up with no lease: `gpu up`, then its lease removed behind the
    tool's back, as a version before leases would have left it."""
    live = up(ops)
    ops.store().update(lambda current: {n: lease for n, lease in current.items() if n != GPU})
    assert ops.leases() == {} and ops.droplets()[GPU]["id"] == live["id"]
    return live


def test_an_unleased_gpu_is_shown_planned_with_its_ways_out_and_reaped_when_idle(ops: GpuOps) -> None:
    ops.configure(idle_after="30m")  # an unleased GPU has no last busy time: idle now, whatever this says
    live = up_unleased(ops)

    code, out, err = ops.gpu("status")
    assert code == 0, out + err
    [row] = [line.split() for line in out.splitlines() if line.startswith(f"{GPU} ")]
    assert row[2] == "unleased"
    assert row[3].endswith("s") and row[3] != "-"  # uptime from the droplet's created_at
    assert row[-2:] == ["$3.39", "$3.39"]  # $/hour and the first hour started
    assert f"{GPU}: up without a lease: gpu reap releases it" in out
    code, out, err = ops.gpu("status", "--format", "json")
    assert code == 0, out + err
    [doc] = json.loads(out)["gpus"]
    assert (doc["state"], doc["droplet_id"], doc["hourly_price"], doc["cost_so_far"]) == (
        "unleased",
        str(live["id"]),
        3.39,
        3.39,
    )
    assert isinstance(doc["uptime_seconds"], int) and doc["uptime_seconds"] >= 0

    # an ordinary plan says so, with both ways out, not a bare destroy
    code, out, err = ops.sandbox("plan", "--producer", "ct")
    assert code == 2, out + err
    assert f"GPU {GPU} is up without a lease" in out
    assert (
        f"infra-apply gpu up {GPU} --sandbox to lease it, "
        f"or infra-apply gpu down {GPU} --sandbox to release it"
    ) in out
    code, out, _ = ops.sandbox("plan", "--producer", "ct", "--format", "json")
    [gpu] = json.loads(out)["producers"]["ct"]["gpus_up"]
    assert (gpu["name"], gpu["leased"], gpu["lease_until"]) == (GPU, False, None)
    # an ordinary apply refuses the destroy (exit 3), naming the GPU verbs as well
    code, out, err = ops.apply("ct")
    assert code == 3, out + err
    assert (
        f"{GPU} is up without a lease: infra-apply gpu up {GPU} --sandbox leases it, "
        f"infra-apply gpu down {GPU} --sandbox releases it"
    ) in err
    assert ops.droplets()[GPU]["id"] == live["id"]

    # the reaper probes it like a leased one: idle, so it is released with its mesh entry
    code, out, err = ops.gpu("reap")
    assert code == 0, out + err
    assert f"warning: {GPU}: up without a lease and its queue is idle" in err
    assert f"info: {GPU}: released" in out
    assert GPU not in ops.droplets() and ops.leases() == {} and ops.gpu_hosts() == []
    code, out, err = ops.sandbox("plan", "--producer", "ct")
    assert code == 0, out + err
    assert "GPU " not in out


def test_an_unleased_gpu_with_a_busy_queue_gets_a_lease_and_is_kept(ops: GpuOps) -> None:
    ops.configure(idle_after="0s", max_lifetime="8h", default_lease="2h")
    live = up_unleased(ops)
    ops.depth.write_text("3\n")
    # while another run uses ct's working copy, status says what it cannot see and reap gives way
    copy_lock = ops.base / "state" / "work" / "sandbox" / identify(ops.root, ops.env).key / "ct.lock"
    with FileLock(copy_lock, timeout=0):
        code, out, err = ops.gpu("status")
        assert code == 0, out + err
        assert "producer ct: another infra-apply run is using its working copy" in err
        code, out, err = ops.gpu("reap")
        assert code == 0, out + err
        assert "info: producer ct: another infra-apply holds its GPU leases (or its working copy)" in out
        assert ops.leases() == {} and ops.droplets()[GPU]["id"] == live["id"]
    code, out, err = ops.gpu("reap")
    assert code == 0, out + err
    assert f"info: {GPU}: up without a lease, busy (queue 3): leased until" in out
    lease = ops.leases()[GPU]
    assert (lease.droplet_id, lease.hourly_price, lease.ip) == (str(live["id"]), 3.39, live["ipv4_address"])
    assert lease.last_busy == lease.since and lease.until == lease.since + timedelta(hours=2)
    assert lease.up_since is not None and lease.up_since <= lease.since  # uptime from created_at
    assert ops.droplets()[GPU]["id"] == live["id"]
    # from now on it is an ordinary leased GPU: kept by plans, shown up
    code, out, err = ops.sandbox("plan", "--producer", "ct")
    assert code == 0, out + err
    assert f"GPU {GPU} is up: lease ends " in out
    code, out, _ = ops.gpu("status", "--format", "json")
    assert json.loads(out)["gpus"][0]["state"] == "up"


def test_gpu_up_of_an_unleased_gpu_leases_it_and_counts_its_cost_from_its_creation(ops: GpuOps) -> None:
    live = up_unleased(ops)
    code, out, err = ops.gpu("up", GPU, "--for", "1h")
    assert code == 0, out + err
    lease = ops.leases()[GPU]
    assert lease.droplet_id == str(live["id"])
    created = datetime.strptime(str(live["created_at"]), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert lease.up_since == created  # not the moment of this gpu up: it has cost since then
    assert ops.droplets()[GPU]["id"] == live["id"]


# --- a failed apply after gpu up ------------------------------------------------------------


def test_a_failed_gpu_up_ends_the_new_lease_it_took_never_one_it_extended(ops: GpuOps) -> None:
    code, out, err = ops.apply("ct")
    assert code == 0, out + err
    cloud.inject_faults(ops.cloud, fail_create=[GPU])
    code, out, err = ops.gpu("up", GPU, "--for", "1h")
    assert code == 1, out + err
    assert "422 sandbox fault" in err
    assert "No GPU droplet was created, so the new lease was ended (nothing to keep)" in err
    assert GPU not in ops.droplets() and ops.leases() == {}
    # somebody's lease is there already (its gpu up still creating, say): a failed one only
    # extended it, and never ends it
    ops.store().update(lambda current: {GPU: _someones_lease()})
    code, out, err = ops.gpu("up", GPU, "--for", "1h")
    assert code == 1, out + err
    assert "The lease stays until" in err
    assert ops.leases()[GPU].who == "someone@else"


def test_a_half_made_gpu_keeps_its_lease_and_gpu_down_releases_it(ops: GpuOps) -> None:
    code, out, err = ops.apply("ct")
    assert code == 0, out + err
    # the droplet is created, its firewall is not: the apply fails with the droplet in state
    cloud.inject_faults(ops.cloud, fail_create=["fw-ct-gpu"], message="firewall: 422 sandbox fault")
    code, out, err = ops.gpu("up", GPU, "--for", "1h")
    assert code == 1, out + err
    assert "The GPU droplet is in state (half made): its lease stays until" in err
    assert f"infra-apply gpu down {GPU} --sandbox now" in err
    assert GPU in ops.droplets() and GPU in ops.leases()
    cloud.inject_faults(ops.cloud)
    code, out, err = ops.gpu("down", GPU)
    assert code == 0, out + err
    assert GPU not in ops.droplets() and ops.leases() == {}


def _someones_lease() -> Lease:
    from tests.gpu_helpers import a_lease

    lease = a_lease(datetime.now(UTC).replace(microsecond=0))
    return replace(lease, who="someone@else")


# --- a GPU release on its own terms (issue 17) -----------------------------------------------


def test_gpu_down_with_another_change_pending_releases_only_the_gpu(ops: GpuOps) -> None:
    up(ops)
    services = ops.droplets()["com.uvlava.ct.services"]
    # a merged change waiting for somebody's --allow-resize: it must neither block the release
    # nor be applied by it
    ops.edit("@ct/.infra.yaml", "role: services\n", "role: services\n    size: s-4vcpu-8gb\n")
    code, out, err = ops.gpu("down", GPU)
    assert code == 0, out + err
    assert GPU not in ops.droplets() and ops.leases() == {} and ops.gpu_hosts() == []
    assert ops.droplets()["com.uvlava.ct.services"]["size"] == services["size"] == "s-2vcpu-4gb"
    assert "lime" in ops.hosts()  # the other droplets' hosts stay registered
    code, out, err = ops.sandbox("plan", "--producer", "ct")
    assert code == 2, out + err  # the resize is still pending, and nothing creates the GPU
    assert "s-4vcpu-8gb" in out and GPU not in out.replace(f"GPU {GPU}", "")
    code, out, err = ops.apply("ct")
    assert code == 3 and "--allow-resize com.uvlava.ct.services" in err, out + err


# --- stopped or refused: lease and cloud still agree (issue 18) ------------------------------


def test_gpu_up_that_finds_its_working_copy_in_use_takes_no_lease(ops: GpuOps) -> None:
    code, out, err = ops.apply("ct")
    assert code == 0, out + err
    copy_lock = ops.base / "state" / "work" / "sandbox" / identify(ops.root, ops.env).key / "ct.lock"
    with FileLock(copy_lock, timeout=0):
        code, out, err = ops.gpu("up", GPU, "--for", "1h")
    assert code == 1, out + err
    assert "another infra-apply run holds the lock on the working copy of producer ct" in err, err
    assert ops.leases() == {} and GPU not in ops.droplets()
    code, out, err = ops.sandbox("plan", "--producer", "ct")
    assert code == 0, out + err  # the next ordinary apply creates no GPU


def test_gpu_down_stopped_after_its_destroy_does_not_bring_the_lease_back(ops: GpuOps) -> None:
    up(ops)
    run = stopping.start(ops, "gpu", "down", GPU, name="down")
    done = "digitalocean_droplet.ct_gpu[0]: Destruction complete"
    stopping.wait_for(lambda: done in run.stderr(), "the GPU's destroy to finish", run)
    run.proc.send_signal(signal.SIGTERM)
    code, out, err = run.finish()
    assert "Traceback" not in err and code in (0, 143), out + err
    assert GPU not in ops.droplets() and ops.leases() == {} and ops.gpu_hosts() == []
    code, out, err = ops.sandbox("plan", "--producer", "ct")
    assert code == 0, out + err  # nothing creates the GPU again


def test_a_claim_left_by_a_killed_gpu_down_is_taken_over_at_once(ops: GpuOps) -> None:
    up(ops)
    from infra_apply.gpu import claimant

    claim = claimant.claim_now("ops@here run 0badc0de", datetime.now(UTC).replace(microsecond=0))
    gone = replace(claim, pid=_ended_pid(), started="1")  # a process of this boot that ended
    ops.store().update(lambda current: {GPU: replace(current[GPU], releasing=gone)})
    code, out, err = ops.gpu("down", GPU)
    assert code == 0, out + err
    assert GPU not in ops.droplets() and ops.leases() == {} and ops.gpu_hosts() == []


def test_a_live_claim_is_refused_with_who_where_until_and_how(ops: GpuOps) -> None:
    up(ops)
    from infra_apply.gpu import claimant

    claim = claimant.claim_now("ops@here run 0badc0de", datetime.now(UTC).replace(microsecond=0))
    ops.store().update(lambda current: {GPU: replace(current[GPU], releasing=claim)})  # this test's own pid
    code, out, err = ops.gpu("down", GPU)
    assert code == 3, out + err
    assert f"by ops@here run 0badc0de (pid {os.getpid()} on " in err and "the claim expires " in err
    assert f"rerun infra-apply gpu down {GPU} --sandbox then" in err
    code, out, err = ops.gpu("up", GPU, "--for", "1h")
    assert code == 3 and f"rerun infra-apply gpu up {GPU} --for 1h --sandbox then" in err, out + err
    assert GPU in ops.droplets()


def _ended_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_lease_left_by_a_killed_gpu_up_is_released_by_the_next_reap(ops: GpuOps) -> None:
    ops.configure(idle_after="1h")  # an idle queue alone would not release it yet
    code, out, err = ops.apply("ct")
    assert code == 0, out + err
    run = stopping.start(ops, "gpu", "up", GPU, "--for", "1h", name="up")
    stopping.wait_for(lambda: "ct: terraform plan" in run.stderr(), "gpu up to plan", run)
    run.proc.send_signal(signal.SIGKILL)
    run.finish()
    assert GPU in ops.leases()  # nothing could end it: the lease names its dead run
    code, out, err = ops.gpu("reap")  # waits for the orphaned Terraform, if any
    assert code == 0, out + err
    assert f"{GPU}: its gpu up ended before recording a droplet" in out
    assert GPU not in ops.droplets() and ops.leases() == {} and ops.gpu_hosts() == []
    code, out, err = ops.sandbox("plan", "--producer", "ct")
    assert code == 0, out + err


def test_a_gpu_up_refused_exits_3_naming_gpu_commands_that_run_as_printed(ops: GpuOps) -> None:
    live = up(ops)
    ops.configure(size="gpu-h200x1-141gb")  # a resize of the GPU that is up: gpu up never does it
    code, out, err = ops.gpu("up", GPU, "--for", "1h")
    assert code == 3, out + err
    assert "--allow-" not in err  # flags the GPU commands do not take
    down, again = f"infra-apply gpu down {GPU} --sandbox", f"infra-apply gpu up {GPU} --for 1h --sandbox"
    assert f"({down}, then {again})" in err
    assert ops.droplets()[GPU]["id"] == live["id"] and GPU in ops.leases()
    for remedy in (down, again):  # as printed, with only the test's own paths added
        code, out, err = ops.run(*remedy.split()[1:], "--out", str(ops.out), "--mesh-hosts", str(ops.mesh))
        assert code == 0, f"{remedy}:\n{out}{err}"
    assert ops.droplets()[GPU]["size"] == "gpu-h200x1-141gb" and ops.gpu_hosts() == ["ct-gpu"]
