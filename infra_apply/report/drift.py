"""The drift report in three formats: text (terminal), JSON (tools) and markdown (the body of
the one issue a scheduled workflow opens or updates).

Every name comes from state, the account or the registry and is untrusted: text makes control
characters visible, markdown prints names as inert text (no HTML, links, code spans or table
breaks). No attribute value is shown that ``plan_model`` did not judge safe (``AttrDiff``).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterator

from infra_apply.drift import DriftReport, Orphan, ProducerDrift
from infra_apply.mesh import HostChange
from infra_apply.plan_model import Change, display_order
from infra_apply.report._common import drift_sentence, outside_sentence
from infra_apply.report.json import json_diff
from infra_apply.untrusted import shell, short, visible

JSON_FORMAT_VERSION = 1
# The hidden marker the scheduled workflow finds its one issue by (examples/ci/*/infra-apply-drift.yml).
MARKER = "<!-- infra-apply drift -->"
MARKDOWN_LIMIT = 60_000

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~!#])")
Escape = Callable[[str], str]


# --- sentences every format shares -------------------------------------------------------------


def mesh_sentence(producer: str, host: HostChange, esc: Escape) -> str:
    who = f"host {esc(host.host)} (droplet {esc(host.droplet)})"
    if host.kind == "added":
        what = f"{who} is missing from mesh-hosts.json"
    elif host.kind == "removed":
        what = f"{who} is in mesh-hosts.json but the droplet is not in state"
    else:
        what = f"{who} disagrees with state in mesh-hosts.json: {esc(', '.join(host.fields))}"
    return f"{what} — run infra-apply register --producer {esc(shell(producer))}"


def orphan_sentence(orphan: Orphan, esc: Escape) -> str:
    return (
        f"droplet {esc(orphan.name)} (id {esc(orphan.id)}) is tagged managed-by:infra-apply but no "
        f"state knows it (tags: {esc(', '.join(orphan.tags))}): adopt it into a producer or destroy it"
    )


def _producer_lines(p: ProducerDrift, esc: Escape, command: Escape) -> Iterator[str]:
    for change in display_order(p.outside):
        yield outside_sentence(change, esc)
    for name in p.names:
        yield drift_sentence(p.producer, name, esc, command)
    for host in p.mesh:
        yield mesh_sentence(p.producer, host, esc)


# --- text --------------------------------------------------------------------------------------


def format_text(report: DriftReport) -> str:
    blocks = []
    for p in report.producers:
        lines = [f"Producer {visible(p.producer)}:"]
        lines += [f"  ! {line}" for line in _producer_lines(p, visible, visible)]
        if not p.mesh_checked:
            lines.append("  (mesh-hosts.json not checked: none given)")
        lines.append("Drift found." if p.drifted else "No drift.")
        blocks.append("\n".join(lines))
    if report.orphans:
        blocks.append(
            "\n".join(
                ["Droplets no state knows:", *(f"  ! {orphan_sentence(o, visible)}" for o in report.orphans)]
            )
        )
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
        "orphans": [
            {"id": o.id, "name": o.name, "tags": list(o.tags), "producer": o.producer} for o in report.orphans
        ],
    }
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def _json_producer(p: ProducerDrift) -> dict[str, object]:
    return {
        "drift": p.drifted,
        "outside": [_json_change(c) for c in display_order(p.outside)],
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


def _json_change(change: Change) -> dict[str, object]:
    return {
        "address": change.address,
        "name": change.name,
        "type": change.type,
        "action": "resize" if change.resize is not None else change.action,
        "attributes": list(change.updated_attrs),
        "diffs": [json_diff(d) for d in change.diffs],
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
        mesh = str(len(p.mesh)) if p.mesh_checked else "not checked"
        out.append(f"| {_md_text(p.producer)} | {len(p.outside)} | {len(p.names)} | {mesh} |")
    out.append("")
    for p in report.producers:
        if p.drifted:
            out += [f"### {_md_text(p.producer)}", ""]
            out += [f"- {line}" for line in _producer_lines(p, _md_text, _md_code)]
            out.append("")
    if report.orphans:
        out += ["### Droplets no state knows", ""]
        out += [f"- {orphan_sentence(o, _md_text)}" for o in report.orphans]
        out.append("")
    return _fit("\n".join(out) + "\n")


def _fit(text: str) -> str:
    if len(text) <= MARKDOWN_LIMIT:
        return text
    note = "\n… truncated: run infra-apply drift locally for the full report\n"
    cut = text.rfind("\n", 0, MARKDOWN_LIMIT - len(note))
    return text[: max(cut, 0)] + note


def _md_text(text: str) -> str:
    """Untrusted text as inert markdown."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(visible(short(text)), quote=False))


def _md_code(text: str) -> str:
    # A code span is inert; one the text itself could close is not, so that stays escaped prose.
    return _md_text(text) if "`" in text else f"`{text}`"
