"""The pull-request comment: a table of every producer, then a section per producer that
changes (destructive changes first, then in-place resizes, each with the exact command that
allows it, then the public ports opened or closed, the other changes and a diagram).

Names are untrusted: they are printed as inert markdown (no HTML, code spans or table-cell
breaks), and the comment never exceeds ``MARKDOWN_LIMIT`` characters.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from infra_apply.guard import GuardVerdict, allow_flag, allow_value
from infra_apply.plan_model import COUNTED_ACTIONS, Change, display_order, reason, verb
from infra_apply.report import ProducerReport, gpu_sentence
from infra_apply.report._common import (
    counts_sentence,
    detail,
    drift_sentence,
    port_callouts,
    settings_sentence,
)
from infra_apply.report.cost import (
    changed_sizes,
    gpu_cost_sentence,
    monthly_change,
    short_change,
    size_sentence,
    source_note,
    unpriced_sentence,
)
from infra_apply.report.mermaid import mermaid_diagram
from infra_apply.untrusted import shell, short, visible

MARKDOWN_LIMIT = 60_000

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~!#])")
_SHELL_SAFE = re.compile(r"^[A-Za-z0-9._:/@=+,-]+$")
_MD_EMOJI: Mapping[str, str] = {
    "create": "🆕",
    "update": "🔧",
    "import": "📥",
}
_MD_PORTS: Mapping[str, str] = {"opened": "🔓", "closed": "🔒"}


@dataclass(frozen=True)
class _Block:
    text: str
    changes: int = 0


@dataclass(frozen=True)
class _Section:
    head: str
    blocks: tuple[_Block, ...]
    tail: str

    @property
    def changes(self) -> int:
        return sum(b.changes for b in self.blocks)

    def render(self) -> str:
        return self.head + "".join(b.text for b in self.blocks) + self.tail


def format_markdown(reports: Sequence[ProducerReport]) -> str:
    """A pull-request comment, always at most ``MARKDOWN_LIMIT`` characters."""
    head = _md_head(reports) + _md_cost_note(reports)
    sections = [_md_section(r) for r in reports if _shown(r)]
    return _fit(head, sections, MARKDOWN_LIMIT)


def _shown(r: ProducerReport) -> bool:
    return bool(r.plan.has_changes or r.plan.drift or r.plan.settings_drift or r.gpus)


def _md_head(reports: Sequence[ProducerReport]) -> str:
    lines = [
        "## infra-apply plan",
        "",
        "| producer | create | update | replace | destroy | import | name drift | guard | cost a month |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for report in reports:
        n = report.plan.counts
        cells = [_md_text(report.producer)] + [str(n[a]) for a in COUNTED_ACTIONS]
        cells += [str(len(report.plan.drift)), _md_guard_cell(report.verdict), _md_cost_cell(report)]
        lines.append("| " + " | ".join(cells) + " |")
    if not reports:
        lines.append("| _none_ | 0 | 0 | 0 | 0 | 0 | 0 | ✅ | |")
    if not any(r.plan.has_changes for r in reports):
        lines += ["", "No changes."]
    return "\n".join(lines) + "\n"


def _md_guard_cell(verdict: GuardVerdict) -> str:
    if verdict.ok:
        return "✅"
    flags = sorted({allow_flag(c) for c in verdict.blocked})
    return "⛔ refused without " + " / ".join(f"`{f}`" for f in flags)


def _md_section(report: ProducerReport) -> _Section:
    plan, model = report.plan, report.model
    ordered = display_order(plan.changes)
    destructive = [c for c in ordered if c.action in ("delete", "replace")]
    resized = [c for c in ordered if c.resize is not None]
    blocked = frozenset(report.verdict.blocked)
    others = [c for c in ordered if c.action not in ("delete", "replace") and c.resize is None]
    ports = [callout for c in ordered for callout in port_callouts(c, _md_text)]
    producer = html.escape(visible(short(plan.producer)))
    summary = f"<summary><strong>{producer}</strong>: {counts_sentence(plan)}</summary>"
    # Expanded when a reviewer must look: something lost, downtime, or a port opened to all.
    expand = destructive or resized or any(kind == "opened" for kind, _ in ports)
    head = f"\n<details{' open' if expand else ''}>\n{summary}\n"
    blocks: list[_Block] = []
    if destructive:
        blocks.append(_Block("\n**Destroyed or replaced**\n\n"))
        blocks += [
            _Block(_md_destructive(plan.producer, c, blocked) + "\n", 1) for c in destructive
        ]
    if resized:
        blocks.append(_Block("\n**Resized in place: downtime**\n\n"))
        blocks += [_Block(_md_destructive(plan.producer, c, blocked) + "\n", 1) for c in resized]
    if ports:
        blocks.append(_Block("\n**Public ports (reachable from the whole internet)**\n\n"))
        blocks += [_Block(f"- {_MD_PORTS[kind]} {text}\n") for kind, text in ports]
    if others:
        blocks.append(_Block("\n**Other changes**\n\n"))
        blocks += [_Block(_md_change(c) + "\n", 1) for c in others]
    if plan.drift:
        blocks.append(_Block("\n**Name drift**\n\n"))
        blocks += [
            _Block("- 🏷️ " + drift_sentence(plan.producer, d, _md_text, _md_code) + "\n")
            for d in plan.drift
        ]
    if plan.settings_drift:
        blocks.append(_Block("\n**Settings for new droplets only**\n\n"))
        blocks += [_Block("- 🔑 " + settings_sentence(d, _md_text) + "\n") for d in plan.settings_drift]
    if report.gpus:
        blocks.append(_Block("\n**On-demand GPUs up** (released by `gpu down` or `gpu reap`)\n\n"))
        blocks += [_Block("- 🖥️ " + _md_text(gpu_sentence(g)) + "\n") for g in report.gpus]
    blocks += _md_cost_blocks(report)
    if model is not None and model.droplets:
        blocks.append(_Block("\n" + mermaid_diagram(model, plan.changes)))
    return _Section(head=head, blocks=tuple(blocks), tail="\n</details>\n")


def _md_cost_cell(report: ProducerReport) -> str:
    if report.cost is None:
        return "-"
    return _md_dollars(short_change(report.cost)) + ("\\*" if report.cost.unpriced else "")


def _md_dollars(text: str) -> str:
    # GitHub and Forgejo read "$...$" as inline math: every dollar sign is escaped.
    return text.replace("$", "\\$")


def _md_cost_note(reports: Sequence[ProducerReport]) -> str:
    """The footnote under the table: where the prices come from, their date, what is counted,
    and (``*`` in the table) the droplets left out of a producer's totals for want of a price."""
    costs = [(r.producer, r.cost) for r in reports if r.cost is not None]
    notes = [_md_text(note) for note in sorted({source_note(c.prices) for _, c in costs})]
    for producer, cost in costs:
        unpriced = unpriced_sentence(cost, _md_text, limit=3)  # the section lists them all
        if unpriced:
            notes.append(f"\\* {_md_text(producer)}: {unpriced}")
    return "".join(f"\n{_md_dollars(note)}\n" for note in notes)


