"""The Terraform boundary: argument building, finding the binary, the token, Ctrl-C and the other
signals, and Terraform outliving a killed infra-apply.

Fake ``terraform`` executables here are small Python scripts (absolute shebang to this
interpreter) that log what they were asked to do to a file outside every state dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from infra_apply.errors import InfraApplyError, Stopped
from infra_apply.runtime import terraform as tf
from infra_apply.sandbox.install import install
from tests.conftest import REPO, cli_env, run_cli

BIN = tf.Binary("/opt/tf/terraform", "1.11.4")
SECRET = "FAKE-do-token_0123456789abcdef-vault-secret-for-quinn"
WARNING = re.compile(r"^\S+:\d+:\d+: warning ")
REAL_TERRAFORM = shutil.which("terraform")
needs_terraform = pytest.mark.skipif(REAL_TERRAFORM is None, reason="terraform is not on PATH")


# --- build_args --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "positional", "options", "expected"),
    [
        (
            "init",
            (),
            {"input": False, "no_color": True, "reconfigure": False},
            ["init", "-input=false", "-no-color"],
        ),
        (
            "init",
            (),
            {"input": False, "no_color": True, "reconfigure": True},
            ["init", "-input=false", "-no-color", "-reconfigure"],
        ),
        (
            "plan",
            (),
            {
                "input": False,
                "no_color": True,
                "out": "infra-apply.tfplan",
                "detailed_exitcode": True,
                "lock_timeout": "0s",
                "refresh_only": False,
                "var": None,
            },
            [
                "plan",
                "-input=false",
                "-no-color",
                "-out=infra-apply.tfplan",
                "-detailed-exitcode",
                "-lock-timeout=0s",
            ],
        ),
        (
            "plan",
            (),
            {
                "input": False,
                "no_color": True,
                "out": "p.tfplan",
                "detailed_exitcode": True,
                "lock_timeout": "0s",
                "refresh_only": True,
                "var": ["gpu_a=true", "gpu_b=true"],
            },
            [
                "plan",
                "-input=false",
                "-no-color",
                "-out=p.tfplan",
                "-detailed-exitcode",
                "-lock-timeout=0s",
                "-refresh-only",
                "-var=gpu_a=true",
                "-var=gpu_b=true",
            ],
        ),
        ("show", ("p.tfplan",), {"json": True, "no_color": True}, ["show", "-json", "-no-color", "p.tfplan"]),
        ("show", (), {"json": True, "no_color": True}, ["show", "-json", "-no-color"]),
        (
            "apply",
            ("p.tfplan",),
            {"input": False, "no_color": True, "lock_timeout": "0s"},
            ["apply", "-input=false", "-no-color", "-lock-timeout=0s", "p.tfplan"],
        ),
        (
            "output",
            ("droplets",),
            {"json": True, "no_color": True},
            ["output", "-json", "-no-color", "droplets"],
        ),
    ],
)
def test_build_args(
    command: str,
    positional: tuple[str, ...],
    options: dict[str, Any],
    expected: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError("build_args must not start a process")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    monkeypatch.setattr(subprocess, "run", no_process)
    first = tf.build_args(BIN, command, *positional, **options)
    assert first == [BIN.path, *expected]
    assert tf.build_args(BIN, command, *positional, **options) == first


def test_build_args_keeps_awkward_values_in_one_argument() -> None:
    argv = tf.build_args(BIN, "plan", out="plans/my plan;rm -rf ~", var=['name=a "b" $c'])
    assert argv == [BIN.path, "plan", "-out=plans/my plan;rm -rf ~", '-var=name=a "b" $c']


# --- find_binary -------------------------------------------------------------------------------


def fake_terraform(
    directory: Path, log: Path, *, version: str = "1.11.4", stops: int = 1, name: str = "terraform"
) -> Path:
    """A fake terraform: answers ``version -json``, succeeds at ``init``, and in ``plan`` sleeps
    until it has received ``stops`` SIGINTs (the first prints "stopping cleanly", the second
    "hard stop"), then lingers half a second so a duplicate SIGINT would be logged, and exits 1."""
    script = f"""#!{sys.executable}
import json, os, signal, sys, time

def note(line):
    with open({str(log)!r}, "a") as fh:
        fh.write(line + "\\n")

args = sys.argv[1:]
note("argv " + " ".join(args))
if args[:1] == ["version"]:
    print(json.dumps({{"terraform_version": {version!r}, "platform": "linux_amd64"}}))
    sys.exit(0)
if args[:1] == ["init"]:
    sys.exit(0)
