"""``rename``: rename the live droplet to its manifest name (DigitalOcean's rename action).

Terraform ignores name changes (a rename must never replace a box); this applies the one
``plan`` reports as name drift, refreshes state and moves the droplet's mesh-hosts.json
entries to the new name.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra_apply.commands import Output
from infra_apply.commands.register import register
from infra_apply.errors import InfraApplyError, TerraformError
from infra_apply.runtime import terraform as tf
from infra_apply.runtime.workcopy import (
    Context,
    Prepared,
    check_registry,
    mesh_target,
    prepare_one,
    state_droplets,
)


@dataclass(frozen=True)
class Renamed:
    droplet_id: str
    old: str
    new: str


@dataclass(frozen=True)
class RenameResult:
    name: str
    renamed: Renamed | None  # None: the live name already matched


def run(ctx: Context, producer: str, name: str) -> RenameResult:
    check_registry(ctx)
    prep = prepare_one(ctx, producer)
    return RenameResult(name, rename(ctx, prep, name))


def rename(ctx: Context, prep: Prepared, name: str) -> Renamed | None:
    """Rename the live droplet whose manifest name is ``name``; None when already so named."""
    address = prep.rendered.droplet_addresses.get(name)
    if address is None:
        known = ", ".join(sorted(prep.rendered.droplet_addresses)) or "none"
        raise InfraApplyError(
            f"no droplet named {name!r} in producer {prep.producer.name}'s manifests (droplets: {known})"
        )
    live = state_droplets(prep).get(address)
    if live is None:
        raise InfraApplyError(f"{name} ({address}) is not in state yet; apply it first")
    if live.get("name") == name:
        return None
    droplet_id, old = str(live.get("id")), str(live.get("name"))
    ctx.say(f"{prep.producer.name}: renaming droplet {droplet_id} {old!r} -> {name!r}")
    prep.account.rename_droplet(prep, droplet_id, name)
    ctx.say(f"{prep.producer.name}: refreshing state")
    try:
        prep.copy.refresh()
    except tf.CommandFailed as exc:
        raise TerraformError(f"the droplet was renamed, but refreshing state failed:\n{exc.detail}") from None
    if mesh_target(ctx) is not None:
        register(ctx, prep, renamed={old: name})
    return Renamed(droplet_id, old, name)


def output(result: RenameResult, fmt: str) -> Output:
    from infra_apply.report import formats

    return Output(formats.rename().render(result, fmt))
