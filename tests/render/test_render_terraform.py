"""Generated modules checked by real Terraform against the sandbox provider, and against the
provider facts copied from do-provider-schema.json (tests/fixtures/do_provider_facts.json)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from infra_apply.cloud.account import SandboxAccount
from infra_apply.commands.plan import plan_one
from infra_apply.errors import ValidationFailed
from infra_apply.manifests import config
from infra_apply.runtime import workcopy
from infra_apply.sandbox import cloud
from infra_apply.sandbox.install import install
from tests.conftest import EXAMPLE_TREE, REPO, TESTS, cli_env, droplet, producer_root, project, write_tree

FACTS = json.loads((TESTS / "fixtures" / "do_provider_facts.json").read_text())
PRODUCERS = sorted(p.name for p in (REPO / "generated").iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    state = tmp_path_factory.mktemp("state")
    env = {k: v for k, v in os.environ.items() if k != "TF_PLUGIN_CACHE_DIR"}
    account = config.load(EXAMPLE_TREE, {}).sandbox  # the clusters and SSH keys the example needs
    return {**env, **install(state, account.clusters, account.ssh_keys).env}


@pytest.fixture(scope="module")
def planned(sandbox: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """terraform init + validate + plan + show -json for every committed producer module."""
    out = {}
    for producer in PRODUCERS:
        work = tmp_path_factory.mktemp(producer)
        # The whole module: its .tf files and the user-data files they read with file().
        shutil.copytree(REPO / "generated" / producer, work, dirs_exist_ok=True)

        def run(*args: str, work: Path = work) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["terraform", *args], cwd=work, env=sandbox, capture_output=True, text=True)

        assert run("init", "-input=false").returncode == 0
        validated = run("validate", "-json")
        assert json.loads(validated.stdout)["valid"], validated.stdout
        assert run("plan", "-input=false", "-out=p").returncode == 0
        out[producer] = json.loads(run("show", "-json", "p").stdout)
    return out


@pytest.mark.parametrize("producer", PRODUCERS)
def test_generated_module_inits_validates_and_plans(
    planned: dict[str, dict[str, Any]], producer: str
) -> None:
    changes = planned[producer]["resource_changes"]
    assert changes and all(rc["change"]["actions"] in (["create"], ["no-op"], ["read"]) for rc in changes)


def test_a_golden_module_applies_with_keys_monitoring_and_user_data(
    sandbox: dict[str, str], tmp_path: Path
) -> None:
    """generated/mc as committed, applied in the sandbox: its droplet carries the SSH key ids the
    data source found, monitoring, and the user data exactly as generated/mc/user-data holds it."""
    work = tmp_path / "mc"
    shutil.copytree(REPO / "generated" / "mc", work)
    cloud_file = tmp_path / "cloud.json"
    shutil.copy(sandbox[cloud.ENV_VAR], cloud_file)  # a fresh account with the example's keys
    env = {**sandbox, cloud.ENV_VAR: str(cloud_file)}
    for args in (["init", "-input=false"], ["apply", "-auto-approve", "-input=false"]):
        done = subprocess.run(["terraform", *args], cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    [droplet_] = cloud.list_droplets(cloud_file)
    [key] = [k for k in cloud.list_ssh_keys(cloud_file) if k["name"] == "ops-2026"]
    assert droplet_["ssh_keys"] == [key["id"]] and droplet_["monitoring"] is True
    assert droplet_["user_data"] == (REPO / "generated" / "mc" / "user-data" / "base.yaml").read_text()


def _expressions(module: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for r in module.get("resources", []):
        yield r["mode"], r["type"], r.get("expressions", {})


def _check_block(where: str, schema: dict[str, Any], expressions: dict[str, Any]) -> list[str]:
    problems = []
    for key, expr in expressions.items():
        if key in schema["block_types"]:
            for block in expr:
                problems += _check_block(f"{where}.{key}", schema["block_types"][key]["block"], block)
            continue
        attr = schema["attributes"].get(key)
        if attr is None:
            problems.append(f"{where}.{key}: not an attribute of the real provider")
        elif not (attr.get("required") or attr.get("optional")):
            problems.append(f"{where}.{key}: computed-only in the real provider, cannot be set")
        elif "constant_value" in expr and not _compatible(attr["type"], expr["constant_value"]):
            problems.append(f"{where}.{key}: {expr['constant_value']!r} does not fit {attr['type']}")
    missing = [a for a, spec in schema["attributes"].items() if spec.get("required") and a not in expressions]
    problems += [f"{where}: required attribute {a} missing" for a in missing]
    return problems


def _compatible(kind: Any, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(kind, list) and kind[0] in ("set", "list"):
        return isinstance(value, list) and all(_compatible(kind[1], v) for v in value)
    return False


def test_every_emitted_type_and_attribute_exists_in_the_real_provider(
    planned: dict[str, dict[str, Any]],
) -> None:
    problems: list[str] = []
    seen = set()
    for doc in planned.values():
        for mode, rtype, expressions in _expressions(doc["configuration"]["root_module"]):
            table = FACTS["resource_schemas"] if mode == "managed" else FACTS["data_source_schemas"]
            assert rtype in table, f"{mode} {rtype} is not a type of the real provider"
            seen.add(rtype)
            problems += _check_block(rtype, table[rtype], expressions)
    assert problems == []
    assert seen == {
        "digitalocean_droplet",
        "digitalocean_firewall",
        "digitalocean_database_db",
        "digitalocean_database_user",
        "digitalocean_database_firewall",
        "digitalocean_database_cluster",
        "digitalocean_ssh_key",
    }


def test_droplets_ignore_the_attributes_do_never_reads_back(planned: dict[str, dict[str, Any]]) -> None:
    for producer in PRODUCERS:
        text = (REPO / "generated" / producer / "droplets.tf").read_text()
        ignored = "ignore_changes = [name, ssh_keys, user_data, monitoring, vpc_uuid]"
        assert text.count(ignored) == text.count("resource ")


# --- hostile strings ------------------------------------------------------------------------

HOSTILE = st.one_of(
    st.sampled_from(
        [
            "${path.module}",
            "%{ if true }x%{ endif }",
            '"; } resource "x" "y" { #',
            "a\\",
            "\\${x}",
            "$${x}",
            "line\nbreak",
            "tab\there",
            "\u202eevil",
            "é€😀",
            "",
            " ",
            "%%{x}",
            "${",
            "%{",
            "\x1b[31m",
            "*/ /*",
            "<<EOT\nx\nEOT",
        ]
    ),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
)


# Values the slug and tag checks let through, so the accepted path is exercised too.
SLUGGISH = st.from_regex(r"\A[a-z0-9][a-z0-9._-]{0,10}\Z")


class HostileTree:
    """One fixed folder rewritten per example, so Terraform's init is done once."""

    def __init__(self, base: Path) -> None:
        self.root = base / "root"
        self.ctx = workcopy.Context(
            root=self.root,
            out=base / "generated",
            account=SandboxAccount(),
            mesh_path=None,
            env=cli_env(base),
            say=lambda _: None,
        )

    def run(
        self,
        host: str,
        cluster: str,
        name: str,
        user: str,
        project_name: str,
        role: str,
        size: str,
        image: str,
    ) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        write_tree(
            self.root,
            {
                "@ct/.infra.yaml": producer_root(
                    "ct", droplet("com.uvlava.ct.box", [host], role=role, size=size, image=image)
                ),
                "@ct/app/.infra.yaml": project(
                    project_name,
                    service={"host": host},
                    database={"cluster": cluster, "name": name, "user": user},
                ),
            },
        )
        try:
            project_ = workcopy.load_project(self.ctx)
        except ValidationFailed as exc:
            errors = [p for p in exc.problems if p.level == "error"]
            assert errors and all(p.line >= 1 and p.col >= 1 and p.path for p in errors)
            return
        self.offer(cluster, size, image)
        [prep] = workcopy.prepare(self.ctx, project_, ["ct"])
        planned = plan_one(prep, lambda _: None)
        values = {
            r["address"]: r["values"] for r in planned.raw["planned_values"]["root_module"]["resources"]
        }
        db = next(v for a, v in values.items() if a.startswith("digitalocean_database_db."))
        usr = next(v for a, v in values.items() if a.startswith("digitalocean_database_user."))
        assert (db["name"], usr["name"]) == (name, user)
        box = values["digitalocean_droplet.ct_box"]
        assert (box["size"], box["image"]) == (size, image)
        assert f"role:{role}" in box["tags"]
        cluster_read = [
            r
            for r in planned.raw["prior_state"]["values"]["root_module"]["resources"]
            if r["type"] == "digitalocean_database_cluster"
        ]
        assert [r["values"]["name"] for r in cluster_read] == [cluster]
        prep.copy.apply()  # raises when Terraform fails
        output = prep.copy.output("droplets")
        assert isinstance(output, dict)
        assert output["com.uvlava.ct.box"]["hosts"] == [host]

    def offer(self, cluster: str, size: str, image: str) -> None:
        """The sandbox account has the cluster, size and image the manifests name: what is under
        test is how the strings reach Terraform (pre-flight is not run here)."""
        path = self.ctx.env["INFRA_APPLY_STATE_DIR"] + "/sandbox/cloud.json"
        cloud.seed(path, [cluster])
        with cloud.transaction(path) as c:
            offer = c["catalogue"]
            if size not in {s["slug"] for s in offer["sizes"]}:
                offer["sizes"].append({"slug": size, "available": True, "regions": ["nyc3"]})
            if image not in {i["slug"] for i in offer["images"]}:
                offer["images"].append({"slug": image})


