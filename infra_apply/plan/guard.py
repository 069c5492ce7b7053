"""The destroy/replace/resize guard: what ``apply`` refuses, and the exact flag that allows it.

Pure functions over a parsed ``ProducerPlan``. Which action of which kind needs which flag is the
kinds table's (``infra_apply.kinds``): a plan that deletes or replaces a droplet, its firewall,
a database or database user (any managed kind not marked safe to lose, and any type the table
does not know), or resizes a droplet in place, is refused unless that resource is named
(manifest name or Terraform address, with or without its index) with the matching flag. A
firewall is named by its droplet, so ``--allow-destroy NAME`` lets a droplet go with its own
firewall.

The flags are distinct: allowing a destroy does not allow a replacement of the same resource
(a replacement also loses the box's disk and IP, but the operator who typed ``--allow-destroy``
was thinking of a resource that goes away for good), and neither allows a resize (downtime and
a disk that can never shrink back: a different cost, consented to by its own flag).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from infra_apply.kinds import Action, AllowFlag, guard_flag, kind_of
from infra_apply.plan.parse import Change, ProducerPlan, display_order
from infra_apply.plan.semantics import reason, verb
from infra_apply.untrusted import shell, visible

_FLAGS: tuple[AllowFlag, ...] = (
    "--allow-destroy",
    "--allow-replace",
    "--allow-resize",
    "--allow-trusted-sources",
)
_NOUNS: Mapping[AllowFlag, str] = {
    "--allow-destroy": "deletion",
    "--allow-replace": "replacement",
    "--allow-resize": "resize",
    "--allow-trusted-sources": "trusted-sources change",
}
_PARTICIPLES: Mapping[AllowFlag, str] = {
    "--allow-destroy": "destroyed",
    "--allow-replace": "replaced",
    "--allow-resize": "resized",
    "--allow-trusted-sources": "a trusted-sources change",
}
# The plan's action → the kinds table's (its guard policy says "destroy", Terraform "delete").
_ACTIONS: Mapping[str, Action] = {
    "create": "create",
    "update": "update",
    "replace": "replace",
    "delete": "destroy",
}


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
        text = (
            f"{self.flag} {visible(self.value)} matches no {_NOUNS[self.flag]} in the plan for "
            f"{self.producer}"
        )
        return f"{text}; {self.hint}" if self.hint else text


def _allowance_keys(change: Change) -> set[str]:
    return {k for k in (change.name, change.address, change.base_address) if k}


def needed_flag(change: Change) -> AllowFlag | None:
    """The flag whose consent ``change`` needs (None: none): an in-place resize needs
    ``--allow-resize``, any other action what its kind's guard policy says."""
    if change.resize is not None:
        return "--allow-resize"
    action = _ACTIONS.get(change.action)
    if action is None:
        return None
    kind = kind_of(change.type)
    if (
        action in ("create", "update")
        and kind is not None
        and kind.guards_cuts_only
        and change.cuts_off == ()
    ):
        return None  # reviewed, and it keeps every client that may connect now
    return guard_flag(change.type, action)


def guard(
    plan: ProducerPlan,
    allow_destroy: Iterable[str],
    allow_replace: Iterable[str],
    allow_resize: Iterable[str] = (),
    allow_trusted_sources: Iterable[str] = (),
) -> GuardVerdict:
    """Block every change its kind guards (deletes and replaces of droplets, firewalls,
    databases and database users; in-place droplet resizes) not explicitly allowed."""
    allowed = _by_flag(allow_destroy, allow_replace, allow_resize, allow_trusted_sources)
    blocked = [
        c
        for c in display_order(plan.changes)
        if (flag := needed_flag(c)) is not None and not (_allowance_keys(c) & set(allowed[flag]))
    ]
    return GuardVerdict(blocked=tuple(c for c in blocked if not _refused_with_owner(c, blocked)))


def _refused_with_owner(change: Change, blocked: Iterable[Change]) -> bool:
    """A droplet's own firewall refused along with its droplet, by the same flag and name: the
    droplet's refusal already says what allows both."""
    kind = kind_of(change.type)
    owner = kind.owner if kind is not None else None
    return owner is not None and any(
        b.type == owner and allow_flag(b) == allow_flag(change) and allow_value(b) == allow_value(change)
        for b in blocked
    )


def unused_allowances(
    plan: ProducerPlan,
    allow_destroy: Iterable[str],
    allow_replace: Iterable[str],
    allow_resize: Iterable[str] = (),
    allow_trusted_sources: Iterable[str] = (),
) -> tuple[UnusedAllowance, ...]:
    """``--allow-*`` values naming nothing their flag allows (typos, or the wrong flag)."""
    keys: dict[AllowFlag, set[str]] = {flag: set() for flag in _FLAGS}
    for change in plan.changes:
        if (flag := needed_flag(change)) is not None:
            keys[flag] |= _allowance_keys(change)
    return tuple(
        UnusedAllowance(plan.producer, flag, value, _hint(value, keys, flag))
        for flag, values in _by_flag(
            allow_destroy, allow_replace, allow_resize, allow_trusted_sources
        ).items()
        for value in dict.fromkeys(values)
        if value not in keys[flag]
    )


def _by_flag(
    allow_destroy: Iterable[str],
    allow_replace: Iterable[str],
    allow_resize: Iterable[str],
    allow_trusted_sources: Iterable[str] = (),
) -> dict[AllowFlag, tuple[str, ...]]:
    return {
        "--allow-destroy": tuple(allow_destroy),
        "--allow-replace": tuple(allow_replace),
        "--allow-resize": tuple(allow_resize),
        "--allow-trusted-sources": tuple(allow_trusted_sources),
    }


def _hint(value: str, keys: Mapping[AllowFlag, set[str]], given: AllowFlag) -> str:
    # The usual mistake is the wrong flag: --allow-destroy for a box that is replaced, or back.
    for flag in _FLAGS:
        if flag != given and value in keys[flag]:
            return f"it is {_PARTICIPLES[flag]}: use {flag} {shell(value)}"
    return ""


def allow_flag(change: Change) -> AllowFlag:
    return needed_flag(change) or "--allow-replace"


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
