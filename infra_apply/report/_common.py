"""Sentences more than one format prints, each taking the format's own escaping."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

from infra_apply.plan_model import Change, NameDrift, ProducerPlan, PublicPort, SettingsDrift, reason
from infra_apply.untrusted import shell

Escape = Callable[[str], str]

# What a resize recomputes: said once by the resize sentence, not again attribute by attribute.
_RESIZE_ATTRS = frozenset({"size", "disk", "memory", "vcpus", "price_hourly", "price_monthly"})


def counts_sentence(plan: ProducerPlan) -> str:
    n = plan.counts
    return (
        f"{n['create']} to create, {n['update']} to update, {n['replace']} to replace, "
        f"{n['delete']} to destroy, {n['import']} to import"
    )


def detail(change: Change) -> str:
    """The part after the colon: why, or what changes (values only when safe to show)."""
    if change.action in ("replace", "delete"):
        return reason(change, with_values=True)
    parts = []
    if change.resize is not None:
        parts.append(reason(change, with_values=True))
        parts.append(", ".join(_attr_text(change, a) for a in change.updated_attrs if a not in _RESIZE_ATTRS))
    elif change.action == "update":
        parts.append(", ".join(_attr_text(change, a) for a in change.updated_attrs))
    if change.importing and change.import_id:
        parts.append(f"import id {change.import_id}")
    return "; ".join(p for p in parts if p)


def port_callouts(change: Change, esc: Escape) -> Iterator[tuple[Literal["opened", "closed"], str]]:
    """``public ports opened: 80/tcp, 443/tcp on NAME (ADDRESS)``, then the same for closed."""
    who = change.address if change.name == change.address else f"{change.name} ({change.address})"
    if change.ports_opened:
        yield "opened", f"public ports opened: {esc(_ports(change.ports_opened))} on {esc(who)}"
    if change.ports_closed:
        yield "closed", f"public ports closed: {esc(_ports(change.ports_closed))} on {esc(who)}"


def _ports(ports: Sequence[PublicPort]) -> str:
    return ", ".join(map(str, ports))


def _attr_text(change: Change, attr: str) -> str:
    diff = change.diff(attr)
    return diff.render() if diff else attr


def drift_sentence(producer: str, drift: NameDrift, esc: Escape, command: Escape) -> str:
    rename = f"infra-apply rename --producer {shell(producer)} {shell(drift.manifest_name)}"
    return (
        f"name drift: {esc(drift.address)} is live as {esc(_quoted(drift.live_name))} but the "
        f"manifest says {esc(_quoted(drift.manifest_name))} — run {command(rename)}"
    )


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def settings_sentence(drift: SettingsDrift, esc: Escape) -> str:
    """A droplet keeping create-time settings (ForceNew, ignored) that infra-apply.toml changed."""
    who = drift.address if drift.name == drift.address else f"{drift.name} ({drift.address})"
    return (
        f"new droplets only: {esc(who)} keeps the {esc(', '.join(drift.settings))} it was created "
        "with; infra-apply.toml now says otherwise, which applies to droplets created from now on "
        "(a ForceNew setting never replaces a running droplet)"
    )
