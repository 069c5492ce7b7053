"""``plan``: render, then ``terraform plan`` each producer (in parallel) and summarise the
changes; ``--changed`` plans only what a git change touches, ``--list`` plans nothing."""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from infra_apply.cloud.accounts import Accounts
from infra_apply.commands import Output
from infra_apply.errors import ExitCode, InfraApplyError, Problem
from infra_apply.plan import exists
from infra_apply.plan.model import parse_plan
from infra_apply.plan.parse import JsonObject, ProducerPlan
from infra_apply.runtime import terraform as tf
from infra_apply.runtime.workcopy import (
    Context,
    Prepared,
    Say,
    WorkingCopy,
    check_ready,
    load_project,
    pick,
    preflight,
    prepare,
)
from infra_apply.timing import MONOTONIC, Clock, counts_detail, done_line, total_line

if TYPE_CHECKING:
    # what a plan uses only once Terraform has planned is imported then (AFTER_THE_PLAN)
    from infra_apply.manifests.changed import Changes
    from infra_apply.plan.budget import Budget
    from infra_apply.plan.cost import Prices, ProducerCost
    from infra_apply.plan.guard import GuardVerdict
    from infra_apply.report import GpuUp, PlanContext, ProducerReport

T = TypeVar("T")


@dataclass(frozen=True)
class Planned:
    prep: Prepared
    plan: ProducerPlan
    changed: bool
    raw: JsonObject  # ``terraform show -json`` of the saved plan
    notes: tuple[str, ...] = ()  # why a tainted droplet is replaced (exists.py): the guard says it


@dataclass(frozen=True)
class PlanResult:
    planned: tuple[Planned, ...] = ()
    changes: Changes | None = None  # plan --changed: what git says changed since the base
    listed: tuple[str, ...] | None = None  # plan --list: the producers it would plan
    gpus: Mapping[str, tuple[GpuUp, ...]] = field(default_factory=dict)  # GPUs up, per producer
    costs: Mapping[str, ProducerCost] = field(default_factory=dict)  # monthly cost, per producer
    context: PlanContext | None = None  # sandbox or not, the commit, when: for the comment

    @property
    def changed(self) -> bool:
        return any(p.changed for p in self.planned)

    def reports(self) -> tuple[ProducerReport, ...]:
        from infra_apply.report import producer_reports

        plans = [p.plan for p in self.planned]
        models = {p.prep.producer.name: p.prep.producer for p in self.planned}
        recorded = self.context is not None and self.context.sandbox
        return producer_reports(
            plans, verdicts(self.planned), models, self.gpus, self.costs, stand_in=recorded
        )


