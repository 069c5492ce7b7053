"""Sentences more than one format prints, each taking the format's own escaping."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Literal

from infra_apply import kinds, remedy
from infra_apply.kinds import AllowFlag
from infra_apply.plan.guard import GuardVerdict, allow_flag, allow_value, guard
from infra_apply.plan.outside import SIZE_DERIVED, answer, undoes
from infra_apply.plan.parse import Change, NameDrift, ProducerPlan, SettingsDrift
from infra_apply.plan.semantics import PublicPort, reason

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
    if change.cuts_off:  # a trusted-sources change: whom it cuts off, then its rules
        parts.append(reason(change, with_values=True))
    if (
        change.cuts_off is not None
        and change.action == "create"
        and (rules := change.diff("rule")) is not None
    ):
        parts.append(rules.render())
    if change.resize is not None:
        parts.append(reason(change, with_values=True))
        parts.append(", ".join(_attr_text(change, a) for a in change.updated_attrs if a not in _RESIZE_ATTRS))
    elif change.action == "update":
        parts.append(", ".join(_attr_text(change, a) for a in change.updated_attrs))
    if change.importing and change.import_id:
        parts.append(f"import id {change.import_id}")
    return "; ".join(p for p in parts if p)


def display_name(change: Change) -> str:
    """What to call a resource: its name, but a firewall's manifest name is its droplet's,
    so a firewall reads ``firewall of DROPLET`` (or ``firewall NAME`` from state)."""
    if change.type == kinds.FIREWALL.type and change.name_source == "manifest":
        return f"firewall of {change.name}"
    if change.type == kinds.FIREWALL.type and change.name_source == "state":
        return f"firewall {change.name}"
    return change.name


def who(change: Change) -> str:
    """``NAME (ADDRESS)``, or the address alone when that is all there is."""
    name = display_name(change)
    return change.address if name == change.address else f"{name} ({change.address})"


def port_callouts(change: Change, esc: Escape) -> Iterator[tuple[Literal["opened", "closed", "moved"], str]]:
    """``public ports opened: 80/tcp, 443/tcp on NAME (ADDRESS)``, then the same for closed."""
    if change.ports_opened:
        yield "opened", f"public ports opened: {esc(_ports(change.ports_opened))} on {esc(who(change))}"
    if change.ports_closed:
        yield "closed", f"public ports closed: {esc(_ports(change.ports_closed))} on {esc(who(change))}"
    if change.ports_moved:
        yield (
            "moved",
            (
                f"public ports moved to {esc(who(change))} from its droplet's other firewall (open "
                f"throughout): {esc(_ports(change.ports_moved))}"
            ),
        )
    if change.ssh is not None:
        yield "closed", ssh_sentence(change, esc)


def ssh_sentence(change: Change, esc: Escape) -> str:
    """``SSH (22/tcp) narrowed on NAME (ADDRESS): no longer from A; still from B`` (or closed)."""
    assert change.ssh is not None
    gone = esc(", ".join(change.ssh.removed))
    if change.ssh.left:
        left = esc(", ".join(change.ssh.left))
        return f"SSH (22/tcp) narrowed on {esc(who(change))}: no longer from {gone}; still from {left}"
    return f"SSH (22/tcp) closed on {esc(who(change))}: no longer from {gone}; reached over the mesh only"


def bootstrap_sentence(name: str, esc: Escape) -> str:
    """When a droplet's bootstrap SSH closes (ssh_from = "mesh")."""
    return (
        f"SSH to {esc(name)} stays open from bootstrap_from until it is in mesh-hosts.json "
        "(apply registers it): the next plan after that closes it"
    )


def _ports(ports: Sequence[PublicPort]) -> str:
    return ", ".join(map(str, ports))


def _attr_text(change: Change, attr: str) -> str:
    diff = change.diff(attr)
    return diff.render() if diff else attr


