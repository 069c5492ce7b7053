"""A sandbox plan shares one provider process between every plan and show (sandbox/reattach.py);
init and apply never use it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from infra_apply.sandbox.reattach import ENV_VAR
from tests.conftest import cli_env, run_cli


def recording_terraform(tmp_path: Path) -> tuple[Path, Path]:
    """A terraform wrapper that logs each call's subcommand and whether it was reattached."""
    log = tmp_path / "calls.jsonl"
    wrapper = tmp_path / "bin" / "terraform"
    wrapper.parent.mkdir()
    real = shutil.which("terraform")
    wrapper.write_text(
        "#!/bin/sh\n"
        f'printf \'{{"cmd": "%s", "reattach": "%s"}}\\n\' "$1" "${{{ENV_VAR}:+yes}}" >> {log}\n'
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return wrapper, log


def calls(log: Path) -> list[tuple[str, bool]]:
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    return [(r["cmd"], r["reattach"] == "yes") for r in rows if r["cmd"] != "version"]


def provider_processes(state: Path) -> set[int]:
    """Shared sandbox providers started for this test's state dir (other runs may have theirs)."""
    found = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"terraform-provider-digitalocean\x00--dev" in cmdline and str(state).encode() in cmdline:
                found.add(int(proc.name))
    return found


def test_plan_and_show_share_one_provider_init_and_apply_never_do(example: Path, tmp_path: Path) -> None:
    wrapper, log = recording_terraform(tmp_path)
    env = cli_env(tmp_path, INFRA_APPLY_TERRAFORM=str(wrapper))
    common = ("--root", str(example / "tree"), "--mesh-hosts", str(example / "mesh-hosts.json"))

    planned = run_cli(*common, "plan", "--sandbox", "--out", str(example / "generated"), env=env)
    assert planned.returncode == 2, planned.stderr
    made = calls(log)
    assert {c for c, r in made if r} == {"plan", "show"}  # every plan and show reattached...
    assert all(r for c, r in made if c in ("plan", "show"))
    assert not any(r for c, r in made if c == "init")  # ...never init
    assert sum(c == "plan" for c, _ in made) == 3  # ct, mc, quinn

    log.unlink()
    applied = run_cli(*common, "apply", "--sandbox", "--producer", "quinn", "--auto-approve", env=env)
    assert applied.returncode == 0, applied.stderr
    assert not any(r for _, r in calls(log))  # an apply's plan and apply use Terraform's own
    assert provider_processes(tmp_path / "state") == set()  # the shared provider is gone with its run
    assert not os.environ.get(ENV_VAR)


def test_the_shared_provider_stops_when_the_run_was_started_with_sigint_ignored(
    example: Path, tmp_path: Path
) -> None:
    """A CI runner's script starts its steps in the background, with SIGINT ignored, and a
    process keeps that: the shared provider still ends on the SIGINT its run sends it, removing
    its socket folder (it used to be killed after 5 s per plan, the folder left in /tmp)."""
    # Short: a unix socket's path has at most 107 bytes, and the providers' sockets go here.
    tmp = Path(tempfile.mkdtemp(prefix="ia-"))
    env = cli_env(tmp_path, TMPDIR=str(tmp))
    common = ("--root", str(example / "tree"), "--mesh-hosts", str(example / "mesh-hosts.json"))
    planned = subprocess.run(
        [sys.executable, "-m", "infra_apply", *common, "plan", "--sandbox", "--producer", "quinn"],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=600,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    left = sorted(p.name for p in tmp.iterdir())
    shutil.rmtree(tmp)
    assert planned.returncode == 2, planned.stderr
    assert provider_processes(tmp_path / "state") == set()
    assert left == []  # its socket folder went with it
