"""The destroy/replace/resize guard: what ``apply`` refuses, and the exact flag that allows it.

Pure functions over a parsed ``ProducerPlan``. A plan that deletes or replaces a droplet,
database or database user, or resizes a droplet in place, is refused unless that resource is
named (manifest name or Terraform address, with or without its index) with the matching flag.

The flags are distinct: allowing a destroy does not allow a replacement of the same resource
(a replacement also loses the box's disk and IP, but the operator who typed ``--allow-destroy``
was thinking of a resource that goes away for good), and neither allows a resize (downtime and
a disk that can never shrink back: a different cost, consented to by its own flag).
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

AllowFlag = Literal["--allow-destroy", "--allow-replace", "--allow-resize"]
Guarded = Literal["delete", "replace", "resize"]

_FLAGS: Mapping[Guarded, AllowFlag] = {
    "delete": "--allow-destroy",
    "replace": "--allow-replace",
    "resize": "--allow-resize",
}
_NOUNS: Mapping[Guarded, str] = {"delete": "deletion", "replace": "replacement", "resize": "resize"}
_PARTICIPLES: Mapping[Guarded, str] = {"delete": "destroyed", "replace": "replaced", "resize": "resized"}


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
        noun = next(_NOUNS[g] for g, flag in _FLAGS.items() if flag == self.flag)
        text = f"{self.flag} {visible(self.value)} matches no {noun} in the plan for {self.producer}"
        return f"{text}; {self.hint}" if self.hint else text


def _allowance_keys(change: Change) -> set[str]:
    return {k for k in (change.name, change.address, change.base_address) if k}


def _guarded_as(change: Change) -> Guarded | None:
    """Which flag's consent a change needs, whatever its type (the guard filters types)."""
    if change.resize is not None:
        return "resize"
    if change.action == "delete" or change.action == "replace":
        return change.action
    return None


def guard(
    plan: ProducerPlan,
    allow_destroy: Iterable[str],
    allow_replace: Iterable[str],
    allow_resize: Iterable[str] = (),
) -> GuardVerdict:
    """Block deletes/replaces of droplets, databases and database users, and in-place droplet
    resizes, not explicitly allowed."""
    allowed: dict[Guarded, set[str]] = {
        "delete": set(allow_destroy),
        "replace": set(allow_replace),
        "resize": set(allow_resize),
    }
    blocked = tuple(
        c
        for c in display_order(plan.changes)
        if c.type in GUARDED_TYPES
        and (kind := _guarded_as(c)) is not None
        and not (_allowance_keys(c) & allowed[kind])
    )
    return GuardVerdict(blocked=blocked)


def unused_allowances(
    plan: ProducerPlan,
    allow_destroy: Iterable[str],
    allow_replace: Iterable[str],
    allow_resize: Iterable[str] = (),
) -> tuple[UnusedAllowance, ...]:
    """``--allow-*`` values naming nothing their flag allows (typos, or the wrong flag)."""
    keys: dict[Guarded, set[str]] = {"delete": set(), "replace": set(), "resize": set()}
    for change in plan.changes:
        if (kind := _guarded_as(change)) is not None:
            keys[kind] |= _allowance_keys(change)
    given: dict[Guarded, Iterable[str]] = {
        "delete": allow_destroy,
        "replace": allow_replace,
        "resize": allow_resize,
    }
    return tuple(
        UnusedAllowance(plan.producer, _FLAGS[kind], value, _hint(value, keys, kind))
        for kind, values in given.items()
        for value in dict.fromkeys(values)
        if value not in keys[kind]
    )


def _hint(value: str, keys: Mapping[Guarded, set[str]], given: Guarded) -> str:
    # The usual mistake is the wrong flag: --allow-destroy for a box that is replaced, or back.
    for actual, flag in _FLAGS.items():
        if actual != given and value in keys[actual]:
            return f"it is {_PARTICIPLES[actual]}: use {flag} {shell(value)}"
    return ""


def allow_flag(change: Change) -> AllowFlag:
    return _FLAGS[_guarded_as(change) or "replace"]


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
