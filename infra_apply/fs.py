"""Every file infra-apply writes goes through ``atomic_write``.

A reader (another infra-apply, net-tools, Terraform, git) never sees a half-written file, a
crash at any moment leaves either the old file or the new one, and a failed write leaves no
temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from infra_apply.errors import InfraApplyError

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


class ReadOnlyTarget(InfraApplyError):
    """The file to replace is marked read-only: somebody does not want it changed."""


def atomic_write(path: Path, data: str | bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically.

    The data goes to a temporary file in the same folder (so the final ``os.replace`` is a
    rename on one filesystem), which is fsynced, given its permissions, renamed over ``path``,
    and then the folder is fsynced so the rename itself survives a power cut.

    ``mode``: the new file's permissions. ``None`` keeps an existing file's permissions and
    gives a new file the usual ``0o666 & ~umask``. A file whose owner-write bit is off is
    never replaced (``ReadOnlyTarget``): root could, but the mark is the owner's word.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    folder = path.parent
    current = _existing_mode(path)
    if current is not None and not current & stat.S_IWUSR:
        raise ReadOnlyTarget(f"{path} is read-only (mode {current:o}); not replacing it", path=str(path))
    if mode is None:
        mode = current if current is not None else 0o666 & ~_umask()
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise InfraApplyError(f"cannot write {path}: {exc.strerror}", path=str(path)) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise InfraApplyError(f"cannot write {path}: {exc.strerror}", path=str(path)) from None
        raise
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a filesystem that cannot fsync a folder is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def private_dir(path: Path) -> Path:
    """``path`` and any missing parents as 0700 folders; an existing ``path`` is tightened."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != PRIVATE_DIR:
        path.chmod(PRIVATE_DIR)
    return path


def _existing_mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InfraApplyError(f"cannot write {path}: {exc.strerror}", path=str(path)) from None


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (another thread could
    create a file in the instant a set-and-restore leaves it at another value)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
