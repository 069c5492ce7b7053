"""The pull-request comment: a banner on sandbox plans and the commit planned, a table of every
producer, then a section per producer that changes or drifted: the guard's verdict in words,
what changed outside Terraform (and what this plan does about it), then what this pull request
changes (destroys, replacements and in-place resizes first, each with the exact command that
allows it, then the public ports opened or closed, creates, updates, imports) and a diagram.

Names are untrusted: they are printed as inert markdown (no HTML, code spans or table-cell
breaks), and the comment never exceeds ``MARKDOWN_LIMIT`` UTF-16 units: what ``comment`` posts
(its marker line added) stays within the forges' 65,536-character limit, never cut by it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from infra_apply import remedy
from infra_apply.forge.comment import COMMENT_LIMIT, MARKER_ROOM, units
from infra_apply.plan.budget import check
from infra_apply.plan.cost import ProducerCost
from infra_apply.plan.guard import GuardVerdict, allow_flag, allow_value
from infra_apply.plan.outside import only_undoes_outside
from infra_apply.plan.parse import COUNTED_ACTIONS, Change, display_order
from infra_apply.plan.semantics import reason, verb
from infra_apply.report import PlanContext, ProducerReport, gpu_sentence
from infra_apply.report._common import (
    ONLY_UNDOES,
    answer_text,
    bootstrap_sentence,
    counts_sentence,
    detail,
    display_name,
    drift_sentence,
    guard_sentence,
    outside_sentence,
    port_callouts,
    settings_sentence,
    undo_note,
)
from infra_apply.report.cost import (
    budget_sentence,
    changed_flat,
    changed_sizes,
    flat_sentence,
    gpu_cost_sentence,
    monthly_change,
    price_not_known_sentence,
    refused_sentence,
    short_change,
    size_sentence,
    source_note,
    unpriced_sentence,
)
from infra_apply.report.mermaid import mermaid_diagram
from infra_apply.untrusted import short, visible

# The forges' limit less the marker ``comment`` puts on top: a plan comment is never cut there.
MARKDOWN_LIMIT = COMMENT_LIMIT - MARKER_ROOM
# A commit id as git prints it; anything else (a hostile GITHUB_SHA) is not shown.
_COMMIT = re.compile(r"^[0-9a-f]{7,64}$")
_SHORT_SHA = 12

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~!#])")
_SHELL_SAFE = re.compile(r"^[A-Za-z0-9._:/@=+,-]+$")
_MD_EMOJI: Mapping[str, str] = {
    "create": "🆕",
    "update": "🔧",
    "import": "📥",
}
_MD_PORTS: Mapping[str, str] = {"opened": "🔓", "closed": "🔒", "moved": "↔️"}

TITLE = "## infra-apply plan"
SANDBOX_BANNER = (
    "> 🧪 **Sandbox plan:** planned against infra-apply's local stand-in cloud, not a "
    "DigitalOcean account. No real droplet, database or firewall was read or touched; "
    "this says nothing about production."
)
TABLE_HEAD = (
    "| producer | create | update | replace | destroy | import | outside Terraform | name drift "
    "| guard | cost a month |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
)
NO_PRODUCER_ROW = "| _none_ | 0 | 0 | 0 | 0 | 0 | 0 | 0 | ✅ | |"
NO_CHANGES = "No changes."
# Each part of the comment (the table, a price note, a producer's unpriced note, a producer's
# section) starts with a mark on a line of its own after a blank line, so ``report.combine``
# can merge the plans of separate runs by splitting on marks, never by reading prose. Marks are
# HTML comments (hidden on GitHub and Forgejo); a producer name in one is percent-encoded, and
# every name elsewhere is escaped (``<`` as ``&lt;``), so no name can end a mark or forge one.
MARK_KINDS = ("table", "prices", "unpriced", "section")


def mark(kind: str, producers: Sequence[str] = ()) -> str:
    """The mark line (without its newline) opening a part of ``kind`` for ``producers``; a name
    is cut as the table prints it, so a huge one cannot push the table out of the comment."""
    names = "".join(f" producer={quote(short(p), safe='')}" for p in producers)
    return f"<!-- infra-apply:{kind}{names} -->"


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


def format_markdown(reports: Sequence[ProducerReport], context: PlanContext | None = None) -> str:
    """A pull-request comment, always at most ``MARKDOWN_LIMIT`` UTF-16 units."""
    head = _md_head(reports, context) + _md_cost_note(reports)
    sections = [_md_section(r) for r in reports if _shown(r)]
    return _fit(head, sections, MARKDOWN_LIMIT, sandbox=context is not None and context.sandbox)


def _shown(r: ProducerReport) -> bool:
    plan = r.plan
    return bool(
        plan.has_changes or plan.outside or plan.drift or plan.settings_drift or plan.ssh_bootstrap or r.gpus
    )


def md_intro(context: PlanContext | None) -> str:
    """What comes before the table: the hidden context line, the title, the sandbox banner, the
    commit and time planned."""
    sandbox = context is not None and context.sandbox
    lines = [*_md_context(context), TITLE + (" (sandbox)" if sandbox else "")]
    if sandbox:
        lines += ["", SANDBOX_BANNER]
    if context is not None:
        lines += ["", _md_when(context)]
    return "\n".join(lines) + "\n"


def _md_head(reports: Sequence[ProducerReport], context: PlanContext | None) -> str:
    lines = [md_intro(context).removesuffix("\n"), "", mark("table", [r.producer for r in reports])]
    lines += TABLE_HEAD
    lines += [_md_row(report) for report in reports]
    if not reports:
        lines.append(NO_PRODUCER_ROW)
    if not any(r.plan.has_changes for r in reports):
        lines += ["", NO_CHANGES]
    return "\n".join(lines) + "\n"


def _md_row(report: ProducerReport) -> str:
    n = report.plan.counts
    cells = [_md_text(report.producer)] + [str(n[a]) for a in COUNTED_ACTIONS]
    cells += [str(len(report.plan.outside)), str(len(report.plan.drift)), _md_guard_cell(report.verdict)]
    cells.append(_md_cost_cell(report))
    return "| " + " | ".join(cells) + " |"


@dataclass(frozen=True)
class ProducerParts:
    """One producer's parts of the comment, each as ``format_markdown`` writes it after its
    mark line: the table row, the note on where its prices come from, the note on its unpriced
    droplets, its section (``None``: it has none). ``plan --format json`` carries them, so
    ``comment`` assembles the comment of several plans without reading markdown back."""

    row: str
    prices: str | None
    unpriced: str | None
    section: str | None


def producer_parts(report: ProducerReport) -> ProducerParts:
    section = _md_section(report).render() if _shown(report) else None
    return ProducerParts(
        row=_md_row(report),
        prices=None if report.cost is None else _md_price_note(report.cost),
        unpriced=_md_unpriced_note(report),
        section=None if section is None else _after_mark(section),
    )


def _after_mark(part: str) -> str:
    """A part as written (a blank line, its mark line, its text) without the first two."""
    return part.split("\n", 2)[2]


def _commit(context: PlanContext) -> str | None:
    return context.commit if context.commit and _COMMIT.fullmatch(context.commit) else None


def _md_context(context: PlanContext | None) -> list[str]:
    """A hidden line for tools: the full commit, the time, sandbox or not."""
    if context is None:
        return []
    sandbox = "yes" if context.sandbox else "no"
    return [context_line(_commit(context) or "unknown", context.planned_at, sandbox)]


def context_line(commit: str, planned_at: datetime, sandbox: str) -> str:
    when = planned_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"<!-- infra-apply plan: commit={commit} planned-at={when} sandbox={sandbox} -->"


def _md_when(context: PlanContext) -> str:
    when = minute(context.planned_at)
    commit = _commit(context)
    return f"Planned at commit {short_commit(commit)} on {when}." if commit else f"Planned on {when}."


def minute(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def short_commit(commit: str) -> str:
    return f"`{commit[:_SHORT_SHA]}`"


def _md_guard_cell(verdict: GuardVerdict) -> str:
    if verdict.ok:
        return "✅"
    flags = sorted({allow_flag(c) for c in verdict.blocked})
    return "⛔ refused without " + " / ".join(f"`{f}`" for f in flags)


def _md_section(report: ProducerReport) -> _Section:
    plan, model = report.plan, report.model
    ordered = display_order(plan.changes)
    resized = [c for c in ordered if c.resize is not None]
    ports = [callout for c in ordered for callout in port_callouts(c, _md_text)]
    producer = html.escape(visible(short(plan.producer)))
    summary = f"<summary><strong>{producer}</strong>: {counts_sentence(plan)}</summary>"
    # Expanded when a reviewer must look: something lost, downtime, or a port opened to all.
    destructive = any(c.action in ("delete", "replace") for c in ordered)
    expand = destructive or resized or any(kind == "opened" for kind, _ in ports)
    head = f"\n{mark('section', [plan.producer])}\n<details{' open' if expand else ''}>\n{summary}\n"
    blocks: list[_Block] = [_md_verdict(report)]
    if plan.outside:
        blocks.append(_Block("\n#### Changed outside Terraform\n\n"))
        blocks += [
            _Block(f"- ✋ {outside_sentence(o, _md_text)} — {_md_text(answer_text(plan, o))}\n")
            for o in display_order(plan.outside)
        ]
    if plan.has_changes:
        blocks.append(_Block("\n#### Changed by this pull request\n"))
        if only_undoes_outside(plan):
            blocks.append(_Block(f"\n_{_md_text(ONLY_UNDOES)}_\n"))
        blocks += _md_changes(report, ordered, ports)
    if plan.drift:
        blocks.append(_Block("\n**Name drift**\n\n"))
        blocks += [
            _Block(
                "- 🏷️ " + drift_sentence(plan.producer, d, _md_text, _md_code, sandbox=report.sandbox) + "\n"
            )
            for d in plan.drift
        ]
    if plan.settings_drift:
        blocks.append(_Block("\n**Settings for new droplets only**\n\n"))
        blocks += [_Block("- 🔑 " + settings_sentence(d, _md_text) + "\n") for d in plan.settings_drift]
    if plan.ssh_bootstrap:
        blocks.append(_Block('\n**SSH open until registered** (`ssh_from = "mesh"`)\n\n'))
        blocks += [_Block("- 🔒 " + bootstrap_sentence(n, _md_text) + "\n") for n in plan.ssh_bootstrap]
    if report.gpus:
        blocks.append(_Block("\n**On-demand GPUs up** (released by `gpu down` or `gpu reap`)\n\n"))
        blocks += [
            _Block("- 🖥️ " + _md_dollars(_md_text(gpu_sentence(g, report.sandbox))) + "\n")
            for g in report.gpus
        ]
    blocks += _md_cost_blocks(report)
    if model is not None and model.droplets:
        held = [g.name for g in report.gpus if not g.releasing]  # what the plan keeps up
        blocks.append(_Block("\n" + mermaid_diagram(model, plan.changes, held)))
    return _Section(head=head, blocks=tuple(blocks), tail="\n</details>\n")


def _md_cost_cell(report: ProducerReport) -> str:
    if report.cost is None:
        return "-"
    return _md_dollars(short_change(report.cost)) + ("\\*" if _md_unpriced_note(report) else "")


def _md_dollars(text: str) -> str:
    # GitHub and Forgejo read "$...$" as inline math: every dollar sign is escaped.
    return text.replace("$", "\\$")


def _md_cost_note(reports: Sequence[ProducerReport]) -> str:
    """The footnote under the table: where the prices come from, their date, what is counted,
    and (``*`` in the table) the droplets left out of a producer's totals for want of a price."""
    # Sorted as printed, so ``combine`` sorts the notes of several plans the same way.
    sources = sorted({_md_price_note(r.cost) for r in reports if r.cost is not None})
    notes = [f"\n{mark('prices')}\n{note}\n" for note in sources]
    for report in reports:
        unpriced = _md_unpriced_note(report)
        if unpriced:
            notes.append(f"\n{mark('unpriced', [report.producer])}\n{unpriced}\n")
    return "".join(notes)


