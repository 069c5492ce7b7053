"""The only place HCL text is produced or escaped.

Every ``.tf`` file infra-apply writes (the generated modules, a working copy's backend block,
the import and ``removed`` files) and the sandbox's Terraform CLI config come from the Jinja2
templates in ``templates/`` through ``render``. Templates insert values through two filters:

- ``| hcl``: a quoted string literal that Terraform evaluates to exactly the value (no
  interpolation or template directive can come from a manifest);
- ``| ident``: an identifier (a block label or a resource name), refused unless it is one;
- ``| address``: a resource address (``type.name``), each part an identifier;
- ``| module_file``: ``file("${path.module}/<path>")``, the text of a file shipped beside the
  module, read as it is (``file`` never interpolates what it reads, unlike ``templatefile``).
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import infra_apply
from infra_apply.errors import InfraApplyError

if TYPE_CHECKING:
    import jinja2

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}

# \Z and fullmatch: with `$`, "abc\n" passed as its own identifier and broke the resource label.
_IDENT = re.compile(r"\A[A-Za-z_][A-Za-z0-9_-]*\Z")
_PLAIN = re.compile(r"\A[A-Za-z][A-Za-z0-9_-]*\Z")
_FILE_PART = re.compile(r"\A[A-Za-z0-9_-][A-Za-z0-9._-]*\Z")
# Text ``string`` writes as it is: none of the characters ``_escape_each`` changes (``$`` and
# ``%`` are left to it, which doubles them only before ``{``).
_VERBATIM = re.compile(r'[^"\\$%\x00-\x1f\x7f\u2028\u2029\ufeff\ud800-\udfff]*')


def string(value: object) -> str:
    """A quoted HCL string literal: Terraform evaluates it to exactly ``str(value)``.

    ``${`` and ``%{`` are doubled so no interpolation or template directive can come from a
    manifest; other control characters use ``\\uXXXX``.
    """
    text = str(value)
    if _VERBATIM.fullmatch(text):
        return '"' + text + '"'  # the common case: nothing to escape, no per-character loop
    return '"' + _escape_each(text) + '"'


def _escape_each(text: str) -> str:
    out = []
    for i, ch in enumerate(text):
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch in "$%" and text[i + 1 : i + 2] == "{":
            out.append(ch + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF or ch in "\u2028\u2029\ufeff":
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return "".join(out)


def is_ident(value: str) -> bool:
    return bool(_IDENT.fullmatch(value))


def ident(value: object) -> str:
    """``value`` unchanged when it is an HCL identifier; anything else is refused, never quoted
    or repaired (a label that changes silently would change a Terraform address)."""
    text = str(value)
    if not is_ident(text):
        raise InfraApplyError(f"{text!r} is not an HCL identifier", rule="hcl")
    return text


def address(value: object) -> str:
    """A resource address ``type.name`` (optionally ``module.m.`` prefixed), each part checked."""
    text = str(value)
    parts = text.split(".")
    if len(parts) < 2 or not all(is_ident(p) for p in parts):
        raise InfraApplyError(f"{text!r} is not a Terraform resource address", rule="hcl")
    return text


def module_file(value: object) -> str:
    """``file("${path.module}/<value>")``: ``value`` is a relative path inside the module, each
    part a plain file name; it is escaped like any literal, so it cannot add an expression."""
    text = str(value)
    parts = text.split("/")
    if not all(_FILE_PART.fullmatch(p) for p in parts):
        raise InfraApplyError(f"{text!r} is not a file path inside the module", rule="hcl")
    return 'file("${path.module}/' + string(text)[1:] + ")"


def slug(name: str) -> str:
    """An HCL identifier for ``name``; distinct names always give distinct slugs.

    A name that already is an identifier (``uvlava-pg``, ``auth_app``) is its own slug unless it
    holds ``__`` (reserved as a separator); anything else is sanitised and suffixed with a hash of
    the original, so the mapping never depends on other names.
    """
    if _PLAIN.fullmatch(name) and "__" not in name:
        return name
    base = re.sub(r"_+", "_", re.sub(r"[^a-z0-9]", "_", name.lower())).strip("_") or "x"
    if not base[0].isalpha():
        base = "x_" + base
    return f"{base}_{hashlib.sha1(name.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


_ASSIGN = re.compile(r"^(\s*)([A-Za-z_][\w-]*|\"[^\"]*\"|\([^)]*\))\s*=\s")


def align_equals(text: str) -> str:
    """Align ``=`` of consecutive one-line attributes the way ``terraform fmt`` does.

    Not a pass over rendered text: the templates write their ``=`` at the column ``terraform
    fmt`` wants while they render; the tests hold every template to this reference."""
    lines = text.split("\n")
    out: list[str] = []
    group: list[tuple[str, str, str]] = []

    def flush() -> None:
        width = max((len(k) for _, k, _ in group), default=0)
        out.extend(f"{ind}{k.ljust(width)} = {rest}" for ind, k, rest in group)
        group.clear()

    for line in lines:
        m = _ASSIGN.match(line)
        single = m is not None and not line.rstrip().endswith(("{", "(", "["))
        if m and single and (not group or group[0][0] == m.group(1)):
            group.append((m.group(1), m.group(2), line[m.end() :]))
            continue
        flush()
        if m and single:
            group.append((m.group(1), m.group(2), line[m.end() :]))
        else:
            out.append(line)
    flush()
    return "\n".join(out)


def templates_dir() -> Path:
    package = Path(infra_apply.__file__).parent
    packaged = package / "templates"
    if packaged.is_dir():
        return packaged
    return package.parent / "templates"  # editable install / source checkout


# Directories searched after templates/ (a kind added at test time brings its template here).
_SEARCHED: list[Path] = []


def template_dirs() -> tuple[Path, ...]:
    """Where templates are looked up, in order: the first holding a name wins."""
    return (templates_dir(), *_SEARCHED)


def search_templates(directory: Path) -> None:
    """Look up templates in ``directory`` too, after the shipped ones."""
    _SEARCHED.append(directory)
    environment.cache_clear()
    _module_templates.cache_clear()


def forget_templates(directory: Path) -> None:
    """Stop looking up templates in ``directory`` (``search_templates`` undone)."""
    _SEARCHED.remove(directory)
    environment.cache_clear()
    _module_templates.cache_clear()


# A template writing this header is one file of every producer's module (render's own: the
# header is how render --check knows a file is its); one whose output is empty writes no file.
MODULE_HEADER = '"_header.j2"'


def module_templates() -> tuple[str, ...]:
    """Every ``<file>.tf.j2`` that is one file of a producer's module, by name."""
    return _module_templates(template_dirs())


@lru_cache(maxsize=1)
def _module_templates(directories: tuple[Path, ...]) -> tuple[str, ...]:
    found: dict[str, Path] = {}
    for directory in directories:
        for path in sorted(directory.glob("*.tf.j2")):
            found.setdefault(path.name, path)
    return tuple(
        name
        for name, path in sorted(found.items())
        if not name.startswith("_") and MODULE_HEADER in path.read_text(encoding="utf-8")
    )


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in template_dirs()]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        # The templates ship with the package: no stat() of every included file on each use
        # (a droplet's body is included once per droplet).
        auto_reload=False,
        bytecode_cache=_bytecode_cache(),
    )
    env.filters["hcl"] = string
    env.filters["ident"] = ident
    env.filters["address"] = address
    env.filters["module_file"] = module_file
    return env


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Compiled templates under the state dir (templatecache.py); none with
    INFRA_APPLY_NO_CACHE, nor where files have no owner to check."""
    if os.environ.get("INFRA_APPLY_NO_CACHE") or not hasattr(os, "geteuid"):
        return None
    from infra_apply.render.templatecache import PrivateBytecodeCache
    from infra_apply.runtime.state import state_dir

    return PrivateBytecodeCache(state_dir() / "cache" / "templates")


def render(template: str, **context: Any) -> str:
    """Render ``templates/<template>``; its ``=`` come out aligned as ``terraform fmt`` would
    (each template aligns its own attribute groups, see ``align_equals``)."""
    return str(environment().get_template(template).render(**context))
