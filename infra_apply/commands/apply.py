"""``apply``: plan one producer, show the plan, guard, confirm, apply exactly that saved plan,
then register its hosts.

The operator is reached only through ``Terminal`` (what to show, how to ask), so a test drives
the whole order of effects with a fake working copy and a scripted terminal.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from infra_apply import kinds, remedy
from infra_apply.cloud.accounts import Accounts
from infra_apply.commands import Output
from infra_apply.commands.plan import Planned, cost_of, plan_one
from infra_apply.commands.register import register
from infra_apply.errors import GuardRefused, InfraApplyError, TerraformError
from infra_apply.manifests.manifest import Manifest
from infra_apply.manifests.model import ProducerModel
from infra_apply.plan import budget, exists
from infra_apply.plan.budget import Budget
from infra_apply.plan.cost import Prices
from infra_apply.plan.guard import (
    GuardVerdict,
    allow_flag,
    allow_value,
    guard,
    refusal_message,
    unused_allowances,
)
from infra_apply.plan.parse import COUNTED_ACTIONS, ProducerPlan
from infra_apply.plan.semantics import reason, verb
from infra_apply.registry.mesh import WriteResult
from infra_apply.report import GpuUp, ProducerReport
from infra_apply.runtime import terraform as tf
from infra_apply.runtime.workcopy import (
    Context,
    Prepared,
    check_ready,
    check_registry,
    load_project,
    mesh_target,
    pick,
    preflight,
    prepare,
)
from infra_apply.timing import done_line
from infra_apply.untrusted import visible

# How long an apply waits for a `gpu reap` or `gpu up` holding the producer's leases.
LEASE_WAIT_SECONDS = 600


class Confirm(Protocol):
    def __call__(self, question: str) -> bool: ...


@dataclass(frozen=True)
class Terminal:
    """How apply talks to the operator while it runs."""

    show: Callable[[str], None]  # the plan, then Terraform's output: text as is (lines end in \n)
    confirm: Confirm | None = None  # None: no terminal to ask on
    color: bool = False  # style the plan summary it shows (the CLI decides, per stream)


@dataclass(frozen=True)
class ApplyOptions:
    allow_destroy: tuple[str, ...] = ()  # manifest names or addresses the guard lets go
    allow_replace: tuple[str, ...] = ()
    allow_resize: tuple[str, ...] = ()  # droplets it may resize in place (downtime, disk grows)
    allow_over_budget: tuple[str, ...] = ()  # producers whose budget this apply may exceed
    allow_trusted_sources: tuple[str, ...] = ()  # clusters whose trusted sources may cut a client off
    auto_approve: bool = False  # apply without asking (needed without a terminal)
    gpu: tuple[str, ...] = ()  # on-demand GPU droplets planned on (what their leases hold)
    # gpu up / down / reap: the resources (base addresses) the plan may change. The plan is
    # targeted at them (``-target``), so another change pending in the producer is neither
    # applied nor in the way; whatever the targeting still pulls in is refused (exit 3).
    only: frozenset[str] | None = None
    # gpu up / down / reap: what a guard refusal tells to run instead of --allow-* (flags the
    # GPU verbs do not take); None: the --allow-* flags of apply
    refusal_remedy: str | None = None
    gpus_up: tuple[GpuUp, ...] = ()  # shown with the plan
    prices: Prices | None = None  # the plan's cost is shown at these prices (None: not shown)
    lease_ends: Mapping[str, datetime | None] = field(default_factory=dict)  # GPU -> lease end
    # the GPUs with a lease (an ordinary apply): a GPU the plan destroys without one is shown as
    # up without a lease, with the ways out; None (gpu verbs): not looked at
    leased: frozenset[str] | None = None
    up_since: Mapping[str, datetime] = field(default_factory=dict)  # GPU -> when it came up
    # the manifests by path, to locate an error in them (empty: located by file only)
    manifests: Mapping[str, Manifest] = field(default_factory=dict)
    budget: Budget | None = None  # the producer's budget (checked when ``prices`` is set)
    # gpu up: the command that reruns it past its budget (None: apply's own, with its flags)
    over_budget_again: str | None = None


@dataclass(frozen=True)
class Applied:
    planned: Planned
    applied: bool  # False: the plan changed nothing
    registration: WriteResult | None
    registry: Path | None  # where hosts are registered; None: no --mesh-hosts given
    keep: tuple[str, ...] = ()  # the account's remedy flags (--sandbox): every remedy printed carries them

    @property
    def producer(self) -> str:
        return self.planned.prep.producer.name


def run(ctx: Context, producer: str, terminal: Terminal, options: ApplyOptions = ApplyOptions()) -> Applied:
    """An ordinary apply: every on-demand GPU stays as its lease says. The leases are held
    (``exclusive``) from reading them to the end of the apply, so a reap cannot release a GPU
    this apply is about to keep, nor the other way round."""
    from infra_apply.cloud.pricing import run_prices
    from infra_apply.gpu.leases_view import Leases, gpu_names, lease_store, read_leases

    check_registry(ctx)
    check_ready(ctx)
    # A live apply applies only the Terraform under review: a stale generated/ is refused.
    project = load_project(ctx, refuse_stale=True, warn_for=[producer])
    [name] = pick(project, [producer])
    ctx.account.refuse_local_state_in_ci(project.config, ctx.env)
    with contextlib.ExitStack() as stack:

        def hold_and_read() -> Leases:
            if gpu_names(project, name):
                stack.enter_context(lease_store(ctx, name).exclusive(LEASE_WAIT_SECONDS))
            return read_leases(ctx, project, [name])

        # pre-flight reads the leases (with remote state: the state bucket) only once the
        # account answered; held from then to the end of the apply
        reader = functools.cache(hold_and_read)
        # the account's catalogue in one concurrent round, shared by pre-flight, prices and
        # the exists lookups of this apply's plan
        accounts = stack.enter_context(Accounts(ctx.env))
        preflight(ctx, project, [name], lambda: reader().held(name), accounts)
        leases = reader()
        options = replace(options, gpu=leases.held(name), gpus_up=leases.up(name), leased=leases.leased(name))
        options = replace(
            options,
            prices=run_prices(ctx, [name], accounts=accounts),
            lease_ends=leases.lease_ends(name),
            up_since=leases.up_since(name),
            manifests=project.manifests,
            budget=project.config.budgets.get(name),
        )
        [prep] = prepare(ctx, project, [name])
        return apply_producer(ctx, prep, terminal, options, accounts)


def apply_producer(
    ctx: Context,
    prep: Prepared,
    terminal: Terminal,
    options: ApplyOptions = ApplyOptions(),
    accounts: Accounts | None = None,
) -> Applied:
    """plan -> show -> guard -> confirm -> apply that saved plan -> register the hosts.
    ``accounts``: the run's live accounts (pre-flight's lists serve the exists lookups)."""
    from infra_apply.report.text import format_text

    name = prep.producer.name
    planned = plan_one(
        prep, ctx.say, gpu=options.gpu, clock=ctx.clock, accounts=accounts, targets=_targets(options.only)
    )
    allow = (
        options.allow_destroy,
        options.allow_replace,
        options.allow_resize,
        options.allow_trusted_sources,
    )
    verdict = guard(planned.plan, *allow)
    gpus = options.gpus_up
    if options.leased is not None:
        from infra_apply.gpu.leases_view import unleased_up

        gpus += unleased_up(planned.plan, prep.rendered, options.leased)
    cost = None
    if options.prices is not None:
        cost = cost_of(
            planned,
            options.prices,
            options.lease_ends,
            datetime.now(UTC),
            options.up_since,
            budget=options.budget,
            targeted=options.only is not None,
        )
    report = ProducerReport(planned.plan, verdict, prep.producer, gpus, cost, ctx.account.stand_in)
    terminal.show(format_text([report], terminal.color))
    refuse_impossible_resizes(planned.plan, prep.producer, options.manifests)
    for unused in unused_allowances(planned.plan, *allow):
        ctx.say(f"infra-apply: warning: {unused.message}")
    if options.only is not None:
        _only(planned, options.only, ctx.account.remedy_flags)
    checked = budget.check(name, cost) if cost is not None else None
    over: tuple[str, ...] = ()
    # a plan that changes nothing adds nothing to the bill: there is nothing to refuse
    if checked is not None and planned.changed and name not in options.allow_over_budget:
        over = budget.refusal_lines([checked], _again(name, options, ctx.account.remedy_flags, verdict))
    for value in options.allow_over_budget:
        if value != name:
            ctx.say(
                f"infra-apply: warning: {budget.FLAG} {visible(value)} names another producer than {name}"
            )
    if not verdict.ok:
        why = "".join(f"\n{note}" for note in planned.notes)
        if options.refusal_remedy is not None:
            raise GuardRefused(_refused_without_flags(verdict, options.refusal_remedy) + _lines(over) + why)
        ways_out = _ways_out(gpus, ctx.account.remedy_flags)
        raise GuardRefused(refusal_message(verdict) + _lines(over) + ways_out + why)
    if over:
        raise GuardRefused("\n".join(over))
    applied = False
    if planned.changed:
        if not _confirmed(name, terminal, options.auto_approve):
            raise InfraApplyError("apply cancelled; nothing was changed")
        ctx.say(f"{name}: terraform apply (the saved plan shown above)")
        started = ctx.clock()
        # what this apply creates, so a droplet it makes but state loses (the apply stopped in
        # between) is known as this state's own next time (exists.py)
        exists.write_journal(prep.copy.path, planned.raw, datetime.now(UTC))
        try:
            prep.copy.apply(echo=lambda line: terminal.show(f"{line}\n"))
        except BaseException as exc:
            # stopped or failed: what it created came before now
            exists.end_journal(prep.copy.path, datetime.now(UTC))
            if not isinstance(exc, tf.CommandFailed):
                raise
            raise TerraformError(
                f"terraform apply failed for producer {name}:\n{exc.detail}\n"
                "State holds what was created before the failure; fix the cause and rerun."
            ) from None
        exists.clear_journal(prep.copy.path)
        ctx.say(done_line(name, "apply", ctx.clock() - started))
        applied = True
    registry = mesh_target(ctx)
    registration = _register(ctx, prep, planned, applied) if registry is not None else None
    return Applied(planned, applied, registration, registry, ctx.account.remedy_flags)


def refuse_impossible_resizes(
    plan: ProducerPlan, producer: ProducerModel, manifests: Mapping[str, Manifest]
) -> None:
    """A resize to a size whose disk is below the droplet's can never succeed: DigitalOcean
    answers 422, and the provider powers the droplet off before asking. No flag allows it, so
    it stops the apply before anything runs (exit 1), located at the droplet's size."""
    from infra_apply.cloud.preflight import size_at

    lines = []
    for change in plan.changes:
        r = change.resize
        if r is None or not r.fails:
            continue
        droplet = next((d for d in producer.droplets if d.name == change.name), None)
        where = size_at(droplet, manifests) if droplet is not None else None
        lines.append(
            (
                where,
                f"droplet {change.name}: size {r.before} → {r.after} can never be applied: {r.after}'s "
                f"disk is {r.disk_after} GB, below the droplet's {r.disk_before} GB, and a disk never "
                "shrinks (DigitalOcean refuses it with 422, after the provider has powered the droplet "
                f"off); nothing was changed: keep size {r.before} (or a size with a disk of at least "
                f"{r.disk_before} GB), or replace the droplet with a new one of size {r.after}",
            )
        )
    if not lines:
        return
    (first_where, first), rest = lines[0], lines[1:]
    more = "".join(
        f"\n{w.path}:{w.line}:{w.col}: error resize: {text}" if w is not None else f"\n{text}"
        for w, text in rest
    )
    raise InfraApplyError(
        first + more,
        path=first_where.path if first_where is not None else None,
        line=first_where.line if first_where is not None else 0,
        col=first_where.col if first_where is not None else 0,
        rule="resize",
    )


