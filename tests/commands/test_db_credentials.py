"""db-credentials: checks before Terraform, then init -> output, then the file."""

from __future__ import annotations

import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values

from infra_apply.commands import db_credentials
from infra_apply.errors import InfraApplyError
from infra_apply.manifests.model import Database
from infra_apply.runtime import terraform as tf
from infra_apply.runtime.workcopy import Prepared
from tests.commands.fakes import MC_MODEL, World, droplets_output

PASSWORD = "AVNS_fake_s3cret"
CLUSTER_VPC = "5a4981aa-9653-4bd1-bef5-d6bff52042e4"
DEFAULT_VPC = "c7a5e8d2-1b3f-4a6e-9d0c-5f2e8b7a4c13"
ENTRY = {
    "user": "catalog_app",
    "password": PASSWORD,
    "database": "catalog",
    "host": "uvlava-pg.db.example",
    "port": 25060,
    "private_host": "private-uvlava-pg.db.example",
    "region": "fra1",
    "private_network_uuid": CLUSTER_VPC,
}
# catalog runs on mc-web, a host of com.uvlava.mc.services (fakes.MC_MODEL, region fra1)
DB = Database(
    "uvlava-pg", "catalog", "catalog_app", "catalog", "prod", "mc", "@mc/catalog/.infra.yaml", host="mc-web"
)


def _droplets(vpc: str | None) -> dict[str, Any]:
    """The droplets output with com.uvlava.mc.services in ``vpc`` (None: a state from before
    the output carried it)."""
    [(name, entry)] = droplets_output("mc", "com.uvlava.mc.services", ["mc-web"]).items()
    extra = {"vpc_uuid": vpc} if vpc is not None else {}
    return {name: {**entry, "address": "digitalocean_droplet.mc_services", **extra}}


def _prepared(world: World, outputs: dict[str, Any] | None = None, **kwargs: Any) -> Prepared:
    copy = world.copy(
        outputs=outputs
        if outputs is not None
        else {"database_credentials": {"catalog": {"prod": ENTRY}}, "droplets": _droplets(CLUSTER_VPC)},
        **kwargs,
    )
    prep = world.prepared(copy)
    return replace(prep, producer=replace(MC_MODEL, databases=(DB,)))


