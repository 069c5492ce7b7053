"""Issue 11 end to end: taking over from a hand-written Terraform root, then handing a project
its database credentials, with the real CLI, real Terraform and the sandbox provider.

The old root is a module written here and applied with the sandbox provider against the same
sandbox cloud infra-apply uses (``INFRA_APPLY_SANDBOX_CLOUD``), so "exactly one of each
resource" is checked on the cloud itself after every step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values

from infra_apply.sandbox import cloud
from infra_apply.sandbox.install import install
from tests.conftest import REPO, cli_env, droplet, producer_root, project, run_cli, write_tree

pytestmark = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")

CLUSTER = "uvlava-pg"

PROVIDERS_TF = """terraform {
  required_providers {
    digitalocean = {
      source  = "digitalocean/digitalocean"
      version = "2.99.1"
    }
  }
}

provider "digitalocean" {}
"""


def _droplet_tf(label: str, name: str, image: str = "ubuntu-24-04-x64") -> str:
    return f"""
resource "digitalocean_droplet" "{label}" {{
  name      = "{name}"
  size      = "s-2vcpu-4gb"
  image     = "{image}"
  ssh_keys  = ["{cloud.FIRST_SSH_KEY_ID}"]
  user_data = "#cloud-config\\n"
  tags      = ["old-root"]
}}
"""


def _firewall_tf(label: str) -> str:
    return f"""
resource "digitalocean_firewall" "{label}" {{
  name        = "old-{label}"
  droplet_ids = [digitalocean_droplet.{label}.id]

  inbound_rule {{
    protocol         = "tcp"
    port_range       = "22"
    source_addresses = ["0.0.0.0/0"]
  }}
}}
"""


# The old root, block by block, so the test can delete the taken-over ones as the runbook says.
OLD_ROOT: dict[str, str] = {
    "digitalocean_droplet.web": _droplet_tf("web", "com.uvlava.ct.services"),
    "digitalocean_droplet.api": _droplet_tf("api", "com.uvlava.ct.api"),
    "digitalocean_firewall.web": _firewall_tf("web"),
    "digitalocean_firewall.api": _firewall_tf("api"),
    "data.digitalocean_database_cluster.main": f"""
data "digitalocean_database_cluster" "main" {{
  name = "{CLUSTER}"
}}
""",
    "digitalocean_database_db.ledger": """
resource "digitalocean_database_db" "ledger" {
  cluster_id = data.digitalocean_database_cluster.main.id
  name       = "ledger"
}
""",
    "digitalocean_database_user.ledger": """
resource "digitalocean_database_user" "ledger" {
  cluster_id = data.digitalocean_database_cluster.main.id
  name       = "ledger_app"
}
""",
}

TREE: dict[str, Any] = {
    "@ct/.infra.yaml": producer_root(
        "ct",
        droplet("com.uvlava.ct.services", ["lime"]),
        droplet("com.uvlava.ct.api", ["kiwi"]),
    ),
    "@ct/ledger/.infra.yaml": project(
        "ledger", database={"cluster": CLUSTER, "name": "ledger", "user": "ledger_app"}
    ),
}


@pytest.fixture(autouse=True)
def _repository_untouched() -> Iterator[None]:
    """These tests run the CLI with trees of their own: the repository's generated/ stays as it was."""

    def snapshot() -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in sorted((REPO / "generated").rglob("*")) if p.is_file()}

    before = snapshot()
    yield
    assert snapshot() == before


ONE_OF_EACH = {"droplets": 2, "firewalls": 2, "databases": 1, "users": 1}
# Taken over, each droplet also gets its public openings' firewall (docs/security.md).
TAKEN_OVER = {**ONE_OF_EACH, "firewalls": 4}
MESH = {"network": "10.9.0.0/24", "hosts": {}, "services": {}}


