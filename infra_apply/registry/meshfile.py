"""mesh-hosts.json on disk: read strictly, registered under its lock, replaced atomically.

The registry logic is :mod:`infra_apply.registry.mesh` (pure); this module adds the file: the lock
(:mod:`infra_apply.runtime.locks`), the reload under it and the atomic replace.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from infra_apply.errors import InfraApplyError, MeshError
from infra_apply.registry.mesh import Allocator, LiveDroplet, WriteResult, check_document, plan_registration
from infra_apply.runtime import locks, strictjson
from infra_apply.runtime.fs import atomic_write, read_bounded, remove_orphans

NAME = "mesh-hosts.json"
MISSING = "mesh-hosts.json not found (set --mesh-hosts)"
MAX_BYTES = 16 * 1024 * 1024


def load_document(path: Path) -> tuple[dict[str, Any], str]:
    """Parse mesh-hosts.json; return the document and the exact text it came from.

    Strict JSON (:mod:`infra_apply.runtime.strictjson`): every problem a located error, every value it
    does not change written back byte for byte as it was.
    """
    doc, text = strictjson.load(path, MAX_BYTES, NAME, MeshError, missing=MISSING)
    check_document(doc, path=str(path))
    return doc, text


def write_registration(
    path: Path,
    producer: str,
    live: Sequence[LiveDroplet],
    *,
    removed: Sequence[str] = (),
    renamed: Mapping[str, str] = {},  # read-only default, never mutated
    dry_run: bool = False,
    lock_timeout: float = 60.0,
    allocate: Allocator | None = None,
) -> WriteResult:
    """Register ``live`` in the file at ``path``: locked, reloaded under the lock, atomic.

    Nothing is written when the document would not change (same values, same key order,
    whatever the file's indentation) or on ``dry_run`` (which takes no lock: the atomic
    replace means a reader always sees a whole file). A write uses :func:`strictjson.dump`'s
    style, so a file in another style is reformatted only when something changed.
    ``allocate`` is called with the file's document (under the lock unless on a dry run) and
    says which mesh IP each droplet gets (with remote state: reserved in the shared record before
    the file is written).
    """
    # Resolve a symlinked registry so the replace lands on the target, not on the link.
    target = Path(os.path.realpath(path))
    if dry_run:
        return _compute(target, producer, live, removed, renamed, dry_run=True, allocate=allocate)
    check_writable(target)
    with _locked(target, lock_timeout):
        _remove_orphans(target)
        return _compute(target, producer, live, removed, renamed, dry_run=False, allocate=allocate)


def check_writable(path: Path) -> None:
    """Refuse a registry infra-apply may not replace, before anything else runs.

    A file with no write bit (0444) was made read-only by its owner on purpose: it is respected
    even where the replace would succeed (a rename needs only the folder, and root passes any
    permission check). The folder must take the temp file the atomic replace writes.
    """
    target = Path(os.path.realpath(path))
    where = str(target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        raise MeshError(MISSING, path=where) from None
    except OSError as e:
        raise MeshError(f"cannot read mesh-hosts.json: {e.strerror}", path=where) from None
    if not mode & 0o222 or not os.access(target, os.W_OK):
        raise MeshError(
            f"mesh-hosts.json is read-only (mode {mode:04o}); it is never replaced: make it "
            "writable to register hosts (or use register --dry-run to see the change)",
            path=where,
        )
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise MeshError(
            "cannot write mesh-hosts.json: its folder is not writable (the atomic replace "
            "writes a temp file beside it)",
            path=where,
        )


def seed_copy(source: Path, copy: Path, lock_timeout: float = 60.0) -> None:
    """Make ``copy`` (a registry of infra-apply's own, e.g. the sandbox's) a copy of ``source``
    unless it already holds one. Under the registry lock and atomic, like every registry write,
    so concurrent first runs never read a half-written copy and a kill never leaves one; an
    empty copy (what older versions left when killed while seeding) is seeded again."""
    copy.parent.mkdir(parents=True, exist_ok=True)
    with _locked(copy, lock_timeout):
        _remove_orphans(copy)
        try:
            if copy.stat().st_size > 0:
                return
        except FileNotFoundError:
            pass
        except OSError as e:
            raise MeshError(f"cannot read mesh-hosts.json: {e.strerror}", path=str(copy)) from None
        try:
            data = read_bounded(source, MAX_BYTES)
        except FileNotFoundError:
            raise MeshError(MISSING, path=str(source)) from None
        except OSError as e:
            raise MeshError(f"cannot read mesh-hosts.json: {e.strerror}", path=str(source)) from None
        _replace_atomically(copy, data, mode=0o600)


def _compute(
    target: Path,
    producer: str,
    live: Sequence[LiveDroplet],
    removed: Sequence[str],
    renamed: Mapping[str, str],
    *,
    dry_run: bool,
    allocate: Allocator | None = None,
) -> WriteResult:
    doc, old_text = load_document(target)
    assigned = allocate(doc) if allocate is not None else {}
    result = plan_registration(doc, producer, live, removed=removed, renamed=renamed, assigned=assigned)
    new_text = strictjson.dump(result.document)
    # Compare documents, not texts: a registry net-tools wrote in another style (4-space
    # indent, one line) must not be reformatted by a registration that changes nothing.
    # Both sides go through strictjson.dump, so key order counts as a change too. A reported
    # change always changes the document: the second rendering is needed only without one.
    if not result.changes and (new_text == old_text or new_text == strictjson.dump(doc)):
        return WriteResult(target, result, changed=False, wrote=False, diff="")
    diff = "".join(
        difflib.unified_diff(
            old_text.splitlines(keepends=True),
            new_text.splitlines(keepends=True),
            fromfile=str(target),
            tofile=f"{target} (registered)",
        )
    )
    if not dry_run:
        _replace_atomically(target, new_text)
    return WriteResult(target, result, changed=True, wrote=not dry_run, diff=diff)


def _locked(target: Path, timeout: float) -> contextlib.AbstractContextManager[None]:
    return locks.held(Path(f"{target}.lock"), NAME, timeout=timeout, busy=_busy(target))


def _busy(target: Path) -> Callable[[str], InfraApplyError]:
    def error(message: str) -> InfraApplyError:
        return MeshError(message, path=str(target))

    return error


def _replace_atomically(target: Path, text: str | bytes, mode: int | None = None) -> None:
    """``fs.atomic_write``: a reader (or a crash) sees the old file or the new one, never a mix;
    the file keeps its permission bits (``mode`` for a new file)."""
    try:
        atomic_write(target, text, mode=mode)
    except InfraApplyError as e:
        raise MeshError(e.message.replace(str(target), "mesh-hosts.json"), path=str(target)) from None


def _remove_orphans(target: Path) -> None:
    """Delete temp files a killed run left behind; safe because we hold the lock."""
    remove_orphans(target)
