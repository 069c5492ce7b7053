"""The shipped systemd units for ``gpu reap``: what they must say, and systemd's own verdict."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

UNITS = REPO / "examples" / "systemd"
SERVICE = UNITS / "infra-apply-gpu-reap.service"
TIMER = UNITS / "infra-apply-gpu-reap.timer"
ENV_EXAMPLE = UNITS / "gpu-reap.env.example"


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def test_the_service_is_a_bounded_oneshot_running_gpu_reap() -> None:
    service = unit(SERVICE)["Service"]
    assert service["Type"] == "oneshot"
    assert service["ExecStart"].split()[1:] == ["gpu", "reap"]
    assert service["ExecStart"].split()[0].endswith("/infra-apply")
    assert service["TimeoutStartSec"] == "20min"  # below the reaper's 30-minute claim TTL
    assert service["KillMode"] == "mixed"  # SIGTERM to infra-apply, which stops Terraform cleanly
    assert service["UMask"] == "0077"
    assert service["EnvironmentFile"] == "/etc/infra-apply/gpu-reap.env"


def test_hardened_yet_able_to_write_the_state_dir_and_mesh_hosts() -> None:
    service = unit(SERVICE)["Service"]
    assert (service["ProtectSystem"], service["ProtectHome"], service["NoNewPrivileges"]) == (
        "strict",
        "read-only",
        "yes",
    )
    writable = service["ReadWritePaths"].split()
    env = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["INFRA_APPLY_STATE_DIR"] in writable
    assert str(Path(env["INFRA_APPLY_MESH_HOSTS"]).parent) in writable  # atomic writes need the folder
    assert {"INFRA_APPLY_ROOT", "INFRA_APPLY_MESH_HOSTS", "INFRA_APPLY_STATE_DIR"} <= set(env)
    assert "DIGITALOCEAN_TOKEN" in ENV_EXAMPLE.read_text()  # documented, never filled in
    assert set(service["RestrictAddressFamilies"].split()) >= {"AF_INET", "AF_INET6", "AF_UNIX"}


def test_the_timer_runs_the_service_every_few_minutes() -> None:
    timer = unit(TIMER)
    assert timer["Timer"]["Unit"] == SERVICE.name
    assert timer["Timer"]["OnUnitInactiveSec"] == "5min"
    assert timer["Timer"]["OnBootSec"] == "2min"
    assert timer["Install"]["WantedBy"] == "timers.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_is_silent(tmp_path: Path) -> None:
    """systemd's own parser: an unknown or misspelt key is only a warning to it, so any output
    at all fails the test. The binary path is swapped for one that exists on this machine."""
    for path in (SERVICE, TIMER):
        text = path.read_text().replace("/usr/local/bin/infra-apply", "/bin/true")
        (tmp_path / path.name).write_text(text)
    assert _verify(tmp_path, SERVICE.name, TIMER.name) == ""
    # the check can fail: a misspelt key is reported
    broken = (tmp_path / SERVICE.name).read_text().replace("ProtectHome=", "ProtectHomme=")
    (tmp_path / SERVICE.name).write_text(broken)
    assert "Unknown key 'ProtectHomme'" in _verify(tmp_path, SERVICE.name)


def _verify(folder: Path, *names: str) -> str:
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return (result.stdout + result.stderr).strip()
