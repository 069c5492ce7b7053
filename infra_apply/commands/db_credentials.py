"""``db-credentials``: a project's own database credentials, from state, as a dotenv file.

The generated module exposes them as one sensitive output, ``database_credentials`` (project
=> environment => user, password, database, host, port, private_host); this reads it with
``terraform output -json`` and writes ``--write FILE`` (0600, atomically, never over a file
others can read) or prints it to ``--stdout`` (never onto a terminal without ``--reveal``).
The password reaches only that file or that stdout: no message of this verb carries it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from infra_apply import remedy
from infra_apply import terraform as tf
from infra_apply.commands import Output
from infra_apply.dbcreds import RULE, credentials_from_output, dotenv_text, write_dotenv
from infra_apply.errors import InfraApplyError
from infra_apply.model import ProducerModel
from infra_apply.workcopy import Context, Prepared, prepare_one

OUTPUT = "database_credentials"


@dataclass(frozen=True)
class Target:
    """Where the dotenv goes: a file, or stdout (``tty``: stdout is a terminal)."""

    file: Path | None = None
    tty: bool = False
    reveal: bool = False


@dataclass(frozen=True)
class Credentials:
    producer: str
    project: str
    environment: str
    written: Path | None  # the file written, or None when the text goes to stdout
    text: str = field(repr=False)  # the dotenv (holds the password)


def run(ctx: Context, producer: str, project: str, environment: str, target: Target) -> Credentials:
    check_target(target)
    prep = prepare_one(ctx, producer)
    return credentials(prep, project, environment, target)


def check_target(target: Target) -> None:
    """Refuse a secret on a terminal before anything runs (it would stay in the scrollback)."""
    if target.file is None and target.tty and not target.reveal:
        raise InfraApplyError(
            "stdout is a terminal: the password would stay on screen and in its scrollback; "
            "use --write FILE, pipe the output, or add --reveal",
            rule=RULE,
        )


def credentials(prep: Prepared, project: str, environment: str, target: Target) -> Credentials:
    """Read the output, pick PROJECT/ENVIRONMENT, write or return the dotenv."""
    name = prep.producer.name
    check_target(target)
    check_declared(prep.producer, project, environment)
    prep.copy.init()
    try:
        value = prep.copy.output(OUTPUT)
    except tf.OutputMissing:
        raise _not_applied(name, prep) from None
    where = f"the {OUTPUT} output of producer {name}"
    if not isinstance(value, dict):
        raise InfraApplyError(f"{where} is not an object", rule=RULE)
    entry = value.get(project, {}).get(environment) if isinstance(value.get(project), dict) else None
    if entry is None:
        # Declared in the manifests but not in state yet: the apply that creates it is pending.
        raise _not_applied(name, prep, f"no credentials for {project} ({environment}) in its state yet")
    text = dotenv_text(credentials_from_output(entry, where))
    if target.file is not None:
        write_dotenv(target.file, text)
    return Credentials(name, project, environment, target.file, text)


def check_declared(producer: ProducerModel, project: str, environment: str) -> None:
    known = sorted({(db.project, db.environment) for db in producer.databases})
    if (project, environment) in known:
        return
    listing = ", ".join(f"{p} ({e})" for p, e in known) or "none"
    what = f"project {project}" if all(p != project for p, _ in known) else f"{project} ({environment})"
    raise InfraApplyError(
        f"producer {producer.name} declares no database for {what}; projects with a database: {listing}",
        rule=RULE,
    )


def _not_applied(
    producer: str, prep: Prepared, why: str = "no database credentials in its state"
) -> InfraApplyError:
    apply = remedy.for_producer("apply", producer, keep=prep.account.remedy_flags)
    return InfraApplyError(
        f"producer {producer} has {why} ({prep.copy.path}): apply it first ({apply})",
        rule=RULE,
    )


def output(done: Credentials) -> Output:
    if done.written is None:
        return Output(done.text)
    what = f"the database credentials of {done.project} ({done.environment})"
    return Output(f"wrote {what} to {done.written} (mode 0600)\n")
