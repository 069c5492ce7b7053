"""Each verb's result as text and as JSON, for the verbs whose output is one small record:
validate, render, register, rename, adopt (and ``--from-state``), comment, and plan's
``--list`` and "nothing to plan". Plans and drift have their own modules (text, json, markdown,
drift). ``report/formats.py`` says which of these writes each ``--format``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from infra_apply import remedy

if TYPE_CHECKING:
    from infra_apply.commands.adopt import Adopted, TakenOver
    from infra_apply.commands.comment import Commented
    from infra_apply.commands.register import Registered
    from infra_apply.commands.rename import RenameResult
    from infra_apply.commands.render import Rendering
    from infra_apply.commands.validate import Validated
    from infra_apply.manifests.changed import Changes


def validate_text(result: Validated) -> str:
    v = result.validation
    lines = [p.format() for p in v.problems]
    lines.append(
        f"{len(v.errors)} error(s), {len(v.warnings)} warning(s) in "
        f"{len(v.discovery.manifests)} manifest(s) under {len(v.discovery.producers)} "
        f"producer(s){'' if not result.failed else ' — invalid'}"
    )
    return "".join(f"{line}\n" for line in lines)


def validate_json(result: Validated) -> str:
    v = result.validation
    doc = {
        "valid": not result.failed,
        "manifests": len(v.discovery.manifests),
        "producers": list(v.discovery.producers),
        "errors": len(v.errors),
        "warnings": len(v.warnings),
        "problems": [p._asdict() for p in v.problems],
    }
    return json.dumps(doc, indent=2) + "\n"


def render_text(result: Rendering) -> str:
    out, drift = result.out, result.drift
    if result.check:
        lines = [f"{out / rel}: stale or missing" for rel in drift.stale]
        lines += [f"{out / rel}: no longer rendered (would be removed)" for rel in drift.extra]
        if not result.stale:
            files = sum(len(r.files) for r in result.rendered)
            lines.append(f"{out} is up to date ({files} files, {len(result.rendered)} producers)")
    else:
        lines = [f"wrote {out / rel}" for rel in drift.stale]
        lines += [f"removed {out / rel}" for rel in drift.extra]
        if not result.stale:
            lines.append(f"{out} already up to date")
    return "".join(f"{line}\n" for line in lines)


def render_json(result: Rendering) -> str:
    check, drift = result.check, result.drift
    doc = {
        "out": str(result.out),
        "check": check,
        "stale" if check else "written": list(drift.stale),
        "removed" if not check else "extra": list(drift.extra),
        "up_to_date": not result.stale,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def register_text(done: Registered) -> str:
    result = done.result
    if done.dry_run:
        return result.diff or "no changes\n"
    from infra_apply.registry.mesh import describe

    lines = describe(result)
    if not result.wrote:
        lines.append(f"{result.path} already up to date")
    return "".join(f"{line}\n" for line in lines)


def register_json(done: Registered) -> str:
    result = done.result
    doc = {
        "path": str(result.path),
        "written": result.wrote,
        "dry_run": done.dry_run,
        "diff": result.diff,
        "changes": [
            {
                "change": h.kind,
                "host": h.host,
                "mesh_ip": h.mesh_ip,
                "droplet": h.droplet,
                "fields": list(h.fields),
            }
            for h in result.changes
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def rename_text(result: RenameResult) -> str:
    done = result.renamed
    if done is None:
        return f"{result.name}: live name already matches\n"
    return f"renamed droplet {done.droplet_id}: {done.old} -> {done.new}\n"


def rename_json(result: RenameResult) -> str:
    done = result.renamed
    doc = {
        "renamed": done is not None,
        "name": result.name,
        **({"droplet_id": done.droplet_id, "old": done.old} if done else {}),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def comment_text(done: Commented) -> str:
    posted = done.posted
    link = f": {posted.url}" if posted.url else ""
    if done.issue:
        if posted.action == "none":
            return f"no open issue to close in {done.where}\n"
        return f"{posted.action} issue {posted.comment_id} in {done.where}{link}\n"
    return f"{posted.action} comment {posted.comment_id} on {done.where}{link}\n"


def comment_json(done: Commented) -> str:
    posted = done.posted
    doc = {
        "action": posted.action,
        "issue" if done.issue else "comment_id": posted.comment_id,
        "url": posted.url,
        "forge": done.target.forge,
        "repo": done.target.repo,
        "identity": posted.identity,
        "left_alone": [{"number": f.number, "user": f.user} for f in posted.foreign],
        "cut": posted.cut,
        "chars": posted.chars,
    }
    if not done.issue:
        doc["pr"] = int(done.where.rsplit("#", 1)[1])
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def adopt_text(done: Adopted) -> str:
    lines = [f"import {a.address} <- {a.kind} {a.droplet_id} ({a.name})" for a in done.adoptions]
    if done.adoptions:
        plan = remedy.for_producer("plan", done.producer, keep=done.keep)
        apply = remedy.for_producer("apply", done.producer, keep=done.keep)
        lines.append(f"wrote {done.imports}; run {plan}, then {apply} to take them over")
    else:
        lines.append("nothing to adopt: all the manifests declare is in state or absent from the account")
    return "".join(f"{line}\n" for line in lines)


def adopt_json(done: Adopted) -> str:
    doc = {
        "imports": str(done.imports) if done.adoptions else None,
        "adopted": [
            {
                "address": a.address,
                "kind": a.kind,
                "name": a.name,
                "id": a.droplet_id,
                "droplet_id": a.droplet_id,
                "warning": a.warning,
            }
            for a in done.adoptions
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def takeover_text(done: TakenOver) -> str:
    text = done.takeover.to_text()
    if done.imports is not None and done.removed is not None:
        p = done.takeover.producer
        text += (
            f"wrote {done.imports}: the next `{remedy.for_producer('apply', p, keep=done.keep)}` "
            "imports them\n"
            f"wrote {done.removed}: for the OLD root; after that apply, delete the resource blocks "
            "it names from the old root, copy it there, and `terraform plan` must show 0 to destroy\n"
        )
    return text


def takeover_json(done: TakenOver) -> str:
    doc = {
        **done.takeover.to_json(),
        "imports": str(done.imports) if done.imports else None,
        "removed_file": str(done.removed) if done.removed else None,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


# --- plan --list, and plan --changed with nothing to plan --------------------------------------


@dataclass(frozen=True)
class Listing:
    """``plan --list``: the producers plan would plan, and the git change that chose them."""

    producers: Sequence[str]
    changes: Changes | None = None


def listing_text(listed: Listing) -> str:
    return "".join(f"{p}\n" for p in listed.producers)


def listing_json(listed: Listing) -> str:
    """One document a CI matrix reads."""
    producers, changes = listed.producers, listed.changes
    doc: dict[str, Any] = {"producers": list(producers)}
    if changes is not None:
        doc["base"] = changes.base
        doc["merge_base"] = changes.merge_base
        doc["everything"] = changes.selection.everything
        doc["because"] = {p: list(changes.selection.because[p]) for p in producers}
    return json.dumps(doc, indent=2) + "\n"


@dataclass(frozen=True)
class NothingChanged:
    """``plan --changed`` when no producer changed since ``base`` (exit 0, like a plan without
    changes)."""

    base: str

    @property
    def why(self) -> str:
        return f"no producer's manifests, generated module or configuration changed since {self.base}"


def nothing_text(nothing: NothingChanged) -> str:
    return f"No changes: {nothing.why}.\n"


def nothing_json(_: NothingChanged) -> str:
    from infra_apply.report.json import format_json

    return format_json([])


def nothing_markdown(nothing: NothingChanged) -> str:
    why = nothing.why.replace(nothing.base, f"`{nothing.base}`")
    return f"## infra-apply plan\n\nNo changes: {why}.\n"
