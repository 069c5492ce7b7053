"""Untrusted text (names from manifests, state and plans) made safe to print.

Shared by the guard's refusal lines and every report format: a name must never break a
terminal line, inject a heading, or turn a suggested command into another command.
"""

from __future__ import annotations

import json
import shlex
import unicodedata
from collections.abc import Iterable


def visible(text: str) -> str:
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


def short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shell(value: str) -> str:
    """One shell word an operator can paste: visible first, then quoted."""
    return shlex.quote(visible(value))


MASK = "***"


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each secret (of 8 characters or more: shorter ones are too common to hide
    without garbling text) replaced by ``***``; longest first, so one holding another goes whole."""
    for secret in sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def from_server(text: str, secrets: Iterable[str] = (), limit: int = 300) -> str:
    """A text a server sent (a message, a URL), fit to print on one line: the secrets we sent
    masked, then control and escape characters made visible, then bounded."""
    return short(visible(mask(text, secrets)), limit)