def test_reads_the_output_then_writes_a_private_file(tmp_path: Path) -> None:
    world = World(tmp_path)
    target = tmp_path / "catalog.env"
    done = db_credentials.credentials(_prepared(world), "catalog", "prod", db_credentials.Target(target))
    assert world.events == ["init", "output database_credentials", "output droplets"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert dotenv_values(target)["PGPASSWORD"] == PASSWORD
    assert dotenv_values(target)["PGHOST"] == ENTRY["private_host"]
    out = db_credentials.output(done)
    assert PASSWORD not in out.stdout + "".join(out.stderr) and str(target) in out.stdout
    assert PASSWORD not in repr(done)


def test_stdout_onto_a_terminal_is_refused_before_terraform_runs(tmp_path: Path) -> None:
    world = World(tmp_path)
    with pytest.raises(InfraApplyError, match="stdout is a terminal"):
        db_credentials.credentials(_prepared(world), "catalog", "prod", db_credentials.Target(tty=True))
    assert world.events == []
    revealed = db_credentials.credentials(
        _prepared(world), "catalog", "prod", db_credentials.Target(tty=True, reveal=True)
    )
    assert db_credentials.output(revealed).stdout.count(PASSWORD) == 2  # DATABASE_URL and PGPASSWORD


@pytest.mark.parametrize(
    ("project", "environment", "message"),
    [
        ("nope", "prod", "declares no database for project nope; projects with a database: catalog (prod)"),
        (
            "catalog",
            "dev",
            "declares no database for catalog (dev); projects with a database: catalog (prod)",
        ),
    ],
)
def test_an_unknown_project_or_environment_lists_the_known_ones(
    tmp_path: Path, project: str, environment: str, message: str
) -> None:
    world = World(tmp_path)
    with pytest.raises(InfraApplyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        db_credentials.credentials(
            _prepared(world), project, environment, db_credentials.Target(tmp_path / "x")
        )
    assert world.events == [] and not (tmp_path / "x").exists()


def test_nothing_applied_yet_says_apply_first(tmp_path: Path) -> None:
    world = World(tmp_path)
    missing = tf.OutputMissing("output database_credentials", tmp_path, "No outputs found")
    prep = _prepared(world, fail={"output database_credentials": missing})
    with pytest.raises(InfraApplyError, match=r"apply it first \(infra-apply apply --producer mc\)"):
        db_credentials.credentials(prep, "catalog", "prod", db_credentials.Target(tmp_path / "x"))
    assert world.events == ["init", "output database_credentials"] and not (tmp_path / "x").exists()
    # Declared, applied before this project's database existed: the same advice.
    prep = _prepared(world, outputs={"database_credentials": {}})
    with pytest.raises(InfraApplyError, match=r"no credentials for catalog \(prod\) in its state yet"):
        db_credentials.credentials(prep, "catalog", "prod", db_credentials.Target(tmp_path / "x"))


def test_a_file_others_can_read_is_never_overwritten(tmp_path: Path) -> None:
    world = World(tmp_path)
    target = tmp_path / "shared.env"
    target.write_text("KEEP=1\n")
    target.chmod(0o644)
    with pytest.raises(InfraApplyError, match="open to group or others"):
        db_credentials.credentials(_prepared(world), "catalog", "prod", db_credentials.Target(target))
    assert target.read_text() == "KEEP=1\n"


# --- the host the project's droplet can reach ---------------------------------------------------


def _refused(prep: Prepared, target: Path, connect: str | None = None) -> str:
    with pytest.raises(InfraApplyError) as caught:
        db_credentials.credentials(prep, "catalog", "prod", db_credentials.Target(target), connect)
    assert not target.exists()
    return caught.value.message


def _written(prep: Prepared, target: Path, connect: str | None = None) -> dict[str, str | None]:
    db_credentials.credentials(prep, "catalog", "prod", db_credentials.Target(target), connect)
    return dotenv_values(target)


def test_a_droplet_in_another_vpc_gets_no_private_host_and_is_told_what_to_do(tmp_path: Path) -> None:
    world = World(tmp_path)
    outputs = {"database_credentials": {"catalog": {"prod": ENTRY}}, "droplets": _droplets(DEFAULT_VPC)}
    target = tmp_path / "catalog.env"
    message = _refused(_prepared(world, outputs), target)
    assert message.startswith(
        f"droplet 'com.uvlava.mc.services' runs in VPC {DEFAULT_VPC}, not in VPC {CLUSTER_VPC} of "
        "cluster 'uvlava-pg': the cluster's private host is out of its reach; nothing written: "
        f"`infra-apply db-credentials --producer mc catalog --connect public --write {target}`"
    )
    assert "move the project to a droplet in the cluster's VPC" in message
    # the remedy as printed: the public host, said so in the file
    values = _written(_prepared(world, outputs), target, "public")
    assert values["PGHOST"] == ENTRY["host"] and "@uvlava-pg.db.example:" in str(values["DATABASE_URL"])
    assert "--connect public" in target.read_text().splitlines()[1]


def test_a_droplet_not_created_yet_gets_the_private_host_only_in_the_clusters_region(tmp_path: Path) -> None:
    world = World(tmp_path)
    target = tmp_path / "catalog.env"
    pending = {"database_credentials": {"catalog": {"prod": ENTRY}}, "droplets": {}}
    assert _written(_prepared(world, pending), target)["PGHOST"] == ENTRY["private_host"]
    assert "will be created in the cluster's VPC" in target.read_text()
    target.unlink()
    elsewhere = {"database_credentials": {"catalog": {"prod": {**ENTRY, "region": "nyc3"}}}, "droplets": {}}
    message = _refused(_prepared(world, elsewhere), target)
    assert "will be created in region fra1, cluster 'uvlava-pg' is in nyc3: a VPC is regional" in message


def test_a_host_on_no_managed_droplet_needs_connect(tmp_path: Path) -> None:
    world = World(tmp_path)
    target = tmp_path / "catalog.env"
    prep = _prepared(world)
    prep = replace(prep, producer=replace(prep.producer, databases=(replace(DB, host="fennel"),)))
    message = _refused(prep, target)
    assert "the project runs on host 'fennel', which is on no droplet infra-apply manages" in message
    assert f"`infra-apply db-credentials --producer mc catalog --connect private --write {target}`" in message
    assert _written(prep, target, "private")["PGHOST"] == ENTRY["private_host"]


def test_a_state_from_before_the_vpc_was_recorded_says_apply_first(tmp_path: Path) -> None:
    world = World(tmp_path)
    target = tmp_path / "catalog.env"
    old = {k: v for k, v in ENTRY.items() if k not in ("region", "private_network_uuid")}
    outputs = {"database_credentials": {"catalog": {"prod": old}}, "droplets": _droplets(None)}
    message = _refused(_prepared(world, outputs), target)
    assert "apply first (`infra-apply apply --producer mc`), then run this again" in message