def _md_price_note(cost: ProducerCost) -> str:
    return _md_dollars(_md_text(source_note(cost.prices)))


def _md_unpriced_note(report: ProducerReport) -> str | None:
    """What a producer's totals leave out: droplets (at most 3 named, the section lists them
    all) and kinds whose price is not known."""
    if report.cost is None:
        return None
    found = [unpriced_sentence(report.cost, _md_text, limit=3), price_not_known_sentence(report.cost)]
    unpriced = "; ".join(n for n in found if n)
    return _md_dollars(f"\\* {_md_text(report.producer)}: {unpriced}") if unpriced else None


def _md_cost_blocks(report: ProducerReport) -> list[_Block]:
    """A cost line in the producer's section: before → after, the sizes whose count changes, the
    droplets left out for want of a price, the on-demand GPUs."""
    cost = report.cost
    if cost is None:
        return []
    items = [f"- 💲 {size_sentence(row, _md_text)}\n" for row in changed_sizes(cost)]
    items += [f"- 💲 {_md_text(flat_sentence(k))}\n" for k in changed_flat(cost)]
    items += [f"- 💲 {refused_sentence(d, _md_text)}\n" for d in cost.refused]
    unpriced = unpriced_sentence(cost, _md_text)
    if unpriced:
        items.append(f"- ❔ {unpriced}\n")
    items += [f"- 🖥️ {gpu_cost_sentence(g, _md_text, report.sandbox)}\n" for g in cost.gpus]
    lines = [f"\n**Cost**: {monthly_change(cost)}\n"]
    against = budget_sentence(report.producer, cost, report.sandbox, report.plan.has_changes)
    if against is not None:
        icon = "✅" if (checked := check(report.producer, cost)) is not None and checked.ok else "⛔"
        lines.append(f"\n{icon} **Budget**: {_md_text(against)}\n")
    lines += ["\n", *items] if items else []
    return [_Block(_md_dollars(line)) for line in lines]


