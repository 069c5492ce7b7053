"""What a Terraform plan does, in the operator's words: changes, guard verdict, drift, reports.

Pure functions over the decoded output of ``terraform show -json <planfile>`` (plan format 1.x)
and the address → human-name map produced by rendering. Nothing here runs Terraform or reads
files, so the safety logic (the guard) is testable on fixtures alone.

Decisions a caller relies on:

* A plain ``no-op`` and a data-source ``read`` are not changes: ``parse_plan`` drops them.
  A ``no-op`` that imports is the action ``"import"``. A change that imports *and* updates
  (or replaces) keeps ``update``/``replace`` as its action with ``importing=True`` and is counted
  under both, like Terraform's own "1 to import, 1 to change".
* Action lists this module does not know (e.g. ``forget`` from a ``removed`` block, which
  infra-apply never renders) raise ``InfraApplyError``: the guard must not wave through what it
  cannot judge.
* ``--allow-destroy`` and ``--allow-replace`` are distinct: allowing a destroy does not allow
  a replacement of the same resource (a replacement also loses the box's disk and IP, but the
  operator who typed ``--allow-destroy`` was thinking of a resource that goes away for good).
* Secrets: resource names, addresses and attribute *names* are printed; an attribute *value*
  is printed only when it is a short scalar (or short list of scalars) that Terraform did not
  mark sensitive (``before_sensitive``/``after_sensitive``) and whose name does not look like a
  credential. Everything else is shown by name only.
"""

from __future__ import annotations

import html
import json
import re
import shlex
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from infra_apply.errors import InfraApplyError, TerraformError
from infra_apply.model import ProducerModel

Action = Literal["create", "update", "replace", "delete", "import", "read", "no-op"]
CountedAction = Literal["create", "update", "replace", "delete", "import"]

COUNTED_ACTIONS: tuple[CountedAction, ...] = ("create", "update", "replace", "delete", "import")
GUARDED_TYPES: frozenset[str] = frozenset(
    {"digitalocean_droplet", "digitalocean_database_db", "digitalocean_database_user"}
)
MARKDOWN_LIMIT = 60_000
JSON_FORMAT_VERSION = 1

_ACTIONS: Mapping[tuple[str, ...], Action] = {
    ("create",): "create",
    ("update",): "update",
    ("delete", "create"): "replace",
    ("create", "delete"): "replace",
    ("delete",): "delete",
    ("read",): "read",
    ("no-op",): "no-op",
}

# Destructive first: an operator skimming a plan must see what is lost before what is added.
_DISPLAY_ORDER: Mapping[str, int] = {
    "delete": 0,
    "replace": 1,
    "create": 2,
    "update": 3,
    "import": 4,
}

_REPLACE_REASONS: Mapping[str, str] = {
    "replace_because_tainted": "tainted by a failed apply, must be replaced",
    "replace_by_request": "replacement requested with -replace",
    "replace_by_triggers": "replace_triggered_by forces replacement",
}
_DELETE_REASONS: Mapping[str, str] = {
    "delete_because_no_resource_config": "no longer in the manifests",
    "delete_because_count_index": "its count was lowered",
    "delete_because_each_key": "its for_each key is gone",
    "delete_because_no_module": "its module is gone",
    "delete_because_wrong_repetition": "its count/for_each changed",
    "delete_because_no_move_target": "its moved target is gone",
    "deposed": "a deposed object left by an interrupted replacement",
}

# Defence in depth: providers occasionally forget to mark a credential sensitive.
_SECRET_NAME = re.compile(r"pass|secret|token|key|cert|uri|user_data|private", re.IGNORECASE)
_INDEX_SUFFIX = re.compile(r'\[(?:\d+|"(?:[^"\\]|\\.)*")\]$')
_SHELL_SAFE = re.compile(r"^[A-Za-z0-9._:/@=+,-]+$")
_MAX_VALUE_CHARS = 60

_Escape = Callable[[str], str]


