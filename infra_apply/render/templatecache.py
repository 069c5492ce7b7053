"""Compiled templates kept under the state dir (``<state>/cache/templates/``), so a process
that renders does not compile every template again.

A compiled template is code this process runs, so a file is used only when it is what this
process would have written: a regular file owned by this user and readable by no one else
(the folder is 0700), made for this Python and Jinja (Jinja's own magic and its version), by an
environment that compiles alike (its syntax and whitespace settings are compiled into the
code), for this exact template source (Jinja's checksum of it) and whole (a SHA-256 of the
code it holds). Anything
else, a stale, truncated, foreign or damaged file, is ignored and the template compiled again;
a state dir that cannot be written only costs the next run the compile.
"""

from __future__ import annotations

import hashlib
import marshal
from pathlib import Path

import jinja2
from jinja2.bccache import Bucket, bc_magic

from infra_apply.errors import InfraApplyError
from infra_apply.runtime.fs import read_private

MAGIC = b"infra-apply compiled template 2\n" + bc_magic
LIMIT = 4 * 1024 * 1024  # bytes; a compiled template is a few KiB
# What the compiler reads from the environment: code compiled under other values renders
# other text (Jinja's own key is only the template's name and source).
COMPILE_SETTINGS = (
    "block_start_string",
    "block_end_string",
    "variable_start_string",
    "variable_end_string",
    "comment_start_string",
    "comment_end_string",
    "line_statement_prefix",
    "line_comment_prefix",
    "trim_blocks",
    "lstrip_blocks",
    "newline_sequence",
    "keep_trailing_newline",
    "optimized",
    "autoescape",
    "finalize",
    "is_async",
)


class PrivateBytecodeCache(jinja2.BytecodeCache):
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, bucket: Bucket) -> Path:
        return self.folder / f"{bucket.key}.bin"

    def load_bytecode(self, bucket: Bucket) -> None:
        data = _read_own(self._path(bucket))
        if data is None:
            return
        head = _head(bucket)
        digest, code = data[len(head) : len(head) + 64], data[len(head) + 64 :]
        if not data.startswith(head) or hashlib.sha256(code).hexdigest().encode() != digest:
            return
        try:
            bucket.code = marshal.loads(code)
        except (EOFError, ValueError, TypeError):
            bucket.reset()

    def dump_bytecode(self, bucket: Bucket) -> None:
        from infra_apply.runtime.fs import private_dirs, write_private

        if bucket.code is None:
            return
        code = marshal.dumps(bucket.code)
        data = _head(bucket) + hashlib.sha256(code).hexdigest().encode() + code
        try:
            private_dirs(self.folder, self.folder.parent.parent)
            write_private(self._path(bucket), data)
        except (OSError, ValueError, InfraApplyError):
            pass  # a read-only state dir: the next run compiles again


def _head(bucket: Bucket) -> bytes:
    """What a file must start with to hold this bucket's code: the format, Jinja's version, the
    environment's compile settings and the template source's checksum."""
    env = bucket.environment
    settings = [(name, _stable(getattr(env, name, None))) for name in COMPILE_SETTINGS]
    settings.append(("extensions", sorted(env.extensions)))
    salt = hashlib.sha256(repr((jinja2.__version__, settings)).encode()).hexdigest()
    return MAGIC + f"{salt}\0{bucket.checksum}\0".encode()


def _stable(value: object) -> object:
    """A setting as the same text in every process: a function by its qualified name (its
    repr holds an address)."""
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}"
    return value


def _read_own(path: Path) -> bytes | None:
    """The file's bytes when it is a regular file of this user's that no one else may read or
    write; else None (missing, a symlink, someone else's, too open, too large)."""
    try:
        return read_private(path, LIMIT)
    except OSError:
        return None
