"""The sandbox DigitalOcean provider, driven by the real terraform binary.

One ``terraform init`` is shared by the module: every working copy gets a copy of its
``.terraform`` folder and lock file, plus its own cloud file so tests stay independent.
Plans that only vary a variable share one applied working copy (a saved plan changes nothing).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra_apply.sandbox import cloud
from infra_apply.sandbox.install import (
    PROVIDER_SOURCE,
    PROVIDER_VERSION,
    SandboxSetup,
    forget_stale_provider,
    install,
)

CLUSTER = "uvlava-pg"

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

provider "digitalocean" {
  token = "sandbox-token-ignored"
}
"""

BASE_TF = """
variable "name" {
  type    = string
  default = "com.uvlava.quinn.web"
}

variable "region" {
  type    = string
  default = "nyc3"
}

variable "size" {
  type    = string
  default = "s-1vcpu-1gb"
}

variable "ipv6" {
  type    = bool
  default = false
}

resource "digitalocean_droplet" "web" {
  name      = var.name
  region    = var.region
  size      = var.size
  image     = "ubuntu-24-04-x64"
  ipv6      = var.ipv6
  tags      = ["quinn", "web"]
  user_data = "#cloud-config\\n"
}

resource "digitalocean_firewall" "web" {
  name        = "quinn-web"
  droplet_ids = [digitalocean_droplet.web.id]
  tags        = ["quinn"]

  inbound_rule {
    protocol         = "tcp"
    port_range       = "22"
    source_addresses = ["0.0.0.0/0", "::/0"]
  }

  inbound_rule {
    protocol         = "icmp"
    source_addresses = ["0.0.0.0/0"]
  }

  outbound_rule {
    protocol              = "udp"
    port_range            = "53"
    destination_addresses = ["0.0.0.0/0"]
  }
}

data "digitalocean_database_cluster" "main" {
  name = "uvlava-pg"
}

resource "digitalocean_database_db" "app" {
  cluster_id = data.digitalocean_database_cluster.main.id
  name       = "app"
}

resource "digitalocean_database_user" "app" {
  cluster_id = data.digitalocean_database_cluster.main.id
  name       = "app"
}

output "droplet" {
  value = {
    id         = digitalocean_droplet.web.id
    public_ip  = digitalocean_droplet.web.ipv4_address
    private_ip = digitalocean_droplet.web.ipv4_address_private
  }
}
"""