@dataclass
class World:
    """The tree, infra-apply's CLI, the old root and the one sandbox cloud they share."""

    base: Path
    tf_env: Mapping[str, str]  # Terraform with the sandbox provider, for the old root
    printed: list[str] = field(default_factory=list)  # every infra-apply stdout and stderr

    @property
    def cloud(self) -> Path:
        return self.base / "cloud.json"

    @property
    def old(self) -> Path:
        return self.base / "old"

    @property
    def out(self) -> Path:
        return self.base / "generated"

    def cli(self, *args: str, sandbox: bool = True) -> tuple[int, str, str]:
        # Always --out and a private cwd: nothing may land in the repository's own generated/.
        env = cli_env(self.base, INFRA_APPLY_SANDBOX_CLOUD=str(self.cloud), INFRA_APPLY_OUT=str(self.out))
        extra = ["--out", str(self.out)]
        if sandbox:
            extra += ["--sandbox", "--mesh-hosts", str(self.base / "mesh-hosts.json")]
        r = run_cli("--root", str(self.base / "tree"), *args, *extra, env=env, cwd=self.base)
        assert "Traceback" not in r.stderr, r.stderr
        self.printed += [r.stdout, r.stderr]
        return r.returncode, r.stdout, r.stderr

    def tf(self, *args: str, codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            ["terraform", *args, "-no-color"],
            cwd=self.old,
            env={**self.tf_env, cloud.ENV_VAR: str(self.cloud)},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert r.returncode in codes, f"terraform {args}: {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    def write_old_root(self, files: Mapping[str, str]) -> None:
        for old in self.old.glob("*.tf"):
            old.unlink()
        (self.old / "providers.tf").write_text(PROVIDERS_TF)
        for name, text in files.items():
            (self.old / name).write_text(text)

    def counts(self) -> dict[str, int]:
        c = cloud.load(self.cloud)
        return {k: len(c[k]) for k in ONE_OF_EACH}


def world(tmp_path: Path, old_root: Mapping[str, str]) -> World:
    setup = install(tmp_path / "old-state", clusters=(CLUSTER,))
    env = {k: v for k, v in os.environ.items() if k not in ("TF_PLUGIN_CACHE_DIR", "DIGITALOCEAN_TOKEN")}
    w = World(tmp_path, {**env, **setup.env})
    write_tree(tmp_path / "tree", TREE)
    (tmp_path / "mesh-hosts.json").write_text(json.dumps(MESH))
    cloud.seed(w.cloud, [CLUSTER], ["old-root"])  # the old droplets were made with its one key
    w.old.mkdir()
    w.write_old_root({"main.tf": "".join(old_root.values())})
    w.tf("init", "-input=false")
    w.tf("apply", "-auto-approve", "-input=false")
    return w


def _old_plan_actions(w: World) -> dict[str, list[str]]:
    w.tf("plan", "-input=false", "-out=plan.bin")
    shown = json.loads(w.tf("show", "-json", "plan.bin").stdout)
    return {
        rc["address"]: rc["change"]["actions"]
        for rc in shown.get("resource_changes", [])
        if rc["mode"] == "managed"
    }


def test_takeover_from_an_old_root_then_database_credentials(tmp_path: Path) -> None:
    w = world(tmp_path, OLD_ROOT)
    assert w.counts() == ONE_OF_EACH
    code, _, err = w.cli("render", sandbox=False)
    assert code == 0, err

    # adopt --from-state: import blocks here, the removed file for the old root.
    code, out, err = w.cli(
        "adopt", "--producer", "ct", "--from-state", str(w.old / "terraform.tfstate"), "--format", "json"
    )
    assert code == 0, out + err
    report = json.loads(out)
    assert report["ok"] and report["absent"] == [] and report["left_in_old_root"] == []
    assert sorted(t["from"] for t in report["taken_over"]) == sorted(
        a for a in OLD_ROOT if not a.startswith("data.")
    )
    removed = Path(report["removed_file"])
    assert removed.is_file() and Path(report["imports"]).is_file()
    assert str(removed).startswith(str(tmp_path / "state"))  # not in the old root: the operator copies it
    assert stat.S_IMODE(removed.stat().st_mode) == 0o600
    assert w.counts() == ONE_OF_EACH

    # The plan before the import apply: the new output's value (the password) is in Terraform's
    # plan JSON already; no summary format may show it (checked by the grep at the end).
    for fmt in ("text", "json", "markdown"):
        code, out, err = w.cli("plan", "--producer", "ct", "--format", fmt)
        assert code == 2, out + err

    # The producer's apply imports all six, replacing and destroying nothing; it creates only
    # each droplet's public firewall, the old one keeping SSH.
    code, out, err = w.cli("apply", "--producer", "ct", "--auto-approve")
    assert code == 0, out + err
    summary = re.search(r"Resources: (\d+) imported, (\d+) added, \d+ changed, (\d+) destroyed", out)
    assert summary is not None, out
    assert summary.groups() == ("6", "2", "0"), summary.group(0)
    assert w.counts() == TAKEN_OVER

    # The old root, its taken-over blocks deleted and the removed file added: 0 to destroy.
    kept = {a: b for a, b in OLD_ROOT.items() if a.startswith("data.")}
    w.write_old_root({"main.tf": "".join(kept.values()), "removed.tf": removed.read_text()})
    actions = _old_plan_actions(w)
    assert set(actions) == {a for a in OLD_ROOT if not a.startswith("data.")}
    assert all(a == ["forget"] for a in actions.values()), actions
    w.tf("apply", "-input=false", "plan.bin")
    assert w.counts() == TAKEN_OVER

    # Both roots plan no changes.
    assert w.tf("plan", "-input=false", "-detailed-exitcode").returncode == 0
    code, out, err = w.cli("plan", "--producer", "ct")
    assert code == 0, out + err
    assert w.counts() == TAKEN_OVER

    # db-credentials: a private dotenv that reads back exactly.
    env_file = tmp_path / "ledger.env"
    code, out, err = w.cli("db-credentials", "--producer", "ct", "ledger", "--write", str(env_file))
    assert code == 0, out + err
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    saved = cloud.load(w.cloud)
    [user] = saved["users"].values()
    password = user["password"]
    assert len(password) >= 8
    cluster = cloud.find_cluster(saved, CLUSTER)
    assert cluster is not None
    values = dotenv_values(env_file)
    assert (values["PGUSER"], values["PGDATABASE"], values["PGPASSWORD"]) == (
        "ledger_app",
        "ledger",
        password,
    )
    assert (values["PGHOST"], values["PGPORT"], values["PGSSLMODE"]) == (
        cluster["private_host"],
        str(cluster["port"]),
        "require",
    )
    assert values["DATABASE_URL"] is not None and values["DATABASE_URL"].endswith("?sslmode=require")
    assert password not in out + err
    # --stdout into a pipe (not a terminal) prints the same file.
    code, piped, err = w.cli("db-credentials", "--producer", "ct", "ledger", "--stdout")
    assert code == 0, err
    assert piped == env_file.read_text()
    w.printed.remove(piped)  # the one output meant to carry the password

    # Every other command's output, and generated/, never carries the password.
    for fmt in ("text", "json", "markdown"):
        w.cli("plan", "--producer", "ct", "--format", fmt)
    w.cli("register", "--producer", "ct")
    w.cli("adopt", "--producer", "ct")
    w.cli("adopt", "--producer", "ct", "--from-state", str(w.old / "terraform.tfstate"))
    assert not [p for p in w.printed if password in p]
    assert not [f for f in w.out.rglob("*") if f.is_file() and password.encode() in f.read_bytes()]
    assert w.counts() == TAKEN_OVER


RETIRED_ROOT = {
    "digitalocean_droplet.web": _droplet_tf("web", "com.uvlava.ct.services", image="112233"),
    "digitalocean_firewall.web": _firewall_tf("web"),
}


def test_a_retired_image_slug_is_named_before_anything_is_written(tmp_path: Path) -> None:
    """The old droplet's state holds only a numeric image id: importing it under the manifest's
    default slug would replace it, so adopt names the fix and writes nothing."""
    w = world(tmp_path, RETIRED_ROOT)
    before = cloud.load(w.cloud)
    for fmt in ("text", "json"):
        code, out, err = w.cli(
            "adopt", "--producer", "ct", "--from-state", str(w.old / "terraform.tfstate"), "--format", fmt
        )
        assert code == 1, out + err
        if fmt == "json":
            [problem] = json.loads(out)["problems"]
            assert (problem["rule"], problem["address"]) == ("forced_replace", "digitalocean_droplet.web")
            assert json.loads(out)["imports"] is None and json.loads(out)["removed_file"] is None
        else:
            assert "the numeric image id 112233" in out
            assert 'fix: set `image: "112233"` on droplet "com.uvlava.ct.services" in @ct/.infra.yaml' in out
            assert "nothing written" in out
    state = tmp_path / "state"
    assert not list(state.rglob("imports.tf")) and not list(state.rglob("removed.tf"))
    assert not (state / "takeover").exists()
    assert cloud.load(w.cloud) == before
