"""``register``: write a producer's droplets, as its Terraform state reports them, into
mesh-hosts.json (``--dry-run``: the diff, nothing written)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from infra_apply import remedy
from infra_apply.commands import Output
from infra_apply.errors import InfraApplyError
from infra_apply.registry.mesh import Allocator, LiveDroplet, WriteResult, live_droplets_from_output
from infra_apply.runtime import terraform as tf
from infra_apply.runtime.state import state_dir
from infra_apply.runtime.workcopy import (
    Context,
    Prepared,
    check_registry,
    mesh_target,
    prepare_one,
    workdir_root,
)


@dataclass(frozen=True)
class Registered:
    result: WriteResult
    dry_run: bool


def run(ctx: Context, producer: str, *, dry_run: bool = False) -> Registered:
    if not dry_run:
        check_registry(ctx)
    prep = prepare_one(ctx, producer)
    return Registered(register(ctx, prep, dry_run=dry_run), dry_run)


def register(
    ctx: Context,
    prep: Prepared,
    *,
    removed: Sequence[str] = (),
    renamed: Mapping[str, str] | None = None,
    dry_run: bool = False,
) -> WriteResult:
    """Register the producer's live droplets (``removed``: manifest names whose hosts go,
    ``renamed``: old -> new droplet names) in the registry ``mesh_target`` names."""
    from infra_apply.registry.meshfile import write_registration

    target = mesh_target(ctx)
    if target is None:
        raise InfraApplyError(
            "no mesh-hosts.json given: pass --mesh-hosts FILE or set INFRA_APPLY_MESH_HOSTS"
        )
    prep.copy.init()
    live = live_droplets(prep, ctx.account.remedy_flags)
    result = write_registration(
        target,
        prep.producer.name,
        live,
        removed=removed,
        renamed=renamed or {},
        dry_run=dry_run,
        allocate=shared_allocator(ctx, prep.producer.name, live, removed, renamed or {}, write=not dry_run),
    )
    note = ctx.account.registered_note(ctx, target)
    if note is not None:
        ctx.say(note)
    return result


def shared_allocator(
    ctx: Context,
    producer: str,
    live: Sequence[LiveDroplet],
    removed: Sequence[str],
    renamed: Mapping[str, str],
    *,
    write: bool = True,
) -> Allocator | None:
    """With remote state, mesh IPs come from the allocation record in the state bucket, so every
    runner's copy of mesh-hosts.json agrees (``write=False``: read it, reserve nothing); None
    (each file's own lowest free address) otherwise."""
    from infra_apply.registry.allocations import open_record

    backend = ctx.account.backend(ctx.root, ctx.env)
    if backend.kind != "s3":
        return None
    state = state_dir(ctx.env)
    binary = tf.state_binary(ctx.env, state)
    record = open_record(state, workdir_root(ctx), backend, binary, ctx.env)
    return lambda doc: record.allocate(doc, producer, live, removed=removed, renamed=renamed, write=write)


def live_droplets(prep: Prepared, keep: Sequence[str]) -> list[LiveDroplet]:
    """The producer's droplets from its applied state (the ``droplets`` output)."""

    if not prep.rendered.droplet_addresses:
        return []
    return live_droplets_from_output(droplets_output(prep, keep))


def droplets_output(prep: Prepared, keep: Sequence[str], *, applied: bool = True) -> dict[str, object]:
    """The ``droplets`` output merged with ``gpu_droplets`` (the on-demand GPUs that are up,
    an output of their own so a GPU verb's targeted apply keeps it current). ``applied``: a
    producer never applied here is an error (else: no droplets), whose remedy keeps ``keep``."""
    merged: dict[str, object] = {}
    standing = applied and len(prep.rendered.droplet_addresses) > len(prep.rendered.gpu_variables)
    names = (("droplets", standing), ("gpu_droplets", False))
    for name, required in names[: 2 if prep.rendered.gpu_variables else 1]:
        try:
            value = prep.copy.output(name)
        except tf.OutputMissing:
            if required:
                again = remedy.for_producer("apply", prep.producer.name, keep=keep)
                raise InfraApplyError(
                    f"producer {prep.producer.name} has no applied state here ({prep.copy.path}): apply it "
                    f"first ({again})"
                ) from None
            continue
        if isinstance(value, Mapping):
            merged.update(value)
        elif value is not None:
            live_droplets_from_output(value)  # not a map: raises, saying so
    return merged


def output(done: Registered, fmt: str) -> Output:
    from infra_apply.report import formats

    return Output(formats.register().render(done, fmt))