# ---------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Workdir:
    """A terraform working copy with its own sandbox cloud."""

    path: Path
    cloud: Path
    env: Mapping[str, str]

    def tf(self, *args: str, codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["terraform", *args],
            cwd=self.path,
            env=dict(self.env),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if result.returncode not in codes:
            pytest.fail(
                f"terraform {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def apply(self, *args: str) -> None:
        self.tf("apply", "-auto-approve", "-no-color", "-input=false", *args)

    def plan_json(self, *args: str) -> dict[str, Any]:
        """Save a plan with ``args`` and return ``terraform show -json`` of it."""
        self.tf("plan", "-no-color", "-input=false", "-out=plan.bin", *args, codes=(0,))
        shown: dict[str, Any] = json.loads(self.tf("show", "-json", "plan.bin").stdout)
        return shown

    def state_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = json.loads(self.tf("show", "-json").stdout)
        return shown


def actions(plan: dict[str, Any], address: str) -> list[str]:
    change = next(rc for rc in plan["resource_changes"] if rc["address"] == address)
    found: list[str] = change["change"]["actions"]
    return found


def resource_values(state: dict[str, Any], address: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = state["values"]["root_module"]["resources"]
    return next(r for r in resources if r["address"] == address)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> SandboxSetup:
    return install(tmp_path_factory.mktemp("state"), clusters=(CLUSTER,))


@pytest.fixture(scope="module")
def initialized(sandbox: SandboxSetup, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where ``terraform init`` ran once against the sandbox mirror."""
    folder = tmp_path_factory.mktemp("init")
    (folder / "providers.tf").write_text(PROVIDERS_TF)
    subprocess.run(
        ["terraform", "init", "-no-color", "-input=false"],
        cwd=folder,
        env={**os.environ, **sandbox.env},
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
    )
    return folder


def make_workdir(
    folder: Path,
    sandbox: SandboxSetup,
    initialized: Path,
    config: str,
    clusters: tuple[str, ...] = (CLUSTER,),
) -> Workdir:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(initialized / ".terraform", folder / ".terraform", symlinks=True)
    shutil.copy(initialized / ".terraform.lock.hcl", folder / ".terraform.lock.hcl")
    (folder / "providers.tf").write_text(PROVIDERS_TF)
    (folder / "main.tf").write_text(config)
    cloud_file = folder / "cloud.json"
    cloud.seed(cloud_file, clusters)
    env = {**os.environ, **sandbox.env, cloud.ENV_VAR: str(cloud_file)}
    return Workdir(path=folder, cloud=cloud_file, env=env)


@pytest.fixture
def workdir_factory(tmp_path: Path, sandbox: SandboxSetup, initialized: Path) -> Iterator[Any]:
    def factory(config: str, clusters: tuple[str, ...] = (CLUSTER,)) -> Workdir:
        return make_workdir(tmp_path / "wd", sandbox, initialized, config, clusters)

    yield factory


@pytest.fixture(scope="module")
def applied(sandbox: SandboxSetup, initialized: Path, tmp_path_factory: pytest.TempPathFactory) -> Workdir:
    """The base configuration, applied once; tests using it must not change it."""
    workdir = make_workdir(tmp_path_factory.mktemp("applied"), sandbox, initialized, BASE_TF)
    workdir.apply()
    return workdir


# ---------------------------------------------------------------- install


@requires_terraform
def test_init_locks_the_checksum_install_reports(sandbox: SandboxSetup, initialized: Path) -> None:
    lock = (initialized / ".terraform.lock.hcl").read_text()
    assert f'provider "{PROVIDER_SOURCE}"' in lock
    assert sandbox.package_hash in lock
    manifest = json.loads((sandbox.mirror / PROVIDER_SOURCE / f"{PROVIDER_VERSION}.json").read_text())
    assert sandbox.package_hash in manifest["archives"]["linux_amd64"]["hashes"]


def test_install_is_idempotent(sandbox: SandboxSetup) -> None:
    archive = next((sandbox.mirror / PROVIDER_SOURCE).glob("*_linux_amd64.zip"))
    before = archive.stat().st_mtime_ns
    again = install(sandbox.root.parent, clusters=(CLUSTER,))
    assert again == sandbox
    assert archive.stat().st_mtime_ns == before
    assert again.env == {
        "TF_CLI_CONFIG_FILE": str(sandbox.cli_config),
        "INFRA_APPLY_SANDBOX_CLOUD": str(sandbox.cloud),
        "CHECKPOINT_DISABLE": "1",
        "TF_PLUGIN_CACHE_DIR": "",
    }
    config = sandbox.cli_config.read_text()
    assert "filesystem_mirror" in config and f'exclude = ["{PROVIDER_SOURCE}"]' in config
    assert [c["name"] for c in cloud.list_clusters(sandbox.cloud)] == [CLUSTER]


def test_forget_stale_provider_drops_only_a_mismatching_lock(sandbox: SandboxSetup, tmp_path: Path) -> None:
    unpacked = tmp_path / ".terraform" / "providers" / PROVIDER_SOURCE
    unpacked.mkdir(parents=True)
    other = 'provider "registry.terraform.io/hashicorp/random" {\n  version = "3.6.0"\n}\n'
    stale = f'provider "{PROVIDER_SOURCE}" {{\n  hashes = [\n    "h1:old=",\n  ]\n}}\n'
    (tmp_path / ".terraform.lock.hcl").write_text(f"# header\n\n{stale}\n{other}")
    assert forget_stale_provider(tmp_path, sandbox) is True
    assert (tmp_path / ".terraform.lock.hcl").read_text() == f"# header\n\n\n{other}"
    assert not unpacked.exists()
    assert forget_stale_provider(tmp_path, sandbox) is False


# ---------------------------------------------------------------- the cloud file


def test_cloud_allocates_deterministically(tmp_path: Path) -> None:
    path = tmp_path / "cloud.json"
    cloud.seed(path, ["a-pg", "b-pg"])
    cloud.seed(path, ["a-pg"])
    first = cloud.create_droplet(path, "one", region="FRA1", size="S-2VCPU-4GB", tags=["x"])
    second = cloud.create_droplet(path, "two")
    assert (first["id"], second["id"]) == ("1001", "1002")
    assert (first["ipv4_address"], second["ipv4_address"]) == ("203.0.113.1", "203.0.113.2")
    assert first["ipv4_address_private"] == "10.116.0.2"
    assert (first["region"], first["size"], first["vcpus"], first["memory"]) == (
        "fra1",
        "s-2vcpu-4gb",
        2,
        4096,
    )
    assert first["urn"] == "do:droplet:1001"
    assert [c["name"] for c in cloud.list_clusters(path)] == ["a-pg", "b-pg"]
    assert cloud.list_clusters(path)[0]["id"] == cloud.cluster_record("a-pg")["id"]
    cloud.rename_droplet(path, 1001, "renamed")
    assert cloud.get_droplet(path, "1001")["name"] == "renamed"  # type: ignore[index]
    assert cloud.delete_droplet(path, 1001) is True
    assert [d["name"] for d in cloud.list_droplets(path)] == ["two"]
    with pytest.raises(cloud.CloudError):
        cloud.rename_droplet(path, 1001, "again")


def test_a_droplet_joins_its_regions_default_vpc_or_a_vpc_of_its_region_only(tmp_path: Path) -> None:
    path = tmp_path / "cloud.json"
    cloud.seed(path, ["a-pg"])
    with cloud.transaction(path) as c:
        [pg] = c["clusters"].values()
        assert pg["private_network_uuid"] == cloud.vpc_uuid("nyc3")  # the region's default VPC
        pg["private_network_uuid"] = cloud.stable_uuid("vpc", "a-pg")
        plain = cloud.add_droplet(c, cloud.DropletSpec(name="plain"))
        placed = cloud.add_droplet(c, cloud.DropletSpec(name="placed", vpc_uuid=pg["private_network_uuid"]))
        assert plain["vpc_uuid"] == cloud.vpc_uuid("nyc3")
        assert placed["vpc_uuid"] == pg["private_network_uuid"]
        for region, vpc in (("fra1", pg["private_network_uuid"]), ("nyc3", "not-a-vpc")):
            with pytest.raises(cloud.CloudError, match=f"422 .* is not a VPC in region {region}"):
                cloud.add_droplet(c, cloud.DropletSpec(name="elsewhere", region=region, vpc_uuid=vpc))


def test_a_resize_to_a_smaller_disk_is_refused_like_digitalocean_refuses_it(tmp_path: Path) -> None:
    """A disk never shrinks: DigitalOcean answers 422, and the sandbox changes nothing."""
    path = tmp_path / "cloud.json"
    made = cloud.create_droplet(path, "svc", size="s-4vcpu-8gb")
    grown = cloud.edit_droplet(path, made["id"], size="s-8vcpu-16gb")
    assert (grown["size"], grown["disk"]) == ("s-8vcpu-16gb", 320)
    before = path.read_bytes()
    for size in ("s-4vcpu-8gb", "s-2vcpu-4gb"):
        with pytest.raises(cloud.CloudError, match=r"422 unprocessable_entity: Size can not decrease size"):
            cloud.edit_droplet(path, made["id"], size=size)
    assert path.read_bytes() == before  # nothing changed: still 320 GB, still s-8vcpu-16gb
    # CPU and RAM only (resize_disk = false) keeps the disk, and can then go back down
    other = cloud.create_droplet(path, "batch", size="s-2vcpu-4gb")
    up = cloud.edit_droplet(path, other["id"], size="s-4vcpu-8gb", disk=False)
    assert (up["size"], up["disk"], up["vcpus"]) == ("s-4vcpu-8gb", 80, 4)
    down = cloud.edit_droplet(path, other["id"], size="s-2vcpu-4gb")
    assert (down["size"], down["disk"]) == ("s-2vcpu-4gb", 80)


def test_cloud_transactions_serialise_threads(tmp_path: Path) -> None:
    path = tmp_path / "cloud.json"

    def worker(index: int) -> None:
        for step in range(15):
            cloud.create_droplet(path, f"w{index}-{step}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    droplets = cloud.list_droplets(path)
    assert len(droplets) == 90
    assert len({d["ipv4_address"] for d in droplets}) == 90
    assert sorted(int(d["id"]) for d in droplets) == list(range(1001, 1091))


def test_missing_cloud_variable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cloud.ENV_VAR, raising=False)
    with pytest.raises(cloud.CloudError, match=cloud.ENV_VAR):
        cloud.cloud_path_from_env()


# ---------------------------------------------------------------- plans against one apply


@requires_terraform
def test_apply_creates_everything_and_replans_clean(applied: Workdir) -> None:
    assert applied.tf("plan", "-detailed-exitcode", "-no-color", codes=(0, 2)).returncode == 0
    droplets = cloud.list_droplets(applied.cloud)
    assert [(d["name"], d["region"], d["status"]) for d in droplets] == [
        ("com.uvlava.quinn.web", "nyc3", "active")
    ]
    state = applied.state_json()
    web = resource_values(state, "digitalocean_droplet.web")["values"]
    assert web["id"] == droplets[0]["id"]
    assert web["ipv4_address"].startswith("203.0.113.")
    assert web["ipv4_address_private"].startswith("10.116.")
    assert web["urn"] == f"do:droplet:{web['id']}"
    assert web["user_data"] == hashlib.sha1(b"#cloud-config\n").hexdigest()
    assert web["price_monthly"] == 6 and web["vcpus"] == 1
    firewall = resource_values(state, "digitalocean_firewall.web")["values"]
    assert firewall["droplet_ids"] == [int(web["id"])]
    assert firewall["status"] == "succeeded"
    saved = cloud.load(applied.cloud)
    assert len(saved["databases"]) == 1 and len(saved["users"]) == 1


@requires_terraform
def test_secrets_are_marked_sensitive(applied: Workdir) -> None:
    state = applied.state_json()
    user = resource_values(state, "digitalocean_database_user.app")
    assert user["sensitive_values"]["password"] is True
    cluster = resource_values(state, "data.digitalocean_database_cluster.main")
    for field in ("password", "uri", "private_uri"):
        assert cluster["sensitive_values"][field] is True
    assert cluster["values"]["port"] == 25060 and cluster["values"]["engine"] == "pg"


@requires_terraform
def test_rename_in_config_updates_in_place(applied: Workdir) -> None:
    plan = applied.plan_json("-var", "name=com.uvlava.quinn.web2")
    assert actions(plan, "digitalocean_droplet.web") == ["update"]


@requires_terraform
def test_resize_updates_in_place_and_ipv6_enables_in_place(applied: Workdir) -> None:
    plan = applied.plan_json("-var", "size=s-2vcpu-4gb", "-var", "ipv6=true")
    assert actions(plan, "digitalocean_droplet.web") == ["update"]
    change = next(rc for rc in plan["resource_changes"] if rc["address"].endswith("droplet.web"))
    unknown = change["change"]["after_unknown"]
    assert unknown["vcpus"] and unknown["price_monthly"] and unknown["ipv6_address"]


@requires_terraform
def test_region_change_replaces(applied: Workdir) -> None:
    plan = applied.plan_json("-var", "region=fra1")
    assert actions(plan, "digitalocean_droplet.web") in (["delete", "create"], ["create", "delete"])
    change = next(rc for rc in plan["resource_changes"] if rc["address"].endswith("droplet.web"))
    assert change["change"]["replace_paths"] == [["region"]]
    # The firewall follows the new droplet id in place.
    assert actions(plan, "digitalocean_firewall.web") == ["update"]


@requires_terraform
def test_region_case_is_normalised(applied: Workdir) -> None:
    plan = applied.plan_json("-var", "region=NYC3")
    assert actions(plan, "digitalocean_droplet.web") == ["no-op"]


# ---------------------------------------------------------------- drift in the cloud


@requires_terraform
def test_cloud_changes_show_up_on_refresh(workdir_factory: Any) -> None:
    workdir: Workdir = workdir_factory(BASE_TF)
    workdir.apply()
    droplet_id = cloud.list_droplets(workdir.cloud)[0]["id"]

    cloud.rename_droplet(workdir.cloud, droplet_id, "renamed-by-hand")
    workdir.apply("-refresh-only")
    web = resource_values(workdir.state_json(), "digitalocean_droplet.web")
    assert web["values"]["name"] == "renamed-by-hand"

    cloud.delete_droplet(workdir.cloud, droplet_id)
    plan = workdir.plan_json()
    assert actions(plan, "digitalocean_droplet.web") == ["create"]
    workdir.apply()
    assert [d["id"] for d in cloud.list_droplets(workdir.cloud)] == ["1002"]
    assert workdir.tf("plan", "-detailed-exitcode", "-no-color", codes=(0, 2)).returncode == 0


IPV6_TF = """
resource "digitalocean_droplet" "v6" {
  name   = "v6"
  size   = "s-1vcpu-1gb"
  image  = "ubuntu-24-04-x64"
  ipv6   = var.ipv6
}

variable "ipv6" {
  type    = bool
  default = true
}
"""


@requires_terraform
def test_disabling_ipv6_replaces(workdir_factory: Any) -> None:
    workdir: Workdir = workdir_factory(IPV6_TF)
    workdir.apply()
    assert cloud.list_droplets(workdir.cloud)[0]["ipv6_address"].startswith("2001:db8::")
    plan = workdir.plan_json("-var", "ipv6=false")
    assert actions(plan, "digitalocean_droplet.v6") == ["delete", "create"]


# ---------------------------------------------------------------- adoption


ADOPT_TF = """
import {{
  to = digitalocean_droplet.adopted
  id = "{droplet_id}"
}}

resource "digitalocean_droplet" "adopted" {{
  name      = "com.uvlava.quinn.artifacts"
  region    = "nyc3"
  size      = "s-2vcpu-4gb"
  image     = "ubuntu-24-04-x64"
  ssh_keys  = ["12345"]
  user_data = "#cloud-config\\n"

  lifecycle {{
    ignore_changes = [name, ssh_keys, user_data]
  }}
}}
"""


@requires_terraform
def test_import_block_adopts_a_hand_made_droplet(workdir_factory: Any) -> None:
    workdir: Workdir = workdir_factory("")
    made = cloud.create_droplet(workdir.cloud, "forge", size="s-2vcpu-4gb")
    (workdir.path / "main.tf").write_text(ADOPT_TF.format(droplet_id=made["id"]))
    plan = workdir.plan_json()
    change = next(rc for rc in plan["resource_changes"] if rc["address"].endswith(".adopted"))
    assert change["change"]["importing"] == {"id": made["id"]}
    assert change["change"]["actions"] == ["no-op"]
    assert change["change"]["after"]["image"] == "ubuntu-24-04-x64"
    workdir.tf("apply", "-no-color", "plan.bin")
    adopted = resource_values(workdir.state_json(), "digitalocean_droplet.adopted")
    assert adopted["values"]["id"] == made["id"] and adopted["values"]["name"] == "forge"
    assert len(cloud.list_droplets(workdir.cloud)) == 1


# ---------------------------------------------------------------- failures


MISSING_CLUSTER_TF = """
data "digitalocean_database_cluster" "gone" {
  name = "no-such-cluster"
}
"""


@requires_terraform
def test_missing_cluster_fails_the_plan(workdir_factory: Any) -> None:
    workdir: Workdir = workdir_factory(MISSING_CLUSTER_TF)
    result = workdir.tf("plan", "-no-color", "-input=false", codes=(1,))
    assert "Unable to find databases." in result.stderr
    assert "no-such-cluster" in result.stderr


ORPHAN_DB_TF = """
resource "digitalocean_database_db" "orphan" {
  cluster_id = "00000000-0000-0000-0000-000000000000"
  name       = "orphan"
}
"""


@requires_terraform
def test_database_on_unknown_cluster_fails_the_apply(workdir_factory: Any) -> None:
    workdir: Workdir = workdir_factory(ORPHAN_DB_TF)
    result = workdir.tf("apply", "-auto-approve", "-no-color", "-input=false", codes=(1,))
    assert "Error creating Database DB" in result.stderr
    assert "not found" in result.stderr


INVALID_TF = """
resource "digitalocean_droplet" "bad_tag" {
  name  = "x"
  size  = "s-1vcpu-1gb"
  image = "ubuntu-24-04-x64"
  tags  = ["has space"]
}

resource "digitalocean_firewall" "too_much" {
  name        = "too-much"
  droplet_ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
  tags        = ["a", "b", "c", "d", "e", "f"]

  inbound_rule {
    protocol = "tcp"
  }
}
"""


@requires_terraform
def test_validation_reports_provider_diagnostics(workdir_factory: Any) -> None:
    workdir: Workdir = workdir_factory(INVALID_TF)
    result = workdir.tf("validate", "-no-color", codes=(1,))
    assert "Invalid value 'has space' for tags" in result.stderr
    assert "at most 10 droplet_ids" in result.stderr
    assert "at most 5 tags" in result.stderr
    assert "`port_range` of inbound_rule is required" in result.stderr


# ---------------------------------------------------------------- concurrency and destroy


FLEET_TF = """
resource "digitalocean_droplet" "fleet" {
  count  = 8
  name   = "fleet-${count.index}"
  size   = "s-1vcpu-1gb"
  image  = "ubuntu-24-04-x64"
  region = "ams3"
}
"""


@requires_terraform
def test_parallel_apply_keeps_the_cloud_consistent(workdir_factory: Any) -> None:
    workdir: Workdir = workdir_factory(FLEET_TF)
    workdir.apply("-parallelism=8")
    droplets = cloud.list_droplets(workdir.cloud)
    assert sorted(d["name"] for d in droplets) == sorted(f"fleet-{i}" for i in range(8))
    assert len({d["id"] for d in droplets}) == 8
    assert len({d["ipv4_address"] for d in droplets}) == 8
    state_ids = {r["values"]["id"] for r in workdir.state_json()["values"]["root_module"]["resources"]}
    assert state_ids == {d["id"] for d in droplets}
    workdir.tf("destroy", "-auto-approve", "-no-color", "-parallelism=8")
    assert cloud.list_droplets(workdir.cloud) == []


ORPHAN_PARENT = """
import subprocess, sys, time
child = (
    "import os, time\\n"
    "from infra_apply.sandbox.server import exit_with_parent\\n"
    "exit_with_parent()\\n"
    "print(os.getpid(), flush=True)\\n"
    "time.sleep(600)\\n"
)
proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
print(proc.stdout.readline().strip(), flush=True)
time.sleep(600)
"""


def test_provider_process_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    # Terraform killed outright (OOM, kill -9) never stops its providers; they must not live on.
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_PARENT], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())  # printed once the child has armed itself
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 30
    while _running(child):
        assert time.monotonic() < deadline, f"provider stand-in {child} outlived its parent"
        time.sleep(0.02)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
