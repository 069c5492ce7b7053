"""Colour on a terminal: the one decision (per output stream) and the styles the text summary
and the guard's refusal use.

Colour is only ever added to text already made safe by ``untrusted.visible``: a name's own
escape sequences are shown as ``\\x1b``, never passed through, so styling cannot let one in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple

import click

Style = Literal["create", "update", "replace", "delete", "import", "warning", "refusal"]


class _Look(NamedTuple):
    fg: str
    bold: bool = False


_STYLES: Mapping[str, _Look] = {
    "create": _Look("green"),
    "update": _Look("yellow"),
    "replace": _Look("bright_magenta", bold=True),
    "delete": _Look("red"),
    "import": _Look("cyan"),
    "warning": _Look("yellow"),
    "refusal": _Look("red", bold=True),
}

# FORCE_COLOR=0 / false mean "do not force" in the tools that read it (Node, chalk, pytest).
_NOT_FORCED = frozenset({"0", "false"})


def wanted(flag: bool | None, env: Mapping[str, str], isatty: bool) -> bool:
    """Whether to colour one stream.

    ``--color`` / ``--no-color`` (``flag``) win, as a command-line argument overrides the
    environment (https://no-color.org); then ``NO_COLOR`` (any non-empty value) turns colour
    off, before ``FORCE_COLOR`` (any non-empty value but 0/false) turns it on; else colour
    only when the stream is a terminal.
    """
    if flag is not None:
        return flag
    if env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR", "").strip().lower() not in {"", *_NOT_FORCED}:
        return True
    return isatty


def paint(text: str, style: Style | str, color: bool) -> str:
    """``text`` in ``style`` (a ``Style``, or a plan action: create, update, replace, delete,
    import) when ``color``, else as is. ``text`` must already be visible()."""
    look = _STYLES.get(style)
    if not color or look is None:
        return text
    return click.style(text, fg=look.fg, bold=look.bold or None)


def paint_lines(text: str, style: Style, color: bool) -> str:
    """Each line styled on its own, so a line a pager or log viewer shows alone keeps its colour
    and none bleeds into the next one."""
    return "\n".join(paint(line, style, color) for line in text.split("\n"))
