"""What a Terraform plan does, as typed data: ``parse_plan`` reads ``terraform show -json``
(``plan_parse``), gives each change its meaning on DigitalOcean (``do_semantics``) and sets it
against what changed outside Terraform (``plan_outside``). Everything after it sees the frozen
dataclasses of ``plan_parse``; the guard and every report format work on fixtures alone."""

from __future__ import annotations

from collections.abc import Mapping

from infra_apply.plan.outside import against_outside, outside_changes, recorded_before
from infra_apply.plan.parse import (
    CreateSettings,
    JsonObject,
    ProducerPlan,
    check_envelope,
    configured_attrs,
    json_dict,
    json_list,
    name_drift,
    natural_key,
    settings_drift,
    ssh_bootstrap,
)
from infra_apply.plan.semantics import (
    bare_droplets,
    firewalls_named_by_droplet,
    moved_ports,
    read_change,
    uptime_alerts_named_by_check,
)


def parse_plan(
    producer: str,
    plan: JsonObject,
    names: Mapping[str, str],
    wanted: Mapping[str, CreateSettings] | None = None,
) -> ProducerPlan:
    """Summarise one producer's plan; ``names`` maps index-less addresses to human names,
    ``wanted`` index-less droplet addresses to their create-time settings."""
    check_envelope(producer, plan)
    configured = configured_attrs(plan)
    before_outside = recorded_before(plan)
    changes = [
        against_outside(change, json_dict(rc), before_outside, configured)
        for rc in json_list(plan.get("resource_changes"))
        if (change := read_change(json_dict(rc), names, configured)) is not None
    ]
    changes = bare_droplets(firewalls_named_by_droplet(changes, plan, names), plan)
    changes = moved_ports(changes)
    changes = uptime_alerts_named_by_check(changes, plan, names)
    changes.sort(key=lambda c: (natural_key(c.address), c.action, c.reason))
    drift = sorted(name_drift(plan, names), key=lambda d: natural_key(d.address))
    settings = sorted(
        settings_drift(plan, names, wanted or {}, changes), key=lambda d: natural_key(d.address)
    )
    return ProducerPlan(
        producer=producer,
        changes=tuple(changes),
        drift=tuple(drift),
        settings_drift=tuple(settings),
        outside=outside_changes(plan, names),
        ssh_bootstrap=ssh_bootstrap(plan, names),
    )
