"""``comment``: post a plan (a file, or standard input: ``plan --format json`` or markdown) to a
pull request, updating infra-apply's one comment there; the forge API is ``infra_apply.forge.comment``.
Several files (a CI matrix's per-producer plans) are combined into one plan first
(``report.combine``); a JSON plan is rendered even alone. With ``--issue`` the text is kept in
one open issue instead (the scheduled drift report)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra_apply.cloud.http import Limits
from infra_apply.commands import Output
from infra_apply.errors import InfraApplyError
from infra_apply.forge.comment import (
    LIMITS,
    SECRET_ENV,
    Posted,
    Target,
    publish,
    publish_issue,
    resolve_target,
)
from infra_apply.report.combine import JsonPlan, combine, read_json
from infra_apply.runtime.fs import TEXT_LIMIT, read_bounded


@dataclass(frozen=True)
class Commented:
    target: Target
    where: str  # OWNER/NAME#N, or OWNER/NAME for an issue
    files: tuple[Path, ...]
    posted: Posted
    issue: bool = False


def run(
    env: Mapping[str, str],
    pr: int | None,
    files: Sequence[Path],
    *,
    read_stdin: Callable[[], bytes],
    forge: str | None = None,
    api_url: str | None = None,
    repo: str | None = None,
    token_env: str | None = None,
    key: str = "plan",
    details: str | None = None,
    issue: str | None = None,
    close: bool = False,
    limits: Limits = LIMITS,
) -> Commented:
    """Post ``files`` (``-``: standard input, read by ``read_stdin``), combined into one plan
    when there are several, to pull request ``pr``, or keep them in the open issue titled
    ``issue`` (closed with ``close``)."""
    if (pr is None) == (issue is None):
        raise InfraApplyError("give either --pr N or --issue TITLE")
    if close and issue is None:
        raise InfraApplyError("--close closes the issue of --issue TITLE; a pull request's comment stays")
    target = resolve_target(env, forge=forge, api_url=api_url, repo=repo, token_env=token_env)
    if sum(1 for f in files if str(f) == "-") > 1:
        raise InfraApplyError("- (standard input) can be given only once")
    text = combine([_read_plan(f, read_stdin) for f in files])
    secrets = [env[v] for v in SECRET_ENV if env.get(v)]
    if issue is not None:
        posted = publish_issue(target, issue, text, key, close=close, secrets=secrets, limits=limits)
        return Commented(target, target.repo, tuple(files), posted, issue=True)
    assert pr is not None
    posted = publish(target, pr, text, key, secrets=secrets, details=details, limits=limits)
    return Commented(target, f"{target.repo}#{pr}", tuple(files), posted)


def _read_plan(file: Path, read_stdin: Callable[[], bytes]) -> str | JsonPlan:
    """A ``plan`` (or ``drift``) ``--format json`` document (a text opening with ``{``), else
    markdown as it is."""
    text = _read_text(file, read_stdin)
    if not text.lstrip().startswith("{"):
        return text
    try:
        return read_json(text)
    except InfraApplyError as exc:
        raise InfraApplyError(exc.message, path=str(file), line=exc.line, col=exc.col) from None


def _read_text(file: Path, read_stdin: Callable[[], bytes]) -> str:
    try:
        raw = read_stdin() if str(file) == "-" else read_bounded(file, TEXT_LIMIT)
        return raw.decode("utf-8")
    except OSError as exc:
        raise InfraApplyError(f"cannot read it: {exc.strerror}", path=str(file)) from None
    except UnicodeDecodeError:
        raise InfraApplyError("it is not UTF-8 text", path=str(file)) from None


def output(done: Commented, fmt: str) -> Output:
    from infra_apply.report import formats

    return Output(formats.comment().render(done, fmt), notes(done))


def notes(done: Commented) -> tuple[str, ...]:
    """Warnings: a cut body, whose the token is when the forge would not say, and each marker
    comment (or issue) someone else wrote."""
    posted, out = done.posted, []
    if posted.cut:
        files = done.files
        what = str(files[0]) if len(files) == 1 else f"the plan combined from {len(files)} files"
        out.append(
            f"infra-apply: warning: {what} is over the comment limit; the comment shows its "
            "start and a note saying where the rest is"
        )
    if posted.identity is None:
        out.append(
            "infra-apply: warning: the forge does not say whose token this is (GET /user); "
            "no existing comment or issue was edited"
        )
    kind = "issue" if done.issue else "comment"
    for f in posted.foreign:
        out.append(
            f"infra-apply: warning: {kind} {f.number} by {f.user} carries the marker; not ours, left alone"
        )
    return tuple(out)