def _ways_out(gpus: tuple[GpuUp, ...], keep: Sequence[str]) -> str:
    """For a GPU up without a lease, the refusal names the GPU verbs, not only --allow-destroy."""
    return "".join(
        f"\n{g.name} is up without a lease: {remedy.command('gpu up', g.name, keep=keep)} "
        f"leases it, {remedy.command('gpu down', g.name, keep=keep)} releases it"
        for g in gpus
        if g.until is None
    )


def _again(name: str, options: ApplyOptions, keep: Sequence[str], verdict: GuardVerdict) -> str:
    """The apply that goes past the budget: the same flags, those the guard still asks for
    (refused for both, the command must pass both) and the one it lacked."""
    if options.over_budget_again is not None:
        return options.over_budget_again
    given: dict[str, tuple[str, ...]] = {
        "--allow-destroy": options.allow_destroy,
        "--allow-replace": options.allow_replace,
        "--allow-resize": options.allow_resize,
        "--allow-trusted-sources": options.allow_trusted_sources,
    }
    for change in verdict.blocked:
        flag = allow_flag(change)
        given[flag] = tuple(dict.fromkeys((*given[flag], allow_value(change))))
    given[budget.FLAG] = (*options.allow_over_budget, name)
    args = [w for flag, values in given.items() for v in values for w in (flag, v)]
    if options.auto_approve:
        args.append("--auto-approve")
    return remedy.for_producer("apply", name, *args, keep=keep)