if args[:1] == ["plan"]:
    received = []

    def on_sigint(signum, frame):
        received.append(signum)
        note("SIGINT")
        print("stopping cleanly" if len(received) == 1 else "hard stop", flush=True)

    signal.signal(signal.SIGINT, on_sigint)
    note("pid " + str(os.getpid()))
    note("planning")
    print("planning", flush=True)
    deadline = time.monotonic() + 60
    while len(received) < {stops} and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)
    sys.exit(1)
sys.exit(3)
"""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(script, "utf-8")
    path.chmod(0o755)
    return path


def test_every_runner_raises_when_terraform_fails(tmp_path: Path) -> None:
    """apply too: a failed apply must never be mistaken for a done one by a caller that
    forgot to look at a return code."""
    fake = fake_terraform(tmp_path / "bin", tmp_path / "log")  # exits 3 for apply, show, output
    wd = tf.Workdir(tf.Binary(str(fake), "1.11.4"), tmp_path / "wd", {"PATH": os.environ["PATH"]})
    wd.path.mkdir()
    for what, call in (
        ("apply", lambda: tf.apply(wd, "plan.bin")),
        ("show", lambda: tf.show_json(wd, "plan.bin")),
        ("output droplets", lambda: tf.output_json(wd, "droplets")),
    ):
        with pytest.raises(tf.CommandFailed) as failed:
            call()
        assert failed.value.what == what
        assert failed.value.message.startswith(f"terraform {what} failed in {wd.path}:")


def test_missing_binary_names_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(InfraApplyError) as exc:
        tf.find_binary({"INFRA_APPLY_TERRAFORM": str(tmp_path / "nope"), "PATH": os.environ["PATH"]})
    assert "install Terraform >= 1.5" in exc.value.message and "INFRA_APPLY_TERRAFORM" in exc.value.message
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    with pytest.raises(InfraApplyError, match=r"'terraform' not found; install Terraform >= 1\.5"):
        tf.find_binary({"PATH": str(empty)})


def test_old_terraform_is_refused(tmp_path: Path) -> None:
    fake = fake_terraform(tmp_path / "bin", tmp_path / "log", version="1.4.7")
    with pytest.raises(InfraApplyError, match=r"Terraform 1\.4\.7; infra-apply needs Terraform >= 1\.5"):
        tf.find_binary({"INFRA_APPLY_TERRAFORM": str(fake), "PATH": os.environ["PATH"]})


def test_something_that_is_not_terraform_is_refused(tmp_path: Path) -> None:
    impostor = tmp_path / "terraform"
    impostor.write_text("#!/bin/sh\necho 'Terraform v1.11.4'\n")
    impostor.chmod(0o755)
    with pytest.raises(InfraApplyError, match="does not answer like Terraform"):
        tf.find_binary({"INFRA_APPLY_TERRAFORM": str(impostor), "PATH": os.environ["PATH"]})


def test_a_binary_named_by_the_variable_is_looked_up_on_path(tmp_path: Path) -> None:
    fake = fake_terraform(tmp_path / "bin", tmp_path / "log", version="1.9.2", name="terraform-1.9")
    found = tf.find_binary({"INFRA_APPLY_TERRAFORM": "terraform-1.9", "PATH": str(fake.parent)})
    assert found == tf.Binary(str(fake), "1.9.2")


def test_the_version_is_asked_once_per_binary_and_again_when_it_changes(tmp_path: Path) -> None:
    log = tmp_path / "log"
    fake = fake_terraform(tmp_path / "bin", log, version="1.9.2")
    env = {"INFRA_APPLY_TERRAFORM": str(fake), "PATH": os.environ["PATH"]}
    cache = tmp_path / "state" / "cache" / "terraform-version.json"
    asked = lambda: log.read_text().count("argv version")  # noqa: E731
    assert tf.find_binary(env, version_cache=cache).version == "1.9.2"
    assert tf.find_binary(env, version_cache=cache).version == "1.9.2"
    assert asked() == 1  # the second run did not start Terraform to ask
    upgraded = fake_terraform(tmp_path / "bin", log, version="1.10.0")  # same path, new file
    os.utime(upgraded, ns=(0, fake.stat().st_mtime_ns + 10**9))
    assert tf.find_binary(env, version_cache=cache).version == "1.10.0"
    assert asked() == 2
    cache.write_text("not json")  # a damaged cache is only a cache
    assert tf.find_binary(env, version_cache=cache).version == "1.10.0"


@needs_terraform
def test_the_real_terraform_is_found() -> None:
    env = {k: v for k, v in os.environ.items() if k != "INFRA_APPLY_TERRAFORM"}
    found = tf.find_binary(env)
    assert found.path == REAL_TERRAFORM
    assert tuple(int(x) for x in found.version.split(".")[:2]) >= (1, 5)


def only_error_line(stderr: str) -> str:
    """stderr must be validation warnings and progress plus exactly one ``infra-apply:`` line."""
    lines = [line for line in stderr.splitlines() if not WARNING.match(line)]
    errors = [line for line in lines if line.startswith("infra-apply:")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr
    return errors[0]


def test_cli_without_terraform_is_one_clear_line(example: Path) -> None:
    env = cli_env(example, INFRA_APPLY_TERRAFORM="/nonexistent/terraform")
    r = run_cli(
        "--root", str(example / "tree"), "plan", "--sandbox", "--out", str(example / "generated"), env=env
    )
    assert r.returncode == 1
    line = only_error_line(r.stderr)
    assert line == (
        "infra-apply: error: terraform binary '/nonexistent/terraform' not found; install Terraform >= 1.5 "
        "(https://developer.hashicorp.com/terraform/install) or set INFRA_APPLY_TERRAFORM"
    )
    assert r.stdout == ""


# --- the token ---------------------------------------------------------------------------------


def logging_terraform(directory: Path, log: Path, real: str) -> Path:
    """Runs the real terraform after logging its command, whether it got a DigitalOcean token
    (as a hash; the token itself is never written) and its CLI config."""
    script = f"""#!{sys.executable}
