"""``comment``: post a markdown plan (a file, or standard input) to a pull request, updating
infra-apply's one comment there; the forge API is ``infra_apply.comment``. Several files (a CI
matrix's per-producer plans) are combined into one plan first (``report.combine``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra_apply.commands import Output
from infra_apply.comment import SECRET_ENV, Posted, Target, Transport, publish, resolve_target
from infra_apply.errors import InfraApplyError
from infra_apply.report.combine import combine


@dataclass(frozen=True)
class Commented:
    target: Target
    pr: int
    files: tuple[Path, ...]
    posted: Posted


def run(
    env: Mapping[str, str],
    pr: int,
    files: Sequence[Path],
    *,
    read_stdin: Callable[[], bytes],
    forge: str | None = None,
    api_url: str | None = None,
    repo: str | None = None,
    token_env: str | None = None,
    key: str = "plan",
    details: str | None = None,
    transport: Transport | None = None,
) -> Commented:
    """Post ``files`` (``-``: standard input, read by ``read_stdin``), combined into one plan
    when there are several, to pull request ``pr``."""
    target = resolve_target(env, forge=forge, api_url=api_url, repo=repo, token_env=token_env)
    if sum(1 for f in files if str(f) == "-") > 1:
        raise InfraApplyError("- (standard input) can be given only once")
    texts = [_read_text(f, read_stdin) for f in files]
    text = texts[0] if len(texts) == 1 else combine(texts)
    secrets = [env[v] for v in SECRET_ENV if env.get(v)]
    posted = publish(target, pr, text, key, secrets=secrets, details=details, transport=transport)
    return Commented(target, pr, tuple(files), posted)


def _read_text(file: Path, read_stdin: Callable[[], bytes]) -> str:
    try:
        raw = read_stdin() if str(file) == "-" else file.read_bytes()
        return raw.decode("utf-8")
    except OSError as exc:
        raise InfraApplyError(f"cannot read {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InfraApplyError(f"{file} is not UTF-8 text") from None


def output(done: Commented, fmt: str) -> Output:
    text = format_json(done) if fmt == "json" else format_text(done)
    notes: tuple[str, ...] = ()
    if done.posted.cut:
        files = done.files
        what = str(files[0]) if len(files) == 1 else f"the plan combined from {len(files)} files"
        notes = (
            f"infra-apply: warning: {what} is over the comment limit; the comment shows its "
            "start and a note saying where the rest is",
        )
    return Output(text, notes)


def format_text(done: Commented) -> str:
    posted = done.posted
    link = f": {posted.url}" if posted.url else ""
    return f"{posted.action} comment {posted.comment_id} on {done.target.repo}#{done.pr}{link}\n"


def format_json(done: Commented) -> str:
    posted = done.posted
    doc = {
        "action": posted.action,
        "comment_id": posted.comment_id,
        "url": posted.url,
        "forge": done.target.forge,
        "repo": done.target.repo,
        "pr": done.pr,
        "cut": posted.cut,
        "chars": posted.chars,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
