"""Shared test helpers: build manifest trees from dicts, run the real CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.mermaid_check import MermaidChecker
from tests.mermaid_check import install as install_mermaid_check

# Every test file anchors paths here, not on its own location: the folder a test lives in
# mirrors the package it tests and may change.
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
EXAMPLE_TREE = REPO / "examples" / "producer-tree"
EXAMPLE_MESH = REPO / "examples" / "mesh-hosts.json"


def write_tree(root: Path, files: Mapping[str, Any]) -> Path:
    """``{"@quinn/.infra.yaml": {...}}`` -> YAML files under ``root``; str/bytes values verbatim."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content, "utf-8")
        else:
            path.write_text(yaml.safe_dump(content, sort_keys=False, allow_unicode=True), "utf-8")
    return root


def project(name: str, **extra: Any) -> dict[str, Any]:
    """A valid digitalocean project manifest running on ``lime`` unless overridden."""
    doc: dict[str, Any] = {"apiVersion": "infra/v1", "project": name, "provider": "digitalocean"}
    service = {"host": "lime", "port": 8080, "systemd_unit": f"{name}.service"}
    doc["service"] = {**service, **extra.pop("service", {})}
    doc.update(extra)
    return doc


def producer_root(producer: str, *droplets: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "infra/v1",
        "project": f"{producer}-infra",
        "provider": "digitalocean",
        "droplets": list(droplets),
    }


def droplet(name: str, hosts: list[str], *services: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "hosts": hosts,
        "services": list(services) or [{"name": f"{hosts[0]}-svc", "kind": "api"}],
        **extra,
    }


# The smallest configuration a tree needs to be clean: droplets get an SSH key (rule ssh_access)
# and SSH from one address, not the whole internet (rule public_ssh).
CONFIG = '[droplets]\nssh_keys = ["ops"]\n[firewall]\nssh_from = ["203.0.113.4/32"]\n'


def base_tree() -> dict[str, Any]:
    """The smallest valid tree: one ct droplet hosting one project, created with an SSH key."""
    return {
        "infra-apply.toml": CONFIG,
        "@ct/.infra.yaml": producer_root("ct", droplet("com.uvlava.ct.services", ["lime"])),
        "@ct/app/.infra.yaml": project("app"),
    }


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFRA_APPLY_", "DIGITALOCEAN_"))}
    env["INFRA_APPLY_STATE_DIR"] = str(tmp_path / "state")
    env.update(extra)
    return env


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra_apply", *args],
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session", autouse=True)
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Nothing a test runs may write into the real user's state dir (validation cache, sandbox)."""
    os.environ["INFRA_APPLY_STATE_DIR"] = str(tmp_path_factory.mktemp("default-state"))


@pytest.fixture(scope="session", autouse=True)
def _not_in_ci() -> None:
    """Tests run infra-apply as an operator does on a laptop, whether or not the suite itself runs
    in CI (CI=true refuses live plans with local state, and test trees keep local state); a test
    of CI behaviour sets CI in its own environment."""
    os.environ.pop("CI", None)


# The example tree's trusted sources for uvlava-pg (its infra-apply.toml [clusters."uvlava-pg"]).
EXAMPLE_TRUSTED = (("tag", "db-uvlava-pg"), ("ip_addr", "203.0.113.4/32"))


def trust_example_cluster(state: Path) -> Path:
    """The sandbox account under ``state`` with uvlava-pg already trusting what the example tree
    lists (as after its owner's first apply): the first rules, which the guard refuses without
    --allow-trusted-sources, are test_e2e_trusted.py's business, not every apply's."""
    from infra_apply.sandbox import cloud
    from infra_apply.sandbox.install import sandbox_cloud

    path = sandbox_cloud(state, ["uvlava-pg"], ["ct-deploy", "ops-2026"])
    with cloud.transaction(path) as c:
        cloud.put_cluster_rules(c, str(cloud.find_cluster(c, "uvlava-pg")["id"]), EXAMPLE_TRUSTED)
    return path


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A private copy of the example tree, its mesh-hosts.json and generated/ (tmp_path/...),
    and a sandbox account whose cluster trusts what the tree lists (``trust_example_cluster``)."""
    shutil.copytree(EXAMPLE_TREE, tmp_path / "tree")
    shutil.copy(EXAMPLE_MESH, tmp_path / "mesh-hosts.json")
    shutil.copytree(REPO / "generated", tmp_path / "generated")
    trust_example_cluster(tmp_path / "state")
    return tmp_path


@pytest.fixture(scope="session")
def mermaid() -> MermaidChecker:
    """Mermaid itself (tools/mermaid-check), installed once per session. Skipped when node/npm
    are missing or the npm registry is out of reach, unless MERMAID_CHECK=required
    (make mermaid-check), which fails instead."""
    checker = install_mermaid_check()
    if isinstance(checker, str):
        if os.environ.get("MERMAID_CHECK") == "required":
            pytest.fail(f"MERMAID_CHECK=required but {checker}")
        pytest.skip(checker)
    return checker


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault tests' counter: how many trials were checked for two droplets sharing a name
    (a failed check fails its test, so every trial counted here had none)."""
    checked = sum(
        int(value)
        for report in terminalreporter.stats.get("passed", [])
        if report.when == "call"
        for name, value in report.user_properties
        if name == "trials_checked_for_twin_droplets"
    )
    if checked:
        terminalreporter.write_line(f"fault trials checked, no two droplets sharing a name: {checked}")


def moto_server() -> Any:
    """moto's S3 server on a free local port, started. Real S3 decides a conditional PUT
    (``If-None-Match: *``: the lockfile Terraform's S3 backend takes; ``If-Match``: a claim)
    atomically; moto checks, then writes, so two runners' concurrent PUTs could both win and two
    Terraforms hold one lock. Its object PUTs are made one at a time, as S3's are."""
    import threading

    from moto.s3.responses import S3Response
    from moto.server import ThreadedMotoServer

    if not getattr(S3Response.put_object, "atomic", False):
        original = S3Response.put_object
        lock = threading.Lock()

        def put_object(self: Any) -> Any:
            with lock:
                return original(self)

        put_object.atomic = True  # type: ignore[attr-defined]
        S3Response.put_object = put_object  # type: ignore[method-assign]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    return server