import hashlib, json, os, sys

token = os.environ.get("DIGITALOCEAN_TOKEN")
with open({str(log)!r}, "a") as fh:
    fh.write(json.dumps({{
        "command": sys.argv[1] if len(sys.argv) > 1 else "",
        "token_sha256": hashlib.sha256(token.encode()).hexdigest() if token is not None else None,
        "access_token": "DIGITALOCEAN_ACCESS_TOKEN" in os.environ,
        "plugin_cache": os.environ.get("TF_PLUGIN_CACHE_DIR"),
        "cli_config": os.environ.get("TF_CLI_CONFIG_FILE"),
    }}) + "\\n")
os.execv({real!r}, [{real!r}, *sys.argv[1:]])
"""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "terraform"
    path.write_text(script, "utf-8")
    path.chmod(0o755)
    return path


def calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def files_holding(base: Path, needle: str) -> list[str]:
    """Files under ``base`` containing ``needle``, looking inside zip files (saved plans) too."""
    found = []
    for path in base.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        blobs = [path.read_bytes()]
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                blobs += [archive.read(name) for name in archive.namelist()]
        if any(needle.encode() in blob for blob in blobs):
            found.append(str(path.relative_to(base)))
    return found


@needs_terraform
def test_no_token_stops_before_terraform_runs(example: Path) -> None:
    home = example / "home"
    home.mkdir()
    log = example / "tf.log"
    wrapper = logging_terraform(example / "bin", log, str(REAL_TERRAFORM))
    env = cli_env(example, HOME=str(home), INFRA_APPLY_TERRAFORM=str(wrapper))
    r = run_cli(
        "--root",
        str(example / "tree"),
        "plan",
        "--producer",
        "quinn",
        "--out",
        str(example / "generated"),
        env=env,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    line = only_error_line(r.stderr)
    assert "DIGITALOCEAN_TOKEN" in line and str(home / ".vault" / "do_pat_quinn") in line
    assert "--sandbox" in line
    # stopped by pre-flight (a token is its first need), before terraform is even looked up
    assert [c["command"] for c in calls(log)] == []
    assert not list((example / "state").rglob(".terraform"))


@needs_terraform
def test_vault_token_reaches_terraform_and_nothing_else(example: Path, httpserver: HTTPServer) -> None:
    """Outside the sandbox the token comes from ~/.vault/do_pat_quinn, reaches pre-flight's API
    calls and Terraform's environment only, and the operator's own TF_CLI_CONFIG_FILE is left
    alone (here it names the sandbox's mirror, standing in for an operator's provider mirror)."""
    home = example / "home"
    (home / ".vault").mkdir(parents=True)
    (home / ".vault" / "do_pat_quinn").write_text(f"{SECRET}\n")
    state = example / "state"
    from infra_apply.manifests.config import load
    from tests.do_standin import Account

    account = load(example / "tree", {}).sandbox
    setup = install(state, account.clusters, account.ssh_keys)
    httpserver.no_handler_status_code = 418
    Account(token=SECRET).serve(httpserver)  # the account pre-flight asks (bearer-checked)
    log = example / "tf.log"
    wrapper = logging_terraform(example / "bin", log, str(REAL_TERRAFORM))
    env = cli_env(
        example,
        HOME=str(home),
        TF_CLI_CONFIG_FILE=str(setup.cli_config),
        INFRA_APPLY_SANDBOX_CLOUD=str(setup.cloud),
        INFRA_APPLY_TERRAFORM=str(wrapper),
        DIGITALOCEAN_API_URL=httpserver.url_for(""),
    )
    r = run_cli(
        "--root",
        str(example / "tree"),
        "plan",
        "--producer",
        "quinn",
        "--out",
        str(example / "generated"),
        env=env,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "com.uvlava.quinn.artifacts" in r.stdout
    assert SECRET not in r.stdout + r.stderr
    work = next(state.glob("work/live/*/quinn"))
    assert (work / ".terraform").is_dir() and (work / "infra-apply.tfplan").is_file()
    for base in (state, example / "tree", example / "generated"):
        assert files_holding(base, SECRET) == [], base
    runs = [c for c in calls(log) if c["command"] != "version"]
    assert [c["command"] for c in runs] == ["init", "plan", "show"]
    assert {c["token_sha256"] for c in runs} == {hashlib.sha256(SECRET.encode()).hexdigest()}
    assert {c["cli_config"] for c in runs} == {str(setup.cli_config)}


@needs_terraform
def test_sandbox_never_hands_a_real_token_to_terraform(example: Path) -> None:
    log = example / "tf.log"
    wrapper = logging_terraform(example / "bin", log, str(REAL_TERRAFORM))
    env = cli_env(
        example,
        DIGITALOCEAN_TOKEN=SECRET,
        DIGITALOCEAN_ACCESS_TOKEN=SECRET,
        TF_PLUGIN_CACHE_DIR=str(example / "plugin-cache"),
        INFRA_APPLY_TERRAFORM=str(wrapper),
    )
    r = run_cli(
        "--root",
        str(example / "tree"),
        "plan",
        "--producer",
        "quinn",
        "--sandbox",
        "--out",
        str(example / "generated"),
        env=env,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    runs = calls(log)
    assert [c["command"] for c in runs] == ["version", "init", "plan", "show"]
    for c in runs:  # not even `terraform version` sees the token
        assert (c["token_sha256"], c["access_token"]) == (None, False)
    for c in runs[1:]:
        assert c["plugin_cache"] in (None, "")  # the stand-in never lands in an operator's cache
        assert c["cli_config"] == str(example / "state" / "sandbox" / "terraformrc")
    assert files_holding(example / "state", SECRET) == []
    assert not (example / "plugin-cache").exists()


# --- Ctrl-C ------------------------------------------------------------------------------------

HARNESS = """
import signal, sys
from pathlib import Path
from infra_apply.runtime import terraform as tf

