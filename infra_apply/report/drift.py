"""The drift report in three formats: text (terminal), JSON (tools) and markdown (the body of
the one issue a scheduled workflow opens or updates).

Every name comes from state, the account or the registry and is untrusted: text makes control
characters visible, markdown prints names as inert text (no HTML, links, code spans or table
breaks). No attribute value is shown that ``plan_parse`` did not judge safe (``AttrDiff``).
"""

from __future__ import annotations

import html
import json
import re
import sys
from collections.abc import Callable, Iterator

from infra_apply import remedy as remedies
from infra_apply.plan.drift import DriftReport, Duplicate, Orphan, ProducerDrift
from infra_apply.plan.parse import display_order
from infra_apply.registry.mesh import HostChange
from infra_apply.report._common import drift_sentence, outside_sentence
from infra_apply.report.change_doc import change_doc
from infra_apply.untrusted import shell, short, visible

JSON_FORMAT_VERSION = 1
# The hidden marker the scheduled workflow finds its one issue by (examples/ci/*/infra-apply-drift.yml).
MARKER = "<!-- infra-apply drift -->"
MARKDOWN_LIMIT = 60_000

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~!#])")
Escape = Callable[[str], str]


# --- sentences every format shares -------------------------------------------------------------


def remedy(verb: str, producer: str, sandbox: bool, *args: str) -> str:
    """A command to run as printed (a sandbox report's carry ``--sandbox``)."""
    return remedies.for_producer(verb, producer, *args, keep=remedies.kept(sandbox))


def not_applied_sentence(p: ProducerDrift, command: Escape, report: DriftReport) -> str:
    """Not drift: nothing here to compare with. The apply also registers the producer's hosts,
    which puts right any mesh-hosts.json entry it already has. But droplets of it in the account
    mean a lost or moved state: an apply would create them a second time, so adopt comes first
    (by name, or ``--from-state`` with the old state)."""
    if not any(o.producer == p.producer or o.name in p.declared for o in report.orphans):
        return f"not applied yet: run {command(remedy('apply', p.producer, report.sandbox))}"
    from_state = remedy("adopt", p.producer, report.sandbox, "--from-state", "FILE")
    return (
        "no state here, yet droplets of it exist (below): do not apply, it would create them again; "
        f"take them over first with {command(from_state)} (FILE: the old state) or "
        f"{command(remedy('adopt', p.producer, report.sandbox))} (by name)"
    )


def mesh_sentence(p: ProducerDrift, host: HostChange, esc: Escape, command: Escape, sandbox: bool) -> str:
    who = f"host {esc(host.host)} (droplet {esc(host.droplet)})"
    fix = f"run {command(remedy('register', p.producer, sandbox))}"
    if host.kind == "added":
        what = f"{who} is missing from mesh-hosts.json"
    elif host.kind == "removed":
        what = f"{who} is in mesh-hosts.json but the droplet is not in state"
        # register never removes a host: an apply creates a droplet the manifests declare (and
        # registers it); one no manifest declares any more is net-tools' entry to delete.
        if host.droplet in p.declared:
            fix = f"run {command(remedy('apply', p.producer, sandbox))}"
        else:
            fix = "no manifest declares it: remove the host from mesh-hosts.json (net-tools owns it)"
    else:
        what = f"{who} disagrees with state in mesh-hosts.json: {esc(', '.join(host.fields))}"
    return f"{what} — {fix}"


def orphan_sentence(orphan: Orphan, esc: Escape, command: Escape, report: DriftReport) -> str:
    owner = next((p.producer for p in report.producers if orphan.name in p.declared), None)
    if owner is None:
        fix = "no manifest checked declares it: destroy it, or declare it and adopt it into a producer"
    else:
        fix = (
            f"a manifest of {esc(owner)} declares it: run {command(remedy('adopt', owner, report.sandbox))} "
            "(the next apply takes it over), or destroy it"
        )
    return (
        f"droplet {esc(orphan.name)} (id {esc(orphan.id)}) is tagged managed-by:infra-apply but no "
        f"state knows it (tags: {esc(', '.join(orphan.tags))}): {fix}"
    )


def duplicate_sentence(dup: Duplicate, esc: Escape, command: Escape, report: DriftReport) -> str:
    """A second droplet under a name in state: no infra-apply command adopts it (the name is
    taken) or destroys it (no state holds it), so the remedy is a person's, by its id."""
    check, delete = _delete_by_hand(dup.id, report)
    how = f"check it is not in use ({command(check)}), then " if check else ""
    return (
        f"droplet {esc(dup.name)} (id {esc(dup.id)}) is a duplicate: the state of {esc(dup.owner)} "
        f"holds droplet {esc(dup.state_id)} under that name (tags: {esc(', '.join(dup.droplet.tags))}). "
        f"infra-apply neither adopts nor destroys it, and it is billed: {how}destroy it by hand "
        f"with {command(delete)}"
    )


def _delete_by_hand(droplet_id: str, report: DriftReport) -> tuple[str | None, str]:
    """doctl for the account; the sandbox's cloud file for a sandbox droplet (doctl would reach
    the real account), through this interpreter, which has infra_apply."""
    if report.sandbox and report.cloud is not None:
        call = f"cloud.delete_droplet({json.dumps(report.cloud)}, {json.dumps(droplet_id)})"
        code = f"from infra_apply.sandbox import cloud; {call}"
        return None, f"{shell(sys.executable)} -c {shell(code)}"
    quoted = shell(droplet_id)
    return f"doctl compute droplet get {quoted}", f"doctl compute droplet delete {quoted}"