def _md_cost_blocks(report: ProducerReport) -> list[_Block]:
    """A cost line in the producer's section: before → after, the sizes whose count changes, the
    droplets left out for want of a price, the on-demand GPUs."""
    cost = report.cost
    if cost is None:
        return []
    items = [f"- 💲 {size_sentence(row, _md_text)}\n" for row in changed_sizes(cost)]
    unpriced = unpriced_sentence(cost, _md_text)
    if unpriced:
        items.append(f"- ❔ {unpriced}\n")
    items += [f"- 🖥️ {gpu_cost_sentence(g, _md_text)}\n" for g in cost.gpus]
    lines = [f"\n**Cost**: {monthly_change(cost)}\n"] + (["\n", *items] if items else [])
    return [_Block(_md_dollars(line)) for line in lines]


def _md_destructive(producer: str, change: Change, blocked: frozenset[Change]) -> str:
    why = _md_text(reason(change, with_values=True))
    line = f"- ⚠️ **{verb(change)}** {_md_who(change, bold=False)}: {why}"
    if change in blocked:
        command = f"infra-apply apply --producer {shell(producer)} {allow_flag(change)} "
        line += f" — needs {_md_code(command + shell(allow_value(change)))}"
    return line


def _md_change(change: Change) -> str:
    what = detail(change)
    line = f"- {_MD_EMOJI.get(change.action, '•')} {change.action} {_md_who(change)}"
    return line + (f": {_md_text(what)}" if what else "")


def _md_who(change: Change, *, bold: bool = True) -> str:
    mark = "**" if bold else ""
    if change.name == change.address:
        return f"{mark}{_md_text(change.address)}{mark}"
    return f"{mark}{_md_text(change.name)}{mark} ({_md_text(change.address)})"


def _fit(head: str, sections: Sequence[_Section], limit: int) -> str:
    """Whole sections while they fit, then as many lines of the next one; never over ``limit``."""
    reserve = len(_truncation_note(10**9))
    budget = limit - reserve
    parts, used, omitted, truncated = [head], len(head), 0, False
    for section in sections:
        if truncated:
            omitted += section.changes
            continue
        full = section.render()
        if used + len(full) <= budget:
            parts.append(full)
            used += len(full)
            continue
        truncated = True
        partial, shown = _fit_section(section, budget - used)
        parts.append(partial)
        used += len(partial)
        omitted += section.changes - shown
    if truncated:
        parts.append(_truncation_note(omitted))
    text = "".join(parts)
    if len(text) > limit:  # Only a pathological head (thousands of producers) gets here.
        note = _truncation_note(omitted)
        text = text[: limit - len(note) - 1].rsplit("\n", 1)[0] + "\n" + note
    return text


def _fit_section(section: _Section, room: int) -> tuple[str, int]:
    size = len(section.head) + len(section.tail)
    if size > room:
        return "", 0
    kept, shown = [section.head], 0
    for block in section.blocks:
        if size + len(block.text) > room:
            break  # Keep order: a later, smaller block must not jump the queue.
        kept.append(block.text)
        size += len(block.text)
        shown += block.changes
    kept.append(section.tail)
    return "".join(kept), shown


def _truncation_note(omitted: int) -> str:
    what = f"{omitted} more changes" if omitted else "some details omitted"
    return f"\n… truncated: {what}; run infra-apply plan locally for the full list\n"


def _md_text(text: str) -> str:
    """Untrusted text as inert markdown: no HTML, no code spans, no table-cell breaks."""
    escaped = html.escape(visible(short(text)), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", escaped)


def _md_code(text: str) -> str:
    # A code span only for shell-safe words; anything else stays escaped prose.
    words = text.split(" ")
    if all(_SHELL_SAFE.fullmatch(w) for w in words):
        return f"`{text}`"
    return _md_text(text)