signal.signal(signal.SIGINT, signal.default_int_handler)
try:
    tf.run([sys.argv[1], "plan"], Path(sys.argv[2]), {"PATH": "/usr/bin:/bin"},
           echo=lambda line: print("terraform:", line, flush=True))
except KeyboardInterrupt:
    print("harness: interrupted", flush=True)
    sys.exit(130)
print("harness: terraform ended by itself", flush=True)
"""


def wait_until(
    predicate: Callable[[], bool], proc: subprocess.Popen[str] | None = None, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (exit {proc.returncode}) too early:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        time.sleep(0.02)


def log_lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def start_in_own_group(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[str]:
    """Like a command typed at a terminal: its own process group (Ctrl-C goes to the whole
    group) and SIGINT, SIGTERM and SIGHUP at their defaults, whatever this test runner inherited
    (a runner under nohup ignores SIGHUP, and infra-apply keeps an ignored signal ignored)."""
    return subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        process_group=0,
        preexec_fn=default_signals,
    )


def default_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_reaches_terraform_once_per_press(tmp_path: Path, presses: int) -> None:
    log = tmp_path / "tf.log"
    fake = fake_terraform(tmp_path / "bin", log, stops=presses)
    harness = start_in_own_group([sys.executable, "-c", HARNESS, str(fake), str(tmp_path)], cwd=REPO)

    def sigints_reach(count: int) -> Callable[[], bool]:
        return lambda: log_lines(log).count("SIGINT") >= count

    wait_until(lambda: "planning" in log_lines(log), harness)
    for press in range(1, presses + 1):
        os.killpg(harness.pid, signal.SIGINT)  # the terminal signals the whole foreground group
        wait_until(sigints_reach(press), harness)
    out, err = harness.communicate(timeout=30)
    assert harness.returncode == 130, out + err
    assert log_lines(log).count("SIGINT") == presses  # forwarded once per press, never doubled
    assert "terraform: stopping cleanly" in out and "harness: interrupted" in out
    assert ("terraform: hard stop" in out) == (presses == 2)


def test_interrupt_running_reaches_terraform_on_a_worker_thread(tmp_path: Path) -> None:
    log = tmp_path / "tf.log"
    fake = fake_terraform(tmp_path / "bin", log)
    results: list[tf.Result] = []
    worker = threading.Thread(
        target=lambda: results.append(tf.run([str(fake), "plan"], tmp_path, {"PATH": "/usr/bin:/bin"}))
    )
    worker.start()
    wait_until(lambda: "planning" in log_lines(log))
    assert tf.interrupt_running() == 1
    worker.join(timeout=30)
    assert not worker.is_alive()
    [result] = results
    assert (result.code, "stopping cleanly" in result.stdout) == (1, True)
    assert log_lines(log).count("SIGINT") == 1
    assert tf.interrupt_running() == 0


def _waiting_in_join(thread: threading.Thread) -> bool:
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_name == "join":
            return True
        frame = frame.f_back
    return False


def _interrupted_plan_stops_terraform(
    fake: Path, log: Path, tmp_path: Path, ctrl_c: Callable[[int, object], None]
) -> None:
    """Run a plan with ``ctrl_c`` as the SIGINT handler: it is interrupted, and Terraform was
    told to stop once and waited for (one the old code left running is killed here)."""
    previous = signal.signal(signal.SIGINT, ctrl_c)
    try:
        with pytest.raises(KeyboardInterrupt):
            tf.run([str(fake), "plan"], tmp_path, {"PATH": "/usr/bin:/bin"})
    finally:
        signal.signal(signal.SIGINT, previous)
        for line in log_lines(log):
            if line.startswith("pid "):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(line.split()[1]), signal.SIGKILL)
    assert log_lines(log).count("SIGINT") == 1  # told to stop cleanly, and waited for
    assert tf.interrupt_running() == 0


def test_a_signal_while_terraform_s_start_is_handed_on_still_stops_terraform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Work waiting for Terraform's start (plan's after_next_start) is started by the launching
    thread while the main thread joins it: a Ctrl-C landing then must reach Terraform, and
    infra-apply must wait for it, as one landing a moment earlier does (it escaped the join,
    leaving Terraform running in its own session, told nothing)."""
    log = tmp_path / "tf.log"
    fake = fake_terraform(tmp_path / "bin", log)
    main = threading.main_thread()
    assert threading.current_thread() is main
    start = threading.Thread.start
    handled = threading.Event()

    def ctrl_c(signum: int, frame: object) -> None:
        handled.set()
        raise KeyboardInterrupt

    def start_once_signalled(thread: threading.Thread) -> None:
        if thread.name == "while-terraform-runs":
            wait_until(lambda: _waiting_in_join(main) and "planning" in log_lines(log))
            signal.pthread_kill(main.ident or 0, signal.SIGINT)  # raised in the join
            wait_until(handled.is_set)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_once_signalled)
    tf.after_next_start(lambda: None)
    _interrupted_plan_stops_terraform(fake, log, tmp_path, ctrl_c)