# The plan's own changes, one heading per kind, each shown only when it has something.
_HEADINGS: tuple[tuple[str, str], ...] = (
    ("delete", "Destroys"),
    ("replace", "Replacements"),
    ("resize", "Resizes (downtime)"),
    ("create", "Creates"),
    ("update", "Updates"),
    ("import", "Imports"),
)


def _md_changes(
    report: ProducerReport, ordered: Sequence[Change], ports: Sequence[tuple[str, str]]
) -> list[_Block]:
    plan, blocked = report.plan, frozenset(report.verdict.blocked)
    blocks: list[_Block] = []
    for kind, heading in _HEADINGS:
        if kind == "create" and ports:  # what is reachable from the internet, before the rest
            blocks.append(_Block("\n**Public ports** (reachable from the whole internet)\n\n"))
            blocks += [_Block(f"- {_MD_PORTS[k]} {text}\n") for k, text in ports]
        these = [c for c in ordered if _kind(c) == kind]
        if not these:
            continue
        blocks.append(_Block(f"\n**{heading}**\n\n"))
        for change in these:
            note = _md_text(undo_note(plan, change))
            line = (
                _md_destructive(plan.producer, change, blocked, note, sandbox=report.sandbox)
                if kind in ("delete", "replace", "resize")
                else _md_change(change) + note
            )
            blocks.append(_Block(line + "\n", 1))
    return blocks


