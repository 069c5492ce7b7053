"""The destroy/replace guard: what ``apply`` refuses, and the exact flag that would allow it.

Pure functions over a parsed ``ProducerPlan``. A plan that deletes or replaces a droplet,
database or database user is refused unless that resource is named (manifest name or
Terraform address, with or without its index) with the matching flag.

``--allow-destroy`` and ``--allow-replace`` are distinct: allowing a destroy does not allow
a replacement of the same resource (a replacement also loses the box's disk and IP, but the
operator who typed ``--allow-destroy`` was thinking of a resource that goes away for good).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from infra_apply.plan_model import Change, ProducerPlan, display_order, reason, verb
from infra_apply.untrusted import shell, visible

GUARDED_TYPES: frozenset[str] = frozenset(
    {"digitalocean_droplet", "digitalocean_database_db", "digitalocean_database_user"}
)

AllowFlag = Literal["--allow-destroy", "--allow-replace"]


@dataclass(frozen=True)
class GuardVerdict:
    blocked: tuple[Change, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.blocked


@dataclass(frozen=True)
class UnusedAllowance:
    """An ``--allow-*`` value that matches nothing the flag could allow in this plan."""

    producer: str
    flag: AllowFlag
    value: str
    hint: str = ""

    @property
    def message(self) -> str:
        kind = "deletion" if self.flag == "--allow-destroy" else "replacement"
        text = f"{self.flag} {visible(self.value)} matches no {kind} in the plan for {self.producer}"
        return f"{text}; {self.hint}" if self.hint else text


def _allowance_keys(change: Change) -> set[str]:
    return {k for k in (change.name, change.address, change.base_address) if k}


def guard(
    plan: ProducerPlan, allow_destroy: Iterable[str], allow_replace: Iterable[str]
) -> GuardVerdict:
    """Block deletes/replaces of droplets, databases and database users not explicitly allowed."""
    allowed: dict[str, set[str]] = {"delete": set(allow_destroy), "replace": set(allow_replace)}
    blocked = tuple(
        c
        for c in display_order(plan.changes)
        if c.type in GUARDED_TYPES
        and c.action in allowed
        and not (_allowance_keys(c) & allowed[c.action])
    )
    return GuardVerdict(blocked=blocked)


def unused_allowances(
    plan: ProducerPlan, allow_destroy: Iterable[str], allow_replace: Iterable[str]
) -> tuple[UnusedAllowance, ...]:
    """``--allow-*`` values naming nothing their flag allows (typos, or the wrong flag)."""
    keys: dict[str, set[str]] = {"delete": set(), "replace": set()}
    for change in plan.changes:
        if change.action in keys:
            keys[change.action] |= _allowance_keys(change)
    destroy = [
        UnusedAllowance(plan.producer, "--allow-destroy", value, _hint(value, keys, "replace"))
        for value in dict.fromkeys(allow_destroy)
        if value not in keys["delete"]
    ]
    replace = [
        UnusedAllowance(plan.producer, "--allow-replace", value, _hint(value, keys, "delete"))
        for value in dict.fromkeys(allow_replace)
        if value not in keys["replace"]
    ]
    return (*destroy, *replace)


def _hint(value: str, keys: Mapping[str, set[str]], actual: Literal["delete", "replace"]) -> str:
    # The usual mistake is the wrong flag: --allow-destroy for a box that is replaced, or back.
    if value not in keys[actual]:
        return ""
    if actual == "replace":
        return f"it is replaced: use --allow-replace {shell(value)}"
    return f"it is destroyed: use --allow-destroy {shell(value)}"


def allow_flag(change: Change) -> AllowFlag:
    return "--allow-destroy" if change.action == "delete" else "--allow-replace"


def allow_value(change: Change) -> str:
    """What to name after the flag: the manifest name, else the index-less address."""
    return change.name if change.name != change.address else change.base_address


def refusal_lines(verdict: GuardVerdict) -> tuple[str, ...]:
    """One line per blocked change, ending in the exact flag that would allow it."""
    return tuple(
        f"{verb(c)} {visible(c.label)}: {reason(c, with_values=False)} — rerun with "
        f"{allow_flag(c)} {shell(allow_value(c))}"
        for c in verdict.blocked
    )


def refusal_message(verdict: GuardVerdict) -> str:
    return "\n".join(refusal_lines(verdict))
