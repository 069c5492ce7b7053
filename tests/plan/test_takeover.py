"""Taking over from an existing Terraform root (issue 11), checked with real Terraform.

An "old root" (a hand-written module) is applied with the sandbox provider; its genuine state is
read as the raw terraform.tfstate, `terraform state pull` and `terraform show -json`, matched to a
manifest tree, and the import / removed files are applied by real Terraform: the producer
imports everything with nothing created, replaced or destroyed, and the old root forgets it
without destroying anything. Edge cases derive their documents from that genuine state.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra_apply.errors import InfraApplyError
from infra_apply.manifests.build import build_model
from infra_apply.manifests.model import ProducerModel
from infra_apply.manifests.validate import validate_tree
from infra_apply.plan.takeover import (
    OldState,
    Takeover,
    TakeoverRefused,
    format_text,
    import_block,
    import_file,
    parse_state,
    plan_takeover,
    read_state,
    removed_block,
    removed_file,
)
from infra_apply.render.module import Ledger, render_producer
from infra_apply.render.output import Rendered
from infra_apply.sandbox import cloud
from infra_apply.sandbox.install import install
from tests.conftest import droplet, producer_root, project, write_tree

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


OLD_KEY_ID = cloud.FIRST_SSH_KEY_ID  # the old root's droplets were made with the account's key


def _droplet_tf(label: str, name: str, extra: str = "") -> str:
    return f"""
resource "digitalocean_droplet" "{label}" {{
  name      = "{name}"
  size      = "s-2vcpu-4gb"
  image     = "ubuntu-24-04-x64"
  ssh_keys  = ["{OLD_KEY_ID}"]
  user_data = "#cloud-config\\n"
  tags      = ["old-root"]
{extra}}}
"""


def _firewall_tf(label: str, droplet_ref: str) -> str:
    return f"""
