"""The compiled methods of dataclasses, kept under the state dir (``<state>/cache/compiled-code``)
so that a command does not compile them again each time it starts.

Python 3.11 writes each dataclass's ``__init__``, ``__repr__``, ``__eq__``, ``__hash__``,
``__setattr__`` and ``__delattr__`` as source text and compiles every one of them when the class
is defined: about half a millisecond a class, and a plan defines over a hundred classes before it
does anything. The texts are the same on every run, so their compiled code is kept, keyed by the
whole text: the ``exec`` that defines each method still runs, only its compile is skipped.
``install`` routes the ``exec`` calls of the ``dataclasses`` module through this cache (the
module's own global shadows the builtin; nothing else in the process is touched); the exit of the
process stores what it compiled new.

The file is code this process runs, so it is used only when it is what this process would have
written, as the compiled templates are (render/templatecache.py): a regular file owned by this
user and readable by no one else, made by this exact Python with the same optimisation level,
and whole (a SHA-256 of what it holds). Anything else is ignored and the methods compiled as
usual. It is written only into a cache folder an earlier run made, never creating the state dir:
this runs before any command has checked where that may be, so it is written at exit, only
into a state dir the command checked (``state.was_checked``). ``INFRA_APPLY_NO_CACHE`` turns
it off.
"""

from __future__ import annotations

import atexit
import builtins
import hashlib
import marshal
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import CodeType
from typing import Any

FORMAT = b"infra-apply compiled code 1"
LIMIT = 8 * 1024 * 1024  # bytes; a few hundred methods take about 150 KB
KEPT = 2048  # texts; beyond it (versions come and go) only those of the last run are kept
NAME = "compiled-code"

_codes: dict[str, CodeType] = {}
_added: list[str] = []
_used: set[str] = set()


def install(env: Mapping[str, str]) -> None:
    """Compile the methods of every dataclass defined from now on through the cache kept in
    ``env``'s state dir (once per process; not at all with INFRA_APPLY_NO_CACHE)."""
    import dataclasses

    from infra_apply.runtime.state import side_cache

    path = side_cache(env, NAME)
    if path is None or not hasattr(os, "geteuid") or "exec" in vars(dataclasses):
        return
    _codes.update(load(path))
    dataclasses.exec = cached_exec  # type: ignore[attr-defined]
    atexit.register(store, path)


def cached_exec(source: Any, globals: Any = None, locals: Any = None, /) -> None:
    """``exec`` with the compile of a source text done once: the same text compiles to the same
    code (with no inherited ``__future__`` flags, as the ``dataclasses`` module has none)."""
    if not isinstance(source, str):
        builtins.exec(source, globals, locals)
        return
    code = _codes.get(source)
    if code is None:
        code = compile(source, "<string>", "exec", dont_inherit=True)
        _codes[source] = code
        _added.append(source)
    _used.add(source)
    builtins.exec(code, globals, locals)


def load(path: Path) -> dict[str, CodeType]:
    """The texts and their code kept in ``path``; empty when it is missing, not private, made
    by another Python, or damaged in any way."""
    from infra_apply.runtime.state import read_side_cache

    data = read_side_cache(path, LIMIT)
    if data is None:
        return {}
    head = _head()
    digest, payload = data[len(head) : len(head) + 64], data[len(head) + 64 :]
    if not data.startswith(head) or hashlib.sha256(payload).hexdigest().encode() != digest:
        return {}
    try:
        kept = marshal.loads(payload)
    except (EOFError, ValueError, TypeError):
        return {}
    if not isinstance(kept, dict):
        return {}
    return {text: code for text, code in kept.items() if isinstance(text, str) and isinstance(code, CodeType)}


def store(path: Path) -> None:
    """Keep every text this process compiled or loaded (only those it used, past ``KEPT``),
    when it compiled one new; only into the cache folder of a state dir the command checked
    and made (a read-only one only costs the next run its compiles)."""
    from infra_apply.runtime.state import keep_side_cache

    if not _added:
        return
    kept = _codes if len(_codes) <= KEPT else {t: c for t, c in _codes.items() if t in _used}
    payload = marshal.dumps(dict(kept))
    keep_side_cache(path, _head() + hashlib.sha256(payload).hexdigest().encode() + payload)
    _added.clear()


def _head() -> bytes:
    return b"\0".join((FORMAT, sys.version.encode(), str(sys.flags.optimize).encode())) + b"\n"
