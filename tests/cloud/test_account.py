"""account.py: the two accounts answer what the verbs used to branch on a flag for, and a run's
lists are shared: what pre-flight asked is not asked again by drift's orphan check or adopt."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from infra_apply import remedy
from infra_apply.cloud.account import LiveAccount, SandboxAccount, choose
from infra_apply.cloud.accounts import Accounts
from infra_apply.errors import InfraApplyError
from infra_apply.manifests.model import Database, ProducerModel
from infra_apply.render.module import MANAGED_TAG
from infra_apply.render.output import Rendered
from infra_apply.runtime.workcopy import Context, Prepared, mesh_target
from tests.conftest import EXAMPLE_MESH
from tests.do_standin import TOKEN, Account, database_json

OTHER = "FAKE-do-token_another-account"


@pytest.fixture
def api() -> Iterator[HTTPServer]:
    server = HTTPServer(threaded=True)
    server.no_handler_status_code = 418  # an unexpected call fails at once
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


def context(tmp_path: Path, sandbox: bool) -> Context:
    shutil.copy(EXAMPLE_MESH, tmp_path / "mesh-hosts.json")
    env = {"INFRA_APPLY_STATE_DIR": str(tmp_path / "state"), "CI": "true"}
    return Context(
        tmp_path / "tree", tmp_path / "generated", choose(sandbox), tmp_path / "mesh-hosts.json", env
    )


def test_choose_is_the_one_place_the_flag_becomes_an_account() -> None:
    assert choose(False) == LiveAccount() and choose(True) == SandboxAccount()
    live, box = choose(False), choose(True)
    assert (live.word, live.label, live.stand_in) == ("live", "the DigitalOcean account", False)
    assert (box.word, box.label, box.stand_in) == ("sandbox", "the sandbox account", True)
    # every remedy printed in a mode works as printed in that mode
    assert remedy.for_producer("apply", "ct", keep=live.remedy_flags) == "infra-apply apply --producer ct"
    assert (
        remedy.for_producer("apply", "ct", keep=box.remedy_flags)
        == "infra-apply apply --producer ct --sandbox"
    )
    assert remedy.kept(True) == box.remedy_flags and remedy.kept(False) == ()


def test_a_sandbox_run_never_writes_the_operators_registry(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    live, box = context(tmp_path, False), context(tmp_path, True)
    assert mesh_target(live) == live.mesh_path == live.account.written_registry(live)
    copy = mesh_target(box)
    assert copy is not None and copy != box.mesh_path and copy.is_relative_to(tmp_path / "state")
    assert copy.read_bytes() == EXAMPLE_MESH.read_bytes()  # seeded from the operator's file
    assert box.account.written_registry(box) is None  # nothing of the operator's to check writable
    assert box.account.registered_note(box, copy) is not None  # says where the hosts went


def test_only_the_live_account_refuses_local_state_in_ci(tmp_path: Path) -> None:
    from infra_apply.manifests.config import load

    config = load(tmp_path, {})
    ctx = context(tmp_path, False)
    with pytest.raises(InfraApplyError, match="local state"):
        ctx.account.refuse_local_state_in_ci(config, ctx.env)
    SandboxAccount().refuse_local_state_in_ci(config, ctx.env)  # throwaway with its cloud


def prepared(producer: str, token: str) -> Prepared:
    return Prepared(ProducerModel(producer), Rendered(producer, {}), None, api_token=token)  # type: ignore[arg-type]


def test_drifts_orphan_check_reads_the_droplet_list_pre_flight_asked_for(api: HTTPServer) -> None:
    ours = {"id": 7, "name": "com.uvlava.ct.web", "tags": [MANAGED_TAG]}
    theirs = {"id": 8, "name": "hand-made", "tags": []}
    standin = Account(droplets=[ours, theirs], token=None)
    standin.serve(api)
    env = {"DIGITALOCEAN_TOKEN": TOKEN, "DIGITALOCEAN_API_URL": api.url_for("")}
    preps = [prepared("ct", TOKEN), prepared("mc", TOKEN), prepared("quinn", OTHER)]
    with Accounts(env) as accounts:
        accounts.live(TOKEN).droplets()  # pre-flight's prefetch
        found = LiveAccount().tagged_droplets(preps, env, MANAGED_TAG, accounts)
    assert [d["id"] for d in found] == [7]  # both accounts answer the same stand-in here
    assert standin.requests.count("/v2/droplets") == 2  # once per account, never again


def test_adopt_from_state_lists_the_clusters_once(tmp_path: Path, api: HTTPServer) -> None:
    """The takeover reads the droplets, the firewalls and the clusters (the old state names a
    cluster by its id) from one shared account: ``/v2/databases`` is asked once."""
    import json

    from infra_apply.commands import adopt
    from infra_apply.plan.takeover import parse_state
    from tests.commands.fakes import World

    standin = Account(token=None)
    standin.serve(api)
    world = World(tmp_path)
    ctx = Context(
        world.tmp / "tree",
        world.tmp / "generated",
        LiveAccount(),
        None,
        {"INFRA_APPLY_STATE_DIR": str(tmp_path / "state"), "DIGITALOCEAN_API_URL": api.url_for("")},
    )
    prep = world.prepared(world.copy())
    db = Database("uvlava-pg", "mc", "mc", "mc", "prod", "mc", "mc.infra.yaml")
    producer = replace(prep.producer, databases=(db,))  # its databases are looked up too
    prep = Prepared(producer, prep.rendered, prep.copy, api_token=TOKEN)
    cluster = {"mode": "managed", "type": "digitalocean_database_cluster", "name": "pg", "instances": []}
    old = parse_state(json.dumps({"version": 4, "resources": [cluster]}), "old/terraform.tfstate")
    adopt.take_over(ctx, prep, old)
    assert standin.requests.count("/v2/databases") == 1, standin.requests
    assert f"/v2/databases/{database_json('uvlava-pg')['id']}/dbs" in standin.requests
