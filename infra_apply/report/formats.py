"""Formats in one place: for every verb that takes ``--format``, which renderer writes each
format. A verb hands its result (the model) to its entry here; nothing else branches on the
format.

Each entry imports its renderers when it is asked for, so a verb loads only its own (the plan
renderers alone cost more than a whole ``validate``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from infra_apply.errors import InfraApplyError

if TYPE_CHECKING:
    from infra_apply.commands.adopt import Adopted, TakenOver
    from infra_apply.commands.comment import Commented
    from infra_apply.commands.gpu import Status
    from infra_apply.commands.register import Registered
    from infra_apply.commands.rename import RenameResult
    from infra_apply.commands.render import Rendering
    from infra_apply.commands.validate import Validated
    from infra_apply.plan.drift import DriftReport
    from infra_apply.report import PlanContext, ProducerReport
    from infra_apply.report.verbs import Listing, NothingChanged

M = TypeVar("M")


@dataclass(frozen=True)
class Renderers(Generic[M]):
    """One verb's renderers, by format: each turns the verb's result into what stdout shows."""

    text: Callable[[M], str]
    json: Callable[[M], str]
    markdown: Callable[[M], str] | None = None

    @property
    def formats(self) -> tuple[str, ...]:
        return ("text", "json", *(("markdown",) if self.markdown is not None else ()))

    def render(self, model: M, fmt: str) -> str:
        """The one dispatch on ``--format``."""
        by_format = {"text": self.text, "json": self.json, "markdown": self.markdown}
        renderer = by_format.get(fmt)
        if renderer is None:  # the CLI's choices come from `formats`: a caller's mistake
            raise InfraApplyError(f"no {fmt} output here (formats: {', '.join(self.formats)})")
        return renderer(model)


@dataclass(frozen=True)
class PlanView:
    """What a plan's output shows: one report per producer, where and when it ran (markdown's
    header), and whether the text is coloured for a terminal (never JSON or markdown)."""

    reports: Sequence[ProducerReport]
    context: PlanContext | None = None
    color: bool = False


def plan() -> Renderers[PlanView]:
    # each format's module only when it is the one asked for: a text plan (every terminal run)
    # skips the markdown renderer and the comment limits it imports
    def as_text(v: PlanView) -> str:
        from infra_apply.report import text

        return text.format_text(v.reports, v.color)

    def as_json(v: PlanView) -> str:
        from infra_apply.report import json

        return json.format_json(v.reports, v.context)

    def as_markdown(v: PlanView) -> str:
        from infra_apply.report import markdown

        return markdown.format_markdown(v.reports, v.context)

    return Renderers(text=as_text, json=as_json, markdown=as_markdown)


def plan_list() -> Renderers[Listing]:
    from infra_apply.report import verbs

    return Renderers(verbs.listing_text, verbs.listing_json, markdown=verbs.listing_text)


def plan_nothing() -> Renderers[NothingChanged]:
    from infra_apply.report import verbs

    return Renderers(verbs.nothing_text, verbs.nothing_json, verbs.nothing_markdown)


def drift() -> Renderers[DriftReport]:
    from infra_apply.report import drift as report

    return Renderers(report.format_text, report.format_json, report.format_markdown)


def validate() -> Renderers[Validated]:
    from infra_apply.report import verbs

    return Renderers(verbs.validate_text, verbs.validate_json)


def render() -> Renderers[Rendering]:
    from infra_apply.report import verbs

    return Renderers(verbs.render_text, verbs.render_json)


def register() -> Renderers[Registered]:
    from infra_apply.report import verbs

    return Renderers(verbs.register_text, verbs.register_json)


def rename() -> Renderers[RenameResult]:
    from infra_apply.report import verbs

    return Renderers(verbs.rename_text, verbs.rename_json)


def adopt() -> Renderers[Adopted]:
    from infra_apply.report import verbs

    return Renderers(verbs.adopt_text, verbs.adopt_json)


def adopt_from_state() -> Renderers[TakenOver]:
    from infra_apply.report import verbs

    return Renderers(verbs.takeover_text, verbs.takeover_json)


def comment() -> Renderers[Commented]:
    from infra_apply.report import verbs

    return Renderers(verbs.comment_text, verbs.comment_json)


def gpu_status() -> Renderers[Status]:
    from infra_apply.gpu import status

    return Renderers(
        text=lambda s: status.to_text(s.rows, s.now),
        json=lambda s: status.to_json(s.rows, s.now) + "\n",
    )


BY_COMMAND: Mapping[str, Sequence[Callable[[], Renderers[Any]]]] = {
    "validate": (validate,),
    "render": (render,),
    "plan": (plan, plan_list, plan_nothing),
    "drift": (drift,),
    "register": (register,),
    "rename": (rename,),
    "adopt": (adopt, adopt_from_state),
    "comment": (comment,),
    "gpu status": (gpu_status,),
}
"""Every command that takes ``--format`` and the outputs it can print: each must offer exactly
the formats its ``--format`` accepts (tests/test_options.py)."""