@pytest.fixture(scope="module")
def hostile_tree(tmp_path_factory: pytest.TempPathFactory) -> HostileTree:
    return HostileTree(tmp_path_factory.mktemp("hostile"))


@settings(
    max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(
    host="${path.module}",
    cluster='pg"\\${x}',
    name="a\nb%{ if true }",
    user="$${u}",
    project_name="*/ \u202e",
    role="r",
    size="s-1vcpu-1gb",
    image="ubuntu-24-04-x64",
)
@example(
    host='"; } #',
    cluster="%%{x}",
    name="\\",
    user="é€😀",
    project_name="\n",
    role="a:b",
    size="gpu-x",
    image="123",
)
@given(
    host=HOSTILE,
    cluster=HOSTILE,
    name=HOSTILE,
    user=HOSTILE,
    project_name=HOSTILE,
    role=HOSTILE | SLUGGISH,
    size=HOSTILE | SLUGGISH,
    image=HOSTILE | SLUGGISH,
)
def test_hostile_strings_are_rejected_or_reach_terraform_verbatim(
    hostile_tree: HostileTree,
    host: str,
    cluster: str,
    name: str,
    user: str,
    project_name: str,
    role: str,
    size: str,
    image: str,
) -> None:
    hostile_tree.run(host, cluster, name, user, project_name, role, size, image)