def _producer_lines(p: ProducerDrift, esc: Escape, command: Escape, sandbox: bool) -> Iterator[str]:
    for change in display_order(p.outside):
        yield outside_sentence(change, esc)
    for name in p.names:
        yield drift_sentence(p.producer, name, esc, command, sandbox=sandbox)
    for host in p.mesh:
        yield mesh_sentence(p, host, esc, command, sandbox)


# --- text --------------------------------------------------------------------------------------


def format_text(report: DriftReport) -> str:
    blocks = []
    for p in report.producers:
        lines = [f"Producer {visible(p.producer)}:"]
        if not p.applied:
            lines.append(f"  {not_applied_sentence(p, visible, report)}")
        lines += [f"  ! {line}" for line in _producer_lines(p, visible, visible, report.sandbox)]
        if not p.mesh_checked and p.applied:
            lines.append("  (mesh-hosts.json not checked: none given)")
        lines.append("Drift found." if p.drifted else "No drift." if p.applied else "Nothing to compare.")
        blocks.append("\n".join(lines))
    if report.duplicates:
        found = [f"  ! {duplicate_sentence(d, visible, visible, report)}" for d in report.duplicates]
        blocks.append("\n".join(["Duplicates of droplets in state:", *found]))
    if report.orphans:
        found = [f"  ! {orphan_sentence(o, visible, visible, report)}" for o in report.orphans]
        blocks.append("\n".join(["Droplets no state knows:", *found]))
    if not blocks:
        return "No producers checked.\n"
    return "\n\n".join(blocks) + "\n"


# --- JSON --------------------------------------------------------------------------------------


def format_json(report: DriftReport) -> str:
    doc = {
        "format_version": JSON_FORMAT_VERSION,
        "drift": report.drifted,
        "sandbox": report.sandbox,
        "producers": {p.producer: _json_producer(p) for p in report.producers},
        # The issue body, so the workflow keeps one JSON file and `comment --issue` posts it.
        "markdown": format_markdown(report),
        "orphans": [
            {"id": o.id, "name": o.name, "tags": list(o.tags), "producer": o.producer} for o in report.orphans
        ],
        # Second droplets under a name a state holds (state_id): destroyed by hand, never adopted.
        "duplicates": [
            {
                "id": d.id,
                "name": d.name,
                "tags": list(d.droplet.tags),
                "producer": d.owner,
                "state_id": d.state_id,
                "message": duplicate_sentence(d, str, str, report),
            }
            for d in report.duplicates
        ],
    }
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def _json_producer(p: ProducerDrift) -> dict[str, object]:
    return {
        "drift": p.drifted,
        "applied": p.applied,
        "outside": [change_doc(c, outside=True) for c in display_order(p.outside)],
        "names": [
            {"address": d.address, "live_name": d.live_name, "manifest_name": d.manifest_name}
            for d in p.names
        ],
        "mesh": {
            "checked": p.mesh_checked,
            "hosts": [
                {
                    "change": h.kind,
                    "host": h.host,
                    "mesh_ip": h.mesh_ip,
                    "droplet": h.droplet,
                    "fields": list(h.fields),
                }
                for h in p.mesh
            ],
        },
    }


# --- markdown ----------------------------------------------------------------------------------


def format_markdown(report: DriftReport) -> str:
    """The issue body: the marker, a one-line verdict, a table of producers, then each
    producer's findings and the droplets no state knows. Cut (with a note) at the limit."""
    banner = " (sandbox)" if report.sandbox else ""
    out = [MARKER, f"## infra-apply drift{banner}", ""]
    if not report.drifted:
        out += ["No drift: the account, the state and mesh-hosts.json agree.", ""]
    out += ["| producer | outside Terraform | name drift | mesh-hosts.json |", "|---|---|---|---|"]
    for p in report.producers:
        if not p.applied:
            out.append(f"| {_md_text(p.producer)} | not applied yet | - | - |")
            continue
        mesh = str(len(p.mesh)) if p.mesh_checked else "not checked"
        out.append(f"| {_md_text(p.producer)} | {len(p.outside)} | {len(p.names)} | {mesh} |")
    out.append("")
    waiting = [p for p in report.producers if not p.applied]
    out += [f"- {_md_text(p.producer)}: {not_applied_sentence(p, _md_code, report)}" for p in waiting]
    out += [""] if waiting else []
    for p in report.producers:
        if p.drifted:
            out += [f"### {_md_text(p.producer)}", ""]
            out += [f"- {line}" for line in _producer_lines(p, _md_text, _md_code, report.sandbox)]
            out.append("")
    if report.duplicates:
        out += ["### Duplicates of droplets in state", ""]
        out += [f"- {duplicate_sentence(d, _md_text, _md_code, report)}" for d in report.duplicates]
        out.append("")
    if report.orphans:
        out += ["### Droplets no state knows", ""]
        out += [f"- {orphan_sentence(o, _md_text, _md_code, report)}" for o in report.orphans]
        out.append("")
    return _fit("\n".join(out) + "\n", report.sandbox)


def _fit(text: str, sandbox: bool) -> str:
    if len(text) <= MARKDOWN_LIMIT:
        return text
    again = remedies.command("drift", keep=remedies.kept(sandbox))
    note = f"\n… truncated: run {again} locally for the full report\n"
    cut = text.rfind("\n", 0, MARKDOWN_LIMIT - len(note))
    return text[: max(cut, 0)] + note


def _md_text(text: str) -> str:
    """Untrusted text as inert markdown."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(visible(short(text)), quote=False))


def _md_code(text: str) -> str:
    # A code span is inert; one the text itself could close is not, so that stays escaped prose.
    return _md_text(text) if "`" in text else f"`{text}`"
