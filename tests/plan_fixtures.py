"""Plans the plan-model, guard and report tests share: fixtures, synthetic plans, goldens.

The goldens under ``fixtures/reports/`` are every report format's exact output for the
scenarios below. After a deliberate change to a format, rewrite them with
``.venv/bin/python -m tests.plan_fixtures`` and review the diff before committing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from infra_apply.manifests.model import Droplet, ProducerModel, Service
from infra_apply.plan.cost import ProducerCost, fallback_prices, producer_cost
from infra_apply.plan.guard import GuardVerdict, guard
from infra_apply.plan.model import parse_plan
from infra_apply.plan.parse import Change, ProducerPlan, strip_index
from infra_apply.report import PlanContext, ProducerReport, producer_reports
from infra_apply.report.json import format_json
from infra_apply.report.markdown import format_markdown
from infra_apply.report.text import format_text

FIXTURES = Path(__file__).parent / "fixtures" / "plans"
GOLDENS = Path(__file__).parent / "fixtures" / "reports"

# Literal secrets planted in the fixtures: a kept user's password (no-op), a removed user's
# password (delete), and the data-sourced cluster's admin password / URIs (prior_state).
SECRETS = ("AVNS_noopRegistryPw_7Hq2Lz", "AVNS_forgeDeletedPw_Xk93mQ", "AVNS_clusterAdminPw_Ue5tB1")

# What rendering hands over: index-less address → manifest name. Resources removed from the
# manifests (quinn_mcp, quinn_forge_prod) are deliberately absent, as they would be.
NAMES = {
    "digitalocean_droplet.quinn_artifacts": "com.uvlava.quinn.artifacts",
    "digitalocean_firewall.quinn_artifacts": "com.uvlava.quinn.artifacts",
    "digitalocean_database_db.quinn_registry_prod": "registry",
    "digitalocean_database_user.quinn_registry_prod": "registry",
    "digitalocean_droplet.mc_services": "com.uvlava.mc.services",
    "digitalocean_firewall.mc_services": "com.uvlava.mc.services",
    "digitalocean_database_db.mc_billing_prod": "billing",
    "digitalocean_database_user.mc_billing_prod": "billing",
    "digitalocean_droplet.ct_services": "com.uvlava.ct.services",
    "digitalocean_firewall.ct_services": "com.uvlava.ct.services",
    "digitalocean_droplet.ct_gpu": "com.uvlava.ct.gpu",
}
IMPORT_NAMES = {**NAMES, "digitalocean_droplet.quinn_mcp": "com.uvlava.quinn.mcp"}
# resize_ports.json (made by make_resize_ports.sh): quinn's example droplets, all in the manifests.
RESIZE_NAMES = {
    **IMPORT_NAMES,
    "digitalocean_firewall.quinn_mcp": "com.uvlava.quinn.mcp",
    "digitalocean_droplet.dns": "com.uvlava.dns",
    "digitalocean_firewall.dns": "com.uvlava.dns",
}
# outside_drift.json (made by make_outside_drift.sh): quinn after console edits and a pull
# request; com.uvlava.quinn.docs is removed from the manifests, so it is absent here.
OUTSIDE_NAMES = {
    f"digitalocean_{kind}.{address}": name
    for address, name in {
        "quinn_artifacts": "com.uvlava.quinn.artifacts",
        "quinn_mcp": "com.uvlava.quinn.mcp",
        "dns": "com.uvlava.dns",
        "quinn_build": "com.uvlava.quinn.build",
        "quinn_cache": "com.uvlava.quinn.cache",
        "quinn_ci": "com.uvlava.quinn.ci",
    }.items()
    for kind in ("droplet", "firewall")
}
# A sandbox plan at a known commit and time, as `plan --sandbox` in CI would report it.
SANDBOX_CONTEXT = PlanContext(
    sandbox=True,
    commit="3f9c2e1ab84d07c6e5f1a2b3c4d5e6f708192a3b",
    planned_at=datetime(2026, 11, 29, 18, 40, 12, tzinfo=UTC),
)

QUINN_MODEL = ProducerModel(
    name="quinn",
    droplets=(
        Droplet(
            name="com.uvlava.quinn.artifacts",
            producer="quinn",
            source="@quinn/.infra.yaml",
            region="fra1",
            hosts=("forge", "registry"),
            services=(Service("forgejo", "forge"), Service("verdaccio", "npm-registry")),
        ),
    ),
)


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def parsed(name: str, producer: str = "quinn", names: dict[str, str] = NAMES) -> ProducerPlan:
    return parse_plan(producer, load(name), names)


def by_address(plan: ProducerPlan) -> dict[str, Change]:
    return {c.address: c for c in plan.changes}


def all_formats(plans: list[ProducerPlan], models: dict[str, ProducerModel]) -> list[str]:
    reports = producer_reports(plans, {p.producer: guard(p, (), ()) for p in plans}, models)
    return [format_text(reports), format_json(reports), format_markdown(reports)]


# ---------------------------------------------------------------------------------------------
# Synthetic plans for cases the fixtures do not need to carry.


def rc(address: str, actions: list[str], **change: Any) -> dict[str, Any]:
    rtype = address.split(".")[-2] if address.startswith("data.") else address.split(".")[0]
    name = strip_index(address).split(".")[-1]
    return {
        "address": address,
        "mode": "data" if address.startswith("data.") else "managed",
        "type": rtype,
        "name": name,
        "provider_name": "registry.terraform.io/digitalocean/digitalocean",
        "change": {
            "actions": actions,
            "before": change.pop("before", None),
            "after": change.pop("after", None),
            "after_unknown": change.pop("after_unknown", {}),
            "before_sensitive": change.pop("before_sensitive", False),
            "after_sensitive": change.pop("after_sensitive", False),
            **change,
        },
    }


def synthetic(*changes: dict[str, Any], prior: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    plan: dict[str, Any] = {
        "format_version": "1.2",
        "terraform_version": "1.11.4",
        "resource_changes": list(changes),
        "errored": False,
    }
    if prior is not None:
        plan["prior_state"] = {
            "format_version": "1.0",
            "values": {"root_module": {"resources": prior}},
        }
    return plan


HOSTILE = (
    'evil"quote',
    "tick`` ```break",
    "</details><script>alert(1)</script>",
    "pipe|cell|break",
    "new\nline\n```\n## injected heading",
    "%%{init: {'theme':'forest'}}%%",
    "[click](https://example.invalid)",
    "bidi\u202eevil",
)


def hostile_plans() -> tuple[list[ProducerPlan], dict[str, ProducerModel]]:
    changes = [
        rc(f"digitalocean_droplet.d{i}", ["delete"], before={"name": name}) for i, name in enumerate(HOSTILE)
    ]
    changes += [
        rc(f"digitalocean_droplet.k{i}", ["create"], after={"name": "x"}) for i in range(len(HOSTILE))
    ]
    names = {f"digitalocean_droplet.k{i}": name for i, name in enumerate(HOSTILE)}
    prior = [
        {
            "address": f"digitalocean_droplet.k{i}",
            "mode": "managed",
            "type": "digitalocean_droplet",
            "name": f"k{i}",
            "values": {"name": "live|`name`\n</details>"},
        }
        for i in range(len(HOSTILE))
    ]
    droplets = tuple(
        Droplet(
            name=name,
            producer="quinn",
            source="@quinn/.infra.yaml",
            hosts=(name,),
            services=(Service(name, name),),
        )
        for name in HOSTILE
    )
    producer = "quinn|</details>`\n"
    plan = parse_plan(producer, synthetic(*changes, prior=prior), names)
    return [plan], {producer: ProducerModel(name=producer, droplets=droplets)}


# ---------------------------------------------------------------------------------------------
# Goldens: what each format prints for a few whole scenarios, byte for byte.


class Scenario(NamedTuple):
    plans: list[ProducerPlan]
    verdicts: dict[str, GuardVerdict]
    models: dict[str, ProducerModel]
    costs: dict[str, ProducerCost] = {}  # noqa: RUF012 - never mutated
    context: PlanContext | None = None  # markdown only: the sandbox banner, commit and time


# Costs in the goldens: the shipped table, at a fixed moment, the ct GPU leased for 3 more hours.
COST_NOW = datetime(2026, 11, 29, 15, 0, tzinfo=UTC)
CT_GPU_LEASES = {"com.uvlava.ct.gpu": COST_NOW + timedelta(hours=3)}


def priced(
    name: str,
    producer: str = "quinn",
    names: dict[str, str] = NAMES,
    gpus: Mapping[str, datetime | None] | None = None,
) -> tuple[ProducerPlan, ProducerCost]:
    """A fixture plan and its cost (the shipped price table)."""
    doc = load(name)
    cost = producer_cost(doc, fallback_prices(), gpus or {}, names=names, now=COST_NOW)
    return parse_plan(producer, doc, names), cost


def costed(
    items: Sequence[tuple[ProducerPlan, ProducerCost]],
    verdicts: dict[str, GuardVerdict] | None = None,
    models: dict[str, ProducerModel] | None = None,
    context: PlanContext | None = None,
) -> Scenario:
    plans = [plan for plan, _ in items]
    costs = {plan.producer: cost for plan, cost in items}
    return Scenario(plans, verdicts or {}, models or {}, costs, context)


def _allowed_replace_delete() -> Scenario:
    plan, cost = priced("replace_delete")
    allowed = guard(plan, ["forge", "com.uvlava.quinn.mcp"], ["com.uvlava.quinn.artifacts"])
    return costed([(plan, cost), priced("no_changes", "mc")], {"quinn": allowed}, {"quinn": QUINN_MODEL})


def _resize_allowed() -> Scenario:
    plan, cost = priced("resize_ports", names=RESIZE_NAMES)
    return costed([(plan, cost)], {"quinn": guard(plan, (), (), ["com.uvlava.dns"])})


def _hostile() -> Scenario:
    plans, models = hostile_plans()
    return Scenario(plans, {}, models, {plans[0].producer: hostile_cost()})


def hostile_cost() -> ProducerCost:
    """Droplets with hostile names and hostile (so unpriced) sizes, plus one priced droplet."""
    after = [
        {
            "address": f"digitalocean_droplet.k{i}",
            "mode": "managed",
            "type": "digitalocean_droplet",
            "name": f"k{i}",
            "values": {"name": "x", "size": name},
        }
        for i, name in enumerate(HOSTILE)
    ]
    after.append({**after[0], "address": "digitalocean_droplet.ok", "values": {"size": "s-1vcpu-1gb"}})
    doc = {"planned_values": {"root_module": {"resources": after}}}
    names = {f"digitalocean_droplet.k{i}": name for i, name in enumerate(HOSTILE)}
    return producer_cost(doc, fallback_prices(), {}, names=names, now=COST_NOW)


SCENARIOS: Mapping[str, Callable[[], Scenario]] = {
    "nothing_planned": lambda: Scenario([], {}, {}),
    "no_changes": lambda: costed([priced("no_changes")], models={"quinn": QUINN_MODEL}),
    "create_producer": lambda: costed([priced("create_producer", "mc")]),
    "replace_delete": lambda: costed([priced("replace_delete")], models={"quinn": QUINN_MODEL}),
    "replace_delete_allowed": _allowed_replace_delete,
    "replace_delete_state_names": lambda: costed(
        [priced("replace_delete", names={})], models={"quinn": QUINN_MODEL}
    ),
    "update_size_and_import": lambda: costed(
        [priced("update_size", "ct", gpus=CT_GPU_LEASES), priced("import", names=IMPORT_NAMES)]
    ),
    "name_drift": lambda: costed([priced("name_drift")], models={"quinn": QUINN_MODEL}),
    "resize_ports": lambda: costed([priced("resize_ports", names=RESIZE_NAMES)]),
    "resize_ports_allowed": _resize_allowed,
    "hostile": _hostile,
    "outside_drift": lambda: costed([priced("outside_drift", names=OUTSIDE_NAMES)], context=SANDBOX_CONTEXT),
}

FORMATS: Mapping[str, Callable[[Sequence[ProducerReport]], str]] = {
    "txt": format_text,
    "json": format_json,
    "md": format_markdown,
}


def golden_path(scenario: str, ext: str) -> Path:
    return GOLDENS / f"{scenario}.{ext}"


def render_golden(scenario: str, ext: str) -> str:
    plans, verdicts, models, costs, context = SCENARIOS[scenario]()
    reports = producer_reports(plans, verdicts, models, costs=costs)
    if ext == "md":
        return format_markdown(reports, context)
    return format_json(reports, context) if ext == "json" else FORMATS[ext](reports)


def read_golden(scenario: str, ext: str) -> str:
    return golden_path(scenario, ext).read_bytes().decode()  # bytes: no newline translation


def write_goldens() -> None:
    GOLDENS.mkdir(exist_ok=True)
    for scenario in SCENARIOS:
        for ext in FORMATS:
            golden_path(scenario, ext).write_bytes(render_golden(scenario, ext).encode())


if __name__ == "__main__":
    write_goldens()
