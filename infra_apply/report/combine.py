"""Several plans (a CI matrix plans each producer in its own job) as the one comment
``plan --format markdown`` would have written for all their producers at once: one context
header, one table with every producer's row, one list of price notes, then every producer's
section, producers in name order as ``plan`` orders them.

A ``plan --format json`` document carries each producer's parts of the comment (``markdown``)
and where and when it was planned (``context``): it is read as JSON, never as prose, and a
document of ``failed`` producers (what the workflows write for a plan that failed) names them.
A markdown plan is split on the mark lines ``format_markdown`` puts before each part, never on
prose. Either way, for plans of one commit and time, ``combine([A, B]) == md(A + B)`` byte for
byte. A text that is not such a plan (a failed job's one-line note, a plan from an older
infra-apply) is kept verbatim, after the plans. Plans of different commits say so in the
header, and so does a producer whose plan failed (``### P: the plan failed (exit N); ...``):
the comment must never read "No changes." while a plan is missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any
from urllib.parse import unquote

from infra_apply.errors import InfraApplyError, json_document
from infra_apply.report import PlanContext
from infra_apply.report.markdown import (
    MARK_KINDS,
    NO_CHANGES,
    NO_PRODUCER_ROW,
    SANDBOX_BANNER,
    TABLE_HEAD,
    TITLE,
    context_line,
    mark,
    md_intro,
    minute,
    short_commit,
)

_MARK = re.compile(
    r"<!-- infra-apply:(?P<kind>" + "|".join(MARK_KINDS) + r")"
    r"(?P<producers>(?: producer=[A-Za-z0-9_.~%-]*)*) -->"
)
_CONTEXT = re.compile(
    r"<!-- infra-apply plan: commit=(?P<commit>[0-9a-f]{7,64}|unknown) "
    r"planned-at=(?P<when>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) sandbox=(?P<sandbox>yes|no) -->"
)
# The note the example workflows write for a producer whose plan failed (examples/ci/*).
_FAILED = re.compile(r"### (?P<producer>[A-Za-z0-9_.-]+): the plan failed \(exit (?P<code>\d+)\)")
# What may follow the parts of one kind: the order ``format_markdown`` writes them in.
_NEXT = {
    "table": {"prices", "unpriced", "section"},
    "prices": {"prices", "unpriced", "section"},
    "unpriced": {"unpriced", "section"},
    "section": {"section"},
}


@dataclass(frozen=True)
class _Part:
    kind: str
    producers: tuple[str, ...]
    text: str  # from its mark line to its last line, newlines included


@dataclass(frozen=True)
class _Plan:
    intro: str
    context: PlanContext | None
    producers: tuple[str, ...]
    rows: tuple[str, ...]
    changes: bool  # some producer changes (the table is not followed by "No changes.")
    prices: tuple[str, ...]
    unpriced: tuple[_Part, ...]
    sections: tuple[_Part, ...]


@dataclass(frozen=True)
class JsonPlan:
    """A ``plan --format json`` document read for ``combine``: its plan (``None`` for a document
    of failures only) and the notes of the producers whose plan failed."""

    plan: _Plan | None
    failed_notes: tuple[str, ...] = ()


def combine(items: Sequence[str | JsonPlan]) -> str:
    """One comment from ``items``: the plans merged, then every other text verbatim. One
    markdown text is posted as it is; a JSON plan is always rendered."""
    if len(items) == 1 and isinstance(items[0], str):
        return items[0]
    plans: list[_Plan] = []
    others: list[str] = []
    for item in items:
        if isinstance(item, JsonPlan):
            plans += [item.plan] if item.plan is not None else []
            others += item.failed_notes
            continue
        plan = _parse(item)
        if plan is None:
            others.append(item)
        else:
            plans.append(plan)
    failed = [(m.group("producer"), m.group("code")) for t in others if (m := _FAILED.match(t))]
    body = _merge(plans, failed) if plans else (_failed_header(failed) if failed else "")
    for text in others:
        if not text.strip():
            continue  # an empty file (a job that wrote nothing) has nothing to keep
        # A blank line first: a text must not run into the </details> HTML block above it.
        body += ("\n" if body else "") + text + ("" if text.endswith("\n") else "\n")
    return body


def failed_note(producer: str, code: int) -> str:
    """What a failed matrix job leaves in the comment (the workflows' note, as markdown)."""
    return f"### {producer}: the plan failed (exit {code}); see the job log\n"


# --- reading a JSON plan --------------------------------------------------------------------

_PRODUCER = re.compile(r"^[A-Za-z0-9_.-]+$")
_STAMP = "%Y-%m-%dT%H:%M:%SZ"


def read_json(text: str) -> JsonPlan | str:
    """A ``plan --format json`` document, or one of ``failed`` producers
    (``{"format_version": 1, "failed": [{"producer": P, "exit_code": N}]}``), or a ``drift
    --format json`` document (its ``markdown``: the issue body, a text like any other);
    anything else is an error naming what is wrong."""
    doc = json_document(text, "not a plan --format json document: {reason}")
    if not isinstance(doc, dict) or doc.get("format_version") != 1:
        raise InfraApplyError("not a plan --format json document: no format_version 1")
    if "drift" in doc:
        body: str = _field(doc, "markdown", str)
        return body
    failed = tuple(_failed(entry) for entry in _field(doc, "failed", list, []))
    if "producers" not in doc:
        if not failed:
            raise InfraApplyError("not a plan --format json document: neither producers nor failed")
        return JsonPlan(None, failed)
    producers = _field(doc, "producers", dict)
    context = _json_context(doc.get("context"))
    parts = {str(name): _json_parts(str(name), _field(producers, name, dict)) for name in producers}
    return JsonPlan(
        _Plan(
            intro=md_intro(context),
            context=context,
            producers=tuple(parts),
            rows=tuple(p["row"] or "" for p in parts.values()),
            changes=_field(doc, "changed", bool),
            prices=tuple(
                sorted({f"{mark('prices')}\n{p['prices']}\n" for p in parts.values() if p["prices"]})
            ),
            unpriced=_json_part("unpriced", parts),
            sections=_json_part("section", parts),
        ),
        failed,
    )


def _field(doc: Mapping[str, object], key: str, kind: type, default: object = None) -> Any:
    value = doc.get(key, default)
    if not isinstance(value, kind):
        raise InfraApplyError(f"not a plan --format json document: {key} is not a {kind.__name__}")
    return value


def _failed(entry: object) -> str:
    entry = entry if isinstance(entry, dict) else {}
    producer, code = entry.get("producer"), entry.get("exit_code")
    if not isinstance(producer, str) or not _PRODUCER.fullmatch(producer):
        raise InfraApplyError("not a plan --format json document: a failed entry names no producer")
    if not isinstance(code, int) or isinstance(code, bool):
        raise InfraApplyError(f"not a plan --format json document: failed {producer} has no exit_code")
    return failed_note(producer, code)


def _json_context(value: object) -> PlanContext | None:
    if value is None:
        return None
    context = _field({"context": value}, "context", dict)
    commit = context.get("commit")
    try:
        when = datetime.strptime(str(context.get("planned_at")), _STAMP).replace(tzinfo=UTC)
    except ValueError:
        raise InfraApplyError("not a plan --format json document: context.planned_at is no time") from None
    if commit is not None and not isinstance(commit, str):
        raise InfraApplyError("not a plan --format json document: context.commit is not a string")
    return PlanContext(sandbox=_field(context, "sandbox", bool), commit=commit, planned_at=when)


def _json_parts(producer: str, doc: Mapping[str, object]) -> dict[str, str | None]:
    """The producer's ``markdown`` parts; its row must be one table row."""
    parts = _field(doc, "markdown", dict)
    found: dict[str, str | None] = {}
    for key in ("row", "prices", "unpriced", "section"):
        value = parts.get(key)
        if value is not None and not isinstance(value, str):
            raise InfraApplyError(f"not a plan --format json document: {producer}'s markdown.{key}")
        found[key] = value
    row = found["row"]
    if row is None or "\n" in row or not row.startswith("| ") or not row.endswith(" |"):
        raise InfraApplyError(f"not a plan --format json document: {producer}'s markdown.row")
    return found


def _json_part(kind: str, parts: Mapping[str, Mapping[str, str | None]]) -> tuple[_Part, ...]:
    return tuple(
        _Part(kind, (name,), f"{mark(kind, [name])}\n{text}" + ("\n" if kind == "unpriced" else ""))
        for name, p in parts.items()
        if (text := p[kind])
    )


# --- reading one plan -----------------------------------------------------------------------


def _parse(text: str) -> _Plan | None:
    """The parts of a markdown plan, or None when ``text`` is not exactly one."""
    intro, parts = _split(text)
    if not parts or parts[0].kind != "table":
        return None
    for before, after in pairwise(parts):
        if after.kind not in _NEXT[before.kind]:
            return None
    readable, context = _context(intro)
    if not readable or md_intro(context) != intro:
        return None
    table = _table(parts[0])
    if table is None:
        return None
    rows, changes = table
    rest = parts[1:]
    if any(len(p.producers) != (0 if p.kind == "prices" else 1) for p in rest):
        return None
    return _Plan(
        intro=intro,
        context=context,
        producers=parts[0].producers,
        rows=rows,
        changes=changes,
        prices=tuple(p.text for p in rest if p.kind == "prices"),
        unpriced=tuple(p for p in rest if p.kind == "unpriced"),
        sections=tuple(p for p in rest if p.kind == "section"),
    )


def _split(text: str) -> tuple[str, list[_Part]]:
    """The intro, then one part per mark line that follows a blank line (as every mark does)."""
    lines = re.findall(r"[^\n]*\n|[^\n]+\Z", text)  # only "\n" ends a line, as in markdown
    starts = [
        i
        for i, line in enumerate(lines)
        if i > 0 and lines[i - 1] == "\n" and _MARK.fullmatch(line.removesuffix("\n"))
    ]
    if not starts:
        return text, []
    intro = "".join(lines[: starts[0] - 1])
    parts = []
    for start, end in zip(starts, [s - 1 for s in starts[1:]] + [len(lines)], strict=True):
        m = _MARK.fullmatch(lines[start].removesuffix("\n"))
        assert m is not None  # found by the same pattern above
        names = tuple(unquote(p.removeprefix("producer=")) for p in m.group("producers").split())
        parts.append(_Part(m.group("kind"), names, "".join(lines[start:end])))
    return intro, parts


def _context(intro: str) -> tuple[bool, PlanContext | None]:
    """The context of the hidden line opening ``intro`` (None without one), and whether that
    line could be read."""
    first = intro.split("\n", 1)[0]
    if not first.startswith("<!--"):
        return True, None
    m = _CONTEXT.fullmatch(first)
    if m is None:
        return False, None
    commit = None if m.group("commit") == "unknown" else m.group("commit")
    try:
        when = datetime.strptime(m.group("when"), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:  # month 13 and the like: not a line infra-apply wrote
        return False, None
    return True, PlanContext(sandbox=m.group("sandbox") == "yes", commit=commit, planned_at=when)


def _table(part: _Part) -> tuple[tuple[str, ...], bool] | None:
    """The table's rows (one line each: names are escaped) and whether anything changes."""
    lines = part.text.split("\n")[1:]
    count = len(part.producers) or 1  # an empty plan shows the placeholder row
    head, rows, rest = lines[:2], lines[2 : 2 + count], lines[2 + count :]
    if tuple(head) != TABLE_HEAD or len(rows) != count or not all(r.startswith("| ") for r in rows):
        return None
    if not part.producers:  # an empty plan: the placeholder row, and nothing changes
        return ((), False) if rows == [NO_PRODUCER_ROW] and rest == ["", NO_CHANGES, ""] else None
    if rest == [""]:
        return tuple(rows), True
    if rest == ["", NO_CHANGES, ""]:
        return tuple(rows), False
    return None


# --- the combined plan ----------------------------------------------------------------------


def _merge(plans: Sequence[_Plan], failed: Sequence[tuple[str, str]] = ()) -> str:
    rows = _by_producer((name, row) for p in plans for name, row in zip(p.producers, p.rows, strict=True))
    producers = [name for name, _ in rows]
    table = [mark("table", producers), *TABLE_HEAD, *(row for _, row in rows)]
    if not rows:
        table.append(NO_PRODUCER_ROW)
    if not any(p.changes for p in plans):
        table += ["", NO_CHANGES_BUT_FAILED if failed else NO_CHANGES]
    intro = _intro(plans) + ("\n" + failed_sentence(failed) + "\n" if failed else "")
    body = intro + "\n" + "\n".join(table) + "\n"
    body += "".join("\n" + text for text in sorted({t for p in plans for t in p.prices}))
    for kind in ("unpriced", "section"):
        parts = [part for p in plans for part in (p.unpriced if kind == "unpriced" else p.sections)]
        body += "".join("\n" + text for _, text in _by_producer((q.producers[0], q.text) for q in parts))
    return body


NO_CHANGES_BUT_FAILED = "No changes in the plans that ran."


def failed_sentence(failed: Sequence[tuple[str, str]]) -> str:
    """``> ⛔ **The plan of mc failed** (exit 1): ...``: what the comment cannot show."""
    names = ", ".join(f"{name} (exit {code})" for name, code in failed).replace("_", "\\_")
    plans = "plan" if len(failed) == 1 else "plans"
    return (
        f"> ⛔ **The {plans} of {names} failed:** what {'it' if len(failed) == 1 else 'they'} "
        f"would change is unknown; see {'its note' if len(failed) == 1 else 'their notes'} below "
        "and the job log."
    )


def _failed_header(failed: Sequence[tuple[str, str]]) -> str:
    """No plan at all, only failures: the title and what failed, before the notes."""
    return f"{TITLE}\n\n{failed_sentence(failed)}\n"


def _by_producer(items: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    # Stable: one producer planned twice keeps the order of its files.
    return sorted(items, key=lambda item: item[0])


def _intro(plans: Sequence[_Plan]) -> str:
    """The one header: as each plan has it when they agree, else what they were planned at."""
    if len({p.intro for p in plans}) == 1:
        return plans[0].intro
    contexts = [p.context for p in plans if p.context is not None]
    sandboxed = [p for p in plans if p.context is not None and p.context.sandbox]
    everyone = len(sandboxed) == len(plans)
    hidden = _merged_context_line(plans)
    lines = [*([hidden] if hidden else []), TITLE + (" (sandbox)" if everyone else "")]
    if everyone:
        lines += ["", SANDBOX_BANNER]
    elif sandboxed:
        names = _names(sandboxed)
        lines += [
            "",
            f"> 🧪 **Partly a sandbox plan:** {names} planned against infra-apply's local stand-in "
            "cloud, not a DigitalOcean account: their sections say nothing about production.",
        ]
    if contexts:
        lines += ["", _merged_when(plans, contexts)]
    return "\n".join(lines) + "\n"


def _merged_context_line(plans: Sequence[_Plan]) -> str:
    """The hidden line for tools: one commit or ``mixed``; the earliest time planned."""
    contexts = [p.context for p in plans if p.context is not None]
    if not contexts:
        return ""
    commits = {p.context.commit if p.context is not None else None for p in plans}
    commit = "mixed" if len(commits) > 1 else (commits.pop() or "unknown")
    flags = {p.context is not None and p.context.sandbox for p in plans}
    sandbox = "mixed" if len(flags) > 1 else ("yes" if flags.pop() else "no")
    return context_line(commit, min(c.planned_at for c in contexts), sandbox)


def _merged_when(plans: Sequence[_Plan], contexts: Sequence[PlanContext]) -> str:
    first, last = min(c.planned_at for c in contexts), max(c.planned_at for c in contexts)
    when = f"on {minute(first)}" if minute(first) == minute(last) else f"between {_span(first, last)}"
    commits = {p.context.commit if p.context is not None else None for p in plans}
    if len(commits) == 1:
        commit = commits.pop()
        return f"Planned at commit {short_commit(commit)} {when}." if commit else f"Planned {when}."
    groups = []
    for commit in dict.fromkeys(p.context.commit if p.context is not None else None for p in plans):
        these = [p for p in plans if (p.context.commit if p.context is not None else None) == commit]
        at = f"at commit {short_commit(commit)}" if commit else "at an unknown commit"
        groups.append(f"{_names(these)} {at}")
    return f"⚠️ **Planned at different commits:** {'; '.join(groups)}; {when}."


def _span(first: datetime, last: datetime) -> str:
    a, b = minute(first), minute(last)
    return f"{a.removesuffix(' UTC')} and {b[len('YYYY-MM-DD ') :] if a[:10] == b[:10] else b}"


def _names(plans: Sequence[_Plan]) -> str:
    """The producers of ``plans`` as their table rows print them (escaped, inert markdown)."""
    cells = [row.split(" | ", 1)[0].removeprefix("| ") for p in plans for row in p.rows]
    return ", ".join(cells) if cells else "a plan of no producer"
