"""``db-credentials``: a project's own database credentials, from state, as a dotenv file.

The generated module exposes them as one sensitive output, ``database_credentials`` (project
=> environment => user, password, database, host, port, private_host); this reads it with
``terraform output -json`` and writes ``--write FILE`` (0600, atomically, never over a file
others can read) or prints it to ``--stdout`` (never onto a terminal without ``--reveal``).
The password reaches only that file or that stdout: no message of this verb carries it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from infra_apply import remedy
from infra_apply.commands import Output
from infra_apply.errors import InfraApplyError
from infra_apply.manifests.model import Database, Model, ProducerModel
from infra_apply.plan.dbcreds import (
    RULE,
    Client,
    Unreachable,
    choose,
    credentials_from_output,
    dotenv_text,
    write_dotenv,
)
from infra_apply.render.output import Rendered
from infra_apply.runtime import terraform as tf
from infra_apply.runtime.workcopy import Context, Prepared, check_ready, load_project, pick, prepare

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


def run(
    ctx: Context, producer: str, project: str, environment: str, target: Target, connect: str | None = None
) -> Credentials:
    check_target(target)
    check_ready(ctx)
    tree = load_project(ctx, warn_for=[producer])
    [name] = pick(tree, [producer])
    [prep] = prepare(ctx, tree, [name])

    def other(producer: str) -> Prepared:
        [found] = prepare(ctx, tree, [producer])
        return found

    return credentials(prep, project, environment, target, connect, Hosts(tree.model, tree.rendered, other))


@dataclass(frozen=True)
class Hosts:
    """The whole tree, to find the droplet hosting a project in whichever producer declares it
    (``other`` prepares that producer's working copy, to read its state)."""

    model: Model
    rendered: Mapping[str, Rendered]
    other: Callable[[str], Prepared]


def check_target(target: Target) -> None:
    """Refuse a secret on a terminal before anything runs (it would stay in the scrollback)."""
    if target.file is None and target.tty and not target.reveal:
        raise InfraApplyError(
            "stdout is a terminal: the password would stay on screen and in its scrollback; "
            "use --write FILE, pipe the output, or add --reveal",
            rule=RULE,
        )


def credentials(
    prep: Prepared,
    project: str,
    environment: str,
    target: Target,
    connect: str | None = None,
    hosts: Hosts | None = None,
) -> Credentials:
    """Read the output, pick PROJECT/ENVIRONMENT and the host its client can reach, write or
    return the dotenv. Without ``hosts`` only this producer's droplets are looked at."""
    name = prep.producer.name
    check_target(target)
    db = check_declared(prep.producer, project, environment)
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
    creds = credentials_from_output(entry, where)
    client = Client(db.host) if connect else _client(prep, db, hosts)
    try:
        choice = choose(creds, client, db.cluster, connect)
    except Unreachable as exc:
        raise InfraApplyError(
            f"{exc.message}; nothing written: {_ways(exc.way, prep, db, target, client)}", rule=RULE
        ) from None
    text = dotenv_text(creds, public=choice.public, why=choice.why)
    if target.file is not None:
        write_dotenv(target.file, text)
    return Credentials(name, project, environment, target.file, text)


def _ways(way: str, prep: Prepared, db: Database, target: Target, client: Client) -> str:
    """What to do instead of a private host out of reach: commands that work as printed."""
    keep = prep.account.remedy_flags
    args = [db.project, *(["--environment", db.environment] if db.environment != "prod" else [])]
    out = ["--write", str(target.file)] if target.file is not None else ["--stdout"]

    def connect(how: str) -> str:
        return remedy.for_producer(
            "db-credentials", prep.producer.name, *args, "--connect", how, *out, keep=keep
        )

    public = f"`{connect('public')}` (the client's address must be a trusted source of the cluster)"
    if way == "unknown":
        return f"{public}, or `{connect('private')}` if it runs in the cluster's VPC"
    if way == "stale":
        producers = sorted({prep.producer.name, client.producer or prep.producer.name})
        applies = " and ".join(f"`{remedy.for_producer('apply', p, keep=keep)}`" for p in producers)
        return f"apply first ({applies}), then run this again; or {public}"
    moved = "move the project to a droplet in the cluster's VPC (docs/safety.md, \"The cluster's network\")"
    return f"{public}, or {moved}"


def _client(prep: Prepared, db: Database, hosts: Hosts | None) -> Client:
    """The droplet hosting the project (whose hosts include its service.host), in any producer,
    and the VPC its producer's state says it runs in."""
    if db.host is None:
        return Client(None)
    producers = hosts.model.producers if hosts is not None else (prep.producer,)
    found = next(((p, d) for p in producers for d in p.droplets if db.host in d.hosts and not d.gpu), None)
    if found is None:
        return Client(db.host)
    producer, droplet = found
    if producer.name == prep.producer.name:
        copy, rendered = prep.copy, prep.rendered
    else:
        assert hosts is not None  # only found among the whole tree's producers
        other = hosts.other(producer.name)
        copy, rendered = other.copy, hosts.rendered[producer.name]
        copy.init()
    address = rendered.droplet_addresses.get(droplet.name)
    try:
        live = copy.output("droplets")
    except tf.OutputMissing:
        live = {}
    entries = live.values() if isinstance(live, dict) else ()
    entry = next((v for v in entries if isinstance(v, dict) and v.get("address") == address), None)
    vpc = entry.get("vpc_uuid") if entry is not None else None
    return Client(
        db.host,
        droplet.name,
        producer.name,
        droplet.region,
        created=entry is not None,
        vpc=vpc if isinstance(vpc, str) and vpc else None,
    )


def check_declared(producer: ProducerModel, project: str, environment: str) -> Database:
    known = sorted({(db.project, db.environment) for db in producer.databases})
    if (project, environment) in known:
        return next(db for db in producer.databases if (db.project, db.environment) == (project, environment))
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
