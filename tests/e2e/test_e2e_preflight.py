"""End to end in the sandbox: pre-flight stops a run at the manifest line before any Terraform
process starts; SSH keys, monitoring and user data reach a new droplet; a changed ForceNew
setting never replaces a running one."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from infra_apply.sandbox import cloud
from tests.conftest import run_cli
from tests.e2e.test_e2e_sandbox import Ops
from tests.runtime.test_terraform import calls, logging_terraform

TERRAFORM = shutil.which("terraform")
pytestmark = pytest.mark.skipif(TERRAFORM is None, reason="terraform is not on PATH")


class Watched(Ops):
    """The example tree, with a terraform that logs every call it gets."""

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.log = base / "terraform-calls.log"
        self.env["INFRA_APPLY_TERRAFORM"] = str(logging_terraform(base / "bin", self.log, str(TERRAFORM)))

    def refused(self, *args: str) -> list[str]:
        """Run a command that pre-flight must stop: exit 1, no Terraform process, no working
        copy; returns its error lines."""
        code, out, err = self.sandbox(*args)
        assert code == 1, out + err
        assert calls(self.log) == [], "a terraform process started"
        assert not (self.base / "state" / "work").exists()
        assert out == ""
        assert err.splitlines()[-1].startswith("infra-apply: pre-flight: ")
        assert err.splitlines()[-1].endswith(" against the sandbox account; nothing was done")
        return [line for line in err.splitlines() if " error " in line]


@pytest.fixture
def ops(example: Path) -> Watched:
    return Watched(example)


def fresh_account(ops: Watched) -> None:
    """No sandbox account yet: the edited configuration seeds it (not the example fixture)."""
    shutil.rmtree(ops.cloud.parent)


def test_a_missing_cluster_stops_plan_and_apply_at_the_manifest_line(ops: Watched) -> None:
    ops.edit("@mc/catalog/.infra.yaml", "cluster: uvlava-pg", "cluster: other-pg")
    expected = [
        "@mc/catalog/.infra.yaml:5:12: error preflight: database cluster 'other-pg' is not in the "
        "sandbox account (clusters: uvlava-pg)"
    ]
    assert ops.refused("plan", "--producer", "mc") == expected
    assert ops.refused("apply", "--producer", "mc", "--auto-approve") == expected
    assert ops.refused("plan") == expected  # every producer: the others are not planned either
    # validate --live says the same, with the other problems of the tree
    code, out, _ = ops.run("validate", "--live", "--sandbox")
    assert code == 1 and expected[0] in out.splitlines()
    code, out, _ = ops.run("validate", "--live", "--sandbox", "--format", "json")
    problems = json.loads(out)["problems"]
    assert {
        "path": "@mc/catalog/.infra.yaml",
        "line": 5,
        "col": 12,
        "level": "error",
        "rule": "preflight",
        "message": expected[0].split(": error preflight: ")[1],
    } in problems
    assert calls(ops.log) == []


def test_the_sandbox_no_longer_makes_clusters_on_demand(ops: Watched) -> None:
    fresh_account(ops)
    ops.edit("infra-apply.toml", 'clusters = ["uvlava-pg"]', 'clusters = ["main-pg"]')
    manifest, trusted = ops.refused("plan", "--producer", "quinn")
    missing = "error preflight: database cluster 'uvlava-pg'"
    assert manifest.startswith(f"@quinn/auth-svc/.infra.yaml:5:12: {missing}")
    # quinn also owns the cluster's trusted sources: located at their [clusters."uvlava-pg"] line
    assert trusted.startswith(f"infra-apply.toml:19:1: {missing}")
    assert [c["name"] for c in cloud.list_clusters(ops.cloud)] == ["main-pg"]


def test_an_unknown_size_stops_the_run(ops: Watched) -> None:
    ops.edit("@quinn/.infra.yaml", "size: s-4vcpu-8gb", "size: s-4vcpu-16gb")
    [line] = ops.refused("plan", "--producer", "quinn")
    assert line.startswith(
        "@quinn/.infra.yaml:9:11: error preflight: droplet 'com.uvlava.quinn.artifacts': size 's-4vcpu-16gb' "
        "does not exist in the sandbox account"
    )


def test_an_unknown_image_stops_the_run(ops: Watched) -> None:
    ops.edit("@quinn/.infra.yaml", "role: dns\n", "role: dns\n    image: ubuntu-20-04-x64\n")
    [line] = ops.refused("apply", "--producer", "quinn", "--auto-approve")
    assert line.startswith(
        "@quinn/.infra.yaml:26:12: error preflight: droplet 'com.uvlava.dns': image 'ubuntu-20-04-x64' "
        "does not exist in the sandbox account"
    )


def test_a_region_the_account_does_not_offer_stops_the_run(ops: Watched) -> None:
    assert ops.run("validate", "--live", "--sandbox")[0] == 0  # makes the sandbox account
    with cloud.transaction(ops.cloud) as c:  # as if DigitalOcean retired fra1
        c["catalogue"]["regions"] = [r for r in c["catalogue"]["regions"] if r["slug"] != "fra1"]
    [line] = ops.refused("plan", "--producer", "mc")
    assert line == (
        "@mc/.infra.yaml:7:13: error preflight: droplet 'com.uvlava.mc.services': region 'fra1' does not "
        "exist in the sandbox account"
    )


def test_an_ssh_key_the_account_lacks_stops_the_run_at_the_config_line(ops: Watched) -> None:
    fresh_account(ops)
    ops.edit("infra-apply.toml", "[sandbox]", '[sandbox]\nssh_keys = ["ops-2026"]')
    [line] = ops.refused("plan", "--producer", "ct")
    assert line == (
        "infra-apply.toml:10:1: error preflight: SSH key 'ct-deploy' is not in the sandbox account "
        "(keys: ops-2026)"
    )
    # a producer that does not use that key plans
    assert ops.sandbox("plan", "--producer", "mc")[0] == 2


def test_a_gpu_is_planned_in_its_configured_region_and_with_gpu_is_gone(ops: Watched) -> None:
    # [gpu."com.uvlava.ct.gpu"] of the example tree: nyc2, where DigitalOcean offers it (the
    # standing hosts' nyc3 has no GPU, which used to warn on every plan)
    code, _, err = ops.sandbox("plan", "--producer", "ct")
    assert code == 2 and "preflight" not in err
    code, out, err = ops.sandbox("plan", "--producer", "ct", "--with-gpu", "com.uvlava.ct.gpu")
    assert (code, out) == (1, "")
    assert (
        "--with-gpu was removed: a GPU is kept on by its lease; run infra-apply gpu up com.uvlava.ct.gpu"
        in err
    )


def test_gpu_up_of_a_gpu_its_region_does_not_offer_leaves_no_lease(ops: Watched) -> None:
    assert ops.run("validate", "--live", "--sandbox")[0] == 0  # makes the sandbox account
    with cloud.transaction(ops.cloud) as c:  # as if DigitalOcean stopped offering H100s in nyc2
        for size in c["catalogue"]["sizes"]:
            if size["slug"] == "gpu-h100x1-80gb":
                size["regions"] = ["tor1"]
    code, out, err = ops.sandbox("gpu", "up", "com.uvlava.ct.gpu")
    # only the lease store's Terraform ran (init, output): no plan of the producer
    assert (code, out) == (1, ""), err
    assert [c["command"] for c in calls(ops.log) if c["command"] in ("plan", "apply")] == []
    [line] = [line for line in err.splitlines() if " error " in line]
    assert "size 'gpu-h100x1-80gb' is not offered in region 'nyc2' (offered in: tor1)" in line
    code, out, _ = ops.sandbox("gpu", "status")
    assert code == 0 and out.splitlines()[1].split()[:3] == ["com.uvlava.ct.gpu", "ct", "down"]


def test_new_droplets_carry_the_keys_monitoring_and_user_data_verbatim(ops: Watched) -> None:
    # ${ and %{ in user data reach the droplet as written: Terraform reads the file, never renders it
    script = "#!/bin/sh\n# ${HOME} %{ if true }x%{ endif } $${x}\necho ready > /run/ready\n"
    (ops.root / "cloud-init" / "ct.sh").write_text(script)
    ct_override = '[producers.ct.droplets]\nuser_data = "cloud-init/ct.sh"\n#'
    ops.edit("infra-apply.toml", "[producers.ct.droplets]", ct_override)
    for producer in ("ct", "mc"):
        code, out, err = ops.apply(producer)
        assert code == 0, out + err
    keys = {k["name"]: k["id"] for k in cloud.list_ssh_keys(ops.cloud)}
    live = ops.droplets()
    ct, mc = live["com.uvlava.ct.services"], live["com.uvlava.mc.services"]
    assert sorted(ct["ssh_keys"]) == sorted([keys["ops-2026"], keys["ct-deploy"]])
    assert mc["ssh_keys"] == [keys["ops-2026"]]
    assert ct["monitoring"] is True and mc["monitoring"] is True
    assert ct["user_data"] == script
    assert mc["user_data"] == (ops.root / "cloud-init" / "base.yaml").read_text()
    # state keeps the provider's SHA-1 of it, never the text
    state = next((ops.base / "state" / "work" / "sandbox").glob("*/ct/terraform.tfstate")).read_text()
    assert hashlib.sha1(script.encode()).hexdigest() in state and "echo ready" not in state


def test_a_changed_user_data_or_ssh_keys_plans_no_replacement(ops: Watched) -> None:
    assert ops.apply("quinn")[0] == 0
    before = {n: d["id"] for n, d in ops.droplets().items()}
    (ops.root / "cloud-init" / "base.yaml").write_text(
        (ops.root / "cloud-init" / "base.yaml").read_text() + "  - touch /etc/changed\n"
    )
    ops.edit(
        "infra-apply.toml",
        "[sandbox]",
        '[producers.quinn.droplets]\nssh_keys = ["quinn-deploy"]\nmonitoring = false\n\n[sandbox]',
    )
    code, out, err = ops.sandbox("plan", "--producer", "quinn")
    assert code == 0, out + err
    assert "No changes." in out
    notes = [line for line in out.splitlines() if "new droplets only" in line]
    assert len(notes) == 3 and all("ssh_keys, monitoring, user_data" in n for n in notes)
    code, out, _ = ops.sandbox("plan", "--producer", "quinn", "--format", "json")
    drift = json.loads(out)["producers"]["quinn"]["settings_drift"]
    assert {d["name"] for d in drift} == set(before)
    markdown = ops.sandbox("plan", "--producer", "quinn", "--format", "markdown")[1]
    assert "Settings for new droplets only" in markdown
    code, out, _ = ops.apply("quinn")
    assert code == 0 and "quinn: nothing to apply" in out
    assert {n: d["id"] for n, d in ops.droplets().items()} == before
    # the next droplet gets the new settings
    box = "  - name: com.uvlava.quinn.box\n    hosts: [box]\n    services:\n      - {name: box, kind: api}\n"
    ops.edit("@quinn/.infra.yaml", "  - name: com.uvlava.dns", box + "  - name: com.uvlava.dns")
    assert ops.apply("quinn")[0] == 0
    box = ops.droplets()["com.uvlava.quinn.box"]
    quinn_key = next(k["id"] for k in cloud.list_ssh_keys(ops.cloud) if k["name"] == "quinn-deploy")
    assert (box["ssh_keys"], box["monitoring"]) == ([quinn_key], False)
    assert box["user_data"].endswith("  - touch /etc/changed\n")


def test_render_ships_the_user_data_beside_the_module(ops: Watched) -> None:
    code, out, err = ops.run("render", "--out", str(ops.out))
    assert code == 0 and "already up to date" in out, out + err
    text = '#cloud-config\nruncmd: ["echo ${HOME}"]\n'
    (ops.root / "cloud-init" / "base.yaml").write_text(text)
    code, out, _ = ops.run("render", "--out", str(ops.out), "--check")
    assert code == 1 and f"{ops.out / 'ct/user-data/base.yaml'}: stale or missing" in out
    assert ops.run("render", "--out", str(ops.out))[0] == 0
    for producer in ("ct", "mc", "quinn"):
        assert (ops.out / producer / "user-data" / "base.yaml").read_text() == text
    # user data turned off: the file goes with it, and so does the folder
    ops.edit("infra-apply.toml", 'user_data = "cloud-init/base.yaml"', 'user_data = ""')
    code, out, _ = ops.run("render", "--out", str(ops.out))
    assert code == 0 and f"removed {ops.out / 'mc/user-data/base.yaml'}" in out
    assert not (ops.out / "mc" / "user-data").exists()
    assert "user_data" not in (ops.out / "mc" / "droplets.tf").read_text().split("lifecycle")[0]
    checked = run_cli("--root", str(ops.root), "render", "--check", "--out", str(ops.out), env=ops.env)
    assert checked.returncode == 0
