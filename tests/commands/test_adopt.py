"""adopt: import blocks for manifest droplets the account has but the state does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra_apply.commands import adopt
from infra_apply.errors import ExitCode, InfraApplyError
from infra_apply.plan.takeover import OldState, parse_state
from infra_apply.report import verbs
from infra_apply.sandbox import cloud
from tests.commands.fakes import World


def test_a_droplet_in_the_account_but_not_in_state_gets_an_import_block(tmp_path: Path) -> None:
    world = World(tmp_path)
    path = tmp_path / "cloud.json"
    made = cloud.create_droplet(path, "com.uvlava.mc.services", region="ams3")
    ctx = world.context(sandbox=True)
    done = adopt.adopt(ctx, world.prepared(world.copy(), cloud=path))
    assert world.events == ["init", "state"]
    [found] = done.adoptions
    assert (found.address, found.droplet_id) == ("digitalocean_droplet.mc_services", str(made["id"]))
    assert found.warning is not None and "live region 'ams3'" in found.warning
    assert f'id = "{made["id"]}"' in done.imports.read_text()
    assert done.imports.stat().st_mode & 0o777 == 0o600  # under the state dir: private
    out = adopt.output(done, "text")
    assert out.stdout.startswith(f"import digitalocean_droplet.mc_services <- droplet {made['id']}")
    assert out.stderr == (f"infra-apply: warning: com.uvlava.mc.services: {found.warning}",)
    assert json.loads(verbs.adopt_json(done))["imports"] == str(done.imports)


def test_nothing_to_adopt_writes_nothing(tmp_path: Path) -> None:
    world = World(tmp_path)
    path = tmp_path / "cloud.json"
    cloud.create_droplet(path, "com.uvlava.mc.other")
    done = adopt.adopt(world.context(sandbox=True), world.prepared(world.copy(), cloud=path))
    assert done.adoptions == () and not done.imports.exists()
    assert verbs.adopt_text(done).startswith("nothing to adopt")


def _old_state(image: str) -> OldState:
    """A v4 state of an old root holding mc's droplet (as Terraform writes it, trimmed)."""
    attrs = {
        "id": "4242",
        "name": "com.uvlava.mc.services",
        "region": "fra1",
        "image": image,
        "size": "s-2vcpu-4gb",
        "monitoring": False,
        "ipv6": False,
    }
    instance = {"schema_version": 1, "attributes": attrs}
    resource = {"mode": "managed", "type": "digitalocean_droplet", "name": "box", "instances": [instance]}
    return parse_state(json.dumps({"version": 4, "resources": [resource]}), "old/terraform.tfstate")


def test_from_state_writes_the_imports_and_the_removed_file_and_runs_no_terraform(tmp_path: Path) -> None:
    world = World(tmp_path)
    path = tmp_path / "cloud.json"
    cloud.seed(path, [])
    ctx = world.context(sandbox=True)
    done = adopt.take_over(ctx, world.prepared(world.copy(), cloud=path), _old_state("ubuntu-24-04-x64"))
    assert world.events == []  # infra-apply's own state is not needed; the old root is never run
    assert done.takeover.ok and done.imports is not None and done.removed is not None
    assert "to = digitalocean_droplet.mc_services" in done.imports.read_text()
    assert "from = digitalocean_droplet.box" in done.removed.read_text()
    for written in (done.imports, done.removed):
        assert written.is_relative_to(tmp_path / "state") and written.stat().st_mode & 0o777 == 0o600
    out = adopt.output_takeover(done, "text")
    assert out.code == ExitCode.OK and f"wrote {done.removed}: for the OLD root" in out.stdout


def test_from_state_with_an_explicit_removed_file_writes_it_there(tmp_path: Path) -> None:
    world = World(tmp_path)
    path = tmp_path / "cloud.json"
    cloud.seed(path, [])
    target = tmp_path / "old-root" / "removed.tf"
    prep = world.prepared(world.copy(), cloud=path)
    done = adopt.take_over(world.context(sandbox=True), prep, _old_state("ubuntu-24-04-x64"), target)
    assert done.removed == target and target.is_file()
    assert json.loads(adopt.output_takeover(done, "json").stdout)["removed_file"] == str(target)


def test_from_state_with_a_forced_replacement_writes_nothing(tmp_path: Path) -> None:
    world = World(tmp_path)
    path = tmp_path / "cloud.json"
    cloud.seed(path, [])
    target = tmp_path / "old-root" / "removed.tf"
    prep = world.prepared(world.copy(), cloud=path)
    done = adopt.take_over(world.context(sandbox=True), prep, _old_state("112233"), target)
    assert not done.takeover.ok and (done.imports, done.removed) == (None, None)
    assert not target.parent.exists() and not (tmp_path / "state").exists()
    out = adopt.output_takeover(done, "text")
    assert out.code == ExitCode.ERROR
    assert 'set `image: "112233"` on droplet "com.uvlava.mc.services"' in out.stdout


def test_from_state_never_overwrites_a_file_it_did_not_write(tmp_path: Path) -> None:
    world = World(tmp_path)
    path = tmp_path / "cloud.json"
    cloud.seed(path, [])
    target = tmp_path / "removed.tf"
    target.write_text("removed {\n  from = digitalocean_droplet.other\n}\n")
    prep = world.prepared(world.copy(), cloud=path)
    with pytest.raises(InfraApplyError, match="was not written by adopt --from-state"):
        adopt.take_over(world.context(sandbox=True), prep, _old_state("ubuntu-24-04-x64"), target)
    assert "digitalocean_droplet.other" in target.read_text()
    assert not (tmp_path / "state").exists()  # not even the imports file
    # Its own earlier file is replaced (adopt runs again after a fix).
    target.unlink()
    adopt.take_over(world.context(sandbox=True), prep, _old_state("ubuntu-24-04-x64"), target)
    again = adopt.take_over(world.context(sandbox=True), prep, _old_state("ubuntu-24-04-x64"), target)
    assert again.removed == target
