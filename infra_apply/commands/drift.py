"""``drift``: a refresh-only plan per producer (saved and shown, never applied) reporting what
changed outside Terraform, name drift, mesh-hosts.json entries that disagree with state, and
droplets tagged ``managed-by:infra-apply`` that no state knows."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from infra_apply.cloud.accounts import Accounts
from infra_apply.commands import Output
from infra_apply.errors import ExitCode
from infra_apply.plan.drift import (
    DriftReport,
    Orphan,
    ProducerDrift,
    applied,
    duplicates,
    name_drift,
    orphans,
    outside_changes,
    stale_registry_droplets,
    state_droplets,
)
from infra_apply.plan.parse import JsonObject
from infra_apply.plan.tags import MANAGED_TAG
from infra_apply.registry.mesh import HostChange
from infra_apply.runtime.workcopy import (
    Context,
    Prepared,
    Say,
    check_ready,
    load_project,
    mesh_target,
    pick,
    preflight,
    prepare,
)
from infra_apply.timing import MONOTONIC, Clock, done_line, total_line


@dataclass(frozen=True)
class Refreshed:
    prep: Prepared
    plan: JsonObject  # ``terraform show -json`` of the saved refresh-only plan


def run(ctx: Context, producers: Sequence[str] = ()) -> DriftReport:
    """Refresh-only plans of ``producers`` (every producer when none); nothing is applied."""
    check_ready(ctx)
    project = load_project(ctx)
    names = pick(project, producers)
    # a runner's empty local state would report every droplet as unknown to any state
    ctx.account.refuse_local_state_in_ci(project.config, ctx.env)
    with Accounts(ctx.env) as accounts:  # pre-flight's droplet list serves the orphan check
        preflight(ctx, project, names, accounts=accounts)
        refreshed = refresh_all(prepare(ctx, project, names), ctx.say, ctx.clock)
        tagged = list_tagged(ctx, [r.prep for r in refreshed], accounts)
    found = tuple(producer_drift(ctx, r) for r in refreshed)
    in_state = [d for r in refreshed for d in state_droplets(r.prep.producer.name, r.plan)]
    known = {d.id for d in in_state}
    every = not producers
    return DriftReport(
        found,
        orphans(tagged, known, names, every, in_state),
        ctx.account.stand_in,
        duplicates(tagged, in_state, names, every),
        ctx.account.cloud_file([r.prep for r in refreshed]),
    )


def output(report: DriftReport, fmt: str) -> Output:
    from infra_apply.report import formats

    text = formats.drift().render(report, fmt)
    return Output(text, code=ExitCode.CHANGES if report.drifted else ExitCode.OK)


# --- refresh-only plans -----------------------------------------------------------------------


def refresh_all(preps: Sequence[Prepared], say: Say, clock: Clock = MONOTONIC) -> list[Refreshed]:
    """One producer after another: drift is a scheduled job, not a hurry, and a sandbox run
    shares one provider process across them like ``plan`` does. More than one producer: the
    run's total time is said at the end, as ``plan`` does."""
    started = clock()
    with contextlib.ExitStack() as stack:
        provider_env: Callable[[], Mapping[str, str]] | None = None
        if preps and preps[0].shared_provider is not None:
            from infra_apply.sandbox.reattach import shared_provider

            provider_env = stack.enter_context(shared_provider(*preps[0].shared_provider)).env
        refreshed = [refresh_one(p, say, provider_env, clock) for p in preps]
    if len(preps) > 1:
        say(total_line(len(preps), "checked", clock() - started))
    return refreshed


def refresh_one(
    prep: Prepared,
    say: Say,
    provider_env: Callable[[], Mapping[str, str]] | None = None,
    clock: Clock = MONOTONIC,
) -> Refreshed:
    """init, refresh-only plan (saved), show; the plan and the show each say how long they
    took when they end (init says it itself)."""
    name = prep.producer.name
    prep.copy.init()
    say(f"{name}: terraform plan -refresh-only")
    copy = prep.copy if provider_env is None else prep.copy.with_env(provider_env())
    started = clock()
    changed = copy.plan(refresh_only=True)
    say(done_line(name, "refresh-only plan", clock() - started, "changes" if changed else "no changes"))
    started = clock()
    plan = copy.show()
    outside = len(outside_changes(name, plan, prep.rendered.names))
    say(done_line(name, "show", clock() - started, f"{outside} changed outside Terraform"))
    return Refreshed(prep, plan)


def producer_drift(ctx: Context, r: Refreshed) -> ProducerDrift:
    name, names = r.prep.producer.name, r.prep.rendered.names
    declared = frozenset(d.name for d in r.prep.producer.droplets)
    if not applied(r.plan):
        # Nothing to compare with: not drift, and the registry is not judged (drift.py says why).
        return ProducerDrift(producer=name, mesh_checked=False, applied=False, declared=declared)
    mesh = registry_drift(ctx, r.prep)
    return ProducerDrift(
        producer=name,
        outside=outside_changes(name, r.plan, names),
        names=name_drift(name, r.plan, names),
        mesh=mesh or (),
        mesh_checked=mesh is not None,
        declared=declared,
    )


# --- the mesh registry --------------------------------------------------------------------------


def registry_drift(ctx: Context, prep: Prepared) -> tuple[HostChange, ...] | None:
    """What ``register`` would change in the registry (a dry run: nothing is written); None
    when there is no registry to compare with."""
    from infra_apply.commands.register import droplets_output, shared_allocator
    from infra_apply.registry.mesh import live_droplets_from_output
    from infra_apply.registry.meshfile import load_document, write_registration

    target = mesh_target(ctx)
    if target is None:
        ctx.say(f"{prep.producer.name}: no mesh-hosts.json given: the registry was not checked")
        return None
    if not prep.rendered.droplet_addresses:
        return ()
    # nothing applied: no droplets, so every entry the registry holds for the producer is stale
    live = live_droplets_from_output(droplets_output(prep, ctx.account.remedy_flags, applied=False))
    doc, _ = load_document(target)
    stale = stale_registry_droplets(doc, prep.producer.name, (d.name for d in live))
    allocate = shared_allocator(ctx, prep.producer.name, live, stale, {}, write=False)
    result = write_registration(
        target, prep.producer.name, live, removed=stale, dry_run=True, allocate=allocate
    )
    return result.changes


# --- droplets no state knows ------------------------------------------------------------------


def list_tagged(ctx: Context, preps: Sequence[Prepared], accounts: Accounts | None = None) -> list[Orphan]:
    """Every droplet tagged ``managed-by:infra-apply`` in the accounts the producers use."""
    return [_orphan(d) for d in ctx.account.tagged_droplets(preps, ctx.env, MANAGED_TAG, accounts)]


def _orphan(raw: Mapping[str, object]) -> Orphan:
    tags = raw.get("tags")
    return Orphan(
        id=str(raw.get("id", "")),
        name=str(raw.get("name", "")),
        tags=tuple(str(t) for t in tags) if isinstance(tags, Iterable) and not isinstance(tags, str) else (),
    )
