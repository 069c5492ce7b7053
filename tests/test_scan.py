"""Checkov (pinned in tools/scan/requirements.txt, in .venv-scan: `make scan-tools`) over what
infra-apply renders: generated/ and a render of each test tree, in one run over one folder.
No failed check anywhere; the intended public openings pass by their skip comment only, and a
tree without ``[firewall] ssh_from`` fails CKV_DIO_4 (SSH open to the whole internet)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from infra_apply.manifests.build import build_model
from infra_apply.manifests.validate import require_valid
from infra_apply.render.module import render_model
from infra_apply.render.output import write
from tests.conftest import CONFIG, REPO, base_tree, droplet, producer_root, project, write_tree

CHECKOV = Path(os.environ.get("INFRA_APPLY_CHECKOV", REPO / ".venv-scan" / "bin" / "checkov"))
# JSON, one line per resource; nothing downloaded (the suite has no network but PyPI)
CHECKOV_ARGS = ("--framework", "terraform", "-o", "json", "--compact", "--skip-download")
UNSET = "unset-ssh-from"
MESH_CONFIG = (
    '[droplets]\nssh_keys = ["ops"]\n[firewall]\nssh_from = "mesh"\nbootstrap_from = ["198.51.100.0/28"]\n'
)


def _edge_tree(config: str) -> dict[str, Any]:
    """A droplet with a reverse proxy and DNS: every kind of intended public opening."""
    edge = droplet(
        "com.uvlava.ct.edge",
        ["lime"],
        {"name": "edge", "kind": "reverse-proxy", "port": 443},
        {"name": "dns-authority", "kind": "dns", "port": 53},
    )
    return {
        "infra-apply.toml": config,
        "@ct/.infra.yaml": producer_root("ct", edge),
        "@ct/app/.infra.yaml": project("app"),
    }


TREES: Mapping[str, dict[str, Any]] = {
    "base": base_tree(),
    "edge": _edge_tree(CONFIG),
    "mesh": _edge_tree(MESH_CONFIG),
    UNSET: _edge_tree('[droplets]\nssh_keys = ["ops"]\n'),
}


def _render(tree: Path, out: Path) -> None:
    model = build_model(require_valid(tree, None, None, lambda _: None))
    write(render_model(model, out), out)


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Failed and skipped checks by the folder (generated, or a tree's name) they are in."""
    if not CHECKOV.is_file():
        pytest.skip(f"checkov is not installed at {CHECKOV}: run make scan-tools")
    work = tmp_path_factory.mktemp("scan")
    folder = work / "renders"
    shutil.copytree(REPO / "generated", folder / "generated")
    for name, files in TREES.items():
        _render(write_tree(work / "trees" / name, files), folder / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BC_", "CKV_", "PRISMA_"))}
    done = subprocess.run(
        [str(CHECKOV), "-d", str(folder), *CHECKOV_ARGS],
        capture_output=True,
        text=True,
        env={**env, "LOG_LEVEL": "ERROR"},
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode in (0, 1), done.stderr[-2000:]  # 1: some check failed
    reports = json.loads(done.stdout)
    results = [r["results"] for r in (reports if isinstance(reports, list) else [reports]) if "results" in r]
    found: dict[str, list[dict[str, Any]]] = {"failed": [], "skipped": [], "passed": []}
    for result in results:
        for outcome in found:
            found[outcome] += result.get(f"{outcome}_checks", [])
    return found


def _where(check: Mapping[str, Any]) -> str:
    return str(check["file_path"]).strip("/").split("/", 1)[0]


def test_no_failed_check_in_generated_or_any_test_tree(scan: dict[str, list[dict[str, Any]]]) -> None:
    failed = [f"{c['check_id']} {c['file_path']} {c['resource']}" for c in scan["failed"]]
    failed = [f for f in failed if not f.split(" ")[1].strip("/").startswith(UNSET)]
    assert failed == []
    scanned = {_where(c) for c in scan["passed"] + scan["skipped"]}
    assert scanned >= {"generated", *TREES}  # every render was scanned


def test_only_the_public_firewalls_skip_and_each_says_why(scan: dict[str, list[dict[str, Any]]]) -> None:
    skipped = [c for c in scan["skipped"] if _where(c) != UNSET]
    assert skipped
    for check in skipped:
        assert check["check_id"] == "CKV_DIO_4"
        assert check["resource"].endswith("__public")
        assert " role " in check["check_result"]["suppress_comment"]
    dns = next(c for c in skipped if c["resource"] == "digitalocean_firewall.dns__public")
    assert "DNS 53" in dns["check_result"]["suppress_comment"]
    assert "dns-authority" in dns["check_result"]["suppress_comment"]


def test_unset_ssh_from_fails_the_scan(scan: dict[str, list[dict[str, Any]]]) -> None:
    failed = {(c["check_id"], c["resource"]) for c in scan["failed"] if _where(c) == UNSET}
    assert failed == {("CKV_DIO_4", "digitalocean_firewall.ct_edge")}
