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
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from infra_apply import terraform as tf
from infra_apply.gpu.lease import Lease
from infra_apply.gpu.store import LeaseStore, open_store
from infra_apply.sandbox import cloud
from infra_apply.state import Backend, root_key
from tests import stopping
from tests.test_e2e_sandbox import Ops

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
        work_root = state / "work" / "sandbox" / root_key(self.root)
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