def run(
    ctx: Context,
    producers: Sequence[str] = (),
    *,
    changed_since: str | None = None,
    list_only: bool = False,
    started: Accounts | None = None,
) -> PlanResult:
    """Plan ``producers`` (every producer when none), or with ``changed_since`` (a git ref) the
    ones a change since then touches. Every on-demand GPU is planned as its lease says: on
    while a lease holds it, off without one (never a surprise destroy, never a standing GPU).
    ``started``: the run's accounts with the catalogue already asked for (``accounts.started``,
    by the CLI before it imports this verb); this run closes them."""
    with contextlib.ExitStack() as stack:
        if started is not None:
            stack.enter_context(started)
        check_ready(ctx)
        found = _changed(ctx, changed_since)
        if found is not None and not found.selection.producers:
            # Nothing changed: said without validating, so CI stays fast on unrelated changes.
            return PlanResult(changes=found, listed=() if list_only else None)
        # warnings only for the producers planned (every producer when none is named)
        warn_for = list(found.selection.producers) if found is not None else list(producers) or None
        accounts = started or stack.enter_context(Accounts(ctx.env))
        if started is None and found is None and not list_only:
            # the account's catalogue in one concurrent round, shared by pre-flight, prices and
            # the exists lookups: started now, it is answered while the manifests validate and
            # render (an error on the way abandons it)
            ctx.account.start_catalogue(ctx.env, producers, accounts)
        project = load_project(ctx, warn_for=warn_for)
        if found is None:
            names = pick(project, producers)
        else:
            names = [n for n in found.selection.producers if n in project.rendered]
        if list_only or (found is not None and not names):
            return PlanResult(changes=found, listed=tuple(names) if list_only else None)
        ctx.account.refuse_local_state_in_ci(project.config, ctx.env)
        from infra_apply.cloud.pricing import run_prices
        from infra_apply.gpu.leases_view import read_leases, unleased_up

        # the leases (with remote state: the state bucket) are read only once pre-flight's
        # account check passed, and once
        reader = functools.cache(lambda: read_leases(ctx, project, names))
        preflight(ctx, project, names, lambda: reader().all_held(), accounts)
        leases = reader()
        prices = run_prices(ctx, names, accounts=accounts)
        preps = prepare(ctx, project, names)
        # git's answer arrives while Terraform plans, not after it
        commit = in_background(lambda: planned_commit(ctx.root, ctx.env), when=tf.after_next_start)
        planned = plan_all(preps, ctx.say, gpu=leases.all_held(), clock=ctx.clock, accounts=accounts)
    gpus = {
        p.prep.producer.name: leases.up(p.prep.producer.name)
        + unleased_up(p.plan, p.prep.rendered, leases.leased(p.prep.producer.name))
        for p in planned
    }
    now = datetime.now(UTC)
    costs = {
        p.plan.producer: cost_of(
            p,
            prices,
            leases.lease_ends(p.plan.producer),
            now,
            leases.up_since(p.plan.producer),
            budget=project.config.budgets.get(p.plan.producer),
        )
        for p in planned
    }
    return PlanResult(
        tuple(planned),
        found,
        gpus={p: g for p, g in gpus.items() if g},
        costs=costs,
        context=plan_context(ctx, commit),
    )


def cost_of(
    planned: Planned,
    prices: Prices,
    lease_ends: Mapping[str, datetime | None],
    now: datetime,
    up_since: Mapping[str, datetime] | None = None,
    *,
    budget: Budget | None = None,
    targeted: bool = False,
) -> ProducerCost:
    """What the saved plan does to the producer's monthly cost (GPUs by the hour, apart, billed
    from when each came up: ``up_since``), held against its ``budget``."""
    from infra_apply.plan.cost import producer_cost

    cost = producer_cost(
        planned.raw,
        prices,
        lease_ends,
        names=planned.prep.rendered.names,
        now=now,
        up_since=up_since,
        targeted=targeted,
    )
    return replace(cost, budget=budget)


_SHA = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")  # SHA-1 or SHA-256 object names


def plan_context(ctx: Context, commit: Future[str | None] | None = None) -> PlanContext:
    """``commit``: ``planned_commit`` asked ahead (``in_background``); asked again here when that failed."""
    from infra_apply.report import PlanContext

    found = ahead(commit, lambda: planned_commit(ctx.root, ctx.env))
    return PlanContext(ctx.account.stand_in, found, datetime.now(UTC))


def planned_commit(root: Path, env: Mapping[str, str]) -> str | None:
    """The commit planned: ``GITHUB_SHA`` in CI (Forgejo Actions sets it too), else ``HEAD`` of
    the repository holding ``root``; ``None`` outside git. Never fails a plan."""
    sha = env.get("GITHUB_SHA", "").strip().lower()
    if _SHA.fullmatch(sha):
        return sha
    from infra_apply.manifests.changed import head_commit

    head = head_commit(root)
    return head if head is not None and _SHA.fullmatch(head) else None


def _changed(ctx: Context, base: str | None) -> Changes | None:
    if base is None:
        return None
    from infra_apply.manifests.changed import changed_producers, describe

    found = changed_producers(ctx.root, ctx.out, base, ctx.env)
    for line in describe(found):
        ctx.say(line)
    return found