resource "digitalocean_firewall" "{label}" {{
  name        = "old-{label}"
  droplet_ids = [{droplet_ref}.id]

  inbound_rule {{
    protocol         = "tcp"
    port_range       = "22"
    source_addresses = ["0.0.0.0/0"]
  }}

  inbound_rule {{
    protocol         = "tcp"
    port_range       = "8080"
    source_addresses = ["0.0.0.0/0"]
  }}
}}
"""


# The old root, resource by resource, so the test can delete blocks as the runbook says.
OLD_ROOT: dict[str, str] = {
    "digitalocean_droplet.web": _droplet_tf("web", "com.uvlava.ct.services"),
    # counted: `removed` must name the resource, not api[0]
    "digitalocean_droplet.api": _droplet_tf("api", "com.uvlava.ct.api", "  count     = 1\n"),
    "digitalocean_droplet.box": _droplet_tf("box", "legacy-box", "  count     = 1\n"),
    "digitalocean_firewall.web": _firewall_tf("web", "digitalocean_droplet.web"),
    "digitalocean_firewall.api": _firewall_tf("api", "digitalocean_droplet.api[0]"),
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


# --- real Terraform -------------------------------------------------------------------------


@dataclass(frozen=True)
class Root:
    """A Terraform working copy using the sandbox provider and the cloud file ``cloud``."""

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
            timeout=300,
            check=False,
        )
        if result.returncode not in codes:
            pytest.fail(
                f"terraform {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def write(self, files: Mapping[str, str]) -> None:
        for old in self.path.glob("*.tf"):
            old.unlink()
        (self.path / "providers.tf").write_text(PROVIDERS_TF)
        for name, text in files.items():
            (self.path / name).write_text(text)

    def plan(self) -> dict[str, Any]:
        """A saved plan (plan.bin) as ``terraform show -json``."""
        self.tf("plan", "-no-color", "-input=false", "-out=plan.bin")
        shown: dict[str, Any] = json.loads(self.tf("show", "-json", "plan.bin").stdout)
        return shown

    def apply_plan(self) -> None:
        self.tf("apply", "-no-color", "-input=false", "plan.bin")

    def no_changes(self) -> bool:
        return (
            self.tf("plan", "-no-color", "-input=false", "-detailed-exitcode", codes=(0, 2)).returncode == 0
        )


@dataclass(frozen=True)
class Terraform:
    """The sandbox provider installed and `terraform init` run once; roots copy ``.terraform``."""

    initialized: Path
    env: Mapping[str, str]

    def root(self, path: Path, cloud_file: Path, files: Mapping[str, str]) -> Root:
        path.mkdir(parents=True)
        shutil.copytree(self.initialized / ".terraform", path / ".terraform", symlinks=True)
        shutil.copy(self.initialized / ".terraform.lock.hcl", path / ".terraform.lock.hcl")
        root = Root(path, cloud_file, {**self.env, cloud.ENV_VAR: str(cloud_file)})
        root.write(files)
        return root


@pytest.fixture(scope="module")
def terraform(tmp_path_factory: pytest.TempPathFactory) -> Terraform:
    setup = install(tmp_path_factory.mktemp("state"), clusters=(CLUSTER,))
    env = {k: v for k, v in os.environ.items() if k not in ("TF_PLUGIN_CACHE_DIR", "DIGITALOCEAN_TOKEN")}
    env = {**env, **setup.env}
    folder = tmp_path_factory.mktemp("init")
    (folder / "providers.tf").write_text(PROVIDERS_TF)
    subprocess.run(
        ["terraform", "init", "-no-color", "-input=false"],
        cwd=folder,
        env=env,
        capture_output=True,
        check=True,
        timeout=300,
    )
    return Terraform(folder, env)


def new_cloud(folder: Path) -> Path:
    path = folder / "cloud.json"
    cloud.seed(path, [CLUSTER], ["old-root"])  # its one key is OLD_KEY_ID
    return path


def clusters(cloud_file: Path) -> dict[str, str]:
    return {c["id"]: c["name"] for c in cloud.list_clusters(cloud_file)}


@dataclass(frozen=True)
class OldRoot:
    root: Root
    raw: str  # terraform.tfstate
    pulled: str  # terraform state pull
    shown: str  # terraform show -json

    def v4(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.raw)
        return doc

    def cloud_counts(self) -> dict[str, int]:
        c = cloud.load(self.root.cloud)
        return {k: len(c[k]) for k in ("droplets", "firewalls", "databases", "users")}


@pytest.fixture(scope="module")
def old_root(terraform: Terraform, tmp_path_factory: pytest.TempPathFactory) -> OldRoot:
    base = tmp_path_factory.mktemp("old-world")
    root = terraform.root(base / "old", new_cloud(base), {"main.tf": "".join(OLD_ROOT.values())})
    root.tf("apply", "-auto-approve", "-no-color", "-input=false")
    return OldRoot(
        root,
        (root.path / "terraform.tfstate").read_text(),
        root.tf("state", "pull").stdout,
        root.tf("show", "-json").stdout,
    )


def model(folder: Path, files: Mapping[str, Any] = TREE) -> tuple[ProducerModel, Rendered]:
    root = write_tree(folder, files)
    v = validate_tree(root)
    assert not v.errors, [p.format() for p in v.errors]
    producer = build_model(v).producer("ct")
    assert producer is not None
    return producer, render_producer(producer, Ledger())


def takeover(
    state: OldState,
    folder: Path,
    old: OldRoot,
    files: Mapping[str, Any] = TREE,
    live_images: Mapping[str, str] | None = None,
) -> Takeover:
    producer, rendered = model(folder, files)
    return plan_takeover(state, producer, rendered.droplet_addresses, clusters(old.root.cloud), live_images)


def ids(old: OldRoot) -> dict[str, str]:
    """Cloud object -> id: droplets by name, firewalls by name, cluster id."""
    c = cloud.load(old.root.cloud)
    out = {d["name"]: d["id"] for d in c["droplets"].values()}
    out |= {f["name"]: f["id"] for f in c["firewalls"].values()}
    out["cluster"] = cloud.find_cluster(c, CLUSTER)["id"]  # type: ignore[index]
    return out


# --- parsing ----------------------------------------------------------------------------------


def _records(state: OldState) -> list[tuple[str, str, str, Any, dict[str, Any], tuple[str, ...]]]:
    return [
        (r.address, r.resource_address, r.type, r.index, dict(r.attributes), r.dependencies)
        for r in state.resources
    ]


def test_the_three_state_formats_parse_to_the_same_records(old_root: OldRoot, tmp_path: Path) -> None:
    raw = read_state(old_root.root.path / "terraform.tfstate")
    pulled = parse_state(old_root.pulled, "pulled.json")
    shown = parse_state(old_root.shown, "shown.json")
    assert _records(raw) == _records(pulled) == _records(shown)
    assert [r.address for r in raw.resources] == [
        "digitalocean_database_db.ledger",
        "digitalocean_database_user.ledger",
        "digitalocean_droplet.api[0]",
        "digitalocean_droplet.box[0]",
        "digitalocean_droplet.web",
        "digitalocean_firewall.api",
        "digitalocean_firewall.web",
    ]  # the data source is not among them
    got = ids(old_root)
    web = next(r for r in raw.resources if r.address == "digitalocean_droplet.web")
    assert dict(web.attributes) == {
        "id": got["com.uvlava.ct.services"],
        "name": "com.uvlava.ct.services",
        "region": "nyc3",
        "image": "ubuntu-24-04-x64",
        "size": "s-2vcpu-4gb",
        "monitoring": False,
        "ipv6": False,
    }
    box = next(r for r in raw.resources if r.name == "box")
    assert (box.index, box.resource_address) == (0, "digitalocean_droplet.box")
    firewall = next(r for r in raw.resources if r.address == "digitalocean_firewall.web")
    assert firewall.attributes["droplet_ids"] == [int(got["com.uvlava.ct.services"])]
    assert firewall.dependencies == ("digitalocean_droplet.web",)


def _passwords(old: OldRoot) -> list[str]:
    """Every secret the genuine state holds: the cluster's admin and the project's user."""
    found = []
    for res in old.v4()["resources"]:
        for inst in res["instances"]:
            attrs = inst["attributes"]
            found += [attrs[k] for k in ("password", "uri", "private_uri") if attrs.get(k)]
    assert len(found) >= 2
    return found


def test_no_secret_survives_parsing_or_reaches_any_output(old_root: OldRoot, tmp_path: Path) -> None:
    for i, text in enumerate((old_root.raw, old_root.shown)):
        state = parse_state(text, "old.tfstate")
        t = takeover(state, tmp_path / str(i), old_root)
        kept = [json.dumps(dict(r.attributes)) for r in state.resources]
        outputs = [repr(state), *kept, t.to_text(), json.dumps(t.to_json()), import_file(t), removed_file(t)]
        for secret in _passwords(old_root):
            assert all(secret not in out for out in outputs)


# A state is bad input: one located line, never a traceback.
BAD_STATES = [
    (
        '{\n  "version": 4,\n  oops\n}',
        "old.tfstate:3:3: error from_state: not a Terraform state: invalid JSON",
    ),
    ("[1, 2]", "old.tfstate: error from_state: not a Terraform state: the document is not a JSON object"),
    ('{"hello": 1}', "old.tfstate: error from_state: not a Terraform state: neither a state file"),
    (
        '{"version": 3, "modules": []}',
        "error from_state: at version: state format version 3 is not supported",
    ),
    (
        '{"format_version": "1.2", "planned_values": {}, "prior_state": {}}',
        "error from_state: this is a saved plan's JSON, not a state",
    ),
    ('{"version": 4}', "error from_state: 'resources' is missing"),
    ('{"format_version": "1.0", "values": []}', "error from_state: at values: expected an object"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_STATES)
def test_bad_state_is_a_located_error(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "old.tfstate"
    path.write_text(text)
    with pytest.raises(InfraApplyError) as err:
        read_state(path, "old.tfstate")
    assert expected in err.value.format()
    assert err.value.format().startswith("old.tfstate")


def _resource(doc: dict[str, Any], rtype: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in doc["resources"] if (r["type"], r["name"]) == (rtype, name))
    return found


def test_a_broken_resource_is_named_by_its_place_in_the_document(old_root: OldRoot) -> None:
    doc = old_root.v4()
    index = doc["resources"].index(_resource(doc, "digitalocean_droplet", "web"))
    del _resource(doc, "digitalocean_droplet", "web")["instances"][0]["attributes"]["name"]
    with pytest.raises(InfraApplyError) as err:
        parse_state(json.dumps(doc), "old.tfstate")
    assert err.value.format() == (
        f"old.tfstate: error from_state: at resources[{index}].instances[0].attributes: 'name' is missing"
    )

    doc = old_root.v4()
    _resource(doc, "digitalocean_droplet", "web")["instances"][0]["attributes"]["id"] = "web-1"
    with pytest.raises(InfraApplyError, match="droplet id 'web-1' is not a number"):
        parse_state(json.dumps(doc), "old.tfstate")

    shown = json.loads(old_root.shown)
    resources = shown["values"]["root_module"]["resources"]
    index = next(i for i, r in enumerate(resources) if r["type"] == "digitalocean_database_db")
    resources[index]["values"]["cluster_id"] = 7
    with pytest.raises(InfraApplyError) as err:
        parse_state(json.dumps(shown), "shown.json")
    assert err.value.format() == (
        f"shown.json: error from_state: at values.root_module.resources[{index}].values.cluster_id: "
        "expected a string, found a number"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", 'web" {}\nresource "x" "y'),  # would break out of a `removed { from = ... }`
        ("type", "digitalocean droplet"),
        ("module", "module.a.resource.b"),
        ("module", "module.a."),
        ("module", 'module.a["unterminated]'),
    ],
)
def test_a_state_cannot_smuggle_hcl_through_an_address(old_root: OldRoot, field: str, value: str) -> None:
    doc = old_root.v4()
    _resource(doc, "digitalocean_droplet", "web")[field] = value
    with pytest.raises(InfraApplyError, match=r"is not a (Terraform name|module address)"):
        parse_state(json.dumps(doc), "old.tfstate")


def test_unreadable_and_non_utf8_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(InfraApplyError, match="cannot read the old state"):
        read_state(tmp_path / "missing.tfstate")
    (tmp_path / "latin1.tfstate").write_bytes(b'{"version": 4, "x": "\xe9"}')
    with pytest.raises(InfraApplyError, match="not UTF-8"):
        read_state(tmp_path / "latin1.tfstate")


def test_an_empty_state_in_every_format(terraform: Terraform, tmp_path: Path) -> None:
    root = terraform.root(tmp_path / "empty", new_cloud(tmp_path), {})
    root.tf("apply", "-auto-approve", "-no-color", "-input=false")
    for text in (root.tf("show", "-json").stdout, root.tf("state", "pull").stdout):
        assert parse_state(text, "empty").resources == ()


MODULES_MAIN = """
module "m" {
  source   = "./mod"
  for_each = toset(["a", "we\\"ird"])
}

module "o" {
  source = "./outer"
}

resource "terraform_data" "c" {
  count = 2
  input = count.index
}

resource "terraform_data" "k" {
  for_each = toset(["p.q", "r"])
  input    = each.key
}
"""
MODULE_X = 'resource "terraform_data" "x" {\n  input = "a"\n}\n'
OUTER = 'module "inner" {\n  source = "../mod"\n  count  = 1\n}\n'


def test_module_paths_and_instance_keys_match_terraform_and_removed_takes_them(tmp_path: Path) -> None:
    """Addresses as Terraform prints them; `removed` accepts each resource address (keys stripped)
    and forgets every instance without destroying one."""
    (tmp_path / "mod").mkdir()
    (tmp_path / "outer").mkdir()
    (tmp_path / "main.tf").write_text(MODULES_MAIN)
    (tmp_path / "mod" / "main.tf").write_text(MODULE_X)
    (tmp_path / "outer" / "main.tf").write_text(OUTER)
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_CLI_CONFIG_FILE": os.devnull}

    def tf(*args: str) -> str:
        r = subprocess.run(
            ["terraform", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 0, r.stderr
        return r.stdout

    tf("init", "-input=false", "-no-color")
    tf("apply", "-auto-approve", "-input=false", "-no-color")
    shown = tf("show", "-json")
    state = parse_state(shown, "shown.json")
    assert _records(state) == _records(read_state(tmp_path / "terraform.tfstate"))

    def addresses(module: dict[str, Any]) -> list[str]:
        found = [r["address"] for r in module.get("resources", [])]
        return found + [a for child in module.get("child_modules", []) for a in addresses(child)]

    assert sorted(r.address for r in state.resources) == sorted(
        addresses(json.loads(shown)["values"]["root_module"])
    )
    assert 'module.m["we\\"ird"].terraform_data.x' in {r.address for r in state.resources}
    froms = sorted({r.resource_address for r in state.resources})
    assert froms == [
        "module.m.terraform_data.x",
        "module.o.module.inner.terraform_data.x",
        "terraform_data.c",
        "terraform_data.k",
    ]
    # The runbook in the old root: delete the resource blocks, add the removed blocks.
    (tmp_path / "mod" / "main.tf").write_text("")
    (tmp_path / "main.tf").write_text(MODULES_MAIN.split('resource "terraform_data" "c"')[0])
    (tmp_path / "removed.tf").write_text("".join("\n" + removed_block(a) for a in froms))
    tf("plan", "-input=false", "-no-color", "-out=plan.bin")
    plan = json.loads(tf("show", "-json", "plan.bin"))
    actions = {rc["address"]: rc["change"]["actions"] for rc in plan["resource_changes"]}
    assert actions == {r.address: ["forget"] for r in state.resources}


# --- matching -----------------------------------------------------------------------------------


def test_takeover_matches_the_old_root_to_the_manifests(old_root: OldRoot, tmp_path: Path) -> None:
    t = takeover(parse_state(old_root.shown, "old/terraform.tfstate"), tmp_path, old_root)
    got = ids(old_root)
    cluster_id = got["cluster"]
    assert [(x.old.address, x.address, x.import_id, x.name) for x in t.taken_over] == [
        (
            "digitalocean_database_db.ledger",
            "digitalocean_database_db.uvlava-pg__ledger",
            f"{cluster_id},ledger",
            "ledger",
        ),
        (
            "digitalocean_database_user.ledger",
            "digitalocean_database_user.uvlava-pg__ledger_app",
            f"{cluster_id},ledger_app",
            "ledger_app",
        ),
        (
            "digitalocean_droplet.api[0]",
            "digitalocean_droplet.ct_api",
            got["com.uvlava.ct.api"],
            "com.uvlava.ct.api",
        ),
        (
            "digitalocean_droplet.web",
            "digitalocean_droplet.ct_services",
            got["com.uvlava.ct.services"],
            "com.uvlava.ct.services",
        ),
        ("digitalocean_firewall.api", "digitalocean_firewall.ct_api", got["old-api"], "com.uvlava.ct.api"),
        (
            "digitalocean_firewall.web",
            "digitalocean_firewall.ct_services",
            got["old-web"],
            "com.uvlava.ct.services",
        ),
    ]
    assert [r.address for r in t.left] == ["digitalocean_droplet.box[0]"]
    assert (t.absent, t.findings, t.ok) == ((), (), True)
    assert t.removed_from() == (
        "digitalocean_database_db.ledger",
        "digitalocean_database_user.ledger",
        "digitalocean_droplet.api",
        "digitalocean_droplet.web",
        "digitalocean_firewall.api",
        "digitalocean_firewall.web",
    )
    doc = t.to_json()
    assert json.loads(json.dumps(doc)) == doc
    assert doc["left_in_old_root"] == [
        {"kind": "droplet", "name": "legacy-box", "address": "digitalocean_droplet.box[0]"}
    ]
    assert doc["taken_over"][2] == {
        "kind": "droplet",
        "name": "com.uvlava.ct.api",
        "from": "digitalocean_droplet.api[0]",
        "to": "digitalocean_droplet.ct_api",
        "import_id": got["com.uvlava.ct.api"],
    }
    text = t.to_text()
    assert "taken over (6):" in text
    assert (
        f"  digitalocean_droplet.web -> digitalocean_droplet.ct_services  (droplet "
        f'"com.uvlava.ct.services", import id "{got["com.uvlava.ct.services"]}")'
    ) in text
    assert '  digitalocean_droplet.box[0]  (droplet "legacy-box")' in text


def test_what_the_manifests_declare_beyond_the_old_state_is_reported_absent(
    old_root: OldRoot, tmp_path: Path
) -> None:
    files = copy.deepcopy(TREE)
    files["@ct/.infra.yaml"]["droplets"].append(droplet("com.uvlava.ct.new", ["mango"]))
    files["@ct/billing/.infra.yaml"] = project(
        "billing", database={"cluster": CLUSTER, "name": "billing", "user": "billing_app"}
    )
    t = takeover(parse_state(old_root.raw, "old"), tmp_path, old_root, files)
    assert [(a.address, a.name, a.source) for a in t.absent] == [
        ("digitalocean_database_db.uvlava-pg__billing", "billing", "@ct/billing/.infra.yaml"),
        ("digitalocean_database_user.uvlava-pg__billing_app", "billing_app", "@ct/billing/.infra.yaml"),
        ("digitalocean_droplet.ct_new", "com.uvlava.ct.new", "@ct/.infra.yaml"),
        ("digitalocean_firewall.ct_new", "com.uvlava.ct.new", "@ct/.infra.yaml"),
    ]
    assert t.ok and len(t.taken_over) == 6
    assert "declared but not in the old state: the next apply creates them (4):" in t.to_text()


def test_import_and_removed_files_are_terraform_fmt_clean(old_root: OldRoot, tmp_path: Path) -> None:
    doc = old_root.v4()
    # Hostile values from a state: a firewall id with quotes, a newline and an interpolation;
    # a for_each key that would end a comment line.
    _resource(doc, "digitalocean_firewall", "web")["instances"][0]["attributes"]["id"] = 'fw"\n}${x}%{y}\\'
    web = _resource(doc, "digitalocean_droplet", "web")
    web["module"] = 'module.hand["x\\n}\\nresource \\"evil\\" \\"e\\" {"]'
    fw = _resource(doc, "digitalocean_firewall", "web")
    fw["module"] = web["module"]
    t = takeover(parse_state(json.dumps(doc), "old"), tmp_path / "tree", old_root)
    assert t.ok and {f.rule for f in t.findings} == {"in_module"}
    out = tmp_path / "hcl"
    out.mkdir()
    (out / "imports.tf").write_text(import_file(t))
    (out / "removed.tf").write_text(removed_file(t))
    r = subprocess.run(
        ["terraform", "fmt", "-check", "-diff", str(out)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr
    imports = (out / "imports.tf").read_text()
    # The hostile key stays inside one comment line: every line is a comment or import syntax.
    assert imports.count("import {") == 6
    assert all(
        line.startswith(("#", "  to = ", "  id = ")) or line in ("", "import {", "}")
        for line in imports.splitlines()
    )
    assert 'id = "fw\\"\\n}$${x}%%{y}\\\\"' in imports
    assert "removed {\n  from = module.hand.digitalocean_droplet.web\n" in (out / "removed.tf").read_text()


# --- end to end with real Terraform -----------------------------------------------------------


def _changes(plan: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {rc["address"]: rc["change"] for rc in plan.get("resource_changes", []) if rc["mode"] == "managed"}


def test_import_then_removed_takes_over_without_replacing_or_destroying(
    old_root: OldRoot, terraform: Terraform, tmp_path: Path
) -> None:
    one_of_each = {"droplets": 3, "firewalls": 2, "databases": 1, "users": 1}
    assert old_root.cloud_counts() == one_of_each
    producer, rendered = model(tmp_path / "tree")
    t = plan_takeover(
        read_state(old_root.root.path / "terraform.tfstate"),
        producer,
        rendered.droplet_addresses,
        clusters(old_root.root.cloud),
    )
    assert t.ok

    # infra-apply's root: the rendered module plus the import file.
    tf_files = {name: text for name, text in rendered.files.items() if name.endswith(".tf")}
    new = terraform.root(tmp_path / "new", old_root.root.cloud, {**tf_files, "imports.tf": import_file(t)})
    changes = _changes(new.plan())
    assert {a for a, c in changes.items() if c.get("importing")} == {x.address for x in t.taken_over}
    # nothing replaced or destroyed; created: only each droplet's public firewall (the old
    # firewall is its own firewall now, docs/security.md)
    assert {a: c["actions"] for a, c in changes.items() if c["actions"] not in (["no-op"], ["update"])} == {
        "digitalocean_firewall.ct_api__public": ["create"],
        "digitalocean_firewall.ct_services__public": ["create"],
    }
    new.apply_plan()
    taken_over = {**one_of_each, "firewalls": 4}
    assert old_root.cloud_counts() == taken_over
    assert new.no_changes()

    # The old root: with its blocks still there, Terraform refuses the removed file ...
    old = old_root.root
    (old.path / "removed.tf").write_text(removed_file(t))
    refused = old.tf("plan", "-no-color", "-input=false", codes=(1,))
    assert "Removed resource still exists" in refused.stderr
    # ... and once they are deleted (the runbook), it forgets them and destroys nothing.
    kept = {a: b for a, b in OLD_ROOT.items() if a not in t.removed_from()}
    old.write({"main.tf": "".join(kept.values()), "removed.tf": removed_file(t)})
    changes = _changes(old.plan())
    forgotten = {a for a, c in changes.items() if c["actions"] == ["forget"]}
    assert forgotten == {x.old.address for x in t.taken_over}
    assert all(c["actions"] in (["no-op"], ["forget"]) for c in changes.values())
    old.apply_plan()
    assert old.no_changes() and new.no_changes()
    assert old_root.cloud_counts() == taken_over
    left = json.loads(old.tf("show", "-json").stdout)["values"]["root_module"]["resources"]
    assert sorted(r["address"] for r in left if r["mode"] == "managed") == ["digitalocean_droplet.box[0]"]


# --- forced replacements ----------------------------------------------------------------------

REPLACE_ROOT = "".join(
    [
        _droplet_tf("retired", "com.uvlava.ct.services").replace('"ubuntu-24-04-x64"', '"112233"'),
        _droplet_tf("watched", "com.uvlava.ct.api", "  monitoring = true\n"),
        _droplet_tf("v6", "com.uvlava.ct.edge", "  ipv6 = true\n"),
        _droplet_tf("far", "com.uvlava.ct.far", '  region = "sfo3"\n'),
        _droplet_tf("eu", "com.uvlava.ct.eu", '  region = "fra1"\n'),
    ]
)


def _replace_tree(
    services: Mapping[str, Any] | None = None, eu: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "@ct/.infra.yaml": producer_root(
            "ct",
            droplet("com.uvlava.ct.services", ["lime"], **(services or {})),
            droplet("com.uvlava.ct.api", ["kiwi"]),
            droplet("com.uvlava.ct.edge", ["edge"]),
            droplet("com.uvlava.ct.far", ["far"]),
            droplet("com.uvlava.ct.eu", ["eu"], **(eu or {})),
        ),
        "@ct/app/.infra.yaml": project("app"),
    }


@pytest.fixture(scope="module")
def replace_world(terraform: Terraform, tmp_path_factory: pytest.TempPathFactory) -> Root:
    base = tmp_path_factory.mktemp("replace-world")
    root = terraform.root(base / "old", new_cloud(base), {"main.tf": REPLACE_ROOT})
    root.tf("apply", "-auto-approve", "-no-color", "-input=false")
    return root


def _replaced(terraform: Terraform, root: Root, folder: Path, t: Takeover, rendered: Rendered) -> set[str]:
    """What real Terraform would replace if the takeover's imports were applied anyway."""
    tf_files = {name: text for name, text in rendered.files.items() if name.endswith(".tf")}
    imports = "".join(import_block(x.address, x.import_id) for x in t.taken_over)
    new = terraform.root(folder, root.cloud, {**tf_files, "imports.tf": imports})
    changes = _changes(new.plan())
    assert all(c.get("importing") for a, c in changes.items() if a.startswith("digitalocean_droplet."))
    return {a for a, c in changes.items() if set(c["actions"]) == {"create", "delete"}}


def test_forced_replacements_are_named_before_anything_is_written(
    replace_world: Root, terraform: Terraform, tmp_path: Path
) -> None:
    state = read_state(replace_world.path / "terraform.tfstate")
    producer, rendered = model(tmp_path / "tree", _replace_tree())
    t = plan_takeover(state, producer, rendered.droplet_addresses, clusters(replace_world.cloud))
    assert not t.ok
    found = {(f.address, f.rule): f for f in t.findings}
    assert set(found) == {
        ("digitalocean_droplet.retired", "forced_replace"),
        ("digitalocean_droplet.v6", "forced_replace"),
        ("digitalocean_droplet.far", "forced_replace"),
        ("digitalocean_droplet.eu", "forced_replace"),
    }
    retired = found["digitalocean_droplet.retired", "forced_replace"]
    assert retired.message == (
        "the droplet's image is the numeric image id 112233 (its slug is retired, or it was built from a "
        "snapshot or custom image), the manifest says ubuntu-24-04-x64 (the default): an image change "
        "replaces the droplet"
    )
    assert retired.fix.startswith(
        'set `image: "112233"` on droplet "com.uvlava.ct.services" in @ct/.infra.yaml'
    )
    assert found["digitalocean_droplet.eu", "forced_replace"].fix.startswith("set `region: fra1`")
    assert "the manifest cannot say sfo3" in found["digitalocean_droplet.far", "forced_replace"].fix
    # monitoring is ForceNew but in ignore_changes: a droplet with it on is taken over as it is
    assert "digitalocean_droplet.watched" in {x.old.address for x in t.taken_over}
    assert "ipv6 is on" in found["digitalocean_droplet.v6", "forced_replace"].message
    # Nothing can be written for a takeover with errors.
    for build in (import_file, removed_file):
        with pytest.raises(TakeoverRefused, match="4 problem"):
            build(t)
    text = t.to_text()
    assert "to take over once the errors below are fixed (5):" in text
    assert "nothing written: fix the errors above" in text
    # The detection is what Terraform itself would do: exactly these droplets get replaced.
    new_address = {x.old.address: x.address for x in t.taken_over}
    assert _replaced(terraform, replace_world, tmp_path / "new", t, rendered) == {
        new_address[f.address] for f in t.errors
    }


def test_following_the_named_fix_removes_the_forced_replacement(
    replace_world: Root, terraform: Terraform, tmp_path: Path
) -> None:
    """The fixes the report names validate as manifests, and Terraform then plans no replacement."""
    state = read_state(replace_world.path / "terraform.tfstate")
    fixed = _replace_tree(services={"image": "112233"}, eu={"region": "fra1"})
    producer, rendered = model(tmp_path / "tree", fixed)  # asserts the tree validates
    t = plan_takeover(state, producer, rendered.droplet_addresses, clusters(replace_world.cloud))
    assert {f.address for f in t.errors} == {"digitalocean_droplet.v6", "digitalocean_droplet.far"}
    new_address = {x.old.address: x.address for x in t.taken_over}
    assert _replaced(terraform, replace_world, tmp_path / "new", t, rendered) == {
        new_address[f.address] for f in t.errors
    }


def test_a_slug_retired_since_the_old_root_created_the_droplet_shows_in_the_live_image(
    old_root: OldRoot, tmp_path: Path
) -> None:
    """The old state keeps the slug it was created with; an import records what the API says now."""
    state = parse_state(old_root.raw, "old")
    droplet_id = ids(old_root)["com.uvlava.ct.services"]
    t = takeover(state, tmp_path, old_root, live_images={droplet_id: "987654"})
    assert [(f.address, f.rule) for f in t.errors] == [("digitalocean_droplet.web", "forced_replace")]
    assert 'set `image: "987654"`' in t.errors[0].fix


# --- what cannot be taken over as it is -----------------------------------------------------


def _instance(doc: dict[str, Any], rtype: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = _resource(doc, rtype, name)["instances"][0]
    return found


def test_part_of_a_counted_resource_cannot_be_forgotten_alone(old_root: OldRoot, tmp_path: Path) -> None:
    doc = old_root.v4()
    box = _resource(doc, "digitalocean_droplet", "box")
    second = copy.deepcopy(box["instances"][0])
    second["index_key"] = 1
    second["attributes"] |= {"id": "9999", "name": "com.uvlava.ct.api"}
    box["instances"].append(second)
    doc["resources"].remove(_resource(doc, "digitalocean_droplet", "api"))
    doc["resources"].remove(_resource(doc, "digitalocean_firewall", "api"))
    t = takeover(parse_state(json.dumps(doc), "old"), tmp_path, old_root)
    assert [(f.level, f.rule, f.address) for f in t.errors] == [
        ("error", "partial_resource", "digitalocean_droplet.box")
    ]
    assert "would also forget digitalocean_droplet.box[0]" in t.errors[0].message
    with pytest.raises(TakeoverRefused):
        removed_file(t)


def test_ambiguous_names_and_unknown_clusters_block(old_root: OldRoot, tmp_path: Path) -> None:
    doc = old_root.v4()
    _instance(doc, "digitalocean_droplet", "box")["attributes"]["name"] = "com.uvlava.ct.api"
    _instance(doc, "digitalocean_database_user", "ledger")["attributes"]["cluster_id"] = "gone-cluster"
    t = takeover(parse_state(json.dumps(doc), "old"), tmp_path, old_root)
    assert sorted((f.rule, f.address) for f in t.errors) == [
        ("ambiguous", "digitalocean_droplet.api[0]"),
        ("unknown_cluster", "digitalocean_database_user.ledger"),
    ]
    assert (
        "2 droplets of the old root are named" in next(f for f in t.errors if f.rule == "ambiguous").message
    )
    # neither is taken over: both stay in the old root
    assert {"digitalocean_droplet.api[0]", "digitalocean_database_user.ledger"} <= {r.address for r in t.left}


def test_an_on_demand_gpu_droplet_is_never_taken_over(old_root: OldRoot, tmp_path: Path) -> None:
    producer, rendered = model(tmp_path)
    gpu = [
        dataclasses.replace(d, gpu=True) if d.name == "com.uvlava.ct.api" else d for d in producer.droplets
    ]
    t = plan_takeover(
        parse_state(old_root.raw, "old"),
        dataclasses.replace(producer, droplets=tuple(gpu)),
        rendered.droplet_addresses,
        clusters(old_root.root.cloud),
    )
    assert [(f.rule, f.address) for f in t.errors] == [("gpu_droplet", "digitalocean_droplet.api[0]")]


def test_firewalls_that_do_not_cover_one_droplet_stay_and_are_named(
    old_root: OldRoot, tmp_path: Path
) -> None:
    doc = old_root.v4()
    got = ids(old_root)
    both = [int(got["com.uvlava.ct.services"]), int(got["com.uvlava.ct.api"])]
    _instance(doc, "digitalocean_firewall", "api")["attributes"]["droplet_ids"] = both
    _instance(doc, "digitalocean_firewall", "web")["attributes"]["tags"] = ["web"]
    t = takeover(parse_state(json.dumps(doc), "old"), tmp_path, old_root)
    assert t.ok
    assert [(f.level, f.rule, f.address) for f in t.findings] == [
        ("warning", "depends_on_taken", "digitalocean_firewall.api"),  # its droplet_ids refer to them
        ("warning", "shared_firewall", "digitalocean_firewall.api"),
        ("warning", "firewall_tags", "digitalocean_firewall.web"),
    ]
    assert "its rules keep applying to the taken-over droplet(s)" in t.findings[1].message
    assert [a.address for a in t.absent] == ["digitalocean_firewall.ct_api"]
    assert "digitalocean_firewall.api" in {r.address for r in t.left}


def test_warnings_for_the_old_root_do_not_block(old_root: OldRoot, tmp_path: Path) -> None:
    doc = old_root.v4()
    _instance(doc, "digitalocean_droplet", "web")["status"] = "tainted"
    _instance(doc, "digitalocean_droplet", "api")["attributes"]["size"] = "s-1vcpu-1gb"
    _instance(doc, "digitalocean_droplet", "box")["dependencies"] = ["digitalocean_droplet.web"]
    deposed = copy.deepcopy(_instance(doc, "digitalocean_droplet", "web"))
    deposed["deposed"] = "00000001"
    _resource(doc, "digitalocean_droplet", "web")["instances"].append(deposed)
    t = takeover(parse_state(json.dumps(doc), "old"), tmp_path, old_root)
    assert t.ok
    assert [(f.rule, f.address) for f in t.findings] == [
        ("resize", "digitalocean_droplet.api[0]"),
        ("depends_on_taken", "digitalocean_droplet.box[0]"),
        ("deposed", "digitalocean_droplet.web"),
        ("tainted", "digitalocean_droplet.web"),
    ]
    assert (
        t.findings[0].fix
        == 'to keep it as it is, set `size: s-1vcpu-1gb` on droplet "com.uvlava.ct.api" in @ct/.infra.yaml'
    )


def test_bad_inputs_never_reach_the_files() -> None:
    with pytest.raises(InfraApplyError, match="not a Terraform resource address"):
        import_block("digitalocean_droplet.x\n}\nimport {", "1")
    with pytest.raises(InfraApplyError, match="not a Terraform resource address"):
        removed_block("digitalocean_droplet.x[0]")


@pytest.mark.parametrize(
    "nested",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"version": 4, "resources": [{"mode": "managed", "instances": [{"attributes": '
        + '{"a": ' * 5000
        + "1"
        + "}" * 5000
        + "}]}]}",
    ],
)
def test_a_deeply_nested_old_state_is_one_line(tmp_path: Path, nested: str) -> None:
    path = tmp_path / "old.tfstate"
    path.write_text(nested)
    with pytest.raises(InfraApplyError) as caught:
        read_state(path)
    line = caught.value.format()
    assert "\n" not in line and "nested too deeply" in line and line.startswith(str(path))


def test_values_of_the_old_state_cannot_forge_a_report_line(old_root: OldRoot, tmp_path: Path) -> None:
    """A size with a newline forged a "taken over" line; an image with an OSC escape reached the
    terminal. Each finding stays its one line (and its fix line), escapes shown escaped."""
    doc = old_root.v4()
    _instance(doc, "digitalocean_droplet", "api")["attributes"]["size"] = "s-1\ntaken over (9):\n  forged"
    _instance(doc, "digitalocean_droplet", "web")["attributes"]["image"] = "\x1b]0;pwned\x07x"
    t = takeover(parse_state(json.dumps(doc), "old\nstate"), tmp_path, old_root)
    text = format_text(t)
    lines = text.split("\n")[:-1]
    assert all(line.isprintable() for line in lines)
    assert not any(line.startswith(("taken over (9)", "  forged")) for line in lines)
    assert lines[0] == "takeover for producer ct from old\\nstate"
    assert any("size is s-1\\ntaken over (9):\\n  forged, the manifest says" in line for line in lines)
    assert any("\\x1b]0;pwned\\x07x" in line for line in lines)
    with pytest.raises(InfraApplyError) as refused:
        import_file(t)
    assert "\n" not in refused.value.format() and "\x1b" not in refused.value.format()
