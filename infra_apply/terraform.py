"""Every Terraform call goes through here: a pure argument builder and one runner.

Arguments are built with python-terraform's ``generate_cmd_string``. The process itself is
started here rather than through ``Terraform.cmd``: python-terraform 0.10.1 can only hand
Terraform a copy of ``os.environ`` (no per-call token or sandbox CLI config without mutating
the global environment, which parallel plans make unsafe), and its ``synchronous`` flag leaks
into the command line as ``-synchronous=false``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from infra_apply.errors import InfraApplyError, TerraformError

MIN_VERSION = (1, 5, 0)
Printer = Callable[[str], None]

# Every Terraform process ``run`` is waiting on, whatever the thread: only the main thread
# ever sees a KeyboardInterrupt, so workers (parallel plans) need the main thread to forward it.
_running: set[subprocess.Popen[bytes]] = set()
_running_lock = threading.Lock()


@dataclass(frozen=True)
class Binary:
    path: str
    version: str


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


def find_binary(env: Mapping[str, str] | None = None) -> Binary:
    """``INFRA_APPLY_TERRAFORM``, else ``terraform`` on PATH; at least 1.5."""
    env = os.environ if env is None else env
    wanted = env.get("INFRA_APPLY_TERRAFORM") or "terraform"
    path = shutil.which(wanted, path=env.get("PATH"))
    if path is None:
        raise InfraApplyError(
            f"terraform binary {wanted!r} not found; install Terraform >= 1.5 "
            "(https://developer.hashicorp.com/terraform/install) or set INFRA_APPLY_TERRAFORM"
        )
    try:
        out = subprocess.run(
            [path, "version", "-json"],
            capture_output=True,
            text=True,
            timeout=60,
            # asking its version needs no credentials: keep the DigitalOcean token from it
            env={
                **{k: v for k, v in env.items() if not k.startswith("DIGITALOCEAN_")},
                "CHECKPOINT_DISABLE": "1",
            },
        )
        version = str(json.loads(out.stdout)["terraform_version"])
    except (OSError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
        raise InfraApplyError(f"{path} does not answer like Terraform ({exc})") from None
    if _version_tuple(version) < MIN_VERSION:
        raise InfraApplyError(f"{path} is Terraform {version}; infra-apply needs Terraform >= 1.5")
    return Binary(path, version)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


def build_args(binary: Binary, command: str, *positional: str, **options: Any) -> list[str]:
    """Pure: ``build_args(b, "plan", out="plan.bin", input=False)`` ->
    ``[terraform, "plan", "-out=plan.bin", "-input=false"]``. ``True`` options are flags and
    ``False`` ones are left out, except ``input``, whose value Terraform needs spelled out."""
    from python_terraform import IsFlagged, Terraform

    opts = {k: (IsFlagged if v is True else v) for k, v in options.items() if v is not False or k == "input"}
    argv: list[str] = Terraform(terraform_bin_path=binary.path).generate_cmd_string(command, **opts)
    return [*argv, *positional]


def run(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    *,
    echo: Printer | None = None,
    echo_stderr: Printer | None = None,
) -> Result:
    """Run Terraform, streaming lines to ``echo`` while it runs.

    Terraform runs in its own process group so a Ctrl-C reaches it exactly once from us: it
    then stops cleanly and releases its state lock; a second Ctrl-C is forwarded too
    (Terraform's hard stop). KeyboardInterrupt is re-raised once Terraform has exited.
    """
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            umask=0o077,  # state, plans and .terraform/ private to the user (state holds passwords)
        )
    except OSError as exc:
        raise TerraformError(f"cannot start {argv[0]}: {exc.strerror}") from None
    with _running_lock:
        _running.add(proc)
    try:
        return _wait(proc, echo, echo_stderr)
    finally:
        with _running_lock:
            _running.discard(proc)


def _wait(proc: subprocess.Popen[bytes], echo: Printer | None, echo_stderr: Printer | None) -> Result:
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, out, echo), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, err, echo_stderr), daemon=True),
    ]
    for t in readers:
        t.start()
    interrupted = False
    while True:
        try:
            proc.wait()
            break
        except KeyboardInterrupt:
            interrupted = True
            proc.send_signal(signal.SIGINT)
    for t in readers:
        t.join()
    if interrupted:
        raise KeyboardInterrupt
    return Result(proc.returncode, "".join(out), "".join(err))


def interrupt_running() -> int:
    """Forward a Ctrl-C to every Terraform ``run`` is waiting on, on any thread; how many.

    For a caller whose Terraform runs on worker threads: when KeyboardInterrupt reaches its
    main thread it calls this (again on a second Ctrl-C, Terraform's hard stop), then waits for
    the workers, whose ``run`` returns Terraform's own failed result.
    """
    with _running_lock:
        procs = [p for p in _running if p.poll() is None]
    for p in procs:
        p.send_signal(signal.SIGINT)
    return len(procs)


def _pump(stream: IO[bytes] | None, sink: list[str], echo: Printer | None) -> None:
    assert stream is not None
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace")
        sink.append(line)
        if echo is not None:
            echo(line.rstrip("\n"))
    stream.close()


def error_text(result: Result) -> str:
    """Terraform's own error, trimmed of box drawing, for a one-paragraph message."""
    text = result.stderr.strip() or result.stdout.strip()
    lines = [re.sub(r"^[│╷╵]\s?", "", line).rstrip() for line in text.splitlines()]
    return "\n".join(line for line in lines if line)


# --- the commands infra-apply uses ----------------------------------------------------------


@dataclass(frozen=True)
class Workdir:
    binary: Binary
    path: Path
    env: Mapping[str, str]

    def run(
        self,
        command: str,
        *positional: str,
        echo: Printer | None = None,
        echo_stderr: Printer | None = None,
        **options: Any,
    ) -> Result:
        argv = build_args(self.binary, command, *positional, **options)
        return run(argv, self.path, self.env, echo=echo, echo_stderr=echo_stderr)

    def must(
        self, command: str, *positional: str, what: str, echo: Printer | None = None, **options: Any
    ) -> Result:
        result = self.run(command, *positional, echo=echo, **options)
        if result.code != 0:
            raise TerraformError(f"terraform {what} failed in {self.path}:\n{error_text(result)}")
        return result


def init(wd: Workdir, *, reconfigure: bool = False) -> None:
    wd.must("init", what="init", input=False, no_color=True, reconfigure=reconfigure)


def plan(
    wd: Workdir,
    plan_file: str,
    *,
    variables: Mapping[str, str] | None = None,
    refresh_only: bool = False,
    lock_timeout: str = "0s",
    echo: Printer | None = None,
) -> bool:
    """Saved plan in ``plan_file``; True when it changes something (detailed exit code 2)."""
    var = [f"{k}={v}" for k, v in sorted((variables or {}).items())] or None
    result = wd.run(
        "plan",
        echo=echo,
        input=False,
        no_color=True,
        out=plan_file,
        detailed_exitcode=True,
        lock_timeout=lock_timeout,
        refresh_only=refresh_only,
        var=var,
    )
    if result.code not in (0, 2):
        raise TerraformError(f"terraform plan failed in {wd.path}:\n{error_text(result)}")
    return result.code == 2


def show_json(wd: Workdir, plan_file: str | None = None) -> dict[str, Any]:
    positional = (plan_file,) if plan_file else ()
    result = wd.must("show", *positional, what="show", json=True, no_color=True)
    try:
        doc: dict[str, Any] = json.loads(result.stdout)
    except ValueError as exc:
        raise TerraformError(f"terraform show -json printed something that is not JSON ({exc})") from None
    return doc


def apply(
    wd: Workdir,
    plan_file: str,
    *,
    echo: Printer | None = None,
    echo_stderr: Printer | None = None,
    lock_timeout: str = "0s",
) -> Result:
    return wd.run(
        "apply",
        plan_file,
        echo=echo,
        echo_stderr=echo_stderr,
        input=False,
        no_color=True,
        lock_timeout=lock_timeout,
    )


class OutputMissing(TerraformError):
    """The state has no such output: nothing was applied yet."""


def output_json(wd: Workdir, name: str) -> Any:
    result = wd.run("output", name, json=True, no_color=True)
    if result.code != 0:
        text = error_text(result)
        kind = OutputMissing if "not found" in text or "No outputs" in text else TerraformError
        raise kind(f"terraform output {name} failed in {wd.path}:\n{text}")
    try:
        return json.loads(result.stdout)
    except ValueError as exc:
        raise TerraformError(f"terraform output -json printed something that is not JSON ({exc})") from None