@dataclass(frozen=True)
class AttrDiff:
    """A displayable before → after of one top-level attribute (never a sensitive value)."""

    attr: str
    before: str
    after: str

    def render(self) -> str:
        return f"{self.attr} {self.before} → {self.after}"


@dataclass(frozen=True)
class Change:
    """One resource the plan creates, updates, replaces, deletes or imports."""

    address: str
    type: str
    name: str
    action: Action
    replace_paths: tuple[str, ...] = ()
    updated_attrs: tuple[str, ...] = ()
    importing: bool = False
    import_id: str = ""
    reason: str = ""
    diffs: tuple[AttrDiff, ...] = ()

    @property
    def base_address(self) -> str:
        return strip_index(self.address)

    @property
    def label(self) -> str:
        return self.address if self.name == self.address else f"{self.address} ({self.name})"

    def diff(self, attr: str) -> AttrDiff | None:
        return next((d for d in self.diffs if d.attr == attr), None)


@dataclass(frozen=True)
class NameDrift:
    """A droplet whose live name differs from its manifest name (renames are ignore_changes)."""

    address: str
    manifest_name: str
    live_name: str


@dataclass(frozen=True)
class ProducerPlan:
    producer: str
    changes: tuple[Change, ...] = ()
    drift: tuple[NameDrift, ...] = ()

    @property
    def counts(self) -> dict[CountedAction, int]:
        counts: dict[CountedAction, int] = dict.fromkeys(COUNTED_ACTIONS, 0)
        for change in self.changes:
            if change.action in counts:
                counts[change.action] += 1
            if change.importing and change.action != "import":
                counts["import"] += 1
        return counts

    @property
    def has_changes(self) -> bool:
        return any(c.action in COUNTED_ACTIONS for c in self.changes)


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
    flag: Literal["--allow-destroy", "--allow-replace"]
    value: str
    hint: str = ""

    @property
    def message(self) -> str:
        kind = "deletion" if self.flag == "--allow-destroy" else "replacement"
        text = (
            f"{self.flag} {_visible(self.value)} matches no {kind} in the plan for {self.producer}"
        )
        return f"{text}; {self.hint}" if self.hint else text


# --------------------------------------------------------------------------------------------
# Parsing


def strip_index(address: str) -> str:
    """``digitalocean_droplet.ct_gpu[0]`` → ``digitalocean_droplet.ct_gpu``."""
    return _INDEX_SUFFIX.sub("", address)


def classify(actions: Sequence[str], importing: bool) -> Action:
    action = _ACTIONS.get(tuple(actions))
    if action is None:
        raise InfraApplyError(
            f"terraform planned actions {list(actions)!r}, which infra-apply does not know; "
            "refusing to summarise or guard this plan"
        )
    return "import" if action == "no-op" and importing else action


def parse_plan(producer: str, plan: Mapping[str, Any], names: Mapping[str, str]) -> ProducerPlan:
    """Summarise one producer's plan; ``names`` maps index-less addresses to human names."""
    _check_envelope(producer, plan)
    changes = [
        change
        for rc in _list(plan.get("resource_changes"))
        if (change := _parse_change(_dict(rc), names)) is not None
    ]
    changes.sort(key=lambda c: (_natural_key(c.address), c.action, c.reason))
    drift = sorted(_name_drift(plan, names), key=lambda d: _natural_key(d.address))
    return ProducerPlan(producer=producer, changes=tuple(changes), drift=tuple(drift))


def _check_envelope(producer: str, plan: Mapping[str, Any]) -> None:
    version = str(plan.get("format_version", ""))
    if not version.startswith("1."):
        raise InfraApplyError(
            f"producer {producer}: unsupported terraform plan format_version {version!r} "
            "(expected 1.x)"
        )
    if plan.get("errored") is True:
        raise TerraformError(f"producer {producer}: terraform reported errors; the plan is partial")


