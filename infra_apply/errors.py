"""One exception family and the located problem record every stage reports."""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any, Literal, NamedTuple

Level = Literal["error", "warning"]


class ExitCode(IntEnum):
    """Every exit status infra-apply ends with (docs/commands.md, the command table)."""

    OK = 0
    ERROR = 1  # bad input, a failed Terraform, a refused precondition
    CHANGES = 2  # plan: something would change
    REFUSED = 3  # apply: the guard refused the plan
    BUG = 70  # EX_SOFTWARE: a defect in infra-apply, not in the input
    HANGUP = 129  # SIGHUP (128 + 1), once Terraform has stopped cleanly
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
    TERMINATED = 143  # SIGTERM (128 + 15)


def printable(text: str) -> str:
    """``text`` with unprintable characters (newlines, escapes, ...) written as Python escapes.

    A path or name may hold any character; a message about it must stay on its one line.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class Problem(NamedTuple):
    """One finding, printed as ``path:line:col: level RULE: message``.

    ``path`` is relative to the root (posix separators); ``line``/``col`` are 1-based,
    0 when unknown.
    """

    path: str
    line: int
    col: int
    level: Level
    rule: str
    message: str

    def format(self) -> str:
        return printable(f"{self.path}:{self.line}:{self.col}: {self.level} {self.rule}: {self.message}")

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.path, self.line, self.col, self.rule, self.message)


class InfraApplyError(Exception):
    """Anything a user can cause and fix: bad input, missing tools, refused operations.

    The CLI catches this family once and prints ``path:line:col: message`` (or just the
    message when there is no location) with ``exit_code``.
    """

    exit_code: ExitCode = ExitCode.ERROR
    default_rule: str | None = None

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int = 0,
        col: int = 0,
        rule: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.col = col
        self.rule = rule or self.default_rule

    def format(self) -> str:
        """``path:line:col: error RULE: message`` when the problem has a place, else
        ``infra-apply: error: message``."""
        if self.path is None:
            return f"infra-apply: error: {self.message}"
        path = printable(self.path)
        where = f"{path}:{self.line}:{self.col}" if self.line else path
        return f"{where}: error {self.rule or 'infra-apply'}: {self.message}"


def json_document(
    text: str, message: str, error: type[InfraApplyError] = InfraApplyError, **place: Any
) -> Any:
    """``json.loads(text)``; text that is not JSON raises ``error`` at the fault's line and
    column, ``message`` with ``{reason}`` replaced by the decoder's reason. ``place``: the
    error's other arguments (``path``, ``rule``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        why = message.replace("{reason}", exc.msg)
        raise error(why, line=exc.lineno, col=exc.colno, **place) from None


class ValidationFailed(InfraApplyError):
    """Raised by stages that need a valid tree; carries every problem found."""

    def __init__(self, problems: list[Problem], hint: str | None = None) -> None:
        errors = [p for p in problems if p.level == "error"]
        super().__init__(f"{len(errors)} error(s) in the manifest tree")
        self.problems = problems
        self.hint = hint  # a line after the summary (discover.root_hint: which --root fits)


class GuardRefused(InfraApplyError):
    """The plan deletes or replaces something the operator did not allow."""

    exit_code = ExitCode.REFUSED


class TerraformError(InfraApplyError):
    """Terraform itself failed; its own message has already been shown or is in ``message``."""


class MeshError(InfraApplyError):
    """mesh-hosts.json is missing, invalid, or a host conflicts."""

    default_rule = "mesh"


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP. A KeyboardInterrupt on purpose: it takes exactly Ctrl-C's path (every
    running Terraform gets its Ctrl-C and is waited for, so it stops cleanly and writes state),
    then infra-apply exits 128 + the signal number (143 for SIGTERM, 129 for SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> ExitCode:
        # Only SIGTERM and SIGHUP are turned into Stopped (cli.stop_on_signals).
        return ExitCode(128 + self.signum)