def drift_sentence(producer: str, drift: NameDrift, esc: Escape, command: Escape, *, sandbox: bool) -> str:
    rename = remedy.for_producer("rename", producer, drift.manifest_name, keep=remedy.kept(sandbox))
    return (
        f"name drift: {esc(drift.address)} is live as {esc(_quoted(drift.live_name))} but the "
        f"manifest says {esc(_quoted(drift.manifest_name))} — run {command(rename)}"
    )


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def outside_sentence(change: Change, esc: Escape) -> str:
    """``resized outside Terraform: NAME (ADDRESS): size "a" → "b"`` (``drift`` and ``plan``)."""
    if change.action == "delete":
        return f"deleted outside Terraform: {esc(who(change))}"
    what = "resized" if change.resize is not None else "changed"
    attrs = _outside_attrs(change)
    return f"{what} outside Terraform: {esc(who(change))}" + (f": {esc(attrs)}" if attrs else "")


def _outside_attrs(change: Change) -> str:
    shown = [a for a in change.updated_attrs if not ("size" in change.updated_attrs and a in SIZE_DERIVED)]
    return ", ".join(d.render() if (d := change.diff(a)) else a for a in shown)


def answer_text(plan: ProducerPlan, outside: Change) -> str:
    """What the plan does about a change made outside Terraform, in words: "back" only for a
    value the resource had before that change."""
    found = answer(plan, outside)
    mine = found.change
    if outside.action == "delete":
        if found.response != "recreates" or mine is None:
            return "this plan leaves it gone"
        return "this plan re-creates it" + _recreated_as(mine)
    if found.response in ("replaces", "destroys"):
        return f"this plan {found.response} it"
    if found.response == "keeps":
        return "this plan leaves it as found" + _name_drift_note(plan, outside, found.kept)
    parts = []
    if found.reverted:
        parts.append(_sets_back(found.reverted, mine))
    if found.changed:
        parts.append(_sets_anew(found.changed, mine))
    text = "this plan " + "; and ".join(parts)
    if found.kept:
        text += f"; {', '.join(found.kept)} stays as found" + _name_drift_note(plan, outside, found.kept)
    return text


def _sets_back(reverted: tuple[str, ...], mine: Change | None) -> str:
    if reverted == ("size",) and mine is not None and mine.resize is not None:
        back_to = mine.resize.after
        text = f"resizes it back to {back_to}" if back_to else "resizes it back"
        return text + _stuck_disk(mine)
    return f"changes {', '.join(reverted)} back"


def _sets_anew(changed: tuple[str, ...], mine: Change | None) -> str:
    """Attributes the plan sets to a value they never had: what this pull request asks for."""
    texts = []
    for attr in changed:
        if attr == "size" and mine is not None and mine.resize is not None and mine.resize.after:
            texts.append(f"resizes it to {mine.resize.after}, a size it never had" + _stuck_disk(mine))
        else:
            diff = mine.diff(attr) if mine is not None else None
            texts.append(f"changes {diff.render() if diff else attr}, not back")
    return "; ".join(texts)


def _recreated_as(mine: Change) -> str:
    """`` as "s-2vcpu-4gb"``: how the new one differs from the deleted one (nothing: the same)."""
    if not mine.differs:
        return ""
    size = next((d for d in mine.outside_diffs if d.attr == "size"), None)
    others = [a for a in mine.differs if a != "size"]
    text = " as " + size.after.strip('"') if size is not None else ""  # a slug, JSON-quoted
    if others:
        text += f"{' with' if size is not None else ' with a'} different {', '.join(others)}"
    return text + ", not as it was"


def _name_drift_note(plan: ProducerPlan, outside: Change, kept: tuple[str, ...]) -> str:
    named = "name" in kept and any(d.address == outside.address for d in plan.drift)
    return " (see name drift)" if named else ""


def _stuck_disk(mine: Change) -> str:
    """A resize to a smaller disk than the droplet has (a console resize grew it, say) fails:
    DigitalOcean never shrinks a disk."""
    if mine.resize is None or not mine.resize.fails:
        return ""
    return (
        f", but its disk is already {mine.resize.disk_before} GB and DigitalOcean never shrinks a "
        f"disk, so that resize will fail: keep size {mine.resize.before} in the manifest, or "
        "replace the droplet with a new one"
    )


def undo_note(plan: ProducerPlan, change: Change) -> str:
    """`` (undoes a change made outside Terraform)`` for a change that only sets one right."""
    outside = undoes(plan, change)
    if outside is None:
        return ""
    if change.resize is not None and change.resize.fails:
        return " (undoes a resize made outside Terraform, and will fail: the disk it grew cannot shrink)"
    return " (undoes a change made outside Terraform)"