def test_a_signal_while_the_output_readers_start_still_stops_terraform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C landing while Terraform's output readers are being started must reach Terraform
    and be waited for (make test once saw it escape: Terraform left running, told nothing, and
    infra-apply gone with exit 130). The signal is sent as a reader starts, wherever that is."""
    log = tmp_path / "tf.log"
    fake = fake_terraform(tmp_path / "bin", log)
    main = threading.main_thread()
    start = threading.Thread.start
    handled = threading.Event()

    def ctrl_c(signum: int, frame: object) -> None:
        handled.set()
        raise KeyboardInterrupt

    def start_signalled(thread: threading.Thread) -> None:
        if getattr(thread, "_target", None) is tf._follow and not handled.is_set():
            wait_until(lambda: "planning" in log_lines(log))
            signal.pthread_kill(main.ident or 0, signal.SIGINT)
            if threading.current_thread() is main:
                time.sleep(1)  # the handler runs here, on the main thread, raising in start
            else:
                wait_until(handled.is_set)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_signalled)
    _interrupted_plan_stops_terraform(fake, log, tmp_path, ctrl_c)


def test_a_signal_before_the_readers_are_joined_leaves_no_reader_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal can land anywhere on the main thread, also after Terraform exited and before the
    readers are joined: the readers must not lose their files to it (make faults once printed
    "ValueError: readline of closed file" from a reader thread after SIGHUP)."""
    log = tmp_path / "tf.log"
    fake = fake_terraform(tmp_path / "bin", log)
    failures: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    readers: list[threading.Thread] = []

    def signal_instead_of_join(threads: list[threading.Thread]) -> None:
        readers.extend(threads)
        raise KeyboardInterrupt

    monkeypatch.setattr(tf, "_join", signal_instead_of_join)
    results: list[BaseException] = []

    def run_and_keep() -> None:
        try:
            tf.run([str(fake), "plan"], tmp_path, {"PATH": "/usr/bin:/bin"})
        except KeyboardInterrupt as exc:
            results.append(exc)

    worker = threading.Thread(target=run_and_keep)
    worker.start()
    wait_until(lambda: "planning" in log_lines(log))
    assert tf.interrupt_running() == 1
    worker.join(timeout=30)
    assert len(results) == 1 and len(readers) == 2
    for t in readers:
        t.join(timeout=30)
        assert not t.is_alive()
    assert failures == []


