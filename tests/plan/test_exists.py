"""Never create what exists (sandbox, real Terraform): what the account already holds under a
declared name is refused before anything is applied and taken over by ``adopt``; a state that
lost a droplet its own apply created imports it; a droplet an interrupted create left tainted
is kept when the account shows it healthy."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra_apply.sandbox import cloud
from tests import stopping
from tests.conftest import cli_env
from tests.e2e.test_e2e_sandbox import QUINN, Ops

MANIFEST = "@quinn/.infra.yaml"
DB_MANIFEST = "@quinn/auth-svc/.infra.yaml"


@pytest.fixture
def ops(example: Path) -> Iterator[Ops]:
    ops = Ops(example)
    yield ops
    stopping.clean_up(ops)


def names(ops: Ops) -> list[str]:
    return sorted(d["name"] for d in cloud.list_droplets(ops.cloud))


def hand_made_database(ops: Ops, db: str, user: str) -> str:
    with cloud.transaction(ops.cloud) as c:
        found = cloud.find_cluster(c, "uvlava-pg")
        assert found is not None
        cloud.add_database(c, found["id"], db)
        cloud.add_user(c, found["id"], user)
        return str(found["id"])


def line_of(ops: Ops, rel: str, text: str) -> int:
    lines = (ops.root / rel).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def test_hand_made_droplet_database_and_user_are_refused_then_adopted(ops: Ops) -> None:
    ops.sandbox("plan", "--producer", "quinn")  # installs the sandbox and seeds its cloud
    made = cloud.create_droplet(ops.cloud, "com.uvlava.dns", size="s-1vcpu-1gb")
    cluster = hand_made_database(ops, "auth", "auth_app")
    before = json.loads(ops.cloud.read_text())

    for verb in (("plan", "--producer", "quinn"), ("apply", "--producer", "quinn", "--auto-approve")):
        code, _, err = ops.sandbox(*verb)
        assert code == 1, err
        dns = line_of(ops, MANIFEST, "name: com.uvlava.dns")
        assert re.search(
            rf"^{re.escape(MANIFEST)}:{dns}:\d+: error exists: droplet 'com.uvlava.dns' already exists "
            rf"in the sandbox account \(id {made['id']}\).*infra-apply adopt --producer quinn --sandbox",
            err,
            re.M,
        ), err
        assert f"{DB_MANIFEST}:{line_of(ops, DB_MANIFEST, 'name: auth')}:" in err
        assert "database 'auth' already exists in cluster 'uvlava-pg'" in err
        assert f"{DB_MANIFEST}:{line_of(ops, DB_MANIFEST, 'user: auth_app')}:" in err
        user = "database user 'auth_app' already exists in cluster 'uvlava-pg' in the sandbox account"
        assert f"{user} (id {cluster},auth_app)" in err
        # nothing was applied: the account is as it was
        after = json.loads(ops.cloud.read_text())
        assert after["droplets"] == before["droplets"] and after["users"] == before["users"]

    code, out, err = ops.sandbox("adopt", "--producer", "quinn")
    assert code == 0, err
    assert f"<- droplet {made['id']} (com.uvlava.dns)" in out
    assert f"<- database {cluster},auth (auth)" in out
    assert f"<- database user {cluster},auth_app (auth_app)" in out
    code, out, err = ops.apply("quinn")
    assert code == 0, err
    # DigitalOcean's refusal of a second one ("422 unprocessable_entity: ..."); ids and hashes in the
    # output are hex and may hold the digits 422, so only a whole word counts
    assert not re.search(r"(?<![0-9a-f-])422(?![0-9a-f-])", out + err), out + err
    assert names(ops) == sorted(QUINN)
    assert ops.droplets()["com.uvlava.dns"]["id"] == made["id"]
    assert ops.sandbox("plan", "--producer", "quinn")[0] == 0


def test_adopt_takes_over_a_firewall_that_exists_by_name(ops: Ops) -> None:
    ops.sandbox("plan", "--producer", "mc")
    with cloud.transaction(ops.cloud) as c:
        fw = cloud.add_firewall(
            c,
            {
                "name": "fw-mc-services",
                "droplet_ids": [],
                "tags": [],
                "inbound_rule": [],
                "outbound_rule": [],
            },
        )
    code, _, err = ops.sandbox("plan", "--producer", "mc")
    assert (
        code == 1
        and f"firewall 'fw-mc-services' already exists in the sandbox account (id {fw['id']})" in err
    )
    code, out, err = ops.sandbox("adopt", "--producer", "mc")
    assert code == 0 and f"<- firewall {fw['id']} (fw-mc-services)" in out, out + err
    code, _, err = ops.apply("mc")
    assert code == 0, err
    firewalls = json.loads(ops.cloud.read_text())["firewalls"]
    assert fw["id"] in firewalls  # adopted, not created a second time; its public one is new
    assert sorted(f["name"] for f in firewalls.values()) == ["fw-mc-services", "fw-mc-services--public"]


def test_an_empty_state_dir_is_refused_while_the_producers_droplets_exist(ops: Ops) -> None:
    assert ops.apply("quinn")[0] == 0
    before = json.loads(ops.cloud.read_text())
    # a teammate's laptop: its own, empty state dir, the same account
    teammate = cli_env(ops.base / "teammate", INFRA_APPLY_SANDBOX_CLOUD=str(ops.cloud))
    ops.env = teammate
    for verb in (("plan", "--producer", "quinn"), ("apply", "--producer", "quinn", "--auto-approve")):
        code, out, err = ops.sandbox(*verb)
        assert code == 1, out + err
        assert "already exists in the sandbox account" in err
        assert "infra-apply adopt --producer quinn --sandbox" in err
    # a droplet tagged for quinn under a name no manifest declares any more: no state here
    renamed = ops.droplets()["com.uvlava.quinn.mcp"]["id"]
    cloud.rename_droplet(ops.cloud, renamed, "com.uvlava.quinn.mcp-old")
    code, _, err = ops.sandbox("plan", "--producer", "quinn")
    assert code == 1
    assert f"producer quinn has no state here, yet droplet 'com.uvlava.quinn.mcp-old' (id {renamed})" in err
    cloud.rename_droplet(ops.cloud, renamed, "com.uvlava.quinn.mcp")
    after = json.loads(ops.cloud.read_text())
    assert after["droplets"] == before["droplets"] and after["firewalls"] == before["firewalls"]


def interrupted_create(ops: Ops, *, taint: bool) -> str:
    """Apply quinn with dns's create interrupted (lost, or recorded tainted); the droplet's id."""
    ops.sandbox("plan", "--producer", "quinn")
    dns = ["com.uvlava.dns"]
    cloud.inject_faults(ops.cloud, lose_create=[] if taint else dns, taint_create=dns if taint else [])
    code, out, err = ops.apply("quinn")
    assert code == 1 and ("to become ready" if taint else "context canceled") in out + err
    cloud.inject_faults(ops.cloud)
    return str(ops.droplets()["com.uvlava.dns"]["id"])


def test_a_droplet_this_state_lost_is_imported_not_created_again(ops: Ops) -> None:
    lost = interrupted_create(ops, taint=False)
    assert lost not in stopping.state_droplets(ops)  # created, never recorded
    code, out, err = ops.apply("quinn")
    assert code == 0, out + err
    stopping.assert_no_duplicate_and_state_matches_cloud(ops, QUINN)
    assert f"droplet 'com.uvlava.dns' (id {lost}) was created by an interrupted apply of this state" in err
    assert not (stopping.working_copy(ops) / "infra-apply-journal.json").exists()  # done with
    assert ops.sandbox("plan", "--producer", "quinn")[0] == 0


def test_a_tainted_droplet_the_account_shows_healthy_is_untainted(ops: Ops) -> None:
    kept = interrupted_create(ops, taint=True)
    code, out, err = ops.apply("quinn")
    assert code == 0, out + err
    assert "digitalocean_droplet.dns was left tainted by an interrupted apply" in err
    assert "untainted (terraform untaint)" in err
    assert ops.droplets()["com.uvlava.dns"]["id"] == kept
    stopping.assert_no_duplicate_and_state_matches_cloud(ops, QUINN)


def test_a_tainted_droplet_that_is_not_healthy_stays_refused_with_the_reason(ops: Ops) -> None:
    kept = interrupted_create(ops, taint=True)
    cloud.edit_droplet(ops.cloud, kept, size="s-2vcpu-2gb")
    code, _, err = ops.apply("quinn")
    assert code == 3, err
    assert "digitalocean_droplet.dns is tainted (an apply was interrupted while it came up)" in err
    assert "its size is s-2vcpu-2gb, the manifest says s-1vcpu-1gb" in err


def test_planning_every_producer_reports_each_ones_existing_droplets(ops: Ops) -> None:
    ops.sandbox("plan", "--producer", "mc")
    mc = cloud.create_droplet(ops.cloud, "com.uvlava.mc.services", region="fra1")
    dns = cloud.create_droplet(ops.cloud, "com.uvlava.dns")
    code, _, err = ops.sandbox("plan")
    assert code == 1, err
    assert f"droplet 'com.uvlava.mc.services' already exists in the sandbox account (id {mc['id']})" in err
    assert f"droplet 'com.uvlava.dns' already exists in the sandbox account (id {dns['id']})" in err
    assert "the plan would create what already exists in the sandbox account; nothing was done" in err
