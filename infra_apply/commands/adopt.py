"""``adopt``: import blocks for manifest droplets that already exist in the account.

For droplets not in state but present under their manifest name, writes
OUT/<producer>/imports.tf (in sandbox mode, a file under the state dir) so the next apply takes
them over without replacing them.

``adopt --from-state FILE`` takes over from an existing Terraform root instead (the pure core is
``infra_apply.plan.takeover``): droplets, firewalls, databases and users of the old root's state that
the producer declares get import blocks (the same imports file), and the old root gets a file of
``removed`` blocks that forgets them without destroying anything. A takeover with an error (a
forced replacement, an ambiguous match...) writes nothing. infra-apply never runs anything in the
old root.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from infra_apply import kinds
from infra_apply.cloud.accounts import Accounts
from infra_apply.commands import Output
from infra_apply.errors import ExitCode, InfraApplyError
from infra_apply.manifests.model import Droplet
from infra_apply.runtime.fs import (
    PRIVATE_FILE,
    TEXT_LIMIT,
    FileTooLarge,
    atomic_write,
    private_dirs,
    read_bounded,
)
from infra_apply.runtime.state import state_dir
from infra_apply.runtime.workcopy import Context, Prepared, imports_file, prepare_one, tree_key

if TYPE_CHECKING:
    from infra_apply.cloud.do_api import AccountDroplet
    from infra_apply.cloud.preflight import Source
    from infra_apply.plan.exists import Account
    from infra_apply.plan.takeover import OldState, Takeover


@dataclass(frozen=True)
class Adoption:
    address: str
    name: str
    droplet_id: str  # the import id (for a database or user: ``cluster_id,name``)
    warning: str | None = None
    kind: str = "droplet"  # droplet | firewall | database | database user


@dataclass(frozen=True)
class Adopted:
    producer: str
    adoptions: tuple[Adoption, ...]
    imports: Path  # the imports file (written only when there is something to adopt)
    keep: tuple[str, ...] = ()  # the account's remedy flags (--sandbox): the next step printed keeps them


def run(ctx: Context, producer: str) -> Adopted:
    return adopt(ctx, prepare_one(ctx, producer))


def adopt(ctx: Context, prep: Prepared) -> Adopted:
    """Write import blocks for what the manifests declare that exists in the account by name
    but not in state: droplets, their firewalls, databases and users."""
    from infra_apply.render.module import db_entry, public_address

    in_state = state_addresses(prep)
    with Accounts(ctx.env) as accounts:
        account = _account(_source(prep, accounts), prep)
    found: list[Adoption] = []
    for d in prep.producer.droplets:
        address = prep.rendered.droplet_addresses[d.name]
        if d.gpu:
            continue
        own = FIREWALL + address.removeprefix(DROPLET)
        for firewall in (own, public_address(own)):  # its own firewall, then its public one
            if firewall in in_state:
                continue
            # render names a droplet's firewalls after their addresses (fw-<label>)
            name = "fw-" + firewall.split(".", 1)[1].replace("_", "-")
            ids = account.firewalls.get(name, ())
            if len(ids) > 1:
                ctx.say(f"{name}: {len(ids)} firewalls have this name in the account; adopt one by hand")
            elif ids:
                found.append(Adoption(firewall, name, ids[0], kind="firewall"))
        if address in in_state:
            continue
        matches = account.named(d.name)
        if len(matches) > 1:
            ctx.say(f"{d.name}: {len(matches)} droplets have this name in the account; adopt one by hand")
        if len(matches) != 1:
            continue
        found.append(Adoption(address, d.name, matches[0].id, _adoption_warning(d, matches[0])))
    cluster_ids = {name: cid for cid, name in account.clusters.items()}
    for db in prep.producer.databases:
        entry = db_entry(db)
        cid = cluster_ids.get(db.cluster)
        for kind, name, table, local in (
            (kinds.DATABASE, db.name, account.dbs, entry.db_address),
            (kinds.USER, db.user, account.users, entry.user_address),
        ):
            address = kind.address(local)
            if cid is not None and address not in in_state and name in table.get(cid, frozenset()):
                import_id = kind.import_id_of(cluster_id=cid, name=name)
                found.append(Adoption(address, name, import_id, kind=kind.noun))
    target = imports_file(ctx, prep.producer.name)
    write_imports(target, found, private_to=ctx.account.imports_private_to(ctx.env))
    return Adopted(prep.producer.name, tuple(found), target, ctx.account.remedy_flags)


DROPLET = kinds.DROPLET.type
FIREWALL = kinds.FIREWALL.type


def state_addresses(prep: Prepared) -> set[str]:
    """``type.name`` of every managed resource in state."""
    prep.copy.init()
    out: set[str] = set()
    values = prep.copy.state().get("values")
    stack = [(values or {}).get("root_module") or {}] if isinstance(values, dict) else []
    while stack:
        module = stack.pop()
        for r in module.get("resources") or ():
            if r.get("mode") == "managed":
                out.add(f"{r.get('type')}.{r.get('name')}")
        stack.extend(module.get("child_modules") or ())
    return out


def _account(source: Source, prep: Prepared) -> Account:
    from infra_apply.plan.exists import fetch

    return fetch(source, {db.cluster for db in prep.producer.databases})


def _source(prep: Prepared, accounts: Accounts) -> Source:
    """The producer's account, its lists asked once for the run (``accounts``)."""
    source = prep.account.source(prep, accounts)
    if source is None:  # no token: the client says which variable to set
        from infra_apply.cloud import do_api, preflight

        return preflight.LiveSource(do_api.client(token=prep.api_token))
    return source