def interrupt_cli(
    example: Path, *args: str, signum: int = signal.SIGINT, still_running: list[int] | None = None
) -> tuple[int, str, str, list[str]]:
    """Run the CLI with a fake terraform that sleeps in ``plan``; press Ctrl-C once there (the
    terminal signals the whole group), or send ``signum`` to infra-apply alone (as ``kill``,
    systemd or a closing terminal do)."""
    log = example / "tf.log"
    fake = fake_terraform(example / "bin", log)
    env = cli_env(example, INFRA_APPLY_TERRAFORM=str(fake))
    cli = start_in_own_group(
        [
            sys.executable,
            "-m",
            "infra_apply",
            "--root",
            str(example / "tree"),
            *args,
            "--sandbox",
            "--out",
            str(example / "generated"),
        ],
        env=env,
    )
    try:
        wait_until(lambda: "planning" in log_lines(log), cli)
        if signum == signal.SIGINT:
            os.killpg(cli.pid, signal.SIGINT)
        else:
            os.kill(cli.pid, signum)
        out, err = cli.communicate(timeout=8)
        if still_running is not None:  # fake terraforms alive when infra-apply had exited
            still_running.extend(pid for pid in fake_pids(log) if tf._alive(pid, None))
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
        for line in log_lines(log):  # never leave a fake terraform behind
            if line.startswith("pid "):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(line.split()[1]), signal.SIGKILL)
    return cli.returncode, out, err, log_lines(log)


def fake_pids(log: Path) -> list[int]:
    return [int(line.split()[1]) for line in log_lines(log) if line.startswith("pid ")]


def test_ctrl_c_during_apply_stops_terraform_and_exits_130(example: Path) -> None:
    code, out, err, log = interrupt_cli(example, "apply", "--producer", "quinn", "--auto-approve")
    assert code == 130, out + err
    assert "infra-apply: interrupted" in err and "Traceback" not in err
    assert log.count("SIGINT") == 1
    assert not any(line.startswith("argv apply") for line in log)


def test_ctrl_c_during_plan_stops_terraform_and_exits_130(example: Path) -> None:
    code, out, err, log = interrupt_cli(example, "plan", "--producer", "quinn")
    assert code == 130, out + err
    assert "infra-apply: interrupted" in err and "Traceback" not in err
    assert log.count("SIGINT") == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
@pytest.mark.parametrize(
    "command", [("plan",), ("apply", "--auto-approve")], ids=["plan (worker threads)", "apply"]
)
def test_sigterm_and_sighup_stop_terraform_like_ctrl_c(
    example: Path, signum: int, command: tuple[str, ...]
) -> None:
    still_running: list[int] = []
    code, out, err, log = interrupt_cli(
        example, command[0], "--producer", "quinn", *command[1:], signum=signum, still_running=still_running
    )
    assert code == 128 + signum, out + err
    assert f"infra-apply: interrupted by {signal.Signals(signum).name}" in err and "Traceback" not in err
    assert log.count("SIGINT") == 1  # Terraform was told to stop cleanly ...
    assert still_running == []  # ... and infra-apply waited for it to exit
    assert not any(line.startswith("argv apply") for line in log)


# --- Terraform never depends on infra-apply being alive ----------------------------------------

SHOW_OUTPUT = """#!{python}
import os, stat, sys
for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
    st = os.fstat(fd)
    kind = "file" if stat.S_ISREG(st.st_mode) else "pipe"
    print(fd, kind, oct(st.st_mode & 0o777), file=stream, flush=True)
"""