def _lines(lines: tuple[str, ...]) -> str:
    return "".join(f"\n{line}" for line in lines)


def _targets(only: frozenset[str] | None) -> tuple[str, ...]:
    """The ``-target`` addresses of a GPU verb's plan.

    Why ``-target`` and not a render that keeps everything else as its state holds: Terraform
    then plans the GPU's droplet and firewall (and what they read: the GPU variable, the SSH
    key data sources) from the real state and configuration, and leaves every other resource
    out of the plan, so a pending resize or edit elsewhere in the producer is neither applied
    nor refused here, and the next ordinary plan still shows it. A render of the rest "as in
    state" would have to restate each resource's attributes (computed ones, passwords,
    ignore_changes) exactly, and any one it got wrong would itself become a change applied by
    a GPU release. ``-target`` never *adds* a change: what it does include is still checked
    by ``_only``."""
    return () if only is None else tuple(sorted(only))


def _only(planned: Planned, allowed: frozenset[str], keep: Sequence[str]) -> None:
    """A targeted plan holds the targets and what they depend on: a change to anything but the
    GPU's own resources (a dependency a future template adds) is never applied by a GPU verb."""
    others = sorted({c.base_address for c in planned.plan.changes if c.action in COUNTED_ACTIONS} - allowed)
    if others:
        name = planned.prep.producer.name
        again = remedy.for_producer("apply", name, keep=keep)
        raise GuardRefused(
            f"producer {name}: the GPU's plan also changes {', '.join(others)}, which it depends "
            f"on; nothing was changed: review and apply that first ({again}), then rerun"
        )