def _parse_change(rc: Mapping[str, Any], names: Mapping[str, str]) -> Change | None:
    change = _dict(rc.get("change"))
    importing = _dict(change.get("importing")) if change.get("importing") is not None else None
    action = classify([str(a) for a in _list(change.get("actions"))], importing is not None)
    if action in ("no-op", "read"):
        return None
    address = str(rc.get("address", ""))
    before, after = _dict(change.get("before")), _dict(change.get("after"))
    unknown = _dict(change.get("after_unknown"))
    sensitive = _Sensitivity(change.get("before_sensitive"), change.get("after_sensitive"))
    attrs = _updated_attrs(action, before, after, unknown)
    reason = str(rc.get("action_reason") or ("deposed" if rc.get("deposed") else ""))
    return Change(
        address=address,
        type=str(rc.get("type", "")),
        name=_human_name(address, names, before, after, sensitive),
        action=action,
        replace_paths=tuple(_path_text(p) for p in _list(change.get("replace_paths"))),
        updated_attrs=attrs,
        importing=importing is not None,
        import_id=str(importing.get("id") or "") if importing is not None else "",
        reason=reason,
        diffs=_diffs(attrs, before, after, unknown, sensitive),
    )


def _human_name(
    address: str,
    names: Mapping[str, str],
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    sensitive: _Sensitivity,
) -> str:
    for key in (address, strip_index(address)):
        if key in names:
            return names[key]
    # Removed from the manifests: the state still knows what the resource was called.
    if not sensitive.hides("name"):
        for values in (before, after):
            if isinstance(values.get("name"), str) and values["name"]:
                return str(values["name"])
    return address


def _updated_attrs(
    action: Action, before: Mapping[str, Any], after: Mapping[str, Any], unknown: Mapping[str, Any]
) -> tuple[str, ...]:
    if action not in ("update", "replace"):
        return ()
    changed = []
    for attr in sorted(set(before) | set(after) | set(unknown)):
        if _contains_true(unknown.get(attr)):
            # A replacement recomputes every computed attribute; only an update's unknowns
            # (e.g. a firewall's droplet_ids after its droplet is rebuilt) tell the operator much.
            if action == "update":
                changed.append(attr)
        elif before.get(attr) != after.get(attr):
            changed.append(attr)
    return tuple(changed)


def _path_text(path: Any) -> str:
    """``["inbound_rule", 0, "port_range"]`` → ``inbound_rule[0].port_range``."""
    text = ""
    for step in _list(path):
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
    return text


class _Sensitivity:
    """Terraform's ``*_sensitive`` markers: ``true`` for the whole object or per attribute."""

    def __init__(self, before: Any, after: Any) -> None:
        self._markers = (before, after)

    def hides(self, attr: str) -> bool:
        for marker in self._markers:
            if marker is True:
                return True
            if isinstance(marker, Mapping) and _contains_true(marker.get(attr)):
                return True
        return False


def _diffs(
    attrs: Sequence[str],
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    unknown: Mapping[str, Any],
    sensitive: _Sensitivity,
) -> tuple[AttrDiff, ...]:
    diffs = []
    for attr in attrs:
        if sensitive.hides(attr) or _SECRET_NAME.search(attr):
            continue
        old = _display_value(before.get(attr))
        new = "(known after apply)" if _contains_true(unknown.get(attr)) else None
        new = new or _display_value(after.get(attr))
        if old is not None and new is not None:
            diffs.append(AttrDiff(attr, old, new))
    return tuple(diffs)


def _display_value(value: Any) -> str | None:
    """A short, ASCII-only rendering of a scalar or list of scalars; ``None`` when not shown."""
    scalar = (str, int, float, bool, type(None))
    shown = isinstance(value, scalar) or (
        isinstance(value, list) and all(isinstance(v, scalar) for v in value)
    )
    if not shown:
        return None
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= _MAX_VALUE_CHARS else None


