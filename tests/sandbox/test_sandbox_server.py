"""The sandbox provider's server (infra_apply/sandbox/server.py): what Terraform sees of it, and
how it is started (only through the launcher under the state dir, never from PATH)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import selectors
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from infra_apply.sandbox.install import SandboxSetup, install
from tests.conftest import REPO, TESTS

FACTS = json.loads((TESTS / "fixtures" / "do_provider_facts.json").read_text())
PROVIDER_SOURCE = "registry.terraform.io/digitalocean/digitalocean"
SERVED = {
    "resource_schemas": [
        "digitalocean_database_db",
        "digitalocean_database_firewall",
        "digitalocean_database_user",
        "digitalocean_droplet",
        "digitalocean_firewall",
        "digitalocean_monitor_alert",
        "digitalocean_uptime_alert",
        "digitalocean_uptime_check",
    ],
    "data_source_schemas": ["digitalocean_database_cluster", "digitalocean_ssh_key"],
}

requires_terraform = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")

PROVIDERS_TF = """
terraform {
  required_providers {
    digitalocean = {
      source  = "digitalocean/digitalocean"
      version = "2.99.1"
    }
  }
}
"""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> SandboxSetup:
    return install(tmp_path_factory.mktemp("state"))


def _attributes(block: dict[str, Any]) -> dict[str, Any]:
    """Per attribute what Terraform knows: type, required/optional/computed, sensitive."""
    flags = ("required", "optional", "computed", "sensitive")
    return {
        name: {"type": spec["type"], **{flag: bool(spec.get(flag)) for flag in flags}}
        for name, spec in block["attributes"].items()
    }


@requires_terraform
def test_terraform_sees_the_real_providers_schema(sandbox: SandboxSetup, tmp_path: Path) -> None:
    (tmp_path / "providers.tf").write_text(PROVIDERS_TF)
    env = {**os.environ, **sandbox.env}

    def terraform(*args: str) -> str:
        done = subprocess.run(
            ["terraform", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    terraform("init", "-input=false", "-no-color")
    served = json.loads(terraform("providers", "schema", "-json"))["provider_schemas"][PROVIDER_SOURCE]
    for table, types in SERVED.items():
        assert sorted(served[table]) == types
        # The watching kinds' facts are not in the fixture copy: tests/sandbox/test_sandbox_schema.py
        # holds their tables to the shared provider facts.
        for type_name in (t for t in types if t in FACTS[table]):
            block, facts = served[table][type_name]["block"], FACTS[table][type_name]
            assert _attributes(block) == _attributes(facts), type_name
            for name, nested in block.get("block_types", {}).items():
                assert nested["nesting_mode"] == facts["block_types"][name]["nesting_mode"]
                assert _attributes(nested["block"]) == _attributes(facts["block_types"][name]["block"])


def test_no_stand_in_provider_is_put_on_path() -> None:
    """A ``terraform-provider-digitalocean`` on PATH would pass for the real provider."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"infra-apply": "infra_apply.cli:main"}
    installed = importlib.metadata.distribution("infra-apply").entry_points.select(group="console_scripts")
    assert installed.names == {"infra-apply"}, "stale install: run pip install -e '.[test]'"


def test_the_launcher_serves_without_path(sandbox: SandboxSetup) -> None:
    """Started with an empty PATH, the launcher still finds its interpreter and the server, and
    prints go-plugin's handshake line (protocol 6 over a unix socket, gRPC)."""
    launcher = sandbox.launcher.read_text()
    assert launcher.startswith(f"#!{sys.executable}\n")
    assert "from infra_apply.sandbox.server import main\n" in launcher
    env = {"PATH": "/nonexistent", "HOME": os.environ.get("HOME", "/")}
    with subprocess.Popen(
        [str(sandbox.launcher)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as server:
        try:
            assert server.stdout is not None
            with selectors.DefaultSelector() as waiting:
                waiting.register(server.stdout, selectors.EVENT_READ)
                # The handshake is the server's first output; the timeout only bounds a hang.
                ready = waiting.select(timeout=60)
            handshake = server.stdout.readline() if ready else ""
        finally:
            server.terminate()
            server.wait(timeout=30)
        assert server.stderr is not None
        errors = server.stderr.read()
    assert handshake.startswith("1|6|unix|") and "|grpc|" in handshake, errors
