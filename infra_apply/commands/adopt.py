"""``adopt``: import blocks for manifest droplets that already exist in the account.

For droplets not in state but present under their manifest name, writes
OUT/<producer>/imports.tf (in sandbox mode, a file under the state dir) so the next apply takes
them over without replacing them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from infra_apply.commands import Output
from infra_apply.errors import InfraApplyError
from infra_apply.fs import PRIVATE_FILE, atomic_write, private_dirs
from infra_apply.model import Droplet
from infra_apply.state import state_dir
from infra_apply.workcopy import Context, Prepared, imports_file, prepare_one, state_droplets


@dataclass(frozen=True)
class Adoption:
    address: str
    name: str
    droplet_id: str
    warning: str | None = None


@dataclass(frozen=True)
class Adopted:
    producer: str
    adoptions: tuple[Adoption, ...]
    imports: Path  # the imports file (written only when there is something to adopt)


@dataclass(frozen=True)
class AccountDroplet:
    """A droplet in the account, as much as adopting it needs."""

    id: str
    name: str
    image: str | None
    region: str | None


def run(ctx: Context, producer: str) -> Adopted:
    return adopt(ctx, prepare_one(ctx, producer))


def adopt(ctx: Context, prep: Prepared) -> Adopted:
    """Write import blocks for manifest droplets that exist in the account but not in state."""
    in_state = state_droplets(prep)
    account = _account_droplets(prep)
    found: list[Adoption] = []
    for d in prep.producer.droplets:
        address = prep.rendered.droplet_addresses[d.name]
        if address in in_state:
            continue
        matches = [a for a in account if a.name == d.name]
        if len(matches) > 1:
            ctx.say(f"{d.name}: {len(matches)} droplets have this name in the account; adopt one by hand")
        if d.gpu or len(matches) != 1:
            continue
        found.append(Adoption(address, d.name, matches[0].id, _adoption_warning(d, matches[0])))
    target = imports_file(ctx, prep.producer.name)
    write_imports(target, found, private_to=state_dir(ctx.env) if ctx.sandbox else None)
    return Adopted(prep.producer.name, tuple(found), target)


def _adoption_warning(d: Droplet, live: AccountDroplet) -> str | None:
    if live.image and live.image != d.image:
        return (
            f"live image {live.image!r} differs from the manifest's {d.image!r}: the plan will "
            "replace it (and the guard will refuse) unless the manifest matches"
        )
    if live.region and live.region != d.region:
        return f"live region {live.region!r} differs from the manifest's {d.region!r}: it would be replaced"
    return None


def _account_droplets(prep: Prepared) -> list[AccountDroplet]:
    if prep.cloud is not None:
        from infra_apply.sandbox import cloud

        return [
            AccountDroplet(str(r["id"]), str(r["name"]), r.get("image"), r.get("region"))
            for r in cloud.list_droplets(prep.cloud)
        ]
    from infra_apply import do_api

    client = do_api.client(token=prep.api_token)
    return [AccountDroplet(d.id, d.name, d.image, d.region) for d in do_api.list_droplets(client)]


def write_imports(target: Path, adoptions: Sequence[Adoption], private_to: Path | None = None) -> None:
    """Write the import blocks; under the state dir (``private_to``, sandbox runs) privately."""
    from infra_apply import hcl

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
    if fmt == "json":
        return Output(format_json(done))
    notes = tuple(f"infra-apply: warning: {a.name}: {a.warning}" for a in done.adoptions if a.warning)
    return Output(format_text(done), notes)


def format_text(done: Adopted) -> str:
    lines = [f"import {a.address} <- droplet {a.droplet_id} ({a.name})" for a in done.adoptions]
    if done.adoptions:
        lines.append(
            f"wrote {done.imports}; run infra-apply plan / apply --producer {done.producer} to take them over"
        )
    else:
        lines.append("nothing to adopt: every manifest droplet is in state or absent from the account")
    return "".join(f"{line}\n" for line in lines)


def format_json(done: Adopted) -> str:
    doc = {
        "imports": str(done.imports) if done.adoptions else None,
        "adopted": [
            {"address": a.address, "name": a.name, "droplet_id": a.droplet_id, "warning": a.warning}
            for a in done.adoptions
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
