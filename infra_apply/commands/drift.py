"""``drift``: a refresh-only plan per producer (saved and shown, never applied) reporting what
changed outside Terraform, name drift, mesh-hosts.json entries that disagree with state, and
droplets tagged ``managed-by:infra-apply`` that no state knows."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra_apply.commands import Output
from infra_apply.drift import (
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
from infra_apply.errors import ExitCode
from infra_apply.managed import MANAGED_TAG, is_managed
from infra_apply.mesh import HostChange
from infra_apply.plan_parse import JsonObject
from infra_apply.state import refuse_local_state_in_ci
from infra_apply.timing import MONOTONIC, Clock, done_line, total_line
from infra_apply.workcopy import (
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
    refuse_local_state_in_ci(project.config, ctx.env, sandbox=ctx.sandbox)
    preflight(ctx, project, names)
    refreshed = refresh_all(prepare(ctx, project, names), ctx.say, ctx.clock)
    found = tuple(producer_drift(ctx, r) for r in refreshed)
    in_state = [d for r in refreshed for d in state_droplets(r.prep.producer.name, r.plan)]
    known = {d.id for d in in_state}
    tagged = list_tagged(ctx, [r.prep for r in refreshed])
    every = not producers
    cloud = next((str(r.prep.cloud) for r in refreshed if r.prep.cloud is not None), None)
    return DriftReport(
        found,
        orphans(tagged, known, names, every, in_state),
        ctx.sandbox,
        duplicates(tagged, in_state, names, every),
        cloud if ctx.sandbox else None,
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
    from infra_apply.mesh import live_droplets_from_output
    from infra_apply.meshfile import load_document, write_registration

    target = mesh_target(ctx)
    if target is None:
        ctx.say(f"{prep.producer.name}: no mesh-hosts.json given: the registry was not checked")
        return None
    if not prep.rendered.droplet_addresses:
        return ()
    # nothing applied: no droplets, so every entry the registry holds for the producer is stale
    live = live_droplets_from_output(droplets_output(prep, sandbox=ctx.sandbox, applied=False))
    doc, _ = load_document(target)
    stale = stale_registry_droplets(doc, prep.producer.name, (d.name for d in live))
    allocate = shared_allocator(ctx, prep.producer.name, live, stale, {}, write=False)
    result = write_registration(
        target, prep.producer.name, live, removed=stale, dry_run=True, allocate=allocate
    )
    return result.changes


# --- droplets no state knows ------------------------------------------------------------------


def list_tagged(ctx: Context, preps: Sequence[Prepared]) -> list[Orphan]:
    """Every droplet tagged ``managed-by:infra-apply`` in the accounts the producers use."""
    if ctx.sandbox:
        path = next((p.cloud for p in preps if p.cloud is not None), None)
        return [] if path is None else sandbox_tagged(path)
    from infra_apply import do_api

    tokens = [p.api_token for p in preps if p.api_token]
    return account_tagged(tokens, ctx.env.get(do_api.ENDPOINT_VAR))


def sandbox_tagged(path: Path) -> list[Orphan]:
    from infra_apply.sandbox import cloud

    return [_orphan(d) for d in cloud.list_droplets(path) if is_managed(d.get("tags") or ())]


def account_tagged(tokens: Iterable[str], endpoint: str | None) -> list[Orphan]:
    """The tagged droplets of each account (one listing per distinct token: producers may
    share an account or each have their own)."""
    from infra_apply import do_api

    found: dict[str, Orphan] = {}
    for token in dict.fromkeys(tokens):
        api = do_api.client(token=token, endpoint=endpoint)
        listed = api.paginate(
            "/v2/droplets", "droplets", query={"tag_name": MANAGED_TAG}, what="list tagged droplets"
        )
        found.update((o.id, o) for o in map(_orphan, listed))
    return list(found.values())


def _orphan(raw: Mapping[str, object]) -> Orphan:
    tags = raw.get("tags")
    return Orphan(
        id=str(raw.get("id", "")),
        name=str(raw.get("name", "")),
        tags=tuple(str(t) for t in tags) if isinstance(tags, Iterable) and not isinstance(tags, str) else (),
    )
