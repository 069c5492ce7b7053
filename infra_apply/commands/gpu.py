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

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from infra_apply.commands import Output
from infra_apply.commands.apply import Applied, ApplyOptions, Terminal, apply_producer
from infra_apply.commands.leases import gpu_names, lease_store, read_leases
from infra_apply.errors import ExitCode, InfraApplyError
from infra_apply.gpu import lifecycle
from infra_apply.gpu.config import GpuSettings, settings_for
from infra_apply.gpu.lease import Lease, now_utc, whoami
from infra_apply.gpu.probe import ProbeResult, probe_gpu
from infra_apply.gpu.status import GpuRef, StatusRow, rows, to_json, to_text
from infra_apply.gpu.store import LeaseStore, StoreBusy
from infra_apply.workcopy import (
    Context,
    Prepared,
    Project,
    check_ready,
    check_registry,
    load_project,
    preflight,
    prepare,
    state_droplets,
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
    """The resources ``gpu up/down`` may change: the GPU droplet and its firewall (same name)."""
    droplet = prep.rendered.droplet_addresses.get(name)
    if droplet is None:  # a lease left for a GPU the manifests no longer declare
        raise InfraApplyError(
            f"{name} is no longer an on-demand GPU droplet of producer {prep.producer.name}; "
            "release it by hand (terraform state) and remove its lease",
            rule="gpu_ondemand",
        )
    local = droplet.removeprefix("digitalocean_droplet.")
    return frozenset({droplet, f"digitalocean_firewall.{local}"})


# --- gpu up --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Up:
    lease: Lease
    applied: Applied


def up(ctx: Context, name: str, terminal: Terminal, for_: timedelta | None = None) -> Up:
    check_registry(ctx)
    check_ready(ctx)
    project = load_project(ctx, refuse_stale=True)
    producer = producer_of(project, name)
    settings = settings_for(name, project.config.gpu)
    store = lease_store(ctx, producer)
    with store.exclusive(LEASE_WAIT_SECONDS):
        # pre-flight before the lease: a GPU its region does not offer leaves no lease behind
        before = read_leases(ctx, project, [producer])
        preflight(ctx, project, [producer], tuple(sorted({*before.held(producer), name})))
        # lease, then create: an ordinary plan running meanwhile already keeps the GPU
        lease = lifecycle.lease_gpu(store, settings, who=whoami(ctx.env), for_=for_)
        on = read_leases(ctx, project, [producer]).held(producer)
        [prep] = prepare(ctx, project, [producer])
        options = ApplyOptions(auto_approve=True, gpu=on, only=own_resources(prep, name))
        try:
            applied = apply_producer(ctx, prep, terminal, options)
        except InfraApplyError as exc:
            raise InfraApplyError(
                f"gpu up {name}: {exc.message}\nThe lease stays until {_stamp(lease.until)} "
                f"(gpu reap releases it then); rerun gpu up {name}, or gpu down {name}",
                rule=exc.rule,
            ) from None
        live = state_droplets(prep).get(prep.rendered.droplet_addresses[name])
        if live is None:
            raise InfraApplyError(f"gpu up {name}: the apply went through but the droplet is not in state")
        price = live.get("price_hourly")
        lease = lifecycle.record_up(
            store,
            name,
            droplet_id=str(live.get("id")),
            ip=_text(live.get("ipv4_address")),
            hourly_price=float(price) if isinstance(price, int | float) else None,
        )
    return Up(lease, applied)


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

    def __call__(self, lease: Lease) -> None:
        leases = read_leases(self.ctx, self.project, [self.producer])  # the claimed one is not held
        on = leases.held(self.producer)
        if self.prep is None:
            [self.prep] = prepare(self.ctx, self.project, [self.producer])
        options = ApplyOptions(
            allow_destroy=(lease.gpu,),
            auto_approve=True,
            gpu=on,
            only=own_resources(self.prep, lease.gpu),
            gpus_up=leases.up(self.producer),
        )
        apply_producer(self.ctx, self.prep, self.terminal, options)


@dataclass(frozen=True)
class Down:
    outcome: lifecycle.Outcome


def down(ctx: Context, name: str, terminal: Terminal) -> Down:
    check_registry(ctx)
    check_ready(ctx)
    project = load_project(ctx, refuse_stale=True)
    producer = producer_of(project, name)
    store = lease_store(ctx, producer)
    release = _Releaser(ctx, project, producer, terminal)
    outcome = lifecycle.release_gpu(store, name, release, who=whoami(ctx.env), wait=LEASE_WAIT_SECONDS)
    return Down(outcome)


def down_output(done: Down) -> Output:
    o = done.outcome
    if o.error is not None:
        return Output(
            "",
            (f"infra-apply: error: {o.gpu}: release failed, the lease stays: {o.error}",),
            ExitCode.ERROR,
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
    producers = [p for p in sorted(project.rendered) if gpu_names(project, p)]
    leases = read_leases(ctx, project, producers)
    refs = [GpuRef(g, p) for p in producers for g in sorted(gpu_names(project, p))]
    merged = {n: lease for p in producers for n, lease in leases.by_producer.get(p, {}).items()}
    now = clock()
    return Status(tuple(rows(refs, merged, project.config.gpu, now)), now)


def status_output(done: Status, fmt: str) -> Output:
    if fmt == "json":
        return Output(to_json(done.rows, done.now) + "\n")
    return Output(to_text(done.rows, done.now))


# --- gpu reap ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reaped:
    outcomes: tuple[lifecycle.Outcome, ...]
    busy: tuple[str, ...]  # producers whose leases another run held: the next reap retries

    @property
    def failed(self) -> bool:
        return any(o.failed for o in self.outcomes)


def reap(ctx: Context, terminal: Terminal) -> Reaped:
    check_registry(ctx)
    check_ready(ctx)
    project = load_project(ctx)
    outcomes: list[lifecycle.Outcome] = []
    busy: list[str] = []
    for producer in sorted(project.rendered):
        if not gpu_names(project, producer):
            continue
        store = lease_store(ctx, producer)
        try:
            outcomes += _reap_one(ctx, project, producer, store, terminal)
        except StoreBusy:
            busy.append(producer)
    return Reaped(tuple(outcomes), tuple(busy))


def _reap_one(
    ctx: Context, project: Project, producer: str, store: LeaseStore, terminal: Terminal
) -> list[lifecycle.Outcome]:
    def probe(settings: GpuSettings) -> ProbeResult:
        return probe_gpu(settings, env=ctx.env, cwd=ctx.root) or ProbeResult(failure="no probe configured")

    release = _Releaser(ctx, project, producer, terminal)
    return lifecycle.reap(
        store, project.config.gpu, who=whoami(ctx.env), probe=probe, release=release, wait=0
    )


def reap_output(done: Reaped) -> Output:
    lines = [line for o in done.outcomes for line in o.lines()]
    lines += [
        f"info: producer {p}: another infra-apply holds its GPU leases; the next reap retries"
        for p in done.busy
    ]
    if not done.outcomes and not done.busy:
        lines.append("info: no GPU leases to reap")
    errors = tuple(f"infra-apply: {line}" for line in lines if line.startswith(("error:", "warning:")))
    out = "".join(f"{line}\n" for line in lines if not line.startswith(("error:", "warning:")))
    return Output(out, errors, ExitCode.ERROR if done.failed else ExitCode.OK)


# --- helpers -------------------------------------------------------------------------------


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