def output(result: PlanResult, fmt: str, *, color: bool = False) -> Output:
    """``color``: style the text summary (never json or markdown) for a terminal."""
    from infra_apply.report import formats

    if result.listed is not None:
        from infra_apply.report.verbs import Listing

        return Output(formats.plan_list().render(Listing(result.listed, result.changes), fmt))
    if not result.planned and result.changes is not None:
        from infra_apply.report.verbs import NothingChanged

        return Output(formats.plan_nothing().render(NothingChanged(result.changes.base), fmt))
    code = ExitCode.CHANGES if result.changed else ExitCode.OK
    view = formats.PlanView(result.reports(), result.context, color)
    return Output(formats.plan().render(view, fmt), code=code)


# --- planning producers -----------------------------------------------------------------------


def plan_one(
    prep: Prepared,
    say: Say,
    *,
    gpu: Iterable[str] = (),
    provider_env: Callable[[], Mapping[str, str]] | None = None,
    clock: Clock = MONOTONIC,
    accounts: Accounts | None = None,
    targets: Sequence[str] = (),
) -> Planned:
    """init, plan (saved), show: the saved plan as typed changes. The plan and the show each
    say how long they took when they end.

    ``provider_env``: extra environment for the plan and show only (the sandbox's shared provider,
    see sandbox/reattach.py); never for init or apply. ``accounts``: the run's live accounts,
    whose lists pre-flight already asked for."""
    name = prep.producer.name
    # the account is read while Terraform plans: what the plan creates is looked up after
    clusters = {db.cluster for db in prep.producer.databases} | {
        t.cluster for t in prep.producer.trusted_sources
    }
    lookup = exists.start(prep.account.source(prep, accounts), clusters)
    prep.copy.init()
    say(f"{name}: terraform plan")
    copy = prep.copy if provider_env is None else prep.copy.with_env(provider_env())
    variables = gpu_variables(prep, gpu) | ssh_variables(prep)
    _import_ahead()
    planned = _plan_and_show(prep, copy, say, variables, clock, targets)
    if lookup is None:
        return _trusted(planned, None)
    account = lookup.result()
    return _trusted(_settle(prep, copy, planned, account, say, variables, clock, targets), account)


def _trusted(planned: Planned, account: exists.Account | None) -> Planned:
    """The plan with whom each trusted-sources change cuts off (trusted.py)."""
    from infra_apply.plan import trusted

    prep = planned.prep
    keep = prep.account.remedy_flags
    return replace(planned, plan=trusted.review(planned.plan, planned.raw, prep.producer, account, keep=keep))


def _plan_and_show(
    prep: Prepared,
    copy: WorkingCopy,
    say: Say,
    variables: Mapping[str, str],
    clock: Clock,
    targets: Sequence[str] = (),
) -> Planned:
    name = prep.producer.name
    started = clock()
    changed = copy.plan(variables=variables, targets=targets)
    say(done_line(name, "plan", clock() - started, "changes" if changed else "no changes"))
    started = clock()
    raw = copy.show()
    plan = parse_plan(name, raw, prep.rendered.names, prep.rendered.create_settings)
    say(done_line(name, "show", clock() - started, counts_detail(plan.counts.items())))
    return Planned(prep, plan, changed or plan.has_changes, raw)


def _settle(
    prep: Prepared,
    copy: WorkingCopy,
    planned: Planned,
    account: exists.Account,
    say: Say,
    variables: Mapping[str, str],
    clock: Clock,
    targets: Sequence[str] = (),
) -> Planned:
    """Refuse a plan creating what the account holds; import this state's own lost droplets and
    untaint its healthy tainted ones, then plan once more."""
    journal = exists.read_journal(prep.copy.path)
    keep = prep.account.remedy_flags
    r = exists.review(planned.raw, prep.producer, prep.rendered, prep.manifests, account, journal, keep)
    exists.refuse(r, prep.account.label)
    for note in r.notes:
        say(f"infra-apply: warning: {prep.producer.name}: {note}")
    if r.settles:
        exists.act(prep.copy.path, r, copy.untaint, say, prep.producer.name)
        say(f"{prep.producer.name}: terraform plan (again, with what was settled)")
        planned = _plan_and_show(prep, copy, say, variables, clock, targets)
    return replace(planned, notes=r.notes)


