"""The one JSON shape of a resource change, written by ``plan --format json`` (its ``changes``
and ``outside`` lists) and ``drift --format json`` (each producer's ``outside`` list) alike.

``kind`` says what a report calls the change everywhere (``resize`` for an in-place droplet
resize, else Terraform's action). ``action`` is kept as each list has always written it:
Terraform's action in a plan's ``changes``, ``resize`` folded in for a change made outside
Terraform. ``attributes`` is kept beside ``updated_attrs`` (the same list) for the same reason.
``cuts_off`` (only when someone is) says whom a trusted-sources change leaves without access.
"""

from __future__ import annotations

from infra_apply.plan.parse import RULE_ATTRS, AttrDiff, Change, FirewallRule
from infra_apply.report._common import display_name


def change_doc(change: Change, *, outside: bool = False) -> dict[str, object]:
    """``change`` as JSON; ``outside``: a change made outside Terraform (refresh found it)."""
    kind = "resize" if change.resize is not None else change.action
    return {
        "action": kind if outside else change.action,
        "kind": kind,
        "address": change.address,
        "type": change.type,
        "name": change.name,
        "label": display_name(change),
        "importing": change.importing,
        "import_id": change.import_id or None,
        "reason": change.reason or None,
        "replace_paths": list(change.replace_paths),
        "updated_attrs": list(change.updated_attrs),
        "attributes": list(change.updated_attrs),
        "diffs": [json_diff(d) for d in change.diffs],
        "resize": _json_resize(change),
        **({"cuts_off": list(change.cuts_off)} if change.cuts_off else {}),
    }


def json_diff(diff: AttrDiff) -> dict[str, object]:
    """A before → after; a list/set attribute also by element (``added``, ``removed``), which
    holds however long the lists (``before``/``after`` then say ``[N items]``)."""
    doc: dict[str, object] = {"attr": diff.attr, "before": diff.before, "after": diff.after}
    if diff.elements:
        doc.update(added=list(diff.added), removed=list(diff.removed))
    if diff.attr in RULE_ATTRS and diff.elements:
        # A firewall's rules, field by field, for tools (``added``/``removed`` say them in words).
        doc.update(
            added_rules=[_json_rule(r) for r in diff.added_rules],
            removed_rules=[_json_rule(r) for r in diff.removed_rules],
        )
    return doc


def _json_rule(rule: FirewallRule) -> dict[str, object]:
    peers = "sources" if rule.direction == "inbound" else "destinations"
    return {"protocol": rule.protocol, "ports": rule.ports, peers: list(rule.peers)}


def _json_resize(change: Change) -> dict[str, object] | None:
    """An in-place resize: always downtime; ``disk_grows`` means it can never be undone;
    ``fails``: DigitalOcean refuses it (the new size's disk is below the droplet's disk)."""
    r = change.resize
    if r is None:
        return None
    return {
        "before": r.before,
        "after": r.after,
        "downtime": True,
        "disk_grows": r.grows,
        "disk_before_gb": r.disk_before,
        "disk_after_gb": r.disk_after,
        "fails": r.fails,
        "message": r.effect,
    }
