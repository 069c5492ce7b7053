"""The GPU lease stores as the verbs see them: which GPUs an ordinary plan or apply keeps
(``held``), and what the plan summaries show about the GPUs that are up.

Only producers that declare an on-demand GPU droplet have a store opened: a producer without
one never pays for the extra Terraform call.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from infra_apply import kinds
from infra_apply.cloud.bucket import check_locking
from infra_apply.gpu.lease import Lease, held
from infra_apply.gpu.store import LeaseStore, lease_copy, open_store
from infra_apply.plan.parse import ProducerPlan
from infra_apply.render.output import Rendered
from infra_apply.report import GpuUp
from infra_apply.runtime import terraform as tf
from infra_apply.runtime.state import state_dir
from infra_apply.runtime.workcopy import Context, Project, workdir_root


@dataclass(frozen=True)
class Leases:
    """The leases of the producers looked at, and the GPU droplets each producer declares."""

    by_producer: Mapping[str, Mapping[str, Lease]]
    declared: Mapping[str, frozenset[str]]  # producer -> its GPU droplet names

    def held(self, producer: str) -> tuple[str, ...]:
        """The GPUs of ``producer`` a plan keeps on: leased and not being released. A lease for
        a GPU the manifests no longer declare is left out (there is nothing to keep)."""
        mine = held(self.by_producer.get(producer, {}).values())
        return tuple(sorted(mine & self.declared.get(producer, frozenset())))

    def all_held(self) -> tuple[str, ...]:
        return tuple(sorted(g for p in self.by_producer for g in self.held(p)))

    def up(self, producer: str) -> tuple[GpuUp, ...]:
        return tuple(
            GpuUp(lease.gpu, lease.until, lease.hourly_price, lease.releasing is not None)
            for _, lease in sorted(self.by_producer.get(producer, {}).items())
            if lease.up
        )

    def lease_ends(self, producer: str) -> dict[str, datetime | None]:
        """Every GPU droplet ``producer`` declares → its lease end (None: no lease holds it),
        for the cost summary (a GPU costs by the hour until its lease ends)."""
        leases = self.by_producer.get(producer, {})
        return {
            name: leases[name].until if name in leases else None
            for name in sorted(self.declared.get(producer, frozenset()))
        }

    def up_since(self, producer: str) -> dict[str, datetime]:
        """Every GPU droplet of ``producer`` that is up → when it came up: DigitalOcean bills
        each hour started since then, so the cost of the rest of a lease counts from there."""
        leases = self.by_producer.get(producer, {})
        return {name: lease.up_since for name, lease in sorted(leases.items()) if lease.up_since is not None}

    def leased(self, producer: str) -> frozenset[str]:
        """Every GPU of ``producer`` with a lease, held or being released."""
        return frozenset(self.by_producer.get(producer, {}))


def unleased_up(plan: ProducerPlan, rendered: Rendered, leased: Collection[str]) -> tuple[GpuUp, ...]:
    """The GPU droplets ``plan`` destroys though no lease was ever ended for them: up without a
    lease. Said in the summary with the two ways out, never as a bare destroy."""
    deleted = {c.base_address for c in plan.changes if c.type == kinds.DROPLET.type and c.action == "delete"}
    return tuple(
        GpuUp(name, None, None)
        for name in sorted(rendered.gpu_variables)
        if name not in leased and rendered.droplet_addresses.get(name) in deleted
    )


def gpu_names(project: Project, producer: str) -> frozenset[str]:
    rendered = project.rendered.get(producer)
    return frozenset(rendered.gpu_variables) if rendered is not None else frozenset()


def lease_store(ctx: Context, producer: str) -> LeaseStore:
    """The producer's lease store, beside its state: the local state dir, or the state bucket
    when ``[state]`` is remote (so a team sees one truth)."""
    binary = tf.state_binary(ctx.env, state_dir(ctx.env))
    backend = ctx.account.backend(ctx.root, ctx.env)
    check_locking(state_dir(ctx.env), backend, binary, ctx.env)
    return open_store(state_dir(ctx.env), workdir_root(ctx), producer, backend, binary, ctx.env)


def read_leases(ctx: Context, project: Project, producers: Sequence[str]) -> Leases:
    declared = {p: gpu_names(project, p) for p in producers}
    found = {p: _leases_of(ctx, p) for p in producers if declared[p]}
    return Leases(found, declared)


def _leases_of(ctx: Context, producer: str) -> Mapping[str, Lease]:
    """With local state and no lease ever written there is nothing to read: no Terraform runs
    (so pre-flight still comes before any Terraform process in a tree nobody ran gpu up in)."""
    backend = ctx.account.backend(ctx.root, ctx.env)
    local_state = lease_copy(workdir_root(ctx), producer) / "terraform.tfstate"
    if backend.kind == "local" and not local_state.is_file():
        return {}
    return lease_store(ctx, producer).read().leases