def _name_drift(plan: Mapping[str, Any], names: Mapping[str, str]) -> Iterator[NameDrift]:
    root = _dict(_dict(_dict(plan.get("prior_state")).get("values")).get("root_module"))
    for res in _module_resources(root):
        if res.get("mode") != "managed" or res.get("type") != "digitalocean_droplet":
            continue
        address = str(res.get("address", ""))
        manifest = names.get(address, names.get(strip_index(address)))
        live = _dict(res.get("values")).get("name")
        if manifest is not None and isinstance(live, str) and live != manifest:
            yield NameDrift(address=address, manifest_name=manifest, live_name=live)


def _module_resources(module: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for res in _list(module.get("resources")):
        yield _dict(res)
    for child in _list(module.get("child_modules")):
        yield from _module_resources(_dict(child))


# --------------------------------------------------------------------------------------------
# Guard


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
        return f"it is replaced: use --allow-replace {_shell(value)}"
    return f"it is destroyed: use --allow-destroy {_shell(value)}"


def allow_flag(change: Change) -> str:
    return "--allow-destroy" if change.action == "delete" else "--allow-replace"


def refusal_lines(verdict: GuardVerdict) -> tuple[str, ...]:
    """One line per blocked change, ending in the exact flag that would allow it."""
    return tuple(
        f"{_verb(c)} {_visible(c.label)}: {_reason(c, with_values=False)} — rerun with "
        f"{allow_flag(c)} {_shell(_allow_value(c))}"
        for c in verdict.blocked
    )


def refusal_message(verdict: GuardVerdict) -> str:
    return "\n".join(refusal_lines(verdict))


def _allow_value(change: Change) -> str:
    return change.name if change.name != change.address else change.base_address


def _verb(change: Change) -> str:
    return "destroy" if change.action == "delete" else change.action


def _reason(change: Change, *, with_values: bool) -> str:
    """Why a replace/delete happens, in words; attribute values only when asked for."""
    if change.action == "delete":
        return _DELETE_REASONS.get(change.reason, "will be destroyed")
    if change.action != "replace":
        return ""
    if not change.replace_paths:
        return _REPLACE_REASONS.get(change.reason, "must be replaced")
    parts = []
    for path in change.replace_paths:
        diff = change.diff(path) if with_values else None
        parts.append(diff.render() if diff else path)
    verb = "forces" if len(parts) == 1 else "force"
    return f"{', '.join(parts)} {verb} replacement"


# --------------------------------------------------------------------------------------------
# Text


_SYMBOLS: Mapping[str, tuple[str, str]] = {
    "create": ("+", "create"),
    "update": ("~", "update"),
    "replace": ("-/+", "replace"),
    "delete": ("-", "destroy"),
    "import": ("<=", "import"),
}


def display_order(changes: Iterable[Change]) -> list[Change]:
    return sorted(changes, key=lambda c: (_DISPLAY_ORDER.get(c.action, 9), _natural_key(c.address)))


def counts_sentence(plan: ProducerPlan) -> str:
    n = plan.counts
    return (
        f"{n['create']} to create, {n['update']} to update, {n['replace']} to replace, "
        f"{n['delete']} to destroy, {n['import']} to import"
    )


def format_text(plans: Sequence[ProducerPlan]) -> str:
    """Terminal summary: per producer its changes (destructive first), drift and counts."""
    blocks = ["\n".join(_text_producer(plan)) for plan in plans]
    return "\n\n".join(blocks) + "\n" if blocks else "No producers planned.\n"


def _text_producer(plan: ProducerPlan) -> Iterator[str]:
    yield f"Producer {_visible(plan.producer)}:"
    for change in display_order(plan.changes):
        yield _text_change(change)
    for drift in plan.drift:
        yield "  ! " + _drift_sentence(plan.producer, drift, _visible, _visible)
    yield f"Plan: {counts_sentence(plan)}." if plan.has_changes else "No changes."


def _text_change(change: Change) -> str:
    symbol, verb = _SYMBOLS[change.action]
    who = change.address if change.name == change.address else f"{change.name} ({change.address})"
    detail = _detail(change)
    return f"{symbol:>3} {verb:<7} {_visible(who)}" + (f": {_visible(detail)}" if detail else "")


def _detail(change: Change) -> str:
    """The part after the colon: why, or what changes (values only when safe to show)."""
    if change.action in ("replace", "delete"):
        return _reason(change, with_values=True)
    parts = []
    if change.action == "update":
        parts.append(", ".join(_attr_text(change, a) for a in change.updated_attrs))
    if change.importing and change.import_id:
        parts.append(f"import id {change.import_id}")
    return "; ".join(p for p in parts if p)


def _attr_text(change: Change, attr: str) -> str:
    diff = change.diff(attr)
    return diff.render() if diff else attr


def _drift_sentence(producer: str, drift: NameDrift, esc: _Escape, command: _Escape) -> str:
    rename = f"infra-apply rename --producer {_shell(producer)} {_shell(drift.manifest_name)}"
    return (
        f"name drift: {esc(drift.address)} is live as {esc(_quoted(drift.live_name))} but the "
        f"manifest says {esc(_quoted(drift.manifest_name))} — run {command(rename)}"
    )


# --------------------------------------------------------------------------------------------
# JSON


def _verdict(plan: ProducerPlan, verdicts: Mapping[str, GuardVerdict]) -> GuardVerdict:
    # No verdict given (plain `plan`): report what `apply` would refuse without any --allow-*.
    verdict = verdicts.get(plan.producer)
    return verdict if verdict is not None else guard(plan, (), ())


def format_json(plans: Sequence[ProducerPlan], verdicts: Mapping[str, GuardVerdict]) -> str:
    doc = {
        "format_version": JSON_FORMAT_VERSION,
        "changed": any(p.has_changes for p in plans),
        "producers": {p.producer: _json_producer(p, _verdict(p, verdicts)) for p in plans},
    }
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def _json_producer(plan: ProducerPlan, verdict: GuardVerdict) -> dict[str, Any]:
    return {
        "changes": [_json_change(c) for c in display_order(plan.changes)],
        "counts": dict(plan.counts),
        "drift": [
            {"address": d.address, "live_name": d.live_name, "manifest_name": d.manifest_name}
            for d in plan.drift
        ],
        "guard": {
            "ok": verdict.ok,
            "blocked": [
                {
                    "action": c.action,
                    "address": c.address,
                    "name": c.name,
                    "allow_flag": allow_flag(c),
                    "message": line,
                }
                for c, line in zip(verdict.blocked, refusal_lines(verdict), strict=True)
            ],
        },
    }


def _json_change(change: Change) -> dict[str, Any]:
    return {
        "action": change.action,
        "address": change.address,
        "type": change.type,
        "name": change.name,
        "importing": change.importing,
        "import_id": change.import_id or None,
        "reason": change.reason or None,
        "replace_paths": list(change.replace_paths),
        "updated_attrs": list(change.updated_attrs),
        "diffs": [{"attr": d.attr, "before": d.before, "after": d.after} for d in change.diffs],
    }


# --------------------------------------------------------------------------------------------
# Markdown (pull-request comment)


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


_MD_EMOJI: Mapping[str, str] = {
    "create": "🆕",
    "update": "🔧",
    "import": "📥",
}


def format_markdown(
    plans: Sequence[ProducerPlan],
    verdicts: Mapping[str, GuardVerdict],
    models: Mapping[str, ProducerModel],
) -> str:
    """A pull-request comment, always at most ``MARKDOWN_LIMIT`` characters."""
    head = _md_head(plans, verdicts)
    sections = [
        _md_section(p, _verdict(p, verdicts), models.get(p.producer))
        for p in plans
        if p.has_changes or p.drift
    ]
    return _fit(head, sections, MARKDOWN_LIMIT)


def _md_head(plans: Sequence[ProducerPlan], verdicts: Mapping[str, GuardVerdict]) -> str:
    lines = [
        "## infra-apply plan",
        "",
        "| producer | create | update | replace | destroy | import | name drift | guard |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for plan in plans:
        n = plan.counts
        cells = [_md_text(plan.producer)] + [str(n[a]) for a in COUNTED_ACTIONS]
        cells += [str(len(plan.drift)), _md_guard_cell(_verdict(plan, verdicts))]
        lines.append("| " + " | ".join(cells) + " |")
    if not plans:
        lines.append("| _none_ | 0 | 0 | 0 | 0 | 0 | 0 | ✅ |")
    if not any(p.has_changes for p in plans):
        lines += ["", "No changes."]
    return "\n".join(lines) + "\n"


def _md_guard_cell(verdict: GuardVerdict) -> str:
    if verdict.ok:
        return "✅"
    flags = sorted({allow_flag(c) for c in verdict.blocked})
    return "⛔ refused without " + " / ".join(f"`{f}`" for f in flags)


def _md_section(plan: ProducerPlan, verdict: GuardVerdict, model: ProducerModel | None) -> _Section:
    ordered = display_order(plan.changes)
    destructive = [c for c in ordered if c.action in ("delete", "replace")]
    blocked = frozenset(verdict.blocked)
    others = [c for c in ordered if c.action not in ("delete", "replace")]
    producer = html.escape(_visible(_short(plan.producer)))
    summary = f"<summary><strong>{producer}</strong>: {counts_sentence(plan)}</summary>"
    head = f"\n<details{' open' if destructive else ''}>\n{summary}\n"
    blocks: list[_Block] = []
    if destructive:
        blocks.append(_Block("\n**Destroyed or replaced**\n\n"))
        blocks += [
            _Block(_md_destructive(plan.producer, c, blocked) + "\n", 1) for c in destructive
        ]
    if others:
        blocks.append(_Block("\n**Other changes**\n\n"))
        blocks += [_Block(_md_change(c) + "\n", 1) for c in others]
    if plan.drift:
        blocks.append(_Block("\n**Name drift**\n\n"))
        blocks += [
            _Block("- 🏷️ " + _drift_sentence(plan.producer, d, _md_text, _md_code) + "\n")
            for d in plan.drift
        ]
    if model is not None and model.droplets:
        blocks.append(_Block("\n" + mermaid_diagram(model, plan.changes)))
    return _Section(head=head, blocks=tuple(blocks), tail="\n</details>\n")


def _md_destructive(producer: str, change: Change, blocked: frozenset[Change]) -> str:
    reason = _md_text(_reason(change, with_values=True))
    line = f"- ⚠️ **{_verb(change)}** {_md_who(change, bold=False)}: {reason}"
    if change in blocked:
        command = f"infra-apply apply --producer {_shell(producer)} {allow_flag(change)} "
        line += f" — needs {_md_code(command + _shell(_allow_value(change)))}"
    return line


def _md_change(change: Change) -> str:
    detail = _detail(change)
    line = f"- {_MD_EMOJI.get(change.action, '•')} {change.action} {_md_who(change)}"
    return line + (f": {_md_text(detail)}" if detail else "")


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


# --------------------------------------------------------------------------------------------
# Mermaid

_MAX_DIAGRAM_NODES = 200
_MERMAID_CLASSES: Mapping[str, str] = {
    "create": "created",
    "update": "updated",
    "replace": "replaced",
    "delete": "deleted",
    "import": "imported",
}
_MERMAID_CLASSDEFS = (
    "  classDef created fill:#d4f8d4,stroke:#2da44e",
    "  classDef updated fill:#fff5cc,stroke:#bf8700",
    "  classDef replaced fill:#ffe2cc,stroke:#bc4c00",
    "  classDef deleted fill:#ffd8d3,stroke:#cf222e,stroke-dasharray:4 2",
    "  classDef imported fill:#ddf4ff,stroke:#0969da",
)
# Mermaid entity codes; `%`, `{`, `}` would otherwise allow `%%{init}` directives and
# backticks would turn a label into a markdown string (or close the ``` fence).
_MERMAID_ESCAPES: Mapping[str, str] = {
    '"': "#quot;",
    "#": "#35;",
    "%": "#37;",
    "&": "#38;",
    "<": "#60;",
    ">": "#62;",
    "\\": "#92;",
    "`": "#96;",
    "{": "#123;",
    "|": "#124;",
    "}": "#125;",
}


def mermaid_diagram(model: ProducerModel, changes: Sequence[Change]) -> str:
    """A ```mermaid flowchart of the producer's droplets; ids are generated, labels escaped."""
    droplet_actions = {c.name: c.action for c in changes if c.type == "digitalocean_droplet"}
    gone = [
        c.name
        for c in display_order(changes)
        if c.type == "digitalocean_droplet"
        and c.action == "delete"
        and model.droplet(c.name) is None
    ]
    nodes = sum(1 + len(d.services) + len(d.hosts) for d in model.droplets) + len(gone)
    if nodes > _MAX_DIAGRAM_NODES:
        return f"_Diagram omitted: {nodes} nodes is too many to draw._\n"
    lines = ["```mermaid", "flowchart LR", *_MERMAID_CLASSDEFS]
    for i, droplet in enumerate(model.droplets):
        node = f"drop{i}"
        label = droplet.name + (" (GPU, on demand)" if droplet.gpu else "")
        lines.append(f"  {node}[{mermaid_label(label)}]")
        for j, service in enumerate(droplet.services):
            lines.append(f"  {node}_svc{j}[{mermaid_label(f'{service.name} ({service.kind})')}]")
            lines.append(f"  {node} --> {node}_svc{j}")
        for j, host in enumerate(droplet.hosts):
            lines.append(f"  {node}_host{j}([{mermaid_label(host)}])")
            lines.append(f"  {node} -. mesh .- {node}_host{j}")
        if droplet.name in droplet_actions:
            lines.append(f"  class {node} {_MERMAID_CLASSES[droplet_actions[droplet.name]]}")
    for i, name in enumerate(gone):
        lines.append(f"  gone{i}[{mermaid_label(name + ' (destroyed)')}]")
        lines.append(f"  class gone{i} deleted")
    lines.append("```")
    return "\n".join(lines) + "\n"


def mermaid_label(text: str) -> str:
    escaped = "".join(_MERMAID_ESCAPES.get(ch, ch) for ch in _visible(_short(text, 80)))
    return f'"{escaped}"'


# --------------------------------------------------------------------------------------------
# Escaping and small helpers


def _visible(text: str) -> str:
    """Make control, format and line-separator characters visible (`\\n`, `\\u202e`)."""
    out = []
    for ch in text:
        if ch == " " or unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp", "Zs"):
            out.append(ch)
        else:
            out.append(json.dumps(ch, ensure_ascii=True)[1:-1] if ord(ch) > 0x1F else _cc(ch))
    return "".join(out)


def _cc(ch: str) -> str:
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch, f"\\x{ord(ch):02x}")


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~!#])")


def _md_text(text: str) -> str:
    """Untrusted text as inert markdown: no HTML, no code spans, no table-cell breaks."""
    escaped = html.escape(_visible(_short(text)), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", escaped)


def _md_code(text: str) -> str:
    # A code span only for shell-safe words; anything else stays escaped prose.
    words = text.split(" ")
    if all(_SHELL_SAFE.fullmatch(w) for w in words):
        return f"`{text}`"
    return _md_text(text)


def _shell(value: str) -> str:
    return shlex.quote(_visible(value))


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _natural_key(text: str) -> tuple[tuple[int, str], ...]:
    parts = re.split(r"(\d+)", text)
    return tuple((int(p), "") if i % 2 else (0, p) for i, p in enumerate(parts))


def _contains_true(marker: Any) -> bool:
    if marker is True:
        return True
    if isinstance(marker, Mapping):
        return any(_contains_true(v) for v in marker.values())
    if isinstance(marker, list):
        return any(_contains_true(v) for v in marker)
    return False


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
