"""Strict JSON for files people edit by hand: read losslessly, refused with a location, written back
as read.

A key repeated within one object (a rewrite would drop one of them), ``NaN``/``Infinity``, numbers
beyond a 64-bit float (jq and Go reject them) and nesting deeper than :data:`MAX_DEPTH` are each a
located error. Numbers and strings keep their source spelling (:class:`Number`, :class:`SourceStr`),
so :func:`dump` leaves every value a caller does not change byte for byte as it was.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

from infra_apply.errors import InfraApplyError
from infra_apply.runtime.fs import read_bounded


class JsonError(InfraApplyError):
    """A hand-edited JSON file is not strict JSON."""

    default_rule = "json"


ErrorType = type[InfraApplyError]

MAX_DEPTH = 100  # hand-edited files are a few levels deep; the check keeps the walk below off Python's limit


@dataclass(frozen=True)
class Number:
    """A JSON number kept as its source text, so it is written back exactly as read: ``1E5``
    stays ``1E5`` (not ``100000.0``) and a 20-digit id keeps every digit."""

    text: str

    def __str__(self) -> str:
        return self.text

    def __deepcopy__(self, memo: dict[int, Any]) -> Number:
        return self  # immutable, like the int or float it stands for


class SourceStr(str):
    """A JSON string (value or key) that remembers how the file spelled it (``"\\u003c"``
    stays that, not ``"<"``); it is a plain ``str`` to every other piece of code."""

    raw: str

    def __new__(cls, value: str, raw: str) -> SourceStr:
        obj = super().__new__(cls, value)
        obj.raw = raw
        return obj

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]
        return str(self), self.raw  # pickle rebuilds it with its spelling

    def __deepcopy__(self, memo: dict[int, Any]) -> SourceStr:
        return self  # immutable, like str


def load(
    path: Path, limit: int, name: str, error: ErrorType = JsonError, missing: str = ""
) -> tuple[Any, str]:
    """Parse the file at ``path`` (a regular file of at most ``limit`` bytes): the document and
    the exact text it came from. ``missing``: the message for a file that is not there (default:
    "<name> not found")."""
    where = str(path)
    try:
        text = read_bounded(Path(path), limit).decode("utf-8")
    except FileNotFoundError:
        raise error(missing or f"{name} not found", path=where) from None
    except UnicodeDecodeError as e:
        raise error(f"{name} is not UTF-8 text: {e.reason}", path=where) from None
    except OSError as e:
        raise error(f"cannot read {name}: {e.strerror}", path=where) from None
    return parse(text, where, name, error), text


def parse(text: str, where: str, name: str = "the JSON file", error: ErrorType = JsonError) -> Any:
    """Strict, located, spelling-keeping JSON (see :func:`load`); ``name`` is the file as the
    messages call it, ``error`` the class they are raised as."""
    try:
        # The common case at C speed: numbers become Number(text) through the hooks.
        doc = json.loads(
            text,
            parse_int=_number,
            parse_float=_number,
            parse_constant=_refuse,
            object_pairs_hook=_unique_pairs,
        )
    except json.JSONDecodeError as e:
        raise error(f"{name} is not valid JSON: {e.msg}", path=where, line=e.lineno, col=e.colno) from None
    except (_Refused, RecursionError):
        doc = _REFUSED  # the walk below finds the problem and where it is
    deep = _too_deep(text) if doc is _REFUSED or _depth(doc) > MAX_DEPTH else None
    if deep is not None:
        line, col = _line_col(text, deep)
        raise error(f"{name} is nested deeper than {MAX_DEPTH} levels", path=where, line=line, col=col)
    # Without a backslash every string is spelled as dump spells it: no walk needed.
    if doc is not _REFUSED and "\\" not in text:
        return doc
    try:
        walked = _Reader(text, where, name, error).document()
    except RecursionError:  # only when the caller's own stack is already nearly exhausted
        raise error(f"{name} is nested too deeply to read", path=where) from None
    if doc is _REFUSED:  # the walk refuses all the parse hooks refuse; this is a safety net
        raise error(f"{name} is not strict JSON", path=where)
    return walked


class _Refused(Exception):
    """Raised by the parse hooks; the walk then reports what and where."""


_REFUSED = object()


def _number(raw: str) -> Number:
    if math.isinf(float(raw)):
        raise _Refused
    return Number(raw)


def _refuse(_: str) -> Any:
    raise _Refused


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Refused
    return obj


def _depth(doc: Any) -> int:
    """How deeply containers nest in a parsed document (iterative: no recursion limit)."""
    deepest = 0
    stack = [(doc, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth + 1)
            stack.extend((item, depth + 1) for item in value if isinstance(item, dict | list))
    return deepest


_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[{]|[\]}]')


def _too_deep(text: str) -> int | None:
    """Offset of the first bracket opening level MAX_DEPTH + 1 (strings skipped), or None."""
    depth = 0
    for m in _STRUCTURE.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return m.start()
        elif c in "]}":
            depth -= 1
    return None


_CONSTANT = object()  # what the scalar decoder returns for NaN, Infinity, -Infinity


class _Reader:
    """Builds the document from JSON already known to be well formed and at most MAX_DEPTH
    deep (so the recursion is bounded), keeping every scalar's spelling and refusing, at its
    position, what strict readers cannot read."""

    def __init__(self, text: str, where: str, name: str, error: ErrorType) -> None:
        self.text = text
        self.where = where
        self.name = name
        self.error = error
        self.scalar = json.JSONDecoder(
            parse_int=str, parse_float=str, parse_constant=lambda _: _CONSTANT
        ).raw_decode

    def document(self) -> Any:
        value, _ = self.value(_skip_ws(self.text, 0), ())
        return value

    def fail(self, message: str, pos: int) -> InfraApplyError:
        line, col = _line_col(self.text, pos)
        return self.error(f"{self.name} {message}", path=self.where, line=line, col=col)

    def value(self, i: int, at: tuple[str | int, ...]) -> tuple[Any, int]:
        first = self.text[i]
        if first == "{":
            return self.object(i, at)
        if first == "[":
            return self.array(i, at)
        value, end = self.scalar(self.text, i)
        raw = self.text[i:end]
        if value is _CONSTANT:
            raise self.fail(
                f"has {raw}, which is not JSON (strict readers such as jq and Go "
                "reject it); write a number or a string",
                i,
            )
        if first == '"':
            return SourceStr(value, raw), end
        if not isinstance(value, str):
            return value, end  # true, false, null
        if math.isinf(float(raw)):
            shown = raw if len(raw) <= 24 else f"{raw[:12]}...({len(raw)} characters)"
            raise self.fail(
                f"has the number {shown}, beyond what a 64-bit float holds "
                "(strict readers such as Go reject it)",
                i,
            )
        return Number(raw), end

    def object(self, i: int, at: tuple[str | int, ...]) -> tuple[dict[str, Any], int]:
        text = self.text
        obj: dict[str, Any] = {}
        seen: dict[str, int] = {}
        i = _skip_ws(text, i + 1)
        while text[i] != "}":
            key, end = self.value(i, at)
            if key in seen:
                raise self.fail(
                    f"has the key {str(key)!r} twice in the object at "
                    f"{_where(at) or 'top level'} (first on line {_line_col(text, seen[key])[0]}); "
                    "remove one of them",
                    i,
                )
            seen[key] = i
            i = _skip_ws(text, _skip_ws(text, end) + 1)  # past the ':'
            obj[key], end = self.value(i, (*at, str(key)))
            i = _skip_ws(text, end)
            if text[i] == ",":
                i = _skip_ws(text, i + 1)
        return obj, i + 1

    def array(self, i: int, at: tuple[str | int, ...]) -> tuple[list[Any], int]:
        text = self.text
        items: list[Any] = []
        i = _skip_ws(text, i + 1)
        while text[i] != "]":
            item, end = self.value(i, (*at, len(items)))
            items.append(item)
            i = _skip_ws(text, end)
            if text[i] == ",":
                i = _skip_ws(text, i + 1)
        return items, i + 1


def _where(at: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in at).lstrip(".")


_WS = re.compile(r"[ \t\n\r]*")


def _skip_ws(text: str, i: int) -> int:
    m = _WS.match(text, i)
    return m.end() if m else i


def _line_col(text: str, pos: int) -> tuple[int, int]:
    """1-based line and column of ``pos``, counted as json.JSONDecodeError counts them."""
    return text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)


def dump(doc: Mapping[str, Any]) -> str:
    """The style of net-tools' files (``json.dumps(indent=2, ensure_ascii=False)`` and a final newline),
    with every string and number read from the file spelled as it was there."""
    out: list[str] = []
    _dump(doc, "", out)
    out.append("\n")
    return "".join(out)


def _dump(value: Any, indent: str, out: list[str]) -> None:
    if isinstance(value, Mapping) and value:
        inner = indent + "  "
        for n, (key, item) in enumerate(value.items()):
            name = key if isinstance(key, str) else str(key)
            out.append(("," if n else "{") + "\n" + inner + _scalar_text(name) + ": ")
            _dump(item, inner, out)
        out.append("\n" + indent + "}")
    elif isinstance(value, list | tuple) and value:
        inner = indent + "  "
        for n, item in enumerate(value):
            out.append(("," if n else "[") + "\n" + inner)
            _dump(item, inner, out)
        out.append("\n" + indent + "]")
    else:
        out.append(_scalar_text(value))


def _scalar_text(value: Any) -> str:
    if isinstance(value, SourceStr):
        return value.raw
    if isinstance(value, str):
        return encode_basestring(value)  # json.dumps's spelling with ensure_ascii=False
    if isinstance(value, Number):
        return value.text
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list | tuple):
        return "[]"
    # allow_nan=False: never write NaN or Infinity into a file strict readers must parse.
    return json.dumps(value, allow_nan=False)
