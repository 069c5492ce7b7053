"""adopt: import blocks for manifest droplets the account has but the state does not."""

from __future__ import annotations

import json
from pathlib import Path

from infra_apply.commands import adopt
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
    assert json.loads(adopt.format_json(done))["imports"] == str(done.imports)


def test_nothing_to_adopt_writes_nothing(tmp_path: Path) -> None:
    world = World(tmp_path)
    path = tmp_path / "cloud.json"
    cloud.create_droplet(path, "com.uvlava.mc.other")
    done = adopt.adopt(world.context(sandbox=True), world.prepared(world.copy(), cloud=path))
    assert done.adoptions == () and not done.imports.exists()
    assert adopt.format_text(done).startswith("nothing to adopt")