def test_terraform_writes_to_private_files_not_to_a_pipe(tmp_path: Path) -> None:
    # A pipe would kill Terraform (SIGPIPE) once infra-apply is gone, before it records state.
    fake = tmp_path / "bin" / "terraform"
    fake.parent.mkdir()
    fake.write_text(SHOW_OUTPUT.format(python=sys.executable))
    fake.chmod(0o755)
    echoed: list[str] = []
    result = tf.run([str(fake)], tmp_path, {}, echo=echoed.append, echo_stderr=echoed.append)
    assert result.code == 0
    assert result.stdout == "1 file 0o600\n" and result.stderr == "2 file 0o600\n"
    assert sorted(echoed) == ["1 file 0o600", "2 file 0o600"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".infra-apply-terraform")]


def sleeper(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """A stand-in for a Terraform left running: it ends when the test creates ``release``."""
    release = tmp_path / "release"
    code = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.02)\n"
    return subprocess.Popen([sys.executable, "-c", code, str(release)]), release


def test_a_run_waits_for_the_terraform_a_killed_run_left_behind(tmp_path: Path) -> None:
    proc, release = sleeper(tmp_path)
    try:
        tf._record(tmp_path, proc, ["terraform", "apply", "infra-apply.tfplan"])
        said: list[str] = []
        waiter = threading.Thread(target=tf.wait_for_earlier, args=(tmp_path, said.append))
        waiter.start()
        wait_until(lambda: bool(said))
        assert f"an earlier terraform apply (pid {proc.pid})" in said[0] and "waiting up to" in said[0]
        with pytest.raises(tf.TerraformError, match=f"pid {proc.pid}"):
            tf.run([sys.executable, "-c", "pass"], tmp_path, {})  # never two Terraforms in one folder
        release.touch()
        waiter.join(timeout=60)
        assert not waiter.is_alive()
        assert said[-1] == f"the earlier terraform apply (pid {proc.pid}) has finished"
        assert not (tmp_path / tf.PID_FILE).exists()
    finally:
        release.touch()
        proc.wait()


def test_waiting_for_an_earlier_terraform_is_bounded(tmp_path: Path) -> None:
    proc, release = sleeper(tmp_path)
    try:
        tf._record(tmp_path, proc, ["terraform", "apply"])
        with pytest.raises(tf.TerraformError) as exc:
            tf.wait_for_earlier(tmp_path, lambda _: None, timeout=0.2)
        assert f"still running in {tmp_path} after 0.2 s" in exc.value.message
        assert f"kill -INT {proc.pid}" in exc.value.message
        assert (tmp_path / tf.PID_FILE).exists()  # the next run must still know about it
    finally:
        release.touch()
        proc.wait()


def test_a_reused_pid_is_not_mistaken_for_the_earlier_terraform(tmp_path: Path) -> None:
    proc, release = sleeper(tmp_path)
    try:
        tf._record(tmp_path, proc, ["terraform", "apply"])
        doc = json.loads((tmp_path / tf.PID_FILE).read_text())
        assert doc["started"]  # its start time, read from /proc
        doc["started"] = str(int(doc["started"]) - 1)  # the same pid, another process
        (tmp_path / tf.PID_FILE).write_text(json.dumps(doc))
        said: list[str] = []
        tf.wait_for_earlier(tmp_path, said.append, timeout=0.2)
        assert said == []
        assert not (tmp_path / tf.PID_FILE).exists()
    finally:
        release.touch()
        proc.wait()


