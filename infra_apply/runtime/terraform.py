"""Every Terraform call goes through here: a pure argument builder and one runner.

Arguments are built with python-terraform's ``generate_cmd_string``. The process itself is
started here rather than through ``Terraform.cmd``: python-terraform 0.10.1 can only hand
Terraform a copy of ``os.environ`` (no per-call token or sandbox CLI config without mutating
the global environment, which parallel plans make unsafe), and its ``synchronous`` flag leaks
into the command line as ``-synchronous=false``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra_apply.errors import InfraApplyError, TerraformError
from infra_apply.runtime.fs import (
    PRIVATE_FILE,
    STATE_LIMIT,
    TEXT_LIMIT,
    atomic_write,
    private_dirs,
    read_bounded,
)

MIN_VERSION = (1, 5, 0)
Printer = Callable[[str], None]

# Terraform writes its output to files in the working copy, never to a pipe to infra-apply:
# with a pipe, Terraform dies of SIGPIPE as soon as infra-apply is gone (SIGKILL, a closed
# terminal), before it records what it created, and the next run creates it again. The pid
# file names the running Terraform so a later run can wait for one its stopped run left behind.
OUT_FILE = ".infra-apply-terraform.stdout"
ERR_FILE = ".infra-apply-terraform.stderr"
PID_FILE = ".infra-apply-terraform.pid"
FOLLOW_SECONDS = 0.05  # how often a quiet output file is checked for more
# Blocking waits on the main thread wake up this often: CPython runs a signal handler when a
# blocking call is interrupted, and a signal landing just before the call blocks would
# otherwise wait for the call to end (the whole apply) before infra-apply passes it on.
SIGNAL_CHECK_SECONDS = 0.1
EARLIER_TIMEOUT_SECONDS = 900.0  # a real droplet create can take minutes

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


VERSION_CACHE = Path("cache") / "terraform-version.json"  # under the state dir


def state_binary(env: Mapping[str, str], state: Path) -> Binary:
    """The Terraform a run uses, its version remembered under the state dir ``state``."""
    return find_binary(env, version_cache=state / VERSION_CACHE)


def find_binary(env: Mapping[str, str] | None = None, *, version_cache: Path | None = None) -> Binary:
    """``INFRA_APPLY_TERRAFORM``, else ``terraform`` on PATH; at least 1.5.

    ``version_cache``: a file remembering the version of a binary by its path, size and
    modification time, so a run need not start Terraform once more only to ask it.
    """
    env = os.environ if env is None else env
    wanted = env.get("INFRA_APPLY_TERRAFORM") or "terraform"
    path = shutil.which(wanted, path=env.get("PATH"))
    if path is None:
        raise InfraApplyError(
            f"terraform binary {wanted!r} not found; install Terraform >= 1.5 "
            "(https://developer.hashicorp.com/terraform/install) or set INFRA_APPLY_TERRAFORM"
        )
    key = _binary_key(path)
    version = _cached_version(version_cache, key)
    if version is None:
        version = _ask_version(path, env)
        _remember_version(version_cache, key, version)
    if _version_tuple(version) < MIN_VERSION:
        raise InfraApplyError(f"{path} is Terraform {version}; infra-apply needs Terraform >= 1.5")
    return Binary(path, version)


def _ask_version(path: str, env: Mapping[str, str]) -> str:
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
        return str(json.loads(out.stdout)["terraform_version"])
    except (OSError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
        raise InfraApplyError(f"{path} does not answer like Terraform ({exc})") from None


def _binary_key(path: str) -> str:
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return ""
    return f"{real}:{st.st_size}:{st.st_mtime_ns}"


def _cached_version(cache: Path | None, key: str) -> str | None:
    if cache is None or not key:
        return None
    try:
        found = json.loads(read_bounded(cache, TEXT_LIMIT)).get(key)
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return found if isinstance(found, str) else None


def _remember_version(cache: Path | None, key: str, version: str) -> None:
    if cache is None or not key:
        return
    with contextlib.suppress(OSError, InfraApplyError):  # only a cache
        private_dirs(cache.parent, cache.parent.parent)
        atomic_write(cache, json.dumps({key: version}), mode=PRIVATE_FILE)


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
    """Run Terraform in ``cwd``, streaming lines to ``echo`` while it runs.

    Terraform runs in its own session with its output going to files in ``cwd`` (0600) that
    are followed from here, so nothing ties its life to infra-apply's: a Ctrl-C (or SIGTERM /
    SIGHUP, see cli.py) reaches it exactly once from us, it stops cleanly and writes state; a
    second one is forwarded too (Terraform's hard stop). KeyboardInterrupt is re-raised once
    Terraform has exited. If infra-apply is killed outright, Terraform finishes on its own and
    ``wait_for_earlier`` makes the next run wait for it.
    """
    refuse_if_earlier_running(cwd)
    out: list[str] = []
    err: list[str] = []
    exited = threading.Event()

    def follow(proc: subprocess.Popen[bytes]) -> list[threading.Thread]:
        # Each reader opens and closes its own file and stops once Terraform has exited and all
        # is read; started on the launching thread, where no signal lands, so a Ctrl-C cannot
        # stop a reader's start and skip passing itself on to Terraform.
        readers = [
            threading.Thread(target=_follow, args=(cwd / OUT_FILE, proc, out, echo, exited), daemon=True),
            threading.Thread(
                target=_follow, args=(cwd / ERR_FILE, proc, err, echo_stderr, exited), daemon=True
            ),
        ]
        for t in readers:
            t.start()
        return readers

    proc, readers, interrupted = _launch(argv, cwd, env, follow)
    try:
        return _wait(proc, readers, out, err, exited, interrupted)
    finally:
        with _running_lock:
            _running.discard(proc)
        if proc.poll() is not None:  # a Terraform still running keeps its pid file
            _forget(cwd)


def _launch(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    follow: Callable[[subprocess.Popen[bytes]], list[threading.Thread]],
) -> tuple[subprocess.Popen[bytes], list[threading.Thread], KeyboardInterrupt | None]:
    """Start Terraform, record it and start following its output (``follow``), on a helper
    thread.

    Signals become exceptions on the main thread only. One arriving while Terraform is being
    started must not leave a Terraform that nobody waits for and no pid file names: it is
    kept, and handled once Terraform is recorded (``_wait`` passes it on first thing). The
    helper thread starts Terraform only once ``go`` is set, inside the loop that keeps a
    signal: one landing before that (even inside ``Thread.start``) stops the run with nothing
    started.
    """
    launched: list[tuple[subprocess.Popen[bytes], list[threading.Thread]] | BaseException] = []
    done = threading.Event()
    go = threading.Event()

    def launch() -> None:
        go.wait()
        try:
            proc = _start(argv, cwd, env)
            with _running_lock:
                _running.add(proc)
                waiting = _after_start[:]
                _after_start.clear()
            with contextlib.suppress(OSError):  # without a pid file only a SIGKILL case is worse off
                _record(cwd, proc, argv)
            launched.append((proc, follow(proc)))
        except BaseException as exc:  # raised again on the caller's thread
            launched.append(exc)
            waiting = []
        finally:
            done.set()
        for work in waiting:
            threading.Thread(target=work, name="while-terraform-runs", daemon=True).start()

    worker = threading.Thread(target=launch, name="terraform-start", daemon=True)
    interrupted: KeyboardInterrupt | None = None
    worker.start()  # a signal here: the thread waits for ``go``, which is never set
    while True:
        try:
            go.set()
            if done.wait(SIGNAL_CHECK_SECONDS):
                break
        except KeyboardInterrupt as exc:
            if not go.is_set():
                raise  # nothing was started: nothing to stop
            interrupted = interrupted or exc
    while worker.is_alive():  # it is handing Terraform's start to the work waiting for it
        try:
            worker.join(SIGNAL_CHECK_SECONDS)
        except KeyboardInterrupt as exc:
            interrupted = interrupted or exc
    [outcome] = launched
    if isinstance(outcome, OSError):
        _forget(cwd)
        raise TerraformError(f"cannot start {argv[0]}: {outcome.strerror}") from None
    if isinstance(outcome, BaseException):
        raise outcome
    proc, readers = outcome
    return proc, readers, interrupted


_after_start: list[Callable[[], None]] = []


def after_next_start(work: Callable[[], None]) -> None:
    """``work`` on a daemon thread once the next Terraform process has started: what this
    process does after Terraform ends, done while it waits for it, never before it starts (the
    start has the interpreter to itself). Nothing runs when that start fails."""
    with _running_lock:
        _after_start.append(work)


def _start(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    out = _private_file(cwd / OUT_FILE)
    try:
        err = _private_file(cwd / ERR_FILE)
        try:
            return subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                umask=0o077,  # state, plans and .terraform/ private to the user (state holds passwords)
            )
        finally:
            os.close(err)
    finally:
        os.close(out)


def _private_file(path: Path) -> int:
    """A new file only the user can read (Terraform's output may carry sensitive values)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def _wait(
    proc: subprocess.Popen[bytes],
    readers: Sequence[threading.Thread],
    out: list[str],
    err: list[str],
    exited: threading.Event,
    interrupted: KeyboardInterrupt | None = None,
) -> Result:
    late: KeyboardInterrupt | None = None
    try:
        interrupted = _wait_forwarding(proc, interrupted)
    finally:
        exited.set()
        late = _join(readers)
    interrupted = interrupted or late
    if interrupted is not None:
        raise interrupted
    return Result(proc.returncode, "".join(out), "".join(err))


def _wait_forwarding(
    proc: subprocess.Popen[bytes], interrupted: KeyboardInterrupt | None
) -> KeyboardInterrupt | None:
    """Wait for Terraform, passing each signal on as a SIGINT; the first decides the exit code.
    ``interrupted``: one that came while Terraform was starting, passed on first."""
    pending = interrupted is not None
    exited_within: Callable[[float], bool] | None = None
    with contextlib.ExitStack() as stack:
        while True:
            try:
                if exited_within is None:  # inside the try: a signal meanwhile is passed on too
                    exited_within = stack.enter_context(exit_watch(proc))
                if pending:
                    pending = False
                    proc.send_signal(signal.SIGINT)
                if exited_within(SIGNAL_CHECK_SECONDS):
                    return interrupted
            except KeyboardInterrupt as exc:
                interrupted = interrupted or exc
                proc.send_signal(signal.SIGINT)


@contextlib.contextmanager
def exit_watch(proc: subprocess.Popen[Any]) -> Iterator[Callable[[float], bool]]:
    """``exited_within(seconds)``: whether ``proc`` has ended (and been waited for) within
    ``seconds``, returning the moment it ends. ``Popen.wait(timeout)`` polls, sleeping up to
    50 ms between looks, which every Terraform call would add to its run; on Linux a pidfd wakes
    the wait at the exit itself. Elsewhere, or when the pid cannot be opened, ``wait`` polls."""
    try:
        fd: int | None = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        fd = None  # not Linux, or the process is already gone (``wait`` then returns at once)
    poller = None
    if fd is not None:
        import select

        poller = select.poll()
        poller.register(fd, select.POLLIN)

    def exited_within(seconds: float) -> bool:
        if poller is not None and proc.returncode is None:
            poller.poll(seconds * 1000)  # readable once the process has exited
        try:
            proc.wait(0 if poller is not None else seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    try:
        yield exited_within
    finally:
        if fd is not None:
            os.close(fd)


def _join(threads: Sequence[threading.Thread]) -> KeyboardInterrupt | None:
    """Join every thread even when a signal arrives meanwhile (kept, never lost)."""
    interrupted: KeyboardInterrupt | None = None
    for t in threads:
        while t.is_alive():
            try:
                t.join()
            except KeyboardInterrupt as exc:
                interrupted = interrupted or exc
    return interrupted


def any_running() -> bool:
    """Whether a Terraform this process started has not been waited for yet."""
    with _running_lock:
        return bool(_running)


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


def _follow(
    path: Path,
    proc: subprocess.Popen[bytes],
    sink: list[str],
    echo: Printer | None,
    exited: threading.Event,
) -> None:
    """Pass on each line written to ``path`` until its writer has exited and all is read."""
    partial = b""
    with open(path, "rb") as stream:
        while True:
            # Checked before reading: whatever Terraform wrote is then in the file.
            done = exited.is_set() or proc.poll() is not None
            chunk = stream.readline()
            if chunk:
                partial += chunk
                if partial.endswith(b"\n"):
                    echo = _emit(partial, sink, echo)
                    partial = b""
            elif done:
                break
            else:
                exited.wait(FOLLOW_SECONDS)
    if partial:
        _emit(partial, sink, echo)


def _emit(raw: bytes, sink: list[str], echo: Printer | None) -> Printer | None:
    """Keep the line; show it while showing works (a closed terminal must not stop the run)."""
    line = raw.decode("utf-8", "replace")
    sink.append(line)
    if echo is None:
        return None
    try:
        echo(line.rstrip("\n"))
    except OSError:
        return None
    return echo


# --- a Terraform left running by a stopped infra-apply ----------------------------------------


@dataclass(frozen=True)
class Earlier:
    """The Terraform a run recorded in its working copy's pid file."""

    pid: int
    started: str | None  # start time from /proc: a reused pid is not the same process
    command: str

    def alive(self) -> bool:
        return _alive(self.pid, self.started)


def _record(cwd: Path, proc: subprocess.Popen[bytes], argv: Sequence[str]) -> None:
    doc = {"pid": proc.pid, "started": _start_time(proc.pid), "command": " ".join(argv[1:2])}
    atomic_write(cwd / PID_FILE, json.dumps(doc), mode=PRIVATE_FILE)


def _forget(cwd: Path) -> None:
    for name in (PID_FILE, OUT_FILE, ERR_FILE):
        with contextlib.suppress(FileNotFoundError):
            (cwd / name).unlink()


def earlier_run(cwd: Path) -> Earlier | None:
    """The Terraform recorded in ``cwd`` by a run that did not see it exit, if any."""
    try:
        doc = json.loads(read_bounded(cwd / PID_FILE, TEXT_LIMIT))
        return Earlier(int(doc["pid"]), doc.get("started"), str(doc.get("command", "")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None  # unreadable: nothing we could wait for


def refuse_if_earlier_running(cwd: Path) -> None:
    earlier = earlier_run(cwd)
    if earlier is not None and earlier.alive():
        raise TerraformError(_still_running(earlier, cwd))


def wait_for_earlier(cwd: Path, say: Printer, timeout: float = EARLIER_TIMEOUT_SECONDS) -> None:
    """Before using a working copy: let a Terraform left by a stopped run finish writing state.

    An infra-apply killed outright (SIGKILL) leaves its Terraform running on purpose, so that
    it records what it creates. Starting another Terraform there before it ends would fail on
    its state lock or, worse, plan from the state it has not written yet.
    """
    earlier = earlier_run(cwd)
    if earlier is None:
        return
    if earlier.alive():
        say(
            f"an earlier terraform {earlier.command} (pid {earlier.pid}) left by a stopped infra-apply "
            f"run is still running in {cwd}; waiting up to {timeout:g} s for it to finish and write state"
        )
        deadline = time.monotonic() + timeout
        while earlier.alive():
            if time.monotonic() > deadline:
                raise TerraformError(_still_running(earlier, cwd, waited=timeout))
            time.sleep(FOLLOW_SECONDS)  # not our child: there is nothing to wait() on
        say(f"the earlier terraform {earlier.command} (pid {earlier.pid}) has finished")
    _forget(cwd)


def _still_running(earlier: Earlier, cwd: Path, waited: float | None = None) -> str:
    after = f" after {waited:g} s" if waited is not None else ""
    return (
        f"an earlier terraform {earlier.command} (pid {earlier.pid}) is still running in {cwd}{after}; "
        f"let it finish (or stop it cleanly: kill -INT {earlier.pid}), then rerun"
    )


def _start_time(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/PID/stat from the state field on (the command name may hold spaces); None if absent."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text("utf-8", "replace")
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()


def _alive(pid: int, started: str | None) -> bool:
    if Path("/proc/self/stat").exists():
        fields = _proc_stat(pid)
        if fields is None or fields[0] in ("Z", "X"):  # gone, or exited and not yet reaped
            return False
        return started is None or (len(fields) > 19 and fields[19] == started)
    try:  # no /proc (macOS): the pid alone has to do
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        self,
        command: str,
        *positional: str,
        what: str,
        ok: Sequence[int] = (0,),
        echo: Printer | None = None,
        echo_stderr: Printer | None = None,
        **options: Any,
    ) -> Result:
        """``run``, raising ``CommandFailed`` unless Terraform exits with one of ``ok``."""
        result = self.run(command, *positional, echo=echo, echo_stderr=echo_stderr, **options)
        if result.code not in ok:
            raise CommandFailed(what, self.path, error_text(result))
        return result


class CommandFailed(TerraformError):
    """A Terraform command exited with a failure; ``detail`` is Terraform's own error, so a
    caller can say what the failure means for its step without repeating the runner."""

    def __init__(self, what: str, where: Path, detail: str) -> None:
        super().__init__(f"terraform {what} failed in {where}:\n{detail}")
        self.what = what
        self.detail = detail


def init(wd: Workdir, *, reconfigure: bool = False) -> None:
    wd.must("init", what="init", input=False, no_color=True, reconfigure=reconfigure)


# Two runs of one producer never overlap (the producer lock), so a held state lock is a
# Terraform that a SIGKILLed run left finishing (killed before its pid file was written, so
# wait_for_earlier cannot know it), or a run on another machine: wait for it, bounded.
STATE_LOCK_WAIT = "60s"
LOCK_WAIT_ENV = "INFRA_APPLY_LOCK_TIMEOUT"


def state_lock_wait(env: Mapping[str, str]) -> str:
    """``-lock-timeout`` for plan and apply: ``INFRA_APPLY_LOCK_TIMEOUT`` seconds (a CI queue
    behind another runner may want minutes; 0 fails at once), else ``STATE_LOCK_WAIT``."""
    raw = env.get(LOCK_WAIT_ENV, "").strip()
    if not raw:
        return STATE_LOCK_WAIT
    if not raw.isdigit() or int(raw) > 86400:
        raise InfraApplyError(f"{LOCK_WAIT_ENV}={raw!r}: give whole seconds from 0 to 86400")
    return f"{int(raw)}s"


def plan(
    wd: Workdir,
    plan_file: str,
    *,
    variables: Mapping[str, str] | None = None,
    refresh_only: bool = False,
    lock_timeout: str = STATE_LOCK_WAIT,
    echo: Printer | None = None,
    targets: Sequence[str] = (),
) -> bool:
    """Saved plan in ``plan_file``; True when it changes something (detailed exit code 2).
    ``targets``: plan only these resources (and what they depend on), ``-target``."""
    var = [f"{k}={v}" for k, v in sorted((variables or {}).items())] or None
    result = wd.must(
        "plan",
        what="plan",
        ok=(0, 2),
        echo=echo,
        input=False,
        no_color=True,
        out=plan_file,
        detailed_exitcode=True,
        lock_timeout=lock_timeout,
        refresh_only=refresh_only,
        var=var,
        target=sorted(targets) or None,
    )
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
    lock_timeout: str = STATE_LOCK_WAIT,
) -> None:
    """Apply the saved plan ``plan_file``; raises ``CommandFailed`` when Terraform fails."""
    wd.must(
        "apply",
        plan_file,
        what="apply",
        echo=echo,
        echo_stderr=echo_stderr,
        input=False,
        no_color=True,
        lock_timeout=lock_timeout,
    )


class OutputMissing(CommandFailed):
    """The state has no such output: nothing was applied yet."""


def output_json(wd: Workdir, name: str) -> object:
    try:
        result = wd.must("output", name, what=f"output {name}", json=True, no_color=True)
    except CommandFailed as exc:
        if "not found" in exc.detail or "No outputs" in exc.detail:
            raise OutputMissing(exc.what, wd.path, exc.detail) from None
        raise
    try:
        value: object = json.loads(result.stdout)
        return value
    except ValueError as exc:
        raise TerraformError(f"terraform output -json printed something that is not JSON ({exc})") from None


def local_state_has_resources(folder: Path) -> bool:
    """Whether ``folder``'s local ``terraform.tfstate`` holds resources. A state file that cannot
    be read as Terraform state counts as holding some: never switch backends over it."""
    state = folder / "terraform.tfstate"
    try:
        data = read_bounded(state, STATE_LIMIT)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # not a regular file, too large or unreadable: not provably empty
    if not data:
        return False
    try:
        doc = json.loads(data)
        return not isinstance(doc, dict) or doc.get("resources") != []
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep, huge numbers
        return True