def gpu_variables(prep: Prepared, gpu: Iterable[str]) -> dict[str, str]:
    out = {}
    for name in gpu:
        var = prep.rendered.gpu_variables.get(name)
        if var is None:
            known = ", ".join(sorted(prep.rendered.gpu_variables)) or "none"
            raise InfraApplyError(
                f"{name!r} is not an on-demand GPU droplet of producer "
                f"{prep.producer.name} (GPU droplets: {known})"
            )
        out[var] = "true"
    return out


def ssh_variables(prep: Prepared) -> dict[str, str]:
    """ssh_from = "mesh": each droplet's bootstrap SSH stays open (true) until the registry
    holds it. Without a registry nothing says which droplets are on the mesh: refused, rather
    than guess and lock a new droplet out or open an old one's SSH again."""
    _refuse_mesh_lockout(prep)
    if not prep.rendered.ssh_variables:
        return {}
    if prep.registered is None:
        raise InfraApplyError(
            f'producer {prep.producer.name}: ssh_from = "mesh" needs mesh-hosts.json to tell which '
            "droplets are on the mesh: pass --mesh-hosts FILE or set INFRA_APPLY_MESH_HOSTS"
        )
    return {
        var: "false" if name in prep.registered else "true"
        for name, var in sorted(prep.rendered.ssh_variables.items())
    }


def _refuse_mesh_lockout(prep: Prepared) -> None:
    """ssh_from = "mesh" without bootstrap_from: a droplet not on the mesh yet would get no SSH
    at all. The rule ssh_bootstrap says so at the manifest line when the registry is given; a
    run that cannot tell which droplets are registered is refused rather than lock one out."""
    bare = [d.name for d in prep.producer.droplets if d.firewall.mesh and not d.firewall.bootstrap_from]
    if not bare:
        return
    name = prep.producer.name
    if prep.registered is None:
        raise InfraApplyError(
            f'producer {name}: ssh_from = "mesh" needs mesh-hosts.json to tell which droplets are on '
            "the mesh (one not yet on it would get no SSH): pass --mesh-hosts FILE or set "
            "INFRA_APPLY_MESH_HOSTS",
            rule="ssh_bootstrap",
        )
    missing = [n for n in bare if n not in prep.registered]
    if missing:
        raise InfraApplyError(
            f"producer {name}: droplet {missing[0]!r} is not in mesh-hosts.json yet and ssh_from = "
            '"mesh" leaves it no SSH to bring it onto the mesh: set bootstrap_from (CIDRs) under '
            f"[firewall] or [producers.{name}.firewall] in infra-apply.toml",
            rule="ssh_bootstrap",
        )


def plan_all(
    preps: Sequence[Prepared],
    say: Say,
    *,
    gpu: Iterable[str] = (),
    clock: Clock = MONOTONIC,
    accounts: Accounts | None = None,
) -> list[Planned]:
    """Plan producers in parallel (bounded by the CPU count); results in producer order. More
    than one producer: the run's total time is said at the end."""
    started = clock()
    gpu = tuple(gpu)
    unknown = sorted(set(gpu) - {g for p in preps for g in p.rendered.gpu_variables})
    if unknown:
        raise InfraApplyError(f"{', '.join(unknown)}: not an on-demand GPU droplet of the producers planned")
    workers = max(1, min(len(preps), os.cpu_count() or 1))
    with contextlib.ExitStack() as stack:
        provider_env = None
        if preps and preps[0].shared_provider is not None:
            from infra_apply.sandbox.reattach import shared_provider

            provider_env = stack.enter_context(shared_provider(*preps[0].shared_provider)).env
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=workers))
        futures = [
            pool.submit(
                plan_one,
                p,
                say,
                gpu=[g for g in gpu if g in p.rendered.gpu_variables],
                provider_env=provider_env,
                clock=clock,
                accounts=accounts,
            )
            for p in preps
        ]
        try:
            planned, refused = _results(futures)
        except KeyboardInterrupt:
            _interrupt(futures)
            raise
    if refused:
        # every producer's existing resources at once, not one producer per run
        found = sorted({p for r in refused for p in r.problems}, key=Problem.sort_key)
        raise exists.ExistsRefused(found, refused[0].where)
    if len(preps) > 1:
        say(total_line(len(preps), "planned", clock() - started))
    return planned


