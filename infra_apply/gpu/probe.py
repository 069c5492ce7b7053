"""The queue probe: the ``queue_depth`` shell command of a GPU's settings, run with a bound.

The reaper must never hang on it, nor fill a disk or the memory: the command gets no stdin,
runs in a process group of its own that is killed (SIGKILL, the whole group) at the timeout or
as soon as it prints more than ``OUTPUT_LIMIT`` on stdout or stderr (``queue_depth = "yes 1"``),
and its output is read from pipes only until the direct child exits: a grandchild that escapes
the group and keeps a descriptor open (an ``ssh`` left behind) can never block the wait.

The probe's environment is the caller's minus the DigitalOcean token and the state bucket's
credentials: a queue-depth command needs neither.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from infra_apply.gpu.config import GpuSettings
from infra_apply.untrusted import visible

# Per stream; more than any integer or error message needs. Past it the probe is killed.
OUTPUT_LIMIT = 64 * 1024
# How often the wait looks whether the direct child has exited (its pipes may stay open).
POLL_SECONDS = 0.02
# After SIGKILL the child is gone at once; this only bounds a wait on a process in the D state.
REAP_GRACE_SECONDS = 5.0
SECRET_VARIABLES = frozenset(
    {
        "DIGITALOCEAN_TOKEN",
        "DIGITALOCEAN_ACCESS_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "SPACES_ACCESS_KEY_ID",
        "SPACES_SECRET_ACCESS_KEY",
    }
)


@dataclass(frozen=True)
class ProbeResult:
    """A queue depth, or why there is none (``failure``)."""

    depth: int | None = None
    failure: str | None = None

    @property
    def busy(self) -> bool:
        return self.depth is not None and self.depth > 0


def parse_depth(stdout: str) -> ProbeResult:
    """One non-negative integer, surrounding whitespace allowed; anything else is a failure."""
    text = stdout.strip()
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return ProbeResult(depth=int(text))
    if not text:
        return ProbeResult(failure="printed nothing")
    first = text.splitlines()[0][:60]
    return ProbeResult(failure=f"printed no integer: {first!r}")


def probe_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in SECRET_VARIABLES}


def run_probe(
    command: str,
    timeout: float,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ProbeResult:
    """Run ``command`` with ``/bin/sh -c``; its queue depth, or a failure (timeout, exit
    status, no integer). Returns within ``timeout`` plus a few seconds, whatever it does."""
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=probe_env(os.environ if env is None else env),
            start_new_session=True,
        )
    except OSError as exc:
        return ProbeResult(failure=f"cannot start /bin/sh: {exc.strerror}")
    assert proc.stdout is not None and proc.stderr is not None
    try:
        outcome = _collect(proc, timeout)
    finally:
        _kill_group(proc)  # whatever the shell left running in its group goes with it
        proc.stdout.close()
        proc.stderr.close()
    if isinstance(outcome, ProbeResult):
        return outcome
    code, stdout, stderr = outcome
    if code != 0:
        return ProbeResult(failure=_exit_failure(code, _text(stderr)))
    return parse_depth(_text(stdout))


def _collect(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, bytes, bytes] | ProbeResult:
    """The exit status, stdout and stderr of ``proc``; a failure at the timeout or past the
    output limit (the caller kills the group). Reads only what is there once the child exited."""
    assert proc.stdout is not None and proc.stderr is not None
    streams = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
    got = {fd: bytearray() for fd in streams}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for fd in streams:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        while True:
            code = proc.poll()
            remaining = deadline - time.monotonic()
            if code is None and remaining <= 0:
                return ProbeResult(failure=f"timed out after {timeout:g}s")
            wait = 0 if code is not None else min(remaining, POLL_SECONDS)
            ready = [key.fd for key, _ in selector.select(wait)]
            for fd in ready:
                chunk = _read_some(fd, OUTPUT_LIMIT + 1 - len(got[fd]))
                if chunk is None:
                    continue
                if not chunk:
                    selector.unregister(fd)
                    continue
                got[fd] += chunk
                if len(got[fd]) > OUTPUT_LIMIT:
                    return ProbeResult(
                        failure=f"printed more than {OUTPUT_LIMIT // 1024} KiB on {streams[fd]}; "
                        "stopped it (a queue depth is one integer)"
                    )
            if code is not None and not ready:
                out, err = (bytes(got[fd]) for fd in streams)
                return code, out, err


def _read_some(fd: int, size: int) -> bytes | None:
    """Up to ``size`` bytes; empty at end of file, None when nothing is there after all."""
    try:
        return os.read(fd, size)
    except BlockingIOError:
        return None


def probe_gpu(
    settings: GpuSettings, *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> ProbeResult | None:
    """The configured probe of a GPU; None when it has none (``decide`` then goes by the lease)."""
    if settings.queue_depth is None:
        return None
    return run_probe(settings.queue_depth, settings.probe_timeout.total_seconds(), env=env, cwd=cwd)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=REAP_GRACE_SECONDS)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _exit_failure(code: int, stderr: str) -> str:
    status = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    return f"{status}: {visible(last[:120])}" if last else status
