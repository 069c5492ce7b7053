"""The queue probe: the ``queue_depth`` shell command of a GPU's settings, run with a bound.

The reaper must never hang on it: the command gets no stdin, runs in a process group of its
own that is killed (SIGKILL, the whole group) at the timeout, and writes into temporary files
rather than pipes, so a grandchild that escapes the group and keeps a descriptor open (an
``ssh`` left behind) can never block the wait. Only the direct child is waited for.

The probe's environment is the caller's minus the DigitalOcean token and the state bucket's
credentials: a queue-depth command needs neither.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from infra_apply.gpu.config import GpuSettings

# More than any integer needs; the rest of a chatty probe's output is not read at all.
OUTPUT_LIMIT = 64 * 1024
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
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=probe_env(os.environ if env is None else env),
                start_new_session=True,
            )
        except OSError as exc:
            return ProbeResult(failure=f"cannot start /bin/sh: {exc.strerror}")
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return ProbeResult(failure=f"timed out after {timeout:g}s")
        finally:
            _kill_group(proc)  # whatever the shell left running in its group goes with it
        stdout = _read(out)
        if code != 0:
            return ProbeResult(failure=_exit_failure(code, _read(err)))
        return parse_depth(stdout)


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


def _read(stream: IO[bytes]) -> str:
    stream.seek(0)
    return stream.read(OUTPUT_LIMIT).decode("utf-8", "replace")


def _exit_failure(code: int, stderr: str) -> str:
    status = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    return f"{status}: {last[:120]}" if last else status
