"""Where infra-apply may write: ``--out``, the state dir and mesh-hosts.json, nothing else.

Every folder or file a write lands in is built from a base and a name (a producer, a template
file name). Names are validated long before, but a write must not depend on that alone: an
empty producer, ``..``, an absolute path or a symlink inside the base would carry it elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from infra_apply.errors import InfraApplyError, printable


def inside(path: Path, base: Path) -> Path:
    """``path`` resolved (symlinks followed), refused unless it lies strictly inside ``base``.

    Returns the resolved path, so the caller writes exactly where the check looked.
    """
    resolved_base = base.resolve()
    resolved = path.resolve()
    if resolved_base not in resolved.parents:
        raise InfraApplyError(
            f"refusing to write {printable(str(path))}: it resolves to {printable(str(resolved))}, "
            f"outside {printable(str(resolved_base))}",
            rule="paths",
        )
    return resolved


def child(base: Path, name: str) -> Path:
    """``base/name`` for a ``name`` that must be one entry of ``base`` (a producer folder, a
    file): resolved, refused unless directly inside ``base``."""
    path = inside(base / name, base)
    if path.parent != base.resolve():
        raise InfraApplyError(
            f"refusing to write {printable(str(base / name))}: {name!r} is not a single file or folder name",
            rule="paths",
        )
    return path


def check_path(option: str, path: Path) -> None:
    """A path the OS cannot even look up (too long, a loop) is bad input, not a bug; a missing
    one is left to the command, which says what it expected there."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as exc:
        shown = str(path) if len(str(path)) <= 80 else f"{str(path)[:60]}... ({len(str(path))} characters)"
        raise InfraApplyError(f"{option} {shown}: {exc.strerror}") from None
