"""``gpu up / down / status / reap``: the on-demand GPU lifecycle (issue 12, rule
``gpu_ondemand``) over the core in ``infra_apply.gpu``.

- up: lease (who, when, until), then plan + guard + apply the producer with the GPU on, record
  the droplet on the lease, register its hosts like any droplet's;
- down: the command is the allowance to destroy that GPU droplet (and its firewall); the
  guard still refuses anything else, the hosts leave mesh-hosts.json, the lease ends;
- status: every GPU droplet, up or down, with uptime, lease end, last busy, price and cost;
- reap: probe each GPU that is up, extend or release it as ``lease.decide`` says.

Every Terraform run here may change the GPU's own resources only (``ApplyOptions.only``): a
reap from a timer must never apply a change to the producer nobody reviewed.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from infra_apply import kinds, remedy
from infra_apply.cloud.accounts import Accounts
from infra_apply.commands import Output
from infra_apply.commands.apply import Applied, ApplyOptions, Terminal, apply_producer
from infra_apply.commands.register import register
from infra_apply.errors import ExitCode, InfraApplyError
from infra_apply.forge.notify import Ran, tell_apply
from infra_apply.gpu import lifecycle
from infra_apply.gpu.config import GpuSettings, format_duration, settings_for
from infra_apply.gpu.lease import Lease, now_utc, whoami
from infra_apply.gpu.leases_view import Leases, gpu_names, lease_store, read_leases
from infra_apply.gpu.probe import ProbeResult, probe_gpu
from infra_apply.gpu.status import GpuRef, LiveGpu, StatusRow, rows
from infra_apply.gpu.store import LeaseStore, StoreBusy
from infra_apply.plan import budget
from infra_apply.runtime.workcopy import (
    Context,
    Prepared,
    Project,
    check_ready,
    check_registry,
    load_project,
    lock_working_copy,
    mesh_target,
    preflight,
    prepare,
    state_droplets,
    workdir,
)

# gpu up / down wait this long for another run holding the producer's leases (a reap, an
# apply); gpu reap never waits (the timer's next tick tries again).
LEASE_WAIT_SECONDS = 600


def producer_of(project: Project, name: str) -> str:
    """The producer whose module renders the on-demand GPU droplet ``name``."""
    for producer in sorted(project.rendered):
        if name in gpu_names(project, producer):
            return producer
    known = sorted(g for p in project.rendered for g in gpu_names(project, p))
    raise InfraApplyError(
        f"{name!r} is not an on-demand GPU droplet (a service's gpu.droplet); "
        f"GPU droplets: {', '.join(known) or 'none'}",
        rule="gpu_ondemand",
    )


def own_resources(prep: Prepared, name: str) -> frozenset[str]:
    """The resources ``gpu up/down`` may change: the GPU droplet and its two firewalls (its own
    and its public openings', render.py)."""
    droplet = prep.rendered.droplet_addresses.get(name)
    if droplet is None:  # a lease left for a GPU the manifests no longer declare
        raise InfraApplyError(
            f"{name} is no longer an on-demand GPU droplet of producer {prep.producer.name}; "
            "release it by hand (terraform state) and remove its lease",
            rule="gpu_ondemand",
        )
    from infra_apply.render.module import public_address

    firewall = kinds.FIREWALL.address(kinds.DROPLET.local(droplet))
    return frozenset({droplet, firewall, public_address(firewall)})


# --- gpu up --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Up:
    lease: Lease
    applied: Applied


def up(
    ctx: Context,
    name: str,
    terminal: Terminal,
    for_: timedelta | None = None,
    allow_over_budget: tuple[str, ...] = (),
) -> Up:
    check_registry(ctx)
    check_ready(ctx)
    project = load_project(ctx, refuse_stale=True)
    ctx.account.refuse_local_state_in_ci(project.config, ctx.env)
    producer = producer_of(project, name)
    # told as an apply is ([notify]): done, refused or failed, from here on
    return tell_apply(
        ctx,
        producer,
        Ran("gpu up", name),
        lambda: _up(ctx, project, producer, name, terminal, for_, allow_over_budget),
        lambda done: done.applied,
    )


def _up(
    ctx: Context,
    project: Project,
    producer: str,
    name: str,
    terminal: Terminal,
    for_: timedelta | None,
    allow_over_budget: tuple[str, ...],
) -> Up:
    settings = settings_for(name, project.config.gpu)
    with contextlib.ExitStack() as stack:

        def hold_and_read() -> tuple[LeaseStore, Leases]:
            store = lease_store(ctx, producer)
            stack.enter_context(store.exclusive(LEASE_WAIT_SECONDS))
            return store, read_leases(ctx, project, [producer])

        # pre-flight before the lease store (with remote state: the state bucket), and before
        # the lease: a wrong account, or a GPU its region does not offer, leaves no lease behind
        reader = functools.cache(hold_and_read)
        # one catalogue for the run: pre-flight's lists serve the exists lookups of the apply
        accounts = stack.enter_context(Accounts(ctx.env))
        on_after = lambda: tuple(sorted({*reader()[1].held(producer), name}))  # noqa: E731
        preflight(ctx, project, [producer], on_after, accounts)
        store, before = reader()
        # the working copy before the lease: one another run is using refuses with no lease taken
        [prep] = prepare(ctx, project, [producer])
        own = own_resources(prep, name)
        new = name not in before.by_producer.get(producer, {})
        # lease, then create: an ordinary plan running meanwhile already keeps the GPU
        taken = now_utc()
        try:
            lease = lifecycle.lease_gpu(
                store,
                settings,
                who=whoami(ctx.env),
                for_=for_,
                retry=_gpu_command(ctx, "up", *_up_args(name, for_)),
            )
        except KeyboardInterrupt:
            # stopped while the lease was written: it may have landed; a new one holds nothing
            if new:
                _end_if_ours(store, name, whoami(ctx.env), taken)
            raise
        leases = read_leases(ctx, project, [producer])
        options = ApplyOptions(
            auto_approve=True,
            gpu=leases.held(producer),
            only=own,
            refusal_remedy=_up_remedy(ctx, name, for_),
            allow_over_budget=allow_over_budget,
            over_budget_again=_gpu_command(
                ctx, "up", *_up_args(name, for_), *_over(allow_over_budget), budget.FLAG, producer
            ),
        )
        held_to = project.config.budgets.get(producer)
        if held_to is not None:
            # the lease's hours this month count against the producer's budget
            from infra_apply.cloud.pricing import run_prices

            options = replace(
                options,
                prices=run_prices(ctx, [producer], accounts=accounts),
                lease_ends=leases.lease_ends(producer),
                up_since=leases.up_since(producer),
                budget=held_to,
            )
        try:
            applied = apply_producer(ctx, prep, terminal, options, accounts)
        except InfraApplyError as exc:
            error = InfraApplyError(
                f"gpu up {name}: {exc.message}\n{_after_failed_up(ctx, store, prep, lease, new, for_)}",
                rule=exc.rule,
            )
            error.exit_code = exc.exit_code  # a refusal stays a refusal (exit 3)
            raise error from None
        except KeyboardInterrupt:
            # stopped (Ctrl-C, SIGTERM, SIGHUP) while Terraform planned or applied: it has
            # stopped cleanly and written state, so the lease is settled as for a failure
            try:
                settled = _after_failed_up(ctx, store, prep, lease, new, for_)
            except InfraApplyError as exc:
                settled = f"the lease could not be settled ({exc.message}); gpu reap settles it"
            ctx.say(f"infra-apply: {name}: stopped; {settled}")
            raise
        recorded = _record(store, prep, name)
        if recorded is None:
            raise InfraApplyError(f"gpu up {name}: the apply went through but the droplet is not in state")
    return Up(recorded, applied)


def _record(store: LeaseStore, prep: Prepared, name: str) -> Lease | None:
    """Note the GPU droplet the state holds on its lease; None when the state holds none."""
    live = state_droplets(prep).get(prep.rendered.droplet_addresses[name])
    if live is None:
        return None
    found = _live_gpu(live)
    return lifecycle.record_up(
        store,
        name,
        droplet_id=found.droplet_id,
        ip=found.ip,
        hourly_price=found.hourly_price,
        created=found.created,
    )


def _end_if_ours(store: LeaseStore, name: str, who: str, taken: datetime) -> None:
    """A lease this run may have written before it was stopped: ended when it is the new one
    this run took (by this user, from this moment on, no droplet recorded on it)."""
    held = store.read().leases.get(name)
    if held is not None and held.who == who and held.since >= taken and not held.up:
        lifecycle.end_new_lease(store, held)


def _gpu_command(ctx: Context, verb: str, *args: str) -> str:
    return remedy.command(f"gpu {verb}", *args, keep=ctx.account.remedy_flags)


def _up_args(name: str, for_: timedelta | None) -> tuple[str, ...]:
    return (name,) if for_ is None else (name, "--for", format_duration(for_))


def _over(allowed: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(w for p in allowed for w in (budget.FLAG, p))


def _up_remedy(ctx: Context, name: str, for_: timedelta | None) -> str:
    """gpu up's way past a refused change of the GPU's own droplet (a replacement or resize
    its settings now ask for): a new GPU with the new settings."""
    return (
        f"gpu up does not replace or resize a GPU that is up: release it and lease it again "
        f"({_gpu_command(ctx, 'down', name)}, then {_gpu_command(ctx, 'up', *_up_args(name, for_))})"
    )


def _after_failed_up(
    ctx: Context, store: LeaseStore, prep: Prepared, lease: Lease, new: bool, for_: timedelta | None
) -> str:
    """What becomes of the lease when ``gpu up``'s apply failed or was stopped. A lease this
    run took, for a GPU that is not in state, holds nothing: it is ended. One whose droplet
    was made (half made) stays, so the reaper releases what is there; an existing lease it
    extended is never ended by a failed apply (somebody else's GPU may be on it)."""
    name = lease.gpu
    again = _gpu_command(ctx, "up", *_up_args(name, for_))
    down = _gpu_command(ctx, "down", name)
    keep = (
        f"The lease stays until {_stamp(lease.until)} (gpu reap releases it then); rerun {again}, or {down}"
    )
    try:
        made = _record(store, prep, name) is not None
        if made and mesh_target(ctx) is not None:
            register(ctx, prep)  # a droplet that exists has its hosts, like any other
    except InfraApplyError:
        made = True  # state unreadable: keep the lease, the safe side
    if not new:
        return keep
    if made:
        return (
            f"The GPU droplet is in state (half made): its lease stays until {_stamp(lease.until)}; "
            f"gpu reap releases it then (or {down} now), or rerun {again}"
        )
    if not lifecycle.end_new_lease(store, lease):
        return keep
    return f"No GPU droplet was created, so the new lease was ended (nothing to keep); rerun {again}"


def up_output(done: Up) -> Output:
    from infra_apply.commands.apply import output as apply_output

    lease = done.lease
    price = f", ${lease.hourly_price:.2f}/hour" if lease.hourly_price is not None else ""
    head = apply_output(done.applied)
    where = f"{lease.droplet_id}, {lease.ip or 'no address'}"
    line = f"{lease.gpu}: up ({where}), leased by {lease.who} until {_stamp(lease.until)}{price}\n"
    return Output(head.stdout + line, head.stderr)


# --- gpu down and the release both down and reap use -----------------------------------------


@dataclass
class _Releaser:
    """Releases GPUs of one producer: a plan with the GPU off (every other leased GPU kept),
    guarded with the GPU as the one allowance, applied, hosts unregistered."""

    ctx: Context
    project: Project
    producer: str
    terminal: Terminal
    prep: Prepared | None = field(default=None)
    command: str = "gpu down"  # what the apply events name (gpu down, gpu reap)

    def __call__(self, lease: Lease) -> None:
        leases = read_leases(self.ctx, self.project, [self.producer])  # the claimed one is not held
        on = leases.held(self.producer)
        if self.prep is None:
            [self.prep] = prepare(self.ctx, self.project, [self.producer])
        plan = remedy.for_producer("plan", self.producer, keep=self.ctx.account.remedy_flags)
        options = ApplyOptions(
            allow_destroy=(lease.gpu,),
            auto_approve=True,
            gpu=on,
            only=own_resources(self.prep, lease.gpu),
            gpus_up=leases.up(self.producer),
            refusal_remedy=f"nothing was changed and the lease stays; see what the plan holds: {plan}",
        )
        prep = self.prep
        applied = tell_apply(
            self.ctx,
            self.producer,
            Ran(self.command, lease.gpu),
            lambda: apply_producer(self.ctx, prep, self.terminal, options),
            lambda done: done,
        )
        destroyed = any(
            c.type == kinds.DROPLET.type and c.action == "delete" and c.name == lease.gpu
            for c in applied.planned.plan.changes
        )
        if not destroyed and applied.registry is not None:
            # already gone (a run stopped or killed after its destroy): its hosts go all the same
            register(self.ctx, self.prep, removed=(lease.gpu,))

    def gone(self, lease: Lease) -> bool:
        """After a stop: is the GPU's droplet out of state (Terraform's destroy finished)? Its
        hosts then leave mesh-hosts.json too. Unknown counts as not gone (the lease stays)."""
        if self.prep is None:
            return False
        try:
            if self.prep.rendered.droplet_addresses.get(lease.gpu) in state_droplets(self.prep):
                return False
            if mesh_target(self.ctx) is not None:
                register(self.ctx, self.prep, removed=(lease.gpu,))
        except InfraApplyError:
            return False
        return True


@dataclass(frozen=True)
class Down:
    outcome: lifecycle.Outcome


def down(ctx: Context, name: str, terminal: Terminal) -> Down:
    check_registry(ctx)
    check_ready(ctx)
    project = load_project(ctx, refuse_stale=True)
    ctx.account.refuse_local_state_in_ci(project.config, ctx.env)
    producer = producer_of(project, name)
    store = lease_store(ctx, producer)
    release = _Releaser(ctx, project, producer, terminal)
    outcome = lifecycle.release_gpu(
        store,
        name,
        release,
        who=whoami(ctx.env),
        wait=LEASE_WAIT_SECONDS,
        retry=_gpu_command(ctx, "down", name),
        gone=release.gone,
    )
    return Down(outcome)


def down_output(done: Down) -> Output:
    o = done.outcome
    if o.error is not None:
        return Output(
            "",
            (f"infra-apply: error: {o.gpu}: release failed, the lease stays: {o.error}",),
            ExitCode.REFUSED if o.refused else ExitCode.ERROR,
        )
    return Output(f"{o.gpu}: released; its lease ended\n")


# --- gpu status ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    rows: tuple[StatusRow, ...]
    now: datetime


def status(ctx: Context, clock: Callable[[], datetime] = now_utc) -> Status:
    check_ready(ctx)
    project = load_project(ctx)
    ctx.account.refuse_local_state_in_ci(project.config, ctx.env)
    producers = [p for p in sorted(project.rendered) if gpu_names(project, p)]
    # state before leases: a GPU whose `gpu up` finishes in between shows leased, not unleased
    live = {n: g for p in producers for n, g in _peek_live(ctx, project, p).items()}
    leases = read_leases(ctx, project, producers)
    refs = [GpuRef(g, p) for p in producers for g in sorted(gpu_names(project, p))]
    merged = {n: lease for p in producers for n, lease in leases.by_producer.get(p, {}).items()}
    now = clock()
    return Status(tuple(rows(refs, merged, project.config.gpu, now, live)), now)


def _peek_live(ctx: Context, project: Project, producer: str) -> dict[str, LiveGpu]:
    """The producer's GPU droplets in its state, for ``gpu status``: its working copy held only
    while ``terraform show`` reads the state. A copy another run is using is not waited for:
    status says what it could not see and goes on."""
    if not _may_hold_state(ctx, producer):
        return {}
    try:
        lock = lock_working_copy(workdir(ctx, producer), producer)
    except InfraApplyError:
        ctx.say(
            f"infra-apply: warning: producer {producer}: another infra-apply run is using its working "
            "copy; its GPUs up without a lease are not shown (run gpu status again when it has finished)"
        )
        return {}
    try:
        [prep] = prepare(ctx, project, [producer])
        return live_gpus(prep, gpu_names(project, producer))
    except InfraApplyError as exc:
        ctx.say(
            f"infra-apply: warning: producer {producer}: could not read its state ({exc.message}); "
            "its GPUs up without a lease are not shown"
        )
        return {}
    finally:
        lock.release(force=True)  # prepare took it once more (re-entrant): let go of both


def _may_hold_state(ctx: Context, producer: str) -> bool:
    """False when the producer's state is local and was never written here: no Terraform runs."""
    backend = ctx.account.backend(ctx.root, ctx.env)
    return backend.kind != "local" or (workdir(ctx, producer) / "terraform.tfstate").is_file()


def live_gpus(prep: Prepared, names: Iterable[str]) -> dict[str, LiveGpu]:
    """The GPU droplets ``names`` that the producer's state holds (no plan, no refresh): what
    is up, leased or not."""
    addresses = prep.rendered.droplet_addresses
    by_address = {addresses[n]: n for n in names if n in addresses}
    return {
        by_address[address]: _live_gpu(values)
        for address, values in state_droplets(prep).items()
        if address in by_address
    }


def _live_gpu(values: Mapping[str, object]) -> LiveGpu:
    price = values.get("price_hourly")
    return LiveGpu(
        droplet_id=str(values.get("id")),
        ip=_text(values.get("ipv4_address")),
        hourly_price=float(price) if isinstance(price, int | float) and not isinstance(price, bool) else None,
        created=_created(values.get("created_at")),
    )


def _created(value: object) -> datetime | None:
    """The droplet's ``created_at`` (RFC 3339, as DigitalOcean gives it); None when absent or
    unreadable (its uptime is then unknown, never guessed)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def status_output(done: Status, fmt: str) -> Output:
    from infra_apply.report import formats

    return Output(formats.gpu_status().render(done, fmt))


# --- gpu reap ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reaped:
    outcomes: tuple[lifecycle.Outcome, ...]
    busy: tuple[str, ...]  # producers whose leases another run held: the next reap retries
    errors: tuple[str, ...] = ()  # e.g. a producer's state that could not be read
    leases: tuple[Lease, ...] = ()  # the leases left once reaped (notify: ending soon)

    @property
    def failed(self) -> bool:
        return bool(self.errors) or any(o.failed for o in self.outcomes)


def reap(ctx: Context, terminal: Terminal) -> Reaped:
    try:
        check_registry(ctx)
        check_ready(ctx)
        project = load_project(ctx)
        ctx.account.refuse_local_state_in_ci(project.config, ctx.env)
    except InfraApplyError as exc:
        from infra_apply.forge.notify import tell_reap_failure

        tell_reap_failure(ctx, exc)
        raise
    outcomes: list[lifecycle.Outcome] = []
    busy: list[str] = []
    errors: list[str] = []
    left: list[Lease] = []
    notified = bool(project.config.notify.webhook_url_env)
    for producer in sorted(project.rendered):
        if not gpu_names(project, producer):
            continue
        store = lease_store(ctx, producer)
        try:
            outcomes += _reap_one(ctx, project, producer, store, terminal, errors.append)
        except StoreBusy:
            busy.append(producer)
            continue
        if notified:
            with contextlib.suppress(InfraApplyError):  # not read: nothing told this time
                left += store.read().leases.values()
    from infra_apply.forge.notify import notify_leases

    notify_leases(ctx, left, now_utc())
    return Reaped(tuple(outcomes), tuple(busy), tuple(errors), tuple(left))


def _reap_one(
    ctx: Context,
    project: Project,
    producer: str,
    store: LeaseStore,
    terminal: Terminal,
    report: Callable[[str], None],
) -> list[lifecycle.Outcome]:
    def probe(settings: GpuSettings) -> ProbeResult:
        return probe_gpu(settings, env=ctx.env, cwd=ctx.root) or ProbeResult(failure="no probe configured")

    with store.exclusive(0):
        # the state is read under the leases' lock, before reap reads them: a GPU a `gpu up`
        # on this machine is creating is never taken for one without a lease
        prep, found = _read_live(ctx, project, producer, report)
        now = now_utc()
        unleased = {
            name: lifecycle.standin(
                name,
                producer,
                now,
                droplet_id=g.droplet_id,
                ip=g.ip,
                hourly_price=g.hourly_price,
                created=g.created,
            )
            for name, g in found.items()
        }
        release = _Releaser(ctx, project, producer, terminal, prep, command="gpu reap")
        return lifecycle.reap(
            store,
            project.config.gpu,
            who=whoami(ctx.env),
            probe=probe,
            release=release,
            wait=0,
            unleased=unleased,
            gone=release.gone,
        )


def _read_live(
    ctx: Context, project: Project, producer: str, report: Callable[[str], None]
) -> tuple[Prepared | None, dict[str, LiveGpu]]:
    """The prepared working copy (kept for the releases) and the GPUs its state holds; a copy
    another run is using makes this reap give way (``StoreBusy``), like held leases do. A
    state that cannot be read is reported, and the leases are reaped all the same."""
    if not _may_hold_state(ctx, producer):
        return None, {}
    try:
        lock_working_copy(workdir(ctx, producer), producer)
    except InfraApplyError as exc:
        raise StoreBusy(exc.message) from None
    try:
        [prep] = prepare(ctx, project, [producer])
        return prep, live_gpus(prep, gpu_names(project, producer))
    except InfraApplyError as exc:
        report(
            f"producer {producer}: could not read its state, so GPUs up without a lease were not "
            f"looked at: {exc.message}"
        )
        return None, {}


def reap_output(done: Reaped) -> Output:
    lines = [line for o in done.outcomes for line in o.lines()]
    lines += [f"error: {e}" for e in done.errors]
    lines += [
        f"info: producer {p}: another infra-apply holds its GPU leases (or its working copy); "
        "the next reap retries"
        for p in done.busy
    ]
    if not done.outcomes and not done.busy and not done.errors:
        lines.append("info: no GPU leases to reap")
    errors = tuple(f"infra-apply: {line}" for line in lines if line.startswith(("error:", "warning:")))
    out = "".join(f"{line}\n" for line in lines if not line.startswith(("error:", "warning:")))
    refused = done.outcomes and all(o.refused for o in done.outcomes if o.failed) and not done.errors
    code = ExitCode.OK if not done.failed else ExitCode.REFUSED if refused else ExitCode.ERROR
    return Output(out, errors, code)


# --- helpers -------------------------------------------------------------------------------


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