def _adoption_warning(d: Droplet, live: AccountDroplet) -> str | None:
    if live.image and live.image != d.image:
        return (
            f"live image {live.image!r} differs from the manifest's {d.image!r}: the plan will "
            "replace it (and the guard will refuse) unless the manifest matches"
        )
    if live.region and live.region != d.region:
        return f"live region {live.region!r} differs from the manifest's {d.region!r}: it would be replaced"
    return None


def write_imports(target: Path, adoptions: Sequence[Adoption], private_to: Path | None = None) -> None:
    """Write the import blocks; under the state dir (``private_to``, sandbox runs) privately."""
    from infra_apply.render import hcl

    if not adoptions:
        return
    imports = [{"name": a.name, "address": a.address, "id": a.droplet_id} for a in adoptions]
    text = hcl.render("imports.tf.j2", imports=sorted(imports, key=lambda i: i["address"]))
    try:
        if private_to is not None:
            private_dirs(target.parent, private_to)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InfraApplyError(f"cannot write {target}: {exc.strerror}") from None
    atomic_write(target, text, mode=PRIVATE_FILE if private_to is not None else None)


def output(done: Adopted, fmt: str) -> Output:
    from infra_apply.report import formats

    # stderr in every format: --format json keeps stdout JSON
    notes = tuple(f"infra-apply: warning: {a.name}: {a.warning}" for a in done.adoptions if a.warning)
    return Output(formats.adopt().render(done, fmt), notes)


# --- adopt --from-state: take over from an existing Terraform root ---------------------------


@dataclass(frozen=True)
class TakenOver:
    """A planned takeover and, when it had no errors, the two files written."""

    takeover: Takeover
    imports: Path | None  # infra-apply's import blocks (None: nothing written)
    removed: Path | None  # the OLD root's `removed` blocks (None: nothing written)
    keep: tuple[str, ...] = ()  # the account's remedy flags (--sandbox): the next step printed keeps them


def run_from_state(
    ctx: Context, producer: str, state_file: Path, removed_file: Path | None = None
) -> TakenOver:
    from infra_apply.plan.takeover import read_state

    old = read_state(state_file)  # bad input stops here, before any working copy is touched
    return take_over(ctx, prepare_one(ctx, producer), old, removed_file)


def take_over(ctx: Context, prep: Prepared, old: OldState, removed_file: Path | None = None) -> TakenOver:
    """Plan the takeover; only when it has no error, write the imports and the removed file."""
    from infra_apply.plan import takeover

    with Accounts(ctx.env) as accounts:  # one listing of the clusters for both
        source = _source(prep, accounts)
        account = _account(source, prep).droplets
        clusters = _clusters(source)
    t = takeover.plan_takeover(
        old,
        prep.producer,
        prep.rendered.droplet_addresses,
        clusters,
        {a.id: a.image for a in account if a.image},
    )
    if not t.ok:
        return TakenOver(t, None, None, ctx.account.remedy_flags)
    imports_text, removed_text = takeover.import_file(t), takeover.removed_file(t)
    imports = imports_file(ctx, prep.producer.name)
    removed = removed_file or default_removed_file(ctx, prep.producer.name)
    state = state_dir(ctx.env)
    _check_removed_target(removed)
    # Both folders exist before either file is written: a failure leaves no half takeover.
    private_imports = ctx.account.imports_private_to(ctx.env)
    _make_folder(imports.parent, private_imports)
    _make_folder(removed.parent, state if removed_file is None else None)
    atomic_write(imports, imports_text, mode=PRIVATE_FILE if private_imports is not None else None)
    atomic_write(removed, removed_text, mode=PRIVATE_FILE if removed_file is None else None)
    return TakenOver(t, imports, removed, ctx.account.remedy_flags)


REMOVED_HEADER = b"# Written by `infra-apply adopt --from-state` for the OLD Terraform root"


def _check_removed_target(path: Path) -> None:
    """Replace only a removed file adopt wrote before: the old root's own files (its own
    ``removed.tf``, say) and symbolic links are never written over."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise InfraApplyError(f"{path} is not a regular file: give the path of a new file")
    if path.is_file():
        try:
            ours = read_bounded(path, TEXT_LIMIT).startswith(REMOVED_HEADER)
        except FileTooLarge:
            ours = False  # adopt writes a few lines per resource
        except OSError as exc:
            why = exc.strerror
            raise InfraApplyError(f"cannot read {path}: {why}; give another --removed-file") from None
        if not ours:
            raise InfraApplyError(
                f"{path} exists and was not written by adopt --from-state: not overwriting it; "
                "give another --removed-file"
            )


def default_removed_file(ctx: Context, producer: str) -> Path:
    """Under the state dir: infra-apply never writes into the old root unless told where."""
    from infra_apply.runtime.identity import keyed
    from infra_apply.runtime.paths import child

    state = state_dir(ctx.env)
    base = keyed(state, f"takeover/{ctx.account.word}", tree_key(ctx))
    return child(base, producer) / "removed.tf"


def _make_folder(folder: Path, private_to: Path | None) -> None:
    try:
        if private_to is not None:
            private_dirs(folder, private_to)
        else:
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InfraApplyError(f"cannot write {folder}: {exc.strerror}") from None


def _clusters(source: Source) -> dict[str, str]:
    """Database cluster id -> name: the old state names a cluster only by its id."""
    return {
        raw["id"]: raw["name"]
        for raw in source.databases()
        if isinstance(raw.get("id"), str) and isinstance(raw.get("name"), str)
    }


def output_takeover(done: TakenOver, fmt: str) -> Output:
    from infra_apply.report import formats

    code = ExitCode.OK if done.takeover.ok else ExitCode.ERROR
    return Output(formats.adopt_from_state().render(done, fmt), code=code)
