"""The queue probe: real shell commands, a bounded run, one integer or a reason."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from infra_apply.gpu.config import GpuSettings, parse_duration
from infra_apply.gpu.probe import ProbeResult, parse_depth, probe_gpu, run_probe


@pytest.mark.parametrize(
    ("stdout", "result"),
    [
        ("3\n", ProbeResult(depth=3)),
        ("0", ProbeResult(depth=0)),
        ("  12 \n\n", ProbeResult(depth=12)),
        ("", ProbeResult(failure="printed nothing")),
        ("\n  \n", ProbeResult(failure="printed nothing")),
        ("queue: 3\n", ProbeResult(failure="printed no integer: 'queue: 3'")),
        ("-1\n", ProbeResult(failure="printed no integer: '-1'")),
        ("3\n4\n", ProbeResult(failure="printed no integer: '3'")),
        ("2.5", ProbeResult(failure="printed no integer: '2.5'")),
        ("٣", ProbeResult(failure="printed no integer: '٣'")),  # a digit, not an ASCII one
        ("9" * 19, ProbeResult(failure=f"printed no integer: '{'9' * 19}'")),
    ],
)
def test_parse_depth(stdout: str, result: ProbeResult) -> None:
    assert parse_depth(stdout) == result


def test_busy_means_deeper_than_zero() -> None:
    assert (ProbeResult(3).busy, ProbeResult(0).busy, ProbeResult(failure="x").busy) == (True, False, False)


@pytest.mark.parametrize(
    ("command", "result"),
    [
        ("echo 3", ProbeResult(depth=3)),
        ("printf 0", ProbeResult(depth=0)),
        ("echo 5; echo noise >&2", ProbeResult(depth=5)),
        ("echo queue is empty", ProbeResult(failure="printed no integer: 'queue is empty'")),
        (
            "echo 3; echo 'connection refused' >&2; exit 255",
            ProbeResult(failure="exited with status 255: connection refused"),
        ),
        ("exit 1", ProbeResult(failure="exited with status 1")),
        (
            "no-such-command-infra-apply",
            ProbeResult(failure="exited with status 127: /bin/sh: 1: no-such-command-infra-apply: not found"),
        ),
        ("kill -9 $$", ProbeResult(failure="killed by signal 9")),
    ],
)
def test_run_probe(command: str, result: ProbeResult) -> None:
    got = run_probe(command, 30)
    if result.failure and "not found" in result.failure:
        assert got.failure is not None and got.failure.startswith("exited with status 127: ")
        assert "not found" in got.failure
    else:
        assert got == result


def test_no_stdin_and_no_secrets(tmp_path: Path) -> None:
    # stdin is /dev/null: a command reading it sees end of file at once instead of waiting
    assert run_probe("if read line; then echo 1; else echo 0; fi", 30) == ProbeResult(depth=0)
    env = {
        "PATH": os.environ["PATH"],
        "DIGITALOCEAN_TOKEN": "FAKE-do-token_secret",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "QUEUE": "4",
    }
    leak = 'test -z "$DIGITALOCEAN_TOKEN$AWS_SECRET_ACCESS_KEY" && echo "$QUEUE" || echo 99'
    assert run_probe(leak, 30, env=env) == ProbeResult(depth=4)
    assert run_probe("pwd > where; echo 0", 30, cwd=tmp_path) == ProbeResult(depth=0)
    assert (tmp_path / "where").read_text().strip() == str(tmp_path)


def test_a_probe_that_never_ends_is_killed_with_its_group(tmp_path: Path) -> None:
    fifo = tmp_path / "never"
    os.mkfifo(fifo)  # nobody ever writes it: the command blocks until it is killed
    pid_file = tmp_path / "pid"
    command = f"sleep 1000 & echo $! > {pid_file}; cat {fifo}; echo 3"
    assert run_probe(command, 0.5) == ProbeResult(failure="timed out after 0.5s")
    # The shell's background child went too. SIGKILL is delivered asynchronously: on a busy
    # machine the child may still be on its way out for a moment, so watch it go (bounded).
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, f"the probe's child {child} outlived the kill"
        time.sleep(0.01)


def test_a_grandchild_holding_stdout_open_does_not_block(tmp_path: Path) -> None:
    """An ``ssh`` that forks into the background (here: ``setsid``, out of the probe's group,
    still holding its stdout) must not keep the reaper waiting for end-of-file."""
    fifo = tmp_path / "never"
    os.mkfifo(fifo)
    pid_file = tmp_path / "pid"
    # The shell prints its depth only once the grandchild has left its group (pid written).
    command = (
        f"setsid sh -c 'echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec cat {fifo}' & "
        f"while [ ! -s {pid_file} ]; do sleep 0.01; done; echo 2"
    )
    got: list[ProbeResult] = []
    runner = threading.Thread(target=lambda: got.append(run_probe(command, 30)))
    runner.start()
    runner.join(timeout=60)  # a bound for the failure case only: the probe returns at once
    try:
        assert not runner.is_alive(), "run_probe waited for the escaped grandchild"
        assert got == [ProbeResult(depth=2)]
        assert _alive(int(pid_file.read_text()))  # it did escape, and still holds stdout
    finally:
        if pid_file.is_file():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
        runner.join()


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie nobody reaped yet (PID 1 in a container may not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_probe_gpu_runs_the_configured_command_with_its_timeout(tmp_path: Path) -> None:
    fifo = tmp_path / "never"
    os.mkfifo(fifo)
    quick = GpuSettings("g", queue_depth=f"cat {fifo}", probe_timeout=parse_duration("1s"))
    assert probe_gpu(quick) == ProbeResult(failure="timed out after 1s")
    assert probe_gpu(GpuSettings("g", queue_depth="echo 7")) == ProbeResult(depth=7)
    assert probe_gpu(GpuSettings("g")) is None  # no probe configured: nothing runs


def test_a_probe_printing_without_end_is_stopped_at_the_output_limit(tmp_path: Path) -> None:
    """`queue_depth = "yes 1"` wrote 3 GB in 3 s to a temporary file: now the probe is killed
    once it passes the limit, long before its timeout."""
    stopped = ProbeResult(
        failure="printed more than 64 KiB on stdout; stopped it (a queue depth is one integer)"
    )
    assert run_probe("yes 1", 600) == stopped
    # Killed at the limit, not left to finish: what it would do after 1 MB never happens.
    marker = tmp_path / "finished"
    assert run_probe(f"head -c 1000000 /dev/zero; touch {marker}; echo 3", 600) == stopped
    assert not marker.exists()
    err = run_probe(f"head -c 1000000 /dev/zero >&2; touch {marker}; echo 3", 600)
    assert err.failure is not None and err.failure.startswith("printed more than 64 KiB on stderr")
    assert not marker.exists()


def test_the_probe_s_stderr_is_shown_printable() -> None:
    """An OSC escape (a terminal title) or a newline in the probe's error never reaches the
    terminal raw, and the failure stays one line."""
    got = run_probe(r"printf 'refused\033]0;pwned\007 \342\200\256here\n' >&2; exit 3", 30)
    assert got == ProbeResult(failure="exited with status 3: refused\\x1b]0;pwned\\x07 \\u202ehere")