ONLY_UNDOES = (
    "Nothing new: every change in this plan only undoes a change made outside Terraform "
    "(see Changed outside Terraform)."
)


def guard_sentence(
    plan: ProducerPlan, verdict: GuardVerdict, esc: Escape, *, sandbox: bool
) -> tuple[str, str | None]:
    """Would ``apply`` go ahead, in words, and the one command that allows what it refuses."""
    if not plan.has_changes:
        return "apply has nothing to do.", None
    impossible = impossible_resizes(plan)
    blocked = [c for c in verdict.blocked if c not in impossible]
    if impossible:
        # No flag makes it possible: no command is offered, and what else apply would refuse
        # is said so the next push can fix everything at once.
        stop = (
            "apply would stop with an error (exit 1) before changing anything: resizing "
            f"{_some([c.name for c in impossible], esc)} can never succeed (a disk never shrinks; "
            "no flag allows it)."
        )
        if blocked:
            stop += f" Past that, it would refuse (exit 3) without consent to {_consents(blocked, esc)}."
        return stop, None
    if verdict.ok:
        if guard(plan, (), ()).ok:
            return "apply would go ahead: nothing is destroyed, replaced or resized.", None
        return "apply would go ahead: each destroy, replacement and resize is allowed.", None
    refusal = f"apply would refuse this plan (exit 3) without consent to {_consents(blocked, esc)}."
    flags = dict.fromkeys((allow_flag(c), allow_value(c)) for c in blocked)
    if len(flags) > _MAX_NAMED:  # a command that long helps nobody: each line names its flag
        return f"{refusal} Each refused change below names the flag that allows it.", None
    args = [word for flag in flags for word in flag]
    again = remedy.for_producer("apply", plan.producer, *args, keep=remedy.kept(sandbox))
    return f"{refusal} To go ahead:", again


def _consents(blocked: Sequence[Change], esc: Escape) -> str:
    """``destroy a, replace b and resize c``: what each refused change needs consent to."""
    what: dict[str, list[str]] = {}
    for change in blocked:
        names = what.setdefault(_CONSENT[allow_flag(change)], [])
        if allow_value(change) not in names:
            names.append(allow_value(change))
    said = [f"{kind} {_some(names, esc)}" for kind, names in what.items()]
    return said[0] if len(said) == 1 else f"{', '.join(said[:-1])} and {said[-1]}"


def impossible_resizes(plan: ProducerPlan) -> list[Change]:
    """Resizes to a smaller disk than the droplet has: apply stops on them (exit 1)."""
    return [c for c in plan.changes if c.resize is not None and c.resize.fails]


_CONSENT: Mapping[AllowFlag, str] = {
    "--allow-destroy": "destroy",
    "--allow-replace": "replace",
    "--allow-resize": "resize",
    "--allow-trusted-sources": "narrow the trusted sources of",
}
_MAX_NAMED = 6


def _some(names: list[str], esc: Escape) -> str:
    shown = ", ".join(esc(n) for n in names[:_MAX_NAMED])
    return shown + (f" and {len(names) - _MAX_NAMED} more" if len(names) > _MAX_NAMED else "")


def settings_sentence(drift: SettingsDrift, esc: Escape) -> str:
    """A droplet keeping create-time settings (ForceNew, ignored) that infra-apply.toml changed."""
    who = drift.address if drift.name == drift.address else f"{drift.name} ({drift.address})"
    configured = [s for s in drift.settings if s != "vpc_uuid"]
    said = []
    if configured:
        said.append(
            f"keeps the {esc(', '.join(configured))} it was created with; infra-apply.toml now says "
            "otherwise, which applies to droplets created from now on"
        )
    if drift.vpc_cluster is not None:
        said.append(
            f"stays in the VPC it runs in, outside the VPC of cluster {esc(drift.vpc_cluster)} it "
            "hosts a project of, so the cluster's private host is out of its reach (db-credentials "
            "says so); droplets created from now on join the cluster's VPC"
        )
    return (
        f"new droplets only: {esc(who)} " + "; it ".join(said) + " (a ForceNew setting never replaces "
        "a running droplet)"
    )
