"""db-credentials: checks before Terraform, then init -> output, then the file."""

from __future__ import annotations

import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values

from infra_apply import terraform as tf
from infra_apply.commands import db_credentials
from infra_apply.errors import InfraApplyError
from infra_apply.model import Database
from infra_apply.workcopy import Prepared
from tests.commands.fakes import MC_MODEL, World

PASSWORD = "AVNS_fake_s3cret"
ENTRY = {
    "user": "catalog_app",
    "password": PASSWORD,
    "database": "catalog",
    "host": "uvlava-pg.db.example",
    "port": 25060,
    "private_host": "private-uvlava-pg.db.example",
}
DB = Database("uvlava-pg", "catalog", "catalog_app", "catalog", "prod", "mc", "@mc/catalog/.infra.yaml")


def _prepared(world: World, outputs: dict[str, Any] | None = None, **kwargs: Any) -> Prepared:
    copy = world.copy(
        outputs=outputs if outputs is not None else {"database_credentials": {"catalog": {"prod": ENTRY}}},
        **kwargs,
    )
    prep = world.prepared(copy)
    return replace(prep, producer=replace(MC_MODEL, databases=(DB,)))


def test_reads_the_output_then_writes_a_private_file(tmp_path: Path) -> None:
    world = World(tmp_path)
    target = tmp_path / "catalog.env"
    done = db_credentials.credentials(_prepared(world), "catalog", "prod", db_credentials.Target(target))
    assert world.events == ["init", "output database_credentials"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert dotenv_values(target)["PGPASSWORD"] == PASSWORD
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
