"""Stopping infra-apply mid-apply, deterministically: the sandbox gate holds every droplet create
until the test releases it, so a signal always lands while Terraform is applying (never "too
late" on a busy machine), and every wait below is on something the test can observe."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock, Timeout

from infra_apply.runtime import terraform as tf
from infra_apply.runtime.identity import identify
from infra_apply.sandbox import cloud

WAIT_SECONDS = 180.0  # a generous bound for a busy 2-core machine; no test waits this long normally
PROCESS_EXIT_SECONDS = 30.0  # "not for long": orphans must be gone well within this


def default_signals() -> None:
    # A test runner started from a script or with nohup may ignore SIGINT/SIGHUP, and a child
    # inherits that; infra-apply keeps an ignored signal ignored (as nohup means), so reset them.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


@dataclass
class Background:
    """infra-apply running in the background, its output going to files the test can read."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def stdout(self) -> str:
        return self.out.read_text("utf-8", "replace")

    def stderr(self) -> str:
        return self.err.read_text("utf-8", "replace")

    def finish(self, timeout: float = WAIT_SECONDS) -> tuple[int, str, str]:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"infra-apply did not finish within {timeout:g} s:\n{self.stdout()}\n{self.stderr()}")
        return code, self.stdout(), self.stderr()


def start(ops: Any, *args: str, name: str = "run") -> Background:
    """``infra-apply --root ROOT ARGS --sandbox --out OUT --mesh-hosts MESH`` in the background."""
    out, err = ops.base / f"{name}.stdout", ops.base / f"{name}.stderr"
    command = [
        sys.executable,
        "-m",
        "infra_apply",
        "--root",
        str(ops.root),
        *args,
        "--sandbox",
        "--out",
        str(ops.out),
        "--mesh-hosts",
        str(ops.mesh),
    ]
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(
            command,
            env=ops.env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            preexec_fn=default_signals,
        )
    return Background(proc, out, err)


def wait_for(
    predicate: Callable[[], object], what: str, run: Background | None = None, timeout: float = WAIT_SECONDS
) -> None:
    """Poll a condition the test controls (a file, a line of output), bounded; fail clearly."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if run is not None and run.proc.poll() is not None:
            code = run.proc.returncode
            pytest.fail(f"infra-apply ended (exit {code}) before {what}:\n{run.stdout()}\n{run.stderr()}")
        if time.monotonic() > deadline:
            detail = f":\n{run.stdout()}\n{run.stderr()}" if run is not None else ""
            pytest.fail(f"timed out waiting for {what}{detail}")
        time.sleep(0.02)


def apply_stopped_at_gate(
    ops: Any, signum: int, gate: Path, name: str = "stopped", lose: tuple[str, ...] = ()
) -> Background:
    """Start ``apply --producer quinn``, let its droplet creates reach the gate, then send
    ``signum`` to infra-apply. For a stop infra-apply handles (INT, TERM, HUP), also wait until
    Terraform says it received the interrupt, so it is known to be stopping mid-apply before
    the gate opens. The gate is left closed: the caller releases it. ``lose``: droplets whose
    create the provider drops when stopped (made, never recorded: the real provider's
    ``context canceled``)."""
    cloud.inject_faults(ops.cloud, gate=gate, lose_create=lose)
    run = start(ops, "apply", "--producer", "quinn", "--auto-approve", name=name)
    wait_for(lambda: cloud.gate_started(gate), "a droplet create to reach the gate", run)
    run.proc.send_signal(signum)
    if signum == signal.SIGKILL:
        run.proc.wait(timeout=WAIT_SECONDS)
    else:
        wait_for(lambda: "Interrupt received" in run.stdout(), "Terraform to receive the interrupt", run)
    return run


_READ_SYSCALL = {"x86_64": "0", "aarch64": "63"}


def blocked_reading_stdin(pid: int) -> bool:
    """True while ``pid`` sleeps in read(0, ...), per /proc/PID/syscall."""
    number = _READ_SYSCALL.get(platform.machine())
    if number is None:
        pytest.skip(f"no read syscall number known for {platform.machine()}")
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return fields[:2] == [number, "0x0"]


# --- what a stop may leave behind ----------------------------------------------------------------


def working_copy(ops: Any, producer: str = "quinn") -> Path:
    path: Path = ops.base / "state" / "work" / "sandbox" / identify(ops.root, ops.env).key / producer
    return path


def state_droplets(ops: Any, producer: str = "quinn") -> dict[str, str]:
    """Droplet id -> name, as the producer's local Terraform state records them."""
    doc = json.loads((working_copy(ops, producer) / "terraform.tfstate").read_text())
    out: dict[str, str] = {}
    for resource in doc.get("resources", []):
        if resource.get("type") == "digitalocean_droplet" and resource.get("mode") == "managed":
            for instance in resource.get("instances", []):
                out[str(instance["attributes"]["id"])] = str(instance["attributes"]["name"])
    return out


def cloud_droplets(ops: Any) -> dict[str, str]:
    return {str(d["id"]): str(d["name"]) for d in cloud.list_droplets(ops.cloud)}


def assert_no_duplicate_and_state_matches_cloud(ops: Any, expected: set[str]) -> None:
    names = sorted(cloud_droplets(ops).values())
    assert names == sorted(set(names)), f"duplicate droplets in the cloud: {names}"
    assert set(names) == expected
    assert state_droplets(ops) == cloud_droplets(ops)


def assert_no_lock_left(ops: Any, producer: str = "quinn") -> None:
    wc = working_copy(ops, producer)
    assert not (wc / ".terraform.tfstate.lock.info").exists(), "Terraform's state lock was left behind"
    assert not (wc / tf.PID_FILE).exists(), "a pid file of a finished Terraform was left behind"
    for path in (f"{wc}.lock", f"{ops.cloud}.lock"):
        lock = FileLock(path, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            pytest.fail(f"{path} is still held")
        lock.release()


def processes_started_for(state: Path) -> dict[int, str]:
    """Live processes (pid -> command line) whose environment names this test's state dir:
    infra-apply, the Terraform it started and the providers Terraform started (they inherit
    its environment)."""
    marker = f"INFRA_APPLY_STATE_DIR={state}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X"):  # a zombie has finished
            found[int(entry.name)] = cmdline.strip()
    return found


def assert_no_process_left(ops: Any, timeout: float = PROCESS_EXIT_SECONDS) -> None:
    state = ops.base / "state"
    deadline = time.monotonic() + timeout
    while (left := processes_started_for(state)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, "processes outlived the run:\n" + "\n".join(f"{p}: {c}" for p, c in left.items())


def clean_up(ops: Any) -> None:
    """After a test (a failed one above all): open its gates and end whatever it started, so a
    failure never leaves Terraform or a provider running on the machine."""
    for gate in ops.base.glob("gate*"):
        cloud.release_gate(gate)
    for pid in processes_started_for(ops.base / "state"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