def _results(futures: Sequence[Future[Planned]]) -> tuple[list[Planned], list[exists.ExistsRefused]]:
    planned, refused = [], []
    for f in futures:
        try:
            planned.append(_result(f))
        except exists.ExistsRefused as exc:
            refused.append(exc)
    return planned, refused


def _result(future: Future[T]) -> T:
    # Short waits: see tf.SIGNAL_CHECK_SECONDS (a signal must not wait for the plan to end).
    while True:
        try:
            return future.result(timeout=tf.SIGNAL_CHECK_SECONDS)
        except TimeoutError:
            continue


def in_background(
    work: Callable[[], T], *, when: Callable[[Callable[[], None]], None] | None = None
) -> Future[T]:
    """``work`` on a daemon thread, now or ``when`` says (``tf.after_next_start``: once
    Terraform has started): its answer, asked ahead of need, while this thread goes on (a run
    that stops on an error does not wait for it)."""
    done: Future[T] = Future()

    def run_it() -> None:
        if done.set_running_or_notify_cancel():
            try:
                done.set_result(work())
            except BaseException as exc:
                done.set_exception(exc)

    if when is None:
        threading.Thread(target=run_it, name="ahead", daemon=True).start()
    else:
        when(run_it)
    return done


def ahead(done: Future[T] | None, again: Callable[[], T]) -> T:
    """What ``done`` (``in_background``) found; ``again`` here when it failed or never started
    (then it never will): asking ahead never changes an answer, nor an error."""
    if done is not None and not done.cancel():
        with contextlib.suppress(Exception):
            return _result(done)
    return again()


# What a plan imports only after Terraform planned (the review, the summary, its renderers):
# imported while the first ``terraform plan`` runs, when this process waits anyway.
AFTER_THE_PLAN = (
    "infra_apply.plan.trusted",
    "infra_apply.plan.guard",
    "infra_apply.plan.drift",
    "infra_apply.report",
    "infra_apply.report.formats",
    "infra_apply.report.cost",
    "infra_apply.color",
)
_imported_ahead = threading.Event()


def _import_ahead() -> None:
    if _imported_ahead.is_set():
        return
    _imported_ahead.set()

    def imports() -> None:
        for name in AFTER_THE_PLAN:
            importlib.import_module(name)  # a failure is met again, and said, where it is used

    in_background(imports, when=tf.after_next_start)


def _interrupt(futures: Sequence[Future[Planned]]) -> None:
    """Ctrl-C reaches only the main thread: pass it to the Terraforms the workers run, and keep
    waiting for them to stop cleanly (a second Ctrl-C is Terraform's hard stop)."""
    for f in futures:
        f.cancel()
    tf.interrupt_running()
    while not all(f.done() for f in futures):
        try:
            wait(futures, timeout=tf.SIGNAL_CHECK_SECONDS)
        except KeyboardInterrupt:
            tf.interrupt_running()


def verdicts(
    planned: Sequence[Planned], allow_destroy: Sequence[str] = (), allow_replace: Sequence[str] = ()
) -> dict[str, GuardVerdict]:
    from infra_apply.plan.guard import guard

    return {p.plan.producer: guard(p.plan, allow_destroy, allow_replace) for p in planned}