def test_an_ignored_sighup_stays_ignored() -> None:
    # nohup infra-apply ...: the caller asked for hangups to be ignored; SIGTERM still stops.
    code = (
        "import signal\n"
        "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
        "from infra_apply.cli import stop_on_signals\n"
        "stop_on_signals()\n"
        "hup, term = signal.getsignal(signal.SIGHUP), signal.getsignal(signal.SIGTERM)\n"
        "print(hup is signal.SIG_IGN, callable(term))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_a_signal_while_terraform_starts_reaches_it_once_it_runs(tmp_path: Path, monkeypatch: Any) -> None:
    # The signal lands in the instant Terraform is being started: it must still be told to
    # stop and be waited for, never left running unrecorded.
    log = tmp_path / "tf.log"
    fake = fake_terraform(tmp_path / "bin", log)
    start = tf._start

    def start_then_signal(*args: Any) -> subprocess.Popen[bytes]:
        proc = start(*args)
        wait_until(lambda: "planning" in log_lines(log))  # its own SIGINT handler is ready
        os.kill(os.getpid(), signal.SIGTERM)  # raised on the main thread, mid-start
        return proc

    def stop(signum: int, _: object) -> None:
        raise Stopped(signum)

    monkeypatch.setattr(tf, "_start", start_then_signal)
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(Stopped):
            tf.run([str(fake), "plan"], tmp_path, {"PATH": "/usr/bin:/bin"})
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert log_lines(log).count("SIGINT") == 1
    assert not [pid for pid in fake_pids(log) if tf._alive(pid, None)]


# --- work done while Terraform runs -------------------------------------------------------------


def test_work_after_the_next_start_runs_while_terraform_runs_once_and_only_then(tmp_path: Path) -> None:
    """plan imports what it needs after Terraform while Terraform runs (commands/plan.py): the
    work starts once the process has (its pid file written), while it runs, once; never on a
    failed start (the next start runs it)."""
    script = tmp_path / "terraform"
    # ends once the work has run (or after 60 s without it: the test fails, never hangs)
    script.write_text(
        "#!/bin/sh\nfor _ in $(seq 6000); do [ -e go ] && echo ran && exit 0; sleep 0.01; done\nexit 1\n"
    )
    script.chmod(0o755)
    seen: list[bool] = []

    def work() -> None:
        seen.append((tmp_path / tf.PID_FILE).exists())  # started, and recorded
        (tmp_path / "go").touch()

    tf.after_next_start(work)
    assert tf.run([str(script)], tmp_path, dict(os.environ)).stdout == "ran\n"
    assert seen == [True]
    assert tf.run([str(script)], tmp_path, dict(os.environ)).code == 0  # "go" is left: no wait
    assert seen == [True]  # once
    (tmp_path / "go").unlink()
    tf.after_next_start(work)
    with pytest.raises(InfraApplyError, match="cannot start"):
        tf.run([str(tmp_path / "missing")], tmp_path, dict(os.environ))
    assert seen == [True]
    assert tf.run([str(script)], tmp_path, dict(os.environ)).stdout == "ran\n"
    assert seen == [True, True]


def test_the_state_lock_wait_comes_from_the_environment_in_whole_seconds() -> None:
    assert tf.state_lock_wait({}) == tf.STATE_LOCK_WAIT == "60s"
    assert tf.state_lock_wait({"INFRA_APPLY_LOCK_TIMEOUT": "0"}) == "0s"
    assert tf.state_lock_wait({"INFRA_APPLY_LOCK_TIMEOUT": " 600 "}) == "600s"
    for bad in ("-1", "1.5", "10s", "86401"):
        with pytest.raises(InfraApplyError, match="INFRA_APPLY_LOCK_TIMEOUT"):
            tf.state_lock_wait({"INFRA_APPLY_LOCK_TIMEOUT": bad})


# --- waiting for a process to end -----------------------------------------------------------


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
def test_exit_watch_tells_whether_the_process_has_ended(monkeypatch: pytest.MonkeyPatch, pidfd: bool) -> None:
    """With a pidfd (Linux) the wait wakes at the exit itself; without one (another system, a pid
    that cannot be opened) it polls as ``Popen.wait`` does. Either way the answer is the same and
    the process is waited for (its exit code set, no zombie)."""
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read(); sys.exit(3)"], stdin=subprocess.PIPE
    )
    try:
        with tf.exit_watch(proc) as exited_within:
            assert not exited_within(0.05) and proc.returncode is None
            assert proc.stdin is not None
            proc.stdin.close()  # lets it end
            assert exited_within(60)
            assert proc.returncode == 3
            assert exited_within(0)  # and stays ended
    finally:
        proc.kill()
        proc.wait()


def test_exit_watch_of_a_process_already_waited_for() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with tf.exit_watch(proc) as exited_within:
        assert exited_within(60) and proc.returncode == 0


def test_a_signal_while_the_start_thread_starts_leaves_no_terraform_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C landing inside ``Thread.start`` of the thread that starts Terraform (its first
    milliseconds) stops the run with no Terraform started: before, the thread went on to start
    one that nobody waited for or stopped, and infra-apply exited 130 with it running."""
    log = tmp_path / "tf.log"
    fake = fake_terraform(tmp_path / "bin", log)

    class InterruptedWhileStarting(threading.Thread):
        def start(self) -> None:
            super().start()
            if self.name == "terraform-start":
                raise KeyboardInterrupt  # as if the signal landed at the end of start()

    monkeypatch.setattr(tf.threading, "Thread", InterruptedWhileStarting)
    with pytest.raises(KeyboardInterrupt):
        tf.run([str(fake), "plan"], tmp_path, {"PATH": "/usr/bin:/bin"})
    monkeypatch.undo()
    time.sleep(1.0)  # a Terraform started now would have logged its arguments long before
    assert not log.exists(), log.read_text()
    assert tf.any_running() is False