def _refused_without_flags(verdict: GuardVerdict, remedy: str) -> str:
    """A GPU verb's refusal: each blocked change, then the one way out those verbs have."""
    lines = [f"{verb(c)} {visible(c.label)}: {reason(c, with_values=False)}" for c in verdict.blocked]
    return "\n".join([*lines, remedy])


def _confirmed(producer: str, terminal: Terminal, auto_approve: bool) -> bool:
    if auto_approve:
        return True
    if terminal.confirm is None:
        raise InfraApplyError(
            "refusing to apply without a terminal to confirm on; review the plan and rerun "
            "with --auto-approve"
        )
    return terminal.confirm(f"Apply these changes to producer {producer}?")


def _register(ctx: Context, prep: Prepared, planned: Planned, applied: bool) -> WriteResult | None:
    """Register the hosts (and drop the destroyed droplets' ones); a failure here says the
    apply itself went through and how to finish."""
    removed = [c.name for c in planned.plan.changes if c.type == kinds.DROPLET.type and c.action == "delete"]
    if not (prep.producer.droplets or removed):
        return None
    started = ctx.clock()
    try:
        result = register(ctx, prep, removed=removed)
    except InfraApplyError as exc:
        name = prep.producer.name
        done = "applied" if applied else "nothing to apply"
        mesh = ("--mesh-hosts", str(ctx.mesh_path)) if ctx.mesh_path is not None else ()
        retry = remedy.for_producer("register", name, *mesh, keep=ctx.account.remedy_flags)
        raise InfraApplyError(
            f"{name}: {done}, but registering its hosts failed: {exc.message}; fix that and run {retry}",
            path=exc.path,
            line=exc.line,
            col=exc.col,
            rule=exc.rule,
        ) from None
    hosts = len(result.changes)
    detail = f"{hosts} host change{'s' if hosts != 1 else ''}" if result.changed else "unchanged"
    ctx.say(done_line(prep.producer.name, "register", ctx.clock() - started, detail))
    return result


def output(done: Applied) -> Output:
    from infra_apply.registry.mesh import describe

    lines = [f"{done.producer}: {'applied' if done.applied else 'nothing to apply'}"]
    notes: tuple[str, ...] = ()
    if done.registration is not None:
        lines += describe(done.registration)
    elif done.registry is None:
        register = remedy.for_producer("register", done.producer, "--mesh-hosts", "FILE", keep=done.keep)
        notes = (f"infra-apply: no --mesh-hosts given; hosts not registered (run {register})",)
    return Output("".join(f"{line}\n" for line in lines), notes)