def _kind(change: Change) -> str:
    return "resize" if change.resize is not None else change.action


def _md_verdict(report: ProducerReport) -> _Block:
    words, command = guard_sentence(report.plan, report.verdict, _md_text, sandbox=report.sandbox)
    mark = "✅" if report.verdict.ok else "⛔"
    text = f"\n{mark} **Guard:** {words}"
    if command is not None:
        text += f" {_md_code(command)}"
    return _Block(text + "\n")


def _md_destructive(
    producer: str, change: Change, blocked: frozenset[Change], note: str = "", *, sandbox: bool
) -> str:
    why = _md_text(reason(change, with_values=True))
    line = f"- ⚠️ **{verb(change)}** {_md_who(change, bold=False)}: {why}{note}"
    if change in blocked and not (change.resize is not None and change.resize.fails):
        allow = (allow_flag(change), allow_value(change))
        again = remedy.for_producer("apply", producer, *allow, keep=remedy.kept(sandbox))
        line += f" — needs {_md_code(again)}"
    return line


def _md_change(change: Change) -> str:
    what = detail(change)
    line = f"- {_MD_EMOJI.get(change.action, '•')} {change.action} {_md_who(change)}"
    return line + (f": {_md_text(what)}" if what else "")


def _md_who(change: Change, *, bold: bool = True) -> str:
    mark = "**" if bold else ""
    name = display_name(change)
    if name == change.address:
        return f"{mark}{_md_text(change.address)}{mark}"
    return f"{mark}{_md_text(name)}{mark} ({_md_text(change.address)})"


def _fit(head: str, sections: Sequence[_Section], limit: int, *, sandbox: bool = False) -> str:
    """Whole sections while they fit, then as many lines of the next one; never over ``limit``
    UTF-16 units (how the forges count: an emoji outside the BMP is two)."""
    reserve = units(_truncation_note(10**9, sandbox))
    budget = limit - reserve
    parts, used, omitted, truncated = [head], units(head), 0, False
    for section in sections:
        if truncated:
            omitted += section.changes
            continue
        full = section.render()
        if used + units(full) <= budget:
            parts.append(full)
            used += units(full)
            continue
        truncated = True
        partial, shown = _fit_section(section, budget - used)
        parts.append(partial)
        used += units(partial)
        omitted += section.changes - shown
    if truncated:
        parts.append(_truncation_note(omitted, sandbox))
    text = "".join(parts)
    if units(text) > limit:  # Only a pathological head (thousands of producers) gets here.
        note = _truncation_note(omitted, sandbox)
        text = _prefix(text, limit - units(note) - 1).rsplit("\n", 1)[0] + "\n" + note
    return text


def _prefix(text: str, room: int) -> str:
    """The longest prefix of ``text`` within ``room`` UTF-16 units."""
    used = 0
    for i, ch in enumerate(text):
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > room:
            return text[:i]
    return text


def _fit_section(section: _Section, room: int) -> tuple[str, int]:
    size = units(section.head) + units(section.tail)
    if size > room:
        return "", 0
    kept, shown = [section.head], 0
    for block in section.blocks:
        if size + units(block.text) > room:
            break  # Keep order: a later, smaller block must not jump the queue.
        kept.append(block.text)
        size += units(block.text)
        shown += block.changes
    kept.append(section.tail)
    return "".join(kept), shown


def _truncation_note(omitted: int, sandbox: bool = False) -> str:
    what = f"{omitted} more changes" if omitted else "some details omitted"
    plan = remedy.command("plan", keep=remedy.kept(sandbox))
    return f"\n… truncated: {what}; run {plan} locally for the full list\n"


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
