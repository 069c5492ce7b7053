"""One sandbox provider process for every ``plan`` and ``show`` of a ``plan`` run.

Terraform normally starts a provider for each command: a plan starts one, the ``show -json``
that reads the saved plan starts another. The Go provider starts in milliseconds; the sandbox's
Python one pays its interpreter and gRPC imports each time, which is most of what a sandbox
``plan`` adds to a bare ``terraform plan``. Terraform's reattach protocol
(``TF_REATTACH_PROVIDERS``, the provider's "dev" mode) lets every plan and show of the run talk to
one provider started here instead.

Only plan and show use it: ``init`` must install the provider from the mirror (a reattached
provider is not installed or locked), and an ``apply`` always runs the provider Terraform starts
itself, so a killed infra-apply can never take an apply's provider down with it. The shared
provider is this process's child, exits with it (the server's parent watchdog), and is stopped
with SIGINT so it removes its socket folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

ENV_VAR = "TF_REATTACH_PROVIDERS"
_PREFIX = "export TF_REATTACH_PROVIDERS="
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 5.0


class SharedProvider:
    """The provider process, started at once; ``env()`` waits for it to serve (the caller runs
    ``terraform init`` meanwhile) and gives what Terraform needs to use it."""

    def __init__(self, launcher: Path, env: Mapping[str, str]) -> None:
        self._lock = threading.Lock()
        self._env: dict[str, str] | None = None
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [str(launcher), "--dev"],
                env={**env, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:
            self._proc = None

    def env(self) -> dict[str, str]:
        """``{"TF_REATTACH_PROVIDERS": ...}``, or ``{}`` when the provider could not be started
        (Terraform then starts its own as usual)."""
        with self._lock:
            if self._env is None:
                config = _reattach_config(self._proc) if self._proc is not None else None
                self._env = {ENV_VAR: config} if config else {}
            return dict(self._env)

    def stop(self) -> None:
        if self._proc is not None:
            _stop(self._proc)


@contextlib.contextmanager
def shared_provider(launcher: Path, env: Mapping[str, str]) -> Iterator[SharedProvider]:
    provider = SharedProvider(launcher, env)
    try:
        yield provider
    finally:
        provider.stop()


def _reattach_config(proc: subprocess.Popen[bytes]) -> str | None:
    """The JSON the provider prints once it serves; None if it never does (in time)."""
    found: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith(_PREFIX):
                found.append(line[len(_PREFIX) :].strip("'"))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_SECONDS)
    if not found:
        return None
    try:
        json.loads(found[0])
    except ValueError:
        return None
    return found[0]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        # SIGINT unwinds the server's temporary socket folder; SIGKILL only if it hangs.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        from infra_apply.runtime.terraform import exit_watch

        with exit_watch(proc) as exited_within:
            stopped = exited_within(STOP_TIMEOUT_SECONDS)
        if not stopped:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
